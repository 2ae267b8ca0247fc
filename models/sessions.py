"""Sessions: opaque 256-bit bearer tokens stored only as hashes, with idle and absolute expiry."""

from __future__ import annotations

import datetime as dt
import hashlib
import secrets
from dataclasses import dataclass
from typing import Any

from pymongo import ASCENDING, IndexModel

from models.clock import Clock
from models.policy import Identity
from models.store import CollectionSpec, Store

SESSIONS = CollectionSpec(
    "sessions",
    (
        IndexModel([("user_id", ASCENDING)]),
        # The database drops sessions past their absolute expiry; lookups check expiry anyway.
        IndexModel([("expires_at", ASCENDING)], expireAfterSeconds=0),
    ),
)


@dataclass(frozen=True)
class SessionLimits:
    idle: dt.timedelta = dt.timedelta(minutes=30)
    absolute: dt.timedelta = dt.timedelta(hours=12)
    # Write last_seen at most this often: a session touched on every request would double
    # the writes of a busy console for no gain in precision worth having.
    touch_every: dt.timedelta = dt.timedelta(seconds=60)


@dataclass(frozen=True)
class IssuedSession:
    token: str
    session_id: str
    expires_at: dt.datetime


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


class SessionService:
    collections = (SESSIONS,)

    def __init__(self, store: Store, clock: Clock, limits: SessionLimits = SessionLimits()):
        self._sessions = store.collection(SESSIONS)
        self._clock = clock
        self.limits = limits

    async def issue(self, identity: Identity) -> IssuedSession:
        token = secrets.token_urlsafe(32)
        session_id = token_hash(token)
        now = self._clock.now()
        expires_at = now + self.limits.absolute
        await self._sessions.insert_one(
            {
                "_id": session_id,
                "user_id": identity.user_id,
                "role": identity.role,
                "org_id": identity.org_id,
                "org_path": list(identity.org_path),
                "channel": identity.channel,
                "second_factor": identity.second_factor,
                "restricted": identity.restricted,
                "created_at": now,
                "last_seen_at": now,
                "expires_at": expires_at,
            }
        )
        return IssuedSession(token=token, session_id=session_id, expires_at=expires_at)

    async def resolve(self, token: str) -> Identity | None:
        """The identity behind a live token; None for an unknown, revoked or expired one."""
        if not token or len(token) > 200:
            return None
        session_id = token_hash(token)
        doc = await self._sessions.find_one({"_id": session_id})
        if doc is None:
            return None
        now = self._clock.now()
        if doc["expires_at"] <= now or doc["last_seen_at"] + self.limits.idle <= now:
            await self._sessions.delete_one({"_id": session_id})
            return None
        if now - doc["last_seen_at"] >= self.limits.touch_every:
            await self._sessions.update_one({"_id": session_id}, {"$set": {"last_seen_at": now}})
        return _identity(doc)

    async def revoke(self, session_id: str) -> None:
        await self._sessions.delete_one({"_id": session_id})

    async def revoke_all(self, user_id: str) -> int:
        result = await self._sessions.delete_many({"user_id": user_id})
        return result.deleted_count

    async def lift_restriction(self, session_id: str, *, second_factor: bool) -> None:
        await self._sessions.update_one(
            {"_id": session_id},
            {"$set": {"restricted": None, "second_factor": second_factor}},
        )


def _identity(doc: dict[str, Any]) -> Identity:
    return Identity(
        user_id=doc["user_id"],
        role=doc.get("role"),
        org_id=doc.get("org_id"),
        org_path=tuple(doc.get("org_path") or ()),
        session_id=doc["_id"],
        channel=doc.get("channel", "staff"),
        second_factor=bool(doc.get("second_factor")),
        restricted=doc.get("restricted"),
    )

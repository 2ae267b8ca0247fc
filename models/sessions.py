"""Sessions: opaque 256-bit bearer tokens stored only as hashes, with idle and absolute expiry."""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import secrets
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

from pymongo import ASCENDING, IndexModel

from models.clock import Clock
from models.identity import Identity
from models.store import CollectionSpec, Store, Write

SESSIONS = CollectionSpec(
    "sessions",
    (
        IndexModel([("user_id", ASCENDING)]),
        IndexModel([("wechat_user_id", ASCENDING)], sparse=True),
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
    # A lookup answered from memory for this long: a check-in burst would otherwise spend a
    # round trip per request on the same token. A revocation reaches other processes this late.
    cache_seconds: float = 10.0


# The mini-program keeps a person signed in across days (WeChat re-logins are silent); the
# console is a work session.
STAFF_LIMITS = SessionLimits()
MP_LIMITS = SessionLimits(
    idle=dt.timedelta(days=3),
    absolute=dt.timedelta(days=7),
    touch_every=dt.timedelta(minutes=15),
)


@dataclass(frozen=True)
class IssuedSession:
    token: str
    session_id: str
    expires_at: dt.datetime


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


class SessionService:
    collections = (SESSIONS,)

    def __init__(
        self,
        store: Store,
        clock: Clock,
        limits: SessionLimits = STAFF_LIMITS,
        mp_limits: SessionLimits = MP_LIMITS,
        cache_entries: int = 20_000,
    ):
        self._sessions = store.collection(SESSIONS)
        self._clock = clock
        self.limits = limits
        self.mp_limits = mp_limits
        self._cache: OrderedDict[str, tuple[float, dict[str, Any]]] = OrderedDict()
        self._cache_entries = cache_entries

    def _limits_for(self, channel: str) -> SessionLimits:
        return self.mp_limits if channel == "mp" else self.limits

    async def issue(self, identity: Identity) -> IssuedSession:
        issued, write = self.prepare(identity)
        assert write.document is not None
        await self._sessions.insert_one(write.document)
        self.issued(issued, write)
        return issued

    def prepare(self, identity: Identity) -> tuple[IssuedSession, Write]:
        """A new session as the write that stores it, for a caller's ordered batch (a login
        stores it with its audit entry); `issued` once the batch has landed."""
        token = secrets.token_urlsafe(32)
        session_id = token_hash(token)
        now = self._clock.now()
        expires_at = now + self._limits_for(identity.channel).absolute
        doc = {
            "_id": session_id,
            "user_id": identity.user_id,
            "role": identity.role,
            "org_id": identity.org_id,
            "org_path": list(identity.org_path),
            "channel": identity.channel,
            "subject_id": identity.subject_id,
            "wechat_user_id": identity.wechat_user_id,
            "second_factor": identity.second_factor,
            "restricted": identity.restricted,
            "created_at": now,
            "last_seen_at": now,
            "expires_at": expires_at,
        }
        issued = IssuedSession(token=token, session_id=session_id, expires_at=expires_at)
        return issued, Write(SESSIONS.name, doc)

    def issued(self, issued: IssuedSession, write: Write) -> None:
        """A prepared session was stored: a client signs in and calls at once, and its first
        request needs no lookup."""
        assert write.document is not None
        self._remember(issued.session_id, write.document)

    async def resolve(
        self, token: str, *, fresh: bool = False, batched_seen: bool = False
    ) -> Identity | None:
        """The identity behind a live token; None for an unknown, revoked or expired one.
        `batched_seen`: the caller writes `seen_write` in its own batch when `seen_due`."""
        if not token or len(token) > 200:
            return None
        session_id = token_hash(token)
        now = self._clock.now()
        cached = self._cache.get(session_id)
        if (
            not fresh
            and cached is not None
            and time.monotonic() - cached[0] < self.limits.cache_seconds
        ):
            doc = cached[1]
        else:
            found = await self._sessions.find_one({"_id": session_id})
            if found is None:
                self._cache.pop(session_id, None)
                return None
            doc = found
            self._remember(session_id, doc)
        limits = self._limits_for(doc.get("channel", "staff"))
        if doc["expires_at"] <= now or doc["last_seen_at"] + limits.idle <= now:
            self._cache.pop(session_id, None)
            await self._sessions.delete_one({"_id": session_id})
            return None
        if now - doc["last_seen_at"] >= limits.touch_every:
            doc["last_seen_at"] = now
            if batched_seen:
                # The morning's first request of a session seen yesterday: marked seen by the
                # request's own batch rather than a write of its own.
                return dataclasses.replace(_identity(doc), seen_due=True)
            await self._sessions.update_one({"_id": session_id}, {"$set": {"last_seen_at": now}})
        return _identity(doc)

    def seen_write(self, identity: Identity, now: dt.datetime) -> Write | None:
        """Marks the caller's session seen, for its request's ordered batch (see `resolve`)."""
        if not identity.seen_due or identity.session_id is None:
            return None
        return Write(
            SESSIONS.name,
            filter={"_id": identity.session_id},
            update={"$max": {"last_seen_at": now}},
        )

    def _remember(self, session_id: str, doc: dict[str, Any]) -> None:
        self._cache[session_id] = (time.monotonic(), doc)
        self._cache.move_to_end(session_id)
        while len(self._cache) > self._cache_entries:
            self._cache.popitem(last=False)

    async def revoke(self, session_id: str) -> None:
        self._cache.pop(session_id, None)
        await self._sessions.delete_one({"_id": session_id})

    async def revoke_all(self, user_id: str) -> int:
        self._forget_user(user_id)
        result = await self._sessions.delete_many({"user_id": user_id})
        return result.deleted_count

    def _forget_user(self, user_id: str) -> None:
        for key in [k for k, (_, d) in self._cache.items() if d.get("user_id") == user_id]:
            del self._cache[key]

    async def lift_restriction(self, session_id: str, *, second_factor: bool) -> None:
        self._cache.pop(session_id, None)
        await self._sessions.update_one(
            {"_id": session_id},
            {"$set": {"restricted": None, "second_factor": second_factor}},
        )

    async def rebind(self, wechat_user_id: str, identity: Identity) -> None:
        """Give every live session of a WeChat user the identity it is now bound to."""
        for key in [
            k for k, (_, d) in self._cache.items() if d.get("wechat_user_id") == wechat_user_id
        ]:
            del self._cache[key]
        await self._sessions.update_many(
            {"wechat_user_id": wechat_user_id},
            {
                "$set": {
                    "user_id": identity.user_id,
                    "role": identity.role,
                    "org_id": identity.org_id,
                    "org_path": list(identity.org_path),
                    "subject_id": identity.subject_id,
                }
            },
        )
        # The phone that just bound calls again at once: remember its sessions as they are now.
        async for doc in self._sessions.find({"wechat_user_id": wechat_user_id}):
            self._remember(doc["_id"], doc)


def _identity(doc: dict[str, Any]) -> Identity:
    return Identity(
        user_id=doc["user_id"],
        role=doc.get("role"),
        org_id=doc.get("org_id"),
        org_path=tuple(doc.get("org_path") or ()),
        session_id=doc["_id"],
        channel=doc.get("channel", "staff"),
        subject_id=doc.get("subject_id"),
        wechat_user_id=doc.get("wechat_user_id"),
        second_factor=bool(doc.get("second_factor")),
        restricted=doc.get("restricted"),
    )

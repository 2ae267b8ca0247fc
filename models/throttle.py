"""Attempt limits: failed logins per account name (unknown names too) and attempts per address."""

from __future__ import annotations

import datetime as dt
import hashlib
import math
from dataclasses import dataclass

from pymongo import ASCENDING, IndexModel

from models.clock import Clock
from models.errors import Locked, RateLimited
from models.store import CollectionSpec, Store, upsert_one

THROTTLES = CollectionSpec(
    "throttles",
    (IndexModel([("expires_at", ASCENDING)], expireAfterSeconds=0),),
)


@dataclass(frozen=True)
class ThrottleRules:
    failures_before_lock: int = 5
    failure_window: dt.timedelta = dt.timedelta(minutes=15)
    lock_for: dt.timedelta = dt.timedelta(minutes=15)
    attempts_per_address: int = 30
    address_window: dt.timedelta = dt.timedelta(minutes=1)


def _key(kind: str, value: str) -> str:
    # Hashed so the collection holds no usernames or addresses in the clear.
    return kind + ":" + hashlib.sha256(value.encode("utf-8")).hexdigest()


class ThrottleService:
    collections = (THROTTLES,)

    def __init__(self, store: Store, clock: Clock, rules: ThrottleRules = ThrottleRules()):
        self._docs = store.collection(THROTTLES)
        self._clock = clock
        self.rules = rules

    async def count_address_attempt(self, scope: str, address: str) -> None:
        """Count one attempt from `address`; raise RateLimited past the limit for the window."""
        now = self._clock.now()
        window = self.rules.address_window.total_seconds()
        slot = math.floor(now.timestamp() / window)
        window_end = dt.datetime.fromtimestamp((slot + 1) * window, dt.UTC)
        doc = await upsert_one(
            self._docs,
            {"_id": _key(f"{scope}-addr-{slot}", address)},
            {"$inc": {"count": 1}, "$setOnInsert": {"expires_at": window_end}},
        )
        if doc["count"] > self.rules.attempts_per_address:
            raise RateLimited(retry_after=max(1, math.ceil((window_end - now).total_seconds())))

    async def check_account(self, scope: str, name: str) -> None:
        """Raise Locked while the account name is locked."""
        doc = await self._docs.find_one({"_id": _key(f"{scope}-acct", name)})
        now = self._clock.now()
        if doc and doc.get("locked_until") and doc["locked_until"] > now:
            raise Locked(
                details={"retry_after": math.ceil((doc["locked_until"] - now).total_seconds())}
            )

    async def record_failure(self, scope: str, name: str) -> bool:
        """Count a failure for the account name; True when this failure locked it."""
        now = self._clock.now()
        keep = self.rules.failures_before_lock
        doc = await upsert_one(
            self._docs,
            {"_id": _key(f"{scope}-acct", name)},
            {
                "$push": {"failures": {"$each": [now], "$slice": -keep}},
                "$set": {"expires_at": now + self.rules.failure_window + self.rules.lock_for},
            },
        )
        recent = [t for t in doc["failures"] if t > now - self.rules.failure_window]
        if len(recent) >= keep:
            await self._docs.update_one(
                {"_id": doc["_id"]},
                {"$set": {"locked_until": now + self.rules.lock_for, "failures": []}},
            )
            return True
        return False

    async def clear_account(self, scope: str, name: str) -> None:
        await self._docs.delete_one({"_id": _key(f"{scope}-acct", name)})

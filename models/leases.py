"""Leases: a document in the database that lets exactly one process hold a role at a time."""

from __future__ import annotations

import datetime as dt

from pymongo import ReturnDocument
from pymongo.errors import DuplicateKeyError

from models.clock import Clock
from models.store import CollectionSpec, Store

LEASES = CollectionSpec("leases")


class LeaseService:
    """Acquire, renew and release named leases; a holder that stops renewing loses its lease."""

    collections = (LEASES,)

    def __init__(self, store: Store, clock: Clock):
        self._leases = store.collection(LEASES)
        self._clock = clock

    async def acquire(self, name: str, holder: str, ttl: dt.timedelta) -> bool:
        """Take or renew the lease; True when `holder` holds it until now + ttl."""
        now = self._clock.now()
        try:
            doc = await self._leases.find_one_and_update(
                {"_id": name, "$or": [{"holder": holder}, {"expires_at": {"$lte": now}}]},
                {"$set": {"holder": holder, "expires_at": now + ttl, "renewed_at": now}},
                upsert=True,
                return_document=ReturnDocument.AFTER,
            )
        except DuplicateKeyError:
            # Someone else holds an unexpired lease: the filter missed and the upsert collided.
            return False
        return doc is not None and doc.get("holder") == holder

    async def release(self, name: str, holder: str) -> None:
        await self._leases.delete_one({"_id": name, "holder": holder})

    async def holder(self, name: str) -> str | None:
        doc = await self._leases.find_one({"_id": name})
        if doc is None or doc["expires_at"] <= self._clock.now():
            return None
        return str(doc["holder"])

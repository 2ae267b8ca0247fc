"""The audit log: who did what to which record, when, why, and with what outcome."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from pymongo import ASCENDING, DESCENDING, IndexModel

from models.clock import Clock
from models.errors import DomainError
from models.policy import Identity
from models.store import CollectionSpec, Store

AUDIT = CollectionSpec(
    "audit",
    (
        IndexModel([("resource_id", ASCENDING), ("at", DESCENDING)]),
        IndexModel([("actor_id", ASCENDING), ("at", DESCENDING)]),
        IndexModel([("at", DESCENDING)]),
    ),
)


@dataclass(frozen=True)
class AuditContext:
    """Request facts every entry carries; handlers build it, services pass it on."""

    identity: Identity
    request_id: str | None = None
    remote_ip: str | None = None


class AuditService:
    """Appends entries; never updates one except to record the outcome of its own change."""

    collections = (AUDIT,)

    def __init__(self, store: Store, clock: Clock):
        self._entries = store.collection(AUDIT)
        self._clock = clock

    async def record(
        self,
        ctx: AuditContext,
        action: str,
        *,
        resource: str,
        resource_id: str | None = None,
        outcome: str = "ok",
        reason: str | None = None,
        details: dict[str, Any] | None = None,
        actor_id: str | None = None,
    ) -> str:
        """Write one entry and answer its id. `details` must never hold personal data."""
        entry_id = uuid.uuid4().hex
        await self._entries.insert_one(
            {
                "_id": entry_id,
                "at": self._clock.now(),
                "actor_id": actor_id or ctx.identity.user_id,
                "role": ctx.identity.role,
                "action": action,
                "resource": resource,
                "resource_id": resource_id,
                "outcome": outcome,
                "reason": reason,
                "details": details or {},
                "request_id": ctx.request_id,
                "remote_ip": ctx.remote_ip,
            }
        )
        return entry_id

    @contextlib.asynccontextmanager
    async def change(
        self,
        ctx: AuditContext,
        action: str,
        *,
        resource: str,
        resource_id: str | None = None,
        reason: str | None = None,
        details: dict[str, Any] | None = None,
    ) -> AsyncIterator[str]:
        """Write the entry before the change it records, then its outcome: a change can never
        exist without an entry, and an entry whose change failed says so."""
        entry_id = await self.record(
            ctx,
            action,
            resource=resource,
            resource_id=resource_id,
            outcome="pending",
            reason=reason,
            details=details,
        )
        try:
            yield entry_id
        except DomainError as exc:
            await self.set_outcome(entry_id, f"refused:{exc.code}")
            raise
        except BaseException:
            with contextlib.suppress(Exception):
                await self.set_outcome(entry_id, "failed")
            raise
        await self.set_outcome(entry_id, "ok")

    async def set_outcome(self, entry_id: str, outcome: str) -> None:
        await self._entries.update_one({"_id": entry_id}, {"$set": {"outcome": outcome}})

    async def entries_for(self, resource_id: str, limit: int = 100) -> list[dict[str, Any]]:
        cursor = self._entries.find({"resource_id": resource_id}).sort("at", DESCENDING)
        return [entry async for entry in cursor.limit(limit)]

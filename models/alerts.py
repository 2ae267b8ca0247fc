"""Alerts: something a person at a given node (or one named person) must look at and acknowledge."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any

from bson import ObjectId
from pymongo import ASCENDING, DESCENDING, IndexModel, ReturnDocument
from pymongo.errors import BulkWriteError, DuplicateKeyError

from models.audit import AuditContext, AuditService
from models.clock import Clock
from models.errors import NotFound
from models.orgs import parse_id
from models.policy import Identity
from models.store import CollectionSpec, Store

ALERTS = CollectionSpec(
    "alerts",
    (
        IndexModel([("org_path", ASCENDING), ("status", ASCENDING), ("created_at", DESCENDING)]),
        # Monthly reports: a subtree's alerts by when they were raised, whatever their status.
        IndexModel([("org_path", ASCENDING), ("created_at", ASCENDING)]),
        IndexModel([("to_user_id", ASCENDING), ("status", ASCENDING)]),
        # A caseload counts open alerts per subject.
        IndexModel([("subject_id", ASCENDING), ("status", ASCENDING)]),
        IndexModel(
            [("dedupe_key", ASCENDING)],
            unique=True,
            partialFilterExpression={"dedupe_key": {"$type": "string"}},
        ),
    ),
)


class AlertStatus(enum.StrEnum):
    OPEN = "open"
    ACKNOWLEDGED = "acknowledged"


@dataclass(frozen=True)
class Alert:
    id: str
    kind: str
    org_id: str
    status: str
    subject_id: str | None
    to_user_id: str | None
    created_at: Any
    details: dict[str, Any]

    @classmethod
    def from_doc(cls, doc: dict[str, Any]) -> Alert:
        return cls(
            id=str(doc["_id"]),
            kind=doc["kind"],
            org_id=doc["org_id"],
            status=doc["status"],
            subject_id=doc.get("subject_id"),
            to_user_id=doc.get("to_user_id"),
            created_at=doc["created_at"],
            details=doc.get("details", {}),
        )


class AlertService:
    collections = (ALERTS,)

    def __init__(self, store: Store, clock: Clock, audit: AuditService):
        self._alerts = store.collection(ALERTS)
        self._clock = clock
        self._audit = audit

    async def raise_alert(
        self,
        *,
        kind: str,
        org_id: str,
        org_path: list[str] | tuple[str, ...],
        subject_id: str | None = None,
        to_user_id: str | None = None,
        details: dict[str, Any] | None = None,
        dedupe_key: str | None = None,
    ) -> str:
        """Open an alert for the node `org_id`; `details` hold ids and codes, not personal data.
        With `dedupe_key`, raising the same alert again (a sweep that ran twice, or resumed
        after a crash) returns the first one instead of a duplicate."""
        doc = {
            "_id": ObjectId(),
            "kind": kind,
            "org_id": org_id,
            "org_path": list(org_path),
            "subject_id": subject_id,
            "to_user_id": to_user_id,
            "status": str(AlertStatus.OPEN),
            "created_at": self._clock.now(),
            "details": details or {},
        }
        if dedupe_key is not None:
            doc["dedupe_key"] = dedupe_key
        try:
            await self._alerts.insert_one(doc)
        except DuplicateKeyError:
            existing = await self._alerts.find_one({"dedupe_key": dedupe_key}, {"_id": 1})
            if existing is None:
                raise
            return str(existing["_id"])
        return str(doc["_id"])

    async def raise_many(self, alerts: list[dict[str, Any]]) -> int:
        """Raise several alerts in one round trip (same fields as `raise_alert`); those whose
        `dedupe_key` was raised before are skipped. Answers how many are new."""
        if not alerts:
            return 0
        now = self._clock.now()
        docs = [
            {
                "_id": ObjectId(),
                "status": str(AlertStatus.OPEN),
                "created_at": now,
                "to_user_id": None,
                "subject_id": None,
                "details": {},
                **alert,
                "org_path": list(alert["org_path"]),
            }
            for alert in alerts
        ]
        try:
            result = await self._alerts.insert_many(docs, ordered=False)
            return len(result.inserted_ids)
        except BulkWriteError as exc:
            if any(e.get("code") != 11000 for e in exc.details.get("writeErrors", [])):
                raise
            return int(exc.details.get("nInserted", 0))

    async def list(
        self, identity: Identity, *, status: str | None, mine: bool, limit: int = 100
    ) -> list[Alert]:
        query: dict[str, Any] = {"org_path": identity.org_id}
        if status:
            query["status"] = status
        if mine:
            query["$or"] = [
                {"to_user_id": identity.user_id},
                {"to_user_id": None, "org_id": identity.org_id},
            ]
        cursor = self._alerts.find(query).sort("created_at", DESCENDING).limit(limit)
        return [Alert.from_doc(doc) async for doc in cursor]

    async def acknowledge(self, ctx: AuditContext, alert_id: str) -> Alert:
        oid = parse_id(alert_id, "alert")
        doc = await self._alerts.find_one({"_id": oid})
        if doc is None or not ctx.identity.reaches(doc["org_path"]):
            raise NotFound("No such alert.")
        async with self._audit.change(
            ctx,
            "alerts.ack",
            resource="alert",
            resource_id=alert_id,
            subject_id=doc.get("subject_id"),
        ):
            updated = await self._alerts.find_one_and_update(
                {"_id": oid, "status": str(AlertStatus.OPEN)},
                {
                    "$set": {
                        "status": str(AlertStatus.ACKNOWLEDGED),
                        "acknowledged_at": self._clock.now(),
                        "acknowledged_by": ctx.identity.user_id,
                    }
                },
                return_document=ReturnDocument.AFTER,
            )
        return Alert.from_doc(updated or doc)

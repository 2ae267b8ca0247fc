"""A worker's day: whose obligations are due today, whose are overdue, what alerts are open; and
the visits and talks (走访, 谈话) workers record, which meet the obligations they stand for."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any

from bson import ObjectId
from pymongo import ASCENDING, DESCENDING, IndexModel

from models.alerts import ALERTS
from models.audit import AuditContext, AuditService
from models.clock import LOCAL_TZ, Clock
from models.codec import FieldCodec
from models.errors import InvalidInput
from models.obligations import OCCURRENCES, OccurrenceStatus
from models.policy import Role
from models.store import CollectionSpec, Store
from models.subjects import SubjectService

VISITS = CollectionSpec("visits", (IndexModel([("subject_id", ASCENDING), ("at", DESCENDING)]),))
OVERDUE_DAYS = 30  # how far back an unexcused miss stays on the caseload
MAX_SUBJECTS = 500  # a caseload is one worker's: bounded
VISIT_KINDS = ("visit", "talk", "followup")
# What a recorded visit meets: a resettlement contact, a mental-health follow-up.
VISIT_MEETS = {"visit": ("contact",), "talk": ("contact",), "followup": ("mental_followup",)}


@dataclass
class CaseloadItem:
    subject_id: str
    name: str | None
    due_today: list[dict[str, Any]] = field(default_factory=list)
    overdue: list[dict[str, Any]] = field(default_factory=list)
    open_alerts: int = 0


class CaseloadService:
    collections = (VISITS,)
    sealed_fields = (("visits", None),)

    def __init__(
        self,
        store: Store,
        clock: Clock,
        audit: AuditService,
        codec: FieldCodec,
        subjects: SubjectService,
    ):
        self._occurrences = store.collection(OCCURRENCES)
        self._alerts = store.collection(ALERTS)
        self._visits = store.collection(VISITS)
        self._clock = clock
        self._audit = audit
        self._codec = codec
        self._subjects = subjects

    async def caseload(self, ctx: AuditContext, due: str | None) -> list[CaseloadItem]:
        """The caller's subjects with something due today or overdue, or an open alert.
        Due today: windows running now that close before tomorrow. Overdue: windows missed
        in the last 30 days and never excused."""
        identity = ctx.identity
        now = self._clock.now()
        today = now.astimezone(LOCAL_TZ).date()
        tomorrow = dt.datetime.combine(
            today + dt.timedelta(days=1), dt.time(), tzinfo=LOCAL_TZ
        ).astimezone(dt.UTC)
        scope = await self._subjects.reachable_ids(identity, "subjects.read", MAX_SUBJECTS)
        if not scope:
            return []
        items: dict[str, CaseloadItem] = {}

        def item(subject_id: str) -> CaseloadItem:
            return items.setdefault(subject_id, CaseloadItem(subject_id, None))

        if due in (None, "today"):
            async for doc in self._occurrences.find(
                {
                    "subject_id": {"$in": scope},
                    "status": str(OccurrenceStatus.SCHEDULED),
                    "window_start": {"$lte": now},
                    "window_end": {"$gt": now, "$lte": tomorrow},
                }
            ).sort("window_end", ASCENDING):
                item(doc["subject_id"]).due_today.append(_summary(doc))
        if due in (None, "overdue"):
            async for doc in self._occurrences.find(
                {
                    "subject_id": {"$in": scope},
                    "status": str(OccurrenceStatus.MISSED),
                    "window_end": {"$gte": now - dt.timedelta(days=OVERDUE_DAYS)},
                }
            ).sort("window_end", DESCENDING):
                item(doc["subject_id"]).overdue.append(_summary(doc))
        if due is None:
            pipeline = [
                {"$match": {"subject_id": {"$in": scope}, "status": "open"}},
                {"$group": {"_id": "$subject_id", "count": {"$sum": 1}}},
            ]
            async for row in await self._alerts.aggregate(pipeline):
                item(row["_id"]).open_alerts = int(row["count"])
        for subject_id, entry in items.items():
            entry.name = await self._subjects.display_name(identity, subject_id)
        await self._audit.record(
            ctx, "caseload.read", resource="caseload", details={"subjects": len(items), "due": due}
        )
        return sorted(items.values(), key=lambda i: (-len(i.overdue), -len(i.due_today)))

    async def record_visit(
        self,
        ctx: AuditContext,
        subject_id: str,
        *,
        kind: str,
        note: str,
        location: dict[str, float] | None,
        at: dt.datetime | None,
    ) -> dict[str, Any]:
        """A visit or talk, its note and place encrypted; it meets the open obligation it
        stands for (a resettlement contact, a mental-health follow-up by a health worker)."""
        subject = await self._subjects.require(ctx, subject_id, "visits.record")
        if kind not in VISIT_KINDS:
            raise InvalidInput("The kind is visit, talk or followup.", details=[{"field": "kind"}])
        if kind == "followup" and ctx.identity.role not in (Role.HEALTH_WORKER, Role.SOCIAL_WORKER):
            raise InvalidInput(
                "Follow-ups are recorded by health or social workers.", details=[{"field": "kind"}]
            )
        now = self._clock.now()
        when = at or now
        if when > now:
            raise InvalidInput("A visit is recorded after it happened.", details=[{"field": "at"}])
        visit_id = ObjectId()
        vid = str(visit_id)
        key = subject.get("dek_id")
        doc = {
            "_id": visit_id,
            "subject_id": subject_id,
            "kind": kind,
            "at": when,
            "by": ctx.identity.user_id,
            "org_path": subject["org_path"],
            "note": await self._codec.seal(subject_id, key, "visits", vid, "note", note),
            "location": (
                await self._codec.seal(subject_id, key, "visits", vid, "location", location)
                if location
                else None
            ),
        }
        async with self._audit.change(
            ctx,
            "visits.record",
            resource="visit",
            resource_id=vid,
            subject_id=subject_id,
            details={"kind": kind},
        ):
            await self._visits.insert_one(doc)
            met = await self._occurrences.update_many(
                {
                    "subject_id": subject_id,
                    "kind": {"$in": list(VISIT_MEETS[kind])},
                    "status": str(OccurrenceStatus.SCHEDULED),
                    "window_start": {"$lte": when},
                    "window_end": {"$gt": when},
                },
                {
                    "$set": {
                        "status": str(OccurrenceStatus.DONE),
                        "result": kind,
                        "result_at": now,
                        "result_by": ctx.identity.user_id,
                    }
                },
            )
        return {"id": vid, "kind": kind, "at": when, "obligations_met": met.modified_count}


def _summary(doc: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": doc["_id"],
        "kind": doc["kind"],
        "window_start": doc["window_start"],
        "window_end": doc["window_end"],
        "status": doc["status"],
    }

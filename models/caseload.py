"""A worker's day: whose obligations are due today, whose are overdue, what alerts are open; and
the visits and talks (走访, 谈话) workers record, which meet the obligations they stand for."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any

from bson import ObjectId
from pymongo import ASCENDING, DESCENDING, IndexModel

from models.alerts import ALERTS, AlertService
from models.audit import AuditContext, AuditService
from models.clock import LOCAL_TZ, Clock
from models.codec import FieldCodec
from models.errors import InvalidInput
from models.obligations import OCCURRENCES, OccurrenceStatus
from models.policy import Role
from models.psychiatric_referrals import PsychiatricReferralService
from models.rules import RulesService
from models.sanctions import SanctionService
from models.scope import ScopeService
from models.store import CollectionSpec, Store
from models.subjects import SubjectService

VISITS = CollectionSpec("visits", (IndexModel([("subject_id", ASCENDING), ("at", DESCENDING)]),))
# Misses that can mean the person is out of reach (not education hours, say).
LOST_CONTACT_KINDS = ("remote_checkin", "in_person_report")
OVERDUE_DAYS = 30  # how far back an unexcused miss stays on the caseload
MAX_SUBJECTS = 500  # a caseload is one worker's: bounded
VISIT_KINDS = ("visit", "talk", "followup")
# What a recorded visit meets: a resettlement contact, a mental-health follow-up.
VISIT_MEETS = {"visit": ("contact",), "talk": ("contact",), "followup": ("mental_followup",)}
# A mental-health follow-up's note is health data (精神卫生法 Art. 4).
HEALTH_VISIT_KINDS = frozenset({"followup"})


@dataclass
class CaseloadItem:
    subject_id: str
    name: str | None
    due_today: list[dict[str, Any]] = field(default_factory=list)
    overdue: list[dict[str, Any]] = field(default_factory=list)
    open_alerts: int = 0
    # Open 转诊 tasks, each with its deadline (`due`), for those who see the health data.
    referrals: list[dict[str, Any]] = field(default_factory=list)


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
        sanctions: SanctionService,
        rules: RulesService,
        alerts: AlertService,
        referrals: PsychiatricReferralService,
        *,
        scope: ScopeService,
    ):
        self._referrals = referrals
        self._sanctions = sanctions
        self._rules = rules
        self._alert_service = alerts
        self._occurrences = store.collection(OCCURRENCES)
        self._alerts = store.collection(ALERTS)
        self._visits = store.collection(VISITS)
        self._clock = clock
        self._audit = audit
        self._codec = codec
        self._subjects = subjects
        self._scope = scope

    async def caseload(self, ctx: AuditContext, due: str | None) -> list[CaseloadItem]:
        """The caller's subjects with something due today or overdue, an open alert, or an open
        转诊 task. Due today: windows running now that close before tomorrow. Overdue: windows
        missed in the last 30 days and never excused. A 转诊 stays listed until its outcome is
        recorded (with `due=today`, once its deadline has come; `overdue`, once it passed)."""
        identity = ctx.identity
        now = self._clock.now()
        today = now.astimezone(LOCAL_TZ).date()
        tomorrow = dt.datetime.combine(
            today + dt.timedelta(days=1), dt.time(), tzinfo=LOCAL_TZ
        ).astimezone(dt.UTC)
        scope = await self._scope.reachable_ids(identity, "subjects.read", MAX_SUBJECTS)
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
        # A referral is due until done: `today` shows those due by today, `overdue` the late.
        health = [
            sid
            for sid, access in (await self._scope.access(identity, scope, "subjects.read")).items()
            if access.health
        ]
        for task in await self._referrals.open_for(health) if health else []:
            if due == "today" and task["due"] > today.isoformat():
                continue
            if due == "overdue" and not task["overdue"]:
                continue
            item(task["subject_id"]).referrals.append(task)
        if due is None:
            # One indexed count per file: the caseload is bounded, and an equality lookup on
            # (subject_id, status) stays fast however many alerts the database holds.
            for subject_id in scope:
                count = await self._alerts.count_documents(
                    {"subject_id": subject_id, "status": "open"}
                )
                if count:
                    item(subject_id).open_alerts = count
        for subject_id, entry in items.items():
            entry.name = await self._subjects.display_name(identity, subject_id)
        await self._audit.record(
            ctx, "caseload.read", resource="caseload", details={"subjects": len(items), "due": due}
        )
        return sorted(
            items.values(),
            key=lambda i: (
                -len(i.overdue) - sum(r["overdue"] for r in i.referrals),
                -len(i.due_today),
            ),
        )

    async def visits(
        self, ctx: AuditContext, subject_id: str, limit: int = 50
    ) -> list[dict[str, Any]]:
        """A person's recorded visits and talks, newest first. A follow-up's note is health
        data, opened for health roles and the assigned workers only; the other notes for
        those who read the case notes. A note withheld is answered as None."""
        await self._scope.require(ctx, subject_id, "visits.read")
        access = (await self._scope.access(ctx.identity, [subject_id], "subjects.notes"))[
            subject_id
        ]
        found = []
        withheld = 0
        async for doc in (
            self._visits.find({"subject_id": subject_id}).sort("at", DESCENDING).limit(limit)
        ):
            vid = str(doc["_id"])
            readable = access.health if doc["kind"] in HEALTH_VISIT_KINDS else access.opens
            withheld += not readable
            found.append(
                {
                    "id": vid,
                    "kind": doc["kind"],
                    "at": doc["at"],
                    "by": doc.get("by"),
                    "note": (
                        await self._codec.open("visits", vid, "note", doc["note"])
                        if readable
                        else None
                    ),
                    "place": (
                        await self._codec.open("visits", vid, "place", doc["place"])
                        if readable and doc.get("place") is not None
                        else None
                    ),
                }
            )
        await self._audit.record(
            ctx,
            "visits.read",
            resource="subject",
            resource_id=subject_id,
            subject_id=subject_id,
            details={"count": len(found), "withheld": withheld},
        )
        return found

    async def record_visit(
        self,
        ctx: AuditContext,
        subject_id: str,
        *,
        kind: str,
        note: str,
        location: dict[str, float] | None,
        at: dt.datetime | None,
        place: str | None = None,
    ) -> dict[str, Any]:
        """A visit or talk, its note, place (named, and where the device was) encrypted; it
        meets the open obligation it
        stands for (a resettlement contact, a mental-health follow-up by a health worker)."""
        subject = await self._scope.require(ctx, subject_id, "visits.record")
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
        if place is not None:
            place = " ".join(place.split())
            if not place:
                raise InvalidInput(
                    "Name the place, or leave it out.",
                    details=[{"field": "place", "message": "请填写地点。"}],
                    message_zh="请填写地点。",
                )
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
            # Where it happened, as the worker names it: personal data like the note, so sealed.
            "place": (
                await self._codec.seal(subject_id, key, "visits", vid, "place", place)
                if place
                else None
            ),
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
                        "changed_at": now,
                        "result_by": ctx.identity.user_id,
                    }
                },
            )
        # Contact regained: a 脱管 episode in progress ends today.
        await self._sanctions.close_detachment(subject_id, when.astimezone(LOCAL_TZ).date())
        return {"id": vid, "kind": kind, "at": when, "obligations_met": met.modified_count}

    async def escalate_lost_contact(self, now: dt.datetime) -> dict[str, int]:
        """失去联系 (社区矫正法 Art. 30): a corrections subject who missed a check-in or report
        and has not been reached (no visit or talk, nothing met) within the rule's hours. The
        station officer is alerted with a search task, and a 脱管 episode opens from the miss,
        which the sanction suggestions count. Each miss is examined once."""
        examined = escalated = 0
        cursor = self._occurrences.find(
            {
                "status": str(OccurrenceStatus.MISSED),
                "kind": {"$in": list(LOST_CONTACT_KINDS)},
                "program_type": "community_corrections",
                "lost_contact_checked": {"$ne": True},
            }
        )
        async for occurrence in cursor:
            subject = await self._subjects.document(occurrence["subject_id"])
            if subject is None:
                continue
            rules = await self._rules.for_org(str(subject["org_id"]))
            hours = rules.int("corrections.lost_contact_hours")
            missed_at = occurrence.get("missed_at") or occurrence["window_end"]
            if missed_at > now - dt.timedelta(hours=hours):
                continue  # not yet: the worker still has time to reach the person
            examined += 1
            since = occurrence["window_end"]
            reached = await self._visits.find_one(
                {"subject_id": occurrence["subject_id"], "at": {"$gte": since}}, {"_id": 1}
            ) or await self._occurrences.find_one(
                {
                    "subject_id": occurrence["subject_id"],
                    "status": {"$in": [str(OccurrenceStatus.DONE), str(OccurrenceStatus.LATE)]},
                    "result_at": {"$gte": since},
                },
                {"_id": 1},
            )
            if not reached:
                episode, opened = await self._sanctions.open_detachment(
                    occurrence["subject_id"], since.astimezone(LOCAL_TZ).date()
                )
                await self._alert_service.raise_alert(
                    kind="lost_contact",
                    org_id=str(subject["org_id"]),
                    org_path=subject["org_path"],
                    subject_id=occurrence["subject_id"],
                    details={
                        "occurrence_id": occurrence["_id"],
                        "detachment_id": episode,
                        "task": "search",
                        "hours": hours,
                        "rules_version": rules.version,
                    },
                    dedupe_key=f"lost_contact:{episode}",
                )
                escalated += int(opened)
            await self._occurrences.update_one(
                {"_id": occurrence["_id"]}, {"$set": {"lost_contact_checked": True}}
            )
        return {"examined": examined, "lost_contact": escalated}


def _summary(doc: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": doc["_id"],
        "kind": doc["kind"],
        "window_start": doc["window_start"],
        "window_end": doc["window_end"],
        "status": doc["status"],
    }

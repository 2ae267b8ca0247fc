"""Obligations: the occurrences a program's rules ask for, each with a window in local time.

Occurrences are materialised over a rolling horizon as documents indexed by when they fall due;
further ahead they are projected from the same rules on demand. Sweeps close windows that ended
unmet (missed) and alert whoever must act; both are idempotent and catch up after downtime.
"""

from __future__ import annotations

import datetime as dt
import enum
import logging
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from bson import ObjectId
from pymongo import ASCENDING, IndexModel, ReturnDocument
from pymongo.errors import BulkWriteError

from models.alerts import AlertService
from models.audit import AuditContext, AuditService
from models.checkin_state import AHEAD_DAYS, CheckinStates
from models.clock import LOCAL_TZ, Clock, local_midnight
from models.codec import FieldCodec
from models.errors import Conflict, InvalidInput, NotFound
from models.notifications import NotificationService, reminder_text
from models.periods import add_months
from models.programs import OPEN_STATUSES, ObligationRule, ProgramService
from models.scope import ScopeService
from models.store import CollectionSpec, Store, Write, still_there
from models.subjects import SubjectService
from models.window_history import CHECKIN_KIND, DayCount, WindowHistory
from models.windows_today import TodayWindows

log = logging.getLogger("anbang.obligations")

OCCURRENCES = CollectionSpec(
    "occurrences",
    (
        # The sweeps: everything whose window has ended (or is about to open), by status.
        IndexModel([("status", ASCENDING), ("window_end", ASCENDING)]),
        IndexModel([("subject_id", ASCENDING), ("window_start", ASCENDING)]),
        IndexModel([("program_id", ASCENDING), ("window_start", ASCENDING)]),
        # Caseloads: what is due in a worker's part of the tree.
        IndexModel([("org_path", ASCENDING), ("status", ASCENDING), ("window_end", ASCENDING)]),
        # Monthly reports: a subtree's windows by when they closed, whatever their status.
        IndexModel([("org_path", ASCENDING), ("window_end", ASCENDING)]),
        # The dashboard's windows of today, brought up to date by what changed (windows_today).
        IndexModel([("org_path", ASCENDING), ("changed_at", ASCENDING)]),
        IndexModel([("alert_pending", ASCENDING)], sparse=True),
    ),
)

HORIZON = dt.timedelta(days=60)
# How long before a window opens its reminder goes out (a daily check-in: noon the day before).
REMINDER_LEAD = dt.timedelta(hours=12)
MAX_RANGE_DAYS = 800  # a range asked of the API: about two years of daily occurrences at most
KINDS = (
    "remote_checkin",
    "in_person_report",
    "written_report",
    "education",
    "community_service",
    "drug_test",
    "medical_reexam",
    "mental_followup",
    "counseling",
    "contact",
)
# What a person (and the console) calls each kind.
KIND_TITLES = {
    "remote_checkin": "定位签到",
    "in_person_report": "当面报到",
    "written_report": "书面报告",
    "education": "教育学习",
    "community_service": "公益活动",
    "drug_test": "尿检",
    "medical_reexam": "病情复查",
    "mental_followup": "随访",
    "counseling": "心理辅导",
    "contact": "帮教联系",
}
# The outcomes a worker may record, per kind of obligation.
RESULTS: dict[str, tuple[str, ...]] = {
    "drug_test": ("negative", "positive", "refused", "evaded"),
}
# Obligations a worker meets (a contact, a follow-up visit), not the person: alerts go to them.
STAFF_KINDS = frozenset({"contact", "mental_followup"})
# Obligations measured in hours a month (学习教育, 公益活动): met only once the hours are.
HOURS_KINDS = frozenset({"education", "community_service"})
# One entry is one day's hours at most.
MAX_HOURS_PER_ENTRY = 24


class OccurrenceStatus(enum.StrEnum):
    SCHEDULED = "scheduled"  # stored; shown as "open" while its window runs
    OPEN = "open"
    DONE = "done"
    LATE = "late"
    MISSED = "missed"
    EXCUSED = "excused"
    # A check-in with flags (or outside the area) awaits the station's review.
    PENDING_REVIEW = "pending_review"


@dataclass(frozen=True)
class Window:
    kind: str
    start: dt.datetime  # UTC
    end: dt.datetime  # UTC, exclusive
    required_hours: int | None
    rule: ObligationRule


def windows(rule: ObligationRule, until: dt.date, since: dt.date | None = None) -> Iterator[Window]:
    """The rule's windows that start before `until` (and end after `since`): each period of the
    cadence is one window, from local midnight to local midnight, clipped to the rule's period."""
    end_day = min(rule.end, until) if rule.end else until
    index = 0
    while True:
        if rule.every_days:
            begin = rule.start + dt.timedelta(days=index * rule.every_days)
            stop = begin + dt.timedelta(days=rule.every_days)
        else:
            months = rule.every_months or 1  # hours per month: monthly windows
            begin = add_months(rule.start, index * months)
            stop = add_months(rule.start, (index + 1) * months)
        if begin >= end_day:
            return
        if rule.end is not None:
            stop = min(stop, rule.end)
        index += 1
        if since is not None and stop <= since:
            continue
        yield Window(
            rule.kind, local_midnight(begin), local_midnight(stop), rule.hours_per_month, rule
        )


def occurrence_id(program_id: str, kind: str, start: dt.datetime) -> str:
    # Deterministic: materialising twice (or after a crash) can never create a duplicate.
    return f"{program_id}:{kind}:{start.strftime('%Y%m%dT%H%M%SZ')}"


@dataclass
class OccurrenceView:
    id: str | None
    program_id: str
    kind: str
    window_start: dt.datetime
    window_end: dt.datetime
    status: str
    projected: bool
    required_hours: int | None = None
    excuse_reason: str | None = None
    # Hours kinds only: the hours recorded so far and each entry (date, hours, place or course,
    # who confirmed them).
    hours_done: float | None = None
    hours_entries: list[dict[str, Any]] | None = None


def _visible_status(status: str, start: dt.datetime, end: dt.datetime, now: dt.datetime) -> str:
    """What a person sees: a stored `scheduled` is open while its window runs, and missed once
    it has closed unmet (whether or not the sweep has passed yet)."""
    if status == OccurrenceStatus.SCHEDULED and start <= now < end:
        return str(OccurrenceStatus.OPEN)
    if status == OccurrenceStatus.SCHEDULED and end <= now:
        return str(OccurrenceStatus.MISSED)
    return status


# Hours may be added while the window is open or after it closed (met or missed), never once it
# is excused.
_HOURS_OPEN = (
    OccurrenceStatus.SCHEDULED,
    OccurrenceStatus.MISSED,
    OccurrenceStatus.DONE,
    OccurrenceStatus.LATE,
)


def _hours_shortfall(doc: dict[str, Any]) -> dict[str, Any] | None:
    """What an hours window still lacks (None once its required hours are recorded)."""
    required = doc.get("required_hours") or 0
    done = round(float(doc.get("hours_done") or 0), 2)
    if done >= required:
        return None
    return {
        "required_hours": required,
        "hours_done": done,
        "hours_short": round(required - done, 2),
    }


def _invalid(field: str, message_zh: str) -> InvalidInput:
    """Bad input a person reads: the field named, the message in Chinese."""
    return InvalidInput(
        f"Invalid {field}.",
        details=[{"field": field, "message": message_zh}],
        message_zh=message_zh,
    )


@dataclass(frozen=True)
class Evidence:
    """A stored record that meets (or holds for review) a window the sweep found unmet."""

    record_id: str
    status: OccurrenceStatus
    needs_review: bool


# Given windows about to be marked missed, the evidence stored for any of them.
EvidenceSource = Callable[[list[str]], Awaitable[dict[str, Evidence]]]


class ObligationService:
    collections = (OCCURRENCES,)
    # An excuse's reason is sealed with the person's data key (for key rotation), and so is
    # where each recorded hour was done and who confirmed it (`hours_notes`, one per entry).
    sealed_fields = (("occurrences", None), ("occurrences", "hours_notes"))

    def __init__(
        self,
        store: Store,
        clock: Clock,
        audit: AuditService,
        programs: ProgramService,
        subjects: SubjectService,
        alerts: AlertService,
        notifications: NotificationService,
        codec: FieldCodec,
        horizon: dt.timedelta = HORIZON,
        reminder_lead: dt.timedelta = REMINDER_LEAD,
        *,
        scope: ScopeService,
        history: WindowHistory,
        states: CheckinStates,
    ):
        self._notifications = notifications
        self._history = history
        self._states = states
        self._codec = codec
        self.reminder_lead = reminder_lead
        self._occurrences = store.collection(OCCURRENCES)
        self._clock = clock
        self._windows_today = TodayWindows(self._occurrences, clock)
        self._audit = audit
        self._programs = programs
        self._subjects = subjects
        self._scope = scope
        self._alerts = alerts
        self.horizon = horizon
        self._evidence: list[EvidenceSource] = []

    def _today(self, now: dt.datetime | None = None) -> dt.date:
        return (now or self._clock.now()).astimezone(LOCAL_TZ).date()

    # --- materialising ------------------------------------------------------------------------

    async def materialise_program(
        self, program: dict[str, Any], now: dt.datetime | None = None
    ) -> int:
        """Store the program's occurrences up to the horizon; idempotent."""
        now = now or self._clock.now()
        if program["status"] not in [str(s) for s in OPEN_STATUSES]:
            return 0
        until = (now + self.horizon).astimezone(LOCAL_TZ).date()
        rules = await self._programs.rules_for(program)
        # A case recorded after its start (an existing case entered late) owes nothing for
        # windows that had already closed when it was recorded.
        recorded = program["created_at"]
        docs = [
            self._document(program, window, now)
            for rule in rules
            for window in windows(rule, until)
            if window.end > recorded
        ]
        return await self._insert_missing(docs)

    def _document(
        self, program: dict[str, Any], window: Window, now: dt.datetime
    ) -> dict[str, Any]:
        pid = str(program["_id"])
        return {
            "_id": occurrence_id(pid, window.kind, window.start),
            "subject_id": program["subject_id"],
            "program_id": pid,
            "program_type": program["type"],
            "org_path": program["org_path"],
            "kind": window.kind,
            "window_start": window.start,
            "window_end": window.end,
            "required_hours": window.required_hours,
            "status": str(OccurrenceStatus.SCHEDULED),
            "rule_keys": list(window.rule.rule_keys),
            "rules_version": window.rule.rules_version,
            "created_at": now,
            "changed_at": now,
        }

    async def _insert_missing(self, docs: list[dict[str, Any]]) -> int:
        if not docs:
            return 0
        # One round trip to skip what is stored already: a daily sweep re-plans mostly known
        # windows, and a failed bulk insert per program would cost far more.
        known = {
            d["_id"]
            async for d in self._occurrences.find(
                {"_id": {"$in": [doc["_id"] for doc in docs]}}, {"_id": 1}
            )
        }
        docs = [doc for doc in docs if doc["_id"] not in known]
        if not docs:
            return 0
        try:
            result = await self._occurrences.insert_many(docs, ordered=False)
            inserted = len(result.inserted_ids)
        except BulkWriteError as exc:
            # Those already stored (same deterministic id) are skipped; anything else is real.
            others = [e for e in exc.details.get("writeErrors", []) if e.get("code") != 11000]
            if others:
                raise
            inserted = int(exc.details.get("nInserted", 0))
        # A case recorded late owes windows of past days from its recording on.
        await self._history.touched(docs)
        # A check-in window within the days a person's check-in state holds changes what it
        # decides; the nightly run adds windows far beyond them and leaves the states alone.
        near = self._clock.now() + dt.timedelta(days=AHEAD_DAYS + 1)
        await self._states.stale(
            doc["subject_id"]
            for doc in docs
            if doc["kind"] == CHECKIN_KIND and doc["window_start"] < near
        )
        return inserted

    async def reschedule(self, program: dict[str, Any]) -> int:
        """After a change of level, risk or status: what lies ahead is planned again from the
        rules now in force; past and running windows keep their history."""
        now = self._clock.now()
        pid = str(program["_id"])
        await self._occurrences.delete_many(
            {
                "program_id": pid,
                "status": str(OccurrenceStatus.SCHEDULED),
                "window_start": {"$gt": now},
            }
        )
        await self._reshape_running(program, now)
        created = await self.materialise_program(program, now)
        # Windows ahead were removed (a closed program) or moved (a relocation, new rules).
        await self._states.stale([program["subject_id"]])
        return created

    async def _reshape_running(self, program: dict[str, Any], now: dt.datetime) -> None:
        """A window running when the rules changed ends where the new plan ends it; one the
        change cut short before now is excused as replanned, never counted as missed."""
        pid = str(program["_id"])
        running = [
            doc
            async for doc in self._occurrences.find(
                {
                    "program_id": pid,
                    "status": str(OccurrenceStatus.SCHEDULED),
                    "window_start": {"$lte": now},
                    "window_end": {"$gt": now},
                }
            )
        ]
        if not running:
            return
        until = (now + dt.timedelta(days=1)).astimezone(LOCAL_TZ).date()
        planned = {
            occurrence_id(pid, window.kind, window.start): window.end
            for rule in await self._programs.rules_for(program)
            for window in windows(rule, until)
        }
        for doc in running:
            new_end = planned.get(doc["_id"])
            if new_end is None or new_end == doc["window_end"]:
                continue
            if new_end > now:
                change: dict[str, Any] = {"$set": {"window_end": new_end, "changed_at": now}}
            else:
                change = {
                    "$set": {
                        "window_end": now,
                        "status": str(OccurrenceStatus.EXCUSED),
                        "excuse_reason": "replanned after a change of rules",
                        "changed_at": now,
                    }
                }
            await self._occurrences.update_one(
                {"_id": doc["_id"], "status": str(OccurrenceStatus.SCHEDULED)}, change
            )

    async def materialise_all(self, now: dt.datetime) -> dict[str, int]:
        programs = inserted = 0
        async for program in self._programs.open_programs():
            inserted += await self.materialise_program(program, now)
            programs += 1
        return {"programs": programs, "occurrences_created": inserted}

    # --- closing windows ----------------------------------------------------------------------

    def add_evidence_source(self, source: EvidenceSource) -> None:
        """A service whose records meet windows (check-ins): asked before a window is marked
        missed, so a record stored by a request that died before updating its window still
        counts."""
        self._evidence.append(source)

    async def close_windows(self, now: dt.datetime, batch: int = 1000) -> dict[str, int]:
        """Mark every window that ended unmet as missed, then alert whoever must act. A crash
        between the two is caught up by the next run: the mark carries `alert_pending`."""
        missed = 0

        async def mark(windows: list[dict[str, Any]]) -> int:
            ids = [w["_id"] for w in windows]
            for source in self._evidence:
                for oid, evidence in (await source(ids)).items():
                    await self.apply_checkin(
                        oid, evidence.record_id, evidence.status, evidence.needs_review
                    )
            result = await self._occurrences.update_many(
                {"_id": {"$in": ids}, "status": str(OccurrenceStatus.SCHEDULED)},
                {
                    "$set": {
                        "status": str(OccurrenceStatus.MISSED),
                        "missed_at": now,
                        "changed_at": now,
                        "alert_pending": True,
                    }
                },
            )
            await self._history.touched(windows)
            return result.modified_count

        # One cursor over the due windows, marked a batch at a time: re-running the query per
        # batch would cost in proportion to what is left each time (quadratic in the backlog).
        due: list[dict[str, Any]] = []
        async for doc in self._occurrences.find(
            {"status": str(OccurrenceStatus.SCHEDULED), "window_end": {"$lte": now}},
            {"_id": 1, "kind": 1, "org_path": 1, "window_end": 1},
        ).batch_size(batch):
            due.append(doc)
            if len(due) >= batch:
                missed += await mark(due)
                due = []
        if due:
            missed += await mark(due)
        alerted = 0

        async def alert(pending: list[dict[str, Any]]) -> None:
            # One round trip each for the batch's subjects, alerts and marks: a sweep after a
            # midnight closes tens of thousands of windows at once.
            subjects = await self._subjects.documents({o["subject_id"] for o in pending})
            await self._alerts.raise_many(
                [
                    self._missed_alert(o, subjects[o["subject_id"]])
                    for o in pending
                    if o["subject_id"] in subjects
                ]
            )
            for program_id in {o["program_id"] for o in pending if o["kind"] == "drug_test"}:
                await self.check_serious_breach(program_id)
            await self._occurrences.update_many(
                {"_id": {"$in": [o["_id"] for o in pending]}}, {"$unset": {"alert_pending": ""}}
            )

        pending: list[dict[str, Any]] = []
        async for occurrence in self._occurrences.find({"alert_pending": True}).batch_size(batch):
            pending.append(occurrence)
            if len(pending) >= batch:
                await alert(pending)
                alerted += len(pending)
                pending = []
        if pending:
            await alert(pending)
            alerted += len(pending)
        return {"missed": missed, "alerted": alerted}

    @staticmethod
    def _missed_alert(occurrence: dict[str, Any], subject: dict[str, Any]) -> dict[str, Any]:
        """Missed → the assigned social worker, or the station when none is assigned."""
        workers = subject.get("assignments", {}).get("social_worker_ids", [])
        return {
            "kind": "obligation_missed",
            "org_id": str(subject["org_id"]),
            "org_path": subject["org_path"],
            "subject_id": occurrence["subject_id"],
            "to_user_id": workers[0] if workers else None,
            "details": {
                "occurrence_id": occurrence["_id"],
                "kind": occurrence["kind"],
                "program_id": occurrence["program_id"],
                "window_end": occurrence["window_end"].isoformat(),
            },
            "dedupe_key": f"missed:{occurrence['_id']}",
        }

    # --- one-off obligations (a booked counseling session) -----------------------------------

    async def schedule_one_off(
        self, subject: dict[str, Any], *, key: str, kind: str, start: dt.datetime, end: dt.datetime
    ) -> None:
        await self._insert_missing(
            [
                {
                    "_id": key,
                    "subject_id": str(subject["_id"]),
                    "program_id": key,
                    "program_type": None,
                    "org_path": subject["org_path"],
                    "kind": kind,
                    "window_start": start,
                    "window_end": end,
                    "required_hours": None,
                    "status": str(OccurrenceStatus.SCHEDULED),
                    "rule_keys": [],
                    "rules_version": None,
                    "created_at": self._clock.now(),
                    "changed_at": self._clock.now(),
                }
            ]
        )

    async def complete_one_off(self, key: str, done: bool) -> None:
        status = OccurrenceStatus.DONE if done else OccurrenceStatus.MISSED
        await self._occurrences.update_one(
            {"_id": key, "status": str(OccurrenceStatus.SCHEDULED)},
            {"$set": {"status": str(status), "changed_at": self._clock.now()}},
        )

    async def cancel_one_off(self, key: str) -> None:
        await self._occurrences.update_one(
            {"_id": key, "status": str(OccurrenceStatus.SCHEDULED)},
            {
                "$set": {
                    "status": str(OccurrenceStatus.EXCUSED),
                    "excuse_reason": "session cancelled",
                    "changed_at": self._clock.now(),
                }
            },
        )

    # --- check-ins ----------------------------------------------------------------------------

    async def checkin_windows(
        self, subject_id: str, since: dt.datetime, until: dt.datetime
    ) -> list[dict[str, Any]]:
        """The person's check-in windows that end after `since` and start before `until`."""
        cursor = self._occurrences.find(
            {
                "subject_id": subject_id,
                # Bounded below so the (subject, start) index serves it: no check-in window is
                # longer than 90 days (`*.checkin_every_days` max).
                "window_start": {"$lt": until, "$gte": since - dt.timedelta(days=91)},
            },
            {"window_start": 1, "window_end": 1, "kind": 1, "program_id": 1, "org_path": 1},
        )
        return [
            doc
            async for doc in cursor
            if doc["kind"] == "remote_checkin" and doc["window_end"] > since
        ]

    async def checkin_occurrence(self, occurrence_id_: str) -> dict[str, Any] | None:
        return await self._occurrences.find_one({"_id": occurrence_id_})

    async def has_checkin_obligations(self, subject_id: str) -> bool:
        """Whether any rule asks this person for location check-ins (now or later)."""
        found = await self._occurrences.find_one(
            {"subject_id": subject_id, "kind": "remote_checkin"}, {"_id": 1}
        )
        return found is not None

    def checkin_write(
        self, occurrence_id_: str, checkin_id: str, status: OccurrenceStatus, needs_review: bool
    ) -> Write:
        """The conditional update a check-in makes to its window, for the check-in's own ordered
        batch: a clean check-in meets the window (also over one awaiting review); a flagged one
        holds it for review unless it is met already."""
        open_states = [str(OccurrenceStatus.SCHEDULED), str(OccurrenceStatus.MISSED)]
        if not needs_review:
            open_states.append(str(OccurrenceStatus.PENDING_REVIEW))
        return Write(
            OCCURRENCES.name,
            filter={"_id": occurrence_id_, "status": {"$in": open_states}},
            update={
                "$set": {
                    "status": str(status),
                    "checkin_id": checkin_id,
                    "result_at": self._clock.now(),
                    "changed_at": self._clock.now(),
                },
                "$unset": {"alert_pending": ""},
            },
        )

    async def apply_checkin(
        self, occurrence_id_: str, checkin_id: str, status: OccurrenceStatus, needs_review: bool
    ) -> bool:
        """`checkin_write` on its own (a replay finishing what its first attempt began)."""
        write = self.checkin_write(occurrence_id_, checkin_id, status, needs_review)
        window = await self._occurrences.find_one_and_update(
            write.filter or {},
            write.update or {},
            projection={"kind": 1, "org_path": 1, "window_end": 1},
        )
        if window is None:
            return False
        await self._history.touched([window])
        return True

    async def checkin_written(self, window: Mapping[str, Any]) -> None:
        """After the check-in's own write to its window (`checkin_write`): a late check-in
        changes a past day's count."""
        await self._history.touched([window])

    async def settle_review(
        self, occurrence_id_: str, checkin_id: str, accepted: bool, arrived_at: dt.datetime
    ) -> str | None:
        """The station's review of the check-in holding a window: accepted meets it (on time or
        late by arrival); rejected reopens it, and the sweep marks it missed once closed."""
        doc = await self._occurrences.find_one({"_id": occurrence_id_})
        if doc is None:
            return None
        held_by_this = (
            doc["status"] == OccurrenceStatus.PENDING_REVIEW and doc.get("checkin_id") == checkin_id
        )
        still_open = doc["status"] in (OccurrenceStatus.SCHEDULED, OccurrenceStatus.MISSED)
        # Met by another check-in, excused, or held by another flagged one: left as it is.
        if not (held_by_this or (accepted and still_open)):
            return _visible_status(
                doc["status"], doc["window_start"], doc["window_end"], self._clock.now()
            )
        if accepted:
            status = (
                OccurrenceStatus.DONE if arrived_at < doc["window_end"] else OccurrenceStatus.LATE
            )
            change: dict[str, Any] = {
                "$set": {
                    "status": str(status),
                    "checkin_id": checkin_id,
                    "changed_at": self._clock.now(),
                },
                "$unset": {"alert_pending": ""},
            }
        else:
            status = OccurrenceStatus.SCHEDULED
            change = {
                "$set": {"status": str(status), "changed_at": self._clock.now()},
                "$unset": {"checkin_id": ""},
            }
        updated = await self._occurrences.find_one_and_update(
            {"_id": occurrence_id_, "status": doc["status"]},
            change,
            return_document=ReturnDocument.AFTER,
        )
        if updated is None:
            raise Conflict("The obligation changed meanwhile.", code="invalid_transition")
        await self._history.touched([updated])
        return _visible_status(
            updated["status"], updated["window_start"], updated["window_end"], self._clock.now()
        )

    # --- hours (education, community service) ---------------------------------------------------

    async def credit_hours(
        self, subject_id: str, kind: str, on: dt.date, hours: float, source: str
    ) -> bool:
        """Hours done elsewhere (a course of 阳光之家) count toward the person's `kind` window
        that holds `on`; the window is met once its required hours are reached. False when no
        such window is stored (the person owes no such hours then)."""
        moment = local_midnight(on) + dt.timedelta(hours=12)
        window = await self._occurrences.find_one(
            {
                "subject_id": subject_id,
                "window_start": {"$lte": moment, "$gte": moment - dt.timedelta(days=92)},
                "window_end": {"$gt": moment},
                "kind": kind,
            }
        )
        if window is None:
            return False
        entry = {"source": source, "on": on.isoformat(), "hours": hours, "at": self._clock.now()}
        updated = await self._occurrences.find_one_and_update(
            {"_id": window["_id"]},
            {"$inc": {"hours_done": hours}, "$push": {"hours_log": entry}},
            return_document=ReturnDocument.AFTER,
        )
        updated = still_there(updated)
        required = updated.get("required_hours") or 0
        if updated["hours_done"] >= required and updated["status"] in (
            OccurrenceStatus.SCHEDULED,
            OccurrenceStatus.MISSED,
        ):
            met_late = self._clock.now() >= updated["window_end"]
            await self._occurrences.update_one(
                {"_id": updated["_id"], "status": updated["status"]},
                {
                    "$set": {
                        "status": str(OccurrenceStatus.LATE if met_late else OccurrenceStatus.DONE),
                        "result_at": self._clock.now(),
                        "changed_at": self._clock.now(),
                    },
                    "$unset": {"alert_pending": ""},
                },
            )
        return True

    async def record_hours(
        self,
        ctx: AuditContext,
        occurrence_id_: str,
        *,
        on: dt.date,
        hours: float,
        place: str,
        confirmed_by: str,
    ) -> OccurrenceView:
        """Hours of 学习教育 or 公益活动 done on a day of the window, where (the place or the
        course) and who confirms them. The window is met once its required hours are; each
        hour was done within it, so a month brought up to its hours after it closed is met."""
        doc = await self._occurrences.find_one({"_id": occurrence_id_})
        if doc is None:
            raise NotFound("No such obligation.")
        subject = await self._scope.require(ctx, doc["subject_id"], "obligations.record")
        if doc["kind"] not in HOURS_KINDS:
            raise Conflict(
                "Hours are recorded for education and community service only.",
                code="not_hours",
                details={"kind": doc["kind"]},
                message_zh="只有教育学习和公益活动记录时长。",
            )
        if not 0 < hours <= MAX_HOURS_PER_ENTRY:
            raise _invalid("hours", "时长须大于0小时，每条不超过24小时。")
        place, confirmed_by = place.strip(), confirmed_by.strip()
        if not place:
            raise _invalid("place", "请填写地点或课程。")
        if not confirmed_by:
            raise _invalid("confirmed_by", "请填写确认人。")
        first = doc["window_start"].astimezone(LOCAL_TZ).date()
        last = (doc["window_end"] - dt.timedelta(microseconds=1)).astimezone(LOCAL_TZ).date()
        if not first <= on <= last:
            raise _invalid("on", f"日期须在本期之内（{first.isoformat()}至{last.isoformat()}）。")
        if on > self._today():
            raise _invalid("on", "不能记录今天以后的时长。")
        if doc["status"] not in _HOURS_OPEN:
            raise Conflict(
                f"An obligation that is {doc['status']} takes no hours.",
                code="invalid_transition",
                details={"status": doc["status"]},
                message_zh=(
                    "此项已免除，不能记录时长。"
                    if doc["status"] == OccurrenceStatus.EXCUSED
                    else "此项当前状态不能记录时长。"
                ),
            )
        that_day = sum(e["hours"] for e in doc.get("hours_log", []) if e["on"] == on.isoformat())
        if that_day + hours > MAX_HOURS_PER_ENTRY:
            raise _invalid("hours", f"当天已记录{that_day:g}小时，一天合计不能超过24小时。")
        now = self._clock.now()
        entry_id = f"hours_{ObjectId()}"
        note = await self._codec.seal(
            doc["subject_id"],
            subject.get("dek_id"),
            "occurrences",
            occurrence_id_,
            entry_id,
            {"place": place, "confirmed_by": confirmed_by},
        )
        done = round(float(doc.get("hours_done") or 0) + hours, 2)
        change: dict[str, Any] = {
            "$set": {"hours_done": done, f"hours_notes.{entry_id}": note},
            "$push": {
                "hours_log": {
                    "id": entry_id,
                    "source": "recorded",
                    "on": on.isoformat(),
                    "hours": hours,
                    "by": ctx.identity.user_id,
                    "at": now,
                }
            },
        }
        met_now = doc["status"] in (OccurrenceStatus.SCHEDULED, OccurrenceStatus.MISSED) and (
            _hours_shortfall({**doc, "hours_done": done}) is None
        )
        if met_now:
            change["$set"].update(
                status=str(OccurrenceStatus.DONE),
                result="done",
                result_at=now,
                result_by=ctx.identity.user_id,
                changed_at=now,
            )
            change["$unset"] = {"alert_pending": ""}
        async with self._audit.change(
            ctx,
            "obligations.hours",
            resource="occurrence",
            resource_id=occurrence_id_,
            subject_id=doc["subject_id"],
            details={"kind": doc["kind"], "on": on.isoformat(), "hours": hours, "met": met_now},
        ):
            # Conditional on the hours as read: the total and the month's status change in one
            # write, and an hour credited meanwhile (a course) is never lost or counted twice.
            updated = await self._occurrences.find_one_and_update(
                {
                    "_id": occurrence_id_,
                    "status": doc["status"],
                    "hours_done": doc.get("hours_done"),
                },
                change,
                return_document=ReturnDocument.AFTER,
            )
            if updated is None:
                raise Conflict("The obligation changed meanwhile.", code="invalid_transition")
        return await self._view(updated, now)

    # --- results (drug tests, follow-ups, contacts) --------------------------------------------

    async def record_result(
        self, ctx: AuditContext, occurrence_id_: str, outcome: str
    ) -> OccurrenceView:
        """A worker records how an occurrence went. For drug tests: negative or positive meets
        the obligation; refused or evaded counts toward 严重违反协议 (戒毒条例 Art. 20)."""
        doc = await self._occurrences.find_one({"_id": occurrence_id_})
        if doc is None:
            raise NotFound("No such obligation.")
        await self._scope.require(ctx, doc["subject_id"], "obligations.record")
        allowed = RESULTS.get(doc["kind"], ("done",))
        if outcome not in allowed:
            raise InvalidInput(
                "This outcome does not fit this obligation.",
                details=[{"field": "outcome", "allowed": list(allowed)}],
            )
        if doc["status"] not in (OccurrenceStatus.SCHEDULED, OccurrenceStatus.MISSED):
            raise Conflict(
                "The result of this obligation is recorded already.",
                code="invalid_transition",
                details={"status": doc["status"]},
            )
        now = self._clock.now()
        if doc["window_start"] > now:
            raise Conflict(
                "The window of this obligation has not opened yet.",
                code="not_open",
                details={"status": doc["status"]},
            )
        if outcome == "done" and doc["kind"] in HOURS_KINDS:
            # The law counts hours: a month is met by the hours recorded, never by a word.
            shortfall = _hours_shortfall(doc)
            if shortfall is not None:
                raise Conflict(
                    "The hours this month asks for are not recorded yet.",
                    code="hours_short",
                    details=shortfall,
                    message_zh=(
                        f"本期须完成{shortfall['required_hours']}小时，已记录"
                        f"{shortfall['hours_done']}小时，尚差{shortfall['hours_short']}小时。"
                    ),
                )
        met = outcome in ("done", "negative", "positive")
        status = (
            (OccurrenceStatus.DONE if now < doc["window_end"] else OccurrenceStatus.LATE)
            if met
            else OccurrenceStatus.MISSED
        )
        async with self._audit.change(
            ctx,
            "obligations.result",
            resource="occurrence",
            resource_id=occurrence_id_,
            subject_id=doc["subject_id"],
            details={"kind": doc["kind"], "outcome": outcome},
        ):
            updated = await self._occurrences.find_one_and_update(
                {"_id": occurrence_id_, "status": doc["status"]},
                {
                    "$set": {
                        "status": str(status),
                        "result": outcome,
                        "result_at": now,
                        "changed_at": now,
                        "result_by": ctx.identity.user_id,
                    }
                },
                return_document=ReturnDocument.AFTER,
            )
            if updated is None:
                raise Conflict("The obligation changed meanwhile.", code="invalid_transition")
        if doc["kind"] == "drug_test":
            await self.check_serious_breach(doc["program_id"])
        return await self._view(updated, now)

    async def check_serious_breach(self, program_id: str) -> bool:
        """严重违反协议: refusing or evading tests the rule's number of times. A missed test
        window counts as evaded; an excused one never counts."""
        program = await self._programs.document(program_id)
        if program is None or program["type"] != "drug_rehab":
            return False
        rules = await self._programs.rules_for_org(str(program["org_id"]))
        limit = rules.int("drug_rehab.serious_breach_refusals")
        count = await self._occurrences.count_documents(
            {
                "program_id": program_id,
                "kind": "drug_test",
                "status": str(OccurrenceStatus.MISSED),
            }
        )
        if count < limit:
            return False
        await self._alerts.raise_alert(
            kind="serious_breach",
            org_id=str(program["org_id"]),
            org_path=program["org_path"],
            subject_id=program["subject_id"],
            details={
                "program_id": program_id,
                "refused_or_evaded": count,
                "limit": limit,
                "rule": "drug_rehab.serious_breach_refusals",
                "rules_version": rules.version,
                "for_roles": ["police"],
            },
            dedupe_key=f"serious_breach:{program_id}",
        )
        return True

    # --- reminders ------------------------------------------------------------------------------

    async def send_reminders(self, now: dt.datetime) -> dict[str, int]:
        """Remind whoever must act before each window opens: the person, or for a worker's
        obligation (a contact, a follow-up) the assigned worker. Once per occurrence; a
        notifier that is down costs the push, never the sweep or the in-app message."""
        sent = 0
        cursor = self._occurrences.find(
            {
                "status": str(OccurrenceStatus.SCHEDULED),
                "window_start": {"$gt": now, "$lte": now + self.reminder_lead},
                "reminded": {"$ne": True},
            }
        )
        async for occurrence in cursor:
            recipient = f"subject:{occurrence['subject_id']}"
            if occurrence["kind"] in STAFF_KINDS:
                subject = await self._subjects.document(occurrence["subject_id"])
                workers = (subject or {}).get("assignments", {}).get("social_worker_ids", [])
                if not workers:
                    await self._mark_reminded(occurrence["_id"])
                    continue
                recipient = f"staff:{workers[0]}"
            title, body = reminder_text(
                occurrence["kind"], occurrence["window_start"], occurrence["window_end"]
            )
            if await self._notifications.send(
                recipient,
                title,
                body,
                data={
                    "occurrence_id": occurrence["_id"],
                    "kind": occurrence["kind"],
                    "template": "reminder",
                    "window_start": occurrence["window_start"].isoformat(),
                    "window_end": occurrence["window_end"].isoformat(),
                },
                dedupe_key=f"reminder:{occurrence['_id']}",
            ):
                sent += 1
            await self._mark_reminded(occurrence["_id"])
        return {"reminders": sent}

    async def _mark_reminded(self, occurrence_id_: str) -> None:
        await self._occurrences.update_one({"_id": occurrence_id_}, {"$set": {"reminded": True}})

    # --- reads and staff actions ----------------------------------------------------------

    async def for_subject(
        self,
        ctx: AuditContext,
        subject_id: str,
        *,
        start: dt.date,
        end: dt.date,
        status: str | None,
        kind: str | None,
    ) -> list[OccurrenceView]:
        """Occurrences in [start, end]: stored ones, and beyond what is stored the projection
        of the same rules (`projected`, no id), within each program's term."""
        if end < start:
            raise InvalidInput("`to` comes before `from`.", details=[{"field": "to"}])
        if (end - start).days > MAX_RANGE_DAYS:
            raise InvalidInput(
                f"Ask for at most {MAX_RANGE_DAYS} days at a time.", details=[{"field": "to"}]
            )
        if kind is not None and kind not in KINDS:
            raise InvalidInput("Unknown kind.", details=[{"field": "kind"}])
        if ctx.identity.channel == "mp" and ctx.identity.subject_id is not None:
            # A person (or guardian) reads their own file's tasks: no staff scope applies.
            if subject_id != ctx.identity.subject_id:
                raise NotFound("No such case file.")
        else:
            await self._scope.require(ctx, subject_id, "obligations.read")
        now = self._clock.now()
        range_start, range_end = local_midnight(start), local_midnight(end + dt.timedelta(days=1))
        stored: dict[str, dict[str, Any]] = {}
        query: dict[str, Any] = {
            "subject_id": subject_id,
            "window_start": {"$lt": range_end},
            "window_end": {"$gt": range_start},
        }
        if kind:
            query["kind"] = kind
        async for doc in self._occurrences.find(query).sort("window_start", ASCENDING):
            stored[doc["_id"]] = doc
        views = [await self._view(doc, now) for doc in stored.values()]
        # Project beyond what is stored, from the rules in force now.
        async for program in self._programs.programs_of(subject_id):
            if program["status"] not in [str(s) for s in OPEN_STATUSES]:
                continue
            pid = str(program["_id"])
            for rule in await self._programs.rules_for(program):
                if kind and rule.kind != kind:
                    continue
                for window in windows(rule, end + dt.timedelta(days=1), since=start):
                    oid = occurrence_id(pid, window.kind, window.start)
                    # Stored windows overlapping the range are all in `stored`; a past window
                    # never stored is not projected into the past.
                    if oid in stored or window.end <= now:
                        continue
                    views.append(
                        OccurrenceView(
                            id=None,
                            program_id=pid,
                            kind=window.kind,
                            window_start=window.start,
                            window_end=window.end,
                            status=_visible_status(
                                str(OccurrenceStatus.SCHEDULED), window.start, window.end, now
                            ),
                            projected=True,
                            required_hours=window.required_hours,
                        )
                    )
        if status:
            views = [v for v in views if v.status == status]
        views.sort(key=lambda v: (v.window_start, v.kind))
        await self._audit.record(
            ctx,
            "obligations.read",
            resource="subject",
            resource_id=subject_id,
            subject_id=subject_id,
            details={"count": len(views)},
        )
        return views

    async def _view(self, doc: dict[str, Any], now: dt.datetime) -> OccurrenceView:
        return OccurrenceView(
            id=doc["_id"],
            program_id=doc["program_id"],
            kind=doc["kind"],
            window_start=doc["window_start"],
            window_end=doc["window_end"],
            status=_visible_status(doc["status"], doc["window_start"], doc["window_end"], now),
            projected=False,
            required_hours=doc.get("required_hours"),
            # Sealed when a person gave it; plain for the system's own and for older records.
            excuse_reason=await self._codec.open_text(
                "occurrences", doc["_id"], "excuse_reason", doc.get("excuse_reason")
            ),
            **(await self._hours(doc) if doc["kind"] in HOURS_KINDS else {}),
        )

    async def _hours(self, doc: dict[str, Any]) -> dict[str, Any]:
        """The hours recorded on an hours window, each entry's place and confirmer opened."""
        notes = doc.get("hours_notes") or {}
        entries = []
        for entry in doc.get("hours_log", []):
            note = {"place": None, "confirmed_by": None}
            if entry.get("id") in notes:
                note = await self._codec.open(
                    "occurrences", doc["_id"], entry["id"], notes[entry["id"]]
                )
            entries.append(
                {
                    "on": entry["on"],
                    "hours": entry["hours"],
                    "source": entry["source"],
                    "place": note["place"],
                    "confirmed_by": note["confirmed_by"],
                    "recorded_by": entry.get("by"),
                }
            )
        return {"hours_done": round(float(doc.get("hours_done") or 0), 2), "hours_entries": entries}

    async def excuse(self, ctx: AuditContext, occurrence_id_: str, reason: str) -> OccurrenceView:
        """Excused with a reason (sick leave, an approved absence): never counted as missed."""
        doc = await self._occurrences.find_one({"_id": occurrence_id_})
        if doc is None:
            raise NotFound("No such obligation.")
        subject = await self._scope.require(ctx, doc["subject_id"], "obligations.excuse")
        if doc["status"] not in (OccurrenceStatus.SCHEDULED, OccurrenceStatus.MISSED):
            raise Conflict(
                f"An obligation that is {doc['status']} cannot be excused.",
                code="invalid_transition",
                details={"status": doc["status"]},
            )
        sealed = await self._codec.seal(
            doc["subject_id"],
            subject.get("dek_id"),
            "occurrences",
            occurrence_id_,
            "excuse_reason",
            reason,
        )
        async with self._audit.change(
            ctx,
            "obligations.excuse",
            resource="occurrence",
            resource_id=occurrence_id_,
            subject_id=doc["subject_id"],
            reason=reason,
        ):
            updated = await self._occurrences.find_one_and_update(
                {"_id": occurrence_id_, "status": doc["status"]},
                {
                    "$set": {
                        "status": str(OccurrenceStatus.EXCUSED),
                        "excuse_reason": sealed,
                        "excused_by": ctx.identity.user_id,
                        "excused_at": self._clock.now(),
                        "changed_at": self._clock.now(),
                    },
                    "$unset": {"alert_pending": ""},
                },
                return_document=ReturnDocument.AFTER,
            )
            if updated is None:
                raise Conflict("The obligation changed meanwhile.", code="invalid_transition")
        await self._history.touched([updated])
        return await self._view(updated, self._clock.now())

    # --- aggregates for the dashboard (models/dashboard.py) ------------------------------------

    async def checkin_history(
        self, org_id: str, stations: Iterable[list[str]], since: dt.date
    ) -> list[DayCount]:
        """The check-in windows under a node from `since` to yesterday, by station, day and
        status, from the kept counts of settled days (models/window_history.py)."""
        return await self._history.counts(org_id, stations, since)

    async def recount_history(
        self, stations: Iterable[list[str]], since: dt.date
    ) -> dict[str, int]:
        """The nightly check of the kept counts against the windows."""
        return await self._history.recount(stations, since)

    async def windows_today(
        self, org_id: str, depth: int
    ) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """Today's windows under a node by unit and status, and today's check-in windows closed
        by now (models/windows_today.py: exact, and cheap after the day's first read)."""
        return await self._windows_today.counts(org_id, depth)

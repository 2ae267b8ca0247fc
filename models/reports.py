"""Monthly compliance: each person's month aggregated in the database, station, county and city
reports built from those rows with drill-down, and the officer's sign-off that freezes a hashed
snapshot against which later changes show as differences."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import re
import statistics
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

import pymongo
from bson import ObjectId
from pymongo import ASCENDING, IndexModel, ReturnDocument
from pymongo.errors import DuplicateKeyError

from models.alerts import ALERTS
from models.approvals import LEVEL_OF_ROLE, Level
from models.assistance import REFERRALS
from models.audit import AuditContext, AuditService
from models.clock import LOCAL_TZ, Clock
from models.elocation import ELOCATION_ORDERS
from models.errors import Conflict, Forbidden, InvalidInput, NotFound
from models.ids import parse_id
from models.leave import LEAVE_REQUESTS
from models.obligations import OCCURRENCES
from models.orgs import Org, OrgKind, OrgService
from models.programs import PROGRAMS, level_on
from models.sanctions import DETACHMENTS, SANCTIONS
from models.store import CollectionSpec, Store, still_there
from models.subjects import SubjectService

REPORTS = CollectionSpec(
    "compliance_reports",
    (
        # One report per node and month: asking again refreshes it.
        IndexModel([("org_id", ASCENDING), ("month", ASCENDING)], unique=True),
        IndexModel([("org_path", ASCENDING), ("month", ASCENDING)]),
    ),
)
# A report's per-person rows, one set per computation: the current draft's, and each signed
# snapshot's (kept, so every signature can be shown again as it was signed). Rows are stored in
# chunks of ROW_CHUNK: a county's 5,000 people are 20 documents, not 5,000 writes.
REPORT_ROWS = CollectionSpec(
    "compliance_report_rows",
    (IndexModel([("report_id", ASCENDING), ("copy", ASCENDING), ("seq", ASCENDING)]),),
)

MONTH_PATTERN = re.compile(r"^(\d{4})-(0[1-9]|1[0-2])$")

# Every summable figure of a person's month, in print order, with its Chinese heading.
FIGURES: tuple[tuple[str, str], ...] = (
    ("subjects", "在册人数"),
    ("intakes", "本月新接收"),
    ("terminations", "本月解除/终止"),
    ("obligations_due", "应履行事项"),
    ("obligations_on_time", "按时完成"),
    ("obligations_late", "逾期完成"),
    ("obligations_missed", "未完成"),
    ("obligations_excused", "已准假/豁免"),
    ("obligations_pending", "待审核"),
    ("checkins_due", "应签到"),
    ("checkins_on_time", "按时签到"),
    ("checkins_late", "迟签到"),
    ("checkins_missed", "漏签到"),
    ("checkins_excused", "免签到"),
    ("education_required_hours", "教育学习应完成(小时)"),
    ("education_done_hours", "教育学习已完成(小时)"),
    ("service_required_hours", "公益活动应完成(小时)"),
    ("service_done_hours", "公益活动已完成(小时)"),
    ("leave_approved", "批准请假(次)"),
    ("leave_days", "请假天数"),
    ("overdue_returns", "逾期未销假"),
    ("alerts", "预警"),
    ("alerts_acknowledged", "已处理预警"),
    ("alerts_open", "未处理预警"),
    ("detachments", "脱管(次)"),
    ("detachment_days", "脱管天数"),
    ("praise", "表扬"),
    ("admonish", "训诫"),
    ("warn", "警告"),
    ("public_security_penalty", "治安管理处罚"),
    ("revoke_request", "提请撤销"),
    ("imprison_request", "提请收监"),
    ("drug_tests_negative", "尿检阴性"),
    ("drug_tests_positive", "尿检阳性"),
    ("drug_tests_refused", "拒绝检测"),
    ("drug_tests_evaded", "逃避检测"),
    ("drug_tests_missed", "未检测"),
    ("followups_due", "应随访"),
    ("followups_done", "已随访"),
    ("elocation_orders", "电子定位"),
    ("referrals", "帮扶转介"),
    ("placements", "已安置/入学/入职"),
    ("housing_found", "落实住房"),
    ("job_found", "实现就业"),
    ("benefits_granted", "获得救助"),
    ("overdue", "逾期未办"),
)
FIGURE_KEYS = tuple(key for key, _ in FIGURES)
FIGURE_LABELS = dict(FIGURES)
RATE_LABELS = {
    "compliance_rate": "履行率",
    "on_time_rate": "按时率",
    "checkin_rate": "签到率",
    "alert_ack_median_minutes": "预警处理用时中位数(分钟)",
}
PROGRAM_LABELS = {
    "community_corrections": "社区矫正",
    "resettlement": "安置帮教",
    "drug_rehab": "社区戒毒/康复",
    "mental_health": "严重精神障碍",
}
LEVEL_LABELS = {"strict": "严管", "normal": "普管", "lenient": "宽管"}
TREND_LABELS = {"rising": "上升", "falling": "下降", "steady": "平稳"}
# Which node kind reports under which: a county signs after its stations, a city after its
# counties.
UNIT_KIND = {OrgKind.CITY: OrgKind.COUNTY, OrgKind.COUNTY: OrgKind.STATION}
SIGNING_LEVEL = {
    OrgKind.STATION: Level.STATION,
    OrgKind.COUNTY: Level.COUNTY,
    OrgKind.CITY: Level.CITY,
}
STATUS_FIGURE = {
    "done": "on_time",
    "late": "late",
    "missed": "missed",
    "scheduled": "missed",  # the month has ended: a window still scheduled was not met
    "open": "missed",
    "excused": "excused",
    "pending_review": "pending",
}
REPORT_DEADLINE_S = 300
# Where a person's group sits in the tree (the first record's path will do).
FIRST_PATH = {"path": {"$first": "$org_path"}}
MAX_DRILL = 500
ROW_CHUNK = 250
MAX_LISTED_CHANGES = 200
SUPERVISION_RANK = {"lenient": 0, "normal": 1, "strict": 2}


@dataclass(frozen=True)
class Month:
    """A calendar month in Asia/Shanghai, with its bounds as stored (UTC instants, ISO dates)."""

    label: str
    first: dt.date
    next_first: dt.date

    @property
    def last(self) -> dt.date:
        return self.next_first - dt.timedelta(days=1)

    @property
    def start(self) -> dt.datetime:
        return dt.datetime.combine(self.first, dt.time(), tzinfo=LOCAL_TZ).astimezone(dt.UTC)

    @property
    def end(self) -> dt.datetime:
        return dt.datetime.combine(self.next_first, dt.time(), tzinfo=LOCAL_TZ).astimezone(dt.UTC)

    def previous(self) -> Month:
        first = (self.first - dt.timedelta(days=1)).replace(day=1)
        return Month(f"{first:%Y-%m}", first, self.first)


def parse_month(raw: str, now: dt.datetime) -> Month:
    """A `YYYY-MM` month that has ended (in local time); else 422 naming the field."""
    matched = MONTH_PATTERN.match(raw or "")
    if matched is None:
        raise InvalidInput("The month is YYYY-MM.", details=[{"field": "month"}])
    first = dt.date(int(matched.group(1)), int(matched.group(2)), 1)
    next_first = (first.replace(day=28) + dt.timedelta(days=4)).replace(day=1)
    month = Month(raw, first, next_first)
    if month.end > now:
        raise InvalidInput(
            "A report covers a month that has ended.",
            code="month_not_ended",
            details=[{"field": "month", "ends": month.end.isoformat()}],
        )
    return month


def _overlap_days(start: str, end: str | None, month: Month, today: dt.date) -> int:
    """Days of [start, end] (ISO dates, end inclusive; None: still running) inside the month."""
    first = max(dt.date.fromisoformat(start), month.first)
    last_day = min(dt.date.fromisoformat(end) if end else today, month.last)
    return max(0, (last_day - first).days + 1)


def _rate(numerator: float, denominator: float) -> float | None:
    return round(numerator / denominator, 4) if denominator > 0 else None


def rates(values: Mapping[str, float], ack_minutes: list[float]) -> dict[str, float | None]:
    """The derived figures: shares of what was due (excused and pending windows left out)."""
    settled = (
        values.get("obligations_due", 0)
        - values.get("obligations_excused", 0)
        - values.get("obligations_pending", 0)
    )
    met = values.get("obligations_on_time", 0) + values.get("obligations_late", 0)
    checkins = values.get("checkins_due", 0) - values.get("checkins_excused", 0)
    return {
        "compliance_rate": _rate(met, settled),
        "on_time_rate": _rate(values.get("obligations_on_time", 0), settled),
        "checkin_rate": _rate(
            values.get("checkins_on_time", 0) + values.get("checkins_late", 0), checkins
        ),
        "alert_ack_median_minutes": (
            round(statistics.median(ack_minutes), 1) if ack_minutes else None
        ),
    }


class _Row:
    """One person's month while it is being assembled from the aggregations."""

    def __init__(self, subject_id: str):
        self.subject_id = subject_id
        self.org_path: list[str] = []
        self.values: Counter[str] = Counter()
        self.programs: set[str] = set()
        self.level_start: str | None = None
        self.level_end: str | None = None
        self.risk_start: int | None = None
        self.risk_end: int | None = None
        self.missed_previous = 0
        self.ack_minutes: list[float] = []

    def place(self, org_path: list[str] | None) -> None:
        if org_path and not self.org_path:
            self.org_path = [str(node) for node in org_path]

    def trend(self) -> str:
        """Rising when supervision tightened, the assessed risk rose or more was missed than the
        month before; falling for the opposite; steady otherwise."""
        signals = []
        if self.level_start and self.level_end:
            signals.append(SUPERVISION_RANK[self.level_end] - SUPERVISION_RANK[self.level_start])
        if self.risk_start is not None and self.risk_end is not None:
            signals.append(self.risk_end - self.risk_start)
        signals.append(self.values["obligations_missed"] - self.missed_previous)
        if any(s > 0 for s in signals):
            return "rising"
        if any(s < 0 for s in signals):
            return "falling"
        return "steady"

    def finish(self, unit_of: Mapping[str, str | None]) -> dict[str, Any]:
        values: dict[str, float] = {
            key: self.values[key] for key in FIGURE_KEYS if self.values[key]
        }
        if self.programs:
            values["subjects"] = 1
        overdue = self.values["overdue_returns"] + self.values["alerts_open"]
        if overdue:
            values["overdue"] = overdue
        for key in ("education_done_hours", "service_done_hours"):
            if key in values:
                values[key] = round(float(values[key]), 2)
        return {
            "subject_id": self.subject_id,
            "org_path": self.org_path,
            "unit_id": unit_of.get(self.subject_id),
            "values": values,
            "programs": sorted(self.programs),
            "level": self.level_end,
            "risk_level": self.risk_end,
            "trend": self.trend(),
            "missed_previous": self.missed_previous,
            "ack_minutes": [round(m, 1) for m in self.ack_minutes],
        }


def row_counts(row: Mapping[str, Any]) -> bool:
    """Whether a person's row belongs in the month: supervised in it, or something counted."""
    return bool(row["programs"] or row["values"])


def _canonical(payload: Any) -> bytes:
    return json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def snapshot_hash(org_id: str, month: str, summary: Mapping[str, Any], rows: list[dict]) -> str:
    """What a signature covers: the figures and every person's row, in a canonical form."""
    body = {
        "org_id": org_id,
        "month": month,
        "summary": {
            **{k: v for k, v in summary.items() if k != "sha256"},
            "units": _recorded_units(summary.get("units") or []),
        },
        "rows": sorted(
            (
                {k: v for k, v in row.items() if k not in ("_id", "report_id", "copy")}
                for row in rows
            ),
            key=lambda row: row["subject_id"],
        ),
    }
    return hashlib.sha256(_canonical(body)).hexdigest()


def _recorded_units(units: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The units a signature covers: those with a record, as they were hashed before quiet units
    were listed. A quiet unit's line is all zeros, known from the tree and the rows (which the
    hash covers); leaving it out keeps every signature made before valid."""
    return [
        {k: v for k, v in unit.items() if k != "nothing_recorded"}
        for unit in units
        if not unit.get("nothing_recorded")
    ]


@dataclass
class ReportView:
    id: str
    org_id: str
    org_name: str
    org_kind: str
    month: str
    status: str
    generated_at: dt.datetime
    summary: dict[str, Any]
    signed: dict[str, Any] | None
    signatures: list[dict[str, Any]]
    changes: dict[str, Any] | None


class ReportService:
    collections = (REPORTS, REPORT_ROWS)

    def __init__(
        self,
        store: Store,
        clock: Clock,
        audit: AuditService,
        orgs: OrgService,
        subjects: SubjectService,
        staff_lookup: Callable[[str], Awaitable[dict[str, Any] | None]],
    ):
        self._staff_lookup = staff_lookup
        self._reports = store.collection(REPORTS)
        self._rows = store.collection(REPORT_ROWS)
        # Compliance figures are read as the majority has them (DESIGN: "majority reads for
        # compliance decisions"): a signed report never shows a write a failover could undo.
        self._occurrences = store.majority_collection(OCCURRENCES)
        self._alerts = store.majority_collection(ALERTS)
        self._leave = store.majority_collection(LEAVE_REQUESTS)
        self._detachments = store.majority_collection(DETACHMENTS)
        self._sanctions = store.majority_collection(SANCTIONS)
        self._elocation = store.majority_collection(ELOCATION_ORDERS)
        self._referrals = store.majority_collection(REFERRALS)
        self._programs = store.majority_collection(PROGRAMS)
        self._clock = clock
        self._audit = audit
        self._orgs = orgs
        self._subjects = subjects

    # --- the month of a set of people ----------------------------------------------------------

    async def _month_rows(self, match: dict[str, Any], month: Month) -> dict[str, _Row]:
        """Every person's month under `match` (a subtree or one person): each collection is
        aggregated by person in the database, through its scope-and-time index."""
        rows: dict[str, _Row] = {}
        now = self._clock.now()
        today = now.astimezone(LOCAL_TZ).date()

        def row(subject_id: Any) -> _Row:
            key = str(subject_id)
            return rows.setdefault(key, _Row(key))

        # Programs first: they place a person in the tree as the file stands.
        async for doc in self._programs.find(
            # No `$or` on the end: some servers scan the collection for one; the subtree's
            # programs begun before the month's end are few, and those ended earlier are
            # skipped here.
            {**match, "start_date": {"$lt": month.next_first.isoformat()}},
            {
                "subject_id": 1,
                "org_path": 1,
                "type": 1,
                "status": 1,
                "start_date": 1,
                "ended_on": 1,
                "details.supervision_level": 1,
                "details.strict_until": 1,
                "details.level_history": 1,
                "details.risk_history": 1,
            },
        ):
            if doc.get("status") == "transferred" or (
                doc.get("ended_on") and doc["ended_on"] < month.first.isoformat()
            ):
                continue
            entry = row(doc["subject_id"])
            entry.place(doc.get("org_path"))
            entry.programs.add(doc["type"])
            if month.first <= dt.date.fromisoformat(doc["start_date"]) <= month.last:
                entry.values["intakes"] += 1
            ended = doc.get("ended_on")
            if ended and month.first <= dt.date.fromisoformat(ended) <= month.last:
                entry.values["terminations"] += 1
            details = doc.get("details") or {}
            if doc["type"] == "community_corrections" and details.get("strict_until"):
                begin = max(month.first, dt.date.fromisoformat(doc["start_date"]))
                end = min(month.last, dt.date.fromisoformat(ended) if ended else month.last)
                entry.level_start = level_on(details, begin)
                entry.level_end = level_on(details, end)
            if doc["type"] == "mental_health" and details.get("risk_history"):
                entry.risk_start = _risk_on(details["risk_history"], month.first)
                entry.risk_end = _risk_on(details["risk_history"], month.last)

        previous = month.previous()
        pipeline = [
            {"$match": {**match, "window_end": {"$gt": previous.start, "$lte": month.end}}},
            {
                "$group": {
                    "_id": {
                        "s": "$subject_id",
                        "k": "$kind",
                        "st": "$status",
                        "r": "$result",
                        "cur": {"$gt": ["$window_end", month.start]},
                    },
                    "n": {"$sum": 1},
                    "required": {"$sum": {"$ifNull": ["$required_hours", 0]}},
                    "done": {"$sum": {"$ifNull": ["$hours_done", 0]}},
                    "path": {"$first": "$org_path"},
                }
            },
        ]
        async for group in await self._occurrences.aggregate(pipeline):
            key = group["_id"]
            entry = row(key["s"])
            entry.place(group.get("path"))
            figure = STATUS_FIGURE.get(key["st"], "missed")
            if not key["cur"]:
                if figure == "missed":
                    entry.missed_previous += group["n"]
                continue
            values = entry.values
            n = group["n"]
            values["obligations_due"] += n
            values[f"obligations_{figure}"] += n
            kind = key["k"]
            if kind == "remote_checkin":
                values["checkins_due"] += n
                values[f"checkins_{figure}"] += n
            elif kind in ("education", "community_service"):
                prefix = "education" if kind == "education" else "service"
                values[f"{prefix}_required_hours"] += group["required"]
                values[f"{prefix}_done_hours"] += group["done"]
            elif kind == "drug_test":
                result = key.get("r")
                if result in ("negative", "positive", "refused", "evaded"):
                    values[f"drug_tests_{result}"] += n
                elif figure == "missed":
                    values["drug_tests_missed"] += n
            elif kind == "mental_followup":
                values["followups_due"] += n
                if figure in ("on_time", "late"):
                    values["followups_done"] += n

        in_month = {"$gte": month.start, "$lt": month.end}
        async for group in await self._alerts.aggregate(
            [
                {"$match": {**match, "created_at": in_month, "subject_id": {"$ne": None}}},
                {
                    "$group": {
                        "_id": "$subject_id",
                        "n": {"$sum": 1},
                        "open": {"$sum": {"$cond": [{"$eq": ["$status", "open"]}, 1, 0]}},
                        "acked": {
                            "$push": {
                                "$cond": [
                                    {"$eq": ["$status", "acknowledged"]},
                                    {"$subtract": ["$acknowledged_at", "$created_at"]},
                                    None,
                                ]
                            }
                        },
                        "path": {"$first": "$org_path"},
                    }
                },
            ]
        ):
            entry = row(group["_id"])
            entry.place(group.get("path"))
            durations = [_minutes(d) for d in group["acked"] if d is not None]
            entry.values["alerts"] += group["n"]
            entry.values["alerts_open"] += group["open"]
            entry.values["alerts_acknowledged"] += len(durations)
            entry.ack_minutes.extend(durations)

        # Leave and 脱管 need their days inside the month: the few matching records (dates
        # only) are read, never the collection.
        async for doc in self._leave.find(
            {
                **match,
                "status": "approved",
                "start_date": {"$lte": month.last.isoformat()},
                "end_date": {"$gte": month.first.isoformat()},
            },
            {"subject_id": 1, "start_date": 1, "end_date": 1, "returned_on": 1, "org_path": 1},
        ):
            entry = row(doc["subject_id"])
            entry.place(doc.get("org_path"))
            entry.values["leave_approved"] += 1
            entry.values["leave_days"] += _overlap_days(
                doc["start_date"], doc["end_date"], month, today
            )
            ended = dt.date.fromisoformat(doc["end_date"])
            if not doc.get("returned_on") and ended <= month.last and ended < today:
                entry.values["overdue_returns"] += 1
        async for doc in self._detachments.find(
            {**match, "start_date": {"$lte": month.last.isoformat()}},
            {"subject_id": 1, "start_date": 1, "end_date": 1, "org_path": 1},
        ):
            if doc.get("end_date") and doc["end_date"] < month.first.isoformat():
                continue
            entry = row(doc["subject_id"])
            entry.place(doc.get("org_path"))
            entry.values["detachments"] += 1
            entry.values["detachment_days"] += _overlap_days(
                doc["start_date"], doc.get("end_date"), month, today
            )

        async for group in await self._sanctions.aggregate(
            [
                {"$match": {**match, "status": "approved", "decided_at": in_month}},
                {
                    "$group": {
                        "_id": {"s": "$subject_id", "k": "$kind"},
                        "n": {"$sum": 1},
                        "path": {"$first": "$org_path"},
                    }
                },
            ]
        ):
            entry = row(group["_id"]["s"])
            entry.place(group.get("path"))
            entry.values[group["_id"]["k"]] += group["n"]

        async def count_per_person(collection: Any, figure: str, stages: list[dict]) -> None:
            per_person = {"$group": {"_id": "$subject_id", "n": {"$sum": 1}, **FIRST_PATH}}
            async for group in await collection.aggregate([*stages, per_person]):
                entry = row(group["_id"])
                entry.place(group.get("path"))
                entry.values[figure] += group["n"]

        in_force = {
            "status": {"$in": ["approved", "ended"]},
            "start_date": {"$lte": month.last.isoformat()},
            "end_date": {"$gte": month.first.isoformat()},
        }
        await count_per_person(
            self._elocation, "elocation_orders", [{"$match": {**match, **in_force}}]
        )
        await count_per_person(
            self._referrals, "referrals", [{"$match": {**match, "created_at": in_month}}]
        )
        placed = {"history.status": {"$in": ["placed", "enrolled"]}, "history.at": in_month}
        await count_per_person(
            self._referrals,
            "placements",
            [
                {"$match": {**match, "history.at": in_month}},
                {"$unwind": "$history"},
                {"$match": placed},
            ],
        )
        async for group in await self._referrals.aggregate(
            [
                {"$match": {**match, "outcome_at": in_month}},
                {
                    "$group": {
                        "_id": {"s": "$subject_id", "k": "$outcome_kind"},
                        "n": {"$sum": 1},
                        "path": {"$first": "$org_path"},
                    }
                },
            ]
        ):
            kind = group["_id"]["k"]
            if kind in ("housing_found", "job_found", "benefits_granted"):
                entry = row(group["_id"]["s"])
                entry.place(group.get("path"))
                entry.values[kind] += group["n"]
        return rows

    async def subject_month(self, ctx: AuditContext, subject_id: str, month_raw: str) -> dict:
        """One person's month: the same row a report holds for them, computed now."""
        await self._subjects.require(ctx, subject_id, "compliance.read")
        month = parse_month(month_raw, self._clock.now())
        rows = await self._month_rows({"subject_id": subject_id}, month)
        entry = rows.get(subject_id) or _Row(subject_id)
        result = entry.finish({})
        await self._audit.record(
            ctx,
            "compliance.read",
            resource="subject",
            resource_id=subject_id,
            subject_id=subject_id,
            details={"month": month.label},
        )
        return {
            "subject_id": subject_id,
            "month": month.label,
            "figures": {key: result["values"].get(key, 0) for key in FIGURE_KEYS},
            "rates": rates(result["values"], result["ack_minutes"]),
            "programs": result["programs"],
            "supervision_level": result["level"],
            "risk_level": result["risk_level"],
            "trend": result["trend"],
            "missed_previous_month": result["missed_previous"],
        }

    # --- reports -----------------------------------------------------------------------------

    async def _compute(self, org: Org, month: Month) -> tuple[dict[str, Any], list[dict]]:
        """A node's report as the data stands: its summary and every person's row."""
        tree = {node.id: node for node in await self._orgs.below(org.id)}
        unit_kind = UNIT_KIND.get(org.kind)
        # A county's month is one long aggregation: longer than the API process's deadline per
        # operation (meant for a person's requests), so the report sets its own.
        with pymongo.timeout(REPORT_DEADLINE_S):
            raw = await self._month_rows({"org_path": org.id}, month)

        def unit_for(path: list[str]) -> str | None:
            if unit_kind is None:
                return None
            for node in path:
                if node in tree and tree[node].kind == unit_kind:
                    return node
            return None

        units = {sid: unit_for(entry.org_path) for sid, entry in raw.items()}
        # Someone seen only in the month before (for the trend) is not in this month's report.
        rows = [row for row in (e.finish(units) for e in raw.values()) if row_counts(row)]
        rows.sort(key=lambda r: r["subject_id"])
        return self._summarise(rows, tree, unit_kind), rows

    @staticmethod
    def _summarise(
        rows: list[dict], tree: Mapping[str, Org], unit_kind: OrgKind | None
    ) -> dict[str, Any]:
        totals: Counter[str] = Counter()
        minutes: list[float] = []
        by_program: dict[str, Counter[str]] = {}
        by_level: Counter[str] = Counter()
        by_trend: Counter[str] = Counter()
        units: dict[str, tuple[Counter[str], list[float]]] = {}
        for r in rows:
            totals.update(r["values"])
            minutes.extend(r["ack_minutes"])
            for program in r["programs"]:
                by_program.setdefault(program, Counter()).update(r["values"])
            if r["level"]:
                by_level[r["level"]] += 1
            if r["programs"]:
                by_trend[r["trend"]] += 1
            if r["unit_id"]:
                unit = units.setdefault(r["unit_id"], (Counter(), []))
                unit[0].update(r["values"])
                unit[1].extend(r["ack_minutes"])
        recorded = set(units)
        # A station where nobody is supervised and nothing was recorded is what a county most
        # needs to see: every unit of the tree has its line, zeros and a mark if quiet.
        for node in tree.values():
            if node.kind == unit_kind and node.id not in units:
                units[node.id] = (Counter(), [])
        figures = {key: _number(totals[key]) for key in FIGURE_KEYS}
        return {
            "figures": figures,
            "rates": rates(figures, minutes),
            "by_program": {
                program: {
                    "subjects": counts["subjects"],
                    "obligations_missed": counts["obligations_missed"],
                    "checkins_missed": counts["checkins_missed"],
                    **rates(counts, []),
                }
                for program, counts in sorted(by_program.items())
            },
            "by_level": dict(sorted(by_level.items())),
            "by_trend": dict(sorted(by_trend.items())),
            "units": [
                {
                    "org_id": unit_id,
                    "name": tree[unit_id].name if unit_id in tree else unit_id,
                    "kind": str(unit_kind),
                    "figures": {key: _number(counts[key]) for key in FIGURE_KEYS},
                    "rates": rates(counts, unit_minutes),
                    "nothing_recorded": unit_id not in recorded,
                }
                for unit_id, (counts, unit_minutes) in sorted(
                    units.items(), key=lambda item: tree[item[0]].code if item[0] in tree else ""
                )
            ],
        }

    async def _in_scope(self, ctx: AuditContext, report_id: str, action: str) -> dict[str, Any]:
        doc = await self._reports.find_one({"_id": parse_id(report_id, "report")})
        if doc is None or not ctx.identity.reaches(doc["org_path"]):
            raise NotFound("No such report.")
        return doc

    async def _store_rows(self, report_id: ObjectId, rows: list[dict]) -> str:
        """Write a computation's rows under a fresh copy label; the report then points at it."""
        copy = str(ObjectId())
        chunks = [
            {
                "report_id": report_id,
                "copy": copy,
                "seq": seq,
                "rows": rows[first : first + ROW_CHUNK],
            }
            for seq, first in enumerate(range(0, len(rows), ROW_CHUNK))
        ]
        if chunks:
            await self._rows.insert_many(chunks, ordered=False)
        return copy

    async def _load_rows(self, report_id: ObjectId, copy: str) -> list[dict]:
        """A stored computation's rows, in subject order."""
        rows: list[dict] = []
        async for chunk in self._rows.find({"report_id": report_id, "copy": copy}).sort(
            "seq", ASCENDING
        ):
            rows.extend(chunk["rows"])
        return rows

    def _diff(
        self, signed: Mapping[str, Any], signed_rows: list[dict], summary: Mapping, rows: list
    ) -> dict[str, Any] | None:
        """What changed since the signature: figures, and per person which figure moved."""
        if signed["sha256"] == summary["sha256"]:
            return None
        figures = [
            {"figure": key, "signed": signed["figures"].get(key, 0), "current": value}
            for key, value in summary["figures"].items()
            if signed["figures"].get(key, 0) != value
        ]
        before = {r["subject_id"]: r["values"] for r in signed_rows}
        after = {r["subject_id"]: r["values"] for r in rows}
        subjects = []
        for subject_id in sorted(before.keys() | after.keys()):
            old, new = before.get(subject_id, {}), after.get(subject_id, {})
            for key in FIGURE_KEYS:
                if old.get(key, 0) != new.get(key, 0):
                    subjects.append(
                        {
                            "subject_id": subject_id,
                            "figure": key,
                            "signed": old.get(key, 0),
                            "current": new.get(key, 0),
                        }
                    )
        return {
            "figures": figures,
            "subjects": subjects[:MAX_LISTED_CHANGES],
            "subject_changes": len(subjects),
        }

    async def _signed_rows(self, doc: Mapping[str, Any]) -> list[dict]:
        signed = doc.get("signed")
        if not signed:
            return []
        return await self._load_rows(doc["_id"], signed["copy"])

    async def generate(
        self, ctx: AuditContext, org_id: str, month_raw: str
    ) -> tuple[ReportView, bool]:
        """The node's report for an ended month, computed now; a signed one keeps its snapshot
        and shows what changed since. Answers whether the report was created by this call."""
        org = await self._orgs.get_in_scope(ctx.identity, org_id)
        if org.kind not in SIGNING_LEVEL:
            raise InvalidInput(
                "Reports are made for a station, a county or a city.",
                details=[{"field": "org_id"}],
            )
        month = parse_month(month_raw, self._clock.now())
        now = self._clock.now()
        summary, rows = await self._compute(org, month)
        summary["sha256"] = snapshot_hash(org.id, month.label, summary, rows)
        created = False
        doc = await self._reports.find_one({"org_id": org.id, "month": month.label})
        if doc is None:
            doc = {
                "_id": ObjectId(),
                "org_id": org.id,
                "org_path": list(org.path),
                "org_kind": str(org.kind),
                "org_name": org.name,
                "month": month.label,
                "status": "draft",
                "created_at": now,
                "created_by": ctx.identity.user_id,
                "signed": None,
                "signatures": [],
            }
            try:
                await self._reports.insert_one(doc)
                created = True
            except DuplicateKeyError:
                doc = still_there(
                    await self._reports.find_one({"org_id": org.id, "month": month.label}),
                    "report",
                )
        copy = await self._store_rows(doc["_id"], rows)
        changes = None
        if doc.get("signed"):
            changes = self._diff(doc["signed"], await self._signed_rows(doc), summary, rows)
        previous = (doc.get("current") or {}).get("copy")
        updated = await self._reports.find_one_and_update(
            {"_id": doc["_id"]},
            {
                "$set": {
                    "current": {**summary, "copy": copy, "at": now, "by": ctx.identity.user_id},
                    "changes": changes,
                    "generated_at": now,
                }
            },
            return_document=ReturnDocument.AFTER,
        )
        # The rows of the previous computation go, never those of a signed version.
        if previous and previous not in (copy, (doc.get("signed") or {}).get("copy")):
            await self._rows.delete_many({"report_id": doc["_id"], "copy": previous})
        await self._audit.record(
            ctx,
            "reports.create",
            resource="report",
            resource_id=str(doc["_id"]),
            details={"org_id": org.id, "month": month.label, "sha256": summary["sha256"]},
        )
        return self._view(still_there(updated, "report")), created

    async def get(self, ctx: AuditContext, report_id: str) -> ReportView:
        doc = await self._in_scope(ctx, report_id, "reports.read")
        await self._audit.record(ctx, "reports.read", resource="report", resource_id=report_id)
        return self._view(doc)

    async def sign(
        self, ctx: AuditContext, report_id: str, comment: str, resign: bool = False
    ) -> ReportView:
        """The officer of the report's level signs the data as it stands now: the snapshot is
        frozen and its hash enters the audit chain. Signing unchanged data again changes
        nothing; signing changed data again must be asked for (`resign`)."""
        doc = await self._in_scope(ctx, report_id, "reports.sign")
        kind = OrgKind(doc["org_kind"])
        level = LEVEL_OF_ROLE.get(str(ctx.identity.role))
        if level != SIGNING_LEVEL[kind] or not ctx.identity.reaches(doc["org_path"]):
            raise Forbidden(
                "Only an officer of the report's own level signs it.", code="wrong_level"
            )
        org = await self._orgs.get(doc["org_id"])
        month = parse_month(doc["month"], self._clock.now())
        summary, rows = await self._compute(org, month)
        summary["sha256"] = snapshot_hash(org.id, month.label, summary, rows)
        signed = doc.get("signed")
        if signed and signed["sha256"] == summary["sha256"]:
            return self._view(doc)
        if signed and not resign:
            raise Conflict(
                "The data changed since this report was signed; sign again explicitly "
                "(resign: true) to replace the signed version.",
                code="changed_since_signed",
                details={
                    "changes": self._diff(signed, await self._signed_rows(doc), summary, rows)
                },
            )
        await self._require_units_signed(org, month)
        version = (signed or {}).get("version", 0) + 1
        now = self._clock.now()
        async with self._audit.change(
            ctx,
            "reports.sign",
            resource="report",
            resource_id=report_id,
            reason=comment,
            details={
                "org_id": org.id,
                "month": month.label,
                "version": version,
                "sha256": summary["sha256"],
            },
        ):
            copy = await self._store_rows(doc["_id"], rows)
            signature = {
                "version": version,
                "sha256": summary["sha256"],
                "at": now,
                "by": ctx.identity.user_id,
                "comment": comment,
            }
            updated = await self._reports.find_one_and_update(
                # Two officers signing at once: one signature per version.
                {"_id": doc["_id"], "signed.version": (signed or {}).get("version")},
                {
                    "$set": {
                        "status": "signed",
                        "signed": {**summary, **signature, "copy": copy},
                        "current": {**summary, "copy": copy, "at": now, "by": ctx.identity.user_id},
                        "changes": None,
                        "generated_at": now,
                    },
                    "$push": {"signatures": signature},
                },
                return_document=ReturnDocument.AFTER,
            )
            if updated is None:
                await self._rows.delete_many({"report_id": doc["_id"], "copy": copy})
                raise Conflict("The report was signed meanwhile.", code="signed_meanwhile")
        previous = (doc.get("current") or {}).get("copy")
        if previous and previous != (signed or {}).get("copy"):
            await self._rows.delete_many({"report_id": doc["_id"], "copy": previous})
        return self._view(updated)

    async def _require_units_signed(self, org: Org, month: Month) -> None:
        """A county signs once every station under it has signed this month (a city, once
        its counties have)."""
        unit_kind = UNIT_KIND.get(org.kind)
        if unit_kind is None:
            return
        units = [node for node in await self._orgs.below(org.id) if node.kind == unit_kind]
        if not units:
            return
        signed = {
            doc["org_id"]
            async for doc in self._reports.find(
                {
                    "org_id": {"$in": [u.id for u in units]},
                    "month": month.label,
                    "status": "signed",
                },
                {"org_id": 1},
            )
        }
        missing = [u for u in units if u.id not in signed]
        if missing:
            raise Conflict(
                "Every report below this one must be signed first.",
                code="units_unsigned",
                details={"unsigned": [{"org_id": u.id, "name": u.name} for u in missing]},
            )

    async def drill_down(
        self,
        ctx: AuditContext,
        report_id: str,
        figure: str,
        version: str | None = None,
        unit_id: str | None = None,
    ) -> list[dict[str, Any]]:
        """The people behind a figure (those whose row counts in it), as the caller may see
        them; of the signed snapshot by default once there is one."""
        doc = await self._in_scope(ctx, report_id, "reports.read")
        if figure not in FIGURE_LABELS:
            raise InvalidInput("No such figure.", details=[{"field": "figure"}])
        copy = self._copy(doc, version)
        rows = [
            r
            for r in await self._load_rows(doc["_id"], copy)
            if r["values"].get(figure, 0) > 0
            and (not unit_id or r.get("unit_id") == unit_id)
            and ctx.identity.reaches(r["org_path"])
        ][:MAX_DRILL]
        names = await self._subjects.display_names(ctx.identity, [r["subject_id"] for r in rows])
        await self._audit.record(
            ctx,
            "reports.drill_down",
            resource="report",
            resource_id=report_id,
            details={"figure": figure, "subjects": len(rows)},
        )
        return [
            {
                "subject_id": r["subject_id"],
                "name": names.get(r["subject_id"]),
                "unit_id": r.get("unit_id"),
                "value": r["values"].get(figure, 0),
                "programs": r["programs"],
                "trend": r["trend"],
            }
            for r in rows
        ]

    @staticmethod
    def _copy(doc: Mapping[str, Any], version: str | None) -> str:
        if version in (None, "signed") and doc.get("signed"):
            return doc["signed"]["copy"]
        if version == "signed":
            raise NotFound("This report has not been signed.")
        if version not in (None, "current"):
            raise InvalidInput("The version is current or signed.", details=[{"field": "version"}])
        return doc["current"]["copy"]

    async def export_data(self, ctx: AuditContext, report_id: str, fmt: str) -> dict[str, Any]:
        """Everything an export prints, from the same stored data as the JSON: the signed
        snapshot once there is one, with every person's row and the names the caller may see."""
        doc = await self._in_scope(ctx, report_id, "reports.read")
        copy = self._copy(doc, None)
        summary = doc["signed"] if doc.get("signed") else doc["current"]
        rows = await self._load_rows(doc["_id"], copy)
        names = await self._subjects.display_names(ctx.identity, [r["subject_id"] for r in rows])
        tree = {node.id: node for node in await self._orgs.below(doc["org_id"])}
        signer = None
        if doc.get("signed"):
            signer = await self._orgs_staff_name(doc["signed"]["by"])
        await self._audit.record(
            ctx,
            "reports.export",
            resource="report",
            resource_id=report_id,
            details={"format": fmt, "rows": len(rows), "sha256": summary["sha256"]},
        )
        return {
            "report": self._view(doc),
            "summary": summary,
            "signer": signer,
            "printed_at": self._clock.now(),
            "rows": [
                {
                    **r,
                    "name": names.get(r["subject_id"]),
                    "unit_name": tree[r["unit_id"]].name if r.get("unit_id") in tree else None,
                    "station_name": _station_name(r["org_path"], tree),
                }
                for r in rows
            ],
        }

    async def _orgs_staff_name(self, user_id: str | None) -> str | None:
        account = await self._staff_lookup(user_id) if user_id else None
        return str(account["name"]) if account else None

    @staticmethod
    def _view(doc: Mapping[str, Any]) -> ReportView:
        summary = doc["signed"] if doc.get("signed") else doc["current"]
        return ReportView(
            id=str(doc["_id"]),
            org_id=doc["org_id"],
            org_name=doc["org_name"],
            org_kind=doc["org_kind"],
            month=doc["month"],
            status=doc["status"],
            generated_at=doc["generated_at"],
            summary={k: v for k, v in summary.items() if k not in ("copy", "at", "by")},
            signed=(
                {k: doc["signed"][k] for k in ("version", "sha256", "at", "by", "comment")}
                if doc.get("signed")
                else None
            ),
            signatures=list(doc.get("signatures") or []),
            changes=doc.get("changes"),
        )

    # --- read by the dashboard's overview (models/dashboard.py) --------------------------------

    async def signing_states(
        self, org_ids: list[str], months: list[str]
    ) -> dict[tuple[str, str], dict[str, Any]]:
        """Each (node, month) report there is among these: its id, state and signature (no
        figures; the caller has checked the nodes are in scope)."""
        states: dict[tuple[str, str], dict[str, Any]] = {}
        async for doc in self._reports.find(
            {"org_id": {"$in": org_ids}, "month": {"$in": months}},
            {
                "org_id": 1,
                "month": 1,
                "status": 1,
                "signed.version": 1,
                "signed.at": 1,
                "changes": 1,
            },
        ):
            signed = doc.get("signed") or {}
            states[(doc["org_id"], doc["month"])] = {
                "report_id": str(doc["_id"]),
                "status": doc["status"],
                "version": signed.get("version"),
                "signed_at": signed.get("at"),
                "changed": bool(doc.get("changes")),
            }
        return states


def _station_name(path: list[str], tree: Mapping[str, Org]) -> str | None:
    for node in path:
        if node in tree and tree[node].kind == OrgKind.STATION:
            return tree[node].name
    return None


def _risk_on(history: list[dict[str, Any]], day: dt.date) -> int | None:
    level = None
    for change in sorted(history, key=lambda h: h["at"]):
        if dt.date.fromisoformat(str(change["at"])[:10]) <= day:
            level = int(change["level"])
    return level


def _minutes(value: Any) -> float:
    """A date difference from the database: milliseconds (MongoDB) or a timedelta."""
    if isinstance(value, dt.timedelta):
        return value.total_seconds() / 60
    return float(value) / 60000


def _number(value: float) -> float | int:
    return round(value, 2) if isinstance(value, float) else value

"""The figures of a monthly compliance report, as pure computations: the month and its bounds,
what each figure and rate is called, one person's month as it is assembled, a node's summary,
the hash a signature covers and what changed since. No I/O: reading.py reads the records,
service.py keeps the reports."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import re
import statistics
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from models.clock import LOCAL_TZ
from models.errors import InvalidInput
from models.orgs import Org, OrgKind

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
STATUS_FIGURE = {
    "done": "on_time",
    "late": "late",
    "missed": "missed",
    "scheduled": "missed",  # the month has ended: a window still scheduled was not met
    "open": "missed",
    "excused": "excused",
    "pending_review": "pending",
}
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


def overlap_days(start: str, end: str | None, month: Month, today: dt.date) -> int:
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


class PersonMonth:
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


def report_rows(
    people: Mapping[str, PersonMonth], tree: Mapping[str, Org], unit_kind: OrgKind | None
) -> list[dict]:
    """A node's rows, in subject order: each person's month finished, with the unit of the
    tree (of `unit_kind`) their file sits in."""

    def unit_for(path: list[str]) -> str | None:
        if unit_kind is None:
            return None
        for node in path:
            if node in tree and tree[node].kind == unit_kind:
                return node
        return None

    units = {sid: unit_for(entry.org_path) for sid, entry in people.items()}
    # Someone seen only in the month before (for the trend) is not in this month's report.
    rows = [row for row in (e.finish(units) for e in people.values()) if row_counts(row)]
    rows.sort(key=lambda r: r["subject_id"])
    return rows


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


def summarise(
    rows: list[dict], tree: Mapping[str, Org], unit_kind: OrgKind | None
) -> dict[str, Any]:
    """A node's summary from its rows: totals and rates, by program, level and trend, and a
    line for every unit of the tree (a quiet one marked `nothing_recorded`)."""
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


def diff(
    signed: Mapping[str, Any], signed_rows: list[dict], summary: Mapping, rows: list
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


def station_name(path: list[str], tree: Mapping[str, Org]) -> str | None:
    """The name of the station a file's path passes through, if the tree holds it."""
    for node in path:
        if node in tree and tree[node].kind == OrgKind.STATION:
            return tree[node].name
    return None


def risk_on(history: list[dict[str, Any]], day: dt.date) -> int | None:
    """The risk level assessed last on or before `day` (None before the first)."""
    level = None
    for change in sorted(history, key=lambda h: h["at"]):
        if dt.date.fromisoformat(str(change["at"])[:10]) <= day:
            level = int(change["level"])
    return level


def duration_minutes(value: Any) -> float:
    """A date difference from the database: milliseconds (MongoDB) or a timedelta."""
    if isinstance(value, dt.timedelta):
        return value.total_seconds() / 60
    return float(value) / 60000


def _number(value: float) -> float | int:
    return round(value, 2) if isinstance(value, float) else value

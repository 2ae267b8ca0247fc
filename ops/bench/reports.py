"""Monthly compliance reports: seconds per station and per county report, at two database sizes.

What is measured (issue: "report time for one station (200 subjects) and one county (5,000
subjects) in databases of 10,000 and 50,000 subjects with a month of history: the station report
must not grow with the size of the rest of the database (within 1.2x)"), for each size N, in a
database of its own:

- The tree, built through `OrgService.create`: a city; the measured county of
  min(5,000, N / 2) subjects in stations of 200 (25 stations at 10,000 and up; at 2,000, five),
  the first of them the measured station; the other N - that many subjects in further stations
  of 200, 25 to a county.
- Seeded, not measured, with `insert_many` batches straight into the collections, in the shapes
  the services write (`store.ensure_indexes(collection_specs())` first, so the real indexes are
  kept up to date during the load): per subject a community-corrections program (ProgramService's
  document: mostly started between January 2025 and September 2026 and running; a few taken in
  or ended during October 2026, a few ended in August or September) and its occurrences
  (`ObligationService._document`) from the second half of September 2026 (the report reads the
  month before for the trend) to a week after the report date: weekly remote check-ins, an in-person
  report every 30 days and a monthly education window with hours; ended windows mostly done,
  some late, missed, excused or awaiting review; later ones scheduled. An `obligation_missed`
  alert per missed window as the sweep raises them (acknowledged some hours later, the last
  days' still open). For a few subjects an approved leave (in October, a few not returned; or
  long before), an approved sanction decided in October (or September, or still pending), a
  脱管 episode. The measured station's 200 subjects get the same data at every size (a random
  generator seeded by the subject's number), so only the rest of the database changes.
- Measured, through the services `server.app.build_services` wires, with the clock fixed at
  2026-11-02 09:00 Asia/Shanghai: `ReportService.generate(ctx, org_id, "2026-10")` as the system
  identity, for the station (one warm-up, then STATION_RUNS calls) and the county (one warm-up,
  then COUNTY_RUNS calls). Seconds per report (best, median, worst), the people (rows) in it, the
  database commands each call sent (count and milliseconds, by command and collection), and the
  CPU of the database and client meanwhile. A `generate` is the whole refresh: the aggregation,
  the rows written under a new copy, the previous copy deleted, the audit record.
- Checked: the report's figures against the tally of what was seeded for that node (people,
  intakes, terminations, windows by status, check-ins, education hours, alerts, leave, sanctions,
  脱管); a difference is listed beside the figures, not hidden.
- Ratios: station median at the largest N / at the smallest N against the 1.2 target, with the
  commands whose time grew most (a query that scans grows with the database); the county
  likewise (informational: below 10,000 subjects the measured county is smaller), and seconds
  per 1,000 rows.

`make bench` runs 2,000 and 10,000 subjects (this part: about 3.5 minutes on two cores, most of
it seeding). The issue's sizes take about 18 minutes, 15 of them seeding 50,000 subjects' 680,000
occurrences: `.venv/bin/python -m ops.bench --report-subjects 10000,50000` (add
`--checkin-subjects 0 --sweep-subjects 0 --casework-subjects 0` to run this part alone).

Each size gets an embedded SecantusDB of its own, started for it in the bench process and
removed afterwards; the client runs in a spawned process, so it does not share the database's
GIL.
"""

from __future__ import annotations

import datetime as dt
import os
import random
import statistics
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bson import Binary, ObjectId
from pymongo import monitoring

from ops.bench.child import run_in_child
from ops.bench.measure import BenchError, CpuMeter, RoundTrips, embedded_database
from ops.bench.sweeps import parse_sizes as _parse_any_sizes

DEFAULT_SIZES = (2_000, 10_000)
ISSUE_SIZES = (10_000, 50_000)
MIN_SUBJECTS, MAX_SUBJECTS = 1_000, 100_000
STATION_SUBJECTS = 200
COUNTY_STATIONS = 25
COUNTY_SUBJECTS = STATION_SUBJECTS * COUNTY_STATIONS  # 5,000
TARGET_RATIO = 1.2
MONTH = "2026-10"
MONTH_FIRST = dt.date(2026, 10, 1)
NEXT_FIRST = dt.date(2026, 11, 1)
HISTORY_FIRST = dt.date(2026, 9, 1)  # the month before, read for the trend
SEEDED_FROM = dt.date(2026, 9, 16)  # of it, the windows ending in its second half are stored
NOW_LOCAL = dt.datetime(2026, 11, 2, 9, 0)
AHEAD = dt.timedelta(days=7)  # windows stored beyond the report date, as materialising does
STATION_RUNS = 5
COUNTY_RUNS = 3
BATCH = 1_000  # subjects per round of insert_many (about 13,500 occurrences)
EDUCATION_HOURS = 8
OPEN_ALERT_DAYS = 5  # alerts of misses younger than this are still open
HEARTBEAT_PATIENCE_MS = 300_000  # see ops.bench.casework: a busy embedded database answers late
MIN_CPU_SECONDS = 0.5
# Seeding, per subject, at the rates of a two-core machine with room to spare; per size, the
# tree and the measured calls.
SECONDS_PER_SUBJECT = 0.04
SECONDS_PER_SIZE = 180.0
FIXED_SECONDS = 60.0
RULES_VERSION = "bench"
# Figures the check compares with what was seeded (the report's other figures stay 0 here).
CHECKED = (
    "subjects",
    "intakes",
    "terminations",
    "obligations_due",
    "obligations_on_time",
    "obligations_late",
    "obligations_missed",
    "obligations_excused",
    "obligations_pending",
    "checkins_due",
    "checkins_on_time",
    "checkins_late",
    "checkins_missed",
    "checkins_excused",
    "education_required_hours",
    "education_done_hours",
    "leave_approved",
    "leave_days",
    "overdue_returns",
    "alerts",
    "alerts_acknowledged",
    "alerts_open",
    "detachments",
    "detachment_days",
    "praise",
    "admonish",
    "warn",
)
STATUS_FIGURE = {
    "done": "on_time",
    "late": "late",
    "missed": "missed",
    "excused": "excused",
    "pending_review": "pending",
}


def parse_sizes(text: str) -> tuple[int, ...]:
    """`10000,50000` → (10000, 50000); `0` → () (skipped); ValueError says what is wrong."""
    sizes = _parse_any_sizes(text)
    if any(not MIN_SUBJECTS <= size <= MAX_SUBJECTS for size in sizes):
        raise ValueError(f"each size must be between {MIN_SUBJECTS} and {MAX_SUBJECTS}")
    return sizes


def time_limit(subjects: int) -> float:
    """How long the parent waits for a size's answer: never forever."""
    return FIXED_SECONDS + SECONDS_PER_SIZE + SECONDS_PER_SUBJECT * subjects


def county_subjects(n: int) -> int:
    """The measured county's people: 5,000, or half the database when that is smaller."""
    return min(COUNTY_SUBJECTS, n // 2) // STATION_SUBJECTS * STATION_SUBJECTS


@dataclass(frozen=True)
class ReportSpec:
    database_uri: str
    subjects: int
    # The process serving the database, whose CPU use is reported as the "server" side.
    database_pid: int


@dataclass
class Expected:
    """What the seeded data should show in one node's October report."""

    figures: Counter[str] = field(default_factory=Counter)
    people: int = 0  # subjects with any record in September or October (a row each)


def _local(day: dt.date, hour: int = 0) -> dt.datetime:
    from models.clock import LOCAL_TZ

    return dt.datetime.combine(day, dt.time(hour), tzinfo=LOCAL_TZ).astimezone(dt.UTC)


def _sealed(size: int) -> Binary:
    """Stands in for a sealed field (the report never opens one); about the stored size."""
    return Binary(os.urandom(size))


class _Seeder:
    """Builds one subject's documents at a time, deterministic per subject number, and tallies
    what the measured station's and county's reports should show."""

    def __init__(self, services: Any, now: dt.datetime):
        self.make = services.obligations._document  # exactly the documents materialising stores
        self.now = now
        self.month_start = _local(MONTH_FIRST)
        self.month_end = _local(NEXT_FIRST)
        self.history_start = _local(HISTORY_FIRST)
        self.seeded_from = _local(SEEDED_FROM)
        self.horizon = now + AHEAD
        self.today = NOW_LOCAL.date()

    # --- one subject -------------------------------------------------------------------------

    def program(
        self, rng: random.Random, subject_id: str, station: Any
    ) -> tuple[dict[str, Any], dt.date, dt.date | None]:
        from models.periods import add_months, add_years

        roll = rng.random()
        ended_on: dt.date | None = None
        if roll < 0.03:  # taken in during October
            start = MONTH_FIRST + dt.timedelta(days=rng.randint(1, 27))
        else:
            start = dt.date(2025, 1, 1) + dt.timedelta(days=rng.randint(0, 627))  # to 2026-09-20
            if roll < 0.06:  # ended during October
                ended_on = MONTH_FIRST + dt.timedelta(days=rng.randint(2, 27))
            elif roll < 0.08:  # ended in August or September: not in the report
                ended_on = dt.date(2026, 8, 1) + dt.timedelta(days=rng.randint(0, 55))
        if ended_on is not None and ended_on <= start:
            start = ended_on - dt.timedelta(days=200)
        end = ended_on or add_years(start, rng.randint(1, 3)) + dt.timedelta(days=30)
        strict_until = add_months(start, 3)
        level = "lenient" if rng.random() < 0.3 else "normal"
        history: list[dict[str, Any]] = []
        if strict_until < MONTH_FIRST and rng.random() < 0.08:
            history.append(
                {
                    "level": "strict",  # tightened during the month
                    "from": (MONTH_FIRST + dt.timedelta(days=rng.randint(3, 25))).isoformat(),
                    "reason": "评估调整",
                }
            )
        created = _local(start, 10)
        status = "ended" if ended_on else "active"
        doc: dict[str, Any] = {
            "_id": ObjectId(),
            "subject_id": subject_id,
            "org_id": ObjectId(station.id),
            "org_path": list(station.path),
            "type": "community_corrections",
            "status": status,
            "start_date": start.isoformat(),
            "end_date": end.isoformat(),
            "ended_on": ended_on.isoformat() if ended_on else None,
            "details": {
                "sentence_type": rng.choice(("control", "probation", "probation", "parole")),
                "supervision_level": level,
                "strict_until": strict_until.isoformat(),
                "level_history": history,
                "intake_due": (start + dt.timedelta(days=10)).isoformat(),
                "intake_done": (start + dt.timedelta(days=3)).isoformat(),
            },
            "sealed": {"prohibitions": None, "plan": _sealed(120)},
            "rules_version": RULES_VERSION,
            "history": [
                {
                    "to": "pending_intake",
                    "at": created,
                    "by": "bench-intake",
                    "reason": "opened",
                    "rules_version": RULES_VERSION,
                },
                {"to": "active", "at": created + dt.timedelta(days=3), "by": "bench-intake"},
            ],
            "created_at": created,
            "updated_at": created,
            "version": 2,
        }
        if ended_on:
            doc["history"].append({"to": "ended", "at": _local(ended_on, 10), "by": "bench"})
            doc["version"] = 3
        return doc, start, ended_on

    def windows(self, start: dt.date, ended_on: dt.date | None) -> list[Any]:
        """The program's windows that end in the second half of September or later and start
        before the horizon (or the program's end)."""
        from models.obligations import windows
        from models.periods import add_months
        from models.programs import ObligationRule

        stop = ended_on + dt.timedelta(days=1) if ended_on else None
        until = (self.horizon + dt.timedelta(days=1)).date()
        since = HISTORY_FIRST - dt.timedelta(days=40)
        out = []
        for kind, every in (("remote_checkin", 7), ("in_person_report", 30)):
            # Aligned with the start, as materialising aligns them; skip the long-past periods.
            skipped = max(0, (since - start).days // every)
            out += windows(
                ObligationRule(
                    kind,
                    start + dt.timedelta(days=skipped * every),
                    stop,
                    every_days=every,
                    rule_keys=(f"corrections.normal.{kind}_every_days",),
                    rules_version=RULES_VERSION,
                ),
                until,
            )
        months = max(0, (since.year - start.year) * 12 + since.month - start.month)
        out += windows(
            ObligationRule(
                "education",
                add_months(start, months),
                stop,
                hours_per_month=EDUCATION_HOURS,
                rule_keys=("corrections.normal.education_hours_per_month",),
                rules_version=RULES_VERSION,
            ),
            until,
        )
        return [w for w in out if w.end > self.seeded_from and w.start < self.horizon]

    def occurrence(
        self, rng: random.Random, program: dict[str, Any], window: Any, troubled: bool
    ) -> dict[str, Any]:
        doc = self.make(program, window, window.start - dt.timedelta(days=30))
        if window.end > self.now:
            return doc  # running or ahead: still scheduled
        roll = rng.random()
        if troubled:
            roll = 0.8 + roll * 0.2  # mostly late, missed or excused
        if window.kind == "education":
            done = rng.choice((8, 8, 8, 8, 6, 4, 0, 10))
            doc["hours_done"] = done
            doc["hours_log"] = (
                [{"hours": done, "at": window.end - dt.timedelta(days=2)}] if done else []
            )
            status = "done" if done >= EDUCATION_HOURS else "missed"
        elif roll < 0.82:
            status = "done"
        elif roll < 0.88:
            status = "late"
        elif roll < 0.94:
            status = "missed"
        elif roll < 0.98:
            status = "excused"
        else:
            status = "pending_review"
        if window.kind == "in_person_report" and status == "pending_review":
            status = "done"
        doc["status"] = status
        if status in ("done", "late", "pending_review"):
            doc["result_at"] = window.end - dt.timedelta(hours=rng.randint(2, 30))
            if window.kind == "remote_checkin":
                doc["checkin_id"] = str(ObjectId())
            else:
                doc["result"] = "done"
                doc["result_by"] = "bench-officer"
        elif status == "missed":
            doc["missed_at"] = window.end
        elif status == "excused":
            doc["excuse_reason"] = "准假"
        return doc

    def alert(self, rng: random.Random, occurrence: dict[str, Any], station: Any) -> dict[str, Any]:
        """What `ObligationService._alert_missed` raises for a missed window."""
        created = occurrence["window_end"]
        doc: dict[str, Any] = {
            "_id": ObjectId(),
            "kind": "obligation_missed",
            "org_id": station.id,
            "org_path": list(station.path),
            "subject_id": occurrence["subject_id"],
            "to_user_id": f"sw-{station.id}",
            "status": "open",
            "created_at": created,
            "details": {
                "occurrence_id": occurrence["_id"],
                "kind": occurrence["kind"],
                "program_id": occurrence["program_id"],
                "window_end": created.isoformat(),
            },
            "dedupe_key": f"missed:{occurrence['_id']}",
        }
        if created < self.now - dt.timedelta(days=OPEN_ALERT_DAYS) and rng.random() < 0.9:
            doc["status"] = "acknowledged"
            doc["acknowledged_at"] = created + dt.timedelta(minutes=rng.randint(30, 48 * 60))
            doc["acknowledged_by"] = doc["to_user_id"]
        return doc

    @staticmethod
    def _approval(rule: str, at: dt.datetime) -> dict[str, Any]:
        return {
            "levels": ["station"],
            "rule": rule,
            "rules_version": RULES_VERSION,
            "steps": [
                {
                    "level": "station",
                    "by": "bench-officer",
                    "approve": True,
                    "comment": "同意",
                    "at": at,
                    "rules_version": RULES_VERSION,
                }
            ],
        }

    def leave(self, rng: random.Random, program: dict[str, Any]) -> dict[str, Any] | None:
        """An approved leave: in October for one in sixteen (one in ten of those not returned),
        long past for as many more; none otherwise."""
        roll = rng.random()
        if roll >= 0.12:
            return None
        if roll < 0.06:
            start = MONTH_FIRST + dt.timedelta(days=rng.randint(2, 24))
        else:
            start = dt.date(2026, 6, 1) + dt.timedelta(days=rng.randint(0, 60))
        end = start + dt.timedelta(days=rng.randint(1, 6))
        returned = None if roll < 0.006 else end
        asked = _local(start - dt.timedelta(days=5), 9)
        return {
            "_id": ObjectId(),
            "subject_id": program["subject_id"],
            "org_id": str(program["org_id"]),
            "org_path": list(program["org_path"]),
            "start_date": start.isoformat(),
            "end_date": end.isoformat(),
            "days": (end - start).days + 1,
            "window_total_days": (end - start).days + 1,
            "destination": _sealed(60),
            "reason": _sealed(60),
            "status": "approved",
            "approval": self._approval("leave.chain.short", asked + dt.timedelta(hours=3)),
            "channel": "staff",
            "requested_by": "bench-worker",
            "returned_on": returned.isoformat() if returned else None,
            "return_late": False if returned else None,
            "decided_at": asked + dt.timedelta(hours=3),
            "created_at": asked,
            "updated_at": asked + dt.timedelta(hours=3),
            "version": 2,
        }

    def sanction(self, rng: random.Random, program: dict[str, Any]) -> dict[str, Any] | None:
        """A praise, admonishment or warning: decided in October for one in thirty, in
        September or still pending for as many more."""
        roll = rng.random()
        if roll >= 0.06:
            return None
        kind = rng.choice(("praise", "admonish", "warn"))
        if roll < 0.03:
            decided: dt.datetime | None = self.month_start + dt.timedelta(
                hours=rng.randint(24, 29 * 24)
            )
        elif roll < 0.045:
            decided = self.history_start + dt.timedelta(hours=rng.randint(24, 28 * 24))
        else:
            decided = None
        created = (decided or self.now) - dt.timedelta(days=2)
        return {
            "_id": ObjectId(),
            "subject_id": program["subject_id"],
            "org_id": str(program["org_id"]),
            "org_path": list(program["org_path"]),
            "kind": kind,
            "reason": _sealed(80),
            "detachment_id": None,
            "status": "approved" if decided else "pending",
            "approval": self._approval(f"sanctions.chain.{kind}", decided or created),
            "submitted_to": None,
            "decided_at": decided,
            "proposed_by": "bench-worker",
            "created_at": created,
            "updated_at": decided or created,
            "version": 2 if decided else 1,
        }

    def detachment(self, rng: random.Random, program: dict[str, Any]) -> dict[str, Any] | None:
        """A 脱管 episode in October for one in a hundred (a third still open)."""
        roll = rng.random()
        if roll >= 0.01:
            return None
        start = MONTH_FIRST + dt.timedelta(days=rng.randint(3, 25))
        end = None if roll < 0.0033 else start + dt.timedelta(days=rng.randint(0, 4))
        return {
            "_id": ObjectId(),
            "subject_id": program["subject_id"],
            "org_path": list(program["org_path"]),
            "start_date": start.isoformat(),
            "end_date": end.isoformat() if end else None,
            "recorded_by": "system",
            "created_at": _local(start, 12),
        }

    # --- what the report should show -----------------------------------------------------------

    def tally(
        self,
        into: Expected,
        program: dict[str, Any],
        start: dt.date,
        ended_on: dt.date | None,
        occurrences: list[dict[str, Any]],
        alerts: list[dict[str, Any]],
        leave: dict[str, Any] | None,
        sanction: dict[str, Any] | None,
        detachment: dict[str, Any] | None,
    ) -> None:
        figures = into.figures
        seen = False
        if start < NEXT_FIRST and (ended_on is None or ended_on >= MONTH_FIRST):
            seen = True
            figures["subjects"] += 1
            figures["intakes"] += int(MONTH_FIRST <= start < NEXT_FIRST)
            figures["terminations"] += int(ended_on is not None and ended_on < NEXT_FIRST)
        for occ in occurrences:
            end = occ["window_end"]
            if not self.history_start < end <= self.month_end:
                continue
            seen = True
            if end <= self.month_start:
                continue
            figure = STATUS_FIGURE.get(occ["status"], "missed")
            figures["obligations_due"] += 1
            figures[f"obligations_{figure}"] += 1
            if occ["kind"] == "remote_checkin":
                figures["checkins_due"] += 1
                figures[f"checkins_{figure}"] += 1
            elif occ["kind"] == "education":
                figures["education_required_hours"] += occ["required_hours"] or 0
                figures["education_done_hours"] += occ.get("hours_done", 0)
        for alert in alerts:
            if self.month_start <= alert["created_at"] < self.month_end:
                seen = True
                figures["alerts"] += 1
                if alert["status"] == "open":
                    figures["alerts_open"] += 1
                else:
                    figures["alerts_acknowledged"] += 1
        if leave and leave["end_date"] >= MONTH_FIRST.isoformat():
            seen = True
            figures["leave_approved"] += 1
            first = max(dt.date.fromisoformat(leave["start_date"]), MONTH_FIRST)
            last = min(dt.date.fromisoformat(leave["end_date"]), NEXT_FIRST - dt.timedelta(days=1))
            figures["leave_days"] += (last - first).days + 1
            figures["overdue_returns"] += int(leave["returned_on"] is None)
        if sanction and sanction["decided_at"] and sanction["decided_at"] >= self.month_start:
            seen = True
            figures[sanction["kind"]] += 1
        if detachment:
            seen = True
            figures["detachments"] += 1
            first = dt.date.fromisoformat(detachment["start_date"])
            last = (
                dt.date.fromisoformat(detachment["end_date"])
                if detachment["end_date"]
                else min(self.today, NEXT_FIRST - dt.timedelta(days=1))
            )
            figures["detachment_days"] += (last - first).days + 1
        into.people += int(seen)


async def _seed(
    services: Any, store: Any, n: int, stations: list[Any], measured_county: int, now: dt.datetime
) -> tuple[dict[str, Any], Expected, Expected]:
    """N subjects' month and the month before, in bulk; not part of what is measured.

    Subject i belongs to `stations[i // 200]` (the measured station first, the rest of the
    measured county next); what those two reports should show is tallied."""
    seeder = _Seeder(services, now)
    names = ("programs", "occurrences", "alerts", "leave_requests", "sanctions", "detachments")
    collections = {name: store.collection(name) for name in names}
    counts: Counter[str] = Counter()
    station_expected, county_expected = Expected(), Expected()
    started = time.perf_counter()
    pending: dict[str, list[dict[str, Any]]] = {name: [] for name in names}

    async def flush() -> None:
        for name in names:
            docs = pending[name]
            if docs:
                await collections[name].insert_many(docs, ordered=False)
                counts[name] += len(docs)
                pending[name] = []

    for index in range(n):
        station = stations[index // STATION_SUBJECTS]
        rng = random.Random(index)
        subject_id = str(ObjectId())
        program, start, ended_on = seeder.program(rng, subject_id, station)
        troubled = rng.random() < 0.05
        occurrences = [
            seeder.occurrence(rng, program, window, troubled)
            for window in seeder.windows(start, ended_on)
        ]
        alerts = [
            seeder.alert(rng, occ, station) for occ in occurrences if occ["status"] == "missed"
        ]
        # Leave, sanctions and 脱管 for people supervised throughout October only.
        running = start < MONTH_FIRST and ended_on is None
        leave = seeder.leave(rng, program) if running else None
        sanction = seeder.sanction(rng, program) if running else None
        detachment = seeder.detachment(rng, program) if running else None
        pending["programs"].append(program)
        pending["occurrences"] += occurrences
        pending["alerts"] += alerts
        for name, doc in (
            ("leave_requests", leave),
            ("sanctions", sanction),
            ("detachments", detachment),
        ):
            if doc is not None:
                pending[name].append(doc)
        records = (program, start, ended_on, occurrences, alerts, leave, sanction, detachment)
        if index < STATION_SUBJECTS:
            seeder.tally(station_expected, *records)
        if index < measured_county:
            seeder.tally(county_expected, *records)
        if (index + 1) % BATCH == 0:
            await flush()
    await flush()
    return (
        {"seconds": time.perf_counter() - started, "subjects": n, **dict(counts)},
        station_expected,
        county_expected,
    )


async def _tree(services: Any, n: int) -> tuple[Any, Any, list[Any]]:
    """The city, the measured county (its first station the measured one) and the others;
    answers the measured county, station, and one station entry per 200 subjects."""
    from models.orgs import OrgKind
    from server.app import SYSTEM

    create = services.orgs.create
    city = await create(SYSTEM, name="市", code="r-city", kind=OrgKind.CITY, parent_id=None)
    measured = county_subjects(n)
    per_county = [measured // STATION_SUBJECTS]
    others = -(-(n - measured) // STATION_SUBJECTS)  # stations for the rest, the last part-full
    while others > 0:
        per_county.append(min(COUNTY_STATIONS, others))
        others -= per_county[-1]
    stations: list[Any] = []
    counties: list[Any] = []
    for c, count in enumerate(per_county):
        county = await create(
            SYSTEM, name=f"区{c}", code=f"r-co-{c}", kind=OrgKind.COUNTY, parent_id=city.id
        )
        counties.append(county)
        for s in range(count):
            stations.append(
                await create(
                    SYSTEM,
                    name=f"{c}区所{s}",
                    code=f"r-st-{c}-{s}",
                    kind=OrgKind.STATION,
                    parent_id=county.id,
                )
            )
    return counties[0], stations[0], stations


async def _timed_reports(
    services: Any,
    store: Any,
    ctx: Any,
    org: Any,
    runs: int,
    trips: RoundTrips,
    database_pid: int,
) -> dict[str, Any]:
    """One warm-up `generate`, then `runs` measured ones: their seconds, commands and CPU."""
    started = time.perf_counter()
    view, created = await services.reports.generate(ctx, org.id, MONTH)
    first = time.perf_counter() - started
    if not created:
        raise BenchError(f"{org.name}: the first report of {MONTH} was not created by the call")
    samples: list[float] = []
    meter = CpuMeter({"server": database_pid, "client": os.getpid()})
    trips.reset()
    meter.start()
    for _ in range(runs):
        started = time.perf_counter()
        view, _ = await services.reports.generate(ctx, org.id, MONTH)
        samples.append(time.perf_counter() - started)
    cpu = meter.stop() if sum(samples) >= MIN_CPU_SECONDS else {}
    commands = trips.per_call(runs)
    # The people in it, as the report's current copy holds them (however they are stored).
    report = await store.collection("compliance_reports").find_one({"_id": ObjectId(view.id)})
    copy = report["current"]["copy"]
    people = len(await services.reports._load_rows(report["_id"], copy))
    documents = await store.collection("compliance_report_rows").count_documents(
        {"report_id": report["_id"], "copy": copy}
    )
    return {
        "first_seconds": first,
        "seconds": samples,
        "best_seconds": min(samples),
        "median_seconds": statistics.median(samples),
        "worst_seconds": max(samples),
        "rows": people,
        "row_documents": documents,
        "subjects": view.summary["figures"]["subjects"],
        "figures": view.summary["figures"],
        "rates": view.summary["rates"],
        "units": len(view.summary["units"]),
        "round_trips": sum(c["count"] for c in commands.values()),
        "commands": commands,
        "server_cpu": cpu.get("server"),
        "client_cpu": cpu.get("client"),
        "other_cpu": cpu.get("other"),
    }


def _differences(report: dict[str, Any], expected: Expected) -> dict[str, Any]:
    """Seeded against reported: each checked figure that differs, and rows against people."""
    out: dict[str, Any] = {}
    for key in CHECKED:
        want, got = expected.figures.get(key, 0), report["figures"].get(key, 0)
        if abs(float(want) - float(got)) > 1e-6:
            out[key] = {"seeded": want, "reported": got}
    if report["rows"] != expected.people:
        out["rows"] = {"seeded": expected.people, "reported": report["rows"]}
    return out


async def _measure_size(spec: ReportSpec, n: int, work: Path, trips: RoundTrips) -> dict[str, Any]:
    from models.audit import AuditContext
    from models.clock import FixedClock
    from models.identity import Identity
    from models.store import DatabaseSettings, Store
    from server.app import build_services, collection_specs, open_vault
    from server.config import Config

    db_name = f"bench_reports_{n}"
    config = Config.from_env(
        {
            "MONGODB_URI": spec.database_uri,
            "ANBANG_DB_NAME": db_name,
            "ANBANG_VAR_DIR": str(work / db_name),
        }
    )
    now = _local(NOW_LOCAL.date(), NOW_LOCAL.hour)
    settings = DatabaseSettings(
        uri=spec.database_uri,
        name=db_name,
        production=False,
        connect_timeout_ms=HEARTBEAT_PATIENCE_MS,
    )
    store = Store.connect(settings)
    try:
        # A fresh database, removed with its server afterwards: nothing to drop first or after.
        await store.ensure_indexes(collection_specs())
        clock = FixedClock(now)
        vault = await open_vault(config, store, clock)
        services = build_services(store, config, clock, vault)
        started = time.perf_counter()
        county, station, stations = await _tree(services, n)
        tree_seconds = time.perf_counter() - started
        seeding, station_expected, county_expected = await _seed(
            services, store, n, stations, county_subjects(n), now
        )
        seeding["tree_seconds"] = tree_seconds
        seeding["orgs"] = await store.collection("orgs").count_documents({})
        ctx = AuditContext(
            Identity(user_id="system", role="system", unscoped=True), request_id="bench-reports"
        )
        load = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
        station_report = await _timed_reports(
            services, store, ctx, station, STATION_RUNS, trips, spec.database_pid
        )
        county_report = await _timed_reports(
            services, store, ctx, county, COUNTY_RUNS, trips, spec.database_pid
        )
        station_report["differences"] = _differences(station_report, station_expected)
        county_report["differences"] = _differences(county_report, county_expected)
        return {
            "subjects": n,
            "county_subjects": county_subjects(n),
            "station_subjects": STATION_SUBJECTS,
            "seeding": seeding,
            "load_average_1m": load,
            "station": station_report,
            "county": county_report,
        }
    finally:
        await store.close()


async def _measure(spec: ReportSpec) -> dict[str, Any]:
    trips = RoundTrips()
    monitoring.register(trips)  # this process's clients only: it is a spawned child
    with tempfile.TemporaryDirectory(prefix="anbang-bench-reports-") as work:
        return await _measure_size(spec, spec.subjects, Path(work), trips)


def ratios(sizes: dict[str, Any]) -> dict[str, Any] | None:
    """Median seconds at the largest size over those at the smallest: the station's against the
    1.2 target, the county's for information (comparable only when its size did not change)."""
    if len(sizes) < 2:
        return None
    ordered = sorted(sizes.values(), key=lambda size: size["subjects"])
    small, large = ordered[0], ordered[-1]
    station = large["station"]["median_seconds"] / small["station"]["median_seconds"]
    county = large["county"]["median_seconds"] / small["county"]["median_seconds"]
    before = small["station"]["commands"]
    # Where a station call's time grew: each kind of command's milliseconds per call at the
    # largest size and the smallest, most added first (what grows is what scans).
    commands = {
        key: {
            "from_ms": before[key]["ms"],
            "to_ms": spent["ms"],
            "ratio": spent["ms"] / before[key]["ms"],
        }
        for key, spent in large["station"]["commands"].items()
        if key in before and spent["ms"] >= 5 and before[key]["ms"] > 0
    }
    return {
        "from_subjects": small["subjects"],
        "to_subjects": large["subjects"],
        "target": TARGET_RATIO,
        "station": station,
        "station_best": large["station"]["best_seconds"] / small["station"]["best_seconds"],
        "station_within": station <= TARGET_RATIO,
        "county": county,
        "county_comparable": small["county_subjects"] == large["county_subjects"],
        "station_commands": dict(
            sorted(commands.items(), key=lambda item: item[1]["from_ms"] - item[1]["to_ms"])
        ),
    }


def measure_reports(sizes: tuple[int, ...] = DEFAULT_SIZES) -> dict[str, Any]:
    """Each size in a database of its own: an embedded database started for it, seeded and
    measured from a child process, then stopped and removed (dropping a database of 50,000
    subjects would take minutes). The figures by size, and their ratios."""
    sizes = tuple(sorted(set(sizes)))
    if not sizes or any(not MIN_SUBJECTS <= size <= MAX_SUBJECTS for size in sizes):
        raise BenchError(f"report sizes must be between {MIN_SUBJECTS:,} and {MAX_SUBJECTS:,}")
    value: dict[str, Any] = {}
    for n in sizes:
        with embedded_database() as uri:
            spec = ReportSpec(database_uri=uri, subjects=n, database_pid=os.getpid())
            size = run_in_child(
                _measure,
                spec,
                name="bench-reports",
                what=f"the report benchmark at {n:,} subjects",
                limit=time_limit(n),
            )
        value[str(n)] = size
        # A long run says how far it got, and what it found so far.
        print(
            f"bench: reports, {n:,} subjects: seeded in {size['seeding']['seconds']:.0f} s; "
            f"station median {size['station']['median_seconds']:.3f} s, county "
            f"({size['county_subjects']:,}) median {size['county']['median_seconds']:.3f} s",
            flush=True,
        )
    return {"month": MONTH, "sizes": value, "ratios": ratios(value)}


def _cores(value: float | None) -> str:
    return "n/a" if value is None else f"{value * 100:.0f}%"


def reports_table(figures: dict[str, Any]) -> str:
    header = (
        f"{'monthly report (generate, seconds)':<40} {'rows':>6} {'best':>7} {'median':>7} "
        f"{'worst':>7} {'first':>7} {'s/1000':>7} {'trips':>6} {'db CPU':>7} {'client':>7}"
    )
    lines = [header, "-" * len(header)]
    for size in figures["sizes"].values():
        for node in ("station", "county"):
            run = size[node]
            label = f"{node} ({size[f'{node}_subjects']:,} subjects)"
            per = run["median_seconds"] / max(1, run["rows"]) * 1000
            lines.append(
                f"{size['subjects']:>7,} subjects, {label:<23} {run['rows']:>6,} "
                f"{run['best_seconds']:>7.3f} {run['median_seconds']:>7.3f} "
                f"{run['worst_seconds']:>7.3f} {run['first_seconds']:>7.3f} {per:>7.3f} "
                f"{run['round_trips']:>6.1f} "
                f"{_cores(run['server_cpu']):>7} {_cores(run['client_cpu']):>7}"
            )
    lines.append(
        f"best/median/worst of {STATION_RUNS} station and {COUNTY_RUNS} county calls after a "
        "warm-up (first: the warm-up, which creates the report); s/1000: median seconds per "
        "1,000 rows; trips: database commands per call"
    )
    for size in figures["sizes"].values():
        seeding = size["seeding"]
        lines.append(
            f"{size['subjects']:>7,} subjects seeded in {seeding['seconds']:.0f} s "
            f"({seeding.get('occurrences', 0):,} occurrences, {seeding.get('alerts', 0):,} "
            f"alerts, {seeding.get('programs', 0):,} programs; {seeding['orgs']} orgs in "
            f"{seeding['tree_seconds']:.1f} s)"
        )
        for node in ("station", "county"):
            run = size[node]
            spent = ", ".join(
                f"{name} {c['count']:g}x {c['ms']:.0f}"
                for name, c in list(run["commands"].items())[:5]
            )
            lines.append(f"{'':>8}{node} per call (commands, ms): {spent}")
            other = run["other_cpu"]
            if other is not None and other > 0.25:
                lines.append(
                    f"{'':>8}note: other processes used {other * 100:.0f}% of a core meanwhile"
                )
            if run["differences"]:
                diffs = ", ".join(
                    f"{key} {d['reported']} (seeded {d['seeded']})"
                    for key, d in run["differences"].items()
                )
                lines.append(f"{'':>8}FIGURES DIFFER from what was seeded: {diffs}")
    grown = figures.get("ratios")
    if grown:
        verdict = "ok" if grown["station_within"] else "OVER"
        county = (
            "same county size"
            if grown["county_comparable"]
            else "the measured county grew with the database"
        )
        lines.append(
            f"{grown['to_subjects']:,} / {grown['from_subjects']:,} subjects: station median "
            f"x{grown['station']:.2f} (best x{grown['station_best']:.2f}; target ≤ "
            f"x{grown['target']}): {verdict}; county x{grown['county']:.2f} ({county})"
        )
        moved = [
            f"{key} x{c['ratio']:.2f} ({c['from_ms']:.0f} → {c['to_ms']:.0f} ms)"
            for key, c in list(grown["station_commands"].items())[:3]
        ]
        if moved:
            lines.append(f"{'':>8}station commands that added most: " + ", ".join(moved))
    return "\n".join(lines)

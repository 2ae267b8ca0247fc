"""The missed-window sweep: seconds per `close_windows` run over N subjects' month of check-ins.

What is measured (issue 7: "the missed-window sweep over 10,000 and 50,000 subjects' daily
occurrences for a month: seconds per run; growth no faster than linear"), for each size N:

- Seeded, not measured: N case files (minimal documents carrying what the sweep reads: `_id`,
  `org_id`, `org_path`, `assignments`; three in four have a social worker, the rest alert their
  station) spread over ten stations, and one month (30 days) of daily `remote_checkin`
  occurrences each, 30 x N documents built by `ObligationService._document` itself and written
  with `insert_many` batches straight into the collection. Days 1-14 are stored as done (checked
  in), day 15's windows close at the measured instant, days 16-30 are still ahead.
- Measured: one `close_windows(now)` at the local midnight ending day 15, through the services
  `server.app.build_services` wires (key vault from a temporary key file): all N windows closed
  unmet, so N are marked missed and each raises its `obligation_missed` alert. Seconds per run
  and per 1,000 missed, the database commands it sent, and the CPU of the database and client.
- Then a second run at the same instant, with nothing left to do: it must take milliseconds,
  which shows the sweep reads its (status, window_end) index rather than scanning the month.
- Growth: time(largest) / time(smallest) against the linear bound largest / smallest
  (5.0 for both the default 1,000 / 5,000 and the issue's 10,000 / 50,000).

`make bench` runs 1,000 and 5,000 subjects (this part: about 75 s on two cores). The issue's sizes
take 15-20 minutes, two thirds of it seeding 1.8 million occurrences into the embedded database:
`.venv/bin/python -m ops.bench --sweep-subjects 10000,50000` (add `--output` to keep latest.json).

Runs in a spawned process, so the client does not share the embedded database's GIL; each size
gets its own database, dropped afterwards.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import tempfile
import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bson import ObjectId
from pymongo import monitoring

from ops.bench.child import run_in_child
from ops.bench.measure import BenchError, CpuMeter

DEFAULT_SUBJECTS = (1_000, 5_000)
ISSUE_SUBJECTS = (10_000, 50_000)
MIN_SUBJECTS, MAX_SUBJECTS = 100, 100_000
DAYS = 30
CLOSING_DAY = 15  # the day whose windows the measured run closes (1-based)
STATIONS = 10
WORKERS = 200  # social workers the assigned subjects are spread over
SUBJECTS_PER_BATCH = 500  # one insert_many of case files, and of their 30 x 500 occurrences
# Seeding and both runs, per subject, at the rates of a two-core machine, with room to spare.
SECONDS_PER_SUBJECT = 0.04  # measured: 0.016 (0.011 of it seeding) with another job running
FIXED_SECONDS = 90.0
MIN_CPU_SECONDS = 0.5
BUSY_MACHINE_CORES = 0.25  # as in ops.bench.report: beyond it, say so beside the figures
MONTH_START = dt.date(2025, 6, 1)  # June: 30 days
RULE_KEY = "corrections.strict.checkin_every_days"


def parse_sizes(text: str) -> tuple[int, ...]:
    """`10000,50000` → (10000, 50000); `0` → () (no sweep); ValueError says what is wrong."""
    if text.strip() == "0":
        return ()
    try:
        sizes = tuple(sorted({int(part) for part in text.split(",") if part.strip()}))
    except ValueError:
        raise ValueError(f"not a comma-separated list of whole numbers: {text!r}") from None
    if not sizes:
        raise ValueError("give at least one size")
    if any(not MIN_SUBJECTS <= size <= MAX_SUBJECTS for size in sizes):
        raise ValueError(f"each size must be between {MIN_SUBJECTS} and {MAX_SUBJECTS}")
    return sizes


def time_limit(sizes: tuple[int, ...]) -> float:
    """How long the parent waits for the child's answer: never forever."""
    return FIXED_SECONDS + SECONDS_PER_SUBJECT * sum(sizes)


class CommandTally(monitoring.CommandListener):
    """Database commands sent, by command and collection: how many, and their summed round trips
    (`update many` is an update_many, `update` one or more single-document updates)."""

    def __init__(self) -> None:
        self.counts: dict[str, int] = defaultdict(int)
        self.micros: dict[str, int] = defaultdict(int)
        self._keys: dict[int, str] = {}

    def reset(self) -> None:
        self.counts.clear()
        self.micros.clear()
        self._keys.clear()

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        name = event.command_name
        command = event.command
        collection = command.get("collection") if name == "getMore" else command.get(name)
        key = f"{name} {collection}" if isinstance(collection, str) else name
        if name == "update" and any(u.get("multi") for u in command.get("updates", ())):
            key = f"update many {collection}"
        self._keys[event.request_id] = key

    def _done(
        self, event: monitoring.CommandSucceededEvent | monitoring.CommandFailedEvent
    ) -> None:
        key = self._keys.pop(event.request_id, event.command_name)
        self.counts[key] += 1
        self.micros[key] += event.duration_micros

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
        self._done(event)

    def failed(self, event: monitoring.CommandFailedEvent) -> None:
        self._done(event)

    def snapshot(self) -> dict[str, dict[str, float]]:
        return {
            key: {"count": self.counts[key], "seconds": self.micros[key] / 1e6}
            for key in sorted(self.counts, key=lambda k: -self.micros[k])
        }


@dataclass(frozen=True)
class SweepSpec:
    database_uri: str
    sizes: tuple[int, ...]
    # The process serving the database, whose CPU use is reported as the "server" side.
    database_pid: int


def _local_midnight(day: dt.date) -> dt.datetime:
    from models.clock import LOCAL_TZ

    return dt.datetime.combine(day, dt.time(), tzinfo=LOCAL_TZ).astimezone(dt.UTC)


async def _seed(
    services: Any, store: Any, n: int, stations: list[Any], now: dt.datetime
) -> dict[str, Any]:
    """N case files and their month of daily check-ins, in bulk; not part of what is measured."""
    from models.obligations import OccurrenceStatus, windows
    from models.programs import ObligationRule

    rule = ObligationRule(
        "remote_checkin",
        MONTH_START,
        MONTH_START + dt.timedelta(days=DAYS),
        every_days=1,
        rule_keys=(RULE_KEY,),
        rules_version="bench",
    )
    month = list(windows(rule, MONTH_START + dt.timedelta(days=DAYS)))
    assert len(month) == DAYS and month[CLOSING_DAY - 1].end == now
    created = _local_midnight(MONTH_START) - dt.timedelta(days=1)
    done = str(OccurrenceStatus.DONE)
    make = services.obligations._document  # exactly the documents materialising stores
    subjects = store.collection("subjects")
    occurrences = store.collection("occurrences")
    started = time.perf_counter()
    for first in range(0, n, SUBJECTS_PER_BATCH):
        subject_docs = []
        occurrence_docs = []
        for index in range(first, min(n, first + SUBJECTS_PER_BATCH)):
            station = stations[index % len(stations)]
            subject_id = ObjectId()
            workers = [f"bench-worker-{index % WORKERS}"] if index % 4 else []
            subject_docs.append(
                {
                    "_id": subject_id,
                    "org_id": ObjectId(station.id),
                    "org_path": list(station.path),
                    "status": "active",
                    "populations": ["community_corrections"],
                    "assignments": {
                        "social_worker_ids": workers,
                        "grid_worker_ids": [],
                        "team": None,
                    },
                    "created_at": created,
                    "updated_at": created,
                    "version": 1,
                }
            )
            program = {
                "_id": ObjectId(),
                "subject_id": str(subject_id),
                "type": "community_corrections",
                "org_path": list(station.path),
            }
            for day, window in enumerate(month, start=1):
                doc = make(program, window, created)
                if day < CLOSING_DAY:
                    doc["status"] = done
                occurrence_docs.append(doc)
        await subjects.insert_many(subject_docs, ordered=False)
        await occurrences.insert_many(occurrence_docs, ordered=False)
    return {"seconds": time.perf_counter() - started, "occurrences": n * DAYS}


async def _timed_run(
    services: Any, now: dt.datetime, tally: CommandTally, database_pid: int
) -> dict[str, Any]:
    meter = CpuMeter({"server": database_pid, "client": os.getpid()})
    tally.reset()
    meter.start()
    started = time.perf_counter()
    outcome = await services.obligations.close_windows(now)
    seconds = time.perf_counter() - started
    # Over a few milliseconds, CPU time (counted in clock ticks) says nothing.
    cpu = meter.stop() if seconds >= MIN_CPU_SECONDS else {}
    missed = int(outcome["missed"])
    return {
        "seconds": seconds,
        "missed": missed,
        "alerted": int(outcome["alerted"]),
        "seconds_per_1000_missed": seconds / missed * 1000 if missed else None,
        "server_cpu": cpu.get("server"),
        "client_cpu": cpu.get("client"),
        "other_cpu": cpu.get("other"),
        "commands": tally.snapshot(),
    }


async def _measure_size(spec: SweepSpec, n: int, work: Path, tally: CommandTally) -> dict[str, Any]:
    from models.clock import FixedClock
    from models.orgs import OrgKind
    from models.store import DatabaseSettings, Store
    from server.app import SYSTEM, build_services, collection_specs, open_vault
    from server.config import Config

    db_name = f"bench_sweep_{n}"
    config = Config.from_env(
        {
            "MONGODB_URI": spec.database_uri,
            "ANBANG_DB_NAME": db_name,
            "ANBANG_VAR_DIR": str(work / db_name),
        }
    )
    now = _local_midnight(MONTH_START + dt.timedelta(days=CLOSING_DAY))
    store = Store.connect(DatabaseSettings(uri=spec.database_uri, name=db_name, production=False))
    try:
        await store.database.client.drop_database(db_name)  # a run stopped earlier left it
        # Indexes first, kept up to date as the month is loaded, as in a live database. (Building
        # them after the load is a fifth faster at 300,000 occurrences, but at 1.5 million the
        # embedded database then stalls on one command long enough for the driver to drop it.)
        await store.ensure_indexes(collection_specs())
        clock = FixedClock(now)
        vault = await open_vault(config, store, clock)
        services = build_services(store, config, clock, vault)
        city = await services.orgs.create(
            SYSTEM, name="市", code="s-city", kind=OrgKind.CITY, parent_id=None
        )
        county = await services.orgs.create(
            SYSTEM, name="区", code="s-county", kind=OrgKind.COUNTY, parent_id=city.id
        )
        stations = [
            await services.orgs.create(
                SYSTEM, name=f"所{i}", code=f"s-st-{i}", kind=OrgKind.STATION, parent_id=county.id
            )
            for i in range(STATIONS)
        ]
        seeding = await _seed(services, store, n, stations, now)
        first = await _timed_run(services, now, tally, spec.database_pid)
        second = await _timed_run(services, now, tally, spec.database_pid)
        alerts = await store.collection("alerts").count_documents({"kind": "obligation_missed"})
        marked = await store.collection("occurrences").count_documents({"status": "missed"})
        if not first["missed"] == first["alerted"] == alerts == marked == n:
            raise BenchError(
                f"{n} subjects: the sweep marked {first['missed']}, alerted {first['alerted']}; "
                f"stored {marked} missed and {alerts} alerts; expected {n} of each"
            )
        if second["missed"] or second["alerted"]:
            raise BenchError(f"{n} subjects: the second run found work: {second}")
        return {"subjects": n, "seeding": seeding, "first_run": first, "second_run": second}
    finally:
        with contextlib.suppress(Exception):
            await store.database.client.drop_database(db_name)
        await store.close()


async def _measure(spec: SweepSpec) -> dict[str, Any]:
    tally = CommandTally()
    monitoring.register(tally)  # this process's clients only: it is a spawned child
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="anbang-bench-sweep-") as work:
        for n in spec.sizes:
            results[str(n)] = await _measure_size(spec, n, Path(work), tally)
    return results


def growth(sizes: dict[str, Any]) -> dict[str, Any] | None:
    """time(largest) / time(smallest) against the linear bound largest / smallest."""
    if len(sizes) < 2:
        return None
    ordered = sorted(sizes.values(), key=lambda size: size["subjects"])
    small, large = ordered[0], ordered[-1]
    ratio = large["first_run"]["seconds"] / small["first_run"]["seconds"]
    bound = large["subjects"] / small["subjects"]
    return {
        "from_subjects": small["subjects"],
        "to_subjects": large["subjects"],
        "time_ratio": ratio,
        "linear_bound": bound,
        "within_linear": ratio <= bound,
    }


def measure_sweeps(database_uri: str, sizes: tuple[int, ...], database_pid: int) -> dict[str, Any]:
    """Seed and sweep each size in a child process; the figures by size, and their growth."""
    spec = SweepSpec(database_uri=database_uri, sizes=sizes, database_pid=database_pid)
    value = run_in_child(
        _measure,
        spec,
        name="bench-sweeps",
        what="the sweep benchmark",
        limit=time_limit(sizes),
    )
    return {"days": DAYS, "sizes": value, "growth": growth(value)}


def _cores(value: float | None) -> str:
    return "n/a" if value is None else f"{value * 100:.0f}%"


def sweeps_table(figures: dict[str, Any]) -> str:
    header = (
        f"{'missed-window sweep (close_windows)':<38} {'occurrences':>11} {'missed':>7} "
        f"{'seconds':>8} {'s/1000':>7} {'db CPU':>7} {'client CPU':>10} {'seeded in':>9}"
    )
    lines = [header, "-" * len(header)]
    for size in figures["sizes"].values():
        for key, label in (("first_run", "1st run"), ("second_run", "2nd run (nothing to do)")):
            run = size[key]
            per = run["seconds_per_1000_missed"]
            seeded = f"{size['seeding']['seconds']:.0f} s" if key == "first_run" else ""
            lines.append(
                f"{size['subjects']:>7,} subjects, {label:<23} "
                f"{size['seeding']['occurrences']:>11,} {run['missed']:>7,} "
                f"{run['seconds']:>8.3f} {'' if per is None else f'{per:.3f}':>7} "
                f"{_cores(run['server_cpu']):>7} {_cores(run['client_cpu']):>10} {seeded:>9}"
            )
    for size in figures["sizes"].values():
        other = size["first_run"]["other_cpu"]
        if other is not None and other > BUSY_MACHINE_CORES:
            lines.append(
                f"note: {size['subjects']:,} subjects: other processes used {other * 100:.0f}% "
                "of a core during the 1st run; a quiet machine would do better"
            )
    last = list(figures["sizes"].values())[-1]["first_run"]
    calls = ", ".join(
        f"{name} {tally['count']:,} ({tally['seconds']:.1f} s)"
        for name, tally in last["commands"].items()
    )
    lines.append(f"commands of the largest 1st run: {calls}")
    grown = figures.get("growth")
    if grown:
        verdict = "linear or better" if grown["within_linear"] else "FASTER THAN LINEAR"
        lines.append(
            f"growth {grown['from_subjects']:,} → {grown['to_subjects']:,} subjects: "
            f"time x{grown['time_ratio']:.2f} against the linear bound "
            f"x{grown['linear_bound']:.1f}: {verdict}"
        )
    return "\n".join(lines)

"""A worker's day at scale: the caseload and ID-number search, p50/p99, at two database sizes."""

from __future__ import annotations

import contextlib
import datetime as dt
import math
import os
import random
import statistics
import tempfile
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bson import ObjectId
from pymongo import monitoring

from ops.bench.child import run_in_child
from ops.bench.measure import BenchError, RoundTrips

DEFAULT_SIZES = (2_000, 10_000)
ISSUE_SIZES = (10_000, 50_000)
STATIONS = 20
CASELOAD = 60  # files per social worker
MIN_SIZE = STATIONS * CASELOAD  # the worker's station must hold their 60 files
TARGET_RATIO = 1.5
BATCH = 500  # case files per insert_many (and their occurrences, alerts and keys)
DAYS_BACK = 14  # daily check-ins stored behind today
DAYS_AHEAD = 7  # and ahead of it
WEEKS_BACK = 2  # weekly reports behind the running one
OPEN_ALERT_DAYS = 3  # alerts of misses younger than this are still open
SEARCH_TARGETS = 200
# Rounds of each call per size, cut short by a time budget (at least MIN_ROUNDS run).
CASELOAD_ROUNDS, CASELOAD_BUDGET = 200, 20.0
SEARCH_ROUNDS, SEARCH_BUDGET = 400, 10.0
MIN_ROUNDS = 10
WARM_UP_BUDGET = 10.0
HEARTBEAT_PATIENCE_MS = 300_000
# Seeding, per case file, at the rates of a two-core machine, with room to spare; and per size,
# the warm-up and the measured budgets.
SECONDS_PER_SUBJECT = 0.02
SECONDS_PER_SIZE = 180.0
FIXED_SECONDS = 60.0
# A Monday, mid-morning: today's daily windows and the caseload's weekly ones close at midnight.
NOW_LOCAL = dt.datetime(2025, 6, 16, 10, 30)
REGION = "330302"
SURNAMES = "王李张刘陈杨黄赵吴周徐孙马朱胡郭何高林罗"
GIVEN = "伟芳娜敏静丽强磊军洋勇艳杰娟涛明超秀霞平刚桂"


def time_limit(sizes: tuple[int, ...]) -> float:
    """How long the parent waits for the child's answer: never forever."""
    return FIXED_SECONDS + sum(SECONDS_PER_SIZE + SECONDS_PER_SUBJECT * n for n in sizes)


@dataclass(frozen=True)
class CaseworkSpec:
    database_uri: str
    sizes: tuple[int, ...]


def _figures(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    return {
        "count": len(ordered),
        "p50_ms": statistics.median(ordered) * 1e3,
        "p99_ms": ordered[max(0, math.ceil(len(ordered) * 0.99) - 1)] * 1e3,
        "mean_ms": statistics.fmean(ordered) * 1e3,
    }


def _local(day: dt.date, hour: int = 0) -> dt.datetime:
    from models.clock import LOCAL_TZ

    return dt.datetime.combine(day, dt.time(hour), tzinfo=LOCAL_TZ).astimezone(dt.UTC)


def person_values(index: int, today: dt.date) -> dict[str, Any]:
    """Values as `SubjectService._validated` returns them, checked by the same validators."""
    from models.identity_numbers import (
        IdType,
        check_id_number,
        check_phone,
        gb11643_check_digit,
        normalise_name,
    )

    birth = dt.date(1960, 1, 1) + dt.timedelta(days=index % 14_000)
    gender = "male" if index % 3 else "female"
    # The 17th digit's parity is the gender; (birth date, sequence) is unique per index.
    sequence = f"{(index // 14_000) % 50:02d}{1 if gender == 'male' else 2}"
    first17 = f"{REGION}{birth:%Y%m%d}{sequence}"
    name = SURNAMES[index % len(SURNAMES)] + GIVEN[(index // 7) % len(GIVEN)]
    if index % 2:
        name += GIVEN[(index // 11) % len(GIVEN)]
    return {
        "name": normalise_name(name),
        "id_number": check_id_number(
            IdType.RESIDENT, first17 + gb11643_check_digit(first17), birth, gender, today
        ),
        "phone": check_phone(f"139{index:08d}"),
        "gender": gender,
        "birth_date": birth.isoformat(),
        "address": f"浙江省温州市鹿城区五马街{index % 900 + 1}号{index // 900 + 1}室",
        "id_type": str(IdType.RESIDENT),
    }


async def _data_keys(vault: Any, key_vault: Any, subject_ids: list[str], now: dt.datetime) -> None:
    """Each person's data key, stored as `KeyVault._store_key` stores it (one insert_many, not
    three round trips each) and left in the vault's cache for the sealing that follows."""
    from models.crypto import new_key
    from models.keys import _aad

    docs = []
    for sid in subject_ids:
        key_id = f"dek:{sid}"
        material = new_key(vault.suite)
        kek_id, wrapped = vault.master.wrap(material, _aad(key_id, "dek"))
        docs.append(
            {
                "_id": key_id,
                "purpose": "dek",
                "suite": str(vault.suite),
                "kek_id": kek_id,
                "wrapped": wrapped,
                "created_at": now,
                "subject_id": sid,
            }
        )
        vault._cache.put(key_id, material)
    await key_vault.insert_many(docs, ordered=False)


def _program_windows(today: dt.date) -> tuple[list[Any], dict[int, list[Any]]]:
    """The daily check-in windows, and the weekly ones by phase (0: the running one closes
    tonight), shared by everyone: the rules of a strict corrections program."""
    from models.obligations import windows
    from models.programs import ObligationRule

    since = today - dt.timedelta(days=DAYS_BACK)
    until = today + dt.timedelta(days=DAYS_AHEAD + 1)

    def rule(kind: str, key: str, start: dt.date, every: int) -> Any:
        return ObligationRule(
            kind, start, None, every_days=every, rule_keys=(key,), rules_version="bench"
        )

    daily = list(
        windows(rule("remote_checkin", "corrections.strict.checkin_every_days", since, 1), until)
    )
    weekly: dict[int, list[Any]] = {}
    for phase in range(7):
        # The running window closes at the end of today + phase.
        start = today - dt.timedelta(days=6 - phase) - dt.timedelta(weeks=WEEKS_BACK)
        weekly[phase] = [
            window
            for kind, key in (
                ("in_person_report", "corrections.strict.report_every_days"),
                ("written_report", "corrections.strict.written_report_every_days"),
            )
            for window in windows(rule(kind, key, start, 7), until)
        ]
    return daily, weekly


async def _seed(
    services: Any, store: Any, n: int, stations: list[Any], now: dt.datetime
) -> dict[str, Any]:
    """N case files, their occurrences and alerts, in bulk; not part of what is measured."""
    from models.audit import AuditContext
    from models.identity import Identity
    from models.obligations import OccurrenceStatus

    intake = AuditContext(Identity(user_id="bench-intake", role="station_officer"), "bench")
    today = NOW_LOCAL.date()
    daily, weekly = _program_windows(today)
    make = services.obligations._document  # exactly the documents materialising stores
    subjects = services.subjects
    created = now - dt.timedelta(days=60)
    collections = {name: store.collection(name) for name in ("subjects", "occurrences", "alerts")}
    key_vault = store.collection("key_vault")
    counts: Counter[str] = Counter()
    targets: list[str] = []
    caseload: list[str] = []
    rng = random.Random(n)
    target_step = math.ceil(n // STATIONS / SEARCH_TARGETS)  # at most 200, spread over the station
    started = time.perf_counter()
    for first in range(0, n, BATCH):
        batch = range(first, min(n, first + BATCH))
        ids = [ObjectId() for _ in batch]
        await _data_keys(services.vault, key_vault, [str(oid) for oid in ids], created)
        subject_docs, occurrence_docs, alert_docs = [], [], []
        for index, subject_id in zip(batch, ids, strict=True):
            station = stations[index % STATIONS]
            slot = index // STATIONS  # the file's place in its station
            values = person_values(index, today)
            indexes = await subjects._blind_indexes(values)
            values["org"] = station
            doc = await subjects._new_document(intake, subject_id, values, indexes)
            doc["assignments"]["social_worker_ids"] = [f"sw-{index % STATIONS}-{slot // CASELOAD}"]
            doc["assignments"]["grid_worker_ids"] = [f"gw-{index % STATIONS}-{slot // 120}"]
            doc["populations"] = ["community_corrections"]
            doc["created_at"] = doc["updated_at"] = created
            subject_docs.append(doc)
            sid = str(subject_id)
            mine = index % STATIONS == 0 and slot < CASELOAD
            if mine:
                caseload.append(sid)
            if index % STATIONS == 0 and slot % target_step == 0:
                targets.append(values["id_number"])
            # The worker's files: weekly reports due tonight, and two to four missed check-ins.
            phase = 0 if mine else index % 7
            plan = [*daily, *weekly[phase]]
            misses = rng.randint(2, 4) if mine else rng.choice((0, 0, 1, 1, 2))
            past = [i for i, w in enumerate(plan) if w.end <= now]
            missed = set(rng.sample(past, misses))
            program = {
                "_id": ObjectId(),
                "subject_id": sid,
                "type": "community_corrections",
                "org_path": list(station.path),
            }
            worker = doc["assignments"]["social_worker_ids"][0]
            for position, window in enumerate(plan):
                occurrence = make(program, window, created)
                if window.end <= now:
                    if position in missed:
                        occurrence["status"] = str(OccurrenceStatus.MISSED)
                        occurrence["missed_at"] = window.end
                        alert_docs.append(_alert(occurrence, station, worker, now))
                    else:
                        occurrence["status"] = str(OccurrenceStatus.DONE)
                        occurrence["result"] = "done"
                        occurrence["result_at"] = window.end - dt.timedelta(hours=6)
                occurrence_docs.append(occurrence)
        for name, docs in (
            ("subjects", subject_docs),
            ("occurrences", occurrence_docs),
            ("alerts", alert_docs),
        ):
            if docs:
                await collections[name].insert_many(docs, ordered=False)
                counts[name] += len(docs)
    return {
        "seconds": time.perf_counter() - started,
        **dict(counts),
        "caseload_ids": caseload,
        "search_targets": targets,
    }


def _alert(
    occurrence: dict[str, Any], station: Any, worker: str, now: dt.datetime
) -> dict[str, Any]:
    """What `ObligationService._alert_missed` raises for a missed window (acknowledged when old)."""
    doc = {
        "_id": ObjectId(),
        "kind": "obligation_missed",
        "org_id": station.id,
        "org_path": list(station.path),
        "subject_id": occurrence["subject_id"],
        "to_user_id": worker,
        "status": "open",
        "created_at": occurrence["window_end"],
        "details": {
            "occurrence_id": occurrence["_id"],
            "kind": occurrence["kind"],
            "program_id": occurrence["program_id"],
            "window_end": occurrence["window_end"].isoformat(),
        },
        "dedupe_key": f"missed:{occurrence['_id']}",
    }
    if occurrence["window_end"] < now - dt.timedelta(days=OPEN_ALERT_DAYS):
        doc["status"] = "acknowledged"
        doc["acknowledged_at"] = occurrence["window_end"] + dt.timedelta(hours=20)
        doc["acknowledged_by"] = worker
    return doc


async def _timed(
    rounds: int, budget: float, action: Any, trips: RoundTrips
) -> tuple[list[float], dict[str, dict[str, float]]]:
    """Latencies of up to `rounds` calls within `budget` seconds (at least MIN_ROUNDS), and the
    database commands each call sent, on average."""
    samples: list[float] = []
    trips.reset()
    deadline = time.perf_counter() + budget
    for round_ in range(rounds):
        if len(samples) >= MIN_ROUNDS and time.perf_counter() > deadline:
            break
        started = time.perf_counter()
        await action(round_)
        samples.append(time.perf_counter() - started)
    return samples, trips.per_call(len(samples))


async def _measure_size(
    spec: CaseworkSpec, n: int, work: Path, trips: RoundTrips
) -> dict[str, Any]:
    from models.audit import AuditContext
    from models.clock import FixedClock
    from models.identity import Identity
    from models.orgs import OrgKind
    from models.store import DatabaseSettings, Store
    from server.app import SYSTEM, build_services, collection_specs, open_vault
    from server.config import Config

    db_name = f"bench_casework_{n}"
    config = Config.from_env(
        {
            "MONGODB_URI": spec.database_uri,
            "ANBANG_DB_NAME": db_name,
            "ANBANG_VAR_DIR": str(work / db_name),
        }
    )
    now = _local(NOW_LOCAL.date()) + dt.timedelta(hours=NOW_LOCAL.hour, minutes=NOW_LOCAL.minute)
    # The driver's heartbeat waits connect_timeout_ms for an answer and, failing that, cancels
    # every command in flight; a busy embedded database building indexes over 1.5 million
    # documents can take longer than the 3 s default to answer it.
    settings = DatabaseSettings(
        uri=spec.database_uri,
        name=db_name,
        production=False,
        connect_timeout_ms=HEARTBEAT_PATIENCE_MS,
    )
    store = Store.connect(settings)
    bulk = ("subjects", "occurrences", "alerts")
    try:
        await store.database.client.drop_database(db_name)  # a run stopped earlier left it
        # The bulk-loaded collections get their indexes after the load (faster); the queries
        # find the same indexes either way.
        specs = collection_specs()
        await store.ensure_indexes(s for s in specs if s.name not in bulk)
        clock = FixedClock(now)
        vault = await open_vault(config, store, clock)
        services = build_services(store, config, clock, vault)
        city = await services.orgs.create(
            SYSTEM, name="市", code="w-city", kind=OrgKind.CITY, parent_id=None
        )
        counties = [
            await services.orgs.create(
                SYSTEM, name=f"区{c}", code=f"w-county-{c}", kind=OrgKind.COUNTY, parent_id=city.id
            )
            for c in range(2)
        ]
        stations = [
            await services.orgs.create(
                SYSTEM,
                name=f"所{i}",
                code=f"w-st-{i}",
                kind=OrgKind.STATION,
                parent_id=counties[i % 2].id,
            )
            for i in range(STATIONS)
        ]
        seeding = await _seed(services, store, n, stations, now)
        started = time.perf_counter()
        await store.ensure_indexes(s for s in specs if s.name in bulk)
        seeding["index_seconds"] = time.perf_counter() - started
        caseload_ids = seeding.pop("caseload_ids")
        targets = seeding.pop("search_targets")
        home = stations[0]
        worker = Identity(
            user_id="sw-0-0", role="social_worker", org_id=home.id, org_path=home.path
        )
        officer = Identity(
            user_id="bench-officer", role="station_officer", org_id=home.id, org_path=home.path
        )
        worker_ctx = AuditContext(worker, request_id="bench-caseload")
        officer_ctx = AuditContext(officer, request_id="bench-search")

        async def caseload(_round: int) -> None:
            await services.caseload.caseload(worker_ctx, None)

        async def search(round_: int) -> None:
            page = await services.subjects.search(
                officer_ctx,
                id_number=targets[round_ % len(targets)],
                phone=None,
                name=None,
                population=None,
                status=None,
                cursor=None,
                limit=20,
            )
            if len(page.items) != 1:
                raise BenchError(f"{n} subjects: a search found {len(page.items)} files, not 1")

        items = await services.caseload.caseload(worker_ctx, None)
        due = sum(len(i.due_today) for i in items)
        overdue = sum(len(i.overdue) for i in items)
        alerts = sum(i.open_alerts for i in items)
        if len(items) != CASELOAD or sorted(i.subject_id for i in items) != sorted(caseload_ids):
            raise BenchError(f"{n} subjects: the caseload lists {len(items)} files, not 60")
        if any(i.name is None for i in items) or due != 3 * CASELOAD:
            raise BenchError(f"{n} subjects: the caseload is incomplete ({due} due today)")
        page = await services.subjects.search(
            officer_ctx,
            id_number=targets[0],
            phone=None,
            name=None,
            population=None,
            status=None,
            cursor=None,
            limit=20,
        )
        if [p.fields.get("id_number") for p in page.items] != [targets[0]]:
            raise BenchError(f"{n} subjects: the search did not open the file it found")
        # Warm-up (keys, caches, code paths): each target once, the caseload a few times, within
        # WARM_UP_BUDGET seconds each once three calls have run.
        for action, rounds in ((search, len(targets)), (caseload, 3)):
            deadline = time.perf_counter() + WARM_UP_BUDGET
            for round_ in range(rounds):
                if round_ >= 3 and time.perf_counter() > deadline:
                    break
                await action(round_)
        load = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
        caseload_samples, caseload_commands = await _timed(
            CASELOAD_ROUNDS, CASELOAD_BUDGET, caseload, trips
        )
        search_samples, search_commands = await _timed(SEARCH_ROUNDS, SEARCH_BUDGET, search, trips)
        return {
            "subjects": n,
            "seeding": seeding,
            # Others' work on the machine meanwhile (the embedded database shares its cores).
            "load_average_1m": load,
            "caseload": {
                **_figures(caseload_samples),
                "round_trips": sum(c["count"] for c in caseload_commands.values()),
                "commands": caseload_commands,
                "files": len(items),
                "due_today": due,
                "overdue": overdue,
                "open_alerts": alerts,
            },
            "search": {
                **_figures(search_samples),
                "round_trips": sum(c["count"] for c in search_commands.values()),
                "commands": search_commands,
                "station_files": n // STATIONS,
                "targets": len(targets),
            },
        }
    finally:
        with contextlib.suppress(Exception):
            await store.database.client.drop_database(db_name)
        await store.close()


async def _measure(spec: CaseworkSpec) -> dict[str, Any]:
    trips = RoundTrips()
    monitoring.register(trips)  # this process's clients only: it is a spawned child
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="anbang-bench-casework-") as work:
        for n in spec.sizes:
            results[str(n)] = await _measure_size(spec, n, Path(work), trips)
    return results


def ratios(sizes: dict[str, Any]) -> dict[str, Any] | None:
    """Latency at the largest size over that at the smallest, against the 1.5 target."""
    if len(sizes) < 2:
        return None
    ordered = sorted(sizes.values(), key=lambda size: size["subjects"])
    small, large = ordered[0], ordered[-1]
    out: dict[str, Any] = {
        "from_subjects": small["subjects"],
        "to_subjects": large["subjects"],
        "target": TARGET_RATIO,
    }
    for call in ("caseload", "search"):
        for figure in ("p50_ms", "p99_ms"):
            ratio = large[call][figure] / small[call][figure]
            out[f"{call}_{figure[:3]}"] = ratio
            out[f"{call}_{figure[:3]}_within"] = ratio <= TARGET_RATIO
    return out


def measure_casework(uri: str, sizes: tuple[int, ...] = DEFAULT_SIZES) -> dict[str, Any]:
    """Seed and measure each size in a child process; the figures by size, and their ratios.

    Issue 6: "the caseload for a social worker with 60 subjects, and subject search, in
    databases of 10,000 and 50,000 subjects: p50/p99; latency at 50,000 within 1.5x of that at
    10,000". For each size N, in a database of its own:

    - Seeded, not measured: N case files built by `SubjectService._new_document` from values the
      production validators accept (six fields sealed under each person's data key, blind
      indexes beside), spread evenly over 20 stations, each assigned to a social worker (60
      apiece) and a grid worker; a running corrections program's occurrences for every one, in
      the shape `ObligationService._document` gives (daily check-ins from two weeks back to a
      week ahead, weekly in-person and written reports; most met, some missed), and an
      `obligation_missed` alert per missed window as the sweep raises them (open for the last
      three days, acknowledged before). The measured worker's 60 files each have three windows
      due today and two to four missed; everyone else's look alike, so the queries find the
      worker's few among N x 30 occurrences only through their indexes.
    - Measured, through the services `server.app.build_services` wires, after a warm-up:
      `CaseloadService.caseload(ctx, None)` for that worker, and `SubjectService.search` by an
      exact ID number (the blind index) from an officer of the same station, over up to 200 of
      its files. Each runs up to a round count or a time budget, whichever comes first (a slow
      database yields fewer samples, never an endless run); the database commands each call
      sends are counted and timed by kind, which is where a missing index or a query per file
      shows.
    - The ratio largest / smallest of p50 and of p99, against the target of 1.5.

    The issue's sizes take about 13 minutes here (6.5 of them seeding 50,000), so the default
    is 2,000 and 10,000, the same fivefold step; `sizes=ISSUE_SIZES` runs the issue's.
    Runs in a spawned process, so the client does not share the embedded database's GIL.
    """
    sizes = tuple(sorted(set(sizes)))
    if not sizes or any(size < MIN_SIZE for size in sizes):
        raise BenchError(f"casework sizes must be at least {MIN_SIZE:,}: {sizes}")
    spec = CaseworkSpec(database_uri=uri, sizes=sizes)
    value = run_in_child(
        _measure,
        spec,
        name="bench-casework",
        what="the casework benchmark",
        limit=time_limit(sizes),
    )
    return {"caseload_files": CASELOAD, "sizes": value, "ratios": ratios(value)}


def casework_table(figures: dict[str, Any]) -> str:
    header = (
        f"{'caseload and search (ms)':<42} {'p50':>8} {'p99':>8} {'mean':>8} "
        f"{'calls':>6} {'trips':>6} {'load':>5}"
    )
    lines = [header, "-" * len(header)]
    for size in figures["sizes"].values():
        load = size.get("load_average_1m")
        for call, label in (
            ("caseload", f"caseload ({figures['caseload_files']} files)"),
            ("search", "search by ID number"),
        ):
            run = size[call]
            lines.append(
                f"{size['subjects']:>7,} subjects, {label:<25} "
                f"{run['p50_ms']:>8.2f} {run['p99_ms']:>8.2f} {run['mean_ms']:>8.2f} "
                f"{run['count']:>6} {run['round_trips']:>6.1f} "
                f"{'' if load is None or call == 'search' else f'{load:.1f}':>5}"
            )
    lines.append("calls: measured calls; trips: database commands per call; load: 1-min average")
    for size in figures["sizes"].values():
        seeding = size["seeding"]
        lines.append(
            f"{size['subjects']:>7,} subjects seeded with {seeding.get('occurrences', 0):,} "
            f"occurrences and {seeding.get('alerts', 0):,} alerts in {seeding['seconds']:.0f} s, "
            f"indexes {seeding['index_seconds']:.0f} s"
        )
        for call in ("caseload", "search"):
            spent = ", ".join(
                f"{name} {c['count']:g}x {c['ms']:.1f}"
                for name, c in list(size[call]["commands"].items())[:4]
            )
            lines.append(f"{'':>8}{call} per call (commands, ms): {spent}")
    grown = figures.get("ratios")
    if grown:
        cells = []
        for call in ("caseload", "search"):
            for figure in ("p50", "p99"):
                verdict = "ok" if grown[f"{call}_{figure}_within"] else "OVER"
                cells.append(f"{call} {figure} x{grown[f'{call}_{figure}']:.2f} {verdict}")
        lines.append(
            f"{grown['to_subjects']:,} / {grown['from_subjects']:,} subjects "
            f"(target ≤ x{grown['target']}): " + ", ".join(cells)
        )
    return "\n".join(lines)

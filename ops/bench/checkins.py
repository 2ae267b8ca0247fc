"""Check-ins under load: `POST /mp/v1/checkins` through the real HTTP stack, beside the ceilings.

What is measured, in the same run as the ceilings it is compared to:

- Seeded, not measured, through the services `server.app.build_services` wires (as intake at a
  station would): a city, county and station whose permitted area is a 3 km circle; N case
  files, each with a community-corrections program starting today in Asia/Shanghai (new
  subjects are under strict supervision, so each has a daily check-in window open now: the API
  runs on the real clock), and a binding code each.
- Signed in over HTTP, not measured, as the mini-program does it: each person logs in through
  the WeChat stand-in (`dev:<label>` codes) and binds with their code. Each calls from an address
  of its own (X-Real-Ip, the API trusting it as it does behind nginx): login and binding allow
  30 attempts per address a minute, which one address would exhaust.
- Warm-up: eight further people check in first (the API process's first check-ins load the
  rules and the blind-index keys).
- Measured: the N people each check in once, at the station, with `connections` requests in
  flight on keep-alive connections (the ceilings' load generator, so the rate compares with the
  GET /healthz ceiling), each request with a fresh Idempotency-Key and never retried: check-ins
  per second, p50/p99, errors (any answer but 201), the CPU of the API, the database and the
  client. It is each person's first check-in of the day, as a morning's are; the API caches a
  person's data key for 5 minutes only, so a daily check-in reads it from the key vault.
- Counted in the API process itself (PyMongo command monitoring in `ops.bench.serve_child`,
  started and read by signals around the measured phase): database commands per check-in, by
  kind (everything the process sent meanwhile, divided by the check-ins).
- Verified: every acknowledged (201) check-in is stored exactly once (by its idempotency key;
  one per person), nothing unacknowledged is stored, and each was classified on time and met its
  window.
- Ratios: check-ins/s over the GET /healthz keep-alive rate and over the raw insert_one rates.

Runs in a spawned process (with the WeChat stand-in), which starts the API as the ceilings do.
A run across local midnight checks some people into tomorrow's window (materialised already);
the figures do not change.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import ipaddress
import json
import os
import tempfile
import time
import uuid
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tornado.httpclient import AsyncHTTPClient
from tornado.httpserver import HTTPServer
from tornado.netutil import bind_sockets

from miniprogram_api.client import MiniProgramClient, MpAnswer
from models.clock import LOCAL_TZ, SystemClock
from models.geo import Area, Point
from models.identity_numbers import IdType
from models.orgs import OrgKind
from models.periods import add_years
from models.store import DatabaseSettings, Store
from models.subjects import SubjectInput
from ops.bench.apiserver import HOST, RunningApi, read_count, running_api, start_count
from ops.bench.casework import person_values
from ops.bench.child import run_in_child
from ops.bench.loadgen import build_request, connect
from ops.bench.measure import BenchError, CpuMeter, Run
from server.app import SYSTEM, Services, build_services, collection_specs, open_vault
from server.config import Config
from server.wechat_standin import make_standin_app

# Enough for a steady rate over the measured phase; seeding (programs and their windows through
# the services) takes most of the time: 200 keep this benchmark near 40 s.
DEFAULT_SUBJECTS = 200
MIN_SUBJECTS, MAX_SUBJECTS = 20, 1_000
WARM_UP_PEOPLE = 8
DB_NAME = "bench_checkins"
# 五马街, 温州 (WGS-84): the station's centre, where everyone checks in.
STATION_CENTRE = Point(28.0197, 120.6543)
STATION_RADIUS_M = 3000.0
ACCURACY_M = 20.0
SEED_TASKS = 8  # case files opened at once (the audit chain serialises part of each)
PATH = "/mp/v1/checkins"
# Time bounds, at a busy two-core machine's rates with room to spare (never forever): seeding
# and signing in per person, and a check-in per person already in the database (measured:
# 2.5-3 ms of the database's time, with other test runs on the two cores).
SECONDS_PER_PERSON = 0.5
SECONDS_PER_CHECKIN_AND_PERSON = 0.006
FIXED_SECONDS = 120.0
KEEP_ERROR_BODIES = 3


@dataclass(frozen=True)
class CheckinSpec:
    database_uri: str
    subjects: int
    connections: int
    # The process serving the database, whose CPU use is reported beside the API's.
    database_pid: int


@dataclass
class Person:
    """A bound person as the load generator needs them."""

    label: str
    subject_id: str
    address: str
    code: str
    token: str = ""
    device_id: str = ""


class Phone(MiniProgramClient):
    """One person's mini-program, calling from an address of its own (their phone's, as nginx
    passes it on)."""

    def __init__(self, base_url: str, http: AsyncHTTPClient, address: str):
        super().__init__(base_url, http=http)
        self.address = address

    async def call(
        self,
        method: str,
        path: str,
        json_body: Any = None,
        *,
        body: bytes | None = None,
        headers: dict[str, str] | None = None,
    ) -> MpAnswer:
        headers = {"X-Real-Ip": self.address, **(headers or {})}
        return await super().call(method, path, json_body, body=body, headers=headers)


def phase_limit(checkins: int, people: int) -> float:
    """How long a phase of `checkins` may take with `people` in the database."""
    return 60 + SECONDS_PER_CHECKIN_AND_PERSON * checkins * people


def time_limit(subjects: int) -> float:
    """How long the parent waits for the child's answer."""
    people = subjects + WARM_UP_PEOPLE
    return FIXED_SECONDS + SECONDS_PER_PERSON * people + phase_limit(people, people)


async def seed_people(services: Services, count: int, today: dt.date) -> list[Person]:
    """`count` case files with a corrections program from today and a binding code each."""
    city = await services.orgs.create(
        SYSTEM, name="市", code="c-city", kind=OrgKind.CITY, parent_id=None
    )
    county = await services.orgs.create(
        SYSTEM, name="区", code="c-county", kind=OrgKind.COUNTY, parent_id=city.id
    )
    station = await services.orgs.create(
        SYSTEM, name="所", code="c-station", kind=OrgKind.STATION, parent_id=county.id
    )
    await services.orgs.set_area(
        SYSTEM, station.id, Area(center=STATION_CENTRE, radius_m=STATION_RADIUS_M)
    )
    program = {
        "type": "community_corrections",
        "start_date": today.isoformat(),
        "end_date": add_years(today, 1).isoformat(),
        "sentence_type": "probation",
    }
    slots = asyncio.Semaphore(SEED_TASKS)

    async def enrol(index: int) -> Person:
        values = person_values(index, today)
        async with slots:
            subject = await services.subjects.create(
                SYSTEM,
                SubjectInput(
                    name=values["name"],
                    id_type=IdType(values["id_type"]),
                    id_number=values["id_number"],
                    phone=values["phone"],
                    gender=values["gender"],
                    birth_date=dt.date.fromisoformat(values["birth_date"]),
                    address=values["address"],
                    org_id=station.id,
                ),
            )
            await services.programs.create(SYSTEM, subject.id, program)
            issued = await services.mp_accounts.issue_code(SYSTEM, subject.id, "subject")
        # 10.0.0.1, 10.0.0.2, ...: one address per phone.
        address = str(ipaddress.IPv4Address("10.0.0.0") + index + 1)
        return Person(f"bench-{index}", subject.id, address, issued.code)

    return list(await asyncio.gather(*(enrol(index) for index in range(count))))


async def sign_in_people(api: RunningApi, people: list[Person], connections: int) -> None:
    """Log each person in through the WeChat stand-in and bind them with their code."""
    http = AsyncHTTPClient(force_instance=True, max_clients=connections)
    slots = asyncio.Semaphore(connections)

    async def sign_in(person: Person) -> None:
        phone = Phone(f"http://{api.host}:{api.port}", http, person.address)
        async with slots:
            login = await phone.login(person.label)
            if login.status != 200:
                raise BenchError(f"login of {person.label}: {login.status} {login.body[:200]!r}")
            bound = await phone.bind(person.code)
            if bound.status != 200:
                raise BenchError(f"binding of {person.label}: {bound.status} {bound.body[:200]!r}")
        assert phone.token is not None
        person.token, person.device_id = phone.token, phone.device_id

    try:
        await asyncio.gather(*(sign_in(person) for person in people))
    finally:
        http.close()


def _request(api: RunningApi, person: Person, key: str) -> bytes:
    """One check-in as the mini-program sends it: at the station, captured just now."""
    body = {
        "location": {
            "lat": STATION_CENTRE.lat,
            "lng": STATION_CENTRE.lng,
            "coord_type": "wgs84",
            "accuracy": ACCURACY_M,
        },
        "captured_at": dt.datetime.now(dt.UTC).isoformat(),
        "device_id": person.device_id,
    }
    return build_request(
        api.host,
        api.port,
        PATH,
        keep_alive=True,
        method="POST",
        headers={
            "Authorization": f"Bearer {person.token}",
            "X-Real-Ip": person.address,
            "Idempotency-Key": key,
            "Content-Type": "application/json",
        },
        body=json.dumps(body).encode(),
    )


@dataclass
class _Outcome:
    """What one phase of check-ins was answered."""

    latencies: list[float]
    seconds: float
    acknowledged: list[str]  # the idempotency keys as stored: "<subject id>:<key>"
    errors: Counter[int]
    error_bodies: dict[int, str]


async def _check_in(
    api: RunningApi, people: list[Person], connections: int, seeded: int
) -> _Outcome:
    """Each person checks in once, `connections` requests in flight on keep-alive connections
    (`seeded`: how many people the database holds)."""
    outcome = _Outcome([], 0.0, [], Counter(), {})
    waiting = iter(people)

    async def worker() -> None:
        connection = await connect(api.host, api.port)
        try:
            # One shared iterator: each person is taken by one worker, once.
            for person in waiting:
                key = uuid.uuid4().hex
                payload = _request(api, person, key)
                started = time.perf_counter()
                status = await connection.request(payload)
                outcome.latencies.append(time.perf_counter() - started)
                if status == 201:
                    outcome.acknowledged.append(f"{person.subject_id}:{key}")
                else:
                    outcome.errors[status] += 1
                    if len(outcome.error_bodies) < KEEP_ERROR_BODIES:
                        outcome.error_bodies.setdefault(
                            status, connection.body[:300].decode(errors="replace")
                        )
        finally:
            connection.close()

    started = time.perf_counter()
    # A stuck API must not hang the run: a generous bound, far above any healthy phase.
    async with asyncio.timeout(phase_limit(len(people), seeded)), asyncio.TaskGroup() as workers:
        for _ in range(min(connections, len(people))):
            workers.create_task(worker())
    outcome.seconds = time.perf_counter() - started
    return outcome


async def _verify(store: Store, acknowledged: list[str], people: int) -> dict[str, Any]:
    """Every acknowledged check-in stored exactly once; how they were classified."""
    checkins = store.collection("checkins")
    stored = await checkins.count_documents({})
    found = await checkins.count_documents({"idem": {"$in": acknowledged}})
    twice = [
        doc
        async for doc in await checkins.aggregate(
            [
                {"$group": {"_id": "$subject_id", "n": {"$sum": 1}}},
                {"$match": {"n": {"$gt": 1}}},
            ]
        )
    ]
    statuses = {
        str(doc["_id"]): doc["n"]
        async for doc in await checkins.aggregate(
            [{"$group": {"_id": "$status", "n": {"$sum": 1}}}]
        )
    }
    flagged = await checkins.count_documents({"flags.0": {"$exists": True}})
    met = await store.collection("occurrences").count_documents(
        {"kind": "remote_checkin", "checkin_id": {"$exists": True}}
    )
    if found != len(acknowledged) or twice:
        raise BenchError(
            f"check-ins: {len(acknowledged)} acknowledged, {found} of them stored, "
            f"{len(twice)} people stored more than once (of {stored} stored)"
        )
    return {
        "acknowledged": len(acknowledged),
        "stored": stored,
        "stored_once": True,
        "stored_unacknowledged": stored - found,
        "statuses": statuses,
        "flagged": flagged,
        "windows_met": met,
        "people": people,
    }


async def _measure(spec: CheckinSpec) -> dict[str, Any]:
    begun = time.perf_counter()
    seconds: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="anbang-bench-checkins-") as temp:
        work = Path(temp)
        sockets = bind_sockets(0, HOST)
        standin = HTTPServer(make_standin_app())
        standin.add_sockets(sockets)
        standin_url = f"http://{HOST}:{sockets[0].getsockname()[1]}"
        # The same var directory (so the same master key file) as the API's, started below.
        config = Config.from_env(
            {
                "MONGODB_URI": spec.database_uri,
                "ANBANG_DB_NAME": DB_NAME,
                "ANBANG_VAR_DIR": str(work / "var"),
                "WECHAT_API_BASE": standin_url,
            }
        )
        store = Store.connect(
            DatabaseSettings(uri=spec.database_uri, name=DB_NAME, production=False)
        )
        services: Services | None = None
        try:
            await store.database.client.drop_database(DB_NAME)  # a run stopped earlier left it
            await store.ensure_indexes(collection_specs())
            clock = SystemClock()
            vault = await open_vault(config, store, clock)
            services = build_services(store, config, clock, vault)
            started = time.perf_counter()
            today = clock.now().astimezone(LOCAL_TZ).date()
            everyone = await seed_people(services, spec.subjects + WARM_UP_PEOPLE, today)
            warm_up, people = everyone[:WARM_UP_PEOPLE], everyone[WARM_UP_PEOPLE:]
            seconds["seeding"] = time.perf_counter() - started
            async with running_api(
                spec.database_uri,
                DB_NAME,
                work,
                environment={"WECHAT_API_BASE": standin_url, "ANBANG_BEHIND_PROXY": "1"},
                count_commands=True,
            ) as api:
                started = time.perf_counter()
                await sign_in_people(api, everyone, spec.connections)
                seconds["sign_in"] = time.perf_counter() - started
                started = time.perf_counter()
                warmed = await _check_in(api, warm_up, spec.connections, len(everyone))
                seconds["warm_up"] = time.perf_counter() - started
                await start_count(api)
                meter = CpuMeter(
                    {"server": api.pid, "client": os.getpid(), "database": spec.database_pid}
                )
                meter.start()
                measured = await _check_in(api, people, spec.connections, len(everyone))
                cpu = meter.stop()
                trips = await read_count(api)
            seconds["measured"] = measured.seconds
            verified = await _verify(
                store, warmed.acknowledged + measured.acknowledged, len(everyone)
            )
        finally:
            if services is not None:
                await services.close()
            with contextlib.suppress(Exception):
                await store.database.client.drop_database(DB_NAME)
            await store.close()
            standin.stop()
            await standin.close_all_connections()
    run = Run.from_latencies(
        f"POST {PATH}, keep-alive, {spec.connections} conns",
        "req/s",
        measured.latencies,
        errors=sum(measured.errors.values()),
        seconds=measured.seconds,
        concurrency=spec.connections,
        cpu=cpu,
    )
    answered = len(measured.latencies)
    commands = trips.per_call(answered) if answered else {}
    seconds["total"] = time.perf_counter() - begun
    return {
        "run": run,
        "subjects": spec.subjects,
        "warm_up_subjects": len(warm_up),
        "connections": spec.connections,
        "acknowledged": len(measured.acknowledged),
        "acknowledged_per_second": len(measured.acknowledged) / measured.seconds,
        "errors": {str(status): n for status, n in sorted(measured.errors.items())},
        "error_bodies": {str(status): body for status, body in measured.error_bodies.items()},
        "warm_up_errors": sum(warmed.errors.values()),
        # Counted by PyMongo command monitoring inside the API process, over the measured phase.
        "round_trips_counted_in": "api_process",
        "round_trips": sum(c["count"] for c in commands.values()),
        "commands": commands,
        "database_cpu": cpu.get("database"),
        "verified": verified,
        "seconds": seconds,
    }


def measure_checkins(spec: CheckinSpec) -> dict[str, Any]:
    """Seed, sign in and check everyone in, in a child process; the figures (`run` is a Run)."""
    return run_in_child(
        _measure,
        spec,
        name="bench-checkins",
        what="the check-in benchmark",
        limit=time_limit(spec.subjects),
    )


def checkin_ratios(acknowledged_per_second: float, runs: dict[str, Run]) -> dict[str, float]:
    """Acknowledged check-ins/s as a fraction of each ceiling of the same run."""
    return {
        f"checkins_per_{name}": acknowledged_per_second / runs[key].rate
        for name, key in (
            ("healthz", "healthz_keep_alive"),
            ("insert_sequential", "insert_one_sequential"),
            ("insert_concurrent", "insert_one_concurrent"),
        )
    }


def _cores(value: float | None) -> str:
    return "n/a" if value is None else f"{value * 100:.0f}%"


def checkins_table(figures: dict[str, Any], ratios: dict[str, float]) -> str:
    verified = figures["verified"]
    took = figures["seconds"]
    errors = ", ".join(f"{n} x {status}" for status, n in figures["errors"].items()) or "none"
    statuses = ", ".join(f"{status} {n}" for status, n in sorted(verified["statuses"].items()))
    commands = ", ".join(
        f"{name} {c['count']:.2f} ({c['ms']:.2f} ms)" for name, c in figures["commands"].items()
    )
    title = (
        f"check-ins (POST {PATH}): {figures['subjects']:,} people, one each, "
        f"{figures['connections']} conns"
    )
    lines = [
        title,
        "-" * len(title),
        f"check-ins/s per GET /healthz keep-alive req/s: {ratios['checkins_per_healthz']:.3f}",
        f"check-ins/s per sequential insert_one/s: {ratios['checkins_per_insert_sequential']:.3f}",
        f"check-ins/s per concurrent insert_one/s: {ratios['checkins_per_insert_concurrent']:.3f}",
        f"database round trips per check-in (counted in the API process): "
        f"{figures['round_trips']:.2f}: {commands}",
        f"answers: {figures['acknowledged']:,} acknowledged (201), errors: {errors}; "
        f"database CPU {_cores(figures['database_cpu'])}",
        f"stored: {verified['stored']:,} check-ins (warm-up included), each acknowledged one "
        f"exactly once, {verified['stored_unacknowledged']} unacknowledged; {statuses}; "
        f"{verified['flagged']} flagged; {verified['windows_met']:,} windows met",
        f"took {took['total']:.0f} s: seeding {took['seeding']:.1f} s, login and binding "
        f"{took['sign_in']:.1f} s, warm-up {took['warm_up']:.1f} s, measured "
        f"{took['measured']:.1f} s",
    ]
    for status, body in figures["error_bodies"].items():
        lines.append(f"note: a {status} answer: {body}")
    return "\n".join(lines)

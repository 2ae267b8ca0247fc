"""The check-in hot path, operation by operation: database commands per cold and warm check-in,
morning login and photo upload, the API's CPU per cold check-in, and the cold rate as a ratio to
sequential journaled `insert_one` against the same database in the same run (issue 26).

What is measured, each counted by PyMongo command monitoring inside the API process
(`ops.bench.serve_child`, started and read by signals around each phase):

- Seeded through the services and signed in (login and binding) through a first API process,
  as in ops.bench.checkins; that process is then stopped.
- A second, fresh API process (no rules, keys, org chains or person context cached; every
  session older than its caches) serves the measured phases, each group of people in turn:
  - cold check-in: each person of the cold group checks in once (their first of the day),
    `connections` in flight; the API's CPU over the phase, divided by the check-ins;
  - warm check-in: the same people check in again at once (the person's context cached);
  - morning login: another group logs in again (a new session for a bound person);
  - photo upload: a third group uploads a phone-sized photo each.
- The ceiling: sequential `insert_one` with the journal (w:1, j:true) into the same database,
  after the phases, in the same process as the load generator.

`python -m ops.bench.hotpath [--people N]` runs it alone; `make bench` runs it with the rest.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import os
import random
import sys
import tempfile
import time
import uuid
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pymongo import WriteConcern
from tornado.httpclient import AsyncHTTPClient
from tornado.httpserver import HTTPServer
from tornado.netutil import bind_sockets

from models.clock import LOCAL_TZ, SystemClock
from models.store import DatabaseSettings, Store
from ops.bench.apiserver import HOST, RunningApi, read_count, running_api, start_count
from ops.bench.checkins import (
    Person,
    Phone,
    _request,
    seed_people,
    sign_in_people,
)
from ops.bench.child import run_in_child
from ops.bench.loadgen import connect
from ops.bench.measure import BenchError, CpuMeter, RoundTrips, embedded_database
from ops.verify.load import photo
from server.app import Services, build_services, collection_specs, open_vault
from server.config import Config
from server.wechat_standin import make_standin_app

DEFAULT_PEOPLE = 100
MIN_PEOPLE, MAX_PEOPLE = 10, 1_000
# Logins and uploads are counted over a smaller group: their commands do not depend on load.
SIDE_GROUP = 20
DB_NAME = "bench_hotpath"
INSERT_SECONDS = 3.0
PHOTO_BYTES = 80_000  # a phone's compressed photo, as the verification load sends


@dataclass(frozen=True)
class HotPathSpec:
    database_uri: str
    people: int
    connections: int
    database_pid: int


@dataclass
class Phase:
    """One measured phase: operations answered as expected, commands, CPU, seconds."""

    operations: int
    errors: Counter[int]
    seconds: float
    trips: RoundTrips
    api_cpu_seconds: float | None

    def figures(self) -> dict[str, Any]:
        per = self.trips.per_call(self.operations) if self.operations else {}
        return {
            "operations": self.operations,
            "errors": {str(s): n for s, n in sorted(self.errors.items())},
            "per_second": self.operations / self.seconds if self.seconds else 0.0,
            "commands_per_operation": sum(c["count"] for c in per.values()),
            "commands": per,
            "api_cpu_ms_per_operation": (
                None
                if self.api_cpu_seconds is None or not self.operations
                else self.api_cpu_seconds / self.operations * 1e3
            ),
        }


async def _counted(api: RunningApi, work: Any) -> tuple[Any, RoundTrips, float | None, float]:
    """Run `work()` between a command count's start and read, with the API's CPU metered."""
    await start_count(api)
    meter = CpuMeter({"server": api.pid})
    meter.start()
    started = time.perf_counter()
    result = await work()
    seconds = time.perf_counter() - started
    cpu = meter.stop().get("server")
    return result, await read_count(api), cpu, seconds


async def _check_in_all(api: RunningApi, people: list[Person], connections: int) -> Counter[int]:
    """Each person checks in once, `connections` in flight on keep-alive connections."""
    statuses: Counter[int] = Counter()
    waiting = iter(people)

    async def worker() -> None:
        connection = await connect(api.host, api.port)
        try:
            for person in waiting:
                statuses[await connection.request(_request(api, person, uuid.uuid4().hex))] += 1
        finally:
            connection.close()

    async with asyncio.timeout(120 + len(people)), asyncio.TaskGroup() as workers:
        for _ in range(min(connections, len(people))):
            workers.create_task(worker())
    return statuses


async def _phones(
    api: RunningApi, people: list[Person], action: str, connections: int
) -> Counter[int]:
    """Each person's phone logs in again (`login`) or uploads a photo (`upload`)."""
    http = AsyncHTTPClient(force_instance=True, max_clients=connections)
    statuses: Counter[int] = Counter()
    rng = random.Random(26)
    slots = asyncio.Semaphore(connections)

    async def one(person: Person) -> None:
        phone = Phone(f"http://{api.host}:{api.port}", http, person.address)
        phone.token = person.token
        async with slots:
            if action == "login":
                answer = await phone.login(person.label)
            else:
                answer = await phone.upload(photo(rng, PHOTO_BYTES))
        statuses[answer.status] += 1

    try:
        await asyncio.gather(*(one(person) for person in people))
    finally:
        http.close()
    return statuses


def _phase(
    statuses: Counter[int], ok: int, trips: RoundTrips, cpu: float | None, s: float
) -> Phase:
    errors = Counter({status: n for status, n in statuses.items() if status != ok})
    return Phase(statuses[ok], errors, s, trips, cpu)


async def _inserts_per_second(uri: str) -> float:
    """Sequential journaled `insert_one` into the same database, for `INSERT_SECONDS`."""
    store = Store.connect(DatabaseSettings(uri=uri, name=DB_NAME, production=False))
    try:
        collection = store.collection("bench_inserts").with_options(
            write_concern=WriteConcern(w=1, j=True)
        )
        for index in range(50):  # a warm connection before timing
            await collection.insert_one({"warm": index})
        done = 0
        started = time.perf_counter()
        while (elapsed := time.perf_counter() - started) < INSERT_SECONDS:
            await collection.insert_one(
                {"seq": done, "at": dt.datetime.now(dt.UTC), "note": "x" * 64}
            )
            done += 1
        return done / elapsed
    finally:
        await store.close()


async def _measure(spec: HotPathSpec) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="anbang-bench-hotpath-") as temp:
        work = Path(temp)
        sockets = bind_sockets(0, HOST)
        standin = HTTPServer(make_standin_app())
        standin.add_sockets(sockets)
        standin_url = f"http://{HOST}:{sockets[0].getsockname()[1]}"
        environment = {"WECHAT_API_BASE": standin_url, "ANBANG_BEHIND_PROXY": "1"}
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
        figures: dict[str, Any] = {}
        try:
            await store.database.client.drop_database(DB_NAME)
            await store.ensure_indexes(collection_specs())
            clock = SystemClock()
            vault = await open_vault(config, store, clock)
            services = build_services(store, config, clock, vault)
            today = clock.now().astimezone(LOCAL_TZ).date()
            everyone = await seed_people(services, spec.people + 2 * SIDE_GROUP, today)
            cold = everyone[: spec.people]
            logins = everyone[spec.people : spec.people + SIDE_GROUP]
            uploads = everyone[spec.people + SIDE_GROUP :]
            async with running_api(
                spec.database_uri, DB_NAME, work, environment=environment
            ) as first:
                await sign_in_people(first, everyone, spec.connections)
            # A fresh process: nothing cached, every session older than its caches.
            async with running_api(
                spec.database_uri, DB_NAME, work, environment=environment, count_commands=True
            ) as api:
                statuses, trips, cpu, s = await _counted(
                    api, lambda: _check_in_all(api, cold, spec.connections)
                )
                figures["cold_checkin"] = _phase(statuses, 201, trips, cpu, s).figures()
                statuses, trips, cpu, s = await _counted(
                    api, lambda: _check_in_all(api, cold, spec.connections)
                )
                figures["warm_checkin"] = _phase(statuses, 201, trips, cpu, s).figures()
                statuses, trips, cpu, s = await _counted(
                    api, lambda: _phones(api, logins, "login", spec.connections)
                )
                figures["morning_login"] = _phase(statuses, 200, trips, cpu, s).figures()
                statuses, trips, cpu, s = await _counted(
                    api, lambda: _phones(api, uploads, "upload", spec.connections)
                )
                figures["photo_upload"] = _phase(statuses, 201, trips, cpu, s).figures()
            inserts = await _inserts_per_second(spec.database_uri)
        finally:
            if services is not None:
                await services.close()
            with contextlib.suppress(Exception):
                await store.database.client.drop_database(DB_NAME)
            await store.close()
            standin.stop()
            await standin.close_all_connections()
    return {
        "people": spec.people,
        "connections": spec.connections,
        "operations": figures,
        "insert_one_sequential_journaled_per_second": inserts,
        "cold_checkins_per_insert_sequential": figures["cold_checkin"]["per_second"] / inserts,
    }


def measure_hotpath(
    people: int = DEFAULT_PEOPLE, connections: int = 16, *, oplog: bool = True
) -> dict[str, Any]:
    """Start an embedded database of its own, measure from a child process, stop it.
    `oplog=False` starts it as a standalone server, without the replica set's oplog (issue 26
    asks whether that changes the cost; the application itself needs the replica set for its
    transactions, so it is a measurement, not a setting)."""
    if not MIN_PEOPLE <= people <= MAX_PEOPLE:
        raise BenchError(f"hot-path people must be between {MIN_PEOPLE} and {MAX_PEOPLE}")
    with embedded_database(**({} if oplog else {"replica_set_name": None})) as uri:
        spec = HotPathSpec(uri, people, connections, os.getpid())
        return run_in_child(
            _measure,
            spec,
            name="bench-hotpath",
            what="the hot-path benchmark",
            limit=300 + 2.0 * people,
        )


def hotpath_table(figures: dict[str, Any]) -> str:
    title = (
        f"hot path (issue 26): {figures['people']} people, {figures['connections']} in flight, "
        "a fresh API process"
    )
    lines = [title, "-" * len(title)]
    for name, op in figures["operations"].items():
        commands = ", ".join(f"{key} {c['count']:.2f}" for key, c in op["commands"].items())
        cpu = op["api_cpu_ms_per_operation"]
        errors = ", ".join(f"{n} x {s}" for s, n in op["errors"].items()) or "no errors"
        lines.append(
            f"{name}: {op['commands_per_operation']:.2f} commands/op ({commands}); "
            f"API CPU {'n/a' if cpu is None else f'{cpu:.1f} ms'}/op; "
            f"{op['per_second']:.1f}/s; {op['operations']} ok, {errors}"
        )
    lines.append(
        f"cold check-ins/s per sequential journaled insert_one/s: "
        f"{figures['cold_checkins_per_insert_sequential']:.3f} "
        f"(insert_one {figures['insert_one_sequential_journaled_per_second']:.0f}/s)"
    )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ops.bench.hotpath", description=__doc__)
    parser.add_argument("--people", type=int, default=DEFAULT_PEOPLE)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument(
        "--no-oplog", action="store_true", help="measure against a standalone embedded database"
    )
    args = parser.parse_args(argv)
    try:
        figures = measure_hotpath(args.people, args.connections, oplog=not args.no_oplog)
        print(hotpath_table(figures))
    except BenchError as exc:
        print(f"bench: failed: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

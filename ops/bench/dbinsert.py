"""The database's raw `insert_one` rate, measured from a separate client process."""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import time
from dataclasses import dataclass

from pymongo.asynchronous.collection import AsyncCollection

from models.store import DatabaseSettings, Store
from ops.bench.child import run_in_child
from ops.bench.measure import BenchError, Budget, CpuMeter, Run

COLLECTION = "bench_inserts"


@dataclass(frozen=True)
class InsertSpec:
    database_uri: str
    db_name: str
    seconds: float
    tasks: int
    max_inserts: int
    warmup_seconds: float
    # The process serving the database, whose CPU use is reported as the "server" side.
    database_pid: int


async def _insert_phase(
    collection: AsyncCollection, name: str, tasks: int, seconds: float, spec: InsertSpec
) -> Run:
    latencies: list[float] = []
    budget = Budget(seconds, spec.max_inserts)
    payload = "x" * 64

    async def worker(index: int) -> None:
        sequence = 0
        while budget.take():
            sequence += 1
            # A small document shaped like ours: ids, a timestamp, a short string.
            document = {
                "worker": index,
                "seq": sequence,
                "at": dt.datetime.now(dt.UTC),
                "note": payload,
            }
            started = time.perf_counter()
            await collection.insert_one(document)
            latencies.append(time.perf_counter() - started)

    meter = CpuMeter({"server": spec.database_pid, "client": os.getpid()})
    meter.start()
    started = time.perf_counter()
    async with asyncio.timeout(seconds + 30), asyncio.TaskGroup() as group:
        for index in range(tasks):
            group.create_task(worker(index))
    elapsed = time.perf_counter() - started
    return Run.from_latencies(
        name,
        "inserts/s",
        latencies,
        errors=0,
        seconds=elapsed,
        concurrency=tasks,
        cpu=meter.stop(),
    )


async def _measure(spec: InsertSpec) -> list[Run]:
    # The application's own client settings (pool size, timeouts, tz-aware), development
    # durability: the embedded database acknowledges w:1 without a replica set.
    store = Store.connect(
        DatabaseSettings(uri=spec.database_uri, name=spec.db_name, production=False)
    )
    try:
        if not await store.ping(timeout_seconds=5):
            raise BenchError("the database did not answer a ping")
        collection = store.collection(COLLECTION)
        runs = []
        for name, tasks in (
            ("insert_one, sequential", 1),
            (f"insert_one, {spec.tasks} tasks", spec.tasks),
        ):
            # The warm-up opens the pool's connections (one server thread each) before timing.
            await _insert_phase(collection, "warm-up", tasks, spec.warmup_seconds, spec)
            runs.append(await _insert_phase(collection, name, tasks, spec.seconds, spec))
        await store.database.client.drop_database(spec.db_name)
        return runs
    finally:
        await store.close()


def measure_inserts(spec: InsertSpec) -> list[Run]:
    """Run the sequential and the concurrent phase in a child process and return their figures."""
    # Start-up, two warm-ups, two phases and the drop, with room to spare: never forever.
    return run_in_child(
        _measure,
        spec,
        name="bench-inserts",
        what="the insert benchmark",
        limit=2 * (spec.seconds + spec.warmup_seconds) + 60,
    )

"""The first benchmark: the two ceilings (trivial endpoint, raw insert) later ones compare to."""

from __future__ import annotations

import asyncio
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ops.bench.apiserver import running_api
from ops.bench.casefile import measure_casefile
from ops.bench.casework import DEFAULT_SIZES as CASEWORK_DEFAULT
from ops.bench.casework import measure_casework
from ops.bench.checkins import DEFAULT_SUBJECTS as CHECKIN_DEFAULT
from ops.bench.checkins import CheckinSpec, checkin_ratios, measure_checkins
from ops.bench.dbinsert import InsertSpec, measure_inserts
from ops.bench.loadgen import LoadSpec, drive
from ops.bench.measure import BenchError, Run, embedded_database
from ops.bench.sweeps import DEFAULT_SUBJECTS, measure_sweeps


@dataclass(frozen=True)
class CeilingOptions:
    """How long and how hard each phase runs; the defaults keep `make bench` well under a minute."""

    seconds: float = 5.0
    new_connection_seconds: float = 3.0
    warmup_seconds: float = 1.0
    connections: int = 16
    tasks: int = 16
    max_operations: int = 1_000_000
    # People who each check in once through the API (ops.bench.checkins), and how many of their
    # requests are in flight; 0 people skips it.
    checkin_subjects: int = CHECKIN_DEFAULT
    checkin_connections: int = 16
    # Case files whose month of check-ins the missed-window sweep runs over (ops.bench.sweeps).
    sweep_subjects: tuple[int, ...] = DEFAULT_SUBJECTS
    # Database sizes for the caseload and search benchmark (ops.bench.casework).
    casework_subjects: tuple[int, ...] = CASEWORK_DEFAULT


@dataclass
class Ceilings:
    """The measured runs under stable keys (later benchmarks and latest.json refer to them).

    No endpoint can beat `healthz_keep_alive` (the whole HTTP stack, no work); none that writes
    can beat the `insert_one_*` rates of the database it writes to.
    """

    runs: dict[str, Run] = field(default_factory=dict)
    # Check-ins through the API (ops.bench.checkins; its run is `runs["checkin_keep_alive"]`).
    checkins: dict[str, Any] = field(default_factory=dict)
    # Encryption and audit costs (ops.bench.casefile), per suite.
    casefile: dict[str, Any] = field(default_factory=dict)
    # The missed-window sweep (ops.bench.sweeps), by number of subjects.
    sweeps: dict[str, Any] = field(default_factory=dict)
    # The caseload and ID-number search at two database sizes (ops.bench.casework).
    casework: dict[str, Any] = field(default_factory=dict)

    def ratios(self) -> dict[str, float]:
        healthz = self.runs["healthz_keep_alive"].rate
        ratios = {
            "healthz_per_insert_sequential": healthz / self.runs["insert_one_sequential"].rate,
            "healthz_per_insert_concurrent": healthz / self.runs["insert_one_concurrent"].rate,
        }
        if self.checkins:
            ratios.update(checkin_ratios(self.checkins["acknowledged_per_second"], self.runs))
        return ratios


def _check(run: Run) -> Run:
    if run.errors:
        raise BenchError(f"{run.name}: {run.errors} of {run.operations} answers were not 200")
    if run.operations == 0:
        raise BenchError(f"{run.name}: no operation completed")
    return run


async def _http_runs(database_uri: str, work_dir: Path, options: CeilingOptions) -> dict[str, Run]:
    client_pid = os.getpid()
    async with running_api(database_uri, "bench_api", work_dir) as api:

        def spec(seconds: float, keep_alive: bool) -> LoadSpec:
            return LoadSpec(
                host=api.host,
                port=api.port,
                path="/healthz",
                connections=options.connections,
                seconds=seconds,
                max_requests=options.max_operations,
                keep_alive=keep_alive,
            )

        # The first requests pay for imports, caches and connection set-up; they are not counted.
        await drive(spec(options.warmup_seconds, True), "warm-up", api.pid, client_pid)
        keep_alive = await drive(
            spec(options.seconds, True),
            f"GET /healthz, keep-alive, {options.connections} conns",
            api.pid,
            client_pid,
        )
        # What the API sees behind a proxy that opens a connection per request (nginx's default
        # for upstreams unless `keepalive` is configured).
        new_connection = await drive(
            spec(options.new_connection_seconds, False),
            f"GET /healthz, new conn each, {options.connections} conc",
            api.pid,
            client_pid,
        )
    return {
        "healthz_keep_alive": _check(keep_alive),
        "healthz_new_connection": _check(new_connection),
    }


def run_ceilings(options: CeilingOptions) -> Ceilings:
    """Start the embedded database in this process, measure, and remove everything it made."""
    ceilings = Ceilings()
    with tempfile.TemporaryDirectory(prefix="anbang-bench-") as temp, embedded_database() as uri:
        work_dir = Path(temp)
        ceilings.runs.update(asyncio.run(_http_runs(uri, work_dir, options)))
        sequential, concurrent = measure_inserts(
            InsertSpec(
                database_uri=uri,
                db_name="bench_inserts",
                seconds=options.seconds,
                tasks=options.tasks,
                max_inserts=options.max_operations,
                warmup_seconds=min(options.warmup_seconds, 0.5),
                database_pid=os.getpid(),
            )
        )
        ceilings.runs["insert_one_sequential"] = _check(sequential)
        ceilings.runs["insert_one_concurrent"] = _check(concurrent)
        if options.checkin_subjects:
            checkins = measure_checkins(
                CheckinSpec(
                    database_uri=uri,
                    subjects=options.checkin_subjects,
                    connections=options.checkin_connections,
                    database_pid=os.getpid(),
                )
            )
            # Answers other than 201 are counted and reported, not a failure of the run.
            ceilings.runs["checkin_keep_alive"] = checkins.pop("run")
            ceilings.checkins = checkins
        ceilings.casefile = measure_casefile(uri)
        if options.sweep_subjects:
            ceilings.sweeps = measure_sweeps(uri, options.sweep_subjects, os.getpid())
        if options.casework_subjects:
            ceilings.casework = measure_casework(uri, options.casework_subjects)
    return ceilings

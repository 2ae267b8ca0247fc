"""Wiring of the jobs process: its store, lease, sweeps, and the `jobs` sub-commands."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
from collections.abc import Sequence

from jobs.runner import JobsProcess, Sweep, run_once
from models.clock import FixedClock, SystemClock
from models.leases import LeaseService
from server.app import collection_specs, connect_store, wait_for_database
from server.config import Config
from server.processes import stop_event_on_signals


def build_sweeps() -> Sequence[Sweep]:
    """The periodic sweeps, in the order `run-once all` runs them; later issues add theirs."""
    return []


async def _run_jobs(config: Config) -> None:
    stop = stop_event_on_signals()
    store = connect_store(config)
    try:
        await wait_for_database(store, config.db_wait_seconds)
        await store.ensure_indexes(collection_specs())
        clock = SystemClock()
        process = JobsProcess(leases=LeaseService(store, clock), sweeps=build_sweeps(), clock=clock)
        await process.run(stop)
    finally:
        await store.close()


async def _run_once(config: Config, name: str, now: dt.datetime) -> list[dict]:
    # The simulated time lives in this process's clock only, never in shared state.
    store = connect_store(config)
    try:
        await wait_for_database(store, config.db_wait_seconds)
        _clock = FixedClock(now)
        return await run_once(build_sweeps(), name, now)
    finally:
        await store.close()


def jobs_main(config: Config, command: str | None, sweep: str | None, now: dt.datetime) -> int:
    if command == "list":
        sweeps = build_sweeps()
        for item in sweeps:
            print(f"{item.name}\tevery {item.interval_seconds} s\t{item.description}")
        if not sweeps:
            print("(no sweeps registered yet)")
        return 0
    if command == "run-once":
        assert sweep is not None
        try:
            results = asyncio.run(_run_once(config, sweep, now))
        except KeyError as exc:
            print(f"anbang: {exc.args[0]}")
            return 2
        print(json.dumps(results, ensure_ascii=False, default=str))
        return 0
    asyncio.run(_run_jobs(config))
    return 0

"""The jobs process: two instances share one database, one holds the lease and runs the sweeps."""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest

from jobs.runner import JOBS_LEASE, JobsProcess, LeaseSettings, run_once
from models.clock import FixedClock, SystemClock
from models.leases import LeaseService
from models.store import Store

START = dt.datetime(2026, 11, 24, 0, 0, tzinfo=dt.UTC)


@dataclass
class CountingSweep:
    """A sweep that remembers when it ran (and, if given a shared log, in which order)."""

    name: str
    interval_seconds: int = 60
    description: str = "counts its runs"
    calls: list[dt.datetime] = field(default_factory=list)
    order: list[str] | None = None

    async def run(self, now: dt.datetime) -> dict[str, Any]:
        self.calls.append(now)
        if self.order is not None:
            self.order.append(self.name)
        return {"runs": len(self.calls)}


@dataclass
class FailingSweep:
    name: str = "failing"
    interval_seconds: int = 60
    description: str = "always fails"

    async def run(self, now: dt.datetime) -> dict[str, Any]:
        raise RuntimeError("the sweep broke")


async def eventually(condition: Callable[[], bool], seconds: float, what: str) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    while True:
        if condition():
            return
        if loop.time() > deadline:
            raise AssertionError(f"{what} did not happen within {seconds} s")
        await asyncio.sleep(0.02)


@pytest.fixture
def clock() -> FixedClock:
    return FixedClock(START)


def make_process(store: Store, clock: FixedClock, holder: str, *sweeps: Any) -> JobsProcess:
    return JobsProcess(
        leases=LeaseService(store, clock), sweeps=list(sweeps), clock=clock, holder=holder
    )


async def test_only_one_of_two_processes_holds_the_lease(store, clock):
    first = make_process(store, clock, "first", CountingSweep("reminders"))
    second = make_process(store, clock, "second", CountingSweep("reminders"))
    await first.renew_lease()
    await second.renew_lease()
    assert first.holding
    assert not second.holding
    assert await LeaseService(store, clock).holder(JOBS_LEASE) == "first"

    # Renewals on both sides keep it that way.
    for _ in range(3):
        clock.advance(first.lease.renew_every)
        await second.renew_lease()
        await first.renew_lease()
        assert first.holding
        assert not second.holding


async def test_the_holder_runs_a_sweep_and_the_standby_does_not(store, clock):
    on_first, on_second = CountingSweep("reminders"), CountingSweep("reminders")
    first = make_process(store, clock, "first", on_first)
    second = make_process(store, clock, "second", on_second)
    await first.renew_lease()
    await second.renew_lease()

    await first.run_sweep(on_first)
    await second.run_sweep(on_second)
    assert on_first.calls == [START]
    assert on_second.calls == []


async def test_a_process_that_never_renewed_runs_nothing(store, clock):
    sweep = CountingSweep("reminders")
    process = make_process(store, clock, "first", sweep)
    await process.run_sweep(sweep)
    assert sweep.calls == []


async def test_the_standby_acquires_on_its_next_renew_after_the_holder_stops(store, clock):
    on_first, on_second = CountingSweep("reminders"), CountingSweep("reminders")
    first = make_process(store, clock, "first", on_first)
    second = make_process(store, clock, "second", on_second)

    stop = asyncio.Event()
    running = asyncio.create_task(first.run(stop))
    try:
        await eventually(lambda: first.holding, 30, "the first process taking the lease")
        await second.renew_lease()
        assert not second.holding
    finally:
        stop.set()
        async with asyncio.timeout(30):
            await running

    # Stopping released the lease: no waiting for it to expire (the clock has not moved).
    assert await LeaseService(store, clock).holder(JOBS_LEASE) is None
    await second.renew_lease()
    assert second.holding
    await second.run_sweep(on_second)
    assert on_second.calls == [START]


async def test_the_standby_takes_over_when_the_holder_dies_without_releasing(store, clock):
    on_first, on_second = CountingSweep("reminders"), CountingSweep("reminders")
    first = make_process(store, clock, "first", on_first)
    second = make_process(store, clock, "second", on_second)
    await first.renew_lease()
    await second.renew_lease()
    assert first.holding

    # The holder stops renewing (killed, frozen); within the TTL the standby still waits.
    clock.advance(first.lease.ttl - dt.timedelta(seconds=1))
    await second.renew_lease()
    assert not second.holding
    clock.advance(dt.timedelta(seconds=1))
    await second.renew_lease()
    assert second.holding

    # The old holder wakes up: its renewal fails, so it stops running sweeps.
    await first.renew_lease()
    assert not first.holding
    await first.run_sweep(on_first)
    await second.run_sweep(on_second)
    assert on_first.calls == []
    assert len(on_second.calls) == 1


async def test_a_failing_sweep_is_logged_and_does_not_stop_the_others(store, clock, caplog):
    counting = CountingSweep("reminders")
    process = make_process(store, clock, "first", FailingSweep(), counting)
    await process.renew_lease()
    with caplog.at_level(logging.ERROR, logger="anbang.jobs"):
        await process.run_sweep(FailingSweep())
    await process.run_sweep(counting)
    assert counting.calls == [START]
    failures = [r for r in caplog.records if r.getMessage() == "sweep failed"]
    assert len(failures) == 1
    assert failures[0].fields == {"sweep": "failing", "exception": "RuntimeError"}  # type: ignore[attr-defined]
    assert process.holding


@pytest.mark.slow
async def test_two_running_processes_fail_over_in_real_time(store):
    """Both processes run their schedulers; only the holder's sweep runs, then the standby's."""
    clock = SystemClock()
    # A TTL far beyond any stall of a loaded machine: the holder keeps the lease while it runs,
    # and a takeover well within it can only come from the release.
    lease = LeaseSettings(ttl=dt.timedelta(seconds=60), renew_every=dt.timedelta(seconds=0.2))
    on_first = CountingSweep("reminders", interval_seconds=1)
    on_second = CountingSweep("reminders", interval_seconds=1)
    first = JobsProcess(LeaseService(store, clock), [on_first], clock, lease, holder="first")
    second = JobsProcess(LeaseService(store, clock), [on_second], clock, lease, holder="second")

    stop_first, stop_second = asyncio.Event(), asyncio.Event()
    running_first = asyncio.create_task(first.run(stop_first))
    try:
        await eventually(lambda: first.holding, 30, "the first process taking the lease")
        running_second = asyncio.create_task(second.run(stop_second))
        try:
            await eventually(lambda: bool(on_first.calls), 30, "the holder's sweep running")
            assert not second.holding
            assert on_second.calls == []

            stop_first.set()
            await asyncio.wait_for(running_first, 30)
            # The standby notices at its next renewal (0.2 s), well before the 60 s TTL.
            await eventually(lambda: second.holding, 30, "the standby taking the lease")
            await eventually(lambda: bool(on_second.calls), 30, "the new holder's sweep running")
            runs_of_first = len(on_first.calls)
            await asyncio.sleep(1.2)
            assert len(on_first.calls) == runs_of_first
        finally:
            stop_second.set()
            await asyncio.wait_for(running_second, 30)
    finally:
        stop_first.set()
        await asyncio.wait_for(running_first, 30)
    assert await LeaseService(store, clock).holder(JOBS_LEASE) is None


# --- run_once: one sweep (or all) at a chosen time, outside the lease ---------------------------


async def test_run_once_with_an_unknown_name_lists_the_known_sweeps():
    sweeps = [CountingSweep("reminders"), CountingSweep("overdue")]
    with pytest.raises(KeyError) as refused:
        await run_once(sweeps, "nosuch", START)
    message = refused.value.args[0]
    assert "nosuch" in message
    assert "reminders" in message
    assert "overdue" in message
    assert all(s.calls == [] for s in sweeps)


async def test_run_once_without_sweeps_says_there_are_none():
    with pytest.raises(KeyError) as refused:
        await run_once([], "reminders", START)
    assert "none yet" in refused.value.args[0]


async def test_run_once_all_without_sweeps_runs_nothing():
    # `jobs run-once all` before any sweep is registered has nothing to do; it is not an error.
    assert await run_once([], "all", START) == []


async def test_run_once_runs_only_the_named_sweep_at_the_chosen_time():
    reminders, overdue = CountingSweep("reminders"), CountingSweep("overdue")
    chosen = dt.datetime(2027, 1, 1, 8, 0, tzinfo=dt.timezone(dt.timedelta(hours=8)))
    results = await run_once([reminders, overdue], "overdue", chosen)
    assert results == [{"sweep": "overdue", "runs": 1}]
    assert overdue.calls == [chosen]
    assert reminders.calls == []


async def test_run_once_all_runs_every_sweep_in_order():
    order: list[str] = []
    sweeps = [
        CountingSweep("intake", order=order),
        CountingSweep("reminders", order=order),
        CountingSweep("overdue", order=order),
    ]
    results = await run_once(sweeps, "all", START)
    assert order == ["intake", "reminders", "overdue"]
    assert results == [
        {"sweep": "intake", "runs": 1},
        {"sweep": "reminders", "runs": 1},
        {"sweep": "overdue", "runs": 1},
    ]
    assert all(s.calls == [START] for s in sweeps)


async def test_run_once_runs_even_while_another_process_holds_the_lease(store, clock):
    holder = make_process(store, clock, "holder")
    await holder.renew_lease()
    sweep = CountingSweep("reminders")
    await run_once([sweep], "reminders", START)
    assert sweep.calls == [START]
    assert await LeaseService(store, clock).holder(JOBS_LEASE) == "holder"

"""Two jobs processes: the lease holder killed (kill -9) mid-sweep, the standby takes over and
finishes; every missed window is marked once and alerted once."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import signal
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import pytest

from jobs.runner import JOBS_LEASE, JobsProcess, LeaseSettings
from models.clock import SystemClock
from models.identity_numbers import IdType
from models.leases import LeaseService
from models.orgs import OrgKind
from models.store import Store
from models.subjects import SubjectInput
from server.app import SYSTEM, build_services, collection_specs, connect_store, open_vault
from server.config import Config
from tests.process_support import (
    Launched,
    await_log,
    environment,
    eventually,
    launched,
    log_records,
    start_database,
)
from tests.subject_factories import resident_id

# More than the sweep's batch of 1,000 marks. The kill comes as soon as marked windows show: after
# the marks and before the alerts are confirmed (every window `alert_pending`), and under load
# between the two mark batches (the embedded database serialises work on a collection, so the
# count that triggers the kill may wait behind the second batch). Few: it updates about 200
# documents a second by id.
WINDOWS = 1100
# The lease's TTL in the jobs process (jobs/runner.py LeaseSettings; there is no setting for
# it): a standby takes over at most this long, plus one renewal period, after a holder dies.
LEASE_TTL_S = LeaseSettings().ttl.total_seconds()
RENEW_EVERY_S = LeaseSettings().renew_every.total_seconds()
PHANTOM = "test:phantom:0"


async def seed_backlog(store: Store, config: Config, count: int) -> None:
    """One person and `count` daily windows that all ended an hour ago, unmet: what an
    outage of the jobs processes leaves for the next sweep."""
    clock = SystemClock()
    vault = await open_vault(config, store, clock)
    services = build_services(store, config, clock, vault)
    try:
        city = await services.orgs.create(
            SYSTEM, name="市", code="330300", kind=OrgKind.CITY, parent_id=None
        )
        county = await services.orgs.create(
            SYSTEM, name="区", code="330302", kind=OrgKind.COUNTY, parent_id=city.id
        )
        station = await services.orgs.create(
            SYSTEM, name="所", code="330302001", kind=OrgKind.STATION, parent_id=county.id
        )
        birth = dt.date(1990, 1, 1)
        subject = await services.subjects.create(
            SYSTEM,
            SubjectInput(
                name="测试",
                id_type=IdType.RESIDENT,
                id_number=resident_id(birth, "male"),
                phone="13800000000",
                gender="male",
                birth_date=birth,
                address="测试路 1 号",
                org_id=station.id,
            ),
        )
    finally:
        await services.close()
    ended = (clock.now() - dt.timedelta(hours=1)).replace(microsecond=0)
    await store.collection("occurrences").insert_many(
        [
            {
                "_id": f"backlog:{i:05d}",
                "subject_id": subject.id,
                "program_id": "backlog",
                "program_type": "community_corrections",
                "org_path": list(station.path),
                "kind": "remote_checkin",
                "window_start": ended - dt.timedelta(days=1),
                "window_end": ended,
                "required_hours": None,
                "status": "scheduled",
                "rule_keys": [],
                "rules_version": "test",
                "created_at": ended,
            }
            for i in range(count)
        ]
    )


async def lease_holder(store: Store) -> str | None:
    doc = await store.collection("leases").find_one({"_id": JOBS_LEASE})
    return None if doc is None else str(doc["holder"])


def pid_of(holder: str) -> int:
    """The pid in a holder id (`host:pid:random`, jobs/runner.py holder_id)."""
    return int(holder.split(":")[-2])


@pytest.mark.slow
async def test_the_standby_finishes_a_sweep_the_killed_holder_left_half_done(
    tmp_path, wechat_standin, record_property
):
    env = environment(tmp_path, WECHAT_API_BASE=wechat_standin.base_url)
    config = Config.from_env(env)
    store = connect_store(config)
    occurrences, alerts = store.collection("occurrences"), store.collection("alerts")
    figures: dict[str, Any] = {"windows": WINDOWS}
    with contextlib.ExitStack() as stack:
        try:
            start_database(env, tmp_path / "db.log", stack)
            await store.ensure_indexes(collection_specs())
            await seed_backlog(store, config, WINDOWS)
            # The standby starts first, while the lease is held by nobody alive; then the lease
            # is free and the second process takes it as it starts (a process renews at start,
            # then every 10 s) and sweeps the whole backlog at once.
            now = dt.datetime.now(dt.UTC)
            await store.collection("leases").insert_one(
                {
                    "_id": JOBS_LEASE,
                    "holder": PHANTOM,
                    "expires_at": now + dt.timedelta(minutes=5),
                    "renewed_at": now,
                }
            )
            jobs = [stack.enter_context(launched(["jobs"], env, tmp_path / "jobs-1.log"))]
            await await_log(jobs[0], '"msg": "jobs ready"', 120)
            assert await lease_holder(store) == PHANTOM
            await store.collection("leases").delete_one({"_id": JOBS_LEASE, "holder": PHANTOM})
            released = time.monotonic()
            jobs.append(stack.enter_context(launched(["jobs"], env, tmp_path / "jobs-2.log")))
            # Normally the newcomer; the first process if its renewal came first (either way
            # one holds the lease and the other stands by).
            await eventually(
                lambda: holder_is_one_of(store, jobs), RENEW_EVERY_S + 60, "a process taking it"
            )
            holder_id = await lease_holder(store)
            assert holder_id is not None
            figures["first_acquire_seconds"] = round(time.monotonic() - released, 1)
            holder = next(p for p in jobs if p.pid == pid_of(holder_id))
            standby = next(p for p in jobs if p is not holder)
            figures["holder_started_second"] = holder is jobs[1]
            await await_log(standby, '"msg": "jobs ready"', 120)

            # Kill the holder once its sweep is under way: windows marked, not all alerted.
            await eventually(
                lambda: marked_at_least(store, 1), 180, "the holder marking windows", interval=0.01
            )
            holder.process.send_signal(signal.SIGKILL)
            killed = time.monotonic()
            assert await holder.await_exit(30) == -signal.SIGKILL
            # What the database finishes of the holder's last commands lands after the kill:
            # the figures are read once they have stopped moving (however loaded the machine).
            # A quiet spell of seconds, not a blink: on a starved machine the database can take
            # that long to run a batch the holder sent just before it died.
            at_kill = await settled(lambda: sweep_state(store), 120, quiet=3.0)
            figures["marked_at_kill"] = at_kill["marked"]
            figures["alerts_at_kill"] = at_kill["alerts"]
            figures["alert_pending_at_kill"] = at_kill["alert_pending"]

            # The holder's lease runs out (the test does not wait the real TTL: the expiry is
            # brought forward in the document; the standby sees no difference).
            await store.collection("leases").update_one(
                {"_id": JOBS_LEASE, "holder": holder_id},
                {"$set": {"expires_at": dt.datetime.now(dt.UTC)}},
            )
            await eventually(
                lambda: holder_is(store, standby), RENEW_EVERY_S + 60, "the standby taking over"
            )
            figures["takeover_seconds"] = round(time.monotonic() - killed, 1)
            await eventually(
                lambda: swept(standby, "close_windows") is not None,
                300,
                "the standby's close_windows sweep",
                interval=0.1,
            )
            figures["finished_seconds"] = round(time.monotonic() - killed, 1)
            done = swept(standby, "close_windows")
            assert done is not None
            figures["marked_by_standby"] = done["missed"]
            figures["alerted_by_standby"] = done["alerted"]

            figures["marked"] = await occurrences.count_documents({"status": "missed"})
            figures["alert_pending_left"] = await occurrences.count_documents(
                {"alert_pending": True}
            )
            figures["alerts"] = await alerts.count_documents({"kind": "obligation_missed"})
            keys = await alerts.distinct("dedupe_key", {"kind": "obligation_missed"})
            figures["alerted_windows"] = len(keys)
            figures["duplicates"] = figures["alerts"] - len(keys)

            # The standby stops cleanly and hands the lease back.
            standby.process.send_signal(signal.SIGTERM)
            assert await standby.await_exit(60) == 0, standby.output
            figures["lease_after_stop"] = await lease_holder(store)
        finally:
            await store.close()

    for name, value in figures.items():
        record_property(name, value)
    assert 0 < figures["marked_at_kill"] < WINDOWS or figures["alert_pending_at_kill"] > 0, (
        f"the kill did not land mid-sweep: {figures}"
    )
    assert figures["marked"] == WINDOWS, figures
    # Each window marked once: the standby marked exactly what the holder had not.
    assert figures["marked_by_standby"] == WINDOWS - figures["marked_at_kill"], figures
    assert figures["alert_pending_left"] == 0, figures
    assert figures["alerts"] == WINDOWS, figures
    assert figures["alerted_windows"] == WINDOWS, figures
    assert figures["duplicates"] == 0, figures
    assert figures["lease_after_stop"] is None, figures


async def holder_is_one_of(store: Store, processes: list[Launched]) -> bool:
    holder = await lease_holder(store)
    return holder is not None and holder != PHANTOM and pid_of(holder) in {p.pid for p in processes}


async def holder_is(store: Store, process: Launched) -> bool:
    holder = await lease_holder(store)
    return holder is not None and pid_of(holder) == process.pid


async def sweep_state(store: Store) -> dict[str, int]:
    occurrences, alerts = store.collection("occurrences"), store.collection("alerts")
    return {
        "marked": await occurrences.count_documents({"status": "missed"}),
        "alerts": await alerts.count_documents({"kind": "obligation_missed"}),
        "alert_pending": await occurrences.count_documents({"alert_pending": True}),
    }


async def settled(
    read: Callable[[], Awaitable[dict[str, int]]], seconds: float, quiet: float = 0.5
) -> dict[str, int]:
    """`read()` once it has given the same answer for `quiet` seconds on end."""
    deadline = time.monotonic() + seconds
    last, since = await read(), time.monotonic()
    while time.monotonic() - since < quiet:
        assert time.monotonic() < deadline, f"still changing after {seconds:.0f} s: {last}"
        await asyncio.sleep(0.1)
        now = await read()
        if now != last:
            last, since = now, time.monotonic()
    return last


async def marked_at_least(store: Store, count: int) -> bool:
    marked = await store.collection("occurrences").count_documents({"status": "missed"})
    return marked >= count


def swept(process: Launched, name: str) -> dict[str, Any] | None:
    """The first `sweep done` of sweep `name` the process logged, if any."""
    return next((r for r in log_records(process, "sweep done") if r.get("sweep") == name), None)


# --- the fix: a process that takes the lease over runs every sweep at once -----------------------


@dataclass
class CountingSweep:
    name: str
    interval_seconds: int = 3600
    description: str = "counts its runs"
    calls: list[dt.datetime] = field(default_factory=list)

    async def run(self, now: dt.datetime) -> dict[str, Any]:
        self.calls.append(now)
        return {"runs": len(self.calls)}


async def wait_for(condition: Callable[[], bool], seconds: float, what: str) -> None:
    await eventually(condition, seconds, what, interval=0.02)


@pytest.mark.slow
async def test_a_standby_that_takes_the_lease_sweeps_at_once_not_an_interval_later(store):
    """Regression: the standby's sweeps ran only at their next interval after a takeover (up
    to 5 minutes for close_windows, an hour for materialise), so a holder's death left windows
    unmarked that long."""
    clock = SystemClock()
    # A TTL no stall of a loaded machine reaches: the lease changes hands only by the release.
    lease = LeaseSettings(ttl=dt.timedelta(seconds=60), renew_every=dt.timedelta(seconds=0.2))
    on_first, on_second = CountingSweep("close_windows"), CountingSweep("close_windows")
    first = JobsProcess(LeaseService(store, clock), [on_first], clock, lease, holder="first")
    second = JobsProcess(LeaseService(store, clock), [on_second], clock, lease, holder="second")
    stop_first, stop_second = asyncio.Event(), asyncio.Event()
    running_first = asyncio.create_task(first.run(stop_first))
    running_second: asyncio.Task[None] | None = None
    try:
        await wait_for(lambda: bool(on_first.calls), 30, "the holder's sweep at start")
        running_second = asyncio.create_task(second.run(stop_second))
        await wait_for(lambda: second._scheduler is not None, 30, "the standby starting")
        assert not second.holding
        assert on_second.calls == []

        stop_first.set()
        await asyncio.wait_for(running_first, 30)
        await wait_for(lambda: second.holding, 30, "the standby taking the lease")
        # The sweep's interval is an hour: only the takeover itself can have run it.
        await wait_for(lambda: bool(on_second.calls), 30, "the new holder sweeping")
        assert len(on_second.calls) == 1
    finally:
        stop_first.set()
        stop_second.set()
        await asyncio.wait_for(running_first, 30)
        if running_second is not None:
            await asyncio.wait_for(running_second, 30)

"""A jobs process killed in the middle of a sweep loses and duplicates nothing when it restarts."""

from __future__ import annotations

import contextlib
import datetime as dt
import signal
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from models.clock import LOCAL_TZ, FixedClock
from models.identity_numbers import IdType
from models.orgs import OrgKind
from models.subjects import SubjectInput
from server.app import SYSTEM, build_services, open_vault
from server.config import Config
from tests.process_support import Launched, cli_environment, eventually, launched
from tests.subject_factories import resident_id

OCCURRENCES = 3000


def run_once(config: Config, now: str, log: Path) -> contextlib.AbstractContextManager[Launched]:
    """`python -m server jobs run-once close_windows --now <now>` on the test's database."""
    args = ["jobs", "run-once", "close_windows", "--now", now]
    return launched(args, cli_environment(config), log)


@pytest.mark.slow
async def test_killed_mid_sweep_then_rerun_marks_and_alerts_each_window_once(
    store, config, tmp_path
):
    start = dt.datetime(2026, 3, 2, 9, 0, tzinfo=LOCAL_TZ)
    vault = await open_vault(config, store, FixedClock(start))
    services = build_services(store, config, FixedClock(start), vault)
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
    # A backlog of windows that all closed before the sweep: what a long outage leaves.
    occurrences = store.database["occurrences"]
    ended = dt.datetime(2026, 3, 3, tzinfo=LOCAL_TZ).astimezone(dt.UTC)
    await occurrences.insert_many(
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
            for i in range(OCCURRENCES)
        ]
    )
    now = "2026-03-03T00:30:00+08:00"

    async def alerts_raised() -> int:
        return await store.database["alerts"].count_documents({})

    with run_once(config, now, tmp_path / "killed.log") as process:
        # Kill it once it is under way: some windows marked, not all alerts raised. However
        # long the start takes under load (the deadline is generous; the condition decides).
        await eventually(
            lambda: _more_than(alerts_raised, 50, process), 180, "the sweep raising alerts"
        )
        process.process.send_signal(signal.SIGKILL)
        assert await process.await_exit(30) == -signal.SIGKILL
    alerts_at_kill = await alerts_raised()
    assert 0 < alerts_at_kill < OCCURRENCES, "the kill did not land mid-sweep"

    with run_once(config, now, tmp_path / "finished.log") as finished:
        assert await finished.await_exit(300) == 0, finished.output

    missed = await occurrences.count_documents({"status": "missed"})
    assert missed == OCCURRENCES
    assert await occurrences.count_documents({"alert_pending": True}) == 0
    alert_keys = await store.database["alerts"].distinct(
        "dedupe_key", {"kind": "obligation_missed"}
    )
    assert len(alert_keys) == OCCURRENCES
    assert (
        await store.database["alerts"].count_documents({"kind": "obligation_missed"}) == OCCURRENCES
    )


async def _more_than(count: Callable[[], Awaitable[int]], floor: int, process: Launched) -> bool:
    if await count() > floor:
        return True
    assert process.running(), f"the sweep ended before it was killed:\n{process.output}"
    return False

"""The dashboard's kept check-in counts of settled days: equal to the windows counted afresh after
every writer of a past day's window, refused when a writer came first, put right by the nightly
recount when a crash left them wrong."""

from __future__ import annotations

import datetime as dt
from collections import Counter
from typing import Any

import pytest

from models.clock import LOCAL_TZ
from models.obligations import OccurrenceStatus
from models.policy import Role
from models.window_history import CHECKIN_KIND, DAYS, local_day
from server.app import SYSTEM
from tests.subject_factories import open_probation

pytestmark = pytest.mark.asyncio

SINCE = dt.date(2026, 9, 1)


def local(*args: int) -> dt.datetime:
    return dt.datetime(*args, tzinfo=LOCAL_TZ)


@pytest.fixture
async def month_of_windows(fetch, tree, make_staff, clock, services):
    """Two probationers since 1 October, one per station; it is Monday 2 November, 09:00, and
    the sweep has closed October's windows as missed."""
    clock.set(local(2026, 10, 1, 9, 0))
    for station, name in ((tree.station, "张三"), (tree.station2, "李四")):
        officer = await make_staff(Role.STATION_OFFICER, station)
        await open_probation(fetch, await make_staff.token_for(officer), station.id, name)
    clock.set(local(2026, 11, 2, 9, 0))
    await services.obligations.close_windows(clock.now())


def stations(tree: Any) -> list[list[str]]:
    return [list(tree.station.path), list(tree.station2.path)]


async def kept(services: Any, tree: Any) -> Counter[tuple[str, dt.date, str]]:
    """What the dashboard is told: station, day and status, from the kept counts."""
    counts = await services.obligations.checkin_history(tree.county.id, stations(tree), SINCE)
    return Counter({(c.station[-1], c.day, c.status): c.n for c in counts})


async def afresh(store: Any, clock: Any) -> Counter[tuple[str, dt.date, str]]:
    """The same counted from the windows themselves."""
    today = clock.now().astimezone(LOCAL_TZ).date()
    found: Counter[tuple[str, dt.date, str]] = Counter()
    async for window in store.database["occurrences"].find({"kind": CHECKIN_KIND}):
        day = local_day(window["window_end"])
        if SINCE <= day < today and window["window_end"] <= clock.now():
            found[(str(window["org_path"][2]), day, window["status"])] += 1
    return found


async def past_window(store: Any, day: dt.date, station: Any) -> dict[str, Any]:
    async for window in store.database["occurrences"].find(
        {"kind": CHECKIN_KIND, "org_path": station.id}
    ):
        if local_day(window["window_end"]) == day:
            return window
    raise AssertionError(f"no check-in window on {day}")


async def test_kept_counts_equal_the_windows_after_every_writer_of_a_past_day(
    month_of_windows, services, store, tree, clock
):
    first = await kept(services, tree)
    assert first == await afresh(store, clock)
    assert first[(tree.station.id, dt.date(2026, 10, 5), "missed")] == 1
    assert await store.database[DAYS.name].count_documents({}) > 0
    # Read again: the same, now from what was kept.
    assert await kept(services, tree) == first
    obligations = services.obligations

    # An officer excuses a missed day (sick leave).
    window = await past_window(store, dt.date(2026, 10, 5), tree.station)
    await obligations.excuse(SYSTEM, window["_id"], "病假")
    after_excuse = await kept(services, tree)
    assert after_excuse[(tree.station.id, dt.date(2026, 10, 5), "excused")] == 1
    assert after_excuse == await afresh(store, clock)

    # A check-in's write finished by its replay (late, on a closed window).
    window = await past_window(store, dt.date(2026, 10, 20), tree.station2)
    assert await obligations.apply_checkin(window["_id"], "c-1", OccurrenceStatus.LATE, False)
    after_replay = await kept(services, tree)
    assert after_replay[(tree.station2.id, dt.date(2026, 10, 20), "late")] == 1
    assert after_replay == await afresh(store, clock)

    # The station's review accepts a check-in over a window since marked missed.
    window = await past_window(store, dt.date(2026, 10, 21), tree.station2)
    await obligations.settle_review(window["_id"], "c-2", True, window["window_end"])
    assert await kept(services, tree) == await afresh(store, clock)

    # Days pass without the sweep: the windows read as still scheduled are kept so, then the
    # sweep marks them missed.
    clock.set(local(2026, 11, 5, 9, 0))
    before_sweep = await kept(services, tree)
    assert before_sweep[(tree.station.id, dt.date(2026, 11, 3), "scheduled")] == 1
    await obligations.close_windows(clock.now())
    after_sweep = await kept(services, tree)
    assert after_sweep[(tree.station.id, dt.date(2026, 11, 3), "missed")] == 1
    assert after_sweep == await afresh(store, clock)


async def test_yesterday_is_counted_but_not_kept_until_settled(
    month_of_windows, services, store, tree, clock
):
    # Five minutes past midnight a check-in that read its window as today's may still land.
    clock.set(local(2026, 11, 3, 0, 5))
    counts = await kept(services, tree)
    assert counts[(tree.station.id, dt.date(2026, 11, 2), "scheduled")] == 1
    month = await store.database[DAYS.name].find_one(
        {"org_path": tree.station.id, "month": "2026-11"}
    )
    assert "02" not in (month or {}).get("days", {})
    clock.set(local(2026, 11, 3, 0, 15))
    await kept(services, tree)
    month = await store.database[DAYS.name].find_one(
        {"org_path": tree.station.id, "month": "2026-11"}
    )
    assert month is not None and "02" in month["days"]


async def test_a_count_is_not_kept_when_a_writer_came_first(
    month_of_windows, services, store, tree, clock
):
    await kept(services, tree)
    days = store.database[DAYS.name]
    doc_id = f"{'/'.join(tree.station.path)}|2026-10"
    read = await days.find_one({"_id": doc_id})
    assert read is not None and "05" in read["days"]
    # A writer forgets 5 October after a reader read the month but before it kept its count.
    window = await past_window(store, dt.date(2026, 10, 5), tree.station)
    await services.obligations.excuse(SYSTEM, window["_id"], "病假")
    history = services.obligations._history
    await history._store(list(tree.station.path), "2026-10", read, {dt.date(2026, 10, 5): {}})
    month = await days.find_one({"_id": doc_id})
    assert month is not None and "05" not in month["days"]
    assert await kept(services, tree) == await afresh(store, clock)


async def test_the_nightly_recount_puts_right_what_a_crash_left_wrong(
    month_of_windows, services, store, tree, clock
):
    await kept(services, tree)
    # A window changed with no forgetting of its day (the process died in between).
    window = await past_window(store, dt.date(2026, 10, 7), tree.station)
    await store.database["occurrences"].update_one(
        {"_id": window["_id"]}, {"$set": {"status": "excused"}}
    )
    wrong = await kept(services, tree)
    assert wrong[(tree.station.id, dt.date(2026, 10, 7), "missed")] == 1
    assert wrong != await afresh(store, clock)
    result = await services.obligations.recount_history(stations(tree), SINCE)
    assert result["busy"] == 0 and result["replaced"] >= 1
    assert await kept(services, tree) == await afresh(store, clock)


async def today_afresh(store: Any, clock: Any, org_id: str) -> Counter[tuple[Any, str]]:
    """Today's windows under a node counted from the windows themselves, by station."""
    today = clock.now().astimezone(LOCAL_TZ).date()
    found: Counter[tuple[Any, str]] = Counter()
    async for window in store.database["occurrences"].find({"org_path": org_id}):
        if local_day(window["window_end"]) == today:
            found[(str(window["org_path"][2]), window["status"])] += 1
    return found


async def today_kept(services: Any, org_id: str) -> Counter[tuple[Any, str]]:
    windows, _ = await services.obligations.windows_today(org_id, 2)
    return Counter({(w["u"], w["st"]): w["n"] for w in windows})


async def test_todays_windows_follow_every_writer_after_the_first_read(
    month_of_windows, services, store, tree, clock
):
    county = tree.county.id
    first = await today_kept(services, county)
    assert first == await today_afresh(store, clock, county)
    assert first[(tree.station.id, "scheduled")] == 1
    obligations = services.obligations

    # A check-in meets today's window (the write the check-in's own batch makes).
    window = await past_window(store, dt.date(2026, 11, 2), tree.station)
    assert await obligations.apply_checkin(window["_id"], "c-1", OccurrenceStatus.DONE, False)
    kept_now = await today_kept(services, county)
    assert kept_now[(tree.station.id, "done")] == 1
    assert kept_now == await today_afresh(store, clock, county)

    # The other's is excused, a minute later.
    clock.set(local(2026, 11, 2, 9, 1))
    window = await past_window(store, dt.date(2026, 11, 2), tree.station2)
    await obligations.excuse(SYSTEM, window["_id"], "请假")
    kept_now = await today_kept(services, county)
    assert kept_now[(tree.station2.id, "excused")] == 1
    assert kept_now == await today_afresh(store, clock, county)

    # An hour on, with nothing changed, the figures stand; the next day they are read anew.
    clock.set(local(2026, 11, 2, 10, 1))
    assert await today_kept(services, county) == kept_now
    clock.set(local(2026, 11, 3, 9, 0))
    await obligations.close_windows(clock.now())
    next_day = await today_kept(services, county)
    assert next_day == await today_afresh(store, clock, county)
    assert next_day[(tree.station.id, "scheduled")] == 1

"""The dashboard's program figures kept per station: after every writer of a program they equal
the programs counted afresh, for the county and for each station."""

from __future__ import annotations

import datetime as dt
from collections import Counter
from typing import Any

import pytest

from models.clock import LOCAL_TZ
from models.policy import Role
from server.app import SYSTEM
from tests.subject_factories import open_probation

pytestmark = pytest.mark.asyncio

ENDED_SINCE = dt.date(2025, 11, 2)


def local(*args: int) -> dt.datetime:
    return dt.datetime(*args, tzinfo=LOCAL_TZ)


def tally(groups: list[dict[str, Any]]) -> Counter[tuple[Any, ...]]:
    return Counter(
        {
            (
                g["u"],
                g["type"],
                g["status"],
                g.get("level"),
                bool(g.get("overdue")),
                g["outcome"],
            ): g["n"]
            for g in groups
        }
    )


async def agree(services: Any, tree: Any, today: dt.date) -> dict[Any, int]:
    """The kept figures of the county equal the programs counted afresh; the people by station."""
    programs = services.programs
    stations = [list(tree.station.path), list(tree.station2.path)]
    groups, people = await programs.figures_by_station(
        tree.county.id, 2, stations, today, ENDED_SINCE
    )
    assert tally(groups) == tally(
        await programs.count_by_unit(tree.county.id, 2, today, ENDED_SINCE)
    )
    people = {k: v for k, v in people.items() if v}
    assert people == await programs.count_people(tree.county.id, 2)
    return people


async def test_kept_program_figures_follow_every_writer(fetch, tree, make_staff, clock, services):
    clock.set(local(2026, 10, 1, 9, 0))
    today = dt.date(2026, 10, 1)
    officer = await make_staff(Role.STATION_OFFICER, tree.station)
    token = await make_staff.token_for(officer)
    programs = services.programs
    assert await agree(services, tree, today) == {}

    ids = []
    for name in ("张三", "李四"):
        ids.append(await open_probation(fetch, token, tree.station.id, name))
        assert (await agree(services, tree, today))[tree.station.id] == len(ids)

    (first, first_program), (_, second_program) = ids
    await programs.record_intake(SYSTEM, first_program, today)
    await agree(services, tree, today)
    await programs.change_level(SYSTEM, first_program, "lenient", today, "表现良好")
    await agree(services, tree, today)
    # The intake deadline passes for the other: a new day counts it overdue.
    later = dt.date(2026, 10, 20)
    clock.set(local(2026, 10, 20, 9, 0))
    groups, _ = await programs.figures_by_station(
        tree.county.id, 2, [list(tree.station.path)], later, ENDED_SINCE
    )
    assert any(g.get("overdue") for g in groups)
    await agree(services, tree, later)
    # The first moves to the neighbouring station (执行地变更), the second's program ends.
    await programs.relocate(SYSTEM, first, tree.station2.id, list(tree.station2.path))
    people = await agree(services, tree, later)
    assert people == {tree.station.id: 1, tree.station2.id: 1}
    await programs.terminate(SYSTEM, second_program, "other", later)
    people = await agree(services, tree, later)
    assert people == {tree.station2.id: 1}

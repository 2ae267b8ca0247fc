"""Counseling sessions: bookings that never overlap, also under concurrent requests."""

from __future__ import annotations

import asyncio

import pytest

from models.policy import Role
from tests.subject_factories import subject_body

TOMORROW_9 = "2026-12-01T09:00:00+08:00"
TOMORROW_10 = "2026-12-01T10:00:00+08:00"
TOMORROW_11 = "2026-12-01T11:00:00+08:00"


@pytest.fixture
async def setup(fetch, tree, make_staff, clock):
    import datetime as dt

    clock.set(dt.datetime(2026, 11, 24, 12, 0, tzinfo=dt.UTC))
    officer = await make_staff(Role.STATION_OFFICER, tree.station)
    officer.token = await make_staff.token_for(officer)
    counselors = [await make_staff(Role.SOCIAL_WORKER, tree.station) for _ in range(2)]
    subjects = []
    for i in range(3):
        answer = await fetch(
            "/api/v1/subjects",
            "POST",
            token=officer.token,
            json_body=subject_body(tree.station.id, name=f"来访者{i}"),
        )
        subjects.append(answer.json["id"])
    return officer, counselors, subjects


async def book(fetch, officer, subject, counselor, start=TOMORROW_9, end=TOMORROW_10, room=None):
    body = {"counselor_id": counselor.id, "start": start, "end": end}
    if room:
        body["room"] = room
    return await fetch(
        f"/api/v1/subjects/{subject}/counseling", "POST", json_body=body, token=officer.token
    )


async def test_a_counselor_is_never_booked_twice_at_once(fetch, setup):
    officer, (counselor, _), subjects = setup
    assert (await book(fetch, officer, subjects[0], counselor)).status == 201
    overlap = await book(
        fetch,
        officer,
        subjects[1],
        counselor,
        start="2026-12-01T09:45:00+08:00",
        end="2026-12-01T10:30:00+08:00",
    )
    assert overlap.status == 409 and overlap.error["code"] == "double_booked"
    adjacent = await book(
        fetch, officer, subjects[1], counselor, start=TOMORROW_10, end=TOMORROW_11
    )
    assert adjacent.status == 201


async def test_a_room_is_never_booked_twice_at_once(fetch, setup):
    officer, (first, second), subjects = setup
    assert (await book(fetch, officer, subjects[0], first, room="谈话室1")).status == 201
    clash = await book(fetch, officer, subjects[1], second, room="谈话室1")
    assert clash.status == 409
    assert (await book(fetch, officer, subjects[1], second, room="谈话室2")).status == 201


async def test_concurrent_bookings_of_one_slot_yield_exactly_one(fetch, setup):
    officer, (counselor, _), subjects = setup
    answers = await asyncio.gather(
        *[book(fetch, officer, subjects[i % 3], counselor) for i in range(10)]
    )
    statuses = sorted(a.status for a in answers)
    assert statuses == [201] + [409] * 9


async def test_attendance_meets_the_obligation_and_cancelling_frees_the_slot(fetch, setup, clock):

    officer, (counselor, _), subjects = setup
    session = (await book(fetch, officer, subjects[0], counselor)).json
    listed = await fetch(
        f"/api/v1/subjects/{subjects[0]}/obligations?from=2026-12-01&to=2026-12-01&kind=counseling",
        token=officer.token,
    )
    assert [o["status"] for o in listed.json["items"]] == ["scheduled"]
    attended = await fetch(
        f"/api/v1/counseling/{session['id']}/attendance",
        "POST",
        json_body={"attended": True, "notes": "情绪稳定，愿意配合"},
        token=officer.token,
    )
    assert attended.status == 200 and attended.json["notes"] == "情绪稳定，愿意配合"
    listed = await fetch(
        f"/api/v1/subjects/{subjects[0]}/obligations?from=2026-12-01&to=2026-12-01&kind=counseling",
        token=officer.token,
    )
    assert [o["status"] for o in listed.json["items"]] == ["done"]
    other = (
        await book(fetch, officer, subjects[1], counselor, start=TOMORROW_10, end=TOMORROW_11)
    ).json
    cancelled = await fetch(f"/api/v1/counseling/{other['id']}/cancel", "POST", token=officer.token)
    assert cancelled.json["status"] == "cancelled"
    assert (
        await book(fetch, officer, subjects[2], counselor, start=TOMORROW_10, end=TOMORROW_11)
    ).status == 201


@pytest.mark.parametrize(
    ("start", "end"),
    [
        ("2026-12-01T09:10:00+08:00", "2026-12-01T10:00:00+08:00"),  # not on a quarter hour
        ("2026-12-01T10:00:00+08:00", "2026-12-01T09:00:00+08:00"),  # ends before it starts
        ("2026-12-01T09:00:00+08:00", "2026-12-01T14:00:00+08:00"),  # longer than 4 hours
        ("2026-11-20T09:00:00+08:00", "2026-11-20T10:00:00+08:00"),  # in the past
    ],
)
async def test_impossible_times_are_refused(fetch, setup, start, end):
    officer, (counselor, _), subjects = setup
    answer = await book(fetch, officer, subjects[0], counselor, start=start, end=end)
    assert answer.status == 422


async def test_a_time_without_offset_is_refused(fetch, setup):
    officer, (counselor, _), subjects = setup
    answer = await book(
        fetch,
        officer,
        subjects[0],
        counselor,
        start="2026-12-01T09:00:00",
        end="2026-12-01T10:00:00",
    )
    assert answer.status == 422
    assert answer.error["details"][0]["field"] == "start"

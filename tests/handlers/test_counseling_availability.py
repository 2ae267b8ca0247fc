"""The free counsellors, rooms and slots of a day; a person's sessions; the assistance directory
and a person's referrals (the reads the console's booking and referral forms are built on)."""

from __future__ import annotations

import datetime as dt

import pytest

from models.assistance import ResourceKind
from models.audit import AuditContext
from models.policy import Role
from tests.subject_factories import subject_body

DAY = "2026-12-01"


@pytest.fixture
async def setup(fetch, tree, make_staff, clock):
    clock.set(dt.datetime(2026, 11, 24, 12, 0, tzinfo=dt.UTC))
    officer = await make_staff(Role.STATION_OFFICER, tree.station)
    officer.token = await make_staff.token_for(officer)
    counselor = await make_staff(Role.SOCIAL_WORKER, tree.station)
    far_away = await make_staff(Role.SOCIAL_WORKER, tree.other_station)
    answer = await fetch(
        "/api/v1/subjects",
        "POST",
        token=officer.token,
        json_body=subject_body(tree.station.id, name="来访者"),
    )
    return officer, counselor, far_away, answer.json["id"]


async def availability(fetch, token, subject_id, minutes="60", day=DAY):
    return await fetch(
        f"/api/v1/counseling/availability?subject_id={subject_id}&date={day}&minutes={minutes}",
        token=token,
    )


async def test_counsellors_are_named_and_only_free_starts_are_offered(fetch, setup, services):
    officer, counselor, far_away, sid = setup
    before = await availability(fetch, officer.token, sid)
    assert before.status == 200
    offered = {c["id"]: c for c in before.json["counselors"]}
    # By name, in the caller's station only; the officer may counsel too.
    assert offered[counselor.id]["name"] == (await services.staff.me(counselor.identity)).name
    assert officer.id in offered and far_away.id not in offered
    free = offered[counselor.id]["free"]
    assert free[0] == "2026-12-01T00:00:00Z"  # 08:00 local
    assert free[-1] == "2026-12-01T09:00:00Z"  # 17:00 local: an hour still fits before 18:00
    booked = await fetch(
        f"/api/v1/subjects/{sid}/counseling",
        "POST",
        token=officer.token,
        json_body={
            "counselor_id": counselor.id,
            "start": "2026-12-01T09:00:00+08:00",
            "end": "2026-12-01T10:00:00+08:00",
            "room": "谈话室1",
        },
    )
    assert booked.status == 201
    after = await availability(fetch, officer.token, sid)
    mine = next(c for c in after.json["counselors"] if c["id"] == counselor.id)
    # 08:15 would run into the 09:00 session; 10:00 is free again.
    assert "2026-12-01T00:00:00Z" in mine["free"]
    assert "2026-12-01T00:15:00Z" not in mine["free"]
    assert "2026-12-01T01:00:00Z" not in mine["free"]
    assert "2026-12-01T01:45:00Z" not in mine["free"]
    assert "2026-12-01T02:00:00Z" in mine["free"]
    # The room named once is offered from then on, busy at the same hour.
    (room,) = after.json["rooms"]
    assert room["name"] == "谈话室1" and room["id"] is None
    assert "2026-12-01T01:00:00Z" not in room["free"] and "2026-12-01T02:00:00Z" in room["free"]
    # Cancelled: the slots are offered again, and the booking is listed as cancelled.
    session_id = booked.json["id"]
    assert (
        await fetch(f"/api/v1/counseling/{session_id}/cancel", "POST", token=officer.token)
    ).status == 200
    again = await availability(fetch, officer.token, sid)
    mine = next(c for c in again.json["counselors"] if c["id"] == counselor.id)
    assert "2026-12-01T01:00:00Z" in mine["free"]
    listed = await fetch(f"/api/v1/subjects/{sid}/counseling", token=officer.token)
    assert listed.status == 200
    assert [(s["id"], s["status"]) for s in listed.json["items"]] == [(session_id, "cancelled")]


async def test_past_starts_are_not_offered_and_lengths_are_checked(fetch, setup, clock, make_staff):
    officer, _, _, sid = setup
    clock.set(dt.datetime(2026, 12, 1, 4, 0, tzinfo=dt.UTC))  # 12:00 local on the day
    officer.token = await make_staff.token_for(officer)
    today = await availability(fetch, officer.token, sid)
    first = today.json["counselors"][0]["free"][0]
    assert first == "2026-12-01T04:15:00Z"
    short = await availability(fetch, officer.token, sid, minutes="240")
    assert short.json["counselors"][0]["free"][-1] == "2026-12-01T06:00:00Z"
    wrong = await availability(fetch, officer.token, sid, minutes="50")
    assert wrong.status == 422 and wrong.error["details"][0]["field"] == "minutes"
    no_day = await fetch(f"/api/v1/counseling/availability?subject_id={sid}", token=officer.token)
    assert no_day.status == 422 and no_day.error["details"][0]["field"] == "date"


async def test_a_social_worker_sees_only_files_assigned_to_them(fetch, setup, make_staff, tree):
    officer, counselor, _, sid = setup
    counselor.token = await make_staff.token_for(counselor)
    assert (await availability(fetch, counselor.token, sid)).status == 404
    assert (await fetch(f"/api/v1/subjects/{sid}/counseling", token=counselor.token)).status == 404
    await fetch(
        f"/api/v1/subjects/{sid}/assignments",
        "PUT",
        token=officer.token,
        json_body={"social_worker_ids": [counselor.id]},
    )
    assert (await availability(fetch, counselor.token, sid)).status == 200
    grid = await make_staff(Role.GRID_WORKER, tree.community)
    grid.token = await make_staff.token_for(grid)
    assert (await availability(fetch, grid.token, sid)).status == 403


async def test_the_directory_lists_the_countys_resources_for_referrers(
    fetch, setup, tree, make_staff, services
):
    officer, counselor, _, sid = setup
    county = await make_staff(Role.COUNTY_OFFICER, tree.county)
    ctx = AuditContext(county.identity, "test")
    home = await services.assistance.add_resource(
        ctx, kind=ResourceKind.SUNSHINE_HOME, name="城东阳光之家", org_id=tree.county.id, capacity=1
    )
    course = await services.assistance.add_resource(
        ctx,
        kind=ResourceKind.COURSE,
        name="电工培训",
        org_id=tree.county.id,
        capacity=10,
        hours_credit=2,
    )
    elsewhere = await make_staff(Role.COUNTY_OFFICER, tree.other_county)
    await services.assistance.add_resource(
        AuditContext(elsewhere.identity, "test"),
        kind=ResourceKind.SUNSHINE_HOME,
        name="外县阳光之家",
        org_id=tree.other_county.id,
        capacity=1,
    )
    counselor.token = await make_staff.token_for(counselor)
    for token in (officer.token, counselor.token):
        listed = await fetch("/api/v1/assistance/directory", token=token)
        assert listed.status == 200
        assert [r["name"] for r in listed.json["items"]] == ["电工培训", "城东阳光之家"]
    homes = await fetch("/api/v1/assistance/directory?kind=sunshine_home", token=officer.token)
    assert [r["id"] for r in homes.json["items"]] == [home.id]
    await services.assistance.set_active(ctx, course.id, False)
    open_only = await fetch("/api/v1/assistance/directory?open=1", token=officer.token)
    assert [r["id"] for r in open_only.json["items"]] == [home.id]
    # A person's referrals: only theirs.
    other = await fetch(
        "/api/v1/subjects",
        "POST",
        token=officer.token,
        json_body=subject_body(tree.station.id, name="另一人"),
    )
    for subject_id in (sid, other.json["id"]):
        made = await fetch(
            "/api/v1/assistance/referrals",
            "POST",
            token=officer.token,
            json_body={"subject_id": subject_id, "needs": ["housing"], "resource_id": home.id},
        )
        assert made.status == 201
    mine = await fetch(f"/api/v1/assistance/referrals?subject_id={sid}", token=officer.token)
    assert [r["subject_id"] for r in mine.json["items"]] == [sid]
    grid = await make_staff(Role.GRID_WORKER, tree.community)
    grid.token = await make_staff.token_for(grid)
    assert (await fetch("/api/v1/assistance/directory", token=grid.token)).status == 403

"""Reading the needs assessed on a case file through the API: none yet is 404, the latest
assessment comes back with who made it and when, and only those who may assess or refer the
person read it (an unassigned social worker gets 404, a grid worker 403)."""

from __future__ import annotations

import datetime as dt

import pytest

from models.clock import LOCAL_TZ
from models.policy import Role
from tests.subject_factories import subject_body


@pytest.fixture
async def needs_desk(fetch, make_staff, tree, clock):
    """A station officer, the person's assigned social worker, another social worker and a
    grid worker of the station, and one case file."""
    clock.set(dt.datetime(2026, 11, 2, 9, 0, tzinfo=LOCAL_TZ))
    people = {
        "officer": await make_staff(Role.STATION_OFFICER, tree.station),
        "social": await make_staff(Role.SOCIAL_WORKER, tree.station),
        "stranger": await make_staff(Role.SOCIAL_WORKER, tree.station),
        "grid": await make_staff(Role.GRID_WORKER, tree.grid),
    }
    tokens = {k: await make_staff.token_for(v) for k, v in people.items()}
    created = await fetch(
        "/api/v1/subjects",
        "POST",
        json_body=subject_body(tree.station.id, name="赵明"),
        token=tokens["officer"],
    )
    sid = created.json["id"]
    assigned = await fetch(
        f"/api/v1/subjects/{sid}/assignments",
        "PUT",
        json_body={"social_worker_ids": [people["social"].id]},
        token=tokens["officer"],
    )
    assert assigned.status == 200, assigned.body
    return {"people": people, "tokens": tokens, "subject_id": sid, "make_staff": make_staff}


async def test_the_latest_assessment_is_read_with_who_made_it_and_when(needs_desk, fetch, clock):
    sid, tokens, people = needs_desk["subject_id"], needs_desk["tokens"], needs_desk["people"]
    none_yet = await fetch(f"/api/v1/subjects/{sid}/needs", token=tokens["social"])
    assert none_yet.status == 404
    assert none_yet.json["error"]["code"] == "not_found"

    first = await fetch(
        f"/api/v1/subjects/{sid}/needs",
        "PUT",
        json_body={"housing": True, "employment": True, "income": True},
        token=tokens["officer"],
    )
    assert first.status == 200, first.body
    clock.set(dt.datetime(2026, 11, 5, 14, 30, tzinfo=LOCAL_TZ))
    for who in ("officer", "social"):
        tokens[who] = await needs_desk_token(needs_desk, who)
    second = await fetch(
        f"/api/v1/subjects/{sid}/needs",
        "PUT",
        json_body={"housing": True, "training": True},
        token=tokens["social"],
    )
    assert second.status == 200, second.body

    read = await fetch(f"/api/v1/subjects/{sid}/needs", token=tokens["officer"])
    assert read.status == 200, read.body
    assert read.json["needs"] == {
        "housing": True,
        "food": False,
        "income": False,
        "employment": False,
        "training": True,
        "legal": False,
        "benefits": False,
    }
    assert read.json["three_nos"] is False  # the latest, not the first (三无 then)
    assert read.json["assessed_by"] == people["social"].id
    worker = await fetch(f"/api/v1/staff/{people['social'].id}", token=tokens["officer"])
    assert read.json["assessed_by_name"] == worker.json["name"]
    assessed = dt.datetime.fromisoformat(read.json["assessed_at"])
    assert assessed == dt.datetime(2026, 11, 5, 14, 30, tzinfo=LOCAL_TZ)


async def test_only_who_may_assess_or_refer_reads_the_needs(needs_desk, fetch):
    sid, tokens = needs_desk["subject_id"], needs_desk["tokens"]
    saved = await fetch(
        f"/api/v1/subjects/{sid}/needs",
        "PUT",
        json_body={"food": True},
        token=tokens["officer"],
    )
    assert saved.status == 200, saved.body
    mine = await fetch(f"/api/v1/subjects/{sid}/needs", token=tokens["social"])
    assert mine.status == 200 and mine.json["needs"]["food"] is True
    # Another social worker of the station is not assigned: the file is not there for them.
    stranger = await fetch(f"/api/v1/subjects/{sid}/needs", token=tokens["stranger"])
    assert stranger.status == 404
    grid = await fetch(f"/api/v1/subjects/{sid}/needs", token=tokens["grid"])
    assert grid.status == 403


async def needs_desk_token(needs_desk: dict, who: str) -> str:
    """A fresh token after the clock moved (sessions expire with it)."""
    make_staff = needs_desk["make_staff"]
    return await make_staff.token_for(needs_desk["people"][who])

"""Each person's check-in state equals one rebuilt from its sources after every writer of those
sources: the check-in itself, a program's change, a leave decision, an e-location order, a move
to another station and a key rotation; shredding leaves no state (and no copy of the key)."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

from models.audit import AuditContext
from models.checkin_state import STATES, CheckinStates
from models.policy import Role
from server.app import SYSTEM
from tests.mp_support import STATION_CENTRE, Supervised, local

pytestmark = pytest.mark.asyncio


def comparable(state: dict[str, Any] | None) -> dict[str, Any]:
    """What a check-in decides on, in a stable order (not when or how often it was built)."""
    assert state is not None
    return {
        "subject": state["subject"],
        "key": state.get("key"),
        "windows": sorted(state["windows"], key=lambda w: w["_id"]),
        "leave": sorted(state["leave"], key=lambda d: str(d["_id"])),
        "elocation": sorted(state["elocation"], key=lambda d: str(d["_id"])),
        "recent": state["recent"],
        "photos": state.get("photos"),
    }


async def assert_in_step(services: Any, subject_id: str) -> dict[str, Any]:
    in_use = comparable(await services.checkins.state_in_use(subject_id))
    assert in_use == comparable(await services.checkins.state_from_sources(subject_id))
    return in_use


async def check_in(supervised: Supervised, clock: Any) -> None:
    answer = await supervised.client.check_in(
        lat=STATION_CENTRE.lat, lng=STATION_CENTRE.lng, coord_type="wgs84", captured_at=clock.now()
    )
    assert answer.status == 201, answer.body


def officer_context(account: Any) -> AuditContext:
    return AuditContext(account.identity, request_id="contract-test")


async def test_the_state_follows_check_ins_and_program_changes(supervised, services, clock, fetch):
    sid = supervised.subject_id
    clock.set(local(2026, 11, 2, 9, 0))
    first = await assert_in_step(services, sid)
    assert first["recent"] == [] and first["key"] is not None
    today = [w for w in first["windows"] if w["window_start"] <= clock.now() < w["window_end"]]
    assert len(today) == 1
    # Two check-ins: each carried into the state by its own batch, newest first.
    await check_in(supervised, clock)
    clock.advance(dt.timedelta(minutes=5))
    await check_in(supervised, clock)
    after = await assert_in_step(services, sid)
    assert len(after["recent"]) == 2
    assert after["recent"][0]["arrived_at"] > after["recent"][1]["arrived_at"]
    # A change of supervision level replans what lies ahead.
    (program,) = [p async for p in services.programs.programs_of(sid)]
    changed = await fetch(
        f"/api/v1/programs/{program['_id']}/supervision-level",
        "POST",
        json_body={"level": "lenient", "from_date": "2026-11-03", "reason": "表现良好"},
        token=await supervised.officer_token(),
    )
    assert changed.status == 200, changed.body
    await assert_in_step(services, sid)
    # The program ends: no check-in windows ahead any more.
    suspended = await fetch(
        f"/api/v1/programs/{program['_id']}/transition",
        "POST",
        json_body={"to": "ended", "reason": "撤销缓刑，收监执行", "effective_date": "2026-11-02"},
        token=await supervised.officer_token(),
    )
    assert suspended.status == 200, suspended.body
    paused = await assert_in_step(services, sid)
    assert not [w for w in paused["windows"] if w["window_start"] > clock.now()]


async def test_the_state_follows_leave_and_e_location_decisions(
    supervised, services, clock, fetch, tree, make_staff
):
    sid = supervised.subject_id
    clock.set(local(2026, 11, 2, 9, 0))
    await assert_in_step(services, sid)
    officer = await supervised.officer_token()
    asked = await fetch(
        f"/api/v1/subjects/{sid}/leave-requests",
        "POST",
        json_body={
            "start_date": "2026-11-03",
            "end_date": "2026-11-05",
            "destination": "浙江省杭州市西湖区",
            "reason": "探望住院的母亲",
        },
        token=officer,
    )
    assert asked.status == 201, asked.body
    decided = await fetch(
        f"/api/v1/leave-requests/{asked.json['id']}/decision",
        "POST",
        json_body={"approve": True, "comment": "同意"},
        token=officer,
    )
    assert decided.status == 200 and decided.json["status"] == "approved", decided.body
    granted = await assert_in_step(services, sid)
    assert [leave["start_date"] for leave in granted["leave"]] == ["2026-11-03"]
    # The return (销假) ends it for the check-in area.
    clock.set(local(2026, 11, 4, 9, 0))
    returned = await fetch(
        f"/api/v1/leave-requests/{asked.json['id']}/return",
        "POST",
        json_body={"date": "2026-11-04"},
        token=await supervised.officer_token(),
    )
    assert returned.status == 200, returned.body
    assert (await assert_in_step(services, sid))["leave"] == []
    # An e-location order (电子定位) decided by the county's agency head.
    ordered = await fetch(
        f"/api/v1/subjects/{sid}/elocation-orders",
        "POST",
        json_body={
            "ground": "left_without_approval",
            "start_date": "2026-11-05",
            "end_date": "2026-12-04",
            "reason": "无正当理由离开所居住的县",
        },
        token=await supervised.officer_token(),
    )
    assert ordered.status == 201, ordered.body
    head = await make_staff(Role.COUNTY_OFFICER, tree.county, is_agency_head=True)
    approved = await fetch(
        f"/api/v1/elocation-orders/{ordered.json['id']}/decision",
        "POST",
        json_body={"approve": True, "comment": "审批"},
        token=await make_staff.token_for(head),
    )
    assert approved.status == 200 and approved.json["status"] == "approved", approved.body
    in_force = await assert_in_step(services, sid)
    assert [order["start_date"] for order in in_force["elocation"]] == ["2026-11-05"]


async def test_a_move_and_a_key_rotation_reach_the_state_and_shredding_removes_it(
    supervised, services, clock, store, tree, make_staff
):
    sid = supervised.subject_id
    clock.set(local(2026, 11, 2, 9, 0))
    await check_in(supervised, clock)
    before = await assert_in_step(services, sid)
    county = await make_staff(Role.COUNTY_OFFICER, tree.county)
    await services.subjects.move(officer_context(county), sid, tree.station2.id)
    moved = await assert_in_step(services, sid)
    assert moved["subject"]["org_path"] != before["subject"]["org_path"]
    new_key = await services.subjects.rotate_data_key(SYSTEM, sid)
    rotated = await assert_in_step(services, sid)
    assert rotated["subject"]["dek_id"] == new_key
    assert rotated["key"]["_id"] == new_key
    await services.subjects.shred(SYSTEM, sid)
    assert await store.database[STATES.name].find_one({"_id": sid}) is None


async def test_a_state_built_while_a_source_changed_is_not_kept(supervised, services, clock, store):
    """A build that read its sources before a writer's mark is refused, whether or not a state
    was stored when it began; the next check-in builds it again."""
    sid = supervised.subject_id
    clock.set(local(2026, 11, 2, 9, 0))
    states = CheckinStates(store)
    await assert_in_step(services, sid)
    for stored_first in (True, False):
        if not stored_first:
            await states.forget(sid)
        read = await states.read(sid)
        assert (read is not None) is stored_first
        built = await services.checkins.state_from_sources(sid)
        assert built is not None
        await states.stale([sid])  # a writer changed a source meanwhile
        assert not await states.keep(sid, read, built)
        assert not states.usable(await states.read(sid), clock.now())
    # Nothing in between: kept.
    read = await states.read(sid)
    built = await services.checkins.state_from_sources(sid)
    assert built is not None and await states.keep(sid, read, built)
    assert states.usable(await states.read(sid), clock.now())

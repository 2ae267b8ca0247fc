"""The queues behind the console's queues page, through the real HTTP stack: transfers the
receiving side is to accept, 调查评估 the county is to assign, and stays ending that the county
may extend, each with the person's name, the deadline and the statutory basis."""

from __future__ import annotations

import datetime as dt

from models.clock import LOCAL_TZ
from models.policy import Role
from tests.subject_factories import subject_body


def local(*args: int) -> dt.datetime:
    return dt.datetime(*args, tzinfo=LOCAL_TZ)


async def new_person(fetch, token: str, org_id: str, name: str) -> str:
    created = await fetch(
        "/api/v1/subjects", "POST", token=token, json_body=subject_body(org_id, name=name)
    )
    assert created.status == 201, created.body
    return str(created.json["id"])


async def test_a_transfer_waits_for_the_receiving_station(fetch, tree, make_staff, clock):
    clock.set(local(2026, 11, 2, 9, 0))
    sending = await make_staff(Role.STATION_OFFICER, tree.station)
    receiving = await make_staff(Role.STATION_OFFICER, tree.station2)
    send_token = await make_staff.token_for(sending)
    subject_id = await new_person(fetch, send_token, tree.station.id, "王五")
    requested = await fetch(
        f"/api/v1/subjects/{subject_id}/transfers",
        "POST",
        token=send_token,
        json_body={"to_org_id": tree.station2.id, "reason": "居所变更"},
    )
    assert requested.status == 201, requested.body
    queue = await fetch(
        "/api/v1/transfers?status=requested", token=await make_staff.token_for(receiving)
    )
    assert queue.status == 200, queue.body
    (item,) = queue.json["items"]
    assert item["id"] == requested.json["id"]
    # The receiving station may not read the file yet: the name is the caller's to see or not.
    assert item["subject_name"] in ("王五", None)
    assert (item["from_org_name"], item["to_org_name"]) == (tree.station.name, tree.station2.name)
    assert item["basis"] == "社区矫正法第二十七条、社区矫正法实施办法第三十条"
    # The sending side has nothing to answer.
    mine = await fetch("/api/v1/transfers?status=requested", token=send_token)
    assert mine.json["items"] == []
    assert (await fetch("/api/v1/transfers", token=send_token)).status == 422


async def test_an_investigation_waits_for_the_county_with_its_deadline(
    fetch, tree, make_staff, clock
):
    clock.set(local(2026, 11, 2, 9, 0))
    county = await make_staff(Role.COUNTY_OFFICER, tree.county)
    station = await make_staff(Role.STATION_OFFICER, tree.station)
    token = await make_staff.token_for(county)
    subject_id = await new_person(
        fetch, await make_staff.token_for(station), tree.station.id, "赵六"
    )
    recorded = await fetch(
        "/api/v1/investigations",
        "POST",
        token=token,
        json_body={
            "subject_id": subject_id,
            "court": "鹿城区人民法院",
            "requested_on": "2026-11-02",
        },
    )
    assert recorded.status == 201, recorded.body
    queue = await fetch("/api/v1/investigations?status=requested", token=token)
    assert queue.status == 200, queue.body
    (item,) = queue.json["items"]
    assert item["subject_name"] == "赵六"
    assert item["deadline"] == recorded.json["due"]
    assert item["basis"] == "社区矫正法实施办法第十四条"
    # Once assigned, it is no longer the county's to assign; a station assigns none.
    assigned = await fetch(
        f"/api/v1/investigations/{recorded.json['id']}/assign",
        "POST",
        token=token,
        json_body={"station_id": tree.station.id},
    )
    assert assigned.status == 200, assigned.body
    assert (await fetch("/api/v1/investigations?status=requested", token=token)).json["items"] == []


async def test_a_stay_ending_waits_for_the_county(fetch, tree, make_staff, clock):
    clock.set(local(2026, 11, 2, 9, 0))
    county = await make_staff(Role.COUNTY_OFFICER, tree.county)
    station = await make_staff(Role.STATION_OFFICER, tree.station)
    coordinator = await make_staff(Role.ASSISTANCE_COORDINATOR, tree.station)

    async def call(who, path, method="GET", body=None):
        return await fetch(path, method, json_body=body, token=await make_staff.token_for(who))

    home = await call(
        county,
        "/api/v1/assistance/facilities",
        "POST",
        {
            "name": "鹿城阳光之家",
            "kind": "sunshine_home",
            "org_id": tree.county.id,
            "capacity": 2,
            "coordinator_ids": [coordinator.id],
            "max_stay_days": 30,
        },
    )
    assert home.status == 201, home.body
    subject_id = await new_person(
        fetch, await make_staff.token_for(station), tree.station.id, "孙七"
    )
    referral = await call(
        station,
        "/api/v1/assistance/referrals",
        "POST",
        {"subject_id": subject_id, "needs": ["housing"], "resource_id": home.json["id"]},
    )
    assert referral.status == 201, referral.body
    rid = referral.json["id"]
    for step in ({"to": "approved"}, {"to": "offered", "resource_id": home.json["id"]}):
        moved = await call(station, f"/api/v1/assistance/referrals/{rid}/transition", "POST", step)
        assert moved.status == 200, moved.body
    moved = await call(
        station, f"/api/v1/assistance/referrals/{rid}/transition", "POST", {"to": "accepted"}
    )
    assert moved.status == 200, moved.body
    placed = await call(
        coordinator,
        "/api/v1/assistance/placements",
        "POST",
        {"referral_id": rid, "resource_id": home.json["id"]},
    )
    assert placed.status == 201, placed.body
    queue = "/api/v1/assistance/stays?status=ending"
    assert (await call(county, queue)).json["items"] == []  # a month away
    clock.advance(dt.timedelta(days=17))
    (item,) = (await call(county, queue)).json["items"]
    assert item["subject_name"] == "孙七" and item["resource_name"] == "鹿城阳光之家"
    assert item["deadline"] == placed.json["stay_until"]
    assert "90" in item["basis"] and "180" in item["basis"]  # the rules' limits
    # Extending a stay is the county's: the station has no such queue.
    assert (await call(station, queue)).status == 403

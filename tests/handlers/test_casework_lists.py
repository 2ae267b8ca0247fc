"""What the console found missing in the API: a person's e-location orders and leave on the
file, a visit's place (sealed), staff named in the access log and people named on the leave
and sanction queues (masked as the reader's role requires)."""

from __future__ import annotations

import datetime as dt

import bson
import pytest

from models.clock import LOCAL_TZ
from models.policy import Role
from tests.subject_factories import subject_body

CORRECTIONS = {
    "type": "community_corrections",
    "start_date": "2026-03-02",
    "end_date": "2027-03-01",
    "sentence_type": "probation",
}


def local(*args: int) -> dt.datetime:
    return dt.datetime(*args, tzinfo=LOCAL_TZ)


@pytest.fixture
async def team(tree, make_staff, clock):
    clock.set(local(2026, 3, 2, 9, 0))
    accounts = {
        "station": await make_staff(Role.STATION_OFFICER, tree.station),
        "worker": await make_staff(Role.SOCIAL_WORKER, tree.station),
        "other_worker": await make_staff(Role.SOCIAL_WORKER, tree.station),
        "county": await make_staff(Role.COUNTY_OFFICER, tree.county),
        "head": await make_staff(Role.COUNTY_OFFICER, tree.county, is_agency_head=True),
        "elsewhere": await make_staff(Role.STATION_OFFICER, tree.other_station),
    }
    for account in accounts.values():
        account.token = await make_staff.token_for(account)
    return accounts


async def open_case(fetch, tree, team, name="吴刚", birth=dt.date(1990, 3, 7)):
    created = await fetch(
        "/api/v1/subjects",
        "POST",
        token=team["station"].token,
        json_body=subject_body(tree.station.id, name=name, birth=birth),
    )
    assert created.status == 201, created.body
    sid = created.json["id"]
    assigned = await fetch(
        f"/api/v1/subjects/{sid}/assignments",
        "PUT",
        token=team["station"].token,
        json_body={"social_worker_ids": [team["worker"].id]},
    )
    assert assigned.status == 200, assigned.body
    opened = await fetch(
        f"/api/v1/subjects/{sid}/programs",
        "POST",
        token=team["station"].token,
        json_body=CORRECTIONS,
    )
    assert opened.status == 201, opened.body
    return sid


async def test_a_persons_orders_are_listed_in_force_then_ended_with_their_renewal(
    fetch, tree, team, services
):
    sid = await open_case(fetch, tree, team)
    asked = await fetch(
        f"/api/v1/subjects/{sid}/elocation-orders",
        "POST",
        token=team["station"].token,
        json_body={
            "ground": "revocation_pending",
            "start_date": "2026-03-02",
            "end_date": "2026-04-30",
            "reason": "拟提请撤销缓刑",
        },
    )
    assert asked.status == 201, asked.body
    first = asked.json["id"]
    approved = await fetch(
        f"/api/v1/elocation-orders/{first}/decision",
        "POST",
        token=team["head"].token,
        json_body={"approve": True, "comment": "同意"},
    )
    assert approved.json["status"] == "approved"
    [listed] = (
        await fetch(f"/api/v1/subjects/{sid}/elocation-orders", token=team["station"].token)
    ).json["items"]
    assert (listed["id"], listed["status"], listed["in_force"]) == (first, "approved", True)
    assert (listed["start_date"], listed["end_date"], listed["renewed_by"]) == (
        "2026-03-02",
        "2026-04-30",
        None,
    )
    renewal = await fetch(
        f"/api/v1/elocation-orders/{first}/renewals",
        "POST",
        token=team["station"].token,
        json_body={"end_date": "2026-06-30", "reason": "仍需定位"},
    )
    assert renewal.status == 201, renewal.body
    # The sweep of 1 May ends the first order; the renewal still waits for the head.
    assert await services.elocation.end_expired_orders(dt.date(2026, 5, 1)) == 1
    answer = await fetch(f"/api/v1/subjects/{sid}/elocation-orders", token=team["county"].token)
    assert answer.status == 200, answer.body
    newest, oldest = answer.json["items"]
    assert (newest["id"], newest["status"], newest["renews"]) == (
        renewal.json["id"],
        "pending",
        first,
    )
    assert (newest["start_date"], newest["end_date"]) == ("2026-05-01", "2026-06-30")
    assert (oldest["id"], oldest["status"], oldest["in_force"]) == (first, "ended", False)
    assert (oldest["ended_on"], oldest["renewed_by"]) == ("2026-05-01", renewal.json["id"])
    # A social worker reads no orders; another station's officer does not find the file.
    refused = await fetch(f"/api/v1/subjects/{sid}/elocation-orders", token=team["worker"].token)
    assert refused.status == 403
    hidden = await fetch(f"/api/v1/subjects/{sid}/elocation-orders", token=team["elsewhere"].token)
    assert hidden.status == 404


async def test_a_visits_place_is_its_own_field_sealed_like_the_note(fetch, tree, team, store):
    sid = await open_case(fetch, tree, team)
    recorded = await fetch(
        f"/api/v1/subjects/{sid}/visits",
        "POST",
        token=team["worker"].token,
        json_body={"kind": "talk", "note": "了解近况", "place": " 社区服务中心  二楼 "},
    )
    assert recorded.status == 201, recorded.body
    [visit] = (await fetch(f"/api/v1/subjects/{sid}/visits", token=team["worker"].token)).json[
        "items"
    ]
    assert (visit["place"], visit["note"]) == ("社区服务中心 二楼", "了解近况")
    raw = await store.database["visits"].find_one({"subject_id": sid})
    assert "社区服务中心".encode() not in bson.encode(raw)
    # No place is fine (the mini-program sends none); a blank one is named, nothing saved.
    bare = await fetch(
        f"/api/v1/subjects/{sid}/visits",
        "POST",
        token=team["worker"].token,
        json_body={"kind": "visit", "note": "上门走访"},
    )
    assert bare.status == 201, bare.body
    blank = await fetch(
        f"/api/v1/subjects/{sid}/visits",
        "POST",
        token=team["worker"].token,
        json_body={"kind": "visit", "note": "上门走访", "place": "   "},
    )
    assert blank.status == 422
    assert blank.error["details"][0]["field"] == "place"
    listed = (await fetch(f"/api/v1/subjects/{sid}/visits", token=team["station"].token)).json
    assert {v["note"]: v["place"] for v in listed["items"]} == {
        "了解近况": "社区服务中心 二楼",
        "上门走访": None,
    }


async def test_the_files_leave_is_read_by_the_assigned_worker_who_records_the_return(
    fetch, tree, team
):
    sid = await open_case(fetch, tree, team)
    filed = []
    for start, end in (("2026-03-02", "2026-03-03"), ("2026-03-20", "2026-03-21")):
        answer = await fetch(
            f"/api/v1/subjects/{sid}/leave-requests",
            "POST",
            token=team["worker"].token,
            json_body={
                "start_date": start,
                "end_date": end,
                "destination": "杭州",
                "reason": "探亲",
            },
        )
        assert answer.status == 201, answer.body
        filed.append(answer.json["id"])
    granted = await fetch(
        f"/api/v1/leave-requests/{filed[0]}/decision",
        "POST",
        token=team["station"].token,
        json_body={"approve": True, "comment": "同意"},
    )
    assert granted.json["status"] == "approved"
    # The node's queue is the officers'; the file's leave is the assigned worker's too.
    assert (await fetch("/api/v1/leave-requests", token=team["worker"].token)).status == 403
    mine = await fetch(f"/api/v1/subjects/{sid}/leave-requests", token=team["worker"].token)
    assert mine.status == 200, mine.body
    assert [(x["id"], x["status"]) for x in mine.json["items"]] == [
        (filed[1], "pending"),
        (filed[0], "approved"),
    ]
    assert mine.json["items"][1]["destination"] == "杭州"
    returned = await fetch(
        f"/api/v1/leave-requests/{filed[0]}/return",
        "POST",
        token=team["worker"].token,
        json_body={"date": "2026-03-02"},
    )
    assert returned.status == 200, returned.body
    again = await fetch(
        f"/api/v1/subjects/{sid}/leave-requests?limit=1", token=team["county"].token
    )
    assert [x["id"] for x in again.json["items"]] == [filed[1]]
    after = await fetch(f"/api/v1/subjects/{sid}/leave-requests", token=team["worker"].token)
    assert after.json["items"][1]["returned_on"] == "2026-03-02"
    # A worker not assigned to the person, and another station, do not find the file.
    for who in ("other_worker", "elsewhere"):
        hidden = await fetch(f"/api/v1/subjects/{sid}/leave-requests", token=team[who].token)
        assert hidden.status == 404, who
    bad = await fetch(f"/api/v1/subjects/{sid}/leave-requests?limit=0", token=team["station"].token)
    assert bad.status == 422


async def test_queues_name_the_person_masked_for_a_juvenile_and_the_log_names_staff(
    fetch, tree, team, services
):
    adult = await open_case(fetch, tree, team, name="吴刚")
    minor = await open_case(fetch, tree, team, name="李小明", birth=dt.date(2011, 6, 1))
    for sid in (adult, minor):
        leave = await fetch(
            f"/api/v1/subjects/{sid}/leave-requests",
            "POST",
            token=team["station"].token,
            json_body={
                "start_date": "2026-03-10",
                "end_date": "2026-03-11",
                "destination": "杭州",
                "reason": "探亲",
            },
        )
        assert leave.status == 201, leave.body
        sanction = await fetch(
            f"/api/v1/subjects/{sid}/sanctions",
            "POST",
            token=team["station"].token,
            json_body={"kind": "praise", "reason": "积极参加公益活动"},
        )
        assert sanction.status == 201, sanction.body
    for path in ("/api/v1/leave-requests?status=pending", "/api/v1/sanctions?status=pending"):
        answer = await fetch(path, token=team["station"].token)
        names = {x["subject_id"]: x["subject_name"] for x in answer.json["items"]}
        # A juvenile's name is masked for those not assigned to them (the officer here).
        assert names == {adult: "吴刚", minor: "李**"}, path
    # The access log answers who acted by name, beside the id.
    log = await fetch(f"/api/v1/subjects/{adult}/access-log", token=team["county"].token)
    assert log.status == 200, log.body
    officer = await services.staff.lookup(team["station"].id)
    by_station = [e for e in log.json["items"] if e["actor_id"] == team["station"].id]
    assert by_station and {e["actor_name"] for e in by_station} == {officer["name"]}

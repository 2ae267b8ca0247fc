"""The decider's queue of 电子定位 orders (GET /api/v1/elocation-orders?status=pending)."""

from __future__ import annotations

from models.policy import Role
from tests.subject_factories import subject_body

CORRECTIONS = {
    "type": "community_corrections",
    "start_date": "2026-01-05",
    "end_date": "2028-01-04",
    "sentence_type": "probation",
}
QUEUE = "/api/v1/elocation-orders?status=pending"


async def test_the_agency_head_sees_pending_orders_of_the_county_only(fetch, tree, make_staff):
    station = await make_staff(Role.STATION_OFFICER, tree.station)
    head = await make_staff(Role.COUNTY_OFFICER, tree.county, is_agency_head=True)
    stranger = await make_staff(Role.STATION_OFFICER, tree.other_station)
    tokens = {a.id: await make_staff.token_for(a) for a in (station, head, stranger)}
    body = subject_body(tree.station.id)
    created = await fetch("/api/v1/subjects", "POST", json_body=body, token=tokens[station.id])
    sid = created.json["id"]
    opened = await fetch(
        f"/api/v1/subjects/{sid}/programs", "POST", json_body=CORRECTIONS, token=tokens[station.id]
    )
    assert opened.status == 201, opened.body
    orders = []
    for start, end in (("2026-12-01", "2027-02-28"), ("2027-03-01", "2027-05-31")):
        answer = await fetch(
            f"/api/v1/subjects/{sid}/elocation-orders",
            "POST",
            json_body={
                "ground": "left_without_approval",
                "start_date": start,
                "end_date": end,
                "reason": "无正当理由离开所居住的县",
            },
            token=tokens[station.id],
        )
        assert answer.status == 201, answer.body
        orders.append(answer.json["id"])
    decided = await fetch(
        f"/api/v1/elocation-orders/{orders[0]}/decision",
        "POST",
        json_body={"approve": True, "comment": "同意"},
        token=tokens[head.id],
    )
    assert decided.status == 200, decided.body

    queue = await fetch(QUEUE, token=tokens[head.id])
    assert queue.status == 200, queue.body
    (item,) = queue.json["items"]  # the decided order is not listed
    assert item["id"] == orders[1]
    assert item["subject_name"] == body["name"]
    assert item["ground"] == "left_without_approval"
    assert (item["start_date"], item["end_date"]) == ("2027-03-01", "2027-05-31")
    assert item["deadline"] == "2027-03-01"
    assert item["basis"] == "社区矫正法第二十九条"
    assert item["level"] == "county"

    elsewhere = await fetch(QUEUE, token=tokens[stranger.id])
    assert elsewhere.status == 200 and elsewhere.json["items"] == []
    assert (await fetch(QUEUE + "&limit=0", token=tokens[head.id])).status in (400, 422)
    assert (await fetch("/api/v1/elocation-orders", token=tokens[head.id])).status in (400, 422)
    grid = await make_staff(Role.GRID_WORKER, tree.community)
    assert (await fetch(QUEUE, token=await make_staff.token_for(grid))).status == 403

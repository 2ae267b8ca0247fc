"""电子定位 end to end: the five grounds, the county agency head's approval, three months at most
per order and per renewal, and the automatic end."""

from __future__ import annotations

import datetime as dt

import pytest

from models.policy import Role
from tests.subject_factories import subject_body

CORRECTIONS = {
    "type": "community_corrections",
    "start_date": "2026-01-05",
    "end_date": "2028-01-04",
    "sentence_type": "probation",
    "prohibitions": ["不得进入夜总会、酒吧", "不得接触被害人"],
}


@pytest.fixture
async def staff(tree, make_staff):
    accounts = {
        "station": await make_staff(Role.STATION_OFFICER, tree.station),
        "county": await make_staff(Role.COUNTY_OFFICER, tree.county),
        "head": await make_staff(Role.COUNTY_OFFICER, tree.county, is_agency_head=True),
        "other_head": await make_staff(Role.COUNTY_OFFICER, tree.other_county, is_agency_head=True),
    }
    for account in accounts.values():
        account.token = await make_staff.token_for(account)
    return accounts


async def new_subject(fetch, tree, staff, program=CORRECTIONS):
    answer = await fetch(
        "/api/v1/subjects",
        "POST",
        json_body=subject_body(tree.station.id),
        token=staff["station"].token,
    )
    sid = answer.json["id"]
    opened = await fetch(
        f"/api/v1/subjects/{sid}/programs", "POST", json_body=program, token=staff["station"].token
    )
    assert opened.status == 201
    return sid


@pytest.fixture
async def subject(fetch, tree, staff):
    return await new_subject(fetch, tree, staff)


async def order(fetch, staff, sid, start, end, ground="left_without_approval", **extra):
    return await fetch(
        f"/api/v1/subjects/{sid}/elocation-orders",
        "POST",
        json_body={
            "ground": ground,
            "start_date": start,
            "end_date": end,
            "reason": "无正当理由离开所居住的县",
            **extra,
        },
        token=staff["station"].token,
    )


async def decide(fetch, staff, order_id, who, approve=True):
    return await fetch(
        f"/api/v1/elocation-orders/{order_id}/decision",
        "POST",
        json_body={"approve": approve, "comment": "审批"},
        token=staff[who].token,
    )


async def renew(fetch, staff, order_id, end):
    return await fetch(
        f"/api/v1/elocation-orders/{order_id}/renewals",
        "POST",
        json_body={"end_date": end, "reason": "仍有脱管风险"},
        token=staff["station"].token,
    )


async def test_three_months_and_a_day_needs_a_renewal(fetch, staff, subject):
    too_long = await order(fetch, staff, subject, "2026-12-01", "2027-03-01")
    assert too_long.status == 422
    (detail,) = too_long.error["details"]
    assert detail == {"field": "end_date", "rule": "elocation.max_months", "latest": "2027-02-28"}
    first = await order(fetch, staff, subject, "2026-12-01", "2027-02-28")
    assert first.status == 201
    placed = first.json
    assert (placed["status"], placed["levels"], placed["purpose"]) == (
        "pending",
        ["county"],
        "corrections",
    )
    assert (await decide(fetch, staff, placed["id"], "head")).json["status"] == "approved"
    # The day beyond three months comes as a renewal, approved like an order.
    renewal = await renew(fetch, staff, placed["id"], "2027-03-01")
    assert renewal.status == 201
    assert (renewal.json["start_date"], renewal.json["end_date"]) == ("2027-03-01", "2027-03-01")
    assert (renewal.json["renews"], renewal.json["status"]) == (placed["id"], "pending")
    assert renewal.json["limit_rule"] == "elocation.renewal_max_months"
    granted = await decide(fetch, staff, renewal.json["id"], "head")
    assert granted.json["status"] == "approved"
    assert granted.json["steps"][0]["rules_version"].startswith("national-")


async def test_a_renewal_runs_three_months_at_most_and_once(fetch, staff, subject):
    placed = (await order(fetch, staff, subject, "2026-12-01", "2027-02-28")).json
    unapproved = await renew(fetch, staff, placed["id"], "2027-03-31")
    assert unapproved.status == 409 and unapproved.error["details"] == {"status": "pending"}
    await decide(fetch, staff, placed["id"], "head")
    long = await renew(fetch, staff, placed["id"], "2027-06-01")
    assert long.status == 422
    assert long.error["details"][0]["latest"] == "2027-05-31"
    assert (await renew(fetch, staff, placed["id"], "2027-05-31")).status == 201
    twice = await renew(fetch, staff, placed["id"], "2027-04-30")
    assert twice.status == 409 and twice.error["code"] == "exists"


async def test_only_the_county_agency_head_approves(fetch, staff, subject):
    placed = (await order(fetch, staff, subject, "2026-12-01", "2027-01-31")).json
    not_head = await decide(fetch, staff, placed["id"], "county")
    assert not_head.status == 403 and not_head.error["code"] == "agency_head_only"
    assert (await decide(fetch, staff, placed["id"], "station")).status == 403
    assert (await decide(fetch, staff, placed["id"], "other_head")).status == 404
    refused = await decide(fetch, staff, placed["id"], "head", approve=False)
    assert refused.json["status"] == "rejected"
    again = await decide(fetch, staff, placed["id"], "head")
    assert again.status == 409 and again.error["details"] == {"status": "rejected"}


async def test_breach_of_a_prohibition_names_a_recorded_one(fetch, tree, staff, subject):
    unnamed = await order(
        fetch, staff, subject, "2026-12-01", "2027-01-31", "breach_of_prohibition"
    )
    assert unnamed.status == 422
    assert unnamed.error["details"][0]["field"] == "prohibition_index"
    beyond = await order(
        fetch,
        staff,
        subject,
        "2026-12-01",
        "2027-01-31",
        "breach_of_prohibition",
        prohibition_index=2,
    )
    assert beyond.status == 422
    named = await order(
        fetch,
        staff,
        subject,
        "2026-12-01",
        "2027-01-31",
        "breach_of_prohibition",
        prohibition_index=1,
    )
    assert named.status == 201
    assert (named.json["prohibition_index"], named.json["prohibition"]) == (1, "不得接触被害人")
    # Without a recorded 禁止令 the ground does not exist.
    without = {k: v for k, v in CORRECTIONS.items() if k != "prohibitions"}
    plain = await new_subject(fetch, tree, staff, without)
    refused = await order(
        fetch,
        staff,
        plain,
        "2026-12-01",
        "2027-01-31",
        "breach_of_prohibition",
        prohibition_index=0,
    )
    assert refused.status == 422 and refused.error["details"][0]["field"] == "ground"
    other_ground = await order(
        fetch, staff, plain, "2026-12-01", "2027-01-31", "revocation_pending"
    )
    assert other_ground.status == 201
    unknown = await order(fetch, staff, plain, "2027-03-01", "2027-03-31", "curfew")
    assert unknown.status == 422  # only the five grounds of Art. 29


async def test_orders_end_by_themselves(fetch, services, staff, subject):
    today = services.elocation.today()
    start = today - dt.timedelta(days=40)
    past = (await order(fetch, staff, subject, str(start), str(today - dt.timedelta(days=1)))).json
    await decide(fetch, staff, past["id"], "head")
    running = (
        await order(fetch, staff, subject, str(today), str(today + dt.timedelta(days=20)))
    ).json
    running = (await decide(fetch, staff, running["id"], "head")).json
    assert running["in_force"] is True
    assert await services.elocation.end_expired_orders(today) == 1
    assert await services.elocation.end_expired_orders(today) == 0
    ended = await fetch(f"/api/v1/elocation-orders/{past['id']}", token=staff["county"].token)
    assert (ended.json["status"], ended.json["ended_on"], ended.json["in_force"]) == (
        "ended",
        str(today),
        False,
    )
    still = await fetch(f"/api/v1/elocation-orders/{running['id']}", token=staff["county"].token)
    assert still.json["status"] == "approved"

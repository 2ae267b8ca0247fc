"""外出请假 end to end: the chain by days and by two-month totals, each level at its own step,
the return (销假) and the overdue-return alert."""

from __future__ import annotations

import datetime as dt

import pytest
from bson import ObjectId

from models.audit import AuditContext
from models.identity import Identity
from models.policy import Role
from tests.subject_factories import subject_body

CORRECTIONS = {
    "type": "community_corrections",
    "start_date": "2026-02-09",
    "end_date": "2028-02-08",
    "sentence_type": "probation",
}


@pytest.fixture
async def staff(tree, make_staff):
    accounts = {
        "station": await make_staff(Role.STATION_OFFICER, tree.station),
        "station2": await make_staff(Role.STATION_OFFICER, tree.station2),
        "county": await make_staff(Role.COUNTY_OFFICER, tree.county),
        "city": await make_staff(Role.CITY_OFFICER, tree.city),
        "grid": await make_staff(Role.GRID_WORKER, tree.community),
    }
    for account in accounts.values():
        account.token = await make_staff.token_for(account)
    return accounts


async def new_subject(fetch, tree, staff, *, corrections=True):
    answer = await fetch(
        "/api/v1/subjects",
        "POST",
        json_body=subject_body(tree.station.id),
        token=staff["station"].token,
    )
    sid = answer.json["id"]
    if corrections:
        opened = await fetch(
            f"/api/v1/subjects/{sid}/programs",
            "POST",
            json_body=CORRECTIONS,
            token=staff["station"].token,
        )
        assert opened.status == 201
    return sid


@pytest.fixture
async def subject(fetch, tree, staff):
    return await new_subject(fetch, tree, staff)


async def ask(fetch, staff, sid, start, end, who="station"):
    return await fetch(
        f"/api/v1/subjects/{sid}/leave-requests",
        "POST",
        json_body={
            "start_date": str(start),
            "end_date": str(end),
            "destination": "浙江省杭州市西湖区",
            "reason": "探望住院的母亲",
        },
        token=staff[who].token,
    )


async def decide(fetch, staff, leave_id, who, approve=True, comment="同意"):
    return await fetch(
        f"/api/v1/leave-requests/{leave_id}/decision",
        "POST",
        json_body={"approve": approve, "comment": comment},
        token=staff[who].token,
    )


async def granted(fetch, staff, sid, start, end):
    """A request taken through its whole chain, each level approving in turn."""
    answer = await ask(fetch, staff, sid, start, end)
    assert answer.status == 201
    leave = answer.json
    for level in leave["levels"]:
        leave = (await decide(fetch, staff, leave["id"], level)).json
    assert leave["status"] == "approved"
    return leave


async def test_seven_days_the_station_decides_alone(fetch, staff, subject):
    filed = await ask(fetch, staff, subject, "2027-03-01", "2027-03-07")
    assert filed.status == 201
    leave = filed.json
    assert (leave["days"], leave["levels"], leave["next_level"]) == (7, ["station"], "station")
    assert leave["rule"] == "leave.chain_up_to_station_max"
    assert leave["destination"] == "浙江省杭州市西湖区"
    decided = await decide(fetch, staff, leave["id"], "station")
    assert decided.status == 200
    body = decided.json
    assert (body["status"], body["next_level"]) == ("approved", None)
    (step,) = body["steps"]
    assert step["level"] == "station" and step["approve"] is True and step["comment"] == "同意"
    assert step["by"] == staff["station"].id and step["at"]
    assert step["rules_version"].startswith("national-")


async def test_eight_day_leave_needs_county(fetch, staff, subject):
    leave = (await ask(fetch, staff, subject, "2027-03-01", "2027-03-08")).json
    assert (leave["days"], leave["levels"]) == (8, ["station", "county"])
    # The station's 初审 approves, and the request stays pending until the county decides.
    reviewed = await decide(fetch, staff, leave["id"], "station", comment="初审同意")
    assert reviewed.status == 200
    assert (reviewed.json["status"], reviewed.json["next_level"]) == ("pending", "county")
    queue = await fetch("/api/v1/leave-requests?status=pending", token=staff["county"].token)
    assert [(i["id"], i["next_level"], len(i["steps"])) for i in queue.json["items"]] == [
        (leave["id"], "county", 1)
    ]
    # The city is not in this chain; it cannot act in the county's place.
    assert (await decide(fetch, staff, leave["id"], "city")).status == 403
    final = await decide(fetch, staff, leave["id"], "county")
    assert (final.json["status"], final.json["next_level"]) == ("approved", None)
    assert [s["level"] for s in final.json["steps"]] == ["station", "county"]
    approved = await fetch("/api/v1/leave-requests?status=approved", token=staff["county"].token)
    assert [i["id"] for i in approved.json["items"]] == [leave["id"]]


async def test_a_county_officer_acting_before_the_station_gets_403(fetch, staff, subject):
    leave = (await ask(fetch, staff, subject, "2027-03-01", "2027-03-08")).json
    early = await decide(fetch, staff, leave["id"], "county")
    assert early.status == 403
    assert early.error["code"] == "not_your_step"
    assert early.error["details"] == {"next_level": "station"}
    queue = await fetch("/api/v1/leave-requests?status=pending", token=staff["station"].token)
    assert [(i["id"], i["steps"]) for i in queue.json["items"]] == [(leave["id"], [])]


async def test_deciding_twice_answers_409_with_the_state(fetch, staff, subject):
    short = (await ask(fetch, staff, subject, "2027-03-01", "2027-03-02")).json
    assert (await decide(fetch, staff, short["id"], "station")).status == 200
    again = await decide(fetch, staff, short["id"], "station", approve=False)
    assert again.status == 409
    assert again.error["details"] == {"status": "approved"}
    # A rejection at the first step ends the chain: the county has nothing left to decide.
    longer = (await ask(fetch, staff, subject, "2027-04-01", "2027-04-10")).json
    refused = await decide(fetch, staff, longer["id"], "station", approve=False, comment="理由不足")
    assert (refused.json["status"], refused.json["next_level"]) == ("rejected", None)
    late = await decide(fetch, staff, longer["id"], "county")
    assert late.status == 409
    assert late.error["details"] == {"status": "rejected"}


async def test_thirty_days_the_county_decides_thirty_one_the_city(fetch, tree, staff, subject):
    thirty = (await ask(fetch, staff, subject, "2027-03-01", "2027-03-30")).json
    assert (thirty["days"], thirty["levels"]) == (30, ["station", "county"])
    other = await new_subject(fetch, tree, staff)
    longer = (await ask(fetch, staff, other, "2027-03-01", "2027-03-31")).json
    assert (longer["days"], longer["levels"]) == (31, ["station", "county", "city"])
    assert longer["rule"] == "leave.chain_beyond_county_max"
    for level, status, next_level in (
        ("station", "pending", "county"),
        ("county", "pending", "city"),
        ("city", "approved", None),
    ):
        answer = await decide(fetch, staff, longer["id"], level)
        assert (answer.json["status"], answer.json["next_level"]) == (status, next_level)


async def test_more_than_thirty_days_within_two_months_goes_to_the_city(
    fetch, tree, staff, subject
):
    await granted(fetch, staff, subject, "2027-03-01", "2027-03-20")  # 20 days
    # 20-30 April lies in the two months ending 30 April (1 March to 30 April): 20 + 11 = 31.
    inside = (await ask(fetch, staff, subject, "2027-04-20", "2027-04-30")).json
    assert (inside["days"], inside["window_total_days"]) == (11, 31)
    assert inside["levels"] == ["station", "county", "city"]
    refused = await decide(fetch, staff, inside["id"], "station", approve=False)
    assert refused.json["status"] == "rejected"  # a refused request no longer counts
    # One day later, 21 April to 1 May: the two months ending 1 May begin on 2 March, so only
    # 19 of the March days fall in any window with it: 19 + 11 = 30, the county's to decide.
    later = (await ask(fetch, staff, subject, "2027-04-21", "2027-05-01")).json
    assert (later["days"], later["window_total_days"]) == (11, 30)
    assert later["levels"] == ["station", "county"]
    # Leave already granted after a request counts too: 11 days before 20 granted in June.
    other = await new_subject(fetch, tree, staff)
    await granted(fetch, staff, other, "2027-06-01", "2027-06-20")
    before = (await ask(fetch, staff, other, "2027-05-15", "2027-05-25")).json
    assert (before["window_total_days"], before["levels"][-1]) == (31, "city")


async def test_dates_that_overlap_or_run_backwards_are_refused(fetch, tree, staff, subject):
    backwards = await ask(fetch, staff, subject, "2027-03-08", "2027-03-01")
    assert backwards.status == 422
    assert backwards.error["details"][0]["field"] == "end_date"
    pending = (await ask(fetch, staff, subject, "2027-03-01", "2027-03-05")).json
    overlap = await ask(fetch, staff, subject, "2027-03-05", "2027-03-06")
    assert overlap.status == 422
    assert overlap.error["details"][0]["id"] == pending["id"]
    await decide(fetch, staff, pending["id"], "station")
    still = await ask(fetch, staff, subject, "2027-02-20", "2027-03-01")
    assert still.status == 422  # overlapping granted leave as much as pending leave
    assert (await ask(fetch, staff, subject, "2027-03-06", "2027-03-07")).status == 201
    # Dates no term reaches are a slip, refused naming the field (year 1 answered 500).
    for start, end, field in (
        ("0001-01-01", "0001-01-01", "start_date"),
        ("2027-04-01", "9999-12-31", "end_date"),
    ):
        far = await ask(fetch, staff, subject, start, end)
        assert far.status == 422, far.body
        assert far.error["details"] == [{"field": field}]
    # Only a person under community corrections asks for leave.
    free = await new_subject(fetch, tree, staff, corrections=False)
    refused = await ask(fetch, staff, free, "2027-03-01", "2027-03-02")
    assert refused.status == 409
    assert refused.error["code"] == "not_under_corrections"


async def test_destination_and_reason_are_sealed_and_out_of_scope_is_404(
    fetch, services, staff, subject
):
    leave = (await ask(fetch, staff, subject, "2027-03-01", "2027-03-02")).json
    raw = await services.leave._leave.find_one({})
    for name in ("destination", "reason"):
        assert isinstance(raw[name], bytes)  # a sealed value, not text
        assert "杭州".encode() not in bytes(raw[name])
    # Another station's officer neither sees the request nor decides it.
    assert (await decide(fetch, staff, leave["id"], "station2")).status == 404
    queue = await fetch("/api/v1/leave-requests", token=staff["station2"].token)
    assert queue.json["items"] == []
    # A grid worker holds no decision at all.
    assert (await decide(fetch, staff, leave["id"], "grid")).status == 403


async def test_the_return_closes_granted_leave_and_late_returns_are_alerted(
    fetch, services, staff, subject
):
    today = services.leave.today()
    start, end = today - dt.timedelta(days=10), today - dt.timedelta(days=8)
    leave = await granted(fetch, staff, subject, start, end)
    back = await fetch(
        f"/api/v1/leave-requests/{leave['id']}/return",
        "POST",
        json_body={"date": str(end + dt.timedelta(days=1))},
        token=staff["station"].token,
    )
    assert back.status == 200
    assert (back.json["returned_on"], back.json["return_late"]) == (
        str(end + dt.timedelta(days=1)),
        True,
    )
    twice = await fetch(
        f"/api/v1/leave-requests/{leave['id']}/return",
        "POST",
        json_body={"date": str(end)},
        token=staff["station"].token,
    )
    assert twice.status == 409 and twice.error["details"] == {"status": "returned"}
    # Granted leave that ended with no return: the sweep alerts once, however often it runs.
    overdue = await granted(
        fetch, staff, subject, today - dt.timedelta(days=5), today - dt.timedelta(days=1)
    )
    current = await granted(fetch, staff, subject, today, today + dt.timedelta(days=2))
    assert await services.leave.alert_overdue_returns(today) == 1
    assert await services.leave.alert_overdue_returns(today) == 0
    alerts = await fetch("/api/v1/alerts?status=open", token=staff["station"].token)
    raised = [a for a in alerts.json["items"] if a["kind"] == "leave_return_overdue"]
    assert [a["details"]["leave_request_id"] for a in raised] == [overdue["id"]]
    assert current["id"] != overdue["id"]
    # Pending leave has nothing to return from.
    pending = (await ask(fetch, staff, subject, "2027-05-01", "2027-05-02")).json
    early = await fetch(
        f"/api/v1/leave-requests/{pending['id']}/return",
        "POST",
        json_body={"date": str(today)},
        token=staff["station"].token,
    )
    assert early.status == 409 and early.error["details"] == {"status": "pending"}


async def test_the_chain_is_the_jurisdictions_rule(fetch, tree, staff, subject):
    """A county that wants its own review of short leave says so in its rules, not in code."""
    override = await fetch(
        f"/api/v1/rules/{tree.county.code}",
        "PUT",
        json_body={
            "rules": {"leave.chain_up_to_station_max": "station>county"},
            "source": "县局规定：短期请假亦报县局审批",
        },
        token=staff["county"].token,
    )
    assert override.status == 200
    leave = (await ask(fetch, staff, subject, "2027-03-01", "2027-03-02")).json
    assert (leave["rule"], leave["levels"]) == (
        "leave.chain_up_to_station_max",
        ["station", "county"],
    )
    assert f"{tree.county.code}@1" in leave["rules_version"]
    bad = await fetch(
        f"/api/v1/rules/{tree.county.code}",
        "PUT",
        json_body={"rules": {"leave.chain_up_to_station_max": "county>station"}, "source": "错"},
        token=staff["county"].token,
    )
    assert bad.status == 422  # a chain runs upwards, one of the rule's choices


async def test_the_person_files_through_the_same_service(services, staff, subject):
    """The mini-program (issue 9) resolves the caller's own case file and files with it."""
    doc = await services.subjects._subjects.find_one({"_id": ObjectId(subject)})
    ctx = AuditContext(Identity(user_id="wx-subject", role="subject", channel="mp"), "mp-test")
    view = await services.leave.request_from_subject(
        ctx,
        doc,
        start=dt.date(2027, 3, 1),
        end=dt.date(2027, 3, 9),
        destination="宁波",
        reason="务工",
    )
    assert (view.channel, view.status, view.levels) == (
        "miniprogram",
        "pending",
        ["station", "county"],
    )

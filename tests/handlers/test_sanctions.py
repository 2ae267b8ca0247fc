"""考核奖惩 end to end: chains decided by the county after the station's investigation, 脱管
episodes, and suggestions at each boundary of the rules (never applied by themselves)."""

from __future__ import annotations

import datetime as dt

import pytest

from models.policy import Role
from tests.subject_factories import subject_body

CORRECTIONS = {
    "type": "community_corrections",
    "start_date": "2026-01-05",
    "end_date": "2028-01-04",
    "sentence_type": "parole",
}


@pytest.fixture
async def staff(tree, make_staff):
    accounts = {
        "station": await make_staff(Role.STATION_OFFICER, tree.station),
        "county": await make_staff(Role.COUNTY_OFFICER, tree.county),
        "city": await make_staff(Role.CITY_OFFICER, tree.city),
        "other_county": await make_staff(Role.COUNTY_OFFICER, tree.other_county),
    }
    for account in accounts.values():
        account.token = await make_staff.token_for(account)
    return accounts


@pytest.fixture
async def subject(fetch, tree, staff):
    answer = await fetch(
        "/api/v1/subjects",
        "POST",
        json_body=subject_body(tree.station.id),
        token=staff["station"].token,
    )
    sid = answer.json["id"]
    opened = await fetch(
        f"/api/v1/subjects/{sid}/programs",
        "POST",
        json_body=CORRECTIONS,
        token=staff["station"].token,
    )
    assert opened.status == 201
    return sid


async def propose(fetch, staff, sid, kind, detachment_id=None, who="station"):
    body = {"kind": kind, "reason": "经调查核实"}
    if detachment_id:
        body["detachment_id"] = detachment_id
    return await fetch(
        f"/api/v1/subjects/{sid}/sanctions", "POST", json_body=body, token=staff[who].token
    )


async def decide(fetch, staff, sanction_id, who, approve=True):
    return await fetch(
        f"/api/v1/sanctions/{sanction_id}/decision",
        "POST",
        json_body={"approve": approve, "comment": "意见"},
        token=staff[who].token,
    )


async def approved(fetch, staff, sid, kind):
    sanction = (await propose(fetch, staff, sid, kind)).json
    for level in sanction["levels"]:
        sanction = (await decide(fetch, staff, sanction["id"], level)).json
    assert sanction["status"] == "approved"
    return sanction


async def detached(fetch, staff, sid, start, end):
    answer = await fetch(
        f"/api/v1/subjects/{sid}/detachments",
        "POST",
        json_body={"start_date": start, "end_date": end},
        token=staff["station"].token,
    )
    assert answer.status == 201
    return answer.json


async def suggestions(fetch, staff, sid):
    answer = await fetch(
        f"/api/v1/subjects/{sid}/sanction-suggestions", token=staff["county"].token
    )
    assert answer.status == 200
    return answer.json["items"]


async def test_an_admonishment_is_investigated_by_the_station_and_decided_by_the_county(
    fetch, staff, subject
):
    filed = await propose(fetch, staff, subject, "admonish")
    assert filed.status == 201
    sanction = filed.json
    assert (sanction["status"], sanction["levels"], sanction["next_level"]) == (
        "pending",
        ["station", "county"],
        "station",
    )
    assert sanction["rule"] == "sanctions.chain.admonish" and sanction["reason"] == "经调查核实"
    early = await decide(fetch, staff, sanction["id"], "county")
    assert early.status == 403 and early.error["details"] == {"next_level": "station"}
    investigated = await decide(fetch, staff, sanction["id"], "station")
    assert (investigated.json["status"], investigated.json["next_level"]) == ("pending", "county")
    assert investigated.json["decided_at"] is None
    assert (await decide(fetch, staff, sanction["id"], "city")).status == 403
    final = await decide(fetch, staff, sanction["id"], "county")
    assert (final.json["status"], final.json["next_level"]) == ("approved", None)
    assert final.json["decided_at"] is not None
    assert [s["level"] for s in final.json["steps"]] == ["station", "county"]
    again = await decide(fetch, staff, sanction["id"], "county", approve=False)
    assert again.status == 409 and again.error["details"] == {"status": "approved"}
    # Out of scope: another county neither sees nor decides it.
    assert (await decide(fetch, staff, sanction["id"], "other_county")).status == 404


async def test_requests_to_court_and_police_are_submissions_by_the_county(fetch, staff, subject):
    for kind, to in (
        ("revoke_request", "court"),
        ("imprison_request", "deciding_authority"),
        ("public_security_penalty", "police"),
    ):
        sanction = await approved(fetch, staff, subject, kind)
        assert sanction["levels"] == ["station", "county"]
        assert sanction["submitted_to"] == to
    praise = await approved(fetch, staff, subject, "praise")
    assert praise["submitted_to"] is None


async def test_detachment_suggestions_at_each_boundary(fetch, staff, subject):
    ten = await detached(fetch, staff, subject, "2026-03-01", "2026-03-11")
    eleven = await detached(fetch, staff, subject, "2026-04-01", "2026-04-12")
    month = await detached(fetch, staff, subject, "2026-06-01", "2026-07-01")
    beyond = await detached(fetch, staff, subject, "2026-08-01", "2026-09-02")
    assert [e["days"] for e in (ten, eleven, month, beyond)] == [10, 11, 30, 32]
    items = await suggestions(fetch, staff, subject)
    assert [(s["kind"], s["rule"], s["value"], s["basis"]["detachment_id"]) for s in items] == [
        ("admonish", "detachment.warn_after_days", 10, ten["id"]),
        ("warn", "detachment.warn_after_days", 10, eleven["id"]),
        # Exactly one month (1 June to 1 July) is not more than a month: still a 警告.
        ("warn", "detachment.warn_after_days", 10, month["id"]),
        ("revoke_request", "detachment.revoke_after_months", 1, beyond["id"]),
    ]
    assert all(s["rules_version"].startswith("national-") for s in items)


async def test_a_suggestion_is_never_applied_by_itself(fetch, services, staff, subject):
    episode = await detached(fetch, staff, subject, "2026-03-01", "2026-03-20")
    assert [s["kind"] for s in await suggestions(fetch, staff, subject)] == ["warn"]
    assert [s["kind"] for s in await suggestions(fetch, staff, subject)] == ["warn"]
    assert await services.sanctions._sanctions.count_documents({}) == 0
    # Filing a sanction that answers the episode retires its suggestion while it stands...
    sanction = (await propose(fetch, staff, subject, "warn", episode["id"])).json
    assert await suggestions(fetch, staff, subject) == []
    # ...and a refusal brings it back: the episode is unanswered again.
    await decide(fetch, staff, sanction["id"], "station", approve=False)
    assert [s["kind"] for s in await suggestions(fetch, staff, subject)] == ["warn"]


async def test_two_uncorrected_admonishments_suggest_a_warning(fetch, staff, subject):
    first = await approved(fetch, staff, subject, "admonish")
    assert await suggestions(fetch, staff, subject) == []
    pending = (await propose(fetch, staff, subject, "admonish")).json
    assert await suggestions(fetch, staff, subject) == []  # a pending one does not count
    await decide(fetch, staff, pending["id"], "station")
    second = (await decide(fetch, staff, pending["id"], "county")).json
    (item,) = await suggestions(fetch, staff, subject)
    assert (item["kind"], item["rule"], item["value"]) == (
        "warn",
        "sanctions.admonishments_to_warn",
        2,
    )
    assert item["basis"]["sanction_ids"] == [first["id"], second["id"]]
    # A praise records that the person corrected their conduct: the count starts again.
    await approved(fetch, staff, subject, "praise")
    assert await suggestions(fetch, staff, subject) == []


async def test_two_warnings_suggest_revocation(fetch, staff, subject):
    await approved(fetch, staff, subject, "warn")
    assert await suggestions(fetch, staff, subject) == []
    await approved(fetch, staff, subject, "warn")
    (item,) = await suggestions(fetch, staff, subject)
    assert (item["kind"], item["rule"], item["value"]) == (
        "revoke_request",
        "sanctions.warnings_to_revoke",
        2,
    )
    await approved(fetch, staff, subject, "revoke_request")
    assert await suggestions(fetch, staff, subject) == []


async def test_bad_episodes_and_people_outside_corrections_are_refused(
    fetch, services, tree, staff, subject
):
    tomorrow = services.sanctions.today() + dt.timedelta(days=1)
    future = await fetch(
        f"/api/v1/subjects/{subject}/detachments",
        "POST",
        json_body={"start_date": tomorrow.isoformat()},
        token=staff["station"].token,
    )
    assert future.status == 422
    backwards = await fetch(
        f"/api/v1/subjects/{subject}/detachments",
        "POST",
        json_body={"start_date": "2026-03-10", "end_date": "2026-03-01"},
        token=staff["station"].token,
    )
    assert backwards.status == 422
    free = await fetch(
        "/api/v1/subjects",
        "POST",
        json_body=subject_body(tree.station.id),
        token=staff["station"].token,
    )
    refused = await propose(fetch, staff, free.json["id"], "admonish")
    assert refused.status == 409 and refused.error["code"] == "not_under_corrections"

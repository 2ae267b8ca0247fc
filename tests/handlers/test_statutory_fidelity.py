"""Issue 21: 帮教期 and release notices counted from release, juveniles kept under Art. 58,
社区戒毒 chained into 社区康复, and rules that lived in code cited in the rules data, with the
rules version stored on every decision record."""

from __future__ import annotations

import datetime as dt

import bson
import pytest

from models.clock import LOCAL_TZ
from models.errors import InvalidInput
from models.policy import Role
from models.rules import RuleBook
from models.workdays import WorkdayCalendar
from tests.subject_factories import subject_body


def local(*args: int) -> dt.datetime:
    return dt.datetime(*args, tzinfo=LOCAL_TZ)


@pytest.fixture
async def staff(tree, make_staff, clock):
    clock.set(local(2026, 12, 7, 9, 0))
    accounts = {
        "station": await make_staff(Role.STATION_OFFICER, tree.station),
        "county": await make_staff(Role.COUNTY_OFFICER, tree.county),
        "health": await make_staff(Role.HEALTH_WORKER, tree.county),
        "social": await make_staff(Role.SOCIAL_WORKER, tree.station),
    }
    await signed_in(make_staff, accounts)
    return accounts


async def signed_in(make_staff, accounts) -> None:
    """Fresh tokens at the clock's time (a session opened before it moved has expired)."""
    for account in accounts.values():
        account.token = await make_staff.token_for(account)


async def new_subject(fetch, tree, staff, **body) -> str:
    answer = await fetch(
        "/api/v1/subjects",
        "POST",
        json_body=subject_body(tree.station.id, **body),
        token=staff["station"].token,
    )
    assert answer.status == 201, answer.body
    return answer.json["id"]


@pytest.fixture
async def subject(fetch, tree, staff):
    return await new_subject(fetch, tree, staff)


async def notice(fetch, staff, sid, release, received, who="station"):
    return await fetch(
        f"/api/v1/subjects/{sid}/release-notices",
        "POST",
        json_body={"release_date": release, "received_on": received, "prison": "浙江省第二监狱"},
        token=staff[who].token,
    )


# --- item 1: 帮教期 and the release notice ---------------------------------------------------


async def test_resettlement_and_its_contacts_begin_at_release(fetch, staff, subject, store):
    opened = await fetch(
        f"/api/v1/subjects/{subject}/programs",
        "POST",
        json_body={
            "type": "resettlement",
            "start_date": "2026-12-07",
            "release_date": "2027-01-06",
        },
        token=staff["station"].token,
    )
    assert opened.status == 201, opened.body
    program = opened.json
    # 帮教期: five years from release, not from the day it was recorded.
    assert (program["start_date"], program["end_date"]) == ("2027-01-06", "2032-01-06")
    assert [(r["kind"], r["start"]) for r in program["obligation_rules"]] == [
        ("contact", "2027-01-06")
    ]
    due, _ = WorkdayCalendar.load().period_end(dt.date(2027, 1, 6), 30)
    assert program["details"]["intake_due"] == due.isoformat() > "2027-01-06"
    release = local(2027, 1, 6)
    windows = [
        o["window_start"]
        async for o in store.collection("occurrences").find({"program_id": program["id"]})
    ]
    assert windows and min(windows) >= release  # nothing due before release


@pytest.mark.parametrize(
    ("received", "ahead", "late"),
    [("2026-12-07", 30, False), ("2026-12-08", 29, True), ("2026-12-27", 10, True)],
)
async def test_a_release_notice_opens_intake_after_release(
    fetch, staff, subject, store, clock, make_staff, received, ahead, late
):
    clock.set(local(2026, 12, 27, 9, 0))
    await signed_in(make_staff, staff)
    answer = await notice(fetch, staff, subject, "2027-01-06", received)
    assert answer.status == 201, answer.body
    program = answer.json
    assert (program["type"], program["status"]) == ("resettlement", "pending_intake")
    assert (program["start_date"], program["end_date"]) == ("2027-01-06", "2032-01-06")
    assert program["details"]["intake_due"] > "2027-01-06"
    recorded = program["details"]["release_notice"]
    assert (recorded["received_on"], recorded["days_ahead"], recorded["late"]) == (
        received,
        ahead,
        late,
    )
    assert recorded["rule"] == "resettlement.release_notice_days"
    assert recorded["rules_version"].startswith("national-")
    assert program["details"]["prison"] == "浙江省第二监狱"
    stored = await store.collection("programs").find_one({"_id": bson.ObjectId(program["id"])})
    assert "浙江省第二监狱".encode() not in bson.encode(stored)  # sealed with the person's key
    alerts = await fetch("/api/v1/alerts?status=open", token=staff["station"].token)
    (coming,) = [a for a in alerts.json["items"] if a["kind"] == "release_coming"]
    assert coming["details"]["program_id"] == program["id"]
    assert (coming["details"]["release_date"], coming["details"]["late"]) == ("2027-01-06", late)
    assert coming["details"]["intake_due"] == program["details"]["intake_due"]
    again = await notice(fetch, staff, subject, "2027-01-06", received)
    assert again.status == 409


async def test_a_release_notice_out_of_order_is_refused_with_the_field(
    fetch, staff, subject, store
):
    cases = [
        (("2026-12-06", "2026-12-07"), "release_date"),  # release before the notice
        (("2027-01-06", "2026-12-08"), "received_on"),  # received tomorrow
        (("2027-12-08", "2026-12-07"), "release_date"),  # a year and a day ahead
    ]
    for (release, received), field_name in cases:
        refused = await notice(fetch, staff, subject, release, received)
        assert refused.status == 422, (release, received)
        assert refused.error["details"][0]["field"] == field_name
    assert await store.collection("programs").count_documents({"subject_id": subject}) == 0
    health = await notice(fetch, staff, subject, "2027-01-06", "2026-12-07", who="health")
    assert health.status == 403
    # The limits themselves: released the day the notice came, and a year ahead exactly.
    same_day = await notice(fetch, staff, subject, "2026-12-07", "2026-12-07")
    assert same_day.status == 201 and same_day.json["details"]["release_notice"]["late"] is True


async def test_a_release_notice_a_year_ahead_is_accepted(fetch, staff, subject):
    answer = await notice(fetch, staff, subject, "2027-12-07", "2026-12-07")
    assert answer.status == 201, answer.body
    assert answer.json["details"]["release_notice"]["late"] is False


# --- item 6: juveniles stay juveniles ------------------------------------------------------


@pytest.mark.parametrize(
    ("birth", "juvenile_after_18"),
    [
        # The 18th birthday on the day corrections begin: still a minor that day (a 周岁 is
        # reached the day after the birthday), so the juvenile rules continue (Art. 58).
        (dt.date(2008, 12, 7), True),
        # The 18th birthday the day before: an adult when corrections began.
        (dt.date(2008, 12, 6), False),
    ],
)
async def test_a_minor_when_corrections_began_stays_juvenile_after_18(
    fetch, tree, staff, clock, make_staff, birth, juvenile_after_18
):
    clock.set(local(2026, 6, 1, 9, 0))
    await signed_in(make_staff, staff)
    sid = await new_subject(fetch, tree, staff, name="李小明", birth=birth)
    opened = await fetch(
        f"/api/v1/subjects/{sid}/programs",
        "POST",
        json_body={
            "type": "community_corrections",
            "start_date": "2026-12-07",
            "end_date": "2027-12-06",
            "sentence_type": "probation",
        },
        token=staff["station"].token,
    )
    assert opened.status == 201, opened.body
    clock.set(local(2027, 3, 1, 9, 0))
    await signed_in(make_staff, staff)
    read = await fetch(f"/api/v1/subjects/{sid}", token=staff["station"].token)
    edited = await fetch(
        f"/api/v1/subjects/{sid}",
        "PATCH",
        json_body={"version": read.json["version"], "phone": "13900001111"},
        token=staff["station"].token,
    )
    assert edited.status == 200, edited.body
    assert edited.json["juvenile"] is juvenile_after_18
    again = await fetch(f"/api/v1/subjects/{sid}", token=staff["station"].token)
    assert (again.json["name"] == "李小明") is not juvenile_after_18


# --- item 8: 社区戒毒 → 社区康复 ---------------------------------------------------------------


async def detox(fetch, staff, sid, start="2023-12-01"):
    opened = await fetch(
        f"/api/v1/subjects/{sid}/programs",
        "POST",
        json_body={"type": "drug_rehab", "mode": "community_detox", "start_date": start},
        token=staff["station"].token,
    )
    assert opened.status == 201, opened.body
    return opened.json


async def terminate(fetch, staff, program_id, body):
    return await fetch(
        f"/api/v1/programs/{program_id}/terminate",
        "POST",
        json_body=body,
        token=staff["station"].token,
    )


async def test_ending_detox_with_a_rehab_decision_opens_linked_rehab(fetch, staff, subject):
    program = await detox(fetch, staff, subject)
    assert program["end_date"] == "2026-12-01"
    ended = await terminate(
        fetch,
        staff,
        program["id"],
        {"kind": "completed", "date": "2026-12-01", "community_rehab": {"end_date": "2029-12-01"}},
    )
    assert ended.status == 200, ended.body
    assert ended.json["status"] == "ended"
    rehab_id = ended.json["details"]["chained_program_id"]
    assert ended.json["details"]["termination"]["community_rehab"] is True
    listed = (
        await fetch(f"/api/v1/subjects/{subject}/programs", token=staff["station"].token)
    ).json["items"]
    by_id = {p["id"]: p for p in listed}
    rehab = by_id[rehab_id]
    assert (rehab["type"], rehab["details"]["mode"], rehab["status"]) == (
        "drug_rehab",
        "community_rehab",
        "pending_intake",
    )
    assert (rehab["start_date"], rehab["end_date"]) == ("2026-12-01", "2029-12-01")
    assert rehab["details"]["from_program_id"] == program["id"]
    # Both histories kept: the detox program's opening and ending, the rehab's own opening.
    detox_after = by_id[program["id"]]
    assert detox_after["details"]["chained_program_id"] == rehab_id
    assert [h["to"] for h in detox_after["history"]] == ["pending_intake", "ended"]
    assert [h["to"] for h in rehab["history"]] == ["pending_intake"]


async def test_a_rehab_decision_at_its_limit_and_past_it(fetch, tree, staff, subject):
    program = await detox(fetch, staff, subject)
    past = await terminate(
        fetch,
        staff,
        program["id"],
        {"kind": "completed", "date": "2026-12-01", "community_rehab": {"end_date": "2029-12-02"}},
    )
    assert past.status == 422
    assert past.error["details"][0]["field"] == "community_rehab.end_date"
    died = await terminate(
        fetch, staff, program["id"], {"kind": "died", "date": "2026-12-01", "community_rehab": {}}
    )
    assert died.status == 422 and died.error["details"][0]["field"] == "community_rehab"
    still = await fetch(f"/api/v1/programs/{program['id']}", token=staff["station"].token)
    assert still.json["status"] == "pending_intake"  # nothing half written
    # Without an end date the rehab program runs its longest term.
    ended = await terminate(
        fetch, staff, program["id"], {"kind": "other", "date": "2026-12-01", "community_rehab": {}}
    )
    assert ended.status == 200, ended.body
    rehab = await fetch(
        f"/api/v1/programs/{ended.json['details']['chained_program_id']}",
        token=staff["station"].token,
    )
    assert rehab.json["end_date"] == "2029-12-01"
    # A corrections program has no 社区康复 to chain into.
    other = await new_subject(fetch, tree, staff)
    corrections = await fetch(
        f"/api/v1/subjects/{other}/programs",
        "POST",
        json_body={
            "type": "community_corrections",
            "start_date": "2026-02-09",
            "end_date": "2026-12-01",
            "sentence_type": "probation",
        },
        token=staff["station"].token,
    )
    refused = await terminate(
        fetch,
        staff,
        corrections.json["id"],
        {"kind": "completed", "date": "2026-12-01", "community_rehab": {}},
    )
    assert refused.status == 422 and refused.error["details"][0]["field"] == "community_rehab"


# --- item 9: cited and versioned -------------------------------------------------------------


def test_rules_that_lived_in_code_are_cited_in_the_rules_data():
    book = RuleBook.load()
    for key, value in (
        ("corrections.team_includes_woman", True),
        ("leave.return_overdue_after_days", 0),
        ("juvenile.adult_age", 18),
        (
            "elocation.grounds",
            [
                "breach_of_prohibition",
                "left_without_approval",
                "refused_report_after_warning",
                "public_security_penalty",
                "revocation_pending",
            ],
        ),
    ):
        rule = book.rules[key]
        assert rule.value == value and rule.source, key
    assert "Art. 25" in book.rules["corrections.team_includes_woman"].source
    assert "Art. 29" in book.rules["elocation.grounds"].source
    assert "Art. 58" in book.rules["juvenile.adult_age"].source
    # Statute fixes these: no jurisdiction drops the woman, changes the age or adds a ground.
    for key, value in (
        ("corrections.team_includes_woman", False),
        ("juvenile.adult_age", 17),
        ("elocation.grounds", ["left_without_approval", "curfew_breach"]),
    ):
        with pytest.raises(InvalidInput):
            book.check_override({key: value})
    assert book.check_override({"elocation.grounds": ["revocation_pending"]})


async def test_a_county_that_narrows_the_grounds_refuses_the_others(fetch, tree, staff, subject):
    await fetch(
        f"/api/v1/subjects/{subject}/programs",
        "POST",
        json_body={
            "type": "community_corrections",
            "start_date": "2026-01-05",
            "end_date": "2028-01-04",
            "sentence_type": "probation",
            "prohibitions": ["不得进入夜总会、酒吧"],
        },
        token=staff["station"].token,
    )
    narrowed = await fetch(
        f"/api/v1/rules/{tree.county.code}",
        "PUT",
        json_body={"rules": {"elocation.grounds": ["revocation_pending"]}, "source": "测试"},
        token=staff["county"].token,
    )
    assert narrowed.status == 200, narrowed.body
    refused = await fetch(
        f"/api/v1/subjects/{subject}/elocation-orders",
        "POST",
        json_body={
            "ground": "breach_of_prohibition",
            "prohibition_index": 0,
            "start_date": "2026-12-08",
            "end_date": "2027-01-07",
            "reason": "违反禁止令进入酒吧",
        },
        token=staff["station"].token,
    )
    assert refused.status == 422
    assert {"field": "ground", "rule": "elocation.grounds"} in refused.error["details"]


async def test_overdue_return_alert_waits_the_jurisdictions_days(
    fetch, tree, staff, subject, services, store
):
    await fetch(
        f"/api/v1/subjects/{subject}/programs",
        "POST",
        json_body={
            "type": "community_corrections",
            "start_date": "2026-01-05",
            "end_date": "2028-01-04",
            "sentence_type": "probation",
        },
        token=staff["station"].token,
    )
    asked = await fetch(
        f"/api/v1/subjects/{subject}/leave-requests",
        "POST",
        json_body={
            "start_date": "2026-12-08",
            "end_date": "2026-12-10",
            "destination": "浙江省杭州市西湖区",
            "reason": "探望住院的母亲",
        },
        token=staff["station"].token,
    )
    assert asked.status == 201, asked.body
    decided = await fetch(
        f"/api/v1/leave-requests/{asked.json['id']}/decision",
        "POST",
        json_body={"approve": True, "comment": "同意"},
        token=staff["station"].token,
    )
    assert decided.json["status"] == "approved", decided.body
    override = await fetch(
        f"/api/v1/rules/{tree.county.code}",
        "PUT",
        json_body={"rules": {"leave.return_overdue_after_days": 2}, "source": "县局：两日后提醒"},
        token=staff["county"].token,
    )
    assert override.status == 200
    # The last day was 10 December: two days' grace run to the 12th, the alert comes on the 13th.
    assert await services.leave.alert_overdue_returns(dt.date(2026, 12, 12)) == 0
    assert await services.leave.alert_overdue_returns(dt.date(2026, 12, 13)) == 1
    raised = await store.collection("alerts").find_one({"kind": "leave_return_overdue"})
    assert raised["details"]["rule"] == "leave.return_overdue_after_days"
    assert f"{tree.county.code}@1" in raised["details"]["rules_version"]
    assert raised["rules_version"] == raised["details"]["rules_version"]


async def test_every_decision_record_stores_its_rules_version(
    fetch, tree, staff, store, services, make_staff
):
    coordinator = await make_staff(Role.ASSISTANCE_COORDINATOR, tree.station)
    coordinator.token = await make_staff.token_for(coordinator)
    station, county = staff["station"].token, staff["county"].token
    # A woman under corrections: her team (with a woman), intake, a level change, leave.
    her = await new_subject(fetch, tree, staff, name="李娜", gender="female")
    team = await fetch(
        f"/api/v1/subjects/{her}/assignments",
        "PUT",
        json_body={
            "social_worker_ids": [staff["social"].id],
            "team": [{"name": "刘姐", "relation": "志愿者", "gender": "female"}],
        },
        token=station,
    )
    assert team.status == 200, team.body
    corrections = await fetch(
        f"/api/v1/subjects/{her}/programs",
        "POST",
        json_body={
            "type": "community_corrections",
            "start_date": "2026-11-02",
            "end_date": "2028-11-01",
            "sentence_type": "probation",
        },
        token=station,
    )
    pid = corrections.json["id"]
    for path, body in (
        ("intake", {"date": "2026-11-05"}),
        ("supervision-level", {"level": "strict", "from_date": "2027-01-02", "reason": "评估"}),
    ):
        moved = await fetch(f"/api/v1/programs/{pid}/{path}", "POST", json_body=body, token=station)
        assert moved.status == 200, moved.body
    leave = await fetch(
        f"/api/v1/subjects/{her}/leave-requests",
        "POST",
        json_body={
            "start_date": "2026-12-08",
            "end_date": "2026-12-09",
            "destination": "浙江省杭州市",
            "reason": "探亲",
        },
        token=station,
    )
    await fetch(
        f"/api/v1/leave-requests/{leave.json['id']}/decision",
        "POST",
        json_body={"approve": True, "comment": "同意"},
        token=station,
    )
    # A release notice (a program and an alert), detox chained into rehab, a missed intake.
    released = await new_subject(fetch, tree, staff)
    assert (await notice(fetch, staff, released, "2026-12-20", "2026-12-07")).status == 201
    addict = await new_subject(fetch, tree, staff)
    program = await detox(fetch, staff, addict)
    chained = await terminate(
        fetch,
        staff,
        program["id"],
        {"kind": "completed", "date": "2026-12-01", "community_rehab": {}},
    )
    assert chained.status == 200, chained.body
    assert await services.programs.alert_missed_intakes(dt.date(2027, 2, 1)) >= 1
    # A placement at 阳光之家, and its stay extended by the county.
    home = await fetch(
        "/api/v1/assistance/facilities",
        "POST",
        json_body={
            "name": "鹿城阳光之家",
            "kind": "sunshine_home",
            "org_id": tree.county.id,
            "capacity": 1,
            "coordinator_ids": [coordinator.id],
        },
        token=county,
    )
    referral = await fetch(
        "/api/v1/assistance/referrals",
        "POST",
        json_body={"subject_id": her, "needs": ["housing"], "resource_id": home.json["id"]},
        token=staff["social"].token,
    )
    rid = referral.json["id"]
    for token, step in (
        (station, {"to": "approved"}),
        (staff["social"].token, {"to": "offered", "resource_id": home.json["id"]}),
        (staff["social"].token, {"to": "accepted"}),
    ):
        await fetch(
            f"/api/v1/assistance/referrals/{rid}/transition", "POST", json_body=step, token=token
        )
    placed = await fetch(
        "/api/v1/assistance/placements",
        "POST",
        json_body={"referral_id": rid, "resource_id": home.json["id"]},
        token=coordinator.token,
    )
    assert placed.status in (200, 201), placed.body
    extended = await fetch(
        f"/api/v1/assistance/placements/{placed.json['id']}/extension",
        "POST",
        json_body={"until": "2027-04-30", "reason": "仍在找工作"},
        token=county,
    )
    assert extended.status == 200, extended.body

    missing: list[str] = []

    def need(where: str, record: dict) -> None:
        if not str(record.get("rules_version") or "").startswith("national-"):
            missing.append(where)

    walked: dict[str, int] = {}
    for name in ("programs", "alerts", "placements", "leave_requests"):
        async for doc in store.collection(name).find():
            walked[name] = walked.get(name, 0) + 1
            need(f"{name} {doc['_id']}", doc.get("approval") or doc)
            for entry in doc.get("history") or []:
                need(f"{name} {doc['_id']} history", entry)
            for entry in (doc.get("details") or {}).get("level_history") or []:
                need(f"{name} {doc['_id']} level", entry)
            for entry in doc.get("extensions") or []:
                need(f"{name} {doc['_id']} extension", entry)
            for entry in (doc.get("approval") or {}).get("steps") or []:
                need(f"{name} {doc['_id']} step", entry)
    assignments = (await store.collection("subjects").find_one({"_id": bson.ObjectId(her)}))[
        "assignments"
    ]
    need("subjects assignments", assignments)
    assert not missing, missing
    assert walked["programs"] >= 4 and walked["alerts"] >= 2
    assert walked["placements"] == 1 and walked["leave_requests"] == 1
    placement = await store.collection("placements").find_one()
    assert len(placement["extensions"]) == 1

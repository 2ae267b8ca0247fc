"""Programs for the four populations and the rules they enforce, at their boundaries."""

from __future__ import annotations

import bson
import pytest

from models.policy import Role
from server.app import SYSTEM
from tests.subject_factories import subject_body


@pytest.fixture
async def staff(tree, make_staff):
    accounts = {
        "station": await make_staff(Role.STATION_OFFICER, tree.station),
        "county": await make_staff(Role.COUNTY_OFFICER, tree.county),
        "health": await make_staff(Role.HEALTH_WORKER, tree.county),
        "social": await make_staff(Role.SOCIAL_WORKER, tree.station),
        "sysadmin": await make_staff(Role.SYS_ADMIN, tree.city),
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
    return answer.json["id"]


async def open_program(fetch, staff, subject_id, body, who="station"):
    return await fetch(
        f"/api/v1/subjects/{subject_id}/programs", "POST", json_body=body, token=staff[who].token
    )


def corrections(**extra):
    return {
        "type": "community_corrections",
        "start_date": "2026-02-09",
        "end_date": "2027-02-08",
        "sentence_type": "probation",
        **extra,
    }


def rules_by_kind(program):
    return [
        (
            r["kind"],
            r["start"],
            r["end"],
            r["every_days"] or r["every_months"] or r["hours_per_month"],
        )
        for r in program["obligation_rules"]
    ]


async def test_intake_within_ten_days_moves_past_the_spring_festival(fetch, staff, subject):
    opened = await open_program(fetch, staff, subject, corrections())
    assert opened.status == 201
    program = opened.json
    assert program["status"] == "pending_intake"
    # 社区矫正法 Art. 21 says 十日内, counted as 刑事诉讼法 Art. 105 counts: from Monday 9 Feb
    # 2026 (not counted) the 10th day is Thursday 19 Feb, inside the holiday of 15-23 Feb, so
    # the period ends on the first working day after it, Tuesday 24 Feb (not the 10th working
    # day, 28 Feb, as counting working days said).
    assert program["details"]["intake_due"] == "2026-02-24"
    assert program["details"]["intake_due_provisional"] is False
    assert program["rules_version"].startswith("national-")
    on_day_10 = await fetch(
        f"/api/v1/programs/{program['id']}/intake",
        "POST",
        json_body={"date": "2026-02-24"},
        token=staff["station"].token,
    )
    assert on_day_10.status == 200
    assert on_day_10.json["status"] == "active"
    assert on_day_10.json["details"]["intake_late"] is False
    again = await fetch(
        f"/api/v1/programs/{program['id']}/intake",
        "POST",
        json_body={"date": "2026-03-02"},
        token=staff["station"].token,
    )
    assert again.status == 409


async def test_an_intake_the_day_after_the_shifted_last_day_is_late(fetch, staff, subject):
    program = (await open_program(fetch, staff, subject, corrections())).json
    late = await fetch(
        f"/api/v1/programs/{program['id']}/intake",
        "POST",
        json_body={"date": "2026-02-25"},
        token=staff["station"].token,
    )
    assert late.json["details"]["intake_late"] is True


async def test_new_subjects_are_strict_for_exactly_two_months(fetch, staff, subject):
    body = corrections(start_date="2026-01-31", end_date="2027-01-30", supervision_level="lenient")
    program = (await open_program(fetch, staff, subject, body)).json
    assert program["details"]["strict_until"] == "2026-03-31"  # 31 Jan + 2 months
    reports = [r for r in rules_by_kind(program) if r[0] == "in_person_report"]
    assert reports == [
        ("in_person_report", "2026-01-31", "2026-03-31", 7),
        ("in_person_report", "2026-03-31", "2027-01-30", 60),
    ]
    hours = [r for r in rules_by_kind(program) if r[0] == "education"]
    assert hours == [
        ("education", "2026-01-31", "2026-03-31", 12),
        ("education", "2026-03-31", "2027-01-30", 4),
    ]


async def test_a_level_change_reschedules_what_lies_ahead(fetch, staff, subject):
    program = (await open_program(fetch, staff, subject, corrections())).json
    changed = await fetch(
        f"/api/v1/programs/{program['id']}/supervision-level",
        "POST",
        json_body={"level": "strict", "from_date": "2026-08-01", "reason": "考核不合格"},
        token=staff["station"].token,
    )
    assert changed.status == 200
    reports = [r for r in rules_by_kind(changed.json) if r[0] == "in_person_report"]
    assert reports == [
        ("in_person_report", "2026-02-09", "2026-04-09", 7),
        ("in_person_report", "2026-04-09", "2026-08-01", 30),
        ("in_person_report", "2026-08-01", "2027-02-08", 7),
    ]
    history = changed.json["details"]["level_history"]
    assert history[0]["rules_version"] == program["rules_version"]


async def test_medical_parole_has_a_reexamination_every_three_months(fetch, staff, subject):
    program = (
        await open_program(fetch, staff, subject, corrections(sentence_type="medical_parole"))
    ).json
    assert ("medical_reexam", "2026-02-09", "2027-02-08", 3) in rules_by_kind(program)
    probation = [r for r in rules_by_kind(program) if r[0] == "medical_reexam"]
    assert len(probation) == 1


async def test_drug_test_cadence_changes_at_each_anniversary(fetch, staff, subject):
    program = (
        await open_program(
            fetch,
            staff,
            subject,
            {"type": "drug_rehab", "start_date": "2026-03-15", "mode": "community_detox"},
        )
    ).json
    assert program["end_date"] == "2029-03-15"
    assert program["details"]["intake_due"] == "2026-03-30"  # report within 15 days
    assert [r for r in rules_by_kind(program) if r[0] == "drug_test"] == [
        ("drug_test", "2026-03-15", "2027-03-15", 1),
        ("drug_test", "2027-03-15", "2028-03-15", 2),
        ("drug_test", "2028-03-15", "2029-03-15", 3),
    ]


async def test_drug_rehab_terms_are_statutory(fetch, staff, subject):
    detox = await open_program(
        fetch,
        staff,
        subject,
        {
            "type": "drug_rehab",
            "start_date": "2026-03-15",
            "end_date": "2027-03-15",
            "mode": "community_detox",
        },
    )
    assert detox.status == 422 and detox.error["details"][0]["field"] == "end_date"
    too_long = await open_program(
        fetch,
        staff,
        subject,
        {
            "type": "drug_rehab",
            "start_date": "2026-03-15",
            "end_date": "2029-03-16",
            "mode": "community_rehab",
        },
    )
    assert too_long.status == 422
    short = await open_program(
        fetch,
        staff,
        subject,
        {
            "type": "drug_rehab",
            "start_date": "2026-03-15",
            "end_date": "2027-09-15",
            "mode": "community_rehab",
        },
    )
    assert short.status == 201
    assert [r[3] for r in rules_by_kind(short.json)] == [1, 2]


@pytest.mark.parametrize(("level", "days"), [(0, 90), (1, 14), (2, 14), (3, 14), (4, 14), (5, 14)])
async def test_follow_up_interval_follows_the_risk_level(fetch, staff, subject, level, days):
    program = await open_program(
        fetch,
        staff,
        subject,
        {
            "type": "mental_health",
            "start_date": "2026-01-05",
            "diagnosis": "精神分裂症",
            "risk_level": level,
            "guardian": {"name": "家属", "phone": "13900000000", "relation": "母亲"},
        },
        who="health",
    )
    assert program.status == 201
    assert program.json["status"] == "active"
    assert rules_by_kind(program.json) == [("mental_followup", "2026-01-05", None, days)]


async def test_a_risk_change_starts_a_new_follow_up_period(fetch, staff, subject):
    program = (
        await open_program(
            fetch,
            staff,
            subject,
            {
                "type": "mental_health",
                "start_date": "2026-01-05",
                "diagnosis": "双相情感障碍",
                "risk_level": 0,
                "guardian": {"name": "家属", "phone": "13900000000", "relation": "父亲"},
            },
            who="health",
        )
    ).json
    raised = await fetch(
        f"/api/v1/programs/{program['id']}/risk",
        "POST",
        json_body={"level": 3, "on": "2026-06-01", "reason": "病情波动"},
        token=staff["health"].token,
    )
    assert rules_by_kind(raised.json) == [
        ("mental_followup", "2026-01-05", "2026-06-01", 90),
        ("mental_followup", "2026-06-01", None, 14),
    ]
    assert raised.json["details"]["subsidy"]["years"] == {"2026": True}
    incident = await fetch(
        f"/api/v1/programs/{program['id']}/incidents",
        "POST",
        json_body={"on": "2026-07-01"},
        token=staff["health"].token,
    )
    assert incident.json["details"]["subsidy"]["years"] == {"2026": False}


async def test_health_details_are_for_health_roles_and_assigned_workers(fetch, staff, subject):
    await open_program(
        fetch,
        staff,
        subject,
        {
            "type": "mental_health",
            "start_date": "2026-01-05",
            "diagnosis": "精神分裂症",
            "risk_level": 2,
            "guardian": {"name": "家属", "phone": "13900000000", "relation": "母亲"},
        },
        who="health",
    )
    officer = await fetch(f"/api/v1/subjects/{subject}/programs", token=staff["station"].token)
    seen = officer.json["items"][0]
    assert "diagnosis" not in seen["details"] and "risk_level" not in seen["details"]
    health = await fetch(f"/api/v1/subjects/{subject}/programs", token=staff["health"].token)
    assert health.json["items"][0]["details"]["diagnosis"] == "精神分裂症"
    # The open mental-health program puts the person in the health worker's scope.
    assert (await fetch(f"/api/v1/subjects/{subject}", token=staff["health"].token)).status == 200
    corrections_by_health = await open_program(fetch, staff, subject, corrections(), who="health")
    assert corrections_by_health.status == 422


async def test_a_risk_changes_reason_is_kept_sealed_for_those_who_see_health_data(
    fetch, staff, subject, services, store
):
    program = (
        await open_program(
            fetch,
            staff,
            subject,
            {
                "type": "mental_health",
                "start_date": "2026-01-05",
                "diagnosis": "精神分裂症",
                "risk_level": 1,
                "guardian": {"name": "家属", "phone": "13900000000", "relation": "母亲"},
            },
            who="health",
        )
    ).json
    reason = "停药两周，夜间吵闹 RISKREASON7Q"
    raised = await fetch(
        f"/api/v1/programs/{program['id']}/risk",
        "POST",
        json_body={"level": 2, "on": "2026-06-01", "reason": reason},
        token=staff["health"].token,
    )
    assert raised.status == 200, raised.body
    assert raised.json["details"]["risk_history"][-1]["reason"] == reason
    stored = await store.collection("programs").find_one({"subject_id": subject})
    assert b"RISKREASON7Q" not in bson.encode(stored)
    officer = await fetch(f"/api/v1/programs/{program['id']}", token=staff["station"].token)
    assert "risk_history" not in officer.json["details"]
    # Rotating the person's key re-seals the reason with the rest of the file.
    await services.subjects.rotate_data_key(SYSTEM, subject)
    again = await fetch(f"/api/v1/programs/{program['id']}", token=staff["health"].token)
    assert again.json["details"]["risk_history"][-1]["reason"] == reason
    blank = await fetch(
        f"/api/v1/programs/{program['id']}/risk",
        "POST",
        json_body={"level": 2, "on": "2026-06-02", "reason": "   "},
        token=staff["health"].token,
    )
    assert blank.status == 422
    assert blank.error["details"] == [{"field": "reason"}]


async def test_resettlement_runs_five_years_from_release(fetch, staff, subject):
    program = (
        await open_program(
            fetch,
            staff,
            subject,
            {
                "type": "resettlement",
                "start_date": "2026-06-01",
                "release_date": "2026-06-01",
                "key_person": True,
            },
        )
    ).json
    assert (program["start_date"], program["end_date"]) == ("2026-06-01", "2031-06-01")
    assert program["details"]["term_from"] == "release"
    kinds = rules_by_kind(program)
    assert kinds == [("contact", "2026-06-01", "2031-06-01", 30)]  # 重点帮教: monthly


async def test_ending_corrections_opens_resettlement_from_its_end(fetch, staff, subject):
    program = (await open_program(fetch, staff, subject, corrections())).json
    await fetch(
        f"/api/v1/programs/{program['id']}/intake",
        "POST",
        json_body={"date": "2026-02-20"},
        token=staff["station"].token,
    )
    ended = await fetch(
        f"/api/v1/programs/{program['id']}/transition",
        "POST",
        json_body={"to": "ended", "reason": "completed", "effective_date": "2027-02-08"},
        token=staff["station"].token,
    )
    assert ended.status == 200 and ended.json["status"] == "ended"
    listed = (
        await fetch(f"/api/v1/subjects/{subject}/programs", token=staff["station"].token)
    ).json["items"]
    resettlement = next(p for p in listed if p["type"] == "resettlement")
    assert (resettlement["start_date"], resettlement["end_date"]) == ("2027-02-08", "2032-02-08")
    assert resettlement["details"]["term_from"] == "end_of_corrections"
    # Free citizens: no location check-ins unless they volunteer.
    assert all(r["kind"] != "remote_checkin" for r in resettlement["obligation_rules"])


async def test_volunteers_alone_get_location_check_ins_in_resettlement(fetch, staff, subject):
    program = (
        await open_program(
            fetch,
            staff,
            subject,
            {
                "type": "resettlement",
                "start_date": "2026-06-01",
                "release_date": "2026-06-01",
                "volunteer_checkins": True,
            },
        )
    ).json
    assert "remote_checkin" in {r["kind"] for r in program["obligation_rules"]}


async def test_forbidden_transitions_answer_409_with_the_state(fetch, staff, subject):
    program = (await open_program(fetch, staff, subject, corrections())).json
    path = f"/api/v1/programs/{program['id']}/transition"
    suspended = await fetch(
        path, "POST", json_body={"to": "suspended", "reason": "外出"}, token=staff["station"].token
    )
    assert suspended.status == 409
    assert suspended.error["details"] == {"status": "pending_intake"}
    ended = await fetch(
        path, "POST", json_body={"to": "ended", "reason": "死亡"}, token=staff["station"].token
    )
    assert ended.status == 200
    revived = await fetch(
        path, "POST", json_body={"to": "active", "reason": "误操作"}, token=staff["station"].token
    )
    assert revived.status == 409 and revived.error["details"] == {"status": "ended"}


async def test_one_open_program_of_a_kind_at_a_time(fetch, staff, subject):
    assert (await open_program(fetch, staff, subject, corrections())).status == 201
    again = await open_program(fetch, staff, subject, corrections())
    assert again.status == 409 and again.error["code"] == "exists"
    other_kind = await open_program(
        fetch,
        staff,
        subject,
        {"type": "drug_rehab", "start_date": "2026-03-15", "mode": "community_detox"},
    )
    assert other_kind.status == 201


@pytest.mark.parametrize(
    ("body", "field"),
    [
        (
            {
                "type": "community_corrections",
                "start_date": "2026-02-09",
                "sentence_type": "probation",
            },
            "end_date",
        ),
        (corrections(end_date="2026-02-01"), "end_date"),
        (corrections(sentence_type="house_arrest"), "sentence_type"),
        (
            {
                "type": "mental_health",
                "start_date": "2026-01-05",
                "diagnosis": "x",
                "risk_level": 6,
                "guardian": {"name": "a", "phone": "13900000000", "relation": "b"},
            },
            "risk_level",
        ),
        (
            {
                "type": "mental_health",
                "start_date": "2026-01-05",
                "diagnosis": "x",
                "risk_level": 1,
                "guardian": {"name": "a"},
            },
            "guardian.phone",
        ),
        ({"type": "witness_protection", "start_date": "2026-01-05"}, "type"),
    ],
)
async def test_program_fields_are_validated_by_name(fetch, staff, subject, body, field):
    answer = await open_program(
        fetch, staff, subject, body, who="health" if body["type"] == "mental_health" else "station"
    )
    assert answer.status == 422
    assert field in [item.get("field") for item in answer.error["details"]]


async def test_a_province_override_changes_the_outcome(fetch, staff, subject, tree):
    put = await fetch(
        "/api/v1/rules/33",
        "PUT",
        token=staff["sysadmin"].token,
        json_body={
            "rules": {"corrections.intake_days": 5},
            "source": "浙江省社区矫正实施细则 (test)",
        },
    )
    assert put.status == 200 and put.json["version"] == 1
    program = (await open_program(fetch, staff, subject, corrections())).json
    # 5 days from Monday 9 Feb end on Saturday 14 Feb, a 调休 working day: it stays the last day.
    assert program["details"]["intake_due"] == "2026-02-14"
    assert "33@1" in program["rules_version"]
    # A county's own override wins over its province's.
    county = await fetch(
        f"/api/v1/rules/{tree.county.code}",
        "PUT",
        token=staff["county"].token,
        json_body={"rules": {"corrections.intake_days": 7}, "source": "区司法局通知"},
    )
    assert county.status == 200
    effective = await fetch(
        f"/api/v1/rules/effective?org_id={tree.station.id}", token=staff["station"].token
    )
    rule = next(r for r in effective.json["rules"] if r["key"] == "corrections.intake_days")
    assert rule["value"] == 7 and tree.county.code in rule["source"]
    assert f"{tree.county.code}@1" in effective.json["version"]


async def test_overrides_are_checked_and_scoped(fetch, staff, tree):
    bad_value = await fetch(
        f"/api/v1/rules/{tree.county.code}",
        "PUT",
        token=staff["county"].token,
        json_body={"rules": {"corrections.intake_days": 0}, "source": "x1"},
    )
    assert bad_value.status == 422
    assert bad_value.error["details"][0]["field"] == "rules.corrections.intake_days"
    unknown = await fetch(
        f"/api/v1/rules/{tree.county.code}",
        "PUT",
        token=staff["county"].token,
        json_body={"rules": {"corrections.naps_per_day": 2}, "source": "x1"},
    )
    assert unknown.status == 422
    elsewhere = await fetch(
        f"/api/v1/rules/{tree.county.code}",
        "PUT",
        token=staff["other_county"].token,
        json_body={"rules": {}, "source": "x1"},
    )
    assert elsewhere.status == 404
    province = await fetch(
        "/api/v1/rules/33",
        "PUT",
        token=staff["county"].token,
        json_body={"rules": {}, "source": "x1"},
    )
    assert province.status == 404


async def test_an_investigation_runs_from_court_to_station_by_its_deadline(
    fetch, staff, subject, tree, make_staff
):
    other_station = await make_staff(Role.STATION_OFFICER, tree.station2)
    other_station.token = await make_staff.token_for(other_station)
    requested = await fetch(
        "/api/v1/investigations",
        "POST",
        token=staff["county"].token,
        json_body={"subject_id": subject, "court": "鹿城区人民法院", "requested_on": "2026-09-18"},
    )
    assert requested.status == 201
    investigation = requested.json
    # 10 working days from Friday 18 Sep 2026, across 中秋 and the National Day holiday with
    # its 调休 working Sunday 20 Sep: Friday 9 Oct.
    assert investigation["due"] == "2026-10-09"
    path = f"/api/v1/investigations/{investigation['id']}"
    # Until the county assigns it, the station does not see it, and nobody can report.
    opinion = {"recommendation": "suitable", "opinion": "家庭支持良好", "on": "2026-10-08"}
    hidden = await fetch(f"{path}/report", "POST", token=staff["station"].token, json_body=opinion)
    assert hidden.status == 404
    early = await fetch(f"{path}/report", "POST", token=staff["county"].token, json_body=opinion)
    assert early.status == 409 and early.error["details"] == {"status": "requested"}
    assigned = await fetch(
        f"{path}/assign",
        "POST",
        token=staff["county"].token,
        json_body={"station_id": tree.station.id},
    )
    assert assigned.status == 200 and assigned.json["status"] == "assigned"
    assert (await fetch(path, token=other_station.token)).status == 404
    reported = await fetch(
        f"{path}/report",
        "POST",
        token=staff["station"].token,
        json_body={
            "recommendation": "suitable",
            "opinion": "家庭支持良好，社区同意接收",
            "on": "2026-10-09",
        },
    )
    assert reported.status == 200
    assert reported.json["late"] is False and reported.json["opinion"].startswith("家庭")
    closed = await fetch(f"{path}/close", "POST", token=staff["county"].token, json_body={})
    assert closed.json["status"] == "closed"
    again = await fetch(
        f"{path}/close", "POST", token=staff["county"].token, json_body={"withdrawn": True}
    )
    assert again.status == 409 and again.error["details"] == {"status": "closed"}


async def test_an_expedited_investigation_has_five_working_days(fetch, staff, subject):
    requested = await fetch(
        "/api/v1/investigations",
        "POST",
        token=staff["county"].token,
        json_body={
            "subject_id": subject,
            "court": "鹿城区人民法院",
            "requested_on": "2026-09-18",
            "expedited": True,
        },
    )
    # 20 (a 调休 Sunday), 21, 22, 23, 24 September.
    assert requested.json["due"] == "2026-09-24"


async def set_retention(fetch, staff, security, code: str, years: int) -> None:
    """An irreversible rule: the county proposes, the security administrator confirms."""
    proposed = await fetch(
        f"/api/v1/rules/{code}/proposals",
        "POST",
        token=staff["county"].token,
        json_body={"rules": {"retention.shred_after_years": years}, "source": "档案规定"},
    )
    assert proposed.status == 201, proposed.body
    confirmed = await fetch(
        f"/api/v1/rule-proposals/{proposed.json['id']}/decision",
        "POST",
        token=security.token,
        json_body={"confirm": True},
    )
    assert confirmed.status == 200, confirmed.body


async def test_retention_shreds_only_where_a_period_is_set(
    fetch, staff, subject, tree, services, make_staff
):
    import datetime as dt

    from jobs.sweeps import RetentionSweep
    from server.jobs import JOBS_ACTOR

    program = (
        await open_program(
            fetch,
            staff,
            subject,
            {"type": "drug_rehab", "start_date": "2016-03-15", "mode": "community_detox"},
        )
    ).json
    ended = await fetch(
        f"/api/v1/programs/{program['id']}/transition",
        "POST",
        json_body={"to": "ended", "reason": "期满", "effective_date": "2019-03-15"},
        token=staff["station"].token,
    )
    assert ended.status == 200
    sweep = RetentionSweep(services.programs, services.subjects, JOBS_ACTOR)
    now = dt.datetime(2026, 11, 24, tzinfo=dt.UTC)
    assert await sweep.run(now) == {"shredded": 0}  # no period set: never destroyed
    security = await make_staff(Role.SECURITY_ADMIN, tree.county)
    security.token = await make_staff.token_for(security)
    await set_retention(fetch, staff, security, tree.county.code, 8)
    assert await sweep.run(now) == {"shredded": 0}  # 2019 + 8 years is still ahead
    await set_retention(fetch, staff, security, tree.county.code, 5)
    assert await sweep.run(now) == {"shredded": 1}
    read = await fetch(f"/api/v1/subjects/{subject}", token=staff["station"].token)
    assert read.json["status"] == "shredded" and read.json["name"] is None
    assert await sweep.run(now) == {"shredded": 0}


async def test_a_year_without_its_holiday_calendar_gets_a_provisional_deadline(
    fetch, staff, subject
):
    """Found by fuzzing the API: a date the holiday calendar does not cover answered 500."""
    opened = await open_program(
        fetch, staff, subject, corrections(start_date="2000-03-01", end_date="2001-03-01")
    )
    assert opened.status == 201, opened.body
    assert opened.json["details"]["intake_due_provisional"] is True
    # 10 days from Wednesday 1 March 2000 end on Saturday 11 March; with weekends alone known
    # as rest days the period ends on Monday 13 March, provisionally.
    assert opened.json["details"]["intake_due"] == "2000-03-13"
    requested = await fetch(
        "/api/v1/investigations",
        "POST",
        token=staff["county"].token,
        json_body={"subject_id": subject, "court": "鹿城区人民法院", "requested_on": "2000-01-03"},
    )
    assert requested.status == 201, requested.body
    assert requested.json["due"] == "2000-01-17"


# --- irreversible rules: a case-side officer proposes, the security administrator confirms -----


def retention(effective) -> tuple[int, str]:
    rule = next(r for r in effective.json["rules"] if r["key"] == "retention.shred_after_years")
    return rule["value"], rule["source"]


@pytest.fixture
async def security(tree, make_staff):
    account = await make_staff(Role.SECURITY_ADMIN, tree.county)
    account.token = await make_staff.token_for(account)
    return account


async def test_the_sys_admin_cannot_set_a_retention_period(fetch, staff, tree):
    for who in ("sysadmin", "county"):
        refused = await fetch(
            f"/api/v1/rules/{tree.county.code}",
            "PUT",
            token=staff[who].token,
            json_body={"rules": {"retention.shred_after_years": 1}, "source": "内部人"},
        )
        assert refused.status == 403 and refused.error["code"] == "irreversible_rule", who
        assert refused.error["details"] == [
            {"field": "rules.retention.shred_after_years", "type": "irreversible"}
        ]
        assert "security administrator" in refused.error["message"]
    # Nor may it propose: proposing is the case side's act.
    proposed = await fetch(
        f"/api/v1/rules/{tree.county.code}/proposals",
        "POST",
        token=staff["sysadmin"].token,
        json_body={"rules": {"retention.shred_after_years": 1}, "source": "内部人"},
    )
    assert proposed.status == 403
    effective = await fetch(
        f"/api/v1/rules/effective?org_id={tree.county.id}", token=staff["county"].token
    )
    assert retention(effective)[0] == 0


async def test_a_retention_period_takes_effect_only_when_confirmed(
    fetch, staff, tree, security, services
):
    proposed = await fetch(
        f"/api/v1/rules/{tree.county.code}/proposals",
        "POST",
        token=staff["county"].token,
        json_body={"rules": {"retention.shred_after_years": 10}, "source": "浙江省档案管理办法"},
    )
    assert proposed.status == 201 and proposed.json["status"] == "proposed"
    assert proposed.json["proposed_by"] == staff["county"].id
    effective = f"/api/v1/rules/effective?org_id={tree.county.id}"
    assert retention(await fetch(effective, token=staff["county"].token))[0] == 0
    listed = await fetch("/api/v1/rule-proposals?status=proposed", token=security.token)
    assert [item["id"] for item in listed.json["items"]] == [proposed.json["id"]]
    decision = f"/api/v1/rule-proposals/{proposed.json['id']}/decision"
    # The proposer's side cannot confirm (the route is the security administrator's).
    assert (
        await fetch(decision, "POST", token=staff["county"].token, json_body={"confirm": True})
    ).status == 403
    confirmed = await fetch(decision, "POST", token=security.token, json_body={"confirm": True})
    assert confirmed.status == 200 and confirmed.json["status"] == "confirmed"
    assert confirmed.json["decided_by"] == security.id
    value, source = retention(await fetch(effective, token=staff["county"].token))
    assert value == 10 and tree.county.code in source
    again = await fetch(decision, "POST", token=security.token, json_body={"confirm": False})
    assert again.status == 409 and again.error["details"] == {"status": "confirmed"}
    # A replacement of the county's reversible rules leaves the confirmed period alone.
    replaced = await fetch(
        f"/api/v1/rules/{tree.county.code}",
        "PUT",
        token=staff["county"].token,
        json_body={"rules": {"corrections.intake_days": 7}, "source": "区司法局通知"},
    )
    assert replaced.status == 200
    assert replaced.json["rules"]["retention.shred_after_years"] == 10
    assert retention(await fetch(effective, token=staff["county"].token))[0] == 10
    # A refusal changes nothing.
    lower = await fetch(
        f"/api/v1/rules/{tree.county.code}/proposals",
        "POST",
        token=staff["county"].token,
        json_body={"rules": {"retention.shred_after_years": 1}, "source": "提前销毁"},
    )
    refused = await fetch(
        f"/api/v1/rule-proposals/{lower.json['id']}/decision",
        "POST",
        token=security.token,
        json_body={"confirm": False},
    )
    assert refused.status == 200 and refused.json["status"] == "refused"
    assert retention(await fetch(effective, token=staff["county"].token))[0] == 10
    actions = [
        (e["action"], e["actor_id"])
        for e in await services.audit.entries_for(proposed.json["id"])
        if not e["action"].endswith(".outcome")
    ]
    assert sorted(actions) == [
        ("rules.confirm", security.id),
        ("rules.propose", staff["county"].id),
    ]


async def test_the_proposer_cannot_confirm_their_own_proposal(
    fetch, staff, tree, security, make_staff
):
    """The county officer who proposed is later made a security administrator: still not."""
    proposed = await fetch(
        f"/api/v1/rules/{tree.county.code}/proposals",
        "POST",
        token=staff["county"].token,
        json_body={"rules": {"retention.shred_after_years": 3}, "source": "档案规定"},
    )
    regranted = await fetch(
        f"/api/v1/staff/{staff['county'].id}/role",
        "PUT",
        token=security.token,
        json_body={"role": "security_admin"},
    )
    assert regranted.status == 200
    login = await fetch(
        "/api/v1/auth/login",
        "POST",
        json_body={"username": staff["county"].username, "password": staff["county"].password},
    )
    own = await fetch(
        f"/api/v1/rule-proposals/{proposed.json['id']}/decision",
        "POST",
        token=login.json["token"],
        json_body={"confirm": True},
    )
    assert own.status == 403 and own.error["code"] == "own_proposal"
    effective = await fetch(
        f"/api/v1/rules/effective?org_id={tree.county.id}", token=staff["sysadmin"].token
    )
    assert retention(effective)[0] == 0


async def test_proposals_are_checked_and_scoped(fetch, staff, tree, make_staff):
    reversible = await fetch(
        f"/api/v1/rules/{tree.county.code}/proposals",
        "POST",
        token=staff["county"].token,
        json_body={"rules": {"corrections.intake_days": 5}, "source": "通知"},
    )
    assert reversible.status == 422
    assert reversible.error["details"][0]["field"] == "rules.corrections.intake_days"
    out_of_bounds = await fetch(
        f"/api/v1/rules/{tree.county.code}/proposals",
        "POST",
        token=staff["county"].token,
        json_body={"rules": {"retention.shred_after_years": -1}, "source": "通知"},
    )
    assert out_of_bounds.status == 422
    assert out_of_bounds.error["details"][0]["field"] == "rules.retention.shred_after_years"
    elsewhere = await fetch(
        f"/api/v1/rules/{tree.other_county.code}/proposals",
        "POST",
        token=staff["county"].token,
        json_body={"rules": {"retention.shred_after_years": 5}, "source": "通知"},
    )
    assert elsewhere.status == 404
    theirs = await fetch(
        f"/api/v1/rules/{tree.other_county.code}/proposals",
        "POST",
        token=staff["other_county"].token,
        json_body={"rules": {"retention.shred_after_years": 5}, "source": "通知"},
    )
    far_security = await make_staff(Role.SECURITY_ADMIN, tree.county)
    outside = await fetch(
        f"/api/v1/rule-proposals/{theirs.json['id']}/decision",
        "POST",
        token=await make_staff.token_for(far_security),
        json_body={"confirm": True},
    )
    assert outside.status == 404

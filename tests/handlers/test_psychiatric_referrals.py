"""转诊 (严重精神障碍管理治疗工作规范 2018): risk level 3 opens a referral task with its deadline,
its health worker and its outcome, and the caseload shows it until the outcome is recorded."""

from __future__ import annotations

import datetime as dt

import pytest

from models.clock import LOCAL_TZ
from models.crypto import Sealed
from models.policy import Role
from server.app import SYSTEM
from tests.subject_factories import subject_body


def local(*args: int) -> dt.datetime:
    return dt.datetime(*args, tzinfo=LOCAL_TZ)


def patient(level: int) -> dict:
    return {
        "type": "mental_health",
        "start_date": "2026-11-09",
        "diagnosis": "精神分裂症",
        "risk_level": level,
        "guardian": {"name": "家属", "phone": "13900000000", "relation": "母亲"},
    }


@pytest.fixture
async def ward(fetch, tree, make_staff, clock):
    clock.set(local(2026, 11, 9, 10, 0))
    health = await make_staff(Role.HEALTH_WORKER, tree.county)
    station = await make_staff(Role.STATION_OFFICER, tree.station)

    class Ward:
        health_id = health.id

        async def at(self, moment: dt.datetime) -> None:
            clock.set(moment)  # sessions must not idle out across simulated time
            health.token = await make_staff.token_for(health)
            station.token = await make_staff.token_for(station)

        async def call(self, path: str, method: str = "GET", body=None, who: str = "health"):
            token = (health if who == "health" else station).token
            return await fetch(path, method, json_body=body, token=token)

        async def open(self, level: int) -> tuple[str, str]:
            made = await self.call(
                "/api/v1/subjects", "POST", subject_body(tree.station.id), who="station"
            )
            opened = await self.call(
                f"/api/v1/subjects/{made.json['id']}/programs", "POST", patient(level)
            )
            assert opened.status == 201, opened.body
            return made.json["id"], opened.json["id"]

        async def referrals(self, subject_id: str) -> list[dict]:
            answer = await self.call(f"/api/v1/subjects/{subject_id}/psychiatric-referrals")
            assert answer.status == 200, answer.body
            return answer.json["items"]

        async def risk(self, program_id: str, level: int, on: str):
            changed = await self.call(
                f"/api/v1/programs/{program_id}/risk",
                "POST",
                {"level": level, "on": on, "reason": "随访评估"},
            )
            assert changed.status == 200, changed.body

        async def outcome(self, referral_id: str, **body):
            return await self.call(
                f"/api/v1/psychiatric-referrals/{referral_id}/outcome", "POST", body
            )

        async def caseload(self, due: str | None = None, who: str = "health") -> dict:
            query = f"?due={due}" if due else ""
            answer = await self.call(f"/api/v1/caseload{query}", who=who)
            assert answer.status == 200, answer.body
            return {i["subject_id"]: i for i in answer.json["items"]}

    ward = Ward()
    await ward.at(clock.now())
    return ward


async def test_level_2_opens_no_referral_and_level_3_opens_one(ward):
    calm, _ = await ward.open(2)
    assert await ward.referrals(calm) == []
    unstable, program = await ward.open(3)
    (task,) = await ward.referrals(unstable)
    assert (task["status"], task["risk_level"], task["program_id"]) == ("open", 3, program)
    # 立即转诊: one calendar day from the assessment (a labelled local figure in the rules data).
    assert (task["assessed_on"], task["due"]) == ("2026-11-09", "2026-11-10")
    assert (task["assigned_to"], task["for_role"]) == (ward.health_id, "health_worker")
    assert task["rule_keys"] == ["mental_health.referral_from_level", "mental_health.referral_days"]
    assert task["rules_version"].startswith("national-")


async def test_a_risk_change_across_level_3_opens_one_task_per_crossing(ward):
    subject, program = await ward.open(1)
    await ward.risk(program, 2, "2026-11-09")
    assert await ward.referrals(subject) == []
    await ward.risk(program, 3, "2026-11-09")
    (task,) = await ward.referrals(subject)
    # Still unstable: the same task stands.
    await ward.risk(program, 5, "2026-11-09")
    assert [t["id"] for t in await ward.referrals(subject)] == [task["id"]]
    done = await ward.outcome(
        task["id"], referred=True, institution="市精神卫生中心", referred_on="2026-11-09"
    )
    assert done.status == 200, done.body
    # Stable again, then unstable again: a new crossing, a new task.
    await ward.risk(program, 2, "2026-11-09")
    await ward.at(local(2026, 11, 20, 9, 0))
    await ward.risk(program, 4, "2026-11-20")
    tasks = await ward.referrals(subject)
    assert [(t["status"], t["due"]) for t in tasks] == [
        ("open", "2026-11-21"),
        ("referred", "2026-11-10"),
    ]


async def test_the_outcome_names_the_institution_and_day_or_the_reason(ward, store):
    subject, _ = await ward.open(3)
    (task,) = await ward.referrals(subject)
    await ward.at(local(2026, 11, 11, 9, 0))
    referred = await ward.outcome(
        task["id"], referred=True, institution="市精神卫生中心", referred_on="2026-11-11"
    )
    assert referred.status == 200
    assert (referred.json["status"], referred.json["institution"]) == ("referred", "市精神卫生中心")
    assert (referred.json["referred_on"], referred.json["late"]) == ("2026-11-11", True)
    raw = await store.database["psychiatric_referrals"].find_one({"_id": task["id"]})
    assert isinstance(raw["institution"], bytes) and "精神".encode() not in raw["institution"]
    again = await ward.outcome(task["id"], referred=False, reason="家属拒绝")
    assert again.status == 409 and again.error["details"] == {"status": "referred"}

    other, _ = await ward.open(4)
    (task,) = await ward.referrals(other)
    refused = await ward.outcome(task["id"], referred=False, reason="已在精神专科医院住院")
    assert (refused.json["status"], refused.json["reason"]) == (
        "not_referred",
        "已在精神专科医院住院",
    )
    assert refused.json["institution"] is None and refused.json["late"] is None


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"referred": True, "referred_on": "2026-11-10"}, "institution"),
        ({"referred": True, "institution": "市精神卫生中心"}, "referred_on"),
        # The day before the assessment, and a day still to come.
        (
            {"referred": True, "institution": "市精神卫生中心", "referred_on": "2026-11-08"},
            "referred_on",
        ),
        (
            {"referred": True, "institution": "市精神卫生中心", "referred_on": "2026-11-11"},
            "referred_on",
        ),
        ({"referred": False}, "reason"),
        ({"referred": False, "reason": "家属拒绝", "institution": "市精神卫生中心"}, "institution"),
    ],
)
async def test_a_bad_outcome_is_refused_naming_the_field(ward, body, field):
    subject, _ = await ward.open(3)
    (task,) = await ward.referrals(subject)
    refused = await ward.outcome(task["id"], **body)
    assert refused.status == 422, refused.body
    assert refused.error["details"][0]["field"] == field
    assert (await ward.referrals(subject))[0]["status"] == "open"


async def test_the_caseload_lists_the_referral_until_its_outcome(ward):
    subject, _ = await ward.open(3)
    (task,) = await ward.referrals(subject)
    listed = (await ward.caseload())[subject]["referrals"]
    assert [(r["id"], r["due"], r["overdue"]) for r in listed] == [
        (task["id"], "2026-11-10", False)
    ]
    # Due tomorrow: not yet among today's items, nor overdue.
    assert subject not in await ward.caseload("today")
    assert subject not in await ward.caseload("overdue")
    # A station officer does not see a patient's health data, so not the referral either.
    assert not (await ward.caseload(who="station")).get(subject, {}).get("referrals")
    await ward.at(local(2026, 11, 10, 9, 0))
    assert [r["overdue"] for r in (await ward.caseload("today"))[subject]["referrals"]] == [False]
    assert subject not in await ward.caseload("overdue")
    await ward.at(local(2026, 11, 11, 9, 0))
    assert [r["overdue"] for r in (await ward.caseload("overdue"))[subject]["referrals"]] == [True]
    await ward.outcome(task["id"], referred=False, reason="家属拒绝")
    assert not (await ward.caseload()).get(subject, {}).get("referrals")


async def test_the_outcome_stays_readable_after_the_persons_key_rotates(ward, services, store):
    subject, _ = await ward.open(3)
    (task,) = await ward.referrals(subject)
    await ward.outcome(task["id"], referred=False, reason="家属拒绝")
    new_key = await services.subjects.rotate_data_key(SYSTEM, subject)
    raw = await store.database["psychiatric_referrals"].find_one({"_id": task["id"]})
    assert Sealed.from_bytes(bytes(raw["reason"])).key_id == new_key  # re-sealed
    (task,) = await ward.referrals(subject)
    assert task["reason"] == "家属拒绝"

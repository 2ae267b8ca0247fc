"""The wellbeing survey sent with a check-in, end to end: served in Chinese from the rules data,
a need reaching the worker as an assistance request, a PHQ-2 or GAD-2 screen at its cut-off
reaching the assigned worker as an alert, the answers sealed and shown only to those who may
read them, and a check-in never lost or doubled by its survey."""

from __future__ import annotations

import uuid
from typing import Any

from pymongo import ASCENDING, IndexModel

from miniprogram_api.checkins import SurveyBody
from models.policy import Role
from models.rules import RuleBook
from models.wellbeing import WELLBEING_ANSWERS
from tests.mp_support import STATION_CENTRE, local

LOCATION = {"lat": STATION_CENTRE.lat, "lng": STATION_CENTRE.lng, "coord_type": "wgs84"}


def check_in_body(clock, survey: dict[str, Any] | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {
        "location": {**LOCATION, "accuracy": 10},
        "captured_at": clock.now().isoformat(),
    }
    if survey is not None:
        body["survey"] = survey
    return body


async def check_in(supervised, clock, survey: dict[str, Any] | None, key: str | None = None):
    return await supervised.client.call(
        "POST",
        "/mp/v1/checkins",
        check_in_body(clock, survey),
        headers={"Idempotency-Key": key or uuid.uuid4().hex},
    )


async def assigned_worker(supervised, fetch, make_staff, tree):
    """A social worker assigned to the person (the one a screen alerts)."""
    worker = await make_staff(Role.SOCIAL_WORKER, tree.station)
    assigned = await fetch(
        f"/api/v1/subjects/{supervised.subject_id}/assignments",
        "PUT",
        token=await supervised.officer_token(),
        json_body={"social_worker_ids": [worker.id]},
    )
    assert assigned.status == 200, assigned.body
    return worker


async def test_the_survey_is_served_in_chinese_with_the_public_domain_screens(supervised):
    answer = await supervised.client.call("GET", "/mp/v1/wellbeing/survey")
    assert answer.status == 200, answer.body
    survey = answer.json
    questions = {q["id"]: q for q in survey["questions"]}
    # Every question is a field the check-in's `survey` takes, and nothing else is.
    assert set(questions) == set(SurveyBody.model_fields)
    assert questions["phq2_1"]["text"] == "做事时提不起劲或没有兴趣"
    assert questions["phq2_2"]["text"] == "感到心情低落、沮丧或绝望"
    assert questions["gad2_1"]["text"] == "感觉紧张、焦虑或急切"
    assert questions["gad2_2"]["text"] == "不能够停止或控制担忧"
    scale = [(o["value"], o["label"]) for o in questions["phq2_1"]["options"]]
    assert scale == [(0, "完全不会"), (1, "好几天"), (2, "一半以上的天数"), (3, "几乎每天")]
    assert [o["label"] for o in questions["needs"]["options"]] == [
        "住房",
        "吃饭、生活困难",
        "工作、就业",
        "看病、就医",
        "家庭方面的困难",
    ]
    assert "跳过" in survey["skip_label"] and "自愿" in survey["intro"]
    # The cut-offs are rules, with their sources, and the standard ones.
    book = RuleBook.load()
    assert book.rules["wellbeing.phq2_alert_from"].value == 3
    assert book.rules["wellbeing.gad2_alert_from"].value == 3
    assert "Kroenke" in book.rules["wellbeing.phq2_alert_from"].source


async def test_a_need_opens_an_assistance_request_the_worker_hears_of(
    supervised, clock, fetch, make_staff, tree, services
):
    worker = await assigned_worker(supervised, fetch, make_staff, tree)
    clock.set(local(2026, 11, 2, 9, 0))
    answer = await check_in(supervised, clock, {"mood": 4, "needs": ["housing", "family"]})
    assert answer.status == 201, answer.body
    assert answer.json["status"] == "on_time"
    assert answer.json["survey"] == {
        "recorded": True,
        "message": "感谢您填写问卷，工作人员会尽快与您联系。",
    }
    token = await make_staff.token_for(worker)
    listed = await fetch("/api/v1/assistance/referrals", token=token)
    assert listed.status == 200, listed.body
    (referral,) = listed.json["items"]
    assert referral["subject_id"] == supervised.subject_id
    assert referral["status"] == "requested"
    assert referral["channel"] == "miniprogram"
    # 住房 -> housing; 家庭方面的困难 -> benefits (临时救助).
    assert referral["needs"] == ["housing", "benefits"]
    heard = await services.notifications.for_recipient(f"staff:{worker.id}")
    assert any("帮扶申请" in str(n) for n in heard), heard
    # No screen answered: no alert.
    alerts = await fetch("/api/v1/alerts?mine=1", token=token)
    assert [a for a in alerts.json["items"] if a["kind"] == "wellbeing_screen"] == []


async def test_a_screen_at_its_cut_off_alerts_the_assigned_worker_with_what_is_due(
    supervised, clock, fetch, make_staff, tree, store
):
    worker = await assigned_worker(supervised, fetch, make_staff, tree)
    clock.set(local(2026, 11, 2, 9, 0))
    # PHQ-2 2 + 1 = 3 (the cut-off); GAD-2 1 + 1 = 2 (below it).
    survey = {"mood": 4, "phq2_1": 2, "phq2_2": 1, "gad2_1": 1, "gad2_2": 1}
    answer = await check_in(supervised, clock, survey)
    assert answer.status == 201, answer.body
    assert answer.json["survey"]["recorded"] is True
    token = await make_staff.token_for(worker)
    alerts = await fetch("/api/v1/alerts?status=open&mine=1", token=token)
    (alert,) = [a for a in alerts.json["items"] if a["kind"] == "wellbeing_screen"]
    assert alert["to_user_id"] == worker.id
    assert alert["subject_id"] == supervised.subject_id
    details = alert["details"]
    assert details["checkin_id"] == answer.json["id"]
    assert details["due"] == "2026-11-04"  # wellbeing.contact_within_days: 2
    assert "请于 2026-11-04 前联系本人" in details["due_zh"]
    assert details["wellbeing"]["screens"] == ["phq2"]
    assert "情绪（PHQ-2）" in details["wellbeing"]["summary_zh"]
    assert "wellbeing.phq2_alert_from" in details["rule"]
    # The station sees the alert and what is due, not which screen (health data).
    station = await fetch("/api/v1/alerts?status=open", token=await supervised.officer_token())
    (seen,) = [a for a in station.json["items"] if a["kind"] == "wellbeing_screen"]
    assert "wellbeing" not in seen["details"] and seen["details"]["due_zh"]
    # The assigned worker reads the answers; they are sealed in the database.
    read = await fetch(f"/api/v1/subjects/{supervised.subject_id}/wellbeing", token=token)
    assert read.status == 200, read.body
    (item,) = read.json["items"]
    assert item["answers"] == survey
    assert item["scores"] == {"phq2": 3, "gad2": 2}
    assert item["reached"] == ["phq2"]
    assert "情绪（PHQ-2）：3 分（达到 3 分的关注分数）" in item["summary_zh"]
    assert "焦虑（GAD-2）：2 分（低于 3 分）" in item["summary_zh"]
    assert "今天的心情：较差" in item["summary_zh"]
    assert item["alert_id"] == alert["id"] and item["referral_id"] is None
    raw = await store.collection(WELLBEING_ANSWERS).find_one({"_id": answer.json["id"]})
    assert isinstance(raw["answers"], bytes)
    assert b"phq2" not in raw["answers"] and "phq2_1" not in raw
    # The station officer (not assigned) sees that a survey was sent, not the answers.
    officer = await fetch(
        f"/api/v1/subjects/{supervised.subject_id}/wellbeing",
        token=await supervised.officer_token(),
    )
    assert officer.status == 200
    assert officer.json["items"][0]["answers"] is None
    assert officer.json["items"][0]["scores"] is None


async def test_below_the_cut_off_nothing_is_raised(supervised, clock, fetch, make_staff, tree):
    worker = await assigned_worker(supervised, fetch, make_staff, tree)
    clock.set(local(2026, 11, 2, 9, 0))
    answer = await check_in(supervised, clock, {"phq2_1": 1, "phq2_2": 1, "gad2_1": 2})
    assert answer.status == 201, answer.body
    assert answer.json["survey"] == {"recorded": True, "message": "感谢您填写问卷。"}
    token = await make_staff.token_for(worker)
    alerts = await fetch("/api/v1/alerts?mine=1", token=token)
    assert [a for a in alerts.json["items"] if a["kind"] == "wellbeing_screen"] == []
    read = await fetch(f"/api/v1/subjects/{supervised.subject_id}/wellbeing", token=token)
    # GAD-2 half answered: not scored.
    assert read.json["items"][0]["scores"] == {"phq2": 2}


async def test_a_retried_check_in_keeps_one_survey_one_request_and_one_alert(
    supervised, clock, fetch, make_staff, tree, store
):
    worker = await assigned_worker(supervised, fetch, make_staff, tree)
    clock.set(local(2026, 11, 2, 9, 0))
    survey = {"needs": ["work"], "gad2_1": 3, "gad2_2": 3}
    first = await check_in(supervised, clock, survey, key="survey-retry-0001")
    again = await check_in(supervised, clock, survey, key="survey-retry-0001")
    assert first.status == again.status == 201
    assert first.json["id"] == again.json["id"]
    assert await store.collection(WELLBEING_ANSWERS).count_documents({}) == 1
    token = await make_staff.token_for(worker)
    referrals = await fetch("/api/v1/assistance/referrals", token=token)
    assert [r["needs"] for r in referrals.json["items"]] == [["job"]]
    alerts = await fetch("/api/v1/alerts?mine=1", token=token)
    assert len([a for a in alerts.json["items"] if a["kind"] == "wellbeing_screen"]) == 1


async def test_a_person_may_skip_the_survey(supervised, clock, store):
    clock.set(local(2026, 11, 2, 9, 0))
    without = await check_in(supervised, clock, None)
    assert without.status == 201, without.body
    assert without.json["survey"] is None
    clock.set(local(2026, 11, 3, 9, 0))
    skipped = await check_in(supervised, clock, {"needs": []})
    assert skipped.status == 201, skipped.body
    assert skipped.json["survey"] is None
    assert await store.collection(WELLBEING_ANSWERS).count_documents({}) == 0


async def test_bad_answers_are_named_in_chinese_and_nothing_is_stored(supervised, clock, store):
    clock.set(local(2026, 11, 2, 9, 0))
    out_of_range = await check_in(supervised, clock, {"mood": 9, "phq2_1": 1})
    assert out_of_range.status == 422, out_of_range.body
    (problem,) = out_of_range.json["error"]["details"]
    assert problem == {"field": "survey.mood", "message": "今天的心情：数值过大"}
    unknown_need = await check_in(supervised, clock, {"needs": ["money"]})
    assert unknown_need.status == 422
    (problem,) = unknown_need.json["error"]["details"]
    assert problem["field"] == "survey.needs.0"
    assert problem["message"].startswith("需要帮助的方面：")
    twice = await check_in(supervised, clock, {"needs": ["food", "food"]})
    assert twice.status == 422, twice.body
    assert twice.json["error"]["code"] == "invalid_survey"
    (problem,) = twice.json["error"]["details"]
    assert problem["field"] == "survey.needs"
    assert "目前您是否需要以下方面的帮助" in problem["message"]
    unasked = await check_in(supervised, clock, {"phq9_3": 1})
    assert unasked.status == 422
    assert unasked.json["error"]["details"][0]["field"] == "survey.phq9_3"
    # None of them stored a check-in (refused before it), nor a survey.
    listed = await supervised.client.call("GET", "/mp/v1/checkins")
    assert listed.json["items"] == []
    assert await store.collection(WELLBEING_ANSWERS).count_documents({}) == 0


async def test_a_survey_that_cannot_be_kept_does_not_lose_the_check_in(
    supervised, clock, fetch, make_staff, tree, store
):
    worker = await assigned_worker(supervised, fetch, make_staff, tree)
    clock.set(local(2026, 11, 2, 9, 0))
    # The database refuses the survey's record (a unique index another record already fills),
    # as it would on a failing disk: the check-in is stored before the survey is tried.
    answers = store.collection(WELLBEING_ANSWERS)
    await answers.create_indexes(
        [IndexModel([("survey_version", ASCENDING)], unique=True, name="block")]
    )
    await answers.insert_one({"_id": "blocker", "survey_version": "wellbeing-2026.12"})
    survey = {"phq2_1": 3, "phq2_2": 3}
    answer = await check_in(supervised, clock, survey, key="survey-fails-0001")
    assert answer.status == 201, answer.body
    assert answer.json["status"] == "on_time"
    assert answer.json["survey"]["recorded"] is False
    assert "不影响本次签到" in answer.json["survey"]["message"]
    listed = await supervised.client.call("GET", "/mp/v1/checkins")
    assert [c["id"] for c in listed.json["items"]] == [answer.json["id"]]
    # Retried under the same key once the database takes it again: the survey is kept and
    # the alert raised, and the check-in is still the one.
    await answers.drop_index("block")
    await answers.delete_one({"_id": "blocker"})
    retried = await check_in(supervised, clock, survey, key="survey-fails-0001")
    assert retried.status == 201
    assert retried.json["id"] == answer.json["id"]
    assert retried.json["survey"]["recorded"] is True
    alerts = await fetch("/api/v1/alerts?mine=1", token=await make_staff.token_for(worker))
    assert len([a for a in alerts.json["items"] if a["kind"] == "wellbeing_screen"]) == 1


async def test_only_the_roles_the_policy_names_read_the_surveys(
    supervised, clock, fetch, make_staff, tree
):
    clock.set(local(2026, 11, 2, 9, 0))
    await check_in(supervised, clock, {"mood": 1})
    path = f"/api/v1/subjects/{supervised.subject_id}/wellbeing"
    # The county reads case files, not these (its role is not in the policy's rule).
    assert (await fetch(path, token=await supervised.county_token())).status == 403
    # A social worker not assigned to the person: the file is not theirs.
    other = await make_staff(Role.SOCIAL_WORKER, tree.station)
    assert (await fetch(path, token=await make_staff.token_for(other))).status == 404

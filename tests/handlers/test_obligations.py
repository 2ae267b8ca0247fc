"""Obligations: windows in Asia/Shanghai to the second, projection, missed windows and alerts."""

from __future__ import annotations

import datetime as dt
from collections import Counter

import pytest

from models.clock import LOCAL_TZ
from models.policy import Role
from tests.subject_factories import subject_body


def local(*args: int) -> dt.datetime:
    return dt.datetime(*args, tzinfo=LOCAL_TZ)


@pytest.fixture
async def people(tree, make_staff):
    accounts = {
        "station": await make_staff(Role.STATION_OFFICER, tree.station),
        "social": await make_staff(Role.SOCIAL_WORKER, tree.station),
        "health": await make_staff(Role.HEALTH_WORKER, tree.county),
    }
    for account in accounts.values():
        account.token = await make_staff.token_for(account)
    return accounts


async def new_case(
    fetch, people, tree, clock, program, *, at: dt.datetime, assign_social: bool = False
):
    """A case file and one program, recorded at `at` (the clock is moved there first)."""
    clock.set(at)
    for account in people.values():  # sessions must not idle out across simulated time
        account.token = await fetch.make_staff.token_for(account)
    subject = (
        await fetch(
            "/api/v1/subjects",
            "POST",
            json_body=subject_body(tree.station.id),
            token=people["station"].token,
        )
    ).json["id"]
    if assign_social:
        await fetch(
            f"/api/v1/subjects/{subject}/assignments",
            "PUT",
            json_body={"social_worker_ids": [people["social"].id]},
            token=people["station"].token,
        )
    who = "health" if program["type"] == "mental_health" else "station"
    opened = await fetch(
        f"/api/v1/subjects/{subject}/programs", "POST", json_body=program, token=people[who].token
    )
    assert opened.status == 201, opened.body
    return subject, opened.json


@pytest.fixture
def fetch_with_staff(fetch, make_staff):
    fetch.make_staff = make_staff
    return fetch


CORRECTIONS = {
    "type": "community_corrections",
    "start_date": "2026-03-02",
    "end_date": "2027-03-01",
    "sentence_type": "probation",
}


async def test_a_daily_check_in_window_runs_midnight_to_midnight_local(
    fetch_with_staff, people, tree, clock, services
):
    fetch = fetch_with_staff
    subject, _ = await new_case(fetch, people, tree, clock, CORRECTIONS, at=local(2026, 3, 2, 9, 0))
    answer = await fetch(
        f"/api/v1/subjects/{subject}/obligations?from=2026-03-02&to=2026-03-02&kind=remote_checkin",
        token=people["station"].token,
    )
    assert answer.status == 200
    [first] = answer.json["items"]
    assert dt.datetime.fromisoformat(first["window_start"]) == local(2026, 3, 2)
    assert dt.datetime.fromisoformat(first["window_end"]) == local(2026, 3, 3)
    assert first["status"] == "open" and first["projected"] is False and first["id"]
    obligations = services.obligations
    # One second before midnight the window still runs; at midnight it has closed unmet.
    result = await obligations.close_windows(local(2026, 3, 2, 23, 59, 59))
    assert result["missed"] == 0
    result = await obligations.close_windows(local(2026, 3, 3, 0, 0, 0))
    assert result["missed"] == 1


async def test_strict_supervision_reports_weekly_for_two_months_then_monthly(
    fetch_with_staff, people, tree, clock
):
    fetch = fetch_with_staff
    subject, _ = await new_case(fetch, people, tree, clock, CORRECTIONS, at=local(2026, 3, 2, 9, 0))
    answer = await fetch(
        f"/api/v1/subjects/{subject}/obligations?from=2026-03-02&to=2026-07-31"
        "&kind=in_person_report",
        token=people["station"].token,
    )
    starts = [
        dt.datetime.fromisoformat(o["window_start"]).astimezone(LOCAL_TZ).date()
        for o in answer.json["items"]
    ]
    weekly = [d for d in starts if d < dt.date(2026, 5, 2)]
    assert weekly == [dt.date(2026, 3, 2) + dt.timedelta(days=7 * i) for i in range(9)]
    assert [d for d in starts if d >= dt.date(2026, 5, 2)] == [
        dt.date(2026, 5, 2),
        dt.date(2026, 6, 1),
        dt.date(2026, 7, 1),
        dt.date(2026, 7, 31),
    ]
    # Beyond the 60-day horizon the same rules project what is not stored yet.
    projected = [o for o in answer.json["items"] if o["projected"]]
    assert projected and all(o["id"] is None for o in projected)
    assert all(dt.datetime.fromisoformat(o["window_start"]) > local(2026, 5, 1) for o in projected)


async def test_a_level_change_replans_what_lies_ahead_and_keeps_history(
    fetch_with_staff, people, tree, clock, services
):
    fetch = fetch_with_staff
    subject, program = await new_case(
        fetch, people, tree, clock, CORRECTIONS, at=local(2026, 3, 2, 9, 0)
    )
    clock.set(local(2026, 3, 20, 10, 0))
    await services.obligations.close_windows(clock.now())
    people["station"].token = await fetch.make_staff.token_for(people["station"])
    await fetch(
        f"/api/v1/programs/{program['id']}/supervision-level",
        "POST",
        json_body={"level": "lenient", "from_date": "2026-05-02", "reason": "表现良好"},
        token=people["station"].token,
    )
    answer = await fetch(
        f"/api/v1/subjects/{subject}/obligations?from=2026-03-02&to=2026-09-30"
        "&kind=in_person_report",
        token=people["station"].token,
    )
    items = answer.json["items"]
    starts = [
        dt.datetime.fromisoformat(o["window_start"]).astimezone(LOCAL_TZ).date() for o in items
    ]
    assert [d for d in starts if d >= dt.date(2026, 5, 2)] == [
        dt.date(2026, 5, 2),
        dt.date(2026, 7, 1),
        dt.date(2026, 8, 30),
    ]
    # The windows already closed stay as they were: missed, with their ids.
    past = [o for o in items if dt.datetime.fromisoformat(o["window_end"]) <= clock.now()]
    assert past and all(o["status"] == "missed" and o["id"] for o in past)


async def test_missed_windows_alert_the_assigned_worker_once(
    fetch_with_staff, people, tree, clock, services
):
    fetch = fetch_with_staff
    await new_case(
        fetch, people, tree, clock, CORRECTIONS, at=local(2026, 3, 2, 9, 0), assign_social=True
    )
    obligations = services.obligations
    first = await obligations.close_windows(local(2026, 3, 4, 0, 0))
    again = await obligations.close_windows(local(2026, 3, 4, 0, 5))
    assert first["missed"] == 2 and again == {"missed": 0, "alerted": 0}
    clock.set(local(2026, 3, 4, 8, 0))
    people["social"].token = await fetch.make_staff.token_for(people["social"])
    alerts = await fetch("/api/v1/alerts?status=open&mine=1", token=people["social"].token)
    missed = [a for a in alerts.json["items"] if a["kind"] == "obligation_missed"]
    assert len(missed) == 2
    assert {a["to_user_id"] for a in missed} == {people["social"].id}


async def test_an_unassigned_subjects_missed_window_alerts_the_station(
    fetch_with_staff, people, tree, clock, services
):
    fetch = fetch_with_staff
    await new_case(fetch, people, tree, clock, CORRECTIONS, at=local(2026, 3, 2, 9, 0))
    await services.obligations.close_windows(local(2026, 3, 3, 0, 0))
    clock.set(local(2026, 3, 3, 8, 0))
    people["station"].token = await fetch.make_staff.token_for(people["station"])
    alerts = await fetch("/api/v1/alerts?status=open&mine=1", token=people["station"].token)
    assert [a["to_user_id"] for a in alerts.json["items"] if a["kind"] == "obligation_missed"] == [
        None
    ]


async def test_an_alert_lost_to_a_crash_is_raised_by_the_next_run(
    fetch_with_staff, people, tree, clock, services, store
):
    fetch = fetch_with_staff
    await new_case(fetch, people, tree, clock, CORRECTIONS, at=local(2026, 3, 2, 9, 0))
    occurrences = store.database["occurrences"]
    # The state a crash leaves between marking the window missed and raising its alert.
    marked = await occurrences.update_many(
        {"kind": "remote_checkin", "window_end": {"$lte": local(2026, 3, 3)}},
        {"$set": {"status": "missed", "alert_pending": True}},
    )
    assert marked.modified_count == 1
    result = await services.obligations.close_windows(local(2026, 3, 3, 0, 1))
    assert result == {"missed": 0, "alerted": 1}
    assert await store.database["alerts"].count_documents({"kind": "obligation_missed"}) == 1


async def test_an_excused_window_is_never_missed(fetch_with_staff, people, tree, clock, services):
    fetch = fetch_with_staff
    subject, _ = await new_case(fetch, people, tree, clock, CORRECTIONS, at=local(2026, 3, 2, 9, 0))
    listed = await fetch(
        f"/api/v1/subjects/{subject}/obligations?from=2026-03-02&to=2026-03-02&kind=remote_checkin",
        token=people["station"].token,
    )
    occurrence = listed.json["items"][0]["id"]
    excused = await fetch(
        f"/api/v1/obligations/{occurrence}/excuse",
        "POST",
        json_body={"reason": "住院治疗"},
        token=people["station"].token,
    )
    assert excused.status == 200 and excused.json["status"] == "excused"
    result = await services.obligations.close_windows(local(2026, 3, 3, 0, 0))
    assert result["missed"] == 0
    again = await fetch(
        f"/api/v1/obligations/{occurrence}/excuse",
        "POST",
        json_body={"reason": "再次"},
        token=people["station"].token,
    )
    assert again.status == 409 and again.error["details"] == {"status": "excused"}


async def test_two_years_of_drug_tests_change_cadence_at_the_anniversary(
    fetch_with_staff, people, tree, clock, services
):
    fetch = fetch_with_staff
    subject, _ = await new_case(
        fetch,
        people,
        tree,
        clock,
        {"type": "drug_rehab", "start_date": "2026-01-10", "mode": "community_detox"},
        at=local(2026, 1, 10, 9, 0),
    )
    obligations = services.obligations
    day = local(2026, 1, 10, 2, 0)
    # The jobs process, simulated weekly for two years: plan ahead, close what ended.
    while day < local(2028, 1, 10, 2, 0):
        await obligations.materialise_all(day)
        await obligations.close_windows(day)
        day += dt.timedelta(days=7)
    clock.set(day)
    people["station"].token = await fetch.make_staff.token_for(people["station"])
    answer = await fetch(
        f"/api/v1/subjects/{subject}/obligations?from=2026-01-10&to=2028-01-09&kind=drug_test",
        token=people["station"].token,
    )
    items = answer.json["items"]
    starts = [
        dt.datetime.fromisoformat(o["window_start"]).astimezone(LOCAL_TZ).date() for o in items
    ]
    first_year = [d for d in starts if d < dt.date(2027, 1, 10)]
    second_year = [d for d in starts if d >= dt.date(2027, 1, 10)]
    assert len(first_year) == 12 and len(second_year) == 6
    assert second_year[:2] == [dt.date(2027, 1, 10), dt.date(2027, 3, 10)]
    assert Counter(o["status"] for o in items) == Counter({"missed": 18})
    assert all(not o["projected"] for o in items)


async def test_follow_ups_by_risk_level_over_a_year(
    fetch_with_staff, people, tree, clock, services
):
    fetch = fetch_with_staff
    subject, program = await new_case(
        fetch,
        people,
        tree,
        clock,
        {
            "type": "mental_health",
            "start_date": "2026-01-05",
            "diagnosis": "精神分裂症",
            "risk_level": 0,
            "guardian": {"name": "家属", "phone": "13900000000", "relation": "母亲"},
        },
        at=local(2026, 1, 5, 9, 0),
    )
    answer = await fetch(
        f"/api/v1/subjects/{subject}/obligations?from=2026-01-05&to=2026-12-31"
        "&kind=mental_followup",
        token=people["health"].token,
    )
    starts = [
        dt.datetime.fromisoformat(o["window_start"]).astimezone(LOCAL_TZ).date()
        for o in answer.json["items"]
    ]
    assert len(starts) == 5  # every 90 days while stable: at least 4 a year
    clock.set(local(2026, 2, 1, 9, 0))
    people["health"].token = await fetch.make_staff.token_for(people["health"])
    await fetch(
        f"/api/v1/programs/{program['id']}/risk",
        "POST",
        json_body={"level": 3, "on": "2026-02-01", "reason": "病情波动"},
        token=people["health"].token,
    )
    after = await fetch(
        f"/api/v1/subjects/{subject}/obligations?from=2026-02-01&to=2026-03-31"
        "&kind=mental_followup",
        token=people["health"].token,
    )
    replanned, *fortnightly = after.json["items"]
    # The stable-period window that the change cut short is excused, never missed.
    assert replanned["status"] == "excused"
    assert replanned["excuse_reason"] == "replanned after a change of rules"
    starts = [
        dt.datetime.fromisoformat(o["window_start"]).astimezone(LOCAL_TZ).date()
        for o in fortnightly
    ]
    assert starts == [dt.date(2026, 2, 1) + dt.timedelta(days=14 * i) for i in range(5)]


async def test_a_case_entered_late_owes_nothing_for_windows_already_closed(
    fetch_with_staff, people, tree, clock, services
):
    fetch = fetch_with_staff
    subject, _ = await new_case(
        fetch, people, tree, clock, CORRECTIONS, at=local(2026, 6, 15, 9, 0)
    )
    result = await services.obligations.close_windows(local(2026, 6, 15, 10, 0))
    assert result["missed"] == 0
    answer = await fetch(
        f"/api/v1/subjects/{subject}/obligations?from=2026-03-02&to=2026-06-15&kind=remote_checkin",
        token=people["station"].token,
    )
    # Only the weekly window running when the case was recorded (13-20 June) is owed.
    assert [
        dt.datetime.fromisoformat(o["window_start"]).astimezone(LOCAL_TZ).date()
        for o in answer.json["items"]
    ] == [dt.date(2026, 6, 13)]


async def test_bad_ranges_are_refused_by_name(fetch_with_staff, people, tree, clock):
    fetch = fetch_with_staff
    subject, _ = await new_case(fetch, people, tree, clock, CORRECTIONS, at=local(2026, 3, 2, 9, 0))
    base = f"/api/v1/subjects/{subject}/obligations"
    for query, field in (
        ("?from=2026-13-01", "from"),
        ("?from=2026-03-10&to=2026-03-01", "to"),
        ("?from=2026-01-01&to=2029-01-01", "to"),
        ("?kind=sleeping", "kind"),
        # The default `to` (30 days on) and the day after `to` overflowed past 9999: a 500.
        ("?from=9999-12-20", "from"),
        ("?from=9999-12-31&to=9999-12-31", "from"),
    ):
        answer = await fetch(base + query, token=people["station"].token)
        assert answer.status == 422, query
        assert answer.error["details"][0]["field"] == field


async def test_reminders_go_out_once_before_a_window_opens(
    fetch_with_staff, people, tree, clock, services, store
):
    fetch = fetch_with_staff
    subject, _ = await new_case(fetch, people, tree, clock, CORRECTIONS, at=local(2026, 3, 2, 9, 0))
    obligations = services.obligations
    # Twelve hours before the next day's check-in window, and not a second earlier.
    assert await obligations.send_reminders(local(2026, 3, 2, 11, 59, 59)) == {"reminders": 0}
    assert await obligations.send_reminders(local(2026, 3, 2, 12, 0, 0)) == {"reminders": 1}
    assert await obligations.send_reminders(local(2026, 3, 2, 12, 5, 0)) == {"reminders": 0}
    [message] = await services.notifications.for_recipient(f"subject:{subject}")
    assert message["title"] == "远程签到提醒"
    assert "03月03日 00:00" in message["body"]


class BrokenNotifier:
    async def push(self, recipient, title, body, data):
        raise ConnectionError("WeChat is down")


async def test_a_notifier_that_is_down_never_fails_the_sweep(store, clock):
    from models.notifications import NotificationService

    notifications = NotificationService(store, clock, BrokenNotifier())
    assert await notifications.send("subject:x", "提醒", "内容", dedupe_key="k") is True
    [message] = await notifications.for_recipient("subject:x")
    assert message["delivery"] == "in_app"


async def test_programs_ending_within_thirty_days_are_flagged_once(
    fetch_with_staff, people, tree, clock, services, store
):
    fetch = fetch_with_staff
    await new_case(fetch, people, tree, clock, CORRECTIONS, at=local(2026, 3, 2, 9, 0))
    programs = services.programs
    assert await programs.alert_ending(dt.date(2027, 1, 29)) == 0  # ends 1 March 2027
    assert await programs.alert_ending(dt.date(2027, 1, 30)) == 1
    await programs.alert_ending(dt.date(2027, 2, 10))
    assert await store.database["alerts"].count_documents({"kind": "program_ending"}) == 1


async def test_a_high_risk_patient_alerts_police_and_health_worker(
    fetch_with_staff, people, tree, clock, make_staff
):
    fetch = fetch_with_staff
    police = await make_staff(Role.POLICE, tree.station)
    await new_case(
        fetch,
        people,
        tree,
        clock,
        {
            "type": "mental_health",
            "start_date": "2026-01-05",
            "diagnosis": "精神分裂症",
            "risk_level": 4,
            "guardian": {"name": "家属", "phone": "13900000000", "relation": "母亲"},
        },
        at=local(2026, 1, 5, 9, 0),
    )
    for account in (police, people["health"]):
        token = await make_staff.token_for(account)
        alerts = await fetch("/api/v1/alerts?status=open", token=token)
        kinds = [a["kind"] for a in alerts.json["items"]]
        assert kinds.count("mental_health_high_risk") == 1


async def test_three_refused_or_evaded_drug_tests_are_a_serious_breach(
    fetch_with_staff, people, tree, clock, services, store
):
    fetch = fetch_with_staff
    subject, _ = await new_case(
        fetch,
        people,
        tree,
        clock,
        {"type": "drug_rehab", "start_date": "2026-01-10", "mode": "community_detox"},
        at=local(2026, 1, 10, 9, 0),
    )
    obligations = services.obligations

    async def test_of_month(month: int) -> str:
        clock.set(local(2026, month, 12, 10, 0))
        await obligations.materialise_all(clock.now())
        people["station"].token = await fetch.make_staff.token_for(people["station"])
        listed = await fetch(
            f"/api/v1/subjects/{subject}/obligations?from=2026-{month:02d}-12"
            f"&to=2026-{month:02d}-12&kind=drug_test",
            token=people["station"].token,
        )
        return listed.json["items"][0]["id"]

    async def record(occurrence: str, outcome: str):
        return await fetch(
            f"/api/v1/obligations/{occurrence}/result",
            "POST",
            json_body={"outcome": outcome},
            token=people["station"].token,
        )

    january = await test_of_month(1)
    wrong = await record(january, "done")
    assert wrong.status == 422 and wrong.error["details"][0]["field"] == "outcome"
    assert (await record(january, "refused")).json["status"] == "missed"
    february = await test_of_month(2)
    assert (await record(february, "negative")).json["status"] == "done"
    march = await test_of_month(3)
    excused = await fetch(
        f"/api/v1/obligations/{march}/excuse",
        "POST",
        json_body={"reason": "住院"},
        token=people["station"].token,
    )
    assert excused.status == 200  # an excused test never counts
    april = await test_of_month(4)
    assert (await record(april, "evaded")).json["status"] == "missed"
    breaches = store.database["alerts"]
    assert await breaches.count_documents({"kind": "serious_breach"}) == 0
    # May's test is neither taken nor excused: when its window closes it counts as evaded.
    await test_of_month(5)
    await obligations.close_windows(local(2026, 6, 10, 0, 0))
    [breach] = [a async for a in breaches.find({"kind": "serious_breach"})]
    assert breach["details"]["refused_or_evaded"] == 3
    assert breach["details"]["rule"] == "drug_rehab.serious_breach_refusals"
    await obligations.close_windows(local(2026, 7, 10, 0, 0))
    assert await breaches.count_documents({"kind": "serious_breach"}) == 1

"""The caseload: due today, overdue, open alerts; visits meeting obligations; hand-overs."""

from __future__ import annotations

import datetime as dt

import pytest

from models.clock import LOCAL_TZ
from models.policy import Role
from tests.subject_factories import subject_body


def local(*args: int) -> dt.datetime:
    return dt.datetime(*args, tzinfo=LOCAL_TZ)


@pytest.fixture
async def team(fetch, tree, make_staff, clock):
    clock.set(local(2026, 3, 2, 9, 0))
    officer = await make_staff(Role.STATION_OFFICER, tree.station)
    workers = [await make_staff(Role.SOCIAL_WORKER, tree.station) for _ in range(3)]
    for account in (officer, *workers):
        account.token = await make_staff.token_for(account)
    return officer, workers


async def open_case(fetch, tree, officer, worker, program, name="张三"):
    sid = (
        await fetch(
            "/api/v1/subjects",
            "POST",
            token=officer.token,
            json_body=subject_body(tree.station.id, name=name),
        )
    ).json["id"]
    await fetch(
        f"/api/v1/subjects/{sid}/assignments",
        "PUT",
        token=officer.token,
        json_body={"social_worker_ids": [worker.id]},
    )
    assert (
        await fetch(
            f"/api/v1/subjects/{sid}/programs", "POST", token=officer.token, json_body=program
        )
    ).status == 201
    return sid


CORRECTIONS = {
    "type": "community_corrections",
    "start_date": "2026-03-02",
    "end_date": "2027-03-01",
    "sentence_type": "probation",
}
RESETTLEMENT = {
    "type": "resettlement",
    "start_date": "2026-03-02",
    "release_date": "2026-03-02",
    "key_person": True,
}


async def test_the_caseload_shows_today_and_what_was_missed(
    fetch, tree, team, clock, services, make_staff
):
    officer, (worker, other, _) = team
    mine = await open_case(fetch, tree, officer, worker, CORRECTIONS, name="王五")
    await open_case(fetch, tree, officer, other, CORRECTIONS, name="赵六")
    today = await fetch("/api/v1/caseload?due=today", token=worker.token)
    assert today.status == 200
    [entry] = today.json["items"]
    assert entry["subject_id"] == mine and entry["name"] == "王五"
    assert [o["kind"] for o in entry["due_today"]] == ["remote_checkin"]
    clock.set(local(2026, 3, 3, 9, 0))
    await services.obligations.close_windows(clock.now())
    worker.token = await make_staff.token_for(worker)
    overdue = await fetch("/api/v1/caseload?due=overdue", token=worker.token)
    [entry] = overdue.json["items"]
    assert [o["kind"] for o in entry["overdue"]] == ["remote_checkin"]
    everything = await fetch("/api/v1/caseload", token=worker.token)
    [entry] = everything.json["items"]
    assert entry["open_alerts"] == 1 and entry["due_today"] and entry["overdue"]
    station = await fetch("/api/v1/caseload", token=(await make_staff.token_for(officer)))
    assert len(station.json["items"]) == 2  # the station sees every file of its own
    bad = await fetch("/api/v1/caseload?due=tomorrow", token=worker.token)
    assert bad.status == 422


async def test_a_visit_meets_the_contact_it_stands_for(fetch, tree, team):
    officer, (worker, _, _) = team
    sid = await open_case(fetch, tree, officer, worker, RESETTLEMENT)
    visit = await fetch(
        f"/api/v1/subjects/{sid}/visits",
        "POST",
        token=worker.token,
        json_body={
            "kind": "visit",
            "note": "上门走访，就业顺利",
            "location": {"lat": 28.0, "lng": 120.65},
        },
    )
    assert visit.status == 201 and visit.json["obligations_met"] == 1
    listed = await fetch(
        f"/api/v1/subjects/{sid}/obligations?from=2026-03-02&to=2026-03-02&kind=contact",
        token=worker.token,
    )
    assert [o["status"] for o in listed.json["items"]] == ["done"]
    future = await fetch(
        f"/api/v1/subjects/{sid}/visits",
        "POST",
        token=worker.token,
        json_body={"kind": "talk", "note": "x", "at": "2026-03-05T10:00:00+08:00"},
    )
    assert future.status == 422


async def test_follow_up_notes_are_for_health_roles_and_the_assigned_worker(
    fetch, tree, team, make_staff
):
    officer, (worker, _, _) = team
    sid = await open_case(
        fetch,
        tree,
        officer,
        worker,
        {
            "type": "mental_health",
            "start_date": "2026-03-02",
            "diagnosis": "精神分裂症",
            "risk_level": 1,
            "guardian": {"name": "家属", "phone": "13900000000", "relation": "母亲"},
        },
    )
    health = await make_staff(Role.HEALTH_WORKER, tree.county)
    county = await make_staff(Role.COUNTY_OFFICER, tree.county)
    for account in (health, county):
        account.token = await make_staff.token_for(account)
    for who, kind, note in (
        (health, "followup", "随访：按时服药"),
        (worker, "talk", "谈话：找到工作"),
    ):
        recorded = await fetch(
            f"/api/v1/subjects/{sid}/visits",
            "POST",
            token=who.token,
            json_body={"kind": kind, "note": note, "at": "2026-03-02T08:00:00+08:00"},
        )
        assert recorded.status == 201, recorded.body

    async def notes(who) -> dict[str, str | None]:
        answer = await fetch(f"/api/v1/subjects/{sid}/visits", token=who.token)
        assert answer.status == 200, answer.body
        return {v["kind"]: v["note"] for v in answer.json["items"]}

    # The health worker reads the follow-up they wrote, not the case side's talk.
    assert await notes(health) == {"followup": "随访：按时服药", "talk": None}
    assert await notes(worker) == {"followup": "随访：按时服药", "talk": "谈话：找到工作"}
    for officer_account in (officer, county):
        assert await notes(officer_account) == {"followup": None, "talk": "谈话：找到工作"}


async def test_a_departing_workers_files_are_shared_out_in_one_operation(
    fetch, tree, team, services
):
    officer, (leaving, first, second) = team
    files = [
        await open_case(fetch, tree, officer, leaving, CORRECTIONS, name=f"对象{i}")
        for i in range(3)
    ]
    answer = await fetch(
        f"/api/v1/staff/{leaving.id}/handover",
        "POST",
        token=officer.token,
        json_body={"to_worker_ids": [first.id, second.id]},
    )
    assert answer.status == 200 and answer.json == {"files": 3}
    for sid in files:
        assert (await fetch(f"/api/v1/subjects/{sid}", token=leaving.token)).status == 404
    reached = [
        (await fetch(f"/api/v1/subjects/{sid}", token=t)).status
        for sid in files
        for t in (first.token, second.token)
    ]
    assert reached.count(200) == 3
    entries = [
        e
        for e in await services.audit.entries_for(leaving.id)
        if e["action"] == "subjects.hand_over"
    ]
    assert len(entries) == 1 and entries[0]["details"]["files"] == 3
    to_self = await fetch(
        f"/api/v1/staff/{leaving.id}/handover",
        "POST",
        token=officer.token,
        json_body={"to_worker_ids": [leaving.id]},
    )
    assert to_self.status == 422


async def test_an_unreachable_subject_is_lost_contact_then_detached_until_visited(
    fetch, tree, team, clock, services, make_staff
):
    officer, (worker, _, _) = team
    sid = await open_case(fetch, tree, officer, worker, CORRECTIONS)
    # The 2 March check-in window closes unmet at midnight.
    await services.obligations.close_windows(local(2026, 3, 3, 0, 0))
    caseload = services.caseload
    early = await caseload.escalate_lost_contact(local(2026, 3, 3, 23, 59, 59))
    assert early == {"examined": 0, "lost_contact": 0}  # 24 hours to reach the person
    late = await caseload.escalate_lost_contact(local(2026, 3, 4, 0, 0))
    assert late == {"examined": 1, "lost_contact": 1}
    again = await caseload.escalate_lost_contact(local(2026, 3, 4, 1, 0))
    assert again["lost_contact"] == 0
    clock.set(local(2026, 3, 12, 9, 0))
    officer.token = await make_staff.token_for(officer)
    alerts = await fetch("/api/v1/alerts?status=open", token=officer.token)
    lost = [a for a in alerts.json["items"] if a["kind"] == "lost_contact"]
    assert len(lost) == 1 and lost[0]["details"]["task"] == "search"
    # 脱管 since 3 March: 9 days on the 12th suggest 训诫; after 10 days, 警告.
    suggestions = await fetch(f"/api/v1/subjects/{sid}/sanction-suggestions", token=officer.token)
    assert [s["kind"] for s in suggestions.json["items"]] == ["admonish"]
    clock.set(local(2026, 3, 14, 9, 0))
    officer.token = await make_staff.token_for(officer)
    suggestions = await fetch(f"/api/v1/subjects/{sid}/sanction-suggestions", token=officer.token)
    assert [s["kind"] for s in suggestions.json["items"]] == ["warn"]
    worker.token = await make_staff.token_for(worker)
    found = await fetch(
        f"/api/v1/subjects/{sid}/visits",
        "POST",
        token=worker.token,
        json_body={"kind": "talk", "note": "已联系上，本人在外地打工"},
    )
    assert found.status == 201
    detachments = [d async for d in services.sanctions._detachments.find({"subject_id": sid})]
    assert [d["end_date"] for d in detachments] == ["2026-03-14"]

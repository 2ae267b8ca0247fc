"""A whole day of a supervised person and their worker, through the real HTTP stack and the
local WeChat stand-in: login, binding, tasks, a check-in and its retry, ten days of leave up the
chain, a reminder sent only after consent, a missed check-in alerting the worker."""

from __future__ import annotations

import datetime as dt

from models.geo import Area
from models.policy import Role
from server.app import SYSTEM
from server.wechat_standin import openid_for
from tests.mp_support import STATION_CENTRE, STATION_RADIUS_M, local
from tests.subject_factories import subject_body

CORRECTIONS = {
    "type": "community_corrections",
    "start_date": "2026-11-02",
    "end_date": "2027-11-01",
    "sentence_type": "probation",
}


async def test_a_day_of_a_person_and_their_worker(
    api, fetch, tree, make_staff, clock, services, mp_clients, jobs_services, wechat_standin
):
    clock.set(local(2026, 11, 2, 8, 0))
    await services.orgs.set_area(
        SYSTEM, tree.station.id, Area(center=STATION_CENTRE, radius_m=STATION_RADIUS_M)
    )
    officer = await make_staff(Role.STATION_OFFICER, tree.station)
    county = await make_staff(Role.COUNTY_OFFICER, tree.county)
    worker = await make_staff(Role.SOCIAL_WORKER, tree.station)

    async def console(account):
        return await make_staff.token_for(account)

    created = await fetch(
        "/api/v1/subjects",
        "POST",
        json_body=subject_body(tree.station.id),
        token=await console(officer),
    )
    subject_id = created.json["id"]
    await fetch(
        f"/api/v1/subjects/{subject_id}/assignments",
        "PUT",
        json_body={"social_worker_ids": [worker.id]},
        token=await console(officer),
    )
    opened = await fetch(
        f"/api/v1/subjects/{subject_id}/programs",
        "POST",
        json_body=CORRECTIONS,
        token=await console(officer),
    )
    assert opened.status == 201, opened.body

    # The worker binds their WeChat with a code from a password session.
    staff_code = await fetch("/api/v1/me/binding-code", "POST", token=await console(worker))
    worker_app = mp_clients()
    assert (await worker_app.login("worker-wang")).json["bound"] is False
    bound = await worker_app.bind(staff_code.json["code"])
    assert bound.json == {"role": "social_worker", "subject_id": None}

    # The person: signed in but unbound, they are told to ask their worker.
    person = mp_clients()
    login = await person.login("person-chen")
    assert login.status == 200 and login.json["bound"] is False
    refused = await person.tasks()
    assert refused.status == 403
    assert "绑定码" in refused.json["error"]["message"]
    code = await fetch(
        f"/api/v1/subjects/{subject_id}/binding-code",
        "POST",
        json_body={"role": "subject"},
        token=await console(worker),
    )
    assert code.status == 201
    assert (await person.bind(code.json["code"])).json == {
        "role": "subject",
        "subject_id": subject_id,
    }
    stranger = mp_clients()
    await stranger.login("someone-else")
    reused = await stranger.bind(code.json["code"])
    assert reused.status == 400
    assert reused.json["error"]["code"] == "invalid_binding_code"
    me = await person.call("GET", "/mp/v1/me")
    assert me.json["role"] == "subject" and me.json["station"] == tree.station.name

    # Tasks: today's check-in is open.
    tasks = await person.tasks(dt.date(2026, 11, 2), dt.date(2026, 11, 2))
    checkins = [t for t in tasks.json["items"] if t["kind"] == "remote_checkin"]
    assert [t["status"] for t in checkins] == ["open"]

    # A reminder before any consent: in the app only, nothing pushed through WeChat.
    await jobs_services.wechat_tokens.refresh()
    clock.set(local(2026, 11, 2, 12, 30))
    await jobs_services.obligations.send_reminders(clock.now())
    person_openid = openid_for("person-chen")
    assert wechat_standin.state.messages_to(person_openid) == []
    messages = await person.call("GET", "/mp/v1/messages")
    assert any("远程签到" in m["title"] for m in messages.json["items"])
    # After one acceptance: exactly one reminder goes out, the next one stays in the app.
    accepted = await person.call("POST", "/mp/v1/consents", {"template_ids": ["tmpl-reminder"]})
    assert accepted.json["one_time"] == {"tmpl-reminder": 1}
    clock.set(local(2026, 11, 3, 12, 30))
    await jobs_services.obligations.send_reminders(clock.now())
    sent = wechat_standin.state.messages_to(person_openid)
    assert len(sent) == 1 and sent[0]["template_id"] == "tmpl-reminder"
    clock.set(local(2026, 11, 4, 12, 30))
    await jobs_services.obligations.send_reminders(clock.now())
    assert len(wechat_standin.state.messages_to(person_openid)) == 1

    # Tuesday's check-in, retried after a lost answer: one record, the same answer.
    clock.set(local(2026, 11, 3, 9, 15))
    await person.login("person-chen")
    first = await person.check_in(
        lat=STATION_CENTRE.lat,
        lng=STATION_CENTRE.lng,
        coord_type="wgs84",
        captured_at=clock.now(),
        key="tue-checkin-0001",
    )
    retry = await person.check_in(
        lat=STATION_CENTRE.lat,
        lng=STATION_CENTRE.lng,
        coord_type="wgs84",
        captured_at=clock.now(),
        key="tue-checkin-0001",
    )
    assert first.status == retry.status == 201
    assert first.json == retry.json and first.json["status"] == "on_time"

    # Ten days of leave: the station reviews first, the county decides.
    leave = await person.call(
        "POST",
        "/mp/v1/leave-requests",
        {
            "start_date": "2026-11-10",
            "end_date": "2026-11-19",
            "destination": "杭州市西湖区",
            "reason": "陪同母亲就医",
        },
        headers={"Idempotency-Key": "leave-request-01"},
    )
    assert leave.status == 201, leave.body
    assert leave.json["status"] == "pending" and leave.json["next_level"] == "station"
    again = await person.call(
        "POST",
        "/mp/v1/leave-requests",
        {
            "start_date": "2026-11-10",
            "end_date": "2026-11-19",
            "destination": "杭州市西湖区",
            "reason": "陪同母亲就医",
        },
        headers={"Idempotency-Key": "leave-request-01"},
    )
    assert again.json == leave.json
    leave_id = leave.json["id"]
    not_theirs = await worker_app.call(
        "POST",
        f"/mp/v1/worker/leave-requests/{leave_id}/decision",
        {"approve": True, "comment": "同意"},
    )
    assert not_theirs.status == 403
    station_step = await fetch(
        f"/api/v1/leave-requests/{leave_id}/decision",
        "POST",
        json_body={"approve": True, "comment": "情况属实，报县局审批"},
        token=await console(officer),
    )
    assert station_step.json["status"] == "pending"
    assert station_step.json["next_level"] == "county"
    county_step = await fetch(
        f"/api/v1/leave-requests/{leave_id}/decision",
        "POST",
        json_body={"approve": True, "comment": "同意"},
        token=await console(county),
    )
    assert county_step.json["status"] == "approved"

    # Monday and Wednesday pass without a check-in: the worker is alerted, and acknowledges
    # from WeChat.
    clock.set(local(2026, 11, 5, 0, 10))
    await jobs_services.obligations.close_windows(clock.now())
    await worker_app.login("worker-wang")
    alerts = await worker_app.call("GET", "/mp/v1/worker/alerts?status=open")
    missed = [a for a in alerts.json["items"] if a["kind"] == "obligation_missed"]
    assert [a["subject_id"] for a in missed] == [subject_id, subject_id]
    ack = await worker_app.call(
        "POST",
        f"/mp/v1/worker/alerts/{missed[0]['id']}/ack",
        headers={"Idempotency-Key": "ack-alert-0001"},
    )
    assert ack.status == 200, ack.body
    caseload = await worker_app.call("GET", "/mp/v1/worker/caseload")
    assert caseload.status == 200
    # A person never reaches a worker's endpoint; the worker never reaches the console API
    # with a WeChat session.
    assert (await person.call("GET", "/mp/v1/worker/caseload")).status == 403
    assert (await worker_app.call("GET", "/api/v1/caseload")).status == 403

    # No answer anywhere carried WeChat's session key.
    for client in (person, worker_app):
        assert client.history
        assert not any(b"session_key" in answer.body for answer in client.history)
    assert not any(b"session_key" in answer.body for _, answer in fetch.answers)

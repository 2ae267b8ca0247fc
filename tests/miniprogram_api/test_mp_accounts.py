"""Mini-program sign-in and binding, WeChat's failures as a person meets them, and the notifier
through the stand-in: token expiry, busy, quota, refused subscriptions."""

from __future__ import annotations

import datetime as dt
import struct
import zlib

from miniprogram_api.client import multipart
from models.policy import Role
from server.wechat_standin import openid_for
from tests.mp_support import enrol, local
from tests.subject_factories import subject_body

CORRECTIONS = {
    "type": "community_corrections",
    "start_date": "2026-11-02",
    "end_date": "2027-11-01",
    "sentence_type": "probation",
}


async def test_wechat_busy_is_retried_and_then_answered_503_in_chinese(
    api, mp_clients, wechat_standin
):
    client = mp_clients()
    wechat_standin.state.fail_next("/sns/jscode2session", -1, 2)
    assert (await client.login("busy-then-fine")).status == 200
    wechat_standin.state.fail_next("/sns/jscode2session", -1, 5)
    answer = await client.login("always-busy")
    assert answer.status == 503
    assert answer.headers.get("Retry-After")
    assert answer.json["error"]["message"] == "微信服务暂时不可用，请稍后重试。"


async def test_bad_codes_and_quota_get_clear_answers(api, mp_clients, wechat_standin):
    client = mp_clients()
    invalid = await client.call("POST", "/mp/v1/auth/login", {"code": "not-a-dev-code"})
    assert invalid.status == 400
    assert invalid.json["error"]["code"] == "invalid_login_code"
    assert "重新进入小程序" in invalid.json["error"]["message"]
    wechat_standin.state.fail_next("/sns/jscode2session", 45011, 1)
    quota = await client.login("over-quota")
    assert quota.status == 429
    assert quota.headers.get("Retry-After")
    wrong_type = await client.call("POST", "/mp/v1/auth/login", {"code": 12345})
    assert wrong_type.status == 422
    assert wrong_type.json["error"]["details"][0] == {"field": "code", "message": "应为文字"}


async def test_tokens_expire_and_are_refused_with_401(api, mp_clients, clock):
    client = mp_clients()
    await client.login("expiring")
    assert (await client.call("GET", "/mp/v1/me")).status == 200
    clock.advance(dt.timedelta(days=8))
    expired = await client.call("GET", "/mp/v1/me")
    assert expired.status == 401
    assert expired.json["error"]["message"] == "登录已过期，请重新登录。"


async def test_binding_attempts_are_limited_per_wechat_user(api, mp_clients):
    client = mp_clients()
    await client.login("guesser")
    statuses = [(await client.bind(f"WRONG{n:03d}")).status for n in range(6)]
    assert statuses[:5] == [400] * 5
    assert statuses[5] == 429
    assert "次数过多" in (await client.bind("WRONG999")).json["error"]["message"]


async def test_rebinding_moves_the_person_to_the_new_phone(
    api, fetch, tree, make_staff, clock, mp_clients
):
    clock.set(local(2026, 11, 2, 8, 0))
    officer = await make_staff.token_for(await make_staff(Role.STATION_OFFICER, tree.station))
    subject_id, old_phone = await enrol(fetch, mp_clients, tree, officer, CORRECTIONS, "old-phone")
    assert (await old_phone.tasks()).status == 200
    code = await fetch(
        f"/api/v1/subjects/{subject_id}/binding-code",
        "POST",
        json_body={"role": "subject"},
        token=officer,
    )
    new_phone = mp_clients()
    await new_phone.login("new-phone")
    assert (await new_phone.bind(code.json["code"])).status == 200
    assert (await new_phone.tasks()).status == 200
    dropped = await old_phone.tasks()
    assert dropped.status == 403
    assert dropped.json["error"]["code"] == "not_bound"


async def test_a_guardian_code_is_only_for_a_mental_health_patient_or_a_minor(
    api, fetch, tree, make_staff, clock, store
):
    clock.set(local(2026, 11, 2, 8, 0))
    officer = await make_staff.token_for(await make_staff(Role.STATION_OFFICER, tree.station))

    async def case_file(birth: dt.date, program: dict | None = None) -> str:
        created = await fetch(
            "/api/v1/subjects",
            "POST",
            json_body=subject_body(tree.station.id, birth=birth),
            token=officer,
        )
        assert created.status == 201, created.body
        if program is not None:
            opened = await fetch(
                f"/api/v1/subjects/{created.json['id']}/programs",
                "POST",
                json_body=program,
                token=officer,
            )
            assert opened.status == 201, opened.body
        return created.json["id"]

    async def code(subject_id: str, role: str):
        return await fetch(
            f"/api/v1/subjects/{subject_id}/binding-code",
            "POST",
            json_body={"role": role},
            token=officer,
        )

    adult = await case_file(dt.date(1990, 3, 7), CORRECTIONS)
    refused = await code(adult, "guardian")
    assert refused.status == 409
    assert refused.json["error"]["code"] == "no_guardian"
    assert refused.json["error"]["details"] == {"field": "role"}
    assert await store.collection("binding_codes").count_documents({"target_id": adult}) == 0
    assert (await code(adult, "subject")).status == 201
    minor = await case_file(dt.date(2009, 11, 3))  # 17 until tomorrow
    assert (await code(minor, "guardian")).status == 201
    patient = await case_file(
        dt.date(1980, 1, 1),
        {
            "type": "mental_health",
            "start_date": "2026-11-02",
            "diagnosis": "精神分裂症",
            "risk_level": 1,
            "guardian": {"name": "家属", "phone": "13900000000", "relation": "母亲"},
        },
    )
    assert (await code(patient, "guardian")).status == 201


async def test_mini_program_posts_are_idempotent(api, fetch, tree, make_staff, clock, mp_clients):
    clock.set(local(2026, 11, 2, 8, 0))
    officer = await make_staff.token_for(await make_staff(Role.STATION_OFFICER, tree.station))
    _, person = await enrol(fetch, mp_clients, tree, officer, CORRECTIONS, "asker")
    body = {"needs": ["housing", "job"], "note": "刚出狱，暂无住处"}
    headers = {"Idempotency-Key": "assist-0000001"}
    first = await person.call("POST", "/mp/v1/assistance-requests", body, headers=headers)
    assert first.status == 201, first.body
    again = await person.call("POST", "/mp/v1/assistance-requests", body, headers=headers)
    assert again.status == 201 and again.json == first.json
    other = await person.call(
        "POST", "/mp/v1/assistance-requests", {"needs": ["food"]}, headers=headers
    )
    assert other.status == 409
    assert other.json["error"]["message"] == "该请求编号已用于另一次提交。"
    bad_key = await person.call(
        "POST", "/mp/v1/assistance-requests", body, headers={"Idempotency-Key": "x"}
    )
    assert bad_key.status == 422


async def test_the_notifier_renews_an_expired_token_and_respects_refusals(
    api, fetch, tree, make_staff, clock, mp_clients, jobs_services, wechat_standin, store
):
    clock.set(local(2026, 11, 2, 8, 0))
    officer = await make_staff.token_for(await make_staff(Role.STATION_OFFICER, tree.station))
    subject_id, person = await enrol(fetch, mp_clients, tree, officer, CORRECTIONS, "notified")
    openid = openid_for("notified")
    await jobs_services.wechat_tokens.refresh()
    await person.call("POST", "/mp/v1/consents", {"template_ids": ["tmpl-reminder"]})
    await person.call("POST", "/mp/v1/consents", {"template_ids": ["tmpl-reminder"]})
    # The stored token stops working: the notifier renews it and the message still goes out.
    wechat_standin.state.expire_tokens()
    clock.set(local(2026, 11, 2, 12, 30))
    await jobs_services.obligations.send_reminders(clock.now())
    assert len(wechat_standin.state.messages_to(openid)) == 1
    # WeChat busy beyond the retries: not delivered, the acceptance is kept for later.
    wechat_standin.state.fail_next("/cgi-bin/message/subscribe/send", -1, 5)
    clock.set(local(2026, 11, 3, 12, 30))
    await jobs_services.obligations.send_reminders(clock.now())
    assert len(wechat_standin.state.messages_to(openid)) == 1
    state = await jobs_services.consents.state(await _user_id(jobs_services, openid))
    assert state.one_time == {"tmpl-reminder": 1}
    # The person turned the reminders off in WeChat: refused, remembered, in-app only.
    wechat_standin.state.refuse_all()
    clock.set(local(2026, 11, 4, 12, 30))
    await jobs_services.obligations.send_reminders(clock.now())
    state = await jobs_services.consents.state(await _user_id(jobs_services, openid))
    assert "tmpl-reminder" in state.refused
    outcomes = [
        d["outcome"] for d in await jobs_services.deliveries.for_recipient(f"subject:{subject_id}")
    ]
    # Each undelivered message is left in the app, and the log says so.
    assert sorted(outcomes) == ["failed", "in_app_only", "in_app_only", "refused", "sent"]
    messages = await person.call("GET", "/mp/v1/messages")
    assert len([m for m in messages.json["items"] if "签到" in m["title"]]) == 3
    raw = [repr(d) async for d in store.database["deliveries"].find({})]
    assert not any(openid in text for text in raw)


async def _user_id(services, openid: str) -> str:
    return await services.mp_accounts.user_id_for(openid)


async def test_uploads_refuse_what_is_not_a_photo(api, fetch, tree, make_staff, clock, mp_clients):
    clock.set(local(2026, 11, 2, 8, 0))
    officer = await make_staff.token_for(await make_staff(Role.STATION_OFFICER, tree.station))
    _, person = await enrol(fetch, mp_clients, tree, officer, CORRECTIONS, "uploader")
    text = await person.upload(b"hello", filename="a.jpg")
    assert text.status == 415
    not_multipart = await person.call(
        "POST", "/mp/v1/uploads", body=b"{}", headers={"Content-Type": "application/json"}
    )
    assert not_multipart.status == 415
    # A multipart body tornado cannot parse (no boundary, no final boundary) answered 500.
    for content_type, body in (
        ("multipart/form-data", b""),
        ("multipart/form-data; boundary=xyz", b"--xyz\r\nno headers"),
    ):
        malformed = await person.call(
            "POST", "/mp/v1/uploads", body=body, headers={"Content-Type": content_type}
        )
        assert malformed.status == 400, content_type
        assert malformed.json["error"]["message"] == "请求格式有误。"


async def test_consents_take_only_what_wechat_issues(
    api, fetch, tree, make_staff, clock, mp_clients
):
    clock.set(local(2026, 11, 2, 8, 0))
    officer = await make_staff.token_for(await make_staff(Role.STATION_OFFICER, tree.station))
    _, person = await enrol(fetch, mp_clients, tree, officer, CORRECTIONS, "consenting")
    # A `.` in a template id nested the stored counts (500 then, and on every later call); a
    # NUL could not be stored as a field name (500).
    for body in (
        b'{"template_ids": ["a.b"]}',
        b'{"template_ids": ["$inc"]}',
        b'{"template_ids": ["a\\u0000b"]}',
        b'{"privacy_notice_version": "' + b"0" * 41 + b'"}',
        b'{"privacy_notice_version": "v1\\u0000"}',
    ):
        refused = await person.call(
            "POST", "/mp/v1/consents", body=body, headers={"Content-Type": "application/json"}
        )
        assert refused.status == 422, body
    accepted = await person.call(
        "POST", "/mp/v1/consents", {"template_ids": ["tmpl-reminder", "6sXZa4_fiLv-TrV"]}
    )
    assert accepted.status == 200
    assert accepted.json["one_time"] == {"6sXZa4_fiLv-TrV": 1, "tmpl-reminder": 1}
    notice = await person.call("POST", "/mp/v1/consents", {"privacy_notice_version": "2026-11"})
    assert notice.json["privacy_notice_version"] == "2026-11"


async def test_leave_is_returned_from_the_mini_program(
    api, fetch, tree, make_staff, clock, mp_clients
):
    clock.set(local(2026, 11, 2, 8, 0))
    account = await make_staff(Role.STATION_OFFICER, tree.station)
    officer = await make_staff.token_for(account)
    _, person = await enrol(fetch, mp_clients, tree, officer, CORRECTIONS, "traveller")
    leave = await person.call(
        "POST",
        "/mp/v1/leave-requests",
        {
            "start_date": "2026-11-03",
            "end_date": "2026-11-05",
            "destination": "丽水",
            "reason": "探亲",
        },
    )
    assert leave.status == 201 and leave.json["next_level"] == "station"
    early = await person.call("POST", f"/mp/v1/leave-requests/{leave.json['id']}/return")
    assert early.status == 409  # not granted yet
    await fetch(
        f"/api/v1/leave-requests/{leave.json['id']}/decision",
        "POST",
        json_body={"approve": True, "comment": "同意"},
        token=await make_staff.token_for(account),
    )
    clock.set(local(2026, 11, 5, 18, 0))
    await person.login("traveller")
    back = await person.call(
        "POST",
        f"/mp/v1/leave-requests/{leave.json['id']}/return",
        {"location": {"lat": 28.02, "lng": 120.65, "coord_type": "gcj02", "accuracy": 30}},
    )
    assert back.status == 200, back.body
    assert back.json["returned_on"] == "2026-11-05" and back.json["return_late"] is False
    officer = await make_staff.token_for(account)
    _, other = await enrol(fetch, mp_clients, tree, officer, CORRECTIONS, "other-person")
    theirs = await other.call("POST", f"/mp/v1/leave-requests/{leave.json['id']}/return")
    assert theirs.status == 404


async def test_a_worker_records_visits_and_results_from_wechat(
    api, fetch, tree, make_staff, clock, mp_clients
):
    clock.set(local(2026, 11, 2, 8, 0))
    officer = await make_staff(Role.STATION_OFFICER, tree.station)
    officer_token = await make_staff.token_for(officer)
    detox = {"type": "drug_rehab", "start_date": "2026-11-02", "mode": "community_detox"}
    subject_id, _ = await enrol(fetch, mp_clients, tree, officer_token, detox, "detox-person")
    code = await fetch("/api/v1/me/binding-code", "POST", token=officer_token)
    phone = mp_clients()
    await phone.login("officer-wu")
    assert (await phone.bind(code.json["code"])).json["role"] == "station_officer"
    visit = await phone.call(
        "POST",
        "/mp/v1/worker/visits",
        {"subject_id": subject_id, "kind": "visit", "note": "入户走访，情况稳定"},
        headers={"Idempotency-Key": "visit-0000001"},
    )
    assert visit.status == 201, visit.body
    obligations = await fetch(
        f"/api/v1/subjects/{subject_id}/obligations?from=2026-11-02&to=2026-12-01&kind=drug_test",
        token=await make_staff.token_for(officer),
    )
    (test,) = [o for o in obligations.json["items"] if o["id"]][:1]
    result = await phone.call(
        "POST", f"/mp/v1/worker/obligations/{test['id']}/result", {"outcome": "negative"}
    )
    assert result.status == 200, result.body
    assert result.json["status"] == "done"
    unknown = await phone.call(
        "POST", f"/mp/v1/worker/obligations/{test['id']}/result", {"outcome": "maybe"}
    )
    assert unknown.status in (409, 422)


async def test_free_text_is_checked_where_enabled(
    api, fetch, tree, make_staff, clock, mp_clients, services
):
    clock.set(local(2026, 11, 2, 8, 0))
    officer = await make_staff.token_for(await make_staff(Role.STATION_OFFICER, tree.station))
    _, person = await enrol(fetch, mp_clients, tree, officer, CORRECTIONS, "writer")
    services.content_check.enabled = True
    risky = await person.call(
        "POST", "/mp/v1/assistance-requests", {"needs": ["legal"], "note": "这里有违禁词"}
    )
    assert risky.status == 422
    assert risky.json["error"]["details"] == [
        {"field": "note", "message": "内容含有不当信息，请修改后重试。"}
    ]
    assert risky.json["error"]["message"] == "内容含有不当信息，请修改后重试。"
    fine = await person.call(
        "POST", "/mp/v1/assistance-requests", {"needs": ["legal"], "note": "需要法律援助"}
    )
    assert fine.status == 201


async def test_a_retried_upload_or_bind_answers_the_first_result(
    api, fetch, tree, make_staff, clock, mp_clients
):
    clock.set(local(2026, 11, 2, 8, 0))
    officer = await make_staff.token_for(await make_staff(Role.STATION_OFFICER, tree.station))
    subject_id, _ = await enrol(fetch, mp_clients, tree, officer, CORRECTIONS, "retrier")
    code = await fetch(
        f"/api/v1/subjects/{subject_id}/binding-code",
        "POST",
        json_body={"role": "subject"},
        token=officer,
    )
    phone = mp_clients()
    await phone.login("retrier-new-phone")
    key = {"Idempotency-Key": "bind-retry-0001"}
    body = {"binding_code": code.json["code"]}
    first = await phone.call("POST", "/mp/v1/auth/bind", body, headers=key)
    again = await phone.call("POST", "/mp/v1/auth/bind", body, headers=key)
    assert first.status == again.status == 200 and first.body == again.body
    photo = png_bytes()
    sent = await phone.call("POST", "/mp/v1/uploads", **upload_call(photo, "upload-retry-01"))
    resent = await phone.call("POST", "/mp/v1/uploads", **upload_call(photo, "upload-retry-01"))
    assert sent.status == resent.status == 201 and sent.json == resent.json


def upload_call(data: bytes, key: str) -> dict:
    media_type, body = multipart("file", "photo.png", "image/png", data)
    return {"body": body, "headers": {"Content-Type": media_type, "Idempotency-Key": key}}


def png_bytes() -> bytes:
    raw = b"".join(b"\x00" + b"\x80" * 40 for _ in range(40))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    header = struct.pack(">IIBBBBB", 40, 40, 8, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(raw))
        + chunk(b"IEND", b"")
    )


async def test_logging_out_ends_the_session_but_keeps_the_binding(
    api, fetch, tree, make_staff, clock, mp_clients
):
    clock.set(local(2026, 11, 2, 8, 0))
    officer = await make_staff.token_for(await make_staff(Role.STATION_OFFICER, tree.station))
    _, person = await enrol(fetch, mp_clients, tree, officer, CORRECTIONS, "leaver")
    assert (await person.call("POST", "/mp/v1/auth/logout")).status == 204
    assert (await person.tasks()).status == 401
    again = await person.login("leaver")
    assert again.json["bound"] is True and again.json["role"] == "subject"


async def test_tasks_refuse_a_day_the_calendar_cannot_step_past(
    api, fetch, tree, make_staff, clock, mp_clients
):
    clock.set(local(2026, 11, 2, 8, 0))
    officer = await make_staff.token_for(await make_staff(Role.STATION_OFFICER, tree.station))
    _, phone = await enrol(fetch, mp_clients, tree, officer, CORRECTIONS, "calendar-edge")
    # The default `to`, seven days after `from`, overflowed past 9999-12-31: a 500.
    edge = await phone.call("GET", "/mp/v1/me/tasks?from=9999-12-31")
    assert edge.status == 422
    assert edge.json["error"]["details"] == [{"field": "from", "message": "应为日期（YYYY-MM-DD）"}]
    assert (await phone.tasks(dt.date(2026, 11, 2), dt.date(2026, 11, 2))).status == 200


async def test_a_workers_login_answers_a_role_the_document_declares(
    api, fetch, tree, make_staff, mp_clients
):
    document = (await fetch("/openapi.json")).json
    schemas = document["components"]["schemas"]
    declared = schemas["SessionRole"]["enum"]
    assert set(declared) == {"subject", "guardian", *(str(role) for role in Role)}
    assert "staff" not in declared
    role_ref = {"$ref": "#/components/schemas/SessionRole"}
    for answer in ("LoginOut", "MeOut"):
        assert schemas[answer]["properties"]["role"]["anyOf"] == [role_ref, {"type": "null"}]
    login_answer = document["paths"]["/mp/v1/auth/login"]["post"]["responses"]["200"]
    assert login_answer["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/LoginOut"
    }
    worker = await make_staff(Role.SOCIAL_WORKER, tree.station)
    code = await fetch("/api/v1/me/binding-code", "POST", token=await make_staff.token_for(worker))
    phone = mp_clients()
    assert (await phone.login("worker-zhao")).json["role"] is None
    assert (await phone.bind(code.json["code"])).json["role"] == "social_worker"
    again = await phone.login("worker-zhao")
    assert again.json["bound"] is True
    assert again.json["role"] == "social_worker" and again.json["role"] in declared
    me = await phone.call("GET", "/mp/v1/me")
    assert me.json["role"] == "social_worker"

"""Hostile input on every mini-program route and on WeChat's push: refused in Chinese, never a
5xx, nothing written."""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import json
import logging
import time
import uuid
from typing import Any
from urllib.parse import urlencode

import pytest
from bson import ObjectId

from miniprogram_api.client import MiniProgramClient
from models.identity import Identity
from models.policy import Policy, Role
from models.wechat_push import PUSH_NONCES
from server.config import Config
from tests.conftest import Tree
from tests.handlers.test_hostile_input import (
    JSON,
    OPERATORS,
    Case,
    Outcome,
    Schemas,
    Send,
    Target,
    cases_for,
    changed,
    fetch_sender,
    openapi,
    operations,
    reaches,
    record,
    send_all,
    server_faults,
    snapshot,
    source_of,
    verdict,
    zero_cases,
)
from tests.miniprogram_api.test_push import (
    POPUP,
    PUSH,
    SENT,
    TEMPLATE,
    TOKEN,
    accepted,
    body_for,
    event_doc,
    popup,
    post,
    signed,
    user_id_of,
)
from tests.mp_support import MpClients, Supervised, enrol

MENTAL_HEALTH = {
    "type": "mental_health",
    "start_date": "2026-11-02",
    "diagnosis": "诊断",
    "risk_level": 1,
    "guardian": {"name": "家属", "phone": "13900000000", "relation": "母亲"},
}


@pytest.fixture
def config(config: Config) -> Config:
    """Message push configured (plaintext mode) for every test here."""
    return dataclasses.replace(config, wechat_push_token=TOKEN, wechat_push_aes_key="")


@dataclasses.dataclass
class Caller:
    """A mini-program session and who it is."""

    name: str
    client: MiniProgramClient
    identity: Identity


async def callers(
    api: Any, fetch: Any, supervised: Supervised, mp_clients: MpClients, tree: Tree, make_staff: Any
) -> list[Caller]:
    """The bound probationer, a guardian of a mental-health patient, and a social worker's
    WeChat (the worker routes): each reaches routes the others do not."""
    services = api.runtime.services
    officer = await supervised.officer_token()
    patient, _ = await enrol(fetch, mp_clients, tree, officer, MENTAL_HEALTH, "hostile-patient")
    code = await fetch(
        f"/api/v1/subjects/{patient}/binding-code",
        "POST",
        json_body={"role": "guardian"},
        token=officer,
    )
    assert code.status == 201, code.body
    guardian = mp_clients()
    assert (await guardian.login("hostile-guardian")).status == 200
    assert (await guardian.bind(code.json["code"])).status == 200
    worker_account = await make_staff(Role.SOCIAL_WORKER, tree.station)
    staff_code = await fetch(
        "/api/v1/me/binding-code", "POST", token=await make_staff.token_for(worker_account)
    )
    assert staff_code.status == 201, staff_code.body
    worker = mp_clients()
    assert (await worker.login("hostile-worker")).status == 200
    assert (await worker.bind(staff_code.json["code"])).status == 200
    found = []
    for name, client in (
        ("subject", supervised.client),
        ("guardian", guardian),
        ("worker", worker),
    ):
        identity = await services.auth.resolve(client.token)
        assert identity is not None and identity.role is not None, name
        found.append(Caller(name, client, identity))
    return found


def idempotent(case: Case) -> bool:
    """The route keeps answers under an `Idempotency-Key` (so the key itself is input)."""
    source = source_of(case.operation.handler, case.operation.method)
    return "respond_once(" in source or "respond_captured(" in source


def key_cases(target: Target, schemas: Schemas) -> list[Case]:
    """Operators and absurd lengths in the `Idempotency-Key` header, the body valid."""
    op = target.operation
    if op.body is None or not op.writes:
        return []
    body = json.dumps(schemas.base(op.body, target.body), ensure_ascii=False).encode()
    found = []
    for key in (*(json.dumps(o) for o in OPERATORS), "k" * 10_000, "../../etc/passwd"):
        case = Case("hostile Idempotency-Key", op, target.path(), body, {**JSON}, part="header")
        case.headers["Idempotency-Key"] = key
        found.append(case)
    return [case for case in found if idempotent(case)]


def mp_sender(client: MiniProgramClient) -> Send:
    async def send(case: Case) -> tuple[int, bytes]:
        headers = dict(case.headers)
        if case.operation.writes:
            # A fresh key per request: the key machinery runs, and no answer is replayed.
            headers.setdefault("Idempotency-Key", uuid.uuid4().hex)
        body = case.body
        if body is None and case.operation.writes:
            body = b""
        answer = await client.call(case.operation.method, case.path, body=body, headers=headers)
        return answer.status, answer.body

    return send


def merge(total: Outcome, part: Outcome) -> None:
    total.sent += part.sent
    total.server_errors += part.server_errors
    total.failures += part.failures
    for status, n in part.statuses.items():
        total.statuses[status] = total.statuses.get(status, 0) + n


async def test_hostile_input_to_every_mini_program_route_is_refused_in_chinese(
    api, fetch, supervised, mp_clients, tree, make_staff, store, caplog, record_property
):
    started = time.monotonic()
    document = await openapi(fetch)
    schemas = Schemas(document)
    ops = operations(document, "/mp/v1/")
    policy = Policy()
    people = await callers(api, fetch, supervised, mp_clients, tree, make_staff)
    # The probationer's own leave request, to aim the return (销假) at a real one.
    leave = await supervised.client.call(
        "POST",
        "/mp/v1/leave-requests",
        {
            "start_date": "2026-11-10",
            "end_date": "2026-11-12",
            "destination": "杭州",
            "reason": "探亲",
        },
        headers={"Idempotency-Key": uuid.uuid4().hex},
    )
    assert leave.status == 201, leave.body
    limit = api.runtime.context.max_body_bytes
    batches: list[tuple[Caller, list[Case]]] = []
    zeros: list[tuple[Caller, list[Case]]] = []
    for person in people:
        cases: list[Case] = []
        mine: list[Case] = []
        for op in ops:
            target = Target(op, {name: str(ObjectId()) for name in op.params})
            if "leave_id" in op.params and person.name == "subject":
                target.ids["leave_id"] = leave.json["id"]
            allowed = reaches(person.identity, op, policy)
            for case in [*cases_for(target, schemas, limit), *key_cases(target, schemas)]:
                if not allowed:
                    case.refused_first()
                cases.append(case)
            if allowed:
                mine.extend(zero_cases(target, schemas))
        batches.append((person, cases))
        zeros.append((person, mine))

    before = await snapshot(store.database)
    outcome = Outcome()
    with caplog.at_level(logging.ERROR):
        for person, cases in batches:
            part = await send_all(cases, mp_sender(person.client), chinese=True)
            merge(outcome, part)
    wrote = changed(before, await snapshot(store.database))
    outcome.server_errors += server_faults(caplog.records)
    record(record_property, "mp_api", outcome, len(ops), time.monotonic() - started)
    verdict(outcome, wrote)

    # -0 is zero (a valid value: this runs after the write check), never a server error.
    zero = Outcome()
    for person, cases in zeros:
        merge(zero, await send_all(cases, mp_sender(person.client), chinese=True))
    assert not zero.server_errors, "\n".join(zero.server_errors)
    record_property("hostile_zero_requests", zero.sent)


# --- WeChat's push ------------------------------------------------------------------------------
# test_push.py covers a replayed POST, a stale POST, forged and missing signatures and the XML
# entity attack; what follows covers the rest: the URL check (GET) replayed or stale, a replay
# racing the original, hostile bodies under a valid signature, and hostile query values.


async def test_hostile_input_to_the_push_endpoint_is_refused(
    api, fetch, store, caplog, record_property
):
    started = time.monotonic()
    document = await openapi(fetch)
    schemas = Schemas(document)
    ops = operations(document, PUSH)
    assert {op.method for op in ops} == {"GET", "POST"}
    cases = [
        case
        for op in ops
        for case in cases_for(Target(op, {}), schemas, api.runtime.context.max_body_bytes)
    ]
    before = await snapshot(store.database)
    with caplog.at_level(logging.ERROR):
        outcome = await send_all(cases, fetch_sender(fetch), chinese=False)
    wrote = changed(before, await snapshot(store.database))
    outcome.server_errors += server_faults(caplog.records)
    record(record_property, "wechat_push", outcome, len(ops), time.monotonic() - started)
    verdict(outcome, wrote)


async def test_a_replayed_url_check_is_refused(fetch, clock):
    query = {**signed(clock), "echostr": "5831046752"}
    first = await fetch(f"{PUSH}?{urlencode(query)}")
    assert (first.status, first.body) == (200, b"5831046752")
    again = await fetch(f"{PUSH}?{urlencode(query)}")
    assert again.status == 403
    assert again.error["code"] == "replayed"
    assert b"5831046752" not in again.body


@pytest.mark.parametrize("seconds", [-301, 301, -86_400])
async def test_a_stale_url_check_is_refused_without_using_its_nonce(fetch, clock, store, seconds):
    query = {**signed(clock, skew=dt.timedelta(seconds=seconds)), "echostr": "5831046752"}
    answer = await fetch(f"{PUSH}?{urlencode(query)}")
    assert answer.status == 403
    assert answer.error["code"] == "stale_timestamp"
    assert await store.collection(PUSH_NONCES).count_documents({}) == 0


async def test_a_push_replayed_while_the_first_is_in_flight_counts_once(fetch, clock, services):
    query = signed(clock)
    body, content_type = body_for("json", popup((TEMPLATE, "accept")))
    answers = await asyncio.gather(*(post(fetch, query, body, content_type) for _ in range(6)))
    assert sum(accepted(answer) for answer in answers) == 1
    refused = [answer for answer in answers if not accepted(answer)]
    assert {(a.status, a.error["code"]) for a in refused} == {(403, "replayed")}
    state = await services.consents.state(await user_id_of(services))
    assert state.one_time == {TEMPLATE: 1}


OPERATOR = {"$ne": None}
MUST_REFUSE = {
    "JSON nested 10,000 deep": '{"MsgType": ' + "[" * 10_000 + "]" * 10_000 + "}",
    # As deep as the push's 64 KiB allow.
    "XML nested 9,000 deep": "<xml>" + "<a>" * 9_000 + "</a>" * 9_000 + "</xml>",
    "invalid UTF-8": b'{"MsgType": "event\xff\xfe"}',
    "a top-level array": "[]",
    "a top-level string": '"event"',
    "a top-level number": "1e400",
    "an operator for MsgType": json.dumps({"MsgType": OPERATOR}),
    "NaN for MsgType": '{"MsgType": NaN}',
    "an operator for the openid": json.dumps(
        {
            **event_doc(POPUP, [{"TemplateId": TEMPLATE, "SubscribeStatusString": "accept"}]),
            "FromUserName": OPERATOR,
        }
    ),
    "an operator for a template": json.dumps(
        event_doc(POPUP, [{"TemplateId": OPERATOR, "SubscribeStatusString": "accept"}])
    ),
    "an operator for the list": json.dumps({**event_doc(POPUP, []), "List": {"$where": "1"}}),
    "a billion laughs": '<?xml version="1.0"?><!DOCTYPE x [<!ENTITY a "aaaaaaaaaa">'
    '<!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;">]><xml><MsgType>&b;</MsgType></xml>',
}
# Read, but nothing in them can grant or refuse anything: acknowledged, and nothing changes.
MAY_ACKNOWLEDGE = {
    "an operator for the status": json.dumps(
        event_doc(POPUP, [{"TemplateId": TEMPLATE, "SubscribeStatusString": OPERATOR}])
    ),
    "an operator for the event": json.dumps({"MsgType": "event", "Event": OPERATOR}),
    "huge numbers in a delivery report": json.dumps(
        event_doc(SENT, [{"TemplateId": TEMPLATE, "MsgID": 0, "ErrorCode": 0}])
    )
    .replace('"MsgID": 0', '"MsgID": 1e400')
    .replace('"ErrorCode": 0', '"ErrorCode": ' + "9" * 500),
}


@pytest.mark.parametrize("body", [*MUST_REFUSE, *MAY_ACKNOWLEDGE])
async def test_a_hostile_body_under_a_valid_signature_changes_nothing(
    fetch, clock, services, store, caplog, body
):
    text = MUST_REFUSE.get(body) or MAY_ACKNOWLEDGE[body]
    with caplog.at_level(logging.ERROR):
        answer = await post(fetch, signed(clock), text, "application/json")
    assert not server_faults(caplog.records)
    if body in MUST_REFUSE:
        assert answer.status == 400, answer.body
        assert answer.error["code"] == "malformed_push"
        # Refused before it was recorded: WeChat's retry of a genuine push is not locked out.
        assert await store.collection(PUSH_NONCES).count_documents({}) == 0
    else:
        assert accepted(answer), answer.body
    state = await services.consents.state(await user_id_of(services))
    assert (state.one_time, state.refused) == ({}, [])
    assert await store.collection("consents").count_documents({}) == 0


@pytest.mark.parametrize(
    "replace",
    [
        {"timestamp": json.dumps(OPERATOR)},
        {"nonce": json.dumps(OPERATOR)},
        {"signature": json.dumps(OPERATOR)},
        {"nonce": "n" * 10_000},
        {"timestamp": "9" * 500},
        {"timestamp": "-1"},
        {"echostr": json.dumps(OPERATOR)},
        {"echostr": "e" * 10_000},
    ],
    ids=lambda replace: f"{next(iter(replace))}={next(iter(replace.values()))[:12]}",
)
async def test_hostile_query_values_are_refused(fetch, clock, store, replace):
    query = {**signed(clock), "echostr": "5831046752", **replace}
    answer = await fetch(f"{PUSH}?{urlencode(query)}")
    # Outside the form WeChat sends, as the route declares it: refused naming the parameter.
    assert answer.status == 422
    assert answer.error["code"] == "validation_failed"
    assert [d["field"] for d in answer.error["details"]] == list(replace)
    assert b"5831046752" not in answer.body
    assert await store.collection(PUSH_NONCES).count_documents({}) == 0


# --- regressions ----------------------------------------------------------------------------


async def test_an_unknown_mini_program_path_is_refused_in_chinese(fetch, supervised):
    # Was English: the default handler answered for the staff API.
    for path in ("/mp/v1/leave-requests/../../etc/passwd", "/mp/v1/no-such-thing"):
        answer = await supervised.client.call("GET", path)
        assert answer.status == 404
        assert answer.json["error"]["code"] == "not_found"
        assert answer.json["error"]["message"] == "未找到相关内容。"
    staff = await fetch("/api/v1/no-such-thing")
    assert staff.status == 404
    assert staff.error["message"] == "Not found."


async def test_a_key_given_twice_is_refused_in_chinese_and_nothing_is_recorded(
    supervised, services
):
    # Was 200, recording whichever list the parser kept (the last).
    answer = await supervised.client.call(
        "POST",
        "/mp/v1/consents",
        body=b'{"template_ids": ["tmpl-reminder"], "template_ids": ["tmpl-leave"]}',
        headers={**JSON, "Idempotency-Key": uuid.uuid4().hex},
    )
    assert answer.status == 400
    assert answer.json["error"]["code"] == "invalid_json"
    assert answer.json["error"]["message"] == "请求内容不是有效的 JSON。"
    identity = await services.auth.resolve(supervised.client.token)
    state = await services.consents.state(str(identity.wechat_user_id))
    assert state.one_time == {}

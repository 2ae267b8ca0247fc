"""/openapi.json as the mini-program's developer reads it: `Idempotency-Key` on every write that
honours it, the `{field, message}` error shape, and each operation's error codes, checked against
what real failing requests answer."""

from __future__ import annotations

import json
import re
import uuid
from typing import Any

from handlers.openapi import _operations as operations_of
from miniprogram_api.checkins import SurveyBody
from models.idempotency import KEY_PATTERN
from models.policy import PUBLIC, SELF
from server.app import all_routes
from tests.mp_support import local

WRITES = ("post", "put", "patch", "delete")


async def mp_operations(fetch) -> dict[tuple[str, str], dict[str, Any]]:
    answer = await fetch("/openapi.json")
    assert answer.status == 200
    document = answer.json
    return {
        (method, path): operation
        for path, item in document["paths"].items()
        if path.startswith("/mp/v1/")
        for method, operation in item.items()
    } | {("components", ""): document["components"]}


async def test_every_mp_operation_declares_its_common_codes_and_the_key(fetch):
    operations = await mp_operations(fetch)
    components = operations.pop(("components", ""))
    assert len(operations) >= 20
    problem = components["schemas"]["MpErrorBody"]["properties"]["details"]
    assert problem["items"]["$ref"].endswith("/FieldProblem")
    assert set(components["schemas"]["FieldProblem"]["required"]) == {"field", "message"}
    keyed = set()
    for (method, path), operation in operations.items():
        codes = operation["x-anbang-error-codes"]
        action = operation["x-anbang-action"]
        if action != PUBLIC:
            assert codes["unauthenticated"]["status"] == 401, (method, path)
        if action not in (PUBLIC, SELF):
            assert codes["not_bound"]["status"] == 403, (method, path)
        if "requestBody" in operation:
            assert codes["validation_failed"]["status"] == 422, (method, path)
        for status, response in operation["responses"].items():
            if status.startswith(("4", "5")):
                media = response["content"]["application/json"]
                assert media["schema"]["$ref"].endswith("/MpErrorEnvelope")
                for code, example in media.get("examples", {}).items():
                    assert codes[code]["status"] == int(status)
                    assert example["value"]["error"]["code"] == code
        headers = [p for p in operation.get("parameters", []) if p["in"] == "header"]
        if headers:
            (header,) = headers
            assert header["name"] == "Idempotency-Key"
            assert header["schema"]["pattern"] == KEY_PATTERN.pattern
            assert (header["schema"]["minLength"], header["schema"]["maxLength"]) == (8, 128)
            assert codes["invalid_idempotency_key"]["status"] == 422
            keyed.add((method, path))
    # Every write but signing in and out honours a key; a check-in requires one.
    writes = {(m, p) for m, p in operations if m in WRITES}
    assert writes - keyed == {("post", "/mp/v1/auth/login"), ("post", "/mp/v1/auth/logout")}
    checkin = operations[("post", "/mp/v1/checkins")]
    assert [p["required"] for p in checkin["parameters"] if p["in"] == "header"] == [True]


async def test_the_person_facing_operations_have_chinese_summaries(fetch):
    operations = await mp_operations(fetch)
    operations.pop(("components", ""))
    for (method, path), operation in operations.items():
        # The worker's listings too: a mini-program developer reads every operation in Chinese.
        assert any("\u4e00" <= ch <= "\u9fff" for ch in operation["summary"]), (method, path)


async def test_the_codes_real_requests_answer_are_declared(supervised, clock, fetch, mp_clients):
    operations = await mp_operations(fetch)
    clock.set(local(2026, 11, 2, 10, 0))
    anonymous = mp_clients()
    unbound = mp_clients()
    assert (await unbound.login("openapi-unbound")).status == 200
    person = supervised.client
    location = {"lat": 28.0, "lng": 120.6, "coord_type": "wgs84", "accuracy": 10}
    leave = {
        "start_date": "2026-11-20",
        "end_date": "2026-11-21",
        "destination": "杭州",
        "reason": "探亲",
    }
    tries = [
        (anonymous, "post", "/mp/v1/checkins", {"location": location}, None),
        (anonymous, "get", "/mp/v1/leave-requests", None, None),
        (unbound, "get", "/mp/v1/leave-requests", None, None),
        (unbound, "post", "/mp/v1/assistance-requests", {"needs": ["food"]}, None),
        (unbound, "post", "/mp/v1/auth/bind", {"binding_code": "00000000"}, None),
        (person, "post", "/mp/v1/leave-requests", {}, None),
        (person, "post", "/mp/v1/leave-requests", leave, {"Idempotency-Key": "short"}),
        (person, "post", "/mp/v1/checkins", {"location": location}, None),
        (
            person,
            "post",
            "/mp/v1/checkins",
            {"location": location, "captured_at": clock.now().isoformat()},
            None,
        ),
        (person, "get", "/mp/v1/leave-requests/{leave_id}", None, None),
    ]
    seen = set()
    for client, method, path, body, headers in tries:
        url = path.replace("{leave_id}", "000000000000000000000000")
        answer = await client.call(method.upper(), url, body, headers=headers)
        assert answer.status >= 400, (method, path, answer.body)
        code = answer.json["error"]["code"]
        declared = operations[(method, path)]["x-anbang-error-codes"]
        assert code in declared, (method, path, code)
        assert declared[code]["status"] == answer.status, (method, path, code)
        assert all(set(p) == {"field", "message"} for p in answer.json["error"]["details"])
        seen.add(code)
    # The refusals above are the ones a mini-program meets first.
    assert {
        "unauthenticated",
        "not_bound",
        "invalid_binding_code",
        "validation_failed",
        "invalid_idempotency_key",
        "idempotency_key_required",
    } <= seen


def mp_contracts() -> dict[tuple[str, str], Any]:
    """(method, path template) -> the endpoint declaration of every /mp/v1 operation."""
    return {
        (method, template): getattr(handler, method).__endpoint__
        for _, method, handler, template in operations_of(all_routes())
        if template.startswith("/mp/v1/")
    }


async def test_every_mp_operation_shows_examples_its_own_models_accept(fetch):
    operations = await mp_operations(fetch)
    operations.pop(("components", ""))
    contracts = mp_contracts()
    assert set(contracts) == set(operations)
    for key, operation in operations.items():
        contract = contracts[key]
        if contract.body is not None:
            example = operation["requestBody"]["content"]["application/json"]["example"]
            # Parsed as the handler parses a body: the example is a request that would pass.
            contract.body.model_validate_json(json.dumps(example), strict=True)
        if contract.response is not None:
            success = operation["responses"][str(contract.status)]
            example = success["content"]["application/json"]["example"]
            contract.response.model_validate_json(json.dumps(example))
    check_in = operations[("post", "/mp/v1/checkins")]
    example = check_in["requestBody"]["content"]["application/json"]["example"]
    # The location as `wx.getLocation` answers it, and the optional survey.
    assert example["location"]["errMsg"] == "getLocation:ok"
    assert set(example["survey"]) <= set(SurveyBody.model_fields)


PLACEHOLDER_IDS = ("000000000000000000000000", "not-an-id")


async def test_whatever_an_mp_route_answers_is_declared_on_it(supervised, clock, fetch, mp_clients):
    """Every /mp/v1 operation, called by each kind of caller with no body, an empty one, a
    wrong one, its own example, a bad key and ids that do not exist: each error code answered
    is declared on the operation with its status, and the envelope is the `{field, message}`
    one. Nothing answers 500."""
    operations = await mp_operations(fetch)
    operations.pop(("components", ""))
    clock.set(local(2026, 11, 2, 10, 0))
    unbound = mp_clients()
    assert (await unbound.login("sweep-unbound")).status == 200
    code = await fetch("/api/v1/me/binding-code", "POST", token=await supervised.officer_token())
    worker = mp_clients()
    assert (await worker.login("sweep-worker")).status == 200
    assert (await worker.bind(code.json["code"])).status == 200
    callers = {
        "anonymous": mp_clients(),
        "unbound": unbound,
        "worker": worker,
        "person": supervised.client,
    }
    # Signing out last: it ends the session the other calls use.
    ordered = sorted(operations, key=lambda key: key[1] == "/mp/v1/auth/logout")
    answered: dict[tuple[str, str], set[str]] = {key: set() for key in operations}
    for name, client in callers.items():
        for method, path in ordered:
            operation = operations[(method, path)]
            media = (operation.get("requestBody") or {}).get("content", {})
            example = media.get("application/json", {}).get("example")
            bodies: list[Any] = [None]
            if "application/json" in media:
                bodies += [{}, {"unexpected": True}, [1], example]
            keyed = any(p["name"] == "Idempotency-Key" for p in operation.get("parameters", []))
            keys = [uuid.uuid4().hex, "short"] if keyed else [None]
            for placeholder in PLACEHOLDER_IDS:
                url = re.sub(r"\{\w+\}", placeholder, path)
                for body in bodies:
                    for key in keys:
                        headers = {"Idempotency-Key": key} if key else None
                        answer = await client.call(method.upper(), url, body, headers=headers)
                        where = (name, method, url, body, key, answer.status)
                        assert answer.status < 500, (*where, answer.body)
                        if answer.status < 400:
                            continue
                        error = answer.json["error"]
                        declared = operation["x-anbang-error-codes"]
                        assert error["code"] in declared, (*where, error)
                        assert declared[error["code"]]["status"] == answer.status, (*where, error)
                        assert str(answer.status) in operation["responses"], where
                        assert all(set(p) == {"field", "message"} for p in error["details"])
                        answered[(method, path)].add(error["code"])
    # Every operation was refused at least once (anonymous callers, at the least).
    assert all(codes for key, codes in answered.items() if key[1] != "/mp/v1/auth/login")

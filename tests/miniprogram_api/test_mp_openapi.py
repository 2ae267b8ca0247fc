"""/openapi.json as the mini-program's developer reads it: `Idempotency-Key` on every write that
honours it, the `{field, message}` error shape, and each operation's error codes, checked against
what real failing requests answer."""

from __future__ import annotations

from typing import Any

from models.idempotency import KEY_PATTERN
from models.policy import PUBLIC, SELF
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
        if "/worker/" in path and method == "get":
            continue  # the staff API's own listings, served as they are
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

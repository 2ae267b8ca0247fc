"""The base handler: JSON in and out, the error envelope, request ids, limits and outages."""

from __future__ import annotations

import asyncio
import datetime as dt
import gc
import json
import logging
import re
import socket

import pytest
import pytest_asyncio
from pydantic import BaseModel, ConfigDict, Field

from handlers.base import BaseHandler, endpoint
from models.clock import SystemClock
from models.crypto import Suite
from models.keys import KeyVault, LocalKeyFile
from models.leases import LeaseService
from models.policy import PUBLIC, Role
from models.store import DatabaseSettings, Store
from server.app import all_routes, assemble_api, make_app
from tests.conftest import Fetch, serve_runtime


class Inner(BaseModel):
    model_config = ConfigDict(extra="forbid")
    lat: float = Field(ge=-90, le=90)


class EchoBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1, max_length=50)
    count: int
    day: dt.date
    where: Inner | None = None


class EchoHandler(BaseHandler):
    access = PUBLIC

    @endpoint("Echo a validated body", body=EchoBody, response=EchoBody)
    async def post(self) -> None:
        self.respond(self.parse(EchoBody), status=201)


class MiniProgramEchoHandler(EchoHandler):
    audience = "mp"


class SmallBodyHandler(EchoHandler):
    max_body_bytes = 2048


class BrokenHandler(BaseHandler):
    access = PUBLIC

    async def get(self) -> None:
        raise RuntimeError("secret 110101199003074514 must never leak")


class UndeclaredHandler(BaseHandler):
    async def get(self) -> None:
        self.respond({"leaked": True})


class LeaseProbeHandler(BaseHandler):
    """Reads through a real service, so a database outage surfaces from inside the models."""

    access = PUBLIC

    async def get(self) -> None:
        leases = LeaseService(self.application.settings["probe_store"], SystemClock())
        self.respond({"holder": await leases.holder("jobs")})


TEST_ROUTES = [
    (r"/test/echo", EchoHandler),
    (r"/test/mp-echo", MiniProgramEchoHandler),
    (r"/test/small", SmallBodyHandler),
    (r"/test/broken", BrokenHandler),
    (r"/test/undeclared", UndeclaredHandler),
    (r"/test/lease", LeaseProbeHandler),
]


async def _serve_with_test_routes(store, config, vault):
    runtime = assemble_api(store, config, vault)
    runtime.app = make_app(runtime.context, [*all_routes(), *TEST_ROUTES])
    runtime.app.settings["probe_store"] = store
    return await serve_runtime(runtime)


@pytest_asyncio.fixture
async def probe(store, config, vault):
    served = await _serve_with_test_routes(store, config, vault)
    client = Fetch(served.base_url)
    yield client
    client.close()
    served.server.stop()


VALID = {"name": "张三", "count": 3, "day": "2026-11-24"}


async def test_valid_body_round_trips(probe):
    answer = await probe("/test/echo", "POST", json_body=VALID)
    assert answer.status == 201
    assert answer.json == {**VALID, "where": None}


async def test_every_answer_carries_a_request_id(probe):
    answer = await probe("/healthz")
    assert len(answer.headers["X-Request-Id"]) >= 8
    # Always the server's own, whatever the client sent (its own is kept apart: see below).
    chosen = await probe("/healthz", headers={"X-Request-Id": "client-chosen-0001"})
    assert re.fullmatch(r"[0-9a-f]{32}", chosen.headers["X-Request-Id"])
    hostile = await probe("/healthz", headers={"X-Request-Id": "bad id <script> with spaces"})
    assert hostile.headers["X-Request-Id"] != "bad id <script> with spaces"


async def test_a_client_request_id_is_kept_but_never_keys_audit_entries(
    fetch, tree, make_staff, store
):
    """A client choosing the id its entries are filed under could pass them off as another
    request's: the audit keys entries by the server's id and keeps the client's beside it."""
    account = await make_staff(Role.COUNTY_OFFICER, tree.county)
    chosen = "client-chosen-0002"
    answer = await fetch(
        "/api/v1/auth/login",
        "POST",
        json_body={"username": account.username, "password": account.password},
        headers={"X-Request-Id": chosen},
    )
    assert answer.status == 200, answer.body
    ours = answer.headers["X-Request-Id"]
    assert ours != chosen and re.fullmatch(r"[0-9a-f]{32}", ours)
    entries = [e async for e in store.database["audit"].find({"request_id": ours})]
    assert entries and {e["action"] for e in entries} >= {"auth.login"}
    assert {e["client_request_id"] for e in entries} == {chosen}
    assert await store.database["audit"].count_documents({"request_id": chosen}) == 0
    # A malformed one is not kept at all.
    await fetch("/api/v1/auth/login", "POST", json_body={}, headers={"X-Request-Id": "a b"})
    assert await store.database["audit"].count_documents({"client_request_id": "a b"}) == 0


async def test_unknown_route_is_404_in_the_envelope(probe):
    for method in ("GET", "POST", "DELETE"):
        answer = await probe("/no/such/route", method)
        assert answer.status == 404
        assert answer.error["code"] == "not_found"
        assert answer.error["request_id"] == answer.headers["X-Request-Id"]


async def test_wrong_method_is_405(probe):
    answer = await probe("/healthz", "POST", json_body={})
    assert answer.status == 405
    assert answer.error["code"] == "method_not_allowed"


@pytest.mark.parametrize(
    "raw",
    [b"{not json", b'{"name": "a",}', b"[1, 2", b'{"count": NaN}', b"\xff\xfe{}"],
)
async def test_malformed_json_is_400(probe, raw):
    answer = await probe(
        "/test/echo", "POST", body=raw, headers={"Content-Type": "application/json"}
    )
    assert answer.status == 400
    assert answer.error["code"] == "invalid_json"
    assert "Traceback" not in answer.body.decode("utf-8", "replace")


async def test_empty_body_is_400(probe):
    answer = await probe("/test/echo", "POST", body=b"")
    assert answer.status == 400
    assert answer.error["code"] == "body_required"


async def test_deeply_nested_json_is_400(probe):
    raw = '{"name": ' + "[" * 5000 + "]" * 5000 + "}"
    answer = await probe(
        "/test/echo", "POST", body=raw, headers={"Content-Type": "application/json"}
    )
    assert answer.status == 400
    assert answer.error["code"] == "invalid_json"


async def test_wrong_types_are_422_naming_each_field(probe):
    body = {"name": 5, "count": "3", "day": "24/11/2026", "where": {"lat": 91}, "extra": 1}
    answer = await probe("/test/echo", "POST", json_body=body)
    assert answer.status == 422
    assert answer.error["code"] == "validation_failed"
    fields = {item["field"] for item in answer.error["details"]}
    assert fields == {"name", "count", "day", "where.lat", "extra"}


async def test_missing_field_is_422(probe):
    answer = await probe("/test/echo", "POST", json_body={"name": "x", "count": 1})
    assert answer.status == 422
    assert answer.error["details"] == [
        {"field": "day", "type": "missing", "message": "Field required"}
    ]


async def test_a_json_array_body_is_422(probe):
    answer = await probe("/test/echo", "POST", json_body=[VALID])
    assert answer.status == 422


async def test_mini_program_users_read_errors_in_chinese(probe):
    answer = await probe("/test/mp-echo", "POST", json_body={"name": "", "count": 1})
    assert answer.status == 422
    assert answer.error["message"] == "填写的内容有误，请检查后重试。"
    by_field = {item["field"]: item["message"] for item in answer.error["details"]}
    assert by_field == {"name": "内容过短", "day": "此项为必填项"}
    malformed = await probe(
        "/test/mp-echo", "POST", body=b"{", headers={"Content-Type": "application/json"}
    )
    assert malformed.status == 400


async def test_other_media_types_are_415(probe):
    answer = await probe(
        "/test/echo", "POST", body="name=x", headers={"Content-Type": "text/plain"}
    )
    assert answer.status == 415
    assert answer.error["code"] == "unsupported_media_type"


async def test_oversized_body_is_413_before_it_is_read(probe):
    big = {**VALID, "name": "x" * 4096}
    answer = await probe("/test/small", "POST", json_body=big)
    assert answer.status == 413
    assert answer.error["code"] == "body_too_large"
    assert answer.error["details"] == {"limit": 2048}


async def test_oversized_chunked_body_is_413(probe):
    async def producer(write):
        for _ in range(8):
            await write(b"x" * 1024)

    from tornado.httpclient import HTTPRequest

    request = HTTPRequest(
        probe.base_url + "/test/small",
        method="POST",
        body_producer=producer,
        headers={"Content-Type": "application/json"},
    )
    response = await probe.client.fetch(request, raise_error=False)
    assert response.code == 413
    assert json.loads(response.body)["error"]["code"] == "body_too_large"


async def test_unexpected_error_is_500_without_traceback_or_message(probe, caplog):
    with caplog.at_level(logging.ERROR, logger="anbang"):
        answer = await probe("/test/broken")
    assert answer.status == 500
    assert answer.error["code"] == "internal_error"
    text = answer.body.decode()
    assert "Traceback" not in text and "110101199003074514" not in text
    logged = "\n".join(
        record.getMessage() + json.dumps(getattr(record, "fields", {}), default=str)
        for record in caplog.records
    )
    assert "RuntimeError" in logged
    assert "110101199003074514" not in logged


async def test_route_without_policy_is_refused(probe):
    answer = await probe("/test/undeclared")
    assert answer.status == 403
    assert answer.error["code"] == "no_policy"
    assert "leaked" not in answer.body.decode()


async def test_request_log_has_fields_but_no_body_or_token(probe, caplog):
    with caplog.at_level(logging.INFO, logger="anbang.access"):
        await probe(
            "/test/echo?id_number=110101199003074514",
            "POST",
            json_body={**VALID, "name": "李四"},
            headers={"Authorization": "Bearer s3cr3t-token-value"},
        )
    records = [r for r in caplog.records if r.name == "anbang.access"]
    assert records, "no access log line"
    fields = records[-1].fields
    assert fields["method"] == "POST" and fields["path"] == "/test/echo"
    assert fields["status"] == 201 and fields["latency_ms"] >= 0 and fields["request_id"]
    dumped = json.dumps([r.__dict__ for r in caplog.records], default=str, ensure_ascii=False)
    for secret in ("李四", "s3cr3t-token-value", "110101199003074514"):
        assert secret not in dumped


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.filterwarnings("ignore::ResourceWarning")
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
async def test_database_down_answers_503_with_retry_after(store, config, tmp_path):
    dead = Store.connect(
        DatabaseSettings(
            uri=f"mongodb://127.0.0.1:{_closed_port()}/?retryWrites=false",
            name="down",
            production=False,
            server_selection_timeout_ms=300,
            connect_timeout_ms=300,
        )
    )
    unopened = KeyVault(
        dead, LocalKeyFile(tmp_path / "none.key", Suite.STANDARD), Suite.STANDARD, SystemClock()
    )
    runtime = assemble_api(dead, config, unopened)
    runtime.app = make_app(runtime.context, [*all_routes(), *TEST_ROUTES])
    runtime.app.settings["probe_store"] = dead
    served = await serve_runtime(runtime)
    client = Fetch(served.base_url)
    try:
        answer = await client("/test/lease")
        assert answer.status == 503
        assert answer.error["code"] == "unavailable"
        assert int(answer.headers["Retry-After"]) > 0
        ready = await client("/readyz")
        assert ready.status == 503
        assert ready.json["checks"] == {"database": False, "keys": False}
        assert "Retry-After" in ready.headers
    finally:
        client.close()
        served.server.stop()
        await dead.close()
        # pymongo may leave the socket of an abandoned connection attempt to the garbage
        # collector: collect it here, where its ResourceWarning is expected, not in a later test.
        await asyncio.sleep(0.5)
        gc.collect()

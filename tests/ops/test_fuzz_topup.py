"""The fuzz top-up: what it generates, how it counts, and how its figures join the summary."""

from __future__ import annotations

import base64
import collections
import http.server
import json
import random
import re
import shlex
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from pydantic import BaseModel, ValidationError

from handlers.openapi import HTTP_METHODS, build_openapi, path_template
from ops.verify import topup
from ops.verify.__main__ import fuzz_rows
from ops.verify.fuzz import (
    TARGET_PER_OPERATION,
    LaneSpec,
    OperationFigures,
    PassFigures,
    _passes,
    _top_up_weight,
    _weight,
    curl,
    summarise,
    top_up_plan,
)
from server.app import API_TITLE, API_VERSION, all_routes

DOCUMENT = build_openapi(all_routes(), title=API_TITLE, version=API_VERSION)
OPERATIONS = {op.name: op for op in topup.operations(DOCUMENT)}
IDS = ["5f0c2a9e8b3d4c1a2b3c4d5e", "6a1b2c3d4e5f6a7b8c9d0e1f"]


def probes(name: str, count: int, seed: int = 13) -> list[topup.Probe]:
    return list(topup.Generator(DOCUMENT, IDS, seed).probes(OPERATIONS[name], count))


# --- what is generated ------------------------------------------------------------------------


def test_a_parameterless_operation_gets_as_many_distinct_requests_as_asked():
    made = probes("GET /api/v1/me", 1000)
    assert len(made) == 1000
    assert len({probe.key() for probe in made}) == 1000
    assert {(probe.method, probe.target.split("?")[0]) for probe in made} == {("GET", "/api/v1/me")}
    # What the schema leaves open is what varies.
    varied = collections.Counter(kind for probe in made for kind in probe.varied)
    assert set(varied) >= {
        "valid-shaped",
        "query:unknown",
        "query:repeated",
        "header:accept",
        "header:content-type",
        "header:idempotency-key",
        "header:if-match",
        "header:other",
        "body:random-json",
        "body:junk",
    }
    assert sum(probe.body is not None for probe in made) > 300
    # Every request carries an id of its own, by which its log line is found.
    request_ids = [dict(probe.headers).get("X-Request-Id") for probe in made]
    assert len(set(request_ids)) > 950


def test_the_same_seed_gives_the_same_requests_and_another_seed_others():
    assert probes("POST /mp/v1/auth/logout", 50) == probes("POST /mp/v1/auth/logout", 50)
    assert probes("POST /mp/v1/auth/logout", 50) != probes("POST /mp/v1/auth/logout", 50, 14)


def test_path_ids_are_existing_random_and_malformed():
    made = probes("POST /api/v1/investigations/{investigation_id}/report", 400)
    ids = [re.match(r"^/api/v1/investigations/([^/?]*)/report", p.target) for p in made]
    assert all(ids)
    values = collections.Counter(match.group(1) for match in ids if match)
    assert IDS[0] in values and IDS[1] in values
    assert any(re.fullmatch(r"[0-9a-f]{24}", v) and v not in IDS for v in values)
    assert any(not re.fullmatch(r"[0-9a-f]{24}", v) for v in values)
    # A slash in an id is sent encoded: the request stays on its route.
    assert "a%2Fb" in values


def _models() -> dict[str, type[BaseModel]]:
    found = {}
    for route in all_routes():
        for method in HTTP_METHODS:
            doc = getattr(getattr(route[1], method, None), "__endpoint__", None)
            if doc is not None and doc.body is not None:
                found[f"{method.upper()} {path_template(route[0])}"] = doc.body
    return found


def test_valid_shaped_bodies_fit_the_handlers_models():
    """All but the cross-field rules a schema cannot state (one of two fields, dates in order)."""
    models = _models()
    fitting = tried = 0
    for name, model in models.items():
        for probe in probes(name, 60):
            if probe.varied == ("valid-shaped",):
                tried += 1
                try:
                    model.model_validate_json(probe.body or b"", strict=True)
                except ValidationError:
                    continue
                fitting += 1
    assert tried > 200
    assert fitting / tried > 0.9


def test_csv_and_upload_bodies_have_their_shape():
    csv_bodies = [
        p.body for p in probes("POST /api/v1/subjects/import", 300) if "valid-shaped" in p.varied
    ]
    assert csv_bodies
    for body in csv_bodies:
        header = body.decode("utf-8").removeprefix("\ufeff").splitlines()[0].split(",")
        assert set(header) <= {
            "name",
            "id_type",
            "id_number",
            "phone",
            "gender",
            "birth_date",
            "address",
            "org_code",
        }
    uploads = [p for p in probes("POST /mp/v1/uploads", 200) if p.varied == ("valid-shaped",)]
    assert uploads
    for probe in uploads:
        boundary = dict(probe.headers)["Content-Type"].split("boundary=")[1]
        assert (probe.body or b"").endswith(f"--{boundary}--\r\n".encode())


@pytest.mark.parametrize(
    "pattern",
    sorted(
        {
            schema["pattern"]
            for operation in OPERATIONS.values()
            for param in operation.query
            if "pattern" in (schema := param.get("schema", {}))
        }
    ),
)
def test_sampled_values_match_the_documents_patterns(pattern):
    rng = random.Random(1)
    strings = topup.PatternStrings(seed=13)
    sampled = [strings.sample(pattern, rng) for _ in range(50)]
    assert all(re.fullmatch(pattern, value) for value in sampled)
    # Made by Hypothesis, not one minimal example over and over; the same seed, the same ones.
    assert len(set(sampled)) > 10
    again, rng = topup.PatternStrings(seed=13), random.Random(1)
    assert [again.sample(pattern, rng) for _ in range(50)] == sampled


# --- sending and counting ---------------------------------------------------------------------


class _Stub(http.server.BaseHTTPRequestHandler):
    """Answers 500 to a request with `?boom`, 204 to a logout, 200 otherwise; keeps the
    Authorization of every request."""

    protocol_version = "HTTP/1.1"
    seen: list[str | None]

    def _answer(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        self.rfile.read(length)
        self.seen.append(self.headers.get("Authorization"))
        status = 500 if "boom" in self.path else 204 if "logout" in self.path else 200
        body = b'{"error": "boom"}' if status == 500 else b""
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = _answer

    def log_message(self, *args: Any) -> None:
        return


@pytest.fixture
def stub() -> Iterator[tuple[str, list[str | None]]]:
    seen: list[str | None] = []
    handler = type("Stub", (_Stub,), {"seen": seen})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", seen
    server.shutdown()
    server.server_close()


class _Fixed(topup.Generator):
    """Every request to the `boom` operation has `?boom`: each answers 500."""

    def probes(self, operation: topup.Operation, count: int) -> Iterator[topup.Probe]:
        for n in range(count):
            query = "?boom" if "boom" in operation.path else ""
            yield topup.Probe(
                operation.name,
                operation.method,
                f"{operation.path}{query}{'&' if query else '?'}n={n}",
                (("X-Request-Id", f"topup-{n:08d}"),),
                b"\xff\x00" if query else None,
                ("valid-shaped",),
            )


def test_each_request_is_counted_and_each_5xx_kept_with_its_request(stub):
    base_url, seen = stub
    ok, boom = topup.Operation("GET", "/ok"), topup.Operation("POST", "/boom")
    lane = topup.Lane("staff", "secret-token")
    logged: list[dict[str, Any]] = []
    result = topup.top_up(
        topup.Sender(base_url),
        [(ok, 30, lane), (boom, 12, lane)],
        _Fixed(DOCUMENT),
        workers=2,
        log_failure=logged.append,
    )
    assert result.operations["GET /ok"].requests == 30
    assert result.operations["GET /ok"].statuses == {200: 30}
    failing = result.operations["POST /boom"]
    assert (failing.requests, failing.server_errors) == (12, 12)
    assert len(failing.failures) == topup.KEEP_FAILURES and len(logged) == 12
    assert set(seen) == {"Bearer secret-token"}
    # The reproduction sends the same bytes, under $TOKEN, never the token itself.
    line = curl(failing.failures[0]["request"], None, every_header=True)
    assert "secret-token" not in line and '"Authorization: Bearer $TOKEN"' in line
    encoded = re.search(r"printf %s (\S+) \| base64 -d", line)
    assert encoded and base64.b64decode(encoded.group(1)) == b"\xff\x00"
    assert "X-Request-Id: topup-0000" in line


def test_a_logout_gets_a_new_session_after_ending_one_at_most_every_so_often(stub):
    base_url, seen = stub
    opened = iter(range(1, 100))
    lane = topup.Lane("mp-logout", "first", lambda: f"renewed-{next(opened)}", ends_session=True)
    count = topup.RENEW_EVERY * 2 + 5
    result = topup.top_up(
        topup.Sender(base_url),
        [(topup.Operation("POST", "/logout"), count, lane)],
        _Fixed(DOCUMENT),
    )
    assert result.operations["POST /logout"].requests == count
    assert lane.renewed == 2
    assert collections.Counter(seen) == {
        "Bearer first": topup.RENEW_EVERY,
        "Bearer renewed-1": topup.RENEW_EVERY,
        "Bearer renewed-2": 5,
    }


# --- the plan and the summary -----------------------------------------------------------------


def test_the_plan_tops_up_what_is_below_and_the_logouts_last():
    staff = topup.Lane("staff", "s")
    logout = topup.Lane("staff-logout", "l", ends_session=True)
    lanes = [
        LaneSpec("staff-logout", r"^/api/v1/auth/logout$", None, logout),
        LaneSpec("staff", r"^/api/v1/me$|^/healthz$", None, staff),
    ]
    done = collections.Counter({"GET /api/v1/me": 997, "GET /healthz": 1200})
    plan = top_up_plan(DOCUMENT, done, lanes, 1000)
    assert [(op.name, n, lane.name) for op, n, lane in plan] == [
        ("GET /api/v1/me", 3, "staff"),
        ("POST /api/v1/auth/logout", 1000, "staff-logout"),
    ]


def test_the_summary_counts_both_and_says_which_came_from_the_top_up():
    staff = PassFigures("staff")
    staff.operations["GET /a"] = OperationFigures(requests=1000, fuzzed=1000)
    staff.operations["GET /b"] = OperationFigures(requests=7, fuzzed=1)
    cross = PassFigures("staff-routes-as-subject")
    cross.operations["GET /b"] = OperationFigures(requests=100, fuzzed=100)
    sent = topup.Sent(requests=993, server_errors=1)
    sent.statuses.update({200: 992, 500: 1})
    sent.failures.append(
        {
            "status": 500,
            "varied": ["body:junk"],
            "request_id": "topup-1",
            "answer": "boom",
            "request": {"method": "GET", "uri": "http://h/b", "headers": {}, "body": None},
        }
    )
    result = topup.TopUpResult({"GET /b": sent})
    summary = summarise([staff, cross], 60.0, 1000, result, 1000)
    per = summary["requests_per_operation"]
    assert per["by_operation"] == {"GET /a": 1000, "GET /b": 1000}
    assert per["reached_target"] == 2 and per["below_target"] == {}
    assert per["topped_up"] == {"GET /b": 993}
    assert per["schemathesis_min"] == 7
    assert summary["total_requests"] == 1000 + 7 + 100 + 993
    assert summary["server_errors"] == 1
    assert summary["server_errors_by_source"] == {"schemathesis": 0, "top_up": 1}
    [failure] = summary["failures"]["top-up: GET /b"]
    assert failure["request_id"] == "topup-1"
    assert shlex.split(failure["reproduce"])[-1] == "http://h/b"
    assert summary["top_up"]["requests"] == 993
    json.dumps(summary)

    rows = {row.figure: row for row in fuzz_rows(summary)}
    errors = rows["5xx answers: schemathesis + top-up"]
    assert (errors.result, errors.ok) == ("1 (0 + 1)", False)
    assert rows["generated requests per operation: min / median (total)"].ok is True


def test_without_a_top_up_the_summary_is_schemathesis_alone():
    staff = PassFigures("staff")
    staff.operations["GET /a"] = OperationFigures(requests=12, fuzzed=1)
    summary = summarise([staff], 1.0, 1000)
    per = summary["requests_per_operation"]
    assert per["below_target"] == {"GET /a": 12} and per["topped_up"] == {}
    assert summary["top_up"] == {"to": 0, "run": False}
    assert TARGET_PER_OPERATION == 1000


def test_the_top_up_has_time_kept_back_only_when_it_has_work():
    paths = [path for path, methods in DOCUMENT["paths"].items() for _ in methods]
    default = _passes("s", "m", "w", 300)
    passes_cost = sum(_weight(run, paths) for run in default)
    kept = _top_up_weight(default, paths, TARGET_PER_OPERATION)
    # At 300 examples the passes keep over half the deadline; the top-up gets the rest.
    assert 0 < kept < passes_cost
    assert _top_up_weight(_passes("s", "m", "w", 1000), paths, TARGET_PER_OPERATION) == 0

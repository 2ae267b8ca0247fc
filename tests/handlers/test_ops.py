"""Liveness, readiness, the generated API description and the route table's policies."""

from __future__ import annotations

import inspect
from typing import Any

import pytest
from pydantic import BaseModel

from handlers.base import BaseHandler, endpoint
from handlers.openapi import HTTP_METHODS, build_openapi, path_template
from models.policy import PUBLIC, Policy
from server.app import API_TITLE, API_VERSION, all_routes


async def test_healthz_answers_ok(fetch):
    answer = await fetch("/healthz")
    assert answer.status == 200
    assert answer.json == {"status": "ok"}
    assert answer.headers["Cache-Control"] == "no-store"


async def test_readyz_reports_database_reachable(fetch):
    answer = await fetch("/readyz")
    assert answer.status == 200
    assert answer.json == {"status": "ready", "checks": {"database": True, "keys": True}}


async def test_openapi_document_is_generated_from_routes(fetch):
    answer = await fetch("/openapi.json")
    assert answer.status == 200
    document = answer.json
    assert document["openapi"].startswith("3.")
    assert "/healthz" in document["paths"]
    readyz = document["paths"]["/readyz"]["get"]
    assert readyz["responses"]["200"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/Readiness"
    }
    assert "ErrorEnvelope" in document["components"]["schemas"]
    assert "Readiness" in document["components"]["schemas"]


async def test_docs_page_renders_without_foreign_scripts(fetch):
    page = await fetch("/docs")
    assert page.status == 200
    assert page.headers["Content-Type"].startswith("text/html")
    assert "script-src 'self'" in page.headers["Content-Security-Policy"]
    assert b'src="/static/apidocs.js"' in page.body
    script = await fetch("/static/apidocs.js")
    assert script.status == 200
    assert b"openapi.json" in script.body
    missing = await fetch("/static/..%2fbase.py")
    assert missing.status == 404


def test_every_route_declares_a_known_policy_action():
    policy = Policy()
    for route in all_routes():
        handler = route[1]
        assert issubclass(handler, BaseHandler), f"{route[0]} does not use BaseHandler"
        declared = handler.access
        assert declared is not None, f"{route[0]} declares no access policy"
        actions = [declared] if isinstance(declared, str) else list(declared.values())
        for action in actions:
            assert action == PUBLIC or policy.knows(action), f"{route[0]}: unknown action {action}"


def _document() -> dict[str, Any]:
    return build_openapi(all_routes(), title=API_TITLE, version=API_VERSION)


def test_bodies_that_are_not_json_are_described_in_their_media_type():
    paths = _document()["paths"]

    def content(path: str, method: str = "post") -> dict[str, Any]:
        return paths[path][method]["requestBody"]["content"]

    for path in ("/api/v1/staff/import", "/api/v1/subjects/import"):
        csv_body = content(path)["text/csv"]
        assert csv_body["schema"]["type"] == "string"
        # The example is a file the route reads: its header names every required column.
        assert csv_body["example"].splitlines()[0].count(",") >= 3
    upload = content("/mp/v1/uploads")["multipart/form-data"]
    assert upload["schema"]["required"] == ["file"]
    assert upload["schema"]["properties"]["file"]["format"] == "binary"
    photo = content("/api/v1/subjects/{subject_id}/photo", "put")
    assert set(photo) == {"image/jpeg", "image/png"}
    # A wrong media type or a malformed file is part of the contract.
    assert {"400", "415", "422"} <= set(paths["/api/v1/staff/import"]["post"]["responses"])


def test_every_route_that_reads_a_file_describes_it():
    """A body the document does not describe is one a fuzzer never sends."""
    paths = _document()["paths"]
    readers = 0
    for route in all_routes():
        pattern, handler = route[0], route[1]
        for method in HTTP_METHODS:
            function = getattr(handler, method, None)
            if getattr(function, "__endpoint__", None) is None:
                continue
            source = inspect.getsource(function)
            if "csv_text(" in source or "parse_body_arguments(" in source:
                readers += 1
                assert "requestBody" in paths[path_template(pattern)][method], (pattern, method)
    assert readers == 3


def test_a_body_is_json_or_another_media_type_not_both():
    with pytest.raises(ValueError, match="another media type"):
        endpoint("Both", body=BaseModel, body_media={"text/csv": {}})

"""Liveness, readiness, the generated API description and the route table's policies."""

from __future__ import annotations

from handlers.base import BaseHandler
from models.policy import PUBLIC, Policy
from server.app import all_routes


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

"""Query parameters: each route declares the ones it reads, reads them through that declaration,
and /openapi.json describes exactly that declaration."""

from __future__ import annotations

import ast
import json
import logging
import sys
from pathlib import Path
from unittest import mock

import pytest
import pytest_asyncio
import tornado.httputil
import tornado.web

from handlers.base import BaseHandler, endpoint
from handlers.openapi import HTTP_METHODS, build_openapi, path_template
from handlers.query import (
    UndeclaredQuery,
    calendar_day,
    calendar_month,
    declared_query,
    one_of,
    page_size,
    query,
    query_args,
    required,
    yes_no,
)
from models.policy import PUBLIC
from server.app import API_TITLE, API_VERSION, all_routes, assemble_api, make_app
from tests.conftest import Fetch, serve_runtime

ROOT = Path(__file__).resolve().parents[2]

# Route modules that read the query string outside a declaration, each with the reason. A module
# added here is a route whose parameters /openapi.json does not describe.
UNDECLARED_READERS: frozenset[str] = frozenset()
# Ways a handler can reach the query string other than `query_args`.
RAW_READS = frozenset(
    {
        "get_query_argument",
        "get_query_arguments",
        "get_argument",
        "get_arguments",
        "query_arguments",
        "arguments",
    }
)


def _document() -> dict:
    return build_openapi(all_routes(), title=API_TITLE, version=API_VERSION)


def _query_parameters(operation: dict) -> dict[str, dict]:
    return {p["name"]: p for p in operation.get("parameters", []) if p["in"] == "query"}


def test_declared_parameters_appear_with_their_schema():
    paths = _document()["paths"]

    leave = _query_parameters(paths["/api/v1/leave-requests"]["get"])
    assert leave["status"]["schema"] == {
        "type": "string",
        "enum": ["pending", "approved", "rejected"],
    }
    assert leave["status"]["required"] is False
    assert leave["limit"]["schema"] == {
        "type": "integer",
        "minimum": 1,
        "maximum": 200,
        "default": 100,
    }

    month = _query_parameters(paths["/api/v1/subjects/{subject_id}/compliance"]["get"])["month"]
    assert month["required"] is True
    assert month["schema"]["pattern"] == "^(?:19|2[0-9])[0-9]{2}-(?:0[1-9]|1[0-2])$"

    tasks = _query_parameters(paths["/mp/v1/me/tasks"]["get"])
    assert set(tasks) == {"from", "to"}
    assert tasks["from"]["schema"]["format"] == "date"

    alerts = _query_parameters(paths["/api/v1/alerts"]["get"])
    assert alerts["mine"]["schema"] == {"type": "string", "enum": ["0", "1"], "default": "0"}
    assert _query_parameters(paths["/api/v1/reports/compliance/{report_id}/subjects"]["get"])[
        "figure"
    ]["required"]
    # The mini-program's worker routes are the staff handlers: the same declaration.
    assert _query_parameters(paths["/mp/v1/worker/leave-requests"]["get"]) == leave
    # A refused value is part of the contract.
    assert "422" in paths["/api/v1/alerts"]["get"]["responses"]
    # WeChat's push protocol too: what its servers put in the URL, none of it required (an
    # unsigned request is refused by the signature check, 403).
    check = _query_parameters(paths["/wechat/push"]["get"])
    push = _query_parameters(paths["/wechat/push"]["post"])
    assert set(check) == {"signature", "timestamp", "nonce", "echostr"}
    assert set(push) == {
        "signature",
        "timestamp",
        "nonce",
        "openid",
        "encrypt_type",
        "msg_signature",
    }
    assert not any(p["required"] for p in [*check.values(), *push.values()])
    assert push["signature"]["schema"]["pattern"] == "^[0-9a-f]{40}$"
    assert push["encrypt_type"]["schema"]["enum"] == ["aes"]


def test_the_document_describes_exactly_what_each_method_parses():
    paths = _document()["paths"]
    seen = 0
    for route in all_routes():
        pattern, handler = route[0], route[1]
        if not (isinstance(handler, type) and issubclass(handler, BaseHandler)):
            continue
        for method in HTTP_METHODS:
            function = getattr(handler, method, None)
            if getattr(function, "__endpoint__", None) is None:
                continue
            operation = paths[path_template(pattern)][method]
            spec = declared_query(function)
            described = [p for p in operation.get("parameters", []) if p["in"] == "query"]
            assert described == (spec.parameters() if spec else []), (pattern, method)
            seen += spec is not None
    assert seen >= 18


def _route_modules() -> set[Path]:
    """The source files of every API handler class and the classes it derives from."""
    files = set()
    for route in all_routes():
        handler = route[1]
        if not isinstance(handler, type):
            continue
        for cls in handler.__mro__:
            source = getattr(sys.modules.get(cls.__module__), "__file__", None)
            path = Path(source) if source else None
            if (
                path
                and path.is_relative_to(ROOT)
                and path.parent.name
                in (
                    "handlers",
                    "miniprogram_api",
                )
            ):
                files.add(path.relative_to(ROOT))
    # The plumbing defines the accessors; the rest are routes.
    return files - {Path("handlers/base.py"), Path("handlers/query.py")}


def _raw_reads(source: str) -> list[tuple[int, str]]:
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Attribute) and node.attr in RAW_READS:
            found.append((node.lineno, node.attr))
        # `self.request.query`: the raw query string.
        if (
            isinstance(node, ast.Attribute)
            and node.attr == "query"
            and isinstance(node.value, ast.Attribute)
            and node.value.attr == "request"
        ):
            found.append((node.lineno, "request.query"))
    return sorted(found)


def test_no_route_reads_the_query_but_through_its_declaration():
    modules = _route_modules()
    assert Path("handlers/leave.py") in modules and Path("miniprogram_api/me.py") in modules
    offenders = {}
    for module in sorted(modules):
        if str(module) in UNDECLARED_READERS:
            continue
        reads = _raw_reads((ROOT / module).read_text(encoding="utf-8"))
        if reads:
            offenders[str(module)] = reads
    assert offenders == {}, "read these through @query and query_args"
    # The exceptions are real (a stale entry would hide nothing and mislead).
    for module in UNDECLARED_READERS:
        assert _raw_reads((ROOT / module).read_text(encoding="utf-8"))


def test_the_scan_finds_a_raw_read():
    source = (
        "class H:\n"
        "    async def get(self):\n"
        "        self.get_query_argument('x')\n"
        "        self.get_arguments('y')\n"
        "        self.request.query\n"
    )
    assert [attr for _, attr in _raw_reads(source)] == [
        "get_query_argument",
        "get_arguments",
        "request.query",
    ]


# --- the accessor, on a served app --------------------------------------------------------------


class DeclaredHandler(BaseHandler):
    access = PUBLIC

    @endpoint("Echo the declared query")
    @query(
        one_of("status", ("open", "closed"), "A state"),
        yes_no("mine", "Mine only"),
        page_size(10, 50),
        calendar_day("from", "A day"),
    )
    async def get(self) -> None:
        args = query_args(self)
        self.respond({name: str(value) for name, value in args.items()})


class RequiredHandler(BaseHandler):
    access = PUBLIC

    @endpoint("A required month and figure")
    @query(
        calendar_month("month", "A month"),
        required(one_of("figure", ("a", "b"), "A figure")),
    )
    async def get(self) -> None:
        args = query_args(self)
        self.respond({"month": args["month"], "figure": args["figure"]})


class MiniProgramDeclaredHandler(DeclaredHandler):
    audience = "mp"


class UndeclaredReadHandler(BaseHandler):
    access = PUBLIC

    @endpoint("Declares status, reads limit")
    @query(one_of("status", ("open",), "A state"))
    async def get(self) -> None:
        self.respond({"limit": query_args(self)["limit"]})


class NoDeclarationHandler(BaseHandler):
    access = PUBLIC

    @endpoint("Declares nothing, reads the query")
    async def get(self) -> None:
        self.respond(dict(query_args(self)))


TEST_ROUTES = [
    (r"/test/query", DeclaredHandler),
    (r"/test/query-required", RequiredHandler),
    (r"/test/mp-query", MiniProgramDeclaredHandler),
    (r"/test/query-undeclared", UndeclaredReadHandler),
    (r"/test/query-none", NoDeclarationHandler),
]


@pytest_asyncio.fixture
async def probe(store, config, vault):
    runtime = assemble_api(store, config, vault)
    runtime.app = make_app(runtime.context, [*all_routes(), *TEST_ROUTES])
    served = await serve_runtime(runtime)
    client = Fetch(served.base_url)
    yield client
    client.close()
    served.server.stop()
    await served.runtime.services.close()


async def test_declared_values_arrive_converted(probe):
    answer = await probe("/test/query?status=open&mine=1&limit=25&from=2026-12-01")
    assert answer.status == 200
    assert answer.json == {"status": "open", "mine": "True", "limit": "25", "from": "2026-12-01"}
    defaults = await probe("/test/query")
    assert defaults.json == {"status": "None", "mine": "False", "limit": "10", "from": "None"}


@pytest.mark.parametrize(
    ("query_string", "fields"),
    [
        ("status=shut", ["status"]),
        ("mine=yes", ["mine"]),
        ("limit=0", ["limit"]),
        ("limit=51", ["limit"]),
        # `str.isdigit` says yes to a superscript two; `int` then refused it (a 500).
        ("limit=%C2%B2", ["limit"]),
        ("limit=" + "9" * 5000, ["limit"]),
        ("from=2026-02-30", ["from"]),
        # A day the services cannot step past (9999-12-31 + 1 overflowed: a 500).
        ("from=9999-12-31", ["from"]),
        ("from=20261201", ["from"]),
        ("status=shut&limit=x", ["status", "limit"]),
    ],
)
async def test_values_that_do_not_fit_are_refused_by_name(probe, query_string, fields):
    answer = await probe("/test/query?" + query_string)
    assert answer.status == 422
    assert answer.error["code"] == "validation_failed"
    assert [d["field"] for d in answer.error["details"]] == fields


async def test_a_required_parameter_must_be_given(probe):
    missing = await probe("/test/query-required?month=")
    assert missing.status == 422
    assert [d["field"] for d in missing.error["details"]] == ["month", "figure"]
    ancient = await probe("/test/query-required?month=0001-01&figure=a")
    assert [d["field"] for d in ancient.error["details"]] == ["month"]
    given = await probe("/test/query-required?month=2026-11&figure=b")
    assert given.json == {"month": "2026-11", "figure": "b"}


async def test_the_mini_program_is_told_in_chinese(probe):
    answer = await probe("/test/mp-query?from=tomorrow")
    assert answer.status == 422
    assert answer.error["details"] == [{"field": "from", "message": "应为日期（YYYY-MM-DD）"}]


async def test_an_undeclared_read_is_a_server_fault_named_in_the_log(probe, caplog):
    with caplog.at_level(logging.ERROR, logger="anbang"):
        undeclared = await probe("/test/query-undeclared?limit=5")
        nothing = await probe("/test/query-none?limit=5")
    assert undeclared.status == 500 and nothing.status == 500
    logged = [json.dumps(getattr(r, "fields", {}), default=str) for r in caplog.records]
    assert sum("UndeclaredQuery" in line for line in logged) == 2


def test_an_undeclared_read_raises_where_it_is_made():
    app = tornado.web.Application()
    request = tornado.httputil.HTTPServerRequest(
        start_line=tornado.httputil.RequestStartLine("GET", "/x?status=open&limit=5", "HTTP/1.1"),
        headers=tornado.httputil.HTTPHeaders({"Host": "127.0.0.1"}),
        connection=mock.Mock(),
    )
    handler = UndeclaredReadHandler(app, request)
    args = query_args(handler)
    assert args["status"] == "open"
    with pytest.raises(UndeclaredQuery, match=r"UndeclaredReadHandler\.get reads `\?limit=`"):
        args["limit"]


def test_a_parameter_is_declared_once():
    with pytest.raises(ValueError, match="declared twice"):
        query(page_size(1, 2), page_size(3, 4))

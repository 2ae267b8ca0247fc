"""Hostile input on every staff route: refused with a clear 4xx, never a 5xx, nothing written."""

from __future__ import annotations

import asyncio
import copy
import hashlib
import inspect
import json
import logging
import re
import time
import traceback
from collections.abc import Awaitable, Callable, Collection, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

import bson
import pytest
import tornado.web
from bson import ObjectId

from handlers.base import BaseHandler
from handlers.openapi import build_openapi
from models.identity import Identity
from models.policy import PUBLIC, SELF, Policy, Role
from server.app import all_routes
from tests.handlers.test_access_matrix import CASES, CONCEALED, Env
from tests.subject_factories import subject_body

# The concealed routes (route pattern, method) as (method, path template), as operations name them.
CONCEALED_TEMPLATES = {
    (method, re.sub(r"\(\?P<(\w+)>[^)]*\)", r"{\1}", pattern)) for pattern, method in CONCEALED
}

# --- what a hostile caller sends ------------------------------------------------------------

# MongoDB query operators: a service that put a request value into a filter unchecked would
# match every document ($gt "", $ne null) or run JavaScript ($where).
OPERATORS: tuple[dict[str, Any], ...] = ({"$gt": ""}, {"$ne": None}, {"$where": "1"})

# Path ids that are not ids. Raw slashes leave the route (404 from the default handler);
# encoded ones reach the handler decoded, so a service sees `../`, a NUL or 10,000 characters.
ODD_IDS: dict[str, str] = {
    "traversal": "../../etc/passwd",
    "encoded traversal": "%2e%2e%2f%2e%2e%2fetc%2fpasswd",
    "half-encoded traversal": "..%2f..%2fetc%2fpasswd",
    "NUL byte": "abc%00def",
    "10,000 characters": "a" * 10_000,
    "Chinese": quote("矫正对象"),
    "emoji": quote("🙂🙂"),
    "invalid UTF-8": "%ff%fe",
}

# Numbers no field can hold: beyond a double, beyond a 64-bit integer, and the non-JSON
# constants Python's parser would otherwise accept.
HUGE_NUMBERS: tuple[str, ...] = ("1e400", "-1e400", "9" * 500, "NaN", "Infinity", "-Infinity")

# A placeholder for a raw JSON token (1e400, NaN) that json.dumps cannot write.
_RAW = "\x00raw\x00"


def nested(depth: int) -> bytes:
    return b"[" * depth + b"]" * depth


def nested_objects(depth: int) -> bytes:
    return b'{"a":' * depth + b"1" + b"}" * depth


# --- the routes, from the OpenAPI document --------------------------------------------------

Path = tuple[str | int, ...]


@dataclass(frozen=True)
class Operation:
    """One method of one route, with what the OpenAPI document says about its input."""

    method: str
    pattern: str
    template: str
    handler: type[BaseHandler]
    action: str | None
    params: tuple[str, ...]
    body: dict[str, Any] | None
    # Query parameters the handler reads: the document's (with their schema) and any its source
    # reads beyond them (schema unknown: None).
    query: Mapping[str, Mapping[str, Any] | None]

    @property
    def name(self) -> str:
        return f"{self.method} {self.template}"

    @property
    def writes(self) -> bool:
        return self.method in ("POST", "PUT", "PATCH", "DELETE")

    @property
    def empty_body_allowed(self) -> bool:
        """The handler reads an empty body as `{}` (a binding code's role is optional)."""
        return "raw_body().strip()" in source_of(self.handler, self.method)

    @property
    def reads_raw(self) -> bool:
        """A file upload (CSV, photo, multipart): a body, but not a JSON one."""
        source = source_of(self.handler, self.method)
        return self.body is None and ("csv_text(" in source or "raw_body(" in source)


def source_of(handler: type[BaseHandler], method: str) -> str:
    """The handler method's source: what it reads that the document does not say."""
    function = getattr(handler, method.lower(), None)
    try:
        return inspect.getsource(function) if function is not None else ""
    except (OSError, TypeError):
        return ""


_QUERY_READ = re.compile(r"get_query_argument\(\s*\"(\w+)\"")


def _query_params(
    handler: type[BaseHandler], method: str, operation: Mapping[str, Any]
) -> dict[str, Mapping[str, Any] | None]:
    params: dict[str, Mapping[str, Any] | None] = {}
    for named in _QUERY_READ.findall(source_of(handler, method)):
        params[named] = None
    for param in operation.get("parameters", ()):
        if param.get("in") == "query":
            params[param["name"]] = param.get("schema", {})
    return dict(sorted(params.items()))


def operations(document: Mapping[str, Any], prefix: str) -> list[Operation]:
    """Every operation under `prefix` the served OpenAPI document describes, matched to its
    handler in the route table (a route added later is covered without a change here)."""
    handlers = {}
    for route in all_routes():
        pattern, handler = route[0], route[1]
        template = re.sub(r"\(\?P<(\w+)>[^)]*\)", r"{\1}", pattern).rstrip("$")
        handlers[template] = (pattern, handler)
    found = []
    for template, methods in document["paths"].items():
        if not template.startswith(prefix):
            continue
        pattern, handler = handlers[template]
        for method, operation in methods.items():
            body = operation.get("requestBody", {}).get("content", {}).get("application/json")
            found.append(
                Operation(
                    method=method.upper(),
                    pattern=pattern,
                    template=template,
                    handler=handler,
                    action=operation.get("x-anbang-action"),
                    params=tuple(re.compile(pattern).groupindex),
                    body=body["schema"] if body else None,
                    query=_query_params(handler, method, operation),
                )
            )
    return found


# --- bodies from the schema -----------------------------------------------------------------


class Schemas:
    """Reads the document's JSON schemas: examples of valid-looking values, and every field."""

    # Nested fields are followed this deep (location.lat, guardian.name, team.0.name).
    MAX_DEPTH = 3

    def __init__(self, document: Mapping[str, Any]):
        self.components: Mapping[str, Any] = document["components"]["schemas"]

    def resolve(self, schema: Mapping[str, Any]) -> Mapping[str, Any]:
        while "$ref" in schema:
            schema = self.components[schema["$ref"].rsplit("/", 1)[1]]
        options = [s for s in schema.get("anyOf", ()) if s.get("type") != "null"]
        if options:
            return self.resolve(options[0])
        return schema

    def variant(self, schema: Mapping[str, Any], value: Any) -> Mapping[str, Any]:
        """The member of a discriminated union that `value` names (the first otherwise)."""
        schema = self.resolve(schema)
        if "oneOf" not in schema:
            return schema
        members = [self.resolve(s) for s in schema["oneOf"]]
        tag = schema.get("discriminator", {}).get("propertyName")
        if tag and isinstance(value, dict):
            for member in members:
                allowed = member.get("properties", {}).get(tag, {})
                if value.get(tag) in (allowed.get("const"), *allowed.get("enum", ())):
                    return member
        return members[0]

    def members(self, schema: Mapping[str, Any], base: Any) -> list[tuple[Mapping[str, Any], Any]]:
        """A union's members, each with a body of its own (`base` for the one it is); a plain
        schema is its own only member."""
        chosen = self.variant(schema, base)
        resolved = self.resolve(schema)
        if "oneOf" not in resolved:
            return [(chosen, base)]
        members = [self.resolve(member) for member in resolved["oneOf"]]
        return [(m, base if m is chosen else self.example(m)) for m in members]

    def item(self, schema: Mapping[str, Any]) -> Mapping[str, Any]:
        """What a list holds (a tuple's first member)."""
        return self.resolve(schema.get("items") or (schema.get("prefixItems") or [{}])[0])

    def example(self, schema: Mapping[str, Any]) -> Any:
        """A valid-looking value: required fields filled, formats respected."""
        schema = self.variant(schema, None)
        if "const" in schema:
            return schema["const"]
        if "enum" in schema:
            return schema["enum"][0]
        kind = schema.get("type")
        if kind == "object" or "properties" in schema:
            return {
                name: self.example(sub)
                for name, sub in schema.get("properties", {}).items()
                if name in schema.get("required", ())
            }
        if kind == "array":
            if "prefixItems" in schema:
                return [self.example(s) for s in schema["prefixItems"]]
            items = schema.get("items", {})
            return [self.example(items) for _ in range(schema.get("minItems", 0))]
        if kind == "string":
            fmt = schema.get("format")
            if fmt == "date":
                return "2026-12-01"
            if fmt == "date-time":
                return "2026-12-01T09:00:00+08:00"
            return "测试" * max(1, (schema.get("minLength", 1) + 1) // 2)
        if kind == "integer":
            return int(schema.get("minimum", schema.get("exclusiveMinimum", 0) + 1))
        if kind == "number":
            return float(schema.get("minimum", schema.get("exclusiveMinimum", 0) + 1))
        if kind == "boolean":
            return True
        return None

    def fields(self, schema: Mapping[str, Any], value: Any, depth: int = 0) -> Iterator[Path]:
        """Every field path of `schema` (nested objects and first list items, bounded)."""
        schema = self.variant(schema, value)
        if depth >= self.MAX_DEPTH:
            return
        value = value if isinstance(value, dict) else {}
        for name, sub in schema.get("properties", {}).items():
            yield (name,)
            resolved = self.variant(sub, value.get(name))
            if resolved.get("type") == "array":
                items = self.item(resolved)
                yield (name, 0)
                current = value.get(name)
                first = current[0] if isinstance(current, list) and current else None
                for inner in self.fields(items, first, depth + 1):
                    yield (name, 0, *inner)
            elif "properties" in resolved or "oneOf" in resolved:
                for inner in self.fields(resolved, value.get(name), depth + 1):
                    yield (name, *inner)
            elif resolved.get("type") == "object":
                # A free-form object (a rules override): an operator as one of its keys.
                yield (name, "$where")

    def numeric(self, schema: Mapping[str, Any], value: Any, path: Path) -> bool:
        """Whether the field at `path` holds a number."""
        schema = self.variant(schema, value)
        for part in path:
            if isinstance(part, int):
                schema = self.item(schema)
                value = value[0] if isinstance(value, list) and value else None
            else:
                value = value.get(part) if isinstance(value, dict) else None
                schema = self.variant(schema.get("properties", {}).get(part, {}), value)
        return schema.get("type") in ("integer", "number")

    def base(self, schema: Mapping[str, Any], known: Any) -> Any:
        """The route's valid body when a builder made one, else an example from the schema."""
        return copy.deepcopy(known) if isinstance(known, dict) else self.example(schema)

    def place(self, schema: Mapping[str, Any], body: Any, path: Path, value: Any) -> Any:
        """A copy of `body` with `value` at `path`, building missing parents from the schema."""
        body = copy.deepcopy(body) if isinstance(body, dict) else {}
        holder: Any = body
        sub_schema = self.variant(schema, body)
        for index, part in enumerate(path):
            last = index == len(path) - 1
            if isinstance(part, int):
                item_schema = self.item(sub_schema)
                while len(holder) <= part:
                    holder.append(self.example(item_schema))
                if last:
                    holder[part] = value
                else:
                    if not isinstance(holder[part], dict | list):
                        holder[part] = self.example(item_schema)
                    holder, sub_schema = holder[part], item_schema
                continue
            child_schema = self.variant(
                sub_schema.get("properties", {}).get(part, {}), holder.get(part)
            )
            if last:
                holder[part] = value
            else:
                if not isinstance(holder.get(part), dict | list):
                    holder[part] = self.example(child_schema)
                    if not isinstance(holder[part], dict | list):
                        holder[part] = [] if child_schema.get("type") == "array" else {}
                holder, sub_schema = holder[part], child_schema
        return body


def dotted(path: Path) -> str:
    return ".".join(str(part) for part in path)


def dumps(body: Any, raw: str | None = None) -> bytes:
    text = json.dumps(body, ensure_ascii=False)
    if raw is not None:
        text = text.replace(json.dumps(_RAW), raw)
    return text.encode("utf-8")


# --- the cases ------------------------------------------------------------------------------


@dataclass
class Case:
    """One hostile request and what a refusal of it must look like."""

    kind: str
    operation: Operation
    path: str
    body: bytes | None = None
    headers: dict[str, str] = field(default_factory=dict)
    # The statuses that answer this case correctly; None: any 4xx.
    expect: Collection[int] | None = None
    # For a 422: the field its details must name.
    field: str | None = None
    # A read that may answer 2xx (a free-text value read as the literal it is).
    lenient: bool = False
    # What is hostile: the body, the path, the query or a header.
    part: str = "body"
    # Whose session sends it (one per route, so a request that slipped through, a logout or a
    # password change, cannot turn the rest of the batch into 401s).
    token: str | None = None

    def refused_first(self) -> None:
        """The caller may not call the route: refused (403) before anything is read, unless
        the size (checked first: 413) or the path itself (an id Tornado cannot decode, a
        route that no longer matches) answers earlier."""
        if self.part != "path":
            # A photo is concealed from whoever may not see it: 404, as if it were absent.
            concealed = (self.operation.method, self.operation.template) in CONCEALED_TEMPLATES
            self.expect = {404 if concealed else 403} | ({413} & set(self.expect or ()))

    def describe(self) -> str:
        where = f" at {self.field}" if self.field else ""
        return f"{self.operation.name} [{self.kind}{where}] {self.path[:120]}"


@dataclass
class Target:
    """Where a route's hostile requests are aimed: real path ids, and a valid body if known."""

    operation: Operation
    ids: dict[str, str]
    body: Any = None

    def path(self, **overrides: str) -> str:
        path = self.operation.template
        for name in self.operation.params:
            path = path.replace("{" + name + "}", overrides.get(name, self.ids[name]))
        return path


JSON = {"Content-Type": "application/json"}


def body_cases(target: Target, schemas: Schemas, limit: int) -> Iterator[Case]:
    """Operators in every field, broken and oversized bodies, numbers no field holds."""
    op = target.operation
    path = target.path()
    if op.reads_raw:
        yield Case("oversized", op, path, b"x" * (limit + 1), {}, {413})
        yield Case("JSON where a file is expected", op, path, b"{}", dict(JSON))
        return
    if op.body is None:
        return
    base = schemas.base(op.body, target.body)
    yield Case("oversized", op, path, b" " * (limit + 1), dict(JSON), {413})
    yield Case("nested 10,000 deep", op, path, nested(10_000), dict(JSON), {400, 413})
    yield Case(
        "objects nested 10,000 deep", op, path, nested_objects(10_000), dict(JSON), {400, 413}
    )
    if len(nested(10_000)) > limit:
        # A route with a small limit (a check-in: 8 KiB) refuses that by its size; nesting
        # that fits must still be refused as JSON.
        depth = (limit - 2) // 2
        yield Case(f"nested {depth} deep", op, path, nested(depth), dict(JSON), {400})
        depth = (limit - 2) // 6
        yield Case(
            f"objects nested {depth} deep", op, path, nested_objects(depth), dict(JSON), {400}
        )
    yield Case("invalid UTF-8", op, path, b'{"a": "\xff\xfe"}', dict(JSON), {400})
    for shape in (b"[]", b'[{"a": 1}]', b'"text"', b"42", b"-0", b"null", b"true"):
        yield Case(f"top-level {shape.decode()}", op, path, shape, dict(JSON), {400, 422})
    if not op.empty_body_allowed:
        yield Case("empty body", op, path, b"", dict(JSON), {400})
        yield Case("whitespace body", op, path, b" \n ", dict(JSON), {400})
    for media in ("text/plain", "application/x-www-form-urlencoded", "application/xml"):
        yield Case(f"Content-Type {media}", op, path, dumps(base), {"Content-Type": media}, {415})
    fields = list(schemas.fields(op.body, base))
    # The same key twice, the second copy a valid value: a parser that keeps the last one
    # would see a valid body.
    key = next(iter(base), None) if isinstance(base, dict) else None
    if key is not None:
        duplicated = dumps(base)[:-1] + f", {json.dumps(key)}: ".encode() + dumps(base[key]) + b"}"
        yield Case("duplicate key", op, path, duplicated, dict(JSON), {400})
    elif fields:
        name = json.dumps(dotted(fields[0][:1]))
        duplicated = f"{{{name}: 1, {name}: 2}}".encode()
        yield Case("duplicate key", op, path, duplicated, dict(JSON), {400})
    # Every member of a union (a program's four types), each from a body of its own type.
    for member, member_base in schemas.members(op.body, base):
        member_fields = list(schemas.fields(member, member_base))
        for field_path in member_fields:
            name = dotted(field_path)
            for operator in OPERATORS:
                body = dumps(schemas.place(member, member_base, field_path, operator))
                kind = f"operator {json.dumps(operator)}"
                yield Case(kind, op, path, body, dict(JSON), None, name)
            if field_path == member_fields[0] or schemas.numeric(member, member_base, field_path):
                for number in HUGE_NUMBERS:
                    body = dumps(schemas.place(member, member_base, field_path, _RAW), number)
                    yield Case(f"number {number[:12]}", op, path, body, dict(JSON), {400, 422})


def path_cases(target: Target, schemas: Schemas) -> Iterator[Case]:
    """Operators and odd values in each path id, the rest of the request valid."""
    op = target.operation
    body = None
    headers: dict[str, str] = {}
    if op.body is not None:
        body, headers = dumps(schemas.base(op.body, target.body)), dict(JSON)
    for name in op.params:
        for operator in OPERATORS:
            value = quote(json.dumps(operator), safe="")
            hostile = target.path(**{name: value})
            yield Case(f"operator in {{{name}}}", op, hostile, body, headers, part="path")
        for label, value in ODD_IDS.items():
            hostile = target.path(**{name: value})
            yield Case(f"{label} in {{{name}}}", op, hostile, body, headers, part="path")


def constrained(schema: Mapping[str, Any] | None) -> bool:
    """A query parameter whose values are a closed set (a word list, a pattern, a number)."""
    if not schema:
        return False
    typed = schema.get("type") in ("integer", "number", "boolean")
    return typed or any(key in schema for key in ("enum", "pattern", "format", "const"))


def query_cases(target: Target, schemas: Schemas) -> Iterator[Case]:
    """Operator syntax in query parameter names and values."""
    op = target.operation
    body = None
    headers: dict[str, str] = {}
    if op.body is not None:
        body, headers = dumps(schemas.base(op.body, target.body)), dict(JSON)
    path = target.path()
    # Bracket names are how some frameworks build operator objects from a query string: no
    # route takes one, so each is refused before anything is read or written.
    for name in ("status", *op.query):
        for query in (f"{name}[$ne]=x", f"{name}%5B%24gt%5D=", f"{name}[$where]=1"):
            yield Case(f"query {query}", op, f"{path}?{query}", body, headers, {400})
    for name, schema in op.query.items():
        strict = constrained(schema) or name == "limit"
        if op.writes and not strict:
            continue  # read as text by a write: the valid body would go through
        for operator in OPERATORS:
            query = f"{name}={quote(json.dumps(operator), safe='')}"
            # Free text (a cursor, a unit id) may be read as the literal it is: then only a
            # 5xx or a write would be wrong.
            yield Case(
                f"query {name}=operator",
                op,
                f"{path}?{query}",
                body,
                headers,
                None,
                name if strict else None,
                lenient=not strict,
            )
    if "limit" in op.query:
        yield Case("query limit", op, f"{path}?limit={{%22$gt%22:0}}", body, headers, {422})


# --- sending them ---------------------------------------------------------------------------

HAN = re.compile(r"[\u4e00-\u9fff]")


@dataclass
class Outcome:
    """What a batch met: how many were sent, what failed and how, each status's count."""

    sent: int = 0
    server_errors: list[str] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    statuses: dict[int, int] = field(default_factory=dict)


Send = Callable[[Case], Awaitable[tuple[int, bytes]]]


def judge(case: Case, status: int, body: bytes, outcome: Outcome, *, chinese: bool) -> None:
    """A refusal: a 4xx in the error envelope, with the code, field and language asked for."""
    outcome.sent += 1
    outcome.statuses[status] = outcome.statuses.get(status, 0) + 1
    label = f"{case.describe()}: {status}"
    if status >= 500:
        outcome.server_errors.append(f"{label} {body[:200]!r}")
        return
    if case.lenient and 200 <= status < 300:
        return
    if not 400 <= status < 500:
        outcome.failures.append(f"{label} (not refused)")
        return
    if case.expect is not None and status not in case.expect:
        outcome.failures.append(f"{label}, expected {sorted(case.expect)}")
    try:
        error = json.loads(body)["error"]
    except (ValueError, KeyError, TypeError):
        outcome.failures.append(f"{label} without the error envelope: {body[:120]!r}")
        return
    if not isinstance(error, dict) or not error.get("code"):
        outcome.failures.append(f"{label} without a code")
        return
    if chinese and not HAN.search(str(error.get("message", ""))):
        outcome.failures.append(f"{label} message not in Chinese: {error.get('message')!r}")
    if status == 422 and case.field is not None:
        named = {
            str(item.get("field")) for item in error.get("details") or [] if isinstance(item, dict)
        }
        if not any(
            n == case.field or n.startswith(case.field + ".") or case.field.startswith(n + ".")
            for n in named
        ):
            outcome.failures.append(f"{label} details do not name {case.field}: {sorted(named)}")
        if chinese:
            messages = [
                str(i.get("message")) for i in error.get("details") or [] if isinstance(i, dict)
            ]
            if not all(HAN.search(m) for m in messages):
                outcome.failures.append(f"{label} field messages not in Chinese: {messages}")


async def send_all(cases: list[Case], send: Send, *, chinese: bool, width: int = 16) -> Outcome:
    outcome = Outcome()
    gate = asyncio.Semaphore(width)

    async def one(case: Case) -> None:
        async with gate:
            status, body = await send(case)
        judge(case, status, body, outcome, chinese=chinese)

    await asyncio.gather(*(one(case) for case in cases))
    return outcome


# --- what was written -----------------------------------------------------------------------

# Left out of the write check, with the reason: refusals of out-of-policy calls are audited
# (DESIGN.md, Audit: "every ... refused access appends an audit entry"), so the audit chain
# grows by design while nothing else may.
AUDITED = frozenset({"audit"})


async def snapshot(database: Any) -> dict[str, tuple[int, str]]:
    """Each collection's document count and a digest of its documents (an update in place
    changes the digest, a count would not see it)."""
    taken = {}
    for name in sorted(await database.list_collection_names()):
        if name in AUDITED or name.startswith("system."):
            continue
        digest = hashlib.sha256()
        count = 0
        async for document in database[name].find({}).sort("_id", 1):
            digest.update(bson.encode(document))
            count += 1
        taken[name] = (count, digest.hexdigest())
    return taken


def changed(
    before: Mapping[str, tuple[int, str]], after: Mapping[str, tuple[int, str]]
) -> dict[str, str]:
    found = {}
    for name in sorted(set(before) | set(after)):
        (was, old), (now, new) = before.get(name, (0, "")), after.get(name, (0, ""))
        if was != now:
            found[name] = f"{was} -> {now} documents"
        elif old != new:
            found[name] = f"{now} documents, changed in place"
    return found


def server_faults(records: list[logging.LogRecord]) -> list[str]:
    """Errors the server logged while refusing (an exception in a connection callback is
    invisible in the answer, already sent)."""
    faults = []
    for record in records:
        if record.levelno < logging.ERROR:
            continue
        text = record.getMessage() + str(getattr(record, "fields", ""))
        if record.exc_info:
            text += "".join(traceback.format_exception(*record.exc_info))
        faults.append(f"logged {record.name}: {text}"[:600])
    return faults


# --- the staff API ----------------------------------------------------------------------------

# The callers tried in turn for each route: the one of the first two that reaches most
# routes, then the other, then (for the few neither reaches: a worker's visit, the policy
# table) any role the policy admits, so that every route's body is parsed by someone.
STAFF_ROLES = (Role.COUNTY_OFFICER, Role.SYS_ADMIN)


async def openapi(fetch: Any) -> dict[str, Any]:
    answer = await fetch("/openapi.json")
    assert answer.status == 200
    return answer.json  # type: ignore[no-any-return]


def reaches(identity: Identity, operation: Operation, policy: Policy) -> bool:
    action = operation.action
    return action in (PUBLIC, SELF) or (action is not None and policy.allows(identity, action))


async def aim(operation: Operation, env: Env | None) -> Target:
    """Real records to aim at: the access matrix's in-scope builder for the route when it has
    one (real ids, a body that would succeed), else fresh ids and a body from the schema."""
    case = CASES.get((operation.pattern, operation.method))
    if case is not None and env is not None:
        request = await case[0](env, True)
        match = re.fullmatch(operation.pattern, request.path.split("?", 1)[0])
        if match is not None:
            return Target(operation, match.groupdict(), request.json_body)
    return Target(operation, {name: str(ObjectId()) for name in operation.params})


def cases_for(target: Target, schemas: Schemas, default_limit: int) -> list[Case]:
    limit = target.operation.handler.max_body_bytes or default_limit
    return [
        *body_cases(target, schemas, limit),
        *path_cases(target, schemas),
        *query_cases(target, schemas),
    ]


def zero_cases(target: Target, schemas: Schemas) -> Iterator[Case]:
    """`-0` in each numeric field: valid JSON for zero, so it may be accepted as 0."""
    op = target.operation
    if op.body is None:
        return
    base = schemas.base(op.body, target.body)
    for field_path in schemas.fields(op.body, base):
        if schemas.numeric(op.body, base, field_path):
            body = dumps(schemas.place(op.body, base, field_path, _RAW), "-0")
            yield Case("number -0", op, target.path(), body, dict(JSON), None, dotted(field_path))


def fetch_sender(fetch: Any) -> Send:
    async def send(case: Case) -> tuple[int, bytes]:
        body = case.body
        if body is None and case.operation.writes:
            body = b""
        headers = dict(case.headers)
        if case.token:
            headers["Authorization"] = f"Bearer {case.token}"
        answer = await fetch(case.path, case.operation.method, body=body, headers=headers)
        return answer.status, answer.body

    return send


def record(record_property: Any, sweep: str, outcome: Outcome, routes: int, seconds: float) -> None:
    """The figures the verification runner reads from the JUnit XML. It sums a name's numbers
    over every test: the totals share a name, what is per sweep carries the sweep's."""
    record_property("hostile_requests", outcome.sent)
    record_property("hostile_5xx", len(outcome.server_errors))
    record_property("hostile_failures", len(outcome.failures))
    record_property(f"hostile_operations_{sweep}", routes)
    record_property(f"hostile_requests_{sweep}", outcome.sent)
    record_property(f"hostile_statuses_{sweep}", json.dumps(outcome.statuses, sort_keys=True))
    record_property(f"hostile_seconds_{sweep}", round(seconds, 1))


def verdict(outcome: Outcome, wrote: Mapping[str, str]) -> None:
    problems = outcome.server_errors + outcome.failures
    assert not problems, f"{len(problems)} of {outcome.sent} answers:\n" + "\n".join(problems[:200])
    assert not wrote, f"hostile requests wrote: {wrote}"


async def test_hostile_input_to_every_staff_route_is_refused(
    api, fetch, tree, make_staff, store, caplog, record_property
):
    started = time.monotonic()
    document = await openapi(fetch)
    schemas = Schemas(document)
    ops = operations(document, "/api/v1/")
    policy = Policy()
    accounts = {role: await make_staff(role, tree.home_for(role)) for role in Role}
    reach = {
        role: sum(reaches(accounts[role].identity, op, policy) for op in ops)
        for role in STAFF_ROLES
    }
    first = sorted(STAFF_ROLES, key=lambda role: -reach[role])
    order = [*first, *(role for role in Role if role not in first)]
    cases: list[Case] = []
    zeros: list[Case] = []
    callers: dict[str, int] = {}
    limit = api.runtime.context.max_body_bytes
    for op in ops:
        role = next((r for r in order if reaches(accounts[r].identity, op, policy)), order[0])
        callers[str(role)] = callers.get(str(role), 0) + 1
        target = await aim(op, Env(tree, make_staff, accounts[role]))
        token = await make_staff.token_for(accounts[role])
        for case in [*cases_for(target, schemas, limit), *zero_cases(target, schemas)]:
            case.token = token
            (zeros if case.kind == "number -0" else cases).append(case)
    record_property("hostile_callers_staff_api", json.dumps(callers, sort_keys=True))

    before = await snapshot(store.database)
    with caplog.at_level(logging.ERROR):
        outcome = await send_all(cases, fetch_sender(fetch), chinese=False)
    wrote = changed(before, await snapshot(store.database))
    outcome.server_errors += server_faults(caplog.records)
    record(record_property, "staff_api", outcome, len(ops), time.monotonic() - started)
    verdict(outcome, wrote)

    # -0 is zero: whatever the field makes of a zero, never a server error (this runs after
    # the write check: a zero may be a valid value, and the request then succeeds).
    zero = await send_all(zeros, fetch_sender(fetch), chinese=False)
    assert not zero.server_errors, "\n".join(zero.server_errors)
    record_property("hostile_zero_requests", zero.sent)


async def test_a_mini_program_session_meets_the_staff_api_with_refusals(
    api, fetch, supervised, store, caplog, record_property
):
    """A subject's WeChat session: every hostile request to the staff API is refused, and
    before anything is parsed (403 wrong channel), except what is refused even earlier."""
    started = time.monotonic()
    document = await openapi(fetch)
    schemas = Schemas(document)
    ops = operations(document, "/api/v1/")
    token = supervised.client.token
    cases = []
    for op in ops:
        for case in cases_for(await aim(op, None), schemas, api.runtime.context.max_body_bytes):
            case.token = token
            if op.action != PUBLIC:
                case.refused_first()
            cases.append(case)
    before = await snapshot(store.database)
    with caplog.at_level(logging.ERROR):
        outcome = await send_all(cases, fetch_sender(fetch), chinese=False)
    wrote = changed(before, await snapshot(store.database))
    outcome.server_errors += server_faults(caplog.records)
    record(record_property, "staff_api_mp_session", outcome, len(ops), time.monotonic() - started)
    verdict(outcome, wrote)


def served_methods(prefixes: tuple[str, ...]) -> set[tuple[str, str]]:
    """(method, path template) of every handler method the route table serves."""
    served = set()
    for route in all_routes():
        pattern, handler = route[0], route[1]
        template = re.sub(r"\(\?P<(\w+)>[^)]*\)", r"{\1}", pattern).rstrip("$")
        if not template.startswith(prefixes):
            continue
        for method in ("get", "post", "put", "patch", "delete"):
            own = getattr(handler, method, None)
            if own is not None and own is not getattr(tornado.web.RequestHandler, method):
                served.add((method.upper(), template))
    return served


def test_the_sweeps_reach_every_route():
    """The sweeps read the routes from /openapi.json: a method served without an `@endpoint`
    would be missing from it, and from them."""
    document = build_openapi(all_routes(), title="sweep", version="0")
    prefixes = ("/api/v1/", "/mp/v1/", "/wechat/")
    swept = {(op.method, op.template) for prefix in prefixes for op in operations(document, prefix)}
    assert served_methods(prefixes) - swept == set()
    assert len(swept) > 120


# --- regressions: each defect the sweep found, pinned where it was -----------------------------


async def a_case_file(fetch: Any, tree: Any, make_staff: Any) -> tuple[str, str]:
    """A county officer's session and a case file in its county."""
    token = await make_staff.token_for(await make_staff(Role.COUNTY_OFFICER, tree.county))
    created = await fetch(
        "/api/v1/subjects", "POST", json_body=subject_body(tree.station.id), token=token
    )
    assert created.status == 201, created.body
    return token, created.json["id"]


async def test_a_key_given_twice_is_refused_and_nothing_is_issued(
    api, fetch, tree, make_staff, store
):
    # Was 201: the last `role` counted, while a proxy or a log reading the first saw a subject.
    token, subject_id = await a_case_file(fetch, tree, make_staff)
    answer = await fetch(
        f"/api/v1/subjects/{subject_id}/binding-code",
        "POST",
        body=b'{"role": "subject", "role": "guardian"}',
        headers=JSON,
        token=token,
    )
    assert answer.status == 400
    assert answer.error["code"] == "invalid_json"
    assert answer.error["details"] == {"reason": 'the key "role" repeats'}
    nested = await fetch(
        f"/api/v1/subjects/{subject_id}/binding-code",
        "POST",
        body=b'{"role": "subject", "x": {"a": 1, "a": 1}}',
        headers=JSON,
        token=token,
    )
    assert nested.status == 400
    assert await store.collection("binding_codes").count_documents({}) == 0


@pytest.mark.parametrize(
    ("number", "status"),
    [
        # Was 500: the driver could not encode the version into the update's filter.
        ("9" * 500, 400),
        (str(2**63), 400),
        (str(-(2**63) - 1), 400),
        ("1e400", 400),
        ("-1e400", 400),
        # The largest 64-bit integer is a number, only not this file's version.
        (str(2**63 - 1), 409),
    ],
    ids=["500 digits", "2**63", "-2**63-1", "1e400", "-1e400", "2**63-1"],
)
async def test_a_number_no_field_can_hold_is_refused(
    api, fetch, tree, make_staff, caplog, number, status
):
    token, subject_id = await a_case_file(fetch, tree, make_staff)
    with caplog.at_level(logging.ERROR):
        answer = await fetch(
            f"/api/v1/subjects/{subject_id}",
            "PATCH",
            body=f'{{"version": {number}, "name": "王五"}}'.encode(),
            headers=JSON,
            token=token,
        )
    assert answer.status == status, answer.body
    if status == 400:
        assert answer.error["code"] == "invalid_json"
        assert "out of range" in answer.error["details"]["reason"]
    assert not server_faults(caplog.records)
    unchanged = await fetch(f"/api/v1/subjects/{subject_id}", token=token)
    assert unchanged.json["version"] == 1


async def test_query_names_with_operator_syntax_are_refused(api, fetch, tree, make_staff, store):
    # Was 200 and 201: `status[$ne]` was ignored, and a write beside it went through.
    token, subject_id = await a_case_file(fetch, tree, make_staff)
    listed = await fetch("/api/v1/leave-requests?status[$ne]=pending", token=token)
    assert listed.status == 400
    assert listed.error["code"] == "bad_request"
    assert listed.error["details"] == {"parameter": "status[$ne]"}
    issued = await fetch(
        f"/api/v1/subjects/{subject_id}/binding-code?role%5B%24ne%5D=x",
        "POST",
        json_body={"role": "subject"},
        token=token,
    )
    assert issued.status == 400
    assert await store.collection("binding_codes").count_documents({}) == 0
    plain = await fetch("/api/v1/leave-requests?status=pending", token=token)
    assert plain.status == 200


async def test_an_undecodable_id_on_the_photo_upload_is_refused_without_an_error(
    api, fetch, tree, make_staff, caplog
):
    # Was an AttributeError logged as the connection closed: the photo handler's writer was
    # set in `prepare`, which a path Tornado cannot decode never reaches.
    token = await make_staff.token_for(await make_staff(Role.COUNTY_OFFICER, tree.county))
    with caplog.at_level(logging.ERROR):
        answer = await fetch(
            "/api/v1/subjects/%ff%fe/photo",
            "PUT",
            body=b"\xff\xd8\xff" + b"\x00" * 64,
            headers={"Content-Type": "image/jpeg", "Authorization": f"Bearer {token}"},
        )
        await asyncio.sleep(0.1)  # the server sees the connection close after answering
    assert answer.status == 400
    assert answer.error["code"] == "bad_request"
    assert not server_faults(caplog.records)

"""The fuzz top-up: generated requests for the operations schemathesis ran out of inputs for."""

from __future__ import annotations

import base64
import collections
import contextlib
import datetime as dt
import http.client
import json
import random
import re
import string
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote, quote_from_bytes, urlsplit

from hypothesis import HealthCheck, Phase, given, seed, settings
from hypothesis import strategies as st
from hypothesis.errors import HypothesisException

# A logout ends the session it is sent under: a fresh throwaway session at most this often, so
# a share of the logouts reach a live session without a login for each one (a staff login costs
# an Argon2 hash, and an address may try 30 logins a minute: 20 for 1,000 logouts stay under).
RENEW_EVERY = 50
# Failures kept in full per operation (all are counted, and written to the 5xx file).
KEEP_FAILURES = 10
# Draws of a request already generated before one is made distinct on purpose.
REDRAWS = 50
REQUEST_TIMEOUT = 30.0
# Requests sent as the schema describes them, nothing varied but the values.
VALID_SHARE = 0.15
# The id form of the API (24 hexadecimal digits); answers are searched for them.
_ID = re.compile(r"\b[0-9a-f]{24}\b")
# Strings Hypothesis makes for each pattern of the document (about 0.2 s a pattern); a request
# takes one of them at random.
PATTERN_STRINGS = 64

# --- the document -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Operation:
    """One method of one path of /openapi.json, with what it says about the input."""

    method: str
    path: str
    path_params: tuple[str, ...] = ()
    query: tuple[Mapping[str, Any], ...] = ()
    # requestBody content: media type -> media type object.
    body: Mapping[str, Mapping[str, Any]] | None = None

    @property
    def name(self) -> str:
        return f"{self.method} {self.path}"


def operations(document: Mapping[str, Any]) -> list[Operation]:
    found = []
    for path, methods in document["paths"].items():
        for method, operation in methods.items():
            params = operation.get("parameters", ())
            found.append(
                Operation(
                    method=method.upper(),
                    path=path,
                    path_params=tuple(p["name"] for p in params if p["in"] == "path"),
                    query=tuple(p for p in params if p["in"] == "query"),
                    body=operation.get("requestBody", {}).get("content"),
                )
            )
    return found


# --- one generated request ------------------------------------------------------------------


@dataclass(frozen=True)
class Probe:
    """A request to send: `target` is the path and query, percent-encoded; header values may be
    any text (sent as UTF-8); the session's token is added when sent unless `own_auth`."""

    operation: str
    method: str
    target: str
    headers: tuple[tuple[str, str], ...]
    body: bytes | None
    varied: tuple[str, ...]
    own_auth: bool = False

    def key(self) -> tuple[Any, ...]:
        """What makes two probes the same request (the request id aside: it is unique)."""
        headers = tuple(h for h in self.headers if h[0].lower() != "x-request-id")
        return (self.method, self.target, headers, self.body)

    def recorded(self, base_url: str, with_token: bool) -> dict[str, Any]:
        """As schemathesis records a request (what `curl()` reads); the token as `$TOKEN`."""
        headers: dict[str, list[str]] = collections.defaultdict(list)
        for name, value in self.headers:
            headers[name].append(value)
        if with_token and not self.own_auth:
            headers["Authorization"] = ["Bearer $TOKEN"]
        body = None if self.body is None else {"$base64": base64.b64encode(self.body).decode()}
        return {
            "method": self.method,
            "uri": base_url + self.target,
            "headers": dict(headers),
            "body": body,
        }


# --- values -------------------------------------------------------------------------------------

_WORDS = ("a", "id", "q", "x", "limit", "cursor", "status", "sort", "page", "filter", "fields")
ODD_TEXT: tuple[str, ...] = (
    "",
    " ",
    "0",
    "-1",
    "1.5",
    "1e400",
    "9" * 40,
    "NaN",
    "null",
    "true",
    "[]",
    "{}",
    '{"$gt": ""}',
    "$where",
    "../../etc/passwd",
    "%00",
    "\x00",
    "\t",
    "矫正对象",
    "🙂🙂",
    "\u202eevil",
    "<script>alert(1)</script>",
    "' OR '1'='1",
    "2026-02-30",
    "9999-12-31",
    "0001-01-01",
    "2026-13",
    "ÿ",
)
ODD_IDS: tuple[str, ...] = (
    "0" * 24,
    "f" * 24,
    "0" * 23,
    "0" * 25,
    "g" * 24,
    "ZZZZZZZZZZZZZZZZZZZZZZZZ",
    "..",
    "../x",
    "a/b",
    "%",
    "\x00",
    "null",
    "-1",
    "1e400",
    "矫正",
    "🙂",
    "a" * 2000,
    '{"$ne": null}',
    " ",
)
CONTENT_TYPES: tuple[str, ...] = (
    "application/json",
    "application/json; charset=utf-8",
    "application/json; charset=latin-1",
    "APPLICATION/JSON",
    "application/merge-patch+json",
    "text/plain",
    "text/csv",
    "text/xml",
    "application/x-www-form-urlencoded",
    "multipart/form-data",
    "multipart/form-data; boundary=",
    "multipart/form-data; boundary=x",
    "image/jpeg",
    "image/png",
    "application/octet-stream",
    "*/*",
    "garbage",
    "",
    "application/json; " + "x" * 2000,
    "应用/json",
)
ACCEPTS: tuple[str, ...] = (
    "*/*",
    "application/json",
    "text/html",
    "application/xml",
    "text/csv",
    "image/png",
    "application/json;q=0",
    "*/*;q=abc",
    "",
    "x" * 3000,
    "中文",
)
IDEMPOTENCY_KEYS: tuple[str, ...] = ("", " ", "k" * 1000, "键-中文", "../x", '{"$gt": ""}', "\t")
IF_MATCH: tuple[str, ...] = ("*", '"1"', 'W/"1"', '"', "", "9" * 100, '"1", "2"', "中")
# Headers a client may send and nothing here reads, and some that proxies and browsers add.
OTHER_HEADERS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("X-Request-Id", ("", "short", "x" * 65, "../../x", "请求", "a b c")),
    ("X-Forwarded-For", ("1.2.3.4", "::1, 10.0.0.1", "not an address", "1.2.3.4" * 300)),
    ("X-Real-IP", ("127.0.0.1", "999.999.999.999", "")),
    ("Cookie", ("a=b", "session=" + "x" * 3000, "=;;=", "名=值")),
    ("Origin", ("https://evil.example", "null", "")),
    ("Referer", ("https://evil.example/", "中文")),
    ("Accept-Language", ("zh-CN", "en;q=0.1", "xx-" + "y" * 500, "*")),
    ("Accept-Encoding", ("gzip", "br", "identity;q=0", "junk")),
    ("Content-Encoding", ("gzip", "deflate", "junk")),
    ("X-HTTP-Method-Override", ("DELETE", "TRACE")),
    ("Range", ("bytes=0-1", "bytes=-1", "lines=1")),
    ("If-None-Match", ("*", '"x"')),
    ("If-Modified-Since", ("Thu, 01 Jan 1970 00:00:00 GMT", "not a date")),
    ("Authorization", ("Bearer", "Bearer ", "Basic YTpi", "bearer x", "Bearer " + "x" * 3000)),
)
_NAME_CHARS = string.ascii_letters + string.digits + "-"
_PRINTABLE = string.ascii_letters + string.digits + string.punctuation + " "
_CHINESE = "安帮矫正对象社区司法所网格员帮教戒毒康复监护人走访请假"


def _text(rng: random.Random, low: int = 0, high: int = 24) -> str:
    length = rng.randint(low, max(low, high))
    alphabet = rng.choice((string.ascii_letters + string.digits, _PRINTABLE, _CHINESE))
    return "".join(rng.choice(alphabet) for _ in range(length))


class PatternStrings:
    """Strings matching the document's patterns in full, made by Hypothesis's `from_regex`:
    a few dozen per pattern, made once from `seed` (the same seed, the same strings), from
    which each request draws with its own random source."""

    def __init__(self, seed: int, per_pattern: int = PATTERN_STRINGS):
        self.seed = seed
        self.per_pattern = per_pattern
        self._made: dict[str, list[str]] = {}

    def sample(self, pattern: str, rng: random.Random) -> str:
        """A string matching `pattern`; a random text when Hypothesis cannot make one."""
        if pattern not in self._made:
            self._made[pattern] = self._make(pattern)
        made = self._made[pattern]
        return rng.choice(made) if made else _text(rng)

    def _make(self, pattern: str) -> list[str]:
        try:
            strategy = st.from_regex(pattern, fullmatch=True)
        except (re.error, HypothesisException):
            return []
        made: list[str] = []

        # Hypothesis draws values only inside a test it runs (`find` is built the same way):
        # this one keeps what it is given. Generation only, no database, no shrinking.
        @settings(
            max_examples=self.per_pattern,
            database=None,
            deadline=None,
            phases=[Phase.generate],
            suppress_health_check=list(HealthCheck),
        )
        @seed(random.Random(f"{self.seed}:{pattern}").getrandbits(64))
        @given(strategy)
        def keep(value: str) -> None:
            made.append(value)

        try:
            keep()
        except HypothesisException:
            return []
        return made


def random_json(rng: random.Random, depth: int = 0) -> Any:
    """Any JSON value: nested, odd keys (operators, prototype names), odd scalars."""
    kind = rng.randrange(9 if depth < 3 else 6)
    if kind == 0:
        return None
    if kind == 1:
        return rng.choice((True, False))
    if kind == 2:
        return rng.choice((0, -1, 1, 2**31, 2**53 + 1, -(2**63), rng.randint(-1000, 1000)))
    if kind == 3:
        return rng.choice((0.5, -0.0, 1e308, 5e-324, rng.uniform(-1e6, 1e6)))
    if kind in (4, 5):
        return rng.choice(ODD_TEXT) if rng.random() < 0.4 else _text(rng)
    if kind in (6, 7):
        keys = ("$gt", "$where", "__proto__", "constructor", "", "a.b", "id", "name", "type")
        return {
            (rng.choice(keys) if rng.random() < 0.5 else _text(rng, 1, 12)): random_json(
                rng, depth + 1
            )
            for _ in range(rng.randint(0, 5))
        }
    return [random_json(rng, depth + 1) for _ in range(rng.randint(0, 5))]


# --- the generator ------------------------------------------------------------------------


@dataclass
class _Draft:
    """A request being built: raw values, encoded when it becomes a Probe."""

    path: dict[str, str]
    query: list[tuple[str, str | bytes]]
    headers: list[tuple[str, str]]
    body: bytes | None
    varied: list[str] = field(default_factory=list)


def _encode(value: str | bytes) -> str:
    if isinstance(value, bytes):
        return quote_from_bytes(value, safe="")
    return quote(value, safe="")


class Generator:
    """Requests for operations of one /openapi.json, from a seed: a valid-shaped request from
    the schema, then one to three variations of what the schema leaves open."""

    def __init__(self, document: Mapping[str, Any], ids: Sequence[str] = (), seed: int = 13):
        self.components: Mapping[str, Any] = document.get("components", {}).get("schemas", {})
        self.ids = list(ids)
        self.seed = seed
        self.patterns = PatternStrings(seed)

    # --- valid-shaped values from the schema ---------------------------------------------

    def resolve(self, schema: Mapping[str, Any]) -> Mapping[str, Any]:
        while "$ref" in schema:
            schema = self.components[schema["$ref"].rsplit("/", 1)[1]]
        return schema

    def an_id(self, rng: random.Random) -> str:
        if self.ids and rng.random() < 0.7:
            return rng.choice(self.ids)
        return f"{rng.getrandbits(96):024x}"

    def value(
        self, schema: Mapping[str, Any], rng: random.Random, name: str = "", depth: int = 0
    ) -> Any:
        """A value of `schema`'s shape (ids from those the stack holds for `*_id` fields)."""
        schema = self.resolve(schema)
        if "const" in schema:
            return schema["const"]
        if "enum" in schema:
            return rng.choice(schema["enum"])
        for union in ("oneOf", "anyOf"):
            if union in schema:
                members = [self.resolve(s) for s in schema[union]]
                real = [m for m in members if m.get("type") != "null"]
                pick = rng.choice(real) if real and rng.random() < 0.85 else rng.choice(members)
                return self.value(pick, rng, name, depth)
        if "allOf" in schema:
            return self.value(schema["allOf"][0], rng, name, depth)
        kind = schema.get("type")
        if isinstance(kind, list):
            kind = rng.choice(kind)
        if kind == "object" or "properties" in schema:
            if depth > 4:
                return {}
            required = set(schema.get("required", ()))
            return {
                key: self.value(sub, rng, key, depth + 1)
                for key, sub in schema.get("properties", {}).items()
                if key in required or rng.random() < 0.5
            }
        if kind == "array":
            if "prefixItems" in schema:
                return [self.value(s, rng, name, depth + 1) for s in schema["prefixItems"]]
            low = schema.get("minItems", 0)
            high = min(schema.get("maxItems", low + 3), low + 3)
            items = schema.get("items", {})
            return [self.value(items, rng, name, depth + 1) for _ in range(rng.randint(low, high))]
        if kind == "string":
            return self._string(schema, rng, name)
        if kind == "integer":
            low = schema.get("minimum", schema.get("exclusiveMinimum", -1000 - 1) + 1)
            high = schema.get("maximum", schema.get("exclusiveMaximum", low + 1000 + 1) - 1)
            return rng.randint(low, max(low, min(high, low + 1000)))
        if kind == "number":
            low = schema.get("minimum", schema.get("exclusiveMinimum", 0))
            return low + rng.random() * 100
        if kind == "boolean":
            return rng.random() < 0.5
        if kind == "null":
            return None
        return random_json(rng, depth + 2)

    def _string(self, schema: Mapping[str, Any], rng: random.Random, name: str) -> str:
        if "pattern" in schema:
            return self.patterns.sample(schema["pattern"], rng)
        shape = schema.get("format")
        day = dt.date(2020, 1, 1) + dt.timedelta(days=rng.randrange(3650))
        if shape == "date":
            return day.isoformat()
        if shape == "date-time":
            moment = dt.datetime.combine(day, dt.time(rng.randrange(24), rng.randrange(60)))
            return moment.isoformat() + rng.choice(("Z", "+08:00", "+00:00"))
        if name.endswith("_id") or name.endswith("_ids") or name == "id":
            return self.an_id(rng)
        low = schema.get("minLength", 0)
        high = min(schema.get("maxLength", low + 24), low + 24)
        produced = _text(rng, low, high)
        return produced if len(produced) >= low else produced + "x" * (low - len(produced))

    # --- bodies in their media types ---------------------------------------------------

    def body(self, operation: Operation, rng: random.Random) -> tuple[bytes | None, str | None]:
        """A valid-shaped body and its content type (None, None without a body)."""
        if not operation.body:
            return None, None
        media, described = rng.choice(sorted(operation.body.items()))
        schema = described.get("schema", {})
        if media == "text/csv":
            return self.csv(described, rng), media
        if media.startswith("multipart/"):
            boundary = uuid.uuid4().hex
            return self.multipart(boundary, rng), f"{media}; boundary={boundary}"
        if media.startswith("image/"):
            return self.image(media, rng), media
        value = self.value(schema, rng)
        return json.dumps(value, ensure_ascii=rng.random() < 0.5).encode(), media

    def csv(self, described: Mapping[str, Any], rng: random.Random) -> bytes:
        """The documented header (columns shuffled, now and then a byte-order mark or a column
        missing), then rows of plausible, empty, odd or over-long values, unbalanced quotes."""
        example = str(described.get("example", "a,b\r\n"))
        columns = example.splitlines()[0].split(",")
        rng.shuffle(columns)
        if rng.random() < 0.1:
            columns.pop()
        lines = [",".join(columns)]
        for _ in range(rng.randint(0, 6)):
            cells = []
            for _ in range(len(columns) + rng.choice((0, 0, 0, 1, -1))):
                roll = rng.random()
                if roll < 0.5:
                    cells.append(_text(rng, 0, 12).replace(",", "").replace('"', ""))
                elif roll < 0.75:
                    cells.append(rng.choice(ODD_TEXT).replace("\x00", ""))
                elif roll < 0.9:
                    cells.append('"' + _text(rng, 0, 8).replace('"', '""') + ',"')
                else:
                    cells.append(rng.choice(self.ids or ["330302001"]))
            lines.append(",".join(cells))
        if rng.random() < 0.05:
            # A cell past the csv module's field limit (131,072 characters).
            lines.append(",".join(["x" * 140_000] * min(2, len(columns))))
        text = rng.choice(("\r\n", "\n")).join(lines) + "\n"
        if rng.random() < 0.1:
            text = "\ufeff" + text
        return text.encode("utf-8")

    def multipart(self, boundary: str, rng: random.Random) -> bytes:
        """A `file` part holding a JPEG or PNG start, random bytes, or nothing at all."""
        head = rng.choice((b"\xff\xd8\xff\xe0", b"\x89PNG\r\n\x1a\n", b"", b"GIF89a"))
        data = head + rng.randbytes(rng.randint(0, 4096))
        name = rng.choice(("file", "file", "file", "photo", "FILE", ""))
        filename = rng.choice(("photo.jpg", "照片.png", "../../x.jpg", "a" * 300, ""))
        return (
            (
                f"--{boundary}\r\n"
                f'Content-Disposition: form-data; name="{name}"; filename="{filename}"\r\n'
                f"Content-Type: {rng.choice(('image/jpeg', 'image/png', 'text/plain'))}\r\n\r\n"
            ).encode()
            + data
            + f"\r\n--{boundary}--\r\n".encode()
        )

    def image(self, media: str, rng: random.Random) -> bytes:
        head = b"\xff\xd8\xff\xe0" if media == "image/jpeg" else b"\x89PNG\r\n\x1a\n"
        return (head if rng.random() < 0.8 else b"") + rng.randbytes(rng.randint(0, 4096))

    # --- requests ------------------------------------------------------------------------

    def draft(self, operation: Operation, rng: random.Random) -> _Draft:
        """The valid-shaped request: ids, declared query parameters, a body of its type."""
        query: list[tuple[str, str | bytes]] = []
        for param in operation.query:
            if param.get("required") or rng.random() < 0.5:
                value = self.value(param.get("schema", {}), rng, param["name"])
                query.append((param["name"], value if isinstance(value, str) else str(value)))
        body, media = self.body(operation, rng)
        headers = [("Content-Type", media)] if media else []
        path = {name: self.an_id(rng) for name in operation.path_params}
        return _Draft(path, query, headers, body)

    def variations(self, operation: Operation) -> list[Callable[[_Draft, random.Random], None]]:
        """What may be varied for `operation`: everything the schema leaves open."""
        kinds: list[Callable[[_Draft, random.Random], None]] = [
            _unknown_query,
            _repeated_query,
            _accept,
            _content_type,
            _idempotency_key,
            _if_match,
            _other_header,
            _random_json_body,
            _junk_body,
        ]
        if operation.query:
            kinds += [_odd_query_value, _missing_query]
        if operation.path_params:
            kinds += [self._other_id, _odd_id]
        if operation.body:
            kinds += [_no_body, _wrong_body_type]
            json_schema = operation.body.get("application/json", {}).get("schema")
            if json_schema is not None:
                kinds += [self._field_variation(json_schema)] * 2
        return kinds

    def _other_id(self, draft: _Draft, rng: random.Random) -> None:
        name = rng.choice(sorted(draft.path))
        draft.path[name] = rng.choice(self.ids) if self.ids else f"{rng.getrandbits(96):024x}"
        draft.varied.append("path:other-id")

    def _field_variation(
        self, schema: Mapping[str, Any]
    ) -> Callable[[_Draft, random.Random], None]:
        """A JSON body of the right shape but for one field: missing, unknown, or holding an
        odd text, any JSON, null, a long text or an operator."""
        fields = sorted(self.resolve(schema).get("properties", {}))

        def vary(draft: _Draft, rng: random.Random) -> None:
            try:
                value = json.loads(draft.body or b"{}")
            except ValueError:
                value = {}
            if not isinstance(value, dict):
                value = {}
            how = rng.choice(("missing", "unknown", "odd", "odd", "odd"))
            if how == "missing" and value:
                value.pop(rng.choice(sorted(value)))
            elif how == "unknown" or not fields:
                value[_text(rng, 1, 16)] = random_json(rng)
                how = "unknown"
            else:
                value[rng.choice(fields)] = rng.choice(
                    (
                        rng.choice(ODD_TEXT),
                        random_json(rng),
                        None,
                        "x" * rng.choice((1000, 70_000)),
                        {"$ne": None},
                    )
                )
            draft.varied.append(f"body:field-{how}")
            draft.body = json.dumps(value, ensure_ascii=False).encode()
            if not any(name.lower() == "content-type" for name, _ in draft.headers):
                draft.headers.append(("Content-Type", "application/json"))

        return vary

    def probes(self, operation: Operation, count: int) -> Iterator[Probe]:
        """`count` distinct requests for `operation`, the same ones for the same seed."""
        rng = random.Random(f"{self.seed}:{operation.name}")
        kinds = self.variations(operation)
        seen: set[tuple[Any, ...]] = set()
        for made in range(count):
            draft, probe = self._draw(operation, kinds, rng)
            for _ in range(REDRAWS):
                if probe.key() not in seen:
                    break
                draft, probe = self._draw(operation, kinds, rng)
            extra = 0
            while probe.key() in seen:
                # The operation has few shapes left to draw: one more unknown query name makes
                # it a request not sent yet (and that name is a variation of its own).
                extra += 1
                draft.query.append((f"n{made}", str(extra)))
                draft.varied.append("query:unknown")
                probe = self._probe(operation, draft, rng)
            seen.add(probe.key())
            yield probe

    def _draw(
        self,
        operation: Operation,
        kinds: Sequence[Callable[[_Draft, random.Random], None]],
        rng: random.Random,
    ) -> tuple[_Draft, Probe]:
        """A valid-shaped request, as it is (a share of them) or with one to three variations."""
        draft = self.draft(operation, rng)
        if rng.random() < VALID_SHARE:
            draft.varied.append("valid-shaped")
        else:
            for vary in rng.sample(kinds, rng.randint(1, min(3, len(kinds)))):
                vary(draft, rng)
        return draft, self._probe(operation, draft, rng)

    def _probe(self, operation: Operation, draft: _Draft, rng: random.Random) -> Probe:
        path = operation.path
        for name, value in draft.path.items():
            path = path.replace("{" + name + "}", _encode(value))
        if draft.query:
            path += "?" + "&".join(f"{_encode(k)}={_encode(v)}" for k, v in draft.query)
        headers = list(draft.headers)
        if not any(name.lower() == "x-request-id" for name, _ in headers):
            # A request id of our own: the stack's log line of a 5xx is found by it.
            headers.append(("X-Request-Id", f"topup-{rng.getrandbits(64):016x}"))
        return Probe(
            operation=operation.name,
            method=operation.method,
            target=path,
            headers=tuple(headers),
            body=draft.body,
            varied=tuple(sorted(set(draft.varied))),
            own_auth=any(name.lower() == "authorization" for name, _ in headers),
        )


# Each variation changes a draft in place and names itself in `draft.varied`.


def _unknown_query(draft: _Draft, rng: random.Random) -> None:
    for _ in range(rng.randint(1, 4)):
        name = rng.choice(
            (
                rng.choice(_WORDS),
                _text(rng, 1, 10),
                "".join(rng.choice(_NAME_CHARS) for _ in range(rng.randint(1, 64))),
                "a[$ne]",
                "__proto__",
                "x" * 65,
                "名字",
            )
        )
        value: str | bytes = rng.choice((rng.choice(ODD_TEXT), _text(rng), b"\xff\xfe"))
        draft.query.append((name, value))
    draft.varied.append("query:unknown")


def _repeated_query(draft: _Draft, rng: random.Random) -> None:
    names = [name for name, _ in draft.query] or [rng.choice(_WORDS)]
    name = rng.choice(names)
    for _ in range(rng.randint(1, 4)):
        draft.query.append((name, rng.choice((*ODD_TEXT, _text(rng)))))
    draft.varied.append("query:repeated")


def _odd_query_value(draft: _Draft, rng: random.Random) -> None:
    value: str | bytes = rng.choice(
        (rng.choice(ODD_TEXT), "x" * 5000, b"\xff\xfe", b"\xc0\xaf", str(2**70), _text(rng))
    )
    if draft.query:
        index = rng.randrange(len(draft.query))
        draft.query[index] = (draft.query[index][0], value)
    else:
        draft.query.append((rng.choice(_WORDS), value))
    draft.varied.append("query:odd-value")


def _missing_query(draft: _Draft, rng: random.Random) -> None:
    if draft.query:
        draft.query.pop(rng.randrange(len(draft.query)))
    else:
        draft.query.append(("", ""))
    draft.varied.append("query:missing")


def _set_header(draft: _Draft, name: str, value: str) -> None:
    draft.headers = [(n, v) for n, v in draft.headers if n.lower() != name.lower()]
    draft.headers.append((name, value))


def _accept(draft: _Draft, rng: random.Random) -> None:
    _set_header(draft, "Accept", rng.choice(ACCEPTS))
    draft.varied.append("header:accept")


def _content_type(draft: _Draft, rng: random.Random) -> None:
    _set_header(draft, "Content-Type", rng.choice(CONTENT_TYPES))
    draft.varied.append("header:content-type")


def _idempotency_key(draft: _Draft, rng: random.Random) -> None:
    key = str(uuid.UUID(int=rng.getrandbits(128))) if rng.random() < 0.5 else None
    _set_header(draft, "Idempotency-Key", key or rng.choice(IDEMPOTENCY_KEYS))
    draft.varied.append("header:idempotency-key")


def _if_match(draft: _Draft, rng: random.Random) -> None:
    _set_header(draft, "If-Match", rng.choice(IF_MATCH))
    draft.varied.append("header:if-match")


def _other_header(draft: _Draft, rng: random.Random) -> None:
    name, values = rng.choice(OTHER_HEADERS)
    if rng.random() < 0.2:
        # Unknown to everyone, long or not ASCII; sometimes sent twice.
        name = "X-" + "".join(rng.choice(_NAME_CHARS) for _ in range(rng.randint(1, 30)))
        values = ("v" * rng.choice((1, 4000)), "非ASCII值", _text(rng))
    draft.headers.append((name, rng.choice(values)))
    if rng.random() < 0.2:
        draft.headers.append((name, rng.choice(values)))
    draft.varied.append("header:authorization" if name == "Authorization" else "header:other")


def _random_json_body(draft: _Draft, rng: random.Random) -> None:
    draft.body = json.dumps(random_json(rng), ensure_ascii=rng.random() < 0.5).encode()
    _set_header(draft, "Content-Type", "application/json")
    draft.varied.append("body:random-json")


def _junk_body(draft: _Draft, rng: random.Random) -> None:
    prefix = rng.choice((b"", b"\xef\xbb\xbf", b"\xff\xfe", b"\x00", b"{", b"<xml>"))
    draft.body = prefix + rng.randbytes(rng.randint(1, 2048))
    if rng.random() < 0.7:
        _set_header(draft, "Content-Type", rng.choice(CONTENT_TYPES))
    else:
        draft.headers = [(n, v) for n, v in draft.headers if n.lower() != "content-type"]
    draft.varied.append("body:junk")


def _no_body(draft: _Draft, rng: random.Random) -> None:
    draft.body = rng.choice((None, b""))
    draft.varied.append("body:none")


def _wrong_body_type(draft: _Draft, rng: random.Random) -> None:
    draft.body = draft.body if draft.body is not None else b"{}"
    current = next((v for n, v in draft.headers if n.lower() == "content-type"), "")
    others = [c for c in CONTENT_TYPES if c.split(";")[0] != current.split(";")[0]]
    _set_header(draft, "Content-Type", rng.choice(others))
    draft.varied.append("body:wrong-content-type")


def _odd_id(draft: _Draft, rng: random.Random) -> None:
    name = rng.choice(sorted(draft.path))
    draft.path[name] = rng.choice((*ODD_IDS, _text(rng, 1, 30)))
    draft.varied.append("path:odd-id")


# --- sending ------------------------------------------------------------------------------------


@dataclass
class Lane:
    """The session a group of operations is sent under. `renew` opens a new one: for a
    logout, which ends its session, or when another operation ended it."""

    name: str
    token: str | None
    renew: Callable[[], str] | None = None
    ends_session: bool = False
    renewed: int = 0


@dataclass
class Answer:
    status: int  # 0: no answer (connection dropped, timed out)
    body: bytes = b""
    error: str | None = None


@dataclass
class Sent:
    """What one operation's top-up sent and got."""

    requests: int = 0
    statuses: collections.Counter[int] = field(default_factory=collections.Counter)
    server_errors: int = 0
    no_answer: int = 0
    varied: collections.Counter[str] = field(default_factory=collections.Counter)
    # The first few 5xx and unanswered requests: the probe, the status, the answer's start.
    failures: list[dict[str, Any]] = field(default_factory=list)


class Sender:
    """Sends probes over keep-alive connections to the stack, one connection per thread."""

    def __init__(self, base_url: str, timeout: float = REQUEST_TIMEOUT):
        parts = urlsplit(base_url)
        self.base_url = base_url
        self.host = parts.hostname or "127.0.0.1"
        self.port = parts.port or 80
        self.timeout = timeout
        self._local = threading.local()
        # Every connection open, whichever thread holds it: `close` closes them all.
        self._open: set[http.client.HTTPConnection] = set()
        self._lock = threading.Lock()

    def _connection(self) -> http.client.HTTPConnection:
        connection = getattr(self._local, "connection", None)
        if connection is None:
            connection = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
            self._local.connection = connection
            with self._lock:
                self._open.add(connection)
        return connection

    def _drop(self) -> None:
        connection = getattr(self._local, "connection", None)
        if connection is not None:
            connection.close()
            self._local.connection = None
            with self._lock:
                self._open.discard(connection)

    def send(self, probe: Probe, token: str | None) -> Answer:
        for attempt in (1, 2):
            connection = self._connection()
            try:
                connection.putrequest(
                    probe.method, probe.target, skip_host=True, skip_accept_encoding=True
                )
                connection.putheader("Host", f"{self.host}:{self.port}")
                if token and not probe.own_auth:
                    connection.putheader("Authorization", f"Bearer {token}")
                for name, value in probe.headers:
                    connection.putheader(name, value.encode("utf-8"))
                if probe.body is not None:
                    connection.putheader("Content-Length", str(len(probe.body)))
                connection.endheaders(probe.body)
                response = connection.getresponse()
                body = response.read()
                if response.will_close:
                    self._drop()
                return Answer(response.status, body)
            except (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError) as exc:
                # A keep-alive connection the server had closed: once more on a new one.
                self._drop()
                if attempt == 2:
                    return Answer(0, error=type(exc).__name__)
            except (OSError, http.client.HTTPException) as exc:
                self._drop()
                return Answer(0, error=f"{type(exc).__name__}: {exc}"[:200])
        return Answer(0, error="unreachable")

    def close(self) -> None:
        """Close every connection (the threads that used them are done)."""
        with self._lock:
            connections, self._open = self._open, set()
        for connection in connections:
            connection.close()
        self._local = threading.local()


def collect_ids(sender: Sender, ops: Sequence[Operation], token: str | None) -> list[str]:
    """Ids the stack holds: every id in the answers of the GET operations that need none."""
    found: dict[str, None] = {}
    for op in ops:
        if op.method != "GET" or op.path_params or any(p.get("required") for p in op.query):
            continue
        probe = Probe(op.name, "GET", op.path, (), None, ())
        answer = sender.send(probe, token)
        if answer.status == 200:
            for match in _ID.findall(answer.body.decode("utf-8", "replace")):
                found.setdefault(match)
    sender.close()
    return list(found)[:500]


@dataclass
class TopUpResult:
    operations: dict[str, Sent]
    seconds: float = 0.0
    timed_out: bool = False
    # Sessions a request ended and that were opened again (logouts aside): lane -> operations.
    sessions_lost: dict[str, list[str]] = field(default_factory=dict)
    renewed: dict[str, int] = field(default_factory=dict)
    # Sessions that could not be opened again (lane -> why): its later requests go without one.
    renew_failed: dict[str, str] = field(default_factory=dict)


def _record(
    sent: Sent,
    probe: Probe,
    answer: Answer,
    sender: Sender,
    with_token: bool,
    log: Callable[[dict[str, Any]], None] | None,
) -> None:
    sent.requests += 1
    sent.statuses[answer.status] += 1
    sent.varied.update(probe.varied)
    failed = answer.status >= 500 or answer.status == 0
    if answer.status >= 500:
        sent.server_errors += 1
    if answer.status == 0:
        sent.no_answer += 1
    if not failed:
        return
    entry = {
        "status": answer.status,
        "varied": list(probe.varied),
        "request_id": next((v for n, v in probe.headers if n.lower() == "x-request-id"), None),
        "answer": answer.error or answer.body[:300].decode("utf-8", "replace"),
        "request": probe.recorded(sender.base_url, with_token),
    }
    if len(sent.failures) < KEEP_FAILURES:
        sent.failures.append(entry)
    if log is not None:
        log(entry)


def top_up(
    sender: Sender,
    plan: Sequence[tuple[Operation, int, Lane]],
    generator: Generator,
    *,
    workers: int = 2,
    deadline: float = float("inf"),
    alive: Callable[[Lane], bool] | None = None,
    log_failure: Callable[[dict[str, Any]], None] | None = None,
) -> TopUpResult:
    """Send each planned operation its count of probes under its lane's session (concurrently,
    `workers` at a time; a logout one at a time, under sessions opened for it), until
    `deadline` (time.monotonic()). `alive` says whether a lane's session survived an
    operation; one that did not is opened again and the operation named."""
    started = time.monotonic()
    result = TopUpResult({})
    lock = threading.Lock()
    for operation, count, lane in plan:
        if count <= 0:
            continue
        if time.monotonic() >= deadline:
            result.timed_out = True
            break
        sent = result.operations.setdefault(operation.name, Sent())
        probes = generator.probes(operation, count)
        if lane.ends_session:
            _send_ending(sender, probes, lane, sent, deadline, log_failure)
        else:
            _send_concurrently(sender, probes, lane, sent, deadline, workers, lock, log_failure)
        # The pool's threads are gone: so must be their connections.
        sender.close()
        if time.monotonic() >= deadline and sent.requests < count:
            result.timed_out = True
        if not lane.ends_session and alive is not None and not alive(lane):
            result.sessions_lost.setdefault(lane.name, []).append(operation.name)
            if lane.renew is not None:
                try:
                    lane.token = lane.renew()
                    lane.renewed += 1
                except Exception as exc:
                    # A lock or a login limit must not cost the figures of everything else.
                    result.renew_failed[lane.name] = f"{type(exc).__name__}: {exc}"[:300]
                    lane.token = None
        result.renewed[lane.name] = lane.renewed
    sender.close()
    result.seconds = time.monotonic() - started
    return result


def _send_concurrently(
    sender: Sender,
    probes: Iterator[Probe],
    lane: Lane,
    sent: Sent,
    deadline: float,
    workers: int,
    lock: threading.Lock,
    log_failure: Callable[[dict[str, Any]], None] | None,
) -> None:
    source = iter(probes)

    def work() -> None:
        while time.monotonic() < deadline:
            with lock:
                probe = next(source, None)
            if probe is None:
                return
            answer = sender.send(probe, lane.token)
            with lock:
                _record(sent, probe, answer, sender, lane.token is not None, log_failure)

    with ThreadPoolExecutor(max_workers=workers) as pool:
        for future in [pool.submit(work) for _ in range(workers)]:
            future.result()


def _send_ending(
    sender: Sender,
    probes: Iterator[Probe],
    lane: Lane,
    sent: Sent,
    deadline: float,
    log_failure: Callable[[dict[str, Any]], None] | None,
) -> None:
    """A logout: one at a time; after one succeeded, a new session once RENEW_EVERY requests
    have gone since the last (the ones between are refused, 401, as a client's would be)."""
    since_renewal = 0
    ended = False
    for probe in probes:
        if time.monotonic() >= deadline:
            return
        if ended and since_renewal >= RENEW_EVERY and lane.renew is not None:
            with contextlib.suppress(Exception):
                lane.token = lane.renew()
                lane.renewed += 1
                ended, since_renewal = False, 0
        answer = sender.send(probe, lane.token)
        _record(sent, probe, answer, sender, lane.token is not None, log_failure)
        since_renewal += 1
        ended = ended or 200 <= answer.status < 300

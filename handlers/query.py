"""Query-string parameters: declared once on a handler method, parsed and described from that."""

from __future__ import annotations

import dataclasses
import datetime as dt
import re
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

import tornado.web

from handlers.base import RequestError
from handlers.messages import validation_message

QUERY_ATTRIBUTE = "__query__"

# Years a date or month in a query may name. Beyond them the services' arithmetic (a day past
# 9999-12-31, local midnight of 0001-01-01 in UTC) overflows; nothing this system keeps is dated
# outside them.
FIRST_YEAR, LAST_YEAR = 1900, 2999
_YEAR = "(?:19|2[0-9])[0-9]{2}"
_MONTH = "(?:0[1-9]|1[0-2])"
DAY_PATTERN = rf"^{_YEAR}-{_MONTH}-(?:0[1-9]|[12][0-9]|3[01])$"
MONTH_PATTERN = rf"^{_YEAR}-{_MONTH}$"
ID_PATTERN = r"^[0-9a-fA-F]{24}$"
# `str.isdigit` also accepts "²" and other digits `int` refuses, and `int` refuses thousands of
# digits: a page size is matched as at most six ASCII digits before it is converted.
_WHOLE_NUMBER = re.compile(r"[0-9]{1,6}")


class UndeclaredQuery(LookupError):
    """A handler read a query parameter its method does not declare: a defect in the handler
    (the OpenAPI document would not describe it), found by the tests, never by a caller."""


class _Invalid(ValueError):
    """A value that does not fit its parameter: the staff message and the mini-program's kind."""

    def __init__(self, message: str, kind: str):
        super().__init__(message)
        self.message = message
        self.kind = kind


@dataclass(frozen=True)
class QueryParam:
    """One `?name=` parameter: its JSON schema (for /openapi.json) and how a value is read."""

    name: str
    description: str
    schema: Mapping[str, Any]
    required: bool = False
    # The value when the parameter is absent (already converted).
    default: Any = None

    def convert(self, raw: str) -> Any:
        return raw

    def parameter(self) -> dict[str, Any]:
        """The OpenAPI parameter object."""
        return {
            "name": self.name,
            "in": "query",
            "required": self.required,
            "description": self.description,
            "schema": dict(self.schema),
        }


ParamT = TypeVar("ParamT", bound=QueryParam)


@dataclass(frozen=True)
class Text(QueryParam):
    """Text, matching the schema's pattern when it has one."""

    def convert(self, raw: str) -> Any:
        pattern = self.schema.get("pattern")
        if pattern is not None and re.search(pattern, raw) is None:
            raise _Invalid("not in the expected form", "string_pattern_mismatch")
        return raw


@dataclass(frozen=True)
class Choice(QueryParam):
    """One of the schema's enumerated words."""

    def convert(self, raw: str) -> Any:
        allowed = self.schema["enum"]
        if raw not in allowed:
            raise _Invalid("one of " + ", ".join(allowed), "enum")
        return raw


@dataclass(frozen=True)
class Flag(QueryParam):
    """`1` (yes) or `0` (no)."""

    def convert(self, raw: str) -> Any:
        if raw not in ("0", "1"):
            raise _Invalid("0 or 1", "bool_type")
        return raw == "1"


@dataclass(frozen=True)
class WholeNumber(QueryParam):
    """A whole number from the schema's minimum to its maximum."""

    def convert(self, raw: str) -> Any:
        low, high = self.schema["minimum"], self.schema["maximum"]
        if _WHOLE_NUMBER.fullmatch(raw) is None or not low <= int(raw) <= high:
            raise _Invalid(f"a whole number from {low} to {high}", "int_parsing")
        return int(raw)


@dataclass(frozen=True)
class Day(QueryParam):
    """A calendar date, `YYYY-MM-DD`."""

    def convert(self, raw: str) -> Any:
        if re.fullmatch(DAY_PATTERN, raw) is None:
            raise _Invalid(f"a date, YYYY-MM-DD, from {FIRST_YEAR} to {LAST_YEAR}", "date_parsing")
        try:
            return dt.date.fromisoformat(raw)
        except ValueError:  # 2026-02-30
            raise _Invalid("a date, YYYY-MM-DD", "date_parsing") from None


# --- the declarations route modules write -----------------------------------------------------


def text(name: str, description: str) -> Text:
    return Text(name, description, {"type": "string"})


def matching(name: str, description: str, pattern: str) -> Text:
    """Text in a form given by a regular expression (anchor it: `^...$`)."""
    return Text(name, description, {"type": "string", "pattern": pattern})


def exact_person(name: str = "q") -> Text:
    """A person's exact name, ID number or phone, as a search through the blind indexes reads
    it (the case list, the audit page's file finder)."""
    return matching(
        name,
        "An exact name, ID number or phone (matched through the blind indexes): Chinese "
        "characters, letters, digits, spaces and · . + - ( ) only",
        r"^[\u3400-\u9fffA-Za-z0-9·. +()-]{1,50}$",
    )


def object_id(name: str, description: str) -> Text:
    """An id the server issued (24 hexadecimal digits)."""
    return Text(name, description, {"type": "string", "pattern": ID_PATTERN})


def one_of(
    name: str, allowed: Iterable[str], description: str, default: str | None = None
) -> Choice:
    """`allowed` may be a StrEnum: its values are the words."""
    schema: dict[str, Any] = {"type": "string", "enum": [str(word) for word in allowed]}
    if default is not None:
        schema["default"] = default
    return Choice(name, description, schema, default=default)


def yes_no(name: str, description: str) -> Flag:
    """Absent: no."""
    schema = {"type": "string", "enum": ["0", "1"], "default": "0"}
    return Flag(name, description, schema, default=False)


def page_size(default: int, maximum: int) -> WholeNumber:
    """`?limit=`."""
    return WholeNumber(
        "limit",
        f"Page size, 1 to {maximum} (default {default})",
        {"type": "integer", "minimum": 1, "maximum": maximum, "default": default},
        default=default,
    )


def required(param: ParamT) -> ParamT:
    """The same parameter, which a request must give (422 when absent or empty)."""
    return dataclasses.replace(param, required=True)


def calendar_day(name: str, description: str) -> Day:
    """Absent: None (the handler picks the day, e.g. today)."""
    return Day(name, description, {"type": "string", "format": "date", "pattern": DAY_PATTERN})


def calendar_month(name: str, description: str) -> Text:
    """Required, `YYYY-MM` (the service decides whether that month may be asked for)."""
    schema = {"type": "string", "pattern": MONTH_PATTERN}
    return Text(name, description, schema, required=True)


@dataclass(frozen=True)
class QuerySpec:
    """The parameters one handler method reads, in the order they are documented."""

    params: tuple[QueryParam, ...]

    def __post_init__(self) -> None:
        names = [p.name for p in self.params]
        if len(names) != len(set(names)):
            raise ValueError(f"a query parameter is declared twice: {names}")

    def parameters(self) -> list[dict[str, Any]]:
        return [param.parameter() for param in self.params]


Method = Callable[..., Awaitable[None]]


def query(*params: QueryParam) -> Callable[[Method], Method]:
    """Declare the query parameters a handler method reads; `query_args` parses exactly these,
    and /openapi.json describes exactly these."""
    spec = QuerySpec(params)

    def mark(method: Method) -> Method:
        setattr(method, QUERY_ATTRIBUTE, spec)
        return method

    return mark


def declared_query(function: Any) -> QuerySpec | None:
    return getattr(function, QUERY_ATTRIBUTE, None)


class QueryArgs(Mapping[str, Any]):
    """The declared parameters of one request, converted; reading any other name is a defect."""

    def __init__(self, where: str, values: dict[str, Any]):
        self._where = where
        self._values = values

    def __getitem__(self, name: str) -> Any:
        try:
            return self._values[name]
        except KeyError:
            raise UndeclaredQuery(
                f"{self._where} reads `?{name}=`, which it does not declare"
            ) from None

    def __iter__(self) -> Iterator[str]:
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)


def query_args(handler: tornado.web.RequestHandler) -> QueryArgs:
    """The query of the request `handler` serves, read by the declaration on the method being
    served: 422 naming each parameter that is missing or does not fit, in the caller's language
    (Chinese for the mini-program)."""
    method = (handler.request.method or "").lower()
    where = f"{type(handler).__name__}.{method}"
    spec = declared_query(getattr(type(handler), method, None))
    if spec is None:
        raise UndeclaredQuery(f"{where} declares no query parameters")
    chinese = getattr(handler, "audience", "staff") == "mp"
    values: dict[str, Any] = {}
    problems: list[dict[str, str]] = []
    for param in spec.params:
        raw = handler.get_query_argument(param.name, None)
        if raw is None or (raw == "" and param.required):
            if param.required:
                message = validation_message("missing") if chinese else "required"
                problems.append({"field": param.name, "message": message})
            values[param.name] = param.default
            continue
        try:
            values[param.name] = param.convert(raw)
        except _Invalid as exc:
            message = validation_message(exc.kind) if chinese else exc.message
            problems.append({"field": param.name, "message": message})
    if problems:
        raise RequestError(422, "validation_failed", "Invalid query.", problems)
    return QueryArgs(where, values)

"""The one place that knows HTTP: JSON in and out, errors, request ids, identity and policy."""

from __future__ import annotations

import asyncio
import csv
import functools
import inspect
import io
import json
import logging
import math
import re
import traceback
import uuid
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal, TypeVar, get_args

import tornado.web
from pydantic import AliasChoices, BaseModel, ConfigDict, Field, RootModel, ValidationError

from handlers.messages import message_for, validation_message
from models.audit import AuditContext
from models.clock import Clock
from models.codec import IntegrityError, Shredded
from models.errors import (
    BadRequest,
    Conflict,
    DomainError,
    Forbidden,
    InvalidInput,
    Locked,
    NotAuthenticated,
    NotFound,
    RateLimited,
    Unavailable,
    UnsupportedMedia,
)
from models.health import ReadinessService
from models.identity import ANONYMOUS, Identity
from models.policy import PUBLIC, RESTRICTION_ALLOWS, SELF
from models.registry import Services
from models.store import as_unavailable

log = logging.getLogger("anbang.http")
access_log = logging.getLogger("anbang.access")

ModelT = TypeVar("ModelT", bound=BaseModel)

# Domain errors to HTTP statuses: the single table (warehouse and Primero keep theirs in one place).
STATUS_FOR_ERROR: dict[type[DomainError], int] = {
    BadRequest: 400,
    InvalidInput: 422,
    NotAuthenticated: 401,
    Forbidden: 403,
    NotFound: 404,
    Conflict: 409,
    Locked: 423,
    RateLimited: 429,
    Unavailable: 503,
    Shredded: 410,
    UnsupportedMedia: 415,
    # A stored ciphertext that fails authentication is the server's problem, not the caller's.
    IntegrityError: 500,
}

_REQUEST_ID = re.compile(r"^[A-Za-z0-9._-]{8,64}$")
# In production every answer tells browsers to use HTTPS only, for a year, on every subdomain
# (a first plain-HTTP visit could otherwise be downgraded and its cookies read).
HSTS = "max-age=31536000; includeSubDomains"


def path_id(name: str) -> str:
    """A route pattern's `name` path segment, passed to the method as a keyword argument."""
    return f"(?P<{name}>[^/]+)"


class Strict(BaseModel):
    """A request body: a field the model does not declare is refused (422), never dropped."""

    model_config = ConfigDict(extra="forbid")


class Out(BaseModel):
    """A response: built from a service's view, so a field the view has and this model does not
    declare is an error (which the tests meet), never silently left out of the answer."""

    model_config = ConfigDict(extra="forbid")


def _located(name: str, *older: str) -> Any:
    # The name `wx.getLocation` answers first (what the schema documents), then older ones.
    return AliasChoices(name, *older)


class GeoLocation(Strict):
    """Where the phone is, in the one shape check-ins, returns from leave and worker visits
    take: the object `wx.getLocation` answers, as it comes, plus `type`, the coordinate system
    it was asked for. The older names `lat`, `lng` and `coord_type` are still read."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "latitude": 28.0197,
                    "longitude": 120.6543,
                    "type": "gcj02",
                    "accuracy": 25,
                    "altitude": 12,
                    "speed": 0,
                    "verticalAccuracy": 10,
                    "horizontalAccuracy": 25,
                    "errMsg": "getLocation:ok",
                }
            ]
        },
    )

    lat: float = Field(ge=-90, le=90, validation_alias=_located("latitude", "lat"))
    lng: float = Field(ge=-180, le=180, validation_alias=_located("longitude", "lng"))
    coord_type: Literal["wgs84", "gcj02"] | None = Field(
        default=None,
        validation_alias=_located("type", "coord_type"),
        description="What `wx.getLocation` was asked for: wgs84 or gcj02 (国测局坐标); a "
        "check-in requires it",
    )
    accuracy: float | None = Field(
        default=None, ge=0, le=100_000, description="Metres; a check-in requires it"
    )
    altitude: float | None = Field(default=None, ge=-1_000, le=100_000)
    # Metres per second; wx reports -1 (or nothing) when it does not know.
    speed: float | None = Field(default=None, ge=-1, le=1_000)
    vertical_accuracy: float | None = Field(
        default=None, ge=0, le=100_000, validation_alias="verticalAccuracy"
    )
    horizontal_accuracy: float | None = Field(
        default=None, ge=0, le=100_000, validation_alias="horizontalAccuracy"
    )
    # `wx.getLocation`'s own status line ("getLocation:ok"): accepted so the result is sent as
    # it is, and not kept.
    err_msg: str | None = Field(default=None, max_length=200, validation_alias="errMsg")

    def stored(self) -> dict[str, Any]:
        """The point as records keep it (`lat`, `lng`, and what else was measured)."""
        kept = {
            "lat": self.lat,
            "lng": self.lng,
            "coord_type": self.coord_type,
            "accuracy": self.accuracy,
        }
        return {key: value for key, value in kept.items() if value is not None}


def field_title(model: type[BaseModel], loc: tuple[Any, ...]) -> str | None:
    """The `title` a body model gives the field at `loc` (its input names, nested models and
    list items followed); None when that field declares none."""
    current: Any = model
    title = None
    for part in loc:
        if isinstance(part, int):
            continue
        fields = getattr(current, "model_fields", None)
        if not isinstance(part, str) or fields is None:
            return None
        found = next(
            (
                info
                for name, info in fields.items()
                if part == name
                or part == info.validation_alias
                or (
                    isinstance(info.validation_alias, AliasChoices)
                    and part in info.validation_alias.choices
                )
            ),
            None,
        )
        if found is None:
            return None
        title = found.title
        current = _nested_model(found.annotation)
    return title


def _nested_model(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for argument in get_args(annotation):
        nested = _nested_model(argument)
        if nested is not None:
            return nested
    return None


class RequestError(Exception):
    """An HTTP-level refusal (malformed body, wrong media type, too large) with its status."""

    def __init__(self, status: int, code: str, message: str, details: Any = None):
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.details = details


class InFlight:
    """Counts requests being served so a graceful shutdown can wait for them to finish."""

    def __init__(self) -> None:
        self._count = 0
        self._idle = asyncio.Event()
        self._idle.set()

    @property
    def count(self) -> int:
        return self._count

    def begin(self) -> None:
        self._count += 1
        self._idle.clear()

    def end(self) -> None:
        self._count = max(0, self._count - 1)
        if self._count == 0:
            self._idle.set()

    async def wait_idle(self, seconds: float) -> bool:
        try:
            async with asyncio.timeout(seconds):
                await self._idle.wait()
        except TimeoutError:
            return False
        return True


@dataclass
class AppContext(Services):
    """Everything a handler may use, built once by the composition root and injected: the
    registry's services (`models/registry.py`) as typed fields, and the process's settings."""

    readiness: ReadinessService
    clock: Clock
    # WeChat's message push (`/wechat/push`): the app it serves, its Token and EncodingAESKey.
    wechat_appid: str = ""
    push_token: str = ""
    push_aes_key: str = ""
    in_flight: InFlight = field(default_factory=InFlight)
    max_body_bytes: int = 1 << 20
    # Production: the console's cookie is sent over HTTPS only.
    production: bool = False
    # Map tiles under the console's vector maps (ANBANG_MAP_TILES); empty: none fetched.
    map_tiles: str = ""
    # The OpenAPI document is generated from the route table once, lazily, by handlers.openapi.
    openapi_factory: Callable[[], Mapping[str, Any]] | None = None


@dataclass(frozen=True)
class EndpointDoc:
    """What the OpenAPI document says about one handler method."""

    summary: str
    body: type[BaseModel] | None = None
    response: type[BaseModel] | None = None
    status: int = 200
    errors: tuple[int, ...] = ()
    tags: tuple[str, ...] = ()
    # A body that is not JSON (a CSV file, a multipart upload): media type -> its OpenAPI media
    # type object (schema, example), so the document says what to send and fuzzers send it.
    body_media: Mapping[str, Mapping[str, Any]] | None = None
    # `Idempotency-Key`: "required", "optional" (a retry with it replays the first answer), or
    # None when the method does not read it.
    idempotency: Literal["required", "optional"] | None = None
    # The error codes this method answers beyond the common ones: (code, status, meaning).
    codes: tuple[tuple[str, int, str], ...] = ()
    # A one-line Chinese summary, what /docs shows a mini-program developer.
    summary_zh: str | None = None


def csv_media(columns: str, example: str) -> dict[str, dict[str, Any]]:
    """The OpenAPI description of a CSV upload (what `csv_text` reads): UTF-8 text/csv, a header
    row naming `columns`, one record per row."""
    return {
        "text/csv": {
            "schema": {
                "type": "string",
                "description": f"UTF-8 (a byte-order mark is allowed); a header row naming "
                f"{columns}, in any order; then one record per row",
            },
            "example": example,
        }
    }


def endpoint(
    summary: str,
    *,
    body: type[BaseModel] | None = None,
    response: type[BaseModel] | None = None,
    status: int = 200,
    errors: tuple[int, ...] = (),
    tags: tuple[str, ...] = (),
    body_media: Mapping[str, Mapping[str, Any]] | None = None,
    idempotency: Literal["required", "optional"] | None = None,
    codes: tuple[tuple[str, int, str], ...] = (),
    summary_zh: str | None = None,
) -> Callable[[Callable[..., Awaitable[None]]], Callable[..., Awaitable[None]]]:
    """Declare a handler method's contract; the OpenAPI document is built from these. `body`
    is a JSON body's model; `body_media` describes a body in another media type instead."""
    if body is not None and body_media is not None:
        raise ValueError("a body is JSON (`body`) or another media type (`body_media`)")

    def mark(method: Callable[..., Awaitable[None]]) -> Callable[..., Awaitable[None]]:
        method.__endpoint__ = EndpointDoc(  # type: ignore[attr-defined]
            summary,
            body,
            response,
            status,
            errors,
            tags,
            body_media,
            idempotency,
            codes,
            summary_zh,
        )
        return method

    return mark


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


# BSON holds signed 64-bit integers and doubles: a larger number cannot be stored or compared
# (the driver raises while encoding the query), and 1e400 reads as infinity. No field of this
# API means anything beyond either, so such a number is refused with the rest of bad JSON.
_INT64 = range(-(2**63), 2**63)


def _bounded_int(text: str) -> int:
    value = int(text)
    if value not in _INT64:
        raise ValueError("a number is out of range (more than 64 bits)")
    return value


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError("a number is out of range (beyond a double)")
    return value


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    # `{"role": "subject", "role": "guardian"}`: parsers disagree on which one counts (the last
    # here, the first in some proxies and log pipelines), so what was checked or recorded on the
    # way in need not be what is acted on. Such a body is refused, not guessed at.
    result = dict(pairs)
    if len(result) < len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise ValueError(f"the key {json.dumps(key[:64], ensure_ascii=False)} repeats")
            seen.add(key)
    return result


# Query parameter names are plain words. `?status[$ne]=x` is the bracket syntax some frameworks
# (PHP, Express's qs) turn into a nested object, i.e. a query operator; no route here takes one,
# so such a name is refused outright rather than silently ignored.
_QUERY_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")


_BODY_VERBS = ("post", "put", "patch", "delete")


def _refusal_first(method: Callable[..., Any]) -> Callable[..., Awaitable[Any]]:
    """Wrap a handler method so that a refusal deferred by `prepare` is raised before it runs."""

    @functools.wraps(method)
    async def guarded(self: BaseHandler, *args: Any, **kwargs: Any) -> Any:
        if self._deferred_refusal is not None:
            raise self._deferred_refusal
        result = method(self, *args, **kwargs)
        return await result if inspect.isawaitable(result) else result

    guarded.__refusal_first__ = True  # type: ignore[attr-defined]
    return guarded


@tornado.web.stream_request_body
class BaseHandler(tornado.web.RequestHandler):
    """Every route's handler derives from this; it declares `access` for each method it serves.

    Bodies are streamed so that an oversized one is refused (413) on its headers, before it is read.
    """

    # The policy action each method needs: one action for every method, or a method -> action map.
    # A handler that declares none is refused for every caller (deny by default).
    access: ClassVar[str | Mapping[str, str] | None] = None
    # Who reads this handler's errors: "staff" (English) or "mp" (mini-program users, Chinese).
    audience: str = "staff"
    # Per-route override of the body size limit, in bytes.
    max_body_bytes: ClassVar[int | None] = None
    # Which sessions may call: the console's (password and TOTP) or the mini-program's
    # (WeChat). A WeChat session never reaches the staff API, even a staff member's.
    channels: ClassVar[frozenset[str]] = frozenset({"staff"})
    # A public route that acts for nobody in particular (a login opens a new session): a
    # token sent along is not looked up, which would cost a read and change nothing.
    ignores_caller: ClassVar[bool] = False
    # Methods whose service writes the session's "seen" mark in its own ordered batch
    # (`SessionService.seen_write`) instead of the lookup writing it separately.
    seen_in_batch: ClassVar[frozenset[str]] = frozenset()

    identity: Identity = ANONYMOUS
    request_id: str = ""
    client_request_id: str | None = None
    # A refusal decided in `prepare` while a body was on its way, raised once it has arrived.
    _deferred_refusal: Exception | None = None

    # --- injected services, read through typed accessors -------------------------------------

    @property
    def ctx(self) -> AppContext:
        return self.application.settings["anbang"]

    # --- lifecycle ----------------------------------------------------------------------------

    def compute_etag(self) -> str | None:
        # Answers are `no-store`: an ETag would cost a hash of every body for nothing.
        return None

    def set_default_headers(self) -> None:
        # API answers hold personal data: never cached, never sniffed, never framed.
        self.set_header("Content-Type", "application/json; charset=utf-8")
        self.set_header("Cache-Control", "no-store")
        self.set_header("X-Content-Type-Options", "nosniff")
        self.set_header("X-Frame-Options", "DENY")
        self.set_header("Referrer-Policy", "no-referrer")
        # Read without the typed accessor: headers are set as the handler is built, before
        # anything may assume an assembled application (a unit test builds a bare one).
        context = self.application.settings.get("anbang")
        if context is not None and context.production:
            self.set_header("Strict-Transport-Security", HSTS)

    async def prepare(self) -> None:
        # The id audit entries are keyed by is always ours: one a client chose could pass its
        # requests' entries off as another's. A well-formed one of theirs is kept beside it.
        supplied = self.request.headers.get("X-Request-Id", "")
        self.client_request_id = supplied if _REQUEST_ID.match(supplied) else None
        self.request_id = uuid.uuid4().hex
        self.set_header("X-Request-Id", self.request_id)
        self._chunks: list[bytes] = []
        self._body_size = 0
        self._body_too_large = False
        self._counted = True
        self.ctx.in_flight.begin()

        declared = self.content_length()
        if declared is not None and declared > self.body_limit:
            raise RequestError(
                413,
                "body_too_large",
                f"The request body exceeds {self.body_limit} bytes.",
                {"limit": self.body_limit},
            )
        try:
            self.identity = await self.authenticate()
            await self.authorize()
            self.check_query_names()
        except Exception as refusal:
            body_coming = declared or self.request.headers.get("Transfer-Encoding")
            if not body_coming or (self.request.method or "").lower() not in _BODY_VERBS:
                raise
            # Answered once the body has arrived (and been dropped): refused before it, the
            # connection would close on unread bytes, and a proxy in front (nginx) would answer
            # 502 instead of this refusal, and count the process as failing.
            self._deferred_refusal = refusal

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        # Every verb, not only those with a body: a deferred refusal must never let a method run.
        for verb in (name.lower() for name in cls.SUPPORTED_METHODS):
            method = cls.__dict__.get(verb)
            if method is not None and not hasattr(method, "__refusal_first__"):
                setattr(cls, verb, _refusal_first(method))

    def data_received(self, chunk: bytes) -> Awaitable[None] | None:
        # Chunked uploads have no Content-Length: count as they arrive and stop keeping data
        # once over the limit (the method then answers 413). Synchronous here; a subclass that
        # streams the body elsewhere may return an awaitable, as Tornado allows.
        self._body_size += len(chunk)
        if self._deferred_refusal is not None:
            return None
        if self._body_size > self.body_limit:
            self._body_too_large = True
            self._chunks.clear()
        elif not self._body_too_large:
            self._chunks.append(chunk)
        return None

    def on_finish(self) -> None:
        if getattr(self, "_counted", False):
            self._counted = False
            self.ctx.in_flight.end()

    # --- identity and policy --------------------------------------------------------------------

    @property
    def audit_context(self) -> AuditContext:
        return AuditContext(
            self.identity,
            self.request_id,
            self.request.remote_ip,
            client_request_id=self.client_request_id,
        )

    async def authenticate(self) -> Identity:
        """Resolve the caller from `Authorization: Bearer <token>`; anonymous without one."""
        header = self.request.headers.get("Authorization", "")
        if not header or self.ignores_caller:
            return ANONYMOUS
        scheme, _, token = header.partition(" ")
        identity = None
        if scheme.lower() == "bearer" and token.strip():
            identity = await self.ctx.auth.resolve(
                token.strip(), batched_seen=self.request.method in self.seen_in_batch
            )
        if identity is None:
            if self.required_action() == PUBLIC:
                return ANONYMOUS
            raise NotAuthenticated("The token is invalid or has expired.", code="invalid_token")
        return identity

    def required_action(self) -> str | None:
        declared = type(self).access
        if declared is None or isinstance(declared, str):
            return declared
        return declared.get(self.request.method or "")

    async def authorize(self) -> None:
        method = (self.request.method or "").lower()
        implemented = getattr(type(self), method, None)
        if implemented is None or implemented is getattr(tornado.web.RequestHandler, method, None):
            raise tornado.web.HTTPError(405)
        action = self.required_action()
        if action is None:
            log.error(
                "route without policy",
                extra={"fields": {"handler": type(self).__name__, "request_id": self.request_id}},
            )
            raise Forbidden("This route declares no access policy.", code="no_policy")
        if action == PUBLIC:
            return
        if not self.identity.authenticated:
            raise NotAuthenticated()
        if self.identity.channel not in self.channels:
            raise Forbidden(
                "This session cannot call this API.",
                code="wrong_channel",
                message_zh="请在小程序中进行此操作。",
            )
        if self.identity.channel == "mp" and self.identity.role is None and action != SELF:
            # Bound a moment ago through another process? Look again before refusing.
            token = self.request.headers.get("Authorization", "").partition(" ")[2].strip()
            self.identity = await self.ctx.auth.resolve(token, fresh=True) or self.identity
            if self.identity.role is None:
                raise Forbidden(
                    "This WeChat account is not bound yet; ask your worker for a binding code.",
                    code="not_bound",
                    message_zh="您的微信尚未绑定，请向您的工作人员索取绑定码后完成绑定。",
                )
        restriction = self.identity.restricted
        if restriction and action not in RESTRICTION_ALLOWS.get(restriction, frozenset()):
            raise Forbidden(
                "Finish the required step first: " + restriction.replace("_", " ") + ".",
                code=f"{restriction}_required",
            )
        if not self.ctx.policy.allows(self.identity, action):
            await self.ctx.audit.record(
                self.audit_context,
                action,
                resource="route",
                outcome="refused:forbidden",
                details={"path_pattern": type(self).__name__},
            )
            raise Forbidden()

    def check_query_names(self) -> None:
        """400 for a query parameter whose name is not a plain word (`status[$ne]`)."""
        for name in self.request.query_arguments:
            if not _QUERY_NAME.match(name):
                raise RequestError(
                    400,
                    "bad_request",
                    "Query parameter names are plain words.",
                    {"parameter": name[:64]},
                )

    # --- request bodies -------------------------------------------------------------------------

    @property
    def body_limit(self) -> int:
        return self.max_body_bytes or self.ctx.max_body_bytes

    def content_length(self) -> int | None:
        raw = self.request.headers.get("Content-Length")
        if raw is None:
            return None
        try:
            return int(raw)
        except ValueError:
            raise RequestError(400, "bad_request", "Content-Length is not a number.") from None

    def raw_body(self) -> bytes:
        if self._body_too_large:
            raise RequestError(
                413,
                "body_too_large",
                f"The request body exceeds {self.body_limit} bytes.",
                {"limit": self.body_limit},
            )
        return b"".join(self._chunks)

    def csv_text(self) -> str:
        """The body of a CSV upload: declared text/csv (415 otherwise), UTF-8 and readable by
        the csv module (400 otherwise)."""
        media_type = self.request.headers.get("Content-Type", "").split(";", 1)[0].strip()
        if media_type != "text/csv":
            raise RequestError(415, "unsupported_media_type", "Send the file as text/csv.")
        try:
            text = self.raw_body().decode("utf-8")
        except UnicodeDecodeError as exc:
            raise RequestError(
                400, "bad_encoding", "The file is not UTF-8.", {"byte": exc.start}
            ) from None
        # The services read the file with the csv module, which gives up on a field beyond its
        # limit (131,072 characters): that is a file the caller must fix, read once here so the
        # refusal names its line rather than surfacing from a service as a server fault.
        reader = csv.reader(io.StringIO(text, newline=""))
        try:
            for _ in reader:
                pass
        except csv.Error as exc:
            raise RequestError(
                400, "bad_csv", f"The file is not readable CSV: {exc}.", {"line": reader.line_num}
            ) from None
        return text

    def parse(self, model: type[ModelT]) -> ModelT:
        """The body as `model`: 400 when it is not JSON, 415 when it says it is something else,
        422 naming each offending field when it does not fit."""
        raw = self.raw_body()
        if not raw.strip():
            raise RequestError(400, "body_required", "A JSON body is required.")
        content_type = self.request.headers.get("Content-Type", "application/json")
        media_type = content_type.split(";", 1)[0].strip().lower()
        if media_type != "application/json":
            raise RequestError(
                415, "unsupported_media_type", "The request body must be application/json."
            )
        try:
            # The standard parser first (in C, fast): it names where the JSON breaks and refuses
            # NaN and Infinity, which are not JSON, numbers no field can hold and a key given
            # twice; absurd nesting hits its recursion limit.
            json.loads(
                raw,
                parse_constant=_reject_constant,
                parse_int=_bounded_int,
                parse_float=_finite_float,
                object_pairs_hook=_unique_keys,
            )
        except UnicodeDecodeError as exc:
            raise RequestError(
                400, "invalid_json", "The request body is not valid UTF-8.", {"position": exc.start}
            ) from None
        except json.JSONDecodeError as exc:
            raise RequestError(
                400,
                "invalid_json",
                "The request body is not valid JSON.",
                {"line": exc.lineno, "column": exc.colno},
            ) from None
        except (ValueError, RecursionError) as exc:
            reason = "nested too deeply" if isinstance(exc, RecursionError) else str(exc)
            raise RequestError(
                400, "invalid_json", "The request body is not valid JSON.", {"reason": reason}
            ) from None
        try:
            # Strict: a number sent as a string is a wrong type, not something to guess at.
            return model.model_validate_json(raw, strict=True)
        except ValidationError as exc:
            errors = exc.errors(include_url=False)
            malformed = [e for e in errors if e.get("type") in ("json_invalid", "json_type")]
            if malformed:
                raise RequestError(
                    400,
                    "invalid_json",
                    "The request body is not valid JSON.",
                    {"reason": str(malformed[0].get("ctx", {}).get("error", "malformed"))},
                ) from None
            if any(
                e.get("type") in ("model_type", "dict_type") and not e.get("loc") for e in errors
            ):
                raise RequestError(
                    422, "validation_failed", "The request body must be a JSON object."
                ) from None
            # A discriminated union (RootModel) puts the chosen tag first in each error's
            # path: the caller named that with `type` and wants the field itself.
            tagged = issubclass(model, RootModel)
            raise RequestError(
                422,
                "validation_failed",
                "The request body is not valid.",
                [self._field_error(error, tagged, model) for error in errors],
            ) from None

    def _field_error(
        self, error: Mapping[str, Any], tagged: bool = False, model: type[BaseModel] | None = None
    ) -> dict[str, Any]:
        loc = tuple(error.get("loc", ()))
        kind = str(error.get("type", "invalid"))
        if tagged:
            loc = ("type",) if kind.startswith("union_tag") else loc[1:]
        path = ".".join(str(part) for part in loc) or "(body)"
        if self.audience == "mp":
            message = validation_message(kind, error.get("ctx"))
            # A field that declares a Chinese title is named by it: a person reads which
            # question of a form was wrong, not its path.
            title = field_title(model, loc) if model is not None else None
            if title:
                message = f"{title}：{message}"
        else:
            message = str(error.get("msg", "invalid"))
        return {"field": path, "type": kind, "message": message}

    # --- responses --------------------------------------------------------------------------

    def respond(self, payload: BaseModel | Mapping[str, Any] | None, status: int = 200) -> None:
        """Write `payload` as JSON with `status` and finish the request."""
        self.set_status(status)
        if payload is None:
            self.finish()
            return
        if isinstance(payload, BaseModel):
            self.finish(payload.model_dump_json(by_alias=True))
        else:
            self.finish(json.dumps(payload, ensure_ascii=False, default=str))

    # --- errors -------------------------------------------------------------------------------

    def _describe(self, exc: BaseException | None, status: int) -> tuple[int, str, str, Any, dict]:
        headers: dict[str, str] = {}
        if exc is not None and (outage := as_unavailable(exc)) is not None:
            exc = outage
        if isinstance(exc, RequestError):
            message = message_for(exc.code, "zh") if self.audience == "mp" else exc.message
            return exc.status, exc.code, message, exc.details, headers
        if isinstance(exc, DomainError):
            mapped = next(
                (code for cls, code in STATUS_FOR_ERROR.items() if isinstance(exc, cls)), 400
            )
            if isinstance(exc, RateLimited | Unavailable):
                headers["Retry-After"] = str(exc.retry_after)
            message = exc.message
            if self.audience == "mp":
                message = getattr(exc, "message_zh", None) or message_for(exc.code, "zh")
            return mapped, exc.code, message, exc.details, headers
        if isinstance(exc, tornado.web.HTTPError):
            status = exc.status_code
        code = {
            400: "bad_request",
            404: "not_found",
            405: "method_not_allowed",
            413: "body_too_large",
        }.get(status, "internal_error" if status >= 500 else "error")
        return status, code, message_for(code, "zh" if self.audience == "mp" else "en"), None, {}

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        exc_info = kwargs.get("exc_info")
        exc = exc_info[1] if exc_info else None
        status, code, message, details, headers = self._describe(exc, status_code)
        if status == 503 and "Retry-After" not in headers:
            headers["Retry-After"] = "5"
        self.clear()
        self.set_status(status)
        for name, value in headers.items():
            self.set_header(name, value)
        if self.request_id:
            self.set_header("X-Request-Id", self.request_id)
        body: dict[str, Any] = {
            "error": {
                "code": code,
                "message": message,
                "details": details,
                "request_id": self.request_id or None,
            }
        }
        self.finish(json.dumps(body, ensure_ascii=False, default=str))

    def _handle_request_exception(self, e: BaseException) -> None:
        # Expected refusals and database outages (pymongo errors from deep inside a service) are
        # answered through write_error, which picks the status; they are not server faults.
        outage = as_unavailable(e)
        if outage is None and not isinstance(e, DomainError | RequestError):
            super()._handle_request_exception(e)
            return
        if outage is not None:
            log.warning(
                "database unavailable",
                extra={"fields": {"request_id": self.request_id, "exception": type(e).__name__}},
            )
        if not self._finished:
            self.send_error(503 if outage else 400, exc_info=(type(e), e, e.__traceback__))

    def log_exception(self, typ: Any, value: Any, tb: Any) -> None:
        if isinstance(value, tornado.web.HTTPError) and value.status_code < 500:
            return
        # Never log an exception's message: it may quote a document (a duplicate key, a value).
        # Frames only (file, line, function): no source text and no local values.
        frames = " <- ".join(
            f"{frame.filename}:{frame.lineno} in {frame.name}"
            for frame in reversed(traceback.extract_tb(tb))
        )
        log.error(
            "unhandled exception",
            extra={
                "fields": {
                    "request_id": self.request_id,
                    "exception": getattr(typ, "__name__", str(typ)),
                    "path": self.request.path,
                    "stack": frames,
                }
            },
        )


class NotFoundHandler(BaseHandler):
    """Unknown routes answer 404 in the error envelope, whatever the method."""

    access = PUBLIC

    async def prepare(self) -> None:
        # A path under the mini-program's prefix that matches no route (`/mp/v1/a/../b`) is
        # still read by a mini-program user: the refusal is in Chinese, like every other there.
        if self.request.path.startswith("/mp/"):
            self.audience = "mp"
        await super().prepare()

    async def get(self, *_args: str) -> None:
        raise tornado.web.HTTPError(404)

    post = put = patch = delete = head = options = get


def log_request(handler: tornado.web.RequestHandler) -> None:
    """Tornado's log_function: one structured line per request; never a body, token or query."""
    request = handler.request
    status = handler.get_status()
    fields = {
        "request_id": getattr(handler, "request_id", None) or None,
        "client_request_id": getattr(handler, "client_request_id", None),
        "method": request.method,
        "path": request.path,
        "status": status,
        "latency_ms": round(request.request_time() * 1000, 2),
        "remote_ip": request.remote_ip,
    }
    level = logging.INFO if status < 500 else logging.ERROR
    access_log.log(level, "request", extra={"fields": fields})

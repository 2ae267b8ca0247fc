"""The mini-program's base handler: WeChat sessions only, errors in Chinese, and every write
idempotent under the client's `Idempotency-Key`."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, ClassVar

from pydantic import BaseModel

from handlers.base import BaseHandler
from models.idempotency import fingerprint

Produced = tuple[BaseModel | Mapping[str, Any], int]


class MpHandler(BaseHandler):
    """Every `/mp/v1` handler derives from this."""

    audience = "mp"
    channels: ClassVar[frozenset[str]] = frozenset({"mp"})

    def _describe(self, exc: BaseException | None, status: int) -> tuple[int, str, str, Any, dict]:
        # One shape for the mini-program's developer, whatever the layer that refused.
        status, code, message, details, headers = super()._describe(exc, status)
        return status, code, message, field_problems(status, message, details), headers

    def idempotency_key(self) -> str:
        """The `Idempotency-Key` header as sent (the service checks its form)."""
        return self.request.headers.get("Idempotency-Key", "").strip()

    _capturing = False
    _captured: Produced | None = None

    def respond(self, payload: BaseModel | Mapping[str, Any] | None, status: int = 200) -> None:
        if self._capturing:
            # A staff handler's method run for the mini-program: its answer goes through
            # `respond_once`, which keeps it for retries.
            self._captured = (payload or {}, status)
            return
        super().respond(payload, status)

    async def respond_captured(self, method: Callable[..., Awaitable[None]], *args: str) -> None:
        """Run a staff handler's method (the same parsing, policy and service call) and
        answer it idempotently."""

        async def produce() -> Produced:
            self._capturing = True
            try:
                await method(*args)
            finally:
                self._capturing = False
            assert self._captured is not None
            return self._captured

        await self.respond_once(produce)

    async def respond_once(
        self, produce: Callable[[], Awaitable[Produced]], content: bytes | None = None
    ) -> None:
        """Answer a write; with an `Idempotency-Key`, a retry gets the first answer back and
        another request under the same key a 409. `content` replaces the body as what makes
        two requests the same (a multipart body differs in its boundary on every send)."""
        method = getattr(type(self), (self.request.method or "").lower(), None)
        if getattr(getattr(method, "__endpoint__", None), "idempotency", None) is None:
            # /openapi.json declares the header from `endpoint(idempotency=...)`: a write that
            # honours the key without declaring it would leave the developer guessing.
            raise RuntimeError(f"{type(self).__name__} must declare idempotency on its endpoint")
        key = self.idempotency_key()
        if not key:
            payload, status = await produce()
            self.respond(payload, status)
            return
        owner = str(self.identity.wechat_user_id or self.identity.user_id)
        request_print = fingerprint(
            self.request.method or "",
            self.request.path,
            self.raw_body() if content is None else content,
        )
        idempotency = self.ctx.idempotency
        stored = await idempotency.begin(owner, key, request_print)
        if stored is not None:
            self.set_status(stored.status)
            self.finish(stored.body)
            return
        try:
            payload, status = await produce()
        except BaseException:
            # Refused or failed: the key is free again for a corrected or later attempt.
            with contextlib.suppress(Exception):
                await idempotency.release(owner, key)
            raise
        if isinstance(payload, BaseModel):
            body = payload.model_dump_json(by_alias=True).encode("utf-8")
        else:
            body = json.dumps(payload, ensure_ascii=False, default=str).encode("utf-8")
        # The stored answer is sealed under the key of the person it concerns: the caller's own
        # file, or the one a worker's answer names.
        about = self.identity.subject_id or _subject_of(payload)
        await idempotency.finish(owner, key, status, body, subject_id=about)
        self.set_status(status)
        self.finish(body)


# Refusals of the request itself (its syntax, size or media type, or a value in it): a problem
# without a named field is the body's.
_INPUT_STATUSES = frozenset({400, 413, 415, 422})


def field_problems(status: int, message: str, details: Any) -> list[dict[str, str]]:
    """`details` as a list of `{field, message}`: the layers below name fields in several ways
    (a list of `{field}` or bare names, one `{field}`, `{parameter}`, a dict about the body or
    about the record's state); a problem that names no message takes the error's own. Context
    about the record's state (its status, a line number) is for staff and is left out: the
    error's code and message say what the person needs."""
    items = details if isinstance(details, list) else [] if details is None else [details]
    problems: list[dict[str, str]] = []
    for item in items:
        text = message
        if isinstance(item, str):
            name: Any = item
        elif isinstance(item, Mapping):
            name = item.get("field", item.get("parameter"))
            if isinstance(item.get("message"), str) and item["message"]:
                text = item["message"]
        else:
            continue
        if name is None:
            continue
        problems.append({"field": str(name), "message": text})
    if not problems and status in _INPUT_STATUSES:
        problems.append({"field": "(body)", "message": message})
    return problems


def _subject_of(payload: BaseModel | Mapping[str, Any]) -> str | None:
    subject_id = (
        payload.get("subject_id")
        if isinstance(payload, Mapping)
        else getattr(payload, "subject_id", None)
    )
    return subject_id if isinstance(subject_id, str) else None

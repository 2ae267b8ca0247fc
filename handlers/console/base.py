"""The console's base handler: a server-rendered client of the staff API. Every page reads and
writes through `/api/v1`, dispatched inside this process with the officer's token and the
officer's own address, so the console can do nothing the API would refuse (scope, policy,
masking, login limits and audit all apply, and audit names the officer's address)."""

from __future__ import annotations

import asyncio
import json
import logging
import re
import urllib.parse
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import tornado.web
from tornado.concurrent import Future
from tornado.httputil import HTTPHeaders

from handlers.base import HSTS, AppContext
from handlers.console.inprocess import LocalExchange, Origin, dispatch
from handlers.messages import validation_message
from models.identity import Identity

log = logging.getLogger("anbang.console")

SESSION_COOKIE = "anbang_console"
# A report of a whole county is the slowest call a page makes.
API_TIMEOUT_S = 120.0
# Inline script and style are refused: scripts and styles come from the console's own files.
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
# `next` after login: a console path only (never another site, never a query with data).
_NEXT = re.compile(r"^/console(/[A-Za-z0-9_\-/]*)?$")
_REQUEST_ID = re.compile(r"^[A-Za-z0-9-]{8,64}$")

# What an officer reads when the API refuses (by error code); anything else gets the generic.
ERRORS_ZH = {
    "invalid_credentials": "用户名或密码错误，或动态验证码不正确。",
    "wrong_code": "动态验证码不正确，请重新输入。",
    "locked": "账号已锁定，请稍后再试或联系管理员。",
    "too_many_attempts": "尝试次数过多，请稍后再试。",
    "forbidden": "您没有权限执行此操作。",
    "wrong_level": "此操作应由其他层级办理。",
    "not_your_step": "当前不是您这一级审批。",
    "not_found": "未找到该记录，或不在您的管辖范围内。",
    "month_not_ended": "该月份尚未结束，不能生成报表。",
    "units_unsigned": "下级单位的报表尚未全部签署。",
    "changed_since_signed": "签署后数据已变化，请确认后重新签署。",
    "invalid_transition": "该记录的状态已变化，请刷新后重试。",
    "unavailable": "系统暂时不可用，请稍后重试。",
    "password_change_required": "请先修改密码。",
    "totp_enrolment_required": "请先绑定动态验证码。",
}
GENERIC_ZH = "操作未成功，请检查后重试。"
FIELD_ZH = "此项填写不正确。"


def path_id(name: str) -> str:
    """A route's id argument: letters, digits, `_`, `:` and `-` only (ids go into API paths:
    no dots, no slashes)."""
    return f"(?P<{name}>[A-Za-z0-9_:-]{{1,100}})"


# What each sanction is called on the console's pages.
SANCTION_ZH = {
    "praise": "表扬",
    "admonish": "训诫",
    "warn": "警告",
    "public_security_penalty": "提请治安管理处罚",
    "revoke_request": "提请撤销缓刑/假释",
    "imprison_request": "提请收监执行",
}


@dataclass
class ApiAnswer:
    status: int
    body: Any
    headers: Any
    raw: bytes

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300

    @property
    def error_code(self) -> str | None:
        if isinstance(self.body, dict) and isinstance(self.body.get("error"), dict):
            return str(self.body["error"].get("code"))
        return None

    def message_zh(self) -> str:
        by_status = {403: "forbidden", 404: "not_found", 503: "unavailable"}
        code = self.error_code or by_status.get(self.status, "")
        return ERRORS_ZH.get(code, GENERIC_ZH)

    def field_errors(self) -> dict[str, str]:
        """The API's 422 details as Chinese messages by field name (`a.b` → `a`)."""
        details = (self.body or {}).get("error", {}).get("details") if self.ok is False else None
        errors: dict[str, str] = {}
        if isinstance(details, list):
            for item in details:
                if not isinstance(item, dict) or "field" not in item:
                    continue
                field = str(item["field"]).split(".", 1)[0]
                kind = item.get("type")
                errors[field] = validation_message(str(kind), None) if kind else FIELD_ZH
        return errors


class SessionExpired(Exception):
    """The API no longer accepts the console's token: back to the login page."""


class ConsoleHandler(tornado.web.RequestHandler):
    """HTML pages in Chinese; forms carry the XSRF token; every answer is `no-store`."""

    @property
    def ctx(self) -> AppContext:
        return self.application.settings["anbang"]

    def set_default_headers(self) -> None:
        self.set_header("Content-Type", "text/html; charset=utf-8")
        self.set_header("Cache-Control", "no-store")
        self.set_header("Content-Security-Policy", CSP)
        self.set_header("X-Content-Type-Options", "nosniff")
        self.set_header("X-Frame-Options", "DENY")
        self.set_header("Referrer-Policy", "no-referrer")
        if self.ctx.production:
            self.set_header("Strict-Transport-Security", HSTS)

    def set_cookie(self, name: str, value: str | bytes, *args: Any, **kwargs: Any) -> None:
        # In production no cookie ever travels over plain HTTP: the session's, Tornado's
        # `_xsrf` and the expired ones that clear them alike.
        if self.ctx.production:
            kwargs["secure"] = True
        super().set_cookie(name, value, *args, **kwargs)

    def compute_etag(self) -> str | None:
        return None

    async def prepare(self) -> None:
        supplied = self.request.headers.get("X-Request-Id", "")
        self.request_id = supplied if _REQUEST_ID.match(supplied) else uuid.uuid4().hex
        self.set_header("X-Request-Id", self.request_id)
        if self.request.method == "POST":
            # Tornado's own check (the `_xsrf` field against its cookie), on every form.
            self.check_xsrf_cookie()

    # --- the session cookie ---------------------------------------------------------------------

    @property
    def token(self) -> str | None:
        return self.get_cookie(SESSION_COOKIE) or None

    def start_session(self, token: str) -> None:
        self.set_cookie(
            SESSION_COOKIE,
            token,
            path="/console",
            httponly=True,
            secure=self.ctx.production,
            samesite="Strict",
        )

    def end_session(self) -> None:
        self.clear_cookie(SESSION_COOKIE, path="/console")

    def login_url_for_here(self) -> str:
        return "/console/login?" + urllib.parse.urlencode({"next": self.request.path})

    @staticmethod
    def safe_next(raw: str | None) -> str:
        return raw if raw and _NEXT.match(raw) else "/console/"

    # --- the staff API ------------------------------------------------------------------------

    async def call_api(
        self,
        method: str,
        path: str,
        headers: dict[str, str],
        body: bytes = b"",
        *,
        relay: Callable[[LocalExchange, bytes], Future[None]] | None = None,
        allowed_s: float = API_TIMEOUT_S,
    ) -> LocalExchange:
        """Run one staff API request in this process for the officer at this page's address.

        The address is the one this request was served for (the proxy's `X-Real-Ip` only when
        `ANBANG_BEHIND_PROXY` trusts it): login limits and audit see the officer, not the console,
        and no header the browser sends can name another address."""
        all_headers = HTTPHeaders(headers)
        all_headers["Host"] = self.request.host
        all_headers["X-Request-Id"] = self.request_id
        if body:
            all_headers["Content-Length"] = str(len(body))
        exchange = LocalExchange(Origin(self.request.remote_ip, self.request.protocol), relay)
        try:
            async with asyncio.timeout(allowed_s):
                await dispatch(self.application, exchange, method, path, all_headers, body)
        except TimeoutError:
            raise tornado.web.HTTPError(503) from None
        return exchange

    async def api(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        anonymous: bool = False,
    ) -> ApiAnswer:
        headers = {"Accept": "application/json"}
        if not anonymous:
            if not self.token:
                raise SessionExpired()
            headers["Authorization"] = f"Bearer {self.token}"
        payload = b""
        if body is not None:
            payload = json.dumps(body, ensure_ascii=False).encode("utf-8")
            headers["Content-Type"] = "application/json"
        exchange = await self.call_api(method, path, headers, payload)
        raw = bytes(exchange.body)
        parsed: Any = None
        if raw and exchange.headers.get("Content-Type", "").startswith("application/json"):
            parsed = json.loads(raw)
        answer = ApiAnswer(exchange.status, parsed, exchange.headers, raw)
        if answer.status == 401 and not anonymous:
            raise SessionExpired()
        return answer

    async def api_ok(self, method: str, path: str, body: Any = None) -> Any:
        """The answer's JSON when it succeeded; otherwise the refusal as the page's error."""
        answer = await self.api(method, path, body)
        if not answer.ok:
            raise ApiRefused(answer)
        return answer.body

    # --- rendering and errors -----------------------------------------------------------------

    def get_template_namespace(self) -> dict[str, Any]:
        namespace = super().get_template_namespace()
        namespace.update(
            me=getattr(self, "me", None),
            notice=None,
            path=self.request.path,
            may=self.may,
        )
        return namespace

    def may(self, action: str) -> bool:
        """Whether the signed-in officer's role may perform `action` (the API's own policy):
        the menu and the buttons show only what would not be refused."""
        me = getattr(self, "me", None) or {}
        identity = Identity(user_id=me.get("id"), role=me.get("role"), org_id=me.get("org_id"))
        return bool(me.get("role")) and self.ctx.policy.allows(identity, action)

    def _handle_request_exception(self, e: BaseException) -> None:
        if isinstance(e, SessionExpired):
            self.end_session()
            if self.request.method == "GET":
                self.redirect(self.login_url_for_here())
            else:
                self.redirect("/console/login")
            return
        if isinstance(e, ApiRefused):
            self.clear()
            self.set_status(e.answer.status if e.answer.status >= 400 else 400)
            self.render("error.html", message=e.answer.message_zh(), status=e.answer.status)
            return
        super()._handle_request_exception(e)

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        messages = {
            403: "请求未通过安全校验，请刷新页面后重试。",
            404: "页面不存在。",
            503: "系统暂时不可用，请稍后重试。",
        }
        message = messages.get(status_code, "系统出错，请稍后重试。")
        self.clear()
        self.set_status(status_code)
        self.render("error.html", message=message, status=status_code)

    def log_exception(self, typ: Any, value: Any, tb: Any) -> None:
        if isinstance(value, tornado.web.HTTPError) and value.status_code < 500:
            return
        log.error(
            "console page failed",
            extra={
                "fields": {
                    "request_id": getattr(self, "request_id", None),
                    "exception": getattr(typ, "__name__", str(typ)),
                    "path": self.request.path,
                }
            },
        )


class ApiRefused(Exception):
    def __init__(self, answer: ApiAnswer):
        super().__init__(answer.error_code)
        self.answer = answer


class SignedInHandler(ConsoleHandler):
    """Pages for a signed-in officer: who they are is known before the page renders."""

    async def prepare(self) -> None:
        await super().prepare()
        if not self.token:
            raise SessionExpired()
        me = await self.api("GET", "/api/v1/me")
        if me.status == 403 and me.error_code in ("password_change_required",):
            self.redirect("/console/password")
            return
        if me.status == 403 and me.error_code == "totp_enrolment_required":
            self.redirect("/console/totp")
            return
        if not me.ok:
            raise ApiRefused(me)
        self.me = me.body

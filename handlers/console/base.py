"""The console's base handler: a server-rendered client of the staff API. Every page reads and
writes through `/api/v1` on this process's own socket with the officer's token, so the console
can do nothing the API would refuse (scope, policy, masking and audit all apply)."""

from __future__ import annotations

import json
import logging
import re
import socket
import urllib.parse
import uuid
from dataclasses import dataclass
from typing import Any

import tornado.web
from tornado.httpclient import AsyncHTTPClient, HTTPResponse

from handlers.base import AppContext
from handlers.messages import validation_message

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
    "invalid_credentials": "用户名或密码错误。",
    "totp_required": "请输入动态验证码。",
    "invalid_totp": "动态验证码错误或已使用。",
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
        return self.application.settings["anbang"]  # type: ignore[no-any-return]

    def set_default_headers(self) -> None:
        self.set_header("Content-Type", "text/html; charset=utf-8")
        self.set_header("Cache-Control", "no-store")
        self.set_header("Content-Security-Policy", CSP)
        self.set_header("X-Content-Type-Options", "nosniff")
        self.set_header("X-Frame-Options", "DENY")
        self.set_header("Referrer-Policy", "no-referrer")

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

    def _api_base(self) -> str:
        """This process's own socket: the console and the API it calls are one process."""
        stream = getattr(self.request.connection, "stream", None)
        address = stream.socket.getsockname() if stream and stream.socket else ("127.0.0.1", 0)
        host, port = address[0], address[1]
        if stream and stream.socket and stream.socket.family == socket.AF_INET6:
            host = "::1" if host in ("::", "") else host
            return f"http://[{host}]:{port}"
        return f"http://{'127.0.0.1' if host in ('0.0.0.0', '') else host}:{port}"  # noqa: S104

    async def api(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        anonymous: bool = False,
    ) -> ApiAnswer:
        headers = {"X-Request-Id": self.request_id, "Accept": "application/json"}
        if not anonymous:
            if not self.token:
                raise SessionExpired()
            headers["Authorization"] = f"Bearer {self.token}"
        payload = None
        if body is not None:
            payload = json.dumps(body, ensure_ascii=False)
            headers["Content-Type"] = "application/json"
        elif method in ("POST", "PUT", "PATCH"):
            payload = ""
        response: HTTPResponse = await AsyncHTTPClient().fetch(
            self._api_base() + path,
            method=method,
            body=payload,
            headers=headers,
            raise_error=False,
            request_timeout=API_TIMEOUT_S,
        )
        raw = response.body or b""
        parsed: Any = None
        if raw and response.headers.get("Content-Type", "").startswith("application/json"):
            parsed = json.loads(raw)
        answer = ApiAnswer(response.code, parsed, response.headers, raw)
        if answer.status == 401 and not anonymous:
            raise SessionExpired()
        if answer.status == 599:
            raise tornado.web.HTTPError(503)
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
        )
        return namespace

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

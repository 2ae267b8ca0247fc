"""A local stand-in for the WeChat API, for development and tests only; never run in production.

It answers every endpoint Anbang calls with WeChat's own request and response shapes and error
codes, and adds a few control endpoints under `/standin/` (not WeChat's) so tests and developers
can inspect what was sent and make WeChat misbehave on purpose.

Development codes:
- login (`wx.login`): `dev:<label>` always yields the same openid for `<label>` and may be used
  again and again, so a developer's test account keeps logging in; `dev:<label>#<nonce>` yields the
  same openid but, like a real code, works once (40163 on reuse).
- phone number (`getPhoneNumber`): `dev-phone:<digits>`, reusable; `dev-phone:<digits>#<nonce>`
  works once.
- content check (msgSecCheck): text containing `StandinState.risky_marker` is "risky".

The stand-in does not model one-time subscriptions being used up: an accepted (openid, template)
pair stays accepted until `refuse_all()`.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import logging
import re
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import tornado.web

log = logging.getLogger("anbang.wechat_standin")

# The WeChat endpoints the stand-in imitates.
CODE2SESSION = "/sns/jscode2session"
STABLE_TOKEN = "/cgi-bin/stable_token"  # noqa: S105 - a path, not a credential
SUBSCRIBE_SEND = "/cgi-bin/message/subscribe/send"
PHONE_NUMBER = "/wxa/business/getuserphonenumber"
MSG_SEC_CHECK = "/wxa/msg_sec_check"
WECHAT_PATHS = (CODE2SESSION, STABLE_TOKEN, SUBSCRIBE_SEND, PHONE_NUMBER, MSG_SEC_CHECK)

# WeChat's error codes for the cases the stand-in imitates, with WeChat's own messages.
SYSTEM_BUSY = -1
INVALID_TOKEN = 40001
INVALID_GRANT_TYPE = 40002
INVALID_OPENID = 40003
INVALID_APPID = 40013
INVALID_CODE = 40029
INVALID_TEMPLATE = 40037
INVALID_SECRET = 40125
CODE_USED = 40163
CODE_BLOCKED = 40226
TOKEN_MISSING = 41001
EXPIRED_TOKEN = 42001
USER_REFUSED = 43101
DAILY_QUOTA = 45009
MINUTE_QUOTA = 45011
RESPONSE_QUOTA = 45047
DATA_FORMAT = 47001
ARGUMENT_INVALID = 47003
RISKY_CONTENT_V1 = 87014
ERRMSG = {
    SYSTEM_BUSY: "system error",
    INVALID_TOKEN: "invalid credential, access_token is invalid or not latest",
    INVALID_GRANT_TYPE: "invalid grant_type",
    INVALID_OPENID: "invalid openid",
    INVALID_APPID: "invalid appid",
    INVALID_CODE: "invalid code",
    INVALID_TEMPLATE: "invalid template_id",
    INVALID_SECRET: "invalid appsecret",
    CODE_USED: "code been used",
    CODE_BLOCKED: "code blocked",
    TOKEN_MISSING: "access_token missing",
    EXPIRED_TOKEN: "access_token expired",
    USER_REFUSED: "user refuse to accept the msg",
    DAILY_QUOTA: "reach max api daily quota limit",
    MINUTE_QUOTA: "api minute-quota reach limit  mustslower  retry next minute",
    RESPONSE_QUOTA: "out of response count limit",
    DATA_FORMAT: "data format error",
    ARGUMENT_INVALID: "argument invalid!",
    RISKY_CONTENT_V1: "risky content",
}

TOKEN_LIFETIME = 7200
# stable_token hands out a new token (non-forced) only in the last five minutes of the old one's
# life, as WeChat's does; the old one stays valid until it expires.
TOKEN_RENEWAL_WINDOW = 300
PHONE_DIGITS = re.compile(r"\d{5,15}")


@dataclass
class StandinState:
    """Everything the stand-in remembers; tests change it directly or through `/standin/`."""

    appid: str = "wx-standin-appid"
    secret: str = "standin-secret"  # noqa: S105 - a fixed development value, not a credential
    # The stand-in's clock (seconds since the epoch); tests may share theirs with it.
    now: Callable[[], float] = time.time
    # Every token ever issued, with when it expires; a token absent from here is unknown (40001).
    tokens: dict[str, float] = field(default_factory=dict, repr=False)
    current_token: str | None = field(default=None, repr=False)
    sent_messages: list[dict[str, Any]] = field(default_factory=list, repr=False)
    # Subscribe-message consent: every (openid, template_id) pair is accepted while accept_all.
    accept_all: bool = True
    acceptances: set[tuple[str, str]] = field(default_factory=set)
    risky_marker: str = "违禁词"
    used_codes: set[str] = field(default_factory=set, repr=False)
    # Programmed trouble: the next failures of a path, and a delay before each answer.
    failures: dict[str, list[int]] = field(default_factory=dict)
    delays: dict[str, float] = field(default_factory=dict)
    # Every WeChat endpoint call, as (method, path): tests prove nothing went anywhere else.
    calls: list[tuple[str, str]] = field(default_factory=list, repr=False)

    def reset(self) -> None:
        """Forget tokens, messages, consents, used codes, programmed failures and delays."""
        self.tokens.clear()
        self.current_token = None
        self.sent_messages.clear()
        self.accept_all = True
        self.acceptances.clear()
        self.risky_marker = StandinState.risky_marker
        self.used_codes.clear()
        self.failures.clear()
        self.delays.clear()
        self.calls.clear()

    # --- programmed behaviour --------------------------------------------------------------

    def fail_next(self, path: str, errcode: int, times: int = 1) -> None:
        """The next `times` calls of `path` answer `errcode` (and do nothing else)."""
        _check_path(path)
        if times < 1:
            raise ValueError("times must be at least 1")
        self.failures.setdefault(path, []).extend([errcode] * times)

    def slow_down(self, path: str, seconds: float) -> None:
        """Every call of `path` waits `seconds` before answering (0 to stop)."""
        _check_path(path)
        if seconds < 0:
            raise ValueError("seconds must not be negative")
        self.delays[path] = seconds

    def expire_tokens(self) -> int:
        """Every issued token expires now (42001 from then on); the next stable_token call
        issues a new one. Returns how many tokens were still valid."""
        now = self.now()
        alive = [token for token, expires in self.tokens.items() if expires > now]
        for token in alive:
            self.tokens[token] = now
        self.current_token = None
        return len(alive)

    def accept(self, openid: str, template_id: str) -> None:
        self.acceptances.add((openid, template_id))

    def refuse_all(self) -> None:
        """From now on only pairs accepted after this call may be sent (43101 otherwise)."""
        self.accept_all = False
        self.acceptances.clear()

    def accepts(self, openid: str, template_id: str) -> bool:
        return self.accept_all or (openid, template_id) in self.acceptances

    def messages_to(self, openid: str) -> list[dict[str, Any]]:
        return [m for m in self.sent_messages if m.get("touser") == openid]

    def calls_to(self, path: str) -> int:
        return sum(1 for _, called in self.calls if called == path)

    # --- what the endpoints use ------------------------------------------------------------

    def take_failure(self, path: str) -> int | None:
        pending = self.failures.get(path)
        if not pending:
            return None
        errcode = pending.pop(0)
        if not pending:
            del self.failures[path]
        return errcode

    def stable_token(self, force_refresh: bool) -> tuple[str, int]:
        """The token and its remaining lifetime, as stable_token answers them."""
        now = self.now()
        current = self.current_token
        if force_refresh and current is not None:
            # A forced refresh invalidates the previous token at once.
            self.tokens.pop(current, None)
            current = None
        if current is not None and self.tokens[current] - now > TOKEN_RENEWAL_WINDOW:
            return current, int(self.tokens[current] - now)
        token = secrets.token_urlsafe(48)
        self.tokens[token] = now + TOKEN_LIFETIME
        self.current_token = token
        return token, TOKEN_LIFETIME

    def token_error(self, token: str) -> int | None:
        """None for a valid access token, else WeChat's error code for it."""
        if not token:
            return TOKEN_MISSING
        expires = self.tokens.get(token)
        if expires is None:
            return INVALID_TOKEN
        if expires <= self.now():
            return EXPIRED_TOKEN
        return None

    def redeem(self, code: str, prefix: str) -> str | int:
        """The label a development code stands for, or the error code refusing it. A code with a
        `#nonce` works once, as every real code does; a plain one works again and again."""
        if not code.startswith(prefix):
            return INVALID_CODE
        label, nonce_sign, _ = code.removeprefix(prefix).partition("#")
        if not label:
            return INVALID_CODE
        if nonce_sign:
            if code in self.used_codes:
                return CODE_USED
            self.used_codes.add(code)
        return label


def _check_path(path: str) -> None:
    if path not in WECHAT_PATHS:
        raise ValueError(f"the stand-in has no endpoint {path}; it has {', '.join(WECHAT_PATHS)}")


def openid_for(label: str) -> str:
    return "o" + hashlib.sha256(label.encode()).hexdigest()[:27]


def error(errcode: int) -> dict[str, Any]:
    """An error answer as WeChat writes it, with a request id like WeChat's."""
    rid = "-".join(secrets.token_hex(4) for _ in range(3))
    return {"errcode": errcode, "errmsg": f"{ERRMSG.get(errcode, 'error')}, rid: {rid}"}


class StandinHandler(tornado.web.RequestHandler):
    @property
    def state(self) -> StandinState:
        return self.application.settings["state"]

    def reply(self, payload: dict[str, Any], status: int = 200) -> None:
        self.set_status(status)
        self.set_header("Content-Type", "application/json; charset=utf-8")
        self.finish(json.dumps(payload, ensure_ascii=False))

    def json_body(self) -> dict[str, Any] | None:
        try:
            body = json.loads(self.request.body or b"{}")
        except ValueError:
            return None
        return body if isinstance(body, dict) else None


class WeChatEndpoint(StandinHandler):
    """One of WeChat's endpoints: recorded, then delayed or failed when a test asked for it."""

    async def prepare(self) -> None:
        path = self.request.path
        self.state.calls.append((self.request.method or "", path))
        delay = self.state.delays.get(path, 0.0)
        if delay:
            await asyncio.sleep(delay)
        errcode = self.state.take_failure(path)
        if errcode is not None:
            self.reply(error(errcode))

    def check_token(self) -> bool:
        """Answers WeChat's error and returns False unless the access token is valid."""
        errcode = self.state.token_error(self.get_query_argument("access_token", ""))
        if errcode is not None:
            self.reply(error(errcode))
            return False
        return True


class Code2SessionHandler(WeChatEndpoint):
    def get(self) -> None:
        query = self.get_query_argument
        if query("appid", "") != self.state.appid:
            self.reply(error(INVALID_APPID))
            return
        if query("secret", "") != self.state.secret:
            self.reply(error(INVALID_SECRET))
            return
        if query("grant_type", "authorization_code") != "authorization_code":
            self.reply(error(INVALID_GRANT_TYPE))
            return
        label = self.state.redeem(query("js_code", ""), "dev:")
        if isinstance(label, int):
            self.reply(error(label))
            return
        # WeChat's session_key: 16 random bytes in base64, new at every login.
        session_key = base64.b64encode(secrets.token_bytes(16)).decode()
        self.reply({"openid": openid_for(label), "session_key": session_key, "errcode": 0})


class StableTokenHandler(WeChatEndpoint):
    def post(self) -> None:
        body = self.json_body()
        if body is None:
            self.reply(error(DATA_FORMAT))
            return
        if body.get("grant_type") != "client_credential":
            self.reply(error(INVALID_GRANT_TYPE))
            return
        if body.get("appid") != self.state.appid:
            self.reply(error(INVALID_APPID))
            return
        if body.get("secret") != self.state.secret:
            self.reply(error(INVALID_SECRET))
            return
        token, expires_in = self.state.stable_token(body.get("force_refresh") is True)
        self.reply({"access_token": token, "expires_in": expires_in})


class SubscribeSendHandler(WeChatEndpoint):
    def post(self) -> None:
        if not self.check_token():
            return
        body = self.json_body()
        if body is None:
            self.reply(error(DATA_FORMAT))
            return
        touser, template_id, data = body.get("touser"), body.get("template_id"), body.get("data")
        if not isinstance(touser, str) or not touser:
            self.reply(error(INVALID_OPENID))
            return
        if not isinstance(template_id, str) or not template_id:
            self.reply(error(INVALID_TEMPLATE))
            return
        # Every value is {"value": "..."}, as WeChat requires.
        if not isinstance(data, dict) or not all(
            isinstance(v, dict) and isinstance(v.get("value"), str) for v in data.values()
        ):
            self.reply(error(ARGUMENT_INVALID))
            return
        if not self.state.accepts(touser, template_id):
            self.reply(error(USER_REFUSED))
            return
        self.state.sent_messages.append(body)
        self.reply({"errcode": 0, "errmsg": "ok"})


class PhoneNumberHandler(WeChatEndpoint):
    def post(self) -> None:
        if not self.check_token():
            return
        body = self.json_body()
        code = body.get("code") if body is not None else None
        if not isinstance(code, str):
            self.reply(error(DATA_FORMAT))
            return
        digits = self.state.redeem(code, "dev-phone:")
        if isinstance(digits, int) or not PHONE_DIGITS.fullmatch(digits):
            self.reply(error(digits if isinstance(digits, int) else INVALID_CODE))
            return
        self.reply(
            {
                "errcode": 0,
                "errmsg": "ok",
                "phone_info": {
                    "phoneNumber": digits,
                    "purePhoneNumber": digits,
                    "countryCode": "86",
                    "watermark": {"timestamp": int(self.state.now()), "appid": self.state.appid},
                },
            }
        )


class MsgSecCheckHandler(WeChatEndpoint):
    def post(self) -> None:
        if not self.check_token():
            return
        body = self.json_body()
        content = body.get("content") if body is not None else None
        if body is None or not isinstance(content, str):
            self.reply(error(DATA_FORMAT))
            return
        risky = self.state.risky_marker in content
        if body.get("version") != 2:
            # Version 1 (no openid) answers only with an error code.
            self.reply(error(RISKY_CONTENT_V1) if risky else {"errcode": 0, "errmsg": "ok"})
            return
        openid = body.get("openid")
        if not isinstance(openid, str) or not openid:
            self.reply(error(INVALID_OPENID))
            return
        if body.get("scene") not in (1, 2, 3, 4):
            self.reply(error(DATA_FORMAT))
            return
        # Label 100 is "normal"; 21000 is WeChat's "other" category of risk.
        suggest, label = ("risky", 21000) if risky else ("pass", 100)
        self.reply(
            {
                "errcode": 0,
                "errmsg": "ok",
                "result": {"suggest": suggest, "label": label},
                "detail": [
                    {"strategy": "content_model", "errcode": 0, "suggest": suggest, "label": label}
                ],
                "trace_id": secrets.token_hex(12),
            }
        )


# --- control endpoints (not WeChat's) -----------------------------------------------------------


class SentMessagesHandler(StandinHandler):
    """What would have been sent: GET lists it, DELETE forgets it."""

    def get(self) -> None:
        self.reply({"messages": self.state.sent_messages})

    def delete(self) -> None:
        deleted = len(self.state.sent_messages)
        self.state.sent_messages.clear()
        self.reply({"deleted": deleted})


class CallsHandler(StandinHandler):
    """Every WeChat endpoint call the stand-in received, in order."""

    def get(self) -> None:
        self.reply({"calls": [{"method": m, "path": p} for m, p in self.state.calls]})


class ControlHandler(StandinHandler):
    """A POST that changes the stand-in's behaviour; a bad request answers 400 with the reason."""

    def post(self) -> None:
        body = self.json_body()
        if body is None:
            self.reply({"error": "the body must be a JSON object"}, 400)
            return
        try:
            answer = self.apply(body)
        except (KeyError, TypeError, ValueError) as exc:
            self.reply({"error": f"{type(exc).__name__}: {exc}"}, 400)
            return
        self.reply(answer)

    def apply(self, body: dict[str, Any]) -> dict[str, Any]:
        raise NotImplementedError


class FailHandler(ControlHandler):
    """`{"path", "errcode", "times"?}`: the next `times` (1) calls of `path` fail."""

    def apply(self, body: dict[str, Any]) -> dict[str, Any]:
        path, errcode, times = str(body["path"]), _integer(body["errcode"]), body.get("times", 1)
        self.state.fail_next(path, errcode, _integer(times))
        return {"path": path, "errcode": errcode, "times": times}


class DelayHandler(ControlHandler):
    """`{"path", "seconds"}`: every call of `path` waits this long before answering."""

    def apply(self, body: dict[str, Any]) -> dict[str, Any]:
        path, seconds = str(body["path"]), float(body["seconds"])
        self.state.slow_down(path, seconds)
        return {"path": path, "seconds": seconds}


class ExpireTokensHandler(ControlHandler):
    def apply(self, body: dict[str, Any]) -> dict[str, Any]:
        return {"expired": self.state.expire_tokens()}


class AcceptHandler(ControlHandler):
    """`{"openid", "template_id"}`: this user accepted this template."""

    def apply(self, body: dict[str, Any]) -> dict[str, Any]:
        openid, template_id = body["openid"], body["template_id"]
        if not (isinstance(openid, str) and isinstance(template_id, str)):
            raise TypeError("openid and template_id must be strings")
        self.state.accept(openid, template_id)
        return {"accepted": {"openid": openid, "template_id": template_id}}


class RefuseAllHandler(ControlHandler):
    def apply(self, body: dict[str, Any]) -> dict[str, Any]:
        self.state.refuse_all()
        return {"accept_all": False}


class AcceptAllHandler(ControlHandler):
    def apply(self, body: dict[str, Any]) -> dict[str, Any]:
        self.state.accept_all = True
        return {"accept_all": True}


class ResetHandler(ControlHandler):
    def apply(self, body: dict[str, Any]) -> dict[str, Any]:
        self.state.reset()
        return {"reset": True}


def _integer(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{value!r} is not an integer")
    return value


def _log_request(handler: tornado.web.RequestHandler) -> None:
    # Tornado's access log would write the query string, and with it the secret, the login code
    # and the access token; the path is enough to follow what happened.
    request = handler.request
    log.info(
        "wechat stand-in request",
        extra={
            "fields": {
                "method": request.method,
                "path": request.path,
                "status": handler.get_status(),
                "ms": round(1000 * request.request_time(), 1),
            }
        },
    )


def make_standin_app(state: StandinState | None = None) -> tornado.web.Application:
    return tornado.web.Application(
        [
            (CODE2SESSION, Code2SessionHandler),
            (STABLE_TOKEN, StableTokenHandler),
            (SUBSCRIBE_SEND, SubscribeSendHandler),
            (PHONE_NUMBER, PhoneNumberHandler),
            (MSG_SEC_CHECK, MsgSecCheckHandler),
            (r"/standin/messages", SentMessagesHandler),
            (r"/standin/calls", CallsHandler),
            (r"/standin/fail", FailHandler),
            (r"/standin/delay", DelayHandler),
            (r"/standin/expire-tokens", ExpireTokensHandler),
            (r"/standin/accept", AcceptHandler),
            (r"/standin/refuse-all", RefuseAllHandler),
            (r"/standin/accept-all", AcceptAllHandler),
            (r"/standin/reset", ResetHandler),
        ],
        state=state or StandinState(),
        log_function=_log_request,
    )


async def run_standin(port: int, host: str = "127.0.0.1") -> None:
    from tornado.httpserver import HTTPServer

    from server.processes import stop_event_on_signals

    stop = stop_event_on_signals()
    server = HTTPServer(make_standin_app())
    server.listen(port, host)
    log.info("wechat stand-in ready", extra={"fields": {"port": port}})
    await stop.wait()
    server.stop()

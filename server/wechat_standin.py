"""A local stand-in for the WeChat API, for development and tests only; never run in production.

It answers the endpoints Anbang calls with WeChat's own request and response shapes: a login code
`dev:<label>` always yields the same openid for `<label>`, and subscribe messages are recorded.
"""

from __future__ import annotations

import hashlib
import json
import logging
import secrets
from dataclasses import dataclass, field
from typing import Any

import tornado.web

log = logging.getLogger("anbang.wechat_standin")

# WeChat's error codes for the cases the stand-in imitates.
INVALID_CODE = 40029
INVALID_TOKEN = 40001


@dataclass
class StandinState:
    appid: str = "wx-standin-appid"
    secret: str = "standin-secret"  # noqa: S105 - a fixed development value, not a credential
    tokens: set[str] = field(default_factory=set)
    sent_messages: list[dict[str, Any]] = field(default_factory=list)


def openid_for(label: str) -> str:
    return "o" + hashlib.sha256(label.encode()).hexdigest()[:27]


class StandinHandler(tornado.web.RequestHandler):
    @property
    def state(self) -> StandinState:
        return self.application.settings["state"]  # type: ignore[no-any-return]

    def reply(self, payload: dict[str, Any]) -> None:
        self.set_header("Content-Type", "application/json; charset=utf-8")
        self.finish(json.dumps(payload, ensure_ascii=False))

    def json_body(self) -> dict[str, Any]:
        try:
            body = json.loads(self.request.body or b"{}")
        except ValueError:
            body = None
        return body if isinstance(body, dict) else {}


class Code2SessionHandler(StandinHandler):
    def get(self) -> None:
        code = self.get_query_argument("js_code", "")
        if self.get_query_argument("appid", "") != self.state.appid or not code.startswith("dev:"):
            self.reply({"errcode": INVALID_CODE, "errmsg": "invalid code"})
            return
        label = code.removeprefix("dev:")
        self.reply(
            {"openid": openid_for(label), "session_key": secrets.token_urlsafe(16), "errcode": 0}
        )


class StableTokenHandler(StandinHandler):
    def post(self) -> None:
        body = self.json_body()
        if body.get("appid") != self.state.appid or body.get("secret") != self.state.secret:
            self.reply({"errcode": 40013, "errmsg": "invalid appid"})
            return
        token = secrets.token_urlsafe(24)
        self.state.tokens.add(token)
        self.reply({"access_token": token, "expires_in": 7200})


class SubscribeSendHandler(StandinHandler):
    def post(self) -> None:
        if self.get_query_argument("access_token", "") not in self.state.tokens:
            self.reply({"errcode": INVALID_TOKEN, "errmsg": "invalid credential"})
            return
        self.state.sent_messages.append(self.json_body())
        self.reply({"errcode": 0, "errmsg": "ok"})


class SentMessagesHandler(StandinHandler):
    """Not a WeChat endpoint: lets tests and developers see what would have been sent."""

    def get(self) -> None:
        self.reply({"messages": self.state.sent_messages})


def make_standin_app(state: StandinState | None = None) -> tornado.web.Application:
    return tornado.web.Application(
        [
            (r"/sns/jscode2session", Code2SessionHandler),
            (r"/cgi-bin/stable_token", StableTokenHandler),
            (r"/cgi-bin/message/subscribe/send", SubscribeSendHandler),
            (r"/standin/messages", SentMessagesHandler),
        ],
        state=state or StandinState(),
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

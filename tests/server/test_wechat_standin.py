"""The local WeChat API stand-in, served on loopback, called as WeChat's own clients call it."""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import time
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import urlencode

import pytest
import pytest_asyncio
from tornado.httpclient import AsyncHTTPClient
from tornado.httpserver import HTTPServer
from tornado.netutil import bind_sockets
from wechatpy import WeChatClient
from wechatpy.exceptions import WeChatClientException

from server.wechat_standin import (
    CODE2SESSION,
    CODE_USED,
    DATA_FORMAT,
    EXPIRED_TOKEN,
    INVALID_APPID,
    INVALID_CODE,
    INVALID_OPENID,
    INVALID_SECRET,
    INVALID_TOKEN,
    MSG_SEC_CHECK,
    PHONE_NUMBER,
    RISKY_CONTENT_V1,
    STABLE_TOKEN,
    SUBSCRIBE_SEND,
    TOKEN_MISSING,
    USER_REFUSED,
    StandinState,
    make_standin_app,
    openid_for,
)


class Standin:
    def __init__(self, base_url: str, state: StandinState):
        self.base_url = base_url
        self.state = state
        self.client = AsyncHTTPClient(force_instance=True)

    async def answer(
        self, method: str, path: str, query: dict[str, str] | None = None, body: Any = None
    ) -> tuple[int, dict[str, Any]]:
        url = self.base_url + path + ("?" + urlencode(query) if query else "")
        if body is not None:
            payload: str | None = json.dumps(body, ensure_ascii=False)
        else:
            payload = "" if method == "POST" else None
        response = await self.client.fetch(
            url, method=method, body=payload, raise_error=False, request_timeout=10
        )
        return response.code, json.loads(response.body)

    async def call(
        self, method: str, path: str, query: dict[str, str] | None = None, body: Any = None
    ) -> dict[str, Any]:
        code, answer = await self.answer(method, path, query, body)
        assert code == 200, answer
        return answer

    async def code2session(
        self, code: str, appid: str | None = None, secret: str | None = None
    ) -> dict[str, Any]:
        return await self.call(
            "GET",
            CODE2SESSION,
            {
                "appid": appid or self.state.appid,
                "secret": secret or self.state.secret,
                "js_code": code,
                "grant_type": "authorization_code",
            },
        )

    async def stable_token(
        self, secret: str | None = None, force_refresh: bool = False
    ) -> dict[str, Any]:
        return await self.call(
            "POST",
            STABLE_TOKEN,
            body={
                "grant_type": "client_credential",
                "appid": self.state.appid,
                "secret": secret or self.state.secret,
                "force_refresh": force_refresh,
            },
        )

    async def token(self) -> str:
        return str((await self.stable_token())["access_token"])

    async def with_token(self, path: str, token: str, body: Any) -> dict[str, Any]:
        return await self.call("POST", path, {"access_token": token}, body)


@pytest_asyncio.fixture
async def standin(wechat_standin: Any) -> AsyncIterator[Standin]:
    served = Standin(wechat_standin.base_url, wechat_standin.state)
    yield served
    served.client.close()


MESSAGE = {
    "touser": "o-some-openid",
    "template_id": "tmpl-checkin-reminder",
    "page": "pages/tasks/index",
    "data": {"thing1": {"value": "今日报到"}, "time2": {"value": "2026-11-24 09:00"}},
}


# --- login codes ---------------------------------------------------------------------------------


async def test_a_dev_code_always_yields_the_same_openid_for_its_label(standin):
    first = await standin.code2session("dev:zhang-san")
    again = await standin.code2session("dev:zhang-san")
    other = await standin.code2session("dev:li-si")
    assert first["errcode"] == 0
    assert first["openid"] == again["openid"] == openid_for("zhang-san")
    assert other["openid"] != first["openid"]


async def test_every_login_gets_a_fresh_session_key_shaped_like_wechats(standin):
    first = await standin.code2session("dev:zhang-san")
    again = await standin.code2session("dev:zhang-san")
    assert first["session_key"] != again["session_key"]
    assert len(base64.b64decode(first["session_key"])) == 16


async def test_a_code_with_a_nonce_works_once_like_a_real_code(standin):
    first = await standin.code2session("dev:zhang-san#1")
    assert first["openid"] == openid_for("zhang-san")
    reused = await standin.code2session("dev:zhang-san#1")
    assert reused["errcode"] == CODE_USED == 40163
    assert "openid" not in reused
    assert (await standin.code2session("dev:zhang-san#2"))["openid"] == first["openid"]
    # The plain code stays reusable for a developer's repeated logins.
    assert (await standin.code2session("dev:zhang-san"))["openid"] == first["openid"]


async def test_openids_survive_a_restart_of_the_standin(standin):
    # A developer's bound test account must still log in after `make run` is restarted.
    before = await standin.code2session("dev:guardian-1")
    sockets = bind_sockets(0, "127.0.0.1")
    server = HTTPServer(make_standin_app())
    server.add_sockets(sockets)
    restarted = Standin(f"http://127.0.0.1:{sockets[0].getsockname()[1]}", StandinState())
    try:
        after = await restarted.code2session("dev:guardian-1")
    finally:
        restarted.client.close()
        server.stop()
        await server.close_all_connections()
    assert after["openid"] == before["openid"]


@pytest.mark.parametrize("code", ["081abcDEF", "", "dev", "dev:", "dev:#1", "DEV:zhang-san"])
async def test_a_code_that_is_not_a_dev_code_is_refused(standin, code):
    answer = await standin.code2session(code)
    assert answer["errcode"] == INVALID_CODE == 40029
    assert "openid" not in answer


async def test_a_code_for_another_appid_or_with_a_wrong_secret_is_refused(standin):
    answer = await standin.code2session("dev:zhang-san", appid="wx-someone-else")
    assert answer["errcode"] == INVALID_APPID == 40013
    assert "openid" not in answer
    answer = await standin.code2session("dev:zhang-san", secret="not-the-secret")
    assert answer["errcode"] == INVALID_SECRET == 40125
    assert "openid" not in answer


# --- access tokens -------------------------------------------------------------------------------


async def test_stable_token_returns_a_token_with_its_lifetime(standin):
    answer = await standin.stable_token()
    assert isinstance(answer["access_token"], str)
    assert len(answer["access_token"]) >= 16
    assert answer["expires_in"] > 0


async def test_stable_token_refuses_a_wrong_secret(standin):
    answer = await standin.stable_token(secret="not-the-secret")
    assert answer["errcode"] == INVALID_SECRET
    assert "access_token" not in answer


async def test_stable_token_hands_every_caller_the_same_token_until_forced(standin):
    first = await standin.stable_token()
    again = await standin.stable_token()
    assert again["access_token"] == first["access_token"]
    forced = await standin.stable_token(force_refresh=True)
    assert forced["access_token"] != first["access_token"]
    # A forced refresh invalidates the previous token at once.
    refused = await standin.with_token(SUBSCRIBE_SEND, first["access_token"], MESSAGE)
    assert refused["errcode"] == INVALID_TOKEN
    assert (await standin.with_token(SUBSCRIBE_SEND, forced["access_token"], MESSAGE)) == {
        "errcode": 0,
        "errmsg": "ok",
    }


async def test_a_new_token_comes_only_in_the_last_five_minutes_and_the_old_one_expires(standin):
    now = [1_800_000_000.0]
    standin.state.now = lambda: now[0]
    first = await standin.stable_token()
    assert first["expires_in"] == 7200
    now[0] += 7200 - 301
    kept = await standin.stable_token()
    assert kept["access_token"] == first["access_token"]
    assert kept["expires_in"] == 301
    now[0] += 2
    renewed = await standin.stable_token()
    assert renewed["access_token"] != first["access_token"]
    assert renewed["expires_in"] == 7200
    # The old token stays valid until its own expiry, then WeChat says it expired.
    assert (await standin.with_token(SUBSCRIBE_SEND, first["access_token"], MESSAGE))[
        "errcode"
    ] == 0
    now[0] += 300
    expired = await standin.with_token(SUBSCRIBE_SEND, first["access_token"], MESSAGE)
    assert expired["errcode"] == EXPIRED_TOKEN == 42001


async def test_expire_tokens_expires_every_token_and_the_next_fetch_gets_a_new_one(standin):
    old = await standin.token()
    assert (await standin.call("POST", "/standin/expire-tokens")) == {"expired": 1}
    assert (await standin.with_token(SUBSCRIBE_SEND, old, MESSAGE))["errcode"] == EXPIRED_TOKEN
    new = await standin.token()
    assert new != old
    assert (await standin.with_token(SUBSCRIBE_SEND, new, MESSAGE))["errcode"] == 0
    assert standin.state.expire_tokens() == 1


# --- subscribe messages --------------------------------------------------------------------------


async def test_a_subscribe_message_with_a_valid_token_is_recorded(standin):
    sent = await standin.with_token(SUBSCRIBE_SEND, await standin.token(), MESSAGE)
    assert sent == {"errcode": 0, "errmsg": "ok"}
    recorded = await standin.call("GET", "/standin/messages")
    assert recorded == {"messages": [MESSAGE]}
    assert standin.state.messages_to(MESSAGE["touser"]) == [MESSAGE]
    assert (await standin.call("DELETE", "/standin/messages")) == {"deleted": 1}
    assert (await standin.call("GET", "/standin/messages")) == {"messages": []}


async def test_a_subscribe_message_with_a_bad_token_is_refused_and_not_recorded(standin):
    await standin.stable_token()
    refused = await standin.with_token(SUBSCRIBE_SEND, "forged", MESSAGE)
    assert refused["errcode"] == INVALID_TOKEN == 40001
    missing = await standin.call("POST", SUBSCRIBE_SEND, body=MESSAGE)
    assert missing["errcode"] == TOKEN_MISSING == 41001
    assert (await standin.call("GET", "/standin/messages")) == {"messages": []}


@pytest.mark.parametrize(
    ("change", "errcode"),
    [
        ({"touser": ""}, 40003),
        ({"template_id": ""}, 40037),
        ({"data": {"thing1": "今日报到"}}, 47003),
    ],
)
async def test_a_malformed_subscribe_message_is_refused(standin, change, errcode):
    answer = await standin.with_token(SUBSCRIBE_SEND, await standin.token(), MESSAGE | change)
    assert answer["errcode"] == errcode
    assert standin.state.sent_messages == []


async def test_a_template_the_user_has_not_accepted_is_refused(standin):
    token = await standin.token()
    await standin.call("POST", "/standin/refuse-all")
    refused = await standin.with_token(SUBSCRIBE_SEND, token, MESSAGE)
    assert refused["errcode"] == USER_REFUSED == 43101
    accepted = {"openid": MESSAGE["touser"], "template_id": MESSAGE["template_id"]}
    await standin.call("POST", "/standin/accept", body=accepted)
    assert (await standin.with_token(SUBSCRIBE_SEND, token, MESSAGE))["errcode"] == 0
    other = MESSAGE | {"template_id": "tmpl-other"}
    assert (await standin.with_token(SUBSCRIBE_SEND, token, other))["errcode"] == USER_REFUSED
    await standin.call("POST", "/standin/accept-all")
    assert (await standin.with_token(SUBSCRIBE_SEND, token, other))["errcode"] == 0
    assert len(standin.state.sent_messages) == 2


# --- phone numbers and content checks ------------------------------------------------------------


async def test_a_dev_phone_code_yields_wechats_phone_info(standin):
    answer = await standin.with_token(
        PHONE_NUMBER, await standin.token(), {"code": "dev-phone:13800138000"}
    )
    assert answer["errcode"] == 0
    info = answer["phone_info"]
    assert info["phoneNumber"] == info["purePhoneNumber"] == "13800138000"
    assert info["countryCode"] == "86"
    assert info["watermark"]["appid"] == standin.state.appid
    assert isinstance(info["watermark"]["timestamp"], int)


@pytest.mark.parametrize("code", ["dev:13800138000", "dev-phone:", "dev-phone:13800abc", "x"])
async def test_a_phone_code_that_is_not_a_dev_phone_code_is_refused(standin, code):
    answer = await standin.with_token(PHONE_NUMBER, await standin.token(), {"code": code})
    assert answer["errcode"] == INVALID_CODE
    assert "phone_info" not in answer


async def test_a_phone_code_needs_a_token_and_a_nonce_code_works_once(standin):
    body = {"code": "dev-phone:13800138000#a"}
    assert (await standin.with_token(PHONE_NUMBER, "forged", body))["errcode"] == INVALID_TOKEN
    token = await standin.token()
    assert (await standin.with_token(PHONE_NUMBER, token, body))["errcode"] == 0
    assert (await standin.with_token(PHONE_NUMBER, token, body))["errcode"] == CODE_USED
    assert (await standin.with_token(PHONE_NUMBER, token, {}))["errcode"] == DATA_FORMAT


async def test_msg_sec_check_v2_passes_ordinary_text_and_flags_the_marker(standin):
    token = await standin.token()
    check = {"version": 2, "scene": 2, "openid": openid_for("zhang-san")}
    ordinary = await standin.with_token(MSG_SEC_CHECK, token, check | {"content": "按时报到"})
    assert ordinary["errcode"] == 0
    assert ordinary["result"] == {"suggest": "pass", "label": 100}
    risky = await standin.with_token(
        MSG_SEC_CHECK, token, check | {"content": f"这里有{standin.state.risky_marker}"}
    )
    assert risky["result"]["suggest"] == "risky"
    assert risky["result"]["label"] != 100
    standin.state.risky_marker = "赌博"
    assert (await standin.with_token(MSG_SEC_CHECK, token, check | {"content": "赌博"}))["result"][
        "suggest"
    ] == "risky"


async def test_msg_sec_check_checks_its_arguments_and_knows_version_one(standin):
    token = await standin.token()
    content = {"content": standin.state.risky_marker}
    no_openid = await standin.with_token(MSG_SEC_CHECK, token, content | {"version": 2, "scene": 2})
    assert no_openid["errcode"] == INVALID_OPENID
    bad_scene = content | {"version": 2, "scene": 9, "openid": "o1"}
    assert (await standin.with_token(MSG_SEC_CHECK, token, bad_scene))["errcode"] == DATA_FORMAT
    v1 = await standin.with_token(MSG_SEC_CHECK, token, content)
    assert v1["errcode"] == RISKY_CONTENT_V1 == 87014
    assert (await standin.with_token(MSG_SEC_CHECK, token, {"content": "好"}))["errcode"] == 0


# --- control endpoints ---------------------------------------------------------------------------


async def test_programmed_failures_answer_the_next_calls_then_stop(standin):
    programmed = {"path": CODE2SESSION, "errcode": -1, "times": 2}
    assert (await standin.call("POST", "/standin/fail", body=programmed)) == programmed
    for _ in range(2):
        busy = await standin.code2session("dev:zhang-san")
        assert busy["errcode"] == -1
        assert busy["errmsg"].startswith("system error")
    assert (await standin.code2session("dev:zhang-san"))["errcode"] == 0
    standin.state.fail_next(PHONE_NUMBER, 45009)
    token = await standin.token()
    body = {"code": "dev-phone:13800138000"}
    assert (await standin.with_token(PHONE_NUMBER, token, body))["errcode"] == 45009
    assert (await standin.with_token(PHONE_NUMBER, token, body))["errcode"] == 0


@pytest.mark.parametrize(
    "body",
    [
        {"path": "/sns/nowhere", "errcode": -1},
        {"path": CODE2SESSION, "errcode": "busy"},
        {"path": CODE2SESSION, "errcode": -1, "times": 0},
        {"errcode": -1},
    ],
)
async def test_a_bad_failure_program_is_refused(standin, body):
    code, answer = await standin.answer("POST", "/standin/fail", body=body)
    assert code == 400
    assert answer["error"]
    assert standin.state.failures == {}


async def test_the_standin_records_every_wechat_call_and_reset_forgets(standin):
    await standin.code2session("dev:zhang-san")
    await standin.stable_token()
    await standin.call("GET", "/standin/messages")  # control calls are not WeChat's
    assert (await standin.call("GET", "/standin/calls")) == {
        "calls": [{"method": "GET", "path": CODE2SESSION}, {"method": "POST", "path": STABLE_TOKEN}]
    }
    standin.state.fail_next(CODE2SESSION, -1)
    standin.state.refuse_all()
    assert (await standin.call("POST", "/standin/reset")) == {"reset": True}
    assert standin.state.calls == []
    assert standin.state.tokens == {}
    assert standin.state.failures == {}
    assert standin.state.accept_all is True


async def test_a_delay_holds_the_answer_without_holding_the_server(standin):
    await standin.call("POST", "/standin/delay", body={"path": CODE2SESSION, "seconds": 0.3})
    started = time.monotonic()
    slow = asyncio.ensure_future(standin.code2session("dev:zhang-san"))
    await standin.stable_token()  # answered while the login waits
    assert time.monotonic() - started < 0.25
    assert (await slow)["errcode"] == 0
    assert time.monotonic() - started >= 0.3


async def test_the_standins_log_never_carries_a_query_string(standin, caplog):
    caplog.set_level(logging.DEBUG)
    token = await standin.token()
    await standin.with_token(SUBSCRIBE_SEND, token, MESSAGE)
    await standin.code2session("dev:zhang-san")
    logged = caplog.text + repr([r.__dict__ for r in caplog.records])
    assert "wechat stand-in request" in logged
    for secret in (token, standin.state.secret, "dev:zhang-san", MESSAGE["touser"]):
        assert secret not in logged


# --- through the real wechatpy client -----------------------------------------------------------


def wechatpy_client(standin: Standin, access_token: str) -> WeChatClient:
    """wechatpy's client aimed at the stand-in.

    The mini-program API group (`wxa`) takes its base URL from an attribute that can be set per
    client; wechatpy's own token fetch, though, always goes to api.weixin.qq.com, so the token is
    supplied (as the jobs process supplies the stable_token) and automatic retry is off.
    """
    client = WeChatClient(
        standin.state.appid,
        standin.state.secret,
        access_token=access_token,
        timeout=10,
        auto_retry=False,
    )
    client.wxa.API_BASE_URL = standin.base_url + "/"
    client._http.trust_env = False  # loopback only: never through a proxy from the environment
    return client


async def test_wechatpy_code_to_session_reaches_the_standin(standin):
    client = wechatpy_client(standin, await standin.token())
    try:
        first = await asyncio.to_thread(client.wxa.code_to_session, "dev:wang-wu")
        again = await asyncio.to_thread(client.wxa.code_to_session, "dev:wang-wu")
        direct = await standin.code2session("dev:wang-wu")
        assert first["openid"] == again["openid"] == direct["openid"]

        with pytest.raises(WeChatClientException) as refused:
            await asyncio.to_thread(client.wxa.code_to_session, "081abcDEF")
        assert refused.value.errcode == INVALID_CODE
    finally:
        client._http.close()


async def test_wechatpy_subscribe_message_is_recorded_by_the_standin(standin):
    client = wechatpy_client(standin, await standin.token())
    try:
        await asyncio.to_thread(
            client.wxa.send_subscribe_message,
            MESSAGE["touser"],
            MESSAGE["template_id"],
            MESSAGE["data"],
            MESSAGE["page"],
        )
        recorded = (await standin.call("GET", "/standin/messages"))["messages"]
        assert len(recorded) == 1
        assert recorded[0]["touser"] == MESSAGE["touser"]
        assert recorded[0]["template_id"] == MESSAGE["template_id"]
        assert recorded[0]["data"] == MESSAGE["data"]

        forged = wechatpy_client(standin, "forged")
        try:
            with pytest.raises(WeChatClientException) as refused:
                await asyncio.to_thread(
                    forged.wxa.send_subscribe_message,
                    MESSAGE["touser"],
                    MESSAGE["template_id"],
                    MESSAGE["data"],
                )
            assert refused.value.errcode == INVALID_TOKEN
        finally:
            forged._http.close()
        assert len((await standin.call("GET", "/standin/messages"))["messages"]) == 1
    finally:
        client._http.close()

"""The local WeChat API stand-in, served on loopback, called as WeChat's own clients call it."""

from __future__ import annotations

import asyncio
import json
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

from server.wechat_standin import INVALID_CODE, INVALID_TOKEN, StandinState, make_standin_app


class Standin:
    def __init__(self, base_url: str, state: StandinState):
        self.base_url = base_url
        self.state = state
        self.client = AsyncHTTPClient(force_instance=True)

    async def call(
        self, method: str, path: str, query: dict[str, str] | None = None, body: Any = None
    ) -> dict[str, Any]:
        url = self.base_url + path + ("?" + urlencode(query) if query else "")
        response = await self.client.fetch(
            url,
            method=method,
            body=None if body is None else json.dumps(body, ensure_ascii=False),
            raise_error=False,
            request_timeout=10,
        )
        assert response.code == 200, response.body
        return json.loads(response.body)  # type: ignore[no-any-return]

    async def code2session(self, code: str, appid: str | None = None) -> dict[str, Any]:
        return await self.call(
            "GET",
            "/sns/jscode2session",
            {
                "appid": appid or self.state.appid,
                "secret": self.state.secret,
                "js_code": code,
                "grant_type": "authorization_code",
            },
        )

    async def stable_token(self, secret: str | None = None) -> dict[str, Any]:
        return await self.call(
            "POST",
            "/cgi-bin/stable_token",
            body={
                "grant_type": "client_credential",
                "appid": self.state.appid,
                "secret": secret or self.state.secret,
            },
        )


@pytest_asyncio.fixture
async def standin() -> AsyncIterator[Standin]:
    state = StandinState()
    sockets = bind_sockets(0, "127.0.0.1")
    server = HTTPServer(make_standin_app(state))
    server.add_sockets(sockets)
    served = Standin(f"http://127.0.0.1:{sockets[0].getsockname()[1]}", state)
    yield served
    served.client.close()
    server.stop()
    await server.close_all_connections()


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
    assert first["openid"] == again["openid"]
    assert other["openid"] != first["openid"]
    assert first["session_key"]


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


@pytest.mark.parametrize("code", ["081abcDEF", "", "dev", "DEV:zhang-san"])
async def test_a_code_that_is_not_a_dev_code_is_refused(standin, code):
    answer = await standin.code2session(code)
    assert answer["errcode"] == INVALID_CODE == 40029
    assert "openid" not in answer


async def test_a_code_for_another_appid_is_refused(standin):
    answer = await standin.code2session("dev:zhang-san", appid="wx-someone-else")
    assert answer["errcode"] == INVALID_CODE
    assert "openid" not in answer


# --- access tokens and subscribe messages -------------------------------------------------------


async def test_stable_token_returns_a_token_with_its_lifetime(standin):
    answer = await standin.stable_token()
    assert isinstance(answer["access_token"], str)
    assert len(answer["access_token"]) >= 16
    assert answer["expires_in"] > 0


async def test_stable_token_refuses_a_wrong_secret(standin):
    answer = await standin.stable_token(secret="not-the-secret")
    assert answer["errcode"] != 0
    assert "access_token" not in answer


async def test_a_subscribe_message_with_a_valid_token_is_recorded(standin):
    token = (await standin.stable_token())["access_token"]
    sent = await standin.call(
        "POST", "/cgi-bin/message/subscribe/send", {"access_token": token}, MESSAGE
    )
    assert sent == {"errcode": 0, "errmsg": "ok"}
    recorded = await standin.call("GET", "/standin/messages")
    assert recorded == {"messages": [MESSAGE]}


async def test_a_subscribe_message_with_a_bad_token_is_refused_and_not_recorded(standin):
    await standin.stable_token()
    refused = await standin.call(
        "POST", "/cgi-bin/message/subscribe/send", {"access_token": "forged"}, MESSAGE
    )
    assert refused["errcode"] == INVALID_TOKEN == 40001
    missing = await standin.call("POST", "/cgi-bin/message/subscribe/send", body=MESSAGE)
    assert missing["errcode"] == INVALID_TOKEN
    assert (await standin.call("GET", "/standin/messages")) == {"messages": []}


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
    token = (await standin.stable_token())["access_token"]
    client = wechatpy_client(standin, token)
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
    token = (await standin.stable_token())["access_token"]
    client = wechatpy_client(standin, token)
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

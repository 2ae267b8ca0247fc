"""The shared WeChat access token: fetched from the stand-in, sealed at rest, refreshed in time."""

from __future__ import annotations

import datetime as dt

import pytest
from tornado.httpserver import HTTPServer
from tornado.netutil import bind_sockets

from miniprogram_api.wechat import StableTokenSource
from models.codec import FieldCodec
from models.wechat import WeChatTokenService, WeChatUnavailable
from server.wechat_standin import StandinState, make_standin_app


@pytest.fixture
async def standin():
    state = StandinState()
    sockets = bind_sockets(0, "127.0.0.1")
    server = HTTPServer(make_standin_app(state))
    server.add_sockets(sockets)
    yield state, f"http://127.0.0.1:{sockets[0].getsockname()[1]}"
    server.stop()
    await server.close_all_connections()


async def test_the_token_is_fetched_sealed_and_refreshed_before_expiry(
    standin, store, vault, clock
):
    state, base = standin
    state.now = lambda: clock.now().timestamp()  # the stand-in keeps the test's time
    source = StableTokenSource(base, state.appid, state.secret)
    tokens = WeChatTokenService(store, clock, FieldCodec(vault), source)
    assert await tokens.current(state.appid) is None
    first = await tokens.refresh()
    assert first == {"refreshed": True, "expires_in": 7200}
    token = await tokens.current(state.appid)
    assert token in state.tokens
    raw = await store.database["wechat_tokens"].find_one({"_id": state.appid})
    assert token not in repr(raw)
    assert await tokens.refresh() == {"refreshed": False}
    clock.advance(dt.timedelta(minutes=110))  # within 10 minutes of the 2-hour expiry
    assert (await tokens.refresh())["refreshed"] is True
    # stable_token keeps its token until the last five minutes of its life, as WeChat's does.
    assert await tokens.current(state.appid) == token
    clock.advance(dt.timedelta(minutes=6))
    assert (await tokens.refresh())["refreshed"] is True
    assert await tokens.current(state.appid) != token


async def test_a_refused_fetch_says_why_and_keeps_the_old_token(standin, store, vault, clock):
    state, base = standin
    good = WeChatTokenService(
        store, clock, FieldCodec(vault), StableTokenSource(base, state.appid, state.secret)
    )
    await good.refresh()
    kept = await good.current(state.appid)
    bad = WeChatTokenService(
        store, clock, FieldCodec(vault), StableTokenSource(base, state.appid, "wrong-secret")
    )
    with pytest.raises(WeChatUnavailable, match="40125"):
        await bad.refresh(force=True)
    assert await good.current(state.appid) == kept
    down = WeChatTokenService(
        store,
        clock,
        FieldCodec(vault),
        StableTokenSource("http://127.0.0.1:9", state.appid, "x", timeout=2),
    )
    with pytest.raises(WeChatUnavailable):
        await down.refresh(force=True)

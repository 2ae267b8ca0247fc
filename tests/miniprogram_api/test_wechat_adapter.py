"""The WeChat adapter: wechatpy against the local stand-in, off the event loop, errors mapped."""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
import pytest_asyncio

from miniprogram_api.wechat import StableTokenSource, WeChatAdapter
from models.codec import FieldCodec
from models.wechat import (
    WeChatBusy,
    WeChatError,
    WeChatInvalidCode,
    WeChatQuota,
    WeChatTokenInvalid,
    WeChatTokenService,
    WeChatUnavailable,
    WeChatUserRefused,
)
from server.wechat_standin import (
    CODE2SESSION,
    MSG_SEC_CHECK,
    PHONE_NUMBER,
    STABLE_TOKEN,
    SUBSCRIBE_SEND,
    StandinState,
    openid_for,
)

TEMPLATE = "tmpl-checkin-reminder"
FIELDS = {"thing1": "今日报到", "time2": "2026-11-24 09:00"}
LOOPBACK = {"127.0.0.1", "localhost", "::1"}


class Tokens:
    """What WeChatTokenService gives the adapter, kept in memory: the stored token, and a renewal
    through stable_token (never forced)."""

    def __init__(self, source: StableTokenSource):
        self._source = source
        self.token: str | None = None
        self.renewals = 0

    async def current(self) -> str | None:
        return self.token

    async def renew(self) -> None:
        self.token = (await self._source.fetch()).token
        self.renewals += 1


@pytest.fixture(autouse=True)
def loopback_only(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every name any connection resolves, refused unless it is loopback: nothing in these tests
    may reach beyond this machine, and wechatpy's default host would be api.weixin.qq.com."""
    resolved: list[str] = []
    real = socket.getaddrinfo

    def guarded(host: Any, *args: Any, **kwargs: Any) -> Any:
        name = host.decode() if isinstance(host, bytes) else str(host)
        resolved.append(name)
        if name not in LOOPBACK:
            raise OSError(f"test tried to reach {name}")
        return real(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", guarded)
    return resolved


@pytest_asyncio.fixture
async def tokens(wechat_standin: Any) -> Tokens:
    state: StandinState = wechat_standin.state
    held = Tokens(StableTokenSource(wechat_standin.base_url, state.appid, state.secret))
    await held.renew()  # as the jobs process would have done
    held.renewals = 0
    state.calls.clear()  # each test counts only the calls it made
    return held


@pytest_asyncio.fixture
async def make_adapter(
    wechat_standin: Any, tokens: Tokens
) -> AsyncIterator[Callable[..., WeChatAdapter]]:
    made: list[WeChatAdapter] = []

    def make(base_url: str | None = None, **options: Any) -> WeChatAdapter:
        state: StandinState = wechat_standin.state
        settings: dict[str, Any] = {
            "token_provider": tokens.current,
            "token_refresher": tokens.renew,
            "timeout": 5.0,
            "busy_base_delay": 0.01,
            "trust_env": False,
        }
        adapter = WeChatAdapter(
            base_url or wechat_standin.base_url, state.appid, state.secret, **(settings | options)
        )
        made.append(adapter)
        return adapter

    yield make
    for adapter in made:
        await adapter.close()


@pytest.fixture
def adapter(make_adapter: Callable[..., WeChatAdapter]) -> WeChatAdapter:
    return make_adapter()


@pytest.fixture
def state(wechat_standin: Any) -> StandinState:
    return wechat_standin.state  # type: ignore[no-any-return]


# --- login ---------------------------------------------------------------------------------------


async def test_code_to_session_goes_through_wechatpy_to_the_standin(adapter, state):
    session = await adapter.code_to_session("dev:zhang-san")
    again = await adapter.code_to_session("dev:zhang-san")
    assert session.openid == again.openid == openid_for("zhang-san")
    assert session.session_key
    assert session.session_key != again.session_key
    assert session.unionid is None
    assert state.calls == [("GET", CODE2SESSION)] * 2


async def test_code_to_session_needs_no_access_token(make_adapter, state):
    async def none() -> None:
        return None

    async def must_not_renew() -> None:
        raise AssertionError("a login must not wait on the access token")

    adapter = make_adapter(token_provider=none, token_refresher=must_not_renew)
    assert (await adapter.code_to_session("dev:li-si")).openid == openid_for("li-si")


@pytest.mark.parametrize("code", ["081abcDEF", "dev:"])
async def test_an_invalid_login_code_is_refused(adapter, code):
    with pytest.raises(WeChatInvalidCode) as refused:
        await adapter.code_to_session(code)
    assert refused.value.errcode == 40029


async def test_a_used_login_code_is_refused(adapter):
    await adapter.code_to_session("dev:zhang-san#1")
    with pytest.raises(WeChatInvalidCode) as refused:
        await adapter.code_to_session("dev:zhang-san#1")
    assert refused.value.errcode == 40163


# --- busy, quota, tokens -------------------------------------------------------------------------


async def test_a_busy_wechat_is_retried_until_it_answers(adapter, state):
    state.fail_next(CODE2SESSION, -1, times=2)
    session = await adapter.code_to_session("dev:zhang-san")
    assert session.openid == openid_for("zhang-san")
    assert state.calls_to(CODE2SESSION) == 3


async def test_a_busy_wechat_is_given_up_on_after_three_attempts_with_backoff(make_adapter, state):
    adapter = make_adapter(busy_base_delay=0.05)
    state.fail_next(SUBSCRIBE_SEND, -1, times=5)
    started = time.monotonic()
    with pytest.raises(WeChatBusy) as busy:
        await adapter.send_subscribe_message(openid_for("zhang-san"), TEMPLATE, FIELDS)
    assert busy.value.errcode == -1
    assert state.calls_to(SUBSCRIBE_SEND) == 3
    assert time.monotonic() - started >= 0.05 + 0.1  # waits double each time
    assert state.sent_messages == []


@pytest.mark.parametrize("errcode", [45009, 45011, 45047])
async def test_an_exhausted_quota_is_reported_not_retried(adapter, state, errcode):
    state.fail_next(SUBSCRIBE_SEND, errcode)
    with pytest.raises(WeChatQuota) as quota:
        await adapter.send_subscribe_message(openid_for("zhang-san"), TEMPLATE, FIELDS)
    assert quota.value.errcode == errcode
    assert state.calls_to(SUBSCRIBE_SEND) == 1


async def test_an_expired_token_is_renewed_and_the_call_succeeds(adapter, state, tokens):
    stale = tokens.token
    state.expire_tokens()
    await adapter.send_subscribe_message(openid_for("zhang-san"), TEMPLATE, FIELDS)
    assert tokens.renewals == 1
    assert tokens.token != stale
    assert len(state.sent_messages) == 1
    assert state.calls == [
        ("POST", SUBSCRIBE_SEND),  # 42001
        ("POST", STABLE_TOKEN),
        ("POST", SUBSCRIBE_SEND),
    ]


async def test_a_token_refused_again_after_renewal_is_reported(adapter, state, tokens):
    state.fail_next(SUBSCRIBE_SEND, 40001, times=2)
    with pytest.raises(WeChatTokenInvalid) as refused:
        await adapter.send_subscribe_message(openid_for("zhang-san"), TEMPLATE, FIELDS)
    assert refused.value.errcode == 40001
    assert tokens.renewals == 1
    assert state.calls_to(SUBSCRIBE_SEND) == 2


async def test_concurrent_calls_with_the_same_stale_token_renew_it_once(adapter, state, tokens):
    state.expire_tokens()
    await asyncio.gather(
        *(
            adapter.send_subscribe_message(openid_for(f"user-{n}"), TEMPLATE, FIELDS)
            for n in range(5)
        )
    )
    assert tokens.renewals == 1
    assert state.calls_to(STABLE_TOKEN) == 1
    assert len(state.sent_messages) == 5


async def test_a_missing_token_is_fetched_before_the_first_call(adapter, state, tokens):
    tokens.token = None  # the jobs process has not stored one yet
    assert await adapter.text_is_safe(openid_for("zhang-san"), "按时报到")
    assert tokens.renewals == 1


async def test_the_token_service_renews_for_any_process_without_forcing(
    make_adapter, wechat_standin, state, store, vault, clock
):
    source = StableTokenSource(wechat_standin.base_url, state.appid, state.secret)
    service = WeChatTokenService(store, clock, FieldCodec(vault), source)
    await service.refresh()
    held = await service.current(state.appid)
    # Not forced: a process that renews gets the token every other process holds.
    assert await service.renew() == held

    async def current() -> str | None:
        return await service.current(state.appid)

    adapter = make_adapter(token_provider=current, token_refresher=service.renew)
    state.expire_tokens()
    await adapter.send_subscribe_message(openid_for("zhang-san"), TEMPLATE, FIELDS)
    renewed = await service.current(state.appid)
    assert renewed not in (None, held)
    assert state.token_error(renewed) is None


# --- subscribe messages, phone numbers, content checks -------------------------------------------


async def test_a_subscribe_message_is_sent_in_wechats_shape(adapter, state):
    openid = openid_for("zhang-san")
    await adapter.send_subscribe_message(openid, TEMPLATE, FIELDS, page="pages/tasks/index")
    assert state.sent_messages == [
        {
            "touser": openid,
            "template_id": TEMPLATE,
            "page": "pages/tasks/index",
            "data": {"thing1": {"value": "今日报到"}, "time2": {"value": "2026-11-24 09:00"}},
        }
    ]


async def test_a_template_the_user_refused_is_reported(adapter, state):
    openid = openid_for("zhang-san")
    state.refuse_all()
    with pytest.raises(WeChatUserRefused) as refused:
        await adapter.send_subscribe_message(openid, TEMPLATE, FIELDS)
    assert refused.value.errcode == 43101
    state.accept(openid, TEMPLATE)
    await adapter.send_subscribe_message(openid, TEMPLATE, FIELDS)
    assert len(state.messages_to(openid)) == 1


async def test_an_error_without_a_name_of_its_own_is_a_plain_wechat_error(adapter):
    with pytest.raises(WeChatError) as refused:
        await adapter.send_subscribe_message("", TEMPLATE, FIELDS)
    assert type(refused.value) is WeChatError
    assert refused.value.errcode == 40003


async def test_a_phone_code_yields_the_phone_number(adapter, state):
    assert await adapter.phone_number("dev-phone:13800138000") == "13800138000"
    with pytest.raises(WeChatInvalidCode):
        await adapter.phone_number("not-a-phone-code")
    assert state.calls_to(PHONE_NUMBER) == 2


async def test_msg_sec_check_passes_ordinary_text_and_not_risky_text(adapter, state):
    openid = openid_for("zhang-san")
    assert await adapter.text_is_safe(openid, "今天按时报到，一切正常") is True
    assert await adapter.text_is_safe(openid, f"内容含{state.risky_marker}", scene=3) is False
    assert state.calls_to(MSG_SEC_CHECK) == 2


# --- where calls go, and how long they may take --------------------------------------------------


async def test_every_call_goes_to_the_configured_base_url(adapter, state, tokens, loopback_only):
    openid = openid_for("zhang-san")
    await adapter.code_to_session("dev:zhang-san")
    await adapter.send_subscribe_message(openid, TEMPLATE, FIELDS)
    await adapter.phone_number("dev-phone:13800138000")
    await adapter.text_is_safe(openid, "按时报到")
    state.expire_tokens()
    await adapter.text_is_safe(openid, "按时报到")  # with a renewal on the way
    assert state.calls == [
        ("GET", CODE2SESSION),
        ("POST", SUBSCRIBE_SEND),
        ("POST", PHONE_NUMBER),
        ("POST", MSG_SEC_CHECK),
        ("POST", MSG_SEC_CHECK),
        ("POST", STABLE_TOKEN),
        ("POST", MSG_SEC_CHECK),
    ]
    assert loopback_only
    assert set(loopback_only) <= LOOPBACK


async def test_slow_calls_overlap_and_leave_the_event_loop_free(adapter, state):
    state.slow_down(CODE2SESSION, 0.3)
    ticks = 0

    async def tick() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0.01)
            ticks += 1

    ticker = asyncio.ensure_future(tick())
    started = time.monotonic()
    try:
        first, second = await asyncio.gather(
            adapter.code_to_session("dev:zhang-san"), adapter.code_to_session("dev:li-si")
        )
    finally:
        ticker.cancel()
    elapsed = time.monotonic() - started
    assert first.openid != second.openid
    assert 0.3 <= elapsed < 0.55  # side by side, not one after the other
    assert ticks >= 10  # the loop kept running while WeChat was slow


async def test_the_thread_pool_bounds_how_many_calls_run_at_once(make_adapter, state):
    adapter = make_adapter(max_workers=1)
    state.slow_down(CODE2SESSION, 0.2)
    started = time.monotonic()
    await asyncio.gather(
        adapter.code_to_session("dev:zhang-san"), adapter.code_to_session("dev:li-si")
    )
    assert time.monotonic() - started >= 0.4


async def test_a_call_that_outlives_its_deadline_is_unavailable(make_adapter, state):
    adapter = make_adapter(timeout=0.2)
    state.slow_down(CODE2SESSION, 0.6)
    started = time.monotonic()
    with pytest.raises(WeChatUnavailable):
        await adapter.code_to_session("dev:zhang-san")
    assert time.monotonic() - started < 0.5
    await asyncio.sleep(0.5)  # let the stand-in finish its delayed answer before the next test


async def test_an_unreachable_wechat_is_unavailable(make_adapter, tokens):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed_port = probe.getsockname()[1]
    adapter = make_adapter(base_url=f"http://127.0.0.1:{closed_port}", timeout=2.0)
    with pytest.raises(WeChatUnavailable) as down:
        await adapter.send_subscribe_message(openid_for("zhang-san"), TEMPLATE, FIELDS)
    assert tokens.token is not None
    assert tokens.token not in str(down.value)
    assert down.value.__cause__ is None


# --- secrets -------------------------------------------------------------------------------------


async def test_no_session_key_token_openid_or_content_is_ever_logged_or_in_an_error(
    make_adapter, state, tokens, caplog
):
    caplog.set_level(logging.DEBUG)
    adapter = make_adapter(timeout=0.3)
    openid = openid_for("zhang-san")
    content = "我的私人留言"
    secrets_seen: list[str] = []
    errors: list[Exception] = []

    session = await adapter.code_to_session("dev:zhang-san")
    secrets_seen += [session.session_key, session.openid, "dev:zhang-san"]
    secrets_seen.append(tokens.token or "")
    state.expire_tokens()
    await adapter.send_subscribe_message(openid, TEMPLATE, {"thing1": content})
    secrets_seen.append(tokens.token or "")
    await adapter.text_is_safe(openid, content)
    await adapter.phone_number("dev-phone:13912345678")
    secrets_seen.append((await adapter.code_to_session("dev:zhang-san#x")).session_key)
    state.refuse_all()
    state.fail_next(SUBSCRIBE_SEND, -1, times=3)
    for call in (
        adapter.send_subscribe_message(openid, TEMPLATE, {"thing1": content}),  # busy
        adapter.send_subscribe_message(openid, TEMPLATE, {"thing1": content}),  # refused
        adapter.code_to_session("dev:zhang-san#x"),  # used
    ):
        try:
            await call
        except WeChatError as exc:
            errors.append(exc)
    state.slow_down(MSG_SEC_CHECK, 0.5)
    with pytest.raises(WeChatUnavailable) as late:
        await adapter.text_is_safe(openid, content)
    errors.append(late.value)
    await asyncio.sleep(0.3)

    assert [type(e) for e in errors] == [
        WeChatBusy,
        WeChatUserRefused,
        WeChatInvalidCode,
        WeChatUnavailable,
    ]
    logged = caplog.text + repr([r.__dict__ for r in caplog.records])
    assert "urllib3" in logged  # the HTTP layer did log, at DEBUG
    assert "wechat call refused" in logged
    for secret in [*secrets_seen, openid, content, state.secret, "13912345678"]:
        assert secret
        assert secret not in logged
        for exc in errors:
            assert secret not in str(exc)
            assert secret not in repr(exc)

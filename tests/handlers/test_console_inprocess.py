"""The console calls the staff API inside the process as the officer's own address: audit names
that address (behind the proxy from `X-Real-Ip`, otherwise the socket's peer, whatever a client
claims), login limits are per address and per name, and a right password without its TOTP code
is answered and counted as a wrong one."""

from __future__ import annotations

import dataclasses
import datetime as dt
import re
import urllib.parse
from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest
import pytest_asyncio
from tornado.httpclient import AsyncHTTPClient, HTTPResponse
from tornado.netutil import bind_sockets

from models import totp
from models.policy import Role
from server.serving import http_server

X = "203.0.113.7"  # the attacker's address
Y = "198.51.100.23"  # an officer's desk


@dataclass
class Served:
    base_url: str


async def _serve(app, config, *, behind_proxy: bool) -> AsyncIterator[Served]:
    server = http_server(app, dataclasses.replace(config, behind_proxy=behind_proxy))
    sockets = bind_sockets(0, "127.0.0.1")
    server.add_sockets(sockets)
    yield Served(f"http://127.0.0.1:{sockets[0].getsockname()[1]}")
    server.stop()
    await server.close_all_connections()


@pytest_asyncio.fixture
async def proxied(api, config) -> AsyncIterator[Served]:
    """The application as served behind nginx (`ANBANG_BEHIND_PROXY=1`)."""
    async for served in _serve(api.runtime.app, config, behind_proxy=True):
        yield served


@pytest_asyncio.fixture
async def direct(api, config) -> AsyncIterator[Served]:
    """The application as served with no proxy in front (the default)."""
    async for served in _serve(api.runtime.app, config, behind_proxy=False):
        yield served


class Browser:
    """A console visitor: its own XSRF cookie, its own source address or proxy header."""

    def __init__(self, served: Served, *, real_ip: str | None = None, source: str | None = None):
        self.served = served
        self.real_ip = real_ip
        self.source = source
        self.client = AsyncHTTPClient(force_instance=True)
        self.xsrf = ""

    def _headers(self, extra: dict[str, str] | None = None) -> dict[str, str]:
        headers = {"Cookie": f"_xsrf={self.xsrf}"} if self.xsrf else {}
        if self.real_ip:
            headers["X-Real-Ip"] = self.real_ip
        return {**headers, **(extra or {})}

    async def _fetch(self, path: str, **kwargs) -> HTTPResponse:
        return await self.client.fetch(
            self.served.base_url + path,
            network_interface=self.source,
            follow_redirects=False,
            raise_error=False,
            **kwargs,
        )

    async def login(self, username: str, password: str, code: str = "") -> HTTPResponse:
        if not self.xsrf:
            page = await self._fetch("/console/login", headers=self._headers())
            self.xsrf = next(
                c.split(";")[0].split("=", 1)[1]
                for c in page.headers.get_list("Set-Cookie")
                if c.startswith("_xsrf=")
            )
        form = {"username": username, "password": password, "totp": code, "_xsrf": self.xsrf}
        return await self._fetch(
            "/console/login",
            method="POST",
            body=urllib.parse.urlencode({**form, "next": "/console/"}),
            headers=self._headers(),
        )

    def close(self) -> None:
        self.client.close()


@pytest_asyncio.fixture
async def browsers() -> AsyncIterator[list[Browser]]:
    opened: list[Browser] = []
    yield opened
    for browser in opened:
        browser.close()


def visit(browsers: list[Browser], served: Served, **kwargs) -> Browser:
    browser = Browser(served, **kwargs)
    browsers.append(browser)
    return browser


def page_error(response: HTTPResponse) -> str:
    found = re.search(r'<p class="error" role="alert">([^<]*)</p>', response.body.decode())
    return found.group(1) if found else ""


async def login_addresses(services, account_id: str) -> list[tuple[str, str | None]]:
    entries = await services.audit.entries_for(account_id)
    return [(e["outcome"], e["remote_ip"]) for e in entries if e["action"] == "auth.login"]


@pytest.fixture
async def officers(tree, make_staff):
    return [await make_staff(Role.STATION_OFFICER, tree.station) for _ in range(2)]


async def test_behind_the_proxy_a_console_login_is_audited_with_the_officers_address(
    proxied, browsers, officers, services
):
    officer = officers[0]
    signed_in = await visit(browsers, proxied, real_ip=Y).login(officer.username, officer.password)
    assert signed_in.code == 302 and signed_in.headers["Location"] == "/console/"
    assert await login_addresses(services, officer.id) == [("ok", Y)]


async def test_without_the_proxy_a_forged_address_header_is_ignored(
    direct, browsers, officers, services
):
    # The visitor connects from 127.0.0.5 (a loopback address of its own) and claims another.
    officer = officers[0]
    forger = visit(browsers, direct, real_ip=X, source="127.0.0.5")
    assert (await forger.login(officer.username, officer.password)).code == 302
    assert await login_addresses(services, officer.id) == [("ok", "127.0.0.5")]


async def test_forty_failures_against_one_officer_from_one_address_lock_out_nobody_else(
    proxied, browsers, officers
):
    victim, colleague = officers
    attacker = visit(browsers, proxied, real_ip=X)
    statuses = [(await attacker.login(victim.username, "Wrong-password-1")).code for _ in range(40)]
    # Five wrong passwords lock the name for that address; past 30 a minute the address itself.
    assert statuses[:5] == [401] * 5 and set(statuses[5:30]) == {423}
    assert set(statuses[30:]) == {429}
    # The colleague, and the victim too, still sign in from their own desks.
    assert (
        await visit(browsers, proxied, real_ip=Y).login(colleague.username, colleague.password)
    ).code == 302
    assert (
        await visit(browsers, proxied, real_ip=Y).login(victim.username, victim.password)
    ).code == 302


async def test_one_address_trying_many_names_is_still_limited(proxied, browsers, officers, clock):
    officer = officers[0]
    attacker = visit(browsers, proxied, real_ip=X)
    for i in range(30):
        assert (await attacker.login(f"user{i:02d}", "Wrong-password-1")).code == 401
    assert (await attacker.login(officer.username, officer.password)).code == 429
    assert (
        await visit(browsers, proxied, real_ip=Y).login(officer.username, officer.password)
    ).code == 302
    clock.advance(dt.timedelta(seconds=61))
    assert (await attacker.login(officer.username, officer.password)).code == 302


async def enrol_totp(fetch, make_staff, officer, clock) -> str:
    token = await make_staff.token_for(officer)
    begun = await fetch("/api/v1/me/totp", "POST", token=token)
    secret = begun.json["secret"]
    fetch.never_reveal(secret, except_paths=("/api/v1/me/totp",))
    code = totp.code_at(secret, clock.now())
    confirmed = await fetch(
        "/api/v1/me/totp/confirm", "POST", token=token, json_body={"code": code}
    )
    assert confirmed.status == 204
    clock.advance(dt.timedelta(seconds=30))  # a fresh step: the enrolment's code is spent
    return secret


async def test_a_right_password_without_the_code_is_answered_and_counted_as_a_wrong_one(
    proxied, browsers, officers, fetch, make_staff, clock, services
):
    officer, other = officers
    secret = await enrol_totp(fetch, make_staff, officer, clock)
    desk = visit(browsers, proxied, real_ip=Y)
    wrong = await visit(browsers, proxied, real_ip=X).login(other.username, "Wrong-password-1")
    refusals = [await desk.login(officer.username, officer.password) for _ in range(5)]
    for refused in refusals:
        assert (refused.code, page_error(refused)) == (wrong.code, page_error(wrong))
        assert refused.code == 401 and "用户名或密码错误" in page_error(refused)
        assert 'id="totp"' in refused.body.decode()  # the code's field is always on the form
    # Each was a failed attempt: the fifth locked the name at this desk, even for the right code.
    locked = await desk.login(officer.username, officer.password, totp.code_at(secret, clock.now()))
    assert locked.code == 423
    outcomes = [o for o, _ in await login_addresses(services, officer.id)]
    assert outcomes.count("refused:totp_missing") == 5 and "ok" not in outcomes

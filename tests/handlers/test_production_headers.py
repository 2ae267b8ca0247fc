"""With ANBANG_ENV=production, over real HTTP: every answer carries Strict-Transport-Security
(a year at least, subdomains included) and every cookie, Tornado's `_xsrf` included, is Secure;
in development neither (plain HTTP on a developer's machine)."""

from __future__ import annotations

import dataclasses
import re
import urllib.parse
from collections.abc import AsyncIterator

import pytest_asyncio
from tornado.httpclient import AsyncHTTPClient, HTTPResponse

from models.passwords import TEST_COST
from models.policy import Role
from server.app import assemble_api
from tests.conftest import ServedApp, serve_runtime


@pytest_asyncio.fixture
async def production(store, config, vault, clock) -> AsyncIterator[ServedApp]:
    """The real application under a production configuration, on a free loopback port."""
    settings = dataclasses.replace(config, env="production")
    assert settings.production
    served = await serve_runtime(assemble_api(store, settings, vault, clock, hash_cost=TEST_COST))
    yield served
    served.server.stop()
    await served.server.close_all_connections()
    await served.runtime.services.close()


def hsts_max_age(answer: HTTPResponse) -> int:
    value = answer.headers.get("Strict-Transport-Security", "")
    found = re.fullmatch(r"max-age=(\d+); includeSubDomains", value)
    assert found, value
    return int(found.group(1))


def cookies(answer: HTTPResponse) -> dict[str, str]:
    return {c.split("=", 1)[0]: c for c in answer.headers.get_list("Set-Cookie")}


def is_secure(cookie: str) -> bool:
    return "secure" in [part.strip().lower() for part in cookie.split(";")[1:]]


async def fetch_all(base_url: str, *, officer: tuple[str, str]) -> list[HTTPResponse]:
    """Answers of every kind: API (found, not found, refused, wrong method), console pages, the
    XSRF refusal, a console login that sets the session cookie and a logout that clears it."""
    client = AsyncHTTPClient(force_instance=True)

    async def get(path: str, **kwargs: object) -> HTTPResponse:
        return await client.fetch(
            base_url + path, raise_error=False, follow_redirects=False, **kwargs
        )

    try:
        answers = [
            await get("/healthz"),
            await get("/api/v1/no/such/route"),
            await get("/api/v1/subjects"),  # no token: 401
            await get("/healthz", method="POST", body="{}"),
            await get("/mp/v1/no/such/route"),
            await get("/console/no/such/page"),
        ]
        login_page = await get("/console/login")
        answers.append(login_page)
        xsrf = cookies(login_page)["_xsrf"].split(";")[0].split("=", 1)[1]
        answers.append(
            await get("/console/login", method="POST", body="username=x&password=y")
        )  # no XSRF token: 403
        form = urllib.parse.urlencode(
            {"username": officer[0], "password": officer[1], "_xsrf": xsrf, "next": "/console/"}
        )
        signed_in = await get(
            "/console/login", method="POST", body=form, headers={"Cookie": f"_xsrf={xsrf}"}
        )
        answers.append(signed_in)
        session = cookies(signed_in)["anbang_console"].split(";")[0]
        answers.append(
            await get(
                "/console/logout",
                method="POST",
                body=urllib.parse.urlencode({"_xsrf": xsrf}),
                headers={"Cookie": f"_xsrf={xsrf}; {session}"},
            )
        )
        return answers
    finally:
        client.close()


async def test_production_answers_carry_hsts_and_only_secure_cookies(production, make_staff, tree):
    officer = await make_staff(Role.COUNTY_OFFICER, tree.county)
    answers = await fetch_all(production.base_url, officer=(officer.username, officer.password))
    statuses = {a.code for a in answers}
    assert {200, 302, 401, 403, 404, 405} <= statuses, statuses
    set_cookies: dict[str, str] = {}
    for answer in answers:
        assert hsts_max_age(answer) >= 365 * 24 * 3600, answer.effective_url
        set_cookies.update(cookies(answer))
    # The XSRF cookie, the session cookie, and the expired one that clears it on logout.
    assert {"_xsrf", "anbang_console"} <= set(set_cookies), set_cookies
    assert "anbang_console" in cookies(answers[-1])
    for answer in answers:
        for cookie in answer.headers.get_list("Set-Cookie"):
            assert is_secure(cookie), cookie


async def test_development_answers_carry_neither(api, make_staff, tree):
    officer = await make_staff(Role.COUNTY_OFFICER, tree.county)
    answers = await fetch_all(api.base_url, officer=(officer.username, officer.password))
    for answer in answers:
        assert "Strict-Transport-Security" not in answer.headers
        for cookie in answer.headers.get_list("Set-Cookie"):
            assert not is_secure(cookie), cookie

"""Every console page x every role, as the API's access matrix walks the API: a page renders,
redirects, or refuses with a page in Chinese, never a server error; and every item of a role's
menu opens without a refusal (the menu shows only what the role may do)."""

from __future__ import annotations

import re
from dataclasses import dataclass

import pytest
import tornado.web
from tornado.httpclient import AsyncHTTPClient, HTTPResponse

from handlers.console.base import ERRORS_ZH, SESSION_COOKIE
from models.policy import Role

REFUSED = ERRORS_ZH["forbidden"]
# An id no record has: the page answers "not found" (or, for a role that may not ask, refuses).
NOBODY = "6b0000000000000000000000"
# What each of a route's named groups is filled with (the file and program are real).
FILLERS = {
    "step": lambda pattern: re.search(r"\(\?P<step>([a-z_]+)", pattern).group(1),
    "what": lambda _pattern: "transition",
    "name": lambda _pattern: "console.js",
}
MENU = re.compile(r"<nav>(.*?)</nav>", re.S)
LINK = re.compile(r'href="(/console/[^"]*)"')


@dataclass
class Visit:
    status: int
    body: str
    location: str


@pytest.fixture
def console_routes(api) -> list[str]:
    app: tornado.web.Application = api.runtime.app
    found = []
    for rule in app.wildcard_router.rules:
        for inner in getattr(rule.target, "rules", [rule]):
            pattern = inner.matcher.regex.pattern.rstrip("$")
            handler = inner.target
            if not pattern.startswith("/console") or not isinstance(handler, type):
                continue
            if handler.get is tornado.web.RequestHandler.get:
                continue  # POST only
            found.append(pattern)
    assert len(found) >= 40, found
    return found


def concrete(pattern: str, subject_id: str, program_id: str) -> str:
    def fill(match: re.Match[str]) -> str:
        name = match.group(1)
        if name == "subject_id":
            return subject_id
        if name == "program_id":
            return program_id
        if name in FILLERS:
            return FILLERS[name](pattern)
        return NOBODY

    path = re.sub(r"\(\?P<([a-z_]+)>(?:[^()]|\([^()]*\))*\)", fill, pattern)
    return path.replace("\\", "")


async def visit(api, token: str, path: str) -> Visit:
    client = AsyncHTTPClient(force_instance=True)
    try:
        answer: HTTPResponse = await client.fetch(
            api.base_url + path,
            headers={"Cookie": f"{SESSION_COOKIE}={token}"},
            follow_redirects=False,
            raise_error=False,
            request_timeout=120,
        )
    finally:
        client.close()
    return Visit(
        answer.code,
        (answer.body or b"").decode("utf-8", "replace"),
        answer.headers.get("Location", ""),
    )


async def test_every_console_page_for_every_role_answers_kindly(
    api, supervised, fetch, make_staff, tree, console_routes
):
    officer = await supervised.officer_token()
    programs = await fetch(f"/api/v1/subjects/{supervised.subject_id}/programs", token=officer)
    program_id = programs.json["items"][0]["id"]
    paths = [concrete(p, supervised.subject_id, program_id) for p in console_routes]
    checked = 0
    failures: list[tuple[str, str, int]] = []
    menus: dict[Role, list[str]] = {}
    for role in Role:
        account = await make_staff(role, tree.home_for(role))
        token = await make_staff.token_for(account)
        home = await visit(api, token, "/console/")
        assert home.status == 200, (role, home.status)
        nav = MENU.search(home.body)
        menus[role] = LINK.findall(nav.group(1)) if nav else []
        for path in paths:
            page = await visit(api, token, path)
            if page.status >= 500:
                failures.append((str(role), path, page.status))
                continue
            if path.endswith(("/ack", "/review", "/decision", "/intake", "/assign")):
                # A form's address opened as a page: said so, in Chinese.
                assert page.status == 405 and "请从页面上的按钮办理" in page.body, (role, path)
            elif page.status in (301, 302, 303):
                assert page.location.startswith("/console"), (role, path, page.location)
            elif "static" not in path and "/pdf" not in path and "/photo" not in path:
                assert "<html" in page.body and "安帮" in page.body, (role, path)
            checked += 1
        # Every menu item opens, and none of them is a refusal.
        for link in menus[role]:
            page = await visit(api, token, link)
            assert page.status == 200, (role, link, page.status)
            assert REFUSED not in page.body, (role, link)
    assert failures == []
    assert checked == len(paths) * len(Role)
    # The menu is the role's: administrators see no casework, officers see their decisions.
    assert "/console/audit" in menus[Role.AUDIT_ADMIN]
    assert "/console/alerts" not in menus[Role.AUDIT_ADMIN]
    assert "/console/leave" not in menus[Role.SOCIAL_WORKER]
    assert "/console/checkins" in menus[Role.STATION_OFFICER]
    assert "/console/assistance" in menus[Role.ASSISTANCE_COORDINATOR]
    assert menus[Role.SECURITY_ADMIN] == ["/console/"]

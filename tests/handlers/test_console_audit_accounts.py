"""The audit administrator picks an account by name, never by typing its id: GET
/api/v1/audit/accounts finds accounts by part of a name or username, and the audit page takes one
match, offers several to choose from and says when there is none. A refused login of an account
that exists names the account; only a name that matches no account reads 未知账号."""

from __future__ import annotations

import re

import pytest

from models.policy import Role
from server.app import SYSTEM
from tests.browser_support import login
from tests.conftest import Account
from tests.mp_support import local


@pytest.fixture
async def desk(fetch, make_staff, tree, clock, services):
    """An auditor; two officers named 陈静 and 陈明 (the second one's login refused once), and a
    refused login for a username no account has."""
    clock.set(local(2026, 11, 2, 9, 0))
    auditor = await make_staff(Role.AUDIT_ADMIN, tree.city)
    officers = {}
    for name, username, org in (
        ("陈静", "chenjing", tree.station),
        ("陈明", "chenming", tree.station2),
    ):
        password = "Good-audit-12345"
        view = await services.staff.create(
            SYSTEM,
            username=username,
            password=password,
            name=name,
            role=Role.STATION_OFFICER,
            org_id=org.id,
        )
        officers[name] = Account(view.id, username, password, Role.STATION_OFFICER, org)
    for username in (officers["陈明"].username, "nobody-here"):
        wrong = await fetch(
            "/api/v1/auth/login",
            "POST",
            json_body={"username": username, "password": "not-the-password-1"},
        )
        assert wrong.status == 401
    good = await fetch(
        "/api/v1/auth/login",
        "POST",
        json_body={"username": officers["陈静"].username, "password": officers["陈静"].password},
    )
    assert good.status == 200, good.body
    auditor.token = await make_staff.token_for(auditor)
    return auditor, officers


async def test_a_refused_login_names_the_account_when_it_exists(fetch, desk):
    auditor, officers = desk
    answer = await fetch("/api/v1/audit/events?kind=login", token=auditor.token)
    refused = [e for e in answer.json["items"] if e["outcome"].startswith("refused:")]
    assert len(refused) == 2
    # No one signed in: the entry has no actor, but it names the account tried.
    assert {e["actor_id"] for e in refused} == {None}
    known = [e for e in refused if e["actor_name"]]
    assert [(e["actor_name"], e["actor_username"]) for e in known] == [
        ("陈明", officers["陈明"].username)
    ]
    assert next(e for e in refused if not e["actor_name"])["actor_username"] is None


async def test_accounts_are_found_by_part_of_a_name_or_username(fetch, desk, make_staff, tree):
    auditor, officers = desk
    found = await fetch("/api/v1/audit/accounts?q=陈", token=auditor.token)
    assert found.status == 200, found.body
    assert [a["name"] for a in found.json["items"]] == ["陈明", "陈静"]  # by name
    one = await fetch("/api/v1/audit/accounts?q=静", token=auditor.token)
    assert [a["id"] for a in one.json["items"]] == [officers["陈静"].id]
    by_username = await fetch(
        f"/api/v1/audit/accounts?q={officers['陈明'].username.upper()}", token=auditor.token
    )
    assert [a["id"] for a in by_username.json["items"]] == [officers["陈明"].id]
    # A pattern is text, never a regular expression.
    assert (await fetch("/api/v1/audit/accounts?q=.", token=auditor.token)).json["items"] == []
    bad = await fetch("/api/v1/audit/accounts?q=a*b", token=auditor.token)
    assert bad.status == 422 and '"q"' in bad.body.decode()
    assert (await fetch("/api/v1/audit/accounts", token=auditor.token)).status == 422
    # The audit administrator's alone.
    officer = await make_staff(Role.COUNTY_OFFICER, tree.county)
    refused = await fetch("/api/v1/audit/accounts?q=陈", token=await make_staff.token_for(officer))
    assert refused.status == 403


async def test_the_audit_page_picks_the_account_by_name(page, fetch, desk, screenshot_dir):
    auditor, officers = desk
    await login(page, auditor, "/console/audit")
    text = await page.inner_text("#audit-events")
    # The refused login of 陈明 names him; the unknown username stays unknown.
    assert text.count("(未知账号)") == 1
    refused_row = page.locator("#audit-events tbody tr", has_text="陈明")
    assert "被拒绝" in await refused_row.inner_text()
    assert officers["陈明"].username in await refused_row.inner_text()
    # No one was signed in: neither the account's role nor "the system".
    assert "未登录" in await refused_row.inner_text()
    assert "系统" not in await refused_row.inner_text()

    # Several accounts match: each is offered by name, its id carried in the link.
    await page.fill("#account", "陈")
    await page.click("#audit-filters button[type=submit]")
    await page.wait_for_url(re.compile(r".*account=.*"))
    choices = page.locator("#account-choices a.choice")
    assert await choices.count() == 2
    assert officers["陈静"].id not in await page.inner_text("main")
    await page.screenshot(path=screenshot_dir / "audit-account-choices.png", full_page=True)
    await page.click("#account-choices a.choice:has-text('陈静')")
    await page.wait_for_url(re.compile(rf".*actor_id={officers['陈静'].id}.*"))
    assert await page.input_value("#account") == f"陈静({officers['陈静'].username})"
    api = await fetch(
        f"/api/v1/audit/events?kind=login&actor_id={officers['陈静'].id}", token=auditor.token
    )
    rows = page.locator("#audit-events tbody tr")
    assert await rows.count() == len(api.json["items"]) == 1
    assert "陈静" in await rows.first.inner_text()
    await page.screenshot(path=screenshot_dir / "audit-account-chosen.png", full_page=True)

    # One match is taken at once; none is said.
    await page.click("#account-clear")
    await page.fill("#account", "明")
    await page.click("#audit-filters button[type=submit]")
    await page.wait_for_url(re.compile(r".*account=.*"))
    assert await page.input_value("#account") == f"陈明({officers['陈明'].username})"
    await page.click("#account-clear")
    await page.fill("#account", "王")
    await page.click("#audit-filters button[type=submit]")
    await page.wait_for_url(re.compile(r".*account=.*"))
    assert "没有找到" in await page.inner_text("#account-error")

"""Alerts in numbered pages: the API counts what the caller sees (not the alerts about files the
caller's role does not reach) and pages through them latest first; the console's alerts page
says how many there are and pages the open and the acknowledged lists each on its own."""

from __future__ import annotations

import datetime as dt
import re

import pytest

from models.clock import LOCAL_TZ
from models.policy import Role
from tests.browser_support import login
from tests.subject_factories import subject_body

OPEN_ASSIGNED, OPEN_OTHER, ACKNOWLEDGED = 27, 18, 23


@pytest.fixture
async def many(fetch, tree, make_staff, services, clock):
    """A station with two people, one assigned to the social worker: 27 open alerts about the
    assigned one, 18 about the other, each a day apart (the latest first), and 23 acknowledged."""
    clock.set(dt.datetime(2026, 11, 2, 9, 0, tzinfo=LOCAL_TZ))
    officer = await make_staff(Role.STATION_OFFICER, tree.station)
    social = await make_staff(Role.SOCIAL_WORKER, tree.station)
    officer.token = await make_staff.token_for(officer)
    social.token = await make_staff.token_for(social)
    ids = []
    for name in ("王五", "赵六"):
        created = await fetch(
            "/api/v1/subjects",
            "POST",
            token=officer.token,
            json_body=subject_body(tree.station.id, name=name),
        )
        assert created.status == 201, created.body
        ids.append(created.json["id"])
    assigned = await fetch(
        f"/api/v1/subjects/{ids[0]}/assignments",
        "PUT",
        json_body={"social_worker_ids": [social.id]},
        token=officer.token,
    )
    assert assigned.status == 200, assigned.body
    start = clock.now()
    docs = []
    for n in range(OPEN_ASSIGNED + OPEN_OTHER + ACKNOWLEDGED):
        at = start - dt.timedelta(days=n)
        doc = {
            "kind": "obligation_missed",
            "org_id": tree.station.id,
            "org_path": list(tree.station.path),
            "subject_id": ids[0] if n % 5 < 3 else ids[1],
            "created_at": at,
            "details": {"kind": "remote_checkin", "window_end": at.isoformat()},
        }
        if n >= OPEN_ASSIGNED + OPEN_OTHER:
            doc.update(status="acknowledged", acknowledged_at=at, acknowledged_by=officer.id)
        docs.append(doc)
    assert await services.alerts.raise_many(docs) == len(docs)
    seen_by_social = sum(
        1 for d in docs if d["subject_id"] == ids[0] and d.get("status") != "acknowledged"
    )
    return officer, social, ids, seen_by_social


async def pages_of(fetch, token: str, query: str, per_page: int) -> tuple[list[dict], list[int]]:
    items, totals, page = [], [], 1
    while True:
        answer = await fetch(f"/api/v1/alerts?{query}&page={page}&limit={per_page}", token=token)
        assert answer.status == 200, answer.body
        body = answer.json
        assert (body["page"], body["per_page"]) == (page, per_page)
        totals.append(body["total"])
        if not body["items"]:
            return items, totals
        assert len(body["items"]) <= per_page
        items += body["items"]
        page += 1


async def test_the_alerts_come_in_pages_counted_as_the_caller_sees_them(fetch, many):
    officer, social, ids, seen_by_social = many
    opened, totals = await pages_of(fetch, officer.token, "status=open", 20)
    assert set(totals) == {OPEN_ASSIGNED + OPEN_OTHER} and len(opened) == 45
    # Latest first, each alert once across the pages.
    assert len({a["id"] for a in opened}) == 45
    times = [a["created_at"] for a in opened]
    assert times == sorted(times, reverse=True)
    first = await fetch("/api/v1/alerts?status=open&page=3&limit=20", token=officer.token)
    assert len(first.json["items"]) == 5

    # The social worker sees only the alerts about the person assigned to them, and the count
    # says so: no page comes up short because of alerts hidden from them.
    mine, totals = await pages_of(fetch, social.token, "status=open", 10)
    assert set(totals) == {seen_by_social} and len(mine) == seen_by_social
    assert {a["subject_id"] for a in mine} == {ids[0]}
    full = await fetch("/api/v1/alerts?status=open&page=1&limit=10", token=social.token)
    assert len(full.json["items"]) == 10

    done, totals = await pages_of(fetch, officer.token, "status=acknowledged", 10)
    assert set(totals) == {ACKNOWLEDGED} and len(done) == ACKNOWLEDGED
    # Without `page`, the first page of the default size.
    default = await fetch("/api/v1/alerts", token=officer.token)
    assert default.json["page"] == 1 and default.json["total"] == 45 + ACKNOWLEDGED
    bad = await fetch("/api/v1/alerts?page=0", token=officer.token)
    assert bad.status == 422


async def test_the_console_pages_open_and_acknowledged_alerts_apart(
    page, fetch, many, screenshot_dir
):
    officer, _, _, _ = many
    await login(page, officer, "/console/alerts")
    assert "共 45 条,第 1 / 3 页" in await page.inner_text("#alerts-count")
    assert "共 23 条,第 1 / 2 页" in await page.inner_text("#done-count")
    assert await page.locator("#alerts tbody tr").count() == 20
    first_page = await page.locator("#alerts tbody tr").first.get_attribute("id")
    await page.screenshot(path=screenshot_dir / "alerts-paged.png", full_page=True)

    await page.click("#alerts-pager a[rel=next]")
    await page.wait_for_url(re.compile(r".*/console/alerts\?page=2$"))
    assert "第 2 / 3 页" in await page.inner_text("#alerts-count")
    rows = page.locator("#alerts tbody tr")
    assert await rows.count() == 20
    assert await rows.first.get_attribute("id") != first_page
    # The API's second page, row for row.
    second = await fetch("/api/v1/alerts?status=open&page=2&limit=20", token=officer.token)
    assert [await rows.nth(i).get_attribute("id") for i in range(20)] == [
        f"alert-{a['id']}" for a in second.json["items"]
    ]
    # The acknowledged list pages on its own, keeping the open list's page.
    await page.click("#done-pager a[rel=next]")
    await page.wait_for_url(re.compile(r".*/console/alerts\?page=2&done=2$"))
    assert await page.locator("#alerts-done tbody tr").count() == 3
    assert "第 2 / 3 页" in await page.inner_text("#alerts-count")
    await page.click("#alerts-pager a:text('末页')")
    await page.wait_for_url(re.compile(r".*page=3.*"))
    assert await page.locator("#alerts tbody tr").count() == 5

"""Whose access log to read is chosen by the person's exact name, ID number or phone, never by a
typed file id: GET /api/v1/audit/files answers the matching files in the caller's scope by station
and opening day (nothing the file says), audited by blind index; the audit page opens one match
at once and offers several by station and day."""

from __future__ import annotations

import datetime as dt
import json
import re

import pytest

from models.policy import Role
from tests.browser_support import login
from tests.mp_support import local
from tests.subject_factories import subject_body


@pytest.fixture
async def files(fetch, make_staff, tree, clock):
    """Two files of people named 孙丽 at two stations of the county, one 孙丽 in another city, and
    a city audit administrator."""
    clock.set(local(2026, 11, 2, 9, 0))
    auditor = await make_staff(Role.AUDIT_ADMIN, tree.city)
    opened = {}
    for key, org, phone in (
        ("station", tree.station, "13911112222"),
        ("station2", tree.station2, "13933334444"),
        ("elsewhere", tree.other_station, "13955556666"),
    ):
        officer = await make_staff(Role.STATION_OFFICER, org)
        body = subject_body(org.id, name="孙丽", gender="female", phone=phone)
        created = await fetch(
            "/api/v1/subjects",
            "POST",
            token=await make_staff.token_for(officer),
            json_body=body,
        )
        assert created.status == 201, created.body
        opened[key] = {"id": created.json["id"], **body}
        clock.advance(dt.timedelta(days=1))
    auditor.token = await make_staff.token_for(auditor)
    return auditor, opened


async def test_files_are_found_by_exact_name_id_number_or_phone_within_scope(
    fetch, files, store, make_staff, tree
):
    auditor, opened = files
    by_name = await fetch("/api/v1/audit/files?q=孙丽", token=auditor.token)
    assert by_name.status == 200, by_name.body
    items = by_name.json["items"]
    # Both of the city's, oldest first; the other city's 孙丽 is not the auditor's to see.
    assert [i["id"] for i in items] == [opened["station"]["id"], opened["station2"]["id"]]
    assert [i["station"] for i in items] == ["五马司法所", "南汇司法所"]
    assert [i["opened_on"] for i in items] == ["2026-11-02", "2026-11-03"]
    assert {i["matched"] for i in items} == {"name"}
    # Nothing the file says is answered.
    assert "孙丽" not in by_name.body.decode()
    assert opened["station"]["id_number"] not in by_name.body.decode()

    number = opened["station2"]["id_number"]
    by_number = await fetch(f"/api/v1/audit/files?q={number}", token=auditor.token)
    assert [(i["id"], i["matched"]) for i in by_number.json["items"]] == [
        (opened["station2"]["id"], "id_number")
    ]
    by_phone = await fetch("/api/v1/audit/files?q=13911112222", token=auditor.token)
    assert [i["id"] for i in by_phone.json["items"]] == [opened["station"]["id"]]
    # Exact only: part of a name finds nothing.
    assert (await fetch("/api/v1/audit/files?q=孙", token=auditor.token)).json["items"] == []

    # The search is on record by its blind-index values, never by what was typed.
    entries = [
        e async for e in store.database["audit"].find({"action": "subjects.access_log_lookup"})
    ]
    assert len(entries) == 4  # the four searches above
    assert all("孙丽" not in json.dumps(e, default=str) for e in entries)
    assert all(number not in json.dumps(e, default=str) for e in entries)

    bad = await fetch("/api/v1/audit/files?q=孙丽*", token=auditor.token)
    assert bad.status == 422 and '"q"' in bad.body.decode()
    worker = await make_staff(Role.SOCIAL_WORKER, tree.station)
    refused = await fetch("/api/v1/audit/files?q=孙丽", token=await make_staff.token_for(worker))
    assert refused.status == 403


async def test_the_audit_page_finds_the_file_by_name_not_by_id(page, fetch, files, screenshot_dir):
    auditor, opened = files
    await login(page, auditor, "/console/audit")
    # One match (the phone) opens the file's access log at once.
    await page.fill("#file-log input[name=q]", "13933334444")
    await page.click("#file-log button[type=submit]")
    await page.wait_for_url(
        re.compile(rf".*/console/subjects/{opened['station2']['id']}/access-log")
    )
    api = await fetch(
        f"/api/v1/subjects/{opened['station2']['id']}/access-log", token=auditor.token
    )
    assert api.status == 200
    # Two files of one name: each offered by station and opening day, no id and no name shown.
    await page.goto(page.url.split("/console/")[0] + "/console/audit")
    await page.fill("#file-log input[name=q]", "孙丽")
    await page.click("#file-log button[type=submit]")
    await page.wait_for_url(re.compile(r".*/console/audit/file\?q=.*"))
    choices = page.locator("#file-choices a.choice")
    assert await choices.count() == 2
    text = await page.inner_text("#file-choices")
    assert "五马司法所" in text and "2026-11-02" in text and "南汇司法所" in text
    assert opened["station"]["id"] not in await page.inner_text("main")
    await page.screenshot(path=screenshot_dir / "audit-file-choices.png", full_page=True)
    await page.click("#file-choices a.choice:has-text('南汇司法所')")
    await page.wait_for_url(
        re.compile(rf".*/console/subjects/{opened['station2']['id']}/access-log")
    )
    # Nothing found is said in Chinese.
    await page.goto(page.url.split("/console/")[0] + "/console/audit/file?q=王五")
    assert "没有" in await page.inner_text("#file-error")

"""Finding people and keeping their case files at the console: the case list (search, filters,
sorting, pages, counts) through the API and in a real browser, a case file opened and edited
(field errors in Chinese, nothing half-saved, a kind word on a version conflict), a binding code
shown as a QR code that the mini-program then binds with, and every role x page answered."""

from __future__ import annotations

import datetime as dt
import re
from urllib.parse import quote

import pytest
import segno
from playwright.async_api import Page
from tornado.httpclient import AsyncHTTPClient

from models.caseload import MAX_SUBJECTS
from models.policy import Role
from tests.browser_support import login
from tests.mp_support import local
from tests.subject_factories import resident_id, subject_body


@pytest.fixture
async def casework(tree, make_staff, fetch, clock):
    """A station with 25 case files (one a probationer with a program, one a juvenile), a
    social worker assigned to three, a station officer, a county officer and one file in the
    second station of the county."""
    clock.set(local(2026, 11, 2, 9, 0))
    officer = await make_staff(Role.STATION_OFFICER, tree.station)
    county = await make_staff(Role.COUNTY_OFFICER, tree.county)
    worker = await make_staff(Role.SOCIAL_WORKER, tree.station)
    token = await make_staff.token_for(officer)
    county_token = await make_staff.token_for(county)
    ids: list[str] = []
    bodies: list[dict] = []
    for i in range(25):
        birth = dt.date(2010, 5, 1) if i == 7 else dt.date(1980 + i % 20, 1 + i % 12, 3)
        body = subject_body(
            tree.station.id, name=f"测试{i:02d}", birth=birth, phone=f"1390000{i:04d}"
        )
        created = await fetch("/api/v1/subjects", "POST", json_body=body, token=token)
        assert created.status == 201, created.body
        ids.append(created.json["id"])
        bodies.append(body)
    elsewhere = await fetch(
        "/api/v1/subjects",
        "POST",
        json_body=subject_body(tree.station2.id, name="南汇一人"),
        token=county_token,
    )
    assert elsewhere.status == 201
    for sid in ids[:3]:
        assigned = await fetch(
            f"/api/v1/subjects/{sid}/assignments",
            "PUT",
            json_body={"social_worker_ids": [worker.id]},
            token=token,
        )
        assert assigned.status == 200, assigned.body
    program = await fetch(
        f"/api/v1/subjects/{ids[0]}/programs",
        "POST",
        json_body={
            "type": "community_corrections",
            "start_date": "2026-11-02",
            "end_date": "2027-11-01",
            "sentence_type": "probation",
        },
        token=token,
    )
    assert program.status == 201, program.body
    return {
        "officer": officer,
        "county": county,
        "worker": worker,
        "ids": ids,
        "bodies": bodies,
        "elsewhere": elsewhere.json["id"],
        "make_staff": make_staff,
    }


# --- the list through the API -----------------------------------------------------------------


async def test_the_list_counts_pages_and_searches_within_scope(fetch, tree, casework):
    token = await casework["make_staff"].token_for(casework["officer"])
    first = await fetch("/api/v1/subjects?page=1&limit=10", token=token)
    assert first.status == 200, first.body
    assert (first.json["total"], first.json["page"], first.json["per_page"]) == (25, 1, 10)
    assert len(first.json["items"]) == 10
    assert set(first.json["org_names"].values()) == {"五马司法所"}
    third = await fetch("/api/v1/subjects?page=3&limit=10", token=token)
    assert len(third.json["items"]) == 5
    seen = {i["id"] for i in first.json["items"]} | {i["id"] for i in third.json["items"]}
    assert len(seen) == 15
    # Newest first by default; oldest first on request.
    oldest = await fetch("/api/v1/subjects?sort=oldest&limit=1", token=token)
    assert oldest.json["items"][0]["id"] == casework["ids"][0]
    # Exact search by name, by ID number and by phone, all through the blind indexes.
    body = casework["bodies"][4]
    for q in (body["name"], body["id_number"], body["phone"]):
        found = await fetch("/api/v1/subjects?q=" + q, token=token)
        assert [i["id"] for i in found.json["items"]] == [casework["ids"][4]], q
        assert found.json["total"] == 1
    # The station's officer does not reach the other station's file; the county does.
    name = "?q=" + "南汇一人"
    assert (await fetch("/api/v1/subjects" + name, token=token)).json["total"] == 0
    county = await casework["make_staff"].token_for(casework["county"])
    assert (await fetch("/api/v1/subjects?page=1", token=county)).json["total"] == 26
    station2 = await fetch(f"/api/v1/subjects?station={tree.station2.id}", token=county)
    assert [i["id"] for i in station2.json["items"]] == [casework["elsewhere"]]


async def test_the_list_filters_by_worker_program_state_and_flags(fetch, casework):
    token = await casework["make_staff"].token_for(casework["officer"])
    worker = casework["worker"]
    mine = await fetch(f"/api/v1/subjects?worker={worker.id}", token=token)
    assert {i["id"] for i in mine.json["items"]} == set(casework["ids"][:3])
    assert set(mine.json["worker_names"].values()) == {"职员3"}
    pending = await fetch("/api/v1/subjects?program_status=pending_intake", token=token)
    assert [i["id"] for i in pending.json["items"]] == [casework["ids"][0]]
    juvenile = await fetch("/api/v1/subjects?flag=juvenile", token=token)
    assert [i["id"] for i in juvenile.json["items"]] == [casework["ids"][7]]
    unassigned = await fetch("/api/v1/subjects?flag=unassigned,juvenile", token=token)
    assert unassigned.json["total"] == 1
    assert (await fetch("/api/v1/subjects?flag=overdue", token=token)).json["total"] == 0
    # The social worker sees only the three assigned files.
    own = await casework["make_staff"].token_for(worker)
    listed = await fetch("/api/v1/subjects?page=1", token=own)
    assert listed.json["total"] == 3
    # Bad values name the parameter; a cursor does not mix with numbered pages.
    cursor = casework["ids"][1]
    for query, field in (
        ("flag=late", "flag"),
        ("sort=name", "sort"),
        ("page=0", "page"),
        ("program_status=x", "program_status"),
        (f"page=1&cursor={cursor}", "cursor"),
    ):
        refused = await fetch("/api/v1/subjects?" + query, token=token)
        assert refused.status == 422, query
        assert refused.error["details"][0]["field"] == field


# --- in the browser ---------------------------------------------------------------------------


async def search(page: Page, text: str) -> list[str]:
    await page.fill("#q", text)
    await page.click("#case-filters button[type=submit]")
    await page.wait_for_load_state()
    return [
        (await row.get_attribute("id") or "").removeprefix("case-")
        for row in await page.locator("#case-list tbody tr[id]").all()
    ]


async def total(fetch, token: str, query: str = "page=1") -> int:
    listed = await fetch("/api/v1/subjects?" + query, token=token)
    assert listed.status == 200, listed.body
    return int(listed.json["total"])


async def test_an_officer_finds_people_opens_and_edits_a_file_and_binds_it(
    page, casework, fetch, mp_clients, tree, screenshot_dir
):
    officer, ids, bodies = casework["officer"], casework["ids"], casework["bodies"]
    await login(page, officer, "/console/subjects")
    assert page.url.endswith("/console/subjects")
    assert "共 25 份档案" in await page.inner_text("#case-count")
    assert await page.locator("#case-list tbody tr[id]").count() == 20
    # Codes never shown: states, populations and stations in Chinese, by name.
    shown = await page.inner_text("main")
    assert "在册" in shown and "五马司法所" in shown and "active" not in shown
    await page.screenshot(path=screenshot_dir / "case-list.png", full_page=True)
    # Search by name, then by ID number: the one person.
    assert await search(page, bodies[4]["name"]) == [ids[4]]
    assert await search(page, bodies[9]["id_number"]) == [ids[9]]
    # What was searched for travels in the form's body, never in a URL.
    assert bodies[9]["id_number"] not in page.url and "q=" not in page.url
    assert await search(page, "查无此人") == []
    assert "没有符合条件的档案" in await page.inner_text("#case-list")
    # Filters and paging: the second page holds the last five; a flag narrows to the juvenile.
    await page.fill("#q", "")
    await page.click("#case-filters button[type=submit]")
    await page.click(".pager a[rel=next]")
    await page.wait_for_load_state()
    assert "第 2 / 2 页" in await page.inner_text("#case-count")
    assert await page.locator("#case-list tbody tr[id]").count() == 5
    await page.check("input[name=flag][value=juvenile]")
    await page.click("#case-filters button[type=submit]")
    await page.wait_for_load_state()
    assert "共 1 份档案" in await page.inner_text("#case-count")
    assert "未成年" in await page.inner_text(f"#case-{ids[7]}")

    # A new case file: a bad ID number is named in Chinese beside the field, nothing stored.
    token = await casework["make_staff"].token_for(officer)
    await page.click("#menu-new-subject")
    await page.wait_for_url("**/console/subjects/new")
    fresh = subject_body(tree.station.id, name="新来的人", birth=dt.date(1991, 4, 5))
    await page.fill("#name", fresh["name"])
    await page.fill(
        "#id_number", fresh["id_number"][:-1] + ("0" if fresh["id_number"][-1] != "0" else "1")
    )
    await page.fill("#phone", fresh["phone"])
    await page.select_option("#gender", "male")
    await page.fill("#birth_date", fresh["birth_date"])
    await page.fill("#address", fresh["address"])
    await page.select_option("#org_id", tree.station.id)
    await page.click("#subject-form button[type=submit]")
    assert "证件号码不正确" in await page.inner_text("#id_number-error")
    assert await page.input_value("#name") == "新来的人"  # what was typed is kept
    assert await page.input_value("#address") == fresh["address"]
    assert await total(fetch, token) == 25
    assert await total(fetch, token, "q=新来的人") == 0
    await page.screenshot(path=screenshot_dir / "case-file-new-error.png", full_page=True)
    await page.fill("#id_number", fresh["id_number"])
    await page.click("#subject-form button[type=submit]")
    await page.wait_for_url("**/edit?saved=created")
    assert "档案已建立" in await page.inner_text("#saved")
    assert await total(fetch, token) == 26
    found = await fetch("/api/v1/subjects?q=" + fresh["id_number"], token=token)
    (created,) = found.json["items"]
    assert created["name"] == "新来的人" and created["birth_date"] == "1991-04-05"

    # Edited by two: the second to save is told kindly, sees the fresh values, keeps theirs.
    await page.goto(f"/console/subjects/{ids[2]}/edit")
    other = await fetch(
        f"/api/v1/subjects/{ids[2]}",
        "PATCH",
        json_body={"version": 2, "phone": "13911112222"},
        token=token,
    )
    assert other.status == 200, other.body
    await page.fill("#address", "浙江省温州市鹿城区信河街1号")
    await page.click("#subject-form button[type=submit]")
    assert "该档案已被他人修改，请查看最新内容后重试" in await page.inner_text("#conflict")
    assert await page.inner_text("#fresh-phone") == "13911112222"
    assert await page.input_value("#address") == "浙江省温州市鹿城区信河街1号"
    unchanged = await fetch(f"/api/v1/subjects/{ids[2]}", token=token)
    assert unchanged.json["address"] == bodies[2]["address"]
    await page.screenshot(path=screenshot_dir / "case-file-conflict.png", full_page=True)
    await page.click("#subject-form button[type=submit]")  # saved deliberately, over the fresh
    await page.wait_for_url("**/edit?saved=saved")
    saved = await fetch(f"/api/v1/subjects/{ids[2]}", token=token)
    assert saved.json["address"] == "浙江省温州市鹿城区信河街1号"
    assert saved.json["phone"] == "13911112222"  # the other's change stands

    # A binding code, shown as a QR code of the code itself, that the mini-program binds with.
    await page.goto(f"/console/subjects/{created['id']}/binding")
    await page.click("main form button[type=submit]")
    await page.wait_for_load_state()
    code = (await page.inner_text("#binding-code")).strip()
    assert re.fullmatch(r"[0-9A-Z]{4,32}", code)
    assert await page.inner_text("#binding-expires")
    svg = await page.inner_html("#qr")
    assert svg.startswith("<svg") and "qrline" in svg
    expected = segno.make_qr(code, error="m").svg_inline(border=4, omitsize=True)
    assert _path(svg) == _path(expected)  # the matrix drawn is the code's
    # A full QR code (21 modules or more) with its 4-module quiet zone, not a Micro QR.
    side = int(re.search(r'viewBox="0 0 (\d+) \1"', svg).group(1))
    assert side >= 21 + 8
    await page.screenshot(path=screenshot_dir / "binding.png", full_page=True)
    await page.emulate_media(media="print")
    assert not await page.locator("header.top").is_visible()
    assert await page.locator("#qr svg").is_visible()
    client = mp_clients()
    assert (await client.login("casework-new-person")).status == 200
    bound = await client.bind(code)
    assert bound.status == 200, bound.body
    assert bound.json["subject_id"] == created["id"]


def _path(svg: str) -> str:
    match = re.search(r' d="([^"]+)"', svg)
    assert match, svg[:200]
    return match.group(1)


async def test_a_social_worker_finds_only_the_assigned_files(page, casework):
    bodies, ids = casework["bodies"], casework["ids"]
    await login(page, casework["worker"], "/console/subjects")
    assert "共 3 份档案" in await page.inner_text("#case-count")
    assert await search(page, bodies[1]["name"]) == [ids[1]]
    assert await search(page, bodies[1]["phone"]) == [ids[1]]
    assert await search(page, bodies[10]["id_number"]) == []  # not assigned: not found
    menu = await page.inner_text("header nav")
    assert "档案查询" in menu and "新建档案" in menu
    # No station or worker filters for a role that cannot read the tree or the accounts.
    assert await page.locator("#station").count() == 0


async def test_a_county_officer_sees_the_whole_county(page, casework, tree):
    await login(page, casework["county"], "/console/subjects")
    assert "共 26 份档案" in await page.inner_text("#case-count")
    await page.select_option("#station", tree.station2.id)
    await page.click("#case-filters button[type=submit]")
    await page.wait_for_load_state()
    assert "共 1 份档案" in await page.inner_text("#case-count")
    assert "南汇一人" in await page.inner_text("#case-list")
    assert "南汇司法所" in await page.inner_text("#case-list")


async def test_an_expired_session_returns_to_the_case_list(page, casework, clock):
    await login(page, casework["officer"], "/console/subjects")
    clock.set(clock.now() + dt.timedelta(minutes=31))
    await page.goto("/console/subjects/new")
    assert "next=%2Fconsole%2Fsubjects%2Fnew" in page.url
    await page.fill("#username", casework["officer"].username)
    await page.fill("#password", casework["officer"].password)
    await page.click("button[type=submit]")
    await page.wait_for_url("**/console/subjects/new")


# --- every role on every casework page ----------------------------------------------------------


async def test_each_role_gets_the_page_or_a_clear_refusal_never_more(
    api, casework, tree, make_staff, fetch, services
):
    """Each role on each page: the page when its policy allows, else a refusal page in
    Chinese; never a 500, and never a file outside the caller's scope."""
    outsider = await make_staff(Role.STATION_OFFICER, tree.other_station)
    far = await fetch(
        "/api/v1/subjects",
        "POST",
        json_body=subject_body(tree.other_station.id, name="湖滨一人"),
        token=await make_staff.token_for(outsider),
    )
    assert far.status == 201
    far_id, near_id = far.json["id"], casework["ids"][5]
    pages = {
        "/console/subjects": "subjects.read",
        "/console/subjects?q=湖滨一人": "subjects.read",
        "/console/subjects/new": "subjects.create",
        f"/console/subjects/{near_id}/edit": "subjects.update",
        f"/console/subjects/{near_id}/binding": "subjects.binding_code",
        f"/console/subjects/{far_id}/edit": "subjects.update",
        f"/console/subjects/{far_id}/binding": "subjects.binding_code",
    }
    client = AsyncHTTPClient(force_instance=True)
    try:
        for role in Role:
            account = await make_staff(role, tree.home_for(role))
            token = await make_staff.token_for(account)
            allowed = {
                a for a in set(pages.values()) if services.policy.allows(account.identity, a)
            }
            for path, action in pages.items():
                answer = await client.fetch(
                    api.base_url + quote(path, safe="/?=&"),
                    headers={"Cookie": f"anbang_console={token}"},
                    follow_redirects=False,
                    raise_error=False,
                )
                where = (role, path, answer.code)
                body = answer.body.decode()
                assert answer.code in (200, 403, 404), where
                assert far_id not in body, where
                assert "湖滨一人" not in body.replace('value="湖滨一人"', ""), where
                if action not in allowed:
                    assert answer.code == 403 and "您没有权限执行此操作" in body, where
                elif far_id in path:
                    assert answer.code == 404 and "不在您的管辖范围内" in body, where
                if answer.code == 200:
                    assert action in allowed, where
                    # The menu offers only what the role may do.
                    assert ("档案查询" in body) == ("subjects.read" in allowed), where
                    assert ('id="menu-new-subject"' in body) == ("subjects.create" in allowed), (
                        where
                    )
    finally:
        client.close()


async def test_the_days_work_says_when_it_is_cut_and_links_the_full_list(
    page, tree, make_staff, fetch, clock
):
    """More files than the caseload looks at: the page says so, and links to the case list."""
    clock.set(local(2026, 11, 2, 9, 0))
    officer = await make_staff(Role.STATION_OFFICER, tree.station)
    birth = dt.date(1975, 6, 1)
    rows = "".join(
        f"人员{i},resident,{resident_id(birth, 'male')},139{i:08d},male,1975-06-01,"
        f"五马街{i}号,330302001\n"
        for i in range(MAX_SUBJECTS + 1)
    )
    imported = await fetch(
        "/api/v1/subjects/import",
        "POST",
        token=await make_staff.token_for(officer),
        body=("name,id_type,id_number,phone,gender,birth_date,address,org_code\n" + rows).encode(),
        headers={"Content-Type": "text/csv"},
    )
    assert imported.status == 201, imported.body
    await login(page, officer)
    cut = await page.inner_text("#caseload-cut")
    assert f"仅显示前 {MAX_SUBJECTS} 份" in cut and f"共 {MAX_SUBJECTS + 1} 份" in cut
    await page.click("#caseload-cut a")
    await page.wait_for_url("**/console/subjects")
    assert f"共 {MAX_SUBJECTS + 1} 份档案" in await page.inner_text("#case-count")

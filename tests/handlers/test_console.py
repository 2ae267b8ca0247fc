"""The officer console in a real browser (Debian's headless Chromium driven by Playwright):
login, the caseload, a leave decision at the right step, a flagged check-in reviewed, a report
signed and downloaded; field errors in Chinese that keep what was typed; an expired session that
returns to the page after login; and the security headers, cookie and XSRF check."""

from __future__ import annotations

import datetime as dt
import io
from pathlib import Path

from openpyxl import load_workbook
from playwright.async_api import Page
from tornado.httpclient import AsyncHTTPClient

from models import totp
from models.audit import AuditContext
from models.policy import Role
from tests.browser_support import login
from tests.mp_support import STATION_CENTRE, local


async def logout(page: Page) -> None:
    await page.click("header .who button")
    await page.wait_for_url("**/console/login")


async def test_login_shows_field_errors_in_chinese_and_keeps_the_username(page, supervised):
    await page.goto("/console/")
    assert page.url.endswith("/console/login?next=%2Fconsole%2F")
    await page.fill("#username", supervised.officer.username)
    await page.click("button[type=submit]")
    assert await page.text_content("#password-error") == "请输入密码"
    assert await page.input_value("#username") == supervised.officer.username
    await page.fill("#password", "not-the-password")
    await page.click("button[type=submit]")
    assert "用户名或密码错误" in await page.text_content("p.error")
    assert await page.input_value("#username") == supervised.officer.username
    await page.fill("#password", supervised.officer.password)
    await page.click("button[type=submit]")
    await page.wait_for_url("**/console/")
    assert await page.text_content("h1") == "今日工作"
    # The person's daily check-in is due today and shows on the station's caseload.
    row = page.locator("#caseload tbody tr").first
    assert "定位签到" in await row.inner_text()


async def test_the_case_file_shows_visits_notes_and_check_ins(page, supervised, fetch):
    token = await supervised.officer_token()
    visit = await fetch(
        f"/api/v1/subjects/{supervised.subject_id}/visits",
        "POST",
        token=token,
        json_body={"kind": "talk", "note": "入矫谈话,已告知报到要求"},
    )
    assert visit.status == 201
    await login(page, supervised.officer, f"/console/subjects/{supervised.subject_id}")
    assert "入矫谈话" in await page.inner_text("#visits")
    assert await page.locator("#checkin-timeline li").count() >= 1
    await page.click("main button[type=submit]")  # an empty note
    assert await page.text_content("#text-error") == "请填写记录内容"
    await page.fill("#text", "电话回访,情况稳定")
    await page.click("main button[type=submit]")
    await page.wait_for_url(f"**/console/subjects/{supervised.subject_id}")
    assert "电话回访" in await page.inner_text(".notes")


async def test_a_leave_request_is_decided_at_each_level_in_turn(page, supervised, fetch):
    person = supervised.client
    leave = await person.call(
        "POST",
        "/mp/v1/leave-requests",
        {
            "start_date": "2026-11-10",
            "end_date": "2026-11-19",
            "destination": "杭州市西湖区",
            "reason": "陪同母亲就医",
        },
        headers={"Idempotency-Key": "console-leave-0001"},
    )
    assert leave.status == 201 and leave.json["next_level"] == "station"
    row = f"#leave-{leave.json['id']}"

    await login(page, supervised.county, "/console/leave")
    assert "非本级审批" in await page.inner_text(row)  # the station acts first
    await logout(page)

    await login(page, supervised.officer, "/console/leave")
    assert page.url.endswith("/console/leave")
    assert "杭州市西湖区" in await page.inner_text(row)
    # No comment: the error shows beside the field and nothing is decided.
    await page.click(f"{row} button[name=approve][value='1']")
    assert "请填写审批意见" in await page.inner_text(row)
    await page.fill(f"{row} textarea", "情况属实,同意上报")
    await page.click(f"{row} button[name=approve][value='1']")
    await page.wait_for_url("**/console/leave")
    assert "待 县(区)司法局 审批" in await page.inner_text(row)
    assert "非本级审批" in await page.inner_text(row)
    await logout(page)

    await login(page, supervised.county, "/console/leave")
    await page.fill(f"{row} textarea", "同意")
    await page.click(f"{row} button[name=approve][value='1']")
    await page.wait_for_url("**/console/leave")
    assert await page.locator(row).count() == 0  # decided: no longer pending
    approved = await fetch(
        "/api/v1/leave-requests?status=approved", token=await supervised.county_token()
    )
    assert [r["id"] for r in approved.json["items"]] == [leave.json["id"]]


async def test_a_flagged_checkin_is_reviewed_with_a_reason(page, supervised, clock):
    far = (STATION_CENTRE.lat + 0.5, STATION_CENTRE.lng)  # some 55 km away
    checkin = await supervised.client.check_in(
        lat=far[0],
        lng=far[1],
        coord_type="wgs84",
        captured_at=clock.now(),
        key="console-check-0001",
    )
    assert checkin.status == 201 and checkin.json["status"] == "outside_area"
    row = f"#checkin-{checkin.json['id']}"

    await login(page, supervised.officer, "/console/checkins")
    assert "不可见" not in await page.inner_text(row)
    await page.fill(f"{row} textarea", "   ")
    await page.click(f"{row} button[name=accept][value='1']")
    assert "请填写审核理由" in await page.inner_text(row)
    await page.fill(f"{row} textarea", "经电话核实,在外地就医,已补假")
    await page.click(f"{row} button[name=accept][value='1']")
    await page.wait_for_url("**/console/checkins")
    assert await page.locator(row).count() == 0


async def test_a_report_is_generated_drilled_signed_and_downloaded(page, supervised, clock):
    # The person missed their first day; the month is over on 1 December.
    clock.set(local(2026, 12, 1, 9, 0))
    await login(page, supervised.officer, "/console/reports")
    await page.fill("#month", "2026-12")
    await page.click("main button[type=submit]")
    assert "该月份尚未结束" in await page.text_content("#month-error")
    assert await page.input_value("#month") == "2026-12"
    await page.fill("#month", "2026-11")
    await page.click("main button[type=submit]")
    await page.wait_for_url("**/console/reports/*")
    assert await page.text_content("#report-status") == "草稿"
    # The chart library drew its charts (the page carries no inline script).
    await page.wait_for_function(
        "document.getElementById('chart-programs').toDataURL().length > 2000"
    )
    await page.click("#figures a >> nth=0")
    await page.wait_for_url("**/subjects?figure=*")
    assert await page.locator("#drill tbody tr").count() == 1
    await page.go_back()
    await page.fill("#comment", "已核对")
    await page.click("#sign")
    await page.wait_for_url("**/console/reports/*")
    assert await page.text_content("#report-status") == "已签署"

    # Someone else's report id: a page saying so, never a download.
    refused = await page.goto("/console/reports/6b0000000000000000000000/download?format=pdf")
    assert refused.status == 404 and "未找到" in await page.inner_text("main")
    await page.go_back()
    async with page.expect_download() as waiting:
        await page.click("#download-xlsx")
    download = await waiting.value
    assert download.suggested_filename.endswith(".xlsx")
    book = load_workbook(io.BytesIO((await download.path()).read_bytes()))
    assert "汇总" in book.sheetnames


async def test_a_county_report_marks_the_station_where_nothing_was_recorded(
    page, supervised, clock, screenshot_dir
):
    # The county's second station, 南汇, has nobody supervised and nothing recorded in November.
    clock.set(local(2026, 12, 1, 9, 0))
    await login(page, supervised.county, "/console/reports")
    await page.fill("#month", "2026-11")
    await page.click("main button[type=submit]")
    await page.wait_for_url("**/console/reports/*")
    assert await page.locator("#units tbody tr").count() == 2
    quiet = page.locator("#units tbody tr.quiet")
    assert await quiet.count() == 1
    assert "南汇司法所" in await quiet.inner_text()
    assert "本月无记录" in await quiet.inner_text()
    await page.screenshot(path=screenshot_dir / "report-county.png", full_page=True)


async def test_an_expired_session_returns_to_the_page_after_login(page, supervised, clock):
    await login(page, supervised.officer, "/console/checkins")
    assert page.url.endswith("/console/checkins")
    clock.set(clock.now() + dt.timedelta(minutes=31))  # idle past the staff session's limit
    await page.goto("/console/alerts")
    assert "/console/login" in page.url and "next=%2Fconsole%2Falerts" in page.url
    await page.fill("#username", supervised.officer.username)
    await page.fill("#password", supervised.officer.password)
    await page.click("button[type=submit]")
    await page.wait_for_url("**/console/alerts")


async def test_headers_cookie_and_forms_are_locked_down(api, supervised):
    client = AsyncHTTPClient(force_instance=True)
    try:
        login_page = await client.fetch(api.base_url + "/console/login")
        csp = login_page.headers["Content-Security-Policy"]
        assert "script-src 'self'" in csp and "unsafe-inline" not in csp
        assert login_page.headers["X-Frame-Options"] == "DENY"
        # A form posted without its XSRF token is refused.
        forged = await client.fetch(
            api.base_url + "/console/login",
            method="POST",
            body="username=x&password=y",
            raise_error=False,
        )
        assert forged.code == 403
        xsrf = next(
            c.split(";")[0].split("=", 1)[1]
            for c in login_page.headers.get_list("Set-Cookie")
            if c.startswith("_xsrf=")
        )
        signed_in = await client.fetch(
            api.base_url + "/console/login",
            method="POST",
            body=f"username={supervised.officer.username}&password={supervised.officer.password}"
            f"&_xsrf={xsrf}&next=/console/",
            headers={"Cookie": f"_xsrf={xsrf}"},
            follow_redirects=False,
            raise_error=False,
        )
        assert signed_in.code == 302
        cookie = next(
            c for c in signed_in.headers.get_list("Set-Cookie") if c.startswith("anbang_console=")
        )
        assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and "Path=/console" in cookie
        assert "Secure" not in cookie  # development over plain HTTP; production sets it
        # No personal data in console URLs: the next hop is a path, never a name or number.
        assert signed_in.headers["Location"] == "/console/"
    finally:
        client.close()


def png_sizes(target: Path) -> dict[str, int]:
    return {p.name: p.stat().st_size for p in target.glob("*.png")}


async def test_screenshots_of_the_key_pages(page, supervised, clock, screenshot_dir):
    """`make screenshots` keeps these in var/screenshots/; `make test` checks they render."""
    target = screenshot_dir
    person = supervised.client
    await person.call(
        "POST",
        "/mp/v1/leave-requests",
        {
            "start_date": "2026-11-10",
            "end_date": "2026-11-19",
            "destination": "杭州市西湖区",
            "reason": "陪同母亲就医",
        },
        headers={"Idempotency-Key": "shots-leave-0001"},
    )
    await person.check_in(
        lat=STATION_CENTRE.lat + 0.5,
        lng=STATION_CENTRE.lng,
        coord_type="wgs84",
        captured_at=clock.now(),
        key="shots-check-0001",
    )
    shots = {"login": "/console/login"}
    await page.goto("/console/login")
    await page.screenshot(path=target / "login.png")
    await login(page, supervised.officer)
    shots = {
        "caseload": "/console/",
        "subject": f"/console/subjects/{supervised.subject_id}",
        "leave": "/console/leave",
        "checkins": "/console/checkins",
        "assistance": "/console/assistance",
        "reports": "/console/reports",
    }
    for name, path in shots.items():
        await page.goto(path)
        assert page.url.endswith(path), (name, page.url)
        await page.screenshot(path=target / f"{name}.png", full_page=True)
        if name == "subject":
            # States in Chinese, never the codes behind them.
            shown = await page.text_content("main")
            assert "在册" in shown and "待报到" in shown
            assert "pending_intake" not in shown and "active" not in shown
    await page.fill("#month", "2026-10")
    await page.click("main button[type=submit]")
    await page.wait_for_url("**/console/reports/*")
    await page.screenshot(path=target / "report.png", full_page=True)
    sizes = png_sizes(target)
    assert len(sizes) >= 8 and min(sizes.values()) > 5000, sizes


async def test_totp_is_enrolled_then_asked_for_at_login(page, supervised, clock):
    await login(page, supervised.officer, "/console/totp")
    secret = (await page.text_content(".secret code")).strip()
    await page.fill("#code", "12345")
    await page.click("main button[type=submit]")
    assert await page.text_content("#code-error") == "请输入 6 位数字动态验证码"
    assert await page.input_value("#code") == "12345"
    wrong = "000000" if totp.code_at(secret, clock.now()) != "000000" else "111111"
    await page.fill("#code", wrong)
    await page.click("main button[type=submit]")
    assert "不正确" in await page.text_content("#code-error")
    await page.fill("#code", totp.code_at(secret, clock.now()))
    await page.click("main button[type=submit]")
    await page.wait_for_url("**/console/")
    await logout(page)

    clock.set(clock.now() + dt.timedelta(seconds=60))  # a fresh step: codes work once
    # Without the code the answer is a wrong password's: it never confirms the password.
    await login(page, supervised.officer)
    assert "用户名或密码错误" in await page.text_content("p.error")
    assert await page.locator("#totp-error").count() == 0
    await page.fill("#password", supervised.officer.password)
    await page.fill("#totp", totp.code_at(secret, clock.now()))
    await page.click("button[type=submit]")
    await page.wait_for_url("**/console/")


async def test_a_sanction_is_decided_at_the_callers_step(page, supervised, fetch):
    proposed = await fetch(
        f"/api/v1/subjects/{supervised.subject_id}/sanctions",
        "POST",
        token=await supervised.officer_token(),
        json_body={"kind": "warn", "reason": "未经批准离开县域"},
    )
    assert proposed.status == 201, proposed.body
    level = proposed.json["next_level"]
    deciding = supervised.officer if level == "station" else supervised.county
    other = supervised.county if level == "station" else supervised.officer
    row = f"#sanction-{proposed.json['id']}"
    await login(page, other, "/console/sanctions")
    assert "非本级审批" in await page.inner_text(row)
    await logout(page)
    await login(page, deciding, "/console/sanctions")
    assert "警告" in await page.inner_text(row)
    await page.click(f"{row} button[name=approve][value='1']")
    assert "请填写审批意见" in await page.inner_text(row)
    await page.fill(f"{row} textarea", "事实清楚,同意")
    await page.click(f"{row} button[name=approve][value='1']")
    await page.wait_for_url("**/console/sanctions")
    after = await fetch("/api/v1/sanctions?status=pending", token=await supervised.county_token())
    decided = [s for s in after.json["items"] if s["id"] == proposed.json["id"]]
    assert not decided or decided[0]["next_level"] != level


async def test_a_role_change_is_told_at_the_console_until_dismissed(
    page, services, tree, make_staff, screenshot_dir
):
    """三员分立: the owner learns of what the security administrator did to their account."""
    security = await make_staff(Role.SECURITY_ADMIN, tree.county)
    as_security = AuditContext(security.identity, request_id="console-test")
    worker = await make_staff(Role.SOCIAL_WORKER, tree.station)
    await services.staff.grant_role(as_security, worker.id, None, False)
    await login(page, worker)
    await page.wait_for_url("**/console/")
    assert "尚未授予角色" in await page.text_content("header .who")
    assert await page.is_visible("#no-role")
    assert "收回" in await page.text_content("#notices")
    # Nothing it may not do is offered: no menu, and no page answering "no permission".
    assert await page.locator("header nav").count() == 0
    assert "没有权限" not in await page.text_content("main")
    await page.screenshot(path=screenshot_dir / "no-role.png", full_page=True)
    await services.staff.grant_role(as_security, worker.id, "social_worker", False)
    await page.goto("/console/")  # the grant ended the session: sign in again
    await login(page, worker)
    await page.wait_for_url("**/console/")
    assert "社会工作者" in await page.text_content("header .who")
    assert await page.locator("#no-role").count() == 0
    notices = await page.text_content("#notices")
    assert "收回" in notices and "安全管理员已授予您“社会工作者”角色" in notices
    await page.screenshot(path=screenshot_dir / "notices.png", full_page=True)
    await page.click("#notices button")
    await page.wait_for_url("**/console/")
    assert await page.locator("#notices").count() == 0

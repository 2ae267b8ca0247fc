"""The case file's last gaps at the console, walked in a real browser and checked through the
API: an officer suspends a program (reason, confirmation) and resumes it; a prison's release
notice opens the 安置帮教 program, flagged late with its statutory basis; a social worker
records a 社区戒毒 person's drug test; the needs assessment is shown on the file, with who
made it and when, and fills the form in. Bad forms name the field in Chinese, store nothing."""

from __future__ import annotations

import pytest
from playwright.async_api import Page

from models.policy import Role
from tests.browser_support import login
from tests.mp_support import local
from tests.subject_factories import subject_body

CORRECTIONS = {
    "type": "community_corrections",
    "start_date": "2026-11-02",
    "end_date": "2027-11-01",
    "sentence_type": "probation",
}
DETOX = {"type": "drug_rehab", "start_date": "2026-11-02", "mode": "community_detox"}


@pytest.fixture
async def gaps(tree, make_staff, fetch, clock):
    """At 五马司法所: its officer, a social worker, and three files assigned to the worker: a
    probationer (active after intake), a person awaiting release from prison, and a person in
    社区戒毒."""
    clock.set(local(2026, 11, 2, 9, 0))
    officer = await make_staff(Role.STATION_OFFICER, tree.station)
    worker = await make_staff(Role.SOCIAL_WORKER, tree.station)
    for account in (officer, worker):
        account.token = await make_staff.token_for(account)
    ids = {}
    for key, name in (("probationer", "孙伟"), ("released", "钱进"), ("detox", "郑浩")):
        created = await fetch(
            "/api/v1/subjects",
            "POST",
            token=officer.token,
            json_body=subject_body(tree.station.id, name=name),
        )
        assert created.status == 201, created.body
        ids[key] = created.json["id"]
        assigned = await fetch(
            f"/api/v1/subjects/{ids[key]}/assignments",
            "PUT",
            token=officer.token,
            json_body={"social_worker_ids": [worker.id]},
        )
        assert assigned.status == 200, assigned.body
    programs = {}
    for key, body in (("probationer", CORRECTIONS), ("detox", DETOX)):
        opened = await fetch(
            f"/api/v1/subjects/{ids[key]}/programs", "POST", token=officer.token, json_body=body
        )
        assert opened.status == 201, opened.body
        programs[key] = opened.json["id"]
        intake = await fetch(
            f"/api/v1/programs/{programs[key]}/intake",
            "POST",
            token=officer.token,
            json_body={"date": "2026-11-02"},
        )
        assert intake.status == 200, intake.body
    return {"officer": officer, "worker": worker, "ids": ids, "programs": programs}


async def submit(page: Page, form: str) -> None:
    await page.click(f"{form} button[type=submit]")
    await page.wait_for_load_state()


def accept_dialogs(page: Page) -> list[str]:
    asked: list[str] = []

    async def accept(dialog) -> None:
        asked.append(dialog.message)
        await dialog.accept()

    page.on("dialog", accept)
    return asked


async def test_an_officer_suspends_a_program_and_resumes_it(
    page, browser, api, fetch, gaps, screenshot_dir
):
    officer, pid = gaps["officer"], gaps["programs"]["probationer"]
    sid = gaps["ids"]["probationer"]
    await login(page, officer, f"/console/subjects/{sid}")
    await page.click(f"#program-{pid} a")
    assert await page.inner_text("#program-status") == "执行中"
    assert await page.locator("#resume").count() == 0
    # Neither a reason nor the tick: both named in Chinese, and the program is untouched.
    await submit(page, "#suspend")
    assert "理由" in await page.inner_text("#reason-error")
    assert await page.inner_text("#confirm-error") == "请勾选确认中止"
    assert (await fetch(f"/api/v1/programs/{pid}", token=officer.token)).json["status"] == "active"
    # A reason without the tick: still nothing, the reason kept as typed.
    await page.fill("#suspend-reason", "因病住院治疗,暂不能参加矫正活动")
    await submit(page, "#suspend")
    assert await page.inner_text("#confirm-error") == "请勾选确认中止"
    assert await page.input_value("#suspend-reason") == "因病住院治疗,暂不能参加矫正活动"
    assert (await fetch(f"/api/v1/programs/{pid}", token=officer.token)).json["status"] == "active"
    await page.check("#suspend-confirm")
    await submit(page, "#suspend")
    assert await page.inner_text("#saved") == "项目已中止。"
    assert await page.inner_text("#program-status") == "中止"
    stored = (await fetch(f"/api/v1/programs/{pid}", token=officer.token)).json
    assert stored["status"] == "suspended"
    assert stored["history"][-1]["to"] == "suspended"
    history = await page.inner_text("#program-history")
    assert "中止" in history and "因病住院治疗" in history and "suspended" not in history
    # Suspended: it can be resumed, not suspended again.
    assert await page.locator("#suspend").count() == 0
    await page.screenshot(path=screenshot_dir / "casefile-program-suspended.png", full_page=True)
    await submit(page, "#resume")  # no reason: named, nothing changes
    assert "理由" in await page.inner_text("#reason-error")
    assert (await fetch(f"/api/v1/programs/{pid}", token=officer.token)).json[
        "status"
    ] == "suspended"
    await page.fill("#resume-reason", "出院,恢复执行")
    await submit(page, "#resume")
    assert await page.inner_text("#saved") == "项目已恢复执行。"
    assert await page.inner_text("#program-status") == "执行中"
    resumed = (await fetch(f"/api/v1/programs/{pid}", token=officer.token)).json
    assert resumed["status"] == "active"
    assert [h["to"] for h in resumed["history"][-2:]] == ["suspended", "active"]

    # Someone else suspended it meanwhile: the stale form is refused kindly, nothing doubled.
    elsewhere = await fetch(
        f"/api/v1/programs/{pid}/transition",
        "POST",
        token=officer.token,
        json_body={"to": "suspended", "reason": "外出就医"},
    )
    assert elsewhere.status == 200, elsewhere.body
    await page.fill("#suspend-reason", "再次中止")
    await page.check("#suspend-confirm")
    await submit(page, "#suspend")
    assert "状态已变化" in await page.inner_text("#form-error")
    again = (await fetch(f"/api/v1/programs/{pid}", token=officer.token)).json
    assert again["status"] == "suspended" and len(again["history"]) == len(resumed["history"]) + 1

    # A social worker reads the program but may not suspend it: no such form is offered.
    worker_page = await browser.new_context(
        base_url=api.base_url, viewport={"width": 1366, "height": 768}, locale="zh-CN"
    )
    other = await worker_page.new_page()
    try:
        await login(other, gaps["worker"], f"/console/programs/{pid}")
        assert await other.inner_text("#program-status") == "中止"
        assert await other.locator("#suspend").count() == 0
        assert await other.locator("#resume").count() == 0
    finally:
        await worker_page.close()


async def test_a_late_release_notice_opens_resettlement_with_its_basis(
    page, fetch, gaps, screenshot_dir
):
    officer, sid = gaps["officer"], gaps["ids"]["released"]
    await login(page, officer, f"/console/subjects/{sid}")
    await page.click("#release-notice-link")
    assert await page.input_value("#received_on") == "2026-11-02"  # today, by default
    # Nothing typed: each field named in Chinese; no program opened.
    await page.fill("#received_on", "")
    await submit(page, "#notice-form")
    assert "监狱" in await page.inner_text("#prison-error")
    assert "刑满释放日期" in await page.inner_text("#release_date-error")
    assert "收到通知日期" in await page.inner_text("#received_on-error")
    assert (await fetch(f"/api/v1/subjects/{sid}/programs", token=officer.token)).json[
        "items"
    ] == []
    # A notice received tomorrow: the service's sentence, in Chinese, beside the field.
    await page.fill("#prison", "浙江省第一监狱")
    await page.fill("#release_date", "2026-11-12")
    await page.fill("#received_on", "2026-11-03")
    await submit(page, "#notice-form")
    assert "不能晚于今天" in await page.inner_text("#received_on-error")
    assert await page.input_value("#prison") == "浙江省第一监狱"
    assert (await fetch(f"/api/v1/subjects/{sid}/programs", token=officer.token)).json[
        "items"
    ] == []
    await page.screenshot(path=screenshot_dir / "casefile-release-notice-error.png", full_page=True)

    # Ten days before release, where the rule asks for thirty: opened, and flagged late.
    await page.fill("#received_on", "2026-11-02")
    await submit(page, "#notice-form")
    assert "刑满释放通知已登记" in await page.inner_text("#saved")
    assert await page.inner_text("#program-status") == "待报到"
    notice = await page.inner_text("#release-notice")
    assert "浙江省第一监狱" in notice and "距释放 10 日" in notice
    assert await page.inner_text("#notice-late") == "通知逾期"
    assert "至少 30 日" in notice
    basis = await page.inner_text("#release-notice-basis")
    assert "司法部" in basis and "释放前一个月" in basis and "30 日" in basis
    assert "resettlement" not in basis and "release_notice" not in basis
    await page.screenshot(path=screenshot_dir / "casefile-release-notice.png", full_page=True)
    (program,) = (await fetch(f"/api/v1/subjects/{sid}/programs", token=officer.token)).json[
        "items"
    ]
    assert program["type"] == "resettlement" and program["status"] == "pending_intake"
    assert program["details"]["release_date"] == "2026-11-12"
    assert program["details"]["prison"] == "浙江省第一监狱"
    recorded = program["details"]["release_notice"]
    assert recorded["received_on"] == "2026-11-02"
    assert recorded["days_ahead"] == 10 and recorded["late"] is True

    # A second notice for the same person: refused in Chinese, nothing more opened.
    await page.goto(f"/console/subjects/{sid}/release-notice")
    await page.fill("#prison", "浙江省第一监狱")
    await page.fill("#release_date", "2026-11-12")
    await submit(page, "#notice-form")
    assert "已有未结束的安置帮教项目" in await page.inner_text("#form-error")
    listed = await fetch(f"/api/v1/subjects/{sid}/programs", token=officer.token)
    assert len(listed.json["items"]) == 1


async def test_a_social_worker_records_a_drug_test_result(page, fetch, gaps, screenshot_dir):
    worker, sid = gaps["worker"], gaps["ids"]["detox"]
    asked = accept_dialogs(page)
    await login(page, worker, f"/console/subjects/{sid}")
    await page.click("#contact-link")
    await page.wait_for_url(f"**/console/subjects/{sid}/contact")
    row = page.locator("#obligations tr[data-kind=drug_test]").first
    assert "尿检" in await row.inner_text()
    row_id = (await row.get_attribute("id")).removeprefix("o-")
    # No outcome chosen: named in Chinese; nothing recorded.
    await row.locator("button:has-text('登记结果')").click()
    await page.wait_for_load_state()
    row = page.locator(f'[id="o-{row_id}"]')
    assert await row.locator(".field-error").inner_text() == "请选择检测结果"
    tests = await fetch(
        f"/api/v1/subjects/{sid}/obligations?from=2026-11-01&to=2026-12-31&kind=drug_test",
        token=worker.token,
    )
    assert all(o["status"] != "done" for o in tests.json["items"])
    # The outcomes are offered in Chinese, never as codes.
    options = await row.locator("select[name=outcome] option").all_inner_texts()
    assert "阴性" in options and "negative" not in options
    await row.locator("select[name=outcome]").select_option(label="阴性")
    await row.locator("button:has-text('登记结果')").click()
    await page.wait_for_load_state()
    assert await page.inner_text("#saved") == "结果已记录。"
    assert any("检测结果" in q for q in asked)  # asked to confirm first
    stored = await fetch(
        f"/api/v1/subjects/{sid}/obligations?from=2026-11-01&to=2026-12-31&kind=drug_test",
        token=worker.token,
    )
    [done] = [o for o in stored.json["items"] if o["id"] == row_id]
    # A negative test meets the obligation (a refusal would count as missed).
    assert done["status"] == "done"
    assert "已完成" in await page.locator(f'[id="o-{row_id}"]').inner_text()
    await page.screenshot(path=screenshot_dir / "contact-drug-test.png", full_page=True)


async def test_the_needs_assessment_is_shown_on_the_file_and_fills_the_form(
    page, fetch, gaps, screenshot_dir
):
    worker, sid = gaps["worker"], gaps["ids"]["released"]
    await login(page, worker, f"/console/subjects/{sid}")
    await page.click("#help-link")
    assert await page.inner_text("#needs-none") == "尚未进行需求评估。"
    for need in ("housing", "income", "employment"):
        await page.check(f"#needs-form input[value={need}]")
    await submit(page, "#needs-form")
    assert await page.inner_text("#saved") == "需求评估已保存。"
    assert "三无" in await page.inner_text("#three-nos")
    listed = await page.inner_text("#needs-list")
    assert listed == "无固定住所、无稳定收入、无业"
    by = await page.inner_text("#needs-by")
    me = (await fetch("/api/v1/me", token=worker.token)).json
    assert by == f"{me['name']} 于 2026-11-02 09:00 评估"
    assert "三无" in await page.inner_text("#current-needs")
    # The form starts from the current assessment.
    assert await page.is_checked("#needs-form input[value=housing]")
    assert await page.is_checked("#needs-form input[value=employment]")
    assert not await page.is_checked("#needs-form input[value=legal]")
    await page.screenshot(path=screenshot_dir / "assistance-needs.png", full_page=True)

    # A change: found work. Unticking it and saving replaces the assessment.
    await page.uncheck("#needs-form input[value=employment]")
    await page.uncheck("#needs-form input[value=income]")
    await submit(page, "#needs-form")
    assert await page.inner_text("#needs-list") == "无固定住所"
    assert await page.locator("#three-nos").count() == 0
    stored = await fetch(f"/api/v1/subjects/{sid}/needs", token=worker.token)
    assert stored.status == 200
    assert stored.json["needs"]["housing"] is True
    assert stored.json["needs"]["employment"] is False
    assert stored.json["three_nos"] is False
    assert stored.json["assessed_by"] == worker.id

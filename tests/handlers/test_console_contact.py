"""Contact work at the console, walked in a real browser and checked through the API: a social
worker records a talk that meets the contact obligation and books counselling from the free
slots; an officer files a 训诫 beside the statutory suggestion, asks for electronic location,
records leave on a person's behalf and the 销假; a referral goes to a resource chosen from the
county's list and waits its turn. Field errors are Chinese and nothing is half-saved."""

from __future__ import annotations

import pytest
from playwright.async_api import Page
from tornado.httpclient import AsyncHTTPClient

from handlers.console.contact import ContactPage, CounselingPage, DecisionsPage, HelpPage
from models.assistance import ReferralStatus
from models.audit import AuditContext
from models.policy import Role
from server.app import SYSTEM
from tests.browser_support import login
from tests.mp_support import local
from tests.subject_factories import subject_body

CORRECTIONS = {
    "type": "community_corrections",
    "start_date": "2026-03-02",
    "end_date": "2027-03-01",
    "sentence_type": "probation",
}
RESETTLEMENT = {
    "type": "resettlement",
    "start_date": "2026-03-02",
    "release_date": "2026-03-02",
    "key_person": True,
}


@pytest.fixture
async def contact_case(tree, make_staff, fetch, clock, services):
    """A station officer, a social worker assigned to a released person (resettlement: a
    contact every so often) and a probationer with a 脱管 episode; a county's 阳光之家 with one
    bed, already taken by the probationer."""
    clock.set(local(2026, 3, 2, 9, 0))
    officer = await make_staff(Role.STATION_OFFICER, tree.station)
    worker = await make_staff(Role.SOCIAL_WORKER, tree.station)
    county = await make_staff(Role.COUNTY_OFFICER, tree.county)
    for account in (officer, worker, county):
        account.token = await make_staff.token_for(account)
    ids = []
    for name, program in (("周明", RESETTLEMENT), ("吴刚", CORRECTIONS)):
        created = await fetch(
            "/api/v1/subjects",
            "POST",
            token=officer.token,
            json_body=subject_body(tree.station.id, name=name),
        )
        sid = created.json["id"]
        ids.append(sid)
        assigned = await fetch(
            f"/api/v1/subjects/{sid}/assignments",
            "PUT",
            token=officer.token,
            json_body={"social_worker_ids": [worker.id]},
        )
        assert assigned.status == 200, assigned.body
        opened = await fetch(
            f"/api/v1/subjects/{sid}/programs", "POST", token=officer.token, json_body=program
        )
        assert opened.status == 201, opened.body
    detached = await fetch(
        f"/api/v1/subjects/{ids[1]}/detachments",
        "POST",
        token=officer.token,
        json_body={"start_date": "2026-02-20", "end_date": "2026-02-25"},
    )
    assert detached.status == 201, detached.body
    home = await fetch(
        "/api/v1/assistance/facilities",
        "POST",
        token=county.token,
        json_body={
            "name": "城东阳光之家",
            "kind": "sunshine_home",
            "org_id": tree.county.id,
            "capacity": 1,
        },
    )
    assert home.status == 201, home.body
    ctx = AuditContext(county.identity, "test")
    placed = await services.assistance.refer(SYSTEM, ids[1], ["housing"], "", home.json["id"])
    await services.assistance.transition(ctx, placed.id, ReferralStatus.APPROVED, None)
    await services.assistance.transition(ctx, placed.id, ReferralStatus.OFFERED, None)
    await services.assistance.place(ctx, placed.id, home.json["id"])
    return {
        "officer": officer,
        "worker": worker,
        "released": ids[0],
        "probationer": ids[1],
        "home": home.json["id"],
    }


def accept_dialogs(page: Page) -> list[str]:
    asked: list[str] = []

    async def accept(dialog) -> None:
        asked.append(dialog.message)
        await dialog.accept()

    page.on("dialog", accept)
    return asked


async def test_a_social_worker_records_a_talk_and_books_counselling(
    page, fetch, contact_case, screenshot_dir
):
    worker, sid = contact_case["worker"], contact_case["released"]
    asked = accept_dialogs(page)
    await login(page, worker, f"/console/subjects/{sid}")
    await page.click("#contact-link")
    await page.wait_for_url(f"**/console/subjects/{sid}/contact")
    contact_row = page.locator("#obligations tr[data-kind=contact]").first
    assert "帮教联系" in await contact_row.inner_text()
    # Nothing typed: the fields are named in Chinese, and nothing is recorded.
    await page.fill("#visit-note", "")
    await page.click("#visit-form button[type=submit]")
    assert await page.inner_text("#visit-place-error") == "请填写地点"
    assert await page.inner_text("#visit-note-error") == "请填写谈话或走访内容"
    visits = await fetch(f"/api/v1/subjects/{sid}/visits", token=worker.token)
    assert visits.json["items"] == []
    await page.select_option("#visit-kind", "talk")
    await page.fill("#visit-place", "社区服务中心")
    await page.fill("#visit-at", "2026-03-02T08:30")
    await page.fill("#visit-note", "了解近况，就业意向为物流。")
    await page.click("#visit-form button[type=submit]")
    assert await page.inner_text("#saved") == "走访/谈话已记录。"
    await page.screenshot(path=screenshot_dir / "contact-work.png", full_page=True)
    visits = await fetch(f"/api/v1/subjects/{sid}/visits", token=worker.token)
    [talk] = visits.json["items"]
    # The place is the visit's own field (sealed like the note), not a line of the note.
    assert (talk["kind"], talk["place"]) == ("talk", "社区服务中心")
    assert talk["note"] == "了解近况，就业意向为物流。"
    assert "社区服务中心" in await page.inner_text("#visits td.place")
    met = await fetch(
        f"/api/v1/subjects/{sid}/obligations?from=2026-03-01&to=2026-03-31&kind=contact",
        token=worker.token,
    )
    assert met.json["items"][0]["status"] == "done"
    assert "已完成" in await page.locator("#obligations tr[data-kind=contact]").first.inner_text()

    # Counselling: a slot chosen from the free ones (who and when), a room named.
    await page.click("#nav-counseling")
    await page.wait_for_url(f"**/console/subjects/{sid}/counseling")
    await page.click("#book-form button[type=submit]")
    assert await page.inner_text("#slot-error") == "请选择时间和咨询师"
    options = await page.locator("#slot option").all_inner_texts()
    assert options[1].startswith("08:00–09:00 ")
    await page.select_option("#slot", index=1)
    await page.fill("#new_room", "谈话室1")
    await page.click("#book-form button[type=submit]")
    assert await page.inner_text("#saved") == "心理辅导已预约。"
    booked = await fetch(f"/api/v1/subjects/{sid}/counseling", token=worker.token)
    [session] = booked.json["items"]
    assert session["status"] == "booked" and session["room"] == "谈话室1"
    assert session["start"].startswith("2026-03-03T00:00")
    # That slot is no longer offered to the same counsellor; the room is now on the list.
    values = await page.locator("#slot option").evaluate_all("os => os.map(o => o.value)")
    assert f"{session['counselor_id']}|2026-03-03T00:00:00Z" not in values
    assert "谈话室1" in await page.inner_text("#room")
    assert "已预约" in await page.inner_text("#sessions")
    await page.screenshot(path=screenshot_dir / "counseling.png", full_page=True)
    await page.click("#sessions button")
    assert await page.inner_text("#saved") == "预约已取消。"
    assert asked and "取消" in asked[-1]
    cancelled = await fetch(f"/api/v1/subjects/{sid}/counseling", token=worker.token)
    assert cancelled.json["items"][0]["status"] == "cancelled"
    # A social worker files no sanction and asks for no electronic location.
    await page.goto(f"/console/subjects/{sid}/decisions")
    assert await page.locator("#sanction-form").count() == 0
    assert await page.locator("#elocation-form").count() == 0
    assert await page.locator("#leave-form").count() == 1
    # The file's leave is listed to the assigned worker, who records the 销假.
    assert "暂无请假" in await page.inner_text("#leaves")


async def test_an_officer_files_an_admonishment_elocation_leave_and_return(
    page, fetch, contact_case, screenshot_dir, make_staff, tree
):
    officer, sid = contact_case["officer"], contact_case["probationer"]
    asked = accept_dialogs(page)
    await login(page, officer, f"/console/subjects/{sid}")
    await page.click("#decisions-link")
    await page.wait_for_url(f"**/console/subjects/{sid}/decisions")
    suggestion = await page.inner_text("#suggestion")
    assert "脱管 5 天" in suggestion and "建议:训诫" in suggestion
    assert "依据:脱管超过 10 天的给予警告" in suggestion
    await page.click("#sanction-form button[type=submit]")
    assert await page.inner_text("#sanction-kind-error") == "请选择奖惩类型"
    assert await page.inner_text("#sanction-reason-error") == "请填写事实和理由"
    assert "建议:训诫" in await page.inner_text("#suggestion")
    await page.screenshot(path=screenshot_dir / "decisions.png", full_page=True)
    await page.select_option("#sanction-kind", "admonish")
    await page.select_option("#detachment_id", index=1)
    await page.fill("#sanction-reason", "2026年2月20日至25日脱离监管。")
    await page.click("#sanction-form button[type=submit]")
    assert await page.inner_text("#saved") == "已提交审批。"
    assert any("审批" in q for q in asked)
    pending = await fetch("/api/v1/sanctions?status=pending", token=officer.token)
    [filed] = [s for s in pending.json["items"] if s["subject_id"] == sid]
    assert filed["kind"] == "admonish" and filed["detachment_id"]

    # Electronic location on the one ground that needs nothing on file.
    await page.select_option("#ground", "revocation_pending")
    await page.fill("#el-start", "2026-03-03")
    await page.fill("#el-end", "2026-05-02")
    await page.fill("#el-reason", "拟提请撤销缓刑。")
    await page.click("#elocation-form button[type=submit]")
    assert "电子定位申请已提交" in await page.inner_text("#saved")
    head = await make_staff(Role.COUNTY_OFFICER, tree.county, is_agency_head=True)
    head_token = await make_staff.token_for(head)
    awaiting = await fetch("/api/v1/elocation-orders?status=pending", token=head_token)
    [order] = [o for o in awaiting.json["items"] if o["subject_id"] == sid]
    assert order["ground"] == "revocation_pending" and order["end_date"] == "2026-05-02"
    assert "审批中" in await page.inner_text(f'[id="order-{order["id"]}"]')
    # Nothing approved yet: nothing to renew, and a renewal asked for names the field.
    await page.click("#elocation-card summary")
    assert "没有可续期的电子定位" in await page.inner_text("#order_id")
    await page.click("#renewal-form button[type=submit]")
    assert await page.inner_text("#order_id-error") == "请选择要续期的电子定位"
    approved = await fetch(
        f"/api/v1/elocation-orders/{order['id']}/decision",
        "POST",
        token=head_token,
        json_body={"approve": True, "comment": "同意"},
    )
    assert approved.json["status"] == "approved"
    # The order to renew is chosen from the person's orders, not typed.
    await page.goto(f"/console/subjects/{sid}/decisions")
    assert "已批准" in await page.inner_text(f'[id="order-{order["id"]}"]')
    await page.click("#elocation-card summary")
    await page.select_option("#order_id", order["id"])
    await page.fill("#renew_end_date", "2026-07-31")
    await page.fill("#renew_reason", "仍需定位。")
    await page.click("#renewal-form button[type=submit]")
    assert await page.inner_text("#saved") == "续期申请已提交。"
    orders = await fetch(f"/api/v1/subjects/{sid}/elocation-orders", token=officer.token)
    renewal, first = orders.json["items"]
    assert (renewal["renews"], renewal["status"], renewal["end_date"]) == (
        order["id"],
        "pending",
        "2026-07-31",
    )
    assert first["renewed_by"] == renewal["id"]
    # Once renewed, the order is no longer offered for renewal.
    await page.click("#elocation-card summary")
    assert await page.locator(f'#order_id option[value="{order["id"]}"]').count() == 0
    assert "已申请续期" in await page.inner_text(f'[id="order-{order["id"]}"]')
    await page.screenshot(path=screenshot_dir / "decisions-elocation.png", full_page=True)
    # The sanction queue names the person.
    await page.goto("/console/sanctions")
    assert "吴刚" in await page.inner_text(f'[id="sanction-{filed["id"]}"]')
    await page.goto(f"/console/subjects/{sid}/decisions")

    # Leave on the person's behalf, decided through the API, then the return (销假).
    await page.click("#leave-form button[type=submit]")
    assert await page.inner_text("#destination-error") == "请填写目的地"
    await page.fill("#lv-start", "2026-03-02")
    await page.fill("#lv-end", "2026-03-04")
    await page.fill("#destination", "杭州市西湖区")
    await page.fill("#leave_reason", "探望生病的母亲")
    await page.click("#leave-form button[type=submit]")
    assert await page.inner_text("#saved") == "请假已登记，待审批。"
    listed = await fetch("/api/v1/leave-requests?status=pending", token=officer.token)
    [leave] = [x for x in listed.json["items"] if x["subject_id"] == sid]
    assert leave["destination"] == "杭州市西湖区" and leave["subject_name"] == "吴刚"
    await page.goto("/console/leave")
    assert "吴刚" in await page.inner_text(f'[id="leave-{leave["id"]}"] .subject-name')
    await page.screenshot(path=screenshot_dir / "leave-named.png", full_page=True)
    await page.goto(f"/console/subjects/{sid}/decisions")
    decided = await fetch(
        f"/api/v1/leave-requests/{leave['id']}/decision",
        "POST",
        token=officer.token,
        json_body={"approve": True, "comment": "同意"},
    )
    assert decided.status == 200, decided.body
    await page.reload()
    row = page.locator("#leaves tr", has_text="杭州市西湖区")
    assert "已批准" in await row.inner_text()
    await row.locator("input[name=date]").fill("2026-03-02")
    await row.locator("button").click()
    assert await page.inner_text("#saved") == "已销假。"
    assert any("销假" in q for q in asked)
    approved = await fetch("/api/v1/leave-requests?status=approved", token=officer.token)
    [returned] = [x for x in approved.json["items"] if x["id"] == leave["id"]]
    assert returned["returned_on"] == "2026-03-02"
    assert "已销假" in await page.inner_text("#leaves")


async def test_a_referral_goes_to_a_resource_from_the_list_and_waits_its_turn(
    page, fetch, contact_case, screenshot_dir
):
    officer, sid = contact_case["officer"], contact_case["released"]
    accept_dialogs(page)
    await login(page, officer, f"/console/subjects/{contact_case['probationer']}/help")
    # The probationer holds the only bed.
    assert "已安置" in await page.inner_text("#referrals")
    await page.goto(f"/console/subjects/{sid}/help")
    await page.click("#refer-form button[type=submit]")
    assert await page.inner_text("#needs-error") == "请至少选择一项需求"
    assert await page.inner_text("#resource-error") == "请从列表中选择帮扶资源"
    assert (
        await fetch(f"/api/v1/assistance/referrals?subject_id={sid}", token=officer.token)
    ).json["items"] == []
    choices = await page.locator("#resource_id option").all_inner_texts()
    assert any("阳光之家 · 城东阳光之家" in c and "名额 1" in c for c in choices)
    await page.check("input[name=referral_need][value=housing]")
    await page.select_option("#resource_id", contact_case["home"])
    await page.fill("#note", "刑满释放，暂无住所。")
    await page.click("#refer-form button[type=submit]")
    assert await page.inner_text("#saved") == "已转介，待司法所同意。"
    assert "待司法所同意" in await page.inner_text("#referrals")
    for button in ("同意", "联系该资源", "本人接受"):
        await page.click(f"#referrals button:has-text('{button}')")
        assert await page.inner_text("#saved") == "已办理。"
    await page.click("#referrals button:has-text('安置')")
    assert "名额已满，已排队候补(第 1 位)" in await page.inner_text("#referral-error")
    [referral] = (
        await fetch(f"/api/v1/assistance/referrals?subject_id={sid}", token=officer.token)
    ).json["items"]
    assert referral["resource_id"] == contact_case["home"]
    assert referral["waiting_position"] == 1
    await page.goto(f"/console/subjects/{sid}/help")
    assert "候补第 1 位" in await page.inner_text("#referrals")
    await page.screenshot(path=screenshot_dir / "assistance-referral.png", full_page=True)


async def test_each_role_gets_these_pages_or_a_clear_refusal(
    api, contact_case, tree, make_staff, services
):
    """Each role on each page: the page when the policy allows one of its actions (in scope),
    else a refusal in Chinese; never a 500, never a file outside the caller's scope."""
    sid = contact_case["released"]
    pages = {
        "contact": ContactPage.page_action,
        "counseling": CounselingPage.page_action,
        "decisions": DecisionsPage.page_action,
        "help": HelpPage.page_action,
    }
    client = AsyncHTTPClient(force_instance=True)
    try:
        for role in Role:
            account = await make_staff(role, tree.home_for(role))
            token = await make_staff.token_for(account)
            for name, actions in pages.items():
                allowed = any(services.policy.allows(account.identity, a) for a in actions)
                answer = await client.fetch(
                    f"{api.base_url}/console/subjects/{sid}/{name}",
                    headers={"Cookie": f"anbang_console={token}"},
                    follow_redirects=False,
                    raise_error=False,
                )
                body = answer.body.decode()
                where = (role, name, answer.code)
                assert answer.code in (200, 403, 404), where
                if not allowed:
                    assert answer.code == 403 and "您没有权限执行此操作" in body, where
                elif answer.code == 200:
                    # Officers of the station reach the file; the page shows only what may be done.
                    assert "周明" in body, where
                    for form, action in (
                        ("visit-form", "visits.record"),
                        ("book-form", "counseling.manage"),
                        ("sanction-form", "sanctions.propose"),
                        ("refer-form", "assistance.manage"),
                    ):
                        shown = f'id="{form}"' in body
                        assert not shown or services.policy.allows(account.identity, action), where
                else:
                    assert "不在您的管辖范围内" in body, where
    finally:
        client.close()


async def test_an_officer_records_hours_and_excuses_an_occurrence(page, fetch, contact_case):
    officer, sid = contact_case["officer"], contact_case["probationer"]
    asked = accept_dialogs(page)
    await login(page, officer, f"/console/subjects/{sid}/contact")
    # Check-ins are not listed here; the month's education is, with a form for its hours.
    assert await page.locator("#obligations tr[data-kind=remote_checkin]").count() == 0
    row = page.locator("#obligations tr[data-kind=education]").first
    row_id = (await row.get_attribute("id")).removeprefix("o-")
    await row.locator("input[name=hours]").fill("0")
    await row.locator("button:has-text('登记时长')").click()
    row = page.locator(f'[id="o-{row_id}"]')
    errors = await row.locator(".field-error").all_inner_texts()
    assert "请填写时长(小时，大于 0)" in errors and "请填写确认人" in errors
    await row.locator("input[name=on]").fill("2026-03-02")
    await row.locator("input[name=hours]").fill("2")
    await row.locator("input[name=place]").fill("司法所法治课堂")
    await row.locator("input[name=confirmed_by]").fill("王老师")
    await row.locator("button:has-text('登记时长')").click()
    assert await page.inner_text("#saved") == "时长已记录。"
    assert "已登记 2.0" in await page.locator(f'[id="o-{row_id}"]').inner_text()
    stored = await fetch(
        f"/api/v1/subjects/{sid}/obligations?from=2026-03-01&to=2026-03-31&kind=education",
        token=officer.token,
    )
    assert stored.json["items"][0]["hours_done"] == 2
    # An excuse needs its reason; once given (and confirmed) the occurrence is excused.
    excusable = page.locator("#obligations tr:has(button:has-text('豁免'))").first
    excused_id = (await excusable.get_attribute("id")).removeprefix("o-")
    await excusable.locator("button:has-text('豁免')").click()
    assert await page.locator(f'[id="o-{excused_id}"] .field-error').inner_text() == (
        "请填写豁免理由(至少 2 个字)"
    )
    await page.locator(f'[id="o-{excused_id}"] input[name=reason]').fill("住院治疗，有医院证明")
    await page.locator(f'[id="o-{excused_id}"] button:has-text("豁免")').click()
    assert await page.inner_text("#saved") == "已豁免。"
    assert any("豁免" in q for q in asked)
    listed = await fetch(
        f"/api/v1/subjects/{sid}/obligations?from=2026-01-01&to=2026-04-30&status=excused",
        token=officer.token,
    )
    [excused] = listed.json["items"]
    assert excused["id"] == excused_id and excused["excuse_reason"] == "住院治疗，有医院证明"
    assert "已豁免" in await page.locator(f'[id="o-{excused_id}"]').inner_text()


async def test_a_social_worker_records_the_return_from_leave_on_the_file(
    page, fetch, contact_case, screenshot_dir
):
    """The assigned worker sees the person's leave on the file (not the station's queue) and
    records the 销假 there."""
    officer, worker, sid = (
        contact_case["officer"],
        contact_case["worker"],
        contact_case["probationer"],
    )
    asked = accept_dialogs(page)
    filed = await fetch(
        f"/api/v1/subjects/{sid}/leave-requests",
        "POST",
        token=officer.token,
        json_body={
            "start_date": "2026-03-02",
            "end_date": "2026-03-03",
            "destination": "宁波市海曙区",
            "reason": "参加婚礼",
        },
    )
    assert filed.status == 201, filed.body
    granted = await fetch(
        f"/api/v1/leave-requests/{filed.json['id']}/decision",
        "POST",
        token=officer.token,
        json_body={"approve": True, "comment": "同意"},
    )
    assert granted.json["status"] == "approved"
    await login(page, worker, f"/console/subjects/{sid}/decisions")
    row = page.locator("#leaves tr", has_text="宁波市海曙区")
    assert "已批准" in await row.inner_text()
    await row.locator("input[name=date]").fill("2026-03-02")
    await row.locator("button").click()
    assert await page.inner_text("#saved") == "已销假。"
    assert any("销假" in q for q in asked)
    assert "2026-03-02 已销假" in await page.inner_text("#leaves")
    await page.screenshot(path=screenshot_dir / "leave-return-worker.png", full_page=True)
    [returned] = (await fetch(f"/api/v1/subjects/{sid}/leave-requests", token=worker.token)).json[
        "items"
    ]
    assert (returned["id"], returned["returned_on"]) == (filed.json["id"], "2026-03-02")

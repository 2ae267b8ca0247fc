"""Working a case file at the console, in a real browser, each walk checked through the API:
an officer opens a program with its statutory fields, records the intake, changes the level,
assigns workers and a 矫正小组 (the rule about women in Chinese) and ends the program after
confirming; a transfer from one station accepted by another, handed over and reported; a
调查评估 recorded, assigned by the county, answered by the station and closed. Bad forms name
the field in Chinese and store nothing; every role on every page gets the page or a refusal."""

from __future__ import annotations

import pytest
from playwright.async_api import Browser, Page
from tornado.httpclient import AsyncHTTPClient

from models.policy import Role
from tests.browser_support import login
from tests.mp_support import local
from tests.subject_factories import subject_body


@pytest.fixture
async def casefile(tree, make_staff, fetch, clock):
    """A woman's case file at 五马司法所, its officer, two social workers and a grid worker
    there, the officer of 南汇司法所 and the county's officer."""
    clock.set(local(2026, 11, 2, 9, 0))
    officer = await make_staff(Role.STATION_OFFICER, tree.station)
    social = await make_staff(Role.SOCIAL_WORKER, tree.station)
    social2 = await make_staff(Role.SOCIAL_WORKER, tree.station)
    grid = await make_staff(Role.GRID_WORKER, tree.grid)
    officer2 = await make_staff(Role.STATION_OFFICER, tree.station2)
    county = await make_staff(Role.COUNTY_OFFICER, tree.county)
    token = await make_staff.token_for(officer)
    created = await fetch(
        "/api/v1/subjects",
        "POST",
        json_body=subject_body(tree.station.id, name="李芳", gender="female"),
        token=token,
    )
    assert created.status == 201, created.body
    return {
        "officer": officer,
        "social": social,
        "social2": social2,
        "grid": grid,
        "officer2": officer2,
        "county": county,
        "token": token,
        "subject_id": created.json["id"],
        "make_staff": make_staff,
    }


async def submit(page: Page, form: str) -> None:
    await page.click(f"{form} button[type=submit]")
    await page.wait_for_load_state()


async def test_an_officer_opens_a_program_records_intake_and_assigns_workers(
    page, casefile, fetch, screenshot_dir
):
    sid, token = casefile["subject_id"], casefile["token"]
    await login(page, casefile["officer"], f"/console/subjects/{sid}")
    await page.click("#open-program")
    await page.screenshot(path=screenshot_dir / "casefile-program-types.png", full_page=True)
    await page.click("#type-community_corrections")
    # Labels, never codes: the sentence types and levels are offered in Chinese.
    options = await page.inner_text("#sentence_type")
    assert "缓刑" in options and "probation" not in options
    assert "严管" in await page.inner_text("#supervision_level")

    # A bad form: no end date. The field is named in Chinese beside it; nothing is stored.
    await page.fill("#start_date", "2026-11-02")
    await page.select_option("#sentence_type", label="缓刑")
    await page.fill("#prohibitions", "禁止进入娱乐场所\n禁止接触被害人")
    await page.fill("#plan", "每月走访两次,参加公益活动。")
    await submit(page, "#program-form")
    assert "结束日期" in await page.inner_text("#end_date-error")
    assert "此项为必填项" in await page.inner_text("#end_date-error")
    assert await page.input_value("#plan") == "每月走访两次,参加公益活动。"  # kept as typed
    listed = await fetch(f"/api/v1/subjects/{sid}/programs", token=token)
    assert listed.json["items"] == []
    await page.screenshot(path=screenshot_dir / "casefile-program-new-error.png", full_page=True)

    await page.fill("#end_date", "2027-11-01")
    await submit(page, "#program-form")
    assert "项目已开设" in await page.inner_text("#saved")
    assert await page.inner_text("#program-status") == "待报到"
    (program,) = (await fetch(f"/api/v1/subjects/{sid}/programs", token=token)).json["items"]
    assert program["details"]["sentence_type"] == "probation"
    assert program["details"]["prohibitions"] == ["禁止进入娱乐场所", "禁止接触被害人"]
    shown = await page.inner_text("#program-facts")
    assert "缓刑" in shown and "禁止接触被害人" in shown

    # The intake (报到), then the supervision level.
    await page.fill("#intake-date", "2026-11-02")
    await submit(page, "#intake")
    assert "已登记报到" in await page.inner_text("#saved")
    assert await page.inner_text("#program-status") == "执行中"
    await page.select_option("#level-level", label="宽管")
    await submit(page, "#level")  # no reason: refused, named in Chinese
    assert "理由" in await page.inner_text("#reason-error")
    await page.fill("#level-reason", "表现良好,经评估调整")
    await submit(page, "#level")
    assert "管理等级已调整" in await page.inner_text("#saved")
    stored = (await fetch(f"/api/v1/programs/{program['id']}", token=token)).json
    assert stored["status"] == "active"
    assert stored["details"]["intake_done"] == "2026-11-02"
    assert stored["details"]["level_history"][-1]["level"] == "lenient"
    assert "起宽管" in await page.inner_text("#program-facts")
    await page.screenshot(path=screenshot_dir / "casefile-program.png", full_page=True)

    # Workers chosen by name; a woman's 矫正小组 without a woman is refused in Chinese.
    await page.click("#back-to-file")
    await page.click("#assign-link")
    social, grid = casefile["social"], casefile["grid"]
    assert "职员" in await page.inner_text(f"label:has(#sw-{social.id})")
    await page.check(f"#sw-{social.id}")
    await page.check(f"#gw-{grid.id}")
    await page.fill("#team_0_name", "王强")
    await page.fill("#team_0_relation", "丈夫")
    await page.select_option("#team_0_gender", label="男")
    await submit(page, "#assign-form")
    assert "矫正小组应当有女性成员" in await page.inner_text("#team-error")
    assert await page.is_checked(f"#sw-{social.id}")  # what was chosen is kept
    unassigned = (await fetch(f"/api/v1/subjects/{sid}", token=token)).json
    assert not (unassigned.get("assignments") or {}).get("social_worker_ids")
    await page.screenshot(path=screenshot_dir / "casefile-assignments-error.png", full_page=True)
    await page.fill("#team_1_name", "陈丽")
    await page.fill("#team_1_relation", "社区志愿者")
    await page.select_option("#team_1_gender", label="女")
    await submit(page, "#assign-form")
    assert "人员分配已保存" in await page.inner_text("#saved")
    assigned = (await fetch(f"/api/v1/subjects/{sid}", token=token)).json["assignments"]
    assert assigned["social_worker_ids"] == [social.id]
    assert assigned["grid_worker_ids"] == [grid.id]
    assert [m["name"] for m in assigned["team"]] == ["王强", "陈丽"]
    await page.screenshot(path=screenshot_dir / "casefile-assignments.png", full_page=True)

    # Ending the program asks for confirmation first; unconfirmed, nothing changes.
    await page.goto(f"/console/programs/{program['id']}")
    await page.select_option("#terminate-kind", label="其他原因终止")
    await submit(page, "#terminate")
    assert "不可撤销" in await page.inner_text("#confirm-error")
    still = (await fetch(f"/api/v1/programs/{program['id']}", token=token)).json
    assert still["status"] == "active"
    await page.check("#terminate-confirm")
    await submit(page, "#terminate")
    assert "项目已终止" in await page.inner_text("#saved")
    ended = (await fetch(f"/api/v1/programs/{program['id']}", token=token)).json
    assert ended["status"] == "ended"
    assert ended["details"]["termination"]["kind"] == "other"


async def test_a_transfer_is_accepted_by_the_other_station_and_handed_over(
    page, browser: Browser, api, casefile, fetch, tree, screenshot_dir
):
    sid, token = casefile["subject_id"], casefile["token"]
    program = await fetch(
        f"/api/v1/subjects/{sid}/programs",
        "POST",
        json_body={
            "type": "community_corrections",
            "start_date": "2026-11-02",
            "end_date": "2027-11-01",
            "sentence_type": "parole",
        },
        token=token,
    )
    assert program.status == 201, program.body
    await login(page, casefile["officer"], f"/console/subjects/{sid}")
    await page.click("#transfer-link")
    # The destination is chosen by name, from every station (another city's too).
    names = await page.inner_text("#to_org_id")
    assert "湖滨司法所" in names and "五马司法所" not in names
    await submit(page, "#transfer-form")  # nothing chosen: named in Chinese
    assert "变更后的司法所" in await page.inner_text("#to_org_id-error")
    await page.screenshot(path=screenshot_dir / "casefile-transfer-new.png", full_page=True)
    await page.select_option("#to_org_id", label="温州市 鹿城区司法局 南汇司法所")
    await page.fill("#reason", "迁居至南汇街道")
    await submit(page, "#transfer-form")
    assert "执行地变更申请已提交" in await page.inner_text("#saved")
    assert await page.inner_text("#transfer-status") == "待接收方答复"
    transfer_id = page.url.split("/console/transfers/")[1].split("?")[0]

    # The receiving station answers from its queue; refusing needs a tick first.
    receiving = await browser.new_context(
        base_url=api.base_url, viewport={"width": 1366, "height": 768}, locale="zh-CN"
    )
    other = await receiving.new_page()
    try:
        await login(other, casefile["officer2"], "/console/queues")
        await other.click(f"#transfers-{transfer_id} a[href='/console/transfers/{transfer_id}']")
        await other.wait_for_load_state()
        assert await other.inner_text("#from-name") == "五马司法所"
        assert "李芳" in await other.inner_text("h1")  # the queue's name, before the handover
        await other.fill("#comment", "无法接收")
        await other.click("#refuse")
        await other.wait_for_load_state()
        assert "请勾选确认" in await other.inner_text("#confirm-error")
        token2 = await casefile["make_staff"].token_for(casefile["officer2"])
        waiting = await fetch(f"/api/v1/transfers/{transfer_id}", token=token2)
        assert waiting.json["status"] == "requested"
        await other.screenshot(path=screenshot_dir / "casefile-transfer.png", full_page=True)
        await other.fill("#comment", "同意接收")
        await other.click("#accept")
        await other.wait_for_load_state()
        assert await other.inner_text("#transfer-status") == "已同意接收,待移交"

        # The sending side hands over: the file moves to 南汇.
        await page.reload()
        await submit(page, "#handover")
        assert await page.inner_text("#transfer-status") == "已移交,待报到"
        moved = await fetch(f"/api/v1/subjects/{sid}", token=token2)
        assert moved.status == 200 and moved.json["org_id"] == tree.station2.id

        # The receiving side records the person's report, from the file it now holds.
        await other.goto(f"/console/subjects/{sid}")
        assert "已移交,待报到" in await other.inner_text("#transfers")
        await other.screenshot(path=screenshot_dir / "casefile-file.png", full_page=True)
        await other.click(f"#transfer-{transfer_id} a")
        await other.wait_for_load_state()
        await submit(other, "#arrival")
        assert await other.inner_text("#transfer-status") == "已到新执行地报到"
    finally:
        await receiving.close()
    done = (await fetch(f"/api/v1/transfers/{transfer_id}", token=token2)).json
    assert done["status"] == "completed" and done["reported_on"] == "2026-11-02"


async def test_an_investigation_is_assigned_by_the_county_and_answered_by_the_station(
    page, casefile, fetch, tree, screenshot_dir
):
    sid = casefile["subject_id"]
    county_token = await casefile["make_staff"].token_for(casefile["county"])
    await login(page, casefile["county"], f"/console/subjects/{sid}")
    await page.click("#investigation-link")
    await page.fill("#court", "")
    await submit(page, "#investigation-form")
    assert "委托法院" in await page.inner_text("#court-error")
    await page.fill("#court", "温州市鹿城区人民法院")
    await page.fill("#requested_on", "2026-10-30")
    await submit(page, "#investigation-form")
    assert "调查评估委托已登记" in await page.inner_text("#saved")
    assert await page.inner_text("#investigation-status") == "待指派司法所"
    investigation_id = page.url.split("/console/investigations/")[1].split("?")[0]
    await page.select_option("#station_id", label="五马司法所")
    await submit(page, "#assign")
    assert "已指派司法所" in await page.inner_text("#saved")
    assert await page.inner_text("#station-name") == "五马司法所"
    await page.click("header .who button")  # 退出
    await page.wait_for_load_state()

    # The station finds it in its list, answers (a bad form first), and the county closes it.
    await login(page, casefile["officer"], "/console/investigations")
    assert "李芳" in await page.inner_text("#inv-assigned")
    await page.screenshot(path=screenshot_dir / "casefile-investigations.png", full_page=True)
    await page.click(f"#inv-row-{investigation_id} a")
    await page.wait_for_load_state()
    await page.select_option("#recommendation-select", label="适宜社区矫正")
    await submit(page, "#report")
    assert "调查评估意见书" in await page.inner_text("#opinion-error")
    unanswered = await fetch(f"/api/v1/investigations/{investigation_id}", token=county_token)
    assert unanswered.json["status"] == "assigned"
    await page.fill("#opinion-text", "家庭支持良好,居所固定,适宜社区矫正。")
    await submit(page, "#report")
    assert "评估意见已提交" in await page.inner_text("#saved")
    assert "适宜社区矫正" in await page.inner_text("#recommendation")
    await page.screenshot(path=screenshot_dir / "casefile-investigation.png", full_page=True)
    await submit(page, "#close")
    assert await page.inner_text("#investigation-status") == "已办结"
    closed = (await fetch(f"/api/v1/investigations/{investigation_id}", token=county_token)).json
    assert closed["status"] == "closed" and closed["recommendation"] == "suitable"
    assert closed["opinion"] == "家庭支持良好,居所固定,适宜社区矫正。"
    assert closed["station_id"] == tree.station.id


async def test_each_role_gets_the_case_file_pages_or_a_clear_refusal(
    api, casefile, tree, make_staff, fetch, services
):
    """Each role on each new page: the page when its policy allows, else a refusal in
    Chinese; never a 500, and a link or button only for what the role may do."""
    sid, token = casefile["subject_id"], casefile["token"]
    program = await fetch(
        f"/api/v1/subjects/{sid}/programs",
        "POST",
        json_body={
            "type": "community_corrections",
            "start_date": "2026-11-02",
            "end_date": "2027-11-01",
            "sentence_type": "control",
        },
        token=token,
    )
    assigned = await fetch(
        f"/api/v1/subjects/{sid}/assignments",
        "PUT",
        json_body={"social_worker_ids": [casefile["social"].id]},
        token=token,
    )
    assert assigned.status == 200, assigned.body
    transfer = await fetch(
        f"/api/v1/subjects/{sid}/transfers",
        "POST",
        json_body={"to_org_id": tree.station2.id, "reason": "迁居"},
        token=token,
    )
    investigation = await fetch(
        "/api/v1/investigations",
        "POST",
        json_body={"subject_id": sid, "court": "鹿城区人民法院", "requested_on": "2026-10-30"},
        token=token,
    )
    assert transfer.status == investigation.status == 201
    pages = {
        f"/console/subjects/{sid}/programs/new": "programs.create",
        f"/console/subjects/{sid}/programs/new?type=mental_health": "programs.create",
        f"/console/programs/{program.json['id']}": "programs.read",
        f"/console/subjects/{sid}/assignments": "subjects.assign",
        f"/console/subjects/{sid}/transfers/new": "transfers.manage",
        f"/console/transfers/{transfer.json['id']}": "transfers.read",
        "/console/investigations": "investigations.read",
        f"/console/subjects/{sid}/investigations/new": "investigations.manage",
        f"/console/investigations/{investigation.json['id']}": "investigations.read",
    }
    client = AsyncHTTPClient(force_instance=True)
    try:
        for role in Role:
            account = await make_staff(role, tree.home_for(role))
            if role is Role.SOCIAL_WORKER:
                account = casefile["social"]  # assigned: reaches the file
            token = await make_staff.token_for(account)
            allowed = {
                a for a in set(pages.values()) if services.policy.allows(account.identity, a)
            }
            for path, action in pages.items():
                answer = await client.fetch(
                    api.base_url + path,
                    headers={"Cookie": f"anbang_console={token}"},
                    follow_redirects=False,
                    raise_error=False,
                )
                where = (role, path, answer.code)
                body = answer.body.decode()
                assert answer.code in (200, 403, 404), where
                if action not in allowed:
                    assert answer.code == 403 and "您没有权限执行此操作" in body, where
                if answer.code == 200:
                    assert action in allowed, where
                    # Forms only for what the role may do.
                    if "/programs/" in path and "/new" not in path:
                        manage = services.policy.allows(account.identity, "programs.manage")
                        assert ('id="terminate"' in body) == manage, where
                    assert ('id="menu-investigations"' in body) == services.policy.allows(
                        account.identity, "investigations.read"
                    ), where
                    # No codes shown to people.
                    for code in ("pending_intake", "community_corrections", "requested"):
                        assert f">{code}<" not in body, where
    finally:
        client.close()


async def test_the_file_offers_only_what_the_role_may_do(page, casefile, fetch):
    sid = casefile["subject_id"]
    token = casefile["token"]
    assigned = await fetch(
        f"/api/v1/subjects/{sid}/assignments",
        "PUT",
        json_body={"social_worker_ids": [casefile["social"].id]},
        token=token,
    )
    assert assigned.status == 200
    await login(page, casefile["social"], f"/console/subjects/{sid}")
    actions = await page.inner_text("#casefile-actions")
    assert actions.strip() == ""  # a social worker opens no program, assigns, moves nothing
    await page.goto(f"/console/subjects/{sid}/assignments")
    assert "您没有权限执行此操作" in await page.inner_text("main")
    await login(page, casefile["officer"], f"/console/subjects/{sid}")
    actions = await page.inner_text("#casefile-actions")
    for offered in ("开设项目", "人员分配", "执行地变更", "登记调查评估委托"):
        assert offered in actions


async def test_each_kind_of_program_opens_with_its_own_fields(page, casefile, fetch, tree):
    """The mental-health form names a missing guardian's fields; 安置帮教 and 社区戒毒 open
    with theirs; the risk assessment is recorded on the program's page."""
    sid, token = casefile["subject_id"], casefile["token"]
    await login(page, casefile["officer"], f"/console/subjects/{sid}/programs/new")
    await page.click("#type-mental_health")
    assert "3 级" in await page.inner_text("#risk_level")
    await page.fill("#diagnosis", "精神分裂症")
    await page.select_option("#risk_level", label="1 级")
    await page.fill("#guardian_name", "李强")
    await submit(page, "#program-form")
    assert "监护人电话" in await page.inner_text("#guardian_phone-error")
    assert "与本人关系" in await page.inner_text("#guardian_relation-error")
    assert await page.input_value("#guardian_name") == "李强"
    assert (await fetch(f"/api/v1/subjects/{sid}/programs", token=token)).json["items"] == []
    await page.fill("#guardian_phone", "13900001111")
    await page.fill("#guardian_relation", "兄长")
    await page.fill("#care_team", "社区医生\n民警")
    await submit(page, "#program-form")
    assert "项目已开设" in await page.inner_text("#saved")
    await page.select_option("#risk-level", label="3 级")
    await page.fill("#risk-reason", "近期情绪不稳")
    await submit(page, "#risk")
    assert "危险性评估已记录" in await page.inner_text("#saved")
    # Health data is read by a health worker (an officer's view leaves it out).
    health = await casefile["make_staff"](Role.HEALTH_WORKER, tree.home_for(Role.HEALTH_WORKER))
    health_token = await casefile["make_staff"].token_for(health)
    listed = await fetch(f"/api/v1/subjects/{sid}/programs", token=health_token)
    (mental,) = listed.json["items"]
    assert mental["type"] == "mental_health" and mental["details"]["risk_level"] == 3
    assert mental["details"]["guardian"]["relation"] == "兄长"

    await page.goto(f"/console/subjects/{sid}/programs/new?type=resettlement")
    await page.fill("#release_date", "2026-10-20")
    await page.check("#key_person")
    await submit(page, "#program-form")
    assert "项目已开设" in await page.inner_text("#saved")
    await page.goto(f"/console/subjects/{sid}/programs/new?type=drug_rehab")
    await page.select_option("#mode", label="社区戒毒")
    await page.fill("#working_group", "禁毒社工")
    await submit(page, "#program-form")
    assert "项目已开设" in await page.inner_text("#saved")
    kinds = {
        p["type"]: p["details"]
        for p in (await fetch(f"/api/v1/subjects/{sid}/programs", token=token)).json["items"]
    }
    assert kinds["resettlement"]["key_person"] is True
    assert kinds["drug_rehab"]["mode"] == "community_detox"

    # 社区戒毒 ended with a 社区康复 decision: confirmed, it chains into the new program.
    await page.goto(page.url.split("?")[0])
    await page.select_option("#terminate-kind", label="其他原因终止")
    await page.check("#terminate-community_rehab")
    await page.check("#terminate-confirm")
    await submit(page, "#terminate")
    assert "项目已终止" in await page.inner_text("#saved")
    rehab = [
        p
        for p in (await fetch(f"/api/v1/subjects/{sid}/programs", token=token)).json["items"]
        if p["type"] == "drug_rehab"
    ]
    assert sorted((p["details"]["mode"], p["status"]) for p in rehab) == [
        ("community_detox", "ended"),
        ("community_rehab", "pending_intake"),
    ]


async def test_the_api_lists_a_files_transfers_the_destinations_and_a_stations_investigations(
    casefile, fetch, tree
):
    """What the pages read: a person's transfers (while the caller holds the file), every
    station by name as a destination, and the investigations at a station by state."""
    sid, token = casefile["subject_id"], casefile["token"]
    other = await casefile["make_staff"].token_for(casefile["officer2"])
    destinations = await fetch("/api/v1/transfer-destinations", token=token)
    assert destinations.status == 200
    by_name = {d["name"]: d for d in destinations.json["items"]}
    assert by_name["湖滨司法所"]["county"] == "上城区司法局"
    assert by_name["湖滨司法所"]["city"] == "杭州市"
    asked = await fetch(
        f"/api/v1/subjects/{sid}/transfers",
        "POST",
        json_body={"to_org_id": tree.station2.id, "reason": "迁居"},
        token=token,
    )
    assert asked.status == 201
    listed = await fetch(f"/api/v1/subjects/{sid}/transfers", token=token)
    assert [t["id"] for t in listed.json["items"]] == [asked.json["id"]]
    assert (await fetch(f"/api/v1/subjects/{sid}/transfers", token=other)).status == 404
    social = await casefile["make_staff"].token_for(casefile["social"])
    assert (await fetch(f"/api/v1/subjects/{sid}/transfers", token=social)).status == 403

    requested = await fetch(
        "/api/v1/investigations",
        "POST",
        json_body={"subject_id": sid, "court": "鹿城区人民法院", "requested_on": "2026-10-30"},
        token=token,
    )
    county = await casefile["make_staff"].token_for(casefile["county"])
    assigned = await fetch(
        f"/api/v1/investigations/{requested.json['id']}/assign",
        "POST",
        json_body={"station_id": tree.station.id},
        token=county,
    )
    assert assigned.status == 200, assigned.body
    mine = await fetch("/api/v1/investigations?status=assigned", token=token)
    assert [i["id"] for i in mine.json["items"]] == [requested.json["id"]]
    assert mine.json["items"][0]["subject_name"] == "李芳"
    assert (await fetch("/api/v1/investigations?status=assigned", token=other)).json["items"] == []
    assert (await fetch("/api/v1/investigations?status=assigned", token=county)).json["items"]
    refused = await fetch("/api/v1/investigations?status=closed", token=token)
    assert refused.status == 422 and refused.error["details"][0]["field"] == "status"

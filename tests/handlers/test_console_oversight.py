"""The console's alerts, assistance board, audit views and the documents beside decisions, in a
real browser: each figure and name is the API's, nothing shows a code, acknowledging leaves who
and when in sight, the board's steps go through the API, and a decision's documents print from
beside it. `make screenshots` keeps the pages it visits."""

from __future__ import annotations

import pytest
from playwright.async_api import Page

from models.policy import Role
from server.config import Config, ConfigError
from tests.browser_support import login
from tests.handlers.test_assistance import Desk
from tests.mp_support import STATION_CENTRE, local


async def logout(page: Page) -> None:
    await page.click("header form button")
    await page.wait_for_url("**/console/login")


def no_codes(text: str, *codes: str) -> None:
    for code in codes:
        assert code not in text, code


# --- alerts -----------------------------------------------------------------------------------


async def test_alerts_name_the_person_say_what_is_due_and_keep_who_acknowledged(
    page, supervised, services, fetch, tree, screenshot_dir
):
    subject = (
        await fetch(
            f"/api/v1/subjects/{supervised.subject_id}", token=await supervised.officer_token()
        )
    ).json
    station = tree.station
    overdue = await services.alerts.raise_alert(
        kind="intake_overdue",
        org_id=station.id,
        org_path=station.path,
        subject_id=supervised.subject_id,
        details={"program_id": "p1", "type": "community_corrections", "due": "2026-11-01"},
    )
    police_only = await services.alerts.raise_alert(
        kind="serious_breach",
        org_id=station.id,
        org_path=station.path,
        subject_id=supervised.subject_id,
        details={"refused_or_evaded": 3, "limit": 3, "for_roles": ["police"]},
    )
    listed = await fetch("/api/v1/alerts?status=open", token=await supervised.officer_token())
    assert {a["subject_name"] for a in listed.json["items"]} == {subject["name"]}

    await login(page, supervised.officer, "/console/alerts")
    assert await page.get_attribute("#menu-alerts", "aria-current") == "page"
    row = await page.inner_text(f"#alert-{overdue}")
    assert subject["name"] in row and "逾期未报到" in row
    assert "社区矫正应于 2026-11-01 前报到" in row and "立即核实下落" in row
    breach = await page.inner_text(f"#alert-{police_only}")
    assert "拒绝或逃避检测已达 3 次" in breach and "由公安民警处理" in breach
    # Only the police acknowledge it: no button for the station.
    assert await page.locator(f"#alert-{police_only} button").count() == 0
    no_codes(await page.inner_text("main"), "intake_overdue", "serious_breach", "police", "p1")
    await page.screenshot(path=screenshot_dir / "alerts.png", full_page=True)

    # The way to act opens the file.
    await page.click(f"#alert-{overdue} a.act")
    await page.wait_for_url(f"**/console/subjects/{supervised.subject_id}")
    await page.go_back()
    await page.click(f"#alert-{overdue} button")
    await page.wait_for_url("**/console/alerts")
    assert await page.locator(f"#alert-{overdue}").count() == 0
    me = (await fetch("/api/v1/me", token=await supervised.officer_token())).json
    done = page.locator(f"#done-{overdue}")
    assert await done.locator(".by").inner_text() == me["name"]
    assert (await done.locator(".when").inner_text()).startswith("2026-11-02 08:00")
    acknowledged = await fetch(
        "/api/v1/alerts?status=acknowledged", token=await supervised.officer_token()
    )
    [item] = acknowledged.json["items"]
    assert item["acknowledged_by_name"] == me["name"] and item["acknowledged_at"]
    await page.screenshot(path=screenshot_dir / "alerts-acknowledged.png", full_page=True)


# --- assistance -------------------------------------------------------------------------------


@pytest.fixture
async def desk(fetch, make_staff, tree, clock) -> Desk:
    clock.set(local(2026, 11, 2, 9, 0))
    return await Desk(fetch, make_staff, tree).setup()


async def test_the_assistance_board_shows_occupancy_and_the_waiting_list_and_acts(
    page, desk, clock, screenshot_dir
):
    home = await desk.facility(capacity=1)
    first, second, third = [await desk.person() for _ in range(3)]
    placed_ref = await desk.accepted_referral(first, home["id"])
    placed = await desk.call(
        desk.coordinator,
        "/api/v1/assistance/placements",
        "POST",
        {"referral_id": placed_ref, "resource_id": home["id"]},
    )
    assert placed.status == 201, placed.body
    waiting_ref = await desk.accepted_referral(second, home["id"])
    full = await desk.call(
        desk.coordinator,
        "/api/v1/assistance/placements",
        "POST",
        {"referral_id": waiting_ref, "resource_id": home["id"]},
    )
    assert full.status == 409
    asked = await desk.call(
        desk.social,
        "/api/v1/assistance/referrals",
        "POST",
        {"subject_id": third, "needs": ["job", "training"]},
    )
    asked_ref = asked.json["id"]
    names = {
        r["id"]: r["subject_name"]
        for r in (await desk.call(desk.county, "/api/v1/assistance/referrals")).json["items"]
    }

    # Ten days before the stay ends: the county sees it among the stays to extend.
    clock.set(local(2027, 1, 21, 9, 0))
    await login(page, desk.county, "/console/assistance")
    assert await page.get_attribute("#menu-assistance", "aria-current") == "page"
    api_home = (await desk.call(desk.county, f"/api/v1/assistance/resources/{home['id']}")).json
    line = page.locator(f"#resource-{home['id']}")
    for figure in ("capacity", "occupied", "held", "waiting"):
        assert int(await line.locator(f".{figure}").inner_text()) == api_home[figure], figure
    assert (api_home["occupied"], api_home["waiting"]) == (1, 1)
    assert "阳光之家" in await line.inner_text()
    assert await line.locator(".waiting-list li").all_inner_texts() == [
        f"{names[waiting_ref]} 2026-11-02 09:00 起"
    ]
    assert names[asked_ref] in await page.inner_text(f"#referral-{asked_ref}")
    assert "待审批" in await page.inner_text(f"#referral-{asked_ref} .status")
    assert "就业、技能培训" in await page.inner_text(f"#referral-{asked_ref}")
    stay = page.locator(f"#stay-{placed.json['id'].replace(':', '-')}")
    assert "2027-01-31" in await stay.inner_text()
    no_codes(await page.inner_text("main"), "sunshine_home", "requested", "accepted", "housing")
    await page.screenshot(path=screenshot_dir / "assistance.png", full_page=True)

    # Approve, then offer the home (full: the offer still stands, the place comes in turn).
    await page.click(f"#referral-{asked_ref} form.step button:has-text('同意转介')")
    await page.wait_for_url("**/console/assistance")
    assert "已同意" in await page.inner_text(f"#referral-{asked_ref} .status")
    await page.click(f"#referral-{asked_ref} form.offer button")
    await page.wait_for_url("**/console/assistance")
    assert "已提供" in await page.inner_text(f"#referral-{asked_ref} .status")

    # An extension beyond the limit is refused in Chinese; within it, granted.
    await page.fill(f"{stay_selector(placed)} input[name=until]", "2027-06-30")
    await page.fill(f"{stay_selector(placed)} input[name=reason]", "仍在找工作")
    await page.click(f"{stay_selector(placed)} button")
    assert "超过规定上限" in await page.inner_text("#assistance-error")
    await page.fill(f"{stay_selector(placed)} input[name=until]", "2027-03-31")
    await page.fill(f"{stay_selector(placed)} input[name=reason]", "仍在找工作")
    await page.click(f"{stay_selector(placed)} button")
    await page.wait_for_url("**/console/assistance")
    ending = await desk.call(desk.county, "/api/v1/assistance/stays?status=ending")
    assert ending.json["items"] == [] and await page.locator(stay_selector(placed)).count() == 0

    # Check-out: a reason is asked for, then the bed is freed and held for the first waiting.
    checkout = f"#referral-{placed_ref} form.checkout"
    await page.click(f"{checkout} button")
    assert "请填写离开原因" in await page.inner_text("#assistance-error")
    await page.fill(f"{checkout} input[name=reason]", "已找到住处")
    await page.click(f"{checkout} button")
    await page.wait_for_url("**/console/assistance")
    after = (await desk.call(desk.county, f"/api/v1/assistance/resources/{home['id']}")).json
    assert (after["occupied"], after["held"], after["waiting"]) == (0, 1, 0)
    assert int(await line.locator(".occupied").inner_text()) == 0
    assert await page.locator(f"#referral-{placed_ref}").count() == 0
    assert "已提供" in await page.inner_text(f"#referral-{waiting_ref} .status")


def stay_selector(placed) -> str:
    return f"#stay-{placed.json['id'].replace(':', '-')} form.extend"


async def test_a_coordinator_sees_their_facility_without_the_countys_month(page, desk):
    home = await desk.facility(capacity=2)
    person = await desk.person()
    await desk.accepted_referral(person, home["id"])
    await login(page, desk.coordinator, "/console/assistance")
    assert "鹿城阳光之家" in await page.inner_text(f"#resource-{home['id']}")
    assert await page.locator("#summary").count() == 0 and await page.locator("#stays").count() == 0
    assert "您没有权限" not in await page.inner_text("main")


# --- audit views ------------------------------------------------------------------------------


async def test_the_audit_administrator_sees_logins_refusals_and_changes(
    page, supervised, fetch, make_staff, tree, screenshot_dir
):
    auditor = await make_staff(Role.AUDIT_ADMIN, tree.city)
    admin = await make_staff(Role.SYS_ADMIN, tree.city)
    wrong = await fetch(
        "/api/v1/auth/login",
        "POST",
        json_body={"username": supervised.officer.username, "password": "not-the-password-1"},
    )
    assert wrong.status == 401
    # A station officer asking for the audit log is refused (and that refusal is logged).
    refused = await fetch("/api/v1/audit/events?kind=login", token=await supervised.officer_token())
    assert refused.status == 403
    created = await fetch(
        "/api/v1/orgs",
        "POST",
        token=await make_staff.token_for(admin),
        json_body={
            "name": "七都司法所",
            "code": "330302099",
            "kind": "station",
            "parent_id": tree.county.id,
        },
    )
    assert created.status == 201, created.body

    token = await make_staff.token_for(auditor)
    api = {}
    for kind in ("login", "refusal", "admin"):
        answer = await fetch(f"/api/v1/audit/events?kind={kind}", token=token)
        assert answer.status == 200, answer.body
        api[kind] = answer.json["items"]
    assert any(e["outcome"].startswith("refused:") for e in api["login"])
    assert any(e["action"] == "audit.read" and e["outcome"] == "refused:forbidden"
               for e in api["refusal"])  # fmt: skip
    admin_name = (await fetch("/api/v1/me", token=await make_staff.token_for(admin))).json["name"]
    assert any(e["action"] == "orgs.create" and e["actor_name"] == admin_name for e in api["admin"])

    await login(page, auditor, "/console/")
    assert await page.locator("#menu-audit").count() == 1
    assert await page.locator("#menu-alerts, #menu-leave, #menu-checkins").count() == 0
    await page.click("#menu-audit")
    await page.wait_for_url("**/console/audit")
    rows = page.locator("#audit-events tbody tr")
    assert await rows.count() == len(
        (await fetch("/api/v1/audit/events?kind=login", token=token)).json["items"]
    )
    text = await page.inner_text("#audit-events")
    assert "登录" in text and "被拒绝" in text
    no_codes(text, "auth.login", "refused:")
    await page.screenshot(path=screenshot_dir / "audit-logins.png", full_page=True)
    await page.click("#audit-kinds a:has-text('管理操作')")
    await page.wait_for_url("**/console/audit?kind=admin*")
    admin_text = await page.inner_text("#audit-events")
    assert "新增机构" in admin_text and admin_name in admin_text
    no_codes(admin_text, "orgs.create")
    await page.click("#audit-kinds a:has-text('拒绝记录')")
    await page.wait_for_url("**/console/audit?kind=refusal*")
    assert "审计查询" in await page.inner_text("#audit-events")
    await page.screenshot(path=screenshot_dir / "audit-refusals.png", full_page=True)


async def test_a_files_access_log_is_filtered_for_those_allowed(
    page, supervised, fetch, make_staff, tree, screenshot_dir
):
    # The station reads the file and its notes; the county opens its access log.
    officer = await supervised.officer_token()
    await fetch(f"/api/v1/subjects/{supervised.subject_id}", token=officer)
    log = await fetch(
        f"/api/v1/subjects/{supervised.subject_id}/access-log",
        token=await supervised.county_token(),
    )
    await login(page, supervised.county, f"/console/subjects/{supervised.subject_id}/access-log")
    shown = page.locator("#access-log tbody tr")
    # The page's own reading of the log is one entry more than the API's reading above.
    total = len(log.json["items"]) + 1
    assert await page.inner_text("#log-count") == f"共 {total} 条，显示 {total} 条。"
    assert await shown.count() == total
    text = await page.inner_text("#access-log")
    assert "查阅档案" in text and "司法所工作人员" in text
    no_codes(text, "subjects.read", "station_officer")
    # Who acted, by name (the API answers it beside the id), never an id's tail.
    member = await make_staff.services.staff.lookup(supervised.officer.id)
    assert member["name"] in text and supervised.officer.id[-6:] not in text
    await page.screenshot(path=screenshot_dir / "access-log.png", full_page=True)
    # Only the station's entries, only reads.
    await page.select_option("#log-filters select[name=role]", "station_officer")
    await page.select_option("#log-filters select[name=kind]", "read")
    await page.click("#log-filters button")
    await page.wait_for_url("**/access-log?*")
    roles = await page.locator("#access-log tbody tr td:nth-child(2)").all_inner_texts()
    assert roles and set(roles) == {"司法所工作人员"}
    # A station officer may not see who read the file: the page says so kindly.
    await logout(page)
    await login(page, supervised.officer, f"/console/subjects/{supervised.subject_id}/access-log")
    assert "您没有权限执行此操作" in await page.inner_text("main")


# --- documents beside decisions (issue 27) -----------------------------------------------------


async def test_decided_leave_and_sanctions_show_their_documents_to_print(
    page, supervised, fetch, screenshot_dir
):
    county = await supervised.county_token()
    officer = await supervised.officer_token()
    leave = await supervised.client.call(
        "POST",
        "/mp/v1/leave-requests",
        {"start_date": "2026-11-10", "end_date": "2026-11-19", "destination": "杭州市西湖区",
         "reason": "陪同母亲就医"},
        headers={"Idempotency-Key": "oversight-leave-0001"},
    )  # fmt: skip
    assert leave.status == 201, leave.body
    for token in (officer, county):
        decided = await fetch(
            f"/api/v1/leave-requests/{leave.json['id']}/decision",
            "POST",
            token=token,
            json_body={"approve": True, "comment": "同意"},
        )
        assert decided.status == 200, decided.body
    sanction = await fetch(
        f"/api/v1/subjects/{supervised.subject_id}/sanctions",
        "POST",
        token=officer,
        json_body={"kind": "warn", "reason": "未经批准离开县域"},
    )
    sid = sanction.json["id"]
    for token in (officer, county):
        view = (await fetch("/api/v1/sanctions?status=pending", token=token)).json["items"]
        if any(s["id"] == sid for s in view):
            await fetch(
                f"/api/v1/sanctions/{sid}/decision",
                "POST",
                token=token,
                json_body={"approve": True, "comment": "事实清楚"},
            )
    made = {}
    for kind, record in (("leave_approval", leave.json["id"]), ("warning_decision", sid)):
        answer = await fetch(
            "/api/v1/documents", "POST", token=county, json_body={"kind": kind, "record_id": record}
        )
        assert answer.status == 201, answer.body
        made[record] = answer.json

    await login(page, supervised.county, "/console/leave")
    row = page.locator(f"#decided-{leave.json['id']}")
    assert made[leave.json["id"]]["number"] in await row.inner_text()
    href = await row.locator("a.print").get_attribute("href")
    assert href == f"/console/documents/{made[leave.json['id']]['id']}/pdf"
    pdf = await page.request.get(href)
    assert pdf.status == 200 and pdf.headers["content-type"] == "application/pdf"
    assert (await pdf.body()).startswith(b"%PDF")
    await page.screenshot(path=screenshot_dir / "leave-documents.png", full_page=True)

    await page.goto("/console/sanctions")
    row = page.locator(f"#decided-{sid}")
    text = await row.inner_text()
    assert "警告" in text and made[sid]["number"] in text and "打印" in text
    await page.screenshot(path=screenshot_dir / "sanctions-documents.png", full_page=True)


# --- map tiles (ANBANG_MAP_TILES) ---------------------------------------------------------------


def test_the_tile_source_must_be_a_url_template():
    assert Config.from_env({}).map_tiles == ""
    template = "https://t0.example.cn/vec_w/wmts?TILEMATRIX={z}&TILEROW={y}&TILECOL={x}&tk=k"
    assert Config.from_env({"ANBANG_MAP_TILES": template}).map_tiles == template
    for wrong in ("t0.example.cn/{z}/{x}/{y}", "https://t0.example.cn/tiles/{z}/{x}.png"):
        with pytest.raises(ConfigError, match="ANBANG_MAP_TILES"):
            Config.from_env({"ANBANG_MAP_TILES": wrong})


async def test_a_configured_tile_source_is_layered_under_the_vector_map(
    page, api, supervised, clock
):
    checkin = await supervised.client.check_in(
        lat=STATION_CENTRE.lat, lng=STATION_CENTRE.lng, coord_type="wgs84",
        captured_at=clock.now(), key="tiles-check-0001",
    )  # fmt: skip
    assert checkin.status == 201, checkin.body
    history = f"/console/subjects/{supervised.subject_id}/checkins"
    await login(page, supervised.officer, history)
    await page.wait_for_selector(".leaflet-container[data-drawn='1']")
    assert await page.locator(".leaflet-tile").count() == 0  # none configured: nothing fetched

    # Loopback only: a closed port stands in for 天地图 (the images fail; the layer is there).
    api.runtime.context.map_tiles = "http://127.0.0.1:9/tiles/{z}/{x}/{y}.png"
    answer = await page.goto(history)
    assert "img-src http://127.0.0.1:9 'self'" in answer.headers["content-security-policy"]
    await page.wait_for_selector(".leaflet-container[data-drawn='1']")
    tiles = page.locator("img.leaflet-tile")
    assert await tiles.count() > 0
    assert (await tiles.first.get_attribute("src")).startswith("http://127.0.0.1:9/tiles/")
    # The vectors are drawn above the tiles.
    assert await page.locator("path.map-point").count() == 1

"""The dashboard, the county overview and the queues in a real browser (Debian's headless
Chromium driven by Playwright): each figure equals the API's, a figure opens the list behind it,
a station's signature shows on the county's overview, and an e-location order waits in the
agency head's queue under the person's name. `make screenshots` keeps the pages it visits."""

from __future__ import annotations

from playwright.async_api import Page

from models.policy import Role
from tests.browser_support import login


async def tile(page: Page, figure_id: str) -> int:
    return int(await page.text_content(f"#{figure_id} .value") or "")


async def figures_match(page: Page, board: dict) -> None:
    """Every tile on the page shows the API's figure."""
    assert await tile(page, "fig-supervised") == board["supervised"]
    for kind, count in board["by_population"].items():
        assert await tile(page, f"fig-pop-{kind}") == count
    for level, count in board["by_level"].items():
        assert await tile(page, f"fig-level-{level}") == count
    for key, count in board["windows_today"].items():
        assert await tile(page, f"fig-today-{key}") == count
    for key in ("overdue_intake", "detachments_open", "alerts_open", "leave_in_progress"):
        assert await tile(page, f"fig-{key}") == board[key], key


async def test_a_station_dashboard_shows_the_api_figures_and_opens_their_lists(
    page, supervised, fetch, screenshot_dir
):
    board = (await fetch("/api/v1/dashboard", token=await supervised.officer_token())).json
    assert board["supervised"] == 1 and board["windows_today"]["due"] >= 1
    await login(page, supervised.officer, "/console/dashboard")
    assert page.url.endswith("/console/dashboard")
    assert await page.get_attribute("#menu-dashboard", "aria-current") == "page"
    await figures_match(page, board)
    shown = await page.text_content("main")
    # Chinese labels, never the codes behind them.
    assert "社区矫正" in shown and "严管" in shown and "community_corrections" not in shown
    # The charts are drawn (Chart.js sizes the canvas it draws on).
    await page.wait_for_function("window.Chart && Chart.getChart('chart-weeks') !== undefined")
    await page.screenshot(path=screenshot_dir / "dashboard.png", full_page=True)

    await page.click("#fig-supervised")
    await page.wait_for_url("**/console/subjects?status=active")
    assert await page.locator(f"a[href='/console/subjects/{supervised.subject_id}']").count() >= 1

    await page.goto("/console/dashboard")
    await page.click("#fig-alerts_open")
    await page.wait_for_url("**/console/alerts")
    assert await page.locator("#alerts tbody tr").count() >= 1


async def test_a_county_dashboard_has_a_line_per_station(
    page, supervised, fetch, tree, screenshot_dir
):
    board = (await fetch("/api/v1/dashboard", token=await supervised.county_token())).json
    await login(page, supervised.county, "/console/dashboard")
    await figures_match(page, board)
    line = page.locator(f"#unit-{tree.station.id}")
    assert tree.station.name in await line.inner_text()
    assert board["supervised"] == 1
    await page.screenshot(path=screenshot_dir / "dashboard_county.png", full_page=True)

    # A station's line opens that station's dashboard, with the same figures as the API's.
    await line.locator("a").first.click()
    await page.wait_for_url(f"**/console/dashboard?org={tree.station.id}")
    station = await fetch(
        f"/api/v1/dashboard?org={tree.station.id}", token=await supervised.county_token()
    )
    await figures_match(page, station.json)
    # Its figures open the county's list narrowed to the station.
    await page.click("#fig-supervised")
    await page.wait_for_url(f"**/console/subjects?status=active&station={tree.station.id}")


async def test_the_county_overview_shows_a_station_month_once_signed(
    page, supervised, fetch, tree, screenshot_dir
):
    officer = await supervised.officer_token()
    made = await fetch(
        "/api/v1/reports/compliance",
        "POST",
        token=officer,
        json_body={"org_id": tree.station.id, "month": "2026-10"},
    )
    assert made.status == 201, made.body
    await login(page, supervised.county, "/console/overview")
    cell = page.locator(f"#row-{tree.station.id} td[data-month='2026-10']")
    assert "未签署" in await cell.inner_text()
    unsigned = int(await page.text_content("#unsigned-total") or "")

    signed = await fetch(
        f"/api/v1/reports/compliance/{made.json['id']}/sign",
        "POST",
        token=officer,
        json_body={"comment": "核对无误"},
    )
    assert signed.status == 200, signed.body
    await page.reload()
    assert "已签署(第 1 版)" in await cell.inner_text()
    assert int(await page.text_content("#unsigned-total") or "") == unsigned - 1
    await page.screenshot(path=screenshot_dir / "overview.png", full_page=True)
    # Down to the people behind a figure of the signed report.
    await cell.locator("a", has_text="漏签到明细").click()
    await page.wait_for_url(f"**/console/reports/{made.json['id']}/subjects?figure=checkins_missed")
    assert await page.locator("#drill").count() == 1


async def test_the_queues_show_a_pending_elocation_order_by_name(
    page, supervised, fetch, tree, make_staff, screenshot_dir
):
    order = await fetch(
        f"/api/v1/subjects/{supervised.subject_id}/elocation-orders",
        "POST",
        token=await supervised.officer_token(),
        json_body={
            "ground": "left_without_approval",
            "start_date": "2026-12-01",
            "end_date": "2027-02-28",
            "reason": "无正当理由离开所居住的县",
        },
    )
    assert order.status == 201, order.body
    head = await make_staff(Role.COUNTY_OFFICER, tree.county, is_agency_head=True)
    subject = await fetch(
        f"/api/v1/subjects/{supervised.subject_id}", token=await make_staff.token_for(head)
    )
    await login(page, head, "/console/queues")
    assert page.url.endswith("/console/queues")
    row = page.locator(f"#elocation-{order.json['id']}")
    text = await row.inner_text()
    assert subject.json["name"] in text
    assert "无正当理由未经批准离开所居住的市、县" in text
    assert "2026-12-01" in text and "社区矫正法第二十九条" in text
    await page.screenshot(path=screenshot_dir / "queues.png", full_page=True)

    # The station officer's menu has no queue of the agency head's, and the city's none at all.
    await page.goto("/console/dashboard")
    city = await make_staff(Role.CITY_OFFICER, tree.city)
    context_page = await page.context.browser.new_page(base_url=page.url.split("/console")[0])
    try:
        await login(context_page, city, "/console/dashboard")
        assert await context_page.locator("#menu-dashboard").count() == 1
        assert await context_page.locator("#menu-queues").count() == 0
    finally:
        await context_page.close()

"""The console's check-in oversight in a real browser: a station officer reviews a flagged
check-in with its photo beside the file photo and a map drawn offline (the area, the point and
its accuracy, the station), decides with a reason and finds the decision, by name, in today's
list; photos are relayed uncached and refused (404) to whoever may not see them; a person's
history shows times and results in Chinese."""

from __future__ import annotations

from playwright.async_api import Page

from models.policy import Role
from tests.browser_support import login
from tests.handlers.test_photo_downloads import png
from tests.mp_support import STATION_CENTRE, local

PHOTO = png(120, 160)
FILE_PHOTO = png(90, 120)


async def flagged_with_photo(supervised, clock, fetch) -> str:
    """An on-time check-in at the station at 09:00, then at 10:00 one some 55 km away with a
    photo (outside the area, moving too fast, a face to check); the file has a photo too."""
    person = supervised.client
    token = await supervised.officer_token()
    stored = await fetch(
        f"/api/v1/subjects/{supervised.subject_id}/photo",
        "PUT",
        body=FILE_PHOTO,
        headers={"Content-Type": "image/png"},
        token=token,
    )
    assert stored.status in (200, 201), stored.body
    clock.set(local(2026, 11, 2, 9, 0))
    first = await person.check_in(
        lat=STATION_CENTRE.lat, lng=STATION_CENTRE.lng, coord_type="wgs84", captured_at=clock.now()
    )
    assert first.status == 201, first.body
    clock.set(local(2026, 11, 2, 10, 0))
    upload = await person.upload(PHOTO, filename="me.png", content_type="image/png")
    assert upload.status == 201, upload.body
    far = await person.check_in(
        lat=STATION_CENTRE.lat + 0.5,
        lng=STATION_CENTRE.lng,
        coord_type="wgs84",
        accuracy=35.0,
        captured_at=local(2026, 11, 2, 9, 57),
        photo_upload_id=upload.json["upload_id"],
        key="review-far-0001",
    )
    assert far.status == 201 and far.json["status"] == "outside_area", far.body
    return str(far.json["id"])


async def image_loaded(page: Page, selector: str) -> bool:
    return bool(
        await page.locator(selector).evaluate("img => img.complete && img.naturalWidth > 0")
    )


async def test_review_shows_photo_map_and_flags_then_lists_the_decision_by_name(
    page, supervised, clock, fetch, screenshot_dir
):
    checkin_id = await flagged_with_photo(supervised, clock, fetch)
    photos: dict[str, dict[str, str]] = {}
    page.on(
        "response",
        lambda r: (
            photos.__setitem__(r.url.split("/console/")[-1], r.headers)
            if r.url.endswith("/photo")
            else None
        ),
    )
    await login(page, supervised.officer, "/console/checkins")
    row = f"#checkin-{checkin_id}"
    await page.wait_for_selector(f"{row} .leaflet-container[data-drawn='1']")
    text = await page.inner_text(row)
    # Distances and times people read; flags explained in Chinese.
    assert "55.6 公里" in text and "255" not in text.replace("55.6", "")
    assert "超出范围" in text and "人脸待核" in text and "照片需人工核对是否本人" in text
    assert "到达 2026-11-02 10:00" in text and "拍摄 2026-11-02 09:57" in text
    assert "拍摄早于到达 3 分钟" in text
    assert "face_review" not in text and "outside_area" not in text
    assert "此前签到" in text and "2026-11-02 09:00 按时签到" in text
    # The check-in photo and the file photo, both loaded, neither cached.
    assert await image_loaded(page, f"{row} img.checkin-photo")
    assert await image_loaded(page, f"{row} img.subject-photo")
    assert photos[f"checkins/{checkin_id}/photo"]["cache-control"] == "no-store"
    assert photos[f"checkins/{checkin_id}/photo"]["content-type"] == "image/png"
    assert photos[f"subjects/{supervised.subject_id}/photo"]["cache-control"] == "no-store"
    # The map: the permitted circle, the point with its accuracy circle, the station, earlier
    # check-ins, a scale bar, and no tile fetched.
    assert await page.locator(f"{row} path.map-area").count() == 1
    assert await page.locator(f"{row} path.map-point").count() == 1
    assert await page.locator(f"{row} path.map-accuracy").count() == 1
    assert await page.locator(f"{row} path.map-station").count() == 1
    assert await page.locator(f"{row} path.map-recent").count() == 1
    assert await page.locator(f"{row} .leaflet-control-scale-line").count() == 1
    assert await page.locator(f"{row} .leaflet-tile").count() == 0
    await page.screenshot(path=screenshot_dir / "checkin-review.png", full_page=True)

    await page.fill(f"{row} textarea", "电话核实：当日赴温州市区医院复诊，已补假")
    await page.click(f"{row} button[name=accept][value='1']")
    await page.wait_for_url("**/console/checkins")
    assert await page.locator(row).count() == 0
    me = await fetch("/api/v1/me", token=await supervised.officer_token())
    decided = await page.inner_text(f"#decided-{checkin_id}")
    assert me.json["name"] in decided and "已认可" in decided and "电话核实" in decided
    await page.screenshot(path=screenshot_dir / "checkin-decided.png", full_page=True)

    # The API stored the review as the page said.
    token = await supervised.officer_token()
    stored = await fetch(f"/api/v1/checkins/{checkin_id}", token=token)
    assert stored.status == 200, stored.body
    assert stored.json["review"] == "accepted"
    assert stored.json["reviewed_by_name"] == me.json["name"]
    assert stored.json["review_comment"].startswith("电话核实")
    today = await fetch("/api/v1/checkins/decided?day=2026-11-02", token=token)
    assert [i["id"] for i in today.json["items"]] == [checkin_id]
    assert today.json["items"][0]["decision"] == "accepted"
    yesterday = await fetch("/api/v1/checkins/decided?day=2026-11-01", token=token)
    assert yesterday.json["items"] == []


async def test_the_console_photo_route_relays_uncached_and_refuses_with_404(
    browser, api, supervised, clock, fetch, make_staff, tree
):
    checkin_id = await flagged_with_photo(supervised, clock, fetch)
    path = f"/console/checkins/{checkin_id}/photo"
    who = {
        "station officer": (supervised.officer, 200),
        "grid worker": (await make_staff(Role.GRID_WORKER, tree.community), 404),
        "social worker": (await make_staff(Role.SOCIAL_WORKER, tree.station), 404),
        "other station": (await make_staff(Role.STATION_OFFICER, tree.other_station), 404),
    }
    for name, (account, status) in who.items():
        context = await browser.new_context(base_url=api.base_url)
        page = await context.new_page()
        try:
            await login(page, account)
            answer = await page.request.get(path)
            assert answer.status == status, name
            assert answer.headers["cache-control"] == "no-store", name
            if status == 200:
                assert await answer.body() == PHOTO
                assert answer.headers["content-type"] == "image/png"
            else:
                assert "image" not in answer.headers["content-type"], name
        finally:
            await context.close()


async def test_the_file_lists_check_ins_with_times_and_results_in_chinese(
    page, supervised, clock, fetch, screenshot_dir
):
    checkin_id = await flagged_with_photo(supervised, clock, fetch)
    await login(page, supervised.officer, f"/console/subjects/{supervised.subject_id}")
    assert await page.locator("#checkin-timeline li").count() >= 1
    rows = page.locator("#checkin-history tbody tr")
    assert await rows.count() == 2
    newest = await rows.nth(0).inner_text()
    assert "2026-11-02 10:00" in newest and "超出范围" in newest and "待审核" in newest
    assert "人脸待核" in newest and "查看照片" in newest
    oldest = await rows.nth(1).inner_text()
    assert "2026-11-02 09:00" in oldest and "按时签到" in oldest and "无需审核" in oldest
    shown = await page.inner_text("#checkin-history")
    assert "on_time" not in shown and "outside_area" not in shown and "pending" not in shown
    await page.wait_for_selector(f"#history-{checkin_id} .leaflet-container[data-drawn='1']")
    assert await page.locator(f"#history-{checkin_id} path.map-point").count() == 1
    assert await page.locator(f"#history-{checkin_id} path.map-accuracy").count() == 1

    await page.click("#history-all")
    await page.wait_for_url(f"**/console/subjects/{supervised.subject_id}/checkins")
    assert await page.locator("#checkin-history tbody tr").count() == 2
    await page.screenshot(path=screenshot_dir / "checkin-history.png", full_page=True)

    # A page at a time, newest first, through the API the page reads.
    token = await supervised.officer_token()
    base = f"/api/v1/subjects/{supervised.subject_id}/checkins?limit=1"
    first = await fetch(base, token=token)
    assert [i["id"] for i in first.json["items"]] == [checkin_id]
    second = await fetch(f"{base}&cursor={first.json['next_cursor']}", token=token)
    assert len(second.json["items"]) == 1 and second.json["next_cursor"] is None
    assert second.json["items"][0]["status"] == "on_time"


async def test_county_officer_rejects_and_city_officer_only_looks(
    page, browser, api, supervised, clock, fetch, make_staff, tree, screenshot_dir
):
    checkin_id = await flagged_with_photo(supervised, clock, fetch)
    row = f"#checkin-{checkin_id}"
    city = await make_staff(Role.CITY_OFFICER, tree.city)
    context = await browser.new_context(
        base_url=api.base_url, viewport={"width": 1366, "height": 768}, locale="zh-CN"
    )
    looking = await context.new_page()
    try:
        await login(looking, city, "/console/checkins")
        await looking.wait_for_selector(f"{row} .leaflet-container[data-drawn='1']")
        assert await image_loaded(looking, f"{row} img.checkin-photo")
        assert "可以查看但不能审核" in await looking.inner_text(row)
        assert await looking.locator(f"{row} form").count() == 0
    finally:
        await context.close()

    await login(page, supervised.county, "/console/checkins")
    await page.fill(f"{row} textarea", "经核查当日未请假离开温州，不予认可")
    await page.click(f"{row} button[name=accept][value='0']")
    await page.wait_for_url("**/console/checkins")
    county = await fetch("/api/v1/me", token=await supervised.county_token())
    decided = await page.inner_text(f"#decided-{checkin_id}")
    assert county.json["name"] in decided and "不认可" in decided and "人脸待核" in decided
    stored = await fetch(f"/api/v1/checkins/{checkin_id}", token=await supervised.county_token())
    assert stored.json["review"] == "rejected" and stored.json["status"] == "rejected"
    assert stored.json["reviewed_by_name"] == county.json["name"]

"""Check-ins through the real HTTP stack: classification, flags, review, idempotency, privacy."""

from __future__ import annotations

import asyncio
import datetime as dt
import math
import struct
import zlib

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from models.geo import Point, distance_m, wgs84_to_gcj02
from models.policy import Role
from server.app import SYSTEM
from tests.mp_support import STATION_CENTRE, local


def png_bytes(width: int, height: int, shade: int = 0) -> bytes:
    """A real PNG (grey pixels), as a phone camera's output would be after compression."""
    raw = b"".join(b"\x00" + bytes([shade]) * width for _ in range(height))

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(raw))
        + chunk(b"IEND", b"")
    )


def east_of(centre: Point, metres: float) -> Point:
    """A point `metres` due east of `centre` (WGS-84)."""
    degrees = metres / (111_320 * math.cos(math.radians(centre.lat)))
    return Point(centre.lat, centre.lng + degrees)


async def check_in(client, clock, point: Point = STATION_CENTRE, **extra):
    extra.setdefault("captured_at", clock.now())
    extra.setdefault("coord_type", "wgs84")
    return await client.check_in(lat=point.lat, lng=point.lng, **extra)


async def obligations_of(fetch, supervised, day: dt.date) -> list[dict]:
    answer = await fetch(
        f"/api/v1/subjects/{supervised.subject_id}/obligations"
        f"?from={day.isoformat()}&to={day.isoformat()}&kind=remote_checkin",
        token=await supervised.officer_token(),
    )
    assert answer.status == 200, answer.body
    return answer.json["items"]


async def test_an_on_time_check_in_inside_the_area_meets_the_days_window(supervised, clock, fetch):
    clock.set(local(2026, 11, 2, 9, 30))
    answer = await check_in(supervised.client, clock)
    assert answer.status == 201, answer.body
    body = answer.json
    assert body["status"] == "on_time"
    assert body["flags"] == []
    assert body["review"] is None
    assert body["obligation_status"] == "done"
    (today,) = await obligations_of(fetch, supervised, dt.date(2026, 11, 2))
    assert today["id"] == body["obligation_id"]
    assert today["status"] == "done"


async def test_the_window_runs_to_the_last_second_of_the_local_day(supervised, clock, fetch):
    client = supervised.client
    clock.set(local(2026, 11, 2, 23, 59, 59))
    last_second = await check_in(client, clock)
    assert last_second.json["status"] == "on_time"
    monday = last_second.json["obligation_id"]
    clock.set(local(2026, 11, 3, 0, 0, 0))
    next_day = await check_in(client, clock)
    assert next_day.json["status"] == "on_time"
    assert next_day.json["obligation_id"] != monday
    (tuesday,) = await obligations_of(fetch, supervised, dt.date(2026, 11, 3))
    assert tuesday["id"] == next_day.json["obligation_id"]
    assert tuesday["status"] == "done"


async def test_arriving_one_second_after_the_window_is_late_and_reviewed(supervised, clock, fetch):
    client = supervised.client
    (monday,) = await obligations_of(fetch, supervised, dt.date(2026, 11, 2))
    # Made at 23:59:58 without signal, arriving at 00:00:00: classified by arrival.
    clock.set(local(2026, 11, 3, 0, 0, 0))
    answer = await check_in(
        client, clock, captured_at=local(2026, 11, 2, 23, 59, 58), obligation_id=monday["id"]
    )
    assert answer.status == 201, answer.body
    assert answer.json["status"] == "late"
    assert answer.json["flags"] == ["offline"]
    assert answer.json["review"] == "pending"
    (monday,) = await obligations_of(fetch, supervised, dt.date(2026, 11, 2))
    assert monday["status"] == "pending_review"


async def test_an_offline_check_in_is_accepted_for_72_hours_then_refused(supervised, clock, fetch):
    client = supervised.client
    captured = local(2026, 11, 2, 21, 0)
    window_end = local(2026, 11, 3, 0, 0)
    clock.set(window_end + dt.timedelta(hours=72) - dt.timedelta(seconds=1))
    assert (await check_in(client, clock, captured_at=captured)).status == 401
    await client.login("probationer")  # after days away the mini-program signs in again
    within = await check_in(client, clock, captured_at=captured)
    assert within.status == 201, within.body
    assert within.json["status"] == "late"
    assert "offline" in within.json["flags"]
    (monday,) = await obligations_of(fetch, supervised, dt.date(2026, 11, 2))
    assert within.json["obligation_id"] == monday["id"]
    clock.set(window_end + dt.timedelta(hours=72))
    beyond = await check_in(client, clock, captured_at=captured, obligation_id=monday["id"])
    assert beyond.status == 422
    assert beyond.json["error"]["code"] == "window_closed"
    assert "补签" in beyond.json["error"]["message"]


async def test_outside_the_area_is_classified_and_held_for_review(supervised, clock, fetch):
    clock.set(local(2026, 11, 2, 10, 0))
    far = east_of(STATION_CENTRE, 5000)
    answer = await check_in(supervised.client, clock, far)
    assert answer.json["status"] == "outside_area"
    assert answer.json["review"] == "pending"
    (today,) = await obligations_of(fetch, supervised, dt.date(2026, 11, 2))
    assert today["status"] == "pending_review"


async def test_gcj02_coordinates_are_converted_before_the_geofence(supervised, clock):
    clock.set(local(2026, 11, 2, 10, 0))
    inside = east_of(STATION_CENTRE, 2900)
    as_gcj = wgs84_to_gcj02(inside)
    # The premise: read as WGS-84, the GCJ-02 numbers fall outside the 3 km area.
    assert distance_m(STATION_CENTRE, as_gcj) > 3000
    converted = await check_in(supervised.client, clock, as_gcj, coord_type="gcj02")
    assert converted.json["status"] == "on_time", converted.body
    unconverted = await check_in(supervised.client, clock, as_gcj, coord_type="wgs84")
    assert unconverted.json["status"] == "outside_area"


async def test_each_suspicious_signal_raises_its_flag(
    supervised, clock, services, tree, mp_clients
):
    client = supervised.client
    clock.set(local(2026, 11, 2, 10, 0))
    assert (await check_in(client, clock)).json["flags"] == []
    clock.advance(dt.timedelta(minutes=30))
    poor = await check_in(client, clock, accuracy=800)
    assert poor.json["flags"] == ["low_accuracy"]
    clock.advance(dt.timedelta(minutes=30))
    skewed = await check_in(client, clock, captured_at=clock.now() - dt.timedelta(minutes=25))
    assert skewed.json["flags"] == ["clock_skew"]
    clock.advance(dt.timedelta(minutes=30))
    # 2.5 km in the minute since the last capture: 150 km/h is a car; 2.5 km in 20 s is not.
    near = east_of(STATION_CENTRE, 2500)
    drive = await check_in(client, clock, near)
    assert drive.json["flags"] == [], drive.body
    clock.advance(dt.timedelta(seconds=20))
    jump = await check_in(client, clock, STATION_CENTRE)
    assert "impossible_travel" not in jump.json["flags"]  # under a minute counts as one minute
    clock.advance(dt.timedelta(minutes=1))
    assert (await check_in(client, clock)).json["flags"] == []
    clock.advance(dt.timedelta(minutes=2))
    far = east_of(STATION_CENTRE, 20_000)  # 20 km in two minutes: 600 km/h
    fast = await check_in(client, clock, far, accuracy=5)
    assert fast.json["flags"] == ["impossible_travel"]
    assert fast.json["status"] == "outside_area"
    clock.advance(dt.timedelta(hours=1))
    other_phone = mp_clients(device_id="another-phone")
    other_phone.token = client.token
    changed = await check_in(other_phone, clock)
    assert changed.json["flags"] == ["device_changed"]


async def test_a_photo_goes_to_review_and_the_same_photo_twice_is_flagged(supervised, clock, fetch):
    client = supervised.client
    clock.set(local(2026, 11, 2, 10, 0))
    photo = png_bytes(64, 48)
    first_upload = await client.upload(photo, filename="a.png", content_type="image/png")
    assert first_upload.status == 201, first_upload.body
    first = await check_in(client, clock, photo_upload_id=first_upload.json["upload_id"])
    assert first.json["flags"] == ["face_review"]
    clock.advance(dt.timedelta(hours=1))
    again = await client.upload(photo, filename="b.png", content_type="image/png")
    second = await check_in(client, clock, photo_upload_id=again.json["upload_id"])
    assert second.json["flags"] == ["photo_reused", "face_review"]


async def test_the_review_queue_accepts_and_rejects_and_the_obligation_follows(
    supervised, clock, fetch, services
):
    client = supervised.client
    clock.set(local(2026, 11, 2, 10, 0))
    flagged = await check_in(client, clock, east_of(STATION_CENTRE, 8000))
    clock.set(local(2026, 11, 3, 10, 0))
    other = await check_in(client, clock, accuracy=900)
    officer = await supervised.officer_token()
    queue = await fetch("/api/v1/checkins/review-queue", token=officer)
    assert queue.status == 200, queue.body
    items = {item["id"]: item for item in queue.json["items"]}
    assert set(items) == {flagged.json["id"], other.json["id"]}
    assert items[flagged.json["id"]]["status"] == "outside_area"
    assert items[flagged.json["id"]]["distance_m"] == pytest.approx(8000, rel=0.01)
    assert items[other.json["id"]]["flags"] == ["low_accuracy"]

    missing_reason = await fetch(
        f"/api/v1/checkins/{flagged.json['id']}/review",
        "POST",
        json_body={"accept": True, "comment": ""},
        token=officer,
    )
    assert missing_reason.status == 422
    accepted = await fetch(
        f"/api/v1/checkins/{flagged.json['id']}/review",
        "POST",
        json_body={"accept": True, "comment": "在医院陪护，已电话核实"},
        token=officer,
    )
    assert accepted.status == 200, accepted.body
    assert accepted.json["obligation_status"] == "done"
    (monday,) = await obligations_of(fetch, supervised, dt.date(2026, 11, 2))
    assert monday["status"] == "done"

    rejected = await fetch(
        f"/api/v1/checkins/{other.json['id']}/review",
        "POST",
        json_body={"accept": False, "comment": "定位精度过低，无法核实"},
        token=officer,
    )
    assert rejected.json["status"] == "rejected"
    assert rejected.json["obligation_status"] == "open"
    again = await fetch(
        f"/api/v1/checkins/{other.json['id']}/review",
        "POST",
        json_body={"accept": True, "comment": "改变主意"},
        token=officer,
    )
    assert again.status == 409
    # The window closes unmet: the sweep marks it missed and alerts the worker.
    clock.set(local(2026, 11, 4, 0, 5))
    await services.obligations.close_windows(clock.now())
    (tuesday,) = await obligations_of(fetch, supervised, dt.date(2026, 11, 3))
    assert tuesday["status"] == "missed"
    officer = await supervised.officer_token()
    assert (await fetch("/api/v1/checkins/review-queue", token=officer)).json["items"] == []


async def test_a_county_officer_reviews_but_another_county_sees_nothing(
    supervised, clock, fetch, make_staff, tree
):
    clock.set(local(2026, 11, 2, 10, 0))
    flagged = await check_in(supervised.client, clock, accuracy=900)
    county = await fetch("/api/v1/checkins/review-queue", token=await supervised.county_token())
    assert [i["id"] for i in county.json["items"]] == [flagged.json["id"]]
    stranger = await make_staff(Role.STATION_OFFICER, tree.other_station)
    token = await make_staff.token_for(stranger)
    assert (await fetch("/api/v1/checkins/review-queue", token=token)).json["items"] == []
    refused = await fetch(
        f"/api/v1/checkins/{flagged.json['id']}/review",
        "POST",
        json_body={"accept": True, "comment": "不是我辖区的"},
        token=token,
    )
    assert refused.status == 404


async def test_a_retry_answers_the_first_result_and_another_body_is_refused(
    supervised, clock, store
):
    client = supervised.client
    clock.set(local(2026, 11, 2, 10, 0))
    first = await check_in(client, clock, key="retry-key-0001")
    clock.advance(dt.timedelta(seconds=30))
    retry = await check_in(client, clock, key="retry-key-0001", captured_at=local(2026, 11, 2, 10))
    assert retry.status == 201
    assert retry.json == first.json
    other = await check_in(client, clock, east_of(STATION_CENTRE, 10), key="retry-key-0001")
    assert other.status == 409
    assert other.json["error"]["code"] == "idempotency_conflict"
    assert await store.database["checkins"].count_documents({}) == 1


async def test_a_check_in_needs_an_idempotency_key(supervised, clock):
    clock.set(local(2026, 11, 2, 10, 0))
    body = {
        "location": {"lat": 28.0, "lng": 120.6, "coord_type": "wgs84", "accuracy": 10},
        "captured_at": clock.now().isoformat(),
    }
    answer = await supervised.client.call("POST", "/mp/v1/checkins", body)
    assert answer.status == 422
    assert answer.json["error"]["details"][0]["field"] == "Idempotency-Key"
    assert "请求编号" in answer.json["error"]["message"]


@settings(
    max_examples=6,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(copies=st.integers(min_value=2, max_value=8), shift=st.integers(0, 3599))
async def test_concurrent_duplicates_yield_one_record(supervised, clock, store, copies, shift):
    clock.set(local(2026, 11, 2, 9, 0) + dt.timedelta(seconds=shift))
    key = f"burst-{shift}-{copies}"
    answers = await asyncio.gather(
        *(check_in(supervised.client, clock, key=key) for _ in range(copies))
    )
    assert {a.status for a in answers} == {201}
    assert len({a.body for a in answers}) == 1
    stored = await store.database["checkins"].count_documents(
        {"idem": f"{supervised.subject_id}:{key}"}
    )
    assert stored == 1


async def test_bad_input_gets_clear_errors_in_chinese(supervised, clock, fetch, mp_clients, tree):
    client = supervised.client
    clock.set(local(2026, 11, 2, 10, 0))
    out_of_range = await client.call(
        "POST",
        "/mp/v1/checkins",
        {
            "location": {"lat": 128.0, "lng": 120.6, "coord_type": "wgs84", "accuracy": 10},
            "captured_at": clock.now().isoformat(),
        },
        headers={"Idempotency-Key": "range-check-1"},
    )
    assert out_of_range.status == 422
    (problem,) = out_of_range.json["error"]["details"]
    assert problem["field"] == "location.lat"
    assert problem["message"] == "数值过大"
    wrong_type = await client.call(
        "POST",
        "/mp/v1/checkins",
        {
            "location": {"lat": "28", "lng": 120.6, "coord_type": "bd09", "accuracy": 10},
            "captured_at": "yesterday",
        },
        headers={"Idempotency-Key": "type-check-1"},
    )
    assert {p["field"] for p in wrong_type.json["error"]["details"]} == {
        "location.lat",
        "location.coord_type",
        "captured_at",
    }
    # Someone else's obligation: not found, as if it did not exist.
    officer = await supervised.officer_token()
    other_id, _ = await enrol_another(fetch, mp_clients, tree, officer)
    theirs = await fetch(
        f"/api/v1/subjects/{other_id}/obligations?from=2026-11-02&to=2026-11-02",
        token=officer,
    )
    (their_window,) = [i for i in theirs.json["items"] if i["kind"] == "remote_checkin"]
    stolen = await check_in(client, clock, obligation_id=their_window["id"])
    assert stolen.status == 404
    assert stolen.json["error"]["message"] == "未找到该签到任务。"
    # A window not yet open.
    (friday,) = [
        i
        for i in (
            await fetch(
                f"/api/v1/subjects/{supervised.subject_id}/obligations"
                "?from=2026-11-06&to=2026-11-06&kind=remote_checkin",
                token=officer,
            )
        ).json["items"]
    ]
    early = await check_in(client, clock, obligation_id=friday["id"])
    assert early.status == 409
    assert early.json["error"]["code"] == "not_open"


async def enrol_another(fetch, mp_clients, tree, officer_token):
    from tests.mp_support import enrol

    program = {
        "type": "community_corrections",
        "start_date": "2026-11-02",
        "end_date": "2027-11-01",
        "sentence_type": "probation",
    }
    return await enrol(fetch, mp_clients, tree, officer_token, program, "another")


async def test_uploads_are_images_within_the_limit(supervised, clock):
    client = supervised.client
    text = await client.upload(b"%PDF-1.4 not a photo", filename="x.jpg")
    assert text.status == 415
    assert "图片" in text.json["error"]["message"]
    huge = await client.upload(b"\xff\xd8\xff" + b"\x00" * (6 * 1024 * 1024))
    assert huge.status == 413
    truncated = await client.upload(png_bytes(64, 64)[:40], content_type="image/png")
    assert truncated.status == 415
    ok = await client.upload(png_bytes(64, 64), content_type="image/png")
    assert ok.status == 201
    forged = ok.json["upload_id"][:-4] + "0000"
    answer = await check_in(client, clock, photo_upload_id=forged)
    assert answer.status == 422
    assert answer.json["error"]["code"] == "unknown_upload"


async def test_people_whose_rules_ask_no_check_ins_are_not_asked(
    supervised, clock, fetch, mp_clients, tree
):
    from tests.mp_support import enrol

    program = {"type": "resettlement", "start_date": "2026-11-02", "release_date": "2026-11-01"}
    _, client = await enrol(
        fetch, mp_clients, tree, await supervised.officer_token(), program, "released"
    )
    answer = await check_in(client, clock)
    assert answer.status == 403
    assert answer.json["error"]["code"] == "checkins_not_required"
    assert answer.json["error"]["message"] == "您目前无需进行定位签到。"


async def test_the_raw_database_holds_no_plaintext_coordinates(supervised, clock, store):
    clock.set(local(2026, 11, 2, 10, 0))
    point = east_of(STATION_CENTRE, 1234.5)
    answer = await check_in(supervised.client, clock, point, accuracy=17.25)
    assert answer.status == 201
    doc = await store.database["checkins"].find_one({"_id": answer.json["id"]})
    text = repr(doc)
    for value in (point.lat, point.lng):
        for digits in (f"{value:.4f}", f"{value:.3f}"[:-1]):
            assert digits not in text
    assert "device_id" not in text and supervised.client.device_id not in text
    everything = []
    for name in await store.database.list_collection_names():
        everything.extend([repr(d) async for d in store.database[name].find({})])
    assert not any(f"{point.lng:.4f}" in d for d in everything)


async def test_a_stored_check_in_whose_window_update_was_lost_still_counts(
    supervised, clock, store, services, fetch
):
    """The request died between storing the check-in and updating its window (the client
    never retried): the sweep finds the check-in instead of marking the window missed."""
    clock.set(local(2026, 11, 2, 10, 0))
    answer = await check_in(supervised.client, clock)
    window = answer.json["obligation_id"]
    # What the lost update leaves behind: the window still scheduled.
    await store.database["occurrences"].update_one(
        {"_id": window}, {"$set": {"status": "scheduled"}, "$unset": {"checkin_id": ""}}
    )
    clock.set(local(2026, 11, 3, 0, 5))
    await services.obligations.close_windows(clock.now())
    (monday,) = await obligations_of(fetch, supervised, dt.date(2026, 11, 2))
    assert monday["status"] == "done"
    alerts = await store.database["alerts"].count_documents({"subject_id": supervised.subject_id})
    assert alerts == 0


async def test_approved_leave_widens_the_area_until_the_return(supervised, clock, fetch):
    clock.set(local(2026, 11, 2, 9, 0))
    officer = await supervised.officer_token()
    filed = await fetch(
        f"/api/v1/subjects/{supervised.subject_id}/leave-requests",
        "POST",
        json_body={
            "start_date": "2026-11-03",
            "end_date": "2026-11-05",
            "destination": "杭州",
            "reason": "探亲",
        },
        token=officer,
    )
    assert filed.status == 201, filed.body
    decided = await fetch(
        f"/api/v1/leave-requests/{filed.json['id']}/decision",
        "POST",
        json_body={"approve": True, "comment": "同意"},
        token=officer,
    )
    assert decided.json["status"] == "approved", decided.body
    hangzhou = Point(30.2741, 120.1551)  # about 300 km away
    clock.set(local(2026, 11, 2, 20, 0))  # the day before the leave: still home's area
    assert (await check_in(supervised.client, clock, hangzhou)).json["status"] == "outside_area"
    clock.set(local(2026, 11, 4, 10, 0))
    away = await check_in(supervised.client, clock, hangzhou)
    assert away.json["status"] == "on_time", away.body


async def test_an_e_location_order_with_an_area_replaces_the_stations(
    supervised, clock, fetch, make_staff, tree
):
    clock.set(local(2026, 11, 2, 9, 0))
    head = await make_staff(Role.COUNTY_OFFICER, tree.county, is_agency_head=True)
    home = east_of(STATION_CENTRE, 1500)
    ordered = await fetch(
        f"/api/v1/subjects/{supervised.subject_id}/elocation-orders",
        "POST",
        json_body={
            "ground": "left_without_approval",
            "start_date": "2026-11-02",
            "end_date": "2026-12-01",
            "reason": "未经批准离开所居住的县",
            "area": {"center": [home.lat, home.lng], "radius_m": 500},
        },
        token=await supervised.officer_token(),
    )
    assert ordered.status == 201, ordered.body
    approved = await fetch(
        f"/api/v1/elocation-orders/{ordered.json['id']}/decision",
        "POST",
        json_body={"approve": True},
        token=await make_staff.token_for(head),
    )
    assert approved.status == 200, approved.body
    clock.set(local(2026, 11, 2, 10, 0))
    # Inside the station's 3 km, but outside the order's 500 m around home.
    assert (await check_in(supervised.client, clock)).json["status"] == "outside_area"
    at_home = await check_in(supervised.client, clock, east_of(STATION_CENTRE, 1600))
    assert at_home.json["status"] == "on_time"


async def test_rotating_a_persons_key_keeps_their_check_in_photos_readable(
    supervised, clock, services
):
    clock.set(local(2026, 11, 2, 10, 0))
    uploaded = await supervised.client.upload(png_bytes(64, 48), content_type="image/png")
    attachment_id = uploaded.json["upload_id"].split(".")[0]
    await check_in(supervised.client, clock, photo_upload_id=uploaded.json["upload_id"])
    await services.subjects.rotate_data_key(SYSTEM, supervised.subject_id)
    photo = b"".join([chunk async for chunk in services.subjects._attachments.read(attachment_id)])
    assert photo == png_bytes(64, 48)


async def test_a_named_window_newer_than_the_cached_ones_is_accepted(supervised, clock, fetch):
    """The person's context was loaded when they bound (Monday 08:00); two days later in the
    same half-minute of real time, they name Wednesday's window, which that load never saw."""
    (wednesday,) = await obligations_of(fetch, supervised, dt.date(2026, 11, 4))
    clock.set(local(2026, 11, 4, 10, 0))
    answer = await check_in(supervised.client, clock, obligation_id=wednesday["id"])
    assert answer.status == 201, answer.body
    assert answer.json["status"] == "on_time"
    assert answer.json["obligation_id"] == wednesday["id"]

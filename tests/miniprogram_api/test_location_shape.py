"""One location shape: the object `wx.getLocation` answers (plus the coordinate system asked
of it) is taken as it is by a check-in, a return from leave, a worker's visit from WeChat and
the console's visit; the older `lat`/`lng`/`coord_type` names still work."""

from __future__ import annotations

import uuid
from typing import Any

from models.geo import wgs84_to_gcj02
from tests.mp_support import STATION_CENTRE, local

# What `wx.getLocation({type: 'gcj02'})` hands the mini-program, with the `type` it asked for.
GCJ = wgs84_to_gcj02(STATION_CENTRE)
WX_LOCATION: dict[str, Any] = {
    "latitude": GCJ.lat,
    "longitude": GCJ.lng,
    "speed": -1,
    "accuracy": 35,
    "altitude": 12.5,
    "verticalAccuracy": 10,
    "horizontalAccuracy": 35,
    "errMsg": "getLocation:ok",
    "type": "gcj02",
}


async def worker_phone(supervised, fetch, mp_clients):
    """The person's station officer, bound to WeChat."""
    code = await fetch("/api/v1/me/binding-code", "POST", token=await supervised.officer_token())
    assert code.status == 201, code.body
    phone = mp_clients()
    assert (await phone.login("location-officer")).status == 200
    assert (await phone.bind(code.json["code"])).status == 200
    return phone


async def test_one_wx_get_location_result_serves_a_check_in_and_a_visit(
    supervised, clock, fetch, mp_clients
):
    clock.set(local(2026, 11, 2, 9, 0))
    checked_in = await supervised.client.call(
        "POST",
        "/mp/v1/checkins",
        {"location": WX_LOCATION, "captured_at": clock.now().isoformat()},
        headers={"Idempotency-Key": uuid.uuid4().hex},
    )
    assert checked_in.status == 201, checked_in.body
    # gcj02 converted back: the station's centre, inside the area, on time.
    assert checked_in.json["status"] == "on_time"
    assert checked_in.json["flags"] == []
    phone = await worker_phone(supervised, fetch, mp_clients)
    visited = await phone.call(
        "POST",
        "/mp/v1/worker/visits",
        {
            "subject_id": supervised.subject_id,
            "kind": "visit",
            "note": "走访",
            "location": WX_LOCATION,
        },
        headers={"Idempotency-Key": uuid.uuid4().hex},
    )
    assert visited.status == 201, visited.body
    console = await fetch(
        f"/api/v1/subjects/{supervised.subject_id}/visits",
        "POST",
        json_body={"kind": "talk", "note": "谈话", "location": WX_LOCATION},
        token=await supervised.officer_token(),
    )
    assert console.status == 201, console.body


async def test_the_older_names_still_work_and_a_check_in_needs_the_system_and_accuracy(
    supervised, clock, fetch
):
    clock.set(local(2026, 11, 2, 9, 0))
    old = {"lat": STATION_CENTRE.lat, "lng": STATION_CENTRE.lng, "coord_type": "wgs84"}
    checked_in = await supervised.client.call(
        "POST",
        "/mp/v1/checkins",
        {"location": {**old, "accuracy": 10}, "captured_at": clock.now().isoformat()},
        headers={"Idempotency-Key": uuid.uuid4().hex},
    )
    assert checked_in.status == 201, checked_in.body
    assert checked_in.json["status"] == "on_time"
    # A visit's location has always been a bare point.
    console = await fetch(
        f"/api/v1/subjects/{supervised.subject_id}/visits",
        "POST",
        json_body={"kind": "visit", "note": "走访", "location": {"lat": 28.0, "lng": 120.65}},
        token=await supervised.officer_token(),
    )
    assert console.status == 201, console.body
    # Without `type` and `accuracy` a check-in cannot be classified: both named, in Chinese.
    bare = {k: v for k, v in WX_LOCATION.items() if k not in ("type", "accuracy")}
    refused = await supervised.client.call(
        "POST",
        "/mp/v1/checkins",
        {"location": bare, "captured_at": clock.now().isoformat()},
        headers={"Idempotency-Key": uuid.uuid4().hex},
    )
    assert refused.status == 422, refused.body
    problems = {p["field"]: p["message"] for p in refused.json["error"]["details"]}
    assert set(problems) == {"location.type", "location.accuracy"}
    assert problems["location.type"].startswith("坐标系")
    # One name for one thing: the new and the old together are refused, not guessed at.
    both = {**WX_LOCATION, "lat": 28.0}
    twice = await supervised.client.call(
        "POST",
        "/mp/v1/checkins",
        {"location": both, "captured_at": clock.now().isoformat()},
        headers={"Idempotency-Key": uuid.uuid4().hex},
    )
    assert twice.status == 422
    assert twice.json["error"]["details"][0]["field"] == "location.lat"


async def test_the_document_shows_the_wx_get_location_names(fetch):
    document = (await fetch("/openapi.json")).json
    schemas = document["components"]["schemas"]
    geo = schemas["GeoLocation"]
    assert {"latitude", "longitude", "type", "accuracy", "errMsg"} <= set(geo["properties"])
    assert "lat" not in geo["properties"]
    # Every body that takes a location takes this one.
    for path, method in (
        ("/mp/v1/checkins", "post"),
        ("/mp/v1/worker/visits", "post"),
        ("/mp/v1/leave-requests/{leave_id}/return", "post"),
        ("/api/v1/subjects/{subject_id}/visits", "post"),
    ):
        ref = document["paths"][path][method]["requestBody"]["content"]["application/json"]
        body = schemas[ref["schema"]["$ref"].rsplit("/", 1)[-1]]
        location = body["properties"]["location"]
        refs = [location.get("$ref")] + [o.get("$ref") for o in location.get("anyOf", [])]
        assert "#/components/schemas/GeoLocation" in refs, (path, location)

"""Photo downloads over real HTTP: the image for whoever may see it, the same 404 for everyone
else (never a 403 that confirms it exists), and no answer ever cached."""

from __future__ import annotations

import struct
import zlib

from models.policy import Role
from tests.mp_support import STATION_CENTRE, local


def png(width: int, height: int) -> bytes:
    """A real (grey) PNG, as the upload check reads it."""
    raw = b"".join(b"\x00" + b"\x80" * width for _ in range(height))

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


PNG = png(64, 48)


def assert_not_cached(answer) -> None:
    assert answer.headers["Cache-Control"] == "no-store"
    assert answer.headers["Pragma"] == "no-cache"


async def checkin_with_photo(supervised, clock) -> str:
    client = supervised.client
    clock.set(local(2026, 11, 2, 10, 0))
    upload = await client.upload(PNG, filename="a.png", content_type="image/png")
    assert upload.status == 201, upload.body
    done = await client.check_in(
        lat=STATION_CENTRE.lat,
        lng=STATION_CENTRE.lng,
        captured_at=clock.now(),
        coord_type="wgs84",
        photo_upload_id=upload.json["upload_id"],
    )
    assert done.status in (200, 201), done.body
    return str(done.json["id"])


async def test_the_station_officer_gets_the_check_in_photo_uncached(supervised, clock, fetch):
    checkin_id = await checkin_with_photo(supervised, clock)
    answer = await fetch(
        f"/api/v1/checkins/{checkin_id}/photo", token=await supervised.officer_token()
    )
    assert answer.status == 200, answer.body
    assert answer.body == PNG
    assert answer.headers["Content-Type"] == "image/png"
    assert_not_cached(answer)


async def test_whoever_may_not_see_a_check_in_photo_gets_404_uncached(
    supervised, clock, fetch, make_staff, tree
):
    checkin_id = await checkin_with_photo(supervised, clock)
    path = f"/api/v1/checkins/{checkin_id}/photo"
    strangers = {
        "other station": await make_staff(Role.STATION_OFFICER, tree.other_station),
        "grid worker": await make_staff(Role.GRID_WORKER, tree.community),
        "oversight": await make_staff(Role.OVERSIGHT, tree.county),
    }
    tokens = {name: await make_staff.token_for(who) for name, who in strangers.items()}
    tokens["mini-program"] = supervised.client.token
    officer = await supervised.officer_token()
    missing = await fetch("/api/v1/checkins/no-such-checkin/photo", token=officer)
    assert missing.status == 404
    for name, token in tokens.items():
        answer = await fetch(path, token=token)
        assert answer.status == 404, name
        # The refusal is indistinguishable from a check-in that does not exist.
        assert answer.json["error"]["code"] == missing.json["error"]["code"], name
        assert answer.body.count(PNG) == 0, name
        assert_not_cached(answer)
    assert (await fetch(path)).status == 401


async def test_the_enrolled_photo_is_hidden_the_same_way(supervised, fetch, make_staff, tree):
    path = f"/api/v1/subjects/{supervised.subject_id}/photo"
    officer = await supervised.officer_token()
    stored = await fetch(
        path, "PUT", body=PNG, headers={"Content-Type": "image/png"}, token=officer
    )
    assert stored.status == 201, stored.body
    shown = await fetch(path, token=officer)
    assert shown.status == 200 and shown.body == PNG
    assert_not_cached(shown)
    # Roles without case-file access at all (they used to get 403).
    for role, node in ((Role.SYS_ADMIN, tree.county), (Role.AUDIT_ADMIN, tree.county)):
        token = await make_staff.token_for(await make_staff(role, node))
        answer = await fetch(path, token=token)
        assert answer.status == 404, role
        assert_not_cached(answer)
    answer = await fetch(path, token=supervised.client.token)
    assert answer.status == 404
    assert_not_cached(answer)

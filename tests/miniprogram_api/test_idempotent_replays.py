"""A retry under the same `Idempotency-Key` answers the first answer byte for byte, on every
idempotent mini-program route (the clock runs on between the two, to the microsecond)."""

from __future__ import annotations

import datetime as dt
import inspect
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import pytest

from handlers.openapi import HTTP_METHODS, path_template
from miniprogram_api.client import MiniProgramClient, multipart
from server.app import all_routes
from tests.miniprogram_api.test_checkins import png_bytes
from tests.mp_support import STATION_CENTRE, MpClients, Supervised, enrol, local

# Microseconds the database would not keep: a replay rebuilt from a record would lose them.
FIRST_SENT = local(2026, 11, 2, 10, 0, 0) + dt.timedelta(microseconds=123_456)


@dataclass
class Call:
    """One write as the mini-program sends it (and, on a weak signal, sends again)."""

    client: MiniProgramClient
    path: str
    json_body: Any = None
    body: bytes | None = None
    headers: dict[str, str] = field(default_factory=dict)

    async def send(self, key: str) -> tuple[int, bytes]:
        headers = {**self.headers, "Idempotency-Key": key}
        answer = await self.client.call(
            "POST", self.path, self.json_body, body=self.body, headers=headers
        )
        return answer.status, answer.body


@dataclass
class World:
    supervised: Supervised
    fetch: Any
    mp_clients: MpClients
    tree: Any
    make_staff: Any
    services: Any
    clock: Any

    @property
    def person(self) -> MiniProgramClient:
        return self.supervised.client

    async def worker(self) -> MiniProgramClient:
        """The person's station officer, bound to WeChat."""
        token = await self.supervised.officer_token()
        code = await self.fetch("/api/v1/me/binding-code", "POST", token=token)
        assert code.status == 201, code.body
        phone = self.mp_clients()
        assert (await phone.login("replay-officer")).status == 200
        assert (await phone.bind(code.json["code"])).status == 200
        return phone

    async def leave_request(self) -> str:
        asked = await self.person.call(
            "POST",
            "/mp/v1/leave-requests",
            {
                "start_date": "2026-11-03",
                "end_date": "2026-11-05",
                "destination": "丽水",
                "reason": "探亲",
            },
            headers={"Idempotency-Key": uuid.uuid4().hex},
        )
        assert asked.status == 201, asked.body
        return str(asked.json["id"])


Setup = Callable[[World], Awaitable[Call]]


def check_in_body(world: World, lng: float = STATION_CENTRE.lng) -> dict[str, Any]:
    return {
        "location": {"lat": STATION_CENTRE.lat, "lng": lng, "coord_type": "wgs84", "accuracy": 10},
        "captured_at": world.clock.now().isoformat(),
    }


async def check_in(world: World) -> Call:
    return Call(world.person, "/mp/v1/checkins", check_in_body(world))


async def upload(world: World) -> Call:
    media_type, body = multipart("file", "photo.png", "image/png", png_bytes(40, 40))
    return Call(world.person, "/mp/v1/uploads", body=body, headers={"Content-Type": media_type})


async def ask_leave(world: World) -> Call:
    body = {"start_date": "2026-11-10", "end_date": "2026-11-11", "destination": "杭州"}
    return Call(world.person, "/mp/v1/leave-requests", {**body, "reason": "探亲"})


async def return_from_leave(world: World) -> Call:
    leave_id = await world.leave_request()
    decided = await world.fetch(
        f"/api/v1/leave-requests/{leave_id}/decision",
        "POST",
        json_body={"approve": True, "comment": "同意"},
        token=await world.supervised.officer_token(),
    )
    assert decided.status == 200, decided.body
    world.clock.set(local(2026, 11, 4, 10, 0) + dt.timedelta(microseconds=654_321))
    return Call(world.person, f"/mp/v1/leave-requests/{leave_id}/return", {})


async def ask_for_help(world: World) -> Call:
    return Call(
        world.person, "/mp/v1/assistance-requests", {"needs": ["job"], "note": "想找一份工作"}
    )


async def consent(world: World) -> Call:
    return Call(world.person, "/mp/v1/consents", {"privacy_notice_version": "2026-11"})


async def bind(world: World) -> Call:
    code = await world.fetch(
        f"/api/v1/subjects/{world.supervised.subject_id}/binding-code",
        "POST",
        json_body={"role": "subject"},
        token=await world.supervised.officer_token(),
    )
    assert code.status == 201, code.body
    phone = world.mp_clients()
    assert (await phone.login("replay-new-phone")).status == 200
    return Call(phone, "/mp/v1/auth/bind", {"binding_code": code.json["code"]})


async def visit(world: World) -> Call:
    body = {"subject_id": world.supervised.subject_id, "kind": "visit", "note": "入户走访"}
    return Call(await world.worker(), "/mp/v1/worker/visits", body)


async def acknowledge_alert(world: World) -> Call:
    station = world.tree.station
    alert_id = await world.services.alerts.raise_alert(
        kind="test", org_id=station.id, org_path=station.path
    )
    return Call(await world.worker(), f"/mp/v1/worker/alerts/{alert_id}/ack")


async def record_result(world: World) -> Call:
    token = await world.supervised.officer_token()
    detox = {"type": "drug_rehab", "start_date": "2026-11-02", "mode": "community_detox"}
    subject_id, _ = await enrol(
        world.fetch, world.mp_clients, world.tree, token, detox, "replay-detox"
    )
    listed = await world.fetch(
        f"/api/v1/subjects/{subject_id}/obligations?from=2026-11-02&to=2026-12-01&kind=drug_test",
        token=token,
    )
    occurrence = next(o for o in listed.json["items"] if o["id"])
    path = f"/mp/v1/worker/obligations/{occurrence['id']}/result"
    return Call(await world.worker(), path, {"outcome": "negative"})


async def decide_leave(world: World) -> Call:
    leave_id = await world.leave_request()
    body = {"approve": True, "comment": "同意"}
    return Call(await world.worker(), f"/mp/v1/worker/leave-requests/{leave_id}/decision", body)


async def review_check_in(world: World) -> Call:
    # About 10 km east of the station's centre: outside its area, so held for review.
    flagged = await world.person.call(
        "POST",
        "/mp/v1/checkins",
        check_in_body(world, STATION_CENTRE.lng + 0.1),
        headers={"Idempotency-Key": uuid.uuid4().hex},
    )
    assert flagged.status == 201 and flagged.json["review"] == "pending", flagged.body
    body = {"accept": True, "comment": "已电话核实"}
    return Call(await world.worker(), f"/mp/v1/worker/checkins/{flagged.json['id']}/review", body)


async def read_message(world: World) -> Call:
    assert await world.services.notices.document_issued(
        world.supervised.subject_id, "replay-document", "社区矫正宣告书"
    )
    (message,) = (await world.person.call("GET", "/mp/v1/messages")).json["items"]
    return Call(world.person, f"/mp/v1/messages/{message['id']}/read")


SETUPS: dict[str, Setup] = {
    "/mp/v1/checkins": check_in,
    "/mp/v1/uploads": upload,
    "/mp/v1/leave-requests": ask_leave,
    "/mp/v1/leave-requests/{leave_id}/return": return_from_leave,
    "/mp/v1/assistance-requests": ask_for_help,
    "/mp/v1/consents": consent,
    "/mp/v1/auth/bind": bind,
    "/mp/v1/worker/visits": visit,
    "/mp/v1/worker/alerts/{alert_id}/ack": acknowledge_alert,
    "/mp/v1/worker/obligations/{occurrence_id}/result": record_result,
    "/mp/v1/worker/leave-requests/{leave_id}/decision": decide_leave,
    "/mp/v1/worker/checkins/{checkin_id}/review": review_check_in,
    "/mp/v1/messages/{message_id}/read": read_message,
}


def idempotent_routes() -> set[str]:
    """The writes that answer a retry from the first answer: through the base handler's
    `respond_once` / `respond_captured`, or by passing the key to their service."""
    found = set()
    for route in all_routes():
        pattern, handler = route[0], route[1]
        for method in HTTP_METHODS:
            function = getattr(handler, method, None)
            if getattr(function, "__endpoint__", None) is None:
                continue
            source = inspect.getsource(function)
            if any(
                mark in source
                for mark in ("respond_once(", "respond_captured(", "idempotency_key()")
            ):
                found.add(path_template(pattern))
    return found


def test_every_idempotent_route_is_replayed_below():
    assert set(SETUPS) == idempotent_routes()


@pytest.mark.parametrize("route", sorted(SETUPS))
async def test_a_retry_answers_the_first_answer_byte_for_byte(
    route, supervised, fetch, mp_clients, tree, make_staff, services, clock
):
    clock.set(FIRST_SENT)
    world = World(supervised, fetch, mp_clients, tree, make_staff, services, clock)
    call = await SETUPS[route](world)
    key = f"replay-{uuid.uuid4().hex}"
    first_status, first_body = await call.send(key)
    assert first_status in (200, 201), first_body
    clock.advance(dt.timedelta(seconds=2, microseconds=111_111))
    again_status, again_body = await call.send(key)
    assert (again_status, again_body) == (first_status, first_body)

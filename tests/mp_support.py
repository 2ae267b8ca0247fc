"""Fixtures for the mini-program: a supervised person bound to WeChat through the stand-in, a
station with a permitted area, and a client that behaves like the mini-program."""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import pytest_asyncio
from tornado.httpclient import AsyncHTTPClient

from miniprogram_api.client import MiniProgramClient
from models.clock import LOCAL_TZ
from models.geo import Area, Point
from models.policy import Role
from server.app import SYSTEM, Services, build_services
from tests.subject_factories import subject_body

# 五马街, 温州 (WGS-84): the test station's centre.
STATION_CENTRE = Point(28.0197, 120.6543)
STATION_RADIUS_M = 3000.0


def local(*args: int) -> dt.datetime:
    return dt.datetime(*args, tzinfo=LOCAL_TZ)


@dataclass
class Supervised:
    """A person under community corrections (daily check-ins), bound to the mini-program."""

    subject_id: str
    client: MiniProgramClient
    officer: Any
    county: Any
    make_staff: Any

    async def officer_token(self) -> str:
        """A fresh session (staff sessions idle out as the tests move the clock)."""
        return str(await self.make_staff.token_for(self.officer))

    async def county_token(self) -> str:
        return str(await self.make_staff.token_for(self.county))


class MpClients:
    """Mini-program clients on one HTTP client, closed with the test."""

    def __init__(self, base_url: str):
        self.base_url = base_url
        self.http = AsyncHTTPClient(force_instance=True, max_clients=64)

    def __call__(self, device_id: str | None = None) -> MiniProgramClient:
        return MiniProgramClient(
            self.base_url, http=self.http, device_id=device_id, keep_history=True
        )


@pytest_asyncio.fixture
async def mp_clients(api) -> AsyncIterator[MpClients]:
    clients = MpClients(api.base_url)
    yield clients
    clients.http.close()


async def enrol(
    fetch, mp_clients: MpClients, tree, officer_token: str, program: dict, label: str
) -> tuple[str, MiniProgramClient]:
    """A case file with `program`, and its person signed in and bound through WeChat."""
    created = await fetch(
        "/api/v1/subjects", "POST", json_body=subject_body(tree.station.id), token=officer_token
    )
    assert created.status == 201, created.body
    subject_id = created.json["id"]
    opened = await fetch(
        f"/api/v1/subjects/{subject_id}/programs", "POST", json_body=program, token=officer_token
    )
    assert opened.status == 201, opened.body
    issued = await fetch(
        f"/api/v1/subjects/{subject_id}/binding-code",
        "POST",
        json_body={"role": "subject"},
        token=officer_token,
    )
    assert issued.status == 201, issued.body
    client = mp_clients()
    assert (await client.login(label)).status == 200
    bound = await client.bind(issued.json["code"])
    assert bound.status == 200, bound.body
    return subject_id, client


@pytest_asyncio.fixture
async def supervised(api, services, tree, make_staff, clock, fetch, mp_clients) -> Supervised:
    """Monday 2 November 2026, 08:00 in Wenzhou: a new probationer (严管: daily check-ins)."""
    clock.set(local(2026, 11, 2, 8, 0))
    await services.orgs.set_area(
        SYSTEM, tree.station.id, Area(center=STATION_CENTRE, radius_m=STATION_RADIUS_M)
    )
    officer = await make_staff(Role.STATION_OFFICER, tree.station)
    county = await make_staff(Role.COUNTY_OFFICER, tree.county)
    officer_token = await make_staff.token_for(officer)
    program = {
        "type": "community_corrections",
        "start_date": "2026-11-02",
        "end_date": "2027-11-01",
        "sentence_type": "probation",
    }
    subject_id, client = await enrol(fetch, mp_clients, tree, officer_token, program, "probationer")
    return Supervised(subject_id, client, officer, county, make_staff)


@pytest_asyncio.fixture
async def jobs_services(api, store, config, clock, vault) -> AsyncIterator[Services]:
    """The jobs process's services over the same database: its notifier pushes through WeChat
    (the stand-in), as the real jobs process does."""
    services = build_services(
        store, config, clock, vault, process_role="jobs", push_notifications=True
    )
    yield services
    await services.close()

"""阳光之家 waiting list under concurrency: the position answered to each person who finds no
free bed is the position that person holds in the stored list, never a repeat or a guess.

The second test runs a second API process over the same database through a fault proxy
(tests/faultproxy.py) that freezes its request just before it writes to the waiting list, so
others join while that join is in flight, as with several API processes in production.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest_asyncio

from models.clock import LOCAL_TZ
from models.passwords import TEST_COST
from models.policy import Role
from models.store import DatabaseSettings, Store
from server.app import assemble_api, open_vault
from tests.conftest import Answer, Fetch, ServedApp, serve_runtime
from tests.faultproxy import FaultProxy, mongodb_command, mongodb_frame_length
from tests.subject_factories import subject_body

ROUNDS = 3
WAITLIST_WRITES = frozenset({"insert", "update", "findAndModify"})


@dataclass
class Desk:
    fetch: Fetch
    tree: object
    tokens: dict[str, str]
    ids: dict[str, str]

    async def call(self, who: str, path: str, method: str = "GET", body: dict | None = None):
        return await self.fetch(path, method, json_body=body, token=self.tokens[who])

    async def facility(self) -> str:
        home = await self.call(
            "county",
            "/api/v1/assistance/facilities",
            "POST",
            {
                "name": "鹿城阳光之家",
                "kind": "sunshine_home",
                "org_id": self.tree.county.id,
                "capacity": 3,
                "coordinator_ids": [self.ids["coordinator"]],
            },
        )
        assert home.status == 201, home.body
        return str(home.json["id"])

    async def accepted_referral(self, resource_id: str) -> str:
        created = await self.call(
            "station", "/api/v1/subjects", "POST", subject_body(self.tree.station.id)
        )
        subject_id = created.json["id"]
        await self.call(
            "station",
            f"/api/v1/subjects/{subject_id}/assignments",
            "PUT",
            {"social_worker_ids": [self.ids["social"]]},
        )
        referral = await self.call(
            "social",
            "/api/v1/assistance/referrals",
            "POST",
            {"subject_id": subject_id, "needs": ["housing"], "resource_id": resource_id},
        )
        assert referral.status == 201, referral.body
        rid = str(referral.json["id"])
        for who, step in (
            ("station", {"to": "approved"}),
            ("social", {"to": "offered", "resource_id": resource_id}),
            ("social", {"to": "accepted"}),
        ):
            moved = await self.call(
                who, f"/api/v1/assistance/referrals/{rid}/transition", "POST", step
            )
            assert moved.status == 200, moved.body
        return rid

    async def place(self, rid: str, resource_id: str, via: Fetch | None = None) -> Answer:
        return await (via or self.fetch)(
            "/api/v1/assistance/placements",
            "POST",
            json_body={"referral_id": rid, "resource_id": resource_id},
            token=self.tokens["coordinator"],
        )

    async def assert_told_what_is_stored(
        self, resource_id: str, told: dict[str, Answer], waiting: int
    ) -> None:
        positions = {rid: a.json["error"]["details"]["waiting_position"] for rid, a in told.items()}
        assert sorted(positions.values()) == list(range(1, waiting + 1)), positions
        listed = await self.call(
            "county", f"/api/v1/assistance/resources/{resource_id}/waiting-list"
        )
        stored = {item["referral_id"]: item["position"] for item in listed.json["items"]}
        assert positions == stored


@pytest_asyncio.fixture
async def desk(fetch, make_staff, tree, clock) -> Desk:
    clock.set(dt.datetime(2026, 11, 2, 9, 0, tzinfo=LOCAL_TZ))
    accounts = {
        "county": await make_staff(Role.COUNTY_OFFICER, tree.county),
        "station": await make_staff(Role.STATION_OFFICER, tree.station),
        "social": await make_staff(Role.SOCIAL_WORKER, tree.station),
        "coordinator": await make_staff(Role.ASSISTANCE_COORDINATOR, tree.station),
    }
    tokens = {name: await make_staff.token_for(who) for name, who in accounts.items()}
    return Desk(fetch, tree, tokens, {name: who.id for name, who in accounts.items()})


@pytest_asyncio.fixture
async def second_process(config, clock, database_server) -> AsyncIterator[tuple[Fetch, FaultProxy]]:
    """Another API process over the same database, its every connection through a proxy."""
    host, port = database_server.address
    proxy = FaultProxy(host, port, framer=mongodb_frame_length)
    await proxy.start()
    # directConnection: discovery would otherwise follow the replica set's address, around it.
    store = Store.connect(
        DatabaseSettings(
            uri=f"mongodb://127.0.0.1:{proxy.port}/?retryWrites=false&directConnection=true",
            name=config.db_name,
            production=False,
        )
    )
    served: ServedApp | None = None
    client: Fetch | None = None
    try:
        vault = await open_vault(config, store, clock)
        served = await serve_runtime(assemble_api(store, config, vault, clock, hash_cost=TEST_COST))
        client = Fetch(served.base_url)
        yield client, proxy
    finally:
        proxy.release()
        if client is not None:
            client.close()
        if served is not None:
            served.server.stop()
            await served.server.close_all_connections()
            await served.runtime.services.close()
        await store.close()
        await proxy.stop()


async def test_twelve_concurrent_placements_answer_each_stored_position_once(desk):
    # Several homes, each filled at once by twelve placements.
    for _ in range(ROUNDS):
        home = await desk.facility()
        referrals = [await desk.accepted_referral(home) for _ in range(12)]
        answers = await asyncio.gather(*(desk.place(rid, home) for rid in referrals))
        assert sorted(a.status for a in answers) == [201] * 3 + [409] * 9
        told = {rid: a for rid, a in zip(referrals, answers, strict=True) if a.status == 409}
        await desk.assert_told_what_is_stored(home, told, 9)


async def test_a_join_in_flight_elsewhere_never_shares_or_skews_a_position(desk, second_process):
    other, proxy = second_process
    home = await desk.facility()
    referrals = [await desk.accepted_referral(home) for _ in range(12)]
    beds = await asyncio.gather(*(desk.place(rid, home) for rid in referrals[:3]))
    assert [a.status for a in beds] == [201] * 3
    # The other process's join stops just before its write to the waiting list...
    proxy.hold_before(
        to_server=lambda message: (
            (mongodb_command(message) or ("", ""))[0] in WAITLIST_WRITES
            and (mongodb_command(message) or ("", ""))[1] == "assistance_waitlist"
        )
    )
    frozen = asyncio.ensure_future(desk.place(referrals[3], home, via=other))
    await asyncio.wait_for(proxy.held.wait(), 20)
    # ...while eight more people join through this one.
    joined = await asyncio.gather(*(desk.place(rid, home) for rid in referrals[4:]))
    proxy.release()
    late = await frozen
    told = dict(zip(referrals[3:], [late, *joined], strict=True))
    assert all(a.status == 409 and a.json["error"]["code"] == "full" for a in told.values())
    await desk.assert_told_what_is_stored(home, told, 9)

"""A station's check-in areas: read once for all its people, fresh after a change here."""

from __future__ import annotations

from models.geo import Area, Point
from models.orgs import OrgService
from models.store import DatabaseSettings, Store
from server.app import SYSTEM
from tests.miniprogram_api.test_checkin_budget import CommandLog


async def test_areas_are_read_once_per_station_and_fresh_after_a_change(
    services, tree, config, clock
):
    log = CommandLog()
    store = Store.connect(
        DatabaseSettings(
            uri=config.database_uri, name=config.db_name, production=False, event_listeners=(log,)
        )
    )
    orgs = OrgService(store, clock, services.audit)
    path = [tree.city.id, tree.county.id, tree.station.id]
    try:
        first = Area(center=Point(28.0, 120.6), radius_m=3000)
        await orgs.set_area(SYSTEM, tree.station.id, first)
        assert [a["area"] for a in await orgs.areas_on(path)] == [first.to_doc()]

        # The next person's check-in at the same station costs no read of the areas.
        log.commands.clear()
        assert [a["area"] for a in await orgs.areas_on(path)] == [first.to_doc()]
        assert [c for c in log.commands if c.startswith("find orgs")] == []

        # An officer's change is what the next check-in is judged against.
        second = Area(center=Point(28.1, 120.7), radius_m=500)
        await orgs.set_area(SYSTEM, tree.station.id, second)
        assert [a["area"] for a in await orgs.areas_on(path)] == [second.to_doc()]
    finally:
        await store.close()

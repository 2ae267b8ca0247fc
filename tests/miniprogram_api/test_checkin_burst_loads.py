"""A morning burst on a fresh API process: the rules, areas, org chain and shared keys that
every check-in needs are read once, however many check-ins miss the empty caches at once."""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
from collections import Counter

from pymongo.monitoring import (
    CommandFailedEvent,
    CommandListener,
    CommandStartedEvent,
    CommandSucceededEvent,
)

from models.geo import Area
from models.identity_numbers import IdType
from models.passwords import TEST_COST
from models.store import DatabaseSettings, Store
from models.subjects import SubjectInput
from server.app import SYSTEM, assemble_api, open_vault
from tests.conftest import serve_runtime
from tests.mp_support import STATION_CENTRE, STATION_RADIUS_M, local
from tests.subject_factories import subject_body

PEOPLE = 20
# Login and binding allow 30 attempts per address a minute; the test's phones share one.
PER_MINUTE = 10


class Reads(CommandListener):
    """Every read the API process sends: collection and filter."""

    def __init__(self) -> None:
        self.reads: Counter[tuple[str, str]] = Counter()

    def started(self, event: CommandStartedEvent) -> None:
        if event.command_name == "find":
            query = str(event.command.get("filter"))
            self.reads[(str(event.command["find"]), query)] += 1

    def succeeded(self, event: CommandSucceededEvent) -> None:
        pass

    def failed(self, event: CommandFailedEvent) -> None:
        pass


async def test_twenty_cold_check_ins_at_once_read_each_shared_thing_once(
    services, tree, mp_clients, config, clock
):
    clock.set(local(2026, 11, 2, 8, 0))
    await services.orgs.set_area(
        SYSTEM, tree.station.id, Area(center=STATION_CENTRE, radius_m=STATION_RADIUS_M)
    )
    program = {
        "type": "community_corrections",
        "start_date": "2026-11-02",
        "end_date": "2027-11-01",
        "sentence_type": "probation",
    }
    phones = []
    for index in range(PEOPLE):
        body = subject_body(tree.station.id, birth=dt.date(1980, 1, 1) + dt.timedelta(days=index))
        subject = await services.subjects.create(SYSTEM, _input(body))
        await services.programs.create(SYSTEM, subject.id, program)
        issued = await services.mp_accounts.issue_code(SYSTEM, subject.id, "subject")
        if index and index % PER_MINUTE == 0:
            clock.advance(dt.timedelta(minutes=1, seconds=1))
        phone = mp_clients()
        assert (await phone.login(f"burst-{index}")).status == 200
        assert (await phone.bind(issued.code)).status == 200
        phones.append(phone)
    # Someone checked in before today: the blind-index keys exist (made by the first one).
    first = await phones[0].check_in(
        lat=STATION_CENTRE.lat, lng=STATION_CENTRE.lng, coord_type="wgs84", captured_at=clock.now()
    )
    assert first.status == 201, first.body

    # The next morning, a fresh API process (nothing cached) serves everyone at once.
    reads = Reads()
    settings = DatabaseSettings(
        uri=config.database_uri, name=config.db_name, production=False, event_listeners=(reads,)
    )
    store = Store.connect(settings)
    vault = await open_vault(dataclasses.replace(config), store, clock)
    served = await serve_runtime(assemble_api(store, config, vault, clock, hash_cost=TEST_COST))
    try:
        clock.set(local(2026, 11, 3, 9, 0))
        reads.reads.clear()
        for phone in phones:
            phone.base_url = served.base_url
        answers = await asyncio.gather(
            *(
                phone.check_in(
                    lat=STATION_CENTRE.lat,
                    lng=STATION_CENTRE.lng,
                    coord_type="wgs84",
                    captured_at=clock.now(),
                    retries=0,
                )
                for phone in phones
            )
        )
        assert [a.json["status"] for a in answers] == ["on_time"] * PEOPLE, answers
        twice = {read: n for read, n in reads.reads.items() if n > 1}
        assert twice == {}, twice
        # The shared things were read at all (so "once" is not "never").
        collections = Counter(collection for collection, _ in reads.reads.elements())
        assert collections["rule_overrides"] == 1
        assert collections["orgs"] >= 2  # the station's chain and its areas
    finally:
        served.server.stop()
        await served.server.close_all_connections()
        await served.runtime.services.close()
        await store.close()


def _input(body: dict) -> SubjectInput:
    """The console's fields, as the service takes them."""
    return SubjectInput(
        name=body["name"],
        id_type=IdType(body["id_type"]),
        id_number=body["id_number"],
        phone=body["phone"],
        gender=body["gender"],
        birth_date=dt.date.fromisoformat(body["birth_date"]),
        address=body["address"],
        org_id=body["org_id"],
    )

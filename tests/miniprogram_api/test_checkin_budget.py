"""The database budget of a check-in, counted with PyMongo's command monitoring."""

from __future__ import annotations

import contextlib
import dataclasses
import struct
import zlib
from collections.abc import AsyncIterator
from typing import Any

import pytest
from pymongo.monitoring import (
    CommandFailedEvent,
    CommandListener,
    CommandStartedEvent,
    CommandSucceededEvent,
)

from models.passwords import TEST_COST
from models.sessions import token_hash
from models.store import DatabaseSettings, Store
from server.app import assemble_api, open_vault
from tests.conftest import ServedApp, serve_runtime
from tests.mp_support import STATION_CENTRE, local

# A check-in: the person's check-in state, then one ordered batch of the audit entry, the
# check-in, its window and the state (a bulkWrite), or those four as separate commands on a
# server before MongoDB 8.0.
BUDGET = {
    "bulk": ["find", "bulkWrite"],
    "separate": ["find", "insert", "insert", "update", "update"],
}


class CommandLog(CommandListener):
    """Every command the server process sends, in order (hello and heartbeats excluded)."""

    def __init__(self) -> None:
        self.commands: list[str] = []

    def started(self, event: CommandStartedEvent) -> None:
        if event.command_name not in ("hello", "isMaster", "ismaster", "ping", "endSessions"):
            target = event.command.get(event.command_name)
            self.commands.append(f"{event.command_name} {target}")

    def succeeded(self, event: CommandSucceededEvent) -> None:
        pass

    def failed(self, event: CommandFailedEvent) -> None:
        pass


@contextlib.asynccontextmanager
async def fresh_process(
    config: Any, clock: Any, log: CommandLog, *, bulk: bool = True
) -> AsyncIterator[tuple[Store, ServedApp]]:
    """A second API process over the test's database, nothing cached, its commands in `log`."""
    settings = DatabaseSettings(
        uri=config.database_uri,
        name=config.db_name,
        production=False,
        event_listeners=(log,),
        client_bulk_write=bulk,
    )
    store = Store.connect(settings)
    vault = await open_vault(dataclasses.replace(config), store, clock)
    served = await serve_runtime(assemble_api(store, config, vault, clock, hash_cost=TEST_COST))
    try:
        yield store, served
    finally:
        served.server.stop()
        await served.server.close_all_connections()
        await served.runtime.services.close()
        await store.close()


@pytest.mark.parametrize("mode", ["bulk", "separate"])
async def test_a_check_in_costs_two_round_trips_or_five_without_bulk_write(
    supervised, config, clock, mode
):
    log = CommandLog()
    async with fresh_process(config, clock, log, bulk=mode == "bulk") as (_store, served):
        client = supervised.client
        client.base_url = served.base_url
        clock.set(local(2026, 11, 2, 9, 0))
        assert (await client.login("probationer")).status == 200
        # The process's first check-in for this person unwraps keys and loads the rules.
        first = await client.check_in(
            lat=STATION_CENTRE.lat,
            lng=STATION_CENTRE.lng,
            coord_type="wgs84",
            captured_at=clock.now(),
        )
        assert first.status == 201, first.body
        # The next morning the mini-program opens (wx.login, then our login) and checks in.
        clock.set(local(2026, 11, 3, 9, 0))
        assert (await client.login("probationer")).status == 200
        log.commands.clear()
        second = await client.check_in(
            lat=STATION_CENTRE.lat,
            lng=STATION_CENTRE.lng,
            coord_type="wgs84",
            captured_at=clock.now(),
        )
        assert second.json["status"] == "on_time"
        counted = list(log.commands)
        assert [c.split()[0] for c in counted] == BUDGET[mode], counted
        # A retry costs the read, its audit entry and the (idempotent) re-application.
        log.commands.clear()
        retry_key = "budget-retry-1"
        await client.check_in(
            lat=STATION_CENTRE.lat,
            lng=STATION_CENTRE.lng,
            coord_type="wgs84",
            captured_at=clock.now(),
            key=retry_key,
        )
        log.commands.clear()
        again = await client.check_in(
            lat=STATION_CENTRE.lat,
            lng=STATION_CENTRE.lng,
            coord_type="wgs84",
            captured_at=clock.now(),
            key=retry_key,
        )
        assert again.status == 201
        assert len(log.commands) <= 3, log.commands


def grey_png(width: int, height: int) -> bytes:
    raw = b"".join(b"\x00" + b"\x80" * width for _ in range(height))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(raw))
        + chunk(b"IEND", b"")
    )


async def test_a_photo_upload_never_reads_the_stored_photos(supervised, config, clock):
    """GridFS would read the first stored file and chunk at every upload to decide on its
    indexes (on the embedded database, a read of every stored photo); they are made at start."""
    log = CommandLog()
    async with fresh_process(config, clock, log) as (store, served):
        client = supervised.client
        client.base_url = served.base_url
        assert (await client.login("probationer")).status == 200
        for shade in range(2):
            log.commands.clear()
            answer = await client.upload(grey_png(64 + shade, 48), content_type="image/png")
            assert answer.status == 201, answer.body
            reads = [c for c in log.commands if c.startswith("find attachments")]
            assert reads == [], log.commands
        indexes = await store.collection("attachments.chunks").index_information()
        assert indexes["files_id_1_n_1"]["unique"] is True


# What a fresh process loads once for everyone it serves, whoever comes first (single-flight,
# then cached): its own keys (secrets, blind indexes), the station's org chain and area, and
# the rules' overrides.
PER_PROCESS = ("key_vault", "orgs", "rule_overrides")


def per_person(commands: list[str]) -> list[str]:
    """The commands that are this person's own."""
    shown = [" ".join(c.split()[:2]) for c in commands]
    return [c for c in shown if c.split()[1] not in PER_PROCESS]


async def test_a_fresh_process_serves_the_morning_in_three_commands_each(
    supervised, config, clock, api, mp_clients
):
    """The morning as a new API process meets it: a check-in on the phone's token from the day
    before, a login, then a photo upload and a check-in with it (the session now cached)."""
    client = supervised.client
    # Yesterday: signed in, bound and checked in through the first process (the state built).
    clock.set(local(2026, 11, 2, 9, 0))
    assert (await client.login("probationer")).status == 200
    answer = await client.check_in(
        lat=STATION_CENTRE.lat, lng=STATION_CENTRE.lng, coord_type="wgs84", captured_at=clock.now()
    )
    assert answer.status == 201, answer.body
    log = CommandLog()
    async with fresh_process(config, clock, log) as (store, served):
        client.base_url = served.base_url
        clock.set(local(2026, 11, 3, 9, 0))
        # Someone else comes first and opens the process's audit chain.
        passer_by = mp_clients()
        passer_by.base_url = served.base_url
        assert (await passer_by.login("passer-by")).status == 200
        log.commands.clear()
        cold = await client.check_in(
            lat=STATION_CENTRE.lat,
            lng=STATION_CENTRE.lng,
            coord_type="wgs84",
            captured_at=clock.now(),
        )
        assert cold.json["status"] == "on_time", cold.body
        assert per_person(log.commands) == [
            # Seen yesterday: marked seen today by the check-in's own batch.
            "find sessions",
            "find checkin_state",
            "bulkWrite 1",
        ], log.commands
        session = await store.collection("sessions").find_one({"_id": token_hash(client.token)})
        assert session is not None and session["last_seen_at"] == clock.now()
        clock.set(local(2026, 11, 4, 9, 0))
        log.commands.clear()
        assert (await client.login("probationer")).status == 200
        assert per_person(log.commands) == [
            "findAndModify throttles",
            "aggregate wechat_users",
            "bulkWrite 1",
        ], log.commands
        log.commands.clear()
        upload = await client.upload(grey_png(64, 48), content_type="image/png")
        assert upload.status == 201, upload.body
        assert per_person(log.commands) == ["find checkin_state", "bulkWrite 1"], log.commands
        log.commands.clear()
        with_photo = await client.check_in(
            lat=STATION_CENTRE.lat,
            lng=STATION_CENTRE.lng,
            coord_type="wgs84",
            captured_at=clock.now(),
            photo_upload_id=upload.json["upload_id"],
        )
        assert with_photo.status == 201, with_photo.body
        assert per_person(log.commands) == ["find checkin_state", "bulkWrite 1"], log.commands

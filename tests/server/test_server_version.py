"""Start-up refuses a MongoDB server older than the supported release line, with a clear message."""

from __future__ import annotations

from typing import Any

import pytest
from pymongo import monitoring

from models.store import DatabaseSettings, Store
from server import app
from server.app import (
    MIN_SERVER_VERSION,
    DatabaseNotReady,
    DatabaseTooOld,
    build_api,
    require_server_version,
    wait_for_database,
)
from server.config import Config


class CommandNames(monitoring.CommandListener):
    """Records the name of every command the client sends."""

    def __init__(self) -> None:
        self.names: list[str] = []

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        self.names.append(event.command_name)

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
        pass

    def failed(self, event: monitoring.CommandFailedEvent) -> None:
        pass


def test_the_floor_is_mongodb_8_0():
    assert MIN_SERVER_VERSION == (8, 0)


@pytest.mark.parametrize(
    "version", ["8.0.0", "8.0", "8.0.0-rc1", "8.0.4-ent", "8.2.11", "9.0.1", "10.0.0", " 8.0.3 "]
)
def test_the_floor_and_newer_are_accepted(version: str):
    require_server_version(version)


@pytest.mark.parametrize("version", ["7.3.4", "7.0.15", "6.0.20", "5.0.0", "4.4.29", "0.0.0"])
def test_an_older_server_is_refused_naming_both_versions_and_the_way_out(version: str):
    with pytest.raises(DatabaseTooOld) as caught:
        require_server_version(version)
    message = str(caught.value)
    assert f"MongoDB {version}" in message
    assert "needs MongoDB 8.0 or later" in message
    assert "upgrade the replica set to 8.0" in message
    assert "MONGODB_URI" in message


@pytest.mark.parametrize("version", ["", "eight", "8", "v8.0.0", "8.x.1", "8.0.0.0", None, 8.0])
def test_an_unreadable_version_is_refused_clearly(version: Any):
    with pytest.raises(DatabaseTooOld) as caught:
        require_server_version(version)
    message = str(caught.value)
    assert f"reported version {version!r}" in message
    assert "not a MongoDB version" in message
    assert "needs MongoDB 8.0 or later" in message


def test_too_old_is_a_kind_of_not_ready():
    # The CLIs that already report DatabaseNotReady cleanly report this one the same way.
    assert issubclass(DatabaseTooOld, DatabaseNotReady)


async def test_the_embedded_database_passes_with_one_build_info(config: Config):
    listener = CommandNames()
    store = Store.connect(
        DatabaseSettings(
            uri=config.database_uri,
            name=config.db_name,
            production=False,
            event_listeners=(listener,),
        )
    )
    try:
        info = await store.database.command("buildInfo")
        major, minor = (int(part) for part in info["version"].split(".")[:2])
        assert (major, minor) >= MIN_SERVER_VERSION
        listener.names.clear()
        await wait_for_database(store, 5)
    finally:
        await store.close()
    assert listener.names.count("buildInfo") == 1


async def test_start_up_refuses_the_real_server_below_a_raised_floor(
    config: Config, monkeypatch: pytest.MonkeyPatch
):
    """The wiring, through the real embedded database: what it reports is what is compared."""
    monkeypatch.setattr(app, "MIN_SERVER_VERSION", (99, 0))
    store = Store.connect(
        DatabaseSettings(uri=config.database_uri, name=config.db_name, production=False)
    )
    try:
        reported = (await store.database.command("buildInfo"))["version"]
        with pytest.raises(DatabaseTooOld, match=rf"is MongoDB {reported}; .* needs MongoDB 99\.0"):
            await wait_for_database(store, 5)
    finally:
        await store.close()
    # The API process goes through the same door and stops before building anything.
    with pytest.raises(DatabaseTooOld, match=r"needs MongoDB 99\.0 or later"):
        await build_api(config)

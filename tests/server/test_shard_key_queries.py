"""The hot paths name the planned shard key of every growing collection they touch, so they stay
targeted once the collection is sharded (models/shard_keys.py, docs/scaling.md)."""

from __future__ import annotations

import dataclasses
import struct
import zlib
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Any

import pytest_asyncio
from pymongo.monitoring import (
    CommandFailedEvent,
    CommandListener,
    CommandStartedEvent,
    CommandSucceededEvent,
)

from models.passwords import TEST_COST
from models.policy import Role
from models.shard_keys import (
    REKEY_BEFORE_SHARDING,
    SHARD_KEYS,
    UNTARGETED,
    ShardKey,
    carries,
    exception_for,
)
from models.store import DatabaseSettings, Store
from server.app import assemble_api, collection_specs, open_vault
from tests.conftest import Fetch, ServedApp, serve_runtime
from tests.mp_support import STATION_CENTRE, Supervised, local


def grey_png(width: int, height: int) -> bytes:
    """A small valid PNG: a photo for the upload path."""
    raw = b"".join(b"\x00" + b"\x80" * width for _ in range(height))

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = struct.pack(">I", zlib.crc32(kind + data))
        return struct.pack(">I", len(data)) + kind + data + crc

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(raw))
        + chunk(b"IEND", b"")
    )


@dataclass(frozen=True)
class Sent:
    command: str
    collection: str
    query: Mapping[str, Any] | None  # the filter (None for an insert)
    documents: tuple[Mapping[str, Any], ...] = ()


def _queries(name: str, command: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    """The filters a command selects documents by."""
    if name == "find":
        return [command.get("filter") or {}]
    if name in ("count", "findAndModify"):
        return [command.get("query") or {}]
    if name == "distinct":
        return [command.get("query") or {}]
    if name == "update":
        return [u.get("q") or {} for u in command.get("updates", ())]
    if name == "delete":
        return [d.get("q") or {} for d in command.get("deletes", ())]
    if name == "aggregate":
        first = (command.get("pipeline") or [{}])[0]
        return [first.get("$match", {})]
    return []


class Commands(CommandListener):
    """Every command an API process sends to the collections with a planned shard key."""

    def __init__(self) -> None:
        self.sent: list[Sent] = []

    def started(self, event: CommandStartedEvent) -> None:
        name = event.command_name
        if name == "bulkWrite":
            self._bulk(event.command)
            return
        collection = event.command.get(name)
        if not isinstance(collection, str) or collection not in SHARD_KEYS:
            return
        if name == "insert":
            documents = tuple(event.command.get("documents", ()))
            self.sent.append(Sent(name, collection, None, documents))
            return
        for query in _queries(name, event.command):
            self.sent.append(Sent(name, collection, query))

    def _bulk(self, command: Mapping[str, Any]) -> None:
        """MongoDB 8's `bulkWrite` (the check-in's one write): each operation names its
        collection by index into `nsInfo`, and is read as the command it stands for."""
        namespaces = [info["ns"].split(".", 1)[1] for info in command.get("nsInfo", ())]
        for op in command.get("ops", ()):
            kind = next(k for k in ("insert", "update", "delete") if k in op)
            collection = namespaces[op[kind]]
            if collection not in SHARD_KEYS:
                continue
            if kind == "insert":
                self.sent.append(Sent(kind, collection, None, (op["document"],)))
            else:
                self.sent.append(Sent(kind, collection, op.get("filter") or {}))

    def succeeded(self, event: CommandSucceededEvent) -> None:
        pass

    def failed(self, event: CommandFailedEvent) -> None:
        pass


@dataclass
class Watched:
    served: ServedApp
    commands: Commands
    fetch: Fetch


@pytest_asyncio.fixture
async def watched(supervised: Supervised, config, clock) -> AsyncIterator[Watched]:
    """An API process of its own whose client reports every command it sends."""
    commands = Commands()
    settings = DatabaseSettings(
        uri=config.database_uri, name=config.db_name, production=False, event_listeners=(commands,)
    )
    store = Store.connect(settings)
    vault = await open_vault(dataclasses.replace(config), store, clock)
    served = await serve_runtime(assemble_api(store, config, vault, clock, hash_cost=TEST_COST))
    supervised.client.base_url = served.base_url
    fetch = Fetch(served.base_url)
    try:
        yield Watched(served, commands, fetch)
    finally:
        fetch.close()
        served.server.stop()
        await served.server.close_all_connections()
        await served.runtime.services.close()
        await store.close()


def _untargeted(sent: list[Sent]) -> tuple[list[str], set[tuple[str, str, frozenset[str]]]]:
    """Queries that name no shard key and are not a declared exception, and the declared
    exceptions that were seen."""
    wrong: list[str] = []
    seen: set[tuple[str, str, frozenset[str]]] = set()
    for item in sent:
        key = SHARD_KEYS[item.collection]
        if item.query is None:
            for document in item.documents:
                missing = [name for name in key.fields if name not in document]
                if missing:
                    wrong.append(f"insert {item.collection} without {missing}")
            continue
        if carries(item.query, key):
            continue
        known = exception_for(item.collection, item.command, item.query)
        if known is None:
            wrong.append(f"{item.command} {item.collection} {dict(item.query)}")
        else:
            seen.add((known.collection, known.command, known.fields))
    return wrong, seen


async def test_a_mornings_hot_paths_name_their_shard_keys(
    watched: Watched, supervised: Supervised, clock, make_staff, tree
):
    """A person's login, check-in, photo and tasks, and an officer's login, caseload and case
    file: every query on a growing collection is targeted, or a declared exception."""
    client = supervised.client
    clock.set(local(2026, 11, 3, 8, 30))
    assert (await client.login("probationer")).status == 200
    checked = await client.check_in(
        lat=STATION_CENTRE.lat, lng=STATION_CENTRE.lng, coord_type="wgs84", captured_at=clock.now()
    )
    assert checked.status == 201, checked.body
    again = await client.check_in(
        lat=STATION_CENTRE.lat,
        lng=STATION_CENTRE.lng,
        coord_type="wgs84",
        captured_at=clock.now(),
        key="shard-key-retry",
    )
    assert again.status == 201, again.body
    photo = await client.upload(grey_png(64, 48), content_type="image/png")
    assert photo.status == 201, photo.body
    with_photo = await client.check_in(
        lat=STATION_CENTRE.lat,
        lng=STATION_CENTRE.lng,
        coord_type="wgs84",
        captured_at=clock.now(),
        photo_upload_id=photo.json["upload_id"],
    )
    assert with_photo.status == 201, with_photo.body
    assert (await client.tasks()).status == 200
    assert (await client.call("GET", "/mp/v1/messages")).status == 200

    officer = await make_staff(Role.STATION_OFFICER, tree.station)
    fetch = watched.fetch
    login = await fetch(
        "/api/v1/auth/login",
        "POST",
        json_body={"username": officer.username, "password": officer.password},
    )
    assert login.status == 200, login.body
    token = login.json["token"]
    subject = supervised.subject_id
    assert (await fetch("/api/v1/caseload", token=token)).status == 200
    assert (await fetch(f"/api/v1/subjects/{subject}", token=token)).status == 200
    windows = await fetch(f"/api/v1/subjects/{subject}/obligations", token=token)
    assert windows.status == 200, windows.body
    visit = await fetch(
        f"/api/v1/subjects/{subject}/visits",
        "POST",
        json_body={"kind": "visit", "note": "家中走访，情况稳定。"},
        token=token,
    )
    assert visit.status == 201, visit.body

    sent = watched.commands.sent
    touched = {item.collection for item in sent}
    # The paths reached the collections this test is about.
    assert {"checkins", "occurrences", "audit", "attachments.files", "attachments.chunks"} <= (
        touched
    )
    assert {"uploads", "messages", "sessions", "visits", "wechat_users"} <= touched
    wrong, seen = _untargeted(sent)
    assert wrong == [], "queries without their shard key (declare or fix them):\n" + "\n".join(
        wrong
    )
    # What the hot paths still send untargeted is exactly what is declared hot.
    hot = {(u.collection, u.command, u.fields) for u in UNTARGETED if u.hot}
    assert hot <= seen, hot - seen


def test_every_planned_key_names_a_collection_the_code_declares():
    declared = {spec.name for spec in collection_specs()}
    assert set(SHARD_KEYS) <= declared, set(SHARD_KEYS) - declared
    assert {u.collection for u in UNTARGETED} <= set(SHARD_KEYS)


def test_unique_indexes_fit_the_keys_except_those_to_rebuild_first():
    """MongoDB enforces a unique index across shards only when a ranged shard key prefixes it;
    the ones that do not are listed to be rebuilt before sharding, and nothing else."""
    unfit: dict[str, list[str]] = {}
    for spec in collection_specs():
        key = SHARD_KEYS.get(spec.name)
        if key is None:
            continue
        for index in spec.indexes:
            document = index.document
            if not document.get("unique"):
                continue
            fields = tuple(document["key"])
            prefixed = not key.hashed and fields[: len(key.fields)] == key.fields
            if not prefixed:
                unfit.setdefault(spec.name, []).extend(fields)
    assert {name: tuple(fields) for name, fields in unfit.items()} == dict(REKEY_BEFORE_SHARDING)


def test_a_query_carries_a_key_only_by_value():
    ranged = ShardKey(("subject_id",))
    hashed = ShardKey(("_id",), hashed=True)
    assert carries({"subject_id": "a", "status": "open"}, ranged)
    assert carries({"subject_id": {"$in": ["a", "b"]}}, ranged)
    assert carries({"$and": [{"subject_id": "a"}, {"x": 1}]}, ranged)
    assert not carries({"subject_id": {"$ne": "a"}}, ranged)
    assert not carries({"org_path": "x"}, ranged)
    assert carries({"files_id": "f"}, ShardKey(("files_id", "n")))
    assert carries({"_id": "k"}, hashed)
    assert not carries({"_id": {"$gt": "a:", "$lt": "a;"}}, hashed)

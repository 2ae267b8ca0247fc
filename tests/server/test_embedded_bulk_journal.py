"""The embedded database journals a client-level bulkWrite that asks for the journal, as MongoDB
does: an acknowledged check-in batch survives a kill -9 of the database."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from pymongo import InsertOne, UpdateOne
from secantus import SecantusDBServer, storage

from models.store import DatabaseSettings, Store
from server.embedded_tuning import journal_bulk_writes


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    """A database on a server of its own that keeps a journal on disk (the suite's shared
    server keeps its databases in memory, with no journal to write)."""
    server = SecantusDBServer(
        port=0, storage_path=str(tmp_path / "db"), enable_test_commands=False, ttl_sweep_seconds=0
    )
    server.start()
    host, port = server.address
    store = Store.connect(
        DatabaseSettings(
            uri=f"mongodb://{host}:{port}/?retryWrites=false", name="journal", production=False
        )
    )
    yield store
    await store.close()
    server.stop()


@pytest.fixture
def syncs(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Each time the database writes its journal to disk: a journaled commit or a log flush."""
    seen: list[str] = []
    original_commit = storage._commit_batch_transaction
    original_flush = storage.wt.Session.log_flush

    def commit(session, sync):
        if sync:
            seen.append("commit")
        return original_commit(session, sync)

    def flush(session, config=None):
        if config == "sync=on":
            seen.append("flush")
        return original_flush(session, config)

    monkeypatch.setattr(storage, "_commit_batch_transaction", commit)
    monkeypatch.setattr(storage.wt.Session, "log_flush", flush)
    return seen


async def test_a_journaled_bulk_write_is_on_disk_before_it_is_acknowledged(store, syncs):
    journal_bulk_writes()
    journal_bulk_writes()  # idempotent
    name = store.database.name
    await store.collection("journal_windows").insert_one({"_id": "w1", "status": "scheduled"})
    syncs.clear()
    # The application's client asks for the journal on every write (models/store.py).
    client = store.database.client
    await client.bulk_write(
        [
            InsertOne({"_id": "a1", "n": 1}, namespace=f"{name}.journal_audit"),
            InsertOne({"_id": "c1", "n": 1}, namespace=f"{name}.journal_checkins"),
            UpdateOne(
                {"_id": "w1", "status": "scheduled"},
                {"$set": {"status": "done"}},
                namespace=f"{name}.journal_windows",
            ),
        ],
        ordered=True,
    )
    # Its three writes committed, then one flush of the journal covering them all.
    assert syncs[-1:] == ["flush"], syncs
    assert (await store.collection("journal_windows").find_one({"_id": "w1"}))["status"] == "done"

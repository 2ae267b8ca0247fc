"""The embedded database's corrected write planner: a findAndModify writes the one document it
found without scanning the collection, and answers exactly as before."""

from __future__ import annotations

import pytest
from pymongo import ReturnDocument
from secantus import storage

from server.embedded_tuning import plan_id_filters_by_id


@pytest.fixture
def scans(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Collection scans the database's write paths start, by collection."""
    seen: list[str] = []
    original = storage.Storage._scan_docs

    def counting(self, db, coll, *args, **kwargs):
        seen.append(coll)
        return original(self, db, coll, *args, **kwargs)

    monkeypatch.setattr(storage.Storage, "_scan_docs", counting)
    return seen


async def test_a_conditional_update_by_id_scans_nothing_and_answers_as_before(store, scans):
    plan_id_filters_by_id()
    windows = store.collection("tuning_windows")
    await windows.insert_many([{"_id": f"w{n}", "status": "scheduled", "n": n} for n in range(300)])
    scans.clear()

    updated = await windows.find_one_and_update(
        {"_id": "w7", "status": "scheduled"},
        {"$set": {"status": "done"}},
        return_document=ReturnDocument.AFTER,
    )
    # The condition no longer holds: nothing is written, as on MongoDB.
    again = await windows.find_one_and_update(
        {"_id": "w7", "status": "scheduled"}, {"$set": {"status": "late"}}
    )
    missing = await windows.find_one_and_update(
        {"_id": "nope", "status": "scheduled"}, {"$set": {"n": 1}}
    )
    deleted = await windows.find_one_and_delete({"_id": "w8", "n": 8})
    kept = await windows.find_one_and_delete({"_id": "w9", "n": 10})
    scanned = list(scans)

    assert updated == {"_id": "w7", "status": "done", "n": 7}
    assert again is None and missing is None
    assert deleted == {"_id": "w8", "status": "scheduled", "n": 8} and kept is None
    assert await windows.find_one({"_id": "w7"}) == {"_id": "w7", "status": "done", "n": 7}
    assert await windows.count_documents({}) == 299
    assert scanned == []

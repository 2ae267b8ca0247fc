"""Corrections to the embedded database, applied where it starts (never used with MongoDB): its
write planner, and the journaling of a client-level bulkWrite.

SecantusDB 0.7.0b3 carries out a findAndModify by re-asserting the query as
`{"_id": <matched>, "$and": [<query>]}`, and its write planner gives up on any filter with a
top-level `$` key: every `find_one_and_update` and `find_one_and_delete` then scans the whole
collection to write the one document it had already found. A check-in's update of its window
scanned every occurrence in the database, so its cost grew with the database (the load
verification found it). MongoDB plans such a filter on the `_id` index. The correction does the
same: a filter that names `_id` by equality is served by the `_id` point lookup, and the write
path still applies the whole filter to what the lookup returns, so the result is unchanged.
"""

from __future__ import annotations

from typing import Any


def plan_id_filters_by_id() -> None:
    """Serve write filters that pin `_id` from the `_id` lookup (idempotent)."""
    from secantus import storage

    original = storage.Storage._try_index_id_keys
    if getattr(original, "anbang_corrected", False):
        return

    def try_index_id_keys(
        self: Any, db: str, coll: str, filter: dict[str, Any], *, collation: Any = None
    ) -> list[Any] | None:
        if (
            filter
            and len(filter) > 1
            and "_id" in filter
            and collation is None
            and not self._is_timeseries(db, coll)
        ):
            keys = storage._id_point_lookup_keys(filter["_id"])
            if keys is not None:
                found = (self._doc_recordid(db, coll, key) for key in keys)
                return [recordid for recordid in found if recordid is not None]
        return original(self, db, coll, filter, collation=collation)

    try_index_id_keys.anbang_corrected = True  # type: ignore[attr-defined]
    storage.Storage._try_index_id_keys = try_index_id_keys


def journal_bulk_writes() -> None:
    """Journal a bulkWrite that asks for the journal before answering it (idempotent).

    SecantusDB 0.7.0b3 carries out a client-level bulkWrite as one insert, update or delete
    command per operation, built without the bulkWrite's writeConcern: `j: true` is dropped and
    the batch is acknowledged before it is in the journal, so a kill -9 of the database lost
    acknowledged check-ins (tests/server/test_fault_db_restart.py found it). MongoDB journals the
    batch. The correction: once such a bulkWrite has run, the journal is flushed to disk (one
    fsync covering every operation it committed) before the answer goes back.
    """
    from secantus import commands

    original = commands._bulk_write
    if getattr(original, "anbang_corrected", False):
        return

    def bulk_write(doc: dict[str, Any], ctx: Any) -> Any:
        reply = original(doc, ctx)
        # An in-memory store (the test suite's) has no journal to flush.
        if commands._wants_journal(doc) and not ctx.storage.in_memory:
            ctx.storage._session().log_flush("sync=on")
        return reply

    bulk_write.anbang_corrected = True  # type: ignore[attr-defined]
    commands._bulk_write = bulk_write
    # The command table holds the function itself, not its name.
    for table in vars(commands).values():
        if isinstance(table, dict) and table.get("bulkWrite") is original:
            table["bulkWrite"] = bulk_write

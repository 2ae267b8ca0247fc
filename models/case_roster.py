"""The case list's read model: one roster per unit holding its case files' list fields."""

from __future__ import annotations

import builtins
import datetime as dt
import functools
import json
import logging
import zlib
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from bson import Binary, ObjectId
from pymongo import ASCENDING, IndexModel
from pymongo.errors import DuplicateKeyError

from models.singleflight import SingleFlight
from models.store import CollectionSpec, Store

# A case list pages, filters and counts a county's files. Asked of the case files themselves,
# that reads every match: the embedded database fetches and sorts all 10,000 of a county's
# files for a page of 20 (0.6-1.1 s a page). Each unit's roster holds only what the list
# filters and sorts on, a few hundred bytes a file, so a county's list is its stations' few
# rosters, kept in memory between requests and revalidated by a version on every request.
ROSTERS = CollectionSpec("case_rosters", (IndexModel([("org_path", ASCENDING)]),))
# Each roster's version beside it in a document of its own: asking a big roster for its version
# alone still costs its whole size on the embedded database (it reads a document to project it).
VERSIONS = CollectionSpec("case_roster_versions", (IndexModel([("org_path", ASCENDING)]),))
COMPLETE_ID = "complete"  # the marker a full rebuild leaves: every file is in a roster
# The case file fields the list filters and sorts on, as they are stored on the file.
LIST_PROJECTION = {
    "org_id": 1,
    "org_path": 1,
    "populations": 1,
    "status": 1,
    "juvenile": 1,
    "assignments.social_worker_ids": 1,
    "assignments.grid_worker_ids": 1,
    "referred_to_org_ids": 1,
    "created_at": 1,
    "updated_at": 1,
}
# A stored entry is a short array, its times in epoch milliseconds, and a unit's entries are
# stored packed in one value (`_packed`): read anew, a county's 10,000 entries took 310 ms p50
# as 20 documents of 500 arrays each (the embedded database decodes and encodes every element),
# and 279 ms to decode alone as documents with datetimes. Positions:
CREATED, UPDATED, STATUS, POPULATIONS, JUVENILE, SOCIAL, GRID, REFERRED = range(8)
# In memory each entry carries its ids' bytes and its times' milliseconds, which sort as the ids
# and times do but compare in C.
SORTABLE = {
    "_id": "_id_bytes",
    "org_id": "org_id_bytes",
    "created_at": "created_ms",
    "updated_at": "updated_ms",
}
REBUILD_ATTEMPTS = 5
WRITE_ATTEMPTS = 20

log = logging.getLogger("anbang.case_roster")
DEFAULT_CACHED_FILES = 50_000  # about 50 MB of entries: a few counties' lists in one process


@dataclass
class _Cached:
    version: Any
    entries: builtins.list[dict[str, Any]]


class CaseRoster:
    """Written through by the case-file service after each change of a listed field, rebuilt in
    full by a nightly sweep (and when missing); read by the case list."""

    collections = (ROSTERS, VERSIONS)

    def __init__(self, store: Store, *, cached_files: int = DEFAULT_CACHED_FILES):
        self._store = store
        self._rosters = store.collection(ROSTERS)
        self._versions = store.collection(VERSIONS)
        self._cached_files = cached_files
        self._cache: OrderedDict[Any, _Cached] = OrderedDict()
        self._complete = False
        self._building: SingleFlight[str, dict[str, int]] = SingleFlight()

    # --- writes ---------------------------------------------------------------------------

    async def refresh(self, files: Iterable[Mapping[str, Any]], *, left: Any = None) -> None:
        """Put these case files (as read with `LIST_PROJECTION` or whole) in their units'
        rosters; `left`: the unit a moved file came from, whose roster drops it."""
        by_unit: dict[Any, tuple[builtins.list[str], dict[str, Any]]] = {}
        moved: builtins.list[str] = []
        for doc in files:
            path, entries = by_unit.setdefault(doc["org_id"], (list(doc["org_path"]), {}))
            entries[str(doc["_id"])] = _entry(doc)
            if left is not None and left != doc["org_id"]:
                moved.append(str(doc["_id"]))
        if moved:

            def drop(entries: dict[str, Any]) -> None:
                for sid in moved:
                    entries.pop(sid, None)

            await self._change(left, None, drop)
        for unit, (path, added) in by_unit.items():
            await self._change(unit, path, functools.partial(_add, added))

    async def _change(
        self, unit: Any, path: builtins.list[str] | None, change: Callable[[dict[str, Any]], Any]
    ) -> None:
        """Apply `change` to a unit's entries: read, change, replace only if nobody replaced
        it meanwhile (its version), else again. A roster is one packed value, so a change is
        a read and a write of it; two writers of one unit take turns, neither loses."""
        for _ in range(WRITE_ATTEMPTS):
            current = await self._rosters.find_one({"_id": unit})
            if current is None and path is None:
                return  # a unit with no roster has nothing to drop
            entries = unpack(current) if current is not None else {}
            change(entries)
            kept_path = path if path is not None else list((current or {}).get("org_path") or [])
            roster = {"org_path": kept_path, **pack(entries)}
            version = current.get("version") if current is not None else _ABSENT
            if await self._replace(unit, version, roster):
                return
        # Left to the nightly rebuild (and said so): the file's own write has landed already.
        log.warning("case roster busy", extra={"fields": {"unit": str(unit)}})

    async def _stamp(self, unit: Any, path: builtins.list[str], version: ObjectId) -> None:
        """Readers learn of a roster's change from its version document, written after it."""
        await self._versions.update_one(
            {"_id": unit}, {"$set": {"org_path": path, "version": version}}, upsert=True
        )

    async def rebuild(self, files: Callable[[], AsyncIterator[dict[str, Any]]]) -> dict[str, int]:
        """Every roster anew from the case files (`files`: an async iterable of them with the
        listed fields). Each roster is replaced only if no write went through it since its
        version was read before the scan, so a change made while the scan ran is never
        undone; such a unit is scanned again."""
        units: dict[Any, dict[str, Any]] | None = None
        skipped = 0
        for _ in range(REBUILD_ATTEMPTS):
            versions = {
                d["_id"]: d.get("version") async for d in self._rosters.find({}, {"version": 1})
            }
            versions.pop(COMPLETE_ID, None)
            units = {}
            async for doc in files():
                unit = units.setdefault(
                    doc["org_id"], {"org_path": list(doc["org_path"]), "entries": {}}
                )
                unit["entries"][str(doc["_id"])] = _entry(doc)
            skipped = 0
            for unit_id, built in units.items():
                roster = {"org_path": built["org_path"], **pack(built["entries"])}
                if not await self._replace(unit_id, versions.get(unit_id, _ABSENT), roster):
                    skipped += 1
            for unit_id in set(versions) - set(units):
                gone = await self._rosters.delete_one(
                    {"_id": unit_id, "version": versions[unit_id]}
                )
                if gone.deleted_count:
                    await self._versions.delete_one({"_id": unit_id})
            if not skipped:
                break
        if skipped:
            return {"units": len(units or {}), "busy": skipped}
        await self._rosters.update_one(
            {"_id": COMPLETE_ID}, {"$set": {"at": dt.datetime.now(dt.UTC)}}, upsert=True
        )
        self._complete = True
        listed = sum(len(unit["entries"]) for unit in (units or {}).values())
        return {"units": len(units or {}), "files": listed}

    async def _replace(self, unit_id: Any, version: Any, roster: dict[str, Any]) -> bool:
        document = {**roster, "version": ObjectId()}
        if version is _ABSENT:
            try:
                await self._rosters.insert_one({"_id": unit_id, **document})
            except DuplicateKeyError:
                return False
        else:
            result = await self._rosters.replace_one({"_id": unit_id, "version": version}, document)
            if result.matched_count != 1:
                return False
        await self._stamp(unit_id, roster["org_path"], document["version"])
        return True

    # --- reads ----------------------------------------------------------------------------

    async def ensure_complete(self, files: Callable[[], AsyncIterator[dict[str, Any]]]) -> bool:
        """Whether every case file is in a roster; when no full build is on record (a database
        from before the rosters), build them now, once per process however many ask. The
        jobs process builds them as it starts, so a request rarely waits for it."""
        if self._complete:
            return True
        if await self._rosters.find_one({"_id": COMPLETE_ID}, {"_id": 1}) is None:
            await self._building.load("rebuild", lambda: self.rebuild(files))
        self._complete = self._complete or (
            await self._rosters.find_one({"_id": COMPLETE_ID}, {"_id": 1}) is not None
        )
        return self._complete

    async def entries(self, within: str | None) -> builtins.list[dict[str, Any]]:
        """The listed fields of every file under the node `within` (every file when None),
        shaped like the case file (`_id`, `org_id`, `org_path` and the listed fields). Units
        whose version is cached cost nothing beyond the one read of the versions."""
        query: dict[str, Any] = {"org_path": within} if within else {}
        versions = {d["_id"]: d.get("version") async for d in self._versions.find(query)}
        stale = [unit for unit, version in versions.items() if self._cached(unit, version) is None]
        if stale:
            async for roster in self._rosters.find({"_id": {"$in": stale}}):
                self._remember(roster)
        found: builtins.list[dict[str, Any]] = []
        for unit, version in versions.items():
            cached = self._cached(unit, version)
            if cached is not None:
                found += cached.entries
        return found

    def forget(self) -> None:
        """Drop the rosters held in memory (the next list reads them anew)."""
        self._cache.clear()

    def _cached(self, unit: Any, version: Any) -> _Cached | None:
        cached = self._cache.get(unit)
        if cached is None or cached.version != version:
            return None
        self._cache.move_to_end(unit)
        return cached

    def _remember(self, roster: dict[str, Any]) -> None:
        path = list(roster.get("org_path") or [])
        unit = roster["_id"]
        unit_bytes = unit.binary if isinstance(unit, ObjectId) else str(unit).encode()
        entries = [
            {
                "_id": (oid := ObjectId(sid)),
                "_id_bytes": oid.binary,
                "org_id": unit,
                "org_id_bytes": unit_bytes,
                "org_path": path,
                "created_ms": stored[CREATED],
                "updated_ms": stored[UPDATED],
                "status": stored[STATUS],
                "populations": stored[POPULATIONS],
                "juvenile": stored[JUVENILE],
                "assignments": {
                    "social_worker_ids": stored[SOCIAL],
                    "grid_worker_ids": stored[GRID],
                },
                "referred_to_org_ids": stored[REFERRED],
            }
            for sid, stored in unpack(roster).items()
        ]
        self._cache[roster["_id"]] = _Cached(roster.get("version"), entries)
        self._cache.move_to_end(roster["_id"])
        held = sum(len(c.entries) for c in self._cache.values())
        while held > self._cached_files and len(self._cache) > 1:
            _, dropped = self._cache.popitem(last=False)
            held -= len(dropped.entries)


_ABSENT = object()


def _entry(doc: Mapping[str, Any]) -> list[Any]:
    """A case file's stored roster entry (positions above)."""
    assignments = doc.get("assignments") or {}
    created = doc.get("created_at")
    return [
        _milliseconds(created),
        _milliseconds(doc.get("updated_at") or created),
        doc.get("status"),
        list(doc.get("populations") or []),
        bool(doc.get("juvenile")),
        list(assignments.get("social_worker_ids") or []),
        list(assignments.get("grid_worker_ids") or []),
        list(doc.get("referred_to_org_ids") or []),
    ]


def entry_fields(stored: list[Any]) -> dict[str, Any]:
    """A stored entry by name (for reading a roster outside the list: tests, inspection)."""
    names = ("created_ms", "updated_ms", "status", "populations", "juvenile")
    fields = dict(zip(names, stored, strict=False))
    fields["social_worker_ids"] = stored[SOCIAL]
    fields["grid_worker_ids"] = stored[GRID]
    fields["referred_to_org_ids"] = stored[REFERRED]
    return fields


def _milliseconds(at: dt.datetime | None) -> int:
    if at is None:
        return 0
    if at.tzinfo is None:  # as the database hands them back without tz_aware
        at = at.replace(tzinfo=dt.UTC)
    # Whole milliseconds, rounded down, as BSON stores a datetime (no float on the way).
    return (at - EPOCH) // dt.timedelta(milliseconds=1)


EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


def _add(added: dict[str, Any], entries: dict[str, Any]) -> None:
    entries.update(added)


def pack(entries: dict[str, Any]) -> dict[str, Any]:
    """A unit's entries as stored: one compressed JSON value and their count. The database
    never looks inside (the list filters in memory), and one value costs it next to nothing to
    read and send, where 500 small arrays cost it per element."""
    text = json.dumps(entries, separators=(",", ":")).encode()
    return {"entries": Binary(zlib.compress(text, 1)), "files": len(entries)}


def unpack(roster: Mapping[str, Any]) -> dict[str, Any]:
    """A stored roster's entries by case-file id (positions as `_entry` writes them)."""
    packed = roster.get("entries")
    if not packed:
        return {}
    return dict(json.loads(zlib.decompress(bytes(packed))))

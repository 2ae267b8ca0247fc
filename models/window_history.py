"""Settled days' check-in windows counted per station, day and status: the read model behind
the dashboard's 12-week and 12-month charts, filled as read and emptied where a window changes."""

from __future__ import annotations

import calendar
import contextlib
import datetime as dt
import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from pymongo import ASCENDING, IndexModel
from pymongo.errors import DuplicateKeyError

from models.clock import LOCAL_TZ, Clock, local_midnight
from models.orgs import STATION_DEPTH
from models.store import CollectionSpec, Store

# Counted from the windows themselves, a county's year of daily check-ins is read whole for
# every dashboard: about 170 µs a window on the embedded database, 17 s for 1,000 people. A
# past day's counts rarely change, so each (station, month) keeps its days' counts, and a
# write to a past day's window removes that day's counts, to be counted again when next read.
DAYS = CollectionSpec(
    "checkin_window_days", (IndexModel([("org_path", ASCENDING), ("month", ASCENDING)]),)
)
CHECKIN_KIND = "remote_checkin"
# A day's counts are kept only once it has been over this long: a write that found its window
# still in today just before midnight has landed by then (the database deadline is 10 s).
SETTLE = dt.timedelta(minutes=10)

log = logging.getLogger("anbang.window_history")


def local_day(window_end: dt.datetime) -> dt.date:
    """The day a window counts for: the local day it closes on, a window closing at midnight
    belonging to the day before (as a month's report counts it)."""
    end = window_end if window_end.tzinfo else window_end.replace(tzinfo=dt.UTC)
    return (end.astimezone(LOCAL_TZ) - dt.timedelta(milliseconds=1)).date()


def _settled(day: dt.date, now: dt.datetime) -> bool:
    return local_midnight(day) + dt.timedelta(days=1) + SETTLE <= now


def _station(org_path: Iterable[Any]) -> list[str]:
    return [str(node) for node in list(org_path)[:STATION_DEPTH]]


def _doc_id(station: list[str], month: str) -> str:
    return f"{'/'.join(station)}|{month}"


def _runs(days: list[dt.date]) -> list[list[dt.date]]:
    """Days in order as runs of consecutive ones within a month (each counted with one read:
    a station's month of windows is read well within the database's deadline per operation)."""
    runs: list[list[dt.date]] = []
    for day in sorted(days):
        if runs and runs[-1][-1] + dt.timedelta(days=1) == day and runs[-1][-1].month == day.month:
            runs[-1].append(day)
        else:
            runs.append([day])
    return runs


def _months(first: dt.date, last: dt.date) -> list[str]:
    months, cursor = [], first.replace(day=1)
    while cursor <= last:
        months.append(f"{cursor:%Y-%m}")
        cursor = (cursor.replace(day=28) + dt.timedelta(days=4)).replace(day=1)
    return months


@dataclass(frozen=True)
class DayCount:
    """The windows of one station's day in one status."""

    station: tuple[str, ...]
    day: dt.date
    status: str
    n: int


class WindowHistory:
    """Kept by the obligation service (`touched` after a write to a past day's window) and by
    the check-in service for a late check-in; read by the dashboard; checked nightly."""

    collections = (DAYS,)

    def __init__(self, store: Store, clock: Clock, source: CollectionSpec):
        self._days = store.collection(DAYS)
        self._windows = store.collection(source)
        self._clock = clock

    # --- writes ---------------------------------------------------------------------------

    async def touched(self, windows: Iterable[Mapping[str, Any]]) -> int:
        """Forget the counts of the days these windows (as stored, before or after the change)
        count for, where those days are past: they are counted again when next read. Written
        after the windows' own change, so a count made meanwhile is either refused (the
        version moved) or removed here."""
        today = self._clock.now().astimezone(LOCAL_TZ).date()
        stale: dict[str, tuple[list[str], str, set[str]]] = {}
        for window in windows:
            if window.get("kind") != CHECKIN_KIND or not window.get("org_path"):
                continue
            day = local_day(window["window_end"])
            if day >= today:
                continue
            station, month = _station(window["org_path"]), f"{day:%Y-%m}"
            stale.setdefault(_doc_id(station, month), (station, month, set()))[2].add(
                f"{day.day:02d}"
            )
        for doc_id, (station, month, days) in stale.items():
            # Upserted: a reader who found no document and counted meanwhile cannot then
            # insert one (its insert meets this one's id).
            await self._days.update_one(
                {"_id": doc_id},
                {
                    "$unset": {f"days.{d}": "" for d in days},
                    "$inc": {"v": 1},
                    "$setOnInsert": {"org_path": station, "month": month},
                },
                upsert=True,
            )
        return len(stale)

    # --- reads ----------------------------------------------------------------------------

    async def counts(
        self, org_id: str, stations: Iterable[list[str]], since: dt.date
    ) -> list[DayCount]:
        """The check-in windows under a node (`stations`: the paths of its stations, city to
        station) that count for the days from `since` to yesterday, by station, day and status.
        Stored counts are used; missing days are counted from the windows and stored."""
        now = self._clock.now()
        today = now.astimezone(LOCAL_TZ).date()
        last = today - dt.timedelta(days=1)
        if last < since:
            return []
        months = _months(since, last)
        stored = {
            doc["_id"]: doc
            async for doc in self._days.find({"org_path": org_id, "month": {"$in": months}})
        }
        out: list[DayCount] = []
        for station in stations:
            docs = {month: stored.get(_doc_id(station, month)) for month in months}
            wanted = {month: self._days_of(month, since, last) for month in months}
            kept = {month: (docs[month] or {}).get("days") or {} for month in months}
            missing = [
                day
                for month in months
                for day in wanted[month]
                if f"{day.day:02d}" not in kept[month]
            ]
            counted: dict[dt.date, dict[str, int]] = {}
            for run in _runs(missing):
                counted.update(await self._count(station, run, now))
            for month in months:
                for day in wanted[month]:
                    statuses = kept[month].get(f"{day.day:02d}")
                    if statuses is None:
                        statuses = counted.get(day, {})
                    out.extend(
                        DayCount(tuple(station), day, status, n)
                        for status, n in statuses.items()
                        if n
                    )
                settled = {
                    day: counted[day]
                    for day in wanted[month]
                    if day in counted and _settled(day, now)
                }
                if settled:
                    await self._store(station, month, docs[month], settled)
        return out

    @staticmethod
    def _days_of(month: str, since: dt.date, last: dt.date) -> list[dt.date]:
        year, number = (int(part) for part in month.split("-"))
        first = max(dt.date(year, number, 1), since)
        end = min(dt.date(year, number, calendar.monthrange(year, number)[1]), last)
        return [first + dt.timedelta(days=n) for n in range((end - first).days + 1)]

    async def _count(
        self, station: list[str], days: list[dt.date], now: dt.datetime
    ) -> dict[dt.date, dict[str, int]]:
        """One station's windows of these days (a run of them, read at once) by day and
        status, each day present even when it had none."""
        start, stop = local_midnight(min(days)), local_midnight(max(days) + _ONE_DAY)
        counted: dict[dt.date, dict[str, int]] = {day: {} for day in days}
        # The kind is grouped on, not matched: asked to match it too, the embedded database
        # scans the whole collection instead of the (org_path, window_end) index.
        pipeline: list[dict[str, Any]] = [
            {
                "$match": {
                    "org_path": station[-1],
                    "window_end": {"$gt": start, "$lte": min(stop, now)},
                }
            },
            {
                "$group": {
                    "_id": {"end": "$window_end", "st": "$status", "kind": "$kind"},
                    "n": {"$sum": 1},
                }
            },
        ]
        async for group in await self._windows.aggregate(pipeline):
            day = local_day(group["_id"]["end"])
            if group["_id"].get("kind") == CHECKIN_KIND and day in counted:
                statuses = counted[day]
                statuses[group["_id"]["st"]] = statuses.get(group["_id"]["st"], 0) + group["n"]
        return counted

    async def _store(
        self,
        station: list[str],
        month: str,
        doc: Mapping[str, Any] | None,
        counted: Mapping[dt.date, Mapping[str, int]],
    ) -> None:
        """Keep what was counted, unless a writer forgot a day of this month meanwhile."""
        fields = {f"days.{day.day:02d}": dict(statuses) for day, statuses in counted.items()}
        doc_id = _doc_id(station, month)
        if doc is None:
            # A writer (or another reader) may come first: then counted again next time.
            with contextlib.suppress(DuplicateKeyError):
                await self._days.insert_one(
                    {
                        "_id": doc_id,
                        "org_path": station,
                        "month": month,
                        "v": 0,
                        "days": {f"{d.day:02d}": dict(s) for d, s in counted.items()},
                    }
                )
            return
        await self._days.update_one({"_id": doc_id, "v": doc.get("v", 0)}, {"$set": fields})

    # --- the nightly check ----------------------------------------------------------------

    async def recount(self, stations: Iterable[list[str]], since: dt.date) -> dict[str, int]:
        """Count each station's settled days from `since` anew from the windows, a month at a
        time (each read well within the database's deadline), and replace what is kept where
        it differs (a crash between a window's write and `touched`), each month only if no
        writer forgot one of its days since its version was read before counting."""
        now = self._clock.now()
        last = now.astimezone(LOCAL_TZ).date() - _ONE_DAY
        months = _months(since, last) if since <= last else []
        replaced = busy = counted = 0
        for station in stations:
            for month in months:
                days = [d for d in self._days_of(month, since, last) if _settled(d, now)]
                if not days:
                    continue
                doc_id = _doc_id(station, month)
                before = await self._days.find_one({"_id": doc_id})
                fresh = {
                    f"{day.day:02d}": statuses
                    for day, statuses in (await self._count(station, days, now)).items()
                }
                counted += 1
                kept = (before or {}).get("days") or {}
                if before is not None and all(kept.get(k) == v for k, v in fresh.items()):
                    continue
                if before is None:
                    try:
                        await self._days.insert_one(
                            {"_id": doc_id, "org_path": station, "month": month}
                            | {"v": 0, "days": fresh}
                        )
                        replaced += 1
                    except DuplicateKeyError:
                        busy += 1
                    continue
                result = await self._days.update_one(
                    {"_id": doc_id, "v": before.get("v", 0)},
                    {"$set": {f"days.{k}": v for k, v in fresh.items()}},
                )
                busy += int(result.matched_count == 0)
                replaced += int(result.modified_count)
        if busy:
            log.info("window history busy", extra={"fields": {"months": busy}})
        return {"months": counted, "replaced": replaced, "busy": busy}


_ONE_DAY = dt.timedelta(days=1)

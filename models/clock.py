"""The clock port: services ask it for the time so tests and `run-once --now` can choose it."""

from __future__ import annotations

import datetime as dt
from typing import Protocol
from zoneinfo import ZoneInfo

# Windows, deadlines and reports are computed in China Standard Time; storage is UTC.
LOCAL_TZ = ZoneInfo("Asia/Shanghai")


def local_midnight(day: dt.date) -> dt.datetime:
    """The start of a local day, in UTC (as times are stored)."""
    return dt.datetime.combine(day, dt.time(), tzinfo=LOCAL_TZ).astimezone(dt.UTC)


def stored_precision(at: dt.datetime) -> dt.datetime:
    """`at` cut to whole milliseconds, as a BSON date keeps it: a time both answered and stored
    is cut first, so an answer rebuilt from the record (a replay) says exactly the same."""
    return at.replace(microsecond=at.microsecond // 1000 * 1000)


class Clock(Protocol):
    def now(self) -> dt.datetime:
        """The current time, timezone-aware, in UTC."""
        ...


class SystemClock:
    def now(self) -> dt.datetime:
        return dt.datetime.now(dt.UTC)


class FixedClock:
    """A clock that stands still until moved; for tests and simulated sweeps."""

    def __init__(self, at: dt.datetime):
        if at.tzinfo is None:
            raise ValueError("FixedClock needs a timezone-aware time")
        self._at = at.astimezone(dt.UTC)

    def now(self) -> dt.datetime:
        return self._at

    def advance(self, delta: dt.timedelta) -> None:
        self._at += delta

    def set(self, at: dt.datetime) -> None:
        if at.tzinfo is None:
            raise ValueError("FixedClock needs a timezone-aware time")
        self._at = at.astimezone(dt.UTC)


def date_zh(iso: str) -> str:
    """2026-12-07 as 2026年12月7日 (as an official document writes a date)."""
    year, month, day = (int(part) for part in iso.split("-"))
    return f"{year}年{month}月{day}日"

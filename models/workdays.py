"""The official Chinese working-day calendar (holidays and 调休 working weekends) for deadlines."""

from __future__ import annotations

import re
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path

import chinese_calendar

_ONE_DAY = timedelta(days=1)
_SATURDAY = 5
# Only the plain ISO form: date.fromisoformat also takes "20270101" and week dates, which in a
# hand-edited schedule are more likely a typo than an intent.
_ISO_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")
_FILE_NAME = re.compile(r"(\d{4})\.toml")
# The notice a file copies is cited in a comment at its top; any other key is a typo that
# would otherwise drop a list silently.
_KEYS = frozenset({"year", "holidays", "working_days"})
_DEFAULT_DIRECTORY = "data/calendar"


class CalendarUnavailable(Exception):
    """A day in a year for which neither chinese_calendar nor a data file has the schedule."""

    def __init__(self, year: int):
        super().__init__(
            f"No official working-day calendar for {year}: chinese_calendar has no data for it "
            f"and there is no models/data/calendar/{year}.toml. Add that file from the State "
            f"Council's 关于{year}年部分节假日安排的通知 (see models/data/calendar/README.md), "
            "or upgrade chinese-calendar."
        )
        self.year = year


class CalendarDataError(ValueError):
    """A calendar data file that is malformed; the message names the file."""


@dataclass(frozen=True)
class YearOverride:
    """One year's announced schedule: days off on weekdays and 调休 working weekends.

    `holidays` may include the Saturdays and Sundays inside a holiday span, so the notice's ranges
    can be copied as written (and so a weekend the package wrongly marks as working is corrected).
    `working_days` must all be Saturdays or Sundays: that is what 调休 means, and a weekday there
    is almost certainly a mistyped date.
    """

    year: int
    holidays: frozenset[date]
    working_days: frozenset[date]
    source: str = "<in code>"  # the file it came from, named in every error about it

    def __post_init__(self) -> None:
        _check_override(self)


class WorkdayCalendar:
    """Answers "is this a working day" and counts working days, from chinese_calendar's data
    with per-year overrides on top.

    An override year the package also covers corrects it day by day (a listed day wins, the rest
    comes from the package); an override year the package lacks is the whole schedule (weekdays
    work except `holidays`, weekends rest except `working_days`). A year with neither raises
    CalendarUnavailable rather than counting weekends only, which would put a deadline that
    spans a holiday days too early.
    """

    def __init__(self, overrides: Mapping[int, YearOverride] | None = None):
        self._overrides: dict[int, YearOverride] = dict(overrides or {})
        for year, override in self._overrides.items():
            if override.year != year:
                raise CalendarDataError(
                    f"{override.source}: filed under {year} but declares year {override.year}"
                )
            # Every year has at least 元旦 off, so an empty list for a year the package lacks
            # means the schedule was not copied in, not that there are no holidays.
            if not override.holidays and not _package_covers(year):
                raise CalendarDataError(
                    f"{override.source}: {year} is not in chinese_calendar, so the file must "
                    "list the whole year's holidays, and it lists none"
                )
        # Per-instance, not module-level: answers depend on this instance's overrides. A
        # simulation asks about the same days over and over; the package does dict lookups but
        # also validates the year range on every call.
        self._answers: dict[date, bool] = {}

    @classmethod
    def load(cls, directory: Path | None = None) -> WorkdayCalendar:
        """The calendar with every `<year>.toml` in `directory` (default: models/data/calendar)."""
        root: Traversable = (
            resources.files("models").joinpath(_DEFAULT_DIRECTORY)
            if directory is None
            else directory
        )
        if not root.is_dir():
            # Loud, not empty: a missing directory would silently drop announced schedules.
            raise FileNotFoundError(f"calendar data directory not found: {root}")
        overrides: dict[int, YearOverride] = {}
        for entry in sorted(root.iterdir(), key=lambda item: item.name):
            if not entry.name.endswith(".toml"):
                continue  # README.md and the like
            override = _parse_file(entry)
            overrides[override.year] = override
        return cls(overrides)

    def covers(self, year: int) -> bool:
        """Whether the calendar knows `year`'s official schedule."""
        return year in self._overrides or _package_covers(year)

    def is_working_day(self, day: date) -> bool:
        """Whether `day` is a working day under the official schedule (调休 weekends included)."""
        _check_date(day)
        answer = self._answers.get(day)
        if answer is None:
            answer = self._compute(day)
            self._answers[day] = answer
        return answer

    def add_working_days(self, start: date, days: int) -> date:
        """The day `days` working days after `start`; `start` itself is not counted."""
        _check_date(start)
        if days < 0:
            raise ValueError(f"days must not be negative, got {days}")
        day = start
        remaining = days
        while remaining:
            day += _ONE_DAY
            if self.is_working_day(day):
                remaining -= 1
        return day

    def deadline(self, start: date, days: int) -> date:
        """The last day of "within `days` working days of `start`" (the start day not counted)."""
        return self.add_working_days(start, days)

    def deadline_or_provisional(self, start: date, days: int) -> tuple[date, bool]:
        """`deadline`, or, for a year whose holiday calendar is not loaded, the deadline that
        skips weekends alone, marked provisional (True) so it can be shown as such."""
        try:
            return self.deadline(start, days), False
        except CalendarUnavailable:
            day, left = start, days
            while left > 0:
                day += _ONE_DAY
                if day.weekday() < _SATURDAY:
                    left -= 1
            return day, True

    def period_end(self, start: date, days: int) -> tuple[date, bool]:
        """The last day of a period of `days` days from `start`, counted as 刑事诉讼法 Art. 105
        counts every period the law gives in days: the start day is not counted, and a last day
        that falls on a holiday or a rest day moves to the first working day after it (a 调休
        working weekend is a working day). The second value is True when a year's holiday
        calendar is not loaded: weekends alone are rest days then, and the day is provisional."""
        _check_date(start)
        if days < 0:
            raise ValueError(f"days must not be negative, got {days}")
        day = start + timedelta(days=days)
        provisional = False
        while True:
            try:
                working = self.is_working_day(day)
            except CalendarUnavailable:
                provisional = True
                working = day.weekday() < _SATURDAY
            if working:
                return day, provisional
            day += _ONE_DAY

    def working_days_between(self, start: date, end: date) -> int:
        """The number of working days in (start, end]; 0 when `end` is not after `start`."""
        _check_date(start)
        _check_date(end)
        count = 0
        day = start + _ONE_DAY
        while day <= end:
            if self.is_working_day(day):
                count += 1
            day += _ONE_DAY
        return count

    def _compute(self, day: date) -> bool:
        override = self._overrides.get(day.year)
        if override is not None:
            if day in override.holidays:
                return False
            if day in override.working_days:
                return True
        if _package_covers(day.year):
            return bool(chinese_calendar.is_workday(day))
        if override is not None:
            return day.weekday() < _SATURDAY
        raise CalendarUnavailable(day.year)


def _package_covers(year: int) -> bool:
    # Asked of the package rather than read from its constants module, which is not its API.
    try:
        chinese_calendar.is_workday(date(year, 1, 1))
    except NotImplementedError:
        return False
    return True


def _check_date(value: object) -> None:
    # A datetime is a date subclass, but which calendar day it is depends on the time zone;
    # the caller must convert to the local (Asia/Shanghai) date on purpose.
    if isinstance(value, datetime) or not isinstance(value, date):
        raise TypeError(f"expected a datetime.date, got {type(value).__name__}")


def _check_override(override: YearOverride) -> None:
    where = override.source
    for label, days in (("holidays", override.holidays), ("working_days", override.working_days)):
        for day in sorted(days):
            if day.year != override.year:
                raise CalendarDataError(
                    f"{where}: {label} has {day.isoformat()}, outside {override.year} "
                    "(a day in another year belongs in that year's file)"
                )
    both = override.holidays & override.working_days
    if both:
        listed = ", ".join(day.isoformat() for day in sorted(both))
        raise CalendarDataError(f"{where}: {listed} listed both as holiday and as working day")
    weekdays = [day for day in override.working_days if day.weekday() < _SATURDAY]
    if weekdays:
        listed = ", ".join(day.isoformat() for day in sorted(weekdays))
        raise CalendarDataError(
            f"{where}: working_days must be Saturdays or Sundays (调休); {listed} is a weekday"
        )


def _parse_file(entry: Traversable) -> YearOverride:
    where = str(entry)
    name_match = _FILE_NAME.fullmatch(entry.name)
    if name_match is None:
        raise CalendarDataError(f"{where}: calendar files are named <year>.toml, e.g. 2027.toml")
    try:
        data = tomllib.loads(entry.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as error:
        raise CalendarDataError(f"{where}: not valid TOML: {error}") from error
    missing = _KEYS - data.keys()
    unknown = data.keys() - _KEYS
    if missing or unknown:
        problems = []
        if missing:
            problems.append("missing " + ", ".join(sorted(missing)))
        if unknown:
            problems.append("unknown " + ", ".join(sorted(unknown)))
        raise CalendarDataError(f"{where}: {'; '.join(problems)}")
    year = data["year"]
    if type(year) is not int:  # bool is an int subclass; `year = true` is a mistake
        raise CalendarDataError(f"{where}: year must be an integer, got {year!r}")
    if year != int(name_match.group(1)):
        raise CalendarDataError(f"{where}: declares year {year} but is named {entry.name}")
    return YearOverride(
        year=year,
        holidays=_parse_days(data["holidays"], "holidays", where),
        working_days=_parse_days(data["working_days"], "working_days", where),
        source=where,
    )


def _parse_days(raw: object, label: str, where: str) -> frozenset[date]:
    if not isinstance(raw, list):
        raise CalendarDataError(f"{where}: {label} must be a list of dates")
    days = [_parse_day(item, label, where) for item in raw]
    _reject_duplicates(days, label, where)
    return frozenset(days)


def _parse_day(item: object, label: str, where: str) -> date:
    # TOML has a native local-date type (2027-01-01 without quotes); accept it as well as the
    # quoted ISO string, but not a date-time, which names an instant rather than a day.
    if isinstance(item, datetime):
        raise CalendarDataError(f"{where}: {label} has a date-time {item}, expected a date")
    if isinstance(item, date):
        return item
    if isinstance(item, str) and _ISO_DATE.fullmatch(item):
        try:
            return date.fromisoformat(item)
        except ValueError as error:
            raise CalendarDataError(f"{where}: {label} has {item!r}: {error}") from error
    raise CalendarDataError(f"{where}: {label} has {item!r}, expected a date like 2027-01-01")


def _reject_duplicates(days: Iterable[date], label: str, where: str) -> None:
    # A repeated date is harmless in itself but usually means another date was meant.
    seen: set[date] = set()
    for day in days:
        if day in seen:
            raise CalendarDataError(f"{where}: {label} lists {day.isoformat()} twice")
        seen.add(day)

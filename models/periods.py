"""Calendar arithmetic for terms and cadences: months and years as the law counts them."""

from __future__ import annotations

import calendar
import datetime as dt


def add_months(day: dt.date, months: int) -> dt.date:
    """The same day `months` later; the month's last day when it has no such day (Jan 31 + 1
    month = Feb 28 or 29), as terms counted in months are reckoned."""
    index = day.month - 1 + months
    year, month = day.year + index // 12, index % 12 + 1
    return dt.date(year, month, min(day.day, calendar.monthrange(year, month)[1]))


def add_years(day: dt.date, years: int) -> dt.date:
    return add_months(day, 12 * years)


def program_year(start: dt.date, day: dt.date) -> int:
    """1 in the first year from `start`, 2 from the first anniversary, and so on."""
    year = 1
    while add_years(start, year) <= day:
        year += 1
    return year

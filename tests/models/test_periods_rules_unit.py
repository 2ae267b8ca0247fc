"""Terms in months and years as the law counts them (models/periods.py), without a server."""

from __future__ import annotations

import datetime as dt

import pytest
from hypothesis import given
from hypothesis import strategies as st

from models.periods import add_months, add_years, program_year

DAYS = st.dates(min_value=dt.date(1990, 1, 1), max_value=dt.date(2090, 12, 31))


@pytest.mark.parametrize(
    ("day", "months", "expected"),
    [
        (dt.date(2026, 3, 15), 1, dt.date(2026, 4, 15)),
        (dt.date(2026, 1, 31), 1, dt.date(2026, 2, 28)),  # no 31 February: its last day
        (dt.date(2028, 1, 31), 1, dt.date(2028, 2, 29)),  # a leap year
        (dt.date(2026, 3, 31), 1, dt.date(2026, 4, 30)),
        (dt.date(2026, 11, 30), 3, dt.date(2027, 2, 28)),  # across the year end
        (dt.date(2026, 12, 1), 1, dt.date(2027, 1, 1)),
        (dt.date(2026, 3, 31), -1, dt.date(2026, 2, 28)),  # backwards, as the leave window counts
        (dt.date(2026, 1, 15), -1, dt.date(2025, 12, 15)),
        (dt.date(2026, 5, 20), 0, dt.date(2026, 5, 20)),
        (dt.date(2026, 5, 20), 18, dt.date(2027, 11, 20)),
    ],
)
def test_add_months_keeps_the_day_or_takes_the_months_last(day, months, expected):
    assert add_months(day, months) == expected


def test_a_term_from_29_february_ends_on_28_february_in_a_common_year():
    assert add_years(dt.date(2028, 2, 29), 1) == dt.date(2029, 2, 28)
    assert add_years(dt.date(2028, 2, 29), 4) == dt.date(2032, 2, 29)
    assert add_years(dt.date(2026, 6, 1), 3) == dt.date(2029, 6, 1)


@given(DAYS, st.integers(min_value=-120, max_value=120))
def test_add_months_lands_in_the_counted_month_never_past_the_day(day, months):
    later = add_months(day, months)
    assert (later.year * 12 + later.month) - (day.year * 12 + day.month) == months
    assert later.day <= day.day
    # Clamped only when the month has no such day.
    assert later.day == day.day or (later + dt.timedelta(days=1)).month != later.month


@given(DAYS, st.integers(min_value=0, max_value=60))
def test_add_months_never_goes_backwards(day, months):
    assert add_months(day, months) >= day
    assert add_months(day, months + 1) > add_months(day, months)


@pytest.mark.parametrize(
    ("day", "year"),
    [
        (dt.date(2026, 3, 1), 1),  # the first day
        (dt.date(2027, 2, 28), 1),  # the day before the first anniversary
        (dt.date(2027, 3, 1), 2),  # the anniversary opens the second year
        (dt.date(2029, 3, 1), 4),
    ],
)
def test_program_year_counts_from_each_anniversary(day, year):
    assert program_year(dt.date(2026, 3, 1), day) == year


def test_program_year_from_29_february_turns_on_28_february():
    start = dt.date(2028, 2, 29)
    assert program_year(start, dt.date(2029, 2, 27)) == 1
    assert program_year(start, dt.date(2029, 2, 28)) == 2

"""How a program's rules become windows, and what a person sees of each (models/obligations.py),
as plain functions: no database, no server."""

from __future__ import annotations

import datetime as dt
import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st

from models.clock import LOCAL_TZ
from models.obligations import (
    OccurrenceStatus,
    _hours_shortfall,
    _visible_status,
    occurrence_id,
    windows,
)
from models.programs import ObligationRule


def local(*args: int) -> dt.datetime:
    """A moment in China Standard Time, in UTC as windows are stored."""
    return dt.datetime(*args, tzinfo=LOCAL_TZ).astimezone(dt.UTC)


def daily(start: dt.date, end: dt.date | None = None) -> ObligationRule:
    return ObligationRule("remote_checkin", start, end, every_days=1)


def test_a_daily_rule_gives_one_window_a_day_from_local_midnight_to_local_midnight():
    found = list(windows(daily(dt.date(2026, 3, 2)), until=dt.date(2026, 3, 5)))
    assert [(w.start, w.end) for w in found] == [
        (local(2026, 3, 2), local(2026, 3, 3)),
        (local(2026, 3, 3), local(2026, 3, 4)),
        (local(2026, 3, 4), local(2026, 3, 5)),
    ]
    # Local midnight in Beijing is 16:00 UTC the day before.
    assert found[0].start == dt.datetime(2026, 3, 1, 16, 0, tzinfo=dt.UTC)
    assert all(w.kind == "remote_checkin" and w.required_hours is None for w in found)


def test_windows_stop_at_the_rules_end_even_when_asked_for_more():
    rule = daily(dt.date(2026, 3, 2), end=dt.date(2026, 3, 4))
    assert len(list(windows(rule, until=dt.date(2026, 12, 31)))) == 2


def test_since_leaves_out_the_windows_that_ended_before_it():
    rule = daily(dt.date(2026, 3, 2))
    found = list(windows(rule, until=dt.date(2026, 3, 10), since=dt.date(2026, 3, 8)))
    # The window of 7 March ends at midnight into the 8th: not after `since`.
    assert [w.start for w in found] == [local(2026, 3, 8), local(2026, 3, 9)]


def test_every_n_days_steps_from_the_start():
    rule = ObligationRule("in_person_report", dt.date(2026, 3, 2), None, every_days=7)
    found = list(windows(rule, until=dt.date(2026, 3, 20)))
    assert [(w.start, w.end) for w in found] == [
        (local(2026, 3, 2), local(2026, 3, 9)),
        (local(2026, 3, 9), local(2026, 3, 16)),
        (local(2026, 3, 16), local(2026, 3, 23)),
    ]


def test_monthly_windows_follow_the_calendar_and_the_last_is_clipped_to_the_end():
    rule = ObligationRule(
        "education", dt.date(2026, 1, 31), dt.date(2026, 4, 15), hours_per_month=8
    )
    found = list(windows(rule, until=dt.date(2027, 1, 1)))
    assert [(w.start, w.end) for w in found] == [
        (local(2026, 1, 31), local(2026, 2, 28)),  # a month from 31 January: 28 February
        (local(2026, 2, 28), local(2026, 3, 31)),
        (local(2026, 3, 31), local(2026, 4, 15)),  # the program ends mid-month
    ]
    assert all(w.required_hours == 8 for w in found)


def test_every_n_months():
    rule = ObligationRule("medical_reexam", dt.date(2026, 1, 10), None, every_months=3)
    found = list(windows(rule, until=dt.date(2026, 12, 31)))
    assert [w.start for w in found] == [
        local(2026, 1, 10),
        local(2026, 4, 10),
        local(2026, 7, 10),
        local(2026, 10, 10),
    ]


@given(
    st.dates(min_value=dt.date(2024, 1, 1), max_value=dt.date(2030, 12, 31)),
    st.integers(min_value=1, max_value=40),
    st.integers(min_value=1, max_value=200),
)
def test_daily_windows_tile_the_period_without_gap_or_overlap(start, every, length):
    until = start + dt.timedelta(days=length)
    rule = ObligationRule("contact", start, None, every_days=every)
    found = list(windows(rule, until=until))
    assert found[0].start == local(start.year, start.month, start.day)
    for before, after in itertools.pairwise(found):
        assert before.end == after.start
    assert found[-1].start < local(until.year, until.month, until.day) <= found[-1].end


def test_an_occurrence_id_is_the_same_however_often_it_is_materialised():
    start = local(2026, 3, 2)
    assert occurrence_id("p1", "remote_checkin", start) == "p1:remote_checkin:20260301T160000Z"
    assert occurrence_id("p1", "remote_checkin", start) == occurrence_id(
        "p1", "remote_checkin", start
    )
    assert occurrence_id("p1", "contact", start) != occurrence_id("p1", "remote_checkin", start)


@pytest.mark.parametrize(
    ("stored", "now", "shown"),
    [
        ("scheduled", local(2026, 3, 1, 23, 59), "scheduled"),  # not open yet
        ("scheduled", local(2026, 3, 2, 0, 0), "open"),  # opens at local midnight
        ("scheduled", local(2026, 3, 2, 23, 59), "open"),
        ("scheduled", local(2026, 3, 3, 0, 0), "missed"),  # closed unmet, before any sweep
        ("done", local(2026, 3, 2, 12, 0), "done"),
        ("excused", local(2026, 3, 3, 12, 0), "excused"),
        ("pending_review", local(2026, 3, 3, 12, 0), "pending_review"),
    ],
)
def test_what_a_person_sees_of_a_stored_window(stored, now, shown):
    assert _visible_status(stored, local(2026, 3, 2), local(2026, 3, 3), now) == shown
    assert shown in {str(s) for s in OccurrenceStatus}


@pytest.mark.parametrize(
    ("doc", "short"),
    [
        ({"required_hours": 8, "hours_done": 8}, None),
        ({"required_hours": 8, "hours_done": 9.5}, None),
        ({"required_hours": 8}, {"required_hours": 8, "hours_done": 0.0, "hours_short": 8}),
        (
            {"required_hours": 8, "hours_done": 2.333333},
            {"required_hours": 8, "hours_done": 2.33, "hours_short": 5.67},
        ),
        ({"required_hours": None, "hours_done": 0}, None),
    ],
)
def test_an_hours_window_lacks_what_is_not_yet_recorded(doc, short):
    assert _hours_shortfall(doc) == short

"""Which window a check-in counts for (models/checkins.py `_choose`), as a plain function: the
window open on arrival, or, for an upload that was offline, the recently closed one its
capture time falls in."""

from __future__ import annotations

import datetime as dt

from models.checkins import _choose

UTC = dt.UTC


def window(day: int) -> dict[str, dt.datetime]:
    """The daily window of `day` March 2026 (local midnight is 16:00 UTC the day before)."""
    start = dt.datetime(2026, 3, day - 1, 16, 0, tzinfo=UTC)
    return {"window_start": start, "window_end": start + dt.timedelta(days=1)}


WINDOWS = [window(2), window(3), window(4)]


def at(day: int, hour: int, minute: int = 0) -> dt.datetime:
    return dt.datetime(2026, 3, day, hour, minute, tzinfo=UTC)


def test_a_check_in_on_time_counts_for_the_window_open_now():
    now = at(3, 2)  # 10:00 on 3 March in Beijing
    assert _choose(WINDOWS, now, now) is WINDOWS[1]


def test_an_offline_upload_counts_for_the_closed_window_it_was_captured_in():
    captured = at(2, 23)  # 07:00 on 3 March, local: the window of 3 March
    now = at(3, 17)  # arrives after midnight: the window of 4 March is open
    assert _choose(WINDOWS, captured, now) is WINDOWS[1]


def test_a_capture_within_a_minute_of_arrival_counts_for_the_window_open_on_arrival():
    # Arrives 30 s into 4 March (local); captured 10 s before midnight: the device's clock is
    # not trusted that finely, arrival decides. A minute and more before: an offline upload.
    now = at(3, 16) + dt.timedelta(seconds=30)
    assert _choose(WINDOWS, at(3, 16) - dt.timedelta(seconds=10), now) is WINDOWS[2]
    assert _choose(WINDOWS, at(3, 16) - dt.timedelta(seconds=40), now) is WINDOWS[1]


def test_a_capture_time_in_no_window_counts_for_the_window_open_now():
    now = at(3, 2)
    assert _choose(WINDOWS, at(1, 2), now) is WINDOWS[1]


def test_no_window_open_and_none_captured_in_is_none():
    assert _choose(WINDOWS, at(10, 2), at(10, 2)) is None
    assert _choose([], at(3, 2), at(3, 2)) is None

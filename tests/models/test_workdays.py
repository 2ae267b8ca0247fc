"""The working-day calendar: the official 2026 schedule, overrides, strict data files, counting."""

from __future__ import annotations

from datetime import date, datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from models.workdays import (
    CalendarDataError,
    CalendarUnavailable,
    WorkdayCalendar,
    YearOverride,
)

# 国务院办公厅关于2026年部分节假日安排的通知 (2025-11-04), as published by Xinhua:
# 春节 2月15日至23日放假调休, 2月14日(周六)、2月28日(周六)上班;
# 国庆节 10月1日至7日放假调休, 9月20日(周日)、10月10日(周六)上班; 中秋节 9月25日至27日放假.
SPRING_FESTIVAL_2026 = [date(2026, 2, 15) + timedelta(days=i) for i in range(9)]
SPRING_FESTIVAL_2026_WORKING_WEEKENDS = [date(2026, 2, 14), date(2026, 2, 28)]
NATIONAL_DAY_2026 = [date(2026, 10, 1) + timedelta(days=i) for i in range(7)]
NATIONAL_DAY_2026_WORKING_WEEKENDS = [date(2026, 9, 20), date(2026, 10, 10)]
MID_AUTUMN_2026 = [date(2026, 9, 25), date(2026, 9, 26), date(2026, 9, 27)]

# A year chinese_calendar 1.11 does not cover; the tests that need one skip if a later release
# of the package does.
UNCOVERED_YEAR = 2031


@pytest.fixture(scope="module")
def calendar() -> WorkdayCalendar:
    return WorkdayCalendar()


def write(directory: Path, name: str, text: str) -> Path:
    path = directory / name
    path.write_text(text, encoding="utf-8")
    return path


def require_uncovered(year: int) -> None:
    if WorkdayCalendar().covers(year):
        pytest.skip(f"chinese_calendar now covers {year}")


# --- the official 2026 schedule --------------------------------------------------------------


@pytest.mark.parametrize("day", SPRING_FESTIVAL_2026, ids=str)
def test_spring_festival_2026_days_are_off(calendar: WorkdayCalendar, day: date) -> None:
    assert not calendar.is_working_day(day)


@pytest.mark.parametrize("day", SPRING_FESTIVAL_2026_WORKING_WEEKENDS, ids=str)
def test_spring_festival_2026_tiaoxiu_saturdays_are_working(
    calendar: WorkdayCalendar, day: date
) -> None:
    assert day.weekday() == 5
    assert calendar.is_working_day(day)


@pytest.mark.parametrize("day", NATIONAL_DAY_2026 + MID_AUTUMN_2026, ids=str)
def test_national_day_and_mid_autumn_2026_are_off(calendar: WorkdayCalendar, day: date) -> None:
    assert not calendar.is_working_day(day)


def test_national_day_2026_tiaoxiu_weekend_days_are_working(calendar: WorkdayCalendar) -> None:
    sunday, saturday = NATIONAL_DAY_2026_WORKING_WEEKENDS
    assert sunday.weekday() == 6
    assert saturday.weekday() == 5
    assert calendar.is_working_day(sunday)
    assert calendar.is_working_day(saturday)


def test_other_2026_holidays_and_tiaoxiu(calendar: WorkdayCalendar) -> None:
    # 元旦 1月1日至3日, 1月4日(周日)上班; 劳动节 5月1日至5日, 5月9日(周六)上班.
    assert not any(calendar.is_working_day(date(2026, 1, d)) for d in (1, 2, 3))
    assert calendar.is_working_day(date(2026, 1, 4))
    assert not any(calendar.is_working_day(date(2026, 5, d)) for d in range(1, 6))
    assert calendar.is_working_day(date(2026, 5, 9))


def test_ordinary_weeks(calendar: WorkdayCalendar) -> None:
    week = [date(2026, 3, 9) + timedelta(days=i) for i in range(7)]  # Monday to Sunday
    assert [calendar.is_working_day(day) for day in week] == [True] * 5 + [False] * 2


# --- counting ----------------------------------------------------------------------------------


def test_ten_working_days_across_the_spring_festival(calendar: WorkdayCalendar) -> None:
    # By hand from Monday 9 February: 10, 11, 12, 13, Sat 14 (调休) = 5; the holiday 15–23;
    # 24, 25, 26, 27 = 9; Sat 28 (调休) = 10.
    start = date(2026, 2, 9)
    assert calendar.deadline(start, 10) == date(2026, 2, 28)
    assert calendar.add_working_days(start, 10) == date(2026, 2, 28)
    # Day 11 skips Sunday 1 March.
    assert calendar.add_working_days(start, 11) == date(2026, 3, 2)
    # Counting weekends only would have said Monday 23 February, still inside the holiday.
    assert not calendar.is_working_day(date(2026, 2, 23))


def test_ten_working_days_across_national_day(calendar: WorkdayCalendar) -> None:
    # From Friday 18 September: Sun 20 (调休) = 1; 21–24 = 5; 中秋 25–27 off; 28, 29, 30 = 8;
    # 国庆 1–7 October off; 8, 9 = 10. Saturday 10 October (调休) would be day 11.
    start = date(2026, 9, 18)
    assert calendar.deadline(start, 10) == date(2026, 10, 9)
    assert calendar.add_working_days(start, 11) == date(2026, 10, 10)
    assert calendar.working_days_between(start, date(2026, 10, 9)) == 10
    assert calendar.working_days_between(start, date(2026, 10, 8)) == 9


def test_zero_days_is_the_start_even_on_a_holiday(calendar: WorkdayCalendar) -> None:
    assert calendar.add_working_days(date(2026, 2, 17), 0) == date(2026, 2, 17)
    assert calendar.add_working_days(date(2026, 2, 17), 1) == date(2026, 2, 24)


def test_negative_days_are_rejected(calendar: WorkdayCalendar) -> None:
    with pytest.raises(ValueError, match="negative"):
        calendar.add_working_days(date(2026, 3, 2), -1)


def test_between_counts_the_half_open_interval(calendar: WorkdayCalendar) -> None:
    monday, friday = date(2026, 3, 9), date(2026, 3, 13)
    assert calendar.working_days_between(monday, friday) == 4  # Tue–Fri: start not counted
    assert calendar.working_days_between(monday, monday) == 0
    assert calendar.working_days_between(friday, monday) == 0


def test_datetimes_are_refused(calendar: WorkdayCalendar) -> None:
    # Which calendar day a datetime is depends on its time zone; the caller decides.
    with pytest.raises(TypeError):
        calendar.is_working_day(datetime(2026, 3, 9, 12, 0))  # type: ignore[arg-type]


# --- coverage ----------------------------------------------------------------------------------


def test_a_year_without_data_raises_instead_of_guessing(calendar: WorkdayCalendar) -> None:
    require_uncovered(UNCOVERED_YEAR)
    assert calendar.covers(2026)
    assert not calendar.covers(UNCOVERED_YEAR)
    with pytest.raises(CalendarUnavailable, match=f"{UNCOVERED_YEAR}") as caught:
        calendar.is_working_day(date(UNCOVERED_YEAR, 3, 3))
    assert caught.value.year == UNCOVERED_YEAR
    assert f"models/data/calendar/{UNCOVERED_YEAR}.toml" in str(caught.value)


def test_counting_into_a_year_without_data_raises(calendar: WorkdayCalendar) -> None:
    require_uncovered(UNCOVERED_YEAR)
    with pytest.raises(CalendarUnavailable):
        calendar.add_working_days(date(UNCOVERED_YEAR - 1, 12, 20), 30)


def test_shipped_directory_loads() -> None:
    shipped = WorkdayCalendar.load()
    assert shipped.covers(2026)
    assert shipped.deadline(date(2026, 2, 9), 10) == date(2026, 2, 28)


# --- override files ----------------------------------------------------------------------------


def test_an_override_changes_a_year_the_package_covers(tmp_path: Path) -> None:
    # Monday 9 March 2026 is an ordinary working day; the file makes it a day off.
    write(
        tmp_path,
        "2026.toml",
        'year = 2026\nholidays = ["2026-03-09"]\nworking_days = ["2026-03-14"]\n',
    )
    overridden = WorkdayCalendar.load(tmp_path)
    assert not overridden.is_working_day(date(2026, 3, 9))
    assert overridden.is_working_day(date(2026, 3, 14))  # a Saturday made a working day
    # Days the file does not list still come from the package.
    assert not overridden.is_working_day(date(2026, 2, 16))
    assert overridden.is_working_day(date(2026, 2, 14))
    start = date(2026, 3, 6)  # Friday
    assert WorkdayCalendar().deadline(start, 1) == date(2026, 3, 9)
    assert overridden.deadline(start, 1) == date(2026, 3, 10)
    assert overridden.deadline(start, 5) == date(2026, 3, 14)


def test_a_file_supplies_a_year_the_package_lacks(tmp_path: Path) -> None:
    year = UNCOVERED_YEAR
    require_uncovered(year)
    write(
        tmp_path,
        f"{year}.toml",
        # Test data only, not any published schedule. 2031-01-01 is a Wednesday,
        # 2031-01-04 a Saturday.
        f"year = {year}\n"
        f'holidays = [{year}-01-01, "{year}-01-02"]\n'
        f'working_days = ["{year}-01-04"]\n',
    )
    extended = WorkdayCalendar.load(tmp_path)
    assert extended.covers(year)
    assert not extended.covers(year + 1)
    assert not extended.is_working_day(date(year, 1, 1))
    assert not extended.is_working_day(date(year, 1, 2))
    assert extended.is_working_day(date(year, 1, 3))  # Friday
    assert extended.is_working_day(date(year, 1, 4))  # Saturday, 调休
    assert not extended.is_working_day(date(year, 1, 5))  # Sunday
    assert extended.is_working_day(date(year, 1, 6))  # Monday
    assert extended.deadline(date(year - 1, 12, 31), 3) == date(year, 1, 6)


def test_overrides_can_be_given_in_code() -> None:
    override = YearOverride(
        year=2026, holidays=frozenset({date(2026, 3, 9)}), working_days=frozenset()
    )
    assert not WorkdayCalendar({2026: override}).is_working_day(date(2026, 3, 9))


def test_non_toml_files_are_ignored(tmp_path: Path) -> None:
    write(tmp_path, "README.md", "notes")
    assert WorkdayCalendar.load(tmp_path).is_working_day(date(2026, 3, 9))


def test_a_missing_directory_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        WorkdayCalendar.load(tmp_path / "absent")


@pytest.mark.parametrize(
    ("name", "text", "problem"),
    [
        ("2026.toml", 'year = 2026\nholidays = ["2027-01-01"]\nworking_days = []\n', "outside"),
        ("2026.toml", 'year = 2026\nholidays = []\nworking_days = ["2025-12-27"]\n', "outside"),
        ("2026.toml", 'year = 2026\nholidays = ["2026-02-30"]\nworking_days = []\n', "2026-02-30"),
        ("2026.toml", 'year = 2026\nholidays = ["2026-3-9"]\nworking_days = []\n', "2026-3-9"),
        ("2026.toml", 'year = 2026\nholidays = ["20260309"]\nworking_days = []\n', "20260309"),
        ("2026.toml", "year = 2026\nholidays = [20260309]\nworking_days = []\n", "20260309"),
        (
            "2026.toml",
            "year = 2026\nholidays = [2026-03-09T00:00:00]\nworking_days = []\n",
            "date-time",
        ),
        (
            "2026.toml",
            'year = 2026\nholidays = ["2026-03-14"]\nworking_days = ["2026-03-14"]\n',
            "both",
        ),
        (
            "2026.toml",
            'year = 2026\nholidays = ["2026-03-09", "2026-03-09"]\nworking_days = []\n',
            "twice",
        ),
        ("2026.toml", 'year = 2026\nholidays = []\nworking_days = ["2026-03-09"]\n', "weekday"),
        ("2026.toml", 'year = 2026\nholidays = "2026-03-09"\nworking_days = []\n', "list"),
        ("2026.toml", "year = 2026\nholidays = []\n", "missing working_days"),
        ("2026.toml", "year = 2026\nholidays = []\nworking_days = []\nworkdays = []\n", "unknown"),
        ("2026.toml", 'year = "2026"\nholidays = []\nworking_days = []\n', "integer"),
        ("2026.toml", "year = 2025\nholidays = []\nworking_days = []\n", "named"),
        ("2026.toml", "year = 2026\nholidays = [\n", "TOML"),
        ("draft.toml", "year = 2026\nholidays = []\nworking_days = []\n", "<year>.toml"),
        (
            f"{UNCOVERED_YEAR}.toml",
            f"year = {UNCOVERED_YEAR}\nholidays = []\nworking_days = []\n",
            "none",
        ),
    ],
)
def test_malformed_files_fail_naming_the_file(
    tmp_path: Path, name: str, text: str, problem: str
) -> None:
    if name == f"{UNCOVERED_YEAR}.toml":
        require_uncovered(UNCOVERED_YEAR)
    path = write(tmp_path, name, text)
    with pytest.raises(CalendarDataError) as caught:
        WorkdayCalendar.load(tmp_path)
    message = str(caught.value)
    assert str(path) in message
    assert problem in message


# --- properties --------------------------------------------------------------------------------

# Starts far enough before the end of the package's data that 60 working days stay inside it.
starts = st.dates(min_value=date(2004, 1, 1), max_value=date(2026, 9, 30))
counts = st.integers(min_value=0, max_value=60)


@given(start=starts, days=st.integers(min_value=1, max_value=60))
def test_the_result_of_adding_days_is_a_working_day(
    calendar: WorkdayCalendar, start: date, days: int
) -> None:
    assert calendar.is_working_day(calendar.add_working_days(start, days))


@given(start=starts, days=counts)
def test_between_inverts_adding(calendar: WorkdayCalendar, start: date, days: int) -> None:
    assert calendar.working_days_between(start, calendar.add_working_days(start, days)) == days


@given(start=starts, days=counts)
def test_adding_is_monotonic(calendar: WorkdayCalendar, start: date, days: int) -> None:
    here = calendar.add_working_days(start, days)
    assert calendar.add_working_days(start, days + 1) > here
    assert here >= start
    assert calendar.deadline(start, days) == here


# --- periods in days, counted as 刑事诉讼法 Art. 105 counts them --------------------------------


def test_a_period_in_days_does_not_count_its_first_day(calendar):
    # Monday 2 March 2026 + 10 days: Thursday 12 March, an ordinary working day.
    assert calendar.period_end(date(2026, 3, 2), 10) == (date(2026, 3, 12), False)
    # One day more is one day later: the limit moves by exactly one.
    assert calendar.period_end(date(2026, 3, 2), 11) == (date(2026, 3, 13), False)


def test_a_last_day_inside_a_holiday_moves_to_the_first_working_day_after_it(calendar):
    # 9 Feb + 10 days = Thursday 19 Feb, inside the Spring Festival (15-23 Feb): Tuesday 24 Feb.
    assert calendar.period_end(date(2026, 2, 9), 10) == (date(2026, 2, 24), False)
    # Ending on the holiday's first day (15 Feb) moves just as far.
    assert calendar.period_end(date(2026, 2, 9), 6) == (date(2026, 2, 24), False)
    # The day before the holiday is a working Saturday (14 Feb, 调休): it stays the last day.
    assert calendar.period_end(date(2026, 2, 9), 5) == (date(2026, 2, 14), False)


def test_a_last_day_on_a_weekend_moves_to_monday(calendar):
    # Monday 2 March + 5 days = Saturday 7 March, a rest day: Monday 9 March.
    assert calendar.period_end(date(2026, 3, 2), 5) == (date(2026, 3, 9), False)
    assert calendar.period_end(date(2026, 3, 2), 4) == (date(2026, 3, 6), False)


def test_a_working_sunday_ends_a_period(calendar):
    # Sunday 20 September 2026 is a 调休 working day before National Day.
    assert calendar.period_end(date(2026, 9, 10), 10) == (date(2026, 9, 20), False)
    # National Day 1-7 Oct: a period ending on 3 Oct ends on Thursday 8 Oct.
    assert calendar.period_end(date(2026, 9, 23), 10) == (date(2026, 10, 8), False)


def test_a_year_without_its_calendar_gives_a_provisional_end(calendar):
    if calendar.covers(UNCOVERED_YEAR):
        pytest.skip(f"the calendar package now covers {UNCOVERED_YEAR}")
    # Wednesday 1 January + 10 days = Saturday 11 January: with weekends alone known, Monday.
    end, provisional = calendar.period_end(date(UNCOVERED_YEAR, 1, 1), 10)
    assert provisional is True
    assert end == date(UNCOVERED_YEAR, 1, 13)


def test_a_negative_period_is_refused(calendar):
    with pytest.raises(ValueError):
        calendar.period_end(date(2026, 3, 2), -1)


@given(st.dates(date(2026, 1, 1), date(2026, 10, 31)), st.integers(0, 45))
def test_a_period_ends_on_a_working_day_no_earlier_than_its_plain_count(start, days):
    calendar = WorkdayCalendar()
    end, provisional = calendar.period_end(start, days)
    plain = start + timedelta(days=days)
    assert end >= plain and calendar.is_working_day(end)
    assert all(
        not calendar.is_working_day(plain + timedelta(days=i)) for i in range((end - plain).days)
    )
    assert provisional is False

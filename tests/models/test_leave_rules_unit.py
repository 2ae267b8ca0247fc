"""Leave: days counted, the two-month total and the level that decides (models/leave.py), on
the national rules and on a jurisdiction's overrides, as plain functions."""

from __future__ import annotations

import dataclasses
import datetime as dt
from typing import Any

import pytest

from models.leave import chain_rule, leave_days, window_total
from models.rules import EffectiveRules, RuleBook

D = dt.date


@pytest.fixture(scope="module")
def national() -> EffectiveRules:
    book = RuleBook.load()
    return EffectiveRules({k: r.value for k, r in book.rules.items()}, book.version, {}, book)


def overridden(rules: EffectiveRules, **values: Any) -> EffectiveRules:
    changed = {key.replace("__", "."): value for key, value in values.items()}
    return dataclasses.replace(rules, values={**rules.values, **changed})


def test_leave_days_count_the_first_and_the_last_day():
    assert leave_days(D(2026, 3, 1), D(2026, 3, 7)) == 7
    assert leave_days(D(2026, 3, 1), D(2026, 3, 1)) == 1
    assert leave_days(D(2026, 2, 27), D(2026, 3, 2)) == 4


def test_the_two_month_total_of_a_request_alone_is_its_days():
    assert window_total(D(2026, 3, 1), D(2026, 3, 7), [], 2) == 7


def test_leave_before_and_after_in_the_same_two_months_counts():
    before = (D(2026, 1, 10), D(2026, 1, 19))  # 10 days
    after = (D(2026, 4, 25), D(2026, 5, 4))  # 10 days
    # The request is 1-7 March. The two months ending on 7 March begin on 8 January: all of
    # `before` and the whole request, 17 days.
    assert window_total(D(2026, 3, 1), D(2026, 3, 7), [before], 2) == 17
    # Those ending on 30 April begin on 1 March: the request and 25-30 April, 13 days (a
    # window reaching further into May loses as many days of the request as it gains).
    assert window_total(D(2026, 3, 1), D(2026, 3, 7), [after], 2) == 13
    # No two months hold both January and May: the larger of the two.
    assert window_total(D(2026, 3, 1), D(2026, 3, 7), [before, after], 2) == 17


def test_leave_more_than_two_months_away_does_not_count():
    far = (D(2025, 12, 1), D(2025, 12, 20))
    assert window_total(D(2026, 3, 1), D(2026, 3, 7), [far], 2) == 7


def test_the_window_of_31_january_to_31_march_begins_on_1_february():
    # Leave on 31 January and on 31 March: no two-month window holds both.
    assert window_total(D(2026, 3, 31), D(2026, 3, 31), [(D(2026, 1, 31), D(2026, 1, 31))], 2) == 1
    assert window_total(D(2026, 3, 31), D(2026, 3, 31), [(D(2026, 2, 1), D(2026, 2, 1))], 2) == 2


@pytest.mark.parametrize(
    ("days", "total", "rule"),
    [
        (1, 1, "leave.chain_up_to_station_max"),
        (7, 7, "leave.chain_up_to_station_max"),  # up to 7 days: the station decides
        (8, 8, "leave.chain_up_to_county_max"),
        (30, 30, "leave.chain_up_to_county_max"),  # up to 30: the county decides
        (31, 31, "leave.chain_beyond_county_max"),
        (5, 31, "leave.chain_beyond_county_max"),  # short, but over 30 within two months
        (5, 30, "leave.chain_up_to_station_max"),
    ],
)
def test_the_level_that_decides_follows_the_days_and_the_two_month_total(
    national, days, total, rule
):
    assert chain_rule(days, total, national) == rule


def test_a_jurisdiction_that_lets_the_station_decide_longer_leave(national):
    local = overridden(national, leave__station_max_days=10)
    assert chain_rule(10, 10, local) == "leave.chain_up_to_station_max"
    assert chain_rule(11, 11, local) == "leave.chain_up_to_county_max"
    assert chain_rule(10, 10, national) == "leave.chain_up_to_county_max"


def test_the_national_chains_name_station_county_and_city(national):
    assert national["leave.chain_up_to_station_max"] == "station"
    assert national["leave.chain_up_to_county_max"] == "station>county"
    assert national["leave.chain_beyond_county_max"] == "station>county>city"

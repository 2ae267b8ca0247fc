"""What a 脱管 suggests and which sanctions still stand (models/sanctions.py), as plain
functions on the national rules and on a jurisdiction's overrides."""

from __future__ import annotations

import dataclasses
import datetime as dt

import pytest

from models.rules import EffectiveRules, RuleBook
from models.sanctions import SanctionKind, detachment_days, suggest_for_detachment, uncorrected

D = dt.date


@pytest.fixture(scope="module")
def national() -> EffectiveRules:
    book = RuleBook.load()
    return EffectiveRules({k: r.value for k, r in book.rules.items()}, book.version, {}, book)


def test_a_detachment_lasts_the_days_elapsed():
    assert detachment_days(D(2026, 3, 1), D(2026, 3, 11)) == 10
    assert detachment_days(D(2026, 3, 1), D(2026, 3, 1)) == 0


@pytest.mark.parametrize(
    ("start", "end", "kind", "rule"),
    [
        (D(2026, 3, 1), D(2026, 3, 2), "admonish", "detachment.warn_after_days"),
        (D(2026, 3, 1), D(2026, 3, 11), "admonish", "detachment.warn_after_days"),  # 10 days
        (D(2026, 3, 1), D(2026, 3, 12), "warn", "detachment.warn_after_days"),  # 11 days
        (D(2026, 3, 1), D(2026, 4, 1), "warn", "detachment.warn_after_days"),  # one month
        (D(2026, 3, 1), D(2026, 4, 2), "revoke_request", "detachment.revoke_after_months"),
        # A month from 31 January is 28 February, as the law counts months.
        (D(2026, 1, 31), D(2026, 2, 28), "warn", "detachment.warn_after_days"),
        (D(2026, 1, 31), D(2026, 3, 1), "revoke_request", "detachment.revoke_after_months"),
    ],
)
def test_a_detachment_suggests_admonish_then_warn_then_revocation(national, start, end, kind, rule):
    suggestion = suggest_for_detachment(start, end, national)
    assert (suggestion.kind, suggestion.rule) == (kind, rule)
    assert suggestion.value == national[rule]
    assert suggestion.rules_version == national.version
    assert suggestion.basis == {
        "days": (end - start).days,
        "start_date": start.isoformat(),
        "end_date": end.isoformat(),
    }


def test_a_jurisdictions_thresholds_are_the_ones_applied(national):
    stricter = dataclasses.replace(
        national,
        values={
            **national.values,
            "detachment.warn_after_days": 5,
            "detachment.revoke_after_months": 2,
        },
    )
    assert suggest_for_detachment(D(2026, 3, 1), D(2026, 3, 7), stricter).kind == "warn"
    assert suggest_for_detachment(D(2026, 3, 1), D(2026, 3, 7), national).kind == "admonish"
    assert suggest_for_detachment(D(2026, 3, 1), D(2026, 4, 20), stricter).kind == "warn"
    assert suggest_for_detachment(D(2026, 3, 1), D(2026, 5, 2), stricter).kind == "revoke_request"


def decided(*kinds: str) -> list[dict[str, str]]:
    return [{"_id": f"{kind}-{index}", "kind": kind} for index, kind in enumerate(kinds)]


def test_admonishments_stand_until_a_praise_or_a_warning():
    assert uncorrected(decided("admonish", "admonish"), SanctionKind.ADMONISH) == [
        "admonish-0",
        "admonish-1",
    ]
    assert uncorrected(decided("admonish", "praise", "admonish"), SanctionKind.ADMONISH) == [
        "admonish-2"
    ]
    # Two 训诫 answered by a 警告 do not count towards another.
    assert uncorrected(decided("admonish", "admonish", "warn"), SanctionKind.ADMONISH) == []


def test_warnings_stand_until_a_praise_or_a_revocation_request():
    history = decided("warn", "admonish", "warn")
    assert uncorrected(history, SanctionKind.WARN) == ["warn-0", "warn-2"]
    assert uncorrected(decided("warn", "praise", "warn"), SanctionKind.WARN) == ["warn-2"]
    assert uncorrected(decided("warn", "revoke_request"), SanctionKind.WARN) == []
    # An admonishment does not reset warnings.
    assert uncorrected(decided("warn", "admonish"), SanctionKind.WARN) == ["warn-0"]

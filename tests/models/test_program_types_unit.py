"""Each program type's statutory fields and obligation rules (models/program_types/), as plain
functions: no database, no server. The national rule book supplies the numbers."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

from models.errors import InvalidInput
from models.program_types import (
    PROGRAM_KINDS,
    Opening,
    ProgramStatus,
    ProgramType,
    community_corrections,
    drug_rehab,
    mental_health,
    resettlement,
)
from models.programs import obligation_rules
from models.rules import EffectiveRules, RuleBook
from models.workdays import WorkdayCalendar

NOW = dt.datetime(2026, 3, 2, 2, 0, tzinfo=dt.UTC)
CALENDAR = WorkdayCalendar()


@pytest.fixture(scope="module")
def rules() -> EffectiveRules:
    book = RuleBook.load()
    return EffectiveRules({k: r.value for k, r in book.rules.items()}, book.version, {}, book)


def opening(
    rules: EffectiveRules,
    start: dt.date,
    end: dt.date | None = None,
    from_program: dict[str, Any] | None = None,
    **data: Any,
) -> Opening:
    return Opening(data, start, end, rules, from_program, NOW, CALENDAR)


def stored(kind: ProgramType, start: dt.date, end: dt.date | None, **details: Any) -> dict:
    """A program document as the service stores it (what obligation rules read)."""
    return {
        "type": str(kind),
        "start_date": start.isoformat(),
        "end_date": end.isoformat() if end else None,
        "details": details,
    }


def test_every_program_type_has_its_module_in_the_registry():
    assert set(PROGRAM_KINDS) == set(ProgramType)
    assert PROGRAM_KINDS[ProgramType.DRUG_REHAB] is drug_rehab


def test_the_programs_service_rules_are_the_types_own(rules):
    doc = stored(ProgramType.RESETTLEMENT, dt.date(2026, 3, 2), dt.date(2031, 3, 2))
    assert obligation_rules(doc, rules) == resettlement.obligation_rules(doc, rules)


# --- 社区矫正 ------------------------------------------------------------------------------------


def test_corrections_needs_the_judgments_end_date(rules):
    with pytest.raises(InvalidInput) as caught:
        community_corrections.fields(opening(rules, dt.date(2026, 3, 2), sentence_type="probation"))
    assert caught.value.details == [{"field": "end_date"}]


def test_corrections_opens_pending_intake_under_strict_supervision_for_two_months(rules):
    start = dt.date(2026, 3, 2)
    made = community_corrections.fields(
        opening(rules, start, dt.date(2027, 3, 1), sentence_type="probation", prohibitions=[])
    )
    assert made.status is ProgramStatus.PENDING_INTAKE
    assert (made.start, made.end) == (start, dt.date(2027, 3, 1))
    assert made.details["strict_until"] == "2026-05-02"
    assert made.details["supervision_level"] == "normal"  # the rule book's level after 严管
    # Reported within 10 days, counted as the code of criminal procedure counts them.
    assert made.details["intake_due"] == CALENDAR.period_end(start, 10)[0].isoformat()
    # No prohibitions: nothing to seal.
    assert made.sealed == {"prohibitions": None, "plan": None}


def test_the_level_in_force_is_strict_then_assessed_then_as_decided():
    details = {
        "strict_until": "2026-05-02",
        "supervision_level": "normal",
        "level_history": [{"level": "lenient", "from": "2026-09-01"}],
    }
    assert community_corrections.level_on(details, dt.date(2026, 5, 1)) == "strict"
    assert community_corrections.level_on(details, dt.date(2026, 5, 2)) == "normal"
    assert community_corrections.level_on(details, dt.date(2026, 9, 1)) == "lenient"


def test_corrections_rules_change_with_the_level_and_medical_parole_adds_reexams(rules):
    start, end = dt.date(2026, 3, 2), dt.date(2027, 3, 2)
    doc = stored(
        ProgramType.COMMUNITY_CORRECTIONS,
        start,
        end,
        sentence_type="medical_parole",
        strict_until="2026-05-02",
        supervision_level="normal",
        level_history=[],
    )
    found = community_corrections.obligation_rules(doc, rules)
    checkins = [r for r in found if r.kind == "remote_checkin"]
    assert [(r.start, r.end, r.every_days) for r in checkins] == [
        (start, dt.date(2026, 5, 2), 1),
        (dt.date(2026, 5, 2), end, 7),
    ]
    assert checkins[0].rule_keys == ("corrections.strict.checkin_every_days",)
    (reexam,) = [r for r in found if r.kind == "medical_reexam"]
    assert (reexam.start, reexam.end, reexam.every_months) == (start, end, 3)
    assert all(r.rules_version == rules.version for r in found)


# --- 安置帮教 ------------------------------------------------------------------------------------


def test_resettlement_runs_five_years_from_release_and_flags_a_late_notice(rules):
    release = dt.date(2026, 4, 1)
    made = resettlement.fields(
        opening(
            rules,
            release,
            release_date=release,
            prison="某监狱",
            release_notice={"received_on": dt.date(2026, 3, 20)},
        )
    )
    assert made.status is ProgramStatus.PENDING_INTAKE
    assert (made.start, made.end) == (release, dt.date(2031, 4, 1))
    assert made.details["term_from"] == "release"
    notice = made.details["release_notice"]
    assert (notice["days_ahead"], notice["late"], notice["rule_days"]) == (12, True, 30)
    assert made.sealed == {"prison": "某监狱"}


def test_resettlement_chained_from_corrections_counts_from_the_end_of_corrections(rules):
    corrections = {"_id": "p1", "end_date": "2026-06-30"}
    made = resettlement.fields(
        opening(
            rules,
            dt.date(2026, 7, 5),
            from_program=corrections,
            release_date=dt.date(2026, 7, 5),
        )
    )
    assert (made.start, made.end) == (dt.date(2026, 6, 30), dt.date(2031, 6, 30))
    assert made.details["term_from"] == "end_of_corrections"
    assert made.details["from_program_id"] == "p1"


def test_a_key_person_is_contacted_more_often_and_checks_in_only_when_volunteering(rules):
    start, end = dt.date(2026, 3, 2), dt.date(2031, 3, 2)
    plain = resettlement.obligation_rules(stored(ProgramType.RESETTLEMENT, start, end), rules)
    assert [(r.kind, r.every_days) for r in plain] == [("contact", 90)]
    key = resettlement.obligation_rules(
        stored(ProgramType.RESETTLEMENT, start, end, key_person=True, volunteer_checkins=True),
        rules,
    )
    assert [(r.kind, r.every_days) for r in key] == [("contact", 30), ("remote_checkin", 14)]


# --- 社区戒毒 / 社区康复 -------------------------------------------------------------------------


def test_community_detox_lasts_exactly_three_years(rules):
    start = dt.date(2026, 3, 2)
    made = drug_rehab.fields(opening(rules, start, mode="community_detox"))
    assert made.end == dt.date(2029, 3, 2)
    with pytest.raises(InvalidInput) as caught:
        drug_rehab.fields(opening(rules, start, dt.date(2028, 3, 2), mode="community_detox"))
    assert caught.value.details == [{"field": "end_date"}]


def test_community_rehab_lasts_at_most_three_years(rules):
    start = dt.date(2026, 3, 2)
    shorter = drug_rehab.fields(opening(rules, start, dt.date(2027, 3, 2), mode="community_rehab"))
    assert shorter.end == dt.date(2027, 3, 2)
    assert drug_rehab.fields(opening(rules, start, mode="community_rehab")).end == dt.date(
        2029, 3, 2
    )
    with pytest.raises(InvalidInput):
        drug_rehab.fields(opening(rules, start, dt.date(2029, 3, 3), mode="community_rehab"))


def test_drug_tests_come_less_often_each_year_and_stop_at_the_end(rules):
    start = dt.date(2026, 3, 2)
    doc = stored(ProgramType.DRUG_REHAB, start, dt.date(2027, 9, 1), mode="community_rehab")
    found = drug_rehab.obligation_rules(doc, rules)
    assert [(r.start, r.end, r.every_months) for r in found] == [
        (start, dt.date(2027, 3, 2), 1),
        (dt.date(2027, 3, 2), dt.date(2027, 9, 1), 2),
    ]
    assert found[1].rule_keys == ("drug_rehab.test_every_months_year2",)


# --- 严重精神障碍 --------------------------------------------------------------------------------


def test_a_mental_health_program_is_active_at_once_with_its_risk_history_begun(rules):
    start = dt.date(2026, 3, 2)
    made = mental_health.fields(
        opening(rules, start, risk_level="2", diagnosis="诊断", guardian="监护人")
    )
    assert made.status is ProgramStatus.ACTIVE
    assert made.details["risk_history"] == [
        {"level": 2, "at": "2026-03-02", "recorded_at": NOW, "rules_version": rules.version}
    ]
    assert made.sealed == {"diagnosis": "诊断", "guardian": "监护人", "care_team": None}


@pytest.mark.parametrize(
    ("level", "days", "key"),
    [
        (0, 90, "mental_health.followup_days_level0"),
        (2, 14, "mental_health.followup_days_level1_2"),
        (3, 14, "mental_health.followup_days_level3_5"),
    ],
)
def test_followups_are_as_often_as_the_risk_level_asks(rules, level, days, key):
    assert mental_health.followup_days(rules, level) == (days, key)


def test_followup_periods_follow_the_risk_history(rules):
    start = dt.date(2026, 3, 2)
    doc = stored(
        ProgramType.MENTAL_HEALTH,
        start,
        None,
        risk_history=[{"level": 0, "at": "2026-03-02"}, {"level": 3, "at": "2026-06-10T08:00"}],
    )
    found = mental_health.obligation_rules(doc, rules)
    assert [(r.start, r.end, r.every_days) for r in found] == [
        (start, dt.date(2026, 6, 10), 90),
        (dt.date(2026, 6, 10), None, 14),
    ]


def test_the_subsidy_year_needs_the_risk_level_and_no_incident(rules):
    doc = {
        "start_date": "2024-05-01",
        "details": {
            "risk_history": [{"level": 3, "at": "2024-05-01"}, {"level": 1, "at": "2026-02-01"}],
            "incidents": [{"on": "2025-07-01"}],
        },
    }
    found = mental_health.subsidy_eligibility(doc, rules, dt.date(2027, 1, 5))
    # 2026 counts: level 3 at the year's start; 2025 had an incident; 2027 is at level 1.
    assert found["years"] == {"2024": True, "2025": False, "2026": True, "2027": False}
    assert found["threshold"] == 3

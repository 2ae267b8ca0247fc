"""严重精神障碍 (severe mental disorders): active from the start, followed up every N days by the
assessed risk level as it changes, and 以奖代补 by year for a patient at risk without incident."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from typing import Any

from models.program_types.base import (
    ObligationRule,
    Opening,
    ProgramStatus,
    TypeFields,
    as_date,
    term,
)
from models.rules import EffectiveRules


def followup_days(rules: EffectiveRules, risk_level: int) -> tuple[int, str]:
    """Days between follow-ups at a risk level (0, 1 to 2, 3 to 5), with the rule's key."""
    if risk_level == 0:
        key = "mental_health.followup_days_level0"
    elif risk_level <= 2:
        key = "mental_health.followup_days_level1_2"
    else:
        key = "mental_health.followup_days_level3_5"
    return rules.int(key), key


def fields(opening: Opening) -> TypeFields:
    """The assessed risk level starts the risk history; diagnosis and guardian are sealed."""
    data, start, rules = opening.data, opening.start, opening.rules
    risk = int(data["risk_level"])
    details = {
        "risk_level": risk,
        "risk_history": [
            {
                "level": risk,
                "at": start.isoformat(),
                "recorded_at": opening.now,
                "rules_version": rules.version,
            }
        ],
        "incidents": [],
    }
    sealed = {
        "diagnosis": data["diagnosis"],
        "guardian": data["guardian"],
        "care_team": data.get("care_team"),
    }
    return TypeFields(details, sealed, ProgramStatus.ACTIVE, start, opening.end)


def obligation_rules(doc: Mapping[str, Any], rules: EffectiveRules) -> list[ObligationRule]:
    """A follow-up every N days, N by the risk level in force, period by period."""
    details = doc["details"]
    start, end = term(doc)
    out: list[ObligationRule] = []
    history = details.get("risk_history") or [
        {"level": details.get("risk_level", 0), "at": doc["start_date"]}
    ]
    for index, change in enumerate(history):
        begin = max(as_date(str(change["at"])[:10]), start)
        stop = as_date(str(history[index + 1]["at"])[:10]) if index + 1 < len(history) else end
        if stop is not None and stop <= begin:
            continue
        days, key = followup_days(rules, int(change["level"]))
        out.append(
            ObligationRule(
                "mental_followup",
                begin,
                stop,
                every_days=days,
                rule_keys=(key,),
                rules_version=rules.version,
            )
        )
    return out


def subsidy_eligibility(
    doc: Mapping[str, Any], rules: EffectiveRules, today: dt.date
) -> dict[str, Any]:
    """以奖代补 by calendar year: the patient was at the rule's risk level or above in the
    year, and no incident happened in it."""
    threshold = rules.int("mental_health.subsidy_from_level")
    details = doc["details"]
    history = details.get("risk_history", [])
    incidents = {str(i["on"])[:4] for i in details.get("incidents", [])}
    start_year = int(doc["start_date"][:4])
    years: dict[str, bool] = {}
    for year in range(start_year, today.year + 1):
        levels = [int(h["level"]) for h in history if str(h["at"])[:4] <= str(year)]
        in_year = [int(h["level"]) for h in history if str(h["at"])[:4] == str(year)]
        at_start = levels[-len(in_year) - 1] if len(levels) > len(in_year) else None
        reached = any(
            level >= threshold for level in in_year + ([at_start] if at_start is not None else [])
        )
        years[str(year)] = reached and str(year) not in incidents
    return {"threshold": threshold, "years": years, "rules_version": rules.version}

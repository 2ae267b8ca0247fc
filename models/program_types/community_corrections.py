"""社区矫正 (community corrections): a term fixed by the judgment, 严管 first and then the assessed
level, the reports, check-ins, education and community service each level asks for."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from typing import Any

from models.errors import InvalidInput
from models.periods import add_months
from models.program_types.base import (
    ObligationRule,
    Opening,
    ProgramStatus,
    TypeFields,
    as_date,
    intake_deadline,
    term,
)
from models.rules import EffectiveRules

SENTENCE_TYPES = ("control", "probation", "parole", "medical_parole")
LEVELS = ("strict", "normal", "lenient")


def level_on(details: Mapping[str, Any], day: dt.date) -> str:
    """The supervision level in force on `day`: 严管 until `strict_until`, then the assessed
    level, as changed over time by recorded decisions."""
    if day < as_date(details["strict_until"]):
        return "strict"
    level = details.get("supervision_level", "normal")
    for change in details.get("level_history", []):
        if as_date(change["from"]) <= day:
            level = change["level"]
    return level


def fields(opening: Opening) -> TypeFields:
    """The term is the judgment's (an end date is required); 严管 for the rule's first months."""
    data, start, end, rules = opening.data, opening.start, opening.end, opening.rules
    if end is None:
        raise InvalidInput(
            "A corrections program needs its end date (the term).",
            details=[{"field": "end_date"}],
        )
    level = data.get("supervision_level") or rules["corrections.level_after_strict"]
    strict_until = add_months(start, rules.int("corrections.new_subject_strict_months"))
    details = {
        "sentence_type": data["sentence_type"],
        "supervision_level": level,
        "strict_until": strict_until.isoformat(),
        "level_history": [],
        # The subject reports within N days of the judgment taking effect.
        **intake_deadline(opening.calendar, start, rules.int("corrections.intake_days")),
        "intake_done": None,
    }
    sealed = {"prohibitions": data.get("prohibitions") or None, "plan": data.get("plan")}
    return TypeFields(details, sealed, ProgramStatus.PENDING_INTAKE, start, end)


def level_periods(
    details: Mapping[str, Any], start: dt.date, end: dt.date | None
) -> list[tuple[dt.date, dt.date | None, str]]:
    """The term cut where the level changes: (from, until, level), 严管 first."""
    periods: list[tuple[dt.date, dt.date | None, str]] = []
    strict_until = as_date(details["strict_until"])
    boundaries = [(start, "strict")] if strict_until > start else []
    first_assessed = details.get("supervision_level", "normal")
    boundaries.append((max(start, strict_until), first_assessed))
    for change in details.get("level_history", []):
        boundaries.append((max(as_date(change["from"]), strict_until), change["level"]))
    boundaries.sort(key=lambda item: item[0])
    for index, (begin, level) in enumerate(boundaries):
        stop = boundaries[index + 1][0] if index + 1 < len(boundaries) else end
        if stop is not None and stop <= begin:
            continue
        periods.append((begin, stop, level))
    return periods


def obligation_rules(doc: Mapping[str, Any], rules: EffectiveRules) -> list[ObligationRule]:
    """Per level period: reports and check-ins every N days, education and community service
    hours a month; a medical parole's re-examination every N months over the whole term."""
    details = doc["details"]
    start, end = term(doc)
    version = rules.version
    out: list[ObligationRule] = []
    for begin, stop, level in level_periods(details, start, end):
        prefix = f"corrections.{level}"
        for obligation, key in (
            ("in_person_report", f"{prefix}.report_every_days"),
            ("written_report", f"{prefix}.written_report_every_days"),
            ("remote_checkin", f"{prefix}.checkin_every_days"),
        ):
            out.append(
                ObligationRule(
                    obligation,
                    begin,
                    stop,
                    every_days=rules.int(key),
                    rule_keys=(key,),
                    rules_version=version,
                )
            )
        for obligation, key in (
            ("education", f"{prefix}.education_hours_per_month"),
            ("community_service", f"{prefix}.community_service_hours_per_month"),
        ):
            out.append(
                ObligationRule(
                    obligation,
                    begin,
                    stop,
                    hours_per_month=rules.int(key),
                    rule_keys=(key,),
                    rules_version=version,
                )
            )
    if details.get("sentence_type") == "medical_parole":
        key = "corrections.medical_parole.reexam_every_months"
        out.append(
            ObligationRule(
                "medical_reexam",
                start,
                end,
                every_months=rules.int(key),
                rule_keys=(key,),
                rules_version=version,
            )
        )
    return out

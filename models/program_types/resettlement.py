"""安置帮教 (resettlement): a term from release, or from the end of the corrections it follows;
contact with the person every N days (more often for a key person), check-ins only if asked."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from models.periods import add_years
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


def fields(opening: Opening) -> TypeFields:
    """帮教期 from release (or the chained corrections' end), for the rule's years; a prison's
    release notice recorded with how many days ahead it came, late when fewer than the rule's."""
    data, rules, from_program = opening.data, opening.rules, opening.from_program
    release = as_date(data["release_date"])
    # 帮教期 runs from release, or from the end of corrections that chained into it: the
    # program and all it asks for begin there, never on the day it was recorded.
    begins = as_date(from_program["end_date"]) if from_program else release
    end = add_years(begins, rules.int("resettlement.term_years"))
    details = {
        "release_date": release.isoformat(),
        "term_from": "end_of_corrections" if from_program else "release",
        "from_program_id": str(from_program["_id"]) if from_program else None,
        "key_person": bool(data.get("key_person")),
        "volunteer_checkins": bool(data.get("volunteer_checkins")),
        **intake_deadline(opening.calendar, release, rules.int("resettlement.intake_days")),
        "intake_done": None,
    }
    notice = data.get("release_notice")
    if notice is not None:
        # The prison notifies `resettlement.release_notice_days` ahead; fewer is late.
        ahead = (release - as_date(notice["received_on"])).days
        least = rules.int("resettlement.release_notice_days")
        details["release_notice"] = {
            "received_on": as_date(notice["received_on"]).isoformat(),
            "days_ahead": ahead,
            "late": ahead < least,
            "rule": "resettlement.release_notice_days",
            "rule_days": least,
            "rules_version": rules.version,
        }
    sealed = {"prison": data.get("prison")}
    return TypeFields(details, sealed, ProgramStatus.PENDING_INTAKE, begins, end)


def obligation_rules(doc: Mapping[str, Any], rules: EffectiveRules) -> list[ObligationRule]:
    """Contact every N days over the term; location check-ins when the person volunteered."""
    details = doc["details"]
    start, end = term(doc)
    version = rules.version
    key = (
        "resettlement.key_person_contact_every_days"
        if details.get("key_person")
        else "resettlement.contact_every_days"
    )
    out = [
        ObligationRule(
            "contact",
            start,
            end,
            every_days=rules.int(key),
            rule_keys=(key,),
            rules_version=version,
        )
    ]
    if details.get("volunteer_checkins"):
        # Free citizens: location check-ins only when the person asks for them.
        key = "corrections.lenient.checkin_every_days"
        out.append(
            ObligationRule(
                "remote_checkin",
                start,
                end,
                every_days=rules.int(key),
                rule_keys=(key,),
                rules_version=version,
            )
        )
    return out

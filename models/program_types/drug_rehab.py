"""社区戒毒 and 社区康复 (drug rehabilitation, `mode` community_detox or community_rehab): 社区戒毒
lasts exactly its statutory term, 社区康复 at most its own; drug tests every N months, less often
each year."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from models.errors import InvalidInput
from models.periods import add_years
from models.program_types.base import (
    ObligationRule,
    Opening,
    ProgramStatus,
    TypeFields,
    intake_deadline,
    term,
)
from models.rules import EffectiveRules


def fields(opening: Opening) -> TypeFields:
    """The term checked against the statute (禁毒法 Art. 33 and 48): 社区戒毒 exactly
    `drug_rehab.detox_term_years`, 社区康复 at most `drug_rehab.rehab_max_term_years`."""
    data, start, end, rules = opening.data, opening.start, opening.end, opening.rules
    mode = data["mode"]
    if mode == "community_detox":
        fixed = add_years(start, rules.int("drug_rehab.detox_term_years"))
        if end is not None and end != fixed:
            raise InvalidInput(
                "社区戒毒 lasts exactly its statutory term.",
                details=[{"field": "end_date"}],
            )
        end = fixed
    else:
        longest = add_years(start, rules.int("drug_rehab.rehab_max_term_years"))
        if end is not None and end > longest:
            raise InvalidInput(
                "社区康复 lasts at most its statutory term.",
                details=[{"field": "end_date"}],
            )
        end = end or longest
    details = {
        "mode": mode,
        **intake_deadline(opening.calendar, start, rules.int("drug_rehab.intake_days")),
        "intake_done": None,
        "agreement_signed": None,
        # 社区康复 decided when 社区戒毒 ended: the program it follows.
        "from_program_id": str(opening.from_program["_id"]) if opening.from_program else None,
    }
    sealed = {"working_group": data.get("working_group")}
    return TypeFields(details, sealed, ProgramStatus.PENDING_INTAKE, start, end)


def obligation_rules(doc: Mapping[str, Any], rules: EffectiveRules) -> list[ObligationRule]:
    """A drug test every N months, N by year of the term (years one to three)."""
    start, end = term(doc)
    out: list[ObligationRule] = []
    for year in (1, 2, 3):
        begin = add_years(start, year - 1)
        stop = add_years(start, year)
        if end is not None:
            if begin >= end:
                break
            stop = min(stop, end)
        key = f"drug_rehab.test_every_months_year{year}"
        out.append(
            ObligationRule(
                "drug_test",
                begin,
                stop,
                every_months=rules.int(key),
                rule_keys=(key,),
                rules_version=rules.version,
            )
        )
    return out

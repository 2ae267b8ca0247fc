"""What every program type shares: the types and states, the obligation rule, and the small
interface each type's module offers (the fields that open it, the obligations it imposes)."""

from __future__ import annotations

import datetime as dt
import enum
import logging
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any, Protocol

from models.rules import EffectiveRules
from models.workdays import WorkdayCalendar

# The programs service's own logger: a provisional deadline is its warning.
log = logging.getLogger("anbang.programs")


class ProgramType(enum.StrEnum):
    COMMUNITY_CORRECTIONS = "community_corrections"
    RESETTLEMENT = "resettlement"
    DRUG_REHAB = "drug_rehab"
    MENTAL_HEALTH = "mental_health"


class ProgramStatus(enum.StrEnum):
    PENDING_INTAKE = "pending_intake"
    ACTIVE = "active"
    SUSPENDED = "suspended"
    TRANSFERRED = "transferred"
    ENDED = "ended"


@dataclass(frozen=True)
class ObligationRule:
    """What a program asks for over a period: every N days or months, or hours a month."""

    kind: str
    start: dt.date
    end: dt.date | None
    every_days: int | None = None
    every_months: int | None = None
    hours_per_month: int | None = None
    rule_keys: tuple[str, ...] = ()
    rules_version: str = ""

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["start"] = self.start.isoformat()
        data["end"] = self.end.isoformat() if self.end else None
        data["rule_keys"] = list(self.rule_keys)
        return data


@dataclass(frozen=True)
class Opening:
    """A request to open a program, as the service hands it to the program's type: the body,
    the start and the end asked for (already checked to come after the start), the rules in
    force, the program it follows (a chain), the time now and the holiday calendar."""

    data: Mapping[str, Any]
    start: dt.date
    end: dt.date | None
    rules: EffectiveRules
    from_program: Mapping[str, Any] | None
    now: dt.datetime
    calendar: WorkdayCalendar


@dataclass(frozen=True)
class TypeFields:
    """What a type makes of an opening: its details, its fields to seal, first status, term."""

    details: dict[str, Any]
    sealed: dict[str, Any]
    status: ProgramStatus
    start: dt.date
    end: dt.date | None


class ProgramKind(Protocol):
    """The interface of a type's module (models/program_types/<type>.py): pure functions."""

    def fields(self, opening: Opening) -> TypeFields:
        """The type's details and term for a program being opened; 422 naming a field."""
        ...

    def obligation_rules(
        self, doc: Mapping[str, Any], rules: EffectiveRules
    ) -> list[ObligationRule]:
        """The recurring obligations the program imposes over its term, period by period."""
        ...


def as_date(value: Any) -> dt.date:
    return value if isinstance(value, dt.date) else dt.date.fromisoformat(value)


def term(doc: Mapping[str, Any]) -> tuple[dt.date, dt.date | None]:
    """A stored program's start and end (None: open-ended)."""
    start = as_date(doc["start_date"])
    return start, as_date(doc["end_date"]) if doc.get("end_date") else None


def intake_deadline(calendar: WorkdayCalendar, start: dt.date, days: int) -> dict[str, Any]:
    """`intake_due`, a period in days counted as 刑事诉讼法 Art. 105 counts it, and
    `intake_due_provisional` when the holiday calendar of a year is not yet loaded: then
    weekends alone are rest days, the deadline is marked provisional and the operator is
    told to add the year's calendar file."""
    due, provisional = calendar.period_end(start, days)
    if provisional:
        log.warning(
            "holiday calendar missing; deadline provisional",
            extra={"fields": {"from": start.isoformat()}},
        )
    return {"intake_due": due.isoformat(), "intake_due_provisional": provisional}

"""One module per program type, each the same small interface (`ProgramKind`: the fields that
open a program of the type, the obligations it imposes), and the registry the programs service
dispatches through instead of switching on the type."""

from __future__ import annotations

from models.program_types import community_corrections, drug_rehab, mental_health, resettlement
from models.program_types.base import (
    ObligationRule,
    Opening,
    ProgramKind,
    ProgramStatus,
    ProgramType,
    TypeFields,
)

PROGRAM_KINDS: dict[ProgramType, ProgramKind] = {
    ProgramType.COMMUNITY_CORRECTIONS: community_corrections,
    ProgramType.RESETTLEMENT: resettlement,
    ProgramType.DRUG_REHAB: drug_rehab,
    ProgramType.MENTAL_HEALTH: mental_health,
}

__all__ = [
    "PROGRAM_KINDS",
    "ObligationRule",
    "Opening",
    "ProgramKind",
    "ProgramStatus",
    "ProgramType",
    "TypeFields",
]

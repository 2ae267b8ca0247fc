"""Monthly compliance reports, in three parts: `figures` (the pure computations: months,
figures, rates, summaries, the signed hash and the differences), `reading` (the reads of the
services' collections a month is made of) and `service` (the reports' lifecycle: generate,
sign, drill down, export). Importers take what they need from `models.reports`."""

from __future__ import annotations

from models.reports.figures import (
    FIGURE_KEYS,
    FIGURE_LABELS,
    FIGURES,
    LEVEL_LABELS,
    PROGRAM_LABELS,
    RATE_LABELS,
    STATUS_FIGURE,
    TREND_LABELS,
    UNIT_KIND,
    Month,
    parse_month,
    rates,
    row_counts,
    snapshot_hash,
)
from models.reports.service import (
    REPORT_ROWS,
    REPORTS,
    SIGNING_LEVEL,
    ReportService,
    ReportView,
)

__all__ = [
    "FIGURES",
    "FIGURE_KEYS",
    "FIGURE_LABELS",
    "LEVEL_LABELS",
    "PROGRAM_LABELS",
    "RATE_LABELS",
    "REPORTS",
    "REPORT_ROWS",
    "SIGNING_LEVEL",
    "STATUS_FIGURE",
    "TREND_LABELS",
    "UNIT_KIND",
    "Month",
    "ReportService",
    "ReportView",
    "parse_month",
    "rates",
    "row_counts",
    "snapshot_hash",
]

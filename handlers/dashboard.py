"""Staff endpoint for the dashboard: a station's, county's or city's figures of today, the last
12 weeks and 12 months, in one answer (what the console's dashboard draws)."""

from __future__ import annotations

import datetime as dt

from pydantic import Field

from handlers.base import BaseHandler, Out, endpoint
from handlers.query import WholeNumber, object_id, query, query_args
from models.dashboard import SIGNING_MAX_MONTHS, SIGNING_MONTHS


class OrgOut(Out):
    id: str
    name: str
    kind: str


class WindowsOut(Out):
    due: int
    met: int
    open: int
    missed: int
    excused: int


class PeriodOut(Out):
    """Check-in windows that closed in a week (its Monday) or month (YYYY-MM)."""

    period: str | None = None
    due: int
    on_time: int
    late: int
    missed: int
    excused: int
    pending: int
    on_time_rate: float | None
    checkin_rate: float | None


class OutcomesOut(Out):
    since: str
    ended: int
    by_outcome: dict[str, int]
    rates: dict[str, float | None]


class UnitOut(Out):
    org_id: str
    name: str
    kind: str
    supervised: int
    pending_intake: int
    overdue_intake: int
    detachments_open: int
    alerts_open: int
    leave_in_progress: int
    windows_today: WindowsOut
    strict: int
    checkins_12_weeks: PeriodOut


class DashboardOut(Out):
    org: OrgOut
    as_of: dt.datetime
    today: str
    supervised: int
    pending_intake: int
    by_population: dict[str, int]
    by_level: dict[str, int]
    windows_today: WindowsOut
    overdue_intake: int
    detachments_open: int
    alerts_open: int
    leave_in_progress: int
    checkins_weekly: list[PeriodOut]
    checkins_monthly: list[PeriodOut]
    outcomes: OutcomesOut
    units: list[UnitOut]


class DashboardHandler(BaseHandler):
    access = "dashboard.read"

    @endpoint(
        "The caller's node (or `?org=` within it: a station, county or city): people supervised "
        "by population and level, today's windows, overdue intake, open 脱管, open alerts, leave "
        "in progress, check-in on-time rate by week and month, outcomes, and a line per unit",
        response=DashboardOut,
        errors=(401, 403, 404, 422),
        tags=("reports",),
    )
    @query(object_id("org", "A station, county or city in the caller's subtree"))
    async def get(self) -> None:
        org = query_args(self)["org"]
        result = await self.ctx.dashboard.overview(self.audit_context, org)
        self.respond(DashboardOut(**result))


class SigningCellOut(Out):
    month: str
    status: str = Field(description="signed, draft (computed, not signed) or none (no report)")
    report_id: str | None
    version: int | None
    signed_at: dt.datetime | None
    changed: bool = Field(description="The data changed since the signature")


class SigningRowOut(Out):
    org_id: str
    name: str
    kind: str
    months: list[SigningCellOut]
    unsigned: int


class SigningOut(Out):
    org: OrgOut
    months: list[str]
    rows: list[SigningRowOut]
    unsigned: int


class SigningHandler(BaseHandler):
    access = "reports.read"

    @endpoint(
        "Which monthly reports of the node and of each unit below it are signed, for the last "
        "`months` months that have ended (the county overview)",
        response=SigningOut,
        errors=(401, 403, 404, 422),
        tags=("reports",),
    )
    @query(
        object_id("org", "A station, county or city in the caller's subtree"),
        WholeNumber(
            "months",
            f"How many ended months, 1 to {SIGNING_MAX_MONTHS} (default {SIGNING_MONTHS})",
            {
                "type": "integer",
                "minimum": 1,
                "maximum": SIGNING_MAX_MONTHS,
                "default": SIGNING_MONTHS,
            },
            default=SIGNING_MONTHS,
        ),
    )
    async def get(self) -> None:
        args = query_args(self)
        result = await self.ctx.dashboard.signing(self.audit_context, args["org"], args["months"])
        self.respond(SigningOut(**result))


routes = [
    (r"/api/v1/dashboard", DashboardHandler),
    (r"/api/v1/dashboard/signing", SigningHandler),
]

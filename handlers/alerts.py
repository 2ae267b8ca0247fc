"""Alert endpoints: the alerts in the caller's scope, and acknowledging one."""

from __future__ import annotations

import datetime as dt
from typing import Any

from handlers.base import BaseHandler, Out, endpoint, path_id
from handlers.query import WholeNumber, one_of, page_size, query, query_args, yes_no
from models.alerts import DEFAULT_PER_PAGE, MAX_PER_PAGE, Alert, AlertStatus


class AlertOut(Out):
    id: str
    kind: str
    org_id: str
    status: str
    subject_id: str | None
    to_user_id: str | None
    created_at: dt.datetime
    details: dict[str, Any]
    # The person's name as the caller may see it (masked, or none for a file it cannot read).
    subject_name: str | None = None
    acknowledged_at: dt.datetime | None = None
    acknowledged_by: str | None = None
    acknowledged_by_name: str | None = None

    @classmethod
    def of(cls, alert: Alert) -> AlertOut:
        return cls(**alert.__dict__)


class AlertList(Out):
    items: list[AlertOut]
    # Numbered pages: how many alerts the caller sees in all, and which page this is.
    total: int
    page: int
    per_page: int


class AlertsHandler(BaseHandler):
    access = "alerts.read"

    @endpoint(
        "Alerts in the caller's scope, the latest first, in numbered pages "
        "(`?status=open&mine=1&page=2&limit=50`): `total` counts those the caller sees",
        response=AlertList,
        tags=("alerts",),
    )
    @query(
        one_of("status", AlertStatus, "Only alerts in this state"),
        yes_no("mine", "1: only alerts addressed to the caller"),
        WholeNumber(
            "page",
            "A numbered page, 1 first (default 1)",
            {"type": "integer", "minimum": 1, "maximum": 100_000, "default": 1},
            default=1,
        ),
        page_size(DEFAULT_PER_PAGE, MAX_PER_PAGE),
    )
    async def get(self) -> None:
        args = query_args(self)
        listed = await self.ctx.alerts.page(
            self.identity,
            self.ctx.subjects,
            status=args["status"],
            mine=args["mine"],
            page=args["page"],
            per_page=args["limit"],
        )
        self.respond(
            AlertList(
                items=[AlertOut.of(a) for a in listed.items],
                total=listed.total,
                page=listed.page,
                per_page=listed.per_page,
            )
        )


class AlertAckHandler(BaseHandler):
    access = "alerts.ack"

    @endpoint(
        "Acknowledge an alert (its roles only; about a person: those who work on them)",
        response=AlertOut,
        errors=(403, 404),
        tags=("alerts",),
    )
    async def post(self, alert_id: str) -> None:
        alert = await self.ctx.alerts.acknowledge(self.audit_context, self.ctx.subjects, alert_id)
        self.respond(AlertOut.of(alert))


routes = [
    (r"/api/v1/alerts", AlertsHandler),
    (rf"/api/v1/alerts/{path_id('alert_id')}/ack", AlertAckHandler),
]

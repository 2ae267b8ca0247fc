"""The audit administrator's view of the audit log: logins, refusals and administrative changes
over a span of days, optionally one account's (三员分立: the audit administrator only)."""

from __future__ import annotations

import datetime as dt
from typing import Any

from handlers.base import BaseHandler, Out, endpoint
from handlers.query import calendar_day, object_id, one_of, page_size, query, query_args, required
from models.clock import LOCAL_TZ
from models.errors import InvalidInput

EVENT_KINDS = ("login", "refusal", "admin")
# The longest span one request reads (a year of a province's log is not one page).
MAX_SPAN_DAYS = 93


class AuditEvent(Out):
    id: str
    at: dt.datetime
    actor_id: str | None
    actor_name: str | None
    actor_username: str | None
    role: str | None
    action: str
    resource: str | None
    resource_id: str | None
    outcome: str | None
    remote_ip: str | None
    details: dict[str, Any]


class AuditEventList(Out):
    items: list[AuditEvent]


class AuditEventsHandler(BaseHandler):
    access = "audit.read"

    @endpoint(
        "Audit entries of one kind (`?kind=login|refusal|admin&from=&to=&actor_id=`): logins "
        "and logouts, refusals, or administrative changes, the latest first; days are local, "
        "`to` included (default: the last 7 days)",
        response=AuditEventList,
        errors=(422,),
        tags=("audit",),
    )
    @query(
        required(one_of("kind", EVENT_KINDS, "Which entries")),
        calendar_day("from", "First day (default: six days before `to`)"),
        calendar_day("to", "Last day, included (default: today)"),
        object_id("actor_id", "Only this account's entries"),
        page_size(100, 500),
    )
    async def get(self) -> None:
        args = query_args(self)
        last = args["to"] or self.ctx.clock.now().astimezone(LOCAL_TZ).date()
        first = args["from"] or last - dt.timedelta(days=6)
        if first > last or (last - first).days >= MAX_SPAN_DAYS:
            raise InvalidInput(
                f"`from` is on or before `to`, at most {MAX_SPAN_DAYS} days apart.",
                details=[{"field": "from", "type": "date_range"}],
            )
        since = dt.datetime.combine(first, dt.time(), tzinfo=LOCAL_TZ)
        until = dt.datetime.combine(last + dt.timedelta(days=1), dt.time(), tzinfo=LOCAL_TZ)
        items = await self.ctx.audit.events(
            self.audit_context,
            args["kind"],
            since,
            until,
            actor_id=args["actor_id"],
            limit=args["limit"],
            staff=self.ctx.staff.lookup,
        )
        self.respond(AuditEventList(items=[AuditEvent(**item) for item in items]))


routes = [(r"/api/v1/audit/events", AuditEventsHandler)]

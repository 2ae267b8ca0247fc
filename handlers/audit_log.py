"""The audit administrator's view of the audit log: logins, refusals and administrative changes
over a span of days, optionally one account's (三员分立: the audit administrator only)."""

from __future__ import annotations

import datetime as dt
from typing import Any

from handlers.base import BaseHandler, Out, endpoint
from handlers.query import (
    calendar_day,
    exact_person,
    matching,
    object_id,
    one_of,
    page_size,
    query,
    query_args,
    required,
)
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


class AuditAccount(Out):
    id: str
    name: str
    username: str
    role: str | None
    org_id: str
    disabled: bool


class AuditAccountList(Out):
    items: list[AuditAccount]


class AuditAccountsHandler(BaseHandler):
    access = "audit.read"

    @endpoint(
        "Accounts in the caller's scope whose name or username holds `q`, by name: the "
        "audit administrator picks whose entries to read by name, not by id",
        response=AuditAccountList,
        errors=(422,),
        tags=("audit",),
    )
    @query(
        required(
            matching(
                "q",
                "Part of a name or username: Chinese characters, letters, digits and · . _ - "
                "only, 1 to 30",
                r"^[\u3400-\u9fffA-Za-z0-9·._-]{1,30}$",
            )
        ),
        page_size(20, 50),
    )
    async def get(self) -> None:
        args = query_args(self)
        found = await self.ctx.staff.accounts_matching(self.identity, args["q"], args["limit"])
        self.respond(
            AuditAccountList(
                items=[
                    AuditAccount(
                        id=v.id,
                        name=v.name,
                        username=v.username,
                        role=v.role,
                        org_id=v.org_id,
                        disabled=v.disabled,
                    )
                    for v in found
                ]
            )
        )


class AccessLogFile(Out):
    id: str
    # Where the file is kept and when it was opened: enough to tell two files of one name
    # apart without reading what either says.
    station: str
    opened_on: dt.date
    # What the typed text matched: name, id_number or phone.
    matched: str


class AccessLogFileList(Out):
    items: list[AccessLogFile]


class AccessLogFilesHandler(BaseHandler):
    access = "subjects.access_log"

    @endpoint(
        "Files in the caller's scope whose name, ID number or phone is exactly `q`, for choosing "
        "whose access log to read: each by station and opening day, never its contents",
        response=AccessLogFileList,
        errors=(422,),
        tags=("audit",),
    )
    @query(required(exact_person()))
    async def get(self) -> None:
        args = query_args(self)
        found = await self.ctx.subjects.files_for_access_log(self.audit_context, args["q"])
        self.respond(AccessLogFileList(items=[AccessLogFile(**f) for f in found]))


routes = [
    (r"/api/v1/audit/events", AuditEventsHandler),
    (r"/api/v1/audit/files", AccessLogFilesHandler),
    (r"/api/v1/audit/accounts", AuditAccountsHandler),
]

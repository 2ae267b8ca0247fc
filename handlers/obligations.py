"""Obligation endpoints: a person's obligations over any range, excusing one, recording a result
or the hours of an education or community-service month."""

from __future__ import annotations

import datetime as dt
from typing import Literal

from pydantic import Field

from handlers.base import BaseHandler, Out, Strict, endpoint, path_id
from handlers.query import calendar_day, one_of, query, query_args
from models.clock import LOCAL_TZ
from models.obligations import (
    KINDS,
    MAX_HOURS_PER_ENTRY,
    MAX_RANGE_DAYS,
    OccurrenceStatus,
    OccurrenceView,
)


class HoursEntryOut(Out):
    on: dt.date
    hours: float
    source: str = Field(description="`recorded` by staff, or `course:<id>` from 阳光之家")
    place: str | None = None
    confirmed_by: str | None = None
    recorded_by: str | None = None


class OccurrenceOut(Out):
    id: str | None
    program_id: str
    kind: str
    window_start: dt.datetime
    window_end: dt.datetime
    status: str
    projected: bool
    required_hours: int | None = None
    excuse_reason: str | None = None
    hours_done: float | None = Field(
        None, description="Education and community service: the hours recorded so far"
    )
    hours_entries: list[HoursEntryOut] | None = None

    @classmethod
    def of(cls, view: OccurrenceView) -> OccurrenceOut:
        return cls(**view.__dict__)


class OccurrenceList(Out):
    items: list[OccurrenceOut]


class ExcuseBody(Strict):
    reason: str = Field(min_length=2, max_length=500)


class SubjectObligationsHandler(BaseHandler):
    access = "obligations.read"

    @endpoint(
        "Obligations in `?from=&to=` (default: the next 30 days): stored ones and, further "
        "ahead, projected from the rules (`projected: true`, no id); `&status=&kind=`",
        response=OccurrenceList,
        errors=(404, 422),
        tags=("obligations",),
    )
    @query(
        calendar_day("from", "First day (default: today)"),
        calendar_day("to", f"Last day (default: 30 days after `from`; {MAX_RANGE_DAYS} at most)"),
        one_of("status", OccurrenceStatus, "Only occurrences in this state"),
        one_of("kind", KINDS, "Only obligations of this kind"),
    )
    async def get(self, subject_id: str) -> None:
        args = query_args(self)
        start = args["from"] or self.ctx.clock.now().astimezone(LOCAL_TZ).date()
        end = args["to"] or start + dt.timedelta(days=30)
        views = await self.ctx.obligations.for_subject(
            self.audit_context,
            subject_id,
            start=start,
            end=end,
            status=args["status"],
            kind=args["kind"],
        )
        self.respond(OccurrenceList(items=[OccurrenceOut.of(v) for v in views]))


class ExcuseHandler(BaseHandler):
    access = "obligations.excuse"

    @endpoint(
        "Excuse an occurrence with a reason (audited); never counted as missed",
        body=ExcuseBody,
        response=OccurrenceOut,
        errors=(404, 409),
        tags=("obligations",),
    )
    async def post(self, occurrence_id: str) -> None:
        body = self.parse(ExcuseBody)
        view = await self.ctx.obligations.excuse(self.audit_context, occurrence_id, body.reason)
        self.respond(OccurrenceOut.of(view))


class ResultBody(Strict):
    outcome: Literal["done", "negative", "positive", "refused", "evaded"]


class ResultHandler(BaseHandler):
    access = "obligations.record"

    @endpoint(
        "Record an obligation's result; refused or evaded drug tests count toward 严重违反协议; "
        "an education or community-service month is done only by its hours (409 hours_short)",
        body=ResultBody,
        response=OccurrenceOut,
        errors=(404, 409, 422),
        tags=("obligations",),
    )
    async def post(self, occurrence_id: str) -> None:
        body = self.parse(ResultBody)
        view = await self.ctx.obligations.record_result(
            self.audit_context, occurrence_id, body.outcome
        )
        self.respond(OccurrenceOut.of(view))


class HoursBody(Strict):
    on: dt.date = Field(description="The day the hours were done, within the window")
    hours: float = Field(gt=0, le=MAX_HOURS_PER_ENTRY)
    place: str = Field(min_length=1, max_length=200, description="Where, or which course")
    confirmed_by: str = Field(min_length=1, max_length=100, description="Who confirms the hours")


class HoursHandler(BaseHandler):
    access = "obligations.record"

    @endpoint(
        "Record hours of 教育学习 or 公益活动 (date, place or course, who confirms); the month "
        "is met once the rule's hours are",
        body=HoursBody,
        response=OccurrenceOut,
        errors=(404, 409, 422),
        tags=("obligations",),
    )
    async def post(self, occurrence_id: str) -> None:
        body = self.parse(HoursBody)
        view = await self.ctx.obligations.record_hours(
            self.audit_context,
            occurrence_id,
            on=body.on,
            hours=body.hours,
            place=body.place,
            confirmed_by=body.confirmed_by,
        )
        self.respond(OccurrenceOut.of(view))


routes = [
    (rf"/api/v1/obligations/{path_id('occurrence_id')}/result", ResultHandler),
    (rf"/api/v1/obligations/{path_id('occurrence_id')}/hours", HoursHandler),
    (rf"/api/v1/subjects/{path_id('subject_id')}/obligations", SubjectObligationsHandler),
    (rf"/api/v1/obligations/{path_id('occurrence_id')}/excuse", ExcuseHandler),
]

"""Caseload endpoints: the caller's day, visits and talks, and handing over a caseload."""

from __future__ import annotations

import datetime as dt
from typing import Any, Literal

from pydantic import AwareDatetime, Field

from handlers.base import BaseHandler, GeoLocation, Out, Strict, endpoint, path_id
from handlers.query import one_of, query, query_args
from models.caseload import CaseloadItem


class ReferralDue(Out):
    """An open 转诊 task (严重精神障碍管理治疗工作规范 2018) and its deadline."""

    id: str
    kind: Literal["psychiatric_referral"]
    subject_id: str
    status: Literal["open"]
    program_id: str
    risk_level: int
    due: dt.date
    overdue: bool
    assigned_to: str | None


class CaseloadEntry(Out):
    subject_id: str
    name: str | None
    due_today: list[dict[str, Any]]
    overdue: list[dict[str, Any]]
    open_alerts: int
    referrals: list[ReferralDue] = []

    @classmethod
    def of(cls, item: CaseloadItem) -> CaseloadEntry:
        return cls(**item.__dict__)


class Caseload(Out):
    items: list[CaseloadEntry]


class VisitBody(Strict):
    kind: Literal["visit", "talk", "followup"]
    note: str = Field(min_length=1, max_length=5000)
    # Where it happened, as the worker names it (a home, a community centre); sealed.
    place: str | None = Field(default=None, min_length=1, max_length=200)
    # The one location shape (a check-in's too): a `wx.getLocation` result sent as it is.
    location: GeoLocation | None = None
    at: AwareDatetime | None = None


class VisitOut(Out):
    id: str
    kind: str
    at: dt.datetime
    obligations_met: int


class HandOverBody(Strict):
    to_worker_ids: list[str] = Field(min_length=1, max_length=20)


class HandOverOut(Out):
    files: int


class CaseloadHandler(BaseHandler):
    access = "caseload.read"

    @endpoint(
        "The caller's subjects with obligations due today, overdue ones and open alerts "
        "(`?due=today|overdue`)",
        response=Caseload,
        tags=("caseload",),
    )
    @query(
        one_of(
            "due",
            ("today", "overdue"),
            "Only subjects with items due today, or only those with overdue items",
        )
    )
    async def get(self) -> None:
        due = query_args(self)["due"]
        items = await self.ctx.caseload.caseload(self.audit_context, due)
        self.respond(Caseload(items=[CaseloadEntry.of(i) for i in items]))


class VisitListItem(Out):
    id: str
    kind: str
    at: dt.datetime
    by: str | None
    note: str | None
    place: str | None = None


class VisitList(Out):
    items: list[VisitListItem]


class VisitsHandler(BaseHandler):
    access = {"GET": "visits.read", "POST": "visits.record"}

    @endpoint(
        "A person's visits and talks, newest first (notes opened as the caller may read "
        "them: follow-up notes for health roles and the assigned workers only)",
        response=VisitList,
        errors=(404,),
        tags=("caseload",),
    )
    async def get(self, subject_id: str) -> None:
        visits = await self.ctx.caseload.visits(self.audit_context, subject_id)
        self.respond(VisitList(items=[VisitListItem(**v) for v in visits]))

    @endpoint(
        "Record a visit or talk (note, named `place` and location encrypted); meets the open "
        "contact or follow-up obligation",
        body=VisitBody,
        response=VisitOut,
        status=201,
        errors=(404,),
        tags=("caseload",),
    )
    async def post(self, subject_id: str) -> None:
        body = self.parse(VisitBody)
        visit = await self.ctx.caseload.record_visit(
            self.audit_context,
            subject_id,
            kind=body.kind,
            note=body.note,
            location=body.location.stored() if body.location else None,
            at=body.at,
            place=body.place,
        )
        self.respond(VisitOut(**visit), status=201)


class HandOverHandler(BaseHandler):
    access = "caseload.hand_over"

    @endpoint(
        "Hand a departing social worker's files to others, in one audited operation",
        body=HandOverBody,
        response=HandOverOut,
        errors=(404, 422),
        tags=("caseload",),
    )
    async def post(self, staff_id: str) -> None:
        body = self.parse(HandOverBody)
        files = await self.ctx.subjects.hand_over_caseload(
            self.audit_context, staff_id, body.to_worker_ids, self.ctx.staff.lookup
        )
        self.respond(HandOverOut(files=files))


routes = [
    (r"/api/v1/caseload", CaseloadHandler),
    (rf"/api/v1/subjects/{path_id('subject_id')}/visits", VisitsHandler),
    (rf"/api/v1/staff/{path_id('staff_id')}/handover", HandOverHandler),
]

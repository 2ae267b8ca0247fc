"""Leave endpoints (外出请假): staff file a request for a person, officers take their steps along
its chain, and the return (销假) is recorded. The person's own request comes from the
mini-program (issue 9) through the same service."""

from __future__ import annotations

import datetime as dt
from typing import Any

from pydantic import Field

from handlers.base import BaseHandler, Out, Strict, endpoint, path_id
from handlers.query import one_of, page_size, query, query_args
from models.leave import LeaveView


class LeaveBody(Strict):
    start_date: dt.date
    end_date: dt.date
    destination: str = Field(min_length=1, max_length=200)
    reason: str = Field(min_length=1, max_length=1000)


class DecisionBody(Strict):
    approve: bool
    comment: str = Field(default="", max_length=1000)


class ReturnBody(Strict):
    date: dt.date


class LeaveOut(Out):
    id: str
    subject_id: str
    start_date: str
    end_date: str
    days: int
    window_total_days: int
    destination: str | None
    reason: str | None
    status: str
    levels: list[str]
    rule: str
    steps: list[dict[str, Any]]
    next_level: str | None
    rules_version: str
    channel: str
    returned_on: str | None
    return_late: bool | None
    created_at: dt.datetime | None = None
    # Lists only: the person's name as the caller may see it (masked, or none).
    subject_name: str | None = None

    @classmethod
    def of(cls, view: LeaveView) -> LeaveOut:
        return cls(**view.__dict__)


class LeaveList(Out):
    items: list[LeaveOut]


class SubjectLeaveHandler(BaseHandler):
    access = {"GET": "leave.history", "POST": "leave.request"}

    @endpoint(
        "A person's leave requests, newest first, in every state, with the 销假 (for those "
        "who may read the file's leave: officers, the assigned social workers)",
        response=LeaveList,
        errors=(404, 422),
        tags=("decisions",),
    )
    @query(page_size(default=100, maximum=200))
    async def get(self, subject_id: str) -> None:
        limit = query_args(self)["limit"]
        views = await self.ctx.leave.for_subject(self.audit_context, subject_id, limit)
        self.respond(LeaveList(items=[LeaveOut.of(v) for v in views]))

    @endpoint(
        "File a leave request for a person under corrections; its chain follows from the days",
        body=LeaveBody,
        response=LeaveOut,
        status=201,
        errors=(404, 409, 422),
        tags=("decisions",),
    )
    async def post(self, subject_id: str) -> None:
        body = self.parse(LeaveBody)
        view = await self.ctx.leave.request(
            self.audit_context,
            subject_id,
            start=body.start_date,
            end=body.end_date,
            destination=body.destination,
            reason=body.reason,
        )
        self.respond(LeaveOut.of(view), status=201)


class LeaveRequestsHandler(BaseHandler):
    access = "leave.read"

    @endpoint(
        "Leave requests in scope (`?status=pending`), with their steps and the next level",
        response=LeaveList,
        tags=("decisions",),
    )
    @query(
        one_of("status", ("pending", "approved", "rejected"), "Only requests in this state"),
        page_size(default=100, maximum=200),
    )
    async def get(self) -> None:
        args = query_args(self)
        views = await self.ctx.leave.list(self.audit_context, args["status"], args["limit"])
        self.respond(LeaveList(items=[LeaveOut.of(v) for v in views]))


class LeaveDecisionHandler(BaseHandler):
    access = "leave.decide"

    @endpoint(
        "Take the caller's step; 403 when another level acts next, 409 once decided",
        body=DecisionBody,
        response=LeaveOut,
        errors=(403, 404, 409),
        tags=("decisions",),
    )
    async def post(self, leave_id: str) -> None:
        body = self.parse(DecisionBody)
        view = await self.ctx.leave.decide(self.audit_context, leave_id, body.approve, body.comment)
        self.respond(LeaveOut.of(view))


class LeaveReturnHandler(BaseHandler):
    access = "leave.return"

    @endpoint(
        "Record the return (销假); after the last day of leave it is marked late",
        body=ReturnBody,
        response=LeaveOut,
        errors=(404, 409, 422),
        tags=("decisions",),
    )
    async def post(self, leave_id: str) -> None:
        body = self.parse(ReturnBody)
        view = await self.ctx.leave.record_return(self.audit_context, leave_id, body.date)
        self.respond(LeaveOut.of(view))


routes = [
    (rf"/api/v1/subjects/{path_id('subject_id')}/leave-requests", SubjectLeaveHandler),
    (r"/api/v1/leave-requests", LeaveRequestsHandler),
    (rf"/api/v1/leave-requests/{path_id('leave_id')}/decision", LeaveDecisionHandler),
    (rf"/api/v1/leave-requests/{path_id('leave_id')}/return", LeaveReturnHandler),
]

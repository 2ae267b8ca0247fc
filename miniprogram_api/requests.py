"""What a person asks for from the mini-program: leave (外出请假) and its return (销假), and
阳光之家 assistance."""

from __future__ import annotations

import datetime as dt
from typing import Literal

from pydantic import ConfigDict, Field

from handlers.base import GeoLocation, Out, Strict, endpoint, path_id
from handlers.query import query
from miniprogram_api.base import MpHandler
from miniprogram_api.records import PAGE, OwnLeaveListOut, list_own_leave
from models.leave import LeaveView


class LeaveBody(Strict):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "start_date": "2026-11-20",
                    "end_date": "2026-11-22",
                    "destination": "浙江省杭州市西湖区",
                    "reason": "探望住院的母亲",
                }
            ]
        },
    )

    start_date: dt.date
    end_date: dt.date
    destination: str = Field(min_length=1, max_length=200)
    reason: str = Field(min_length=1, max_length=1000)


class LeaveOut(Out):
    id: str
    status: str
    start_date: str
    end_date: str
    days: int
    next_level: str | None
    returned_on: str | None = None
    return_late: bool | None = None


class ReturnBody(Strict):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "location": {
                        "latitude": 28.0197,
                        "longitude": 120.6543,
                        "type": "gcj02",
                        "accuracy": 30,
                        "errMsg": "getLocation:ok",
                    }
                }
            ]
        },
    )

    location: GeoLocation | None = None


class AssistanceBody(Strict):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{"needs": ["job", "training"], "note": "想学一门手艺"}]},
    )

    needs: list[Literal["housing", "food", "job", "training", "legal", "benefits"]] = Field(
        min_length=1, max_length=6
    )
    note: str = Field(default="", max_length=1000)


class AssistanceOut(Out):
    id: str
    status: str
    needs: list[str]


def _leave_out(view: LeaveView) -> LeaveOut:
    return LeaveOut(
        id=view.id,
        status=view.status,
        start_date=view.start_date,
        end_date=view.end_date,
        days=view.days,
        next_level=view.next_level,
        returned_on=view.returned_on,
        return_late=view.return_late,
    )


class LeaveRequestsHandler(MpHandler):
    access = "mp.self"

    @endpoint(
        "Own leave requests (a guardian: the person's), newest first, each level's decision "
        "and reason",
        response=OwnLeaveListOut,
        errors=(401, 403, 422),
        tags=("mini-program",),
        summary_zh="本人的请假申请列表",
    )
    @query(PAGE)
    async def get(self) -> None:
        await list_own_leave(self)

    @endpoint(
        "Ask for leave; the station (and, past its authority, the county) decides",
        body=LeaveBody,
        response=LeaveOut,
        status=201,
        errors=(401, 403, 409, 422),
        tags=("mini-program",),
        idempotency="optional",
        codes=(
            ("not_under_corrections", 409, "本人当前不在社区矫正期内，无需请假"),
            ("content_refused", 422, "填写的内容未通过内容安全检查"),
        ),
        summary_zh="提交请假申请",
    )
    async def post(self) -> None:
        body = self.parse(LeaveBody)

        async def produce() -> tuple[LeaveOut, int]:
            ctx = self.audit_context
            await self.ctx.content_check.check(
                ctx, {"destination": body.destination, "reason": body.reason}
            )
            view = await self.ctx.leave.request_for_self(
                ctx,
                start=body.start_date,
                end=body.end_date,
                destination=body.destination,
                reason=body.reason,
            )
            return _leave_out(view), 201

        await self.respond_once(produce)


class LeaveReturnHandler(MpHandler):
    access = "mp.self"

    @endpoint(
        "Report back from leave (销假), optionally with the current location",
        body=ReturnBody,
        response=LeaveOut,
        errors=(401, 403, 404, 409, 422),
        tags=("mini-program",),
        idempotency="optional",
        codes=(
            ("not_found", 404, "未找到该请假申请（或不属于本人）"),
            ("invalid_transition", 409, "该请假当前不能销假（未批准或已销假）"),
        ),
        summary_zh="销假（可附当前位置）",
    )
    async def post(self, leave_id: str) -> None:
        body = self.parse(ReturnBody) if self.raw_body().strip() else ReturnBody()

        async def produce() -> tuple[LeaveOut, int]:
            location = body.location.stored() if body.location else None
            view = await self.ctx.leave.return_from_subject(self.audit_context, leave_id, location)
            return _leave_out(view), 200

        await self.respond_once(produce)


class AssistanceRequestsHandler(MpHandler):
    access = "mp.self"

    @endpoint(
        "Ask for help (housing, food, a job, training, legal aid, benefits)",
        body=AssistanceBody,
        response=AssistanceOut,
        status=201,
        errors=(401, 403, 422),
        tags=("mini-program",),
        idempotency="optional",
        codes=(
            ("not_a_subject", 403, "只有已绑定的本人可以申请帮扶"),
            ("content_refused", 422, "填写的内容未通过内容安全检查"),
        ),
        summary_zh="提交帮扶申请（住房、生活、就业、培训、法律援助、救助）",
    )
    async def post(self) -> None:
        body = self.parse(AssistanceBody)

        async def produce() -> tuple[AssistanceOut, int]:
            ctx = self.audit_context
            await self.ctx.content_check.check(ctx, {"note": body.note})
            view = await self.ctx.assistance.request_from_subject(ctx, list(body.needs), body.note)
            return AssistanceOut(id=view.id, status=view.status, needs=view.needs), 201

        await self.respond_once(produce)


routes = [
    (r"/mp/v1/leave-requests", LeaveRequestsHandler),
    (rf"/mp/v1/leave-requests/{path_id('leave_id')}/return", LeaveReturnHandler),
    (r"/mp/v1/assistance-requests", AssistanceRequestsHandler),
]

"""The person's own records in the mini-program: leave requests, check-ins, praise and sanctions,
each with Chinese texts beside the machine codes."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from typing import Any

from pydantic import Field

from handlers.base import Out, endpoint, path_id
from handlers.query import page_size, query, query_args
from miniprogram_api.base import MpHandler
from models.checkins import OwnCheckin
from models.clock import LOCAL_TZ
from models.leave import LeaveView
from models.sanctions import SanctionView

PAGE = page_size(20, 100)

LEVEL_TEXT: Mapping[str, str] = {
    "station": "司法所",
    "county": "县级社区矫正机构",
    "city": "市级社区矫正机构",
}
LEAVE_STATUS_TEXT: Mapping[str, str] = {
    "pending": "审批中",
    "approved": "已批准",
    "rejected": "未批准",
}
CHECKIN_STATUS_TEXT: Mapping[str, str] = {
    "on_time": "按时签到",
    "late": "逾期签到",
    "outside_area": "不在规定活动区域内",
    "rejected": "签到未被认可",
}
REVIEW_TEXT: Mapping[str, str] = {
    "pending": "等待工作人员审核",
    "accepted": "审核通过",
    "rejected": "审核未通过",
}
SANCTION_KIND_TEXT: Mapping[str, str] = {
    "praise": "表扬",
    "admonish": "训诫",
    "warn": "警告",
    "public_security_penalty": "提请治安管理处罚",
    "revoke_request": "提请撤销缓刑、假释",
    "imprison_request": "提请收监执行",
}
# A county's decision on these is to submit a request elsewhere: the person is told where.
SUBMITTED_TO_TEXT: Mapping[str, str] = {
    "police": "已提请公安机关依法处理",
    "court": "已提请人民法院依法裁定",
    "deciding_authority": "已提请决定机关依法决定",
}


def _local(moment: dt.datetime | str | None) -> dt.datetime | None:
    """A stored moment in Asia/Shanghai, with its offset."""
    if moment is None:
        return None
    if isinstance(moment, str):
        moment = dt.datetime.fromisoformat(moment)
    return moment.astimezone(LOCAL_TZ)


class OwnLeaveStepOut(Out):
    level: str = Field(description="station | county | city")
    level_text: str
    approve: bool
    decision_text: str = Field(description="同意 or 不同意")
    reason: str | None = Field(description="The reason the level gave, as written for the person")
    decided_at: dt.datetime | None


class OwnLeaveOut(Out):
    id: str
    status: str = Field(description="pending | approved | rejected")
    status_text: str
    start_date: str
    end_date: str
    days: int
    destination: str | None
    reason: str | None
    steps: list[OwnLeaveStepOut]
    next_level: str | None
    next_level_text: str | None
    returned_on: str | None
    return_late: bool | None
    return_text: str | None
    created_at: dt.datetime | None


class OwnLeaveListOut(Out):
    items: list[OwnLeaveOut]


class OwnCheckinOut(Out):
    id: str
    arrived_at: dt.datetime
    status: str = Field(description="on_time | late | outside_area | rejected")
    status_text: str
    obligation_id: str | None
    review: str | None = Field(description="pending | accepted | rejected; null: none needed")
    review_text: str | None
    review_reason: str | None
    reviewed_at: dt.datetime | None


class OwnCheckinListOut(Out):
    items: list[OwnCheckinOut]


class OwnSanctionOut(Out):
    id: str
    kind: str = Field(description="praise | admonish | warn | public_security_penalty | …")
    kind_text: str
    basis: str | None = Field(description="What it was decided for")
    decided_at: dt.datetime | None
    submitted_to_text: str | None


class OwnSanctionListOut(Out):
    items: list[OwnSanctionOut]


def _step_out(step: Mapping[str, Any]) -> OwnLeaveStepOut:
    level = str(step["level"])
    return OwnLeaveStepOut(
        level=level,
        level_text=LEVEL_TEXT.get(level, "社区矫正机构"),
        approve=bool(step["approve"]),
        decision_text="同意" if step["approve"] else "不同意",
        reason=step.get("comment") or None,
        decided_at=_local(step.get("at")),
    )


def _return_text(view: LeaveView) -> str | None:
    if view.status != "approved":
        return None
    if view.returned_on is None:
        return "尚未销假，请在假期结束时及时销假"
    return "已销假（逾期）" if view.return_late else "已销假"


def leave_out(view: LeaveView) -> OwnLeaveOut:
    return OwnLeaveOut(
        id=view.id,
        status=view.status,
        status_text=LEAVE_STATUS_TEXT.get(view.status, "处理中"),
        start_date=view.start_date,
        end_date=view.end_date,
        days=view.days,
        destination=view.destination,
        reason=view.reason,
        steps=[_step_out(step) for step in view.steps],
        next_level=view.next_level,
        next_level_text=(
            f"等待{LEVEL_TEXT.get(view.next_level, '社区矫正机构')}审批"
            if view.next_level
            else None
        ),
        returned_on=view.returned_on,
        return_late=view.return_late,
        return_text=_return_text(view),
        created_at=_local(view.created_at),
    )


def checkin_out(item: OwnCheckin) -> OwnCheckinOut:
    return OwnCheckinOut(
        id=item.id,
        arrived_at=item.arrived_at.astimezone(LOCAL_TZ),
        status=item.status,
        status_text=CHECKIN_STATUS_TEXT.get(item.status, "已签到"),
        obligation_id=item.obligation_id,
        review=item.review,
        review_text=REVIEW_TEXT.get(item.review) if item.review else None,
        review_reason=item.review_comment,
        reviewed_at=_local(item.reviewed_at),
    )


def sanction_out(view: SanctionView) -> OwnSanctionOut:
    return OwnSanctionOut(
        id=view.id,
        kind=view.kind,
        kind_text=SANCTION_KIND_TEXT.get(view.kind, "考核奖惩"),
        basis=view.reason,
        decided_at=_local(view.decided_at),
        submitted_to_text=SUBMITTED_TO_TEXT.get(view.submitted_to) if view.submitted_to else None,
    )


async def list_own_leave(handler: MpHandler) -> None:
    """`GET /mp/v1/leave-requests`, served by the handler that takes new requests."""
    views = await handler.ctx.leave.own_requests(
        handler.audit_context, query_args(handler)["limit"]
    )
    handler.respond(OwnLeaveListOut(items=[leave_out(v) for v in views]))


async def list_own_checkins(handler: MpHandler) -> None:
    """`GET /mp/v1/checkins`, served by the handler that records check-ins."""
    items = await handler.ctx.checkins.own_checkins(
        handler.audit_context, query_args(handler)["limit"]
    )
    handler.respond(OwnCheckinListOut(items=[checkin_out(i) for i in items]))


class OwnLeaveHandler(MpHandler):
    access = "mp.self"

    @endpoint(
        "One of the caller's own leave requests (a guardian: the person's); anyone else's 404",
        response=OwnLeaveOut,
        errors=(401, 403, 404),
        tags=("mini-program",),
        codes=(("not_found", 404, "未找到该请假申请（或不属于本人）"),),
        summary_zh="本人的一条请假申请及各级审批意见",
    )
    async def get(self, leave_id: str) -> None:
        view = await self.ctx.leave.own_request(self.audit_context, leave_id)
        self.respond(leave_out(view))


class OwnSanctionsHandler(MpHandler):
    access = "mp.self"

    @endpoint(
        "Own praise and sanctions as decided, newest first, with their basis (a proposal still "
        "being decided is not shown)",
        response=OwnSanctionListOut,
        errors=(401, 403, 422),
        tags=("mini-program",),
        summary_zh="本人已决定的奖励和处罚及其依据",
    )
    @query(PAGE)
    async def get(self) -> None:
        views = await self.ctx.sanctions.own_decided(self.audit_context, query_args(self)["limit"])
        self.respond(OwnSanctionListOut(items=[sanction_out(v) for v in views]))


routes = [
    (rf"/mp/v1/leave-requests/{path_id('leave_id')}", OwnLeaveHandler),
    (r"/mp/v1/sanctions", OwnSanctionsHandler),
]

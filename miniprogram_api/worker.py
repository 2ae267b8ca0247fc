"""A worker's day from WeChat: today's caseload, alerts, visits and talks, results (drug tests,
mental-health follow-ups), messages, and the decisions within the worker's authority.

Each endpoint is the staff API's own handler (the same policy, scope and service call) served
to a staff member's WeChat session; writes are idempotent under `Idempotency-Key`."""

from __future__ import annotations

import dataclasses
from collections.abc import Awaitable, Callable
from typing import Any, Literal

from pydantic import AwareDatetime, ConfigDict, Field

from handlers.alerts import AlertAckHandler, AlertsHandler
from handlers.base import GeoLocation, Strict, endpoint, path_id
from handlers.caseload import CaseloadHandler, VisitOut
from handlers.checkins import ReviewHandler
from handlers.leave import LeaveDecisionHandler, LeaveRequestsHandler
from handlers.obligations import ResultHandler
from handlers.query import QUERY_ATTRIBUTE, declared_query
from miniprogram_api.base import MpHandler
from miniprogram_api.me import MessageOut, MessagesOut


def same_contract(
    staff_method: Callable[..., Awaitable[None]],
    summary_zh: str,
    idempotency: Literal["optional"] | None = "optional",
) -> Any:
    """Give a mini-program wrapper the OpenAPI description of the staff method it serves, and
    its query parameters (the staff method reads them through the wrapper's declaration). A
    write answers through `respond_captured`: an `Idempotency-Key` is honoured; a read
    (`idempotency=None`) answers as the staff method does."""

    def mark(method: Callable[..., Awaitable[None]]) -> Callable[..., Awaitable[None]]:
        method.__endpoint__ = dataclasses.replace(  # type: ignore[attr-defined]
            staff_method.__endpoint__,  # type: ignore[attr-defined]
            idempotency=idempotency,
            summary_zh=summary_zh,
        )
        spec = declared_query(staff_method)
        if spec is not None:
            setattr(method, QUERY_ATTRIBUTE, spec)
        return method

    return mark


class WorkerCaseloadHandler(MpHandler, CaseloadHandler):
    """Today's due and overdue items (`?due=today|overdue`)."""

    @same_contract(CaseloadHandler.get, "工作人员今天到期和逾期的工作事项", idempotency=None)
    async def get(self) -> None:
        await super().get()


class WorkerAlertsHandler(MpHandler, AlertsHandler):
    """Alerts in scope (`?status=open&mine=1`)."""

    @same_contract(
        AlertsHandler.get, "工作人员收到的预警（可只看未处理、发给本人的）", idempotency=None
    )
    async def get(self) -> None:
        await super().get()


class WorkerAlertAckHandler(MpHandler, AlertAckHandler):
    @same_contract(AlertAckHandler.post, "确认（认领）一条预警")
    async def post(self, alert_id: str) -> None:
        await self.respond_captured(super().post, alert_id)


class WorkerResultHandler(MpHandler, ResultHandler):
    """A drug test's outcome, a follow-up done."""

    @same_contract(ResultHandler.post, "记录检测结果或随访完成情况")
    async def post(self, occurrence_id: str) -> None:
        await self.respond_captured(super().post, occurrence_id)


class WorkerLeaveRequestsHandler(MpHandler, LeaveRequestsHandler):
    """Leave requests waiting in scope."""

    @same_contract(
        LeaveRequestsHandler.get, "辖区内的请假申请（可按状态筛选，如待审批）", idempotency=None
    )
    async def get(self) -> None:
        await super().get()


class WorkerLeaveDecisionHandler(MpHandler, LeaveDecisionHandler):
    @same_contract(LeaveDecisionHandler.post, "审批请假申请")
    async def post(self, leave_id: str) -> None:
        await self.respond_captured(super().post, leave_id)


class WorkerReviewHandler(MpHandler, ReviewHandler):
    @same_contract(ReviewHandler.post, "审核一次签到")
    async def post(self, checkin_id: str) -> None:
        await self.respond_captured(super().post, checkin_id)


class WorkerVisitBody(Strict):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "subject_id": "6720f1c2a1b2c3d4e5f60711",
                    "kind": "visit",
                    "note": "到家中走访，本人在家，近况稳定。",
                    "location": {
                        "latitude": 28.0201,
                        "longitude": 120.6550,
                        "type": "gcj02",
                        "accuracy": 15,
                        "errMsg": "getLocation:ok",
                    },
                    "at": "2026-11-02T15:30:00+08:00",
                }
            ]
        },
    )

    subject_id: str = Field(min_length=1, max_length=64)
    kind: Literal["visit", "talk", "followup"]
    note: str = Field(min_length=1, max_length=5000)
    # The one location shape (a check-in's too): a `wx.getLocation` result sent as it is.
    location: GeoLocation | None = None
    at: AwareDatetime | None = None


class WorkerVisitsHandler(MpHandler):
    access = "visits.record"

    @endpoint(
        "Record a visit or talk (走访, 谈话) from WeChat; meets the open contact or follow-up",
        body=WorkerVisitBody,
        response=VisitOut,
        status=201,
        errors=(401, 403, 404, 422),
        tags=("mini-program",),
        idempotency="optional",
        summary_zh="工作人员记录走访或谈话",
    )
    async def post(self) -> None:
        body = self.parse(WorkerVisitBody)

        async def produce() -> tuple[VisitOut, int]:
            visit = await self.ctx.caseload.record_visit(
                self.audit_context,
                body.subject_id,
                kind=body.kind,
                note=body.note,
                location=body.location.stored() if body.location else None,
                at=body.at,
            )
            return VisitOut(**visit), 201

        await self.respond_once(produce)


class WorkerMessagesHandler(MpHandler):
    access = "caseload.read"

    @endpoint(
        "Notifications for the worker",
        response=MessagesOut,
        tags=("mini-program",),
        summary_zh="工作人员的消息通知",
    )
    async def get(self) -> None:
        docs = await self.ctx.notifications.for_recipient(f"staff:{self.identity.user_id}")
        self.respond(MessagesOut(items=[MessageOut.of(d) for d in docs]))


routes = [
    (r"/mp/v1/worker/caseload", WorkerCaseloadHandler),
    (r"/mp/v1/worker/alerts", WorkerAlertsHandler),
    (rf"/mp/v1/worker/alerts/{path_id('alert_id')}/ack", WorkerAlertAckHandler),
    (r"/mp/v1/worker/visits", WorkerVisitsHandler),
    (rf"/mp/v1/worker/obligations/{path_id('occurrence_id')}/result", WorkerResultHandler),
    (r"/mp/v1/worker/leave-requests", WorkerLeaveRequestsHandler),
    (rf"/mp/v1/worker/leave-requests/{path_id('leave_id')}/decision", WorkerLeaveDecisionHandler),
    (rf"/mp/v1/worker/checkins/{path_id('checkin_id')}/review", WorkerReviewHandler),
    (r"/mp/v1/worker/messages", WorkerMessagesHandler),
]

"""Electronic-location endpoints (电子定位): ask for an order on a legal ground, renew it, and the
county agency head's decision; the orders carry their corrections-only purpose."""

from __future__ import annotations

import datetime as dt
from typing import Any, Literal

from pydantic import Field

from handlers.base import BaseHandler, Out, Strict, endpoint, path_id
from handlers.checkins import AreaBody
from handlers.query import one_of, page_size, query, query_args, required
from models.elocation import Ground, OrderView


class OrderBody(Strict):
    ground: Literal[
        "breach_of_prohibition",
        "left_without_approval",
        "refused_report_after_warning",
        "public_security_penalty",
        "revocation_pending",
    ]
    # Which recorded 禁止令 was breached (its position), for `breach_of_prohibition` only.
    prohibition_index: int | None = Field(default=None, ge=0, le=100)
    left_on: dt.date | None = Field(
        default=None,
        description="`left_without_approval` only: the day the person left; refused (422 "
        "ground_disproved) when granted leave covers it",
    )
    start_date: dt.date
    end_date: dt.date
    reason: str = Field(min_length=1, max_length=2000)
    # Where check-ins must come from while the order runs (else the station's area).
    area: AreaBody | None = None


class RenewalBody(Strict):
    end_date: dt.date
    reason: str = Field(min_length=1, max_length=2000)


class DecisionBody(Strict):
    approve: bool
    comment: str = Field(default="", max_length=1000)


class OrderOut(Out):
    id: str
    subject_id: str
    ground: str
    prohibition_index: int | None
    prohibition: str | None
    reason: str | None
    start_date: str
    end_date: str
    renews: str | None
    status: str
    in_force: bool
    purpose: str
    levels: list[str]
    rule: str
    steps: list[dict[str, Any]]
    next_level: str | None
    rules_version: str
    limit_rule: str
    ended_on: str | None
    renewed_by: str | None = None

    @classmethod
    def of(cls, view: OrderView) -> OrderOut:
        return cls(**view.__dict__)


class OrderList(Out):
    items: list[OrderOut]


class SubjectOrdersHandler(BaseHandler):
    access = {"GET": "elocation.read", "POST": "elocation.request"}

    @endpoint(
        "A person's orders, newest first: `status` pending, approved (`in_force` while its "
        "days run), rejected or ended, with the order each renews and `renewed_by`, the "
        "renewal that follows it",
        response=OrderList,
        errors=(404,),
        tags=("decisions",),
    )
    async def get(self, subject_id: str) -> None:
        views = await self.ctx.elocation.for_subject(self.audit_context, subject_id)
        self.respond(OrderList(items=[OrderOut.of(v) for v in views]))

    @endpoint(
        "Ask for an electronic-location order (one of the five grounds of Art. 29, checked against "
        "the file: 422 ground_not_on_file or ground_disproved; at most the rule's months)",
        body=OrderBody,
        response=OrderOut,
        status=201,
        errors=(404, 409, 422),
        tags=("decisions",),
    )
    async def post(self, subject_id: str) -> None:
        body = self.parse(OrderBody)
        view = await self.ctx.elocation.order(
            self.audit_context,
            subject_id,
            ground=Ground(body.ground),
            start=body.start_date,
            end=body.end_date,
            reason=body.reason,
            prohibition_index=body.prohibition_index,
            area=body.area.to_area().to_doc() if body.area else None,
            left_on=body.left_on,
        )
        self.respond(OrderOut.of(view), status=201)


class PendingOrderOut(Out):
    id: str
    subject_id: str
    subject_name: str | None
    ground: str
    renews: str | None
    start_date: str
    end_date: str
    deadline: str | None
    basis: str
    level: str
    requested_at: dt.datetime


class PendingOrderList(Out):
    items: list[PendingOrderOut]


class OrdersHandler(BaseHandler):
    access = "elocation.read"

    @endpoint(
        "Orders and renewals awaiting the caller's decision in their scope (`?status=pending`), "
        "oldest first, with the person's name as the caller may see it and Art. 29 as basis",
        response=PendingOrderList,
        errors=(401, 403, 422),
        tags=("decisions",),
    )
    @query(
        required(one_of("status", ["pending"], "Only orders awaiting the caller's decision")),
        page_size(100, 500),
    )
    async def get(self) -> None:
        limit = query_args(self)["limit"]
        items = await self.ctx.elocation.awaiting(self.audit_context, limit)
        self.respond(
            PendingOrderList(items=[PendingOrderOut.model_validate(i.__dict__) for i in items])
        )


class OrderHandler(BaseHandler):
    access = "elocation.read"

    @endpoint("One order", response=OrderOut, errors=(404,), tags=("decisions",))
    async def get(self, order_id: str) -> None:
        self.respond(OrderOut.of(await self.ctx.elocation.get(self.audit_context, order_id)))


class OrderRenewalHandler(BaseHandler):
    access = "elocation.request"

    @endpoint(
        "Renew an approved order from the day after it ends; approved again like an order",
        body=RenewalBody,
        response=OrderOut,
        status=201,
        errors=(404, 409, 422),
        tags=("decisions",),
    )
    async def post(self, order_id: str) -> None:
        body = self.parse(RenewalBody)
        view = await self.ctx.elocation.renew(
            self.audit_context, order_id, body.end_date, body.reason
        )
        self.respond(OrderOut.of(view), status=201)


class OrderDecisionHandler(BaseHandler):
    access = "elocation.decide"

    @endpoint(
        "The county agency head approves or refuses; 403 for anyone else, 409 once decided",
        body=DecisionBody,
        response=OrderOut,
        errors=(403, 404, 409),
        tags=("decisions",),
    )
    async def post(self, order_id: str) -> None:
        body = self.parse(DecisionBody)
        view = await self.ctx.elocation.decide(
            self.audit_context, order_id, body.approve, body.comment
        )
        self.respond(OrderOut.of(view))


routes = [
    (r"/api/v1/elocation-orders", OrdersHandler),
    (rf"/api/v1/subjects/{path_id('subject_id')}/elocation-orders", SubjectOrdersHandler),
    (rf"/api/v1/elocation-orders/{path_id('order_id')}", OrderHandler),
    (rf"/api/v1/elocation-orders/{path_id('order_id')}/renewals", OrderRenewalHandler),
    (rf"/api/v1/elocation-orders/{path_id('order_id')}/decision", OrderDecisionHandler),
]

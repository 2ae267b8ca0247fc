"""Transfer endpoints (执行地变更: request, acceptance, handover, arrival) and termination of a
program (解除/终止, with its certificate on completion)."""

from __future__ import annotations

import datetime as dt
from typing import Any, Literal

from pydantic import Field

from handlers.base import BaseHandler, Out, Strict, endpoint, path_id
from handlers.programs import ProgramOut
from handlers.query import one_of, page_size, query, query_args, required
from models.transfers import TransferView

ID_PATTERN = r"^[0-9a-fA-F]{24}$"


class TransferBody(Strict):
    to_org_id: str = Field(pattern=ID_PATTERN)
    reason: str = Field(min_length=1, max_length=2000)


class TransferDecisionBody(Strict):
    accept: bool
    comment: str = Field(default="", max_length=1000)


class DateBody(Strict):
    date: dt.date


class RehabDecisionBody(Strict):
    """社区康复 decided when 社区戒毒 ends; its last day, or the longest term the rules allow."""

    end_date: dt.date | None = None


class TerminateBody(Strict):
    kind: Literal["completed", "revoked", "died", "other"]
    date: dt.date
    certificate_number: str | None = Field(default=None, min_length=1, max_length=50)
    community_rehab: RehabDecisionBody | None = None


class TransferOut(Out):
    id: str
    subject_id: str
    status: str
    from_org_id: str
    to_org_id: str
    reason: str | None
    decided_on: str | None
    handover_due: str | None
    handed_over_on: str | None
    handover_late: bool | None
    report_due: str | None
    reported_on: str | None
    report_late: bool | None
    rules_version: str
    history: list[dict[str, Any]]

    @classmethod
    def of(cls, view: TransferView) -> TransferOut:
        return cls(**view.__dict__)


class TransferList(Out):
    items: list[TransferOut]


class DestinationOut(Out):
    id: str
    name: str
    county: str
    city: str


class DestinationList(Out):
    items: list[DestinationOut]


class SubjectTransfersHandler(BaseHandler):
    access = {"POST": "transfers.manage", "GET": "transfers.read"}

    @endpoint(
        "A person's transfers, newest first (while the caller reaches the case file)",
        response=TransferList,
        errors=(404,),
        tags=("decisions",),
    )
    async def get(self, subject_id: str) -> None:
        views = await self.ctx.transfers.for_subject(self.audit_context, subject_id)
        self.respond(TransferList(items=[TransferOut.of(v) for v in views]))

    @endpoint(
        "Ask to move the person's file to another station (the sending side)",
        body=TransferBody,
        response=TransferOut,
        status=201,
        errors=(404, 409, 422),
        tags=("decisions",),
    )
    async def post(self, subject_id: str) -> None:
        body = self.parse(TransferBody)
        view = await self.ctx.transfers.request(
            self.audit_context, subject_id, body.to_org_id, body.reason
        )
        self.respond(TransferOut.of(view), status=201)


class DestinationsHandler(BaseHandler):
    access = "transfers.manage"

    @endpoint(
        "The stations a case file may move to, by name with their county and city",
        response=DestinationList,
        tags=("decisions",),
    )
    async def get(self) -> None:
        items = await self.ctx.transfers.destinations()
        self.respond(DestinationList(items=[DestinationOut(**i) for i in items]))


class TransferHandler(BaseHandler):
    access = "transfers.read"

    @endpoint(
        "One transfer (either side)", response=TransferOut, errors=(404,), tags=("decisions",)
    )
    async def get(self, transfer_id: str) -> None:
        self.respond(TransferOut.of(await self.ctx.transfers.get(self.audit_context, transfer_id)))


class TransferDecisionHandler(BaseHandler):
    access = "transfers.manage"

    @endpoint(
        "The receiving side accepts (deadlines start) or refuses; 403 for the sending side",
        body=TransferDecisionBody,
        response=TransferOut,
        errors=(403, 404, 409),
        tags=("decisions",),
    )
    async def post(self, transfer_id: str) -> None:
        body = self.parse(TransferDecisionBody)
        view = await self.ctx.transfers.decide(
            self.audit_context, transfer_id, body.accept, body.comment
        )
        self.respond(TransferOut.of(view))


class TransferHandoverHandler(BaseHandler):
    access = "transfers.manage"

    @endpoint(
        "The sending side hands the file over: it moves to the receiving station",
        body=DateBody,
        response=TransferOut,
        errors=(403, 404, 409, 422),
        tags=("decisions",),
    )
    async def post(self, transfer_id: str) -> None:
        body = self.parse(DateBody)
        view = await self.ctx.transfers.hand_over(self.audit_context, transfer_id, body.date)
        self.respond(TransferOut.of(view))


class TransferArrivalHandler(BaseHandler):
    access = "transfers.manage"

    @endpoint(
        "The receiving side records the person's report at the new place",
        body=DateBody,
        response=TransferOut,
        errors=(403, 404, 409, 422),
        tags=("decisions",),
    )
    async def post(self, transfer_id: str) -> None:
        body = self.parse(DateBody)
        view = await self.ctx.transfers.record_arrival(self.audit_context, transfer_id, body.date)
        self.respond(TransferOut.of(view))


class TerminateHandler(BaseHandler):
    access = "programs.manage"

    @endpoint(
        "End a program (解除/终止); a completed corrections term gets its certificate",
        body=TerminateBody,
        response=ProgramOut,
        errors=(404, 409, 422),
        tags=("programs",),
    )
    async def post(self, program_id: str) -> None:
        body = self.parse(TerminateBody)
        view = await self.ctx.programs.terminate(
            self.audit_context,
            program_id,
            body.kind,
            body.date,
            body.certificate_number,
            community_rehab=body.community_rehab is not None,
            rehab_end=body.community_rehab.end_date if body.community_rehab else None,
        )
        self.respond(ProgramOut.of(view))


class AwaitingTransferOut(Out):
    id: str
    subject_id: str
    subject_name: str | None
    from_org_id: str
    from_org_name: str
    to_org_id: str
    to_org_name: str
    requested_at: dt.datetime
    deadline: str | None
    basis: str


class AwaitingTransferList(Out):
    items: list[AwaitingTransferOut]


class TransfersHandler(BaseHandler):
    access = "transfers.read"

    @endpoint(
        "Transfers the caller's side is to accept or refuse (`?status=requested`: the receiving "
        "station or its county), oldest first, with the person's name as the caller may see it",
        response=AwaitingTransferList,
        errors=(401, 403, 422),
        tags=("decisions",),
    )
    @query(
        required(one_of("status", ["requested"], "Only transfers awaiting the caller's answer")),
        page_size(100, 500),
    )
    async def get(self) -> None:
        items = await self.ctx.transfers.awaiting(self.audit_context, query_args(self)["limit"])
        self.respond(AwaitingTransferList(items=[AwaitingTransferOut(**i) for i in items]))


routes = [
    (r"/api/v1/transfers", TransfersHandler),
    (r"/api/v1/transfer-destinations", DestinationsHandler),
    (rf"/api/v1/subjects/{path_id('subject_id')}/transfers", SubjectTransfersHandler),
    (rf"/api/v1/transfers/{path_id('transfer_id')}", TransferHandler),
    (rf"/api/v1/transfers/{path_id('transfer_id')}/decision", TransferDecisionHandler),
    (rf"/api/v1/transfers/{path_id('transfer_id')}/handover", TransferHandoverHandler),
    (rf"/api/v1/transfers/{path_id('transfer_id')}/arrival", TransferArrivalHandler),
    (rf"/api/v1/programs/{path_id('program_id')}/terminate", TerminateHandler),
]

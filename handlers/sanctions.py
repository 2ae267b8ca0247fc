"""Praise and sanction endpoints (考核奖惩): file one with its chain, take a step on it, record a
脱管 episode, and read what the rules suggest (never applied by itself)."""

from __future__ import annotations

import datetime as dt
from typing import Any, Literal

from pydantic import Field

from handlers.base import BaseHandler, Out, Strict, endpoint, path_id
from handlers.query import one_of, page_size, query, query_args
from models.sanctions import DetachmentView, SanctionKind, SanctionView, Suggestion

ID_PATTERN = r"^[0-9a-fA-F]{24}$"


class SanctionBody(Strict):
    kind: Literal[
        "praise",
        "admonish",
        "warn",
        "public_security_penalty",
        "revoke_request",
        "imprison_request",
    ]
    reason: str = Field(min_length=1, max_length=2000)
    # The 脱管 episode this answers, when it answers one (its suggestion is then retired).
    detachment_id: str | None = Field(default=None, pattern=ID_PATTERN)


class DecisionBody(Strict):
    approve: bool
    comment: str = Field(default="", max_length=1000)


class DetachmentBody(Strict):
    start_date: dt.date
    end_date: dt.date | None = None


class SanctionOut(Out):
    id: str
    subject_id: str
    kind: str
    reason: str | None
    detachment_id: str | None
    status: str
    levels: list[str]
    rule: str
    steps: list[dict[str, Any]]
    next_level: str | None
    rules_version: str
    submitted_to: str | None
    decided_at: str | None
    # Lists only: the person's name as the caller may see it (masked, or none).
    subject_name: str | None = None

    @classmethod
    def of(cls, view: SanctionView) -> SanctionOut:
        return cls(**view.__dict__)


class DetachmentOut(Out):
    id: str
    subject_id: str
    start_date: str
    end_date: str | None
    days: int

    @classmethod
    def of(cls, view: DetachmentView) -> DetachmentOut:
        return cls(**view.__dict__)


class SuggestionOut(Out):
    kind: str
    rule: str
    value: Any
    rules_version: str
    basis: dict[str, Any]

    @classmethod
    def of(cls, suggestion: Suggestion) -> SuggestionOut:
        return cls(**suggestion.__dict__)


class SuggestionList(Out):
    items: list[SuggestionOut]


class SubjectSanctionsHandler(BaseHandler):
    access = "sanctions.propose"

    @endpoint(
        "File a praise or sanction; final only when the deciding level approves",
        body=SanctionBody,
        response=SanctionOut,
        status=201,
        errors=(404, 409, 422),
        tags=("decisions",),
    )
    async def post(self, subject_id: str) -> None:
        body = self.parse(SanctionBody)
        view = await self.ctx.sanctions.propose(
            self.audit_context,
            subject_id,
            SanctionKind(body.kind),
            body.reason,
            body.detachment_id,
        )
        self.respond(SanctionOut.of(view), status=201)


class SanctionDecisionHandler(BaseHandler):
    access = "sanctions.decide"

    @endpoint(
        "Take the caller's step; 403 when another level acts next, 409 once decided",
        body=DecisionBody,
        response=SanctionOut,
        errors=(403, 404, 409),
        tags=("decisions",),
    )
    async def post(self, sanction_id: str) -> None:
        body = self.parse(DecisionBody)
        view = await self.ctx.sanctions.decide(
            self.audit_context, sanction_id, body.approve, body.comment
        )
        self.respond(SanctionOut.of(view))


class SuggestionsHandler(BaseHandler):
    access = "sanctions.read"

    @endpoint(
        "What the rules suggest now, each with its rule, value and version",
        response=SuggestionList,
        errors=(404,),
        tags=("decisions",),
    )
    async def get(self, subject_id: str) -> None:
        items = await self.ctx.sanctions.suggestions(self.audit_context, subject_id)
        self.respond(SuggestionList(items=[SuggestionOut.of(s) for s in items]))


class DetachmentsHandler(BaseHandler):
    access = "detachments.record"

    @endpoint(
        "Record a 脱管 episode (open while `end_date` is absent)",
        body=DetachmentBody,
        response=DetachmentOut,
        status=201,
        errors=(404, 409, 422),
        tags=("decisions",),
    )
    async def post(self, subject_id: str) -> None:
        body = self.parse(DetachmentBody)
        view = await self.ctx.sanctions.record_detachment(
            self.audit_context, subject_id, body.start_date, body.end_date
        )
        self.respond(DetachmentOut.of(view), status=201)


class SanctionList(Out):
    items: list[SanctionOut]


class SanctionsHandler(BaseHandler):
    access = "sanctions.read"

    @endpoint(
        "Praise and sanctions in scope (`?status=pending`), with their steps and the next level",
        response=SanctionList,
        errors=(422,),
        tags=("decisions",),
    )
    @query(
        one_of("status", ("pending", "approved", "rejected"), "Only decisions in this state"),
        page_size(default=100, maximum=200),
    )
    async def get(self) -> None:
        args = query_args(self)
        views = await self.ctx.sanctions.list(self.audit_context, args["status"], args["limit"])
        self.respond(SanctionList(items=[SanctionOut.of(v) for v in views]))


routes = [
    (r"/api/v1/sanctions", SanctionsHandler),
    (rf"/api/v1/subjects/{path_id('subject_id')}/sanctions", SubjectSanctionsHandler),
    (rf"/api/v1/sanctions/{path_id('sanction_id')}/decision", SanctionDecisionHandler),
    (rf"/api/v1/subjects/{path_id('subject_id')}/sanction-suggestions", SuggestionsHandler),
    (rf"/api/v1/subjects/{path_id('subject_id')}/detachments", DetachmentsHandler),
]

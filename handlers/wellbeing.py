"""A person's wellbeing surveys (answered with check-ins), for the workers who may read them."""

from __future__ import annotations

import datetime as dt
from typing import Any

from pydantic import Field

from handlers.base import BaseHandler, Out, endpoint, path_id
from models.wellbeing import WellbeingView


class WellbeingOut(Out):
    checkin_id: str = Field(description="The check-in the survey was sent with")
    created_at: dt.datetime
    survey_version: str
    rules_version: str
    answers: dict[str, Any] | None = Field(
        description="Question id -> answer; null for a caller who does not see health data"
    )
    scores: dict[str, int] | None = Field(description="PHQ-2 / GAD-2 scores (0-6), when answered")
    reached: list[str] | None = Field(description="The screens at or above their cut-off")
    summary_zh: list[str] | None = Field(description="The answers as a worker reads them")
    referral_id: str | None = Field(description="The assistance request a need opened")
    alert_id: str | None = Field(description="The alert a screen raised")

    @classmethod
    def of(cls, view: WellbeingView) -> WellbeingOut:
        return cls(**view.__dict__)


class WellbeingList(Out):
    items: list[WellbeingOut]


class SubjectWellbeingHandler(BaseHandler):
    access = "wellbeing.read"

    @endpoint(
        "A person's wellbeing surveys, newest first; the answers only for a caller who sees "
        "the health data on the file (the assigned worker, a health worker)",
        response=WellbeingList,
        errors=(404,),
        tags=("caseload",),
    )
    async def get(self, subject_id: str) -> None:
        views = await self.ctx.wellbeing.for_subject(self.audit_context, subject_id)
        self.respond(WellbeingList(items=[WellbeingOut.of(v) for v in views]))


routes = [(rf"/api/v1/subjects/{path_id('subject_id')}/wellbeing", SubjectWellbeingHandler)]

"""转诊 endpoints: a patient's psychiatric referral tasks, and the health worker's outcome."""

from __future__ import annotations

import datetime as dt

from pydantic import Field

from handlers.base import BaseHandler, Out, Strict, endpoint, path_id
from models.psychiatric_referrals import ReferralView


class ReferralOut(Out):
    id: str
    subject_id: str
    program_id: str
    risk_level: int
    assessed_on: dt.date
    due: dt.date = Field(description="The deadline: the assessment day plus the rule's days")
    overdue: bool
    assigned_to: str | None = Field(description="The health worker (精防医生) who does it")
    for_role: str
    status: str = Field(description="open, referred or not_referred")
    institution: str | None
    referred_on: dt.date | None
    late: bool | None = Field(description="Referred after the deadline")
    reason: str | None = Field(description="Why the patient was not referred")
    recorded_by: str | None
    rule_keys: list[str]
    rules_version: str

    @classmethod
    def of(cls, view: ReferralView) -> ReferralOut:
        return cls(**view.__dict__)


class ReferralList(Out):
    items: list[ReferralOut]


class OutcomeBody(Strict):
    referred: bool
    institution: str | None = Field(
        default=None, min_length=1, max_length=200, description="Referred: the institution"
    )
    referred_on: dt.date | None = Field(default=None, description="Referred: the day")
    reason: str | None = Field(
        default=None, min_length=2, max_length=1000, description="Not referred: why"
    )


class SubjectReferralsHandler(BaseHandler):
    access = "programs.read"

    @endpoint(
        "A patient's 转诊 tasks, newest first (empty for a caller who does not see health data)",
        response=ReferralList,
        errors=(404,),
        tags=("programs",),
    )
    async def get(self, subject_id: str) -> None:
        views = await self.ctx.psychiatric_referrals.for_subject(self.audit_context, subject_id)
        self.respond(ReferralList(items=[ReferralOut.of(v) for v in views]))


class ReferralOutcomeHandler(BaseHandler):
    access = "psychiatric_referrals.record"

    @endpoint(
        "Record a 转诊's outcome: referred (institution, day) or not referred (reason, sealed)",
        body=OutcomeBody,
        response=ReferralOut,
        errors=(404, 409, 422),
        tags=("programs",),
    )
    async def post(self, referral_id: str) -> None:
        body = self.parse(OutcomeBody)
        view = await self.ctx.psychiatric_referrals.record_outcome(
            self.audit_context,
            referral_id,
            referred=body.referred,
            institution=body.institution,
            referred_on=body.referred_on,
            reason=body.reason,
        )
        self.respond(ReferralOut.of(view))


routes = [
    (rf"/api/v1/subjects/{path_id('subject_id')}/psychiatric-referrals", SubjectReferralsHandler),
    (rf"/api/v1/psychiatric-referrals/{path_id('referral_id')}/outcome", ReferralOutcomeHandler),
]

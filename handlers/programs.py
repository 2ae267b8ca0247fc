"""Program endpoints: open a program, read a person's programs, move them through their lifecycle,
and read or override the statutory rules of a jurisdiction."""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any, Literal

from pydantic import Field, RootModel

from handlers.base import BaseHandler, Out, Strict, endpoint, path_id
from handlers.query import one_of, page_size, query, query_args, required, text
from models.investigations import InvestigationStatus, InvestigationView
from models.programs import ProgramView
from models.rules import EffectiveRules


class CorrectionsBody(Strict):
    type: Literal["community_corrections"]
    start_date: dt.date
    end_date: dt.date
    sentence_type: Literal["control", "probation", "parole", "medical_parole"]
    supervision_level: Literal["strict", "normal", "lenient"] | None = None
    prohibitions: list[Annotated[str, Field(min_length=1, max_length=200)]] = Field(
        default_factory=list, max_length=20
    )
    plan: str | None = Field(default=None, max_length=5000)


class ResettlementBody(Strict):
    type: Literal["resettlement"]
    start_date: dt.date
    release_date: dt.date
    end_date: dt.date | None = None
    key_person: bool = False
    volunteer_checkins: bool = False


class DrugRehabBody(Strict):
    type: Literal["drug_rehab"]
    start_date: dt.date
    end_date: dt.date | None = None
    mode: Literal["community_detox", "community_rehab"]
    working_group: list[Annotated[str, Field(min_length=1, max_length=50)]] = Field(
        default_factory=list, max_length=20
    )


class Guardian(Strict):
    name: str = Field(min_length=1, max_length=50)
    phone: str = Field(min_length=5, max_length=30)
    relation: str = Field(min_length=1, max_length=20)


class MentalHealthBody(Strict):
    type: Literal["mental_health"]
    start_date: dt.date
    end_date: dt.date | None = None
    diagnosis: str = Field(min_length=1, max_length=200)
    risk_level: int = Field(ge=0, le=5)
    guardian: Guardian
    care_team: list[Annotated[str, Field(min_length=1, max_length=50)]] = Field(
        default_factory=list, max_length=20
    )


class ProgramBody(
    RootModel[
        Annotated[
            CorrectionsBody | ResettlementBody | DrugRehabBody | MentalHealthBody,
            Field(discriminator="type"),
        ]
    ]
):
    """One of the four kinds, told apart by `type`."""


class ProgramOut(Out):
    id: str
    subject_id: str
    type: str
    status: str
    start_date: str
    end_date: str | None
    rules_version: str
    details: dict[str, Any]
    obligation_rules: list[dict[str, Any]]
    history: list[dict[str, Any]]
    version: int

    @classmethod
    def of(cls, view: ProgramView) -> ProgramOut:
        return cls(**view.__dict__)


class ProgramList(Out):
    items: list[ProgramOut]


class TransitionBody(Strict):
    to: Literal["active", "suspended", "transferred", "ended"]
    reason: str = Field(min_length=2, max_length=500)
    effective_date: dt.date | None = None


class IntakeBody(Strict):
    date: dt.date


class LevelBody(Strict):
    level: Literal["strict", "normal", "lenient"]
    from_date: dt.date
    reason: str = Field(min_length=2, max_length=500)


class RiskBody(Strict):
    level: int = Field(ge=0, le=5)
    on: dt.date
    reason: str = Field(min_length=2, max_length=500)


class IncidentBody(Strict):
    on: dt.date


class RuleOut(Out):
    key: str
    value: Any
    unit: str | None
    source: str


class EffectiveRulesOut(Out):
    version: str
    rules: list[RuleOut]

    @classmethod
    def of(cls, effective: EffectiveRules) -> EffectiveRulesOut:
        return cls(
            version=effective.version,
            rules=[
                RuleOut(key=key, value=effective[key], unit=rule.unit, source=effective.source(key))
                for key, rule in sorted(effective.book.rules.items())
            ],
        )


class OverrideBody(Strict):
    rules: dict[str, Any] = Field(max_length=200)
    source: str = Field(min_length=2, max_length=500)


class OverrideOut(Out):
    code: str
    version: int
    rules: dict[str, Any]
    source: str | None


class ProposalBody(Strict):
    rules: dict[str, Any] = Field(min_length=1, max_length=20)
    source: str = Field(min_length=2, max_length=500)


class ProposalDecisionBody(Strict):
    confirm: bool


class ProposalOut(Out):
    id: str
    code: str
    rules: dict[str, Any]
    source: str
    status: Literal["proposed", "confirmed", "refused"]
    proposed_by: str | None
    proposed_at: dt.datetime
    decided_by: str | None
    decided_at: dt.datetime | None


class ProposalList(Out):
    items: list[ProposalOut]


class SubjectProgramsHandler(BaseHandler):
    access = {"POST": "programs.create", "GET": "programs.read"}

    @endpoint(
        "Open a program (`type` chooses the fields); its obligations follow from the rules",
        body=ProgramBody,
        response=ProgramOut,
        status=201,
        errors=(404, 409),
        tags=("programs",),
    )
    async def post(self, subject_id: str) -> None:
        body = self.parse(ProgramBody).root
        view = await self.ctx.programs.create(self.audit_context, subject_id, body.model_dump())
        self.respond(ProgramOut.of(view), status=201)

    @endpoint(
        "A person's programs, with their obligation rules",
        response=ProgramList,
        errors=(404,),
        tags=("programs",),
    )
    async def get(self, subject_id: str) -> None:
        views = await self.ctx.programs.list_for_subject(self.audit_context, subject_id)
        self.respond(ProgramList(items=[ProgramOut.of(v) for v in views]))


class ReleaseNoticeBody(Strict):
    release_date: dt.date
    received_on: dt.date
    prison: str = Field(min_length=2, max_length=100)


class ReleaseNoticesHandler(BaseHandler):
    access = "programs.create"

    @endpoint(
        "Record a prison's release notice: opens 安置帮教 pending intake from the release date "
        "and alerts the station; a notice received too close to release is flagged late",
        body=ReleaseNoticeBody,
        response=ProgramOut,
        status=201,
        errors=(404, 409, 422),
        tags=("programs",),
    )
    async def post(self, subject_id: str) -> None:
        body = self.parse(ReleaseNoticeBody)
        view = await self.ctx.programs.receive_release_notice(
            self.audit_context,
            subject_id,
            release_date=body.release_date,
            received_on=body.received_on,
            prison=body.prison,
        )
        self.respond(ProgramOut.of(view), status=201)


class ProgramHandler(BaseHandler):
    access = "programs.read"

    @endpoint("One program", response=ProgramOut, errors=(404,), tags=("programs",))
    async def get(self, program_id: str) -> None:
        self.respond(ProgramOut.of(await self.ctx.programs.get(self.audit_context, program_id)))


class TransitionHandler(BaseHandler):
    access = "programs.manage"

    @endpoint(
        "Move a program through its lifecycle; 409 with the current state when forbidden",
        body=TransitionBody,
        response=ProgramOut,
        errors=(404, 409),
        tags=("programs",),
    )
    async def post(self, program_id: str) -> None:
        body = self.parse(TransitionBody)
        view = await self.ctx.programs.transition(
            self.audit_context, program_id, body.to, body.reason, effective=body.effective_date
        )
        self.respond(ProgramOut.of(view))


class IntakeHandler(BaseHandler):
    access = "programs.manage"

    @endpoint(
        "Record the person's intake report; a report after the deadline is flagged late",
        body=IntakeBody,
        response=ProgramOut,
        errors=(404, 409),
        tags=("programs",),
    )
    async def post(self, program_id: str) -> None:
        body = self.parse(IntakeBody)
        view = await self.ctx.programs.record_intake(self.audit_context, program_id, body.date)
        self.respond(ProgramOut.of(view))


class LevelHandler(BaseHandler):
    access = "programs.manage"

    @endpoint(
        "Change the supervision level (严管/普管/宽管) from a date",
        body=LevelBody,
        response=ProgramOut,
        errors=(404, 409),
        tags=("programs",),
    )
    async def post(self, program_id: str) -> None:
        body = self.parse(LevelBody)
        view = await self.ctx.programs.change_level(
            self.audit_context, program_id, body.level, body.from_date, body.reason
        )
        self.respond(ProgramOut.of(view))


class RiskHandler(BaseHandler):
    access = "programs.manage"

    @endpoint(
        "Record a mental-health risk assessment (0-5)",
        body=RiskBody,
        response=ProgramOut,
        errors=(404, 409),
        tags=("programs",),
    )
    async def post(self, program_id: str) -> None:
        body = self.parse(RiskBody)
        view = await self.ctx.programs.change_risk(
            self.audit_context, program_id, body.level, body.on, body.reason
        )
        self.respond(ProgramOut.of(view))


class IncidentHandler(BaseHandler):
    access = "programs.manage"

    @endpoint(
        "Record an incident in a mental-health program",
        body=IncidentBody,
        response=ProgramOut,
        errors=(404, 409),
        tags=("programs",),
    )
    async def post(self, program_id: str) -> None:
        body = self.parse(IncidentBody)
        view = await self.ctx.programs.record_incident(self.audit_context, program_id, body.on)
        self.respond(ProgramOut.of(view))


class EffectiveRulesHandler(BaseHandler):
    access = "rules.read"

    @endpoint(
        "The rules in force for an organisation (`?org_id=`; default: the caller's)",
        response=EffectiveRulesOut,
        errors=(404,),
        tags=("rules",),
    )
    @query(text("org_id", "An organisation in the caller's scope (default: the caller's)"))
    async def get(self) -> None:
        org_id = query_args(self)["org_id"] or self.identity.org_id or ""
        org = await self.ctx.orgs.get_in_scope(self.identity, org_id)
        self.respond(EffectiveRulesOut.of(await self.ctx.rules.for_org(org.id)))


class RuleOverrideHandler(BaseHandler):
    access = "rules.manage"

    @endpoint(
        "Replace a jurisdiction's overrides (province code, or a city or county in scope)",
        body=OverrideBody,
        response=OverrideOut,
        errors=(404, 422),
        tags=("rules",),
    )
    async def put(self, code: str) -> None:
        body = self.parse(OverrideBody)
        result = await self.ctx.rules.override(self.audit_context, code, body.rules, body.source)
        self.respond(OverrideOut(**result))


class RuleProposalHandler(BaseHandler):
    access = "rules.propose"

    @endpoint(
        "Propose new values for irreversible rules (retention) of a city or county in scope; "
        "they take effect when the security administrator confirms",
        body=ProposalBody,
        response=ProposalOut,
        status=201,
        errors=(404, 422),
        tags=("rules",),
    )
    async def post(self, code: str) -> None:
        body = self.parse(ProposalBody)
        result = await self.ctx.rules.propose(self.audit_context, code, body.rules, body.source)
        self.respond(ProposalOut(**result), status=201)


class RuleProposalsHandler(BaseHandler):
    access = "rules.proposals"

    @endpoint(
        "Proposals to change irreversible rules in the caller's scope, newest first",
        response=ProposalList,
        tags=("rules",),
    )
    @query(one_of("status", ("proposed", "confirmed", "refused"), "Only proposals in this state"))
    async def get(self) -> None:
        items = await self.ctx.rules.proposals(self.audit_context, query_args(self)["status"])
        self.respond(ProposalList(items=[ProposalOut(**item) for item in items]))


class RuleProposalDecisionHandler(BaseHandler):
    access = "rules.confirm"

    @endpoint(
        "Confirm (the rule changes now) or refuse a proposal; never its proposer",
        body=ProposalDecisionBody,
        response=ProposalOut,
        errors=(404, 409),
        tags=("rules",),
    )
    async def post(self, proposal_id: str) -> None:
        body = self.parse(ProposalDecisionBody)
        result = await self.ctx.rules.decide(self.audit_context, proposal_id, body.confirm)
        self.respond(ProposalOut(**result))


routes = [
    (rf"/api/v1/subjects/{path_id('subject_id')}/programs", SubjectProgramsHandler),
    (rf"/api/v1/subjects/{path_id('subject_id')}/release-notices", ReleaseNoticesHandler),
    (rf"/api/v1/programs/{path_id('program_id')}", ProgramHandler),
    (rf"/api/v1/programs/{path_id('program_id')}/transition", TransitionHandler),
    (rf"/api/v1/programs/{path_id('program_id')}/intake", IntakeHandler),
    (rf"/api/v1/programs/{path_id('program_id')}/supervision-level", LevelHandler),
    (rf"/api/v1/programs/{path_id('program_id')}/risk", RiskHandler),
    (rf"/api/v1/programs/{path_id('program_id')}/incidents", IncidentHandler),
    (r"/api/v1/rules/effective", EffectiveRulesHandler),
    (rf"/api/v1/rules/{path_id('code')}", RuleOverrideHandler),
    (rf"/api/v1/rules/{path_id('code')}/proposals", RuleProposalHandler),
    (r"/api/v1/rule-proposals", RuleProposalsHandler),
    (rf"/api/v1/rule-proposals/{path_id('proposal_id')}/decision", RuleProposalDecisionHandler),
]


class InvestigationBody(Strict):
    subject_id: str = Field(pattern=r"^[0-9a-fA-F]{24}$")
    court: str = Field(min_length=2, max_length=100)
    requested_on: dt.date
    expedited: bool = False


class AssignBody(Strict):
    station_id: str = Field(pattern=r"^[0-9a-fA-F]{24}$")


class ReportBody(Strict):
    recommendation: Literal["suitable", "unsuitable"]
    opinion: str = Field(min_length=2, max_length=5000)
    on: dt.date


class CloseBody(Strict):
    withdrawn: bool = False


class InvestigationOut(Out):
    id: str
    subject_id: str
    status: str
    court: str
    requested_on: str
    expedited: bool
    due: str
    county_id: str
    station_id: str | None
    recommendation: str | None
    opinion: str | None
    reported_on: str | None
    late: bool | None
    rules_version: str
    history: list[dict[str, Any]]

    @classmethod
    def of(cls, view: InvestigationView) -> InvestigationOut:
        return cls(**view.__dict__)


class AwaitingInvestigationOut(Out):
    id: str
    subject_id: str
    subject_name: str | None
    requested_on: str
    expedited: bool
    deadline: str
    deadline_provisional: bool
    basis: str


class AwaitingInvestigationList(Out):
    items: list[AwaitingInvestigationOut]


class InvestigationsHandler(BaseHandler):
    access = {"POST": "investigations.manage", "GET": "investigations.read"}

    @endpoint(
        "Requests the caller's county is to assign to a station (`?status=requested`), or "
        "those at the caller's node assigned or reported (`assigned`, `reported`), soonest "
        "due first, with the opinion's deadline and the person's name as the caller may see it",
        response=AwaitingInvestigationList,
        errors=(401, 403, 422),
        tags=("programs",),
    )
    @query(
        required(
            one_of(
                "status",
                ["requested", "assigned", "reported"],
                "Awaiting assignment, awaiting the opinion, or awaiting closing",
            )
        ),
        page_size(100, 500),
    )
    async def get(self) -> None:
        args = query_args(self)
        items = await self.ctx.investigations.awaiting(
            self.audit_context, args["limit"], InvestigationStatus(args["status"])
        )
        self.respond(
            AwaitingInvestigationList(items=[AwaitingInvestigationOut(**i) for i in items])
        )

    @endpoint(
        "Record a court's request for a 调查评估; its deadline counts working days",
        body=InvestigationBody,
        response=InvestigationOut,
        status=201,
        errors=(404,),
        tags=("programs",),
    )
    async def post(self) -> None:
        body = self.parse(InvestigationBody)
        view = await self.ctx.investigations.request(
            self.audit_context,
            subject_id=body.subject_id,
            court=body.court,
            requested_on=body.requested_on,
            expedited=body.expedited,
        )
        self.respond(InvestigationOut.of(view), status=201)


class InvestigationHandler(BaseHandler):
    access = "investigations.read"

    @endpoint("One investigation", response=InvestigationOut, errors=(404,), tags=("programs",))
    async def get(self, investigation_id: str) -> None:
        view = await self.ctx.investigations.get(self.audit_context, investigation_id)
        self.respond(InvestigationOut.of(view))


class InvestigationAssignHandler(BaseHandler):
    access = "investigations.manage"

    @endpoint(
        "The county assigns the investigation to one of its stations",
        body=AssignBody,
        response=InvestigationOut,
        errors=(404, 409, 422),
        tags=("programs",),
    )
    async def post(self, investigation_id: str) -> None:
        body = self.parse(AssignBody)
        view = await self.ctx.investigations.assign(
            self.audit_context, investigation_id, body.station_id
        )
        self.respond(InvestigationOut.of(view))


class InvestigationReportHandler(BaseHandler):
    access = "investigations.manage"

    @endpoint(
        "The station's opinion (encrypted at rest); after the deadline it is marked late",
        body=ReportBody,
        response=InvestigationOut,
        errors=(404, 409),
        tags=("programs",),
    )
    async def post(self, investigation_id: str) -> None:
        body = self.parse(ReportBody)
        view = await self.ctx.investigations.report(
            self.audit_context, investigation_id, body.recommendation, body.opinion, body.on
        )
        self.respond(InvestigationOut.of(view))


class InvestigationCloseHandler(BaseHandler):
    access = "investigations.manage"

    @endpoint(
        "Close a reported investigation, or record the court's withdrawal",
        body=CloseBody,
        response=InvestigationOut,
        errors=(404, 409),
        tags=("programs",),
    )
    async def post(self, investigation_id: str) -> None:
        body = self.parse(CloseBody)
        view = await self.ctx.investigations.close(
            self.audit_context, investigation_id, body.withdrawn
        )
        self.respond(InvestigationOut.of(view))


routes += [
    (r"/api/v1/investigations", InvestigationsHandler),
    (rf"/api/v1/investigations/{path_id('investigation_id')}", InvestigationHandler),
    (rf"/api/v1/investigations/{path_id('investigation_id')}/assign", InvestigationAssignHandler),
    (rf"/api/v1/investigations/{path_id('investigation_id')}/report", InvestigationReportHandler),
    (rf"/api/v1/investigations/{path_id('investigation_id')}/close", InvestigationCloseHandler),
]

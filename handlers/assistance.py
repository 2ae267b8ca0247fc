"""阳光之家 assistance endpoints: resources and their occupancy, needs on a case file, referrals
through their workflow, placements that never overbook, stays, course attendance, outcomes and
a county's monthly summary."""

from __future__ import annotations

import datetime as dt
from typing import Any, Literal

from pydantic import Field

from handlers.base import BaseHandler, Out, Strict, endpoint, path_id
from handlers.query import (
    calendar_month,
    object_id,
    one_of,
    page_size,
    query,
    query_args,
    required,
    text,
    yes_no,
)
from models.assistance import (
    STAY_NOTICE_DAYS,
    PlacementView,
    ReferralStatus,
    ReferralView,
    ResourceKind,
    ResourceView,
)

FacilityKind = Literal[
    "sunshine_home", "transitional_base", "shelter", "meals", "legal_aid", "benefit"
]
Need = Literal["housing", "food", "job", "training", "legal", "benefits"]


class FacilityBody(Strict):
    name: str = Field(min_length=1, max_length=200)
    kind: FacilityKind
    org_id: str = Field(min_length=1, max_length=64)
    capacity: int = Field(ge=0, le=100_000)
    max_stay_days: int | None = Field(default=None, ge=1, le=366)
    hours: str | None = Field(default=None, max_length=200)
    contacts: str | None = Field(default=None, max_length=200)
    # Who may stay (populations), when a facility is for some only.
    populations: (
        list[Literal["community_corrections", "resettlement", "drug_rehab", "mental_health"]] | None
    ) = Field(default=None, min_length=1, max_length=4)
    coordinator_ids: list[str] = Field(default_factory=list, max_length=20)


class JobBody(Strict):
    name: str = Field(min_length=1, max_length=200)
    org_id: str = Field(min_length=1, max_length=64)
    places: int = Field(ge=0, le=100_000)
    employer: str = Field(min_length=1, max_length=200)
    position: str = Field(min_length=1, max_length=200)
    coordinator_ids: list[str] = Field(default_factory=list, max_length=20)


class CourseBody(Strict):
    name: str = Field(min_length=1, max_length=200)
    org_id: str = Field(min_length=1, max_length=64)
    seats: int = Field(ge=0, le=100_000)
    schedule: str | None = Field(default=None, max_length=200)
    # Hours a session counts toward the person's education obligation, at most.
    hours_credit: float = Field(gt=0, le=24)
    coordinator_ids: list[str] = Field(default_factory=list, max_length=20)


class ResourceOut(Out):
    id: str
    kind: str
    name: str
    org_id: str
    capacity: int
    occupied: int
    held: int
    waiting: int
    active: bool
    max_stay_days: int | None
    hours_credit: float | None
    details: dict[str, Any]

    @classmethod
    def of(cls, view: ResourceView) -> ResourceOut:
        return cls(**view.__dict__)


class ActiveBody(Strict):
    active: bool


class NeedsBody(Strict):
    housing: bool = False
    food: bool = False
    income: bool = False
    employment: bool = False
    training: bool = False
    legal: bool = False
    benefits: bool = False


class NeedsOut(Out):
    needs: dict[str, bool]
    three_nos: bool


class NeedsAssessmentOut(NeedsOut):
    assessed_at: dt.datetime | None
    assessed_by: str | None
    assessed_by_name: str | None


class ReferralBody(Strict):
    subject_id: str = Field(min_length=1, max_length=64)
    needs: list[Need] = Field(min_length=1, max_length=6)
    resource_id: str | None = Field(default=None, max_length=64)
    note: str = Field(default="", max_length=2000)


class ReferralOut(Out):
    id: str
    subject_id: str
    subject_name: str | None
    needs: list[str]
    status: str
    resource_id: str | None
    channel: str
    history: list[dict[str, Any]]
    waiting_position: int | None
    outcome: dict[str, Any] | None

    @classmethod
    def of(cls, view: ReferralView) -> ReferralOut:
        return cls(**view.__dict__)


class ReferralList(Out):
    items: list[ReferralOut]


class TransitionBody(Strict):
    to: Literal[
        "approved",
        "offered",
        "accepted",
        "placed",
        "completed",
        "declined",
        "cancelled",
        "no_show",
    ]
    reason: str | None = Field(default=None, max_length=1000)
    resource_id: str | None = Field(default=None, max_length=64)


class OutcomeBody(Strict):
    kind: Literal["housing_found", "job_found", "benefits_granted", "training_completed", "other"]
    employer: str | None = Field(default=None, max_length=200)
    start_date: dt.date | None = None
    note: str | None = Field(default=None, max_length=1000)


class PlacementBody(Strict):
    referral_id: str = Field(min_length=1, max_length=64)
    resource_id: str = Field(min_length=1, max_length=64)


class PlacementOut(Out):
    id: str
    referral_id: str
    resource_id: str
    subject_id: str
    status: str
    placed_at: dt.datetime
    stay_until: dt.date | None
    arrived_on: dt.date | None
    departed_on: dt.date | None

    @classmethod
    def of(cls, view: PlacementView) -> PlacementOut:
        return cls(**view.__dict__)


class CheckoutBody(Strict):
    reason: str = Field(min_length=1, max_length=1000)


class ArrivalBody(Strict):
    on: dt.date


class ExtensionBody(Strict):
    until: dt.date
    reason: str = Field(min_length=1, max_length=1000)


class AttendanceBody(Strict):
    subject_id: str = Field(min_length=1, max_length=64)
    on: dt.date
    hours: float = Field(gt=0, le=24)


class AttendanceOut(Out):
    subject_id: str
    hours: float
    credited: bool


class WaitingOut(Out):
    items: list[dict[str, Any]]


class SummaryOut(Out):
    org_id: str
    month: str
    referrals_by_status: dict[str, int]
    referrals_by_need: dict[str, int]
    median_days_to_placement: float | None
    occupancy: list[dict[str, Any]]


class FacilitiesHandler(BaseHandler):
    access = "assistance.resources"

    @endpoint(
        "Add a facility (阳光之家, 过渡性安置基地, shelter, meals) or a service (legal aid, "
        "benefit applications) with its capacity",
        body=FacilityBody,
        response=ResourceOut,
        status=201,
        errors=(404, 422),
        tags=("assistance",),
    )
    async def post(self) -> None:
        body = self.parse(FacilityBody)
        details = {
            k: v
            for k, v in {
                "hours": body.hours,
                "contacts": body.contacts,
                "populations": body.populations,
            }.items()
            if v is not None
        }
        view = await self.ctx.assistance.add_resource(
            self.audit_context,
            kind=ResourceKind(body.kind),
            name=body.name,
            org_id=body.org_id,
            capacity=body.capacity,
            max_stay_days=body.max_stay_days,
            details=details,
            coordinator_ids=body.coordinator_ids,
        )
        self.respond(ResourceOut.of(view), status=201)


class JobsHandler(BaseHandler):
    access = "assistance.resources"

    @endpoint(
        "Add a job opening with its places",
        body=JobBody,
        response=ResourceOut,
        status=201,
        errors=(404, 422),
        tags=("assistance",),
    )
    async def post(self) -> None:
        body = self.parse(JobBody)
        view = await self.ctx.assistance.add_resource(
            self.audit_context,
            kind=ResourceKind.JOB,
            name=body.name,
            org_id=body.org_id,
            capacity=body.places,
            details={"employer": body.employer, "position": body.position},
            coordinator_ids=body.coordinator_ids,
        )
        self.respond(ResourceOut.of(view), status=201)


class CoursesHandler(BaseHandler):
    access = "assistance.resources"

    @endpoint(
        "Add a vocational training course with its seats and the hours it credits",
        body=CourseBody,
        response=ResourceOut,
        status=201,
        errors=(404, 422),
        tags=("assistance",),
    )
    async def post(self) -> None:
        body = self.parse(CourseBody)
        view = await self.ctx.assistance.add_resource(
            self.audit_context,
            kind=ResourceKind.COURSE,
            name=body.name,
            org_id=body.org_id,
            capacity=body.seats,
            hours_credit=body.hours_credit,
            details={"schedule": body.schedule} if body.schedule else {},
            coordinator_ids=body.coordinator_ids,
        )
        self.respond(ResourceOut.of(view), status=201)


class ResourceList(Out):
    items: list[ResourceOut]


class DirectoryHandler(BaseHandler):
    access = "assistance.read"

    @endpoint(
        "The resources the caller may refer to: their county's (and above) and their own "
        "node's, by kind and name, with occupancy and waiting list length (a coordinator: "
        "their own facilities)",
        response=ResourceList,
        tags=("assistance",),
    )
    @query(
        one_of("kind", ResourceKind, "Only resources of this kind"),
        yes_no("open", "Only resources open for referrals"),
        page_size(200, 500),
    )
    async def get(self) -> None:
        args = query_args(self)
        views = await self.ctx.assistance.directory(
            self.audit_context, kind=args["kind"], active_only=args["open"], limit=args["limit"]
        )
        self.respond(ResourceList(items=[ResourceOut.of(v) for v in views]))


class ResourceHandler(BaseHandler):
    access = {"GET": "assistance.read", "PATCH": "assistance.resources"}

    @endpoint(
        "A resource with its occupancy and waiting list length",
        response=ResourceOut,
        errors=(404,),
        tags=("assistance",),
    )
    async def get(self, resource_id: str) -> None:
        self.respond(
            ResourceOut.of(await self.ctx.assistance.resource(self.audit_context, resource_id))
        )

    @endpoint(
        "Open or close a resource (`{active}`); re-opening serves the waiting list",
        body=ActiveBody,
        response=ResourceOut,
        errors=(404, 422),
        tags=("assistance",),
    )
    async def patch(self, resource_id: str) -> None:
        body = self.parse(ActiveBody)
        view = await self.ctx.assistance.set_active(self.audit_context, resource_id, body.active)
        self.respond(ResourceOut.of(view))


class WaitingListHandler(BaseHandler):
    access = "assistance.read"

    @endpoint("A resource's waiting list, in order", response=WaitingOut, tags=("assistance",))
    async def get(self, resource_id: str) -> None:
        items = await self.ctx.assistance.waiting_list(self.audit_context, resource_id)
        self.respond(WaitingOut(items=items))


class NeedsHandler(BaseHandler):
    access = {"PUT": "assistance.manage", "GET": "assistance.needs"}

    @endpoint(
        "The person's current (latest) needs assessment, who made it and when; 404 when none",
        response=NeedsAssessmentOut,
        errors=(404,),
        tags=("assistance",),
    )
    async def get(self, subject_id: str) -> None:
        result = await self.ctx.assistance.current_needs(self.audit_context, subject_id)
        self.respond(NeedsAssessmentOut(**result))

    @endpoint(
        "Assess a person's needs; 三无 (no home, no job, no income) is derived",
        body=NeedsBody,
        response=NeedsOut,
        errors=(404, 422),
        tags=("assistance",),
    )
    async def put(self, subject_id: str) -> None:
        body = self.parse(NeedsBody)
        result = await self.ctx.assistance.assess_needs(
            self.audit_context, subject_id, body.model_dump()
        )
        self.respond(NeedsOut(**result))


class ReferralsHandler(BaseHandler):
    access = {"POST": "assistance.manage", "GET": "assistance.read"}

    @endpoint(
        "Refer a person for help (requested; the station approves)",
        body=ReferralBody,
        response=ReferralOut,
        status=201,
        errors=(404, 422),
        tags=("assistance",),
    )
    async def post(self) -> None:
        body = self.parse(ReferralBody)
        view = await self.ctx.assistance.refer(
            self.audit_context, body.subject_id, list(body.needs), body.note, body.resource_id
        )
        self.respond(ReferralOut.of(view), status=201)

    @endpoint(
        "Referrals in scope (`?status=&resource_id=&subject_id=`); a coordinator sees those "
        "to their facilities only, with minimal personal fields",
        response=ReferralList,
        tags=("assistance",),
    )
    @query(
        one_of("status", ReferralStatus, "Only referrals in this state"),
        text("resource_id", "Only referrals to this facility, job or course"),
        object_id("subject_id", "Only this person's referrals"),
        page_size(100, 500),
    )
    async def get(self) -> None:
        args = query_args(self)
        views = await self.ctx.assistance.referrals(
            self.audit_context,
            resource_id=args["resource_id"],
            status=args["status"],
            limit=args["limit"],
            subject_id=args["subject_id"],
        )
        self.respond(ReferralList(items=[ReferralOut.of(v) for v in views]))


class ReferralHandler(BaseHandler):
    access = "assistance.read"

    @endpoint("One referral with its history", response=ReferralOut, tags=("assistance",))
    async def get(self, referral_id: str) -> None:
        view = await self.ctx.assistance.get(self.audit_context, referral_id)
        self.respond(ReferralOut.of(view))


class TransitionHandler(BaseHandler):
    access = "assistance.read"  # each step's own action is checked by the service

    @endpoint(
        "Move a referral one step; 409 for a step its state forbids",
        body=TransitionBody,
        response=ReferralOut,
        errors=(403, 404, 409, 422),
        tags=("assistance",),
    )
    async def post(self, referral_id: str) -> None:
        body = self.parse(TransitionBody)
        view = await self.ctx.assistance.transition(
            self.audit_context,
            referral_id,
            ReferralStatus(body.to),
            body.reason,
            body.resource_id,
        )
        self.respond(ReferralOut.of(view))


class OutcomeHandler(BaseHandler):
    access = "assistance.manage"

    @endpoint(
        "Record what came of a referral (housing found, a job, benefits granted)",
        body=OutcomeBody,
        response=ReferralOut,
        errors=(404, 422),
        tags=("assistance",),
    )
    async def post(self, referral_id: str) -> None:
        body = self.parse(OutcomeBody)
        view = await self.ctx.assistance.record_outcome(
            self.audit_context, referral_id, body.model_dump(mode="json", exclude_none=True)
        )
        self.respond(ReferralOut.of(view))


class PlacementsHandler(BaseHandler):
    access = "assistance.place"

    @endpoint(
        "Place an accepted referral: `409 {code: full, waiting_position}` when no place is "
        "free (the referral joins the waiting list)",
        body=PlacementBody,
        response=PlacementOut,
        status=201,
        errors=(404, 409, 422),
        tags=("assistance",),
    )
    async def post(self) -> None:
        body = self.parse(PlacementBody)
        view = await self.ctx.assistance.place(
            self.audit_context, body.referral_id, body.resource_id
        )
        self.respond(PlacementOut.of(view), status=201)


class CheckoutHandler(BaseHandler):
    access = "assistance.place"

    @endpoint(
        "End a stay (or course, or job): frees the place; the first waiting is offered it",
        body=CheckoutBody,
        response=PlacementOut,
        errors=(404, 409, 422),
        tags=("assistance",),
    )
    async def post(self, placement_id: str) -> None:
        body = self.parse(CheckoutBody)
        view = await self.ctx.assistance.check_out(self.audit_context, placement_id, body.reason)
        self.respond(PlacementOut.of(view))


class ArrivalHandler(BaseHandler):
    access = "assistance.place"

    @endpoint(
        "Record the arrival at the facility",
        body=ArrivalBody,
        response=PlacementOut,
        errors=(404, 409, 422),
        tags=("assistance",),
    )
    async def post(self, placement_id: str) -> None:
        body = self.parse(ArrivalBody)
        view = await self.ctx.assistance.record_arrival(self.audit_context, placement_id, body.on)
        self.respond(PlacementOut.of(view))


class ExtensionHandler(BaseHandler):
    access = "assistance.extend"

    @endpoint(
        "Extend a stay (the county approves; never beyond the extended limit)",
        body=ExtensionBody,
        response=PlacementOut,
        errors=(403, 404, 409, 422),
        tags=("assistance",),
    )
    async def post(self, placement_id: str) -> None:
        body = self.parse(ExtensionBody)
        view = await self.ctx.assistance.extend_stay(
            self.audit_context, placement_id, body.until, body.reason
        )
        self.respond(PlacementOut.of(view))


class AttendanceHandler(BaseHandler):
    access = "assistance.place"

    @endpoint(
        "Record hours at a course; they count toward the person's education obligation",
        body=AttendanceBody,
        response=AttendanceOut,
        errors=(404, 409, 422),
        tags=("assistance",),
    )
    async def post(self, resource_id: str) -> None:
        body = self.parse(AttendanceBody)
        result = await self.ctx.assistance.record_attendance(
            self.audit_context, resource_id, body.subject_id, body.on, body.hours
        )
        self.respond(AttendanceOut(**result))


class SummaryHandler(BaseHandler):
    access = "assistance.summary"

    @endpoint(
        "A node's month (`?org_id=&month=YYYY-MM`): referrals by need and status, median days "
        "to placement, occupancy",
        response=SummaryOut,
        errors=(404, 422),
        tags=("assistance",),
    )
    @query(
        text("org_id", "An organisation in the caller's scope (default: the caller's)"),
        calendar_month("month", "The month"),
    )
    async def get(self) -> None:
        args = query_args(self)
        org_id = args["org_id"] or str(self.identity.org_id)
        result = await self.ctx.assistance.summary(self.audit_context, org_id, args["month"])
        self.respond(SummaryOut(**result))


class EndingStayOut(Out):
    id: str
    subject_id: str
    subject_name: str | None
    resource_name: str | None
    stay_until: str
    max_until: str
    deadline: str
    basis: str


class EndingStayList(Out):
    items: list[EndingStayOut]


class StaysHandler(BaseHandler):
    # The queue of what the caller may extend: the county's (a longer stay is its approval).
    access = "assistance.extend"

    @endpoint(
        "Stays in scope that end within two weeks and may still be extended "
        "(`?status=ending`), soonest first, with the rules' limits as basis",
        response=EndingStayList,
        errors=(401, 403, 422),
        tags=("assistance",),
    )
    @query(
        required(one_of("status", ["ending"], "Only stays ending soon")),
        page_size(100, 500),
    )
    async def get(self) -> None:
        items = await self.ctx.assistance.stays_ending(
            self.audit_context, STAY_NOTICE_DAYS, query_args(self)["limit"]
        )
        self.respond(EndingStayList(items=[EndingStayOut(**i) for i in items]))


routes = [
    (r"/api/v1/assistance/stays", StaysHandler),
    (r"/api/v1/assistance/directory", DirectoryHandler),
    (r"/api/v1/assistance/facilities", FacilitiesHandler),
    (r"/api/v1/assistance/jobs", JobsHandler),
    (r"/api/v1/assistance/courses", CoursesHandler),
    (rf"/api/v1/assistance/facilities/{path_id('resource_id')}", ResourceHandler),
    (rf"/api/v1/assistance/resources/{path_id('resource_id')}", ResourceHandler),
    (rf"/api/v1/assistance/resources/{path_id('resource_id')}/waiting-list", WaitingListHandler),
    (rf"/api/v1/assistance/courses/{path_id('resource_id')}/attendance", AttendanceHandler),
    (rf"/api/v1/subjects/{path_id('subject_id')}/needs", NeedsHandler),
    (r"/api/v1/assistance/referrals", ReferralsHandler),
    (rf"/api/v1/assistance/referrals/{path_id('referral_id')}", ReferralHandler),
    (rf"/api/v1/assistance/referrals/{path_id('referral_id')}/transition", TransitionHandler),
    (rf"/api/v1/assistance/referrals/{path_id('referral_id')}/outcome", OutcomeHandler),
    (r"/api/v1/assistance/placements", PlacementsHandler),
    (rf"/api/v1/assistance/placements/{path_id('placement_id')}/checkout", CheckoutHandler),
    (rf"/api/v1/assistance/placements/{path_id('placement_id')}/arrival", ArrivalHandler),
    (rf"/api/v1/assistance/placements/{path_id('placement_id')}/extension", ExtensionHandler),
    (r"/api/v1/assistance/summary", SummaryHandler),
]

"""Staff endpoints for check-ins: the review queue, one check-in, a review, the decided reviews,
a person's history, the permitted areas of the tree, and the binding codes that let a person
check in from WeChat at all."""

from __future__ import annotations

import dataclasses
import datetime as dt
from typing import Literal

from pydantic import Field, model_validator

from handlers.base import BaseHandler, Out, Strict, endpoint, path_id
from handlers.photos import PhotoStreamHandler
from handlers.query import calendar_day, object_id, page_size, query, query_args
from models.clock import LOCAL_TZ
from models.geo import Area, Point


class AreaBody(Strict):
    """A polygon of WGS-84 `[lat, lng]` vertices, or a centre with a radius in metres (no
    radius: the rule `checkin.station_radius_m`)."""

    polygon: list[tuple[float, float]] | None = Field(default=None, min_length=3, max_length=500)
    center: tuple[float, float] | None = None
    radius_m: float | None = Field(default=None, gt=0, le=5_000_000)

    @model_validator(mode="after")
    def _one_shape(self) -> AreaBody:
        if (self.polygon is None) == (self.center is None):
            raise ValueError("give either `polygon` or `center`")
        for lat, lng in [*(self.polygon or []), *([self.center] if self.center else [])]:
            if not (-90 <= lat <= 90 and -180 <= lng <= 180):
                raise ValueError("coordinates out of range")
        return self

    def to_area(self) -> Area:
        if self.polygon is not None:
            return Area(polygon=tuple(Point(lat, lng) for lat, lng in self.polygon))
        assert self.center is not None
        return Area(center=Point(*self.center), radius_m=self.radius_m or 0.0)


class AreaOut(Out):
    org_id: str
    area: dict[str, object]


class ReviewItemOut(Out):
    id: str
    subject_id: str
    subject_name: str | None
    status: str
    flags: list[str]
    obligation_id: str | None
    arrived_at: dt.datetime
    captured_at: dt.datetime
    distance_m: float | None
    accuracy: float
    has_photo: bool


class ReviewQueueOut(Out):
    items: list[ReviewItemOut]


class ReviewBody(Strict):
    accept: bool
    comment: str = Field(min_length=1, max_length=1000)


class ReviewOut(Out):
    id: str
    status: str
    review: Literal["accepted", "rejected"]
    obligation_id: str | None
    obligation_status: str | None


class CheckinItemOut(Out):
    """A check-in for an officer's map; `lat`/`lng` are WGS-84, `accuracy` in metres."""

    id: str
    subject_id: str
    arrived_at: dt.datetime
    status: str
    flags: list[str]
    lat: float
    lng: float
    accuracy: float
    has_photo: bool
    photo_visible: bool
    review: Literal["pending", "accepted", "rejected"] | None
    reviewed_at: dt.datetime | None
    reviewed_by_name: str | None
    review_comment: str | None


class StationOut(Out):
    id: str
    name: str
    lat: float | None
    lng: float | None


class CheckinDetailOut(CheckinItemOut):
    subject_name: str | None
    captured_at: dt.datetime | None
    coord_type: str
    distance_m: float | None
    subject_photo: bool
    area: dict[str, object] | None
    station: StationOut | None
    recent: list[CheckinItemOut]


class CheckinHistoryOut(Out):
    items: list[CheckinItemOut]
    next_cursor: str | None


class DecidedReviewOut(Out):
    id: str
    subject_id: str
    subject_name: str | None
    status: str
    flags: list[str]
    arrived_at: dt.datetime
    decision: Literal["accepted", "rejected"]
    reviewed_at: dt.datetime
    reviewed_by: str | None
    reviewed_by_name: str | None
    comment: str | None


class DecidedReviewsOut(Out):
    items: list[DecidedReviewOut]


class BindingCodeBody(Strict):
    role: Literal["subject", "guardian"] = "subject"


class BindingCodeOut(Out):
    code: str
    expires_at: dt.datetime


class ReviewQueueHandler(BaseHandler):
    access = "checkins.read"

    @endpoint(
        "Flagged check-ins waiting for review in the caller's scope, oldest first",
        response=ReviewQueueOut,
        errors=(401, 403, 422),
        tags=("check-ins",),
    )
    @query(page_size(100, 500))
    async def get(self) -> None:
        limit = query_args(self)["limit"]
        items = await self.ctx.checkins.review_queue(self.audit_context, limit)
        self.respond(
            ReviewQueueOut(items=[ReviewItemOut.model_validate(i.__dict__) for i in items])
        )


class ReviewHandler(BaseHandler):
    access = "checkins.review"

    @endpoint(
        "Accept or reject a flagged check-in with a reason; its obligation follows",
        body=ReviewBody,
        response=ReviewOut,
        errors=(401, 403, 404, 409, 422),
        tags=("check-ins",),
    )
    async def post(self, checkin_id: str) -> None:
        body = self.parse(ReviewBody)
        result = await self.ctx.checkins.review(
            self.audit_context, checkin_id, body.accept, body.comment
        )
        self.respond(ReviewOut.model_validate(result))


class DecidedReviewsHandler(BaseHandler):
    access = "checkins.read"

    @endpoint(
        "Reviews decided in the caller's scope on one day (Asia/Shanghai), latest first, "
        "with the reviewer's name and reason",
        response=DecidedReviewsOut,
        errors=(401, 403, 422),
        tags=("check-ins",),
    )
    @query(calendar_day("day", "The day of the decisions (default: today)"), page_size(100, 500))
    async def get(self) -> None:
        args = query_args(self)
        day = args["day"] or self.ctx.clock.now().astimezone(LOCAL_TZ).date()
        since = dt.datetime.combine(day, dt.time(), LOCAL_TZ)
        items = await self.ctx.checkins.decided(
            self.audit_context, since, since + dt.timedelta(days=1), args["limit"]
        )
        self.respond(
            DecidedReviewsOut(items=[DecidedReviewOut.model_validate(i.__dict__) for i in items])
        )


class CheckinDetailHandler(BaseHandler):
    access = "checkins.read"

    @endpoint(
        "One check-in for review: its point and accuracy, the area in force, the station, "
        "the person's earlier check-ins and the review so far",
        response=CheckinDetailOut,
        errors=(401, 403, 404),
        tags=("check-ins",),
    )
    async def get(self, checkin_id: str) -> None:
        detail = await self.ctx.checkins.detail(self.audit_context, checkin_id)
        self.respond(CheckinDetailOut.model_validate(_plain(detail)))


class SubjectCheckinsHandler(BaseHandler):
    access = "checkins.read"

    @endpoint(
        "A person's check-ins in the caller's scope, newest first, a page at a time",
        response=CheckinHistoryOut,
        errors=(401, 403, 404, 422),
        tags=("check-ins",),
    )
    @query(object_id("cursor", "The `next_cursor` of the previous page"), page_size(20, 100))
    async def get(self, subject_id: str) -> None:
        args = query_args(self)
        items, next_cursor = await self.ctx.checkins.history(
            self.audit_context, subject_id, args["cursor"], args["limit"]
        )
        self.respond(
            CheckinHistoryOut(
                items=[CheckinItemOut.model_validate(i.__dict__) for i in items],
                next_cursor=next_cursor,
            )
        )


def _plain(value: object) -> object:
    """A service's dataclasses as dicts, all the way down, for the response model."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {k: _plain(v) for k, v in value.__dict__.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


class CheckinPhotoHandler(PhotoStreamHandler):
    access = "checkins.read"

    @endpoint(
        "A check-in's photo, decrypted and streamed, never cached; 404 for whoever may not see it",
        errors=(401, 404),
        tags=("check-ins",),
    )
    async def get(self, checkin_id: str) -> None:
        info, chunks = await self.ctx.checkins.photo(self.audit_context, checkin_id)
        await self.stream(info, chunks)


class OrgAreaHandler(BaseHandler):
    access = "orgs.area"

    @endpoint(
        "Set a node's permitted check-in area",
        body=AreaBody,
        response=AreaOut,
        errors=(401, 403, 404, 422),
        tags=("check-ins",),
    )
    async def put(self, org_id: str) -> None:
        body = self.parse(AreaBody)
        area = body.to_area()
        org = await self.ctx.orgs.set_area(self.audit_context, org_id, area)
        self.respond(AreaOut(org_id=org.id, area=area.to_doc()))


class SubjectBindingCodeHandler(BaseHandler):
    access = "subjects.binding_code"

    @endpoint(
        "A single-use code for the person (or guardian) to bind their WeChat",
        body=BindingCodeBody,
        response=BindingCodeOut,
        status=201,
        errors=(401, 403, 404, 422),
        tags=("mini-program",),
    )
    async def post(self, subject_id: str) -> None:
        body = self.parse(BindingCodeBody) if self.raw_body().strip() else BindingCodeBody()
        issued = await self.ctx.mp_accounts.issue_code(self.audit_context, subject_id, body.role)
        self.respond(BindingCodeOut(code=issued.code, expires_at=issued.expires_at), status=201)


routes = [
    (r"/api/v1/checkins/review-queue", ReviewQueueHandler),
    (rf"/api/v1/checkins/{path_id('checkin_id')}/review", ReviewHandler),
    (rf"/api/v1/checkins/{path_id('checkin_id')}/photo", CheckinPhotoHandler),
    (r"/api/v1/checkins/decided", DecidedReviewsHandler),
    (rf"/api/v1/checkins/{path_id('checkin_id')}", CheckinDetailHandler),
    (rf"/api/v1/subjects/{path_id('subject_id')}/checkins", SubjectCheckinsHandler),
    (rf"/api/v1/orgs/{path_id('org_id')}/area", OrgAreaHandler),
    (rf"/api/v1/subjects/{path_id('subject_id')}/binding-code", SubjectBindingCodeHandler),
]

"""Counseling endpoints: a person's sessions, the free counsellors, rooms and slots of a day,
book a session, record attendance, cancel."""

from __future__ import annotations

import datetime as dt

from pydantic import AwareDatetime, Field

from handlers.base import BaseHandler, Out, Strict, endpoint, path_id
from handlers.query import calendar_day, object_id, one_of, page_size, query, query_args, required
from models.counseling import Availability, Offer, SessionView

# A session's lengths offered when looking for a free slot (minutes).
LENGTHS = ("15", "30", "45", "60", "90", "120", "180", "240")


class BookingBody(Strict):
    counselor_id: str = Field(pattern=r"^[0-9a-fA-F]{24}$")
    start: AwareDatetime
    end: AwareDatetime
    room: str | None = Field(default=None, min_length=1, max_length=50)
    facility_id: str | None = Field(default=None, max_length=40)


class AttendanceBody(Strict):
    attended: bool
    notes: str | None = Field(default=None, max_length=5000)


class SessionOut(Out):
    id: str
    subject_id: str
    counselor_id: str
    room: str | None
    facility_id: str | None
    start: dt.datetime
    end: dt.datetime
    status: str
    notes: str | None = None

    @classmethod
    def of(cls, view: SessionView) -> SessionOut:
        return cls(**view.__dict__)


class SessionList(Out):
    items: list[SessionOut]


class OfferOut(Out):
    id: str | None = Field(description="The counsellor's account (rooms: none, named only)")
    name: str
    role: str | None
    free: list[dt.datetime] = Field(description="Starts at which a session of the length fits")

    @classmethod
    def of(cls, offer: Offer) -> OfferOut:
        return cls(**offer.__dict__)


class AvailabilityOut(Out):
    date: dt.date
    minutes: int
    counselors: list[OfferOut]
    rooms: list[OfferOut]

    @classmethod
    def of(cls, found: Availability) -> AvailabilityOut:
        return cls(
            date=found.date,
            minutes=found.minutes,
            counselors=[OfferOut.of(o) for o in found.counselors],
            rooms=[OfferOut.of(o) for o in found.rooms],
        )


class AvailabilityHandler(BaseHandler):
    access = "counseling.read"

    @endpoint(
        "The counsellors (by name) and rooms free for a person's session on a day, each with "
        "the starts at which a session of `minutes` fits (`?subject_id=&date=&minutes=`)",
        response=AvailabilityOut,
        errors=(404, 422),
        tags=("obligations",),
    )
    @query(
        required(object_id("subject_id", "The person to be counselled (rooms of their station)")),
        required(calendar_day("date", "The day, local time")),
        one_of("minutes", LENGTHS, "The session's length in minutes (default 60)"),
    )
    async def get(self) -> None:
        args = query_args(self)
        found = await self.ctx.counseling.availability(
            self.audit_context, args["subject_id"], args["date"], int(args["minutes"] or 60)
        )
        self.respond(AvailabilityOut.of(found))


class BookingHandler(BaseHandler):
    access = {"GET": "counseling.read", "POST": "counseling.manage"}

    @endpoint(
        "A person's counseling sessions, the latest first",
        response=SessionList,
        errors=(404,),
        tags=("obligations",),
    )
    @query(page_size(default=50, maximum=200))
    async def get(self, subject_id: str) -> None:
        limit = query_args(self)["limit"]
        views = await self.ctx.counseling.sessions(self.audit_context, subject_id, limit)
        self.respond(SessionList(items=[SessionOut.of(v) for v in views]))

    @endpoint(
        "Book a counseling session; 409 `double_booked` when the counselor, room or "
        "facility is taken",
        body=BookingBody,
        response=SessionOut,
        status=201,
        errors=(404, 409),
        tags=("obligations",),
    )
    async def post(self, subject_id: str) -> None:
        body = self.parse(BookingBody)
        view = await self.ctx.counseling.book(
            self.audit_context,
            subject_id,
            counselor_id=body.counselor_id,
            start=body.start,
            end=body.end,
            room=body.room,
            facility_id=body.facility_id,
        )
        self.respond(SessionOut.of(view), status=201)


class AttendanceHandler(BaseHandler):
    access = "counseling.manage"

    @endpoint(
        "Record attendance (notes encrypted); the person's obligation follows",
        body=AttendanceBody,
        response=SessionOut,
        errors=(404, 409),
        tags=("obligations",),
    )
    async def post(self, session_id: str) -> None:
        body = self.parse(AttendanceBody)
        view = await self.ctx.counseling.record_attendance(
            self.audit_context, session_id, body.attended, body.notes
        )
        self.respond(SessionOut.of(view))


class CancelHandler(BaseHandler):
    access = "counseling.manage"

    @endpoint(
        "Cancel a booked session; its slots are free again",
        response=SessionOut,
        errors=(404, 409),
        tags=("obligations",),
    )
    async def post(self, session_id: str) -> None:
        self.respond(
            SessionOut.of(await self.ctx.counseling.cancel(self.audit_context, session_id))
        )


routes = [
    (r"/api/v1/counseling/availability", AvailabilityHandler),
    (rf"/api/v1/subjects/{path_id('subject_id')}/counseling", BookingHandler),
    (rf"/api/v1/counseling/{path_id('session_id')}/attendance", AttendanceHandler),
    (rf"/api/v1/counseling/{path_id('session_id')}/cancel", CancelHandler),
]

"""Counseling endpoints: book a session, record attendance, cancel."""

from __future__ import annotations

import datetime as dt

from pydantic import AwareDatetime, BaseModel, Field

from handlers.base import BaseHandler, Strict, endpoint
from models.counseling import SessionView


class BookingBody(Strict):
    counselor_id: str = Field(pattern=r"^[0-9a-fA-F]{24}$")
    start: AwareDatetime
    end: AwareDatetime
    room: str | None = Field(default=None, min_length=1, max_length=50)
    facility_id: str | None = Field(default=None, max_length=40)


class AttendanceBody(Strict):
    attended: bool
    notes: str | None = Field(default=None, max_length=5000)


class SessionOut(BaseModel):
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


class BookingHandler(BaseHandler):
    access = "counseling.manage"

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
    (r"/api/v1/subjects/(?P<subject_id>[^/]+)/counseling", BookingHandler),
    (r"/api/v1/counseling/(?P<session_id>[^/]+)/attendance", AttendanceHandler),
    (r"/api/v1/counseling/(?P<session_id>[^/]+)/cancel", CancelHandler),
]

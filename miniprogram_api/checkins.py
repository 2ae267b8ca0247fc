"""`POST /mp/v1/checkins`: a supervised person's location check-in (信息化核查)."""

from __future__ import annotations

import datetime as dt
from typing import Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from handlers.base import endpoint
from miniprogram_api.base import MpHandler
from models.checkins import CheckinInput


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class LocationBody(Strict):
    lat: float = Field(ge=-90, le=90)
    lng: float = Field(ge=-180, le=180)
    coord_type: Literal["wgs84", "gcj02"]
    # Metres, as wx.getLocation reports it.
    accuracy: float = Field(ge=0, le=100_000)


class CheckinBody(Strict):
    obligation_id: str | None = Field(default=None, min_length=1, max_length=200)
    location: LocationBody
    captured_at: AwareDatetime
    photo_upload_id: str | None = Field(default=None, min_length=1, max_length=200)
    # An id the mini-program keeps per installation (a device change raises a flag).
    device_id: str | None = Field(default=None, min_length=1, max_length=200)


class CheckinOut(BaseModel):
    id: str
    status: Literal["on_time", "late", "outside_area", "rejected"]
    flags: list[str]
    obligation_id: str | None
    obligation_status: str | None
    review: Literal["pending"] | None
    arrived_at: dt.datetime


class CheckinsHandler(MpHandler):
    access = "checkins.create"
    max_body_bytes = 8 * 1024

    @endpoint(
        "Check in (header `Idempotency-Key` required: a retry answers the first result; the "
        "same key with another body 409). Classified by arrival time; flags go to review",
        body=CheckinBody,
        response=CheckinOut,
        status=201,
        errors=(400, 401, 403, 404, 409, 422, 503),
        tags=("mini-program",),
    )
    async def post(self) -> None:
        body = self.parse(CheckinBody)
        answer = await self.ctx.checkins.record(
            self.audit_context,
            self.idempotency_key(),
            CheckinInput(
                lat=body.location.lat,
                lng=body.location.lng,
                coord_type=body.location.coord_type,
                accuracy=body.location.accuracy,
                captured_at=body.captured_at,
                obligation_id=body.obligation_id,
                photo_upload_id=body.photo_upload_id,
                device_id=body.device_id,
            ),
        )
        self.respond(CheckinOut.model_validate(answer.as_doc()), status=201)


routes = [(r"/mp/v1/checkins", CheckinsHandler)]

"""`POST /mp/v1/checkins`: a supervised person's location check-in (信息化核查)."""

from __future__ import annotations

import datetime as dt
from typing import Literal

from pydantic import AwareDatetime, BaseModel, Field

from handlers.base import Strict, endpoint
from handlers.query import query
from miniprogram_api.base import MpHandler
from miniprogram_api.records import PAGE, OwnCheckinListOut, list_own_checkins
from models.checkins import CheckinAnswer, CheckinInput, CheckinStatus, Flag


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
    message: str = Field(description="What happened and what comes next, for the person (Chinese)")
    status: Literal["on_time", "late", "outside_area", "rejected"]
    flags: list[str]
    obligation_id: str | None
    obligation_status: str | None
    review: Literal["pending"] | None
    arrived_at: dt.datetime


# Whatever sent a check-in to review, the person is told the same: flags are the station's
# signals, not the person's business (and naming them would teach how to avoid them).
_REVIEW_NEXT = "司法所工作人员核对后会确认结果，并通过消息通知您。"
_MESSAGES = {
    CheckinStatus.ON_TIME: "签到成功，您已按时完成本次签到。",
    CheckinStatus.LATE: (
        "签到已收到，但已超过本次签到时间，记为逾期完成。请留意下次签到时间，按时签到。"
    ),
    CheckinStatus.OUTSIDE_AREA: (
        "签到已收到，但您所在的位置不在规定的活动范围内，已交司法所工作人员审核，"
        "审核结果会通过消息通知您；如有特殊情况，请及时联系您的工作人员。"
    ),
    CheckinStatus.REJECTED: (
        "签到未通过：照片与本人不一致。请本人在签到时间内重新拍照签到；"
        "如有疑问，请联系您的工作人员。"
    ),
}


def checkin_message(answer: CheckinAnswer) -> str:
    """What a person reads after checking in. Made from the stored answer alone, so a retry
    under the same key reads exactly what the first attempt did."""
    status = CheckinStatus(answer.status)
    if answer.review is None or status in (CheckinStatus.OUTSIDE_AREA, CheckinStatus.REJECTED):
        return _MESSAGES[status]
    if Flag.OFFLINE in answer.flags:
        return "签到已收到。您的签到在签到时间结束后才送达（可能因网络原因），" + _REVIEW_NEXT
    if status is CheckinStatus.LATE:
        return "签到已收到，但已超过本次签到时间，" + _REVIEW_NEXT
    return "签到已收到，" + _REVIEW_NEXT


class CheckinsHandler(MpHandler):
    # Only the person checks in; a guardian may read the person's check-ins.
    access = {"POST": "checkins.create", "GET": "mp.self"}
    max_body_bytes = 8 * 1024

    @endpoint(
        "Own recent check-ins (a guardian: the person's), newest first, with status and review "
        "outcome; no coordinates",
        response=OwnCheckinListOut,
        errors=(401, 403, 422),
        tags=("mini-program",),
        summary_zh="本人最近的签到记录及审核结果",
    )
    @query(PAGE)
    async def get(self) -> None:
        await list_own_checkins(self)

    @endpoint(
        "Check in (header `Idempotency-Key` required: a retry answers the first result; the "
        "same key with another body 409). Classified by arrival time; flags go to review",
        body=CheckinBody,
        response=CheckinOut,
        status=201,
        errors=(400, 401, 403, 404, 409, 422, 503),
        tags=("mini-program",),
        idempotency="required",
        codes=(
            ("idempotency_key_required", 422, "缺少或无效的请求编号（Idempotency-Key）"),
            ("not_a_subject", 403, "只有已绑定的本人可以签到，或档案已关闭"),
            ("window_closed", 422, "该签到时段已结束太久，无法补签"),
            ("no_open_window", 409, "当前没有需要签到的时段"),
            ("checkins_not_required", 403, "本人目前无需定位签到"),
            ("unknown_obligation", 404, "指定的签到任务不存在"),
            ("unknown_upload", 404, "指定的照片不存在或不属于本人"),
        ),
        summary_zh="定位签到（须带 Idempotency-Key）",
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
        self.respond(
            CheckinOut.model_validate(answer.as_doc() | {"message": checkin_message(answer)}),
            status=201,
        )


routes = [(r"/mp/v1/checkins", CheckinsHandler)]

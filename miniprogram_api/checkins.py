"""`POST /mp/v1/checkins`: a supervised person's location check-in (信息化核查)."""

from __future__ import annotations

import datetime as dt
import logging
from typing import Any, Literal

from pydantic import AwareDatetime, ConfigDict, Field

from handlers.base import GeoLocation, Out, RequestError, Strict, endpoint
from handlers.query import query
from miniprogram_api.base import MpHandler
from miniprogram_api.records import PAGE, OwnCheckinListOut, list_own_checkins
from models.checkins import CheckinAnswer, CheckinInput, CheckinStatus, Flag

log = logging.getLogger("anbang.mp.checkins")

_SCORE = Field(default=None, ge=0, le=3)


class SurveyBody(Strict):
    """The optional wellbeing survey (GET /mp/v1/wellbeing/survey has its questions and
    options): any question may be left out, or the whole survey."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {"mood": 4, "needs": ["work"], "phq2_1": 2, "phq2_2": 1, "gad2_1": 0, "gad2_2": 1}
            ]
        },
    )

    mood: int | None = Field(default=None, ge=1, le=5, title="今天的心情")
    needs: list[Literal["housing", "food", "work", "health", "family"]] = Field(
        default_factory=list, max_length=5, title="需要帮助的方面"
    )
    phq2_1: int | None = Field(default=None, ge=0, le=3, title="做事时提不起劲或没有兴趣")
    phq2_2: int | None = Field(default=None, ge=0, le=3, title="感到心情低落、沮丧或绝望")
    gad2_1: int | None = Field(default=None, ge=0, le=3, title="感觉紧张、焦虑或急切")
    gad2_2: int | None = Field(default=None, ge=0, le=3, title="不能够停止或控制担忧")

    def answers(self) -> dict[str, Any]:
        """What was answered (a skipped question is absent)."""
        return {k: v for k, v in self.model_dump().items() if v is not None and v != []}


class CheckinBody(Strict):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "location": {
                        "latitude": 28.0197,
                        "longitude": 120.6543,
                        "type": "gcj02",
                        "accuracy": 25,
                        "altitude": 12,
                        "speed": 0,
                        "verticalAccuracy": 10,
                        "horizontalAccuracy": 25,
                        "errMsg": "getLocation:ok",
                    },
                    "captured_at": "2026-11-02T09:00:00+08:00",
                    "photo_upload_id": "6720f1c2a1b2c3d4e5f60718",
                    "device_id": "c0ffee00d15ea5e",
                    "survey": {"mood": 2, "needs": [], "phq2_1": 0, "phq2_2": 1},
                }
            ]
        },
    )

    obligation_id: str | None = Field(default=None, min_length=1, max_length=200)
    # `type` and `accuracy` are required here: the check-in is classified by them.
    location: GeoLocation
    captured_at: AwareDatetime
    photo_upload_id: str | None = Field(default=None, min_length=1, max_length=200)
    # An id the mini-program keeps per installation (a device change raises a flag).
    device_id: str | None = Field(default=None, min_length=1, max_length=200)
    survey: SurveyBody | None = Field(default=None, title="身心状况问卷")


def require_fix(location: GeoLocation) -> None:
    """A check-in is classified by the coordinate system and the accuracy: both are needed."""
    missing = [
        {"field": f"location.{name}", "message": message}
        for name, value, message in (
            ("type", location.coord_type, "坐标系：此项为必填项（wgs84 或 gcj02）"),
            ("accuracy", location.accuracy, "定位精度：此项为必填项"),
        )
        if value is None
    ]
    if missing:
        raise RequestError(422, "validation_failed", "The request body is not valid.", missing)


class SurveyOut(Out):
    recorded: bool
    message: str = Field(description="For the person (Chinese)")


class CheckinOut(Out):
    id: str
    message: str = Field(description="What happened and what comes next, for the person (Chinese)")
    status: Literal["on_time", "late", "outside_area", "rejected"]
    flags: list[str]
    obligation_id: str | None
    obligation_status: str | None
    review: Literal["pending"] | None
    arrived_at: dt.datetime
    survey: SurveyOut | None = Field(
        default=None, description="The survey sent with the check-in, if any: kept or not"
    )

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "id": "6720f1c2a1b2c3d4e5f60719",
                    "message": "签到成功，您已按时完成本次签到。",
                    "status": "on_time",
                    "flags": [],
                    "obligation_id": "6720f1c2a1b2c3d4e5f60720",
                    "obligation_status": "done",
                    "review": None,
                    "arrived_at": "2026-11-02T01:00:00.123000Z",
                    "survey": {"recorded": True, "message": "感谢您填写问卷。"},
                }
            ]
        }
    )


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
    seen_in_batch = frozenset({"POST"})
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
        "same key with another body 409). Classified by arrival time; flags go to review. "
        "`location` is the `wx.getLocation` result with `type`; `survey` (optional) answers "
        "GET /mp/v1/wellbeing/survey: kept after the check-in, never instead of it",
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
            ("unknown_upload", 422, "指定的照片不存在或不属于本人：请重新上传"),
            ("invalid_survey", 422, "问卷的回答不在给出的选项中（`details` 逐项列出）"),
        ),
        summary_zh="定位签到（须带 Idempotency-Key）",
    )
    async def post(self) -> None:
        body = self.parse(CheckinBody)
        location = body.location
        require_fix(location)
        answers = body.survey.answers() if body.survey is not None else {}
        if answers:
            # Refused before the check-in is stored: a bad answer leaves nothing half-written.
            self.ctx.wellbeing.survey.check(answers)
        answer = await self.ctx.checkins.record(
            self.audit_context,
            self.idempotency_key(),
            CheckinInput(
                lat=location.lat,
                lng=location.lng,
                coord_type=location.coord_type or "wgs84",
                accuracy=location.accuracy or 0.0,
                captured_at=body.captured_at,
                obligation_id=body.obligation_id,
                photo_upload_id=body.photo_upload_id,
                device_id=body.device_id,
            ),
        )
        out = CheckinOut.model_validate(answer.as_doc() | {"message": checkin_message(answer)})
        if answers:
            out.survey = await self._keep_survey(answer.id, answers)
        self.respond(out, status=201)

    async def _keep_survey(self, checkin_id: str, answers: dict[str, Any]) -> SurveyOut:
        """After the check-in is stored, never instead of it: a survey that cannot be kept now
        is kept when the check-in is retried under its key (keyed on the check-in, once)."""
        try:
            outcome = await self.ctx.wellbeing.record(self.audit_context, checkin_id, answers)
        except Exception as exc:
            log.warning(
                "wellbeing survey not kept",
                extra={"fields": {"request_id": self.request_id, "exception": type(exc).__name__}},
            )
            return SurveyOut(
                recorded=False,
                message="问卷暂时未能保存，不影响本次签到。请稍后重新提交本次签到以补交问卷。",
            )
        if outcome is not None and (outcome.referral_id or outcome.alert_id):
            return SurveyOut(recorded=True, message="感谢您填写问卷，工作人员会尽快与您联系。")
        return SurveyOut(recorded=True, message="感谢您填写问卷。")


class SurveyOptionOut(Out):
    value: int | str
    label: str


class SurveyQuestionOut(Out):
    id: str = Field(description="The field of `survey` in POST /mp/v1/checkins that answers it")
    kind: Literal["single", "multiple"]
    preamble: str | None = Field(description="Shown above a group of questions")
    text: str
    options: list[SurveyOptionOut]


class SurveyFormOut(Out):
    version: str
    title: str
    intro: str
    skip_label: str
    questions: list[SurveyQuestionOut]

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "version": "wellbeing-2026.12",
                    "title": "身心状况小问卷",
                    "intro": "以下问题自愿填写，可以跳过。",
                    "skip_label": "跳过，直接签到",
                    "questions": [
                        {
                            "id": "mood",
                            "kind": "single",
                            "preamble": None,
                            "text": "今天您的心情怎么样？",
                            "options": [
                                {"value": 1, "label": "很好"},
                                {"value": 5, "label": "很差"},
                            ],
                        }
                    ],
                }
            ]
        }
    )


class WellbeingSurveyHandler(MpHandler):
    access = "mp.self"

    @endpoint(
        "The optional wellbeing survey shown with a check-in: its questions and options in "
        "Chinese, as the rules data holds them; answers go in the check-in's `survey`",
        response=SurveyFormOut,
        tags=("mini-program",),
        summary_zh="签到时的身心状况问卷（题目和选项，自愿填写）",
    )
    async def get(self) -> None:
        self.respond(SurveyFormOut.model_validate(self.ctx.wellbeing.survey.as_doc()))


routes = [
    (r"/mp/v1/checkins", CheckinsHandler),
    (r"/mp/v1/wellbeing/survey", WellbeingSurveyHandler),
]

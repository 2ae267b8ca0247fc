"""`POST /mp/v1/consents`: the privacy notice a person accepted, and the subscribe-message
templates they allowed in `wx.requestSubscribeMessage`."""

from __future__ import annotations

from typing import Annotated

from pydantic import ConfigDict, Field, model_validator

from handlers.base import Out, Strict, endpoint
from miniprogram_api.base import MpHandler
from models.consents import TEMPLATE_ID_PATTERN
from models.policy import SELF

# The form is the consent record's (models/consents.py): each id becomes a field name there.
TemplateId = Annotated[str, Field(pattern=TEMPLATE_ID_PATTERN)]


class ConsentBody(Strict):
    # Either the subscribe-message templates accepted (`wx.requestSubscribeMessage`), or the
    # privacy notice's version.
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [{"template_ids": ["Xk3f9_checkin-reminder"], "long_term": False}]
        },
    )

    template_ids: list[TemplateId] | None = Field(default=None, min_length=1, max_length=20)
    # Where the account's category allows long-term subscriptions (长期订阅).
    long_term: bool = False
    # A version label such as `2026-11` or `v1.2` (stored as given: printable ASCII only).
    privacy_notice_version: str | None = Field(default=None, pattern=r"^[A-Za-z0-9._-]{1,40}$")

    @model_validator(mode="after")
    def _one_kind(self) -> ConsentBody:
        if (self.template_ids is None) == (self.privacy_notice_version is None):
            raise ValueError("give either `template_ids` or `privacy_notice_version`")
        return self


class ConsentOut(Out):
    privacy_notice_version: str | None
    one_time: dict[str, int]
    long_term: list[str]


class ConsentsHandler(MpHandler):
    access = SELF

    @endpoint(
        "Record subscribe-message acceptances (one message each, or long-term) or the "
        "privacy-notice version accepted",
        body=ConsentBody,
        response=ConsentOut,
        errors=(401, 422),
        tags=("mini-program",),
        idempotency="optional",
        summary_zh="记录订阅消息授权或隐私政策同意",
    )
    async def post(self) -> None:
        body = self.parse(ConsentBody)
        user_id = str(self.identity.wechat_user_id)

        async def produce() -> tuple[ConsentOut, int]:
            consents = self.ctx.consents
            if body.privacy_notice_version is not None:
                await consents.accept_privacy_notice(
                    self.audit_context, user_id, body.privacy_notice_version
                )
            else:
                await consents.accept_templates(
                    self.audit_context, user_id, body.template_ids or [], long_term=body.long_term
                )
            state = await consents.state(user_id)
            out = ConsentOut(
                privacy_notice_version=state.privacy_notice_version,
                one_time=state.one_time,
                long_term=state.long_term,
            )
            return out, 200

        await self.respond_once(produce)


routes = [(r"/mp/v1/consents", ConsentsHandler)]

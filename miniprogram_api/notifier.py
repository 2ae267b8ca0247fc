"""The jobs process's notifier: WeChat subscribe messages with Chinese templates, sent only on
what the user accepted, with an SMS port for urgent messages nobody received in WeChat. Every
attempt is recorded; a user's daily quota is respected; WeChat being down never loses the
message (its in-app copy stands)."""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass
from typing import Any, Protocol

from models.clock import LOCAL_TZ, Clock
from models.consents import ConsentService
from models.mp_accounts import MpAccountService
from models.notifications import KIND_NAMES, DeliveryLog
from models.subjects import SubjectService
from models.wechat import (
    WeChatError,
    WeChatPort,
    WeChatQuota,
    WeChatUnavailable,
    WeChatUserRefused,
)

log = logging.getLogger("anbang.notifier")

# WeChat assigns template ids per mini-program; these are the stand-in's (configure the real
# ones with WECHAT_TEMPLATES in production).
DEV_TEMPLATES = {"reminder": "tmpl-reminder", "decision": "tmpl-decision", "alert": "tmpl-alert"}
# WeChat's `thing` fields hold at most 20 characters.
THING_MAX = 20


def _thing(text: str) -> str:
    return text if len(text) <= THING_MAX else text[: THING_MAX - 1] + "…"


def _time(iso: str | None) -> str:
    if not iso:
        return ""
    return dt.datetime.fromisoformat(iso).astimezone(LOCAL_TZ).strftime("%Y年%m月%d日 %H:%M")


def template_fields(kind: str, title: str, body: str, data: dict[str, Any]) -> dict[str, str]:
    """The template's fields, in Chinese, as each template on the platform defines them."""
    if kind == "reminder":
        return {
            "thing1": _thing(KIND_NAMES.get(str(data.get("kind")), title)),
            "time2": _time(data.get("window_start")),
            "time3": _time(data.get("window_end")),
            "thing4": _thing("请按时完成，逾期将通知您的工作人员"),
        }
    return {"thing1": _thing(title), "thing2": _thing(body)}


class SmsPort(Protocol):
    async def send(self, phone: str, text: str) -> bool: ...


class LocalSms:
    """Development and tests: nothing is sent; the texts are kept in memory (never logged)."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, str]] = []

    async def send(self, phone: str, text: str) -> bool:
        self.sent.append((phone, text))
        return True


@dataclass(frozen=True)
class NotifierLimits:
    # Subscribe messages per WeChat user per day: a person is reminded, not flooded.
    per_user_per_day: int = 10


class WeChatNotifier:
    """The `NotifierPort` for a process that pushes (the jobs process)."""

    def __init__(
        self,
        wechat: WeChatPort,
        accounts: MpAccountService,
        consents: ConsentService,
        subjects: SubjectService,
        deliveries: DeliveryLog,
        clock: Clock,
        sms: SmsPort,
        templates: dict[str, str] | None = None,
        limits: NotifierLimits = NotifierLimits(),
    ):
        self._wechat = wechat
        self._accounts = accounts
        self._consents = consents
        self._subjects = subjects
        self._deliveries = deliveries
        self._clock = clock
        self._sms = sms
        self._templates = templates or DEV_TEMPLATES
        self._limits = limits

    async def push(self, recipient: str, title: str, body: str, data: dict[str, Any]) -> bool:
        kind = str(data.get("template", "alert"))
        template_id = self._templates.get(kind)
        delivered = False
        # A decision notice names who may read it (a guardian only where the law allows).
        audience = data.get("audience")
        for user_id in await self._accounts.users_for(
            recipient, list(audience) if audience is not None else None
        ):
            if template_id is None:
                break
            delivered |= await self._to_user(
                recipient, user_id, kind, template_id, title, body, data
            )
        if not delivered and data.get("urgent"):
            delivered = await self._text(recipient, title, body)
        if not delivered:
            await self._deliveries.record(recipient, None, "in_app", template_id, "in_app_only")
        return delivered

    async def _to_user(
        self,
        recipient: str,
        user_id: str,
        kind: str,
        template_id: str,
        title: str,
        body: str,
        data: dict[str, Any],
    ) -> bool:
        since = self._clock.now() - dt.timedelta(days=1)
        if await self._deliveries.sent_since(user_id, since) >= self._limits.per_user_per_day:
            await self._deliveries.record(recipient, user_id, "wechat", template_id, "rate_limited")
            return False
        # Only what the user accepted: a one-time acceptance is used up by this message.
        if not await self._consents.consume(user_id, template_id):
            await self._deliveries.record(recipient, user_id, "wechat", template_id, "no_consent")
            return False
        openid = await self._accounts.openid(user_id)
        if openid is None:
            return False
        try:
            await self._wechat.send_subscribe_message(
                openid, template_id, template_fields(kind, title, body, data), page="pages/tasks"
            )
        except WeChatUserRefused:
            await self._consents.refuse_templates(user_id, [template_id])
            await self._deliveries.record(recipient, user_id, "wechat", template_id, "refused")
            return False
        except (WeChatQuota, WeChatUnavailable, WeChatError) as exc:
            # Not delivered: the acceptance is given back for a later message.
            await self._consents.restore(user_id, template_id)
            outcome = "quota" if isinstance(exc, WeChatQuota) else "failed"
            await self._deliveries.record(
                recipient, user_id, "wechat", template_id, outcome, type(exc).__name__
            )
            return False
        await self._deliveries.record(recipient, user_id, "wechat", template_id, "sent")
        return True

    async def _text(self, recipient: str, title: str, body: str) -> bool:
        """An urgent message nobody received in WeChat goes to the person's phone by SMS."""
        kind, _, target = recipient.partition(":")
        if kind != "subject":
            return False
        phone = await self._subjects.phone_for_notice(target)
        if not phone:
            return False
        try:
            sent = await self._sms.send(phone, f"【安帮】{title}：{body}")
        except Exception as exc:  # an SMS gateway's failure must not fail the sweep
            log.warning("sms failed", extra={"fields": {"exception": type(exc).__name__}})
            sent = False
        await self._deliveries.record(recipient, None, "sms", None, "sent" if sent else "failed")
        return sent

"""Decision notices: every decision about a person reaches them in the mini-program (and a bound
guardian where the law lets the guardian be told), in plain Chinese, once per decision step;
urgent ones are pushed as a subscribe message where the person consented, otherwise by SMS."""

from __future__ import annotations

import datetime as dt
import enum
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from models.clock import LOCAL_TZ
from models.mp_accounts import MpAccountService
from models.notifications import NotificationService
from models.subjects import SubjectService, SubjectStatus

log = logging.getLogger("anbang.decision_notices")


class NoticeKind(enum.StrEnum):
    LEAVE_APPROVED = "leave_approved"
    LEAVE_REJECTED = "leave_rejected"
    LEAVE_NEXT_LEVEL = "leave_next_level"
    LEAVE_RETURNED = "leave_returned"
    LEAVE_RETURN_OVERDUE = "leave_return_overdue"
    CHECKIN_ACCEPTED = "checkin_accepted"
    CHECKIN_REJECTED = "checkin_rejected"
    SANCTION_DECIDED = "sanction_decided"
    PRAISE_DECIDED = "praise_decided"
    ELOCATION_ORDERED = "elocation_ordered"
    ELOCATION_RENEWED = "elocation_renewed"
    ELOCATION_ENDED = "elocation_ended"
    TRANSFER_ACCEPTED = "transfer_accepted"
    REFERRAL_PLACED = "referral_placed"
    REFERRAL_WAITING = "referral_waiting"
    REFERRAL_OFFERED = "referral_offered"
    REFERRAL_UPDATED = "referral_updated"
    PROGRAM_ENDING = "program_ending"
    COUNSELING_BOOKED = "counseling_booked"
    COUNSELING_CANCELLED = "counseling_cancelled"
    DOCUMENT_ISSUED = "document_issued"


@dataclass(frozen=True)
class NoticeTemplate:
    """What the person reads: `{name}` fields are filled from the decision."""

    title: str
    body: str
    urgent: bool = False


# The one table of what each decision tells the person. Urgent: the person must act or may
# contest it soon (a refusal, an overdue return, a sanction, a device order, an ending term);
# those go out by SMS when no subscribe message was allowed.
NOTICES: Mapping[NoticeKind, NoticeTemplate] = {
    NoticeKind.LEAVE_APPROVED: NoticeTemplate(
        "外出申请已批准",
        "您{start}至{end}前往{destination}的外出申请已批准。请按时返回，返回后及时销假。",
    ),
    NoticeKind.LEAVE_REJECTED: NoticeTemplate(
        "外出申请未获批准",
        "您{start}至{end}前往{destination}的外出申请未获批准。理由：{reason}。"
        "如有疑问，请联系您的工作人员。",
        urgent=True,
    ),
    NoticeKind.LEAVE_NEXT_LEVEL: NoticeTemplate(
        "外出申请审批进度",
        "您{start}至{end}的外出申请已经{done}同意，正在等待{next}审批，请耐心等候。",
    ),
    NoticeKind.LEAVE_RETURNED: NoticeTemplate(
        "销假已登记",
        "您{start}至{end}的外出已于{returned_on}销假{late}。",
    ),
    NoticeKind.LEAVE_RETURN_OVERDUE: NoticeTemplate(
        "请尽快销假",
        "您的外出已于{end}到期，目前尚未销假。请尽快到司法所或通过小程序销假。",
        urgent=True,
    ),
    NoticeKind.CHECKIN_ACCEPTED: NoticeTemplate(
        "签到审核通过",
        "您{at}的签到经工作人员审核，已予认可。说明：{reason}。",
    ),
    NoticeKind.CHECKIN_REJECTED: NoticeTemplate(
        "签到审核未通过",
        "您{at}的签到经工作人员审核，未予认可。理由：{reason}。如有疑问，请联系您的工作人员。",
        urgent=True,
    ),
    NoticeKind.SANCTION_DECIDED: NoticeTemplate(
        "{measure}决定",
        "经审批，决定对您{action}。事由：{reason}。如有异议，可以向社区矫正机构提出。",
        urgent=True,
    ),
    NoticeKind.PRAISE_DECIDED: NoticeTemplate(
        "表扬决定",
        "经审批，决定对您给予表扬。事由：{reason}。希望您继续保持。",
    ),
    NoticeKind.ELOCATION_ORDERED: NoticeTemplate(
        "电子定位决定",
        "经审批，自{start}至{end}对您使用电子定位装置。期间请随身携带、妥善保管，不要拆除或损坏。",
        urgent=True,
    ),
    NoticeKind.ELOCATION_RENEWED: NoticeTemplate(
        "电子定位期限延长",
        "经审批，对您使用电子定位装置的期限延长至{end}。",
    ),
    NoticeKind.ELOCATION_ENDED: NoticeTemplate(
        "电子定位已解除",
        "对您使用电子定位装置的期限已于{end}届满，电子定位已解除。",
    ),
    NoticeKind.TRANSFER_ACCEPTED: NoticeTemplate(
        "执行地变更已同意",
        "您的执行地变更申请已获{to_org}同意接收。请于{report_due}前到新执行地的社区矫正机构报到。",
    ),
    NoticeKind.REFERRAL_PLACED: NoticeTemplate(
        "帮扶已安排",
        "您的帮扶申请已安排：{resource}。",
    ),
    NoticeKind.REFERRAL_WAITING: NoticeTemplate(
        "帮扶申请候补中",
        "{resource}暂无空余名额，您已进入候补名单，目前排在第{position}位。有名额时会通知您。",
    ),
    NoticeKind.REFERRAL_OFFERED: NoticeTemplate(
        "已为您联系到帮扶资源",
        "已为您联系到帮扶资源，请尽快与您的工作人员确认。",
    ),
    NoticeKind.REFERRAL_UPDATED: NoticeTemplate(
        "帮扶申请进度",
        "您的帮扶申请：{status}。",
    ),
    NoticeKind.PROGRAM_ENDING: NoticeTemplate(
        "{program}期限即将届满",
        "您的{program}期限将于{end}届满。请按工作人员的安排办理相关手续。",
        urgent=True,
    ),
    NoticeKind.COUNSELING_BOOKED: NoticeTemplate(
        "心理辅导预约",
        "已为您预约心理辅导，时间：{start}至{end_time}。请按时参加。",
    ),
    NoticeKind.COUNSELING_CANCELLED: NoticeTemplate(
        "心理辅导预约已取消",
        "您{start}的心理辅导预约已取消。如需重新预约，请联系您的工作人员。",
    ),
    NoticeKind.DOCUMENT_ISSUED: NoticeTemplate(
        "您有一份新的文书",
        "{document}已送达，请在小程序中查看。",
    ),
}

# A reason an officer left empty is still said in words, never as a blank or a code.
NO_REASON = "未说明"
LEVEL_TEXT: Mapping[str, str] = {
    "station": "司法所",
    "county": "县级社区矫正机构",
    "city": "市级社区矫正机构",
}
PROGRAM_TEXT: Mapping[str, str] = {
    "community_corrections": "社区矫正",
    "resettlement": "安置帮教",
    "drug_rehab": "社区戒毒（康复）",
    "mental_health": "严重精神障碍患者管理",
}
# Each sanction as the person is told of it: its name, and what was decided about them.
SANCTION_TEXT: Mapping[str, tuple[str, str]] = {
    "admonish": ("训诫", "给予训诫"),
    "warn": ("警告", "给予警告"),
    "public_security_penalty": ("提请治安管理处罚", "提请公安机关依法给予治安管理处罚"),
    "revoke_request": ("提请撤销缓刑、假释", "提请人民法院依法撤销缓刑、假释"),
    "imprison_request": ("提请收监执行", "提请决定机关依法收监执行"),
}


def day_text(value: dt.date | dt.datetime | str) -> str:
    """A day as a person writes it (2026年11月2日), in Asia/Shanghai."""
    if isinstance(value, str):
        value = dt.date.fromisoformat(value[:10])
    if isinstance(value, dt.datetime):
        value = value.astimezone(LOCAL_TZ).date()
    return f"{value.year}年{value.month}月{value.day}日"


def moment_text(value: dt.datetime) -> str:
    """A moment in Asia/Shanghai (2026年11月2日 09:30)."""
    local = value.astimezone(LOCAL_TZ)
    return f"{day_text(local)} {local:%H:%M}"


def reason_text(reason: str | None) -> str:
    """The officer's reason as written; its closing full stop is the template's."""
    text = " ".join((reason or "").split()).rstrip("。.")
    return text or NO_REASON


class _Fields(dict[str, str]):
    # A field the caller did not give reads as a plain word, never as `{name}` or a KeyError.
    def __missing__(self, key: str) -> str:
        return NO_REASON if key == "reason" else ""


class DecisionNoticeService:
    """Turns a stored decision into the person's message (and the guardian's, where due)."""

    def __init__(
        self,
        *,
        notifications: NotificationService,
        subjects: SubjectService,
        accounts: MpAccountService,
    ):
        self._notifications = notifications
        self._subjects = subjects
        self._accounts = accounts

    async def notify(
        self,
        kind: NoticeKind,
        subject_id: str,
        ref_type: str,
        ref_id: str,
        *,
        step: str | int = "",
        fields: Mapping[str, Any] | None = None,
    ) -> bool:
        """Record the notice of a stored decision, once per (kind, ref, step): False when it
        was recorded already, or could not be. Never raises: the decision stands either way
        and its push (queued for the jobs process) has its own record of every attempt."""
        template = NOTICES[kind]
        values = _Fields({k: str(v) for k, v in (fields or {}).items() if v is not None})
        try:
            subject = await self._subjects.document(subject_id)
            if subject is None or subject.get("status") == SubjectStatus.SHREDDED:
                return False
            return await self._notifications.record_sealed(
                subject_id=subject_id,
                key_id=subject.get("dek_id"),
                kind=str(kind),
                title=template.title.format_map(values),
                body=template.body.format_map(values),
                ref={"type": ref_type, "id": ref_id},
                audience=await self._audience(subject_id),
                urgent=template.urgent,
                dedupe_key=f"notice:{kind}:{ref_type}:{ref_id}:{step}",
            )
        except Exception as exc:
            # The decision is stored already; a notice that cannot be written now is logged
            # (never its text) and must not turn the decision's answer into an error.
            log.warning(
                "decision notice not recorded",
                extra={"fields": {"kind": str(kind), "exception": type(exc).__name__}},
            )
            return False

    async def _audience(self, subject_id: str) -> tuple[str, ...]:
        """Who reads the notice. A guardian is told while the person has one in law: a minor
        (民法典 Art. 27, a guardian acts for and is answerable for the minor) or a
        mental-health patient (精神卫生法 Art. 28-31, the guardian takes part in care and
        decisions). That is the rule a guardian binding is issued under (models/mp_accounts.py)
        and it is asked again at each notice, not taken from the binding: a minor who has come
        of age (民法典 Art. 17-18) acts alone, and a decision about an adult is their own
        personal information (个人信息保护法 Art. 13), so an old binding is not told."""
        if await self._accounts.guardian_is_told(subject_id):
            return ("subject", "guardian")
        return ("subject",)

    async def document_issued(self, subject_id: str, document_id: str, document_title: str) -> bool:
        """A document (文书) has been issued to the person: kind `document_issued`, ref
        `{type: "document", id}`, once per document. `document_title` is its Chinese name."""
        return await self.notify(
            NoticeKind.DOCUMENT_ISSUED,
            subject_id,
            "document",
            document_id,
            fields={"document": document_title},
        )

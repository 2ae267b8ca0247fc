"""转诊: a severe-mental-disorder patient whose risk level reaches 3 is referred to a psychiatric
institution (严重精神障碍管理治疗工作规范 2018, 分类干预: 病情不稳定 → 立即转诊到上级医院).

A task opens when the level crosses the rule's threshold (at opening or on a change), with its
deadline from the rules data, the health worker who does it (the 精防医生 who recorded the level)
and, once recorded, its outcome: referred to which institution on which day, or not referred and
why. The institution and the reason are health data, sealed with the person's key.
"""

from __future__ import annotations

import datetime as dt
import enum
from collections.abc import Collection
from dataclasses import dataclass
from typing import Any

from pymongo import ASCENDING, IndexModel, ReturnDocument
from pymongo.errors import DuplicateKeyError

from models.audit import AuditContext, AuditService
from models.clock import LOCAL_TZ, Clock
from models.codec import FieldCodec
from models.errors import Conflict, InvalidInput, NotFound
from models.policy import Role
from models.programs import OPEN_STATUSES, ProgramType
from models.rules import RulesService
from models.scope import ScopeService
from models.store import CollectionSpec, Store
from models.subjects import SubjectService

PSYCHIATRIC_REFERRALS = CollectionSpec(
    "psychiatric_referrals",
    (
        IndexModel([("subject_id", ASCENDING), ("assessed_on", ASCENDING)]),
        IndexModel([("program_id", ASCENDING), ("status", ASCENDING)]),
        # Caseloads: the open tasks of the files a worker reaches, by deadline.
        IndexModel([("status", ASCENDING), ("subject_id", ASCENDING), ("due", ASCENDING)]),
    ),
)
RULE_FROM_LEVEL = "mental_health.referral_from_level"
RULE_DAYS = "mental_health.referral_days"


class ReferralStatus(enum.StrEnum):
    OPEN = "open"
    REFERRED = "referred"
    NOT_REFERRED = "not_referred"


@dataclass
class ReferralView:
    id: str
    subject_id: str
    program_id: str
    risk_level: int
    assessed_on: str
    due: str
    overdue: bool
    assigned_to: str | None
    for_role: str
    status: str
    institution: str | None
    referred_on: str | None
    late: bool | None
    reason: str | None
    recorded_by: str | None
    rule_keys: list[str]
    rules_version: str


class PsychiatricReferralService:
    collections = (PSYCHIATRIC_REFERRALS,)
    # The institution and the reason not referred: sealed with the person's data key.
    sealed_fields = (("psychiatric_referrals", None),)

    def __init__(
        self,
        store: Store,
        clock: Clock,
        audit: AuditService,
        codec: FieldCodec,
        subjects: SubjectService,
        rules: RulesService,
        *,
        scope: ScopeService,
    ):
        self._referrals = store.collection(PSYCHIATRIC_REFERRALS)
        self._clock = clock
        self._audit = audit
        self._codec = codec
        self._subjects = subjects
        self._scope = scope
        self._rules = rules

    def today(self) -> dt.date:
        return self._clock.now().astimezone(LOCAL_TZ).date()

    # --- opening tasks ----------------------------------------------------------------------

    async def on_program_change(self, program: dict[str, Any]) -> bool:
        """Listener of every program change: when a mental-health patient's latest risk level
        has just reached the rule's level (from below, or at opening), a referral task opens.
        One per crossing, and none while one is open: re-running never adds a task."""
        if program["type"] != ProgramType.MENTAL_HEALTH or program["status"] not in [
            str(s) for s in OPEN_STATUSES
        ]:
            return False
        history = program["details"].get("risk_history") or []
        if not history:
            return False
        rules = await self._rules.for_org(str(program["org_id"]))
        threshold = rules.int(RULE_FROM_LEVEL)
        index = len(history) - 1
        latest = history[index]
        if int(latest["level"]) < threshold:
            return False
        if index > 0 and int(history[index - 1]["level"]) >= threshold:
            return False  # still unstable: the task of the crossing stands
        pid = str(program["_id"])
        if await self._referrals.find_one(
            {"program_id": pid, "status": str(ReferralStatus.OPEN)}, {"_id": 1}
        ):
            return False
        assessed = dt.date.fromisoformat(str(latest["at"])[:10])
        # 立即转诊: a matter of hours for a patient at risk, so counted in calendar days (a
        # hospital admits on a Sunday), not as a procedural 期间 that a rest day extends.
        due = assessed + dt.timedelta(days=rules.int(RULE_DAYS))
        opened_by = (program.get("history") or [{}])[0].get("by")
        doc = {
            "_id": f"{pid}:risk{index}",
            "subject_id": program["subject_id"],
            "program_id": pid,
            "org_path": program["org_path"],
            "risk_level": int(latest["level"]),
            "assessed_on": assessed.isoformat(),
            "due": due.isoformat(),
            # The health worker (精防医生) who recorded the level does it; any health worker
            # reaching the file may record the outcome.
            "assigned_to": latest.get("by") or opened_by,
            "for_role": str(Role.HEALTH_WORKER),
            "status": str(ReferralStatus.OPEN),
            "rule_keys": [RULE_FROM_LEVEL, RULE_DAYS],
            "rules_version": rules.version,
            "created_at": self._clock.now(),
        }
        try:
            await self._referrals.insert_one(doc)
        except DuplicateKeyError:
            return False
        return True

    # --- reads ----------------------------------------------------------------------------

    async def for_subject(self, ctx: AuditContext, subject_id: str) -> list[ReferralView]:
        """A person's referral tasks, newest first; empty for a caller who does not see the
        health data on the file (a referral tells the risk level)."""
        await self._scope.require(ctx, subject_id, "programs.read")
        access = await self._scope.access(ctx.identity, [subject_id], "programs.read")
        found: list[ReferralView] = []
        if subject_id in access and access[subject_id].health:
            async for doc in self._referrals.find({"subject_id": subject_id}).sort(
                "assessed_on", -1
            ):
                found.append(await self._view(doc))
        await self._audit.record(
            ctx,
            "psychiatric_referrals.read",
            resource="subject",
            resource_id=subject_id,
            subject_id=subject_id,
            details={"count": len(found)},
        )
        return found

    async def open_for(self, subject_ids: Collection[str]) -> list[dict[str, Any]]:
        """The open tasks of these files (for a caseload), by deadline: no sealed field."""
        today = self.today().isoformat()
        return [
            {
                "id": doc["_id"],
                "subject_id": doc["subject_id"],
                "kind": "psychiatric_referral",
                "program_id": doc["program_id"],
                "risk_level": doc["risk_level"],
                "due": doc["due"],
                "overdue": doc["due"] < today,
                "assigned_to": doc.get("assigned_to"),
                "status": doc["status"],
            }
            async for doc in self._referrals.find(
                {"status": str(ReferralStatus.OPEN), "subject_id": {"$in": list(subject_ids)}}
            ).sort("due", ASCENDING)
        ]

    # --- the outcome ----------------------------------------------------------------------

    async def record_outcome(
        self,
        ctx: AuditContext,
        referral_id: str,
        *,
        referred: bool,
        institution: str | None,
        referred_on: dt.date | None,
        reason: str | None,
    ) -> ReferralView:
        """Referred (to which institution, on which day) or not referred (and why)."""
        doc = await self._referrals.find_one({"_id": referral_id})
        if doc is None:
            raise NotFound("No such referral.")
        subject = await self._scope.require(ctx, doc["subject_id"], "psychiatric_referrals.record")
        institution = " ".join((institution or "").split()) or None
        reason = " ".join((reason or "").split()) or None
        assessed = dt.date.fromisoformat(doc["assessed_on"])
        if referred:
            if institution is None:
                raise _invalid("institution", "请填写转诊的精神卫生医疗机构。")
            if referred_on is None:
                raise _invalid("referred_on", "请填写转诊日期。")
            if referred_on < assessed:
                raise _invalid("referred_on", "转诊日期不能早于危险性评估日期。")
            if referred_on > self.today():
                raise _invalid("referred_on", "转诊日期不能晚于今天。")
            if reason is not None:
                raise _invalid("reason", "已转诊的，无需填写未转诊原因。")
        else:
            if reason is None:
                raise _invalid("reason", "请填写未转诊的原因。")
            if institution is not None or referred_on is not None:
                field = "institution" if institution is not None else "referred_on"
                raise _invalid(field, "未转诊的，不填写转诊机构和日期。")
        if doc["status"] != ReferralStatus.OPEN:
            raise Conflict(
                "The outcome of this referral is recorded already.",
                code="invalid_transition",
                details={"status": doc["status"]},
                message_zh="该转诊已记录结果。",
            )
        key = subject.get("dek_id")

        async def seal(name: str, value: str | None) -> Any:
            if value is None:
                return None
            return await self._codec.seal(
                doc["subject_id"], key, "psychiatric_referrals", referral_id, name, value
            )

        status = ReferralStatus.REFERRED if referred else ReferralStatus.NOT_REFERRED
        change = {
            "status": str(status),
            "institution": await seal("institution", institution),
            "referred_on": referred_on.isoformat() if referred_on else None,
            "late": referred_on.isoformat() > doc["due"] if referred_on else None,
            "reason": await seal("reason", reason),
            "recorded_by": ctx.identity.user_id,
            "recorded_at": self._clock.now(),
        }
        async with self._audit.change(
            ctx,
            "psychiatric_referrals.record",
            resource="psychiatric_referral",
            resource_id=referral_id,
            subject_id=doc["subject_id"],
            details={"status": str(status), "late": change["late"]},
        ):
            updated = await self._referrals.find_one_and_update(
                {"_id": referral_id, "status": str(ReferralStatus.OPEN)},
                {"$set": change},
                return_document=ReturnDocument.AFTER,
            )
            if updated is None:
                raise Conflict("The referral changed meanwhile.", code="invalid_transition")
        return await self._view(updated)

    async def _view(self, doc: dict[str, Any]) -> ReferralView:
        rid = doc["_id"]

        async def opened(name: str) -> str | None:
            blob = doc.get(name)
            if blob is None:
                return None
            return await self._codec.open("psychiatric_referrals", rid, name, blob)

        return ReferralView(
            id=rid,
            subject_id=doc["subject_id"],
            program_id=doc["program_id"],
            risk_level=doc["risk_level"],
            assessed_on=doc["assessed_on"],
            due=doc["due"],
            overdue=doc["status"] == ReferralStatus.OPEN and doc["due"] < self.today().isoformat(),
            assigned_to=doc.get("assigned_to"),
            for_role=doc["for_role"],
            status=doc["status"],
            institution=await opened("institution"),
            referred_on=doc.get("referred_on"),
            late=doc.get("late"),
            reason=await opened("reason"),
            recorded_by=doc.get("recorded_by"),
            rule_keys=list(doc["rule_keys"]),
            rules_version=doc["rules_version"],
        )


def _invalid(field: str, message_zh: str) -> InvalidInput:
    """Bad input a person reads: the field named, the message in Chinese."""
    return InvalidInput(
        f"Invalid {field}.",
        details=[{"field": field, "message": message_zh}],
        message_zh=message_zh,
    )

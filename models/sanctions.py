"""考核奖惩: praise and sanctions along their approval chains, 脱管 episodes, and suggestions.

The station investigates and proposes (the chain's first step); the county decides 训诫 and 警告,
and decides to submit 治安管理处罚 requests to the police and 撤销/收监 requests to the court or the
deciding authority (社区矫正法 Arts. 28, 46, 49): the decision recorded here is that submission, not
the outcome outside. Suggestions are computed from the rules and recorded episodes; a suggestion
is never applied by itself: someone files it as a sanction and the chain decides.
"""

from __future__ import annotations

import builtins  # `list` in a service class names its method; `builtins.list` the type
import datetime as dt
import enum
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from bson import ObjectId
from pymongo import ASCENDING, DESCENDING, IndexModel

from models.approvals import COMMENTS, ApprovalChain, ApprovalStatus, open_steps, record_step
from models.audit import AuditContext, AuditService
from models.clock import LOCAL_TZ, Clock
from models.codec import FieldCodec
from models.decision_notices import SANCTION_TEXT, DecisionNoticeService, NoticeKind, reason_text
from models.errors import Conflict, InvalidInput, NotFound
from models.ids import parse_id
from models.orgs import node_at
from models.periods import add_months
from models.programs import ProgramService, ProgramType
from models.rules import EffectiveRules, RulesService
from models.scope import ScopeService
from models.store import CollectionSpec, Store
from models.subjects import SubjectService

SANCTIONS = CollectionSpec(
    "sanctions",
    (
        IndexModel([("subject_id", ASCENDING), ("created_at", ASCENDING)]),
        IndexModel([("org_path", ASCENDING), ("status", ASCENDING)]),
    ),
)
DETACHMENTS = CollectionSpec(
    "detachments",
    (
        IndexModel([("subject_id", ASCENDING), ("start_date", ASCENDING)]),
        # Monthly reports: a subtree's episodes by when they began.
        IndexModel([("org_path", ASCENDING), ("start_date", ASCENDING)]),
    ),
)


MAX_LIST = 200


class SanctionKind(enum.StrEnum):
    PRAISE = "praise"  # 表扬
    ADMONISH = "admonish"  # 训诫
    WARN = "warn"  # 警告
    PUBLIC_SECURITY_PENALTY = "public_security_penalty"  # 提请治安管理处罚
    REVOKE_REQUEST = "revoke_request"  # 提请撤销缓刑/假释
    IMPRISON_REQUEST = "imprison_request"  # 提请收监执行


# Decisions the county submits elsewhere: approval here means "submitted", and to whom.
SUBMITTED_TO: Mapping[SanctionKind, str] = {
    SanctionKind.PUBLIC_SECURITY_PENALTY: "police",
    SanctionKind.REVOKE_REQUEST: "court",
    SanctionKind.IMPRISON_REQUEST: "deciding_authority",
}


@dataclass
class SanctionView:
    id: str
    subject_id: str
    kind: str
    reason: str | None
    detachment_id: str | None
    status: str
    levels: list[str]
    rule: str
    steps: list[dict[str, Any]]
    next_level: str | None
    rules_version: str
    submitted_to: str | None
    decided_at: str | None
    # On lists only: the person's name as the reader may see it (masked for a juvenile).
    subject_name: str | None = None


@dataclass
class DetachmentView:
    id: str
    subject_id: str
    start_date: str
    end_date: str | None
    days: int


@dataclass(frozen=True)
class Suggestion:
    kind: str
    rule: str
    value: Any
    rules_version: str
    basis: dict[str, Any]


def detachment_days(start: dt.date, end: dt.date) -> int:
    """How long a 脱管 lasted: the days elapsed from losing contact to regaining it (lost on
    1 March, found on 11 March: 10 days). An open episode is measured to today."""
    return (end - start).days


def suggest_for_detachment(start: dt.date, end: dt.date, rules: EffectiveRules) -> Suggestion:
    """脱管 up to `detachment.warn_after_days` suggests 训诫, beyond it 警告, and beyond
    `detachment.revoke_after_months` (counted as the law counts months) 提请撤销."""
    days = detachment_days(start, end)
    months = rules.int("detachment.revoke_after_months")
    basis = {"days": days, "start_date": start.isoformat(), "end_date": end.isoformat()}
    if end > add_months(start, months):
        kind, key = SanctionKind.REVOKE_REQUEST, "detachment.revoke_after_months"
    elif days > rules.int("detachment.warn_after_days"):
        kind, key = SanctionKind.WARN, "detachment.warn_after_days"
    else:
        kind, key = SanctionKind.ADMONISH, "detachment.warn_after_days"
    return Suggestion(str(kind), key, rules[key], rules.version, basis)


# What ends a run of uncorrected sanctions: a praise (the person corrected their conduct), or the
# escalation the run led to (two 训诫 answered by a 警告 are not counted towards another).
RESET_BY: Mapping[SanctionKind, frozenset[SanctionKind]] = {
    SanctionKind.ADMONISH: frozenset({SanctionKind.PRAISE, SanctionKind.WARN}),
    SanctionKind.WARN: frozenset({SanctionKind.PRAISE, SanctionKind.REVOKE_REQUEST}),
}


def uncorrected(decided: Sequence[Mapping[str, Any]], kind: SanctionKind) -> list[str]:
    """The ids of approved sanctions of `kind` still standing: those decided after the last
    sanction that resets them (RESET_BY). `decided` is every approved sanction of the person in
    the order decided."""
    standing: list[str] = []
    for doc in decided:
        if doc["kind"] in RESET_BY[kind]:
            standing = []
        elif doc["kind"] == kind:
            standing.append(str(doc["_id"]))
    return standing


class SanctionService:
    collections = (SANCTIONS, DETACHMENTS)
    # Where this service keeps fields sealed with a subject's data key (for key rotation).
    sealed_fields = (("sanctions", None), ("sanctions", COMMENTS))

    def __init__(
        self,
        store: Store,
        clock: Clock,
        audit: AuditService,
        codec: FieldCodec,
        subjects: SubjectService,
        programs: ProgramService,
        rules: RulesService,
        *,
        notices: DecisionNoticeService,
        scope: ScopeService,
    ):
        self._sanctions = store.collection(SANCTIONS)
        self._notices = notices
        self._detachments = store.collection(DETACHMENTS)
        self._clock = clock
        self._audit = audit
        self._codec = codec
        self._subjects = subjects
        self._scope = scope
        self._programs = programs
        self._rules = rules

    def today(self) -> dt.date:
        return self._clock.now().astimezone(LOCAL_TZ).date()

    async def _corrections_subject(
        self, ctx: AuditContext, subject_id: str, action: str
    ) -> dict[str, Any]:
        subject = await self._scope.require(ctx, subject_id, action)
        # 考核奖惩 and 脱管 are corrections measures (社区矫正法 Art. 28).
        if await self._programs.open_program(subject_id, ProgramType.COMMUNITY_CORRECTIONS) is None:
            raise Conflict(
                "Only a person under community corrections is praised or sanctioned here.",
                code="not_under_corrections",
            )
        return subject

    # --- 脱管 episodes --------------------------------------------------------------------------

    async def record_detachment(
        self, ctx: AuditContext, subject_id: str, start: dt.date, end: dt.date | None
    ) -> DetachmentView:
        """A 脱管 episode (contact lost from `start`, regained on `end`, or still lost). The
        scheduler will record these from missed obligations; staff record them by hand now."""
        subject = await self._corrections_subject(ctx, subject_id, "detachments.record")
        today = self.today()
        if start > today or (end is not None and end > today):
            raise InvalidInput(
                "A 脱管 episode cannot lie in the future.", details=[{"field": "start_date"}]
            )
        if end is not None and end < start:
            raise InvalidInput(
                "The episode ends before it starts.", details=[{"field": "end_date"}]
            )
        doc = {
            "_id": ObjectId(),
            "subject_id": subject_id,
            # Where it happened, for the station's and county's monthly reports.
            "org_path": list(subject["org_path"]),
            "start_date": start.isoformat(),
            "end_date": end.isoformat() if end else None,
            "recorded_by": ctx.identity.user_id,
            "created_at": self._clock.now(),
        }
        async with self._audit.change(
            ctx,
            "detachments.record",
            resource="detachment",
            resource_id=str(doc["_id"]),
            subject_id=subject_id,
            details={"days": detachment_days(start, end or today), "open": end is None},
        ):
            await self._detachments.insert_one(doc)
        return self._detachment_view(doc, today)

    async def open_detachment(self, subject_id: str, start: dt.date) -> tuple[str, bool]:
        """The scheduler's side: contact is lost from `start`. Answers the open episode's id and
        whether this call opened it (an open episode is never opened twice)."""
        existing = await self._detachments.find_one({"subject_id": subject_id, "end_date": None})
        if existing is not None:
            return str(existing["_id"]), False
        subject = await self._subjects.document(subject_id)
        doc = {
            "_id": ObjectId(),
            "subject_id": subject_id,
            "org_path": list(subject["org_path"]) if subject else [],
            "start_date": start.isoformat(),
            "end_date": None,
            "recorded_by": "system",
            "created_at": self._clock.now(),
        }
        await self._detachments.insert_one(doc)
        return str(doc["_id"]), True

    async def close_detachment(self, subject_id: str, end: dt.date) -> bool:
        """Contact regained on `end`: the open episode, if any, ends."""
        result = await self._detachments.update_one(
            {"subject_id": subject_id, "end_date": None},
            {"$set": {"end_date": end.isoformat(), "closed_at": self._clock.now()}},
        )
        return result.modified_count == 1

    def _detachment_view(self, doc: Mapping[str, Any], today: dt.date) -> DetachmentView:
        start = dt.date.fromisoformat(doc["start_date"])
        end = dt.date.fromisoformat(doc["end_date"]) if doc.get("end_date") else today
        return DetachmentView(
            id=str(doc["_id"]),
            subject_id=doc["subject_id"],
            start_date=doc["start_date"],
            end_date=doc.get("end_date"),
            days=detachment_days(start, end),
        )

    # --- proposing and deciding -----------------------------------------------------------------

    async def propose(
        self,
        ctx: AuditContext,
        subject_id: str,
        kind: SanctionKind,
        reason: str,
        detachment_id: str | None = None,
    ) -> SanctionView:
        """File a praise or sanction with its reason; its chain comes from `sanctions.chain.*`.
        Naming the 脱管 episode it answers retires that episode's suggestion."""
        subject = await self._corrections_subject(ctx, subject_id, "sanctions.propose")
        reason = " ".join(reason.split())
        if not reason:
            raise InvalidInput("State the reason.", details=[{"field": "reason"}])
        if detachment_id is not None:
            episode = await self._detachments.find_one(
                {"_id": parse_id(detachment_id, "episode"), "subject_id": subject_id}
            )
            if episode is None:
                raise InvalidInput(
                    "No such 脱管 episode of this person.", details=[{"field": "detachment_id"}]
                )
        rules = await self._rules.for_org(str(subject["org_id"]))
        chain = ApprovalChain.from_rules(rules, f"sanctions.chain.{kind}")
        sanction_id = ObjectId()
        sid = str(sanction_id)
        now = self._clock.now()
        doc = {
            "_id": sanction_id,
            "subject_id": subject_id,
            "org_id": str(subject["org_id"]),
            "org_path": list(subject["org_path"]),
            "kind": str(kind),
            "reason": await self._codec.seal(
                subject_id, subject.get("dek_id"), "sanctions", sid, "reason", reason
            ),
            "detachment_id": detachment_id,
            "status": str(chain.status),
            "approval": chain.as_doc(),
            "submitted_to": SUBMITTED_TO.get(kind),
            "decided_at": None,
            "proposed_by": ctx.identity.user_id,
            "created_at": now,
            "updated_at": now,
            "version": 1,
        }
        async with self._audit.change(
            ctx,
            "sanctions.propose",
            resource="sanction",
            resource_id=sid,
            subject_id=subject_id,
            details={"kind": str(kind), "rule": chain.rule, "rules_version": rules.version},
        ):
            await self._sanctions.insert_one(doc)
        return await self._view(doc)

    async def _load(self, ctx: AuditContext, sanction_id: str, action: str) -> dict[str, Any]:
        doc = await self._sanctions.find_one({"_id": parse_id(sanction_id, "sanction")})
        if doc is None:
            raise NotFound("No such sanction.")
        await self._scope.require(ctx, doc["subject_id"], action)
        return doc

    async def decide(
        self, ctx: AuditContext, sanction_id: str, approve: bool, comment: str
    ) -> SanctionView:
        doc = await self._load(ctx, sanction_id, "sanctions.decide")
        rules = await self._rules.for_org(doc["org_id"])
        chain = ApprovalChain.from_doc(doc["approval"])
        step = chain.step(
            ctx.identity, doc["org_path"], approve, comment, self._clock.now(), rules.version
        )
        subject = await self._subjects.document(doc["subject_id"]) or {}
        updated = await record_step(
            self._sanctions,
            self._audit,
            ctx,
            doc,
            step,
            action="sanctions.decide",
            resource="sanction",
            codec=self._codec,
            key_id=subject.get("dek_id"),
            when_final={"decided_at": step["at"]},
        )
        view = await self._view(updated)
        if view.status == ApprovalStatus.APPROVED:
            # Only the decision reaches the person: a proposal refused on the way never did.
            measure, action = SANCTION_TEXT.get(view.kind, ("", ""))
            await self._notices.notify(
                NoticeKind.PRAISE_DECIDED
                if view.kind == SanctionKind.PRAISE
                else NoticeKind.SANCTION_DECIDED,
                view.subject_id,
                "sanction",
                view.id,
                fields={"measure": measure, "action": action, "reason": reason_text(view.reason)},
            )
        return view

    async def list(self, ctx: AuditContext, status: str | None, limit: int) -> list[SanctionView]:
        """Praise and sanctions filed under the caller's subtree, oldest first (the decision
        queue of each level)."""
        query: dict[str, Any] = {"org_path": ctx.identity.org_id}
        if status:
            query["status"] = status
        docs = [
            doc
            async for doc in self._sanctions.find(query)
            .sort("created_at", ASCENDING)
            .limit(min(limit, MAX_LIST))
        ]
        views = [await self._view(doc) for doc in docs]
        names = await self._subjects.display_names(
            ctx.identity, sorted({v.subject_id for v in views})
        )
        for view in views:
            view.subject_name = names.get(view.subject_id)
        await self._audit.record(
            ctx,
            "sanctions.read",
            resource="sanction",
            details={"status": status, "count": len(views)},
        )
        return views

    async def own_decided(self, ctx: AuditContext, limit: int) -> builtins.list[SanctionView]:
        """The calling person's (or guardian's person's) praise and sanctions as decided, newest
        first. A proposal still on its chain, or refused, is not something done to them."""
        subject_id = ctx.identity.subject_id
        if ctx.identity.channel != "mp" or subject_id is None:
            raise NotFound("No such case file.", message_zh="未找到您的档案。")
        docs = [
            doc
            async for doc in self._sanctions.find(
                {"subject_id": subject_id, "status": str(ApprovalStatus.APPROVED)}
            )
            .sort([("decided_at", DESCENDING), ("_id", DESCENDING)])
            .limit(min(limit, MAX_LIST))
        ]
        views = [await self._view(doc) for doc in docs]
        await self._audit.record(
            ctx,
            "sanctions.read",
            resource="subject",
            resource_id=subject_id,
            subject_id=subject_id,
            details={"count": len(views)},
        )
        return views

    async def _view(self, doc: Mapping[str, Any]) -> SanctionView:
        chain = ApprovalChain.from_doc(doc["approval"]).view()
        decided_at = doc.get("decided_at")
        return SanctionView(
            id=str(doc["_id"]),
            subject_id=doc["subject_id"],
            kind=doc["kind"],
            reason=await self._codec.open("sanctions", str(doc["_id"]), "reason", doc["reason"]),
            detachment_id=doc.get("detachment_id"),
            status=doc["status"],
            levels=chain["levels"],
            rule=chain["rule"],
            steps=await open_steps(self._codec, "sanctions", doc, chain["steps"]),
            next_level=chain["next_level"],
            rules_version=doc["approval"]["rules_version"],
            submitted_to=doc.get("submitted_to"),
            decided_at=decided_at.isoformat() if isinstance(decided_at, dt.datetime) else None,
        )

    # --- suggestions ----------------------------------------------------------------------------

    async def suggestions(self, ctx: AuditContext, subject_id: str) -> builtins.list[Suggestion]:
        """What the rules suggest for the person now, each naming its rule, value and version:
        one per 脱管 episode no sanction answers yet (pending or approved), and an escalation
        when uncorrected 训诫 or 警告 reach their rule's count. Nothing is filed by this."""
        subject = await self._scope.require(ctx, subject_id, "sanctions.read")
        rules = await self._rules.for_org(str(subject["org_id"]))
        today = self.today()
        sanctions = [
            doc
            async for doc in self._sanctions.find({"subject_id": subject_id}).sort(
                [("decided_at", ASCENDING), ("_id", ASCENDING)]
            )
        ]
        answered = {
            doc["detachment_id"]
            for doc in sanctions
            if doc.get("detachment_id") and doc["status"] != ApprovalStatus.REJECTED
        }
        out: list[Suggestion] = []
        async for episode in self._detachments.find({"subject_id": subject_id}).sort(
            "start_date", ASCENDING
        ):
            if str(episode["_id"]) in answered:
                continue
            start = dt.date.fromisoformat(episode["start_date"])
            end = dt.date.fromisoformat(episode["end_date"]) if episode.get("end_date") else today
            suggestion = suggest_for_detachment(start, end, rules)
            suggestion.basis.update(
                {"detachment_id": str(episode["_id"]), "open": not episode.get("end_date")}
            )
            out.append(suggestion)
        decided = [d for d in sanctions if d["status"] == ApprovalStatus.APPROVED]
        for kind, key, escalate_to in (
            (SanctionKind.ADMONISH, "sanctions.admonishments_to_warn", SanctionKind.WARN),
            (SanctionKind.WARN, "sanctions.warnings_to_revoke", SanctionKind.REVOKE_REQUEST),
        ):
            standing = uncorrected(decided, kind)
            if len(standing) >= rules.int(key):
                out.append(
                    Suggestion(
                        str(escalate_to),
                        key,
                        rules[key],
                        rules.version,
                        {"uncorrected": str(kind), "sanction_ids": standing},
                    )
                )
        await self._audit.record(
            ctx,
            "sanctions.suggest",
            resource="subject",
            resource_id=subject_id,
            subject_id=subject_id,
            details={"count": len(out), "rules_version": rules.version},
        )
        return out

    async def decided_since(
        self, subject_id: str, kind: SanctionKind, since: dt.date
    ) -> builtins.list[str]:
        """The ids of the person's sanctions of `kind` decided (approved) on or after `since`:
        what the file proves of a 警告 given, or a 治安管理处罚 request submitted."""
        start = dt.datetime.combine(since, dt.time(), tzinfo=LOCAL_TZ).astimezone(dt.UTC)
        cursor = self._sanctions.find(
            {
                "subject_id": subject_id,
                "kind": str(kind),
                "status": str(ApprovalStatus.APPROVED),
                "decided_at": {"$gte": start},
            },
            {"_id": 1},
        ).sort("decided_at", ASCENDING)
        return [str(doc["_id"]) async for doc in cursor]

    async def relocate(self, subject_id: str, org_id: str, org_path: builtins.list[str]) -> int:
        """Follow the person to a new station (执行地变更)."""
        result = await self._sanctions.update_many(
            {"subject_id": subject_id}, {"$set": {"org_id": org_id, "org_path": org_path}}
        )
        await self._detachments.update_many(
            {"subject_id": subject_id}, {"$set": {"org_path": org_path}}
        )
        return result.modified_count

    async def get(self, ctx: AuditContext, sanction_id: str) -> SanctionView:
        """One praise or sanction in the caller's scope (what a document is made from)."""
        doc = await self._load(ctx, sanction_id, "sanctions.read")
        await self._audit.record(
            ctx,
            "sanctions.read",
            resource="sanction",
            resource_id=sanction_id,
            subject_id=doc["subject_id"],
        )
        return await self._view(doc)

    # --- aggregates for the dashboard (models/dashboard.py) ------------------------------------

    async def count_open_detachments(self, org_id: str, depth: int) -> dict[Any, int]:
        """脱管 episodes still open under a node, by unit (the path's node at `depth`)."""
        pipeline: list[dict[str, Any]] = [
            {"$match": {"org_path": org_id, "end_date": None}},
            {"$group": {"_id": node_at(depth), "n": {"$sum": 1}}},
        ]
        return {g["_id"]: g["n"] async for g in await self._detachments.aggregate(pipeline)}

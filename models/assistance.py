"""阳光之家 assistance: resources (beds, meals, job places, course seats, legal aid, benefit
applications), the needs on a case file, referrals through an explicit state machine, and
capacity that is never overbooked, with a waiting list served in order.

Capacity lives on the resource document: `free` places and the referrals `placed` or `held`
there change in one conditional update, so concurrent placements can never exceed it, and a
retried placement finds its referral already there. A place freed by a check-out goes straight
to the first on the waiting list (held for them), so nobody overtakes the list.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import enum
import statistics
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from bson import ObjectId
from pymongo import ASCENDING, DESCENDING, IndexModel, ReturnDocument
from pymongo.errors import DuplicateKeyError

from models.audit import AuditContext, AuditService
from models.clock import LOCAL_TZ, Clock
from models.codec import FieldCodec
from models.decision_notices import DecisionNoticeService, NoticeKind
from models.errors import Conflict, Forbidden, InvalidInput, NotFound
from models.identity import Identity
from models.ids import parse_id
from models.notifications import NotificationService
from models.obligations import ObligationService
from models.orgs import OrgService
from models.policy import Policy, Role
from models.rules import RulesService
from models.scope import ScopeService
from models.staff import StaffService
from models.store import CollectionSpec, Store, still_there
from models.subjects import SubjectService, SubjectStatus

RESOURCES = CollectionSpec(
    "assistance_resources",
    (
        IndexModel([("org_path", ASCENDING), ("kind", ASCENDING)]),
        IndexModel([("coordinator_ids", ASCENDING)]),
    ),
)
REFERRALS = CollectionSpec(
    "referrals",
    (
        # A station's queue: requests in its subtree by state.
        IndexModel([("org_path", ASCENDING), ("status", ASCENDING), ("created_at", ASCENDING)]),
        IndexModel([("subject_id", ASCENDING), ("created_at", ASCENDING)]),
        IndexModel([("resource_id", ASCENDING), ("status", ASCENDING)]),
    ),
)
WAITLIST = CollectionSpec(
    "assistance_waitlist",
    (
        # Served in order: the waiting entries of a resource by their number.
        IndexModel([("resource_id", ASCENDING), ("state", ASCENDING), ("seq", ASCENDING)]),
        # A referral waits once per resource.
        IndexModel([("resource_id", ASCENDING), ("referral_id", ASCENDING)], unique=True),
        # One entry per number: a join that drew a number taken meanwhile draws again (and
        # the highest number is found here).
        IndexModel([("resource_id", ASCENDING), ("seq", ASCENDING)], unique=True),
    ),
)
# A stay's end is told (to the person, the worker) and queued (to the county) this long ahead.
STAY_NOTICE_DAYS = 14
# A stay's limits as the rules set them (their source: a local 阳光中途之家 model).
STAY_BASIS = "地方规定(阳光中途之家):入住一般不超过{days}天，经县(区)司法局批准最长{extended}天"
PLACEMENTS = CollectionSpec(
    "placements",
    (
        IndexModel([("resource_id", ASCENDING), ("status", ASCENDING)]),
        IndexModel([("status", ASCENDING), ("stay_until", ASCENDING)]),
        IndexModel([("subject_id", ASCENDING)]),
    ),
)


class ResourceKind(enum.StrEnum):
    SUNSHINE_HOME = "sunshine_home"  # 阳光之家
    TRANSITIONAL_BASE = "transitional_base"  # 过渡性安置基地
    SHELTER = "shelter"
    MEALS = "meals"
    JOB = "job"
    COURSE = "course"
    LEGAL_AID = "legal_aid"
    BENEFIT = "benefit"  # 低保, housing


# Kinds whose places are beds: a stay with arrival, departure and a limit.
STAY_KINDS = frozenset(
    {ResourceKind.SUNSHINE_HOME, ResourceKind.TRANSITIONAL_BASE, ResourceKind.SHELTER}
)
NEEDS = ("housing", "food", "income", "employment", "training", "legal", "benefits")
REQUEST_NEEDS = ("housing", "food", "job", "training", "legal", "benefits")


class ReferralStatus(enum.StrEnum):
    REQUESTED = "requested"
    APPROVED = "approved"
    OFFERED = "offered"
    ACCEPTED = "accepted"
    PLACED = "placed"  # a bed, a meal service
    ENROLLED = "enrolled"  # a course, a job
    COMPLETED = "completed"
    DECLINED = "declined"
    CANCELLED = "cancelled"
    NO_SHOW = "no_show"


S = ReferralStatus
# The workflow: each state and where it may go (Primero's guarded transitions). Placing and
# enrolling happen through a placement, which checks capacity; the rest through `transition`.
TRANSITIONS: dict[ReferralStatus, frozenset[ReferralStatus]] = {
    S.REQUESTED: frozenset({S.APPROVED, S.DECLINED, S.CANCELLED}),
    S.APPROVED: frozenset({S.OFFERED, S.CANCELLED}),
    S.OFFERED: frozenset({S.ACCEPTED, S.DECLINED, S.CANCELLED}),
    S.ACCEPTED: frozenset({S.PLACED, S.ENROLLED, S.OFFERED, S.CANCELLED, S.NO_SHOW}),
    S.PLACED: frozenset({S.COMPLETED, S.NO_SHOW}),
    S.ENROLLED: frozenset({S.COMPLETED, S.NO_SHOW}),
    S.COMPLETED: frozenset(),
    S.DECLINED: frozenset(),
    S.CANCELLED: frozenset(),
    S.NO_SHOW: frozenset(),
}
# Who acts at each step: the station approves; workers (and the station) offer, record the
# person's answer and cancel; the facility's coordinator receives and records arrivals.
STEP_ACTION = {
    S.APPROVED: "assistance.approve",
    S.DECLINED: "assistance.manage",
    S.OFFERED: "assistance.manage",
    S.ACCEPTED: "assistance.manage",
    S.CANCELLED: "assistance.manage",
    S.NO_SHOW: "assistance.place",
    S.COMPLETED: "assistance.place",
}
NEEDS_REASON = frozenset({S.DECLINED, S.CANCELLED, S.NO_SHOW})
OUTCOMES = ("housing_found", "job_found", "benefits_granted", "training_completed", "other")
# What the person (or guardian) reads when their referral moves.
STATUS_ZH = {
    S.REQUESTED: "已提交",
    S.APPROVED: "司法所已同意",
    S.OFFERED: "已为您联系到帮扶资源",
    S.ACCEPTED: "您已接受",
    S.PLACED: "已安置",
    S.ENROLLED: "已入学/入职",
    S.COMPLETED: "帮扶已完成",
    S.DECLINED: "未获安排",
    S.CANCELLED: "已取消",
    S.NO_SHOW: "未按时报到",
}


@dataclass
class ResourceView:
    id: str
    kind: str
    name: str
    org_id: str
    capacity: int
    occupied: int
    held: int
    waiting: int
    active: bool
    max_stay_days: int | None
    hours_credit: float | None
    details: dict[str, Any] = field(default_factory=dict)


@dataclass
class ReferralView:
    id: str
    subject_id: str
    subject_name: str | None
    needs: list[str]
    status: str
    resource_id: str | None
    channel: str
    history: list[dict[str, Any]]
    waiting_position: int | None = None
    outcome: dict[str, Any] | None = None


@dataclass
class PlacementView:
    id: str
    referral_id: str
    resource_id: str
    subject_id: str
    status: str
    placed_at: dt.datetime
    stay_until: dt.date | None
    arrived_on: dt.date | None = None
    departed_on: dt.date | None = None


class Full(Conflict):
    """No free place: the referral joins (or keeps) its place on the waiting list."""

    code = "full"

    def __init__(self, position: int, inactive: bool = False):
        super().__init__(
            "The resource is inactive." if inactive else "No place is free.",
            details={"waiting_position": position, "inactive": inactive},
            message_zh=f"名额已满，已为您排队（第{position}位）。",
        )
        self.position = position


class AssistanceService:
    collections = (RESOURCES, REFERRALS, WAITLIST, PLACEMENTS)
    sealed_fields = (("referrals", None), ("referrals", "reasons"), ("placements", None))

    def __init__(
        self,
        store: Store,
        clock: Clock,
        audit: AuditService,
        codec: FieldCodec,
        subjects: SubjectService,
        orgs: OrgService,
        rules: RulesService,
        obligations: ObligationService,
        notifications: NotificationService,
        policy: Policy,
        *,
        notices: DecisionNoticeService,
        staff: StaffService | None = None,
        scope: ScopeService,
    ):
        self._notices = notices
        self._staff = staff
        self._resources = store.collection(RESOURCES)
        self._referrals = store.collection(REFERRALS)
        self._waitlist = store.collection(WAITLIST)
        self._placements = store.collection(PLACEMENTS)
        self._clock = clock
        self._audit = audit
        self._codec = codec
        self._subjects = subjects
        self._scope = scope
        self._orgs = orgs
        self._rules = rules
        self._obligations = obligations
        self._notifications = notifications
        self._policy = policy

    # --- resources ------------------------------------------------------------------------

    async def add_resource(
        self,
        ctx: AuditContext,
        *,
        kind: ResourceKind,
        name: str,
        org_id: str,
        capacity: int,
        max_stay_days: int | None = None,
        hours_credit: float | None = None,
        details: Mapping[str, Any] | None = None,
        coordinator_ids: list[str] | None = None,
    ) -> ResourceView:
        """A facility, meal service, job opening, course or service of a county (or station)."""
        org = await self._orgs.get_in_scope(ctx.identity, org_id)
        if capacity < 0:
            raise InvalidInput("Capacity cannot be negative.", details=[{"field": "capacity"}])
        rules = await self._rules.for_org(org.id)
        limit = rules.int("assistance.max_stay_days")
        if kind in STAY_KINDS:
            max_stay_days = max_stay_days or limit
            if max_stay_days > rules.int("assistance.extended_stay_days"):
                raise InvalidInput(
                    "The stay limit exceeds what the rules allow even with approval.",
                    details=[{"field": "max_stay_days"}],
                )
        elif max_stay_days is not None:
            raise InvalidInput(
                "Only facilities with beds have a stay limit.", details=[{"field": "max_stay_days"}]
            )
        if hours_credit is not None and kind != ResourceKind.COURSE:
            raise InvalidInput("Only courses credit hours.", details=[{"field": "hours_credit"}])
        resource_id = ObjectId()
        doc = {
            "_id": resource_id,
            "kind": str(kind),
            "name": name.strip(),
            "org_id": org.id,
            "org_path": list(org.path),
            "capacity": capacity,
            "free": capacity,
            "placed": [],
            "held": [],
            "active": True,
            "max_stay_days": max_stay_days,
            "hours_credit": hours_credit,
            "details": dict(details or {}),
            "coordinator_ids": list(coordinator_ids or []),
            "created_at": self._clock.now(),
        }
        async with self._audit.change(
            ctx,
            "assistance.resources",
            resource="assistance_resource",
            resource_id=str(resource_id),
            details={"kind": str(kind), "capacity": capacity},
        ):
            await self._resources.insert_one(doc)
        return await self._resource_view(doc)

    async def resource(self, ctx: AuditContext, resource_id: str) -> ResourceView:
        return await self._resource_view(await self._resource_in_scope(ctx.identity, resource_id))

    async def set_active(self, ctx: AuditContext, resource_id: str, active: bool) -> ResourceView:
        doc = await self._resource_in_scope(ctx.identity, resource_id)
        async with self._audit.change(
            ctx,
            "assistance.resources",
            resource="assistance_resource",
            resource_id=resource_id,
            details={"active": active},
        ):
            doc = still_there(
                await self._resources.find_one_and_update(
                    {"_id": doc["_id"]},
                    {"$set": {"active": active}},
                    return_document=ReturnDocument.AFTER,
                ),
                "resource",
            )
        if active:
            await self._serve_waitlist(resource_id)
            doc = still_there(await self._resources.find_one({"_id": doc["_id"]}), "resource")
        return await self._resource_view(doc)

    async def _resource_in_scope(self, identity: Identity, resource_id: str) -> dict[str, Any]:
        doc = await self._resources.find_one({"_id": parse_id(resource_id, "resource")})
        if doc is None:
            raise NotFound("No such resource.")
        coordinator = identity.role == Role.ASSISTANCE_COORDINATOR
        if coordinator and identity.user_id not in doc.get("coordinator_ids", []):
            raise NotFound("No such resource.")
        # Resources are public services: any case role of the county sees them, and the
        # stations below see their county's (the path of the resource is above or below).
        if not coordinator and not (
            identity.reaches(doc["org_path"]) or doc["org_id"] in identity.org_path
        ):
            raise NotFound("No such resource.")
        return doc

    async def _resource_view(self, doc: Mapping[str, Any]) -> ResourceView:
        waiting = await self._waitlist.count_documents(
            {"resource_id": str(doc["_id"]), "state": "waiting"}
        )
        return ResourceView(
            id=str(doc["_id"]),
            kind=doc["kind"],
            name=doc["name"],
            org_id=doc["org_id"],
            capacity=doc["capacity"],
            occupied=len(doc["placed"]),
            held=len(doc["held"]),
            waiting=waiting,
            active=doc["active"],
            max_stay_days=doc.get("max_stay_days"),
            hours_credit=doc.get("hours_credit"),
            details=dict(doc.get("details") or {}),
        )

    # --- needs -----------------------------------------------------------------------------

    async def assess_needs(
        self, ctx: AuditContext, subject_id: str, needs: Mapping[str, bool]
    ) -> dict[str, Any]:
        """Record which needs a person has; 三无 (no home, no job, no income) is derived."""
        subject = await self._scope.require(ctx, subject_id, "assistance.manage")
        unknown = sorted(set(needs) - set(NEEDS))
        if unknown:
            raise InvalidInput("Unknown needs.", details=[{"field": n} for n in unknown])
        three_nos = all(needs.get(n, False) for n in ("housing", "employment", "income"))
        sealed = await self._codec.seal(
            subject_id, subject.get("dek_id"), "subjects", subject_id, "needs", dict(needs)
        )
        async with self._audit.change(
            ctx,
            "assistance.needs",
            resource="subject",
            resource_id=subject_id,
            subject_id=subject_id,
            details={"three_nos": three_nos},
        ):
            await self._subjects.set_needs(
                subject_id, sealed, three_nos, self._clock.now(), ctx.identity.user_id
            )
        return {"needs": dict(needs), "three_nos": three_nos}

    async def current_needs(self, ctx: AuditContext, subject_id: str) -> dict[str, Any]:
        """The latest needs assessment on a person's file, who made it and when; NotFound
        when none was made (or the file was shredded: its key, and so the needs, are gone)."""
        subject = await self._scope.require(ctx, subject_id, "assistance.needs")
        blob = subject.get("needs")
        if blob is None or subject.get("status") == SubjectStatus.SHREDDED:
            raise NotFound("No needs assessment on this file.", message_zh="尚未进行需求评估。")
        opened = await self._codec.open("subjects", subject_id, "needs", blob)
        by = subject.get("needs_by")
        member = await self._staff.lookup(by) if by and self._staff is not None else None
        await self._audit.record(
            ctx,
            "assistance.needs",
            resource="subject",
            resource_id=subject_id,
            subject_id=subject_id,
        )
        return {
            "needs": {need: bool(opened.get(need, False)) for need in NEEDS},
            "three_nos": bool(subject.get("three_nos")),
            "assessed_at": subject.get("needs_at"),
            "assessed_by": by,
            "assessed_by_name": str(member["name"]) if member is not None else None,
        }

    # --- referrals -------------------------------------------------------------------------

    async def refer(
        self,
        ctx: AuditContext,
        subject_id: str,
        needs: list[str],
        note: str,
        resource_id: str | None = None,
    ) -> ReferralView:
        """A worker refers a person (requested; the station approves)."""
        subject = await self._scope.require(ctx, subject_id, "assistance.manage")
        resource = None
        if resource_id is not None:
            resource = await self._resource_in_scope(ctx.identity, resource_id)
        if resource is not None:
            # Before the referral: a failure after it would leave the facility unable to open
            # the file with nothing to retry; adding the organisation twice is harmless.
            await self._subjects.add_referral_org(subject_id, resource["org_id"])
        return await self._open(ctx, subject, needs, note, resource_id, "staff")

    async def request_from_subject(
        self, ctx: AuditContext, needs: list[str], note: str
    ) -> ReferralView:
        """The person (or guardian) asks for help from the mini-program."""
        subject_id = ctx.identity.subject_id
        subject = await self._subjects.document(subject_id) if subject_id else None
        if subject is None or subject.get("status") == SubjectStatus.SHREDDED:
            raise Forbidden("Only a bound person asks for help.", code="not_a_subject")
        return await self._open(ctx, subject, needs, note, None, "miniprogram")

    async def _open(
        self,
        ctx: AuditContext,
        subject: Mapping[str, Any],
        needs: list[str],
        note: str,
        resource_id: str | None,
        channel: str,
    ) -> ReferralView:
        wanted = list(dict.fromkeys(needs))
        if not wanted or any(n not in REQUEST_NEEDS for n in wanted):
            raise InvalidInput(
                "Name the needs: " + ", ".join(REQUEST_NEEDS) + ".",
                details=[{"field": "needs"}],
                message_zh="请选择需求。",
            )
        subject_id = str(subject["_id"])
        referral_id = ObjectId()
        rid = str(referral_id)
        now = self._clock.now()
        doc: dict[str, Any] = {
            "_id": referral_id,
            "subject_id": subject_id,
            "org_id": str(subject["org_id"]),
            "org_path": list(subject["org_path"]),
            "needs": wanted,
            "note": await self._codec.seal(
                subject_id, subject.get("dek_id"), "referrals", rid, "note", note.strip()
            ),
            "status": str(S.REQUESTED),
            "resource_id": resource_id,
            "channel": channel,
            "requested_by": ctx.identity.user_id,
            "history": [{"status": str(S.REQUESTED), "at": now, "by": ctx.identity.user_id}],
            "created_at": now,
            "updated_at": now,
            "version": 1,
        }
        async with self._audit.change(
            ctx,
            "assistance.request",
            resource="referral",
            resource_id=rid,
            subject_id=subject_id,
            details={"needs": wanted, "channel": channel},
        ):
            await self._referrals.insert_one(doc)
        await self._notify(doc, S.REQUESTED)
        return await self._referral_view(ctx.identity, doc)

    async def _referral_in_scope(
        self, identity: Identity, referral_id: str, action: str
    ) -> dict[str, Any]:
        doc = await self._referrals.find_one({"_id": parse_id(referral_id, "referral")})
        if doc is None:
            raise NotFound("No such referral.")
        if identity.role == Role.ASSISTANCE_COORDINATOR:
            # A facility's coordinator sees the referrals to their facilities, nothing else.
            resource = (
                await self._resources.find_one({"_id": ObjectId(doc["resource_id"])})
                if doc.get("resource_id")
                else None
            )
            if resource is None or identity.user_id not in resource.get("coordinator_ids", []):
                raise NotFound("No such referral.")
            return doc
        await self._scope.require(
            AuditContext(identity, "referral-scope"), doc["subject_id"], action
        )
        return doc

    async def get(self, ctx: AuditContext, referral_id: str) -> ReferralView:
        doc = await self._referral_in_scope(ctx.identity, referral_id, "assistance.read")
        await self._audit.record(
            ctx,
            "assistance.read",
            resource="referral",
            resource_id=referral_id,
            subject_id=doc["subject_id"],
        )
        return await self._referral_view(ctx.identity, doc)

    async def directory(
        self, ctx: AuditContext, *, kind: str | None, active_only: bool, limit: int
    ) -> list[ResourceView]:
        """The resources a caller may refer to or read: those of their county and the nodes
        above it, and those under their own node (a coordinator: their own facilities), by
        kind and name."""
        identity = ctx.identity
        query: dict[str, Any]
        if identity.role == Role.ASSISTANCE_COORDINATOR:
            query = {"coordinator_ids": identity.user_id}
        elif identity.unscoped:
            query = {}
        elif identity.org_id is None:
            return []
        else:
            query = {
                "$or": [
                    {"org_path": identity.org_id},
                    {"org_id": {"$in": list(identity.org_path)}},
                ]
            }
        if kind:
            query["kind"] = kind
        if active_only:
            query["active"] = True
        cursor = self._resources.find(query).sort([("kind", ASCENDING), ("name", ASCENDING)])
        views = [await self._resource_view(doc) async for doc in cursor.limit(limit)]
        await self._audit.record(
            ctx, "assistance.read", resource="assistance_resources", details={"count": len(views)}
        )
        return views

    async def referrals(
        self,
        ctx: AuditContext,
        *,
        resource_id: str | None,
        status: str | None,
        limit: int,
        subject_id: str | None = None,
    ) -> list[ReferralView]:
        """Referrals in the caller's scope (a coordinator: those to their facilities); of one
        person when `subject_id` is given."""
        identity = ctx.identity
        query: dict[str, Any] = {}
        if status:
            query["status"] = status
        if subject_id:
            query["subject_id"] = subject_id
        if identity.role == Role.ASSISTANCE_COORDINATOR:
            mine = [
                str(d["_id"])
                async for d in self._resources.find(
                    {"coordinator_ids": identity.user_id}, {"_id": 1}
                )
            ]
            if resource_id is not None and resource_id not in mine:
                raise NotFound("No such resource.")
            query["resource_id"] = {"$in": [resource_id] if resource_id else mine}
        else:
            if identity.org_id is None:
                return []
            query["org_path"] = identity.org_id
            if resource_id is not None:
                query["resource_id"] = resource_id
        cursor = self._referrals.find(query).sort("created_at", ASCENDING).limit(limit)
        views = []
        async for doc in cursor:
            if identity.role == Role.SOCIAL_WORKER:
                try:
                    await self._scope.require(ctx, doc["subject_id"], "assistance.read")
                except NotFound:
                    continue
            views.append(await self._referral_view(identity, doc))
        await self._audit.record(
            ctx, "assistance.read", resource="referrals", details={"count": len(views)}
        )
        return views

    async def transition(
        self,
        ctx: AuditContext,
        referral_id: str,
        to: ReferralStatus,
        reason: str | None,
        resource_id: str | None = None,
    ) -> ReferralView:
        """Move a referral one step; a step its state forbids answers 409 with the state."""
        if to in (S.PLACED, S.ENROLLED):
            raise Conflict(
                "Places are taken through a placement, which checks capacity.",
                code="use_placement",
            )
        action = STEP_ACTION[to]
        if not self._policy.allows(ctx.identity, action):
            raise Forbidden()
        doc = await self._referral_in_scope(ctx.identity, referral_id, action)
        current = S(doc["status"])
        if to not in TRANSITIONS[current]:
            raise Conflict(
                f"A {current} referral cannot become {to}.",
                code="invalid_transition",
                details={"status": str(current), "allowed": sorted(TRANSITIONS[current])},
            )
        reason = (reason or "").strip()
        if to in NEEDS_REASON and not reason:
            raise InvalidInput("State the reason.", details=[{"field": "reason"}])
        change: dict[str, Any] = {}
        if to == S.OFFERED:
            target = resource_id or doc.get("resource_id")
            if target is None:
                raise InvalidInput("Name the resource offered.", details=[{"field": "resource_id"}])
            resource = await self._resource_in_scope(ctx.identity, target)
            if not resource["active"]:
                raise Conflict("The resource is inactive.", code="inactive")
            change["resource_id"] = target
            # The facility's coordinators receive the person: they may open the file. Before
            # the move, so a failure leaves nothing half-done (the grant is idempotent).
            await self._subjects.add_referral_org(doc["subject_id"], resource["org_id"])
        updated = await self._move(ctx, doc, current, to, reason, change)
        if to in (S.DECLINED, S.CANCELLED, S.NO_SHOW) and doc.get("resource_id"):
            # A place held for this referral goes on to the next person waiting.
            await self._release(str(doc["resource_id"]), referral_id)
        return await self._referral_view(ctx.identity, updated)

    async def _move(
        self,
        ctx: AuditContext,
        doc: Mapping[str, Any],
        current: ReferralStatus,
        to: ReferralStatus,
        reason: str,
        change: dict[str, Any],
    ) -> dict[str, Any]:
        rid = str(doc["_id"])
        now = self._clock.now()
        step: dict[str, Any] = {"status": str(to), "at": now, "by": ctx.identity.user_id}
        sealed_reason: dict[str, Any] = {}
        if reason:
            # Under the person's current key, in a sub-document key rotation walks; the step
            # names it (a reason inside the history list would be missed by a rotation).
            name = f"reason_{len(doc['history'])}"
            step["reason_id"] = name
            sealed_reason[f"reasons.{name}"] = await self._codec.seal(
                doc["subject_id"],
                await self._key_id(doc["subject_id"]),
                "referrals",
                rid,
                name,
                reason,
            )
        async with self._audit.change(
            ctx,
            "assistance.transition",
            resource="referral",
            resource_id=rid,
            subject_id=doc["subject_id"],
            details={"from": str(current), "to": str(to)},
        ):
            updated = await self._referrals.find_one_and_update(
                {"_id": doc["_id"], "status": str(current)},
                {
                    "$set": {"status": str(to), "updated_at": now, **change, **sealed_reason},
                    "$push": {"history": step},
                    "$inc": {"version": 1},
                },
                return_document=ReturnDocument.AFTER,
            )
            if updated is None:
                raise Conflict("The referral changed meanwhile.", code="invalid_transition")
        await self._notify(updated, to)
        return updated

    async def record_outcome(
        self, ctx: AuditContext, referral_id: str, outcome: Mapping[str, Any]
    ) -> ReferralView:
        """What came of it: housing found, a job (employer, start date), benefits granted."""
        doc = await self._referral_in_scope(ctx.identity, referral_id, "assistance.manage")
        if outcome.get("kind") not in OUTCOMES:
            raise InvalidInput("Unknown outcome.", details=[{"field": "kind"}])
        async with self._audit.change(
            ctx,
            "assistance.outcome",
            resource="referral",
            resource_id=referral_id,
            subject_id=doc["subject_id"],
            details={"kind": outcome["kind"]},
        ):
            sealed = await self._codec.seal(
                doc["subject_id"],
                await self._key_id(doc["subject_id"]),
                "referrals",
                referral_id,
                "outcome",
                dict(outcome),
            )
            updated = await self._referrals.find_one_and_update(
                {"_id": doc["_id"]},
                {
                    "$set": {
                        "outcome": sealed,
                        "outcome_kind": outcome["kind"],
                        "outcome_at": self._clock.now(),
                    }
                },
                return_document=ReturnDocument.AFTER,
            )
            updated = still_there(updated)
        return await self._referral_view(ctx.identity, updated)

    async def _key_id(self, subject_id: str) -> str | None:
        """The person's current data key: a rotation destroys the one it replaced."""
        subject = await self._subjects.document(subject_id)
        return subject.get("dek_id") if subject else None

    async def _referral_view(self, identity: Identity, doc: Mapping[str, Any]) -> ReferralView:
        rid = str(doc["_id"])
        position = None
        if doc.get("resource_id"):
            position = await self._position(str(doc["resource_id"]), rid)
        outcome = None
        if doc.get("outcome") is not None:
            outcome = await self._codec.open("referrals", rid, "outcome", doc["outcome"])
        return ReferralView(
            id=rid,
            subject_id=doc["subject_id"],
            subject_name=await self._subjects.display_name(identity, doc["subject_id"]),
            needs=list(doc["needs"]),
            status=doc["status"],
            resource_id=doc.get("resource_id"),
            channel=doc.get("channel", "staff"),
            history=[
                {"status": h["status"], "at": h["at"], "by": h.get("by")} for h in doc["history"]
            ],
            waiting_position=position,
            outcome=outcome,
        )

    async def _notify(self, doc: Mapping[str, Any], status: ReferralStatus) -> None:
        """The person and the worker hear of each step (in-app; pushed by the notifier)."""
        title = "帮扶申请进度"
        rid = str(doc["_id"])
        kind, fields = NoticeKind.REFERRAL_UPDATED, {"status": STATUS_ZH[status]}
        if status in (S.PLACED, S.ENROLLED):
            kind, fields = NoticeKind.REFERRAL_PLACED, {"resource": await self._resource_name(doc)}
        elif status == S.OFFERED:
            kind = NoticeKind.REFERRAL_OFFERED
        await self._notices.notify(
            kind,
            str(doc["subject_id"]),
            "referral",
            rid,
            step=len(doc.get("history", [])),
            fields=fields,
        )
        subject = await self._subjects.document(doc["subject_id"])
        workers = ((subject or {}).get("assignments") or {}).get("social_worker_ids") or []
        for worker in workers:
            await self._notifications.send(
                f"staff:{worker}",
                title,
                f"一名对象的帮扶申请：{STATUS_ZH[status]}。",
                data={"template": "decision", "referral_id": rid, "status": str(status)},
                dedupe_key=f"referral:{rid}:{len(doc.get('history', []))}:{worker}",
            )

    async def _resource_name(self, doc: Mapping[str, Any]) -> str:
        resource_id = doc.get("resource_id")
        resource = (
            await self._resources.find_one({"_id": parse_id(resource_id, "resource")}, {"name": 1})
            if resource_id
            else None
        )
        return str((resource or {}).get("name") or "帮扶资源")

    # --- capacity: placements and the waiting list -------------------------------------------

    async def place(self, ctx: AuditContext, referral_id: str, resource_id: str) -> PlacementView:
        """Take a place for an accepted referral (or the one held for it). No free place: 409
        with the referral's position on the waiting list."""
        doc = await self._referral_in_scope(ctx.identity, referral_id, "assistance.place")
        if not self._policy.allows(ctx.identity, "assistance.place"):
            raise Forbidden()
        resource = await self._resource_in_scope(ctx.identity, resource_id)
        status = S(doc["status"])
        if status in (S.PLACED, S.ENROLLED) and doc.get("resource_id") == resource_id:
            return await self._placement_for(referral_id, resource_id)
        if status not in (S.ACCEPTED, S.OFFERED):
            raise Conflict(
                f"A {status} referral cannot be placed.",
                code="invalid_transition",
                details={"status": str(status)},
            )
        allowed = (resource.get("details") or {}).get("populations")
        if allowed:
            subject = await self._subjects.document(doc["subject_id"])
            if not set(allowed) & set((subject or {}).get("populations") or []):
                raise Conflict(
                    "This resource is for other people (its rules say who may stay).",
                    code="not_eligible",
                    details={"populations": list(allowed)},
                )
        oid = resource["_id"]
        taken = await self._resources.find_one_and_update(
            {"_id": oid, "held": referral_id},
            {"$pull": {"held": referral_id}, "$push": {"placed": referral_id}},
            return_document=ReturnDocument.AFTER,
        )
        if taken is None:
            taken = await self._resources.find_one_and_update(
                {"_id": oid, "active": True, "free": {"$gt": 0}, "placed": {"$ne": referral_id}},
                {"$inc": {"free": -1}, "$push": {"placed": referral_id}},
                return_document=ReturnDocument.AFTER,
            )
        if taken is None:
            again = await self._resources.find_one({"_id": oid, "placed": referral_id})
            if again is None:
                position = await self._wait(resource_id, doc)
                await self._notices.notify(
                    NoticeKind.REFERRAL_WAITING,
                    str(doc["subject_id"]),
                    "referral",
                    referral_id,
                    step=resource_id,
                    fields={"resource": resource.get("name") or "该帮扶资源", "position": position},
                )
                raise Full(position, inactive=not resource["active"])
        kind = ResourceKind(resource["kind"])
        await self._subjects.add_referral_org(doc["subject_id"], resource["org_id"])
        return await self._file_placement(ctx, doc, resource, kind)

    async def _file_placement(
        self,
        ctx: AuditContext,
        doc: Mapping[str, Any],
        resource: Mapping[str, Any],
        kind: ResourceKind,
    ) -> PlacementView:
        referral_id = str(doc["_id"])
        resource_id = str(resource["_id"])
        now = self._clock.now()
        today = now.astimezone(LOCAL_TZ).date()
        stay_until = None
        if kind in STAY_KINDS:
            stay_until = (today + dt.timedelta(days=int(resource["max_stay_days"]))).isoformat()
        placement = {
            "_id": f"{resource_id}:{referral_id}",
            "referral_id": referral_id,
            "resource_id": resource_id,
            "subject_id": doc["subject_id"],
            "org_path": list(doc["org_path"]),
            "kind": str(kind),
            "status": "placed",
            "placed_at": now,
            "stay_until": stay_until,
            "max_until": (
                (today + dt.timedelta(days=await self._extended_limit(doc))).isoformat()
                if kind in STAY_KINDS
                else None
            ),
            # The stay limits above come from these rules.
            "rules_version": (await self._rules.for_org(doc["org_id"])).version,
        }
        # A retry finds the place taken and filed already.
        with contextlib.suppress(DuplicateKeyError):
            await self._placements.insert_one(placement)
        await self._waitlist.update_many(
            {"referral_id": referral_id, "state": {"$in": ["waiting", "offered"]}},
            {"$set": {"state": "served"}},
        )
        to = S.ENROLLED if kind in (ResourceKind.COURSE, ResourceKind.JOB) else S.PLACED
        current = S(doc["status"])
        if current != to:
            await self._move(ctx, doc, current, to, "", {"resource_id": resource_id})
        return await self._placement_for(referral_id, resource_id)

    async def _extended_limit(self, doc: Mapping[str, Any]) -> int:
        rules = await self._rules.for_org(doc["org_id"])
        return rules.int("assistance.extended_stay_days")

    async def _wait(self, resource_id: str, doc: Mapping[str, Any]) -> int:
        """Join the waiting list (once) and answer the position held in it.

        An entry's number is one above the highest stored for the resource, and the unique
        index refuses a number taken meanwhile (the join then draws again). So an entry numbered
        below one's own was stored before one's own number was drawn, and counting after one's
        own write sees everyone ahead, whichever process they joined through. A number taken
        from a counter before the write promised no such thing: a join in flight elsewhere,
        numbered ahead but not yet stored, went uncounted and two people were told the same
        place (issue 21, item 10)."""
        referral_id = str(doc["_id"])
        while True:
            existing = await self._waitlist.find_one(
                {"resource_id": resource_id, "referral_id": referral_id}
            )
            if existing is not None and existing["state"] == "waiting":
                break
            last = await self._waitlist.find_one(
                {"resource_id": resource_id}, {"seq": 1}, sort=[("seq", DESCENDING)]
            )
            try:
                await self._waitlist.update_one(
                    # Never renumbers a waiting entry: a concurrent retry of the same referral
                    # that joined first makes this an insert, refused by the unique index.
                    {
                        "resource_id": resource_id,
                        "referral_id": referral_id,
                        "state": {"$ne": "waiting"},
                    },
                    {
                        "$set": {
                            "state": "waiting",
                            "seq": (last["seq"] if last else 0) + 1,
                            "subject_id": doc["subject_id"],
                            "since": self._clock.now(),
                        }
                    },
                    upsert=True,
                )
            except DuplicateKeyError:
                continue  # the number (or the referral's entry) was taken meanwhile
            break
        position = await self._position(resource_id, referral_id)
        return position or 1

    async def _position(self, resource_id: str, referral_id: str) -> int | None:
        entry = await self._waitlist.find_one(
            {"resource_id": resource_id, "referral_id": referral_id, "state": "waiting"}
        )
        if entry is None:
            return None
        ahead = await self._waitlist.count_documents(
            {"resource_id": resource_id, "state": "waiting", "seq": {"$lt": entry["seq"]}}
        )
        return ahead + 1

    async def waiting_list(self, ctx: AuditContext, resource_id: str) -> list[dict[str, Any]]:
        await self._resource_in_scope(ctx.identity, resource_id)
        cursor = self._waitlist.find({"resource_id": resource_id, "state": "waiting"}).sort(
            "seq", ASCENDING
        )
        return [
            {"referral_id": e["referral_id"], "position": n + 1, "since": e["since"]}
            for n, e in enumerate(await cursor.to_list())
        ]

    async def check_out(self, ctx: AuditContext, placement_id: str, reason: str) -> PlacementView:
        """The stay (or course, or job) ends: the place is freed and goes to the first waiting."""
        if not reason.strip():
            raise InvalidInput("State the reason.", details=[{"field": "reason"}])
        placement = await self._placement_in_scope(ctx.identity, placement_id)
        if placement["status"] != "placed":
            raise Conflict(
                "This placement has ended.", code="invalid_transition", details={"status": "ended"}
            )
        today = self._clock.now().astimezone(LOCAL_TZ).date()
        async with self._audit.change(
            ctx,
            "assistance.checkout",
            resource="placement",
            resource_id=placement_id,
            subject_id=placement["subject_id"],
        ):
            ended = await self._placements.find_one_and_update(
                {"_id": placement_id, "status": "placed"},
                {"$set": {"status": "ended", "departed_on": today.isoformat()}},
                return_document=ReturnDocument.AFTER,
            )
            if ended is None:
                raise Conflict("This placement has ended.", code="invalid_transition")
        await self._release(placement["resource_id"], placement["referral_id"])
        referral = await self._referrals.find_one({"_id": ObjectId(placement["referral_id"])})
        if referral is not None and referral["status"] in (S.PLACED, S.ENROLLED):
            await self._move(ctx, referral, S(referral["status"]), S.COMPLETED, reason, {})
        return _placement_view(ended)

    async def _release(self, resource_id: str, referral_id: str) -> None:
        """Free the place `referral_id` occupies or holds: straight to the first waiting (held
        for them and offered), else back to the free count."""
        oid = ObjectId(resource_id)
        while True:
            first = await self._waitlist.find_one(
                {"resource_id": resource_id, "state": "waiting"}, sort=[("seq", ASCENDING)]
            )
            resource = await self._resources.find_one({"_id": oid})
            if resource is None:
                return
            holder = "placed" if referral_id in resource["placed"] else "held"
            if referral_id not in resource[holder]:
                return
            if first is None or not resource["active"]:
                await self._resources.update_one(
                    {"_id": oid, holder: referral_id},
                    {"$pull": {holder: referral_id}, "$inc": {"free": 1}},
                )
                return
            # One update hands the place over: a held place changes holder in its slot (pulling
            # and pushing the same array in one update is refused).
            change = (
                {"$set": {"held.$": first["referral_id"]}}
                if holder == "held"
                else {"$pull": {"placed": referral_id}, "$push": {"held": first["referral_id"]}}
            )
            handed = await self._resources.update_one({"_id": oid, holder: referral_id}, change)
            if handed.modified_count == 0:
                continue
            await self._offer_held(first)
            return

    async def _serve_waitlist(self, resource_id: str) -> None:
        """Free places (a resource re-opened, capacity raised) go to those waiting, in order."""
        oid = ObjectId(resource_id)
        while True:
            first = await self._waitlist.find_one(
                {"resource_id": resource_id, "state": "waiting"}, sort=[("seq", ASCENDING)]
            )
            if first is None:
                return
            held = await self._resources.update_one(
                {"_id": oid, "active": True, "free": {"$gt": 0}},
                {"$inc": {"free": -1}, "$push": {"held": first["referral_id"]}},
            )
            if held.modified_count == 0:
                return
            await self._offer_held(first)

    async def _offer_held(self, entry: Mapping[str, Any]) -> None:
        await self._waitlist.update_one({"_id": entry["_id"]}, {"$set": {"state": "offered"}})
        referral = await self._referrals.find_one({"_id": ObjectId(entry["referral_id"])})
        if referral is None or referral["status"] not in (S.ACCEPTED, S.APPROVED):
            return
        system = AuditContext(Identity(user_id="assistance", role="system"), "waitlist")
        await self._move(
            system,
            referral,
            S(referral["status"]),
            S.OFFERED,
            "",
            {"resource_id": entry["resource_id"]},
        )

    async def _placement_in_scope(self, identity: Identity, placement_id: str) -> dict[str, Any]:
        doc = await self._placements.find_one({"_id": placement_id})
        if doc is None:
            raise NotFound("No such placement.")
        await self._referral_in_scope(identity, doc["referral_id"], "assistance.place")
        return doc

    async def _placement_for(self, referral_id: str, resource_id: str) -> PlacementView:
        doc = await self._placements.find_one({"_id": f"{resource_id}:{referral_id}"})
        if doc is None:
            raise NotFound("No such placement.")
        return _placement_view(doc)

    # --- stays -----------------------------------------------------------------------------

    async def record_arrival(
        self, ctx: AuditContext, placement_id: str, on: dt.date
    ) -> PlacementView:
        placement = await self._placement_in_scope(ctx.identity, placement_id)
        async with self._audit.change(
            ctx,
            "assistance.arrival",
            resource="placement",
            resource_id=placement_id,
            subject_id=placement["subject_id"],
        ):
            doc = await self._placements.find_one_and_update(
                {"_id": placement_id, "status": "placed"},
                {"$set": {"arrived_on": on.isoformat()}},
                return_document=ReturnDocument.AFTER,
            )
            if doc is None:
                raise Conflict("This placement has ended.", code="invalid_transition")
        return _placement_view(doc)

    async def extend_stay(
        self, ctx: AuditContext, placement_id: str, until: dt.date, reason: str
    ) -> PlacementView:
        """A longer stay: only with the county's approval (the caller's role), and never beyond
        the rule's extended limit (6 months by default)."""
        if not self._policy.allows(ctx.identity, "assistance.extend"):
            raise Forbidden("A longer stay needs the county's approval.", code="needs_approval")
        if not reason.strip():
            raise InvalidInput("State the reason.", details=[{"field": "reason"}])
        placement = await self._placement_in_scope(ctx.identity, placement_id)
        if placement.get("stay_until") is None or placement["status"] != "placed":
            raise Conflict("This placement has no stay to extend.", code="invalid_transition")
        if until.isoformat() > placement["max_until"]:
            raise Conflict(
                "The stay would exceed the longest the rules allow.",
                code="beyond_limit",
                details={
                    "latest": placement["max_until"],
                    "rule": "assistance.extended_stay_days",
                },
            )
        async with self._audit.change(
            ctx,
            "assistance.extend",
            resource="placement",
            resource_id=placement_id,
            subject_id=placement["subject_id"],
            details={"until": until.isoformat()},
        ):
            # A placement is filed under the person's node: its path ends there.
            rules = await self._rules.for_org(placement["org_path"][-1])
            doc = await self._placements.find_one_and_update(
                {"_id": placement_id, "status": "placed"},
                {
                    "$set": {
                        "stay_until": until.isoformat(),
                        "extended_by": ctx.identity.user_id,
                        "reminded": False,
                    },
                    "$push": {
                        "extensions": {
                            "until": until.isoformat(),
                            "by": ctx.identity.user_id,
                            "at": self._clock.now(),
                            "rules_version": rules.version,
                        }
                    },
                },
                return_document=ReturnDocument.AFTER,
            )
            doc = still_there(doc)
        return _placement_view(doc)

    async def remind_stays_ending(
        self, now: dt.datetime, days_ahead: int = STAY_NOTICE_DAYS
    ) -> int:
        """Before a stay's limit, the person and the worker are told (once per limit)."""
        horizon = (now.astimezone(LOCAL_TZ).date() + dt.timedelta(days=days_ahead)).isoformat()
        sent = 0
        async for doc in self._placements.find(
            {
                "status": "placed",
                "stay_until": {"$ne": None, "$lte": horizon},
                "reminded": {"$ne": True},
            }
        ):
            await self._notifications.send(
                f"subject:{doc['subject_id']}",
                "入住期限提醒",
                f"您的入住期限至{doc['stay_until']}，如需延长请联系工作人员。",
                data={"template": "reminder", "placement_id": doc["_id"]},
                dedupe_key=f"stay:{doc['_id']}:{doc['stay_until']}",
            )
            await self._placements.update_one({"_id": doc["_id"]}, {"$set": {"reminded": True}})
            sent += 1
        return sent

    # --- training -------------------------------------------------------------------------

    async def record_attendance(
        self, ctx: AuditContext, resource_id: str, subject_id: str, on: dt.date, hours: float
    ) -> dict[str, Any]:
        """Hours at a course count toward the person's education obligation that month."""
        resource = await self._resource_in_scope(ctx.identity, resource_id)
        if resource["kind"] != ResourceKind.COURSE:
            raise InvalidInput(
                "Attendance is recorded for courses.", details=[{"field": "resource_id"}]
            )
        # The person must be the caller's to record for, as for any placement: a course is the
        # county's, reached from every station, the person is not. Checked before anything
        # says whether they are enrolled.
        if ctx.identity.role != Role.ASSISTANCE_COORDINATOR:
            # (A coordinator reaches the people enrolled in their own course, checked below.)
            await self._scope.require(ctx, subject_id, "assistance.place")
        enrolled = await self._placements.find_one(
            {"resource_id": resource_id, "subject_id": subject_id, "status": "placed"}
        )
        if enrolled is None:
            raise Conflict("The person is not enrolled in this course.", code="not_enrolled")
        await self._referral_in_scope(ctx.identity, enrolled["referral_id"], "assistance.place")
        limit = resource.get("hours_credit")
        if hours <= 0 or (limit is not None and hours > float(limit)):
            raise InvalidInput("Hours out of range.", details=[{"field": "hours"}])
        async with self._audit.change(
            ctx,
            "assistance.attendance",
            resource="assistance_resource",
            resource_id=resource_id,
            subject_id=subject_id,
            details={"hours": hours, "on": on.isoformat()},
        ):
            credited = await self._obligations.credit_hours(
                subject_id, "education", on, hours, f"course:{resource_id}"
            )
        return {"subject_id": subject_id, "hours": hours, "credited": credited}

    # --- summary ---------------------------------------------------------------------------

    async def summary(self, ctx: AuditContext, org_id: str, month: str) -> dict[str, Any]:
        """A county's month: referrals by need and status, median days from request to
        placement, and occupancy; aggregated in the database, scoped by the tree."""
        org = await self._orgs.get_in_scope(ctx.identity, org_id)
        try:
            first = dt.date.fromisoformat(month + "-01")
        except ValueError:
            raise InvalidInput("The month is YYYY-MM.", details=[{"field": "month"}]) from None
        last = (first.replace(day=28) + dt.timedelta(days=4)).replace(day=1)
        start = dt.datetime.combine(first, dt.time(), tzinfo=LOCAL_TZ).astimezone(dt.UTC)
        end = dt.datetime.combine(last, dt.time(), tzinfo=LOCAL_TZ).astimezone(dt.UTC)
        match = {"org_path": org.id, "created_at": {"$gte": start, "$lt": end}}
        by_status = {
            d["_id"]: d["n"]
            async for d in await self._referrals.aggregate(
                [{"$match": match}, {"$group": {"_id": "$status", "n": {"$sum": 1}}}]
            )
        }
        by_need = {
            d["_id"]: d["n"]
            async for d in await self._referrals.aggregate(
                [
                    {"$match": match},
                    {"$unwind": "$needs"},
                    {"$group": {"_id": "$needs", "n": {"$sum": 1}}},
                ]
            )
        }
        days: list[float] = []
        async for d in await self._referrals.aggregate(
            [
                {"$match": match},
                {"$unwind": "$history"},
                {"$match": {"history.status": {"$in": [str(S.PLACED), str(S.ENROLLED)]}}},
                {"$project": {"created_at": 1, "placed_at": "$history.at"}},
            ]
        ):
            days.append((d["placed_at"] - d["created_at"]).total_seconds() / 86400)
        occupancy = [
            {
                "id": str(r["_id"]),
                "name": r["name"],
                "kind": r["kind"],
                "capacity": r["capacity"],
                "occupied": len(r["placed"]),
                "held": len(r["held"]),
            }
            async for r in self._resources.find({"org_path": org.id})
        ]
        await self._audit.record(
            ctx, "assistance.summary", resource="org", resource_id=org.id, details={"month": month}
        )
        return {
            "org_id": org.id,
            "month": month,
            "referrals_by_status": by_status,
            "referrals_by_need": by_need,
            "median_days_to_placement": round(statistics.median(days), 1) if days else None,
            "occupancy": occupancy,
        }

    # --- the county's queue of stays (the console's queues page) -------------------------------

    async def stays_ending(
        self, ctx: AuditContext, within_days: int, limit: int
    ) -> list[dict[str, Any]]:
        """Stays in the caller's subtree that reach their end within `within_days` days and
        may still be extended (the county approves a longer stay), soonest first."""
        identity = ctx.identity
        if identity.org_id is None:
            return []
        today = self._clock.now().astimezone(LOCAL_TZ).date()
        horizon = (today + dt.timedelta(days=within_days)).isoformat()
        docs = [
            doc
            async for doc in self._placements.find(
                {
                    "status": "placed",
                    "org_path": identity.org_id,
                    "stay_until": {"$ne": None, "$lte": horizon},
                }
            )
            .sort("stay_until", ASCENDING)
            .limit(limit)
            if doc.get("max_until") and doc["stay_until"] < doc["max_until"]
        ]
        names = await self._subjects.display_names(identity, [d["subject_id"] for d in docs])
        items = []
        for doc in docs:
            rules = await self._rules.for_org(doc["org_path"][-1])
            resource = await self._resources.find_one(
                {"_id": parse_id(doc["resource_id"], "resource")}, {"name": 1}
            )
            items.append(
                {
                    "id": str(doc["_id"]),
                    "subject_id": doc["subject_id"],
                    "subject_name": names.get(doc["subject_id"]),
                    "resource_name": (resource or {}).get("name"),
                    "stay_until": doc["stay_until"],
                    "max_until": doc["max_until"],
                    "deadline": doc["stay_until"],
                    "basis": STAY_BASIS.format(
                        days=rules.int("assistance.max_stay_days"),
                        extended=rules.int("assistance.extended_stay_days"),
                    ),
                }
            )
        await self._audit.record(
            ctx,
            "assistance.read",
            resource="stay_queue",
            resource_id=identity.org_id,
            details={"count": len(items)},
        )
        return items


def _placement_view(doc: Mapping[str, Any]) -> PlacementView:
    return PlacementView(
        id=str(doc["_id"]),
        referral_id=doc["referral_id"],
        resource_id=doc["resource_id"],
        subject_id=doc["subject_id"],
        status=doc["status"],
        placed_at=doc["placed_at"],
        stay_until=dt.date.fromisoformat(doc["stay_until"]) if doc.get("stay_until") else None,
        arrived_on=dt.date.fromisoformat(doc["arrived_on"]) if doc.get("arrived_on") else None,
        departed_on=dt.date.fromisoformat(doc["departed_on"]) if doc.get("departed_on") else None,
    )

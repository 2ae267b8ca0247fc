"""电子定位 orders: only on one of the five grounds of 社区矫正法 Art. 29, approved by the head
of the county agency, for at most `elocation.max_months` each, renewed by new approved orders of
at most `elocation.renewal_max_months`; orders end by themselves once their last day has passed.

The location data an order allows is for corrections only (Art. 29): every order carries
`purpose: "corrections"`, which check-ins made under it inherit.
"""

from __future__ import annotations

import datetime as dt
import enum
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

from bson import ObjectId
from pymongo import ASCENDING, DESCENDING, IndexModel

from models.approvals import (
    COMMENTS,
    LEVEL_OF_ROLE,
    ApprovalChain,
    ApprovalStatus,
    open_steps,
    record_step,
)
from models.audit import AuditContext, AuditService
from models.clock import LOCAL_TZ, Clock
from models.codec import FieldCodec
from models.decision_notices import DecisionNoticeService, NoticeKind, day_text
from models.errors import Conflict, Forbidden, InvalidInput, NotFound
from models.identity import Identity
from models.ids import parse_id
from models.leave import LeaveService
from models.periods import add_months
from models.programs import ProgramService, ProgramType
from models.rules import RulesService
from models.sanctions import SanctionKind, SanctionService
from models.scope import ScopeService
from models.staff import StaffService
from models.store import CollectionSpec, Store
from models.subjects import SubjectService

ELOCATION_ORDERS = CollectionSpec(
    "elocation_orders",
    (
        IndexModel([("subject_id", ASCENDING), ("start_date", ASCENDING)]),
        IndexModel([("org_path", ASCENDING), ("status", ASCENDING)]),
        # The sweep that ends orders whose last day has passed.
        IndexModel([("status", ASCENDING), ("end_date", ASCENDING)]),
    ),
)

PURPOSE = "corrections"
# The sweep's changes are the system's, not a person's: audited under this context.
SWEEP = AuditContext(Identity(user_id="system", role="system", unscoped=True), request_id="sweep")


class Ground(enum.StrEnum):
    """社区矫正法 Art. 29: the only five grounds for electronic location."""

    BREACH_OF_PROHIBITION = "breach_of_prohibition"  # 违反人民法院禁止令
    LEFT_WITHOUT_APPROVAL = "left_without_approval"  # 无正当理由未经批准离开所居住的市、县
    REFUSED_REPORT_AFTER_WARNING = "refused_report_after_warning"  # 拒不按照规定报告…被给予警告
    PUBLIC_SECURITY_PENALTY = "public_security_penalty"  # 违反监督管理规定，被给予治安管理处罚
    REVOCATION_PENDING = "revocation_pending"  # 拟提请撤销缓刑、假释或者暂予监外执行收监执行


# Grounds the file proves by a decision in the current term: a 警告 given (Art. 29(3)); a 治安管理
# 处罚 the agency asked the police for (Art. 28 puts every such penalty through its 提请). A
# revocation only about to be requested (拟提请) is not on file yet, so nothing disproves it.
PROVED_BY_SANCTION: Mapping[Ground, SanctionKind] = {
    Ground.REFUSED_REPORT_AFTER_WARNING: SanctionKind.WARN,
    Ground.PUBLIC_SECURITY_PENALTY: SanctionKind.PUBLIC_SECURITY_PENALTY,
}
NOT_ON_FILE_ZH: Mapping[Ground, str] = {
    Ground.BREACH_OF_PROHIBITION: "档案中没有人民法院禁止令，不能以违反禁止令为由申请电子定位。",
    Ground.REFUSED_REPORT_AFTER_WARNING: (
        "本次矫正期内档案中没有已决定的警告，不能以拒不报告、被给予警告为由申请电子定位。"
    ),
    Ground.PUBLIC_SECURITY_PENALTY: (
        "本次矫正期内档案中没有已提请的治安管理处罚，不能以被给予治安管理处罚为由申请电子定位。"
    ),
}


class OrderStatus(enum.StrEnum):
    PENDING = "pending"
    APPROVED = "approved"
    REJECTED = "rejected"
    ENDED = "ended"


@dataclass
class OrderView:
    id: str
    subject_id: str
    ground: str
    prohibition_index: int | None
    prohibition: str | None
    reason: str | None
    start_date: str
    end_date: str
    renews: str | None
    status: str
    in_force: bool
    purpose: str
    levels: list[str]
    rule: str
    steps: list[dict[str, Any]]
    next_level: str | None
    rules_version: str
    limit_rule: str
    ended_on: str | None = None
    # The renewal that follows this order (pending or approved), on the person's list only.
    renewed_by: str | None = None


@dataclass
class PendingOrder:
    """An order or renewal as the decider's queue shows it."""

    id: str
    subject_id: str
    subject_name: str | None
    ground: str
    renews: str | None
    start_date: str
    end_date: str
    deadline: str | None
    basis: str
    level: str
    requested_at: dt.datetime


BASIS = "社区矫正法第二十九条"


def latest_end(start: dt.date, months: int) -> dt.date:
    """The last day an order of at most `months` months may cover, counting both ends: from
    1 January, three months run to 31 March (and 1 April is three months and a day)."""
    return add_months(start, months) - dt.timedelta(days=1)


def _date(value: str) -> dt.date:
    return dt.date.fromisoformat(value)


def _not_on_file(ground: Ground, requires: str, since: dt.date | None = None) -> InvalidInput:
    """The file lacks what the ground stands on: 422 naming the ground and what is missing."""
    detail: dict[str, Any] = {
        "field": "ground",
        "ground": str(ground),
        "requires": requires,
        "message": NOT_ON_FILE_ZH[ground],
    }
    if since is not None:
        detail["since"] = since.isoformat()
    return InvalidInput(
        f"{ground}: nothing on file proves this ground ({requires}).",
        code="ground_not_on_file",
        details=[detail],
        message_zh=NOT_ON_FILE_ZH[ground],
    )


class ElocationService:
    collections = (ELOCATION_ORDERS,)
    # Where this service keeps fields sealed with a subject's data key (for key rotation).
    sealed_fields = (("elocation_orders", None), ("elocation_orders", COMMENTS))

    def __init__(
        self,
        store: Store,
        clock: Clock,
        audit: AuditService,
        codec: FieldCodec,
        subjects: SubjectService,
        programs: ProgramService,
        rules: RulesService,
        staff: StaffService,
        sanctions: SanctionService,
        leave: LeaveService,
        *,
        notices: DecisionNoticeService,
        scope: ScopeService,
    ):
        self._notices = notices
        self._sanctions = sanctions
        self._leave = leave
        self._orders = store.collection(ELOCATION_ORDERS)
        self._clock = clock
        self._audit = audit
        self._codec = codec
        self._subjects = subjects
        self._scope = scope
        self._programs = programs
        self._rules = rules
        self._staff = staff
        self._listeners: list[Callable[[str], Awaitable[None]]] = []

    def on_change(self, listener: Callable[[str], Awaitable[None]]) -> None:
        """Tell `listener` (a person's id) when an order is decided (or ends)."""
        self._listeners.append(listener)

    async def _changed(self, subject_id: str) -> None:
        for listener in self._listeners:
            await listener(subject_id)

    def today(self) -> dt.date:
        return self._clock.now().astimezone(LOCAL_TZ).date()

    # --- ordering and renewing ------------------------------------------------------------------

    async def order(
        self,
        ctx: AuditContext,
        subject_id: str,
        *,
        ground: Ground,
        start: dt.date,
        end: dt.date,
        reason: str,
        prohibition_index: int | None = None,
        area: Mapping[str, Any] | None = None,
        left_on: dt.date | None = None,
    ) -> OrderView:
        """Ask for an order; it takes effect once the county agency's head approves it. `area`
        (a polygon, or centre and radius) is where check-ins must come from while it runs.
        The ground is checked against the file wherever the file can prove or disprove it
        (`left_on`, the day the person left, is checked against granted leave)."""
        subject = await self._scope.require(ctx, subject_id, "elocation.request")
        program = await self._programs.open_program(subject_id, ProgramType.COMMUNITY_CORRECTIONS)
        if program is None:
            raise Conflict(
                "Electronic location applies to people under community corrections only.",
                code="not_under_corrections",
            )
        prohibition = None
        if ground is Ground.BREACH_OF_PROHIBITION:
            # The ground needs a 禁止令 the court made and the program records, named here.
            recorded = await self._programs.prohibitions(program)
            if not recorded:
                raise _not_on_file(ground, "prohibition")
            if prohibition_index is None or not 0 <= prohibition_index < len(recorded):
                raise InvalidInput(
                    f"Name the breached 禁止令 (0 to {len(recorded) - 1}).",
                    details=[{"field": "prohibition_index", "count": len(recorded)}],
                )
            prohibition = recorded[prohibition_index]
        elif prohibition_index is not None:
            raise InvalidInput(
                "A 禁止令 is named only for its breach.", details=[{"field": "prohibition_index"}]
            )
        await self._check_ground(subject_id, program, ground, left_on)
        return await self._insert(
            ctx, subject, ground, start, end, reason, prohibition_index, prohibition, None, area
        )

    async def _check_ground(
        self,
        subject_id: str,
        program: Mapping[str, Any],
        ground: Ground,
        left_on: dt.date | None,
    ) -> None:
        """社区矫正法 Art. 29 against the file: a ground a decision proves needs that decision
        in the current term; a departure on a day of granted leave was not unapproved."""
        if left_on is not None and ground is not Ground.LEFT_WITHOUT_APPROVAL:
            raise InvalidInput(
                "The day of leaving is given only for leaving without approval.",
                details=[{"field": "left_on"}],
            )
        kind = PROVED_BY_SANCTION.get(ground)
        if kind is not None:
            since = _date(program["start_date"])
            if not await self._sanctions.decided_since(subject_id, kind, since):
                raise _not_on_file(ground, f"sanction:{kind}", since)
        if left_on is None:
            return
        if left_on > self.today():
            raise InvalidInput(
                "The day of leaving cannot lie in the future.",
                details=[{"field": "left_on", "message": "离开日期不能晚于今天。"}],
                message_zh="离开日期不能晚于今天。",
            )
        granted = await self._leave.in_force(subject_id, left_on, left_on)
        if granted:
            raise InvalidInput(
                f"{ground}: the file shows granted leave on {left_on.isoformat()}.",
                code="ground_disproved",
                details=[
                    {
                        "field": "left_on",
                        "ground": str(ground),
                        "leave_request_id": str(granted[0]["_id"]),
                        "leave": [granted[0]["start_date"], granted[0]["end_date"]],
                    }
                ],
                message_zh="档案显示该日在批准的请假期内，不属于未经批准离开。",
            )

    async def renew(self, ctx: AuditContext, order_id: str, end: dt.date, reason: str) -> OrderView:
        """A renewal: a new order from the day after the approved one ends, approved again."""
        doc = await self._load(ctx, order_id, "elocation.request")
        if doc["status"] != OrderStatus.APPROVED:
            raise Conflict(
                "Only an approved order in force can be renewed.",
                code="invalid_transition",
                details={"status": doc["status"]},
            )
        follow = await self._orders.find_one(
            {"renews": order_id, "status": {"$in": [OrderStatus.PENDING, OrderStatus.APPROVED]}}
        )
        if follow is not None:
            raise Conflict(
                "This order already has a renewal.",
                code="exists",
                details={"id": str(follow["_id"]), "status": follow["status"]},
            )
        subject = await self._scope.require(ctx, doc["subject_id"], "elocation.request")
        prohibition = None
        if doc.get("prohibition") is not None:
            prohibition = await self._codec.open(
                "elocation_orders", str(doc["_id"]), "prohibition", doc["prohibition"]
            )
        area = None
        if doc.get("area") is not None:
            area = await self._codec.open("elocation_orders", str(doc["_id"]), "area", doc["area"])
        start = _date(doc["end_date"]) + dt.timedelta(days=1)
        return await self._insert(
            ctx,
            subject,
            Ground(doc["ground"]),
            start,
            end,
            reason,
            doc.get("prohibition_index"),
            prohibition,
            order_id,
            area,
        )

    async def _insert(
        self,
        ctx: AuditContext,
        subject: Mapping[str, Any],
        ground: Ground,
        start: dt.date,
        end: dt.date,
        reason: str,
        prohibition_index: int | None,
        prohibition: str | None,
        renews: str | None,
        area: Mapping[str, Any] | None = None,
    ) -> OrderView:
        subject_id = str(subject["_id"])
        reason = " ".join(reason.split())
        if not reason:
            raise InvalidInput("State the reason.", details=[{"field": "reason"}])
        if end < start:
            raise InvalidInput("The order ends before it starts.", details=[{"field": "end_date"}])
        rules = await self._rules.for_org(str(subject["org_id"]))
        if str(ground) not in rules["elocation.grounds"]:
            # Art. 29's grounds are the rules data's: a jurisdiction may narrow, never widen them.
            raise InvalidInput(
                f"{ground} is not a ground for electronic location in force here.",
                details=[{"field": "ground", "rule": "elocation.grounds"}],
                message_zh="该事由不属于本地适用的电子定位法定事由（社区矫正法第二十九条）。",
            )
        limit_rule = "elocation.renewal_max_months" if renews else "elocation.max_months"
        last = latest_end(start, rules.int(limit_rule))
        if end > last:
            # 社区矫正法 Art. 29: longer needs a renewal, itself approved.
            raise InvalidInput(
                f"An order runs at most {rules.int(limit_rule)} months: until {last} at the latest"
                + ("." if renews else "; renew it for longer."),
                details=[
                    {"field": "end_date", "rule": limit_rule, "latest": last.isoformat()},
                ],
            )
        clash = await self._orders.find_one(
            {
                "subject_id": subject_id,
                "status": {"$in": [OrderStatus.PENDING, OrderStatus.APPROVED]},
                "start_date": {"$lte": end.isoformat()},
                "end_date": {"$gte": start.isoformat()},
            }
        )
        if clash is not None:
            raise InvalidInput(
                "The dates overlap another order that is pending or in force.",
                details=[{"field": "start_date", "type": "overlap", "id": str(clash["_id"])}],
            )
        chain = ApprovalChain.from_rules(rules, "elocation.chain")
        order_id = ObjectId()
        oid = str(order_id)
        key_id = subject.get("dek_id")
        now = self._clock.now()
        doc = {
            "_id": order_id,
            "subject_id": subject_id,
            "org_id": str(subject["org_id"]),
            "org_path": list(subject["org_path"]),
            "ground": str(ground),
            "prohibition_index": prohibition_index,
            "prohibition": None
            if prohibition is None
            else await self._codec.seal(
                subject_id, key_id, "elocation_orders", oid, "prohibition", prohibition
            ),
            "reason": await self._codec.seal(
                subject_id, key_id, "elocation_orders", oid, "reason", reason
            ),
            # Where the person may be: a location like any other, so sealed.
            "area": None
            if area is None
            else await self._codec.seal(
                subject_id, key_id, "elocation_orders", oid, "area", dict(area)
            ),
            "start_date": start.isoformat(),
            "end_date": end.isoformat(),
            "limit_rule": limit_rule,
            "renews": renews,
            "purpose": PURPOSE,
            "status": str(OrderStatus.PENDING),
            "approval": chain.as_doc(),
            "requested_by": ctx.identity.user_id,
            "created_at": now,
            "updated_at": now,
            "version": 1,
        }
        async with self._audit.change(
            ctx,
            "elocation.renew" if renews else "elocation.request",
            resource="elocation_order",
            resource_id=oid,
            subject_id=subject_id,
            details={
                "ground": str(ground),
                "renews": renews,
                "limit_rule": limit_rule,
                "rules_version": rules.version,
            },
        ):
            await self._orders.insert_one(doc)
        return await self._view(doc)

    # --- deciding -------------------------------------------------------------------------------

    async def decide(
        self, ctx: AuditContext, order_id: str, approve: bool, comment: str
    ) -> OrderView:
        """The county agency's head approves or refuses; any other officer gets 403."""
        doc = await self._load(ctx, order_id, "elocation.decide")
        rules = await self._rules.for_org(doc["org_id"])
        chain = ApprovalChain.from_doc(doc["approval"])
        step = chain.step(
            ctx.identity, doc["org_path"], approve, comment, self._clock.now(), rules.version
        )
        # Looked up now rather than carried in the session: a head replaced this morning must
        # not approve with a token issued yesterday.
        member = await self._staff.lookup(ctx.identity.user_id or "")
        if member is None or member.get("disabled") or not member.get("is_agency_head"):
            raise Forbidden(
                "Only the head of the county agency approves electronic location.",
                code="agency_head_only",
            )
        step["agency_head"] = True
        subject = await self._subjects.document(doc["subject_id"]) or {}
        updated = await record_step(
            self._orders,
            self._audit,
            ctx,
            doc,
            step,
            action="elocation.decide",
            resource="elocation_order",
            codec=self._codec,
            key_id=subject.get("dek_id"),
            when_final={"decided_at": step["at"]},
        )
        await self._changed(str(updated["subject_id"]))
        view = await self._view(updated)
        if view.status == OrderStatus.APPROVED:
            # The person hears of an order once it is made (or renewed), not of a refusal to
            # make one, which changes nothing for them.
            await self._notices.notify(
                NoticeKind.ELOCATION_RENEWED if view.renews else NoticeKind.ELOCATION_ORDERED,
                view.subject_id,
                "elocation_order",
                view.id,
                fields={"start": day_text(view.start_date), "end": day_text(view.end_date)},
            )
        return view

    async def end_expired_orders(self, today: dt.date) -> int:
        """End every approved order whose last day is before `today` (the automatic end).
        Idempotent: an ended order is not approved any more, so a second run finds nothing."""
        ended = 0
        async for doc in self._orders.find(
            {"status": str(OrderStatus.APPROVED), "end_date": {"$lt": today.isoformat()}}
        ):
            async with self._audit.change(
                SWEEP,
                "elocation.end",
                resource="elocation_order",
                resource_id=str(doc["_id"]),
                subject_id=doc["subject_id"],
                details={"end_date": doc["end_date"]},
            ):
                result = await self._orders.update_one(
                    {"_id": doc["_id"], "status": str(OrderStatus.APPROVED)},
                    {
                        "$set": {
                            "status": str(OrderStatus.ENDED),
                            "ended_on": today.isoformat(),
                            "updated_at": self._clock.now(),
                        },
                        "$inc": {"version": 1},
                    },
                )
            ended += result.modified_count
            # A renewal that follows on keeps the device on: only a last order's end is news.
            follow = await self._orders.find_one(
                {"renews": str(doc["_id"]), "status": str(OrderStatus.APPROVED)}, {"_id": 1}
            )
            if follow is None:
                await self._notices.notify(
                    NoticeKind.ELOCATION_ENDED,
                    str(doc["subject_id"]),
                    "elocation_order",
                    str(doc["_id"]),
                    fields={"end": day_text(doc["end_date"])},
                )
        return ended

    # --- reading --------------------------------------------------------------------------------

    async def _load(self, ctx: AuditContext, order_id: str, action: str) -> dict[str, Any]:
        doc = await self._orders.find_one({"_id": parse_id(order_id, "order")})
        if doc is None:
            raise NotFound("No such order.")
        await self._scope.require(ctx, doc["subject_id"], action)
        return doc

    async def get(self, ctx: AuditContext, order_id: str) -> OrderView:
        doc = await self._load(ctx, order_id, "elocation.read")
        await self._audit.record(
            ctx,
            "elocation.read",
            resource="elocation_order",
            resource_id=order_id,
            subject_id=doc["subject_id"],
        )
        return await self._view(doc)

    async def for_subject(self, ctx: AuditContext, subject_id: str) -> list[OrderView]:
        """A person's orders, newest first: pending, in force, refused or ended, each with the
        renewal that follows it (so a renewal is asked for only once)."""
        await self._scope.require(ctx, subject_id, "elocation.read")
        docs = [
            doc
            async for doc in self._orders.find({"subject_id": subject_id}).sort(
                [("start_date", DESCENDING), ("_id", DESCENDING)]
            )
        ]
        follows = {
            doc["renews"]: str(doc["_id"])
            for doc in docs
            if doc.get("renews") and doc["status"] in (OrderStatus.PENDING, OrderStatus.APPROVED)
        }
        views = []
        for doc in docs:
            view = await self._view(doc)
            view.renewed_by = follows.get(view.id)
            views.append(view)
        await self._audit.record(
            ctx,
            "elocation.read",
            resource="subject",
            resource_id=subject_id,
            subject_id=subject_id,
            details={"count": len(views)},
        )
        return views

    async def awaiting(self, ctx: AuditContext, limit: int) -> list[PendingOrder]:
        """Orders and renewals in the caller's subtree whose next step is the caller's level
        (the county agency head's, under the default chain), oldest first."""
        identity = ctx.identity
        level = LEVEL_OF_ROLE.get(identity.role or "")
        if level is None or identity.org_id is None:
            return []
        cursor = self._orders.find(
            {"status": str(OrderStatus.PENDING), "org_path": identity.org_id}
        ).sort("created_at", ASCENDING)
        docs = []
        async for doc in cursor:
            chain = ApprovalChain.from_doc(doc["approval"])
            if chain.next_level is level and identity.reaches(doc["org_path"]):
                docs.append(doc)
                if len(docs) >= limit:
                    break
        names = await self._subjects.display_names(identity, [d["subject_id"] for d in docs])
        items = [
            PendingOrder(
                id=str(doc["_id"]),
                subject_id=doc["subject_id"],
                subject_name=names.get(doc["subject_id"]),
                ground=doc["ground"],
                renews=doc.get("renews"),
                start_date=doc["start_date"],
                end_date=doc["end_date"],
                # No statute sets a time to decide; the order is of no use once the period it
                # asks for has begun, so that day is the deadline the queue shows.
                deadline=doc["start_date"],
                basis=BASIS,
                level=str(level),
                requested_at=doc["created_at"],
            )
            for doc in docs
        ]
        await self._audit.record(
            ctx,
            "elocation.read",
            resource="elocation_queue",
            resource_id=identity.org_id,
            details={"count": len(items)},
        )
        return items

    async def _view(self, doc: Mapping[str, Any]) -> OrderView:
        oid = str(doc["_id"])
        chain = ApprovalChain.from_doc(doc["approval"]).view()
        today = self.today()
        prohibition = None
        if doc.get("prohibition") is not None:
            prohibition = await self._codec.open(
                "elocation_orders", oid, "prohibition", doc["prohibition"]
            )
        return OrderView(
            id=oid,
            subject_id=doc["subject_id"],
            ground=doc["ground"],
            prohibition_index=doc.get("prohibition_index"),
            prohibition=prohibition,
            reason=await self._codec.open("elocation_orders", oid, "reason", doc["reason"]),
            start_date=doc["start_date"],
            end_date=doc["end_date"],
            renews=doc.get("renews"),
            status=doc["status"],
            in_force=doc["status"] == ApprovalStatus.APPROVED
            and _date(doc["start_date"]) <= today <= _date(doc["end_date"]),
            purpose=doc["purpose"],
            levels=chain["levels"],
            rule=chain["rule"],
            steps=await open_steps(self._codec, "elocation_orders", doc, chain["steps"]),
            next_level=chain["next_level"],
            rules_version=doc["approval"]["rules_version"],
            limit_rule=doc["limit_rule"],
            ended_on=doc.get("ended_on"),
        )

    async def in_force(
        self, subject_id: str, first: dt.date, last: dt.date
    ) -> list[dict[str, Any]]:
        """Approved orders running on any day in [first, last], with their sealed area."""
        cursor = self._orders.find(
            {
                "subject_id": subject_id,
                "start_date": {"$lte": last.isoformat()},
                "status": str(OrderStatus.APPROVED),
            },
            {"start_date": 1, "end_date": 1, "area": 1},
        )
        return [doc async for doc in cursor if doc["end_date"] >= first.isoformat()]

    async def relocate(self, subject_id: str, org_id: str, org_path: list[str]) -> int:
        """Follow the person to a new station (执行地变更)."""
        result = await self._orders.update_many(
            {"subject_id": subject_id}, {"$set": {"org_id": org_id, "org_path": org_path}}
        )
        return result.modified_count

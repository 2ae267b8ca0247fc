"""外出请假: leave requests of people under community corrections, decided along a chain by days.

Up to `leave.station_max_days` the station decides alone; beyond it the station reviews first
(初审) and the county decides; beyond `leave.county_max_days`, or when the person's leave within
two months would total more than `leave.window_max_total_days`, the next level up decides too.
The chains themselves are rules (`leave.chain_*`). Destination and reason are sealed with the
person's data key. The return (销假) is recorded, and a sweep alerts the station when it is late.
"""

from __future__ import annotations

import builtins  # `list` in a service class names its method; `builtins.list` the type
import datetime as dt
import enum
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from bson import ObjectId
from pymongo import ASCENDING, DESCENDING, IndexModel, ReturnDocument

from models.alerts import AlertService
from models.approvals import COMMENTS, ApprovalChain, ApprovalStatus, open_steps, record_step
from models.audit import AuditContext, AuditService
from models.clock import LOCAL_TZ, Clock
from models.codec import FieldCodec
from models.decision_notices import (
    LEVEL_TEXT,
    DecisionNoticeService,
    NoticeKind,
    day_text,
    reason_text,
)
from models.errors import Conflict, InvalidInput, NotFound
from models.ids import parse_id
from models.orgs import node_at
from models.periods import add_months
from models.programs import ProgramService, ProgramType
from models.rules import EffectiveRules, RulesService
from models.scope import ScopeService
from models.store import CollectionSpec, Store
from models.subjects import SubjectService

LEAVE_REQUESTS = CollectionSpec(
    "leave_requests",
    (
        # The decision queue of a node: pending requests in its subtree.
        IndexModel([("org_path", ASCENDING), ("status", ASCENDING), ("created_at", ASCENDING)]),
        # Overlap and two-month totals look at one person's leave.
        IndexModel([("subject_id", ASCENDING), ("start_date", ASCENDING)]),
        # The overdue-return sweep: approved leave that ended without a 销假.
        IndexModel([("status", ASCENDING), ("end_date", ASCENDING)]),
    ),
)

# Leave that still counts: granted, or still able to be granted.
COUNTING = (str(ApprovalStatus.PENDING), str(ApprovalStatus.APPROVED))
MAX_LIST = 200
# How far from today a leave's dates may lie.
DATE_REACH_DAYS = 3653


class LeaveChannel(enum.StrEnum):
    STAFF = "staff"  # filed by staff on the person's behalf
    MINIPROGRAM = "miniprogram"  # filed by the person (issue 9)


@dataclass
class LeaveView:
    id: str
    subject_id: str
    start_date: str
    end_date: str
    days: int
    window_total_days: int
    destination: str | None
    reason: str | None
    status: str
    levels: list[str]
    rule: str
    steps: list[dict[str, Any]]
    next_level: str | None
    rules_version: str
    channel: str
    returned_on: str | None = None
    return_late: bool | None = None
    created_at: dt.datetime | None = None
    # On lists only: the person's name as the reader may see it (masked for a juvenile).
    subject_name: str | None = None


def leave_days(start: dt.date, end: dt.date) -> int:
    """Days away, counting the first and the last: 1-7 March is 7 days."""
    return (end - start).days + 1


def _overlap(a_start: dt.date, a_end: dt.date, b_start: dt.date, b_end: dt.date) -> int:
    """Days two inclusive spans share."""
    return max(0, (min(a_end, b_end) - max(a_start, b_start)).days + 1)


def window_total(
    start: dt.date,
    end: dt.date,
    others: Iterable[tuple[dt.date, dt.date]],
    months: int,
) -> int:
    """The most leave days any two-month window holds that includes a day of this request.

    "Within two months" (实施办法 2020) is read as any span of `months` calendar months: the days
    D with add_months(E, -months) < D <= E, for some day E (31 Jan to 31 Mar ends on 31 Mar and
    begins on 1 Feb). Every such window that contains at least one day of the request [start,
    end] is considered, ending from `start` up to `months` months after `end`, so leave already
    granted after this request counts as well as leave before it. Days are counted inclusively,
    for this request and every other leave passed in `others` (approved or still pending: one
    still pending may yet be granted, and a chain fixed when a request is filed errs upwards).
    """
    spans = [(start, end), *others]
    best = 0
    day = start
    last = add_months(end, months)
    while day <= last:
        window_start = add_months(day, -months) + dt.timedelta(days=1)
        if window_start <= end:
            best = max(best, sum(_overlap(s, e, window_start, day) for s, e in spans))
        day += dt.timedelta(days=1)
    return best


def chain_rule(days: int, total: int, rules: EffectiveRules) -> str:
    """The rule naming the chain for a request of `days` whose two-month total is `total`."""
    if days > rules.int("leave.county_max_days") or total > rules.int(
        "leave.window_max_total_days"
    ):
        return "leave.chain_beyond_county_max"
    if days > rules.int("leave.station_max_days"):
        return "leave.chain_up_to_county_max"
    return "leave.chain_up_to_station_max"


def _own_subject(ctx: AuditContext) -> str:
    """The file a mini-program person (or guardian) acts on; no other caller has one."""
    subject_id = ctx.identity.subject_id
    if ctx.identity.channel != "mp" or subject_id is None:
        raise NotFound("No such case file.", message_zh="未找到您的档案。")
    return subject_id


def _date(value: Any) -> dt.date:
    return value if isinstance(value, dt.date) else dt.date.fromisoformat(value)


class LeaveService:
    collections = (LEAVE_REQUESTS,)
    # Where this service keeps fields sealed with a subject's data key (for key rotation).
    sealed_fields = (("leave_requests", None), ("leave_requests", COMMENTS))

    def __init__(
        self,
        store: Store,
        clock: Clock,
        audit: AuditService,
        codec: FieldCodec,
        subjects: SubjectService,
        programs: ProgramService,
        rules: RulesService,
        alerts: AlertService,
        *,
        notices: DecisionNoticeService,
        scope: ScopeService,
    ):
        self._leave = store.collection(LEAVE_REQUESTS)
        self._notices = notices
        self._clock = clock
        self._audit = audit
        self._codec = codec
        self._subjects = subjects
        self._scope = scope
        self._programs = programs
        self._rules = rules
        self._alerts = alerts
        self._listeners: list[Callable[[str], Awaitable[None]]] = []

    def on_change(self, listener: Callable[[str], Awaitable[None]]) -> None:
        """Tell `listener` (a person's id) when leave is granted, refused or returned from."""
        self._listeners.append(listener)

    async def _changed(self, subject_id: str) -> None:
        for listener in self._listeners:
            await listener(subject_id)

    def today(self) -> dt.date:
        return self._clock.now().astimezone(LOCAL_TZ).date()

    # --- filing ---------------------------------------------------------------------------------

    async def request(
        self,
        ctx: AuditContext,
        subject_id: str,
        *,
        start: dt.date,
        end: dt.date,
        destination: str,
        reason: str,
    ) -> LeaveView:
        """Staff file a request on the person's behalf (scope: `leave.request`)."""
        subject = await self._scope.require(ctx, subject_id, "leave.request")
        return await self._file(ctx, subject, start, end, destination, reason, LeaveChannel.STAFF)

    async def request_from_subject(
        self,
        ctx: AuditContext,
        subject: Mapping[str, Any],
        *,
        start: dt.date,
        end: dt.date,
        destination: str,
        reason: str,
    ) -> LeaveView:
        """The person files their own request from the mini-program (issue 9). `subject` is the
        case-file document the caller's binding resolved to: no staff scope applies to a person
        asking for themselves."""
        return await self._file(
            ctx, subject, start, end, destination, reason, LeaveChannel.MINIPROGRAM
        )

    async def request_for_self(
        self, ctx: AuditContext, *, start: dt.date, end: dt.date, destination: str, reason: str
    ) -> LeaveView:
        """The calling person's own request, from the mini-program."""
        subject_id = ctx.identity.subject_id
        subject = await self._subjects.document(subject_id) if subject_id else None
        if subject is None:
            raise NotFound("No such case file.", message_zh="未找到您的档案。")
        return await self.request_from_subject(
            ctx, subject, start=start, end=end, destination=destination, reason=reason
        )

    async def _file(
        self,
        ctx: AuditContext,
        subject: Mapping[str, Any],
        start: dt.date,
        end: dt.date,
        destination: str,
        reason: str,
        channel: LeaveChannel,
    ) -> LeaveView:
        subject_id = str(subject["_id"])
        # No term reaches that far: a date beyond it is a slip (and the window arithmetic
        # would leave the calendar at year 1).
        today = self.today()
        for field, day in (("start_date", start), ("end_date", end)):
            if abs((day - today).days) > DATE_REACH_DAYS:
                raise InvalidInput(
                    "The date is more than ten years from today.",
                    details=[{"field": field}],
                    message_zh="日期超出范围（距今不能超过十年）。",
                )
        if start < today and channel is LeaveChannel.MINIPROGRAM:
            # A person asks before going (社区矫正法 Art. 27); staff may still record leave
            # after the fact (a person who could not use the app).
            raise InvalidInput(
                "The leave starts before today.",
                details=[{"field": "start_date", "message": "开始日期不能早于今天。"}],
                message_zh="开始日期不能早于今天，请选择今天或以后的日期。",
            )
        if end < start:
            raise InvalidInput(
                "The leave ends before it starts.",
                details=[{"field": "end_date"}],
                message_zh="结束日期早于开始日期。",
            )
        destination, reason = " ".join(destination.split()), " ".join(reason.split())
        if not destination:
            raise InvalidInput(
                "Name the destination.",
                details=[{"field": "destination"}],
                message_zh="请填写目的地。",
            )
        if not reason:
            raise InvalidInput(
                "State the reason.", details=[{"field": "reason"}], message_zh="请填写请假事由。"
            )
        # 外出请假 is a corrections rule (社区矫正法 Art. 27): other people are free to travel.
        if await self._programs.open_program(subject_id, ProgramType.COMMUNITY_CORRECTIONS) is None:
            raise Conflict(
                "Only a person under community corrections asks for leave.",
                code="not_under_corrections",
                message_zh="您无需办理外出请假。",
            )
        others = [
            doc
            async for doc in self._leave.find(
                {"subject_id": subject_id, "status": {"$in": list(COUNTING)}}
            )
        ]
        clash = next(
            (
                doc
                for doc in others
                if _overlap(start, end, _date(doc["start_date"]), _date(doc["end_date"]))
            ),
            None,
        )
        if clash is not None:
            raise InvalidInput(
                "The dates overlap another leave that is granted or pending.",
                message_zh="所选日期与已有的请假重叠。",
                details=[
                    {"field": "start_date", "type": "overlap", "id": str(clash["_id"])},
                ],
            )
        rules = await self._rules.for_org(str(subject["org_id"]))
        days = leave_days(start, end)
        total = window_total(
            start,
            end,
            ((_date(d["start_date"]), _date(d["end_date"])) for d in others),
            rules.int("leave.window_months"),
        )
        chain = ApprovalChain.from_rules(rules, chain_rule(days, total, rules))
        leave_id = ObjectId()
        lid = str(leave_id)
        key_id = subject.get("dek_id")
        now = self._clock.now()
        doc = {
            "_id": leave_id,
            "subject_id": subject_id,
            "org_id": str(subject["org_id"]),
            "org_path": list(subject["org_path"]),
            "start_date": start.isoformat(),
            "end_date": end.isoformat(),
            "days": days,
            "window_total_days": total,
            "destination": await self._codec.seal(
                subject_id, key_id, "leave_requests", lid, "destination", destination
            ),
            "reason": await self._codec.seal(
                subject_id, key_id, "leave_requests", lid, "reason", reason
            ),
            "status": str(chain.status),
            "approval": chain.as_doc(),
            "channel": str(channel),
            "requested_by": ctx.identity.user_id,
            "returned_on": None,
            "created_at": now,
            "updated_at": now,
            "version": 1,
        }
        async with self._audit.change(
            ctx,
            "leave.request",
            resource="leave_request",
            resource_id=lid,
            subject_id=subject_id,
            details={
                "days": days,
                "window_total_days": total,
                "rule": chain.rule,
                "rules_version": rules.version,
                "channel": str(channel),
            },
        ):
            await self._leave.insert_one(doc)
        return await self._view(doc)

    # --- reading --------------------------------------------------------------------------------

    async def _load(self, ctx: AuditContext, leave_id: str, action: str) -> dict[str, Any]:
        """The request when the caller reaches the person's case file for `action`; else 404."""
        doc = await self._leave.find_one({"_id": parse_id(leave_id, "leave request")})
        if doc is None:
            raise NotFound("No such leave request.")
        await self._scope.require(ctx, doc["subject_id"], action)
        return doc

    async def list(self, ctx: AuditContext, status: str | None, limit: int) -> list[LeaveView]:
        """Requests filed under the caller's subtree, oldest first (the decision queue)."""
        query: dict[str, Any] = {"org_path": ctx.identity.org_id}
        if status:
            query["status"] = status
        docs = [
            doc
            async for doc in self._leave.find(query)
            .sort("created_at", ASCENDING)
            .limit(min(limit, MAX_LIST))
        ]
        views = await self._named(ctx, [await self._view(doc) for doc in docs])
        await self._audit.record(
            ctx,
            "leave.read",
            resource="leave_request",
            details={"status": status, "count": len(views)},
        )
        return views

    async def _named(
        self, ctx: AuditContext, views: builtins.list[LeaveView]
    ) -> builtins.list[LeaveView]:
        """The views with the person's name, as the reader's role may see it."""
        names = await self._subjects.display_names(
            ctx.identity, sorted({v.subject_id for v in views})
        )
        for view in views:
            view.subject_name = names.get(view.subject_id)
        return views

    async def for_subject(
        self, ctx: AuditContext, subject_id: str, limit: int
    ) -> builtins.list[LeaveView]:
        """One person's leave on the file, newest first, whatever its state: what an officer
        or the assigned social worker needs to see it through to the 销假."""
        await self._scope.require(ctx, subject_id, "leave.history")
        return await self._person_list(ctx, subject_id, "start_date", limit)

    async def get(self, ctx: AuditContext, leave_id: str) -> LeaveView:
        doc = await self._load(ctx, leave_id, "leave.read")
        await self._audit.record(
            ctx,
            "leave.read",
            resource="leave_request",
            resource_id=leave_id,
            subject_id=doc["subject_id"],
        )
        return await self._view(doc)

    async def own_requests(self, ctx: AuditContext, limit: int) -> builtins.list[LeaveView]:
        """The calling person's (or guardian's person's) own requests, newest first."""
        return await self._person_list(ctx, _own_subject(ctx), "created_at", limit)

    async def _person_list(
        self, ctx: AuditContext, subject_id: str, newest_by: str, limit: int
    ) -> builtins.list[LeaveView]:
        """One person's requests, newest first by `newest_by`, the reading audited."""
        docs = [
            doc
            async for doc in self._leave.find({"subject_id": subject_id})
            .sort([(newest_by, DESCENDING), ("_id", DESCENDING)])
            .limit(min(limit, MAX_LIST))
        ]
        views = [await self._view(doc) for doc in docs]
        await self._audit.record(
            ctx,
            "leave.read",
            resource="subject",
            resource_id=subject_id,
            subject_id=subject_id,
            details={"count": len(views)},
        )
        return views

    async def own_request(self, ctx: AuditContext, leave_id: str) -> LeaveView:
        """One of the caller's own requests; anyone else's is 404, as if it did not exist."""
        subject_id = _own_subject(ctx)
        doc = await self._leave.find_one({"_id": parse_id(leave_id, "leave request")})
        if doc is None or doc["subject_id"] != subject_id:
            raise NotFound("No such leave request.", message_zh="未找到该请假记录。")
        await self._audit.record(
            ctx,
            "leave.read",
            resource="leave_request",
            resource_id=leave_id,
            subject_id=subject_id,
        )
        return await self._view(doc)

    async def _view(self, doc: Mapping[str, Any]) -> LeaveView:
        lid = str(doc["_id"])
        chain = ApprovalChain.from_doc(doc["approval"]).view()
        return LeaveView(
            id=lid,
            subject_id=doc["subject_id"],
            start_date=doc["start_date"],
            end_date=doc["end_date"],
            days=doc["days"],
            window_total_days=doc["window_total_days"],
            destination=await self._codec.open(
                "leave_requests", lid, "destination", doc["destination"]
            ),
            reason=await self._codec.open("leave_requests", lid, "reason", doc["reason"]),
            status=doc["status"],
            levels=chain["levels"],
            rule=chain["rule"],
            steps=await open_steps(self._codec, "leave_requests", doc, chain["steps"]),
            next_level=chain["next_level"],
            rules_version=doc["approval"]["rules_version"],
            channel=doc["channel"],
            returned_on=doc.get("returned_on"),
            return_late=doc.get("return_late"),
            created_at=doc.get("created_at"),
        )

    # --- deciding and returning -----------------------------------------------------------------

    async def decide(
        self, ctx: AuditContext, leave_id: str, approve: bool, comment: str
    ) -> LeaveView:
        """The caller's step on the request: 403 when another level acts next, 409 once the
        request is decided."""
        doc = await self._load(ctx, leave_id, "leave.decide")
        rules = await self._rules.for_org(doc["org_id"])
        chain = ApprovalChain.from_doc(doc["approval"])
        step = chain.step(
            ctx.identity, doc["org_path"], approve, comment, self._clock.now(), rules.version
        )
        subject = await self._subjects.document(doc["subject_id"]) or {}
        updated = await record_step(
            self._leave,
            self._audit,
            ctx,
            doc,
            step,
            action="leave.decide",
            resource="leave_request",
            codec=self._codec,
            key_id=subject.get("dek_id"),
            when_final={"decided_at": step["at"]},
        )
        await self._changed(str(updated["subject_id"]))
        view = await self._view(updated)
        await self._announce_step(view)
        return view

    async def _announce_step(self, view: LeaveView) -> None:
        """The person hears of each level's step: granted, refused (with the officer's
        reason), or passed on to the next level."""
        last = view.steps[-1]
        fields = {
            "start": day_text(view.start_date),
            "end": day_text(view.end_date),
            "destination": view.destination,
        }
        if view.status == ApprovalStatus.APPROVED:
            kind = NoticeKind.LEAVE_APPROVED
        elif view.status == ApprovalStatus.REJECTED:
            kind = NoticeKind.LEAVE_REJECTED
            fields["reason"] = reason_text(last.get("comment"))
        else:
            kind = NoticeKind.LEAVE_NEXT_LEVEL
            fields["done"] = LEVEL_TEXT.get(str(last["level"]), "")
            fields["next"] = LEVEL_TEXT.get(str(view.next_level), "")
        await self._notices.notify(
            kind, view.subject_id, "leave_request", view.id, step=len(view.steps), fields=fields
        )

    async def record_return(self, ctx: AuditContext, leave_id: str, on: dt.date) -> LeaveView:
        """销假: the person is back. Once, on granted leave, not before it began; a return
        after the last day of leave is marked late."""
        doc = await self._load(ctx, leave_id, "leave.return")
        return await self._record_return(ctx, doc, on, {})

    async def return_from_subject(
        self, ctx: AuditContext, leave_id: str, location: Mapping[str, Any] | None
    ) -> LeaveView:
        """The person reports back from the mini-program (销假), today, optionally with where
        they are; their own request only."""
        doc = await self._leave.find_one({"_id": parse_id(leave_id, "leave request")})
        if doc is None or doc["subject_id"] != ctx.identity.subject_id:
            raise NotFound("No such leave request.", message_zh="未找到该请假记录。")
        extra: dict[str, Any] = {"returned_via": "miniprogram"}
        if location is not None:
            subject = await self._subjects.document(doc["subject_id"])
            extra["return_location"] = await self._codec.seal(
                doc["subject_id"],
                subject.get("dek_id") if subject else None,
                "leave_requests",
                str(doc["_id"]),
                "return_location",
                dict(location),
            )
        return await self._record_return(ctx, doc, self.today(), extra)

    async def _record_return(
        self, ctx: AuditContext, doc: dict[str, Any], on: dt.date, extra: dict[str, Any]
    ) -> LeaveView:
        leave_id = str(doc["_id"])
        if doc["status"] != ApprovalStatus.APPROVED or doc.get("returned_on"):
            raise Conflict(
                "Only granted leave not yet closed can be closed with a return.",
                code="invalid_transition",
                details={"status": "returned" if doc.get("returned_on") else doc["status"]},
                message_zh="该请假尚未批准或已销假。",
            )
        if on < _date(doc["start_date"]):
            raise InvalidInput(
                "The return comes before the leave began.",
                details=[{"field": "date"}],
                message_zh="请假尚未开始，无需销假。",
            )
        if on > self.today():
            raise InvalidInput("The return date is in the future.", details=[{"field": "date"}])
        late = on > _date(doc["end_date"])
        async with self._audit.change(
            ctx,
            "leave.return",
            resource="leave_request",
            resource_id=leave_id,
            subject_id=doc["subject_id"],
            details={"late": late, **({"via": extra["returned_via"]} if extra else {})},
        ):
            updated = await self._leave.find_one_and_update(
                {"_id": doc["_id"], "returned_on": None},
                {
                    "$set": {
                        "returned_on": on.isoformat(),
                        "return_late": late,
                        "returned_recorded_by": ctx.identity.user_id,
                        "updated_at": self._clock.now(),
                        **extra,
                    },
                    "$inc": {"version": 1},
                },
                return_document=ReturnDocument.AFTER,
            )
            if updated is None:
                raise Conflict(
                    "The return was recorded meanwhile.",
                    code="invalid_transition",
                    details={"status": "returned"},
                )
        await self._changed(str(updated["subject_id"]))
        await self._notices.notify(
            NoticeKind.LEAVE_RETURNED,
            str(updated["subject_id"]),
            "leave_request",
            leave_id,
            fields={
                "start": day_text(updated["start_date"]),
                "end": day_text(updated["end_date"]),
                "returned_on": day_text(on),
                "late": "（晚于批准的返回日期）" if late else "",
            },
        )
        return await self._view(updated)

    async def alert_overdue_returns(self, today: dt.date) -> int:
        """Alert the person's station of every granted leave whose last day is past with no
        销假 recorded. Idempotent: one alert per request (its dedupe key), whenever the sweep
        runs or however often; a request is marked once alerted so later sweeps skip it."""
        raised = 0
        cursor = self._leave.find(
            {
                "status": str(ApprovalStatus.APPROVED),
                "end_date": {"$lt": today.isoformat()},
                "returned_on": None,
                "return_alerted": {"$ne": True},
            }
        )
        async for doc in cursor:
            lid = str(doc["_id"])
            rules = await self._rules.for_org(str(doc["org_id"]))
            grace = rules.int("leave.return_overdue_after_days")
            if _date(doc["end_date"]) + dt.timedelta(days=grace) >= today:
                continue  # the jurisdiction waits longer before alerting
            await self._alerts.raise_alert(
                kind="leave_return_overdue",
                org_id=doc["org_id"],
                org_path=doc["org_path"],
                subject_id=doc["subject_id"],
                details={
                    "leave_request_id": lid,
                    "end_date": doc["end_date"],
                    "rule": "leave.return_overdue_after_days",
                    "rules_version": rules.version,
                },
                dedupe_key=f"leave_return_overdue:{lid}",
            )
            await self._notices.notify(
                NoticeKind.LEAVE_RETURN_OVERDUE,
                str(doc["subject_id"]),
                "leave_request",
                lid,
                fields={"end": day_text(doc["end_date"])},
            )
            await self._leave.update_one({"_id": doc["_id"]}, {"$set": {"return_alerted": True}})
            raised += 1
        return raised

    async def in_force(
        self, subject_id: str, first: dt.date, last: dt.date
    ) -> builtins.list[dict[str, Any]]:
        """Granted leave not yet returned from that runs on any day in [first, last] (for the
        check-in area): its id and dates."""
        cursor = self._leave.find(
            {
                "subject_id": subject_id,
                "start_date": {"$lte": last.isoformat()},
                "status": str(ApprovalStatus.APPROVED),
            },
            {"start_date": 1, "end_date": 1, "returned_on": 1},
        )
        return [
            doc
            async for doc in cursor
            if doc["end_date"] >= first.isoformat() and not doc.get("returned_on")
        ]

    async def relocate(self, subject_id: str, org_id: str, org_path: builtins.list[str]) -> int:
        """Follow the person to a new station (执行地变更): their requests are filed there now,
        so pending ones reach the receiving side's queue."""
        result = await self._leave.update_many(
            {"subject_id": subject_id}, {"$set": {"org_id": org_id, "org_path": org_path}}
        )
        return result.modified_count

    # --- aggregates for the dashboard (models/dashboard.py) ------------------------------------

    async def count_in_progress(self, org_id: str, depth: int, today: dt.date) -> dict[Any, int]:
        """People on approved leave today (begun, not ended, not yet back) under a node, by
        unit (the path's node at `depth`)."""
        day = today.isoformat()
        pipeline: list[dict[str, Any]] = [
            {
                "$match": {
                    "org_path": org_id,
                    "status": str(ApprovalStatus.APPROVED),
                    "start_date": {"$lte": day},
                    "end_date": {"$gte": day},
                    "returned_on": None,
                }
            },
            {"$group": {"_id": node_at(depth), "n": {"$sum": 1}}},
        ]
        return {g["_id"]: g["n"] async for g in await self._leave.aggregate(pipeline)}

"""执行地变更: moving a case file from one station to another, in the same county or another.

The sending side (the person's station, or its county) requests; the receiving side (the target
station, or its county) accepts or refuses; on acceptance the deadlines start: the file is handed
over within `transfers.handover_working_days` working days and the person reports at the new
place within `transfers.report_days` days (2012 办法, continued by local practice). The handover
moves the case file, its open programs and its pending decisions to the receiving station; from
then on the receiving side reaches the person and the sending side no longer does.
"""

from __future__ import annotations

import datetime as dt
import enum
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from bson import ObjectId
from pymongo import ASCENDING, IndexModel, ReturnDocument

from models.approvals import COMMENTS, open_steps
from models.audit import AuditContext, AuditService
from models.clock import LOCAL_TZ, Clock
from models.codec import FieldCodec
from models.decision_notices import DecisionNoticeService, NoticeKind, day_text
from models.errors import Conflict, Forbidden, InvalidInput, NotFound
from models.ids import parse_id
from models.orgs import OrgKind, OrgService
from models.programs import ProgramService
from models.rules import RulesService
from models.scope import ScopeService
from models.store import CollectionSpec, Store
from models.subjects import SubjectService
from models.workdays import WorkdayCalendar

TRANSFERS = CollectionSpec(
    "transfers",
    (
        IndexModel([("subject_id", ASCENDING), ("status", ASCENDING)]),
        IndexModel([("from_path", ASCENDING), ("status", ASCENDING)]),
        IndexModel([("to_path", ASCENDING), ("status", ASCENDING)]),
    ),
)

# 执行地变更 in law (as the transfer notice cites it).
BASIS = "社区矫正法第二十七条、社区矫正法实施办法第三十条"
# Records that carry the person's station and must follow it: each is a service's `relocate`.
Relocator = Callable[[str, str, list[str]], Awaitable[int]]


class TransferStatus(enum.StrEnum):
    REQUESTED = "requested"
    ACCEPTED = "accepted"
    REJECTED = "rejected"
    HANDED_OVER = "handed_over"
    COMPLETED = "completed"  # the person reported at the new place


OPEN = (TransferStatus.REQUESTED, TransferStatus.ACCEPTED, TransferStatus.HANDED_OVER)


class Side(enum.StrEnum):
    SENDING = "sending"
    RECEIVING = "receiving"


# Which side acts at each state, and what it may make of it.
ACTS: Mapping[TransferStatus, tuple[Side, frozenset[TransferStatus]]] = {
    TransferStatus.REQUESTED: (
        Side.RECEIVING,
        frozenset({TransferStatus.ACCEPTED, TransferStatus.REJECTED}),
    ),
    TransferStatus.ACCEPTED: (Side.SENDING, frozenset({TransferStatus.HANDED_OVER})),
    TransferStatus.HANDED_OVER: (Side.RECEIVING, frozenset({TransferStatus.COMPLETED})),
}


@dataclass
class TransferView:
    id: str
    subject_id: str
    status: str
    from_org_id: str
    to_org_id: str
    reason: str | None
    decided_on: str | None
    handover_due: str | None
    handed_over_on: str | None
    handover_late: bool | None
    report_due: str | None
    reported_on: str | None
    report_late: bool | None
    rules_version: str
    history: list[dict[str, Any]] = field(default_factory=list)


class TransferService:
    collections = (TRANSFERS,)
    # Where this service keeps fields sealed with a subject's data key (for key rotation).
    sealed_fields = (("transfers", None), ("transfers", COMMENTS))

    def __init__(
        self,
        store: Store,
        clock: Clock,
        audit: AuditService,
        codec: FieldCodec,
        subjects: SubjectService,
        programs: ProgramService,
        orgs: OrgService,
        rules: RulesService,
        calendar: WorkdayCalendar,
        relocators: Sequence[Relocator] = (),
        *,
        notices: DecisionNoticeService,
        scope: ScopeService,
    ):
        self._transfers = store.collection(TRANSFERS)
        self._notices = notices
        self._clock = clock
        self._audit = audit
        self._codec = codec
        self._subjects = subjects
        self._scope = scope
        self._programs = programs
        self._orgs = orgs
        self._rules = rules
        self._calendar = calendar
        self._relocators = tuple(relocators)

    def today(self) -> dt.date:
        return self._clock.now().astimezone(LOCAL_TZ).date()

    async def request(
        self, ctx: AuditContext, subject_id: str, to_org_id: str, reason: str
    ) -> TransferView:
        """The sending side asks to move the person's file to the station `to_org_id`."""
        subject = await self._scope.require(ctx, subject_id, "transfers.manage")
        reason = " ".join(reason.split())
        if not reason:
            raise InvalidInput("State the reason.", details=[{"field": "reason"}])
        try:
            target = await self._orgs.get(to_org_id)
        except NotFound:
            target = None
        if target is None or target.kind is not OrgKind.STATION:
            raise InvalidInput("Name the receiving station.", details=[{"field": "to_org_id"}])
        current = await self._orgs.ancestor(subject["org_path"], OrgKind.STATION)
        if current is None:
            raise InvalidInput("The case file belongs to no station.", code="no_station")
        if current.id == target.id:
            raise InvalidInput(
                "The person is already filed at that station.", details=[{"field": "to_org_id"}]
            )
        pending = await self._transfers.find_one(
            {"subject_id": subject_id, "status": {"$in": [str(s) for s in OPEN]}}
        )
        if pending is not None:
            raise Conflict(
                "A transfer of this person is under way.",
                code="exists",
                details={"id": str(pending["_id"]), "status": pending["status"]},
            )
        rules = await self._rules.for_org(current.id)
        transfer_id = ObjectId()
        tid = str(transfer_id)
        now = self._clock.now()
        doc = {
            "_id": transfer_id,
            "subject_id": subject_id,
            "status": str(TransferStatus.REQUESTED),
            "from_org_id": current.id,
            "from_path": list(current.path),
            "to_org_id": target.id,
            "to_path": list(target.path),
            "reason": await self._codec.seal(
                subject_id, subject.get("dek_id"), "transfers", tid, "reason", reason
            ),
            "rules_version": rules.version,
            "history": [
                {"to": str(TransferStatus.REQUESTED), "at": now, "by": ctx.identity.user_id}
            ],
            "created_at": now,
        }
        async with self._audit.change(
            ctx,
            "transfers.request",
            resource="transfer",
            resource_id=tid,
            subject_id=subject_id,
            details={"from": current.id, "to": target.id},
        ):
            await self._transfers.insert_one(doc)
        return await self._view(doc)

    async def _load(self, ctx: AuditContext, transfer_id: str) -> dict[str, Any]:
        """The transfer when the caller is on either side of it; else 404."""
        doc = await self._transfers.find_one({"_id": parse_id(transfer_id, "transfer")})
        if doc is None or not any(
            ctx.identity.reaches(doc[path]) for path in ("from_path", "to_path")
        ):
            raise NotFound("No such transfer.")
        return doc

    def _check_turn(self, ctx: AuditContext, doc: Mapping[str, Any], to: TransferStatus) -> None:
        current = TransferStatus(doc["status"])
        side, allowed = ACTS.get(current, (None, frozenset()))
        if to not in allowed:
            raise Conflict(
                f"A transfer that is {current} cannot become {to}.",
                code="invalid_transition",
                details={"status": str(current)},
            )
        path = doc["from_path"] if side is Side.SENDING else doc["to_path"]
        if not ctx.identity.reaches(path):
            raise Forbidden(f"The {side} side acts next.", code="not_your_step")

    async def _move(
        self,
        ctx: AuditContext,
        doc: Mapping[str, Any],
        to: TransferStatus,
        changes: dict[str, Any],
        comment: str | None = None,
    ) -> TransferView:
        current = doc["status"]
        now = self._clock.now()
        entry: dict[str, Any] = {
            "from": current,
            "to": str(to),
            "at": now,
            "by": ctx.identity.user_id,
            "comment": comment,
        }
        if comment:
            # Free text about the person: sealed with their key beside the other comments.
            subject = await self._subjects.document(doc["subject_id"]) or {}
            comment_id = f"step_{ObjectId()}"
            changes = changes | {
                f"{COMMENTS}.{comment_id}": await self._codec.seal(
                    doc["subject_id"],
                    subject.get("dek_id"),
                    "transfers",
                    str(doc["_id"]),
                    comment_id,
                    comment,
                )
            }
            del entry["comment"]
            entry["comment_id"] = comment_id
        async with self._audit.change(
            ctx,
            f"transfers.{to}",
            resource="transfer",
            resource_id=str(doc["_id"]),
            subject_id=doc["subject_id"],
            details={"from": current, "to": str(to), "rules_version": doc["rules_version"]},
        ):
            updated = await self._transfers.find_one_and_update(
                {"_id": doc["_id"], "status": current},
                {
                    "$set": {"status": str(to), **changes},
                    "$push": {"history": entry},
                },
                return_document=ReturnDocument.AFTER,
            )
            if updated is None:
                fresh = await self._transfers.find_one({"_id": doc["_id"]})
                raise Conflict(
                    "The transfer changed meanwhile.",
                    code="invalid_transition",
                    details={"status": fresh["status"] if fresh else None},
                )
        return await self._view(updated)

    async def decide(
        self, ctx: AuditContext, transfer_id: str, accept: bool, comment: str
    ) -> TransferView:
        """The receiving side accepts (the deadlines start) or refuses."""
        doc = await self._load(ctx, transfer_id)
        to = TransferStatus.ACCEPTED if accept else TransferStatus.REJECTED
        self._check_turn(ctx, doc, to)
        changes: dict[str, Any] = {"decided_on": self.today().isoformat()}
        if accept:
            rules = await self._rules.for_org(doc["from_org_id"])
            today = self.today()
            # A period in days: Art. 105 counting (a last day on a holiday moves on).
            report_due, _ = self._calendar.period_end(today, rules.int("transfers.report_days"))
            changes |= {
                "handover_due": self._calendar.deadline(
                    today, rules.int("transfers.handover_working_days")
                ).isoformat(),
                "report_due": report_due.isoformat(),
                "rules_version": rules.version,
            }
        view = await self._move(ctx, doc, to, changes, comment)
        if accept and view.report_due:
            target = await self._orgs.get(view.to_org_id)
            await self._notices.notify(
                NoticeKind.TRANSFER_ACCEPTED,
                view.subject_id,
                "transfer",
                view.id,
                fields={"to_org": target.name, "report_due": day_text(view.report_due)},
            )
        return view

    async def hand_over(self, ctx: AuditContext, transfer_id: str, on: dt.date) -> TransferView:
        """The sending side hands the file over: the case file, its open programs and every
        record that carries the person's station move to the receiving station."""
        doc = await self._load(ctx, transfer_id)
        self._check_turn(ctx, doc, TransferStatus.HANDED_OVER)
        if on > self.today() or on < dt.date.fromisoformat(doc["decided_on"]):
            raise InvalidInput(
                "The handover lies between the acceptance and today.", details=[{"field": "date"}]
            )
        target = await self._orgs.get(doc["to_org_id"])
        subject_id = doc["subject_id"]
        # The file moves first and the transfer records it last: a failure in between leaves the
        # transfer `accepted` with the file already at the receiving station, which the audit
        # entries of each move show (each move is idempotent, so an operator can finish it).
        await self._subjects.move(ctx, subject_id, target.id)
        await self._programs.relocate(ctx, subject_id, target.id, list(target.path))
        for relocate in self._relocators:
            await relocate(subject_id, target.id, list(target.path))
        return await self._move(
            ctx,
            doc,
            TransferStatus.HANDED_OVER,
            {
                "handed_over_on": on.isoformat(),
                "handover_late": on > dt.date.fromisoformat(doc["handover_due"]),
            },
        )

    async def record_arrival(
        self, ctx: AuditContext, transfer_id: str, on: dt.date
    ) -> TransferView:
        """The person reported at the new place; after the deadline it is marked late."""
        doc = await self._load(ctx, transfer_id)
        self._check_turn(ctx, doc, TransferStatus.COMPLETED)
        if on > self.today() or on < dt.date.fromisoformat(doc["decided_on"]):
            raise InvalidInput(
                "The report lies between the acceptance and today.", details=[{"field": "date"}]
            )
        return await self._move(
            ctx,
            doc,
            TransferStatus.COMPLETED,
            {
                "reported_on": on.isoformat(),
                "report_late": on > dt.date.fromisoformat(doc["report_due"]),
            },
        )

    async def get(self, ctx: AuditContext, transfer_id: str) -> TransferView:
        doc = await self._load(ctx, transfer_id)
        await self._audit.record(
            ctx,
            "transfers.read",
            resource="transfer",
            resource_id=transfer_id,
            subject_id=doc["subject_id"],
        )
        return await self._view(doc)

    async def for_subject(self, ctx: AuditContext, subject_id: str) -> list[TransferView]:
        """A person's transfers, newest first, for a caller who reaches the case file now."""
        await self._scope.require(ctx, subject_id, "transfers.read")
        docs = [
            doc
            async for doc in self._transfers.find({"subject_id": subject_id})
            .sort("created_at", -1)
            .limit(100)
        ]
        await self._audit.record(
            ctx,
            "transfers.read",
            resource="subject_transfers",
            resource_id=subject_id,
            subject_id=subject_id,
            details={"count": len(docs)},
        )
        return [await self._view(doc) for doc in docs]

    async def destinations(self) -> list[dict[str, str]]:
        """Every station a file may move to, with its county and city names (in tree order)."""
        counties = {o.id: o for o in await self._orgs.of_kind(OrgKind.COUNTY)}
        cities = {o.id: o for o in await self._orgs.of_kind(OrgKind.CITY)}
        listed = []
        for station in await self._orgs.of_kind(OrgKind.STATION):
            county = next((counties[n] for n in station.path if n in counties), None)
            city = next((cities[n] for n in station.path if n in cities), None)
            listed.append(
                {
                    "id": station.id,
                    "name": station.name,
                    "county": county.name if county else "",
                    "city": city.name if city else "",
                }
            )
        return listed

    async def _view(self, doc: Mapping[str, Any]) -> TransferView:
        tid = str(doc["_id"])
        return TransferView(
            id=tid,
            subject_id=doc["subject_id"],
            status=doc["status"],
            from_org_id=doc["from_org_id"],
            to_org_id=doc["to_org_id"],
            reason=await self._codec.open("transfers", tid, "reason", doc["reason"]),
            decided_on=doc.get("decided_on"),
            handover_due=doc.get("handover_due"),
            handed_over_on=doc.get("handed_over_on"),
            handover_late=doc.get("handover_late"),
            report_due=doc.get("report_due"),
            reported_on=doc.get("reported_on"),
            report_late=doc.get("report_late"),
            rules_version=doc["rules_version"],
            history=[
                {k: (v.isoformat() if isinstance(v, dt.datetime) else v) for k, v in h.items()}
                for h in await open_steps(self._codec, "transfers", doc, doc.get("history", []))
            ],
        )

    # --- the receiving side's queue (the console's queues page) -------------------------------

    async def awaiting(self, ctx: AuditContext, limit: int) -> list[dict[str, Any]]:
        """Requests the caller's side is to accept or refuse (the receiving station, or its
        county), oldest first, with the person's name as the caller may see it."""
        identity = ctx.identity
        if identity.org_id is None:
            return []
        docs = [
            doc
            async for doc in self._transfers.find(
                {"status": str(TransferStatus.REQUESTED), "to_path": identity.org_id}
            )
            .sort("created_at", ASCENDING)
            .limit(limit)
        ]
        names = await self._subjects.display_names(identity, [d["subject_id"] for d in docs])
        orgs = {
            node_id: (await self._orgs.get(node_id)).name
            for node_id in {d["from_org_id"] for d in docs} | {d["to_org_id"] for d in docs}
        }
        await self._audit.record(
            ctx,
            "transfers.read",
            resource="transfer_queue",
            resource_id=identity.org_id,
            details={"count": len(docs)},
        )
        return [
            {
                "id": str(doc["_id"]),
                "subject_id": doc["subject_id"],
                "subject_name": names.get(doc["subject_id"]),
                "from_org_id": doc["from_org_id"],
                "from_org_name": orgs[doc["from_org_id"]],
                "to_org_id": doc["to_org_id"],
                "to_org_name": orgs[doc["to_org_id"]],
                "requested_at": doc["created_at"],
                # The receiving side's reply has no deadline among the rules; the deadlines
                # (handover, report) start when it accepts.
                "deadline": None,
                "basis": BASIS,
            }
            for doc in docs
        ]

"""调查评估: the court asks, the county assigns a station, the station investigates by a deadline.

Requested → assigned → reported → closed (or withdrawn by the court). The deadline counts working
days from the court's request (社区矫正法实施办法 Art. 14); the opinion itself is encrypted.
"""

from __future__ import annotations

import datetime as dt
import enum
from dataclasses import dataclass, field
from typing import Any

from bson import ObjectId
from pymongo import ASCENDING, IndexModel, ReturnDocument

from models.audit import AuditContext, AuditService
from models.clock import LOCAL_TZ, Clock
from models.codec import FieldCodec
from models.errors import Conflict, InvalidInput, NotFound
from models.ids import parse_id
from models.orgs import OrgKind, OrgService
from models.rules import RulesService
from models.scope import ScopeService
from models.store import CollectionSpec, Store
from models.subjects import SubjectService
from models.workdays import WorkdayCalendar

INVESTIGATIONS = CollectionSpec(
    "investigations",
    (
        IndexModel([("org_path", ASCENDING), ("status", ASCENDING)]),
        IndexModel([("subject_id", ASCENDING)]),
        # A station's own investigations (the console's list of opinions to write).
        IndexModel([("station_path", ASCENDING), ("status", ASCENDING)]),
    ),
)


# The opinion's deadline in law (the rules' source: corrections.investigation_working_days).
BASIS = "社区矫正法实施办法第十四条"


class InvestigationStatus(enum.StrEnum):
    REQUESTED = "requested"
    ASSIGNED = "assigned"
    REPORTED = "reported"
    CLOSED = "closed"
    WITHDRAWN = "withdrawn"


NEXT: dict[InvestigationStatus, frozenset[InvestigationStatus]] = {
    InvestigationStatus.REQUESTED: frozenset(
        {InvestigationStatus.ASSIGNED, InvestigationStatus.WITHDRAWN}
    ),
    InvestigationStatus.ASSIGNED: frozenset(
        {InvestigationStatus.REPORTED, InvestigationStatus.WITHDRAWN}
    ),
    InvestigationStatus.REPORTED: frozenset({InvestigationStatus.CLOSED}),
    InvestigationStatus.CLOSED: frozenset(),
    InvestigationStatus.WITHDRAWN: frozenset(),
}


@dataclass
class InvestigationView:
    id: str
    subject_id: str
    status: str
    court: str
    requested_on: str
    expedited: bool
    due: str
    county_id: str
    station_id: str | None
    recommendation: str | None
    opinion: str | None
    reported_on: str | None
    late: bool | None
    rules_version: str
    history: list[dict[str, Any]] = field(default_factory=list)


class InvestigationService:
    collections = (INVESTIGATIONS,)
    # Where this service keeps fields sealed with a subject's data key (for key rotation).
    sealed_fields = (("investigations", None),)

    def __init__(
        self,
        store: Store,
        clock: Clock,
        audit: AuditService,
        codec: FieldCodec,
        subjects: SubjectService,
        orgs: OrgService,
        rules: RulesService,
        calendar: WorkdayCalendar,
        *,
        scope: ScopeService,
    ):
        self._docs = store.collection(INVESTIGATIONS)
        self._clock = clock
        self._audit = audit
        self._codec = codec
        self._subjects = subjects
        self._scope = scope
        self._orgs = orgs
        self._rules = rules
        self._calendar = calendar

    async def request(
        self,
        ctx: AuditContext,
        *,
        subject_id: str,
        court: str,
        requested_on: dt.date,
        expedited: bool,
    ) -> InvestigationView:
        """Record the court's request, at the county that received it."""
        subject = await self._scope.require(ctx, subject_id, "investigations.manage")
        county = await self._orgs.ancestor(subject["org_path"], OrgKind.COUNTY)
        if county is None:
            raise InvalidInput(
                "The case file belongs to no county.", details=[{"field": "subject_id"}]
            )
        if requested_on > self._clock.now().astimezone(LOCAL_TZ).date():
            raise InvalidInput(
                "The request date is in the future.", details=[{"field": "requested_on"}]
            )
        rules = await self._rules.for_org(county.id)
        key = (
            "corrections.investigation_expedited_working_days"
            if expedited
            else "corrections.investigation_working_days"
        )
        # A year without its holiday calendar gets a provisional, weekends-only deadline.
        due, provisional = self._calendar.deadline_or_provisional(requested_on, rules.int(key))
        now = self._clock.now()
        doc = {
            "_id": ObjectId(),
            "subject_id": subject_id,
            "court": court.strip(),
            "requested_on": requested_on.isoformat(),
            "expedited": expedited,
            "due": due.isoformat(),
            "due_provisional": provisional,
            "status": str(InvestigationStatus.REQUESTED),
            "county_id": county.id,
            "org_path": list(county.path),
            "station_id": None,
            "rules_version": rules.version,
            "opinion": None,
            "recommendation": None,
            "history": [
                {
                    "to": str(InvestigationStatus.REQUESTED),
                    "at": now,
                    "by": ctx.identity.user_id,
                    "rule": key,
                }
            ],
            "created_at": now,
        }
        async with self._audit.change(
            ctx,
            "investigations.request",
            resource="investigation",
            resource_id=str(doc["_id"]),
            subject_id=subject_id,
            details={"rules_version": rules.version},
        ):
            await self._docs.insert_one(doc)
        return await self._view(doc)

    async def _load(self, ctx: AuditContext, investigation_id: str) -> dict[str, Any]:
        """The investigation when the caller is at its county (or above) or its station."""
        doc = await self._docs.find_one({"_id": parse_id(investigation_id, "investigation")})
        paths = [] if doc is None else [doc["org_path"], doc.get("station_path") or []]
        if doc is None or not any(ctx.identity.reaches(path) for path in paths):
            raise NotFound("No such investigation.")
        return doc

    async def _move(
        self,
        ctx: AuditContext,
        doc: dict[str, Any],
        to: InvestigationStatus,
        changes: dict[str, Any],
        action: str,
    ) -> InvestigationView:
        current = InvestigationStatus(doc["status"])
        if to not in NEXT[current]:
            raise Conflict(
                f"An investigation that is {current} cannot become {to}.",
                code="invalid_transition",
                details={"status": str(current)},
            )
        now = self._clock.now()
        async with self._audit.change(
            ctx,
            action,
            resource="investigation",
            resource_id=str(doc["_id"]),
            subject_id=doc["subject_id"],
        ):
            updated = await self._docs.find_one_and_update(
                {"_id": doc["_id"], "status": str(current)},
                {
                    "$set": {"status": str(to), **changes},
                    "$push": {
                        "history": {
                            "from": str(current),
                            "to": str(to),
                            "at": now,
                            "by": ctx.identity.user_id,
                        }
                    },
                },
                return_document=ReturnDocument.AFTER,
            )
            if updated is None:
                raise Conflict("The investigation changed meanwhile.", code="invalid_transition")
        return await self._view(updated)

    async def assign(
        self, ctx: AuditContext, investigation_id: str, station_id: str
    ) -> InvestigationView:
        """The county hands the investigation to one of its stations."""
        doc = await self._load(ctx, investigation_id)
        if ctx.identity.org_id != doc["county_id"] and not ctx.identity.unscoped:
            raise NotFound("No such investigation.")
        station = await self._orgs.get(station_id)
        if station.kind is not OrgKind.STATION or doc["county_id"] not in station.path:
            raise InvalidInput(
                "Assign a station of this county.", details=[{"field": "station_id"}]
            )
        return await self._move(
            ctx,
            doc,
            InvestigationStatus.ASSIGNED,
            {"station_id": station.id, "station_path": list(station.path)},
            "investigations.assign",
        )

    async def report(
        self,
        ctx: AuditContext,
        investigation_id: str,
        recommendation: str,
        opinion: str,
        on: dt.date,
    ) -> InvestigationView:
        """The station's opinion: whether community corrections suits the person, and why."""
        doc = await self._load(ctx, investigation_id)
        if doc.get("station_id") is None:
            raise Conflict(
                "The county has not assigned the investigation yet.",
                code="invalid_transition",
                details={"status": doc["status"]},
            )
        if not ctx.identity.reaches(doc["station_path"]):
            raise NotFound("No such investigation.")
        sealed = await self._codec.seal(
            doc["subject_id"], None, "investigations", str(doc["_id"]), "opinion", opinion
        )
        return await self._move(
            ctx,
            doc,
            InvestigationStatus.REPORTED,
            {
                "recommendation": recommendation,
                "opinion": sealed,
                "reported_on": on.isoformat(),
                "late": on > dt.date.fromisoformat(doc["due"]),
            },
            "investigations.report",
        )

    async def close(
        self, ctx: AuditContext, investigation_id: str, withdrawn: bool = False
    ) -> InvestigationView:
        doc = await self._load(ctx, investigation_id)
        to = InvestigationStatus.WITHDRAWN if withdrawn else InvestigationStatus.CLOSED
        return await self._move(ctx, doc, to, {}, "investigations.close")

    async def get(self, ctx: AuditContext, investigation_id: str) -> InvestigationView:
        return await self._view(await self._load(ctx, investigation_id))

    async def _view(self, doc: dict[str, Any]) -> InvestigationView:
        opinion = None
        if doc.get("opinion") is not None:
            opinion = await self._codec.open(
                "investigations", str(doc["_id"]), "opinion", doc["opinion"]
            )
        return InvestigationView(
            id=str(doc["_id"]),
            subject_id=doc["subject_id"],
            status=doc["status"],
            court=doc["court"],
            requested_on=doc["requested_on"],
            expedited=doc["expedited"],
            due=doc["due"],
            county_id=doc["county_id"],
            station_id=doc.get("station_id"),
            recommendation=doc.get("recommendation"),
            opinion=opinion,
            reported_on=doc.get("reported_on"),
            late=doc.get("late"),
            rules_version=doc["rules_version"],
            history=[
                {k: (v.isoformat() if isinstance(v, dt.datetime) else v) for k, v in h.items()}
                for h in doc.get("history", [])
            ],
        )

    # --- the county's queue (the console's queues page) ---------------------------------------

    async def awaiting(
        self,
        ctx: AuditContext,
        limit: int,
        status: InvestigationStatus = InvestigationStatus.REQUESTED,
    ) -> list[dict[str, Any]]:
        """Requests the caller's county is to assign to a station, soonest due first, with the
        person's name as the caller may see it (a station assigns none); for another `status`,
        those at the caller's node or below (a station's opinions to write or close)."""
        identity = ctx.identity
        if identity.org_id is None:
            return []
        if status is InvestigationStatus.REQUESTED:
            # The county that received the request assigns it (as `assign` checks).
            found: dict[str, Any] = {"status": str(status), "county_id": identity.org_id}
        else:
            found = {
                "status": str(status),
                "$or": [{"org_path": identity.org_id}, {"station_path": identity.org_id}],
            }
        docs = [doc async for doc in self._docs.find(found).sort("due", ASCENDING).limit(limit)]
        names = await self._subjects.display_names(identity, [d["subject_id"] for d in docs])
        await self._audit.record(
            ctx,
            "investigations.read",
            resource="investigation_queue",
            resource_id=identity.org_id,
            details={"count": len(docs)},
        )
        return [
            {
                "id": str(doc["_id"]),
                "subject_id": doc["subject_id"],
                "subject_name": names.get(doc["subject_id"]),
                "requested_on": doc["requested_on"],
                "expedited": doc["expedited"],
                "deadline": doc["due"],
                "deadline_provisional": bool(doc.get("due_provisional")),
                # The opinion's deadline (working days from the court's request): Art. 14.
                "basis": BASIS,
            }
            for doc in docs
        ]

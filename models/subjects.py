"""Case files: encrypted identity fields, blind-index search, scope, masking, notes, shredding."""

from __future__ import annotations

import builtins  # `list` in a service class names its method; `builtins.list` the type
import datetime as dt
import operator
from collections.abc import AsyncIterator, Awaitable, Callable, Collection, Iterable
from dataclasses import dataclass, field
from typing import Any

from bson import ObjectId
from pymongo import ASCENDING, DESCENDING, IndexModel, ReturnDocument
from pymongo.errors import DuplicateKeyError

from models.alerts import AlertService, FileAccess
from models.attachments import AttachmentInfo, AttachmentService, AttachmentWriter
from models.audit import AuditContext, AuditService
from models.case_roster import LIST_PROJECTION, SORTABLE, CaseRoster
from models.checkin_state import CheckinStates
from models.clock import LOCAL_TZ, Clock
from models.codec import FieldCodec, IntegrityError, Shredded
from models.errors import Conflict, Forbidden, InvalidInput, NotFound
from models.identity import Identity
from models.identity_numbers import (
    IdType,
    check_id_number,
    check_phone,
    normalise_id_number,
    normalise_name,
    normalise_phone,
)
from models.ids import parse_id
from models.keys import KeyVault
from models.orgs import OrgKind, OrgService
from models.periods import add_years
from models.policy import IDENTITY_FIELDS, Policy, Role, visible_fields
from models.resealing import Resealer
from models.rules import RulesService
from models.scope import FILES, ScopeService, SubjectStatus, assigned_ids, matches
from models.store import CollectionSpec, Store, still_there

SUBJECTS = CollectionSpec(
    FILES,
    (
        # One case file per person: a second intake of the same ID number is a duplicate.
        # Sparse, not partial: a shredded file (its blind indexes deleted) leaves the index, and
        # an equality lookup uses it on every server (the embedded one ignores partial ones).
        IndexModel([("bi.id_number", ASCENDING)], unique=True, sparse=True),
        IndexModel([("bi.phone", ASCENDING)]),
        IndexModel([("bi.name", ASCENDING)]),
        IndexModel([("org_path", ASCENDING), ("status", ASCENDING), ("_id", ASCENDING)]),
        IndexModel([("assignments.social_worker_ids", ASCENDING)]),
        IndexModel([("assignments.grid_worker_ids", ASCENDING)]),
        # The case list: a node's files, newest or last changed first, a page at a time.
        IndexModel([("org_path", ASCENDING), ("created_at", DESCENDING), ("_id", DESCENDING)]),
        IndexModel([("org_path", ASCENDING), ("updated_at", DESCENDING), ("_id", DESCENDING)]),
    ),
)
NOTES = CollectionSpec(
    "subject_notes", (IndexModel([("subject_id", ASCENDING), ("at", DESCENDING)]),)
)
SEALED_FIELDS = ("name", "id_number", "phone", "gender", "birth_date", "address")
SUBJECT_ORG_KINDS = frozenset({OrgKind.STATION, OrgKind.COMMUNITY, OrgKind.GRID})
# The most candidates one blind-index value may bring back (a very common name).
MAX_BLIND_MATCHES = 2000
# 民法典 Art. 17, for the guardian rule of the mini-program (models/mp_accounts.py); the case
# file's juvenile rules read `juvenile.adult_age` from the rules data instead.
ADULT_AGE = 18


@dataclass(frozen=True)
class SubjectInput:
    name: str
    id_type: IdType
    id_number: str
    phone: str
    gender: str
    birth_date: dt.date
    address: str
    org_id: str


@dataclass
class SubjectView:
    """A case file as one caller may see it: fields outside their view are absent or masked."""

    id: str
    version: int
    org_id: str
    status: str
    populations: list[str]
    juvenile: bool
    fields: dict[str, Any] = field(default_factory=dict)
    masked: list[str] = field(default_factory=list)
    assignments: dict[str, Any] = field(default_factory=dict)
    has_photo: bool = False
    access: str = "scope"  # "scope", or "break_glass" when opened with a stated reason


@dataclass(frozen=True)
class Page:
    items: list[SubjectView]
    next_cursor: str | None


def minor_on(birth_date: dt.date, day: dt.date, adult_age: int) -> bool:
    """Under `adult_age` 周岁 on `day`: a 周岁 is reached the day after the birthday (最高人民法院
    on 刑法 Art. 17), so on the 18th birthday itself the person is still a minor."""
    return day <= add_years(birth_date, adult_age)


def mask_value(name: str, value: Any) -> str:
    text = str(value)
    if name == "name":
        return text[:1] + "*" * max(1, len(text) - 1)
    if name in ("id_number", "phone") and len(text) > 4:
        return text[:2] + "*" * (len(text) - 4) + text[-2:]
    return "***"


class SubjectService:
    collections = (SUBJECTS, NOTES)

    def __init__(
        self,
        store: Store,
        clock: Clock,
        audit: AuditService,
        codec: FieldCodec,
        vault: KeyVault,
        orgs: OrgService,
        alerts: AlertService,
        policy: Policy,
        attachments: AttachmentService,
        rules: RulesService,
        *,
        roster: CaseRoster,
        scope: ScopeService,
        states: CheckinStates,
        resealer: Resealer,
    ):
        self._rules = rules
        self._roster = roster
        self._scope = scope
        self._states = states
        self._subjects = store.collection(SUBJECTS)
        self._notes = store.collection(NOTES)
        self._store = store
        self._clock = clock
        self._audit = audit
        self._codec = codec
        self._vault = vault
        self._orgs = orgs
        self._alerts = alerts
        self._policy = policy
        self._attachments = attachments
        # The case file's notes are sealed with the person's key too, in a collection of their own.
        self._resealer = resealer
        resealer.add_locations(((NOTES.name, None),))

    # --- scope (decided by models/scope.py) ----------------------------------------------

    async def access(
        self, identity: Identity, subject_ids: Collection[str], action: str
    ) -> dict[str, FileAccess]:
        """What `identity` may open of these files (the alerts' `CaseFiles` port)."""
        return await self._scope.access(identity, subject_ids, action)

    async def document(self, subject_id: str) -> dict[str, Any] | None:
        """The raw document, for services acting without a caller (sweeps): no scope, no
        decryption, and so no audit entry."""
        return await self._subjects.find_one({"_id": parse_id(subject_id, "case file")})

    async def add_referral_org(self, subject_id: str, org_id: str) -> None:
        """A referral names a resource of `org_id`: that node's coordinators may now open the
        file (the `referred` scope), as their role's view shows it."""
        await self._subjects.update_one(
            {"_id": parse_id(subject_id, "case file")},
            {"$addToSet": {"referred_to_org_ids": org_id}},
        )
        await self._list_again([parse_id(subject_id, "case file")])

    async def set_needs(
        self,
        subject_id: str,
        sealed_needs: Any,
        three_nos: bool,
        at: dt.datetime,
        by: str | None = None,
    ) -> None:
        """The assistance needs assessed for a person (sealed), the derived 三无 flag, and who
        assessed them when."""
        await self._subjects.update_one(
            {"_id": parse_id(subject_id, "case file")},
            {
                "$set": {
                    "needs": sealed_needs,
                    "three_nos": three_nos,
                    "needs_at": at,
                    "needs_by": by,
                }
            },
        )

    async def phone_for_notice(self, subject_id: str) -> str | None:
        """The person's phone, for an urgent notice by SMS (the delivery log records it)."""
        doc = await self.document(subject_id)
        if doc is None or doc.get("status") == SubjectStatus.SHREDDED:
            return None
        sealed = (doc.get("enc") or {}).get("phone")
        if sealed is None:
            return None
        return str(await self._codec.open("subjects", subject_id, "phone", sealed))

    async def own_profile(self, ctx: AuditContext) -> dict[str, Any]:
        """What a person (or their guardian) sees of the file in the mini-program: the name
        and where it is kept, nothing more."""
        subject_id = ctx.identity.subject_id
        doc = await self.document(subject_id) if subject_id else None
        if doc is None or doc.get("status") == SubjectStatus.SHREDDED:
            raise NotFound("No such case file.", message_zh="未找到您的档案。")
        name = await self._codec.open("subjects", str(doc["_id"]), "name", doc["enc"]["name"])
        station = await self._orgs.get(str(doc["org_id"]))
        await self._audit.record(
            ctx,
            "subjects.read.self",
            resource="subject",
            resource_id=str(doc["_id"]),
            subject_id=str(doc["_id"]),
        )
        return {
            "name": str(name),
            "station": station.name,
            "populations": list(doc.get("populations") or []),
        }

    async def display_name(self, identity: Identity, subject_id: str) -> str | None:
        """The name as `identity` may see it on a list (masked for juveniles not assigned)."""
        doc = await self.document(subject_id)
        if doc is None or doc.get("status") == SubjectStatus.SHREDDED:
            return None
        if "name" not in visible_fields(identity):
            return None
        name = await self._codec.open("subjects", subject_id, "name", doc["enc"]["name"])
        if doc.get("juvenile") and identity.user_id not in assigned_ids(doc):
            return mask_value("name", name)
        return str(name)

    async def display_names(
        self, identity: Identity, subject_ids: list[str]
    ) -> dict[str, str | None]:
        """`display_name` for many files in one query (a report's people)."""
        if not subject_ids or "name" not in visible_fields(identity):
            return {}
        ids = [ObjectId(s) for s in subject_ids if ObjectId.is_valid(s)]
        names: dict[str, str | None] = {}
        async for doc in self._subjects.find(
            {"_id": {"$in": ids}}, {"enc.name": 1, "status": 1, "juvenile": 1, "assignments": 1}
        ):
            sid = str(doc["_id"])
            if doc.get("status") == SubjectStatus.SHREDDED or "name" not in doc.get("enc", {}):
                names[sid] = None
                continue
            name = await self._codec.open("subjects", sid, "name", doc["enc"]["name"])
            if doc.get("juvenile") and identity.user_id not in assigned_ids(doc):
                names[sid] = mask_value("name", name)
            else:
                names[sid] = str(name)
        return names

    async def hand_over_caseload(
        self, ctx: AuditContext, from_worker_id: str, to_worker_ids: list[str], staff_lookup: Any
    ) -> int:
        """A departing social worker's subjects, shared out among others in one audited
        operation: every file they were assigned to names the new workers instead."""
        if not to_worker_ids or from_worker_id in to_worker_ids:
            raise InvalidInput(
                "Name the workers who take over, not the one who leaves.",
                details=[{"field": "to_worker_ids"}],
            )
        departing = await staff_lookup(from_worker_id)
        if departing is None or not ctx.identity.reaches(departing["org_path"]):
            raise NotFound("No such staff member.")
        for worker_id in to_worker_ids:
            worker = await staff_lookup(worker_id)
            if (
                worker is None
                or worker.get("disabled")
                or worker["role"] != Role.SOCIAL_WORKER
                or not ctx.identity.reaches(worker["org_path"])
            ):
                raise InvalidInput(
                    "Hand over to active social workers in your scope.",
                    details=[{"field": "to_worker_ids", "value": worker_id}],
                )
        subjects = [
            d
            async for d in self._subjects.find(
                {"assignments.social_worker_ids": from_worker_id}, {"_id": 1, "org_path": 1}
            )
        ]
        if any(not ctx.identity.reaches(d["org_path"]) for d in subjects):
            raise Forbidden("Some of these files lie outside your scope; ask the county.")
        async with self._audit.change(
            ctx,
            "subjects.hand_over",
            resource="staff",
            resource_id=from_worker_id,
            details={"to": to_worker_ids, "files": len(subjects)},
        ):
            for index, doc in enumerate(subjects):
                successor = to_worker_ids[index % len(to_worker_ids)]
                # Two steps so a file already assigned to the successor lists them once.
                await self._subjects.update_one(
                    {"_id": doc["_id"]},
                    {"$pull": {"assignments.social_worker_ids": from_worker_id}},
                )
                await self._subjects.update_one(
                    {"_id": doc["_id"]},
                    {
                        "$addToSet": {"assignments.social_worker_ids": successor},
                        "$inc": {"version": 1},
                    },
                )
        await self._list_again([d["_id"] for d in subjects])
        return len(subjects)

    async def documents(self, subject_ids: set[str]) -> dict[str, dict[str, Any]]:
        """Raw documents by id, for a sweep's batch (no scope, no decryption, no audit)."""
        ids = [parse_id(sid, "case file") for sid in subject_ids]
        return {str(d["_id"]): d async for d in self._subjects.find({"_id": {"$in": ids}})}

    async def set_populations(self, subject_id: str, populations: list[str]) -> None:
        """Which programs are open for the person (kept by the program service)."""
        await self._subjects.update_one(
            {"_id": parse_id(subject_id, "case file")}, {"$set": {"populations": populations}}
        )
        await self._list_again([parse_id(subject_id, "case file")])

    # --- views --------------------------------------------------------------------------------

    async def _view(
        self, identity: Identity, doc: dict[str, Any], access: str = "scope"
    ) -> SubjectView:
        subject_id = str(doc["_id"])
        view = SubjectView(
            id=subject_id,
            version=int(doc.get("version", 1)),
            org_id=str(doc["org_id"]),
            status=doc.get("status", SubjectStatus.ACTIVE),
            populations=list(doc.get("populations", [])),
            juvenile=bool(doc.get("juvenile")),
            has_photo=doc.get("photo_id") is not None,
            access=access,
        )
        if view.status == SubjectStatus.SHREDDED:
            return view
        try:
            plain = await self._codec.open_fields("subjects", subject_id, doc.get("enc", {}))
        except Shredded:
            view.status = SubjectStatus.SHREDDED
            return view
        plain["id_type"] = doc.get("id_type")
        visible = visible_fields(identity)
        assigned = identity.user_id in assigned_ids(doc)
        # Juveniles' identity is confidential to all but those assigned (社区矫正法 Art. 54).
        juvenile_masked = view.juvenile and not assigned
        for name in sorted(IDENTITY_FIELDS):
            if name not in plain:
                continue
            if name not in visible:
                continue
            if juvenile_masked and name != "gender":
                view.fields[name] = (
                    mask_value(name, plain[name])
                    if name in ("name", "id_number", "phone")
                    else None
                )
                view.masked.append(name)
            else:
                view.fields[name] = plain[name]
        assignments = doc.get("assignments", {})
        view.assignments = {
            "social_worker_ids": list(assignments.get("social_worker_ids", [])),
            "grid_worker_ids": list(assignments.get("grid_worker_ids", [])),
        }
        if assignments.get("team") is not None and not juvenile_masked:
            view.assignments["team"] = await self._codec.open(
                "subjects", subject_id, "team", assignments["team"]
            )
        return view

    # --- create -------------------------------------------------------------------------------

    def _today(self) -> dt.date:
        return self._clock.now().astimezone(LOCAL_TZ).date()

    async def _juvenile(self, org_id: str, birth_date: str, corrections_began: str | None) -> bool:
        """A minor today, or when corrections began: 社区矫正法 Art. 58 keeps the juvenile rules
        (the masked identity of Art. 54 among them) for the rest of that correction."""
        adult_age = (await self._rules.for_org(str(org_id))).int("juvenile.adult_age")
        birth = dt.date.fromisoformat(birth_date)
        if minor_on(birth, self._today(), adult_age):
            return True
        return corrections_began is not None and minor_on(
            birth, dt.date.fromisoformat(corrections_began), adult_age
        )

    async def note_corrections_start(self, subject_id: str, start: dt.date) -> None:
        """A corrections program begins on `start`: remember the earliest such day, and a person
        who was a minor then stays a juvenile file (社区矫正法 Art. 58)."""
        doc = await self._subjects.find_one(
            {"_id": parse_id(subject_id, "subject")},
            {"enc.birth_date": 1, "org_id": 1, "corrections_began_on": 1, "status": 1},
        )
        if doc is None or doc.get("status") == SubjectStatus.SHREDDED:
            return
        began = min(filter(None, (doc.get("corrections_began_on"), start.isoformat())))
        plain = await self._codec.open_fields(
            "subjects", subject_id, {"birth_date": doc["enc"]["birth_date"]}
        )
        update: dict[str, Any] = {"corrections_began_on": began}
        if await self._juvenile(str(doc["org_id"]), str(plain["birth_date"]), began):
            update["juvenile"] = True
        await self._subjects.update_one({"_id": doc["_id"]}, {"$set": update})
        if update.get("juvenile") != doc.get("juvenile"):
            await self._list_again([doc["_id"]])

    async def _validated(self, ctx: AuditContext, data: SubjectInput) -> dict[str, Any]:
        name = normalise_name(data.name)
        if not 1 <= len(name) <= 50:
            raise InvalidInput(
                "The name must be 1 to 50 characters.",
                details=[{"field": "name", "type": "invalid"}],
            )
        if data.gender not in ("male", "female"):
            raise InvalidInput("Gender is male or female.", details=[{"field": "gender"}])
        today = self._today()
        if data.birth_date > today:
            raise InvalidInput(
                "The birth date is in the future.", details=[{"field": "birth_date"}]
            )
        id_number = check_id_number(
            data.id_type, data.id_number, data.birth_date, data.gender, today
        )
        phone = check_phone(data.phone)
        address = " ".join(data.address.split())
        if not 2 <= len(address) <= 200:
            raise InvalidInput(
                "The address must be 2 to 200 characters.", details=[{"field": "address"}]
            )
        org = await self._orgs.get(data.org_id)
        if not ctx.identity.reaches(org.path):
            raise NotFound("No such organisation.")
        if org.kind not in SUBJECT_ORG_KINDS:
            raise InvalidInput(
                "A case file belongs to a station, community or grid.",
                details=[{"field": "org_id"}],
            )
        return {
            "name": name,
            "id_number": id_number,
            "phone": phone,
            "gender": data.gender,
            "birth_date": data.birth_date.isoformat(),
            "address": address,
            "id_type": str(data.id_type),
            "org": org,
        }

    async def _blind_indexes(self, values: dict[str, Any]) -> dict[str, str]:
        return {
            "id_number": await self._codec.blind_index(
                "id_number", normalise_id_number(values["id_number"])
            ),
            "phone": await self._codec.blind_index("phone", normalise_phone(values["phone"])),
            "name": await self._codec.blind_index("name", normalise_name(values["name"])),
        }

    async def _refuse_duplicate(
        self, ctx: AuditContext, existing: dict[str, Any], id_index: str
    ) -> Conflict:
        existing_id = str(existing["_id"])
        if self._scope.reaches(ctx.identity, "subjects.read", existing):
            await self._audit.record(
                ctx,
                "subjects.create",
                resource="subject",
                resource_id=existing_id,
                subject_id=existing_id,
                outcome="refused:exists",
            )
            return Conflict(
                "A case file for this person exists.", code="exists", details={"id": existing_id}
            )
        await self._audit.record(
            ctx,
            "subjects.create",
            resource="subject",
            resource_id=existing_id,
            subject_id=existing_id,
            outcome="refused:exists_elsewhere",
            details={"bi_id_number": id_index},
        )
        county = await self._orgs.ancestor(existing["org_path"], OrgKind.COUNTY)
        owner = county.id if county else str(existing["org_id"])
        await self._alerts.raise_alert(
            kind="duplicate_intake_elsewhere",
            org_id=owner,
            org_path=county.path if county else existing["org_path"],
            subject_id=existing_id,
            details={"requested_by": ctx.identity.user_id, "requesting_org": ctx.identity.org_id},
        )
        return Conflict(
            "A case file for this person exists in another jurisdiction.", code="exists_elsewhere"
        )

    async def _new_document(
        self,
        ctx: AuditContext,
        subject_id: ObjectId,
        values: dict[str, Any],
        indexes: dict[str, str],
    ) -> dict[str, Any]:
        """A new case file's document: identity sealed field by field, blind indexes beside."""
        sid = str(subject_id)
        org = values["org"]
        now = self._clock.now()
        return {
            "_id": subject_id,
            "org_id": ObjectId(org.id),
            "org_path": list(org.path),
            "id_type": values["id_type"],
            "status": SubjectStatus.ACTIVE,
            "populations": [],
            "juvenile": await self._juvenile(org.id, values["birth_date"], None),
            "enc": {
                name: await self._codec.seal(sid, None, "subjects", sid, name, values[name])
                for name in SEALED_FIELDS
            },
            "bi": indexes,
            "assignments": {"social_worker_ids": [], "grid_worker_ids": [], "team": None},
            "photo_id": None,
            "created_at": now,
            "updated_at": now,
            "created_by": ctx.identity.user_id,
            "version": 1,
        }

    async def create(self, ctx: AuditContext, data: SubjectInput) -> SubjectView:
        values = await self._validated(ctx, data)
        indexes = await self._blind_indexes(values)
        existing = await self._subjects.find_one({"bi.id_number": indexes["id_number"]})
        if existing is not None:
            raise await self._refuse_duplicate(ctx, existing, indexes["id_number"])
        subject_id = ObjectId()
        sid = str(subject_id)
        doc = await self._new_document(ctx, subject_id, values, indexes)
        async with self._audit.change(
            ctx, "subjects.create", resource="subject", resource_id=sid, subject_id=sid
        ):
            try:
                await self._subjects.insert_one(doc)
            except DuplicateKeyError:
                # A concurrent intake of the same person won the race.
                existing = await self._subjects.find_one({"bi.id_number": indexes["id_number"]})
                if existing is None:
                    raise
                raise await self._refuse_duplicate(ctx, existing, indexes["id_number"]) from None
        await self._roster.refresh([doc])
        # Answered by role, not scope: a social worker who opens a file is not yet assigned.
        return await self._view(ctx.identity, doc)

    # --- read, update, assign ---------------------------------------------------------------

    async def read(self, ctx: AuditContext, subject_id: str) -> SubjectView:
        doc, grant = await self._scope.load(ctx, subject_id, "subjects.read", allow_grant=True)
        access = "break_glass" if grant else "scope"
        view = await self._view(ctx.identity, doc, access)
        await self._audit.record(
            ctx,
            "subjects.read",
            resource="subject",
            resource_id=subject_id,
            subject_id=subject_id,
            reason=await self._scope.grant_reason(grant),
            details={"access": access, "masked": view.masked},
        )
        return view

    async def update(
        self, ctx: AuditContext, subject_id: str, version: int, changes: dict[str, Any]
    ) -> SubjectView:
        doc, _ = await self._scope.load(ctx, subject_id, "subjects.update")
        if doc.get("status") == SubjectStatus.SHREDDED:
            raise Conflict("The case file was erased.", code="shredded")
        current = await self._codec.open_fields("subjects", subject_id, doc["enc"])
        merged = {
            **current,
            "id_type": doc["id_type"],
            "org_id": str(doc["org_id"]),
            **{k: v for k, v in changes.items() if v is not None},
        }
        data = SubjectInput(
            name=merged["name"],
            id_type=IdType(merged["id_type"]),
            id_number=merged["id_number"],
            phone=merged["phone"],
            gender=merged["gender"],
            birth_date=merged["birth_date"]
            if isinstance(merged["birth_date"], dt.date)
            else dt.date.fromisoformat(merged["birth_date"]),
            address=merged["address"],
            org_id=merged["org_id"],
        )
        values = await self._validated(ctx, data)
        org = values.pop("org")
        indexes = await self._blind_indexes(values)
        if indexes["id_number"] != doc["bi"].get("id_number"):
            clash = await self._subjects.find_one(
                {"bi.id_number": indexes["id_number"], "_id": {"$ne": doc["_id"]}}
            )
            if clash is not None:
                raise await self._refuse_duplicate(ctx, clash, indexes["id_number"])
        key_id = doc.get("dek_id")
        enc = {
            name: await self._codec.seal(
                subject_id, key_id, "subjects", subject_id, name, values[name]
            )
            for name in SEALED_FIELDS
        }
        changed = sorted(k for k in SEALED_FIELDS if values[k] != current.get(k))
        if str(org.id) != str(doc["org_id"]):
            changed.append("org_id")
        async with self._audit.change(
            ctx,
            "subjects.update",
            resource="subject",
            resource_id=subject_id,
            subject_id=subject_id,
            details={"fields": changed},
        ):
            updated = await self._subjects.find_one_and_update(
                {"_id": doc["_id"], "version": version},
                {
                    "$set": {
                        "enc": enc,
                        "bi": indexes,
                        "id_type": values["id_type"],
                        "org_id": ObjectId(org.id),
                        "org_path": list(org.path),
                        "juvenile": await self._juvenile(
                            org.id, values["birth_date"], doc.get("corrections_began_on")
                        ),
                        "updated_at": self._clock.now(),
                    },
                    "$inc": {"version": 1},
                },
                return_document=ReturnDocument.AFTER,
            )
            if updated is None:
                raise Conflict(
                    "The case file changed since you read it.",
                    code="stale_version",
                    details={"current_version": int(doc.get("version", 1))},
                )
        await self._roster.refresh([updated], left=doc["org_id"])
        return await self._view(ctx.identity, updated)

    async def move(self, ctx: AuditContext, subject_id: str, org_id: str) -> SubjectView:
        """执行地变更: file the case under another station, usually beyond the caller's scope
        (that is the point of a transfer, which the receiving side has accepted). The caller
        must reach the file where it is now; the assigned workers stay with the old station."""
        doc, _ = await self._scope.load(ctx, subject_id, "transfers.manage")
        if doc.get("status") == SubjectStatus.SHREDDED:
            raise Conflict("The case file was erased.", code="shredded")
        org = await self._orgs.get(org_id)
        if org.kind not in SUBJECT_ORG_KINDS:
            raise InvalidInput(
                "A case file belongs to a station, community or grid.",
                details=[{"field": "org_id"}],
            )
        async with self._audit.change(
            ctx,
            "subjects.move",
            resource="subject",
            resource_id=subject_id,
            subject_id=subject_id,
            details={"from": str(doc["org_id"]), "to": org.id},
        ):
            updated = await self._subjects.find_one_and_update(
                {"_id": doc["_id"]},
                {
                    "$set": {
                        "org_id": ObjectId(org.id),
                        "org_path": list(org.path),
                        # Workers of the sending station no longer serve the person.
                        "assignments.social_worker_ids": [],
                        "assignments.grid_worker_ids": [],
                        "updated_at": self._clock.now(),
                    },
                    "$inc": {"version": 1},
                },
                return_document=ReturnDocument.AFTER,
            )
            updated = still_there(updated)
        await self._states.stale([subject_id])
        await self._roster.refresh([updated], left=doc["org_id"])
        return await self._view(ctx.identity, updated)

    async def set_assignments(
        self,
        ctx: AuditContext,
        subject_id: str,
        social_worker_ids: list[str],
        grid_worker_ids: list[str],
        team: list[dict[str, Any]],
        staff_lookup: Any,
    ) -> SubjectView:
        doc, _ = await self._scope.load(ctx, subject_id, "subjects.assign")
        for field_name, ids, roles in (
            ("social_worker_ids", social_worker_ids, {Role.SOCIAL_WORKER}),
            ("grid_worker_ids", grid_worker_ids, {Role.GRID_WORKER}),
        ):
            for staff_id in ids:
                member = await staff_lookup(staff_id)
                if (
                    member is None
                    or member.get("disabled")
                    or member["role"] not in roles
                    or not ctx.identity.reaches(member["org_path"])
                ):
                    raise InvalidInput(
                        "Assign active workers of the right role in your scope.",
                        details=[{"field": field_name, "value": staff_id}],
                    )
        rules = await self._rules.for_org(str(doc["org_id"]))
        if team and rules["corrections.team_includes_woman"]:
            plain = await self._codec.open_fields(
                "subjects", subject_id, {"gender": doc["enc"]["gender"]}
            )
            # 社区矫正法 Art. 25: a female subject's 矫正小组 includes a woman.
            if plain["gender"] == "female" and not any(m.get("gender") == "female" for m in team):
                raise InvalidInput(
                    "A woman's correction team must include a woman.",
                    details=[{"field": "team", "type": "female_member_required"}],
                )
        sealed_team = (
            await self._codec.seal(
                subject_id, doc.get("dek_id"), "subjects", subject_id, "team", team
            )
            if team
            else None
        )
        async with self._audit.change(
            ctx,
            "subjects.assign",
            resource="subject",
            resource_id=subject_id,
            subject_id=subject_id,
            details={
                "social_worker_ids": social_worker_ids,
                "grid_worker_ids": grid_worker_ids,
                "team_size": len(team),
            },
        ):
            updated = await self._subjects.find_one_and_update(
                {"_id": doc["_id"]},
                {
                    "$set": {
                        "assignments": {
                            "social_worker_ids": list(dict.fromkeys(social_worker_ids)),
                            "grid_worker_ids": list(dict.fromkeys(grid_worker_ids)),
                            "team": sealed_team,
                            # The rules (Art. 25's woman on the team) this assignment met.
                            "rules_version": rules.version,
                        },
                        "updated_at": self._clock.now(),
                    },
                    "$inc": {"version": 1},
                },
                return_document=ReturnDocument.AFTER,
            )
            updated = still_there(updated)
        await self._roster.refresh([updated])
        return await self._view(ctx.identity, updated)

    # --- photo --------------------------------------------------------------------------------

    async def begin_photo(
        self, ctx: AuditContext, subject_id: str, content_type: str, max_bytes: int
    ) -> AttachmentWriter:
        """A writer that encrypts the photo as it streams in; `finish_photo` files it."""
        doc, _ = await self._scope.load(ctx, subject_id, "subjects.photo")
        if doc.get("status") == SubjectStatus.SHREDDED:
            raise Conflict("The case file was erased.", code="shredded")
        return self._attachments.writer(subject_id, doc.get("dek_id"), content_type, max_bytes)

    async def finish_photo(self, ctx: AuditContext, writer: AttachmentWriter) -> AttachmentInfo:
        subject_id = writer.subject_id
        async with self._audit.change(
            ctx,
            "subjects.photo",
            resource="attachment",
            resource_id=writer.id,
            subject_id=subject_id,
            details={"bytes": writer.size},
        ):
            info = await writer.finish()
            previous = await self._subjects.find_one_and_update(
                {"_id": ObjectId(subject_id)},
                {"$set": {"photo_id": info.id, "updated_at": self._clock.now()}},
            )
        await self._list_again([ObjectId(subject_id)])
        if previous and previous.get("photo_id"):
            await self._attachments.delete(previous["photo_id"])
        return info

    @staticmethod
    def sees_face(identity: Identity, doc: dict[str, Any]) -> bool:
        """Whether `identity` may see the person's face (the file photo, a check-in photo):
        photos go with the identity number, and a juvenile's only to those assigned."""
        if "id_number" not in visible_fields(identity):
            return False
        return not (doc.get("juvenile") and identity.user_id not in assigned_ids(doc))

    async def photo(self, ctx: AuditContext, subject_id: str) -> tuple[AttachmentInfo, Any]:
        """The photo's description and its plaintext stream, when the caller may see it."""
        doc, grant = await self._scope.load(ctx, subject_id, "subjects.read", allow_grant=True)
        photo_id = doc.get("photo_id")
        if not self.sees_face(ctx.identity, doc) or not photo_id:
            raise NotFound("No photo.")
        info = await self._attachments.info(photo_id)
        if info is None:
            raise NotFound("No photo.")
        await self._audit.record(
            ctx,
            "subjects.photo.read",
            resource="attachment",
            resource_id=photo_id,
            subject_id=subject_id,
            reason=await self._scope.grant_reason(grant),
        )
        return info, self._attachments.read(photo_id)

    # --- notes --------------------------------------------------------------------------------

    async def add_note(self, ctx: AuditContext, subject_id: str, text: str) -> dict[str, Any]:
        doc, _ = await self._scope.load(ctx, subject_id, "subjects.notes")
        text = text.strip()
        if not 1 <= len(text) <= 5000:
            raise InvalidInput("A note is 1 to 5000 characters.", details=[{"field": "text"}])
        note_id = ObjectId()
        nid = str(note_id)
        sealed = await self._codec.seal(
            subject_id, doc.get("dek_id"), "subject_notes", nid, "text", text
        )
        note = {
            "_id": note_id,
            "subject_id": subject_id,
            "author_id": ctx.identity.user_id,
            "at": self._clock.now(),
            "text": sealed,
        }
        async with self._audit.change(
            ctx, "subjects.note", resource="note", resource_id=nid, subject_id=subject_id
        ):
            await self._notes.insert_one(note)
        return {"id": nid, "at": note["at"], "author_id": note["author_id"]}

    async def notes(self, ctx: AuditContext, subject_id: str, limit: int = 100) -> list[dict]:
        doc, _ = await self._scope.load(ctx, subject_id, "subjects.notes")
        # Another process may still hold the destroyed key in its cache: never decrypt a
        # shredded file's notes.
        shredded = doc.get("status") == SubjectStatus.SHREDDED
        items = []
        async for note in (
            self._notes.find({"subject_id": subject_id}).sort("at", DESCENDING).limit(limit)
        ):
            nid = str(note["_id"])
            text = None
            if not shredded:
                try:
                    text = await self._codec.open("subject_notes", nid, "text", note["text"])
                except Shredded:
                    text = None
            items.append(
                {"id": nid, "at": note["at"], "author_id": note["author_id"], "text": text}
            )
        await self._audit.record(
            ctx,
            "subjects.notes.read",
            resource="subject",
            resource_id=subject_id,
            subject_id=subject_id,
            details={"count": len(items)},
        )
        return items

    # --- search and lists ---------------------------------------------------------------------

    async def search(
        self,
        ctx: AuditContext,
        *,
        id_number: str | None,
        phone: str | None,
        name: str | None,
        population: str | None,
        status: str | None,
        cursor: str | None,
        limit: int,
    ) -> Page:
        scope = self._scope.filter(ctx.identity, "subjects.search")
        if scope is None:
            raise Forbidden()
        query: dict[str, Any] = dict(scope)
        indexes: dict[str, str] = {}
        if id_number:
            indexes["id_number"] = await self._codec.blind_index(
                "id_number", normalise_id_number(id_number)
            )
        if phone:
            indexes["phone"] = await self._codec.blind_index("phone", normalise_phone(phone))
        if name:
            indexes["name"] = await self._codec.blind_index("name", normalise_name(name))
        for kind, value in indexes.items():
            query[f"bi.{kind}"] = value
        if indexes:
            page = await self._blind_index_page(
                ctx, indexes, scope, population, status, cursor, limit
            )
        else:
            page = await self._page(ctx, query, population, status, cursor, limit)
        # The audit names the blind-index values searched for, never the identifiers.
        await self._audit.record(
            ctx,
            "subjects.search",
            resource="subject",
            details={"bi": indexes, "found": len(page.items)},
        )
        return page

    async def list(
        self,
        ctx: AuditContext,
        *,
        population: str | None,
        status: str | None,
        cursor: str | None,
        limit: int,
    ) -> Page:
        scope = self._scope.filter(ctx.identity, "subjects.read")
        if scope is None:
            raise Forbidden()
        page = await self._page(ctx, dict(scope), population, status, cursor, limit)
        await self._audit.record(
            ctx, "subjects.list", resource="subject", details={"found": len(page.items)}
        )
        return page

    async def _blind_index_page(
        self,
        ctx: AuditContext,
        indexes: dict[str, str],
        scope: dict[str, Any],
        population: str | None,
        status: str | None,
        cursor: str | None,
        limit: int,
    ) -> Page:
        """An exact search: the blind-index value alone picks the candidates (a handful, or a
        common name's few hundred), so every server answers from that index whatever the size
        of the caller's subtree; scope and filters are then checked on those candidates."""
        kind, value = next(iter(indexes.items()))
        after = parse_id(cursor, "cursor") if cursor else None
        found: builtins.list[dict[str, Any]] = []
        async for doc in self._subjects.find({f"bi.{kind}": value}).limit(MAX_BLIND_MATCHES):
            if not all(doc.get("bi", {}).get(k) == v for k, v in indexes.items()):
                continue
            if not matches(scope, doc):
                continue
            if population and population not in doc.get("populations", []):
                continue
            if status and doc.get("status") != status:
                continue
            if after is not None and doc["_id"] <= after:
                continue
            found.append(doc)
        found.sort(key=lambda d: d["_id"])
        items = []
        for doc in found[:limit]:
            try:
                items.append(await self._view(ctx.identity, doc))
            except IntegrityError:
                continue
        next_cursor = str(found[limit - 1]["_id"]) if len(found) > limit else None
        return Page(items=items, next_cursor=next_cursor)

    async def _page(
        self,
        ctx: AuditContext,
        query: dict[str, Any],
        population: str | None,
        status: str | None,
        cursor: str | None,
        limit: int,
    ) -> Page:
        if population:
            query["populations"] = population
        if status:
            query["status"] = status
        if cursor:
            query["_id"] = {"$gt": parse_id(cursor, "cursor")}
        found = self._subjects.find(query).sort("_id", ASCENDING).limit(limit + 1)
        docs = [d async for d in found]
        items = []
        for doc in docs[:limit]:
            try:
                items.append(await self._view(ctx.identity, doc))
            except IntegrityError:
                continue  # logged by the codec; one bad record does not hide the rest
        next_cursor = str(docs[limit - 1]["_id"]) if len(docs) > limit else None
        return Page(items=items, next_cursor=next_cursor)

    # --- break-glass, access log ----------------------------------------------------------------

    async def _entry_reason(self, identity: Identity, entry: dict[str, Any]) -> str | None:
        """An audit entry's reason as this reader may see it: the audit administrator learns
        that a reason was given and by whom, never its text (三员分立)."""
        reason = entry.get("reason")
        if reason is None or identity.role == Role.AUDIT_ADMIN:
            return None
        try:
            return await self._codec.open_text("audit", entry["subject_id"], "reason", reason)
        except (Shredded, IntegrityError):
            return None  # erased with the person, or logged by the codec

    async def files_for_access_log(
        self, ctx: AuditContext, typed: str, limit: int = 20
    ) -> builtins.list[dict[str, Any]]:
        """The files in the caller's subtree whose name, ID number or phone is exactly `typed`
        (through the blind indexes), for choosing whose access log to read: each answers its
        id, station and opening day, never what the file says (the audit administrator reads
        no case data). The search is audited by the blind-index values, not by what was typed."""
        searched = {
            "name": await self._codec.blind_index("name", normalise_name(typed)),
            "id_number": await self._codec.blind_index("id_number", normalise_id_number(typed)),
        }
        digits = normalise_phone(typed)
        if digits:
            searched["phone"] = await self._codec.blind_index("phone", digits)
        found: dict[ObjectId, dict[str, Any]] = {}
        for kind, value in searched.items():
            async for doc in self._subjects.find(
                {f"bi.{kind}": value}, {"org_id": 1, "org_path": 1, "created_at": 1}
            ).limit(MAX_BLIND_MATCHES):
                if ctx.identity.reaches(doc["org_path"]):
                    found.setdefault(doc["_id"], {**doc, "matched": kind})
        files = sorted(found.values(), key=lambda d: d["created_at"])[:limit]
        names = await self._orgs.names(str(d["org_id"]) for d in files)
        await self._audit.record(
            ctx,
            "subjects.access_log_lookup",
            resource="subject",
            details={"bi": searched, "found": len(found)},
        )
        return [
            {
                "id": str(d["_id"]),
                "station": names.get(str(d["org_id"])) or "",
                "opened_on": d["created_at"].astimezone(LOCAL_TZ).date(),
                "matched": d["matched"],
            }
            for d in files
        ]

    async def access_log(
        self,
        ctx: AuditContext,
        subject_id: str,
        staff: Callable[[str], Awaitable[dict[str, Any] | None]] | None = None,
    ) -> builtins.list[dict[str, Any]]:
        """Who read or changed the file, newest first; `staff` (the staff service's `lookup`)
        names each staff member who acted, since a log of ids is one nobody can read."""
        doc = await self._subjects.find_one({"_id": parse_id(subject_id, "case file")})
        if doc is None or not ctx.identity.reaches(doc["org_path"]):
            raise NotFound("No such case file.")
        entries = await self._audit.entries_for_subject(subject_id)
        await self._audit.record(
            ctx,
            "subjects.access_log",
            resource="subject",
            resource_id=subject_id,
            subject_id=subject_id,
        )
        names: dict[str, str | None] = {}
        for who in {e.get("actor_id") for e in entries}:
            # Sweeps act as "system", people through the mini-program with no staff account.
            if staff is not None and who and ObjectId.is_valid(who):
                member = await staff(who)
                names[who] = str(member["name"]) if member is not None else None
        return [
            {
                "at": e["at"],
                "actor_id": e.get("actor_id"),
                "actor_name": names.get(e.get("actor_id") or ""),
                "role": e.get("role"),
                "action": e["action"],
                "outcome": e.get("outcome"),
                "reason": await self._entry_reason(ctx.identity, e),
                "reason_given": e.get("reason") is not None,
                "request_id": e.get("request_id"),
            }
            for e in entries
        ]

    # --- keys: shredding and rotation --------------------------------------------------------

    async def shred(self, ctx: AuditContext, subject_id: str) -> None:
        """Crypto-shredding (PIPL Art. 19): destroy the data keys, delete the blind indexes."""
        oid = parse_id(subject_id, "case file")
        if await self._subjects.find_one({"_id": oid}, {"_id": 1}) is None:
            raise NotFound("No such case file.")
        async with self._audit.change(
            ctx, "subjects.shred", resource="subject", resource_id=subject_id, subject_id=subject_id
        ):
            # Marked first, so no build that read the key before it is destroyed is kept.
            await self._states.stale([subject_id])
            await self._vault.destroy_subject_keys(subject_id)
            await self._subjects.update_one(
                {"_id": oid},
                {
                    "$set": {
                        "status": SubjectStatus.SHREDDED,
                        "enc": {},
                        "assignments.team": None,
                        "shredded_at": self._clock.now(),
                    },
                    "$unset": {"bi": ""},
                    "$inc": {"version": 1},
                },
            )
            await self._states.forget(subject_id)
        await self._list_again([oid])

    def add_sealed_locations(self, locations: Iterable[tuple[str, str | None]]) -> None:
        """Where other services keep fields sealed with a subject's key (see `Resealer`)."""
        self._resealer.add_locations(locations)

    async def rotate_data_key(self, ctx: AuditContext, subject_id: str) -> str:
        """Re-encrypt everything sealed with one subject's data key (case file, team, notes,
        photo, and every other service's sealed fields) under a new key; destroy the old."""
        oid = parse_id(subject_id, "case file")
        doc = await self._subjects.find_one({"_id": oid})
        if doc is None or doc.get("status") == SubjectStatus.SHREDDED:
            raise NotFound("No such case file.")
        old_key_id = doc.get("dek_id") or f"dek:{subject_id}"
        new_key = await self._vault.new_data_key(subject_id)
        async with self._audit.change(
            ctx,
            "subjects.rotate_key",
            resource="subject",
            resource_id=subject_id,
            subject_id=subject_id,
            details={"from": old_key_id, "to": new_key.key_id},
        ):
            plain = await self._codec.open_fields("subjects", subject_id, doc["enc"])
            enc = {
                name: await self._codec.seal(
                    subject_id, new_key.key_id, "subjects", subject_id, name, value
                )
                for name, value in plain.items()
            }
            team = doc.get("assignments", {}).get("team")
            update: dict[str, Any] = {"enc": enc, "dek_id": new_key.key_id}
            if doc.get("needs") is not None:
                needs = await self._codec.open("subjects", subject_id, "needs", doc["needs"])
                update["needs"] = await self._codec.seal(
                    subject_id, new_key.key_id, "subjects", subject_id, "needs", needs
                )
            if team is not None:
                team_plain = await self._codec.open("subjects", subject_id, "team", team)
                update["assignments.team"] = await self._codec.seal(
                    subject_id, new_key.key_id, "subjects", subject_id, "team", team_plain
                )
            await self._resealer.reseal(subject_id, new_key.key_id)
            if doc.get("photo_id"):
                update["photo_id"] = await self._resealer.reencrypt_attachment(
                    subject_id, doc["photo_id"], new_key.key_id
                )
            await self._subjects.update_one({"_id": oid}, {"$set": update})
            await self._states.stale([subject_id])
            # Check-in photos are referenced by id from records that cannot move with a copy:
            # while any remain, the old key stays (unused for new data) rather than make them
            # unreadable; retention shreds both keys at the end.
            others = set(await self._attachments.ids_for(subject_id)) - {update.get("photo_id")}
            if not others:
                await self._vault.destroy(old_key_id)
        return new_key.key_id

    # --- bulk import -----------------------------------------------------------------------

    async def validated(self, ctx: AuditContext, data: SubjectInput) -> dict[str, Any]:
        """A case file's values as `create` would store them, or InvalidInput/NotFound naming
        the field (for the CSV import, which checks every row before it stores any)."""
        return await self._validated(ctx, data)

    async def indexed(self, values: dict[str, Any]) -> tuple[dict[str, str], bool]:
        """A case file's blind indexes, and whether a file with its ID number exists."""
        indexes = await self._blind_indexes(values)
        found = await self._subjects.find_one({"bi.id_number": indexes["id_number"]}, {"_id": 1})
        return indexes, found is not None

    async def create_many(
        self, ctx: AuditContext, prepared: builtins.list[tuple[dict[str, Any], dict[str, str]]]
    ) -> builtins.list[str]:
        """Store checked case files (values and blind indexes) all at once, or none: one audited
        change in one transaction; a person registered meanwhile refuses the whole set."""
        docs = [
            await self._new_document(ctx, ObjectId(), values, indexes)
            for values, indexes in prepared
        ]
        async with (
            self._audit.change(
                ctx, "subjects.import", resource="subject", details={"count": len(docs)}
            ),
            self._store.transaction() as session,
        ):
            try:
                await self._subjects.insert_many(docs, ordered=True, session=session)
            except DuplicateKeyError:
                raise Conflict(
                    "A person in the file was registered meanwhile; nothing was imported.",
                    code="exists",
                ) from None
        await self._roster.refresh(docs)
        return [str(d["_id"]) for d in docs]

    # --- the case list (a worker finds a person with nothing due today) ------------------------

    async def case_list(
        self,
        ctx: AuditContext,
        query: CaseListQuery,
        staff_lookup: Callable[[str], Awaitable[dict[str, Any] | None]],
    ) -> CaseList:
        """One page of the caller's case files, filtered, searched and sorted, with the count of
        all that match. `q` is matched exactly, through the blind indexes, as a name, an ID
        number or a phone: the identity fields are sealed, so there is no partial match and no
        sorting by name."""
        action = "subjects.search" if query.q else "subjects.read"
        scope = self._scope.filter(ctx.identity, action)
        if scope is None:
            raise Forbidden()
        clauses: list[dict[str, Any]] = [scope] if scope else []
        searched: dict[str, str] = {}
        if query.q:
            searched = {
                "name": await self._codec.blind_index("name", normalise_name(query.q)),
                "id_number": await self._codec.blind_index(
                    "id_number", normalise_id_number(query.q)
                ),
            }
            digits = normalise_phone(query.q)
            if digits:
                searched["phone"] = await self._codec.blind_index("phone", digits)
            # Each blind index picks its few candidates by equality on its own index; the other
            # conditions are then asked of those few, not of the whole subtree.
            candidates: list[ObjectId] = []
            for kind, value in searched.items():
                found = self._subjects.find({f"bi.{kind}": value}, {"_id": 1})
                candidates += [d["_id"] async for d in found.limit(MAX_BLIND_MATCHES)]
            clauses.insert(0, {"_id": {"$in": sorted(set(candidates))}})
        clauses += case_list_conditions(query)
        within = ctx.identity.org_id if not ctx.identity.unscoped else None
        linked = await self._linked_ids(query, within)
        # A search's few candidates come from the blind indexes, and the `referred` scope lies
        # outside the org tree the rosters follow: both ask the files themselves.
        if (
            not query.q
            and (not scope or "org_path" in scope)
            and await self._roster.ensure_complete(self._listed_files)
        ):
            total, page, docs = await self._page_from_roster(scope or {}, query, linked)
        else:
            total, page, docs = await self._page_by_pass(_conjunction(clauses), query, linked)
        per_page = query.per_page
        await self._vault.prefetch(d.get("dek_id") or f"dek:{d['_id']}" for d in docs)
        items = []
        for doc in docs:
            try:
                items.append(await self._view(ctx.identity, doc))
            except IntegrityError:
                continue  # logged by the codec; one bad record does not hide the rest
        org_names = await self._orgs.names(str(d["org_id"]) for d in docs)
        worker_names: dict[str, str] = {}
        for worker_id in {w for d in docs for w in assigned_ids(d) if ObjectId.is_valid(w)}:
            staff = await staff_lookup(worker_id)
            if staff is not None and ctx.identity.reaches(staff.get("org_path") or ()):
                worker_names[worker_id] = str(staff.get("name") or "")
        # The audit names the blind-index values searched for, never what was typed.
        await self._audit.record(
            ctx,
            action if query.q else "subjects.list",
            resource="subject",
            details={"bi": searched, "found": total, "page": page},
        )
        return CaseList(items, total, page, per_page, org_names, worker_names)

    async def _page_from_roster(
        self, scope: dict[str, Any], query: CaseListQuery, linked: set[str] | None
    ) -> tuple[int, int, builtins.list[dict[str, Any]]]:
        """The page from the rosters of the units in scope (see models/case_roster.py): the
        same filters and order as `_page_by_pass`, asked of the listed fields in memory."""
        entries = await self._roster.entries(query.station or scope.get("org_path"))
        # Only the conditions asked for, each a plain test: a county's 10,000 entries pass
        # through them on every page.
        checks: builtins.list[Callable[[dict[str, Any]], bool]] = []
        node = scope.get("org_path")
        if node and query.station:
            checks.append(lambda e: node in e["org_path"])  # the station may lie out of scope
        beyond_node = {k: v for k, v in scope.items() if k != "org_path"}
        if beyond_node:
            checks.append(lambda e: matches(beyond_node, e))
        if linked is not None:
            checks.append(lambda e: str(e["_id"]) in linked)
        if query.population:
            checks.append(lambda e: query.population in e["populations"])
        if query.status:
            checks.append(lambda e: e["status"] == query.status)
        if query.worker:
            worker = query.worker
            checks.append(
                lambda e: (
                    worker in e["assignments"]["social_worker_ids"]
                    or worker in e["assignments"]["grid_worker_ids"]
                )
            )
        if "juvenile" in query.flags:
            checks.append(lambda e: e["juvenile"])
        if "unassigned" in query.flags:
            checks.append(lambda e: not e["assignments"]["social_worker_ids"])
        if len(checks) == 1:
            ordered = list(filter(checks[0], entries))
        else:
            ordered = [e for e in entries if all(check(e) for check in checks)]
        # Runs of keys in one direction sort as one tuple key; a mixed order sorts stably from
        # its last run to its first. Ids compare by their bytes (as the database orders them).
        for names, descending in reversed(_runs(CASE_LIST_SORTS[query.sort])):
            keys = [SORTABLE.get(name, name) for name in names]
            ordered.sort(key=operator.itemgetter(*keys), reverse=descending)
        total = len(ordered)
        last_page = max(1, -(-total // query.per_page))
        page = min(query.page, last_page)
        page_ids = [e["_id"] for e in ordered[(page - 1) * query.per_page : page * query.per_page]]
        by_id = {d["_id"]: d async for d in self._subjects.find({"_id": {"$in": page_ids}})}
        return total, page, [by_id[oid] for oid in page_ids if oid in by_id]

    async def _list_again(self, subject_ids: builtins.list[ObjectId]) -> None:
        """Write these files' listed fields through to the case list's rosters."""
        found = self._subjects.find({"_id": {"$in": subject_ids}}, LIST_PROJECTION)
        await self._roster.refresh([doc async for doc in found])

    async def rebuild_case_roster(self) -> dict[str, int]:
        """Every roster anew from the case files (the nightly sweep, and after an upgrade)."""
        return await self._roster.rebuild(self._listed_files)

    def _listed_files(self) -> AsyncIterator[dict[str, Any]]:
        return aiter(self._subjects.find({}, LIST_PROJECTION).batch_size(10_000))

    async def _page_by_pass(
        self, filter_: dict[str, Any], query: CaseListQuery, linked: set[str] | None
    ) -> tuple[int, int, builtins.list[dict[str, Any]]]:
        """One pass over the matching ids in order (a county's files number in the tens of
        thousands at most), then the page's documents by id: the count, the page and the other
        records' conditions (kept to the ids, never a long `$in`) from the same pass. The ids
        come in as few batches as the server allows: in its default batches, the pass over a
        county's 10,000 files took 23 round trips."""
        ordered = [
            d["_id"]
            async for d in self._subjects.find(filter_, {"_id": 1})
            .sort(CASE_LIST_SORTS[query.sort])
            .batch_size(10_000)
            if linked is None or str(d["_id"]) in linked
        ]
        total = len(ordered)
        last_page = max(1, -(-total // query.per_page))
        page = min(query.page, last_page)
        page_ids = ordered[(page - 1) * query.per_page : page * query.per_page]
        by_id = {d["_id"]: d async for d in self._subjects.find({"_id": {"$in": page_ids}})}
        return total, page, [by_id[oid] for oid in page_ids if oid in by_id]

    async def _linked_ids(self, query: CaseListQuery, within: str | None) -> set[str] | None:
        """The files the other records single out (a program's state, a recent miss, an open
        脱管), within the caller's node; None when no such filter is asked for. Read from the
        collections the program, obligation and sanction services keep, as the reports do."""
        sets: list[set[str]] = []
        where: dict[str, Any] = {"org_path": within} if within else {}
        if query.program_status:
            sets.append(
                await self._distinct_subjects("programs", {**where, "status": query.program_status})
            )
        if "overdue" in query.flags:
            since = self._clock.now() - CASE_LIST_OVERDUE
            sets.append(
                await self._distinct_subjects(
                    "occurrences", {**where, "status": "missed", "window_end": {"$gte": since}}
                )
            )
        if "detached" in query.flags:
            sets.append(await self._distinct_subjects("detachments", {**where, "end_date": None}))
        if not sets:
            return None
        return set.intersection(*sets)

    async def _distinct_subjects(self, collection: str, filter_: dict[str, Any]) -> set[str]:
        found = self._store.collection(collection).find(filter_, {"subject_id": 1, "_id": 0})
        return {str(d["subject_id"]) async for d in found if d.get("subject_id")}


CASE_LIST_SORTS: dict[str, list[tuple[str, int]]] = {
    "newest": [("created_at", DESCENDING), ("_id", DESCENDING)],
    "oldest": [("created_at", ASCENDING), ("_id", ASCENDING)],
    "updated": [("updated_at", DESCENDING), ("_id", DESCENDING)],
    "station": [("org_id", ASCENDING), ("created_at", DESCENDING), ("_id", DESCENDING)],
}
CASE_LIST_FLAGS = ("overdue", "detached", "juvenile", "unassigned")
# As the caseload counts it: an unexcused miss stays "overdue" for 30 days.
CASE_LIST_OVERDUE = dt.timedelta(days=30)


@dataclass(frozen=True)
class CaseListQuery:
    q: str | None = None
    population: str | None = None
    status: str | None = None
    program_status: str | None = None
    station: str | None = None
    worker: str | None = None
    flags: frozenset[str] = frozenset()
    sort: str = "newest"
    page: int = 1
    per_page: int = 20


@dataclass(frozen=True)
class CaseList:
    items: list[SubjectView]
    total: int
    page: int
    per_page: int
    # Names for what the page shows by id: its stations and its workers (in the caller's scope).
    org_names: dict[str, str]
    worker_names: dict[str, str]


def _conjunction(clauses: list[dict[str, Any]]) -> dict[str, Any]:
    """One filter from many: merged while no two name the same field, else an `$and`."""
    merged: dict[str, Any] = {}
    for clause in clauses:
        if any(key in merged for key in clause):
            return {"$and": clauses}
        merged.update(clause)
    return merged


def case_list_conditions(query: CaseListQuery) -> builtins.list[dict[str, Any]]:
    """The case list's filters as conditions on the case files (the search and the scope
    apart); `_page_from_roster` asks the same of the rosters in memory."""
    conditions: builtins.list[dict[str, Any]] = []
    if query.population:
        conditions.append({"populations": query.population})
    if query.status:
        conditions.append({"status": query.status})
    if query.station:
        conditions.append({"org_path": query.station})
    if query.worker:
        conditions.append(
            {
                "$or": [
                    {"assignments.social_worker_ids": query.worker},
                    {"assignments.grid_worker_ids": query.worker},
                ]
            }
        )
    if "juvenile" in query.flags:
        conditions.append({"juvenile": True})
    if "unassigned" in query.flags:
        conditions.append({"assignments.social_worker_ids.0": {"$exists": False}})
    return conditions


def _runs(order: builtins.list[tuple[str, int]]) -> builtins.list[tuple[tuple[str, ...], bool]]:
    """A sort order as its runs of one direction: [(fields, descending), ...]."""
    runs: builtins.list[tuple[tuple[str, ...], bool]] = []
    for name, direction in order:
        descending = direction == DESCENDING
        if runs and runs[-1][1] == descending:
            runs[-1] = ((*runs[-1][0], name), descending)
        else:
            runs.append(((name,), descending))
    return runs

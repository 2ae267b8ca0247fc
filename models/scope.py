"""Record scope: which case files a caller reaches for an action, and break-glass beyond it."""

from __future__ import annotations

import datetime as dt
from collections.abc import Collection
from typing import Any

from bson import ObjectId
from pymongo import ASCENDING, IndexModel

from models.alerts import AlertService, FileAccess
from models.audit import AuditContext, AuditService
from models.clock import Clock
from models.codec import FieldCodec, Shredded
from models.errors import Conflict, InvalidInput, NotFound
from models.identity import Identity
from models.ids import parse_id
from models.orgs import OrgKind, OrgService
from models.policy import Policy, Scope, sees_health
from models.store import CollectionSpec, Store

# The case files' collection, named here because reaching a file is decided on it; the case-file
# service (models/subjects.py) declares its indexes.
FILES = "subjects"
GRANTS = CollectionSpec(
    "break_glass_grants",
    (
        IndexModel([("staff_id", ASCENDING), ("subject_id", ASCENDING)]),
        IndexModel([("expires_at", ASCENDING)], expireAfterSeconds=0),
    ),
)
BREAK_GLASS_FOR = dt.timedelta(hours=3)


class SubjectStatus:
    ACTIVE = "active"
    SHREDDED = "shredded"


class ScopeService:
    """The one authority on record scope: every service asks it before it touches a person's
    records (`require`), lists what a caller reaches (`reachable_ids`, `filter`) or says what a
    caller may open of records that point at files (`access`)."""

    collections = (GRANTS,)
    # Break-glass reasons are sealed under the person's key: key rotation reseals them.
    sealed_fields = ((GRANTS.name, None),)

    def __init__(
        self,
        store: Store,
        clock: Clock,
        audit: AuditService,
        policy: Policy,
        codec: FieldCodec,
        orgs: OrgService,
        alerts: AlertService,
    ):
        self._files = store.collection(FILES)
        self._grants = store.collection(GRANTS)
        self._clock = clock
        self._audit = audit
        self._policy = policy
        self._codec = codec
        self._orgs = orgs
        self._alerts = alerts

    def filter(self, identity: Identity, action: str) -> dict[str, Any] | None:
        """The query that selects what `identity` may reach for `action`; None: nothing."""
        if identity.unscoped:
            return {}  # the command line and the bootstrap
        if not identity.authenticated or not self._policy.allows(identity, action):
            return None
        scope = self._policy.scope(identity, action)
        base: dict[str, Any] = {"org_path": identity.org_id}
        if scope is Scope.SUBTREE:
            return base
        if scope is Scope.ASSIGNED:
            return {
                **base,
                "$or": [
                    {"assignments.social_worker_ids": identity.user_id},
                    {"assignments.grid_worker_ids": identity.user_id},
                ],
            }
        if scope is Scope.HEALTH:
            return {**base, "populations": "mental_health"}
        if scope is Scope.REFERRED:
            return {"referred_to_org_ids": identity.org_id}
        return None

    def reaches(self, identity: Identity, action: str, doc: dict[str, Any]) -> bool:
        """Whether `identity` reaches the loaded case file `doc` for `action`."""
        scope_filter = self.filter(identity, action)
        if scope_filter is None:
            return False
        return matches(scope_filter, doc)

    async def _granted(self, identity: Identity, subject_id: str) -> dict[str, Any] | None:
        return await self._grants.find_one(
            {
                "staff_id": identity.user_id,
                "subject_id": subject_id,
                "expires_at": {"$gt": self._clock.now()},
            }
        )

    async def load(
        self, ctx: AuditContext, subject_id: str, action: str, *, allow_grant: bool = False
    ) -> tuple[dict[str, Any], dict[str, Any] | None]:
        """The case file when the caller reaches it (or holds a break-glass grant, and its
        grant); else 404, and the refusal is audited."""
        doc = await self._files.find_one({"_id": parse_id(subject_id, "case file")})
        if doc is None:
            raise NotFound("No such case file.")
        if self.reaches(ctx.identity, action, doc):
            return doc, None
        if allow_grant:
            grant = await self._granted(ctx.identity, subject_id)
            if grant is not None:
                return doc, grant
        await self._audit.record(
            ctx,
            action,
            resource="subject",
            resource_id=subject_id,
            subject_id=subject_id,
            outcome="refused:out_of_scope",
        )
        raise NotFound("No such case file.")

    async def require(self, ctx: AuditContext, subject_id: str, action: str) -> dict[str, Any]:
        """The case file's document when the caller may perform `action` on it; else 404."""
        doc, _ = await self.load(ctx, subject_id, action)
        return doc

    async def reachable_ids(self, identity: Identity, action: str, limit: int) -> list[str]:
        """The ids of the case files `identity` reaches for `action` (its caseload's scope)."""
        scope = self.filter(identity, action)
        if scope is None:
            return []
        if "$or" in scope:
            # Assigned files: one indexed lookup per assignment list, then the subtree check,
            # rather than a walk through every file of the caller's node.
            ids: dict[str, None] = {}
            for branch in scope["$or"]:
                ((field_name, user_id),) = branch.items()
                async for doc in self._files.find(
                    {field_name: user_id}, {"_id": 1, "org_path": 1, "status": 1}
                ).limit(limit):
                    if identity.reaches(doc["org_path"]) and (
                        doc.get("status") != SubjectStatus.SHREDDED
                    ):
                        ids[str(doc["_id"])] = None
            return list(ids)[:limit]
        query = {**scope, "status": {"$ne": SubjectStatus.SHREDDED}}
        return [str(d["_id"]) async for d in self._files.find(query, {"_id": 1}).limit(limit)]

    async def access(
        self, identity: Identity, subject_ids: Collection[str], action: str
    ) -> dict[str, FileAccess]:
        """Per case file: whether `identity` reaches it for `action`, whether it lies in the
        caller's subtree, and whether the caller sees the health data on it (for records that
        point at files, such as alerts and visits). Unknown ids are absent."""
        ids = [ObjectId(s) for s in set(subject_ids) if ObjectId.is_valid(s)]
        if not ids:
            return {}
        found: dict[str, FileAccess] = {}
        async for doc in self._files.find(
            {"_id": {"$in": ids}},
            {"org_path": 1, "assignments": 1, "populations": 1, "referred_to_org_ids": 1},
        ):
            reads = self.reaches(identity, "subjects.read", doc)
            found[str(doc["_id"])] = FileAccess(
                opens=self.reaches(identity, action, doc),
                within=identity.reaches(doc["org_path"]),
                health=reads and sees_health(identity, identity.user_id in assigned_ids(doc)),
            )
        return found

    # --- break-glass --------------------------------------------------------------------------

    async def break_glass(self, ctx: AuditContext, subject_id: str, reason: str) -> dict[str, Any]:
        """Open an out-of-scope file for 3 hours with a stated reason; audited and alerted."""
        reason = " ".join(reason.split())
        if len(reason) < 10:
            raise InvalidInput(
                "State the reason in at least 10 characters.", details=[{"field": "reason"}]
            )
        doc = await self._files.find_one({"_id": parse_id(subject_id, "case file")})
        if doc is None:
            raise NotFound("No such case file.")
        if self.reaches(ctx.identity, "subjects.read", doc):
            raise Conflict("This case file is already in your scope.", code="in_scope")
        now = self._clock.now()
        grant_id = ObjectId()
        grant = {
            "_id": grant_id,
            "staff_id": ctx.identity.user_id,
            "subject_id": subject_id,
            # Free text about the person: sealed under their key like the file itself.
            "reason": await self._codec.seal(
                subject_id, doc.get("dek_id"), GRANTS.name, str(grant_id), "reason", reason
            ),
            "granted_at": now,
            "expires_at": now + BREAK_GLASS_FOR,
        }
        async with self._audit.change(
            ctx,
            "subjects.break_glass",
            resource="subject",
            resource_id=subject_id,
            subject_id=subject_id,
            reason=reason,
        ):
            await self._grants.insert_one(grant)
        caller_county = await self._orgs.ancestor(ctx.identity.org_path, OrgKind.COUNTY)
        owner_county = await self._orgs.ancestor(doc["org_path"], OrgKind.COUNTY)
        for county in {c.id: c for c in (caller_county, owner_county) if c}.values():
            await self._alerts.raise_alert(
                kind="break_glass",
                org_id=county.id,
                org_path=county.path,
                subject_id=subject_id,
                details={"staff_id": ctx.identity.user_id},
            )
        return {"subject_id": subject_id, "expires_at": grant["expires_at"]}

    async def grant_reason(self, grant: dict[str, Any] | None) -> str | None:
        """The reason a break-glass grant was given, for the audit entry of what it opened."""
        if grant is None:
            return None
        try:
            return await self._codec.open_text(
                GRANTS.name, str(grant["_id"]), "reason", grant.get("reason")
            )
        except Shredded:
            return None  # the person was erased: so was the reason given about them


def assigned_ids(doc: dict[str, Any]) -> set[str]:
    """The social and grid workers assigned to a case file."""
    assignments = doc.get("assignments", {})
    return {*assignments.get("social_worker_ids", []), *assignments.get("grid_worker_ids", [])}


def matches(query: dict[str, Any], doc: dict[str, Any]) -> bool:
    """Evaluate the small scope filters of `ScopeService.filter` against a loaded document."""
    for key, expected in query.items():
        if key == "$or":
            if not any(matches(option, doc) for option in expected):
                return False
            continue
        value: Any = doc
        for part in key.split("."):
            value = value.get(part) if isinstance(value, dict) else None
        if isinstance(value, list):
            if expected not in value:
                return False
        elif value != expected:
            return False
    return True

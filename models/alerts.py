"""Alerts: something a person at a given node (or one named person) must look at and acknowledge."""

from __future__ import annotations

import builtins  # `list` in a service class names its method; `builtins.list` the type
import enum
from collections.abc import Collection, Mapping
from dataclasses import dataclass, replace
from typing import Any, Protocol

from bson import ObjectId
from pymongo import ASCENDING, DESCENDING, IndexModel, ReturnDocument
from pymongo.errors import BulkWriteError, DuplicateKeyError

from models.audit import AuditContext, AuditService
from models.clock import Clock
from models.errors import Forbidden, NotFound
from models.identity import Identity
from models.ids import parse_id
from models.orgs import node_at
from models.policy import HEALTH_FIELDS
from models.rules import RulesService
from models.store import CollectionSpec, Store

ALERTS = CollectionSpec(
    "alerts",
    (
        IndexModel([("org_path", ASCENDING), ("status", ASCENDING), ("created_at", DESCENDING)]),
        # Monthly reports: a subtree's alerts by when they were raised, whatever their status.
        IndexModel([("org_path", ASCENDING), ("created_at", ASCENDING)]),
        IndexModel([("to_user_id", ASCENDING), ("status", ASCENDING)]),
        # A caseload counts open alerts per subject.
        IndexModel([("subject_id", ASCENDING), ("status", ASCENDING)]),
        IndexModel(
            [("dedupe_key", ASCENDING)],
            unique=True,
            partialFilterExpression={"dedupe_key": {"$type": "string"}},
        ),
    ),
)


DEFAULT_PER_PAGE = 100
MAX_PER_PAGE = 500


class AlertStatus(enum.StrEnum):
    OPEN = "open"
    ACKNOWLEDGED = "acknowledged"


@dataclass(frozen=True)
class FileAccess:
    """What one caller may do with one case file, as the file itself decides."""

    # The caller reaches the file for the action asked about.
    opens: bool
    # The file lies in the caller's subtree (whatever its role's narrower scope).
    within: bool
    # The caller reads the file and sees the health data on it.
    health: bool


class CaseFiles(Protocol):
    """The case files' own access rules (the subject service), which alerts about a file obey."""

    async def access(
        self, identity: Identity, subject_ids: Collection[str], action: str
    ) -> Mapping[str, FileAccess]: ...

    async def display_names(
        self, identity: Identity, subject_ids: list[str]
    ) -> Mapping[str, str | None]: ...


class StaffNames(Protocol):
    """Who acknowledged an alert, by name (the staff service)."""

    async def lookup(self, staff_id: str) -> Mapping[str, Any] | None: ...


@dataclass(frozen=True)
class Alert:
    id: str
    kind: str
    org_id: str
    status: str
    subject_id: str | None
    to_user_id: str | None
    created_at: Any
    details: dict[str, Any]
    # Filled in for a list: the person's name as the reader may see it, and who acknowledged.
    subject_name: str | None = None
    acknowledged_at: Any = None
    acknowledged_by: str | None = None
    acknowledged_by_name: str | None = None

    @classmethod
    def from_doc(cls, doc: dict[str, Any]) -> Alert:
        return cls(
            id=str(doc["_id"]),
            kind=doc["kind"],
            org_id=doc["org_id"],
            status=doc["status"],
            subject_id=doc.get("subject_id"),
            to_user_id=doc.get("to_user_id"),
            created_at=doc["created_at"],
            details=doc.get("details", {}),
            acknowledged_at=doc.get("acknowledged_at"),
            acknowledged_by=doc.get("acknowledged_by"),
        )


@dataclass(frozen=True)
class AlertPage:
    """One numbered page of alerts, and how many the caller sees in all."""

    items: list[Alert]
    total: int
    page: int
    per_page: int


class AlertService:
    collections = (ALERTS,)

    def __init__(
        self,
        store: Store,
        clock: Clock,
        audit: AuditService,
        rules: RulesService,
        staff: StaffNames | None = None,
    ):
        self._alerts = store.collection(ALERTS)
        self._clock = clock
        self._audit = audit
        self._rules = rules
        self._staff = staff

    async def _rules_version(self, org_id: str) -> str:
        """The rules version in force where the alert is raised: an alert is a decision the
        rules drove, and is read later against the rules of its day."""
        try:
            return (await self._rules.for_org(str(org_id))).version
        except NotFound:
            # An alert for a node the tree no longer holds is still raised, under the
            # national rules.
            return self._rules.book.version

    async def raise_alert(
        self,
        *,
        kind: str,
        org_id: str,
        org_path: list[str] | tuple[str, ...],
        subject_id: str | None = None,
        to_user_id: str | None = None,
        details: dict[str, Any] | None = None,
        dedupe_key: str | None = None,
    ) -> str:
        """Open an alert for the node `org_id`; `details` hold ids and codes, not personal data.
        With `dedupe_key`, raising the same alert again (a sweep that ran twice, or resumed
        after a crash) returns the first one instead of a duplicate."""
        doc = {
            "_id": ObjectId(),
            "kind": kind,
            "org_id": org_id,
            "org_path": list(org_path),
            "subject_id": subject_id,
            "to_user_id": to_user_id,
            "status": str(AlertStatus.OPEN),
            "created_at": self._clock.now(),
            "details": details or {},
            "rules_version": await self._rules_version(org_id),
        }
        if dedupe_key is not None:
            doc["dedupe_key"] = dedupe_key
        try:
            await self._alerts.insert_one(doc)
        except DuplicateKeyError:
            existing = await self._alerts.find_one({"dedupe_key": dedupe_key}, {"_id": 1})
            if existing is None:
                raise
            return str(existing["_id"])
        return str(doc["_id"])

    async def raise_many(self, alerts: list[dict[str, Any]]) -> int:
        """Raise several alerts in one round trip (same fields as `raise_alert`); those whose
        `dedupe_key` was raised before are skipped. Answers how many are new."""
        if not alerts:
            return 0
        now = self._clock.now()
        versions = {
            str(org_id): await self._rules_version(org_id)
            for org_id in {str(alert["org_id"]) for alert in alerts}
        }
        docs = [
            {
                "_id": ObjectId(),
                "status": str(AlertStatus.OPEN),
                "created_at": now,
                "to_user_id": None,
                "subject_id": None,
                "details": {},
                "rules_version": versions[str(alert["org_id"])],
                **alert,
                "org_path": list(alert["org_path"]),
            }
            for alert in alerts
        ]
        try:
            result = await self._alerts.insert_many(docs, ordered=False)
            return len(result.inserted_ids)
        except BulkWriteError as exc:
            if any(e.get("code") != 11000 for e in exc.details.get("writeErrors", [])):
                raise
            return int(exc.details.get("nInserted", 0))

    async def list(
        self,
        identity: Identity,
        files: CaseFiles,
        *,
        status: str | None,
        mine: bool,
        limit: int = 100,
    ) -> list[Alert]:
        """The alerts in the caller's subtree, each showing what the caller's role may see on
        the file it concerns: none about a file of the caller's jurisdiction that its role
        does not reach (an unassigned person, for a social worker), and no health data (the
        risk level) unless the caller sees health data on that file."""
        query = self._query(identity, status, mine)
        cursor = self._alerts.find(query).sort("created_at", DESCENDING).limit(limit)
        docs = [doc async for doc in cursor]
        access = await files.access(
            identity, {d["subject_id"] for d in docs if d.get("subject_id")}, "subjects.read"
        )
        shown = []
        for doc in docs:
            alert = _as_seen(Alert.from_doc(doc), access)
            if alert is not None:
                shown.append(alert)
        return await self._named(identity, files, shown)

    async def page(
        self,
        identity: Identity,
        files: CaseFiles,
        *,
        status: str | None,
        mine: bool,
        page: int = 1,
        per_page: int = DEFAULT_PER_PAGE,
    ) -> AlertPage:
        """A numbered page of the alerts `list` would show, the latest first, with how many
        there are in all. The count is of the alerts the caller sees: the ids and files of all
        matching alerts are read (not the alerts), the files' access decided once, and only
        the page's alerts fetched whole."""
        query = self._query(identity, status, mine)
        keys = [
            doc
            async for doc in self._alerts.find(query, {"_id": 1, "subject_id": 1}).sort(
                [("created_at", DESCENDING), ("_id", DESCENDING)]
            )
        ]
        access = await files.access(
            identity, {d["subject_id"] for d in keys if d.get("subject_id")}, "subjects.read"
        )
        visible = [d["_id"] for d in keys if _listed(d.get("subject_id"), access)]
        wanted = visible[(page - 1) * per_page : page * per_page]
        docs = {d["_id"]: d async for d in self._alerts.find({"_id": {"$in": wanted}})}
        shown = []
        for oid in wanted:
            doc = docs.get(oid)
            alert = _as_seen(Alert.from_doc(doc), access) if doc is not None else None
            if alert is not None:
                shown.append(alert)
        items = await self._named(identity, files, shown)
        return AlertPage(items=items, total=len(visible), page=page, per_page=per_page)

    @staticmethod
    def _query(identity: Identity, status: str | None, mine: bool) -> dict[str, Any]:
        query: dict[str, Any] = {"org_path": identity.org_id}
        if status:
            query["status"] = status
        if mine:
            query["$or"] = [
                {"to_user_id": identity.user_id},
                {"to_user_id": None, "org_id": identity.org_id},
            ]
        return query

    async def _named(
        self, identity: Identity, files: CaseFiles, alerts: builtins.list[Alert]
    ) -> builtins.list[Alert]:
        """The alerts with the person's name (as the reader may see it) and, once
        acknowledged, who did it by name: a list people read, not ids."""
        names = await files.display_names(
            identity, sorted({a.subject_id for a in alerts if a.subject_id})
        )
        staff: dict[str, str | None] = {}
        for by in {a.acknowledged_by for a in alerts if a.acknowledged_by}:
            member = await self._staff.lookup(by) if self._staff is not None else None
            staff[by] = str(member["name"]) if member is not None else None
        return [
            replace(
                a,
                subject_name=names.get(a.subject_id) if a.subject_id else None,
                acknowledged_by_name=staff.get(a.acknowledged_by) if a.acknowledged_by else None,
            )
            for a in alerts
        ]

    async def acknowledge(self, ctx: AuditContext, files: CaseFiles, alert_id: str) -> Alert:
        """Acknowledge an alert: a write, for the roles it is meant for and, when it concerns
        a person, for those who work on that person (assigned, or in the role's scope)."""
        oid = parse_id(alert_id, "alert")
        doc = await self._alerts.find_one({"_id": oid})
        if doc is None or not ctx.identity.reaches(doc["org_path"]):
            raise NotFound("No such alert.")
        subject_id = doc.get("subject_id")
        read = await files.access(ctx.identity, [subject_id], "subjects.read") if subject_id else {}
        if _as_seen(Alert.from_doc(doc), read) is None:
            raise NotFound("No such alert.")  # not listed to this caller either
        roles = (doc.get("details") or {}).get("for_roles")
        if roles and ctx.identity.role not in roles:
            raise Forbidden(
                "This alert is for other roles to act on.",
                code="not_alert_role",
                details={"for_roles": list(roles)},
                message_zh="此提醒应由其他岗位处理。",
            )
        if subject_id:
            ack = (await files.access(ctx.identity, [subject_id], "alerts.ack")).get(subject_id)
            # A notice to another node (a break-glass opening by its own officer) concerns a
            # file outside that node: its officers acknowledge it without working on the file.
            if ack is None or (ack.within and not ack.opens):
                raise Forbidden(
                    "Only those who work on this person acknowledge this alert.",
                    code="not_assigned",
                    message_zh="只有负责该对象的工作人员可以确认此提醒。",
                )
        async with self._audit.change(
            ctx,
            "alerts.ack",
            resource="alert",
            resource_id=alert_id,
            subject_id=doc.get("subject_id"),
        ):
            updated = await self._alerts.find_one_and_update(
                {"_id": oid, "status": str(AlertStatus.OPEN)},
                {
                    "$set": {
                        "status": str(AlertStatus.ACKNOWLEDGED),
                        "acknowledged_at": self._clock.now(),
                        "acknowledged_by": ctx.identity.user_id,
                    }
                },
                return_document=ReturnDocument.AFTER,
            )
        seen = _as_seen(Alert.from_doc(updated or doc), read)
        if seen is None:
            raise NotFound("No such alert.")
        return seen

    # --- aggregates for the dashboard (models/dashboard.py) ------------------------------------

    async def count_open(self, org_id: str, depth: int) -> dict[Any, int]:
        """Open alerts under a node, by unit (the path's node at `depth`)."""
        pipeline: list[dict[str, Any]] = [
            {"$match": {"org_path": org_id, "status": str(AlertStatus.OPEN)}},
            {"$group": {"_id": node_at(depth), "n": {"$sum": 1}}},
        ]
        return {g["_id"]: g["n"] async for g in await self._alerts.aggregate(pipeline)}


def _listed(subject_id: str | None, access: Mapping[str, FileAccess]) -> bool:
    """Whether an alert about `subject_id` (None: about no one) is listed at all."""
    if subject_id is None:
        return True
    seen = access.get(subject_id)
    return seen is not None and not (seen.within and not seen.opens)


def _as_seen(alert: Alert, access: Mapping[str, FileAccess]) -> Alert | None:
    """`alert` as a caller with `access` to the files may see it; None: not at all."""
    if alert.subject_id is None:
        return alert
    seen = access.get(alert.subject_id)
    if seen is None or (seen.within and not seen.opens):
        return None
    if seen.health:
        return alert
    return replace(
        alert, details={k: v for k, v in alert.details.items() if k not in HEALTH_FIELDS}
    )

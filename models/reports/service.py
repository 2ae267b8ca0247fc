"""Monthly compliance reports: station, county and city reports built from every person's
month (reading.py reads it, figures.py computes), with drill-down and exports, and the
officer's sign-off that freezes a hashed snapshot against which later changes show as
differences."""

from __future__ import annotations

import datetime as dt
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

import pymongo
from bson import ObjectId
from pymongo import ASCENDING, IndexModel, ReturnDocument
from pymongo.errors import DuplicateKeyError

from models.approvals import LEVEL_OF_ROLE, Level
from models.audit import AuditContext, AuditService
from models.clock import LOCAL_TZ, Clock
from models.errors import Conflict, Forbidden, InvalidInput, NotFound
from models.ids import parse_id
from models.orgs import Org, OrgKind, OrgService
from models.reports.figures import (
    FIGURE_KEYS,
    FIGURE_LABELS,
    UNIT_KIND,
    Month,
    PersonMonth,
    diff,
    parse_month,
    rates,
    report_rows,
    snapshot_hash,
    station_name,
    summarise,
)
from models.reports.reading import MonthReader
from models.scope import ScopeService
from models.store import CollectionSpec, Store, still_there
from models.subjects import SubjectService

REPORTS = CollectionSpec(
    "compliance_reports",
    (
        # One report per node and month: asking again refreshes it.
        IndexModel([("org_id", ASCENDING), ("month", ASCENDING)], unique=True),
        IndexModel([("org_path", ASCENDING), ("month", ASCENDING)]),
    ),
)
# A report's per-person rows, one set per computation: the current draft's, and each signed
# snapshot's (kept, so every signature can be shown again as it was signed). Rows are stored in
# chunks of ROW_CHUNK: a county's 5,000 people are 20 documents, not 5,000 writes.
REPORT_ROWS = CollectionSpec(
    "compliance_report_rows",
    (IndexModel([("report_id", ASCENDING), ("copy", ASCENDING), ("seq", ASCENDING)]),),
)

SIGNING_LEVEL = {
    OrgKind.STATION: Level.STATION,
    OrgKind.COUNTY: Level.COUNTY,
    OrgKind.CITY: Level.CITY,
}
REPORT_DEADLINE_S = 300
MAX_DRILL = 500
ROW_CHUNK = 250


@dataclass
class ReportView:
    id: str
    org_id: str
    org_name: str
    org_kind: str
    month: str
    status: str
    generated_at: dt.datetime
    summary: dict[str, Any]
    signed: dict[str, Any] | None
    signatures: list[dict[str, Any]]
    changes: dict[str, Any] | None


class ReportService:
    collections = (REPORTS, REPORT_ROWS)

    def __init__(
        self,
        store: Store,
        clock: Clock,
        audit: AuditService,
        orgs: OrgService,
        subjects: SubjectService,
        staff_lookup: Callable[[str], Awaitable[dict[str, Any] | None]],
        *,
        scope: ScopeService,
    ):
        self._staff_lookup = staff_lookup
        self._reports = store.collection(REPORTS)
        self._rows = store.collection(REPORT_ROWS)
        self._months = MonthReader(store)
        self._clock = clock
        self._audit = audit
        self._orgs = orgs
        self._subjects = subjects
        self._scope = scope

    def _today(self) -> dt.date:
        return self._clock.now().astimezone(LOCAL_TZ).date()

    # --- the month of one person ---------------------------------------------------------------

    async def subject_month(self, ctx: AuditContext, subject_id: str, month_raw: str) -> dict:
        """One person's month: the same row a report holds for them, computed now."""
        await self._scope.require(ctx, subject_id, "compliance.read")
        month = parse_month(month_raw, self._clock.now())
        rows = await self._months.person_months({"subject_id": subject_id}, month, self._today())
        entry = rows.get(subject_id) or PersonMonth(subject_id)
        result = entry.finish({})
        await self._audit.record(
            ctx,
            "compliance.read",
            resource="subject",
            resource_id=subject_id,
            subject_id=subject_id,
            details={"month": month.label},
        )
        return {
            "subject_id": subject_id,
            "month": month.label,
            "figures": {key: result["values"].get(key, 0) for key in FIGURE_KEYS},
            "rates": rates(result["values"], result["ack_minutes"]),
            "programs": result["programs"],
            "supervision_level": result["level"],
            "risk_level": result["risk_level"],
            "trend": result["trend"],
            "missed_previous_month": result["missed_previous"],
        }

    # --- reports -----------------------------------------------------------------------------

    async def _compute(self, org: Org, month: Month) -> tuple[dict[str, Any], list[dict]]:
        """A node's report as the data stands: its summary and every person's row."""
        tree = {node.id: node for node in await self._orgs.below(org.id)}
        unit_kind = UNIT_KIND.get(org.kind)
        # A county's month is one long aggregation: longer than the API process's deadline per
        # operation (meant for a person's requests), so the report sets its own.
        with pymongo.timeout(REPORT_DEADLINE_S):
            people = await self._months.person_months({"org_path": org.id}, month, self._today())
        rows = report_rows(people, tree, unit_kind)
        return summarise(rows, tree, unit_kind), rows

    async def _in_scope(self, ctx: AuditContext, report_id: str, action: str) -> dict[str, Any]:
        doc = await self._reports.find_one({"_id": parse_id(report_id, "report")})
        if doc is None or not ctx.identity.reaches(doc["org_path"]):
            raise NotFound("No such report.")
        return doc

    async def _store_rows(self, report_id: ObjectId, rows: list[dict]) -> str:
        """Write a computation's rows under a fresh copy label; the report then points at it."""
        copy = str(ObjectId())
        chunks = [
            {
                "report_id": report_id,
                "copy": copy,
                "seq": seq,
                "rows": rows[first : first + ROW_CHUNK],
            }
            for seq, first in enumerate(range(0, len(rows), ROW_CHUNK))
        ]
        if chunks:
            await self._rows.insert_many(chunks, ordered=False)
        return copy

    async def _load_rows(self, report_id: ObjectId, copy: str) -> list[dict]:
        """A stored computation's rows, in subject order."""
        rows: list[dict] = []
        async for chunk in self._rows.find({"report_id": report_id, "copy": copy}).sort(
            "seq", ASCENDING
        ):
            rows.extend(chunk["rows"])
        return rows

    async def _signed_rows(self, doc: Mapping[str, Any]) -> list[dict]:
        signed = doc.get("signed")
        if not signed:
            return []
        return await self._load_rows(doc["_id"], signed["copy"])

    async def generate(
        self, ctx: AuditContext, org_id: str, month_raw: str
    ) -> tuple[ReportView, bool]:
        """The node's report for an ended month, computed now; a signed one keeps its snapshot
        and shows what changed since. Answers whether the report was created by this call."""
        org = await self._orgs.get_in_scope(ctx.identity, org_id)
        if org.kind not in SIGNING_LEVEL:
            raise InvalidInput(
                "Reports are made for a station, a county or a city.",
                details=[{"field": "org_id"}],
            )
        month = parse_month(month_raw, self._clock.now())
        now = self._clock.now()
        summary, rows = await self._compute(org, month)
        summary["sha256"] = snapshot_hash(org.id, month.label, summary, rows)
        created = False
        doc = await self._reports.find_one({"org_id": org.id, "month": month.label})
        if doc is None:
            doc = {
                "_id": ObjectId(),
                "org_id": org.id,
                "org_path": list(org.path),
                "org_kind": str(org.kind),
                "org_name": org.name,
                "month": month.label,
                "status": "draft",
                "created_at": now,
                "created_by": ctx.identity.user_id,
                "signed": None,
                "signatures": [],
            }
            try:
                await self._reports.insert_one(doc)
                created = True
            except DuplicateKeyError:
                doc = still_there(
                    await self._reports.find_one({"org_id": org.id, "month": month.label}),
                    "report",
                )
        copy = await self._store_rows(doc["_id"], rows)
        changes = None
        if doc.get("signed"):
            changes = diff(doc["signed"], await self._signed_rows(doc), summary, rows)
        previous = (doc.get("current") or {}).get("copy")
        updated = await self._reports.find_one_and_update(
            {"_id": doc["_id"]},
            {
                "$set": {
                    "current": {**summary, "copy": copy, "at": now, "by": ctx.identity.user_id},
                    "changes": changes,
                    "generated_at": now,
                }
            },
            return_document=ReturnDocument.AFTER,
        )
        # The rows of the previous computation go, never those of a signed version.
        if previous and previous not in (copy, (doc.get("signed") or {}).get("copy")):
            await self._rows.delete_many({"report_id": doc["_id"], "copy": previous})
        await self._audit.record(
            ctx,
            "reports.create",
            resource="report",
            resource_id=str(doc["_id"]),
            details={"org_id": org.id, "month": month.label, "sha256": summary["sha256"]},
        )
        return self._view(still_there(updated, "report")), created

    async def get(self, ctx: AuditContext, report_id: str) -> ReportView:
        doc = await self._in_scope(ctx, report_id, "reports.read")
        await self._audit.record(ctx, "reports.read", resource="report", resource_id=report_id)
        return self._view(doc)

    async def sign(
        self, ctx: AuditContext, report_id: str, comment: str, resign: bool = False
    ) -> ReportView:
        """The officer of the report's level signs the data as it stands now: the snapshot is
        frozen and its hash enters the audit chain. Signing unchanged data again changes
        nothing; signing changed data again must be asked for (`resign`)."""
        doc = await self._in_scope(ctx, report_id, "reports.sign")
        kind = OrgKind(doc["org_kind"])
        level = LEVEL_OF_ROLE.get(str(ctx.identity.role))
        if level != SIGNING_LEVEL[kind] or not ctx.identity.reaches(doc["org_path"]):
            raise Forbidden(
                "Only an officer of the report's own level signs it.", code="wrong_level"
            )
        org = await self._orgs.get(doc["org_id"])
        month = parse_month(doc["month"], self._clock.now())
        summary, rows = await self._compute(org, month)
        summary["sha256"] = snapshot_hash(org.id, month.label, summary, rows)
        signed = doc.get("signed")
        if signed and signed["sha256"] == summary["sha256"]:
            return self._view(doc)
        if signed and not resign:
            raise Conflict(
                "The data changed since this report was signed; sign again explicitly "
                "(resign: true) to replace the signed version.",
                code="changed_since_signed",
                details={"changes": diff(signed, await self._signed_rows(doc), summary, rows)},
            )
        await self._require_units_signed(org, month)
        version = (signed or {}).get("version", 0) + 1
        now = self._clock.now()
        async with self._audit.change(
            ctx,
            "reports.sign",
            resource="report",
            resource_id=report_id,
            reason=comment,
            details={
                "org_id": org.id,
                "month": month.label,
                "version": version,
                "sha256": summary["sha256"],
            },
        ):
            copy = await self._store_rows(doc["_id"], rows)
            signature = {
                "version": version,
                "sha256": summary["sha256"],
                "at": now,
                "by": ctx.identity.user_id,
                "comment": comment,
            }
            updated = await self._reports.find_one_and_update(
                # Two officers signing at once: one signature per version.
                {"_id": doc["_id"], "signed.version": (signed or {}).get("version")},
                {
                    "$set": {
                        "status": "signed",
                        "signed": {**summary, **signature, "copy": copy},
                        "current": {**summary, "copy": copy, "at": now, "by": ctx.identity.user_id},
                        "changes": None,
                        "generated_at": now,
                    },
                    "$push": {"signatures": signature},
                },
                return_document=ReturnDocument.AFTER,
            )
            if updated is None:
                await self._rows.delete_many({"report_id": doc["_id"], "copy": copy})
                raise Conflict("The report was signed meanwhile.", code="signed_meanwhile")
        previous = (doc.get("current") or {}).get("copy")
        if previous and previous != (signed or {}).get("copy"):
            await self._rows.delete_many({"report_id": doc["_id"], "copy": previous})
        return self._view(updated)

    async def _require_units_signed(self, org: Org, month: Month) -> None:
        """A county signs once every station under it has signed this month (a city, once
        its counties have)."""
        unit_kind = UNIT_KIND.get(org.kind)
        if unit_kind is None:
            return
        units = [node for node in await self._orgs.below(org.id) if node.kind == unit_kind]
        if not units:
            return
        signed = {
            doc["org_id"]
            async for doc in self._reports.find(
                {
                    "org_id": {"$in": [u.id for u in units]},
                    "month": month.label,
                    "status": "signed",
                },
                {"org_id": 1},
            )
        }
        missing = [u for u in units if u.id not in signed]
        if missing:
            raise Conflict(
                "Every report below this one must be signed first.",
                code="units_unsigned",
                details={"unsigned": [{"org_id": u.id, "name": u.name} for u in missing]},
            )

    async def drill_down(
        self,
        ctx: AuditContext,
        report_id: str,
        figure: str,
        version: str | None = None,
        unit_id: str | None = None,
    ) -> list[dict[str, Any]]:
        """The people behind a figure (those whose row counts in it), as the caller may see
        them; of the signed snapshot by default once there is one."""
        doc = await self._in_scope(ctx, report_id, "reports.read")
        if figure not in FIGURE_LABELS:
            raise InvalidInput("No such figure.", details=[{"field": "figure"}])
        copy = self._copy(doc, version)
        rows = [
            r
            for r in await self._load_rows(doc["_id"], copy)
            if r["values"].get(figure, 0) > 0
            and (not unit_id or r.get("unit_id") == unit_id)
            and ctx.identity.reaches(r["org_path"])
        ][:MAX_DRILL]
        names = await self._subjects.display_names(ctx.identity, [r["subject_id"] for r in rows])
        await self._audit.record(
            ctx,
            "reports.drill_down",
            resource="report",
            resource_id=report_id,
            details={"figure": figure, "subjects": len(rows)},
        )
        return [
            {
                "subject_id": r["subject_id"],
                "name": names.get(r["subject_id"]),
                "unit_id": r.get("unit_id"),
                "value": r["values"].get(figure, 0),
                "programs": r["programs"],
                "trend": r["trend"],
            }
            for r in rows
        ]

    @staticmethod
    def _copy(doc: Mapping[str, Any], version: str | None) -> str:
        if version in (None, "signed") and doc.get("signed"):
            return doc["signed"]["copy"]
        if version == "signed":
            raise NotFound("This report has not been signed.")
        if version not in (None, "current"):
            raise InvalidInput("The version is current or signed.", details=[{"field": "version"}])
        return doc["current"]["copy"]

    async def export_data(self, ctx: AuditContext, report_id: str, fmt: str) -> dict[str, Any]:
        """Everything an export prints, from the same stored data as the JSON: the signed
        snapshot once there is one, with every person's row and the names the caller may see."""
        doc = await self._in_scope(ctx, report_id, "reports.read")
        copy = self._copy(doc, None)
        summary = doc["signed"] if doc.get("signed") else doc["current"]
        rows = await self._load_rows(doc["_id"], copy)
        names = await self._subjects.display_names(ctx.identity, [r["subject_id"] for r in rows])
        tree = {node.id: node for node in await self._orgs.below(doc["org_id"])}
        signer = None
        if doc.get("signed"):
            signer = await self._orgs_staff_name(doc["signed"]["by"])
        await self._audit.record(
            ctx,
            "reports.export",
            resource="report",
            resource_id=report_id,
            details={"format": fmt, "rows": len(rows), "sha256": summary["sha256"]},
        )
        return {
            "report": self._view(doc),
            "summary": summary,
            "signer": signer,
            "printed_at": self._clock.now(),
            "rows": [
                {
                    **r,
                    "name": names.get(r["subject_id"]),
                    "unit_name": tree[r["unit_id"]].name if r.get("unit_id") in tree else None,
                    "station_name": station_name(r["org_path"], tree),
                }
                for r in rows
            ],
        }

    async def _orgs_staff_name(self, user_id: str | None) -> str | None:
        account = await self._staff_lookup(user_id) if user_id else None
        return str(account["name"]) if account else None

    @staticmethod
    def _view(doc: Mapping[str, Any]) -> ReportView:
        summary = doc["signed"] if doc.get("signed") else doc["current"]
        return ReportView(
            id=str(doc["_id"]),
            org_id=doc["org_id"],
            org_name=doc["org_name"],
            org_kind=doc["org_kind"],
            month=doc["month"],
            status=doc["status"],
            generated_at=doc["generated_at"],
            summary={k: v for k, v in summary.items() if k not in ("copy", "at", "by")},
            signed=(
                {k: doc["signed"][k] for k in ("version", "sha256", "at", "by", "comment")}
                if doc.get("signed")
                else None
            ),
            signatures=list(doc.get("signatures") or []),
            changes=doc.get("changes"),
        )

    # --- read by the dashboard's overview (models/dashboard.py) --------------------------------

    async def signing_states(
        self, org_ids: list[str], months: list[str]
    ) -> dict[tuple[str, str], dict[str, Any]]:
        """Each (node, month) report there is among these: its id, state and signature (no
        figures; the caller has checked the nodes are in scope)."""
        states: dict[tuple[str, str], dict[str, Any]] = {}
        async for doc in self._reports.find(
            {"org_id": {"$in": org_ids}, "month": {"$in": months}},
            {
                "org_id": 1,
                "month": 1,
                "status": 1,
                "signed.version": 1,
                "signed.at": 1,
                "changes": 1,
            },
        ):
            signed = doc.get("signed") or {}
            states[(doc["org_id"], doc["month"])] = {
                "report_id": str(doc["_id"]),
                "status": doc["status"],
                "version": signed.get("version"),
                "signed_at": signed.get("at"),
                "changed": bool(doc.get("changes")),
            }
        return states

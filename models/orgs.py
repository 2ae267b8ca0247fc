"""The organisation tree: city, county (区县司法局), station (司法所), community, grid."""

from __future__ import annotations

import enum
import re
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from bson import ObjectId
from pymongo import ASCENDING, IndexModel
from pymongo.errors import DuplicateKeyError

from models.audit import AuditContext, AuditService
from models.clock import Clock
from models.errors import Conflict, InvalidInput, NotFound
from models.geo import Area
from models.identity import Identity
from models.ids import parse_id
from models.singleflight import SingleFlight
from models.store import CollectionSpec, Store

ORGS = CollectionSpec(
    "orgs",
    (
        IndexModel([("code", ASCENDING)], unique=True),
        # Subtree queries: every node carries its ancestors' ids, root first, itself last.
        IndexModel([("path", ASCENDING)]),
        IndexModel([("parent_id", ASCENDING)]),
    ),
)

CODE_PATTERN = re.compile(r"^[0-9A-Za-z-]{2,20}$")
# The same as a person's cached check-in context (models/checkins.py CONTEXT_SECONDS).
AREAS_SECONDS = 30.0
AREAS_ENTRIES = 10_000


class OrgKind(enum.StrEnum):
    CITY = "city"
    COUNTY = "county"
    STATION = "station"
    COMMUNITY = "community"
    GRID = "grid"


# Each kind sits directly below the one before it.
LEVELS = list(OrgKind)
# A station's path is city, county, station: every case file (and its records) lies at or below.
STATION_DEPTH = LEVELS.index(OrgKind.STATION) + 1


@dataclass(frozen=True)
class Org:
    id: str
    name: str
    code: str
    kind: OrgKind
    parent_id: str | None
    path: tuple[str, ...]

    @classmethod
    def from_doc(cls, doc: dict[str, Any]) -> Org:
        return cls(
            id=str(doc["_id"]),
            name=doc["name"],
            code=doc["code"],
            kind=OrgKind(doc["kind"]),
            parent_id=str(doc["parent_id"]) if doc.get("parent_id") else None,
            path=tuple(doc["path"]),
        )


class OrgService:
    collections = (ORGS,)

    def __init__(self, store: Store, clock: Clock, audit: AuditService):
        self._orgs = store.collection(ORGS)
        self._clock = clock
        self._audit = audit
        # Every check-in of a station reads the same areas: kept per path for AREAS_SECONDS,
        # as long as a person's cached check-in context keeps them anyway.
        self._areas: dict[tuple[str, ...], tuple[float, list[dict[str, Any]]]] = {}
        self._area_loads: SingleFlight[tuple[str, ...], list[dict[str, Any]]] = SingleFlight()

    async def create(
        self,
        ctx: AuditContext,
        *,
        name: str,
        code: str,
        kind: OrgKind,
        parent_id: str | None,
    ) -> Org:
        name = name.strip()
        if not name:
            raise InvalidInput("The name is empty.", details=[{"field": "name"}])
        if not CODE_PATTERN.match(code):
            raise InvalidInput(
                "The code must be 2 to 20 letters, digits or hyphens.", details=[{"field": "code"}]
            )
        if parent_id is None:
            if kind != OrgKind.CITY:
                raise InvalidInput(f"A {kind} needs a parent.", details=[{"field": "parent_id"}])
            if not ctx.identity.unscoped:
                # Only the bootstrap and the CLI create roots; a scoped admin works in its subtree.
                raise NotFound("No such parent organisation.")
            path: list[str] = []
        else:
            parent = await self.get(parent_id)
            if not ctx.identity.reaches(parent.path):
                raise NotFound("No such parent organisation.")
            expected = (
                LEVELS[LEVELS.index(parent.kind) + 1] if parent.kind != OrgKind.GRID else None
            )
            if expected != kind:
                raise InvalidInput(
                    f"A {kind} cannot sit under a {parent.kind}"
                    + (f"; expected a {expected}." if expected else "."),
                    details=[{"field": "kind"}],
                )
            path = list(parent.path)
        new_id = ObjectId()
        doc = {
            "_id": new_id,
            "name": name,
            "code": code,
            "kind": str(kind),
            "parent_id": ObjectId(parent_id) if parent_id else None,
            "path": [*path, str(new_id)],
            "created_at": self._clock.now(),
        }
        async with self._audit.change(
            ctx, "orgs.create", resource="org", resource_id=str(new_id), details={"code": code}
        ):
            try:
                await self._orgs.insert_one(doc)
            except DuplicateKeyError:
                raise Conflict("An organisation with this code exists.", code="exists") from None
        return Org.from_doc(doc)

    async def get(self, org_id: str) -> Org:
        doc = await self._orgs.find_one({"_id": parse_id(org_id, "organisation")})
        if doc is None:
            raise NotFound("No such organisation.")
        return Org.from_doc(doc)

    async def names(self, org_ids: Iterable[str]) -> dict[str, str]:
        """Each organisation's name by id, in one read (a page of case files spans up to twenty
        stations); ids that are malformed or name nothing are left out."""
        wanted = sorted({ObjectId(i) for i in org_ids if ObjectId.is_valid(i)})
        if not wanted:
            return {}
        found = self._orgs.find({"_id": {"$in": wanted}}, {"name": 1})
        return {str(doc["_id"]): str(doc["name"]) async for doc in found}

    async def get_in_scope(self, identity: Identity, org_id: str) -> Org:
        org = await self.get(org_id)
        if not identity.reaches(org.path):
            raise NotFound("No such organisation.")
        return org

    async def ancestor(self, path: Sequence[str], kind: OrgKind) -> Org | None:
        """The node of `kind` on `path` (a record's county, say)."""
        ids = [ObjectId(node) for node in path]
        doc = await self._orgs.find_one({"_id": {"$in": ids}, "kind": str(kind)})
        return Org.from_doc(doc) if doc else None

    async def by_code(self, code: str) -> Org | None:
        doc = await self._orgs.find_one({"code": code})
        return Org.from_doc(doc) if doc else None

    async def subtree(self, identity: Identity, limit: int = 1000) -> list[Org]:
        """The caller's node and everything below it, in tree order."""
        if identity.org_id is None:
            return []
        cursor = self._orgs.find({"path": identity.org_id}).sort("path", ASCENDING).limit(limit)
        return [Org.from_doc(doc) async for doc in cursor]

    async def below(self, org_id: str, limit: int = 5000) -> list[Org]:
        """A node and everything under it (no scope check: the caller has made it)."""
        cursor = self._orgs.find({"path": org_id}).sort("path", ASCENDING).limit(limit)
        return [Org.from_doc(doc) async for doc in cursor]

    async def of_kind(self, kind: OrgKind, limit: int = 5000) -> list[Org]:
        """Every node of `kind`, in tree order (names of places are not personal data: a
        station picks another city's station as a transfer's destination)."""
        cursor = self._orgs.find({"kind": str(kind)}).sort("path", ASCENDING).limit(limit)
        return [Org.from_doc(doc) async for doc in cursor]

    async def areas_on(self, org_path: Sequence[str]) -> list[dict[str, Any]]:
        """The nodes on a path that define a check-in area (the station's own, else above); an
        area set in another process is seen within AREAS_SECONDS."""
        path = tuple(org_path)
        cached = self._areas.get(path)
        if cached is not None and time.monotonic() - cached[0] < AREAS_SECONDS:
            return list(cached[1])
        return list(await self._area_loads.load(path, lambda: self._load_areas(path)))

    async def _load_areas(self, path: tuple[str, ...]) -> list[dict[str, Any]]:
        ids = [ObjectId(node) for node in path]
        cursor = self._orgs.find({"_id": {"$in": ids}, "area": {"$exists": True}})
        areas = [{"_id": d["_id"], "area": d["area"], "kind": d["kind"]} async for d in cursor]
        if len(self._areas) >= AREAS_ENTRIES:
            self._areas.clear()
        self._areas[path] = (time.monotonic(), areas)
        return areas

    async def set_area(self, ctx: AuditContext, org_id: str, area: Area) -> Org:
        """A node's permitted check-in area: a polygon, or a centre (and radius)."""
        org = await self.get_in_scope(ctx.identity, org_id)
        async with self._audit.change(ctx, "orgs.area", resource="org", resource_id=org.id):
            await self._orgs.update_one(
                {"_id": ObjectId(org.id)},
                {"$set": {"area": area.to_doc(), "area_set_at": self._clock.now()}},
            )
        self._areas.clear()
        return org

    async def any_exists(self) -> bool:
        return await self._orgs.find_one({}, {"_id": 1}) is not None


def node_at(depth: int) -> dict[str, Any]:
    """An aggregation expression: the node at `depth` on a record's `org_path` (the unit a
    record falls in below a node of that depth), or null for a record filed higher up."""
    return {
        "$cond": [
            {"$gt": [{"$size": {"$ifNull": ["$org_path", []]}}, depth]},
            {"$arrayElemAt": ["$org_path", depth]},
            None,
        ]
    }

"""The statutory rules engine: national defaults in a versioned file, jurisdictions' overrides.

Every number the system enforces is a rule here, never a literal in code. A province (the first
two digits of an administrative code), a city or a county may override any rule; the effective
rules for a case come from its jurisdiction chain, and their version string, recorded on every
decision a rule drives, names the national file and each override that took part.
"""

from __future__ import annotations

import time
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from importlib import resources
from typing import Any

from bson import ObjectId
from pymongo import ASCENDING, IndexModel, ReturnDocument

from models.audit import AuditContext, AuditService
from models.clock import Clock
from models.errors import Conflict, Forbidden, InvalidInput, NotFound
from models.ids import parse_id
from models.orgs import Org, OrgKind, OrgService
from models.singleflight import SingleFlight
from models.store import CollectionSpec, Store, upsert_one

RULE_OVERRIDES = CollectionSpec("rule_overrides")
# Proposed changes to irreversible rules, each confirmed or refused by another person.
RULE_PROPOSALS = CollectionSpec(
    "rule_proposals", (IndexModel([("status", ASCENDING), ("org_path", ASCENDING)]),)
)


class ProposalStatus:
    PROPOSED = "proposed"
    CONFIRMED = "confirmed"
    REFUSED = "refused"


class RulesFileError(Exception):
    """The national rules file is malformed; the process cannot enforce anything without it."""


@dataclass(frozen=True)
class RuleDef:
    key: str
    value: Any
    source: str
    unit: str | None = None
    minimum: float | None = None
    maximum: float | None = None
    choices: tuple[Any, ...] | None = None
    # What the rule drives cannot be undone (retention: crypto-shredding). Such a rule changes
    # only through a case-side officer's proposal and the security administrator's confirmation.
    irreversible: bool = False

    def check(self, value: Any) -> Any:
        """`value` as this rule's type, or InvalidInput naming the rule."""
        expected = type(self.value)
        if expected is bool:
            ok = isinstance(value, bool)
        elif expected is int:
            ok = isinstance(value, int) and not isinstance(value, bool)
        elif expected is float:
            ok = isinstance(value, int | float) and not isinstance(value, bool)
        else:
            ok = isinstance(value, expected)
        if not ok:
            raise _invalid(self.key, f"must be a {expected.__name__}")
        if self.minimum is not None and value < self.minimum:
            raise _invalid(self.key, f"must be at least {self.minimum:g}")
        if self.maximum is not None and value > self.maximum:
            raise _invalid(self.key, f"must be at most {self.maximum:g}")
        # A list rule (the grounds of 社区矫正法 Art. 29) takes its items from the choices.
        items = value if isinstance(value, list) else [value]
        if self.choices is not None and any(item not in self.choices for item in items):
            raise _invalid(self.key, "must be one of " + ", ".join(map(str, self.choices)))
        return value


def _invalid(key: str, message: str) -> InvalidInput:
    return InvalidInput(
        f"Rule {key} {message}.", details=[{"field": f"rules.{key}", "message": message}]
    )


@dataclass(frozen=True)
class RuleBook:
    """The national defaults: what each rule means, its bounds and its legal source."""

    version: str
    rules: Mapping[str, RuleDef]

    @classmethod
    def load(cls, text: str | None = None) -> RuleBook:
        if text is None:
            text = resources.files("models").joinpath("data/rules/national.toml").read_text("utf-8")
        try:
            document = tomllib.loads(text)
            version = str(document["version"])
            rules = {
                key: RuleDef(
                    key=key,
                    value=spec["value"],
                    source=str(spec["source"]),
                    unit=spec.get("unit"),
                    minimum=spec.get("min"),
                    maximum=spec.get("max"),
                    choices=tuple(spec["choices"]) if "choices" in spec else None,
                    irreversible=bool(spec.get("irreversible", False)),
                )
                for key, spec in document["rules"].items()
            }
        except (tomllib.TOMLDecodeError, KeyError, TypeError) as exc:
            raise RulesFileError(f"the national rules file is malformed: {exc}") from None
        for rule in rules.values():
            try:
                rule.check(rule.value)
            except InvalidInput as exc:
                raise RulesFileError(
                    f"the national default breaks its own bounds: {exc.message}"
                ) from None
        return cls(version=version, rules=rules)

    def check_override(self, values: Mapping[str, Any]) -> dict[str, Any]:
        checked = {}
        for key, value in values.items():
            rule = self.rules.get(key)
            if rule is None:
                raise InvalidInput(
                    f"There is no rule {key}.",
                    details=[{"field": f"rules.{key}", "message": "unknown rule"}],
                )
            checked[key] = rule.check(value)
        return checked

    def irreversible(self, key: str) -> bool:
        rule = self.rules.get(key)
        return rule is not None and rule.irreversible


@dataclass(frozen=True)
class EffectiveRules:
    """The rules in force for one jurisdiction, with the version that names how they came to be."""

    values: Mapping[str, Any]
    version: str
    overridden_by: Mapping[str, str]  # rule key -> jurisdiction code that set it
    book: RuleBook

    def __getitem__(self, key: str) -> Any:
        return self.values[key]

    def int(self, key: str) -> int:
        return int(self.values[key])

    def source(self, key: str) -> str:
        jurisdiction = self.overridden_by.get(key)
        base = self.book.rules[key].source
        return f"{base}; overridden by {jurisdiction}" if jurisdiction else base


def jurisdiction_codes(org_chain: Sequence[Org]) -> list[str]:
    """Province, city and county codes of a case's organisation chain, broadest first."""
    codes: list[str] = []
    city = next((o for o in org_chain if o.kind is OrgKind.CITY), None)
    county = next((o for o in org_chain if o.kind is OrgKind.COUNTY), None)
    # The province has no node of its own: its code is the first two digits of the city's.
    if city is not None and city.code[:2].isdigit():
        codes.append(city.code[:2])
    codes += [o.code for o in (city, county) if o is not None]
    return codes


class RulesService:
    """Effective rules per jurisdiction; overrides are versioned and audited."""

    collections = (RULE_OVERRIDES, RULE_PROPOSALS)

    def __init__(
        self,
        store: Store,
        clock: Clock,
        audit: AuditService,
        orgs: OrgService,
        book: RuleBook,
        cache_seconds: float = 30.0,
    ):
        self._store = store
        self._overrides = store.collection(RULE_OVERRIDES)
        self._proposals = store.collection(RULE_PROPOSALS)
        self._clock = clock
        self._audit = audit
        self._orgs = orgs
        self.book = book
        self._cache: dict[tuple[str, ...], tuple[float, EffectiveRules]] = {}
        self._org_codes: dict[str, tuple[float, list[str]]] = {}
        self._cache_seconds = cache_seconds
        # A burst of first check-ins reads each jurisdiction's overrides and org chain once.
        self._rule_loads: SingleFlight[tuple[str, ...], EffectiveRules] = SingleFlight()
        self._chain_loads: SingleFlight[str, list[str]] = SingleFlight()
        self._generation = 0  # advanced when overrides change

    async def for_codes(self, codes: Sequence[str]) -> EffectiveRules:
        key = tuple(codes)
        cached = self._cache.get(key)
        if cached is not None and time.monotonic() - cached[0] < self._cache_seconds:
            return cached[1]
        return await self._rule_loads.load(key, lambda: self._load_rules(key))

    async def _load_rules(self, codes: tuple[str, ...]) -> EffectiveRules:
        generation = self._generation
        values = {k: rule.value for k, rule in self.book.rules.items()}
        overridden: dict[str, str] = {}
        parts = [self.book.version]
        docs = {d["_id"]: d async for d in self._overrides.find({"_id": {"$in": list(codes)}})}
        for code in codes:  # broadest first, so the narrowest jurisdiction wins
            doc = docs.get(code)
            in_force = _in_force(doc) if doc is not None else {}
            if doc is None or not in_force:
                continue
            for rule_key, value in in_force.items():
                if rule_key in values:
                    values[rule_key] = value
                    overridden[rule_key] = code
            parts.append(f"{code}@{doc['version']}")
        effective = EffectiveRules(values, "+".join(parts), overridden, self.book)
        if generation == self._generation:
            # Not kept when an override was written while it loaded: the next call reads again.
            self._cache[codes] = (time.monotonic(), effective)
        return effective

    async def for_org(self, org_id: str) -> EffectiveRules:
        # The tree above a node changes rarely (a move is an administrator's act): remember
        # each node's jurisdiction codes as long as the rules themselves.
        cached = self._org_codes.get(org_id)
        if cached is not None and time.monotonic() - cached[0] < self._cache_seconds:
            return await self.for_codes(cached[1])
        codes = await self._chain_loads.load(org_id, lambda: self._load_chain(org_id))
        return await self.for_codes(codes)

    async def _load_chain(self, org_id: str) -> list[str]:
        org = await self._orgs.get(org_id)
        chain = [org if node == org.id else await self._orgs.get(node) for node in org.path]
        codes = jurisdiction_codes(chain)
        self._org_codes[org_id] = (time.monotonic(), codes)
        return codes

    async def override(
        self, ctx: AuditContext, code: str, values: Mapping[str, Any], source: str
    ) -> dict[str, Any]:
        """Replace a jurisdiction's overrides (an empty mapping clears them); a new version."""
        if len(code) == 2 and code.isdigit():
            # A province has no node in the tree: only a system administrator sets its rules.
            if not (ctx.identity.unscoped or ctx.identity.role == "sys_admin"):
                raise NotFound("No such jurisdiction.")
        else:
            org = await self._orgs.by_code(code)
            if (
                org is None
                or org.kind not in (OrgKind.CITY, OrgKind.COUNTY)
                or not (ctx.identity.reaches(org.path))
            ):
                raise NotFound("No such jurisdiction.")
        checked = self.book.check_override(values)
        current = await self._overrides.find_one({"_id": code}) or {}
        in_force = _in_force(current)
        changed = sorted(
            key
            for key, value in checked.items()
            if self.book.irreversible(key) and in_force.get(key, _UNSET) != value
        )
        if changed:
            raise Forbidden(
                f"Rule {changed[0]} is irreversible: a county or city officer proposes the change "
                f"(POST /api/v1/rules/{code}/proposals) and the security administrator confirms "
                "it.",
                code="irreversible_rule",
                details=[{"field": f"rules.{key}", "type": "irreversible"} for key in changed],
                message_zh="该规则涉及不可逆操作（如到期销毁），须由县级或市级社区矫正机构提出、"
                "安全管理员确认后才能生效。",
            )
        # A replacement leaves irreversible values as they are: confirmed ones live apart, and
        # one set before confirmations existed is carried over.
        checked = {key: value for key, value in checked.items() if not self.book.irreversible(key)}
        checked |= {
            key: value
            for key, value in (current.get("rules") or {}).items()
            if self.book.irreversible(key)
        }
        async with self._audit.change(
            ctx,
            "rules.override",
            resource="rules",
            resource_id=code,
            reason=source,
            details={"keys": sorted(checked)},
        ):
            doc = await upsert_one(
                self._overrides,
                {"_id": code},
                {
                    "$set": {
                        "rules": checked,
                        "source": source,
                        "updated_at": self._clock.now(),
                        "updated_by": ctx.identity.user_id,
                    },
                    "$inc": {"version": 1},
                },
            )
        self._cache.clear()
        self._generation += 1
        return {
            "code": code,
            "version": doc["version"],
            "rules": _in_force(doc),
            "source": doc["source"],
        }

    async def overrides(self, code: str) -> dict[str, Any] | None:
        doc = await self._overrides.find_one({"_id": code})
        if doc is None:
            return None
        return {
            "code": code,
            "version": doc["version"],
            "rules": _in_force(doc),
            "source": doc.get("source"),
        }

    # --- irreversible rules: proposed by one person, confirmed by another ------------------------

    async def _jurisdiction(self, ctx: AuditContext, code: str) -> Org:
        """A city or county in the caller's scope (a province has no node, so nobody's)."""
        org = await self._orgs.by_code(code)
        if (
            org is None
            or org.kind not in (OrgKind.CITY, OrgKind.COUNTY)
            or not ctx.identity.reaches(org.path)
        ):
            raise NotFound("No such jurisdiction.")
        return org

    async def propose(
        self, ctx: AuditContext, code: str, values: Mapping[str, Any], source: str
    ) -> dict[str, Any]:
        """Propose new values for irreversible rules; nothing changes until confirmed."""
        org = await self._jurisdiction(ctx, code)
        if not values:
            raise InvalidInput(
                "Name at least one rule.", details=[{"field": "rules", "message": "empty"}]
            )
        checked = self.book.check_override(values)
        reversible = sorted(key for key in checked if not self.book.irreversible(key))
        if reversible:
            raise InvalidInput(
                f"Rule {reversible[0]} is not irreversible: set it with PUT /api/v1/rules/{code}.",
                details=[
                    {"field": f"rules.{key}", "message": "not an irreversible rule"}
                    for key in reversible
                ],
            )
        now = self._clock.now()
        doc = {
            "_id": ObjectId(),
            "code": code,
            "org_path": list(org.path),
            "rules": checked,
            "source": source,
            "status": ProposalStatus.PROPOSED,
            "proposed_by": ctx.identity.user_id,
            "proposed_role": ctx.identity.role,
            "proposed_at": now,
            "decided_by": None,
            "decided_at": None,
        }
        async with self._audit.change(
            ctx,
            "rules.propose",
            resource="rule_proposal",
            resource_id=str(doc["_id"]),
            reason=source,
            details={"code": code, "rules": checked},
        ):
            await self._proposals.insert_one(doc)
        return _proposal_view(doc)

    async def proposals(self, ctx: AuditContext, status: str | None) -> list[dict[str, Any]]:
        """Proposals for jurisdictions in the caller's scope, newest first."""
        query: dict[str, Any] = {}
        if not ctx.identity.unscoped:
            query["org_path"] = ctx.identity.org_id
        if status:
            query["status"] = status
        cursor = self._proposals.find(query).sort("proposed_at", -1).limit(200)
        return [_proposal_view(doc) async for doc in cursor]

    async def decide(self, ctx: AuditContext, proposal_id: str, confirm: bool) -> dict[str, Any]:
        """Confirm (the rule changes now) or refuse a proposal: never by whoever proposed it."""
        doc = await self._proposals.find_one({"_id": parse_id(proposal_id, "proposal")})
        if doc is None or not ctx.identity.reaches(doc["org_path"]):
            raise NotFound("No such proposal.")
        if doc["status"] != ProposalStatus.PROPOSED:
            raise Conflict(
                "This proposal was already decided.",
                code="decided",
                details={"status": doc["status"]},
            )
        if ctx.identity.user_id is None or ctx.identity.user_id == doc["proposed_by"]:
            raise Forbidden(
                "Whoever proposed a change cannot confirm or refuse it.",
                code="own_proposal",
                message_zh="提出人不能确认或驳回自己的提议，须由另一名安全管理员处理。",
            )
        status = ProposalStatus.CONFIRMED if confirm else ProposalStatus.REFUSED
        now = self._clock.now()
        async with (
            self._audit.change(
                ctx,
                "rules.confirm" if confirm else "rules.refuse",
                resource="rule_proposal",
                resource_id=proposal_id,
                details={
                    "code": doc["code"],
                    "rules": doc["rules"],
                    "proposed_by": doc["proposed_by"],
                },
            ),
            self._store.transaction() as session,
        ):
            decided = await self._proposals.find_one_and_update(
                {"_id": doc["_id"], "status": ProposalStatus.PROPOSED},
                {"$set": {"status": status, "decided_by": ctx.identity.user_id, "decided_at": now}},
                return_document=ReturnDocument.AFTER,
                session=session,
            )
            if decided is None:
                raise Conflict("This proposal was already decided.", code="decided")
            if confirm:
                current = await self._overrides.find_one({"_id": doc["code"]}, session=session)
                confirmed = {**((current or {}).get("confirmed") or {}), **doc["rules"]}
                await self._overrides.update_one(
                    {"_id": doc["code"]},
                    {
                        "$set": {
                            "confirmed": confirmed,
                            "updated_at": now,
                            "updated_by": ctx.identity.user_id,
                        },
                        "$setOnInsert": {"rules": {}, "source": doc["source"]},
                        "$inc": {"version": 1},
                    },
                    upsert=True,
                    session=session,
                )
        self._cache.clear()
        self._generation += 1
        return _proposal_view(decided)


_UNSET = object()


def _in_force(doc: Mapping[str, Any]) -> dict[str, Any]:
    """A jurisdiction's overrides: the replaceable ones, then the confirmed irreversible ones."""
    return {**(doc.get("rules") or {}), **(doc.get("confirmed") or {})}


def _proposal_view(doc: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "id": str(doc["_id"]),
        "code": doc["code"],
        "rules": doc["rules"],
        "source": doc["source"],
        "status": doc["status"],
        "proposed_by": doc["proposed_by"],
        "proposed_at": doc["proposed_at"],
        "decided_by": doc.get("decided_by"),
        "decided_at": doc.get("decided_at"),
    }

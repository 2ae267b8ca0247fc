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

from models.audit import AuditContext, AuditService
from models.clock import Clock
from models.errors import InvalidInput, NotFound
from models.orgs import Org, OrgKind, OrgService
from models.store import CollectionSpec, Store, upsert_one

RULE_OVERRIDES = CollectionSpec("rule_overrides")


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
        if self.choices is not None and value not in self.choices:
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

    collections = (RULE_OVERRIDES,)

    def __init__(
        self,
        store: Store,
        clock: Clock,
        audit: AuditService,
        orgs: OrgService,
        book: RuleBook,
        cache_seconds: float = 30.0,
    ):
        self._overrides = store.collection(RULE_OVERRIDES)
        self._clock = clock
        self._audit = audit
        self._orgs = orgs
        self.book = book
        self._cache: dict[tuple[str, ...], tuple[float, EffectiveRules]] = {}
        self._org_codes: dict[str, tuple[float, list[str]]] = {}
        self._cache_seconds = cache_seconds

    async def for_codes(self, codes: Sequence[str]) -> EffectiveRules:
        key = tuple(codes)
        cached = self._cache.get(key)
        if cached is not None and time.monotonic() - cached[0] < self._cache_seconds:
            return cached[1]
        values = {k: rule.value for k, rule in self.book.rules.items()}
        overridden: dict[str, str] = {}
        parts = [self.book.version]
        docs = {d["_id"]: d async for d in self._overrides.find({"_id": {"$in": list(codes)}})}
        for code in codes:  # broadest first, so the narrowest jurisdiction wins
            doc = docs.get(code)
            if doc is None or not doc.get("rules"):
                continue
            for rule_key, value in doc["rules"].items():
                if rule_key in values:
                    values[rule_key] = value
                    overridden[rule_key] = code
            parts.append(f"{code}@{doc['version']}")
        effective = EffectiveRules(values, "+".join(parts), overridden, self.book)
        self._cache[key] = (time.monotonic(), effective)
        return effective

    async def for_org(self, org_id: str) -> EffectiveRules:
        # The tree above a node changes rarely (a move is an administrator's act): remember
        # each node's jurisdiction codes as long as the rules themselves.
        cached = self._org_codes.get(org_id)
        if cached is not None and time.monotonic() - cached[0] < self._cache_seconds:
            return await self.for_codes(cached[1])
        org = await self._orgs.get(org_id)
        chain = [await self._orgs.get(node) for node in org.path]
        codes = jurisdiction_codes(chain)
        self._org_codes[org_id] = (time.monotonic(), codes)
        return await self.for_codes(codes)

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
        return {
            "code": code,
            "version": doc["version"],
            "rules": doc["rules"],
            "source": doc["source"],
        }

    async def overrides(self, code: str) -> dict[str, Any] | None:
        doc = await self._overrides.find_one({"_id": code})
        if doc is None:
            return None
        return {
            "code": code,
            "version": doc["version"],
            "rules": doc["rules"],
            "source": doc.get("source"),
        }

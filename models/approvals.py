"""Approval chains: the levels that act on a decision, in order, each step recorded.

Which levels act is data: a rule names them in order (`"station>county"`), the first reviewing
(初审) and the last deciding, so a jurisdiction changes who decides by overriding the rule. A
caller acts only at its own step (its role's level, within the record's subtree); a rejection at
any step ends the chain; it is approved only when its last step approves.
"""

from __future__ import annotations

import datetime as dt
import enum
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from bson import ObjectId
from pymongo import ReturnDocument
from pymongo.asynchronous.collection import AsyncCollection

from models.audit import AuditContext, AuditService
from models.codec import FieldCodec
from models.errors import Conflict, Forbidden
from models.identity import Identity
from models.policy import Role
from models.rules import EffectiveRules


class Level(enum.StrEnum):
    STATION = "station"
    COUNTY = "county"
    CITY = "city"


class ApprovalStatus(enum.StrEnum):
    PENDING = "pending"
    APPROVED = "approved"
    REJECTED = "rejected"


# The level at which each officer role acts; other roles act at no step.
LEVEL_OF_ROLE: Mapping[str, Level] = {
    Role.STATION_OFFICER: Level.STATION,
    Role.COUNTY_OFFICER: Level.COUNTY,
    Role.CITY_OFFICER: Level.CITY,
}


def levels_from_rule(rules: EffectiveRules, key: str) -> tuple[Level, ...]:
    """The chain a rule names: `"station>county>city"`; the rule's choices keep it well-formed."""
    return tuple(Level(part.strip()) for part in str(rules[key]).split(">"))


@dataclass
class ApprovalChain:
    """One decision's chain: its levels, the rule that chose them and the steps taken so far."""

    levels: tuple[Level, ...]
    rule: str
    rules_version: str
    steps: list[dict[str, Any]] = field(default_factory=list)

    @classmethod
    def from_rules(cls, rules: EffectiveRules, key: str) -> ApprovalChain:
        return cls(levels_from_rule(rules, key), key, rules.version)

    @classmethod
    def from_doc(cls, doc: Mapping[str, Any]) -> ApprovalChain:
        return cls(
            levels=tuple(Level(level) for level in doc["levels"]),
            rule=doc["rule"],
            rules_version=doc["rules_version"],
            steps=[dict(step) for step in doc.get("steps", [])],
        )

    def as_doc(self) -> dict[str, Any]:
        return {
            "levels": [str(level) for level in self.levels],
            "rule": self.rule,
            "rules_version": self.rules_version,
            "steps": list(self.steps),
        }

    @property
    def status(self) -> ApprovalStatus:
        if any(not step["approve"] for step in self.steps):
            return ApprovalStatus.REJECTED
        if len(self.steps) >= len(self.levels):
            return ApprovalStatus.APPROVED
        return ApprovalStatus.PENDING

    @property
    def next_level(self) -> Level | None:
        """The level that acts next; None once the chain is finished."""
        if self.status is not ApprovalStatus.PENDING:
            return None
        return self.levels[len(self.steps)]

    def step(
        self,
        identity: Identity,
        record_path: Sequence[str],
        approve: bool,
        comment: str,
        at: dt.datetime,
        rules_version: str,
    ) -> dict[str, Any]:
        """The caller's step, checked: 409 on a finished chain, 403 when it is not the caller's
        turn (another level acts next, or the record lies outside the caller's subtree)."""
        status = self.status
        if status is not ApprovalStatus.PENDING:
            raise Conflict(
                f"This decision was already made: {status}.",
                code="already_decided",
                details={"status": str(status)},
            )
        expected = self.next_level
        level = LEVEL_OF_ROLE.get(identity.role or "")
        if level is not expected or not identity.reaches(record_path):
            raise Forbidden(
                f"The {expected} level acts next.",
                code="not_your_step",
                details={"next_level": str(expected)},
            )
        return {
            "level": str(level),
            "approve": approve,
            "comment": comment,
            "by": identity.user_id,
            "at": at,
            "rules_version": rules_version,
        }

    def view(self) -> dict[str, Any]:
        """The chain as answers show it: status, levels, steps and who acts next."""
        return {
            "status": str(self.status),
            "levels": [str(level) for level in self.levels],
            "rule": self.rule,
            "steps": [
                {**step, "at": step["at"].isoformat()}
                if isinstance(step.get("at"), dt.datetime)
                else dict(step)
                for step in self.steps
            ],
            "next_level": str(self.next_level) if self.next_level else None,
        }


# A step's comment is free text about the person: it rests sealed under the person's data key
# in the record's `comments` container (where key rotation re-seals it), and the step keeps
# only its id. Steps written by older releases carry their comment in the clear.
COMMENTS = "comments"


async def open_steps(
    codec: FieldCodec, collection: str, doc: Mapping[str, Any], steps: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    """The chain's steps as answers show them, each sealed comment opened."""
    sealed = doc.get(COMMENTS) or {}
    opened = []
    for step in steps:
        step = dict(step)
        comment_id = step.pop("comment_id", None)
        if comment_id is not None:
            step["comment"] = await codec.open(
                collection, str(doc["_id"]), comment_id, sealed[comment_id]
            )
        opened.append(step)
    return opened


async def record_step(
    collection: AsyncCollection,
    audit: AuditService,
    ctx: AuditContext,
    doc: Mapping[str, Any],
    step: dict[str, Any],
    *,
    action: str,
    resource: str,
    codec: FieldCodec,
    key_id: str | None,
    when_final: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Append `step` to the chain of `doc` (stored under `approval`), audited before the write,
    and set the document's `status` to the chain's. The write names how many steps it expects,
    so of two officers deciding at once only one succeeds; the other gets 409 with the state.
    `when_final` is set too when this step finishes the chain (a decision time, say). The
    step's comment is sealed with the person's data key (`key_id`, the file's current one)."""
    sealed_comment: dict[str, Any] = {}
    if step.get("comment"):
        comment_id = f"step_{ObjectId()}"
        sealed_comment[f"{COMMENTS}.{comment_id}"] = await codec.seal(
            doc["subject_id"], key_id, collection.name, str(doc["_id"]), comment_id, step["comment"]
        )
        step = {k: v for k, v in step.items() if k != "comment"} | {"comment_id": comment_id}
    chain = ApprovalChain.from_doc(doc["approval"])
    taken = len(chain.steps)
    chain.steps.append(step)
    status = chain.status
    final = dict(when_final or {}) if status is not ApprovalStatus.PENDING else {}
    async with audit.change(
        ctx,
        action,
        resource=resource,
        resource_id=str(doc["_id"]),
        subject_id=doc.get("subject_id"),
        details={
            "level": step["level"],
            "approve": step["approve"],
            "status": str(status),
            "rule": chain.rule,
            "rules_version": step["rules_version"],
        },
    ):
        updated = await collection.find_one_and_update(
            {"_id": doc["_id"], "approval.steps": {"$size": taken}},
            {
                "$push": {"approval.steps": step},
                "$set": {
                    "status": str(status),
                    "updated_at": step["at"],
                    **final,
                    **sealed_comment,
                },
                "$inc": {"version": 1},
            },
            return_document=ReturnDocument.AFTER,
        )
        if updated is None:
            fresh = await collection.find_one({"_id": doc["_id"]})
            raise Conflict(
                "The decision changed meanwhile.",
                code="already_decided",
                details={"status": fresh["status"] if fresh else None},
            )
    return updated

"""Consents of mini-program users: the privacy notice they accepted (its version), and which
subscribe-message templates they allow. A one-time acceptance allows exactly one message; a
long-term subscription (where the account's category has it) allows messages until revoked."""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass, field
from typing import Any

from pymongo import ReturnDocument

from models.audit import AuditContext, AuditService
from models.clock import Clock
from models.errors import InvalidInput
from models.store import CollectionSpec, Store, still_there, upsert_one

CONSENTS = CollectionSpec("consents")
MAX_TEMPLATES = 20
# A template id as WeChat issues them (letters, digits, `-`, `_`). Each becomes a field name in
# the person's consent record: a `.` there would nest a document the counts are read from, a `$`
# would be refused by the database, a lone surrogate cannot be stored at all.
TEMPLATE_ID_PATTERN = r"^[A-Za-z0-9_-]{1,128}$"
TEMPLATE_ID = re.compile(TEMPLATE_ID_PATTERN)
# A one-time acceptance a user repeats (tapping "allow" each time) is counted, up to a bound.
MAX_ONE_TIME = 50


@dataclass
class ConsentState:
    privacy_notice_version: str | None = None
    privacy_notice_at: dt.datetime | None = None
    one_time: dict[str, int] = field(default_factory=dict)
    long_term: list[str] = field(default_factory=list)
    refused: list[str] = field(default_factory=list)


class ConsentService:
    collections = (CONSENTS,)

    def __init__(self, store: Store, clock: Clock, audit: AuditService):
        self._consents = store.collection(CONSENTS)
        self._clock = clock
        self._audit = audit

    async def accept_privacy_notice(self, ctx: AuditContext, user_id: str, version: str) -> None:
        version = version.strip()
        if not version:
            raise InvalidInput(
                "Name the notice version.", details=[{"field": "privacy_notice_version"}]
            )
        async with self._audit.change(
            ctx,
            "consents.privacy_notice",
            resource="wechat_user",
            resource_id=user_id,
            subject_id=ctx.identity.subject_id,
            details={"version": version},
        ):
            await self._consents.update_one(
                {"_id": user_id},
                {
                    "$set": {
                        "privacy_notice_version": version,
                        "privacy_notice_at": self._clock.now(),
                    }
                },
                upsert=True,
            )

    async def accept_templates(
        self, ctx: AuditContext | None, user_id: str, template_ids: list[str], *, long_term: bool
    ) -> ConsentState:
        """Record acceptances (from `wx.requestSubscribeMessage` through the API, or from a
        WeChat push event): one-time ones add one allowed message each."""
        ids = _checked(template_ids)
        if not ids or len(ids) > MAX_TEMPLATES:
            raise InvalidInput(
                f"Name 1 to {MAX_TEMPLATES} templates.",
                details=[{"field": "template_ids"}],
                message_zh=f"请选择 1 至 {MAX_TEMPLATES} 个消息模板。",
            )
        change: dict[str, Any] = {"$pull": {"refused": {"$in": ids}}}
        if long_term:
            change["$addToSet"] = {"long_term": {"$each": ids}}
        else:
            change["$inc"] = {f"one_time.{t}": 1 for t in ids}
        if ctx is not None:
            await self._audit.record(
                ctx,
                "consents.subscribe",
                resource="wechat_user",
                resource_id=user_id,
                subject_id=ctx.identity.subject_id,
                details={"templates": ids, "long_term": long_term},
            )
        doc = await upsert_one(self._consents, {"_id": user_id}, change)
        # Bound the count: repeated taps must not bank an unlimited supply of messages.
        over = {t: MAX_ONE_TIME for t, n in (doc.get("one_time") or {}).items() if n > MAX_ONE_TIME}
        if over:
            doc = still_there(
                await self._consents.find_one_and_update(
                    {"_id": user_id},
                    {"$set": {f"one_time.{t}": n for t, n in over.items()}},
                    return_document=ReturnDocument.AFTER,
                )
            )
        return _state(doc)

    async def refuse_templates(self, user_id: str, template_ids: list[str]) -> None:
        """The user refused or revoked (a push event): nothing more is sent on these."""
        ids = _checked(template_ids)
        if not ids:
            return
        await self._consents.update_one(
            {"_id": user_id},
            {
                "$addToSet": {"refused": {"$each": ids}},
                "$pull": {"long_term": {"$in": ids}},
                "$unset": {f"one_time.{t}": "" for t in ids},
            },
            upsert=True,
        )

    async def consume(self, user_id: str, template_id: str) -> bool:
        """Use up one allowed message on `template_id` (a long-term subscription is not used
        up); False when the user has not allowed one."""
        _checked([template_id])
        doc = await self._consents.find_one(
            {"_id": user_id}, {"long_term": 1, "refused": 1, f"one_time.{template_id}": 1}
        )
        if doc is None or template_id in (doc.get("refused") or []):
            return False
        if template_id in (doc.get("long_term") or []):
            return True
        taken = await self._consents.find_one_and_update(
            {"_id": user_id, f"one_time.{template_id}": {"$gte": 1}},
            {"$inc": {f"one_time.{template_id}": -1}},
        )
        return taken is not None

    async def restore(self, user_id: str, template_id: str) -> None:
        """Give back a one-time allowance whose message WeChat did not deliver."""
        _checked([template_id])
        await self._consents.update_one(
            {"_id": user_id, "long_term": {"$ne": template_id}},
            {"$inc": {f"one_time.{template_id}": 1}},
        )

    async def state(self, user_id: str) -> ConsentState:
        return _state(await self._consents.find_one({"_id": user_id}))


def _state(doc: dict[str, Any] | None) -> ConsentState:
    if doc is None:
        return ConsentState()
    return ConsentState(
        privacy_notice_version=doc.get("privacy_notice_version"),
        privacy_notice_at=doc.get("privacy_notice_at"),
        one_time={k: int(v) for k, v in (doc.get("one_time") or {}).items() if v > 0},
        long_term=list(doc.get("long_term") or []),
        refused=list(doc.get("refused") or []),
    )


def _checked(template_ids: list[str]) -> list[str]:
    """The distinct ids, each of WeChat's form (else InvalidInput naming `template_ids`)."""
    ids = sorted(set(template_ids))
    for template_id in ids:
        if not TEMPLATE_ID.fullmatch(template_id):
            raise InvalidInput(
                "A template id is letters, digits, '-' and '_' (at most 128).",
                details=[{"field": "template_ids"}],
                message_zh="消息模板编号无效。",
            )
    return ids

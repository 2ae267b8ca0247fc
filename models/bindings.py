"""Binding codes: single-use, short-lived codes that tie a WeChat account to a person."""

from __future__ import annotations

import datetime as dt
import hashlib
import secrets
from dataclasses import dataclass
from typing import Any

from pymongo import ASCENDING, IndexModel

from models.audit import AuditContext, AuditService
from models.clock import Clock
from models.errors import Forbidden
from models.store import CollectionSpec, Store

BINDING_CODES = CollectionSpec(
    "binding_codes",
    (
        IndexModel([("expires_at", ASCENDING)], expireAfterSeconds=0),
        IndexModel([("target_id", ASCENDING), ("purpose", ASCENDING)]),
    ),
)

# Read aloud or typed on a phone: no 0/O, 1/I/L look-alikes.
ALPHABET = "23456789ABCDEFGHJKMNPQRSTUVWXYZ"
CODE_LENGTH = 8
STAFF_CODE_LIFETIME = dt.timedelta(minutes=10)
# Handed over in person at intake or a visit and typed in there and then.
SUBJECT_CODE_LIFETIME = dt.timedelta(hours=1)


@dataclass(frozen=True)
class IssuedCode:
    code: str
    expires_at: dt.datetime


def code_hash(code: str) -> str:
    return hashlib.sha256(code.strip().upper().encode("ascii", "ignore")).hexdigest()


class BindingCodeService:
    collections = (BINDING_CODES,)

    def __init__(self, store: Store, clock: Clock, audit: AuditService):
        self._codes = store.collection(BINDING_CODES)
        self._clock = clock
        self._audit = audit

    async def issue_for_staff(self, ctx: AuditContext) -> IssuedCode:
        """A code for the caller's own WeChat; only from a password (and TOTP) session."""
        identity = ctx.identity
        if identity.channel != "staff" or identity.restricted:
            raise Forbidden("A binding code needs a full password session.")
        assert identity.user_id is not None
        return await self._issue(ctx, "staff", identity.user_id, STAFF_CODE_LIFETIME)

    async def issue_for_subject(
        self, ctx: AuditContext, subject_id: str, purpose: str
    ) -> IssuedCode:
        """A code for the person (or their guardian) to bind their WeChat; the caller has
        been checked against the case file already."""
        if purpose not in ("subject", "guardian"):
            raise ValueError(purpose)
        return await self._issue(ctx, purpose, subject_id, SUBJECT_CODE_LIFETIME)

    async def _issue(
        self, ctx: AuditContext, purpose: str, target_id: str, lifetime: dt.timedelta
    ) -> IssuedCode:
        code = "".join(secrets.choice(ALPHABET) for _ in range(CODE_LENGTH))
        now = self._clock.now()
        expires_at = now + lifetime
        async with self._audit.change(
            ctx,
            "binding_code.issue",
            resource="staff" if purpose == "staff" else "subject",
            resource_id=target_id,
            subject_id=None if purpose == "staff" else target_id,
            details={"purpose": purpose},
        ):
            # A new code replaces any unused one: only the latest works.
            await self._codes.delete_many({"target_id": target_id, "purpose": purpose})
            await self._codes.insert_one(
                {
                    "_id": code_hash(code),
                    "purpose": purpose,
                    "target_id": target_id,
                    "issued_by": ctx.identity.user_id,
                    "created_at": now,
                    "expires_at": expires_at,
                }
            )
        return IssuedCode(code=code, expires_at=expires_at)

    async def redeem(self, code: str) -> dict[str, Any] | None:
        """Use a code up: the one caller that deletes it gets it (a code works once)."""
        if not code or len(code) > 32:
            return None
        doc = await self._codes.find_one_and_delete({"_id": code_hash(code)})
        if doc is None or doc["expires_at"] <= self._clock.now():
            return None
        return dict(doc)

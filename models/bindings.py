"""Binding codes: single-use, short-lived codes that tie a WeChat account to a person."""

from __future__ import annotations

import datetime as dt
import hashlib
import secrets
from dataclasses import dataclass

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
        code = "".join(secrets.choice(ALPHABET) for _ in range(CODE_LENGTH))
        now = self._clock.now()
        expires_at = now + STAFF_CODE_LIFETIME
        async with self._audit.change(
            ctx, "binding_code.issue", resource="staff", resource_id=identity.user_id
        ):
            # A new code replaces any unused one: only the latest works.
            await self._codes.delete_many({"target_id": identity.user_id, "purpose": "staff"})
            await self._codes.insert_one(
                {
                    "_id": code_hash(code),
                    "purpose": "staff",
                    "target_id": identity.user_id,
                    "issued_by": identity.user_id,
                    "created_at": now,
                    "expires_at": expires_at,
                }
            )
        return IssuedCode(code=code, expires_at=expires_at)

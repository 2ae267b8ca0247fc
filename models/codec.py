"""The field codec: encrypts case fields with the subject's data key and computes blind indexes."""

from __future__ import annotations

import logging
from typing import Any

from bson import Binary

from models.crypto import CryptoError, Sealed, field_aad, keyed_hash, open_value, seal_value
from models.errors import DomainError
from models.keys import KeyShredded, KeyUnknown, KeyVault

log = logging.getLogger("anbang.crypto")

SECRETS_KEY_ID = "secrets"


def trail_key_id(subject_id: str) -> str:
    """A person's key for copies that are never rewritten (audit entries, stored answers):
    key rotation cannot re-seal an entry of the audit chain, so these copies keep a key of
    their own, which crypto-shredding destroys with the person's other keys."""
    return f"dek:{subject_id}:trail"


class IntegrityError(DomainError):
    """A stored ciphertext failed authentication: tampered with, or moved from elsewhere."""

    code = "integrity_error"
    default_message = "This record failed its integrity check; the incident has been logged."


class Shredded(DomainError):
    """The record's data key was destroyed at the end of retention."""

    code = "shredded"
    default_message = "This record was erased at the end of its retention period."


class FieldCodec:
    """Seal and open one field at a time; every ciphertext is bound to collection, id and field."""

    def __init__(self, vault: KeyVault):
        self._vault = vault

    async def seal(
        self,
        subject_id: str,
        key_id: str | None,
        collection: str,
        document_id: str,
        field: str,
        value: Any,
    ) -> Binary:
        key = await self._vault.data_key(subject_id, key_id)
        aad = field_aad(collection, document_id, field)
        return Binary(seal_value(key.suite, key.key_id, key.key, value, aad))

    async def carried_key(self, subject_id: str, key_id: str | None) -> dict[str, Any] | None:
        """The person's data key as stored (still wrapped), to carry in a read model."""
        return await self._vault.wrapped(key_id or f"dek:{subject_id}")

    def adopt_key(self, carried: dict[str, Any] | None) -> None:
        """Unwrap a carried data key ahead of the writes that need it (no read if it opens)."""
        if carried is not None:
            self._vault.adopt(carried)

    async def seal_secret(
        self, collection: str, document_id: str, field: str, value: Any
    ) -> Binary:
        """Seal a system secret (a TOTP seed, a session key) under the vault's secrets key."""
        key = await self._vault.get_or_create(SECRETS_KEY_ID, "secret")
        aad = field_aad(collection, document_id, field)
        return Binary(seal_value(self._vault.suite, SECRETS_KEY_ID, key, value, aad))

    async def open(self, collection: str, document_id: str, field: str, blob: bytes) -> Any:
        try:
            sealed = Sealed.from_bytes(bytes(blob))
            key = await self._vault.get(sealed.key_id)
            return open_value(sealed, key, field_aad(collection, document_id, field))
        except KeyShredded:
            raise Shredded() from None
        except (CryptoError, KeyUnknown):
            # Logged by place only: never the value, which may be someone's data.
            log.error(
                "ciphertext failed authentication",
                extra={
                    "fields": {"collection": collection, "document_id": document_id, "field": field}
                },
            )
            raise IntegrityError() from None

    async def open_text(
        self, collection: str, document_id: str, field: str, value: Any
    ) -> str | None:
        """A free text that may be sealed or, written by an older release, still plain."""
        if value is None or isinstance(value, str):
            return value
        return str(await self.open(collection, document_id, field, value))

    async def open_fields(
        self, collection: str, document_id: str, sealed: dict[str, Any]
    ) -> dict[str, Any]:
        return {
            name: await self.open(collection, document_id, name, blob)
            for name, blob in sealed.items()
            if blob is not None
        }

    async def blind_index(self, kind: str, normalised: str) -> str:
        """An exact-match search token: HMAC under a key kept only for this kind of value."""
        key = await self._vault.get_or_create(f"bi:{kind}", "blind_index")
        return keyed_hash(self._vault.suite, key, normalised.encode("utf-8")).hex()

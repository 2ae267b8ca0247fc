"""Key rotation's reach beyond the case file: every record sealed with a person's data key,
in whichever service's collection, re-sealed under the new key; attachments copied under it."""

from __future__ import annotations

from collections.abc import Iterable

from models.attachments import AttachmentService
from models.codec import FieldCodec
from models.crypto import CryptoError, Sealed
from models.store import Store


class Resealer:
    """Knows where sealed fields live (services declare `sealed_fields`: a collection and the
    sub-document holding them, or None for top-level fields) and re-seals them, record by
    record, for one person at a time."""

    def __init__(
        self,
        store: Store,
        codec: FieldCodec,
        attachments: AttachmentService,
        locations: Iterable[tuple[str, str | None]] = (),
    ):
        self._store = store
        self._codec = codec
        self._attachments = attachments
        self._locations: list[tuple[str, str | None]] = list(locations)

    def add_locations(self, locations: Iterable[tuple[str, str | None]]) -> None:
        self._locations.extend(locations)

    async def reseal(self, subject_id: str, new_key_id: str) -> None:
        """Every sealed field of the person's records, in every declared location, under the
        new key (fields already under it are left alone, so a retried rotation is safe)."""
        for collection, container in self._locations:
            await self._reseal(collection, container, subject_id, new_key_id)

    async def _reseal(
        self, collection: str, container: str | None, subject_id: str, new_key_id: str
    ) -> None:
        documents = self._store.collection(collection)
        async for doc in documents.find({"subject_id": subject_id}):
            document_id = str(doc["_id"])
            fields = (doc.get(container) or {}) if container else doc
            changes = {}
            for name, value in fields.items():
                if not isinstance(value, bytes) or not value.startswith(b"\x01"):
                    continue
                try:
                    sealed = Sealed.from_bytes(bytes(value))
                except CryptoError:
                    continue
                if not sealed.key_id.startswith(f"dek:{subject_id}") or (
                    sealed.key_id == new_key_id
                ):
                    continue
                plain = await self._codec.open(collection, document_id, name, value)
                path = f"{container}.{name}" if container else name
                changes[path] = await self._codec.seal(
                    subject_id, new_key_id, collection, document_id, name, plain
                )
            if changes:
                await documents.update_one({"_id": doc["_id"]}, {"$set": changes})

    async def reencrypt_attachment(
        self, subject_id: str, attachment_id: str, new_key_id: str
    ) -> str:
        """A copy under the new key, streamed record by record; the old file is deleted."""
        info = await self._attachments.info(attachment_id)
        if info is None:
            return attachment_id
        writer = self._attachments.writer(
            subject_id, new_key_id, info.content_type, max(info.size, 1) * 2
        )
        async for chunk in self._attachments.read(attachment_id):
            await writer.write(chunk)
        copy = await writer.finish()
        await self._attachments.delete(attachment_id)
        return copy.id

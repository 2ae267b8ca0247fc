"""Attachments (photos, scans): encrypted with the subject's data key before they reach GridFS.

A file is stored as a sequence of sealed records of at most 64 KiB of plaintext each, every record
bound to the attachment, its position and whether it is the last one, so records cannot be
reordered, swapped between files or cut off at the end. Writing and reading stream record by
record: memory stays bounded whatever the file's size.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import struct
from collections.abc import AsyncIterator
from dataclasses import dataclass

from bson import Binary, ObjectId
from gridfs import DEFAULT_CHUNK_SIZE, AsyncGridFSBucket, AsyncGridIn, NoFile
from pymongo import ASCENDING, IndexModel

from models.codec import IntegrityError, Shredded
from models.crypto import CryptoError, Sealed, open_bytes, seal_bytes
from models.keys import DataKey, KeyShredded, KeyUnknown, KeyVault
from models.store import CollectionSpec, Store, Write

# GridFS's own indexes, made with the others at start-up rather than checked at every upload.
ATTACHMENT_FILES = CollectionSpec(
    "attachments.files", (IndexModel([("filename", ASCENDING), ("uploadDate", ASCENDING)]),)
)
ATTACHMENT_CHUNKS = CollectionSpec(
    "attachments.chunks",
    (IndexModel([("files_id", ASCENDING), ("n", ASCENDING)], unique=True),),
)
RECORD_PLAINTEXT = 64 * 1024
_LENGTH = struct.Struct(">I")
MAX_RECORD = RECORD_PLAINTEXT + 1024  # a record's plaintext plus header, nonce and tag


def _aad(attachment_id: str, index: int, final: bool) -> bytes:
    return f"anbang/attachment/v1\x00{attachment_id}\x00{index}\x00{int(final)}".encode()


@dataclass(frozen=True)
class AttachmentInfo:
    id: str
    subject_id: str
    content_type: str
    size: int


def _record(key: DataKey, attachment_id: str, index: int, plaintext: bytes, final: bool) -> bytes:
    """One stored record: its length, then the plaintext sealed and bound to its place."""
    aad = _aad(attachment_id, index, final)
    sealed = seal_bytes(key.suite, key.key_id, key.key, plaintext, aad)
    return _LENGTH.pack(len(sealed)) + sealed


class AttachmentWriter:
    """Takes plaintext as it arrives; seals and stores each full record at once."""

    def __init__(
        self,
        bucket: AsyncGridFSBucket,
        vault: KeyVault,
        subject_id: str,
        key_id: str | None,
        content_type: str,
        max_bytes: int,
    ):
        self._bucket = bucket
        self._vault = vault
        self.subject_id = subject_id
        self._key_id = key_id
        self.content_type = content_type
        self.max_bytes = max_bytes
        self.id = str(ObjectId())
        self._buffer = bytearray()
        self._index = 0
        self.size = 0
        self._stream: AsyncGridIn | None = None

    async def _start(self) -> None:
        if self._stream is None:
            self._stream = self._bucket.open_upload_stream_with_id(
                ObjectId(self.id),
                f"{self.id}.bin",
                metadata={
                    "subject_id": self.subject_id,
                    "content_type": self.content_type,
                    "format": "sealed-records-v1",
                },
            )
            # A new GridFS stream reads the first document of both collections to decide whether
            # to create its indexes: two round trips per photo, and on the embedded database a
            # read of every stored chunk (it materialises a whole collection for a limit of 1).
            # The indexes exist (ATTACHMENT_FILES, ATTACHMENT_CHUNKS), so the stream is told so.
            object.__setattr__(self._stream, "_ensured_index", True)

    async def write(self, data: bytes) -> None:
        self.size += len(data)
        if self.size > self.max_bytes:
            raise ValueError("attachment too large")
        self._buffer.extend(data)
        while len(self._buffer) > RECORD_PLAINTEXT:
            record = bytes(self._buffer[:RECORD_PLAINTEXT])
            del self._buffer[:RECORD_PLAINTEXT]
            await self._seal(record, final=False)

    async def _seal(self, plaintext: bytes, final: bool) -> None:
        await self._start()
        key = await self._vault.data_key(self.subject_id, self._key_id)
        assert self._stream is not None
        await self._stream.write(_record(key, self.id, self._index, plaintext, final))
        self._index += 1

    async def finish(self) -> AttachmentInfo:
        await self._seal(bytes(self._buffer), final=True)
        self._buffer.clear()
        assert self._stream is not None
        await self._stream.close()
        return AttachmentInfo(self.id, self.subject_id, self.content_type, self.size)

    async def abort(self) -> None:
        if self._stream is not None:
            await self._stream.abort()


class AttachmentService:
    collections = (ATTACHMENT_FILES, ATTACHMENT_CHUNKS)

    def __init__(self, store: Store, vault: KeyVault):
        self._bucket = AsyncGridFSBucket(store.database, bucket_name="attachments")
        self._files = store.collection(ATTACHMENT_FILES)
        self._vault = vault

    async def sealed_whole(
        self, subject_id: str, key_id: str | None, content_type: str, data: bytes, now: dt.datetime
    ) -> tuple[AttachmentInfo, list[Write]]:
        """A small file (a photo) sealed in memory, as the GridFS documents a stream would have
        written (chunks, then the file last, as GridFS does), for the caller's ordered batch:
        the same records as `writer` makes, in one round trip with the audit entry."""
        attachment_id = ObjectId()
        key = await self._vault.data_key(subject_id, key_id)
        pieces = [data[i : i + RECORD_PLAINTEXT] for i in range(0, len(data), RECORD_PLAINTEXT)]
        pieces = pieces or [b""]
        stream = b"".join(
            _record(key, str(attachment_id), index, piece, index == len(pieces) - 1)
            for index, piece in enumerate(pieces)
        )
        writes = [
            Write(
                ATTACHMENT_CHUNKS.name,
                {
                    "_id": ObjectId(),
                    "files_id": attachment_id,
                    "n": n,
                    "data": Binary(stream[start : start + DEFAULT_CHUNK_SIZE]),
                },
            )
            for n, start in enumerate(range(0, len(stream), DEFAULT_CHUNK_SIZE))
        ]
        writes.append(
            Write(
                ATTACHMENT_FILES.name,
                {
                    "_id": attachment_id,
                    "length": len(stream),
                    "chunkSize": DEFAULT_CHUNK_SIZE,
                    "uploadDate": now.astimezone(dt.UTC).replace(
                        microsecond=now.microsecond // 1000 * 1000
                    ),
                    "filename": f"{attachment_id}.bin",
                    "metadata": {
                        "subject_id": subject_id,
                        "content_type": content_type,
                        "format": "sealed-records-v1",
                    },
                },
            )
        )
        info = AttachmentInfo(str(attachment_id), subject_id, content_type, len(data))
        return info, writes

    def writer(
        self, subject_id: str, key_id: str | None, content_type: str, max_bytes: int
    ) -> AttachmentWriter:
        return AttachmentWriter(
            self._bucket, self._vault, subject_id, key_id, content_type, max_bytes
        )

    async def ids_for(self, subject_id: str) -> list[str]:
        """Every attachment stored for a person (photos, check-in photos)."""
        cursor = self._files.find({"metadata.subject_id": subject_id}, {"_id": 1})
        return [str(doc["_id"]) async for doc in cursor]

    async def info(self, attachment_id: str) -> AttachmentInfo | None:
        doc = await self._files.find_one({"_id": ObjectId(attachment_id)})
        if doc is None:
            return None
        meta = doc.get("metadata") or {}
        return AttachmentInfo(
            attachment_id,
            meta.get("subject_id", ""),
            meta.get("content_type", "application/octet-stream"),
            int(doc.get("length", 0)),
        )

    async def read(self, attachment_id: str) -> AsyncIterator[bytes]:
        """The plaintext, record by record; IntegrityError when anything was tampered with."""
        try:
            stream = await self._bucket.open_download_stream(ObjectId(attachment_id))
        except NoFile:
            raise IntegrityError("The attachment is missing.") from None
        total, consumed, index = stream.length, 0, 0
        while consumed < total:
            header = await stream.read(_LENGTH.size)
            if len(header) < _LENGTH.size:
                raise IntegrityError()
            (length,) = _LENGTH.unpack(header)
            if length > MAX_RECORD:
                raise IntegrityError()
            raw = await stream.read(length)
            if len(raw) < length:
                raise IntegrityError()
            consumed += _LENGTH.size + length
            # The last record was sealed as the last: a file cut short fails here.
            aad = _aad(attachment_id, index, final=consumed == total)
            try:
                sealed = Sealed.from_bytes(raw)
                plaintext = open_bytes(sealed, await self._vault.get(sealed.key_id), aad)
            except KeyShredded:
                raise Shredded() from None
            except (CryptoError, KeyUnknown):
                raise IntegrityError() from None
            yield plaintext
            index += 1
        if index == 0:
            raise IntegrityError("The attachment is empty.")

    async def delete(self, attachment_id: str) -> None:
        with contextlib.suppress(NoFile):
            await self._bucket.delete(ObjectId(attachment_id))

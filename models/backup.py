"""Encrypted backup of the whole database: export, restore into an empty database, and compare."""

from __future__ import annotations

import base64
import contextlib
import datetime as dt
import hashlib
import hmac
import json
import os
import secrets
import struct
import time
from collections.abc import AsyncIterator, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

import bson
from bson import json_util
from bson.codec_options import CodecOptions
from bson.raw_bson import RawBSONDocument
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from pymongo import ASCENDING, IndexModel
from pymongo.asynchronous.cursor import AsyncCursor
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import PyMongoError

from models.audit import AuditContext, AuditService
from models.clock import Clock
from models.keys import KEY_VAULT
from models.store import Store

# --- the archive format -------------------------------------------------------------------------
#
#   MAGIC (8) | format version (u16) | header length (u32) | header (UTF-8 JSON)
#   then chunks:  flags (u8, 1 = final) | sealed length (u32) | AES-256-GCM ciphertext and tag
#
# The header is in the clear (so a wrong key can be told from a damaged file) and is bound to
# every chunk: each chunk's associated data is the header's SHA-256, the chunk's index and its
# final flag, and its nonce is the file's random prefix and the index. A flipped byte, a chunk
# moved, dropped or taken from another archive, a cut tail or bytes appended all fail.
# The chunk key is derived from the backup key and a random salt per archive (HKDF-SHA-256), so
# no two archives share a key and counter nonces can never repeat under one key.
#
# The plaintext is a stream of records, each a tag byte and a BSON document:
#   C  a collection: name, type, options, index specifications (without the _id index)
#   D  one document, its BSON bytes exactly as the server returned them
#   E  the end of a collection: name, document count, SHA-256 of its documents
#   Z  the end of the archive: totals, the master keys the key vault needs, the audit entry

MAGIC = b"ANBANGBK"
FORMAT_VERSION = 1
SUITE = "AES-256-GCM+HKDF-SHA-256"
_PREAMBLE = struct.Struct(">8sHI")
_FRAME = struct.Struct(">BI")
_FINAL = 1
_TAG_BYTES = 16
_SALT_BYTES = 32
_PREFIX_BYTES = 4
_MAX_HEADER_BYTES = 64 * 1024
CHUNK_BYTES = 1 << 20
_MAX_CHUNK_BYTES = 16 << 20
# A BSON document is at most 16 MiB; metadata records are small.
_MAX_RECORD_BYTES = (16 << 20) + (64 << 10)

_COLLECTION, _DOCUMENT, _END, _ARCHIVE_END = b"C", b"D", b"E", b"Z"

# Restore inserts in ordered batches: bounded in count and bytes (well under the server's 48 MB
# message limit), so memory stays bounded whatever the size of the database.
BATCH_DOCUMENTS = 1_000
BATCH_BYTES = 8 << 20

_KEY_KIND = "anbang-backup-key"
_KEY_BYTES = 32

# Documents are read and written as raw BSON: nothing is decoded into Python types and encoded
# again, so datetimes, Binary subtypes, Decimal128, int64 and field order survive byte for byte.
_RAW = CodecOptions(document_class=RawBSONDocument)

# Index fields that describe how an index was built, not what it enforces.
_INDEX_NOISE = frozenset({"v", "ns", "background"})


class BackupError(Exception):
    """A backup, restore or comparison that cannot go ahead; the message says why."""


class BackupKeyError(BackupError):
    """The backup key file is missing, unreadable, readable by others, or not this archive's."""


class ArchiveError(BackupError):
    """The archive is not one of ours, or was altered, truncated or extended."""


class TargetNotEmpty(BackupError):
    """A restore was aimed at a database that already holds documents (or clashing indexes)."""


# --- the backup key -----------------------------------------------------------------------------


@dataclass(frozen=True)
class BackupKey:
    """32 random bytes in a 0600 file; never the master key, never derived from it."""

    material: bytes = field(repr=False)
    path: Path | None = None

    @property
    def key_id(self) -> str:
        """A fingerprint that names the key in an archive's header without revealing it."""
        return hmac.new(self.material, b"anbang-backup/v1/key-id", hashlib.sha256).hexdigest()[:16]

    @classmethod
    def generate(cls, path: Path) -> BackupKey:
        """Write a new random key; an existing file is never replaced (it may guard backups)."""
        path.parent.mkdir(parents=True, exist_ok=True)
        material = secrets.token_bytes(_KEY_BYTES)
        document = {
            "kind": _KEY_KIND,
            "version": 1,
            "key": base64.b64encode(material).decode("ascii"),
        }
        try:
            descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            raise BackupKeyError(
                f"{path} already exists; a backup key is never overwritten (archives made with "
                "it could no longer be opened)"
            ) from None
        with os.fdopen(descriptor, "w", encoding="utf-8") as out:
            json.dump(document, out)
            out.write("\n")
            out.flush()
            os.fsync(out.fileno())
        return cls(material, path)

    @classmethod
    def load(cls, path: Path) -> BackupKey:
        try:
            mode = path.stat().st_mode & 0o777
            document = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise BackupKeyError(
                f"the backup key file {path} does not exist (make one with "
                "`python -m server backup keygen --out FILE`)"
            ) from None
        except (OSError, ValueError) as exc:
            raise BackupKeyError(
                f"the backup key file {path} is unreadable ({type(exc).__name__})"
            ) from None
        if mode & 0o077:
            raise BackupKeyError(
                f"the backup key file {path} is readable by others (mode {mode:o}); chmod 600 it"
            )
        if not isinstance(document, dict) or document.get("kind") != _KEY_KIND:
            master = isinstance(document, dict) and "current" in document
            hint = " (it looks like the master key file)" if master else ""
            raise BackupKeyError(f"{path} is not an Anbang backup key{hint}")
        try:
            material = base64.b64decode(document["key"], validate=True)
        except (KeyError, TypeError, ValueError):
            material = b""
        if len(material) != _KEY_BYTES:
            raise BackupKeyError(f"the backup key file {path} does not hold a 32-byte key")
        return cls(material, path)


def _chunk_key(material: bytes, salt: bytes) -> AESGCM:
    derived = HKDF(
        algorithm=hashes.SHA256(), length=32, salt=salt, info=b"anbang-backup/v1/chunks"
    ).derive(material)
    return AESGCM(derived)


def _chunk_aad(header_digest: bytes, index: int, final: bool) -> bytes:
    return b"anbang-backup/v1/chunk" + header_digest + struct.pack(">QB", index, int(final))


def _nonce(prefix: bytes, index: int) -> bytes:
    return prefix + struct.pack(">Q", index)


# --- writing and reading archives (plain file I/O, no database) ----------------------------------


@dataclass(frozen=True)
class ArchiveHeader:
    """The archive's clear-text header: enough to name the key and the source, nothing secret."""

    database: str
    created_at: str
    key_id: str
    salt: bytes
    nonce_prefix: bytes
    chunk_bytes: int
    suite: str = SUITE
    version: int = FORMAT_VERSION

    def to_bytes(self) -> bytes:
        body = json.dumps(
            {
                "suite": self.suite,
                "database": self.database,
                "created_at": self.created_at,
                "key_id": self.key_id,
                "salt": base64.b64encode(self.salt).decode("ascii"),
                "nonce_prefix": base64.b64encode(self.nonce_prefix).decode("ascii"),
                "chunk_bytes": self.chunk_bytes,
            },
            sort_keys=True,
            separators=(",", ":"),
        ).encode("utf-8")
        return _PREAMBLE.pack(MAGIC, self.version, len(body)) + body

    @classmethod
    def read(cls, source: BinaryIO, path: Path) -> tuple[ArchiveHeader, bytes]:
        """The header and its exact bytes (which every chunk's associated data covers)."""
        preamble = source.read(_PREAMBLE.size)
        if len(preamble) < _PREAMBLE.size or preamble[:8] != MAGIC:
            raise ArchiveError(f"{path} is not an Anbang backup archive")
        _, version, length = _PREAMBLE.unpack(preamble)
        if version != FORMAT_VERSION:
            raise ArchiveError(
                f"{path} is an archive of format {version}; this release reads {FORMAT_VERSION}"
            )
        if length > _MAX_HEADER_BYTES:
            raise ArchiveError(f"{path}: the header is damaged (impossible length {length})")
        body = source.read(length)
        if len(body) < length:
            raise ArchiveError(f"{path} is truncated inside its header")
        try:
            fields = json.loads(body.decode("utf-8"))
            header = cls(
                database=str(fields["database"]),
                created_at=str(fields["created_at"]),
                key_id=str(fields["key_id"]),
                salt=base64.b64decode(fields["salt"], validate=True),
                nonce_prefix=base64.b64decode(fields["nonce_prefix"], validate=True),
                chunk_bytes=int(fields["chunk_bytes"]),
                suite=str(fields["suite"]),
                version=version,
            )
        except (ValueError, KeyError, TypeError):
            raise ArchiveError(f"{path}: the header is damaged") from None
        if header.suite != SUITE:
            raise ArchiveError(f"{path} was sealed with {header.suite}; this release uses {SUITE}")
        if (
            len(header.salt) != _SALT_BYTES
            or len(header.nonce_prefix) != _PREFIX_BYTES
            or not 0 < header.chunk_bytes <= _MAX_CHUNK_BYTES
        ):
            raise ArchiveError(f"{path}: the header is damaged")
        return header, preamble + body


class _ArchiveWriter:
    """Seals records into chunks and writes them to a temporary file beside the archive; the
    archive appears under its name only when complete (a failed export leaves nothing)."""

    def __init__(
        self,
        path: Path,
        key: BackupKey,
        database: str,
        created_at: dt.datetime,
        chunk_bytes: int = CHUNK_BYTES,
    ):
        if path.exists():
            raise BackupError(f"{path} already exists; an archive is never overwritten")
        path.parent.mkdir(parents=True, exist_ok=True)
        self._path = path
        self._temporary = path.with_name(f".{path.name}.{secrets.token_hex(4)}.partial")
        descriptor = os.open(self._temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        self._out = os.fdopen(descriptor, "wb")
        self.header = ArchiveHeader(
            database=database,
            created_at=created_at.astimezone(dt.UTC).isoformat(timespec="milliseconds"),
            key_id=key.key_id,
            salt=os.urandom(_SALT_BYTES),
            nonce_prefix=os.urandom(_PREFIX_BYTES),
            chunk_bytes=chunk_bytes,
        )
        raw_header = self.header.to_bytes()
        self._out.write(raw_header)
        self._digest = hashlib.sha256(raw_header).digest()
        self._aead = _chunk_key(key.material, self.header.salt)
        self._chunk_bytes = chunk_bytes
        self._buffer = bytearray()
        self._index = 0
        self.bytes_written = len(raw_header)

    def record(self, tag: bytes, body: bytes) -> None:
        self._buffer += tag
        self._buffer += body
        while len(self._buffer) >= self._chunk_bytes:
            self._seal(bytes(self._buffer[: self._chunk_bytes]), final=False)
            del self._buffer[: self._chunk_bytes]

    def _seal(self, plaintext: bytes, *, final: bool) -> None:
        index = self._index
        sealed = self._aead.encrypt(
            _nonce(self.header.nonce_prefix, index),
            plaintext,
            _chunk_aad(self._digest, index, final),
        )
        self._out.write(_FRAME.pack(_FINAL if final else 0, len(sealed)))
        self._out.write(sealed)
        self.bytes_written += _FRAME.size + len(sealed)
        self._index += 1

    def finish(self) -> int:
        """Seal the last chunk, make it durable, and give the archive its name."""
        self._seal(bytes(self._buffer), final=True)
        self._buffer.clear()
        self._out.flush()
        os.fsync(self._out.fileno())
        self._out.close()
        try:
            # link() refuses an existing name: an archive that appeared meanwhile is kept.
            os.link(self._temporary, self._path)
        except FileExistsError:
            raise BackupError(f"{self._path} appeared during the export; not overwritten") from None
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self._temporary)
        with contextlib.suppress(OSError):
            directory = os.open(self._path.parent, os.O_RDONLY)
            try:
                os.fsync(directory)
            finally:
                os.close(directory)
        return self.bytes_written

    def abandon(self) -> None:
        with contextlib.suppress(OSError):
            self._out.close()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self._temporary)


@dataclass(frozen=True)
class CollectionMeta:
    """A collection as the archive (or a database) describes it."""

    name: str
    type: str
    options: dict[str, Any]
    indexes: tuple[dict[str, Any], ...]

    def to_bson(self) -> bytes:
        return bson.encode(
            {
                "name": self.name,
                "type": self.type,
                "options": self.options,
                "indexes": list(self.indexes),
            }
        )

    @classmethod
    def from_bson(cls, raw: bytes) -> CollectionMeta:
        document = bson.decode(raw)
        return cls(
            name=document["name"],
            type=document["type"],
            options=document["options"],
            indexes=tuple(document["indexes"]),
        )

    @property
    def ttl_fields(self) -> list[str]:
        return [
            next(iter(index["key"]))
            for index in self.indexes
            if "expireAfterSeconds" in index and index.get("key")
        ]


@dataclass
class _Event:
    kind: str  # "collection", "document", "end"
    meta: CollectionMeta | None = None
    raw: bytes = b""


@dataclass
class ArchiveContents:
    """What a full pass over an archive proved: its collections and its closing record."""

    header: ArchiveHeader
    collections: list[CollectionMeta]
    documents: int
    master_key_ids: list[str]
    audit_entry: str | None
    archive_bytes: int


class _ArchiveReader:
    """Reads an archive chunk by chunk, authenticating each before any of its bytes is used."""

    def __init__(self, path: Path, key: BackupKey):
        self.path = path
        try:
            self._file: BinaryIO = path.open("rb")
        except FileNotFoundError:
            raise ArchiveError(f"{path} does not exist") from None
        try:
            self.header, self.raw_header = ArchiveHeader.read(self._file, path)
            if self.header.key_id != key.key_id:
                raise BackupKeyError(
                    f"{path} was sealed with backup key {self.header.key_id}, but "
                    f"{key.path or 'the key given'} is key {key.key_id}: wrong key file"
                )
        except BaseException:
            self._file.close()
            raise
        self._digest = hashlib.sha256(self.raw_header).digest()
        self._aead = _chunk_key(key.material, self.header.salt)
        stat = os.fstat(self._file.fileno())
        self.identity = (stat.st_dev, stat.st_ino, stat.st_size, stat.st_mtime_ns)
        self.size = stat.st_size

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> _ArchiveReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _chunks(self) -> Iterator[bytes]:
        index = 0
        limit = self.header.chunk_bytes + _TAG_BYTES
        while True:
            offset = self._file.tell()
            frame = self._file.read(_FRAME.size)
            if not frame:
                where = f"after chunk {index - 1}" if index else "after its header"
                raise ArchiveError(
                    f"{self.path} is truncated: it ends {where} without its final chunk"
                )
            if len(frame) < _FRAME.size:
                raise ArchiveError(f"{self.path} is truncated inside chunk {index}")
            flags, length = _FRAME.unpack(frame)
            if flags not in (0, _FINAL) or not _TAG_BYTES <= length <= limit:
                raise ArchiveError(
                    f"{self.path}: chunk {index} (byte {offset}) has a damaged frame; the "
                    "archive was altered"
                )
            sealed = self._file.read(length)
            if len(sealed) < length:
                raise ArchiveError(f"{self.path} is truncated inside chunk {index}")
            final = flags == _FINAL
            try:
                plaintext = self._aead.decrypt(
                    _nonce(self.header.nonce_prefix, index),
                    sealed,
                    _chunk_aad(self._digest, index, final),
                )
            except InvalidTag:
                raise ArchiveError(
                    f"{self.path}: chunk {index} (byte {offset}) does not authenticate; the "
                    "archive was altered, reordered or damaged"
                ) from None
            yield plaintext
            index += 1
            if final:
                if self._file.read(1):
                    raise ArchiveError(
                        f"{self.path}: data was appended after the final chunk (chunk {index - 1})"
                    )
                return

    def _records(self) -> Iterator[tuple[bytes, bytes]]:
        buffer = bytearray()
        for plaintext in self._chunks():
            buffer += plaintext
            position = 0
            while len(buffer) - position >= 5:
                tag = bytes(buffer[position : position + 1])
                (size,) = struct.unpack_from("<i", buffer, position + 1)
                if tag not in (_COLLECTION, _DOCUMENT, _END, _ARCHIVE_END) or not (
                    5 <= size <= _MAX_RECORD_BYTES
                ):
                    raise ArchiveError(f"{self.path}: a record is malformed")
                if len(buffer) - position - 1 < size:
                    break
                yield tag, bytes(buffer[position + 1 : position + 1 + size])
                position += 1 + size
            del buffer[:position]
        if buffer:
            raise ArchiveError(f"{self.path}: the last record is incomplete")

    def events(self, contents: ArchiveContents | None = None) -> Iterator[_Event]:
        """Collections and documents in archive order, checked against each collection's count
        and digest and the archive's closing record; fills `contents` as it goes."""
        current: CollectionMeta | None = None
        count, digest = 0, hashlib.sha256()
        seen: set[str] = set()
        total = 0
        closed = False
        for tag, body in self._records():
            if closed:
                raise ArchiveError(f"{self.path}: records follow the archive's end record")
            if tag == _COLLECTION:
                if current is not None:
                    raise ArchiveError(f"{self.path}: collection {current.name} is not closed")
                current = CollectionMeta.from_bson(body)
                if current.name in seen:
                    raise ArchiveError(f"{self.path}: collection {current.name} appears twice")
                seen.add(current.name)
                count, digest = 0, hashlib.sha256()
                if contents is not None:
                    contents.collections.append(current)
                yield _Event("collection", meta=current)
            elif tag == _DOCUMENT:
                if current is None:
                    raise ArchiveError(f"{self.path}: a document outside any collection")
                count += 1
                total += 1
                digest.update(body)
                yield _Event("document", meta=current, raw=body)
            elif tag == _END:
                end = bson.decode(body)
                if current is None or end.get("name") != current.name:
                    raise ArchiveError(f"{self.path}: a collection's end record is misplaced")
                if end.get("documents") != count or end.get("sha256") != digest.hexdigest():
                    raise ArchiveError(
                        f"{self.path}: collection {current.name} does not match the count and "
                        "digest recorded at export"
                    )
                yield _Event("end", meta=current)
                current = None
            else:
                trailer = bson.decode(body)
                if current is not None or trailer.get("collections") != len(seen):
                    raise ArchiveError(f"{self.path}: the archive's end record is misplaced")
                if trailer.get("documents") != total:
                    raise ArchiveError(f"{self.path}: the document total does not match")
                if contents is not None:
                    contents.documents = total
                    contents.master_key_ids = list(trailer.get("master_key_ids", []))
                    contents.audit_entry = trailer.get("audit_entry")
                closed = True
        if not closed:
            raise ArchiveError(f"{self.path}: the archive has no end record")

    def authenticate(self) -> ArchiveContents:
        """A full pass: every chunk authenticated, every record checked, nothing kept but the
        collection descriptions."""
        contents = ArchiveContents(self.header, [], 0, [], None, self.size)
        for _ in self.events(contents):
            pass
        return contents


# --- results ------------------------------------------------------------------------------------


def _plain(value: Any) -> Any:
    """A BSON value as plain JSON (ObjectIds, dates and binaries in relaxed Extended JSON)."""
    return json.loads(json_util.dumps(value, json_options=json_util.RELAXED_JSON_OPTIONS))


@dataclass(frozen=True)
class ExportSummary:
    database: str
    path: Path
    collections: int
    documents: int
    document_bytes: int
    archive_bytes: int
    seconds: float
    key_id: str
    created_at: str
    master_key_ids: list[str]
    audit_entry: str | None

    def as_json(self) -> dict[str, Any]:
        return {
            "database": self.database,
            "archive": str(self.path),
            "collections": self.collections,
            "documents": self.documents,
            "document_bytes": self.document_bytes,
            "bytes": self.archive_bytes,
            "seconds": round(self.seconds, 3),
            "backup_key_id": self.key_id,
            "created_at": self.created_at,
            "master_key_ids": self.master_key_ids,
            "audit_entry": self.audit_entry,
        }


@dataclass(frozen=True)
class RestoreSummary:
    database: str
    source_database: str
    created_at: str
    collections: int
    documents: int
    archive_bytes: int
    seconds: float
    master_key_ids: list[str]

    def as_json(self) -> dict[str, Any]:
        return {
            "database": self.database,
            "source_database": self.source_database,
            "archive_created_at": self.created_at,
            "collections": self.collections,
            "documents": self.documents,
            "bytes": self.archive_bytes,
            "seconds": round(self.seconds, 3),
            "master_key_ids": self.master_key_ids,
        }


@dataclass(frozen=True)
class Difference:
    """One way the database differs from what was expected (the archive, or the other database).

    `aspect`: collection_missing, collection_extra, type, options, index_missing, index_extra,
    index_changed, count, content."""

    collection: str
    aspect: str
    expected: Any = None
    actual: Any = None
    note: str = ""

    def as_json(self) -> dict[str, Any]:
        return {
            "collection": self.collection,
            "aspect": self.aspect,
            "expected": _plain(self.expected),
            "actual": _plain(self.actual),
            "note": self.note,
        }

    def __str__(self) -> str:
        text = f"{self.collection}: {self.aspect}"
        if self.expected is not None or self.actual is not None:
            text += (
                f" (expected {json.dumps(_plain(self.expected), ensure_ascii=False)}, "
                f"found {json.dumps(_plain(self.actual), ensure_ascii=False)})"
            )
        return text + (f"; {self.note}" if self.note else "")


@dataclass(frozen=True)
class CollectionFigures:
    name: str
    expected_documents: int
    actual_documents: int
    expected_sha256: str
    actual_sha256: str


@dataclass
class Comparison:
    """Per collection: document count, SHA-256 of the documents in _id order, options, indexes."""

    database: str
    against: str
    collections: list[CollectionFigures] = field(default_factory=list)
    differences: list[Difference] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def identical(self) -> bool:
        return not self.differences

    @property
    def documents(self) -> int:
        return sum(c.expected_documents for c in self.collections)

    def as_json(self) -> dict[str, Any]:
        return {
            "identical": self.identical,
            "database": self.database,
            "against": self.against,
            "collections": len(self.collections),
            "documents": self.documents,
            "seconds": round(self.seconds, 3),
            "per_collection": [
                {
                    "name": c.name,
                    "documents": c.actual_documents,
                    "sha256": c.actual_sha256,
                    "identical": c.expected_documents == c.actual_documents
                    and c.expected_sha256 == c.actual_sha256,
                }
                for c in self.collections
            ],
            "differences": [d.as_json() for d in self.differences],
        }


def _index_signature(spec: dict[str, Any]) -> tuple[Any, ...]:
    """What an index enforces: its keys in order and its options; not how it was built.
    Values compare as numbers (1 == 1.0 == Int64(1)), since servers differ in the type they
    report for the same index."""
    key = tuple((name, value) for name, value in dict(spec.get("key", {})).items())
    options = sorted(
        (name, value)
        for name, value in spec.items()
        if name not in _INDEX_NOISE and name not in ("key", "name")
    )
    return key, tuple(options)


def _index_model(spec: dict[str, Any]) -> IndexModel:
    options = {k: v for k, v in spec.items() if k not in _INDEX_NOISE and k != "key"}
    return IndexModel(list(dict(spec["key"]).items()), **options)


# --- the service --------------------------------------------------------------------------------


class BackupService:
    """Exports the store's database to a sealed archive, restores an archive into it (only when
    it is empty), and compares it with an archive or with another database."""

    def __init__(
        self,
        store: Store,
        clock: Clock,
        audit: AuditService | None = None,
        *,
        chunk_bytes: int = CHUNK_BYTES,
    ):
        if not 0 < chunk_bytes <= _MAX_CHUNK_BYTES:
            raise ValueError(f"chunk_bytes must be between 1 and {_MAX_CHUNK_BYTES}")
        self._store = store
        self._clock = clock
        self._audit = audit
        self._chunk_bytes = chunk_bytes

    @property
    def database_name(self) -> str:
        return str(self._store.database.name)

    # -- reading the database --

    @staticmethod
    async def _describe(database: AsyncDatabase) -> list[CollectionMeta]:
        """Every collection, by name, with its options and indexes."""
        metas = []
        infos = [info async for info in await database.list_collections()]
        for info in sorted(infos, key=lambda i: i["name"]):
            name = info["name"]
            # system.* collections belong to the server (profiling, view definitions).
            if name.startswith("system."):
                continue
            kind = info.get("type", "collection")
            if kind != "collection":
                # Views and time-series collections would come back incomplete or not at
                # all; say so instead of writing a backup that silently lacks them.
                raise BackupError(
                    f"collection {name} is a {kind}, which this tool does not back up; use "
                    "mongodump for this database"
                )
            indexes = [
                {k: v for k, v in dict(index).items() if k not in _INDEX_NOISE}
                async for index in await database[name].list_indexes()
            ]
            metas.append(
                CollectionMeta(
                    name=name,
                    type=kind,
                    options=dict(info.get("options", {})),
                    indexes=tuple(
                        sorted(
                            (i for i in indexes if i.get("name") != "_id_"),
                            key=lambda i: str(i.get("name")),
                        )
                    ),
                )
            )
        return metas

    def _documents(self, store: Store, name: str) -> AsyncCursor[RawBSONDocument]:
        # Majority reads: the backup holds only what a failover cannot roll back. Sorted by _id
        # (the _id index, no in-memory sort), so two copies of a collection hash the same.
        collection = store.majority_collection(name).with_options(codec_options=_RAW)
        return collection.find({}, batch_size=BATCH_DOCUMENTS).sort("_id", ASCENDING)

    # -- export --

    async def export(
        self, path: Path, key: BackupKey, *, ctx: AuditContext | None = None
    ) -> ExportSummary:
        """Write every collection of the database, with its indexes, to a new sealed archive.

        Each collection is read on its own (majority read concern): the archive is consistent
        per collection, not a point in time across collections while writes continue."""
        started = time.monotonic()
        # The archive's file is claimed first: an export refused for an existing file writes
        # no audit entry.
        writer = _ArchiveWriter(path, key, self.database_name, self._clock.now(), self._chunk_bytes)
        try:
            async with self._audited_export(ctx) as audit_entry:
                metas = await self._describe(self._store.database)
                documents = document_bytes = 0
                master_key_ids: set[str] = set()
                for meta in metas:
                    writer.record(_COLLECTION, meta.to_bson())
                    count, digest = 0, hashlib.sha256()
                    async for document in self._documents(self._store, meta.name):
                        raw = document.raw
                        writer.record(_DOCUMENT, raw)
                        digest.update(raw)
                        count += 1
                        document_bytes += len(raw)
                        if meta.name == KEY_VAULT.name and document.get("wrapped") is not None:
                            # The archive says which master keys its key vault needs; the
                            # keys themselves are never in it.
                            master_key_ids.add(str(document.get("kek_id")))
                    documents += count
                    writer.record(
                        _END,
                        bson.encode(
                            {"name": meta.name, "documents": count, "sha256": digest.hexdigest()}
                        ),
                    )
                writer.record(
                    _ARCHIVE_END,
                    bson.encode(
                        {
                            "collections": len(metas),
                            "documents": documents,
                            "master_key_ids": sorted(master_key_ids),
                            "audit_entry": audit_entry,
                        }
                    ),
                )
                archive_bytes = writer.finish()
        except BaseException:
            writer.abandon()
            raise
        return ExportSummary(
            database=self.database_name,
            path=path,
            collections=len(metas),
            documents=documents,
            document_bytes=document_bytes,
            archive_bytes=archive_bytes,
            seconds=time.monotonic() - started,
            key_id=key.key_id,
            created_at=writer.header.created_at,
            master_key_ids=sorted(master_key_ids),
            audit_entry=audit_entry,
        )

    def _audited_export(self, ctx: AuditContext | None) -> Any:
        """The export's audit entry (when the service has an audit log and a caller)."""
        if self._audit is None or ctx is None:
            return contextlib.nullcontext(None)
        # The archive names this entry, as a check-in names its own: success writes no
        # outcome entry, so the entry lies inside the archive it records.
        return self._audit.change(
            ctx,
            "backup.export",
            resource="database",
            resource_id=self.database_name,
            confirm=False,
        )

    # -- restore --

    async def restore(self, path: Path, key: BackupKey) -> RestoreSummary:
        """Restore an archive into this (empty) database.

        Two passes over the file: the first authenticates every chunk and checks every record
        while writing nothing; only then is the target checked and the second pass inserts.
        Nothing decrypted ever touches the disk, and no space beyond the database is needed. The
        second pass authenticates again and insists on the same file (same header, inode, size
        and modification time), so a file swapped between the passes is refused before any
        write; one changed during the second pass fails there, naming the partial restore."""
        started = time.monotonic()
        with _ArchiveReader(path, key) as first:
            contents = first.authenticate()
            raw_header, identity = first.raw_header, first.identity
        await self._check_empty(contents.collections)
        database = self._store.database
        existing = set(await database.list_collection_names())
        with _ArchiveReader(path, key) as second:
            if second.raw_header != raw_header or second.identity != identity:
                raise ArchiveError(
                    f"{path} changed after it was authenticated; nothing was written"
                )
            try:
                await self._insert_all(second.events(), existing)
            except ArchiveError as exc:
                raise ArchiveError(
                    f"{exc} (the file changed during the restore: database "
                    f"{self.database_name} is partly written; drop it before trying again)"
                ) from None
            except PyMongoError as exc:
                raise BackupError(
                    f"writing to database {self.database_name} failed ({type(exc).__name__}: "
                    f"{exc}); it is partly written: drop it before trying again"
                ) from exc
        return RestoreSummary(
            database=self.database_name,
            source_database=contents.header.database,
            created_at=contents.header.created_at,
            collections=len(contents.collections),
            documents=contents.documents,
            archive_bytes=contents.archive_bytes,
            seconds=time.monotonic() - started,
            master_key_ids=contents.master_key_ids,
        )

    async def _check_empty(self, wanted: list[CollectionMeta]) -> None:
        """Refuse a target that holds any document, or whose empty collections would clash with
        the archive's options or indexes; nothing is written either way."""
        present = {meta.name: meta for meta in await self._describe(self._store.database)}
        occupied = []
        for name in sorted(present):
            if await self._store.collection(name).find_one({}, {"_id": 1}) is not None:
                count = await self._store.collection(name).estimated_document_count()
                occupied.append(f"{name} ({count} document(s))")
        if occupied:
            raise TargetNotEmpty(
                f"database {self.database_name} is not empty: {', '.join(occupied)}; restore "
                "only into an empty database (drop it, or name another); nothing was written"
            )
        clashes = []
        for meta in wanted:
            there = present.get(meta.name)
            if there is None:
                continue
            if there.options != meta.options:
                clashes.append(f"{meta.name}: collection options differ")
            theirs = {i["name"]: _index_signature(i) for i in there.indexes}
            by_keys = {_index_signature(i)[0]: i["name"] for i in there.indexes}
            for index in meta.indexes:
                other = theirs.get(index["name"])
                if other is not None and other != _index_signature(index):
                    clashes.append(f"{meta.name}: index {index['name']} differs")
                # The server refuses a second index on the same keys under another name.
                named = by_keys.get(_index_signature(index)[0])
                if other is None and named is not None:
                    clashes.append(
                        f"{meta.name}: index {named} has the keys of the archive's {index['name']}"
                    )
        if clashes:
            raise TargetNotEmpty(
                f"database {self.database_name} has empty collections that clash with the "
                f"archive ({'; '.join(clashes)}); drop it first; nothing was written"
            )

    async def _insert_all(self, events: Iterable[_Event], existing: set[str]) -> None:
        database = self._store.database
        batch: list[RawBSONDocument] = []
        batch_bytes = 0
        current = ""

        async def flush() -> None:
            nonlocal batch, batch_bytes
            if batch:
                await self._store.collection(current).insert_many(batch, ordered=True)
            batch, batch_bytes = [], 0

        for event in events:
            assert event.meta is not None
            if event.kind == "collection":
                current = event.meta.name
                if current not in existing:
                    # Explicitly, so options and empty collections come back; the target was
                    # listed already, so without the driver's own existence check.
                    await database.create_collection(
                        current, check_exists=False, **event.meta.options
                    )
                # Before the documents, so unique and TTL indexes hold from the first insert.
                if event.meta.indexes:
                    await self._store.collection(current).create_indexes(
                        [_index_model(spec) for spec in event.meta.indexes]
                    )
            elif event.kind == "document":
                batch.append(RawBSONDocument(event.raw, _RAW))
                batch_bytes += len(event.raw)
                if len(batch) >= BATCH_DOCUMENTS or batch_bytes >= BATCH_BYTES:
                    await flush()
            else:
                await flush()

    # -- compare --

    async def compare_with_archive(self, path: Path, key: BackupKey) -> Comparison:
        """This database against an archive (authenticated as it is read)."""
        started = time.monotonic()
        with _ArchiveReader(path, key) as reader:
            comparison = Comparison(self.database_name, f"archive {path}")

            async def expected() -> AsyncIterator[_Event]:
                for event in reader.events():
                    yield event

            await self._compare(expected(), comparison)
        comparison.seconds = time.monotonic() - started
        return comparison

    async def compare_with_database(self, expected: Store) -> Comparison:
        """This database against another (the expected one), read the same way."""
        started = time.monotonic()
        comparison = Comparison(self.database_name, f"database {expected.database.name}")

        async def events() -> AsyncIterator[_Event]:
            for meta in await self._describe(expected.database):
                yield _Event("collection", meta=meta)
                async for document in self._documents(expected, meta.name):
                    yield _Event("document", meta=meta, raw=document.raw)
                yield _Event("end", meta=meta)

        await self._compare(events(), comparison)
        comparison.seconds = time.monotonic() - started
        return comparison

    async def _compare(self, expected: AsyncIterator[_Event], comparison: Comparison) -> None:
        """Walk the expected side and this database in step, collection by collection and
        document by document in _id order, so the first differing document can be named."""
        present = {meta.name: meta for meta in await self._describe(self._store.database)}
        differences = comparison.differences
        seen: set[str] = set()
        actual: AsyncCursor[RawBSONDocument] | None = None
        expected_count = actual_count = 0
        expected_digest = actual_digest = hashlib.sha256()
        first_different: Any = None
        meta: CollectionMeta | None = None

        def note_first(raw: bytes) -> None:
            nonlocal first_different
            if first_different is None:
                first_different = bson.decode(raw)["_id"]

        opened: list[AsyncCursor[RawBSONDocument]] = []
        try:
            async for event in expected:
                if event.kind == "collection":
                    meta = event.meta
                    assert meta is not None
                    seen.add(meta.name)
                    expected_count = actual_count = 0
                    expected_digest, actual_digest = hashlib.sha256(), hashlib.sha256()
                    first_different = None
                    there = present.get(meta.name)
                    if there is None:
                        differences.append(
                            Difference(meta.name, "collection_missing", note="not in the database")
                        )
                        actual = None
                        continue
                    differences.extend(self._describe_differences(meta, there))
                    actual = self._documents(self._store, meta.name)
                    opened.append(actual)
                elif event.kind == "document":
                    expected_count += 1
                    expected_digest.update(event.raw)
                    if actual is None:
                        continue
                    document = await anext(actual, None)
                    if document is None:
                        note_first(event.raw)
                        continue
                    actual_count += 1
                    actual_digest.update(document.raw)
                    if document.raw != event.raw:
                        note_first(event.raw)
                else:
                    assert meta is not None
                    if actual is None:
                        continue
                    async for document in actual:
                        actual_count += 1
                        actual_digest.update(document.raw)
                        note_first(document.raw)
                    figures = CollectionFigures(
                        meta.name,
                        expected_count,
                        actual_count,
                        expected_digest.hexdigest(),
                        actual_digest.hexdigest(),
                    )
                    comparison.collections.append(figures)
                    ttl = (
                        f"; it has a TTL index on {', '.join(meta.ttl_fields)}: the server deletes "
                        "documents past their expiry, so an older copy differs there by design"
                        if meta.ttl_fields
                        else ""
                    )
                    if expected_count != actual_count:
                        differences.append(
                            Difference(
                                meta.name,
                                "count",
                                expected_count,
                                actual_count,
                                note=f"document counts differ{ttl}",
                            )
                        )
                    if figures.expected_sha256 != figures.actual_sha256:
                        differences.append(
                            Difference(
                                meta.name,
                                "content",
                                figures.expected_sha256,
                                figures.actual_sha256,
                                note=f"first different document: _id "
                                f"{json.dumps(_plain(first_different), ensure_ascii=False)}{ttl}",
                            )
                        )
                    actual = None
        finally:
            # A comparison cut short (a damaged archive) leaves no cursor open on the server.
            for cursor in opened:
                await cursor.close()
        for name in sorted(set(present) - seen):
            differences.append(Difference(name, "collection_extra", note="in the database only"))

    @staticmethod
    def _describe_differences(expected: CollectionMeta, actual: CollectionMeta) -> list[Difference]:
        found = []
        name = expected.name
        if expected.type != actual.type:
            found.append(Difference(name, "type", expected.type, actual.type))
        if expected.options != actual.options:
            found.append(Difference(name, "options", expected.options, actual.options))
        wanted = {i["name"]: i for i in expected.indexes}
        there = {i["name"]: i for i in actual.indexes}
        for index_name in sorted(set(wanted) | set(there)):
            if index_name not in there:
                found.append(
                    Difference(name, "index_missing", wanted[index_name], None, note=index_name)
                )
            elif index_name not in wanted:
                found.append(
                    Difference(name, "index_extra", None, there[index_name], note=index_name)
                )
            elif _index_signature(wanted[index_name]) != _index_signature(there[index_name]):
                found.append(
                    Difference(
                        name,
                        "index_changed",
                        wanted[index_name],
                        there[index_name],
                        note=index_name,
                    )
                )
        return found


def read_archive_header(path: Path) -> ArchiveHeader:
    """The clear-text header of an archive (no key needed): which database, when, which key."""
    try:
        with path.open("rb") as source:
            header, _ = ArchiveHeader.read(source, path)
    except FileNotFoundError:
        raise ArchiveError(f"{path} does not exist") from None
    return header

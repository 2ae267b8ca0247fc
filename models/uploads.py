"""Uploads from the mini-program: photos checked by their content, sealed with the person's key.

An upload's id is self-authenticating: it names the stored file, its content digest and the
person it belongs to under a keyed MAC, so a check-in can use the photo (and tell a reused one)
without another database round trip, and nobody can attach someone else's upload.
"""

from __future__ import annotations

import hashlib
import hmac
import struct
import zlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from models.attachments import AttachmentInfo, AttachmentService
from models.audit import AuditContext, AuditService
from models.checkin_state import CheckinStates
from models.clock import Clock
from models.codec import FieldCodec
from models.errors import Forbidden, InvalidInput, UnsupportedMedia
from models.store import CollectionSpec, Store, Write
from models.subjects import SubjectService, SubjectStatus

MAX_UPLOAD_BYTES = 5 * 1024 * 1024
MIN_SIDE, MAX_SIDE = 32, 10_000
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
UPLOADS = CollectionSpec("uploads")


class NotAnImage(UnsupportedMedia):
    code = "not_an_image"
    default_message = "The file is not a JPEG or PNG image."


@dataclass(frozen=True)
class ImageInfo:
    content_type: str
    width: int
    height: int


@dataclass(frozen=True)
class UploadRef:
    """What an upload id says, once its MAC has been checked."""

    attachment_id: str
    digest: str


def sniff_image(data: bytes) -> ImageInfo:
    """The image's type and size read from its own bytes (never from the name or the header
    the client sent); anything else is refused."""
    if data.startswith(PNG_SIGNATURE):
        return _png(data)
    if data.startswith(b"\xff\xd8\xff"):
        return _jpeg(data)
    raise NotAnImage(message_zh="文件不是 JPEG 或 PNG 图片。")


def _checked(content_type: str, width: int, height: int) -> ImageInfo:
    if not (MIN_SIDE <= width <= MAX_SIDE and MIN_SIDE <= height <= MAX_SIDE):
        raise NotAnImage(
            "The image's dimensions are out of range.",
            message_zh="图片尺寸不符合要求。",
            details=[{"field": "file", "width": width, "height": height}],
        )
    return ImageInfo(content_type, width, height)


def _png(data: bytes) -> ImageInfo:
    if len(data) < 33 or data[12:16] != b"IHDR":
        raise NotAnImage(message_zh="PNG 图片已损坏。")
    (length,) = struct.unpack(">I", data[8:12])
    header, crc = data[12:29], data[29:33]
    if length != 13 or zlib.crc32(header) != struct.unpack(">I", crc)[0]:
        raise NotAnImage(message_zh="PNG 图片已损坏。")
    width, height = struct.unpack(">II", data[16:24])
    if b"IEND" not in data[-12:]:
        raise NotAnImage(message_zh="PNG 图片不完整。")
    return _checked("image/png", width, height)


_SOF = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}


def _jpeg(data: bytes) -> ImageInfo:
    position = 2
    while position + 4 <= len(data):
        if data[position] != 0xFF:
            break
        marker = data[position + 1]
        if marker == 0xFF:  # fill byte
            position += 1
            continue
        (length,) = struct.unpack(">H", data[position + 2 : position + 4])
        if marker in _SOF and position + 9 <= len(data):
            height, width = struct.unpack(">HH", data[position + 5 : position + 9])
            if not data.rstrip(b"\x00").endswith(b"\xff\xd9"):
                raise NotAnImage(message_zh="JPEG 图片不完整。")
            return _checked("image/jpeg", width, height)
        if length < 2:
            break
        position += 2 + length
    raise NotAnImage(message_zh="JPEG 图片已损坏。")


class UploadService:
    collections = (UPLOADS,)

    def __init__(
        self,
        store: Store,
        audit: AuditService,
        codec: FieldCodec,
        attachments: AttachmentService,
        subjects: SubjectService,
        *,
        clock: Clock,
        states: CheckinStates,
    ):
        self._uploads = store.collection(UPLOADS)
        self._clock = clock
        self._states = states
        self._audit = audit
        self._codec = codec
        self._attachments = attachments
        self._subjects = subjects

    async def store(self, ctx: AuditContext, data: bytes) -> str:
        """Check, seal and store one photo for the calling person (or their guardian, for the
        person's file); answer its upload id."""
        subject_id = ctx.identity.subject_id
        if subject_id is None:
            raise Forbidden("Only a bound person uploads.", code="not_a_subject")
        if len(data) > MAX_UPLOAD_BYTES:
            raise InvalidInput("The file is too large.", code="body_too_large")
        info = sniff_image(data)
        subject = await self._person(subject_id)
        if subject is None or subject.get("status") == SubjectStatus.SHREDDED:
            raise Forbidden("This case file is closed.", code="not_a_subject")
        digest = (await self._codec.blind_index("photo", hashlib.sha256(data).hexdigest()))[:32]
        stored, files = await self._attachments.sealed_whole(
            subject_id, subject.get("dek_id"), info.content_type, data, self._clock.now()
        )

        def writes(entry: str) -> list[Write]:
            # The entry first (record_with), the file's chunks, the file, then the upload that
            # names the entry: a file without its entry cannot be stored.
            upload = {
                "_id": stored.id,
                "subject_id": subject_id,
                "uploaded_by": ctx.identity.user_id,
                "digest": digest,
                "content_type": info.content_type,
                "width": info.width,
                "height": info.height,
                "bytes": len(data),
                "audit_entry": entry,
            }
            return [*files, Write(UPLOADS.name, upload)]

        await self._audit.record_with(
            ctx,
            "uploads.create",
            writes,
            resource="attachment",
            resource_id=stored.id,
            subject_id=subject_id,
            details={"bytes": len(data), "type": info.content_type},
        )
        return await self._upload_id(subject_id, stored.id, digest)

    async def _person(self, subject_id: str) -> dict[str, Any] | None:
        """The file's status and key, from the person's check-in state when it is current
        (read at login: no further read, the key carried with it), else from the file."""
        state = await self._states.read(subject_id)
        if self._states.usable(state, self._clock.now()):
            self._codec.adopt_key(state.get("key"))
            return dict(state["subject"])
        return await self._subjects.document(subject_id)

    async def _mac(self, subject_id: str, attachment_id: str, digest: str) -> str:
        return (await self._codec.blind_index("upload", f"{subject_id}:{attachment_id}:{digest}"))[
            :32
        ]

    async def _upload_id(self, subject_id: str, attachment_id: str, digest: str) -> str:
        return f"{attachment_id}.{digest}.{await self._mac(subject_id, attachment_id, digest)}"

    async def resolve(self, subject_id: str, upload_id: str) -> UploadRef | None:
        """The upload behind an id when it belongs to this person; None otherwise."""
        parts = upload_id.split(".")
        if len(parts) != 3 or not all(parts) or len(upload_id) > 200:
            return None
        attachment_id, digest, mac = parts
        expected = await self._mac(subject_id, attachment_id, digest)
        if not hmac.compare_digest(expected, mac):
            return None
        return UploadRef(attachment_id, digest)

    async def open(self, attachment_id: str) -> tuple[AttachmentInfo, AsyncIterator[bytes]] | None:
        """A stored photo's description and plaintext stream, for a service that has already
        decided its caller may see it; None when it is gone (the file was erased)."""
        info = await self._attachments.info(attachment_id)
        if info is None:
            return None
        return info, self._attachments.read(attachment_id)

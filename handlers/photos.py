"""The shape every photo download shares: refusals look like absence, nothing is cached."""

from __future__ import annotations

from collections.abc import AsyncIterator

from handlers.base import BaseHandler
from models.attachments import AttachmentInfo
from models.errors import DomainError, Forbidden, NotFound


class PhotoStreamHandler(BaseHandler):
    """A handler whose GET streams a decrypted photo.

    A refusal on GET (wrong role, wrong channel, a session that must finish a step first)
    answers 404 like an absent photo: a 403 would confirm the person, the check-in or the
    photo exists. Every answer, the 404 included, forbids caching, old HTTP/1.0 caches too.
    """

    def set_default_headers(self) -> None:
        super().set_default_headers()
        self.set_header("Cache-Control", "no-store")
        self.set_header("Pragma", "no-cache")

    async def authorize(self) -> None:
        try:
            await super().authorize()
        except Forbidden:
            if self.request.method != "GET":
                raise
            raise NotFound("No photo.") from None

    async def stream(self, info: AttachmentInfo, chunks: AsyncIterator[bytes]) -> None:
        self.set_header("Content-Type", info.content_type)
        try:
            async for chunk in chunks:
                self.write(chunk)
                await self.flush()
        except DomainError:
            if not self._headers_written:
                raise
            # Part of the file was sent before a later record failed its check: cut the
            # connection so the client sees a broken transfer, never a complete-looking file.
            self.request.connection.close()  # type: ignore[union-attr]
            self._finished = True
            self.on_finish()
            return
        self.finish()

"""The mini-program's base handler: WeChat sessions only, errors in Chinese."""

from __future__ import annotations

from typing import ClassVar

from handlers.base import BaseHandler


class MpHandler(BaseHandler):
    """Every `/mp/v1` handler derives from this."""

    audience = "mp"
    channels: ClassVar[frozenset[str]] = frozenset({"mp"})

    def idempotency_key(self) -> str:
        """The `Idempotency-Key` header as sent (the service checks its form)."""
        return self.request.headers.get("Idempotency-Key", "").strip()

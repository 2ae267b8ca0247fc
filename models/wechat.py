"""The WeChat access token: fetched by the one jobs process holding the lease, kept sealed in the
database, read by every process. The token source is a port; the WeChat adapter implements it."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Protocol

from models.clock import Clock
from models.codec import FieldCodec
from models.store import CollectionSpec, Store

WECHAT_TOKENS = CollectionSpec("wechat_tokens")
# Refresh this long before expiry, so no process ever holds an expired token.
REFRESH_MARGIN = dt.timedelta(minutes=10)


class WeChatUnavailable(Exception):
    """WeChat (or its stand-in) did not hand out a token; the message says why, in its words."""


@dataclass(frozen=True)
class FetchedToken:
    token: str
    expires_in: int


class AccessTokenSource(Protocol):
    """Fetches a fresh access token (WeChat's stable_token endpoint, or a stand-in)."""

    @property
    def appid(self) -> str: ...

    async def fetch(self, force_refresh: bool = False) -> FetchedToken: ...


class WeChatTokenService:
    collections = (WECHAT_TOKENS,)

    def __init__(
        self, store: Store, clock: Clock, codec: FieldCodec, source: AccessTokenSource | None
    ):
        self._tokens = store.collection(WECHAT_TOKENS)
        self._clock = clock
        self._codec = codec
        self._source = source

    async def refresh(self, *, force: bool = False) -> dict[str, object]:
        """Fetch a new token when the stored one is missing or close to expiry (lease holder
        only)."""
        if self._source is None:
            return {"refreshed": False, "reason": "no WeChat configured"}
        appid = self._source.appid
        now = self._clock.now()
        doc = await self._tokens.find_one({"_id": appid})
        if doc is not None and not force and doc["expires_at"] - REFRESH_MARGIN > now:
            return {"refreshed": False}
        fetched = await self._source.fetch(force_refresh=force)
        sealed = await self._codec.seal_secret(
            "wechat_tokens", appid, "access_token", fetched.token
        )
        await self._tokens.update_one(
            {"_id": appid},
            {
                "$set": {
                    "access_token": sealed,
                    "expires_at": now + dt.timedelta(seconds=fetched.expires_in),
                    "fetched_at": now,
                }
            },
            upsert=True,
        )
        return {"refreshed": True, "expires_in": fetched.expires_in}

    async def current(self, appid: str) -> str | None:
        """The token every process uses; None when there is none or it has expired."""
        doc = await self._tokens.find_one({"_id": appid})
        if doc is None or doc["expires_at"] <= self._clock.now():
            return None
        return str(
            await self._codec.open("wechat_tokens", appid, "access_token", doc["access_token"])
        )

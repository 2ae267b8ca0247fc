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
        await self._store(appid, fetched, now)
        return {"refreshed": True, "expires_in": fetched.expires_in}

    async def renew(self) -> str | None:
        """Any process whose call WeChat refused for its token (40001, 40014, 42001) may call this,
        lease or not: stable_token *without* force_refresh answers every caller with the token
        that is valid now, so it never invalidates the token other processes hold. The answer is
        stored, so the other processes pick it up too."""
        if self._source is None:
            return None
        fetched = await self._source.fetch(force_refresh=False)
        await self._store(self._source.appid, fetched, self._clock.now())
        return fetched.token

    async def _store(self, appid: str, fetched: FetchedToken, now: dt.datetime) -> None:
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

    async def current(self, appid: str) -> str | None:
        """The token every process uses; None when there is none or it has expired."""
        doc = await self._tokens.find_one({"_id": appid})
        if doc is None or doc["expires_at"] <= self._clock.now():
            return None
        return str(
            await self._codec.open("wechat_tokens", appid, "access_token", doc["access_token"])
        )


# --- the mini-program port: what the services ask of WeChat ---------------------------------


@dataclass(frozen=True)
class WeChatSession:
    """What `jscode2session` answers. The session key never leaves the server unsealed."""

    openid: str
    session_key: str
    unionid: str | None = None


class WeChatError(Exception):
    """WeChat answered with an error code; subclasses name the cases the services act on."""

    def __init__(self, errcode: int, errmsg: str = ""):
        super().__init__(f"WeChat errcode {errcode}: {errmsg}")
        self.errcode = errcode
        self.errmsg = errmsg


class WeChatInvalidCode(WeChatError):
    """A login or phone-number code that is unknown, expired or used (40029, 40163, 40226)."""


class WeChatBusy(WeChatError):
    """WeChat asked us to retry (-1 system busy), and the adapter's retries ran out."""


class WeChatQuota(WeChatError):
    """An API or per-user quota is exhausted (45009, 45011, 45047)."""


class WeChatTokenInvalid(WeChatError):
    """The access token was refused (40001, 40014, 42001): refresh and retry once."""


class WeChatUserRefused(WeChatError):
    """The user has not accepted (or has revoked) this subscribe-message template (43101)."""


class WeChatPort(Protocol):
    """The WeChat calls the mini-program API and the notifier make. Every method runs the
    synchronous client off the event loop and raises the errors above (or WeChatUnavailable)."""

    async def code_to_session(self, code: str) -> WeChatSession: ...

    async def send_subscribe_message(
        self,
        openid: str,
        template_id: str,
        data: dict[str, str],
        page: str | None = None,
    ) -> None: ...

    async def phone_number(self, code: str) -> str: ...

    async def text_is_safe(self, openid: str, content: str, scene: int = 2) -> bool: ...

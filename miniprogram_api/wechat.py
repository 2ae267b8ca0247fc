"""The WeChat adapter: the stable_token source and the mini-program calls, real or stand-in."""

from __future__ import annotations

import asyncio
import json
import logging
import threading
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import requests
from tornado.httpclient import AsyncHTTPClient, HTTPClientError
from wechatpy import WeChatClient
from wechatpy.exceptions import WeChatClientException

from models.wechat import (
    FetchedToken,
    WeChatBusy,
    WeChatError,
    WeChatInvalidCode,
    WeChatQuota,
    WeChatSession,
    WeChatTokenInvalid,
    WeChatUnavailable,
    WeChatUserRefused,
)

log = logging.getLogger("anbang.wechat")


class StableTokenSource:
    """WeChat's stable_token endpoint: the same token for every caller until it expires, which
    several processes and a standby can share without invalidating each other's."""

    def __init__(self, base_url: str, appid: str, secret: str, timeout: float = 10.0):
        self._url = base_url.rstrip("/") + "/cgi-bin/stable_token"
        self._appid = appid
        self._secret = secret
        self._timeout = timeout

    @property
    def appid(self) -> str:
        return self._appid

    async def fetch(self, force_refresh: bool = False) -> FetchedToken:
        body = {
            "grant_type": "client_credential",
            "appid": self._appid,
            "secret": self._secret,
            "force_refresh": force_refresh,
        }
        client = AsyncHTTPClient()
        try:
            response = await client.fetch(
                self._url,
                method="POST",
                body=json.dumps(body),
                headers={"Content-Type": "application/json"},
                request_timeout=self._timeout,
            )
            answer = json.loads(response.body)
        except (HTTPClientError, OSError, ValueError) as exc:
            raise WeChatUnavailable(f"stable_token failed: {type(exc).__name__}") from None
        if "access_token" not in answer:
            raise WeChatUnavailable(
                f"stable_token refused: errcode {answer.get('errcode')} {answer.get('errmsg')}"
            )
        return FetchedToken(str(answer["access_token"]), int(answer.get("expires_in", 7200)))


# --- the mini-program calls ---------------------------------------------------------------------

# WeChat's error codes, grouped by what the adapter does about them.
SYSTEM_BUSY = -1
TOKEN_CODES = frozenset({40001, 40014, 42001})
INVALID_CODE_CODES = frozenset({40029, 40163, 40226})
QUOTA_CODES = frozenset({45009, 45011, 45047})
USER_REFUSED = 43101

T = TypeVar("T")


def _classify(errcode: int, errmsg: str) -> WeChatError:
    if errcode in INVALID_CODE_CODES:
        return WeChatInvalidCode(errcode, errmsg)
    if errcode in QUOTA_CODES:
        return WeChatQuota(errcode, errmsg)
    if errcode == USER_REFUSED:
        return WeChatUserRefused(errcode, errmsg)
    if errcode in TOKEN_CODES:
        return WeChatTokenInvalid(errcode, errmsg)
    if errcode == SYSTEM_BUSY:
        return WeChatBusy(errcode, errmsg)
    return WeChatError(errcode, errmsg)


class _QueryRedactingFilter(logging.Filter):
    """urllib3 logs each request's URL at DEBUG, query string included, and WeChat wants the
    access token (and jscode2session the secret and the login code) in the query string."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple) and any(
            isinstance(arg, str) and "?" in arg for arg in record.args
        ):
            record.args = tuple(
                arg.split("?", 1)[0] + "?[redacted]" if isinstance(arg, str) and "?" in arg else arg
                for arg in record.args
            )
        return True


def _redact_urllib3_logs() -> None:
    logger = logging.getLogger("urllib3.connectionpool")
    if not any(isinstance(f, _QueryRedactingFilter) for f in logger.filters):
        logger.addFilter(_QueryRedactingFilter())


class _PortClient(WeChatClient):
    """wechatpy's client aimed at one base URL, holding the token of the call it is making.

    One per worker thread, so the token set for a call is never another thread's. wechatpy would
    fetch a token itself from api.weixin.qq.com/cgi-bin/token, ignoring the base URL and
    invalidating the token every other process holds; here the token always comes from the
    adapter, and wechatpy's own retry is off because the adapter does its own.
    """

    def __init__(self, base_url: str, appid: str, secret: str, timeout: float, trust_env: bool):
        super().__init__(appid, secret, timeout=timeout, auto_retry=False)
        self.API_BASE_URL = f"{base_url}/cgi-bin/"
        self.wxa.API_BASE_URL = f"{base_url}/"
        self._http.trust_env = trust_env
        self.call_token: str | None = None

    @property
    def access_token(self) -> str | None:
        # None drops the parameter (requests omits None values): jscode2session needs no token.
        return self.call_token

    def fetch_access_token(self) -> dict[str, Any]:
        raise WeChatUnavailable("the adapter supplies the access token; wechatpy never fetches it")

    def close(self) -> None:
        self._http.close()


class WeChatAdapter:
    """The `WeChatPort` on wechatpy. wechatpy is synchronous, so every call runs in a bounded
    thread pool under a deadline; the event loop never waits on WeChat."""

    def __init__(
        self,
        base_url: str,
        appid: str,
        secret: str,
        *,
        token_provider: Callable[[], Awaitable[str | None]],
        token_refresher: Callable[[], Awaitable[object]],
        timeout: float = 10.0,
        max_workers: int = 8,
        busy_attempts: int = 3,
        busy_base_delay: float = 0.5,
        trust_env: bool = True,
    ):
        """`token_provider` answers the stored access token (None when there is none);
        `token_refresher` asks stable_token for the current one and stores it. `trust_env` lets
        requests use proxy settings from the environment (an egress proxy in production)."""
        self._base_url = base_url.rstrip("/")
        self._appid = appid
        self._secret = secret
        self._token_provider = token_provider
        self._token_refresher = token_refresher
        self._timeout = timeout
        self._busy_attempts = busy_attempts
        self._busy_base_delay = busy_base_delay
        self._trust_env = trust_env
        self._executor = ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="wechat")
        self._local = threading.local()
        self._clients: list[_PortClient] = []
        self._clients_lock = threading.Lock()
        # Concurrent calls refused for the same stale token renew it once, not once each.
        self._renewal = asyncio.Lock()
        _redact_urllib3_logs()

    @property
    def appid(self) -> str:
        return self._appid

    async def close(self) -> None:
        """Wait for calls in flight (each bounded by its deadline), then close the connections."""
        await asyncio.to_thread(self._executor.shutdown, wait=True, cancel_futures=True)
        with self._clients_lock:
            for client in self._clients:
                client.close()
            self._clients.clear()

    # --- the port ---------------------------------------------------------------------------

    async def code_to_session(self, code: str) -> WeChatSession:
        answer = await self._call(
            "code_to_session", lambda client: client.wxa.code_to_session(code), with_token=False
        )
        openid, session_key = answer.get("openid"), answer.get("session_key")
        if not (isinstance(openid, str) and openid and isinstance(session_key, str)):
            raise WeChatUnavailable("jscode2session answered without an openid or session key")
        unionid = answer.get("unionid")
        return WeChatSession(
            openid=openid,
            session_key=session_key,
            unionid=unionid if isinstance(unionid, str) else None,
        )

    async def send_subscribe_message(
        self,
        openid: str,
        template_id: str,
        data: dict[str, str],
        page: str | None = None,
    ) -> None:
        # WeChat wants each template field as {"value": ...}.
        fields = {key: {"value": value} for key, value in data.items()}
        await self._call(
            "send_subscribe_message",
            lambda client: client.wxa.send_subscribe_message(openid, template_id, fields, page),
        )

    async def phone_number(self, code: str) -> str:
        # wechatpy lacks getuserphonenumber; its request layer still adds the token and checks
        # the answer.
        url = f"{self._base_url}/wxa/business/getuserphonenumber"
        answer = await self._call(
            "phone_number", lambda client: client.post(url, data={"code": code})
        )
        info = answer.get("phone_info")
        if not isinstance(info, dict) or not isinstance(info.get("phoneNumber"), str):
            raise WeChatUnavailable("getuserphonenumber answered without a phone number")
        watermark = info.get("watermark")
        # The watermark names the mini-program the number was issued to; one issued to another
        # app is not evidence about our user.
        if isinstance(watermark, dict) and watermark.get("appid") not in (None, self._appid):
            raise WeChatUnavailable("getuserphonenumber answered for another appid")
        return str(info["phoneNumber"])

    async def text_is_safe(self, openid: str, content: str, scene: int = 2) -> bool:
        # msgSecCheck version 2 (wechatpy only has version 1, which knows nothing of the user).
        url = f"{self._base_url}/wxa/msg_sec_check"
        body = {"content": content, "version": 2, "scene": scene, "openid": openid}
        answer = await self._call("text_is_safe", lambda client: client.post(url, data=body))
        result = answer.get("result")
        if not isinstance(result, dict) or "suggest" not in result:
            raise WeChatUnavailable("msg_sec_check answered without a suggestion")
        # "review" (a person should look) is not a pass either.
        return result["suggest"] == "pass"

    # --- the machinery ----------------------------------------------------------------------

    async def _call(
        self,
        operation: str,
        request: Callable[[_PortClient], Any],
        *,
        with_token: bool = True,
    ) -> dict[str, Any]:
        """One WeChat call: retried with backoff while WeChat is busy, retried once with a
        renewed token when WeChat refuses the token, and mapped to the port's errors."""
        renewed = False
        busy = 0
        token: str | None = None
        while True:
            if with_token:
                token = await self._token_provider()
                if token is None and not renewed:
                    renewed = True
                    await self._renew(None)
                    token = await self._token_provider()
                if token is None:
                    raise WeChatUnavailable("no WeChat access token is available yet")
            try:
                return await self._run(operation, request, token)
            except WeChatError as exc:
                if exc.errcode == SYSTEM_BUSY and busy + 1 < self._busy_attempts:
                    await asyncio.sleep(self._busy_base_delay * 2**busy)
                    busy += 1
                    continue
                if exc.errcode in TOKEN_CODES and with_token and not renewed:
                    renewed = True
                    await self._renew(token)
                    continue
                # A used login code or a refused template is the user's doing, not an incident.
                expected = exc.errcode in INVALID_CODE_CODES or exc.errcode == USER_REFUSED
                log.log(
                    logging.INFO if expected else logging.WARNING,
                    "wechat call refused",
                    extra={"fields": {"operation": operation, "errcode": exc.errcode}},
                )
                raise _classify(exc.errcode, exc.errmsg) from None

    async def _renew(self, stale: str | None) -> None:
        async with self._renewal:
            current = await self._token_provider()
            if current is not None and current != stale:
                return  # another call renewed it while this one waited
            await self._token_refresher()

    async def _run(
        self, operation: str, request: Callable[[_PortClient], Any], token: str | None
    ) -> dict[str, Any]:
        loop = asyncio.get_running_loop()
        try:
            answer = await asyncio.wait_for(
                loop.run_in_executor(self._executor, self._in_thread, request, token),
                self._timeout,
            )
        except TimeoutError:
            log.warning("wechat call timed out", extra={"fields": {"operation": operation}})
            raise WeChatUnavailable(
                f"WeChat did not answer {operation} within {self._timeout:g} s"
            ) from None
        except WeChatClientException as exc:
            if isinstance(exc.errcode, int):
                # Only the code and WeChat's message: the exception also holds the request, whose
                # URL carries the access token.
                raise WeChatError(exc.errcode, str(exc.errmsg)[:200]) from None
            status = getattr(exc.response, "status_code", None)
            raise WeChatUnavailable(f"WeChat answered {operation} with HTTP {status}") from None
        except requests.RequestException as exc:
            # Its message quotes the URL, and so the access token: only the type is kept.
            log.warning(
                "wechat call failed",
                extra={"fields": {"operation": operation, "error": type(exc).__name__}},
            )
            raise WeChatUnavailable(f"WeChat {operation} failed: {type(exc).__name__}") from None
        if not isinstance(answer, dict):
            raise WeChatUnavailable(f"WeChat answered {operation} with something not JSON")
        return answer

    def _in_thread(self, request: Callable[[_PortClient], T], token: str | None) -> T:
        client = self._client()
        client.call_token = token
        try:
            return request(client)
        finally:
            client.call_token = None

    def _client(self) -> _PortClient:
        client: _PortClient | None = getattr(self._local, "client", None)
        if client is None:
            client = _PortClient(
                self._base_url, self._appid, self._secret, self._timeout, self._trust_env
            )
            self._local.client = client
            with self._clients_lock:
                self._clients.append(client)
        return client

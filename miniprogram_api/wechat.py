"""The WeChat adapter's token source: `POST {base}/cgi-bin/stable_token`, real or stand-in."""

from __future__ import annotations

import json

from tornado.httpclient import AsyncHTTPClient, HTTPClientError

from models.wechat import FetchedToken, WeChatUnavailable


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

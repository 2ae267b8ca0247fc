"""A client that behaves like the mini-program: WeChat login with a stand-in code, binding,
tasks, photo upload and check-ins with retries. Used by the tests, the benchmarks and the load
generator; it speaks only HTTP to the API, as the real mini-program does."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import uuid
from dataclasses import dataclass
from typing import Any

from tornado.httpclient import AsyncHTTPClient, HTTPClientError

RETRY_STATUSES = frozenset({429, 502, 503, 504})


@dataclass
class MpAnswer:
    status: int
    body: bytes
    headers: dict[str, str]
    attempts: int = 1

    @property
    def json(self) -> Any:
        return json.loads(self.body) if self.body else None


def multipart(field: str, filename: str, content_type: str, data: bytes) -> tuple[str, bytes]:
    """A multipart/form-data body with one file, as wx.uploadFile sends it."""
    boundary = uuid.uuid4().hex
    head = (
        f"--{boundary}\r\n"
        f'Content-Disposition: form-data; name="{field}"; filename="{filename}"\r\n'
        f"Content-Type: {content_type}\r\n\r\n"
    ).encode()
    tail = f"\r\n--{boundary}--\r\n".encode()
    return f"multipart/form-data; boundary={boundary}", head + data + tail


class MiniProgramClient:
    """One person's mini-program: keeps its token and device id like the real one."""

    def __init__(
        self,
        base_url: str,
        *,
        http: AsyncHTTPClient | None = None,
        device_id: str | None = None,
        timeout: float = 30.0,
        keep_history: bool = False,
    ):
        self.base_url = base_url.rstrip("/")
        self.http = http or AsyncHTTPClient()
        self.token: str | None = None
        self.device_id = device_id or uuid.uuid4().hex
        self.timeout = timeout
        # Every answer, when asked for (tests check none reveals what it must not).
        self.history: list[MpAnswer] | None = [] if keep_history else None

    async def call(
        self,
        method: str,
        path: str,
        json_body: Any = None,
        *,
        body: bytes | None = None,
        headers: dict[str, str] | None = None,
    ) -> MpAnswer:
        all_headers = dict(headers or {})
        if json_body is not None:
            body = json.dumps(json_body, ensure_ascii=False).encode()
            all_headers.setdefault("Content-Type", "application/json")
        if self.token:
            all_headers.setdefault("Authorization", f"Bearer {self.token}")
        if body is None and method in ("POST", "PUT", "PATCH"):
            body = b""
        response = await self.http.fetch(
            self.base_url + path,
            method=method,
            body=body,
            headers=all_headers,
            raise_error=False,
            request_timeout=self.timeout,
        )
        if response.code == 599 and response.error is not None:
            # No answer at all (connection refused or cut): the caller decides to retry.
            raise ConnectionError(type(response.error).__name__)
        answer = MpAnswer(response.code, response.body or b"", dict(response.headers))
        if self.history is not None:
            self.history.append(answer)
        return answer

    async def login(self, label: str) -> MpAnswer:
        """`wx.login` then our login: the stand-in turns `dev:<label>` into a stable openid."""
        answer = await self.call("POST", "/mp/v1/auth/login", {"code": f"dev:{label}"})
        if answer.status == 200:
            self.token = answer.json["token"]
        return answer

    async def bind(self, code: str) -> MpAnswer:
        return await self.call("POST", "/mp/v1/auth/bind", {"binding_code": code})

    async def tasks(self, start: dt.date | None = None, end: dt.date | None = None) -> MpAnswer:
        query = []
        if start:
            query.append(f"from={start.isoformat()}")
        if end:
            query.append(f"to={end.isoformat()}")
        return await self.call("GET", "/mp/v1/me/tasks" + ("?" + "&".join(query) if query else ""))

    async def upload(
        self, data: bytes, *, filename: str = "photo.jpg", content_type: str = "image/jpeg"
    ) -> MpAnswer:
        media_type, body = multipart("file", filename, content_type, data)
        return await self.call(
            "POST", "/mp/v1/uploads", body=body, headers={"Content-Type": media_type}
        )

    async def check_in(
        self,
        *,
        lat: float,
        lng: float,
        coord_type: str = "gcj02",
        accuracy: float = 20.0,
        captured_at: dt.datetime | None = None,
        obligation_id: str | None = None,
        photo_upload_id: str | None = None,
        key: str | None = None,
        retries: int = 3,
        retry_delay: float = 0.2,
    ) -> MpAnswer:
        """One check-in; on no answer or a retryable status it is sent again with the same
        Idempotency-Key (the server answers the first result, never a second record)."""
        body: dict[str, Any] = {
            "location": {"lat": lat, "lng": lng, "coord_type": coord_type, "accuracy": accuracy},
            "captured_at": (captured_at or dt.datetime.now(dt.UTC)).isoformat(),
            "device_id": self.device_id,
        }
        if obligation_id:
            body["obligation_id"] = obligation_id
        if photo_upload_id:
            body["photo_upload_id"] = photo_upload_id
        headers = {"Idempotency-Key": key or uuid.uuid4().hex}
        attempt = 0
        while True:
            attempt += 1
            try:
                answer = await self.call("POST", "/mp/v1/checkins", body, headers=headers)
            except (ConnectionError, HTTPClientError, OSError):
                if attempt > retries:
                    raise
                await asyncio.sleep(retry_delay * attempt)
                continue
            if answer.status in RETRY_STATUSES and attempt <= retries:
                wait = float(answer.headers.get("Retry-After", "0") or 0)
                await asyncio.sleep(min(wait, 5.0) if wait else retry_delay * attempt)
                continue
            answer.attempts = attempt
            return answer

"""A request refused before its body was read (no session, no permission) is answered once the
body has arrived, on a connection that stays usable: behind nginx, a refusal sent mid-body closed
the connection on unread bytes, and the person saw 502 instead of "please sign in again"."""

from __future__ import annotations

import asyncio
import json
from urllib.parse import urlsplit


async def exchange(base_url: str, requests: list[bytes]) -> list[tuple[int, dict]]:
    """Send the requests pipelined on one connection and read each answer in turn."""
    address = urlsplit(base_url)
    reader, writer = await asyncio.open_connection(address.hostname, address.port)
    writer.write(b"".join(requests))
    await writer.drain()
    answers = []
    try:
        for _ in requests:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
            lines = head.decode("latin-1").split("\r\n")
            status = int(lines[0].split()[1])
            length = next(
                int(line.split(":", 1)[1])
                for line in lines
                if line.lower().startswith("content-length:")
            )
            body = await reader.readexactly(length)
            answers.append((status, json.loads(body)))
    finally:
        writer.close()
    return answers


def post(path: str, body: bytes, token: str | None = None) -> bytes:
    head = [
        f"POST {path} HTTP/1.1",
        "Host: localhost",
        "Content-Type: application/json",
        f"Content-Length: {len(body)}",
    ]
    if token:
        head.append(f"Authorization: Bearer {token}")
    return ("\r\n".join(head) + "\r\n\r\n").encode() + body


async def test_a_refused_request_is_answered_after_its_body_and_the_connection_lives_on(api):
    body = json.dumps({"latitude": 30.0, "longitude": 120.0, "padding": "x" * 6_000}).encode()
    answers = await exchange(
        api.base_url,
        [
            post("/mp/v1/checkins", body),
            post("/mp/v1/checkins", body, token="no-such-session"),
            b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n",
        ],
    )
    assert [status for status, _ in answers] == [401, 401, 200]
    # The mini-program's own refusals, in Chinese, as the person's phone must show them.
    assert [answer["error"]["code"] for _, answer in answers[:2]] == [
        "unauthenticated",
        "invalid_token",
    ]
    assert all("\u4e00" <= answer["error"]["message"][0] <= "\u9fff" for _, answer in answers[:2])


async def test_a_refusal_without_a_body_is_still_immediate(api):
    answers = await exchange(
        api.base_url,
        [b"GET /api/v1/caseload HTTP/1.1\r\nHost: localhost\r\n\r\n"],
    )
    assert answers[0][0] == 401


async def test_a_read_sent_with_a_body_is_refused_at_once_and_never_served(api):
    # A GET carrying a body gets no deferral: the refusal is immediate and the caseload of no
    # one is read for a caller without a session.
    body = b'{"x": 1}'
    request = (
        b"GET /api/v1/caseload HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n"
        + f"Content-Length: {len(body)}\r\n\r\n".encode()
        + body
    )
    answers = await exchange(api.base_url, [request])
    assert answers[0][0] == 401
    assert answers[0][1]["error"]["code"] == "unauthenticated"

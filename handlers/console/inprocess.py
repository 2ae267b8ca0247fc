"""The staff API called from a console page inside this process, with no socket in between: the
API's own handlers, policy and audit run on a request whose address is the officer's (as the
console's own request resolved it, behind a proxy or not), never a header a browser could forge."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass

import tornado.web
from tornado.concurrent import Future
from tornado.httputil import HTTPConnection, HTTPHeaders, RequestStartLine, ResponseStartLine


@dataclass(frozen=True)
class Origin:
    """Where tornado reads a request's address and scheme from (`connection.context`)."""

    remote_ip: str | None
    protocol: str


class LocalExchange(HTTPConnection):
    """One request to the application and its answer. A successful answer can be relayed as it
    streams (`relay`, with flow control); any other answer is kept whole in `body`."""

    def __init__(
        self,
        origin: Origin,
        relay: Callable[[LocalExchange, bytes], Future[None]] | None = None,
    ):
        self.context = origin
        self.status = 0
        self.headers = HTTPHeaders()
        self.body = bytearray()
        # The handler gave up on its answer midway (`connection.close()`): the answer is broken.
        self.cut = False
        self._relay = relay
        self._done = asyncio.Event()
        self._close_callback: Callable[[], None] | None = None

    @property
    def finished(self) -> bool:
        return self._done.is_set()

    async def wait(self) -> None:
        await self._done.wait()

    def set_close_callback(self, callback: Callable[[], None] | None) -> None:
        self._close_callback = callback

    def write_headers(
        self,
        start_line: RequestStartLine | ResponseStartLine,
        headers: HTTPHeaders,
        chunk: bytes | None = None,
    ) -> Future[None]:
        if isinstance(start_line, ResponseStartLine):
            self.status = start_line.code
        self.headers = headers
        return self.write(chunk or b"")

    def write(self, chunk: bytes) -> Future[None]:
        if self._relay is not None and 200 <= self.status < 300 and chunk:
            return self._relay(self, chunk)
        self.body += chunk
        written: Future[None] = Future()
        written.set_result(None)
        return written

    def finish(self) -> None:
        self._done.set()

    def close(self) -> None:
        self.cut = True
        self._done.set()


async def dispatch(
    app: tornado.web.Application,
    exchange: LocalExchange,
    method: str,
    uri: str,
    headers: HTTPHeaders,
    body: bytes = b"",
) -> None:
    """Run one request through `app`'s routing as its HTTP server would, and wait for the answer."""
    delegate = app.start_request(None, exchange)
    prepared = delegate.headers_received(RequestStartLine(method, uri, "HTTP/1.1"), headers)
    if prepared is not None:
        await prepared
    # A request refused on its headers (401, 403, 413) is answered before its body is read.
    if not exchange.finished:
        if body:
            received = delegate.data_received(body)
            if received is not None:
                await received
        delegate.finish()
    await exchange.wait()

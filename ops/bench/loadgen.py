"""A lean HTTP/1.1 load generator for loopback: keep-alive or one connection per request."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

from ops.bench.measure import BenchError, Budget, CpuMeter, Run

_HEADER_END = b"\r\n\r\n"


# Not Tornado's AsyncHTTPClient: it opens a new connection for every request and spends more CPU
# per request than the server it would measure, so the ceiling found would be the client's. This
# protocol writes a fixed request and parses only the status line and Content-Length.
class Connection(asyncio.Protocol):
    """One client connection that carries one request at a time and returns its status (the
    answer's status line and headers stay in `head`, its body in `body`, until the next
    request)."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.body = b""
        self.head = b""
        self._buffer = bytearray()
        self._waiter: asyncio.Future[int] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self._buffer += data
        waiter = self._waiter
        if waiter is None or waiter.done():
            return
        end = self._buffer.find(_HEADER_END)
        if end < 0:
            return
        head = bytes(self._buffer[:end])
        try:
            status, length = _parse_head(head)
        except BenchError as exc:
            waiter.set_exception(exc)
            return
        total = end + len(_HEADER_END) + length
        if len(self._buffer) < total:
            return
        self.head = head
        self.body = bytes(self._buffer[end + len(_HEADER_END) : total])
        del self._buffer[:total]
        waiter.set_result(status)

    def connection_lost(self, exc: Exception | None) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_exception(BenchError(f"the server closed the connection mid-answer: {exc}"))

    async def request(self, payload: bytes) -> int:
        if self.transport is None or self.transport.is_closing():
            raise BenchError("the connection is closed")
        self._waiter = asyncio.get_running_loop().create_future()
        self.transport.write(payload)
        return await self._waiter

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


def _parse_head(head: bytes) -> tuple[int, int]:
    lines = head.split(b"\r\n")
    parts = lines[0].split(b" ", 2)
    if len(parts) < 2 or not parts[0].startswith(b"HTTP/1."):
        raise BenchError(f"not an HTTP/1.x answer: {lines[0][:80]!r}")
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return int(parts[1]), int(value.strip())
    # Every answer of ours has a length; without one the body's end could not be found.
    raise BenchError("an answer without Content-Length")


def build_request(
    host: str,
    port: int,
    path: str,
    *,
    keep_alive: bool,
    method: str = "GET",
    headers: dict[str, str] | None = None,
    body: bytes = b"",
) -> bytes:
    lines = [
        f"{method} {path} HTTP/1.1",
        f"Host: {host}:{port}",
        "User-Agent: anbang-bench",
        "Accept: application/json",
        *(f"{name}: {value}" for name, value in (headers or {}).items()),
    ]
    if body or method in ("POST", "PUT", "PATCH"):
        lines.append(f"Content-Length: {len(body)}")
    if not keep_alive:
        lines.append("Connection: close")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("ascii") + body


@dataclass(frozen=True)
class LoadSpec:
    """What to drive: a loopback address and path, how many requests in flight, for how long."""

    host: str
    port: int
    path: str
    connections: int
    seconds: float
    max_requests: int
    keep_alive: bool


def check_loopback(host: str) -> None:
    if host not in ("127.0.0.1", "::1", "localhost"):
        raise BenchError("the load generator only drives loopback addresses")


async def connect(host: str, port: int) -> Connection:
    check_loopback(host)
    loop = asyncio.get_running_loop()
    _transport, protocol = await loop.create_connection(Connection, host, port)
    return protocol


async def drive(spec: LoadSpec, name: str, server_pid: int, client_pid: int) -> Run:
    """Run the load for spec.seconds (or spec.max_requests) and return its figures.

    Any answer other than 200 is counted as an error; the caller decides whether that fails the run.
    """
    check_loopback(spec.host)
    payload = build_request(spec.host, spec.port, spec.path, keep_alive=spec.keep_alive)
    latencies: list[float] = []
    errors = 0

    async def keep_alive_worker(budget: Budget) -> None:
        nonlocal errors
        connection = await connect(spec.host, spec.port)
        try:
            while budget.take():
                started = time.perf_counter()
                status = await connection.request(payload)
                latencies.append(time.perf_counter() - started)
                errors += status != 200
        finally:
            connection.close()

    async def new_connection_worker(budget: Budget) -> None:
        nonlocal errors
        while budget.take():
            # The connect is part of what a client without keep-alive pays, so it is timed too.
            started = time.perf_counter()
            connection = await connect(spec.host, spec.port)
            try:
                status = await connection.request(payload)
            finally:
                connection.close()
            latencies.append(time.perf_counter() - started)
            errors += status != 200

    worker = keep_alive_worker if spec.keep_alive else new_connection_worker
    budget = Budget(spec.seconds, spec.max_requests)
    meter = CpuMeter({"server": server_pid, "client": client_pid})
    meter.start()
    started = time.perf_counter()
    # A stuck server must not hang the run: the phase gets its length plus a fixed allowance.
    try:
        async with asyncio.timeout(spec.seconds + 15), asyncio.TaskGroup() as workers:
            for _ in range(spec.connections):
                workers.create_task(worker(budget))
    except* (OSError, BenchError) as failed:
        # One broken connection stops them all (the group cancels the rest); say what broke.
        first = failed.exceptions[0]
        raise BenchError(f"{name}: {type(first).__name__}: {first}") from first
    elapsed = time.perf_counter() - started
    cpu = meter.stop()
    return Run.from_latencies(
        name,
        "req/s",
        latencies,
        errors=errors,
        seconds=elapsed,
        concurrency=spec.connections,
        cpu=cpu,
    )

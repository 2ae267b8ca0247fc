"""A loopback TCP proxy that puts network faults between the application and a server (in the
tests, the embedded database): resets, silence, latency, and a cut at a chosen message.

    proxy = FaultProxy("127.0.0.1", database_port, framer=mongodb_frame_length)
    await proxy.start()                 # listens on a free 127.0.0.1 port: proxy.port
    proxy.cut()                         # the server is gone: every connection reset, new ones too
    proxy.restore()                     # back to plain forwarding
    proxy.cut_before(to_server=lambda msg: mongodb_command(msg) == ("update", "occurrences"))
    await proxy.tripped.wait()          # the update was held back and everything reset
    await proxy.stop()                  # closes every socket and task it made

Faults take effect at once on open connections and on new ones, and last until `restore()`:

- `cut()`: every open connection is reset (RST, so the peer reads ECONNRESET) and each new one is
  reset as soon as it is accepted — a server that crashed or a link that dropped.
- `blackhole()`: connections are accepted and kept, but nothing passes either way; what was
  sent waits in the socket buffers (as TCP would retransmit it) and flows again on `restore()`
  — a partition or a hung server, which clients only notice through their own timeouts.
- `delay(seconds)`: each piece forwarded (either way) waits `seconds` first.
- `hold_before(to_server=...)`: hold back the first piece going to the server that the trigger
  accepts (its connection waits; the others flow) until `release()`; `held` is set when it is
  caught — another process's request frozen at one chosen step, to race others against it.
- `drop_after(n_bytes)`: forward `n_bytes` more towards the server (the last message may be
  torn), then cut.
- `cut_before(to_server=..., to_client=...)`: forward until a piece going that way satisfies its
  trigger; that piece is not forwarded, and the proxy cuts. With a `framer`, pieces are whole
  protocol messages, so a trigger can name a command (`mongodb_command` reads a MongoDB one)
  or, watching replies, lose the answer to a request the server has carried out.

`tripped` is set when `drop_after` or `cut_before` fires (cleared by `restore()`), so a test can
wait for the fault instead of sleeping. Plain methods, not coroutines: a fault can be thrown
from anywhere, also from a synchronous callback such as a driver's event listener.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import socket
import struct
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import bson

# The length of the first whole message at the start of a buffer, or None while it is incomplete.
Framer = Callable[[bytes | bytearray], int | None]
Trigger = Callable[[bytes], bool]

_OP_MSG = 2013


def mongodb_frame_length(buffer: bytes | bytearray) -> int | None:
    """MongoDB wire protocol framing: every message starts with its total length (int32 LE)."""
    if len(buffer) < 4:
        return None
    # A length too small to be a message (a broken peer) passes on whatever has arrived.
    length = max(int.from_bytes(buffer[:4], "little"), 4)
    return length if len(buffer) >= length else None


def mongodb_ids(message: bytes) -> tuple[int, int]:
    """(requestID, responseTo) from a MongoDB message header: a reply names its request."""
    request_id, response_to = struct.unpack_from("<ii", message, 4)
    return request_id, response_to


def mongodb_command(message: bytes) -> tuple[str, Any] | None:
    """(command name, its argument — usually the collection) of an OP_MSG, e.g.
    ("insert", "checkins"); None for any other message."""
    if len(message) < 21 or struct.unpack_from("<i", message, 12)[0] != _OP_MSG:
        return None
    position = 20  # header (16 bytes) and flag bits (4)
    end = len(message)
    while position < end:
        kind = message[position]
        size = struct.unpack_from("<i", message, position + 1)[0]
        if kind == 0:
            body = bson.decode(message[position + 1 : position + 1 + size])
            name = next(iter(body), None)
            return (name, body[name]) if name is not None else None
        position += 1 + size  # a kind-1 section (document sequence): its size counts itself
    return None


class Fault(enum.StrEnum):
    NONE = "none"
    CUT = "cut"
    BLACKHOLE = "blackhole"


@dataclass(eq=False)
class _Link:
    """One client connection and its connection to the server."""

    client: asyncio.StreamWriter
    server: asyncio.StreamWriter | None = None
    tasks: set[asyncio.Task[None]] = field(default_factory=set)


def _reset(writer: asyncio.StreamWriter) -> None:
    """Close with RST rather than FIN: the peer sees a reset connection, not an orderly end."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


class FaultProxy:
    """Forwards 127.0.0.1:<port> to (upstream_host, upstream_port), with faults on demand."""

    def __init__(
        self,
        upstream_host: str,
        upstream_port: int,
        *,
        framer: Framer | None = None,
        chunk_size: int = 64 * 1024,
    ):
        self.upstream = (upstream_host, upstream_port)
        self.framer = framer
        self.chunk_size = chunk_size
        self.fault = Fault.NONE
        self.tripped = asyncio.Event()
        self.accepted = 0
        self._server: asyncio.Server | None = None
        self._links: set[_Link] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._flowing = asyncio.Event()
        self._flowing.set()
        self._delay = 0.0
        self._budget: int | None = None
        self._triggers: dict[bool, Trigger] = {}  # towards the server? -> trigger
        self._hold: Trigger | None = None
        self.held = asyncio.Event()
        self._released = asyncio.Event()

    # --- lifecycle ------------------------------------------------------------------------

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)

    async def stop(self) -> None:
        """Stop listening and close every connection and task the proxy made."""
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
        for link in list(self._links):
            self._close(link, reset=False)
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        # Let the transports' connection_lost callbacks run, so every socket is closed now.
        await asyncio.sleep(0)

    async def __aenter__(self) -> FaultProxy:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    @property
    def port(self) -> int:
        assert self._server is not None, "start() the proxy first"
        return int(self._server.sockets[0].getsockname()[1])

    @property
    def connections(self) -> int:
        """Client connections open now."""
        return len(self._links)

    # --- faults ---------------------------------------------------------------------------

    def cut(self) -> None:
        """Reset every open connection, and every new one until `restore()`."""
        self.fault = Fault.CUT
        self._flowing.set()  # pumps held by a blackhole wake up, see the cut and end
        for link in list(self._links):
            self._close(link, reset=True)

    def blackhole(self) -> None:
        """Keep connections (new ones too) but pass nothing either way until `restore()`."""
        self.fault = Fault.BLACKHOLE
        self._flowing.clear()

    def delay(self, seconds: float) -> None:
        """Wait `seconds` before forwarding each piece, either way (0 to stop)."""
        self._delay = max(0.0, seconds)

    def drop_after(self, n_bytes: int) -> None:
        """Forward `n_bytes` more towards the server, then cut."""
        self._budget = max(0, n_bytes)

    def cut_before(
        self, *, to_server: Trigger | None = None, to_client: Trigger | None = None
    ) -> None:
        """Cut instead of forwarding the first piece going either way that its trigger accepts
        (each trigger sees every piece going its way until one fires)."""
        self._triggers = {
            towards: trigger
            for towards, trigger in ((True, to_server), (False, to_client))
            if trigger is not None
        }

    def hold_before(self, *, to_server: Trigger) -> None:
        """Hold back the first piece going to the server that `to_server` accepts until
        `release()`; `held` is set once it is caught."""
        self._hold = to_server
        self.held.clear()
        self._released.clear()

    def release(self) -> None:
        """Forward the piece held back (if any) and hold nothing more."""
        self._hold = None
        self._released.set()

    def restore(self) -> None:
        """Plain forwarding again: no fault, no delay, nothing armed."""
        self.release()
        self.fault = Fault.NONE
        self._delay = 0.0
        self._budget = None
        self._triggers = {}
        self.tripped.clear()
        self._flowing.set()

    def _trip(self) -> None:
        self._budget = None
        self._triggers = {}
        self.cut()
        self.tripped.set()

    # --- forwarding -----------------------------------------------------------------------

    def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        # A plain callback, not a coroutine: the link's tasks are the proxy's own, so it can
        # cancel them without asyncio's stream machinery reporting the cancellation.
        self.accepted += 1
        if self.fault is Fault.CUT:
            _reset(writer)
            return
        link = _Link(writer)
        self._links.add(link)
        self._track(link, asyncio.create_task(self._serve(link, reader)))

    async def _serve(self, link: _Link, reader: asyncio.StreamReader) -> None:
        try:
            server_reader, link.server = await asyncio.open_connection(*self.upstream)
        except OSError:
            self._close(link, reset=True)
            return
        if link not in self._links:  # cut or stopped while connecting
            self._close(link, reset=True)
            return
        back = asyncio.create_task(
            self._pump(link, server_reader, link.client, towards_server=False)
        )
        self._track(link, back)
        await self._pump(link, reader, link.server, towards_server=True)

    def _track(self, link: _Link, task: asyncio.Task[None]) -> None:
        link.tasks.add(task)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        task.add_done_callback(link.tasks.discard)

    async def _pump(
        self,
        link: _Link,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        *,
        towards_server: bool,
    ) -> None:
        buffer = bytearray()
        try:
            while link in self._links:
                data = await reader.read(self.chunk_size)
                if not data:
                    break
                buffer += data
                for piece in self._pieces(buffer):
                    await self._flowing.wait()
                    if self._delay:
                        await asyncio.sleep(self._delay)
                    if towards_server and self._hold is not None and self._hold(piece):
                        self._hold = None
                        self.held.set()
                        await self._released.wait()
                    if link not in self._links:
                        return
                    if not await self._pass(piece, writer, towards_server):
                        return
        except (ConnectionError, OSError):
            pass
        finally:
            # One side ended or failed: the other side follows (no half-open links).
            if link in self._links:
                self._close(link, reset=False)

    def _pieces(self, buffer: bytearray) -> list[bytes]:
        """Take what can be forwarded from the front of `buffer`: whole messages when framed."""
        if self.framer is None:
            pieces = [bytes(buffer)]
            buffer.clear()
            return pieces
        pieces = []
        while (length := self.framer(buffer)) is not None:
            pieces.append(bytes(buffer[:length]))
            del buffer[:length]
        return pieces

    async def _pass(self, piece: bytes, writer: asyncio.StreamWriter, towards_server: bool) -> bool:
        """Forward one piece unless an armed fault fires; False if it did."""
        trigger = self._triggers.get(towards_server)
        if trigger is not None and trigger(piece):
            self._trip()
            return False
        if self._budget is None or not towards_server:
            writer.write(piece)
            await writer.drain()
            return True
        allowed = piece[: self._budget]
        self._budget -= len(allowed)
        writer.write(allowed)
        await writer.drain()  # the allowed bytes leave before the reset discards the buffer
        if self._budget == 0:
            self._trip()
            return False
        return True

    def _close(self, link: _Link, *, reset: bool) -> None:
        self._links.discard(link)
        for writer in (link.client, link.server):
            if writer is None or writer.transport.is_closing():
                continue
            if reset:
                _reset(writer)
            else:
                writer.close()
        current = asyncio.current_task()
        for task in list(link.tasks):
            if task is not current:
                task.cancel()

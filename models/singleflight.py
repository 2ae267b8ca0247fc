"""Single-flight loading for process caches: concurrent misses of one key await one load.

A morning burst finds a cache empty (a fresh process, or an entry just expired) in many requests
at once; without this each of them reads the same document (the rules, an org chain, a key),
and the database does the same work once per request in flight instead of once.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Hashable
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class SingleFlight(Generic[K, V]):
    """Loads in flight by key; each owner (a service) holds its own."""

    def __init__(self) -> None:
        self._flights: dict[K, asyncio.Future[V]] = {}

    async def load(self, key: K, loader: Callable[[], Awaitable[V]]) -> V:
        """`loader()`'s answer, shared with every caller asking for `key` meanwhile (its error
        too: the next caller after it starts a new load)."""
        flight = self._flights.get(key)
        if flight is None:
            flight = asyncio.ensure_future(loader())
            self._flights[key] = flight
            flight.add_done_callback(lambda done: self._landed(key, done))
        # A caller that gives up (its request cancelled) leaves the load to the others.
        return await asyncio.shield(flight)

    def _landed(self, key: K, done: asyncio.Future[V]) -> None:
        if self._flights.get(key) is done:
            del self._flights[key]
        # Retrieved here, so a failure nobody awaited any more is not reported as lost.
        with contextlib.suppress(asyncio.CancelledError):
            done.exception()

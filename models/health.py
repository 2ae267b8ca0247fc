"""Readiness: whether this process can serve requests (database reachable, keys loaded)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping

ReadinessCheck = Callable[[], Awaitable[bool]]


class ReadinessService:
    """Runs the named checks the composition root registered; each answers True when ready."""

    def __init__(self, checks: Mapping[str, ReadinessCheck]):
        self._checks = dict(checks)

    async def check(self) -> dict[str, bool]:
        results: dict[str, bool] = {}
        for name, check in self._checks.items():
            try:
                results[name] = bool(await check())
            except Exception:
                results[name] = False
        return results

"""The jobs process: one lease holder runs the periodic sweeps; others wait to take over."""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import os
import socket
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from apscheduler.schedulers.asyncio import AsyncIOScheduler

from models.clock import Clock
from models.leases import LeaseService
from models.telemetry import NullTelemetry, SweepObserver

log = logging.getLogger("anbang.jobs")

JOBS_LEASE = "jobs"


class Sweep(Protocol):
    """A periodic, idempotent pass over everything due; catches up after downtime by itself."""

    name: str
    interval_seconds: int
    description: str

    async def run(self, now: dt.datetime) -> dict[str, Any]:
        """Do the work due at `now`; answer counts for the log."""
        ...


@dataclass
class LeaseSettings:
    ttl: dt.timedelta = dt.timedelta(seconds=45)
    # Renew well within the TTL so one slow round trip never loses the lease; a second
    # process takes over within ttl + renew_every of the holder's death (under a minute).
    renew_every: dt.timedelta = dt.timedelta(seconds=10)


def holder_id() -> str:
    """A fresh id for this process, made after start (never inherited across a fork)."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


@dataclass
class JobsProcess:
    leases: LeaseService
    sweeps: Sequence[Sweep]
    clock: Clock
    lease: LeaseSettings = field(default_factory=LeaseSettings)
    holder: str = field(default_factory=holder_id)
    holding: bool = False
    # Where runs and the lease are reported (the process's metrics); nowhere by default.
    observer: SweepObserver = field(default_factory=NullTelemetry)
    # The running scheduler (None before `run` starts it), so a takeover can bring every
    # sweep forward.
    _scheduler: AsyncIOScheduler | None = field(default=None, init=False, repr=False)

    async def run_sweep(self, sweep: Sweep) -> None:
        if not self.holding:
            return
        started = time.monotonic()
        try:
            result = await sweep.run(self.clock.now())
        except Exception as exc:
            # A failed sweep is retried at its next interval; it never stops the others.
            log.error(
                "sweep failed",
                extra={"fields": {"sweep": sweep.name, "exception": type(exc).__name__}},
            )
            self.observer.sweep_finished(sweep.name, "failed", time.monotonic() - started, {})
            return
        counts = {k: v for k, v in result.items() if isinstance(v, int) and not isinstance(v, bool)}
        self.observer.sweep_finished(sweep.name, "ok", time.monotonic() - started, counts)
        log.info("sweep done", extra={"fields": {"sweep": sweep.name, **result}})

    async def renew_lease(self) -> None:
        try:
            held = await self.leases.acquire(JOBS_LEASE, self.holder, self.lease.ttl)
        except Exception as exc:
            held = False
            log.warning("lease renewal failed", extra={"fields": {"exception": type(exc).__name__}})
        if held != self.holding:
            log.info(
                "lease " + ("acquired" if held else "lost"),
                extra={"fields": {"holder": self.holder}},
            )
        taking_over = held and not self.holding
        change = None if held == self.holding else "acquired" if held else "lost"
        self.holding = held
        self.observer.lease_state(held, change)
        if taking_over:
            self._run_every_sweep_now()

    def _run_every_sweep_now(self) -> None:
        """A process that just took the lease catches up at once, as one that just started
        does: the holder it replaces may have died mid-sweep, and waiting for each sweep's next
        interval would leave missed windows unmarked for minutes (close_windows) or hours."""
        scheduler = self._scheduler
        if scheduler is None or not scheduler.running:
            return  # before start: every sweep is scheduled to run at start anyway
        now = dt.datetime.now(dt.UTC)
        for sweep in self.sweeps:
            # The interval continues from now; max_instances=1 still keeps one run at a time.
            scheduler.modify_job(sweep.name, next_run_time=now)

    async def run(self, stop: asyncio.Event) -> None:
        scheduler = AsyncIOScheduler(event_loop=asyncio.get_running_loop(), timezone=dt.UTC)
        scheduler.add_job(
            self.renew_lease,
            "interval",
            id="lease",
            seconds=self.lease.renew_every.total_seconds(),
            max_instances=1,
            coalesce=True,
        )
        for sweep in self.sweeps:
            self.observer.sweep_scheduled(sweep.name, sweep.interval_seconds)
            scheduler.add_job(
                self.run_sweep,
                "interval",
                args=[sweep],
                id=sweep.name,
                seconds=sweep.interval_seconds,
                max_instances=1,
                coalesce=True,
                # Run once at start as well: a process that was down catches up at once
                # instead of one interval later.
                next_run_time=dt.datetime.now(dt.UTC),
            )
        await self.renew_lease()
        scheduler.start()
        self._scheduler = scheduler
        log.info(
            "jobs ready",
            extra={
                "fields": {
                    "holder": self.holder,
                    "holding": self.holding,
                    "sweeps": [s.name for s in self.sweeps],
                }
            },
        )
        try:
            await stop.wait()
        finally:
            self._scheduler = None
            scheduler.shutdown(wait=False)
            if self.holding:
                # Hand over at once rather than making the standby wait for the TTL.
                await self.leases.release(JOBS_LEASE, self.holder)
                self.observer.lease_state(False, "released")
            log.info("jobs stopped")


def select_sweeps(sweeps: Sequence[Sweep], name: str) -> list[Sweep]:
    """The sweeps `name` designates (`all`: every one, in order); KeyError for an unknown name."""
    if name == "all":
        return list(sweeps)
    chosen = [s for s in sweeps if s.name == name]
    if not chosen:
        known = ", ".join(s.name for s in sweeps) or "none yet"
        raise KeyError(f"no sweep named {name!r}; known sweeps: {known}")
    return chosen


async def run_once(sweeps: Sequence[Sweep], name: str, now: dt.datetime) -> list[dict[str, Any]]:
    """Run one sweep (or `all`, in order) at `now`, outside the lease, for operators and tests."""
    chosen = select_sweeps(sweeps, name)
    results = []
    for sweep in chosen:
        results.append({"sweep": sweep.name, **(await sweep.run(now))})
    return results

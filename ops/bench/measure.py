"""Measurement helpers for the benchmarks: latency percentiles, CPU time, one run's figures, and
the database commands a piece of work sends."""

from __future__ import annotations

import contextlib
import math
import os
import tempfile
import time
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from pymongo import monitoring

_CLOCK_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


class BenchError(Exception):
    """A benchmark could not produce trustworthy figures; the message says why."""


@contextlib.contextmanager
def embedded_database(**options: Any) -> Iterator[str]:
    """An embedded database of the benchmark's own, in this process, as `make run` runs it (its
    corrections applied): yields its URI, then stops it and removes its files. `options` go to
    the server (`replica_set_name=None`: a standalone one, without an oplog)."""
    # Imported here: nothing outside the test fixtures and these tools may depend on SecantusDB.
    from secantus import SecantusDBServer

    from server.embedded_tuning import journal_bulk_writes, plan_id_filters_by_id

    plan_id_filters_by_id()
    journal_bulk_writes()
    with tempfile.TemporaryDirectory(prefix="anbang-bench-db-") as temp:
        database = SecantusDBServer(
            host="127.0.0.1", port=0, storage_path=temp, enable_test_commands=False, **options
        )
        database.start()
        try:
            host, port = database.address
            # The embedded database is a single node without retryable-write support.
            yield f"mongodb://{host}:{port}/?retryWrites=false"
        finally:
            database.stop()


def process_cpu_seconds(pid: int) -> float | None:
    """User + system CPU seconds `pid` has used so far; None where /proc is not available."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as stat:
            raw = stat.read()
    except OSError:
        return None
    # The command name (field 2) may itself hold spaces or parentheses; split after its last ")".
    fields = raw[raw.rindex(b")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / _CLOCK_TICKS


def machine_busy_seconds() -> float | None:
    """CPU seconds all processors have spent busy since boot; None where /proc is not available."""
    try:
        with open("/proc/stat", "rb") as stat:
            fields = stat.readline().split()
    except OSError:
        return None
    # user nice system idle iowait irq softirq steal: everything but idle and iowait is busy.
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(v) for v in fields[1:9])
    return (user + nice + system + irq + softirq + steal) / _CLOCK_TICKS


def _snapshot(pids: dict[str, int]) -> dict[str, float | None]:
    taken = {name: process_cpu_seconds(pid) for name, pid in pids.items()}
    taken["machine"] = machine_busy_seconds()
    return taken


class CpuMeter:
    """CPU used over a wall-clock window, in cores (1.0 = one core busy throughout): by each named
    process, and by everything else on the machine ("other"), which tells a quiet run from one
    that shared the cores with something else."""

    def __init__(self, pids: dict[str, int]):
        self._pids = pids
        self._start: dict[str, float | None] = {}
        self._wall = 0.0

    def start(self) -> None:
        self._start = _snapshot(self._pids)
        self._wall = time.perf_counter()

    def stop(self) -> dict[str, float | None]:
        wall = time.perf_counter() - self._wall
        used: dict[str, float | None] = {}
        for name, after in _snapshot(self._pids).items():
            before = self._start.get(name)
            if before is None or after is None or wall <= 0:
                used[name] = None
            else:
                used[name] = (after - before) / wall
        machine = used.pop("machine")
        mine = [used[name] for name in self._pids]
        if machine is None or any(value is None for value in mine):
            used["other"] = None
        else:
            used["other"] = max(0.0, machine - sum(value or 0.0 for value in mine))
        return used


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile of already sorted values (no interpolation between samples)."""
    if not sorted_values:
        return math.nan
    rank = max(1, math.ceil(q / 100 * len(sorted_values)))
    return sorted_values[min(rank, len(sorted_values)) - 1]


@dataclass(frozen=True)
class Run:
    """The figures of one measured phase."""

    name: str
    unit: str
    operations: int
    errors: int
    seconds: float
    concurrency: int
    p50_ms: float
    p99_ms: float
    max_ms: float
    # In cores over the phase: the side being measured and the side driving it.
    server_cpu: float | None
    client_cpu: float | None
    # Everything else on the machine: well above zero means the figures are not a quiet run's.
    other_cpu: float | None

    @property
    def rate(self) -> float:
        return self.operations / self.seconds if self.seconds > 0 else 0.0

    @classmethod
    def from_latencies(
        cls,
        name: str,
        unit: str,
        latencies: list[float],
        *,
        errors: int,
        seconds: float,
        concurrency: int,
        cpu: dict[str, float | None],
    ) -> Run:
        ordered = sorted(latencies)
        return cls(
            name=name,
            unit=unit,
            operations=len(ordered),
            errors=errors,
            seconds=seconds,
            concurrency=concurrency,
            p50_ms=percentile(ordered, 50) * 1000,
            p99_ms=percentile(ordered, 99) * 1000,
            max_ms=(ordered[-1] if ordered else math.nan) * 1000,
            server_cpu=cpu.get("server"),
            client_cpu=cpu.get("client"),
            other_cpu=cpu.get("other"),
        )

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "rate": self.rate}


class Budget:
    """A shared bound on a phase: stop at the deadline or after `limit` operations, first wins."""

    def __init__(self, seconds: float, limit: int):
        self.deadline = time.perf_counter() + seconds
        self.remaining = limit

    def take(self) -> bool:
        if self.remaining <= 0 or time.perf_counter() >= self.deadline:
            return False
        self.remaining -= 1
        return True


class RoundTrips(monitoring.CommandListener):
    """Database commands sent since the last reset, by name and collection, with the time each
    kind took from the driver's side (the round trip, the database's work included)."""

    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()
        self.micros: Counter[str] = Counter()
        self._keys: dict[int, str] = {}

    @classmethod
    def from_tally(cls, counts: Mapping[str, int], micros: Mapping[str, int]) -> RoundTrips:
        """The figures another process counted (`counts` and `micros` as it kept them)."""
        trips = cls()
        trips.counts.update(counts)
        trips.micros.update(micros)
        return trips

    def reset(self) -> None:
        self.counts.clear()
        self.micros.clear()
        self._keys.clear()

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        name = event.command_name
        target = event.command.get("collection") if name == "getMore" else event.command.get(name)
        key = f"{name} {target}" if isinstance(target, str) else name
        if name == "find" and list(event.command.get("filter") or {}) == ["_id"]:
            key += " by _id"  # one document at a time: where a query per file shows
        self._keys[event.request_id] = key

    def _done(
        self, event: monitoring.CommandSucceededEvent | monitoring.CommandFailedEvent
    ) -> None:
        key = self._keys.pop(event.request_id, event.command_name)
        self.counts[key] += 1
        self.micros[key] += event.duration_micros

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
        self._done(event)

    def failed(self, event: monitoring.CommandFailedEvent) -> None:
        self._done(event)

    def per_call(self, calls: int) -> dict[str, dict[str, float]]:
        """Commands per call, by kind, slowest first: how many, and milliseconds."""
        return {
            key: {"count": self.counts[key] / calls, "ms": self.micros[key] / calls / 1e3}
            for key in sorted(self.counts, key=lambda k: -self.micros[k])
        }

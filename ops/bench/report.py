"""Print the figures as a table and keep them as JSON for later runs to compare against."""

from __future__ import annotations

import datetime as dt
import importlib.metadata
import json
import math
import os
import platform
from dataclasses import asdict
from pathlib import Path
from typing import Any

from ops.bench.casefile import casefile_table
from ops.bench.casework import casework_table
from ops.bench.ceilings import CeilingOptions, Ceilings
from ops.bench.checkins import checkins_table
from ops.bench.measure import Run
from ops.bench.sweeps import sweeps_table


def _percent(value: float | None) -> str:
    return "n/a" if value is None else f"{value * 100:.0f}%"


def _rate(value: float) -> str:
    # Check-ins run at a few per second, where a whole number says too little.
    return f"{value:.0f}" if value >= 100 else f"{value:.1f}"


def _ms(value: float) -> str:
    return "n/a" if math.isnan(value) else f"{value:.2f}"


def table(ceilings: Ceilings) -> str:
    header = (
        f"{'benchmark':<44} {'ops':>8} {'rate':>10} {'unit':<9} {'p50 ms':>8} {'p99 ms':>8} "
        f"{'server CPU':>10} {'client CPU':>10} {'other CPU':>9}"
    )
    lines = [header, "-" * len(header)]
    run: Run
    for run in ceilings.runs.values():
        lines.append(
            f"{run.name:<44} {run.operations:>8} {_rate(run.rate):>10} {run.unit:<9} "
            f"{_ms(run.p50_ms):>8} {_ms(run.p99_ms):>8} "
            f"{_percent(run.server_cpu):>10} {_percent(run.client_cpu):>10} "
            f"{_percent(run.other_cpu):>9}"
        )
    ratios = ceilings.ratios()
    lines += [
        "",
        "CPU in % of one core: server = the API (HTTP rows) or the database (insert rows); "
        "other = every other process on the machine.",
        f"GET /healthz keep-alive req/s per sequential insert_one/s: "
        f"{ratios['healthz_per_insert_sequential']:.2f}",
        f"GET /healthz keep-alive req/s per concurrent insert_one/s: "
        f"{ratios['healthz_per_insert_concurrent']:.2f}",
    ]
    lines += [f"note: {note}" for note in caveats(ceilings)]
    if ceilings.checkins:
        lines += ["", checkins_table(ceilings.checkins, ratios)]
    if ceilings.casefile:
        lines += ["", casefile_table(ceilings.casefile)]
    if ceilings.sweeps:
        lines += ["", sweeps_table(ceilings.sweeps)]
    if ceilings.casework:
        lines += ["", casework_table(ceilings.casework)]
    return "\n".join(lines)


# Beyond these, a run says less about the code than about what else the machine was doing.
BUSY_MACHINE_CORES = 0.25
SATURATED_SERVER_CORES = 0.85


def caveats(ceilings: Ceilings) -> list[str]:
    """What makes this run's figures less than a quiet machine's ceiling, said plainly."""
    notes = []
    for key, run in ceilings.runs.items():
        if run.other_cpu is not None and run.other_cpu > BUSY_MACHINE_CORES:
            notes.append(
                f"{run.name}: other processes used {run.other_cpu * 100:.0f}% of a core meanwhile; "
                "a quiet machine would do better"
            )
        if (
            key.startswith("healthz")
            and run.server_cpu is not None
            and run.server_cpu < SATURATED_SERVER_CORES
        ):
            notes.append(
                f"{run.name}: the API used only {run.server_cpu * 100:.0f}% of a core, so it was "
                "not the limit; read the rate as a lower bound"
            )
    if ceilings.checkins and ceilings.checkins["errors"]:
        errors = ", ".join(f"{n} x {s}" for s, n in ceilings.checkins["errors"].items())
        notes.append(f"check-ins: answers other than 201: {errors}")
    return notes


def _version(distribution: str) -> str | None:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return None


def document(ceilings: Ceilings, options: CeilingOptions) -> dict[str, Any]:
    return {
        "benchmark": "ceilings",
        "finished_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "machine": {
            "cpus": os.cpu_count(),
            "load_average_1m": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
            "platform": platform.platform(),
            "python": platform.python_version(),
            "tornado": _version("tornado"),
            "pymongo": _version("pymongo"),
            "secantusdb": _version("secantusdb"),
        },
        "settings": asdict(options),
        "results": {key: run.as_dict() for key, run in ceilings.runs.items()},
        "ratios": ceilings.ratios(),
        "checkins": ceilings.checkins,
        "casefile": ceilings.casefile,
        "sweeps": ceilings.sweeps,
        "casework": ceilings.casework,
        "caveats": caveats(ceilings),
    }


def write_json(path: Path, content: dict[str, Any]) -> None:
    """Replace `path` in one step, so a reader never sees half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(path.suffix + ".partial")
    partial.write_text(json.dumps(content, indent=2, allow_nan=False) + "\n", encoding="utf-8")
    partial.replace(path)

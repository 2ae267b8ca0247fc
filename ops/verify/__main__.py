"""`python -m ops.verify` (what `make verify` runs): load, faults, backup and restore, hostile
input and a scan of every log written meanwhile; a summary table, and the figures as JSON."""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any

from ops.bench import PROJECT_ROOT
from ops.bench.measure import BenchError
from ops.verify.load import LoadSpec, run_load
from ops.verify.logscan import scan
from ops.verify.suites import run_suites

DEFAULT_OUTPUT = PROJECT_ROOT / "var" / "verify" / "latest.json"
DEFAULT_WORK = PROJECT_ROOT / "var" / "verify" / "run"
PARTS = ("load", "suites", "fuzz", "logs")


@dataclass(frozen=True)
class Row:
    area: str
    figure: str
    target: str
    result: str
    ok: bool | None  # None: reported, no target


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m ops.verify", description=__doc__)
    parser.add_argument(
        "--parts", default=",".join(PARTS), help=f"which parts to run ({','.join(PARTS)})"
    )
    parser.add_argument("--rate", type=float, default=100.0, help="check-ins offered per second")
    parser.add_argument("--seconds", type=float, default=60.0, help="length of the burst")
    parser.add_argument("--people", type=int, default=1500, help="people in the burst")
    parser.add_argument("--processes", default="1,2", help="API process counts, e.g. 1,2,4")
    parser.add_argument(
        "--fuzz-examples", type=int, default=None, help="schemathesis examples per operation"
    )
    parser.add_argument(
        "--fuzz-top-up-to",
        type=int,
        default=None,
        help="after schemathesis, requests per operation the top-up brings each to (0: none)",
    )
    parser.add_argument("--work", type=Path, default=DEFAULT_WORK, help="logs and reports")
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT, help="the JSON figures")
    return parser


def _ms(value: float | None) -> str:
    return "n/a" if value is None else f"{value:,.0f} ms"


def load_rows(figures: dict[str, Any]) -> list[Row]:
    rows: list[Row] = []
    spec = figures["spec"]
    for run in figures["runs"]:
        n = run["processes"]
        burst, capacity = run["burst"], run["capacity"]
        checkin = burst["latency"].get("checkin", {})
        area = f"load, {n} API process{'es' if n > 1 else ''}"
        offered = spec["rate"]
        rows += [
            Row(
                area,
                f"check-ins/s sustained ({offered:.0f}/s offered for {spec['seconds']:.0f} s, "
                f"1 in {round(1 / spec['photo_share'])} with a photo)",
                f"≥ {offered * 0.98:.0f}",
                f"{burst['acknowledged_per_second']:.1f}",
                burst["acknowledged_per_second"] >= offered * 0.98,
            ),
            Row(
                area,
                "check-in p50 / p95 / p99",
                "p99 < 1,000 ms",
                f"{_ms(checkin.get('p50_ms'))} / {_ms(checkin.get('p95_ms'))} / "
                f"{_ms(checkin.get('p99_ms'))}",
                checkin.get("p99_ms", float("inf")) < 1000,
            ),
            Row(
                area,
                "errors (after retries), of which 5xx seen before a retry",
                "0",
                f"{burst['errors']}; {_count_5xx(burst['answers'])} retried 5xx",
                burst["errors"] == 0,
            ),
            Row(
                area,
                "lost answers re-sent with the same key, answered the same check-in",
                "all",
                f"{burst['replays'] - burst['replay_mismatches']} of {burst['replays']}",
                burst["replay_mismatches"] == 0,
            ),
            Row(
                area,
                "capacity: check-ins/s with 48 in flight (CPU cores: API / database at the burst)",
                "",
                f"{capacity['acknowledged_per_second']:.1f} "
                f"({burst['cpu_cores']['api']:.2f} / {burst['cpu_cores']['database']:.2f})",
                None,
            ),
        ]
        if burst.get("cores_needed_at_offered_rate") is not None:
            rows.append(
                Row(
                    area,
                    f"CPU the offered rate needs at the measured cost per check-in "
                    f"(cores of {burst['cores_available']})",
                    "",
                    f"{burst['cores_needed_at_offered_rate']:.2f}",
                    None,
                )
            )
        database = burst.get("database") or {}
        if database.get("cpu_ms_per_command") is not None:
            rows.append(
                Row(
                    area,
                    "database: commands per check-in × CPU per command = check-ins/s at one core",
                    "",
                    f"{database['commands_per_checkin']:.1f} × "
                    f"{database['cpu_ms_per_command']:.2f} ms = "
                    f"{database['checkins_per_second_at_one_core']:.0f}/s",
                    None,
                )
            )
    verified = figures["verified"]
    rows += [
        Row(
            "load, stored",
            "acknowledged check-ins lost / duplicated / stored under another id",
            "0 / 0 / 0",
            f"{verified['lost']} / {verified['duplicated']} / {verified['wrong_id']} "
            f"(of {verified['acknowledged']:,})",
            verified["lost"] == verified["duplicated"] == verified["wrong_id"] == 0,
        ),
        Row(
            "load, stored",
            "photos attached to the check-ins that sent one",
            "all",
            f"{verified['with_photo'] - verified['photo_missing']} of {verified['with_photo']}",
            verified["photo_missing"] == 0,
        ),
    ]
    return rows


def _count_5xx(answers: dict[str, int]) -> int:
    return sum(n for key, n in answers.items() if key.rsplit(" ", 1)[-1].startswith("5"))


def suite_rows(figures: dict[str, Any]) -> list[Row]:
    rows: list[Row] = []
    suites = figures.get("suites", {})
    labels = {
        "faults": "faults (database cut, delay, blackhole; kill -9 of API and jobs; restart)",
        "backup": "backup and restore",
        "hostile": "hostile input (injection, traversal, sizes, encodings, push replay)",
    }
    for name, label in labels.items():
        suite = suites.get(name)
        if suite is None:
            rows.append(Row(label, "scenarios passed", "all", "not run", False))
            continue
        failed = suite["failed"]
        rows.append(
            Row(
                label,
                "tests passed",
                "all",
                f"{suite['passed']} of {suite['tests']} in {suite['seconds']:.0f} s"
                + (f"; failed: {', '.join(failed[:3])}" if failed else ""),
                not failed and suite["tests"] > 0,
            )
        )
        props = suite["properties"]
        for key, target in (
            ("acknowledged_lost", "0"),
            ("duplicates", "0"),
            ("hostile_5xx", "0"),
            ("backup_collections_identical", "True"),
        ):
            if key in props:
                rows.append(
                    Row(
                        label,
                        key.replace("_", " "),
                        target,
                        str(props[key]),
                        str(props[key]) == target,
                    )
                )
        for key in ("acknowledged", "retried", "hostile_requests", "backup_documents"):
            if key in props:
                rows.append(Row(label, key.replace("_", " "), "", f"{props[key]:,}", None))
    if figures.get("missing_files"):
        rows.append(
            Row("suites", "test files missing", "none", ", ".join(figures["missing_files"]), False)
        )
    return rows


def fuzz_rows(figures: dict[str, Any]) -> list[Row]:
    area = "schemathesis over /openapi.json, then the top-up"
    per_operation = figures.get("requests_per_operation", {})
    if not isinstance(per_operation, dict):
        per_operation = {}
    minimum = per_operation.get("min")
    topped = per_operation.get("topped_up") or {}
    extra = figures.get("top_up") or {}
    by_source = figures.get("server_errors_by_source") or {}
    no_answer = extra.get("no_answer", 0)
    return [
        Row(area, "operations fuzzed", "every route", str(figures.get("operations", "n/a")), None),
        Row(
            area,
            "generated requests per operation: min / median (total)",
            "≥ 1,000",
            f"{minimum} / {per_operation.get('median')} ({figures.get('total_requests', 'n/a')})",
            minimum is not None and minimum >= 1000,
        ),
        Row(
            area,
            "of which from the top-up: operations topped up, requests (schemathesis alone: min)",
            "",
            f"{len(topped)}, {sum(topped.values()):,} "
            f"(min {per_operation.get('schemathesis_min', 'n/a')})",
            None,
        ),
        Row(
            area,
            "5xx answers: schemathesis + top-up",
            "0",
            f"{figures.get('server_errors', 'n/a')} "
            f"({by_source.get('schemathesis', 'n/a')} + {by_source.get('top_up', 'n/a')})",
            figures.get("server_errors") == 0,
        ),
        Row(
            area,
            "top-up requests left without an answer (dropped, timed out)",
            "0",
            str(no_answer),
            no_answer == 0,
        ),
        Row(
            area,
            "responses not matching their schema",
            "0",
            str(figures.get("schema_violations", "n/a")),
            figures.get("schema_violations") == 0,
        ),
    ]


def log_rows(figures: dict[str, Any]) -> list[Row]:
    return [
        Row(
            "logs",
            f"tokens, session keys, ID numbers, phones, subject names in {figures['files']} log "
            f"files ({figures['lines']:,} lines)",
            "0",
            str(figures["findings"]),
            figures["findings"] == 0,
        )
    ]


def table(rows: list[Row]) -> str:
    header = ("area", "figure", "target", "result", "")
    cells = [header] + [
        (
            row.area,
            row.figure,
            row.target,
            row.result,
            "ok" if row.ok else "-" if row.ok is None else "MISSED",
        )
        for row in rows
    ]
    widths = [min(max(len(cell[i]) for cell in cells), 70) for i in range(5)]
    lines = []
    for number, cell in enumerate(cells):
        lines.append("  ".join(text.ljust(widths[i]) for i, text in enumerate(cell)).rstrip())
        if number == 0:
            lines.append("  ".join("-" * width for width in widths))
    return "\n".join(lines)


def run_load_part(
    args: argparse.Namespace, work: Path, figures: dict[str, Any], secrets: set[str]
) -> list[Row]:
    print("verify: load (the morning burst) ...", flush=True)
    spec = LoadSpec(
        rate=args.rate,
        seconds=args.seconds,
        people=args.people,
        processes=tuple(int(n) for n in args.processes.split(",")),
    )
    (work / "load").mkdir()
    figures["load"] = asyncio.run(run_load(spec, work / "load", secrets))
    return load_rows(figures["load"])


def run_suites_part(
    args: argparse.Namespace, work: Path, figures: dict[str, Any], secrets: set[str]
) -> list[Row]:
    print("verify: faults, backup and restore, hostile input (pytest) ...", flush=True)
    (work / "suites").mkdir()
    figures["suites"] = run_suites(work / "suites")
    return suite_rows(figures["suites"])


def run_fuzz_part(
    args: argparse.Namespace, work: Path, figures: dict[str, Any], secrets: set[str]
) -> list[Row]:
    print("verify: schemathesis over every route ...", flush=True)
    from ops.verify.fuzz import run_fuzz

    (work / "fuzz").mkdir()
    options: dict[str, Any] = {}
    if args.fuzz_examples is not None:
        options["examples"] = args.fuzz_examples
    if args.fuzz_top_up_to is not None:
        options["top_up_to"] = args.fuzz_top_up_to
    figures["fuzz"] = run_fuzz(work / "fuzz", **options)
    return fuzz_rows(figures["fuzz"])


def run_logs_part(
    args: argparse.Namespace, work: Path, figures: dict[str, Any], secrets: set[str]
) -> list[Row]:
    print("verify: scanning every log written ...", flush=True)
    figures["logs"] = scan([work], secrets=secrets).as_dict()
    return log_rows(figures["logs"])


PartRunner = Callable[[argparse.Namespace, Path, dict[str, Any], set[str]], list[Row]]
PART_RUNNERS: dict[str, PartRunner] = {
    "load": run_load_part,
    "suites": run_suites_part,
    "fuzz": run_fuzz_part,
    "logs": run_logs_part,
}


def _stop_on_sigterm(_signum: int, _frame: FrameType | None) -> None:
    # As Ctrl-C: the `finally` blocks on the way out stop every process this run started.
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, _stop_on_sigterm)
    parts = [part.strip() for part in args.parts.split(",") if part.strip()]
    unknown = sorted(set(parts) - set(PARTS))
    if unknown:
        parser.error(f"unknown parts: {', '.join(unknown)} (known: {', '.join(PARTS)})")
    work: Path = args.work.resolve()
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    started = time.monotonic()
    figures: dict[str, Any] = {"parts": parts}
    # Tokens and binding codes handed out during the run: the log scan looks for each.
    secrets: set[str] = set()
    rows: list[Row] = []
    try:
        # In this order whatever order they were named in: the log scan reads what the others wrote.
        for part in [known for known in PARTS if known in parts]:
            try:
                rows += PART_RUNNERS[part](args, work, figures, secrets)
            except BenchError as exc:
                # One part failing to run must not cost the figures of the others.
                print(f"verify: {part} failed: {exc}", file=sys.stderr)
                figures[part] = {"failed": str(exc)}
                rows.append(Row(part, "the part ran to its end", "yes", f"no: {exc}"[:200], False))
    except KeyboardInterrupt:
        print("verify: interrupted", file=sys.stderr)
        return 130
    figures["seconds"] = time.monotonic() - started
    figures["rows"] = [vars(row) for row in rows]
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(figures, indent=2, default=str), encoding="utf-8")
    print()
    print(table(rows))
    missed = [row for row in rows if row.ok is False]
    print(
        f"\nverify: {len(rows) - len(missed)} of {len(rows)} figures on target "
        f"({len(missed)} missed) in {figures['seconds'] / 60:.1f} min; figures in {args.output}, "
        f"logs in {work}"
    )
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())

"""`python -m ops.bench` (what `make bench` runs): measure, print a table, write the JSON."""

from __future__ import annotations

import argparse
import signal
import sys
import time
from pathlib import Path
from types import FrameType
from typing import Any

from ops.bench import PROJECT_ROOT
from ops.bench.caselist import DEFAULT_SUBJECTS as CASELIST_DEFAULT
from ops.bench.caselist import MIN_SUBJECTS as CASELIST_MIN
from ops.bench.caselist import caselist_table, run_caselist
from ops.bench.casework import DEFAULT_SIZES as CASEWORK_DEFAULT
from ops.bench.casework import ISSUE_SIZES as CASEWORK_ISSUE
from ops.bench.ceilings import CeilingOptions, run_ceilings
from ops.bench.checkins import DEFAULT_SUBJECTS as CHECKIN_DEFAULT
from ops.bench.checkins import MAX_SUBJECTS as CHECKIN_MAX
from ops.bench.checkins import MIN_SUBJECTS as CHECKIN_MIN
from ops.bench.dashboard import DEFAULT_PEOPLE as DASHBOARD_DEFAULT
from ops.bench.dashboard import MIN_PEOPLE as DASHBOARD_MIN
from ops.bench.dashboard import dashboard_table, run_dashboard
from ops.bench.hotpath import DEFAULT_PEOPLE as HOTPATH_DEFAULT
from ops.bench.hotpath import MAX_PEOPLE as HOTPATH_MAX
from ops.bench.hotpath import MIN_PEOPLE as HOTPATH_MIN
from ops.bench.hotpath import hotpath_table, measure_hotpath
from ops.bench.measure import BenchError
from ops.bench.report import document, table, write_json
from ops.bench.reports import DEFAULT_SIZES as REPORT_DEFAULT
from ops.bench.reports import ISSUE_SIZES as REPORT_ISSUE
from ops.bench.reports import measure_reports, reports_table
from ops.bench.reports import parse_sizes as parse_report_sizes
from ops.bench.sweeps import DEFAULT_SUBJECTS, ISSUE_SUBJECTS, parse_sizes

DEFAULT_OUTPUT = PROJECT_ROOT / "var" / "bench" / "latest.json"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m ops.bench", description=__doc__)
    parser.add_argument(
        "--seconds", type=float, default=5.0, help="length of each measured phase (1-20)"
    )
    parser.add_argument(
        "--connections", type=int, default=16, help="HTTP requests in flight (1-256)"
    )
    parser.add_argument("--tasks", type=int, default=16, help="concurrent insert tasks (1-256)")
    parser.add_argument(
        "--checkin-subjects",
        type=int,
        default=CHECKIN_DEFAULT,
        metavar="N",
        help=f"people who each check in once through POST /mp/v1/checkins "
        f"({CHECKIN_MIN}-{CHECKIN_MAX}; seeding takes most of the time: 500 take about a "
        "minute); 0 skips it",
    )
    parser.add_argument(
        "--checkin-connections",
        type=int,
        default=None,
        metavar="N",
        help="check-in requests in flight (1-256; default: --connections)",
    )
    parser.add_argument(
        "--sweep-subjects",
        default=",".join(str(n) for n in DEFAULT_SUBJECTS),
        metavar="N,N",
        help="subjects (each with a month of daily check-ins) the missed-window sweep runs over; "
        f"the issue's sizes: {','.join(str(n) for n in ISSUE_SUBJECTS)} (15-20 minutes); "
        "0 skips it",
    )
    parser.add_argument(
        "--casework-subjects",
        default=",".join(str(n) for n in CASEWORK_DEFAULT),
        metavar="N,N",
        help="database sizes (subjects) for the caseload and search benchmark; the issue's "
        f"sizes: {','.join(str(n) for n in CASEWORK_ISSUE)} (about 15 minutes); 0 skips it",
    )
    parser.add_argument(
        "--report-subjects",
        default=",".join(str(n) for n in REPORT_DEFAULT),
        metavar="N,N",
        help="database sizes (subjects, each with a month of history) for the monthly "
        "compliance report of one station (200 subjects) and one county (up to 5,000); the "
        f"issue's sizes: {','.join(str(n) for n in REPORT_ISSUE)}; 0 skips it",
    )
    parser.add_argument(
        "--hotpath-people",
        type=int,
        default=HOTPATH_DEFAULT,
        metavar="N",
        help="people in the hot-path benchmark (commands per cold and warm check-in, morning "
        f"login and photo upload; {HOTPATH_MIN}-{HOTPATH_MAX}); 0 skips it",
    )
    parser.add_argument(
        "--caselist-subjects",
        type=int,
        default=CASELIST_DEFAULT,
        metavar="N",
        help="case files in one county for the case-list benchmark (pages, filters and exact "
        f"searches, 20 per page; at least {CASELIST_MIN:,}); 0 skips it",
    )
    parser.add_argument(
        "--dashboard-people",
        type=int,
        default=DASHBOARD_DEFAULT,
        metavar="N",
        help="people in one county for the dashboard benchmark (station, county and city "
        f"dashboards through the API, a year of check-ins; at least {DASHBOARD_MIN:,}; the "
        "issue's 5,000 seed in about 15 minutes); 0 skips it",
    )
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT, help="where the JSON goes")
    return parser


def _stop_on_sigterm(_signum: int, _frame: FrameType | None) -> None:
    # Turned into an exception so every `finally` runs: the API stops, the temp dir goes.
    raise SystemExit(143)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not 1 <= args.seconds <= 20:
        parser.error("--seconds must be between 1 and 20")
    if not 1 <= args.connections <= 256 or not 1 <= args.tasks <= 256:
        parser.error("--connections and --tasks must be between 1 and 256")
    checkin_connections = args.checkin_connections or args.connections
    if not 1 <= checkin_connections <= 256:
        parser.error("--checkin-connections must be between 1 and 256")
    if args.checkin_subjects and not CHECKIN_MIN <= args.checkin_subjects <= CHECKIN_MAX:
        parser.error(f"--checkin-subjects must be 0 or between {CHECKIN_MIN} and {CHECKIN_MAX}")
    try:
        sweep_subjects = parse_sizes(args.sweep_subjects)
    except ValueError as exc:
        parser.error(f"--sweep-subjects: {exc}")
    try:
        casework_subjects = parse_sizes(args.casework_subjects)
    except ValueError as exc:
        parser.error(f"--casework-subjects: {exc}")
    try:
        report_subjects = parse_report_sizes(args.report_subjects)
    except ValueError as exc:
        parser.error(f"--report-subjects: {exc}")
    if args.hotpath_people and not HOTPATH_MIN <= args.hotpath_people <= HOTPATH_MAX:
        parser.error(f"--hotpath-people must be 0 or between {HOTPATH_MIN} and {HOTPATH_MAX}")
    if args.caselist_subjects and args.caselist_subjects < CASELIST_MIN:
        parser.error(f"--caselist-subjects must be 0 or at least {CASELIST_MIN:,}")
    if args.dashboard_people and args.dashboard_people < DASHBOARD_MIN:
        parser.error(f"--dashboard-people must be 0 or at least {DASHBOARD_MIN:,}")
    signal.signal(signal.SIGTERM, _stop_on_sigterm)
    options = CeilingOptions(
        seconds=args.seconds,
        new_connection_seconds=min(3.0, args.seconds),
        connections=args.connections,
        tasks=args.tasks,
        checkin_subjects=args.checkin_subjects,
        checkin_connections=checkin_connections,
        sweep_subjects=sweep_subjects,
        casework_subjects=casework_subjects,
    )
    started = time.monotonic()
    print("bench: ceilings (GET /healthz over loopback HTTP; raw insert_one)", flush=True)
    if options.checkin_subjects:
        print(
            f"bench: then {options.checkin_subjects} people check in once each "
            f"(POST /mp/v1/checkins, {checkin_connections} in flight)",
            flush=True,
        )
    if sweep_subjects:
        sizes = ", ".join(f"{n:,}" for n in sweep_subjects)
        print(f"bench: then the missed-window sweep over {sizes} subjects", flush=True)
    if report_subjects:
        sizes = ", ".join(f"{n:,}" for n in report_subjects)
        print(f"bench: then monthly reports in databases of {sizes} subjects", flush=True)
    reports: dict[str, Any] = {}
    hotpath: dict[str, Any] = {}
    caselist: dict[str, Any] = {}
    dashboard: dict[str, Any] = {}
    try:
        ceilings = run_ceilings(options)
        if args.hotpath_people:
            hotpath = measure_hotpath(args.hotpath_people, checkin_connections)
        if report_subjects:
            reports = measure_reports(report_subjects)
        if args.caselist_subjects:
            caselist = run_caselist(args.caselist_subjects)
        if args.dashboard_people:
            dashboard = run_dashboard(args.dashboard_people)
    except BenchError as exc:
        print(f"bench: failed: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        # Everything started has been stopped and removed by the `finally` blocks on the way here.
        print("bench: interrupted; nothing written", file=sys.stderr)
        return 130
    print(table(ceilings))
    content = document(ceilings, options)
    if hotpath:
        print("\n" + hotpath_table(hotpath))
    # Beside the others' figures (ops.bench.hotpath runs on a database of its own).
    content["hotpath"] = hotpath
    if reports:
        print("\n" + reports_table(reports))
    # Beside the others' figures (ops.bench.reports runs on a database of its own).
    content["settings"]["report_subjects"] = list(report_subjects)
    content["reports"] = reports
    if caselist:
        print("\n" + caselist_table(caselist))
    # Beside the others' figures (ops.bench.caselist runs on a database of its own).
    content["caselist"] = caselist
    if dashboard:
        print("\n" + dashboard_table(dashboard))
    # Beside the others' figures (ops.bench.dashboard runs on a database of its own).
    content["dashboard"] = dashboard
    write_json(args.output, content)
    print(f"\nbench: wrote {args.output} in {time.monotonic() - started:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""`python -m ops.bench` (what `make bench` runs): measure, print a table, write the JSON."""

from __future__ import annotations

import argparse
import signal
import sys
import time
from pathlib import Path
from types import FrameType

from ops.bench import PROJECT_ROOT
from ops.bench.ceilings import CeilingOptions, run_ceilings
from ops.bench.measure import BenchError
from ops.bench.report import document, table, write_json

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
    signal.signal(signal.SIGTERM, _stop_on_sigterm)
    options = CeilingOptions(
        seconds=args.seconds,
        new_connection_seconds=min(3.0, args.seconds),
        connections=args.connections,
        tasks=args.tasks,
    )
    started = time.monotonic()
    print("bench: ceilings (GET /healthz over loopback HTTP; raw insert_one)", flush=True)
    try:
        ceilings = run_ceilings(options)
    except BenchError as exc:
        print(f"bench: failed: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        # Everything started has been stopped and removed by the `finally` blocks on the way here.
        print("bench: interrupted; nothing written", file=sys.stderr)
        return 130
    print(table(ceilings))
    write_json(args.output, document(ceilings, options))
    print(f"\nbench: wrote {args.output} in {time.monotonic() - started:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Benchmarks run by `make bench`; results go to the terminal and to var/bench/latest.json."""

from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[2]

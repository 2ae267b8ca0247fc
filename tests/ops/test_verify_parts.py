"""`make verify`: a part that cannot run is reported, and the others' figures are kept."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ops.bench.measure import BenchError
from ops.verify import __main__ as verify


def test_a_part_that_fails_keeps_the_figures_of_the_others(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def locked_out(*_args: object) -> list[verify.Row]:
        raise BenchError("login as county.officer: answered 423")

    monkeypatch.setitem(verify.PART_RUNNERS, "fuzz", locked_out)
    output = tmp_path / "latest.json"
    code = verify.main(
        ["--parts", "logs,fuzz", "--work", str(tmp_path / "run"), "--output", str(output)]
    )
    assert code == 1
    figures = json.loads(output.read_text(encoding="utf-8"))
    assert figures["fuzz"] == {"failed": "login as county.officer: answered 423"}
    assert figures["logs"]["findings"] == 0
    failed = [row for row in figures["rows"] if row["ok"] is False]
    assert [(row["area"], row["result"]) for row in failed] == [
        ("fuzz", "no: login as county.officer: answered 423")
    ]

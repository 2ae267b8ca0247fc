"""`make verify`: a part that cannot run is reported, and the others' figures are kept."""

from __future__ import annotations

import collections
import json
from pathlib import Path

import pytest

from ops.bench.measure import BenchError
from ops.verify import __main__ as verify
from ops.verify.fuzz import OperationFigures, PassFigures, _refusal_leaks


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


def test_a_concealed_photo_refuses_the_wrong_session_with_a_404_and_nothing_else_may():
    """The cross-session fuzz passes count a photo's 404 as the refusal it is (a 403 would
    confirm the photo exists); the same 404 elsewhere, or a 200 anywhere, is a leak."""
    figures = PassFigures("staff-routes-as-subject")
    for name, status in (
        ("GET /api/v1/checkins/{checkin_id}/photo", 404),
        ("GET /api/v1/subjects/{subject_id}/photo", 403),
        ("GET /api/v1/subjects/{subject_id}", 404),
        ("GET /api/v1/alerts", 200),
    ):
        figures.operations[name] = OperationFigures(statuses=collections.Counter({status: 3}))
    assert _refusal_leaks(figures) == {
        "GET /api/v1/subjects/{subject_id}": {404: 3},
        "GET /api/v1/alerts": {200: 3},
    }

"""The documentation stays true to the code: the configuration table and the README's commands."""

from __future__ import annotations

from pathlib import Path

from server.config import describe_variables

ROOT = Path(__file__).resolve().parents[2]


def test_operations_doc_lists_every_variable_as_the_code_does():
    text = (ROOT / "docs" / "operations.md").read_text(encoding="utf-8")
    assert describe_variables() in text


def test_readme_opens_with_the_two_commands():
    head = (ROOT / "README.md").read_text(encoding="utf-8").splitlines()[:10]
    assert any(line.startswith("make run") for line in head)
    assert any(line.startswith("make test") for line in head)

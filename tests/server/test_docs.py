"""The documentation stays true to the code: the configuration table, the README's commands, the
generated rules and route tables, and every relative link."""

from __future__ import annotations

import re
from pathlib import Path

from server.api_doc import describe_routes, generated_section
from server.banner import START_WITH, DemoLogin, running_banner
from server.config import Config, describe_variables
from server.demo import DEMO_STAFF
from server.rules_doc import describe_rules

ROOT = Path(__file__).resolve().parents[2]


def test_operations_doc_lists_every_variable_as_the_code_does():
    text = (ROOT / "docs" / "operations.md").read_text(encoding="utf-8")
    assert describe_variables() in text


def test_readme_opens_with_the_two_commands():
    head = (ROOT / "README.md").read_text(encoding="utf-8").splitlines()[:10]
    assert any(line.startswith("make run") for line in head)
    assert any(line.startswith("make test") for line in head)


def test_readme_first_screen_shows_what_make_run_prints():
    """The README's sample is the banner `make run` prints at the defaults, passwords dotted."""
    logins = [
        DemoLogin(role.value, username, "·" * 16, name)
        for username, name, role, _org, _head in DEMO_STAFF
    ]
    banner = running_banner(Config.from_env({}), logins, Path("var/demo-logins.txt"))
    first_screen = "\n".join((ROOT / "README.md").read_text(encoding="utf-8").splitlines()[:45])
    assert banner.strip("\n") in first_screen
    assert f"{START_WITH} " in first_screen


def test_rules_doc_lists_every_rule_with_its_source_as_the_code_does():
    text = (ROOT / "docs" / "rules.md").read_text(encoding="utf-8")
    assert describe_rules() in text
    assert "刑事诉讼法 Art. 105" in text


def test_api_doc_lists_every_route_as_the_code_does():
    """docs/api.md's route tables are `python -m server.api_doc --write`'s output."""
    text = (ROOT / "docs" / "api.md").read_text(encoding="utf-8")
    assert generated_section(text) == describe_routes(), (
        "docs/api.md's route tables differ from the code: run "
        "`.venv/bin/python -m server.api_doc --write`"
    )
    assert "`POST /mp/v1/checkins` | `checkins.create`" in text


_LINK = re.compile(r"(?<!!)\[[^\]\n]*\]\(([^)\s]+)\)")
_HEADING = re.compile(r"^#{1,6}\s+(.+?)\s*#*\s*$", re.MULTILINE)
_FENCE = re.compile(r"^```.*?^```", re.MULTILINE | re.DOTALL)


def _anchor(heading: str) -> str:
    """A heading's anchor as GitHub makes it: lower case, punctuation dropped, spaces to -."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def _documents() -> list[Path]:
    return [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def test_every_relative_link_in_the_docs_resolves():
    """Every relative link in README.md and docs/*.md names a file of the repository, and an
    anchor into a Markdown file names one of its headings."""
    broken = []
    for document in _documents():
        text = _FENCE.sub("", document.read_text(encoding="utf-8"))
        for target in _LINK.findall(text):
            if re.match(r"^[a-z][a-z0-9+.-]*:", target):
                continue  # https:, mailto:: not ours to check offline
            path, _, anchor = target.partition("#")
            resolved = (document.parent / path).resolve() if path else document
            where = f"{document.relative_to(ROOT)}: {target}"
            if not resolved.exists():
                broken.append(f"{where} (no such file)")
                continue
            if not resolved.is_relative_to(ROOT):
                broken.append(f"{where} (outside the repository)")
                continue
            if anchor and resolved.suffix == ".md":
                headings = _HEADING.findall(_FENCE.sub("", resolved.read_text(encoding="utf-8")))
                if anchor not in {_anchor(h) for h in headings}:
                    broken.append(f"{where} (no such heading)")
    assert broken == []


def test_no_doc_points_at_the_plan_outside_the_repository():
    for document in _documents():
        text = document.read_text(encoding="utf-8")
        assert "../shared" not in text, document.name

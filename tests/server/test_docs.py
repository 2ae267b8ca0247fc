"""The documentation stays true to the code: the configuration table and the README's commands."""

from __future__ import annotations

from pathlib import Path

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

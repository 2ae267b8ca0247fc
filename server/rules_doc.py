"""The statutory rules as a Markdown table, for `python -m server rules` and docs/rules.md."""

from __future__ import annotations

from models.rules import RuleBook


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def describe_rules(book: RuleBook | None = None) -> str:
    """Every national default with its value, unit and source, in the file's order."""
    book = book or RuleBook.load()
    lines = [
        f"Rules version `{book.version}`.",
        "",
        "| rule | value | unit | source |",
        "|---|---|---|---|",
    ]
    for rule in book.rules.values():
        value = rule.value
        if isinstance(value, bool):
            shown = "yes" if value else "no"
        elif isinstance(value, list | tuple):
            shown = ", ".join(map(str, value))
        else:
            shown = str(value)
        lines.append(
            f"| `{rule.key}` | {_cell(shown)} | {_cell(rule.unit or '')} | {_cell(rule.source)} |"
        )
    return "\n".join(lines)

"""A scan of every log a verification run wrote for what must never be logged: tokens, session
keys, binding codes, ID numbers, phone numbers and the names of test subjects."""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from models.identity_numbers import gb11643_check_digit
from ops.bench import PROJECT_ROOT
from ops.bench.casework import SURNAMES, person_values

# A resident ID number (GB 11643) anywhere in a line: 17 digits and a check digit, not inside a
# longer run of digits; a match counts only when its check digit and birth date are valid.
_ID_NUMBER = re.compile(r"(?<![0-9A-Za-z])([1-9][0-9]{16}[0-9Xx])(?![0-9A-Za-z])")
# A mainland mobile number, not inside a longer run of digits (timestamps, counters).
_PHONE = re.compile(r"(?<![0-9A-Za-z])(1[3-9][0-9]{9})(?![0-9A-Za-z])")
# What carries a credential on the wire, should a header or body ever be logged whole.
_CREDENTIAL = re.compile(
    r"(Bearer\s+[A-Za-z0-9._~+/=-]{16,}"
    r"|\"(?:token|session_key|binding_code|password|access_token)\"\s*:\s*\"[^\"]{6,}\""
    r"|(?:token|session_key|binding_code|password|access_token)=[A-Za-z0-9._~+/%=-]{6,})"
)
# WeChat's session_key: 16 random bytes in base64.
_SESSION_KEY = re.compile(r"(?<![A-Za-z0-9+/])[A-Za-z0-9+/]{22}==(?![A-Za-z0-9+/=])")
# Subject names written as literals in the tests (staff titles such as 王队长 are not subjects).
_TEST_NAME = re.compile(r"""(?:name=|"name":\s*)"([\u4e00-\u9fff]{2,3})\"""")
_NOT_A_PERSON = set("队科长姐市区所县省局节点测试矩阵另新错重岗家")


@dataclass
class Finding:
    path: str
    line: int
    kind: str
    excerpt: str


@dataclass
class ScanResult:
    files: int = 0
    bytes: int = 0
    lines: int = 0
    findings: list[Finding] = field(default_factory=list)

    def as_dict(self, limit: int = 20) -> dict[str, object]:
        return {
            "files": self.files,
            "bytes": self.bytes,
            "lines": self.lines,
            "findings": len(self.findings),
            "first_findings": [vars(finding) for finding in self.findings[:limit]],
        }


def _valid_id_number(candidate: str) -> bool:
    if gb11643_check_digit(candidate[:17]) != candidate[17].upper():
        return False
    try:
        dt.date(int(candidate[6:10]), int(candidate[10:12]), int(candidate[12:14]))
    except ValueError:
        return False
    return True


def subject_names_in_use() -> set[str]:
    """The subject names the suite, the demo data and the load generator use."""
    from server.demo import DEMO_SUBJECTS

    names = {row[0] for row in DEMO_SUBJECTS}
    for path in (PROJECT_ROOT / "tests").rglob("*.py"):
        for name in _TEST_NAME.findall(path.read_text(encoding="utf-8")):
            if name[0] in SURNAMES and not set(name) & _NOT_A_PERSON:
                names.add(name)
    today = dt.date.today()
    names.update(person_values(index, today)["name"] for index in range(2000))
    return names


def _mask(text: str) -> str:
    # The report names where a secret was found; it must not repeat the secret.
    return text[:3] + "…" if len(text) > 4 else "…"


def scan_lines(
    lines: Iterable[str], path: str, names: set[str], secrets: set[str], result: ScanResult
) -> None:
    name_pattern = (
        re.compile("|".join(sorted((re.escape(n) for n in names), key=len, reverse=True)))
        if names
        else None
    )
    for number, line in enumerate(lines, 1):
        result.lines += 1

        def found(kind: str, text: str, number: int = number) -> None:
            result.findings.append(Finding(path, number, kind, _mask(text)))

        for match in _ID_NUMBER.finditer(line):
            if _valid_id_number(match.group(1)):
                found("id_number", match.group(1))
        for match in _PHONE.finditer(line):
            found("phone", match.group(1))
        for match in _CREDENTIAL.finditer(line):
            found("credential", match.group(1))
        for match in _SESSION_KEY.finditer(line):
            found("session_key", match.group(0))
        if name_pattern is not None:
            for match in name_pattern.finditer(line):
                found("subject_name", match.group(0))
        for secret in secrets:
            if secret in line:
                found("known_secret", secret)


def scan(paths: Iterable[Path], *, secrets: Iterable[str] = ()) -> ScanResult:
    """Every file under `paths` whose name ends in .log (or a file named directly)."""
    names = subject_names_in_use()
    known = {secret for secret in secrets if len(secret) >= 8}
    result = ScanResult()
    for root in paths:
        files = [root] if root.is_file() else sorted(root.rglob("*.log")) if root.exists() else []
        for path in files:
            text = path.read_text(encoding="utf-8", errors="replace")
            result.files += 1
            result.bytes += len(text.encode("utf-8"))
            scan_lines(text.splitlines(), str(path), names, known, result)
    return result

"""The verification's pytest suites (faults, backup and restore, hostile input), run as one
pytest session whose JUnit XML gives each scenario's outcome and the figures its tests record."""

from __future__ import annotations

import subprocess
import sys
import time
import xml.etree.ElementTree as ElementTree
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ops.bench import PROJECT_ROOT

SUITES: dict[str, tuple[str, ...]] = {
    "faults": (
        "tests/miniprogram_api/test_checkin_outage.py",
        "tests/server/test_fault_api_kill.py",
        "tests/server/test_fault_jobs_kill.py",
        "tests/server/test_fault_db_restart.py",
        "tests/server/test_sweep_crash.py",
        "tests/jobs/test_runner.py",
        "tests/models/test_leases.py",
    ),
    "backup": (
        "tests/models/test_backup.py",
        "tests/server/test_backup_cli.py",
    ),
    "hostile": (
        "tests/handlers/test_hostile_input.py",
        "tests/miniprogram_api/test_hostile_mp.py",
        "tests/miniprogram_api/test_push.py",
    ),
}


@dataclass
class SuiteResult:
    files: list[str]
    tests: int = 0
    passed: int = 0
    failed: list[str] = field(default_factory=list)
    skipped: int = 0
    seconds: float = 0.0
    # Every property the suite's tests recorded, summed where numeric (per name).
    properties: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return dict(vars(self))


def _module(classname: str) -> str:
    return classname.replace(".", "/") + ".py"


def _merge(properties: dict[str, Any], name: str, raw: str) -> None:
    try:
        value: Any = float(raw) if "." in raw else int(raw)
    except ValueError:
        value = {"True": True, "False": False}.get(raw, raw)
    if name not in properties:
        properties[name] = value
    elif isinstance(value, bool) or not isinstance(value, int | float):
        # A flag holds only if every test that recorded it says so.
        properties[name] = properties[name] and value if isinstance(value, bool) else value
    else:
        properties[name] += value


def read_junit(path: Path, suites: dict[str, tuple[str, ...]]) -> dict[str, SuiteResult]:
    results = {name: SuiteResult(list(files)) for name, files in suites.items()}
    suite_of = {file: name for name, files in suites.items() for file in files}
    # Our own pytest wrote this file a moment ago; it is not untrusted input.
    root = ElementTree.parse(path).getroot()  # noqa: S314
    for case in root.iter("testcase"):
        suite = suite_of.get(_module(case.get("classname", "")))
        if suite is None:
            continue
        result = results[suite]
        result.tests += 1
        result.seconds += float(case.get("time", "0"))
        title = f"{_module(case.get('classname', ''))}::{case.get('name')}"
        if case.find("failure") is not None or case.find("error") is not None:
            result.failed.append(title)
        elif case.find("skipped") is not None:
            result.skipped += 1
        else:
            result.passed += 1
        for prop in case.iter("property"):
            _merge(result.properties, prop.get("name", ""), prop.get("value", ""))
    return results


def run_suites(work: Path, suites: dict[str, tuple[str, ...]] = SUITES) -> dict[str, Any]:
    """One pytest session over every suite's files (those that exist), its logs kept in `work`
    for the scan; the outcome per suite."""
    files = [file for group in suites.values() for file in group if (PROJECT_ROOT / file).exists()]
    missing = [file for group in suites.values() for file in group if file not in files]
    junit = work / "pytest-junit.xml"
    started = time.perf_counter()
    completed = subprocess.run(  # noqa: S603 (our own interpreter and test files)
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:randomly",
            "-p",
            "no:cacheprovider",
            f"--junitxml={junit}",
            # xunit1 keeps the properties tests record (xunit2 warns, and warnings are errors).
            "-o",
            "junit_family=xunit1",
            f"--basetemp={work / 'pytest-tmp'}",
            # Every record the tests' code logs, at the level production runs at, for the scan.
            f"--log-file={work / 'pytest.log'}",
            "--log-file-level=INFO",
            *files,
        ],
        cwd=PROJECT_ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        check=False,
        timeout=3600,
    )
    (work / "pytest-output.txt").write_text(completed.stdout, encoding="utf-8")
    results = read_junit(junit, suites) if junit.exists() else {}
    return {
        "exit_code": completed.returncode,
        "seconds": time.perf_counter() - started,
        "missing_files": missing,
        "summary": completed.stdout.strip().splitlines()[-1:] if completed.stdout else [],
        "suites": {name: result.as_dict() for name, result in results.items()},
    }

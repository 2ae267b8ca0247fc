"""The layering server -> handlers | miniprogram_api | jobs -> models, checked by import-linter."""

import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("server", "handlers", "miniprogram_api", "jobs", "models")
# The same command as `make lint`, from the same virtual environment as this test.
LINT_IMPORTS = [str(Path(sys.executable).with_name("lint-imports")), "--no-cache", "--no-logo"]

# Imports the contract must refuse, one probe module per importing package: upwards, and
# sideways between the three siblings.
FORBIDDEN = {
    "models": ("server.config", "handlers.base", "miniprogram_api.base", "jobs.runner"),
    "handlers": ("server.config", "miniprogram_api.base", "jobs.runner"),
    "miniprogram_api": ("server.config", "jobs.runner"),
    "jobs": ("server.config", "handlers.base", "miniprogram_api.base"),
}


def lint_imports(cwd: Path) -> subprocess.CompletedProcess[str]:
    # lint-imports reads pyproject.toml from, and puts on sys.path, its working directory.
    return subprocess.run(
        LINT_IMPORTS, cwd=cwd, capture_output=True, text=True, timeout=120, check=False
    )


def test_the_code_keeps_the_layers() -> None:
    done = lint_imports(ROOT)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "0 broken" in done.stdout


def test_an_import_across_the_layers_breaks_the_contract(tmp_path: Path) -> None:
    # A copy of the code and its configuration, so the probes never touch the work tree.
    shutil.copy(ROOT / "pyproject.toml", tmp_path)
    for package in PACKAGES:
        shutil.copytree(
            ROOT / package, tmp_path / package, ignore=shutil.ignore_patterns("__pycache__")
        )
    before = lint_imports(tmp_path)
    assert before.returncode == 0, before.stdout + before.stderr
    for package, targets in FORBIDDEN.items():
        lines = "".join(f"import {target}  # noqa: F401\n" for target in targets)
        (tmp_path / package / "layer_probe.py").write_text(lines, encoding="utf-8")

    done = lint_imports(tmp_path)

    assert done.returncode == 1, done.stdout + done.stderr
    assert "1 broken" in done.stdout
    for package, targets in FORBIDDEN.items():
        for target in targets:
            assert f"{package}.layer_probe -> {target}" in done.stdout, (package, target)

"""`python -m server backup`: the round trip as real processes, and every refusal's exit code."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from models.store import DatabaseSettings, Store
from server.__main__ import build_parser
from server.audit_cli import run_audit
from server.backup_cli import run_backup
from server.config import VARIABLES, Config
from tests.mp_support import STATION_CENTRE, local

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
NAME, PHONE = "张伟", "13812345678"  # the case file the `supervised` fixture makes


@pytest.fixture
def record_property(request: pytest.FixtureRequest) -> Callable[[str, object], None]:
    """A figure for the verification runner's JUnit XML, as pytest's own `record_property`
    writes it, without that fixture's warning under the default `xunit2` family (the suite
    turns warnings into errors)."""

    def record(name: str, value: object) -> None:
        request.node.user_properties.append((name, value))

    return record


def environment(config: Config) -> dict[str, str]:
    """The test process's environment without settings of ours, aimed at this test's database
    and state directory (where the `api` fixture made the master key)."""
    ours = {v.name for v in VARIABLES}
    env = {
        name: value
        for name, value in os.environ.items()
        if name not in ours and not name.startswith(("ANBANG_", "WECHAT_"))
    }
    env.update(
        MONGODB_URI=config.mongodb_uri,
        ANBANG_DB_NAME=config.db_name,
        ANBANG_VAR_DIR=str(config.var_dir),
        ANBANG_LOG_LEVEL="WARNING",
        ANBANG_DB_WAIT="10",
    )
    return env


def run(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "server", "backup", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def summary(result: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    assert result.returncode == 0, (result.stdout, result.stderr)
    document: dict[str, Any] = json.loads(result.stdout.strip().splitlines()[-1])
    return document


def assert_no_plaintext(*texts: str) -> None:
    for text in texts:
        assert NAME not in text and PHONE not in text


async def check_in_for_days(supervised: Any, clock: Any, days: range) -> None:
    for day in days:
        clock.set(local(2026, 11, day, 9, 30))
        assert (await supervised.client.login("probationer")).status == 200
        answer = await supervised.client.check_in(
            lat=STATION_CENTRE.lat,
            lng=STATION_CENTRE.lng,
            coord_type="wgs84",
            captured_at=clock.now(),
        )
        assert answer.status == 201, answer.body


async def drop(database_uri: str, name: str) -> None:
    store = Store.connect(DatabaseSettings(uri=database_uri, name=name, production=False))
    await store.database.client.drop_database(name)
    await store.close()


async def cli(config: Config, *args: str) -> int:
    """The command's own code, in this process (its exit code; its output in capsys)."""
    return await run_backup(config, build_parser().parse_args(["backup", *args]))


async def test_keygen_export_restore_compare_as_processes(
    supervised, clock, config, database_uri, tmp_path, capsys, record_property
):
    await check_in_for_days(supervised, clock, range(2, 5))
    env = environment(config)
    archive = tmp_path / "backups" / "anbang-2026-11-04.bak"
    restored_name = f"restored_{uuid.uuid4().hex[:12]}"
    try:
        # The key at its default place, ANBANG_BACKUP_KEY_FILE under the state directory
        # (made in this process: a file write; export, restore and compare run as processes).
        assert await cli(config, "keygen") == 0
        made = json.loads(capsys.readouterr().out)
        assert made["key_file"] == str(config.backup_key_file)
        assert config.backup_key_file.stat().st_mode & 0o777 == 0o600

        export = run(env, "export", "--out", str(archive))
        exported = summary(export)
        assert exported["backup_key_id"] == made["backup_key_id"]
        assert exported["database"] == config.db_name and exported["collections"] > 20
        assert exported["bytes"] == archive.stat().st_size

        restore = run(env, "restore", "--from", str(archive), "--db-name", restored_name)
        restored = summary(restore)
        assert restored["database"] == restored_name
        assert restored["documents"] == exported["documents"]
        assert restored["master_key_ids"] and restored["master_keys_missing"] == []

        compare = run(env, "compare", "--from", str(archive), "--db-name", restored_name)
        compared = summary(compare)
        assert compared["identical"] is True and compared["differences"] == []
        assert compared["documents"] == exported["documents"]
        assert all(c["identical"] for c in compared["per_collection"])

        # `audit verify` walks the restored log (the export's own entry included).
        restored_config = dataclasses.replace(config, db_name=restored_name)
        verified = await run_audit(restored_config, build_parser().parse_args(["audit", "verify"]))
        out = capsys.readouterr().out
        assert verified == 0, out
        assert "audit log intact" in out
        assert_no_plaintext(*(r.stdout + r.stderr for r in (export, restore, compare)))
    finally:
        await drop(database_uri, restored_name)

    record_property("backup_cli_collections", exported["collections"])
    record_property("backup_cli_documents", exported["documents"])
    record_property("backup_cli_bytes", exported["bytes"])
    record_property("backup_cli_export_seconds", exported["seconds"])
    record_property("backup_cli_restore_seconds", restored["seconds"])
    record_property("backup_cli_compare_seconds", compared["seconds"])
    record_property("backup_cli_identical", compared["identical"])


async def collections_of(database_uri: str, name: str) -> list[str]:
    store = Store.connect(DatabaseSettings(uri=database_uri, name=name, production=False))
    try:
        return list(await store.database.list_collection_names())
    finally:
        await store.close()


async def test_refusals_answer_2_and_a_difference_answers_1(
    supervised, clock, config, store, database_uri, tmp_path, capsys
):
    await check_in_for_days(supervised, clock, range(2, 4))
    key_file = tmp_path / "keys" / "backup.key"
    archive = tmp_path / "anbang.bak"
    assert await cli(config, "keygen", "--out", str(key_file)) == 0
    assert await cli(config, "export", "--out", str(archive), "--key-file", str(key_file)) == 0
    capsys.readouterr()
    elsewhere = f"refused_{uuid.uuid4().hex[:12]}"

    def refused(code: int, *fragments: str) -> None:
        err = capsys.readouterr().err
        assert code == 2, err
        for fragment in fragments:
            assert fragment in err, err

    # The same file again: a key is never overwritten.
    refused(await cli(config, "keygen", "--out", str(key_file)), "never overwritten")
    # The configured database holds documents.
    refused(
        await cli(config, "restore", "--from", str(archive), "--key-file", str(key_file)),
        "is not empty",
        "nothing was written",
    )
    # Another key file.
    wrong = tmp_path / "keys" / "other.key"
    assert await cli(config, "keygen", "--out", str(wrong)) == 0
    capsys.readouterr()
    refused(
        await cli(
            config,
            "restore",
            "--from",
            str(archive),
            "--key-file",
            str(wrong),
            "--db-name",
            elsewhere,
        ),
        "wrong key file",
    )
    # A flipped byte.
    damaged = tmp_path / "damaged.bak"
    data = bytearray(archive.read_bytes())
    data[len(data) // 2] ^= 0x40
    damaged.write_bytes(bytes(data))
    refused(
        await cli(
            config,
            "restore",
            "--from",
            str(damaged),
            "--key-file",
            str(key_file),
            "--db-name",
            elsewhere,
        ),
        "does not authenticate",
    )
    refused(
        await cli(config, "compare", "--from", str(damaged), "--key-file", str(key_file)),
        "does not authenticate",
    )
    # The master key is not a backup key.
    refused(
        await cli(
            config,
            "export",
            "--out",
            str(tmp_path / "x.bak"),
            "--key-file",
            str(config.master_key_file),
        ),
        "is the master key file",
    )
    assert not (tmp_path / "x.bak").exists()
    assert await collections_of(database_uri, elsewhere) == []

    # Identical now (also compared with itself as another database); after a check-in is
    # deleted, different (1), with the difference named.
    assert await cli(config, "compare", "--from", str(archive), "--key-file", str(key_file)) == 0
    assert json.loads(capsys.readouterr().out)["identical"] is True
    assert await cli(config, "compare", "--with-db", config.db_name) == 0
    assert json.loads(capsys.readouterr().out)["against"] == f"database {config.db_name}"
    gone = await store.database["checkins"].find_one({})
    await store.database["checkins"].delete_one({"_id": gone["_id"]})
    code = await cli(config, "compare", "--from", str(archive), "--key-file", str(key_file))
    captured = capsys.readouterr()
    assert code == 1, captured
    result = json.loads(captured.out)
    assert result["identical"] is False
    assert {(d["collection"], d["aspect"]) for d in result["differences"]} == {
        ("checkins", "count"),
        ("checkins", "content"),
    }
    assert "DIFFERENT: checkins: count (expected 2, found 1)" in captured.err
    assert str(gone["_id"]) in captured.err

"""`python -m server backup`: the round trip as real processes, and every refusal's exit code."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import uuid
from collections.abc import Callable
from typing import Any

import pytest

from models.store import DatabaseSettings, Store
from server.config import Config
from tests.mp_support import STATION_CENTRE, local
from tests.process_support import Ran, cli_environment, run_cli, run_in_process

pytestmark = pytest.mark.slow

NAME, PHONE = "张伟", "13812345678"  # the case file the `supervised` fixture makes


@pytest.fixture
def record_property(request: pytest.FixtureRequest) -> Callable[[str, object], None]:
    """A figure for the verification runner's JUnit XML, as pytest's own `record_property`
    writes it, without that fixture's warning under the default `xunit2` family (the suite
    turns warnings into errors)."""

    def record(name: str, value: object) -> None:
        request.node.user_properties.append((name, value))

    return record


def summary(result: subprocess.CompletedProcess[str] | Ran) -> dict[str, Any]:
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


async def cli(config: Config, *args: str) -> Ran:
    """`python -m server backup <args>` in this process (the refusals, not the process)."""
    return await run_in_process(config, "backup", *args)


async def test_keygen_export_restore_compare_as_processes(
    supervised, clock, config, database_uri, tmp_path, record_property
):
    await check_in_for_days(supervised, clock, range(2, 5))
    env = cli_environment(config)
    archive = tmp_path / "backups" / "anbang-2026-11-04.bak"
    restored_name = f"restored_{uuid.uuid4().hex[:12]}"
    try:
        # The key at its default place, ANBANG_BACKUP_KEY_FILE under the state directory
        # (made in this process: a file write; export, restore and compare run as processes).
        made = summary(await cli(config, "keygen"))
        assert made["key_file"] == str(config.backup_key_file)
        assert config.backup_key_file.stat().st_mode & 0o777 == 0o600

        export = run_cli("backup", "export", "--out", str(archive), env=env)
        exported = summary(export)
        assert exported["backup_key_id"] == made["backup_key_id"]
        assert exported["database"] == config.db_name and exported["collections"] > 20
        assert exported["bytes"] == archive.stat().st_size

        restore = run_cli(
            "backup", "restore", "--from", str(archive), "--db-name", restored_name, env=env
        )
        restored = summary(restore)
        assert restored["database"] == restored_name
        assert restored["documents"] == exported["documents"]
        assert restored["master_key_ids"] and restored["master_keys_missing"] == []

        compare = run_cli(
            "backup", "compare", "--from", str(archive), "--db-name", restored_name, env=env
        )
        compared = summary(compare)
        assert compared["identical"] is True and compared["differences"] == []
        assert compared["documents"] == exported["documents"]
        assert all(c["identical"] for c in compared["per_collection"])

        # `audit verify` walks the restored log (the export's own entry included).
        restored_config = dataclasses.replace(config, db_name=restored_name)
        verified = await run_in_process(restored_config, "audit", "verify")
        assert verified.returncode == 0, verified.stdout + verified.stderr
        assert "audit log intact" in verified.stdout
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
    supervised, clock, config, store, database_uri, tmp_path
):
    await check_in_for_days(supervised, clock, range(2, 4))
    key_file = tmp_path / "keys" / "backup.key"
    archive = tmp_path / "anbang.bak"
    assert (await cli(config, "keygen", "--out", str(key_file))).returncode == 0
    exported = await cli(config, "export", "--out", str(archive), "--key-file", str(key_file))
    assert exported.returncode == 0
    elsewhere = f"refused_{uuid.uuid4().hex[:12]}"

    def refused(ran: Ran, *fragments: str) -> None:
        assert ran.returncode == 2, ran.stderr
        for fragment in fragments:
            assert fragment in ran.stderr, ran.stderr

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
    assert (await cli(config, "keygen", "--out", str(wrong))).returncode == 0
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
    same = await cli(config, "compare", "--from", str(archive), "--key-file", str(key_file))
    assert summary(same)["identical"] is True
    itself = await cli(config, "compare", "--with-db", config.db_name)
    assert summary(itself)["against"] == f"database {config.db_name}"
    gone = await store.database["checkins"].find_one({})
    await store.database["checkins"].delete_one({"_id": gone["_id"]})
    differ = await cli(config, "compare", "--from", str(archive), "--key-file", str(key_file))
    assert differ.returncode == 1, differ
    result = json.loads(differ.stdout)
    assert result["identical"] is False
    assert {(d["collection"], d["aspect"]) for d in result["differences"]} == {
        ("checkins", "count"),
        ("checkins", "content"),
    }
    assert "DIFFERENT: checkins: count (expected 2, found 1)" in differ.stderr
    assert str(gone["_id"]) in differ.stderr

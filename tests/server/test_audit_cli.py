"""The real command line as subprocesses: audit checkpoints and verification, master-key rotation
and retirement, data-key rotation and shredding, against the session's embedded database."""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from bson import ObjectId

from models.audit import SIGNING_KEY_ID, AuditContext
from models.clock import SystemClock
from models.identity import Identity
from models.identity_numbers import IdType
from models.keys import KeyVault, LocalKeyFile
from models.orgs import Org, OrgKind
from models.passwords import TEST_COST
from models.store import Store
from models.subjects import SubjectInput
from server.app import (
    SYSTEM,
    Services,
    build_services,
    collection_specs,
    connect_store,
    open_vault,
)
from server.config import Config
from tests.process_support import clean_environment, run_cli
from tests.subject_factories import resident_id

pytestmark = pytest.mark.slow

NOW = "2026-11-24T08:00:00+08:00"
NAME, PHONE, ADDRESS = "赵小明", "13512349876", "浙江省温州市鹿城区五马街17号"


@dataclass
class Cli:
    env: dict[str, str]
    config: Config
    store: Store
    services: Services
    station: Org
    officer: AuditContext

    def run(self, *args: str) -> subprocess.CompletedProcess[str]:
        return run_cli(*args, env=self.env)

    @property
    def key_file(self) -> dict[str, Any]:
        return json.loads(self.config.master_key_file.read_text(encoding="utf-8"))

    def exported(self) -> list[dict[str, Any]]:
        text = self.config.audit_export.read_text(encoding="utf-8")
        return [json.loads(line) for line in text.splitlines() if line]

    def checkpoints(self) -> list[dict[str, Any]]:
        """The signed checkpoints of the export (without the chain anchors beside them)."""
        return [line for line in self.exported() if "kind" not in line]

    async def fresh_services(self) -> Services:
        """What another process would see now: the key file re-read, nothing cached."""
        provider = LocalKeyFile(self.config.master_key_file, self.services.vault.suite)
        provider.load()
        vault = KeyVault(self.store, provider, self.services.vault.suite, SystemClock())
        await vault.open()
        return build_services(self.store, self.config, SystemClock(), vault, TEST_COST)

    async def create_subject(self) -> tuple[str, SubjectInput]:
        data = SubjectInput(
            name=NAME,
            id_type=IdType.RESIDENT,
            id_number=resident_id(dt.date(1992, 5, 17), "male"),
            phone=PHONE,
            gender="male",
            birth_date=dt.date(1992, 5, 17),
            address=ADDRESS,
            org_id=self.station.id,
        )
        view = await self.services.subjects.create(SYSTEM, data)
        await self.services.subjects.add_note(self.officer, view.id, "首次报到：材料齐全")
        return view.id, data


@pytest.fixture
async def cli(database_uri, tmp_path) -> AsyncIterator[Cli]:
    env = clean_environment(
        MONGODB_URI=database_uri,
        ANBANG_DB_NAME=f"cli_{uuid.uuid4().hex[:12]}",
        ANBANG_VAR_DIR=str(tmp_path / "var"),
        ANBANG_LOG_LEVEL="WARNING",
        ANBANG_DB_WAIT="10",
    )
    config = Config.from_env(env)
    store = connect_store(config)
    try:
        await store.ensure_indexes(collection_specs())
        clock = SystemClock()
        vault = await open_vault(config, store, clock)
        services = build_services(store, config, clock, vault, TEST_COST)
        city = await services.orgs.create(
            SYSTEM, name="温州市", code="330300", kind=OrgKind.CITY, parent_id=None
        )
        county = await services.orgs.create(
            SYSTEM, name="鹿城区司法局", code="330302", kind=OrgKind.COUNTY, parent_id=city.id
        )
        station = await services.orgs.create(
            SYSTEM, name="五马司法所", code="330302001", kind=OrgKind.STATION, parent_id=county.id
        )
        officer = AuditContext(
            Identity(
                user_id="officer-1",
                role="county_officer",
                org_id=county.id,
                org_path=county.path,
            ),
            request_id="test",
        )
        yield Cli(env, config, store, services, station, officer)
    finally:
        await store.database.client.drop_database(config.db_name)
        await store.close()


def assert_ok(result: subprocess.CompletedProcess[str]) -> None:
    assert result.returncode == 0, (result.stdout, result.stderr)


def assert_no_plaintext(*results: subprocess.CompletedProcess[str], secrets: list[str]) -> None:
    for result in results:
        for secret in secrets:
            assert secret not in result.stdout and secret not in result.stderr, secret


# --- audit checkpoints and verification ---------------------------------------------------------


async def test_checkpoint_then_verify_then_an_edited_entry_is_named(cli):
    subject_id, _ = await cli.create_subject()

    swept = cli.run("jobs", "run-once", "audit_checkpoint", "--now", NOW)
    assert_ok(swept)
    [checkpoint] = cli.checkpoints()
    assert cli.config.audit_export == Path(cli.env["ANBANG_VAR_DIR"]) / "audit/checkpoints.jsonl"
    # Signed at the chosen time, naming the head of this process's chain.
    assert checkpoint["at"] == "2026-11-24T00:00:00.000+00:00"
    chain_id = cli.services.audit.chain_id
    head = await cli.store.database["audit"].find_one({"chain_id": chain_id}, sort=[("seq", -1)])
    assert checkpoint["heads"][chain_id] == {"seq": head["seq"], "hash": head["hash"]}
    assert checkpoint["signature"]

    verified = cli.run("audit", "verify")
    assert_ok(verified)
    assert "intact" in verified.stdout and "1 checkpoint(s)" in verified.stdout

    # Someone edits the entry recording the creation of the case file.
    created = await cli.store.database["audit"].find_one(
        {"action": "subjects.create", "resource_id": subject_id, "outcome": "pending"}
    )
    await cli.store.database["audit"].update_one(
        {"_id": created["_id"]}, {"$set": {"actor_id": "nobody"}}
    )
    broken = cli.run("audit", "verify")
    assert broken.returncode == 1, (broken.stdout, broken.stderr)
    assert "BROKEN" in broken.stdout
    assert f"chain {created['chain_id']} entry {created['seq']}" in broken.stdout


async def test_verify_fails_on_a_tail_removed_after_a_checkpoint(cli):
    await cli.create_subject()
    assert_ok(cli.run("jobs", "run-once", "audit_checkpoint", "--now", NOW))
    chain_id = cli.services.audit.chain_id
    last = await cli.store.database["audit"].find_one({"chain_id": chain_id}, sort=[("seq", -1)])
    await cli.store.database["audit"].delete_one({"_id": last["_id"]})

    broken = cli.run("audit", "verify")
    assert broken.returncode == 1, (broken.stdout, broken.stderr)
    assert f"chain {chain_id}" in broken.stdout and "truncated" in broken.stdout
    assert f"entry {last['seq']}" in broken.stdout


async def test_verify_names_a_chain_deleted_before_any_checkpoint(cli):
    """This process's chain and its registry record deleted before the jobs process ever
    signed a checkpoint: its opening is anchored in the export."""
    await cli.create_subject()
    chain_id = cli.services.audit.chain_id
    [opening] = [line for line in cli.exported() if line.get("chain_id") == chain_id]
    assert opening["kind"] == "chain.open" and opening["mac"]
    assert_ok(cli.run("audit", "verify"))

    await cli.store.database["audit"].delete_many({"chain_id": chain_id})
    await cli.store.database["audit_chains"].delete_one({"_id": chain_id})
    broken = cli.run("audit", "verify")
    assert broken.returncode == 1, (broken.stdout, broken.stderr)
    assert f"chain {chain_id}" in broken.stdout and "missing from the database" in broken.stdout


async def test_verify_names_a_tail_cut_after_a_command_ended(cli):
    """A command line run closes its chain when it ends, its head anchored in the export: a
    tail deleted afterwards shows without any checkpoint."""
    assert_ok(cli.run("admin", "keys", "rotate-master"))
    audit = cli.store.database["audit"]
    rotated = await audit.find_one({"action": "keys.rotate_master"})
    chain_id = rotated["chain_id"]
    last = await audit.find_one({"chain_id": chain_id}, sort=[("seq", -1)])
    assert last["seq"] > rotated["seq"]
    closing = [line for line in cli.exported() if line.get("chain_id") == chain_id][-1]
    assert (closing["kind"], closing["seq"], closing["hash"]) == (
        "chain.close",
        last["seq"],
        last["hash"],
    )
    assert_ok(cli.run("audit", "verify"))

    await audit.delete_many({"chain_id": chain_id, "seq": {"$gt": rotated["seq"]}})
    broken = cli.run("audit", "verify")
    assert broken.returncode == 1, (broken.stdout, broken.stderr)
    assert f"chain {chain_id}" in broken.stdout and "truncated" in broken.stdout
    assert f"entry {last['seq']}" in broken.stdout


async def test_verify_does_not_vouch_for_checkpoints_it_cannot_check(cli):
    """With the audit signing key gone from the key vault, a rewritten checkpoint file (hiding a
    truncated chain) must not pass as intact."""
    await cli.create_subject()
    assert_ok(cli.run("jobs", "run-once", "audit_checkpoint", "--now", NOW))
    chain_id = cli.services.audit.chain_id
    audit = cli.store.database["audit"]
    last = await audit.find_one({"chain_id": chain_id}, sort=[("seq", -1)])
    await audit.delete_one({"_id": last["_id"]})
    before = await audit.find_one({"chain_id": chain_id}, sort=[("seq", -1)])
    [checkpoint] = cli.checkpoints()
    checkpoint["heads"][chain_id] = {"seq": before["seq"], "hash": before["hash"]}
    cli.config.audit_export.write_text(json.dumps(checkpoint) + "\n", encoding="utf-8")
    await cli.store.database["key_vault"].delete_one({"_id": SIGNING_KEY_ID})

    result = cli.run("audit", "verify")
    assert result.returncode != 0, result.stdout


# --- master key rotation and retirement ---------------------------------------------------------


async def test_rotate_master_then_retire_the_old_key(cli):
    subject_id, data = await cli.create_subject()
    assert_ok(cli.run("jobs", "run-once", "audit_checkpoint", "--now", NOW))
    first = cli.key_file["current"]
    vault_size = await cli.store.database["key_vault"].count_documents({})

    rotated = cli.run("admin", "keys", "rotate-master")
    assert_ok(rotated)
    second = cli.key_file["current"]
    assert second != first and sorted(cli.key_file["keys"]) == sorted([first, second])
    assert f"rewrapped {vault_size} key(s) under {second}" in rotated.stdout
    assert cli.config.master_key_file.stat().st_mode & 0o777 == 0o600
    assert set(await cli.store.database["key_vault"].distinct("kek_id")) == {second}

    # The checkpoint signed before the rotation still verifies (the signing key was rewrapped).
    verified = cli.run("audit", "verify")
    assert_ok(verified)
    assert "intact" in verified.stdout

    fresh = await cli.fresh_services()
    view = await fresh.subjects.read(cli.officer, subject_id)
    assert view.fields["name"] == NAME and view.fields["id_number"] == data.id_number

    # A rotation that stopped after writing its new key: keys are still under `second`.
    provider = LocalKeyFile(cli.config.master_key_file, fresh.vault.suite)
    provider.load()
    third = provider.add_new_current()
    refused = cli.run("admin", "keys", "retire-master", second)
    assert refused.returncode == 1
    assert f"still wrapped by {second}" in refused.stderr and "rotate-master" in refused.stderr
    assert second in cli.key_file["keys"]
    current_refused = cli.run("admin", "keys", "retire-master", third)
    assert current_refused.returncode == 1 and third in cli.key_file["keys"]

    resumed = cli.run("admin", "keys", "rotate-master")
    assert_ok(resumed)
    assert "resuming an unfinished rotation" in resumed.stdout
    assert cli.key_file["current"] == third  # no fourth key: the unfinished one is finished

    for old in (second, first):
        retired = cli.run("admin", "keys", "retire-master", old)
        assert_ok(retired)
        assert f"retired {old}" in retired.stdout
    assert list(cli.key_file["keys"]) == [third]

    assert_ok(cli.run("audit", "verify"))
    fresh = await cli.fresh_services()
    view = await fresh.subjects.read(cli.officer, subject_id)
    assert view.fields["name"] == NAME and view.fields["address"] == ADDRESS
    notes = await fresh.subjects.notes(cli.officer, subject_id)
    assert [n["text"] for n in notes] == ["首次报到：材料齐全"]

    # Every key operation is in the audit log.
    actions = {(e["action"], e["outcome"]) async for e in cli.store.database["audit"].find({})}
    assert ("keys.rotate_master.outcome", "ok") in actions
    assert ("keys.retire_master.outcome", "ok") in actions


# --- data keys: rotation and shredding ----------------------------------------------------------


async def test_rotate_subject_then_shred(cli):
    subject_id, data = await cli.create_subject()

    rotated = cli.run("admin", "keys", "rotate-subject", subject_id)
    assert_ok(rotated)
    doc = await cli.store.database["subjects"].find_one({"_id": ObjectId(subject_id)})
    assert doc["dek_id"] != f"dek:{subject_id}" and doc["dek_id"] in rotated.stdout
    fresh = await cli.fresh_services()
    view = await fresh.subjects.read(cli.officer, subject_id)
    assert view.fields["phone"] == PHONE

    shredded = cli.run("admin", "keys", "shred", subject_id)
    assert_ok(shredded)
    assert f"case file {subject_id} shredded" in shredded.stdout

    fresh = await cli.fresh_services()
    view = await fresh.subjects.read(cli.officer, subject_id)
    assert view.status == "shredded" and view.fields == {}
    page = await fresh.subjects.search(
        cli.officer,
        id_number=data.id_number,
        phone=None,
        name=None,
        population=None,
        status=None,
        cursor=None,
        limit=10,
    )
    assert page.items == []
    keys = cli.store.database["key_vault"]
    assert await keys.count_documents({"subject_id": subject_id}) == 2
    assert await keys.count_documents({"subject_id": subject_id, "wrapped": {"$ne": None}}) == 0

    missing = cli.run("admin", "keys", "shred", str(ObjectId()))
    assert missing.returncode == 1 and "No such case file" in missing.stderr

    assert_ok(cli.run("jobs", "run-once", "audit_checkpoint", "--now", NOW))
    verified = cli.run("audit", "verify")
    assert_ok(verified)
    assert_no_plaintext(
        rotated, shredded, missing, verified, secrets=[NAME, data.id_number, PHONE, ADDRESS]
    )

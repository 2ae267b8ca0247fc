"""The audit log on a real database: per-process hash chains, signed checkpoints, verification.

Verification must pass on an untouched log and fail, naming the chain and the entry, on each kind
of tampering: an edited, deleted, swapped or truncated entry, a deleted chain, a forged checkpoint,
an entry rewritten with a recomputed digest, a chain deleted before any checkpoint, a tail cut
after its process ended. Everything runs under both suites.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import itertools
import json
import re
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from models.audit import (
    AUDIT,
    AUDIT_CHAINS,
    AUDIT_CHECKPOINTS,
    GENESIS,
    MAC_KEY_ID,
    AuditCheckpointer,
    AuditContext,
    AuditService,
    ChainAnchor,
    VerifyReport,
    _checkpoint_message,  # what a checkpoint's signature covers, to forge one with another key
    entry_hash,
    entry_mac,
    is_anchor,
    read_exported_checkpoints,
    verify_audit,
)
from models.clock import FixedClock
from models.crypto import Suite, new_signing_key, public_key, sign
from models.errors import Conflict, NotFound
from models.identity import Identity
from models.keys import KEY_VAULT, KeyVault, LocalKeyFile
from models.store import DatabaseSettings, Store

START = dt.datetime(2026, 11, 24, 0, 0, tzinfo=dt.UTC)
SUITES = pytest.mark.parametrize("suite", list(Suite), ids=[str(s) for s in Suite])
PROPERTY = settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)

OFFICER = AuditContext(
    Identity(user_id="staff-1", role="county_officer", org_id="o-county", org_path=("o-city",)),
    request_id="req-1",
    remote_ip="127.0.0.1",
)
WORKER = AuditContext(
    Identity(user_id="staff-2", role="social_worker", org_id="o-station"),
    request_id="req-2",
    remote_ip="10.0.0.7",
)


# A fixed SM2 key: about one random SM2 key in 256 is mishandled by the signing code (its public
# key starts with "04"; see test_crypto.test_every_sm2_signing_key_signs_and_verifies), which
# would make these tests fail at random. The Ed25519 key is fresh each time.
SM2_SIGNING_KEY = bytes.fromhex("8300dc6e1c18ff253b4114344e6d48341f9b76296a00ce1f82bbad4eaa98b09f")
SM2_FORGER_KEY = bytes.fromhex("459aa7f8219a341579805b491dabbaa2fcfefc5a7130ece1d7c7c657b6262bce")


def signing_key(suite: Suite, *, forger: bool = False) -> bytes:
    if suite is Suite.SM:
        return SM2_FORGER_KEY if forger else SM2_SIGNING_KEY
    return new_signing_key(suite)


@contextlib.asynccontextmanager
async def fresh_store(database_uri: str) -> AsyncIterator[Store]:
    """A database of its own (for one hypothesis example) with the indexes of the collections
    an audit log and its key vault keep, dropped afterwards."""
    name = f"audit_{uuid.uuid4().hex[:12]}"
    store = Store.connect(DatabaseSettings(uri=database_uri, name=name, production=False))
    try:
        await store.ensure_indexes([AUDIT, AUDIT_CHAINS, AUDIT_CHECKPOINTS, KEY_VAULT])
        yield store
    finally:
        await store.database.client.drop_database(name)
        await store.close()


async def open_test_vault(store: Store, suite: Suite, key_file: Path) -> KeyVault:
    """A key vault under a master key file of its own (the suite's, whichever the test's)."""
    provider = LocalKeyFile(key_file, suite)
    provider.create()
    vault = KeyVault(store, provider, suite, FixedClock(START))
    await vault.open()
    return vault


@dataclass
class Log:
    """An audit log written by two processes in keyed, anchored chains, with the jobs process's
    checkpointer."""

    store: Store
    suite: Suite
    clock: FixedClock
    export: Path
    signing_key: bytes
    vault: KeyVault
    api: AuditService
    other: AuditService

    def service(self, role: str = "api") -> AuditService:
        """Another process's audit service, keyed and anchored like the first two."""
        anchor = ChainAnchor(self.vault, self.export)
        return AuditService(self.store, self.clock, self.suite, role, anchor=anchor)

    async def mac_key(self) -> bytes:
        return await self.vault.get(MAC_KEY_ID)

    @property
    def public(self) -> bytes:
        return public_key(self.suite, self.signing_key)

    @property
    def entries_coll(self) -> Any:
        return self.store.database["audit"]

    async def checkpoint(self) -> dict[str, Any]:
        checkpointer = AuditCheckpointer(
            self.store, self.clock, self.suite, self.signing_key, self.export
        )
        self.clock.advance(dt.timedelta(minutes=5))
        return await checkpointer.checkpoint()

    async def verify(self) -> VerifyReport:
        return await verify_audit(
            self.store,
            self.suite,
            self.public,
            read_exported_checkpoints(self.export),
            await self.mac_key(),
        )

    def exported_checkpoints(self) -> list[dict[str, Any]]:
        return [c for c in read_exported_checkpoints(self.export) if not is_anchor(c)]

    @property
    def processes(self) -> list[str]:
        """The two chains, in a stable order (their ids are random)."""
        return [self.api.chain_id, self.other.chain_id]

    async def chain_ids(self) -> list[str]:
        return sorted([d["_id"] async for d in self.store.database["audit_chains"].find({})])

    async def entries(self, chain_id: str) -> list[dict[str, Any]]:
        cursor = self.entries_coll.find({"chain_id": chain_id}).sort("seq", 1)
        return [entry async for entry in cursor]

    async def write(self, service: AuditService, count: int, tag: str) -> None:
        """`count` varied entries: reads, refusals, searches and an audited change."""
        for i in range(count):
            self.clock.advance(dt.timedelta(seconds=1))
            kind = i % 4
            if kind == 0:
                await service.record(
                    OFFICER,
                    "subjects.read",
                    resource="subject",
                    resource_id=f"s-{tag}-{i}",
                    subject_id=f"s-{tag}-{i}",
                    details={"access": "scope", "masked": []},
                )
            elif kind == 1:
                await service.record(
                    WORKER,
                    "subjects.read",
                    resource="subject",
                    resource_id=f"s-{tag}-{i}",
                    outcome="refused:out_of_scope",
                )
            elif kind == 2:
                await service.record(
                    OFFICER,
                    "subjects.search",
                    resource="subject",
                    reason="家访前核对身份",
                    details={"bi": {"id_number": "ab" * 32}, "found": 1},
                )
            else:
                async with service.change(
                    OFFICER, "subjects.update", resource="subject", resource_id=f"s-{tag}-{i}"
                ):
                    pass


async def build_log(
    store: Store, suite: Suite, export: Path, api_count: int = 6, other_count: int = 4
) -> Log:
    clock = FixedClock(START)
    vault = await open_test_vault(store, suite, export.with_name("master.key"))
    log = Log(
        store=store,
        suite=suite,
        clock=clock,
        export=export,
        signing_key=signing_key(suite),
        vault=vault,
        api=AuditService(store, clock, suite, "api", anchor=ChainAnchor(vault, export)),
        other=AuditService(store, clock, suite, "api", anchor=ChainAnchor(vault, export)),
    )
    # Two processes writing in turns.
    for _ in range(2):
        await log.write(log.api, api_count // 2, "a")
        await log.write(log.other, other_count // 2, "b")
    return log


@pytest.fixture
async def audit_log(store, tmp_path, request) -> Log:
    suite = getattr(request, "param", Suite.STANDARD)
    return await build_log(store, suite, tmp_path / "audit" / "checkpoints.jsonl")


def names_entry(problem: str | None, *seqs: int) -> bool:
    return problem is not None and any(re.search(rf"\bentry {s}\b", problem) for s in seqs)


def assert_broken(report: VerifyReport, chain_id: str, *seqs: int) -> None:
    assert not report.ok, "tampering went unnoticed"
    assert report.problem is not None and chain_id in report.problem, report.problem
    if seqs:
        assert names_entry(report.problem, *seqs), (seqs, report.problem)


# --- the chains ---------------------------------------------------------------------------------


@SUITES
async def test_each_process_writes_one_hash_chain_opened_on_first_use(store, suite):
    clock = FixedClock(START)
    service = AuditService(store, clock, suite, "api")
    # Nothing is written before the first entry (a chain is never opened before a fork).
    assert service.chain_id is None
    assert await store.database["audit_chains"].count_documents({}) == 0

    ids = []
    for i in range(5):
        clock.advance(dt.timedelta(seconds=1))
        ids.append(
            await service.record(
                OFFICER, "subjects.read", resource="subject", resource_id=f"s{i}", subject_id="s"
            )
        )
    chain_id = service.chain_id
    assert chain_id is not None
    registered = await store.database["audit_chains"].find_one({"_id": chain_id})
    assert registered["role"] == "api" and registered["suite"] == str(suite)

    entries = [e async for e in store.database["audit"].find({"chain_id": chain_id}).sort("seq", 1)]
    assert [e["seq"] for e in entries] == [1, 2, 3, 4, 5, 6]
    assert entries[0]["action"] == "chain.open" and entries[0]["resource_id"] == chain_id
    assert entries[0]["prev"] == GENESIS
    for before, after in itertools.pairwise(entries):
        assert after["prev"] == before["hash"]
    for entry in entries:
        assert entry["hash"] == entry_hash(suite, entry)
        assert entry["_id"] == f"{chain_id}:{entry['seq']:012d}"
    assert [e["_id"] for e in entries[1:]] == ids
    # Who, what, on whom, from where.
    read = entries[1]
    assert (read["actor_id"], read["role"], read["action"], read["resource_id"]) == (
        "staff-1",
        "county_officer",
        "subjects.read",
        "s0",
    )
    assert (read["subject_id"], read["request_id"], read["remote_ip"], read["outcome"]) == (
        "s",
        "req-1",
        "127.0.0.1",
        "ok",
    )
    assert read["at"] == START + dt.timedelta(seconds=1)


@SUITES
async def test_two_processes_write_two_chains(store, suite):
    clock = FixedClock(START)
    first = AuditService(store, clock, suite, "api")
    second = AuditService(store, clock, suite, "jobs")
    for i in range(3):
        await first.record(OFFICER, "subjects.read", resource="subject", resource_id=f"a{i}")
        await second.record(WORKER, "subjects.read", resource="subject", resource_id=f"b{i}")
    await first.record(OFFICER, "subjects.list", resource="subject")

    assert first.chain_id != second.chain_id
    chains = {c["_id"]: c async for c in store.database["audit_chains"].find({})}
    assert set(chains) == {first.chain_id, second.chain_id}
    assert chains[second.chain_id]["role"] == "jobs"
    for service, count in ((first, 5), (second, 4)):
        cursor = store.database["audit"].find({"chain_id": service.chain_id}).sort("seq", 1)
        assert [e["seq"] async for e in cursor] == list(range(1, count + 1))
    report = await verify_audit(store, suite, None, [])
    assert report == VerifyReport(True, 2, 9)


@SUITES
async def test_concurrent_appends_in_one_process_keep_one_unbroken_chain(store, suite):
    service = AuditService(store, FixedClock(START), suite)
    ids = await asyncio.gather(
        *(
            service.record(OFFICER, "subjects.read", resource="subject", resource_id=f"s{i}")
            for i in range(40)
        )
    )
    assert len(set(ids)) == 40
    report = await verify_audit(store, suite, None, [])
    assert report.ok and report.entries == 41, report


async def test_processes_with_their_own_clients_append_at_once(store, config):
    other_store = Store.connect(
        DatabaseSettings(uri=config.database_uri, name=config.db_name, production=False)
    )
    try:
        clock = FixedClock(START)
        services = [AuditService(s, clock) for s in (store, other_store, store, other_store)]
        await asyncio.gather(
            *(
                services[i % 4].record(OFFICER, "subjects.read", resource="subject")
                for i in range(40)
            )
        )
    finally:
        await other_store.close()
    report = await verify_audit(store, Suite.STANDARD, None, [])
    # Four services: four chains, each opened once.
    assert report.ok and report.chains == 4 and report.entries == 44, report


# --- audited changes ----------------------------------------------------------------------------


async def entry(store: Store, entry_id: str) -> dict[str, Any]:
    found = await store.database["audit"].find_one({"_id": entry_id})
    assert found is not None, entry_id
    return found


async def outcome_of(store: Store, entry_id: str) -> dict[str, Any]:
    found = await store.database["audit"].find_one({"details.entry": entry_id})
    assert found is not None, entry_id
    return found


@SUITES
async def test_a_change_is_preceded_by_its_entry_and_followed_by_its_outcome(store, suite):
    service = AuditService(store, FixedClock(START), suite)
    async with service.change(
        OFFICER,
        "subjects.update",
        resource="subject",
        resource_id="s1",
        subject_id="s1",
        details={"fields": ["address"]},
    ) as entry_id:
        # Before the change is made, its entry is already in the log.
        pending = await entry(store, entry_id)
        assert pending["outcome"] == "pending" and pending["action"] == "subjects.update"
        assert pending["details"] == {"fields": ["address"]}
        assert await store.database["audit"].count_documents({"details.entry": entry_id}) == 0
    done = await outcome_of(store, entry_id)
    assert done["action"] == "subjects.update.outcome" and done["outcome"] == "ok"
    assert (done["resource_id"], done["subject_id"], done["actor_id"]) == ("s1", "s1", "staff-1")
    assert done["seq"] == pending["seq"] + 1
    assert (await verify_audit(store, suite, None, [])).ok


@SUITES
@pytest.mark.parametrize(
    ("error", "outcome"),
    [
        (Conflict("stale", code="stale_version"), "refused:stale_version"),
        (NotFound(), "refused:not_found"),
        (RuntimeError("the database went away"), "failed"),
        (asyncio.CancelledError(), "failed"),
    ],
    ids=["conflict", "not-found", "crash", "cancelled"],
)
async def test_a_change_that_does_not_happen_records_why(store, suite, error, outcome):
    service = AuditService(store, FixedClock(START), suite)
    with pytest.raises(type(error)):
        async with service.change(
            OFFICER, "subjects.update", resource="subject", resource_id="s1"
        ) as entry_id:
            raise error
    assert (await entry(store, entry_id))["outcome"] == "pending"
    done = await outcome_of(store, entry_id)
    assert done["action"] == "subjects.update.outcome" and done["outcome"] == outcome
    assert (await verify_audit(store, suite, None, [])).ok


# --- verification ---------------------------------------------------------------------------------

BOTH = pytest.mark.parametrize("audit_log", list(Suite), ids=[str(s) for s in Suite], indirect=True)


@BOTH
async def test_an_untouched_log_verifies_with_its_checkpoints(audit_log):
    first = await audit_log.checkpoint()
    await audit_log.write(audit_log.api, 3, "c")
    second = await audit_log.checkpoint()

    exported = audit_log.exported_checkpoints()
    assert [c["_id"] for c in exported] == [first["_id"], second["_id"]]
    assert exported[1]["previous"] == first["_id"]
    chains = await audit_log.chain_ids()
    assert set(exported[1]["heads"]) == set(chains)
    for chain_id in chains:
        last = (await audit_log.entries(chain_id))[-1]
        assert exported[1]["heads"][chain_id] == {"seq": last["seq"], "hash": last["hash"]}

    report = await audit_log.verify()
    total = await audit_log.entries_coll.count_documents({})
    assert report == VerifyReport(True, 2, total)
    # The checkpoints are also kept in the database.
    assert await audit_log.store.database["audit_checkpoints"].count_documents({}) == 2


@BOTH
async def test_an_edited_entry_is_named(audit_log):
    await audit_log.checkpoint()
    chain_id = audit_log.api.chain_id
    await audit_log.entries_coll.update_one(
        {"chain_id": chain_id, "seq": 3}, {"$set": {"actor_id": "someone-else"}}
    )
    report = await audit_log.verify()
    assert_broken(report, chain_id, 3)
    assert "edited" in report.problem


@BOTH
async def test_a_deleted_entry_is_named(audit_log):
    await audit_log.checkpoint()
    chain_id = audit_log.other.chain_id
    await audit_log.entries_coll.delete_one({"chain_id": chain_id, "seq": 2})
    report = await audit_log.verify()
    assert_broken(report, chain_id, 2)
    assert "deleted" in report.problem


@BOTH
async def test_two_swapped_entries_are_named(audit_log):
    await audit_log.checkpoint()
    chain_id = audit_log.api.chain_id
    await swap(audit_log, chain_id, 2, 4)
    report = await audit_log.verify()
    assert_broken(report, chain_id, 2)


@BOTH
async def test_a_truncated_tail_is_named(audit_log):
    await audit_log.checkpoint()
    chain_id = audit_log.api.chain_id
    last = (await audit_log.entries(chain_id))[-1]["seq"]
    await audit_log.entries_coll.delete_many({"chain_id": chain_id, "seq": {"$gt": last - 2}})
    report = await audit_log.verify()
    assert_broken(report, chain_id, last - 2, last)
    assert "truncated" in report.problem


@BOTH
async def test_a_truncated_tail_with_a_recomputed_chain_is_caught_by_the_checkpoint(audit_log):
    """Deleting the last entry and appending a plausible replacement, with a correct MAC (an
    insider holding the MAC key), still disagrees with the signed head."""
    await audit_log.checkpoint()
    chain_id = audit_log.api.chain_id
    entries = await audit_log.entries(chain_id)
    last = entries[-1]
    forged = {**last, "actor_id": "someone-else"}
    forged["hash"] = entry_mac(audit_log.suite, await audit_log.mac_key(), forged)
    await audit_log.entries_coll.replace_one({"_id": last["_id"]}, forged)
    report = await audit_log.verify()
    assert_broken(report, chain_id, last["seq"])
    assert "differs from checkpoint" in report.problem


@BOTH
@pytest.mark.parametrize("what", ["chain-and-entries", "chain-document", "entries"])
async def test_a_deleted_chain_is_named(audit_log, what):
    await audit_log.checkpoint()
    chain_id = audit_log.other.chain_id
    if what != "entries":
        await audit_log.store.database["audit_chains"].delete_one({"_id": chain_id})
    if what != "chain-document":
        await audit_log.entries_coll.delete_many({"chain_id": chain_id})
    report = await audit_log.verify()
    assert_broken(report, chain_id)
    assert "missing" in report.problem or "truncated" in report.problem


async def rewrite_export(log: Log, change: Any) -> None:
    """Rewrite the export's checkpoints (the chain anchors kept as they were)."""
    lines = read_exported_checkpoints(log.export)
    checkpoints = [line for line in lines if not is_anchor(line)]
    change(checkpoints)
    kept = [line for line in lines if is_anchor(line)]
    log.export.write_text(
        "".join(json.dumps(c, sort_keys=True) + "\n" for c in kept + checkpoints),
        encoding="utf-8",
    )


@BOTH
@pytest.mark.parametrize(
    "forgery", ["flipped-signature", "heads-edited", "other-key", "time-moved", "no-signature"]
)
async def test_a_forged_checkpoint_is_refused(audit_log, forgery):
    first = await audit_log.checkpoint()
    await audit_log.write(audit_log.api, 2, "c")
    await audit_log.checkpoint()
    chain_id = audit_log.api.chain_id
    suite = audit_log.suite

    def forge(checkpoints: list[dict[str, Any]]) -> None:
        target = checkpoints[-1]
        if forgery == "flipped-signature":
            signature = bytearray(bytes.fromhex(target["signature"]))
            signature[len(signature) // 2] ^= 0x10
            target["signature"] = signature.hex()
        elif forgery == "heads-edited":
            # Hide a truncation: claim the head is the one the first checkpoint saw.
            target["heads"][chain_id] = first["heads"][chain_id]
        elif forgery == "other-key":
            target["heads"][chain_id] = first["heads"][chain_id]
            target["signature"] = sign_with(suite, _checkpoint_message(target))
        elif forgery == "time-moved":
            target["at"] = "2027-01-01T00:00:00.000+00:00"
        else:
            target["signature"] = ""

    await rewrite_export(audit_log, forge)
    report = await audit_log.verify()
    assert not report.ok
    assert "bad signature" in report.problem and first["_id"] not in report.problem


def sign_with(suite: Suite, message: bytes) -> str:
    return sign(suite, signing_key(suite, forger=True), message).hex()


async def swap(log: Log, chain_id: str, i: int, j: int) -> None:
    """Swap two entries' contents, keeping each one's _id and sequence number."""
    a = await log.entries_coll.find_one({"chain_id": chain_id, "seq": i})
    b = await log.entries_coll.find_one({"chain_id": chain_id, "seq": j})
    for target, source in ((a, b), (b, a)):
        body = {k: v for k, v in source.items() if k not in ("_id", "seq")}
        await log.entries_coll.replace_one({"_id": target["_id"]}, {**body, "seq": target["seq"]})


@BOTH
async def test_an_entry_without_a_sequence_number_is_noticed(audit_log):
    await audit_log.checkpoint()
    chain_id = audit_log.api.chain_id
    await audit_log.entries_coll.update_one(
        {"chain_id": chain_id, "seq": 4}, {"$unset": {"seq": ""}}
    )
    assert_broken(await audit_log.verify(), chain_id)


# --- keyed chains, anchors, and the checkpoints held against the export -------------------------


def anchors_of(log: Log, chain_id: str) -> list[dict[str, Any]]:
    lines = read_exported_checkpoints(log.export)
    return [line for line in lines if is_anchor(line) and line["chain_id"] == chain_id]


@BOTH
async def test_a_chain_deleted_whole_before_any_checkpoint_is_named(audit_log):
    """A process started and wrote; its entries and its registry record are deleted before the
    jobs process ever signed a checkpoint. Its opening was anchored the moment it opened."""
    late = audit_log.service()
    await audit_log.write(late, 3, "late")
    chain_id = late.chain_id
    [opening] = anchors_of(audit_log, chain_id)
    assert opening["kind"] == "chain.open" and opening["scheme"] == "mac"
    assert (opening["seq"], opening["role"]) == (1, "api")
    assert (await audit_log.verify()).ok

    await audit_log.store.database["audit_chains"].delete_one({"_id": chain_id})
    await audit_log.entries_coll.delete_many({"chain_id": chain_id})
    report = await audit_log.verify()
    assert_broken(report, chain_id)
    assert "missing from the database (deleted)" in report.problem


@BOTH
async def test_an_entry_rewritten_with_a_recomputed_digest_is_named(audit_log):
    """Whoever holds only the database can recompute a plain digest, never the MAC."""
    chain_id = audit_log.api.chain_id
    last = (await audit_log.entries(chain_id))[-1]
    forged = {**last, "actor_id": "someone-else"}
    forged["hash"] = entry_hash(audit_log.suite, forged)
    await audit_log.entries_coll.replace_one({"_id": last["_id"]}, forged)
    report = await audit_log.verify()
    assert_broken(report, chain_id, last["seq"])
    assert "does not match its MAC (edited)" in report.problem


@BOTH
async def test_a_keyed_chain_passed_off_as_a_digest_chain_is_named(audit_log):
    """Every link recomputed as a plain digest and the registry told the chain is an old one:
    the anchored opening says otherwise."""
    chain_id = audit_log.other.chain_id
    prev = GENESIS
    for entry in await audit_log.entries(chain_id):
        rewritten = {**entry, "prev": prev}
        if entry["seq"] == 2:
            rewritten["actor_id"] = "someone-else"
        rewritten["hash"] = entry_hash(audit_log.suite, rewritten)
        await audit_log.entries_coll.replace_one({"_id": entry["_id"]}, rewritten)
        prev = rewritten["hash"]
    await audit_log.store.database["audit_chains"].update_one(
        {"_id": chain_id}, {"$set": {"scheme": "digest"}}
    )
    report = await audit_log.verify()
    assert_broken(report, chain_id)
    assert "opened as 'mac'" in report.problem


@BOTH
async def test_a_tail_cut_after_its_process_ended_is_named(audit_log):
    """A command line run ends (its head anchored at close) after the last checkpoint; its
    last entries are deleted before the next one."""
    await audit_log.checkpoint()
    ended = audit_log.service("cli")
    await audit_log.write(ended, 4, "cli")
    chain_id = ended.chain_id
    await ended.close()
    entries = await audit_log.entries(chain_id)
    opening, closing = anchors_of(audit_log, chain_id)
    assert (opening["kind"], closing["kind"]) == ("chain.open", "chain.close")
    assert (closing["seq"], closing["hash"]) == (entries[-1]["seq"], entries[-1]["hash"])
    assert (await audit_log.verify()).ok

    await audit_log.entries_coll.delete_many({"chain_id": chain_id, "seq": {"$gt": 2}})
    report = await audit_log.verify()
    assert_broken(report, chain_id, 2, entries[-1]["seq"])
    assert "anchored close" in report.problem and "truncated" in report.problem


@BOTH
async def test_an_entry_after_close_opens_a_new_anchored_chain(audit_log):
    service = audit_log.service()
    await service.record(OFFICER, "subjects.list", resource="subject")
    first = service.chain_id
    await service.close()
    await service.close()  # a second close writes nothing
    assert service.chain_id is None
    await service.record(OFFICER, "subjects.list", resource="subject")
    second = service.chain_id
    assert second not in (None, first)
    assert [a["kind"] for a in anchors_of(audit_log, first)] == ["chain.open", "chain.close"]
    assert [a["kind"] for a in anchors_of(audit_log, second)] == ["chain.open"]
    report = await audit_log.verify()
    assert report.ok and report.anchors == 5 and report.unkeyed == 0, report


@BOTH
@pytest.mark.parametrize("forgery", ["head-moved", "role-changed", "no-mac"])
async def test_a_forged_anchor_is_refused(audit_log, forgery):
    chain_id = audit_log.api.chain_id
    await audit_log.api.close()
    lines = read_exported_checkpoints(audit_log.export)
    target = next(a for a in lines if is_anchor(a) and a["chain_id"] == chain_id)
    if forgery == "head-moved":
        target["seq"] = 0  # hide a chain emptied of its entries
    elif forgery == "role-changed":
        target["role"] = "jobs"
    else:
        del target["mac"]
    audit_log.export.write_text(
        "".join(json.dumps(line, sort_keys=True) + "\n" for line in lines), encoding="utf-8"
    )
    report = await audit_log.verify()
    assert_broken(report, chain_id)
    assert "bad MAC" in report.problem


@BOTH
async def test_anchors_are_not_vouched_for_without_the_mac_key(audit_log):
    report = await verify_audit(
        audit_log.store,
        audit_log.suite,
        audit_log.public,
        read_exported_checkpoints(audit_log.export),
        None,
    )
    assert not report.ok and "no audit MAC key" in report.problem


@BOTH
@pytest.mark.parametrize("side", ["database", "export"])
async def test_a_checkpoint_lost_on_one_side_is_named(audit_log, side):
    """The checkpoints kept in the database and the export's are the same ones: the last one
    removed from either side shows (the chain of `previous` cannot show a removed last line)."""
    await audit_log.checkpoint()
    last = await audit_log.checkpoint()
    if side == "database":
        await audit_log.store.database["audit_checkpoints"].delete_one({"_id": last["_id"]})
    else:
        await rewrite_export(audit_log, lambda checkpoints: checkpoints.pop())
    report = await audit_log.verify()
    assert not report.ok and last["_id"] in report.problem
    if side == "database":
        assert "in the export but missing from the database" in report.problem
    else:
        assert "in the database but not in the export" in report.problem


@SUITES
async def test_digest_chains_written_before_keyed_chains_still_verify(store, tmp_path, suite):
    """A chain written before keyed chains (a plain digest, no scheme in its registry record,
    no anchor) still verifies beside keyed ones, and an edit to it is still named."""
    clock = FixedClock(START)
    legacy = AuditService(store, clock, suite, "api")
    for i in range(3):
        await legacy.record(OFFICER, "subjects.read", resource="subject", resource_id=f"s{i}")
    await store.database["audit_chains"].update_one(
        {"_id": legacy.chain_id}, {"$unset": {"scheme": ""}}
    )
    log = await build_log(store, suite, tmp_path / "audit" / "checkpoints.jsonl")
    await log.checkpoint()
    report = await log.verify()
    assert report.ok and report.chains == 3 and report.unkeyed == 1, report

    await log.entries_coll.update_one(
        {"chain_id": legacy.chain_id, "seq": 2}, {"$set": {"resource_id": "elsewhere"}}
    )
    report = await log.verify()
    assert_broken(report, legacy.chain_id, 2)
    assert "does not match its hash (edited)" in report.problem


# --- properties: whichever entry, whichever field -----------------------------------------------

NON_STRUCTURAL = (
    "at",
    "actor_id",
    "role",
    "action",
    "resource",
    "resource_id",
    "subject_id",
    "outcome",
    "reason",
    "details",
    "request_id",
    "remote_ip",
    "prev",
    "hash",
)
TEXT = st.text(max_size=12)
JSONISH = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**31), 2**31) | TEXT,
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.dictionaries(st.text("abcdefgh", min_size=1, max_size=5), inner, max_size=3)
    ),
    max_leaves=6,
)


KEYS = st.text(st.characters(categories=["L", "N"]), min_size=1, max_size=8)
DETAIL_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20)
    | st.datetimes(
        min_value=dt.datetime(1900, 1, 2),
        max_value=dt.datetime(2100, 1, 1),
        timezones=st.sampled_from([dt.UTC, dt.timezone(dt.timedelta(hours=8))]),
    ),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(KEYS, inner, max_size=3),
    max_leaves=8,
)


def other_value(old: Any) -> st.SearchStrategy[Any]:
    """A value different from `old`, of a kind the field could plausibly hold."""
    if isinstance(old, dt.datetime):
        return st.integers(min_value=1, max_value=10**8).flatmap(
            lambda ms: st.sampled_from(
                [old + dt.timedelta(milliseconds=ms), old - dt.timedelta(milliseconds=ms)]
            )
        )
    if isinstance(old, dict):
        return st.dictionaries(
            st.text("abcdefgh", min_size=1, max_size=5), JSONISH, max_size=3
        ).filter(lambda v: v != old)
    return (TEXT | st.integers(-(2**63), 2**63 - 1) | st.none()).filter(
        lambda v: v != old or type(v) is not type(old)
    )


async def property_log(tmp_path: Path, suite: Suite, store: Store) -> Log:
    log = await build_log(store, suite, tmp_path / uuid.uuid4().hex / "checkpoints.jsonl")
    await log.checkpoint()
    await log.write(log.api, 2, "c")
    await log.write(log.other, 1, "d")
    # Every entry is under a signed head, so a removed tail is noticed too.
    await log.checkpoint()
    assert (await log.verify()).ok
    return log


@SUITES
@PROPERTY
@given(data=st.data())
async def test_property_any_edit_to_any_entry_is_named(database_uri, tmp_path, suite, data):
    async with fresh_store(database_uri) as store:
        log = await property_log(tmp_path, suite, store)
        chain_id = data.draw(st.sampled_from(log.processes), label="chain")
        entries = await log.entries(chain_id)
        victim = data.draw(st.sampled_from(entries), label="entry")
        seqs = {e["seq"] for e in entries}
        kind = data.draw(st.sampled_from(["set", "unset", "add", "seq", "chain"]), label="kind")
        named = [victim["seq"]]
        if kind == "set":
            field = data.draw(st.sampled_from(NON_STRUCTURAL), label="field")
            change = {"$set": {field: data.draw(other_value(victim.get(field)), label="value")}}
        elif kind == "unset":
            present = [f for f in NON_STRUCTURAL if f in victim]  # chain.open has fewer fields
            field = data.draw(st.sampled_from(present), label="field")
            change = {"$unset": {field: ""}}
        elif kind == "add":
            change = {"$set": {"extra": data.draw(JSONISH, label="value")}}
        elif kind == "seq":
            new_seq = data.draw(
                st.integers(min_value=-3, max_value=100).filter(lambda s: s not in seqs),
                label="seq",
            )
            named.append(new_seq)
            change = {"$set": {"seq": new_seq}}
        else:
            change = {"$set": {"chain_id": data.draw(TEXT, label="chain_id")}}
            if change["$set"]["chain_id"] in await log.chain_ids():
                change = {"$set": {"chain_id": uuid.uuid4().hex}}
        await log.entries_coll.update_one({"_id": victim["_id"]}, change)
        assert_broken(await log.verify(), chain_id, *named)


@SUITES
@PROPERTY
@given(data=st.data())
async def test_property_any_deleted_entry_is_named(database_uri, tmp_path, suite, data):
    async with fresh_store(database_uri) as store:
        log = await property_log(tmp_path, suite, store)
        chain_id = data.draw(st.sampled_from(log.processes), label="chain")
        entries = await log.entries(chain_id)
        doomed = data.draw(
            st.lists(
                st.sampled_from(entries), min_size=1, max_size=3, unique_by=lambda e: e["_id"]
            ),
            label="entries",
        )
        await log.entries_coll.delete_many({"_id": {"$in": [e["_id"] for e in doomed]}})
        first = min(e["seq"] for e in doomed)
        # Named: the first gap, or (for a removed tail) where the chain now ends and the entry
        # a checkpoint saw.
        report = await log.verify()
        assert_broken(report, chain_id, first, first - 1, entries[-1]["seq"])


@SUITES
@PROPERTY
@given(data=st.data())
async def test_property_any_two_swapped_entries_are_named(database_uri, tmp_path, suite, data):
    async with fresh_store(database_uri) as store:
        log = await property_log(tmp_path, suite, store)
        chain_id = data.draw(st.sampled_from(log.processes), label="chain")
        count = len(await log.entries(chain_id))
        i, j = sorted(
            data.draw(
                st.lists(
                    st.integers(min_value=1, max_value=count), min_size=2, max_size=2, unique=True
                ),
                label="pair",
            )
        )
        await swap(log, chain_id, i, j)
        assert_broken(await log.verify(), chain_id, i)


@SUITES
@PROPERTY
@given(data=st.data())
async def test_property_any_truncated_tail_is_named(database_uri, tmp_path, suite, data):
    async with fresh_store(database_uri) as store:
        log = await property_log(tmp_path, suite, store)
        chain_id = data.draw(st.sampled_from(log.processes), label="chain")
        count = len(await log.entries(chain_id))
        keep = data.draw(st.integers(min_value=0, max_value=count - 1), label="keep")
        await log.entries_coll.delete_many({"chain_id": chain_id, "seq": {"$gt": keep}})
        report = await log.verify()
        assert_broken(report, chain_id, keep, count)
        assert "truncated" in report.problem


@SUITES
@PROPERTY
@given(details=st.dictionaries(KEYS, DETAIL_VALUES, max_size=4))
async def test_property_an_untouched_log_verifies_whatever_its_details(
    database_uri, tmp_path, suite, details
):
    """What a service puts in `details` reads back with the hash it was written with."""
    async with fresh_store(database_uri) as store:
        clock = FixedClock(START)
        service = AuditService(store, clock, suite)
        key = signing_key(suite)
        export = tmp_path / uuid.uuid4().hex / "checkpoints.jsonl"
        await service.record(OFFICER, "subjects.search", resource="subject", details=details)
        await AuditCheckpointer(store, clock, suite, key, export).checkpoint()
        report = await verify_audit(
            store, suite, public_key(suite, key), read_exported_checkpoints(export)
        )
        assert report.ok, report.problem

"""Key management on a real database: the master key file, rotation, data-key rotation, shredding.

Everything that involves case files runs under both suites, through the real services.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import json
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from bson import ObjectId

from models.audit import SIGNING_KEY_ID, AuditContext
from models.clock import FixedClock
from models.codec import FieldCodec, IntegrityError, Shredded
from models.crypto import Sealed, Suite, new_signing_key
from models.identity import Identity
from models.identity_numbers import IdType
from models.keys import (
    CANARY_ID,
    CANARY_PLAINTEXT,
    KeyShredded,
    KeyVault,
    LocalKeyFile,
    MasterKeyError,
    _aad,  # the vault's own wrapping label, to interrupt a rotation by hand
)
from models.orgs import Org, OrgKind
from models.passwords import TEST_COST
from models.store import Store
from models.subjects import SubjectInput
from server.app import SYSTEM, Services, build_services, open_vault
from server.config import Config
from tests.subject_factories import resident_id

SUITES = [str(s) for s in Suite]


def key_file_document(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text(encoding="utf-8"))


async def raw(store: Store, collection: str) -> list[dict[str, Any]]:
    return [doc async for doc in store.database[collection].find({}).sort("_id", 1)]


# --- the master key file ------------------------------------------------------------------------


async def test_first_start_creates_a_private_key_file_and_a_canary(store, config, clock):
    path = config.master_key_file
    assert not path.exists()
    vault = await open_vault(config, store, clock)
    assert vault.ready

    assert path.stat().st_mode & 0o777 == 0o600
    document = key_file_document(path)
    assert document["suite"] == "standard"
    assert list(document["keys"]) == [document["current"]]
    # No temporary file is left beside the key.
    assert sorted(p.name for p in path.parent.iterdir()) == [path.name]

    canary = await store.database["key_vault"].find_one({"_id": CANARY_ID})
    assert canary is not None
    assert canary["purpose"] == "canary" and canary["suite"] == "standard"
    assert canary["kek_id"] == document["current"]
    # Wrapped: the known plaintext is not stored as such.
    assert CANARY_PLAINTEXT not in bytes(canary["wrapped"])


async def test_reopening_with_the_same_key_file_works_and_changes_nothing(store, config, clock):
    await open_vault(config, store, clock)
    before = config.master_key_file.read_bytes()
    canary = await store.database["key_vault"].find_one({"_id": CANARY_ID})

    again = await open_vault(config, store, clock)
    assert again.ready
    assert config.master_key_file.read_bytes() == before
    assert await store.database["key_vault"].find_one({"_id": CANARY_ID}) == canary


async def test_another_key_file_is_refused_with_a_clear_message(store, config, clock, tmp_path):
    await open_vault(config, store, clock)
    good = config.master_key_file.read_bytes()
    wrapped_by = key_file_document(config.master_key_file)["current"]
    elsewhere = LocalKeyFile(tmp_path / "elsewhere" / "master.key", Suite.STANDARD)
    elsewhere.create()
    shutil.copy2(elsewhere.path, config.master_key_file)

    with pytest.raises(MasterKeyError) as refused:
        await open_vault(config, store, clock)
    message = str(refused.value)
    # It names the master key the vault needs and the file that lacks it.
    assert wrapped_by in message and str(config.master_key_file) in message
    # The wrong key is left where it is: nothing was written over it or into the vault.
    assert config.master_key_file.read_bytes() == elsewhere.path.read_bytes()
    assert await store.database["key_vault"].count_documents({}) == 1

    # The right file opens the vault again.
    config.master_key_file.write_bytes(good)
    assert (await open_vault(config, store, clock)).ready


async def test_a_key_file_with_the_right_id_but_other_key_material_is_refused(store, config, clock):
    await open_vault(config, store, clock)
    document = key_file_document(config.master_key_file)
    forged = dict(document)
    other = LocalKeyFile(config.master_key_file.with_name("other.key"), Suite.STANDARD)
    other.create()
    forged["keys"] = {document["current"]: key_file_document(other.path)["keys"][other.current_id]}
    config.master_key_file.write_text(json.dumps(forged), encoding="utf-8")

    with pytest.raises(MasterKeyError, match="wrong key file"):
        await open_vault(config, store, clock)


async def test_a_missing_key_file_over_a_vault_with_keys_is_refused(store, config, clock):
    await open_vault(config, store, clock)
    config.master_key_file.unlink()

    with pytest.raises(MasterKeyError) as refused:
        await open_vault(config, store, clock)
    assert "missing" in str(refused.value) and str(config.master_key_file) in str(refused.value)
    # Never a silent new key over existing data.
    assert not config.master_key_file.exists()
    assert await store.database["key_vault"].count_documents({}) == 1


async def test_a_key_file_readable_by_others_is_refused(store, config, clock):
    await open_vault(config, store, clock)
    config.master_key_file.chmod(0o644)
    with pytest.raises(MasterKeyError, match="readable by others"):
        await open_vault(config, store, clock)
    config.master_key_file.chmod(0o600)
    assert (await open_vault(config, store, clock)).ready


async def test_an_unreadable_key_file_is_refused(store, config, clock):
    await open_vault(config, store, clock)
    config.master_key_file.write_text("{not json", encoding="utf-8")
    with pytest.raises(MasterKeyError, match="unreadable"):
        await open_vault(config, store, clock)


async def test_a_vault_made_with_one_suite_refuses_the_other(store, config, clock, tmp_path):
    await open_vault(config, store, clock)

    # The standard key file itself does not fit suite sm.
    with pytest.raises(MasterKeyError, match="suite sm"):
        await open_vault(dataclasses.replace(config, crypto_suite="sm"), store, clock)

    # Nor does the vault, even under a proper sm key file.
    sm_file = LocalKeyFile(tmp_path / "sm" / "master.key", Suite.SM)
    sm_file.create()
    sm_config = dataclasses.replace(config, crypto_suite="sm", master_key_file=sm_file.path)
    with pytest.raises(MasterKeyError, match="made with suite standard"):
        await open_vault(sm_config, store, clock)


async def test_an_sm_vault_opens_under_sm_only(store, config, clock):
    sm_config = dataclasses.replace(config, crypto_suite="sm")
    vault = await open_vault(sm_config, store, clock)
    assert vault.suite is Suite.SM
    assert key_file_document(config.master_key_file)["suite"] == "sm"
    assert (await open_vault(sm_config, store, clock)).ready
    with pytest.raises(MasterKeyError):
        await open_vault(config, store, clock)


# --- case files under each suite ----------------------------------------------------------------


@dataclass
class Env:
    """One process's worth of services over the test database, for one suite."""

    store: Store
    config: Config
    clock: FixedClock
    vault: KeyVault
    services: Services
    station: Org
    county: Org
    officer: AuditContext  # a county officer: reads, searches and notes every file in the county

    def fresh_vault(self) -> KeyVault:
        """Another process's vault: its own key-file reader and an empty key cache."""
        provider = LocalKeyFile(self.config.master_key_file, self.vault.suite)
        provider.load()
        return KeyVault(self.store, provider, self.vault.suite, self.clock)

    async def fresh_services(self) -> Services:
        vault = self.fresh_vault()
        await vault.open()
        return build_services(self.store, self.config, self.clock, vault, TEST_COST)


@pytest.fixture(params=SUITES)
async def env(request, store, config, clock) -> Env:
    config = dataclasses.replace(config, crypto_suite=request.param)
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
    officer = await services.staff.create(
        SYSTEM,
        username="lin.officer",
        password=f"Good-{uuid.uuid4().hex[:10]}",
        name="林科长",
        role="county_officer",
        org_id=county.id,
    )
    ctx = AuditContext(
        Identity(user_id=officer.id, role="county_officer", org_id=county.id, org_path=county.path),
        request_id="test",
    )
    return Env(store, config, clock, vault, services, station, county, ctx)


PEOPLE = [
    ("张伟", "male", dt.date(1990, 3, 7), "13812345678", "浙江省温州市鹿城区五马街88号"),
    ("李娜", "female", dt.date(1985, 11, 2), "13900001111", "浙江省温州市鹿城区解放路12号"),
    ("王芳", "female", dt.date(1979, 6, 30), "0577-88886666", "浙江省温州市鹿城区府前街3号"),
]


def person(org_id: str, index: int) -> SubjectInput:
    name, gender, birth, phone, address = PEOPLE[index]
    return SubjectInput(
        name=name,
        id_type=IdType.RESIDENT,
        id_number=resident_id(birth, gender),
        phone=phone,
        gender=gender,
        birth_date=birth,
        address=address,
        org_id=org_id,
    )


def expected_fields(data: SubjectInput) -> dict[str, Any]:
    return {
        "name": data.name,
        "id_type": "resident",
        "id_number": data.id_number,
        "phone": "".join(ch for ch in data.phone if ch.isdigit()),
        "gender": data.gender,
        "birth_date": data.birth_date.isoformat(),
        "address": data.address,
    }


async def create_people(env: Env, count: int = 3) -> dict[str, SubjectInput]:
    """Case files created as the command line's system identity would; id -> what went in."""
    created = {}
    for index in range(count):
        data = person(env.station.id, index)
        view = await env.services.subjects.create(SYSTEM, data)
        created[view.id] = data
    return created


async def assert_all_readable(services: Services, env: Env, people: dict[str, SubjectInput]):
    for subject_id, data in people.items():
        view = await services.subjects.read(env.officer, subject_id)
        assert view.status == "active"
        assert view.fields == expected_fields(data), subject_id
        found = await search(services, env, id_number=data.id_number)
        assert [item.id for item in found] == [subject_id]


async def search(services: Services, env: Env, **query: str) -> list[Any]:
    page = await services.subjects.search(
        env.officer,
        id_number=query.get("id_number"),
        phone=query.get("phone"),
        name=query.get("name"),
        population=None,
        status=None,
        cursor=None,
        limit=50,
    )
    return page.items


async def no_team_lookup(staff_id: str) -> None:
    raise AssertionError(f"no worker is assigned here ({staff_id})")


# --- master-key rotation ------------------------------------------------------------------------


async def test_master_key_rotation_rewraps_every_key_and_touches_no_record(env):
    people = await create_people(env)
    first = next(iter(people))
    await env.services.subjects.add_note(env.officer, first, "家访：按时报到，情绪稳定")
    await env.vault.get_or_create(
        SIGNING_KEY_ID, "audit_signing", lambda: new_signing_key(env.vault.suite)
    )
    records_before = await raw(env.store, "subjects")
    notes_before = await raw(env.store, "subject_notes")
    wrapped_before = {doc["_id"]: doc["wrapped"] for doc in await raw(env.store, "key_vault")}
    provider = env.vault.master
    assert isinstance(provider, LocalKeyFile)
    old = provider.current_id

    new = provider.add_new_current()
    assert new != old
    assert sorted(key_file_document(env.config.master_key_file)["keys"]) == sorted([old, new])
    assert env.config.master_key_file.stat().st_mode & 0o777 == 0o600
    rewrapped = await env.vault.rewrap_all()

    # Every wrapped key (canary, data keys, blind-index keys, the signing key) moved.
    assert rewrapped == len(wrapped_before)
    assert {"dek", "blind_index", "audit_signing", "canary"} <= {
        doc["purpose"] for doc in await raw(env.store, "key_vault")
    }
    assert await env.vault.kek_ids_in_use() == {new}
    for doc in await raw(env.store, "key_vault"):
        assert doc["kek_id"] == new and doc["wrapped"] != wrapped_before[doc["_id"]]
    # Records and notes are byte-for-byte what they were.
    assert await raw(env.store, "subjects") == records_before
    assert await raw(env.store, "subject_notes") == notes_before

    # Another process, with nothing cached, reads everything.
    fresh = await env.fresh_services()
    await assert_all_readable(fresh, env, people)
    notes = await fresh.subjects.notes(env.officer, first)
    assert [n["text"] for n in notes] == ["家访：按时报到，情绪稳定"]

    # The old master key is no longer needed at all.
    provider.retire(old)
    assert list(key_file_document(env.config.master_key_file)["keys"]) == [new]
    await assert_all_readable(await env.fresh_services(), env, people)


async def test_an_interrupted_rotation_reads_throughout_and_a_second_run_finishes_it(env):
    people = await create_people(env)
    provider = env.vault.master
    assert isinstance(provider, LocalKeyFile)
    old = provider.current_id
    new = provider.add_new_current()
    pending = await env.store.database["key_vault"].count_documents({"kek_id": old})

    # A rotation that stopped after two keys, as a crash would leave it.
    vault = env.store.database["key_vault"]
    for doc in await vault.find({"kek_id": old}).sort("_id", 1).limit(2).to_list():
        aad = _aad(doc["_id"], doc["purpose"])
        kek_id, wrapped = provider.wrap(provider.unwrap(old, doc["wrapped"], aad), aad)
        await vault.update_one(
            {"_id": doc["_id"]}, {"$set": {"kek_id": kek_id, "wrapped": wrapped}}
        )
    assert await env.vault.kek_ids_in_use() == {old, new}

    # Half-rotated, everything still opens (both keys are in the file).
    await assert_all_readable(await env.fresh_services(), env, people)

    # Running it again finishes exactly what was left, one key at a time if need be.
    assert await env.vault.rewrap_all(batch=1) == pending - 2
    assert await env.vault.kek_ids_in_use() == {new}
    await assert_all_readable(await env.fresh_services(), env, people)

    # Idempotent: nothing left to do, nothing changes.
    snapshot = await raw(env.store, "key_vault")
    assert await env.vault.rewrap_all() == 0
    assert await raw(env.store, "key_vault") == snapshot


async def test_two_processes_rotating_at_once_agree(env):
    people = await create_people(env)
    provider = env.vault.master
    assert isinstance(provider, LocalKeyFile)
    new = provider.add_new_current()
    one, two = env.fresh_vault(), env.fresh_vault()
    await asyncio.gather(one.rewrap_all(batch=2), two.rewrap_all(batch=3))
    assert await env.vault.kek_ids_in_use() == {new}
    await assert_all_readable(await env.fresh_services(), env, people)


async def test_keys_created_after_a_rotation_are_wrapped_by_the_new_master_key(env):
    provider = env.vault.master
    assert isinstance(provider, LocalKeyFile)
    await create_people(env, 1)
    new = provider.add_new_current()
    await env.vault.rewrap_all()
    people = await create_people(env, 2)  # new people (their ID numbers are new too)
    assert await env.vault.kek_ids_in_use() == {new}
    await assert_all_readable(await env.fresh_services(), env, people)


# --- data-key rotation --------------------------------------------------------------------------


async def test_data_key_rotation_keeps_fields_notes_and_team_and_destroys_the_old_key(env):
    people = await create_people(env)
    subject_id, data = list(people.items())[1]  # 李娜: a woman, whose team includes a woman
    team = [{"name": "陈静", "gender": "female", "role": "volunteer"}]
    await env.services.subjects.set_assignments(
        env.officer, subject_id, [], [], team, no_team_lookup
    )
    await env.services.subjects.add_note(env.officer, subject_id, "第一次谈话：态度良好")
    await env.services.subjects.add_note(env.officer, subject_id, "第二次谈话：已找到工作")

    new_key_id = await env.services.subjects.rotate_data_key(SYSTEM, subject_id)
    assert new_key_id != f"dek:{subject_id}"

    for services in (env.services, await env.fresh_services()):
        view = await services.subjects.read(env.officer, subject_id)
        assert view.fields == expected_fields(data)
        assert view.assignments["team"] == team
        notes = await services.subjects.notes(env.officer, subject_id)
        assert sorted(n["text"] for n in notes) == [
            "第一次谈话：态度良好",
            "第二次谈话：已找到工作",
        ]

    # Every ciphertext of the file names the new key; the old key is a tombstone.
    doc = await env.store.database["subjects"].find_one({"_id": ObjectId(subject_id)})
    assert doc["dek_id"] == new_key_id
    sealed = [*doc["enc"].values(), doc["assignments"]["team"]]
    sealed += [note["text"] for note in await raw(env.store, "subject_notes")]
    assert {Sealed.from_bytes(bytes(blob)).key_id for blob in sealed} == {new_key_id}
    old = await env.store.database["key_vault"].find_one({"_id": f"dek:{subject_id}"})
    assert old["wrapped"] is None and old["destroyed_at"] is not None
    with pytest.raises(KeyShredded):
        await env.fresh_vault().get(f"dek:{subject_id}")

    # The other files were not touched.
    for other_id, other in people.items():
        if other_id != subject_id:
            view = await env.services.subjects.read(env.officer, other_id)
            assert view.fields == expected_fields(other)


async def test_after_a_data_key_rotation_new_writes_use_the_new_key(env):
    people = await create_people(env, 1)
    subject_id, data = next(iter(people.items()))
    first = await env.services.subjects.rotate_data_key(SYSTEM, subject_id)
    second = await env.services.subjects.rotate_data_key(SYSTEM, subject_id)
    assert len({first, second, f"dek:{subject_id}"}) == 3
    gone = await env.store.database["key_vault"].find_one({"_id": first})
    assert gone["wrapped"] is None

    note = await env.services.subjects.add_note(env.officer, subject_id, "电话回访：正常")
    updated = await env.services.subjects.update(
        env.officer, subject_id, 1, {"address": "浙江省温州市鹿城区信河街9号"}
    )
    assert updated.fields["address"] == "浙江省温州市鹿城区信河街9号"
    doc = await env.store.database["subjects"].find_one({"_id": ObjectId(subject_id)})
    assert {Sealed.from_bytes(bytes(b)).key_id for b in doc["enc"].values()} == {second}
    stored = await env.store.database["subject_notes"].find_one({"_id": ObjectId(note["id"])})
    assert Sealed.from_bytes(bytes(stored["text"])).key_id == second

    fresh = await env.fresh_services()
    view = await fresh.subjects.read(env.officer, subject_id)
    assert view.fields == {**expected_fields(data), "address": "浙江省温州市鹿城区信河街9号"}
    assert [n["text"] for n in await fresh.subjects.notes(env.officer, subject_id)] == [
        "电话回访：正常"
    ]


# --- shredding ----------------------------------------------------------------------------------


async def test_a_shredded_case_file_reads_as_shredded_and_cannot_be_found(env):
    people = await create_people(env)
    subject_id, data = next(iter(people.items()))
    await env.services.subjects.add_note(env.officer, subject_id, "家访：按时报到")
    backup = await env.store.database["subjects"].find_one({"_id": ObjectId(subject_id)})

    await env.services.subjects.shred(SYSTEM, subject_id)

    for services in (env.services, await env.fresh_services()):
        view = await services.subjects.read(env.officer, subject_id)
        assert view.status == "shredded"
        assert view.fields == {} and view.assignments == {}
        for query in (
            {"id_number": data.id_number},
            {"phone": data.phone},
            {"name": data.name},
        ):
            assert await search(services, env, **query) == [], query
        notes = await services.subjects.notes(env.officer, subject_id)
        assert [n["text"] for n in notes] == [None]
        listed = await services.subjects.list(
            env.officer, population=None, status=None, cursor=None, limit=50
        )
        by_id = {item.id: item for item in listed.items}
        assert by_id[subject_id].status == "shredded" and by_id[subject_id].fields == {}

    # The data key is a tombstone; the record keeps no ciphertext and no blind index.
    entry = await env.store.database["key_vault"].find_one({"_id": f"dek:{subject_id}"})
    assert entry is not None
    assert entry["wrapped"] is None and entry["destroyed_at"] is not None
    doc = await env.store.database["subjects"].find_one({"_id": ObjectId(subject_id)})
    assert doc["enc"] == {} and "bi" not in doc and doc["status"] == "shredded"

    # A copy of the record taken before (a backup) no longer opens either.
    codec = FieldCodec(env.fresh_vault())
    with pytest.raises(Shredded):
        await codec.open("subjects", subject_id, "name", backup["enc"]["name"])

    # The others are untouched, and the shredding is in the audit log.
    await assert_all_readable(
        env.services, env, {k: v for k, v in people.items() if k != subject_id}
    )
    actions = [
        (e["action"], e["outcome"])
        for e in await env.services.audit.entries_for_subject(subject_id)
    ]
    assert ("subjects.shred", "pending") in actions and ("subjects.shred.outcome", "ok") in actions


async def test_shredding_destroys_rotated_data_keys_too(env):
    people = await create_people(env, 1)
    subject_id = next(iter(people))
    rotated = await env.services.subjects.rotate_data_key(SYSTEM, subject_id)
    await env.services.subjects.shred(SYSTEM, subject_id)
    for key_id in (f"dek:{subject_id}", rotated):
        entry = await env.store.database["key_vault"].find_one({"_id": key_id})
        assert entry["wrapped"] is None, key_id
    assert (
        await env.store.database["key_vault"].count_documents(
            {"subject_id": subject_id, "wrapped": {"$ne": None}}
        )
        == 0
    )
    view = await env.services.subjects.read(env.officer, subject_id)
    assert view.status == "shredded" and view.fields == {}


async def test_a_shredded_file_is_unreadable_in_a_process_that_had_its_key_cached(env):
    """Another API process read the file (its data key sits in that process's cache); after the
    shredding, that process shows nothing of the file either."""
    people = await create_people(env, 1)
    subject_id = next(iter(people))
    await env.services.subjects.add_note(env.officer, subject_id, "家访：按时报到")
    other = await env.fresh_services()
    await other.subjects.read(env.officer, subject_id)
    assert [n["text"] for n in await other.subjects.notes(env.officer, subject_id)] == [
        "家访：按时报到"
    ]

    await env.services.subjects.shred(SYSTEM, subject_id)

    view = await other.subjects.read(env.officer, subject_id)
    assert view.status == "shredded" and view.fields == {}
    assert [n["text"] for n in await other.subjects.notes(env.officer, subject_id)] == [None]


async def test_a_tampered_ciphertext_is_an_integrity_error_never_a_shredded_file(env):
    """Changing a stored field's key id must read as tampering (logged, 'integrity_error'), not
    pass the file off as erased."""
    people = await create_people(env, 1)
    subject_id = next(iter(people))
    subjects = env.store.database["subjects"]
    doc = await subjects.find_one({"_id": ObjectId(subject_id)})
    blob = bytearray(bytes(doc["enc"]["name"]))
    blob[3 + blob[2] - 1] ^= 0x01  # the last character of the key id
    await subjects.update_one({"_id": doc["_id"]}, {"$set": {"enc.name": bytes(blob)}})

    for services in (env.services, await env.fresh_services()):
        with pytest.raises(IntegrityError):
            await services.subjects.read(env.officer, subject_id)

"""Sealed backups: export, restore into an empty database, comparison, and every refusal."""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import struct
import time
import uuid
import zlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

import pytest
from bson import Binary, Code, Decimal128, Int64, MaxKey, MinKey, ObjectId, Regex, Timestamp
from bson.codec_options import CodecOptions
from bson.raw_bson import RawBSONDocument

from models.audit import MAC_KEY_ID, AuditContext, verify_audit
from models.backup import (
    MAGIC,
    ArchiveError,
    BackupError,
    BackupKey,
    BackupKeyError,
    BackupService,
    TargetNotEmpty,
    read_archive_header,
)
from models.crypto import Suite
from models.identity import Identity
from models.keys import KeyVault, LocalKeyFile, MasterKeyError
from models.passwords import TEST_COST
from models.store import DatabaseSettings, Store
from server.app import build_services, collection_specs
from tests.mp_support import STATION_CENTRE, local

OPERATOR = AuditContext(
    Identity(user_id="cli:backup-test", role="sys_admin", unscoped=True), request_id="test"
)
RAW = CodecOptions(document_class=RawBSONDocument)
# Small chunks, so records span chunks and an archive has enough of them to reorder.
CHUNK = 16 * 1024
PROBE_BULK = 2_500  # more than one insert batch (1,000)
CHECK_IN_DAYS = 4


@pytest.fixture
def record_property(request: pytest.FixtureRequest) -> Callable[[str, object], None]:
    """A figure for the verification runner's JUnit XML, as pytest's own `record_property`
    writes it, without that fixture's warning under the default `xunit2` family (the suite
    turns warnings into errors)."""

    def record(name: str, value: object) -> None:
        request.node.user_properties.append((name, value))

    return record


def png_bytes(width: int, height: int) -> bytes:
    """A real grey PNG, as a phone's camera would send after compression."""
    raw = b"".join(b"\x00" + b"\x80" * width for _ in range(height))

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(raw))
        + chunk(b"IEND", b"")
    )


def probe_documents() -> list[dict]:
    """Every BSON type a round trip through Python could bend, and _ids of several types (the
    order of a mixed _id index must come back the same)."""
    odd = {
        "_id": "types",
        "decimal": Decimal128("12345.678900"),
        "int64": Int64(2**40 + 1),
        "small_int64": Int64(7),
        "int32": 7,
        "negative_zero": -0.0,
        "nan": float("nan"),
        "uuid": Binary(uuid.UUID(int=1).bytes, 4),
        "md5": Binary(b"\x01" * 16, 5),
        "old_binary": Binary(b"xy", 2),
        "user_binary": Binary(b"\x00\xff", 0x80),
        "at": dt.datetime(2026, 11, 2, 1, 2, 3, 456000, tzinfo=dt.UTC),
        "before_1970": dt.datetime(1969, 12, 31, 23, 59, 59, 999000, tzinfo=dt.UTC),
        "timestamp": Timestamp(1_700_000_000, 7),
        "regex": Regex("^张", "i"),
        "code": Code("function () { return 1; }"),
        "min": MinKey(),
        "max": MaxKey(),
        "oid": ObjectId(),
        "nested": {"z": [1, {"y": None}, []], "a": "中文", "": {}},
    }
    mixed_ids = [
        {"_id": 42, "kind": "int"},
        {"_id": Int64(43), "kind": "int64"},
        {"_id": 1.5, "kind": "double"},
        {"_id": ObjectId(), "kind": "oid"},
        {"_id": {"a": 1, "b": 2}, "kind": "document"},
        {"_id": Binary(b"\x07", 0), "kind": "binary"},
        {"_id": dt.datetime(2026, 1, 1, tzinfo=dt.UTC), "kind": "date"},
    ]
    bulk = [
        {"_id": f"bulk-{n:05d}", "serial": Int64(n), "pad": "帮" * (n % 50)}
        for n in range(PROBE_BULK)
    ]
    return [odd, *mixed_ids, *bulk]


@dataclass
class Populated:
    """A database with real data: a bound probationer's week of check-ins (one with a photo in
    GridFS), reads of the case file, and a collection of awkward BSON."""

    subject_id: str
    reader: AuditContext


@pytest.fixture
async def populated(supervised, store, clock, fetch) -> Populated:
    client = supervised.client
    for day in range(2, 2 + CHECK_IN_DAYS):
        clock.set(local(2026, 11, day, 9, 30))
        assert (await client.login("probationer")).status == 200
        extra = {}
        if day == 3:
            uploaded = await client.upload(png_bytes(64, 64), content_type="image/png")
            assert uploaded.status == 201, uploaded.body
            extra["photo_upload_id"] = uploaded.json["upload_id"]
        answer = await client.check_in(
            lat=STATION_CENTRE.lat,
            lng=STATION_CENTRE.lng,
            coord_type="wgs84",
            captured_at=clock.now(),
            **extra,
        )
        assert answer.status == 201, answer.body
    read = await fetch(
        f"/api/v1/subjects/{supervised.subject_id}", token=await supervised.officer_token()
    )
    assert read.status == 200, read.body
    probe = store.database["backup_probe"]
    await probe.insert_many(probe_documents())
    await probe.create_index("serial", unique=True, sparse=True)
    return Populated(supervised.subject_id, AuditContext(supervised.officer.identity))


@contextlib.asynccontextmanager
async def another_database(database_uri: str) -> AsyncIterator[Store]:
    """A new, empty database on the same server; dropped afterwards."""
    name = f"restored_{uuid.uuid4().hex[:12]}"
    target = Store.connect(DatabaseSettings(uri=database_uri, name=name, production=False))
    try:
        yield target
    finally:
        await target.database.client.drop_database(name)
        await target.close()


async def raw_documents(store: Store, name: str) -> list[bytes]:
    collection = store.database[name].with_options(codec_options=RAW)
    return [doc.raw async for doc in collection.find({}).sort("_id", 1)]


async def document_count(store: Store) -> int:
    names = await store.database.list_collection_names()
    return sum([await store.database[n].count_documents({}) for n in names])


# --- the round trip ---------------------------------------------------------------------------


async def test_a_restored_database_is_identical_and_opens_with_the_same_master_key(
    populated, store, config, clock, tmp_path, database_uri, services, record_property
):
    key = BackupKey.generate(tmp_path / "keys" / "backup.key")
    archive = tmp_path / "backups" / "anbang.bak"
    source = BackupService(store, clock, services.audit, chunk_bytes=CHUNK)

    started = time.monotonic()
    exported = await source.export(archive, key, ctx=OPERATOR)
    assert archive.stat().st_mode & 0o777 == 0o600
    assert not [p for p in archive.parent.iterdir() if p != archive]  # no partial file left
    header = read_archive_header(archive)
    assert header.database == config.db_name and header.key_id == key.key_id
    assert exported.documents == await document_count(store)
    # The master keys the vault needs are named; the master key itself is nowhere in it.
    master = LocalKeyFile(config.master_key_file, Suite(config.crypto_suite))
    master.load()
    assert exported.master_key_ids == [master.current_id]
    master_bytes = config.master_key_file.read_bytes()
    assert master_bytes not in archive.read_bytes()

    async with another_database(database_uri) as target:
        restored = await BackupService(target, clock).restore(archive, key)
        comparison = await BackupService(target, clock).compare_with_archive(archive, key)
        elapsed = time.monotonic() - started
        assert comparison.identical, [str(d) for d in comparison.differences]
        assert restored.documents == exported.documents == comparison.documents
        assert restored.collections == exported.collections == len(comparison.collections)
        # The same verdict comparing the two databases directly.
        direct = await BackupService(target, clock).compare_with_database(store)
        assert direct.identical, [str(d) for d in direct.differences]

        # Byte for byte, the awkward types included, in the same _id order.
        for name in ("backup_probe", "key_vault", "subjects", "checkins", "attachments.chunks"):
            assert await raw_documents(target, name) == await raw_documents(store, name), name
        # Unique and TTL indexes came back.
        staff_indexes = await target.database["staff"].index_information()
        assert staff_indexes["username_1"]["unique"] is True
        sessions = await target.database["sessions"].index_information()
        assert any(i.get("expireAfterSeconds") == 0 for i in sessions.values())
        probe_indexes = await target.database["backup_probe"].index_information()
        assert probe_indexes["serial_1"]["unique"] and probe_indexes["serial_1"]["sparse"]

        # The restored audit log verifies (its keyed chains under the restored audit MAC key),
        # the export's own entry inside it.
        suite = Suite(config.crypto_suite)
        provider = LocalKeyFile(config.master_key_file, suite)
        provider.load()
        vault = KeyVault(target, provider, suite, clock)
        await vault.open()
        report = await verify_audit(target, suite, None, [], await vault.get(MAC_KEY_ID))
        assert report.ok, report.problem
        assert report.entries == await target.database["audit"].count_documents({})
        entry = await target.database["audit"].find_one({"_id": exported.audit_entry})
        assert entry["action"] == "backup.export" and entry["actor_id"] == "cli:backup-test"

        # The case file opens from the restored database with the same master key file.
        restored_services = build_services(target, config, clock, vault, TEST_COST)
        try:
            view = await restored_services.subjects.read(populated.reader, populated.subject_id)
        finally:
            await restored_services.close()
        assert view.fields["name"] == "张伟" and view.fields["phone"] == "13812345678"

        # Without it, the backup opens nothing.
        stranger = LocalKeyFile(tmp_path / "other" / "master.key", suite)
        stranger.create()
        with pytest.raises(MasterKeyError):
            await KeyVault(target, stranger, suite, clock).open()

    record_property("backup_collections", exported.collections)
    record_property("backup_documents", exported.documents)
    record_property("backup_document_bytes", exported.document_bytes)
    record_property("backup_archive_bytes", exported.archive_bytes)
    record_property("backup_export_seconds", round(exported.seconds, 3))
    record_property("backup_restore_seconds", round(restored.seconds, 3))
    record_property("backup_compare_seconds", round(comparison.seconds, 3))
    record_property("backup_round_trip_seconds", round(elapsed, 3))
    record_property("backup_collections_identical", comparison.identical and direct.identical)
    record_property("backup_restored_audit_entries_verified", report.entries)
    record_property("backup_restored_case_file_decrypts", True)


async def test_the_comparison_names_every_difference(populated, store, clock, tmp_path):
    key = BackupKey.generate(tmp_path / "backup.key")
    archive = tmp_path / "anbang.bak"
    service = BackupService(store, clock)
    await service.export(archive, key)
    db = store.database
    gone = await db["checkins"].find_one({}, sort=[("_id", -1)])
    await db["checkins"].delete_one({"_id": gone["_id"]})
    edited = await db["audit"].find_one({"action": "subjects.read"})
    await db["audit"].update_one({"_id": edited["_id"]}, {"$set": {"actor_id": "nobody"}})
    await db["staff"].drop_index("username_1")
    await db["backup_probe"].drop()
    await db["stray"].insert_one({"_id": 1})

    comparison = await service.compare_with_archive(archive, key)

    assert not comparison.identical
    found = {(d.collection, d.aspect) for d in comparison.differences}
    assert found == {
        ("checkins", "count"),
        ("checkins", "content"),
        ("audit", "content"),
        ("staff", "index_missing"),
        ("backup_probe", "collection_missing"),
        ("stray", "collection_extra"),
    }
    by_place = {(d.collection, d.aspect): d for d in comparison.differences}
    count = by_place["checkins", "count"]
    assert (count.expected, count.actual) == (CHECK_IN_DAYS, CHECK_IN_DAYS - 1)
    assert str(gone["_id"]) in by_place["checkins", "content"].note
    assert edited["_id"] in by_place["audit", "content"].note
    assert by_place["staff", "index_missing"].note == "username_1"
    as_json = comparison.as_json()
    assert as_json["identical"] is False and len(as_json["differences"]) == 6
    assert "staff: index_missing" in str(by_place["staff", "index_missing"])


# --- refusals: nothing is written ----------------------------------------------------------


def flip(offset_of: Callable[[bytes], int]) -> Callable[[bytes], bytes]:
    def damage(data: bytes) -> bytes:
        at = offset_of(data)
        return data[:at] + bytes([data[at] ^ 0x01]) + data[at + 1 :]

    return damage


def frames(data: bytes) -> tuple[int, list[tuple[int, int]]]:
    """(end of the header, [(start, end) of each chunk's frame])."""
    (length,) = struct.unpack(">I", data[10:14])
    position = 14 + length
    header_end, found = position, []
    while position < len(data):
        (sealed,) = struct.unpack(">I", data[position + 1 : position + 5])
        found.append((position, position + 5 + sealed))
        position += 5 + sealed
    return header_end, found


def swap_chunks(data: bytes) -> bytes:
    _, spans = frames(data)
    (a0, a1), (b0, b1) = spans[1], spans[2]
    return data[:a0] + data[b0:b1] + data[a0:a1] + data[b1:]


def drop_final_chunk(data: bytes) -> bytes:
    _, spans = frames(data)
    return data[: spans[-1][0]]


def drop_a_middle_chunk(data: bytes) -> bytes:
    _, spans = frames(data)
    start, end = spans[2]
    return data[:start] + data[end:]


def final_flag_cleared(data: bytes) -> bytes:
    _, spans = frames(data)
    start = spans[-1][0]
    return data[:start] + b"\x00" + data[start + 1 :]


DAMAGE: dict[str, tuple[Callable[[bytes], bytes], str]] = {
    "a flipped byte in a chunk": (flip(lambda d: len(d) // 2), "does not authenticate"),
    "a flipped byte in the header": (
        flip(lambda d: d.index(b'"created_at":"') + 16),
        "chunk 0 (byte",
    ),
    "two chunks swapped": (swap_chunks, "chunk 1 (byte"),
    "a chunk removed": (drop_a_middle_chunk, "chunk 2 (byte"),
    "the final chunk cut off": (drop_final_chunk, "without its final chunk"),
    "cut inside a chunk": (lambda d: d[:-7], "truncated inside chunk"),
    "bytes appended": (lambda d: d + b"\x00" * 21, "appended after the final chunk"),
    "the final flag cleared": (final_flag_cleared, "does not authenticate"),
    "another file": (lambda d: b"PK\x03\x04" + d[4:], "not an Anbang backup archive"),
}


async def test_a_damaged_archive_or_a_wrong_key_is_refused_and_nothing_is_written(
    populated, store, clock, tmp_path, database_uri, record_property
):
    key = BackupKey.generate(tmp_path / "backup.key")
    archive = tmp_path / "anbang.bak"
    await BackupService(store, clock, chunk_bytes=CHUNK).export(archive, key)
    original = archive.read_bytes()
    assert original.startswith(MAGIC) and len(frames(original)[1]) > 4

    async with another_database(database_uri) as target:
        service = BackupService(target, clock)
        refused = []
        for label, (damage, message) in DAMAGE.items():
            damaged = tmp_path / f"damaged-{len(refused)}.bak"
            damaged.write_bytes(damage(original))
            with pytest.raises(ArchiveError) as raised:
                await service.restore(damaged, key)
            assert message in str(raised.value), (label, str(raised.value))
            assert await target.database.list_collection_names() == [], label
            # The comparison refuses it as well, rather than comparing what it could read.
            with pytest.raises(ArchiveError):
                await service.compare_with_archive(damaged, key)
            refused.append(label)

        wrong = BackupKey.generate(tmp_path / "wrong.key")
        with pytest.raises(BackupKeyError, match="wrong key file"):
            await service.restore(archive, wrong)
        # The same key id with other key material (a header rewritten to name the wrong key)
        # still fails on the first chunk.
        impostor = BackupKey(wrong.material)
        forged = tmp_path / "forged.bak"
        forged.write_bytes(original.replace(key.key_id.encode(), impostor.key_id.encode(), 1))
        with pytest.raises(ArchiveError, match="chunk 0"):
            await service.restore(forged, impostor)
        assert await target.database.list_collection_names() == []
    record_property("backup_damaged_archives_refused", len(refused))


async def test_restore_refuses_a_database_that_holds_documents(
    populated, store, clock, tmp_path, database_uri
):
    key = BackupKey.generate(tmp_path / "backup.key")
    archive = tmp_path / "anbang.bak"
    await BackupService(store, clock).export(archive, key)
    before = await document_count(store)

    with pytest.raises(TargetNotEmpty, match=r"is not empty: .*nothing was written"):
        await BackupService(store, clock).restore(archive, key)
    assert await document_count(store) == before

    async with another_database(database_uri) as target:
        await target.database["leftover"].insert_one({"_id": "x"})
        with pytest.raises(TargetNotEmpty, match=r"leftover \(1 document"):
            await BackupService(target, clock).restore(archive, key)
        assert await target.database.list_collection_names() == ["leftover"]

    # A database a process has already started on (every collection and index declared, no
    # documents) is empty: the restore goes ahead and the result is identical.
    async with another_database(database_uri) as target:
        await target.ensure_indexes(collection_specs())
        await BackupService(target, clock).restore(archive, key)
        comparison = await BackupService(target, clock).compare_with_archive(archive, key)
        assert comparison.identical, [str(d) for d in comparison.differences]

    # An empty collection whose index says something else would change what the restored
    # database enforces: refused.
    async with another_database(database_uri) as target:
        await target.database["staff"].create_index("username", unique=False)
        await target.database["orgs"].create_index("code", name="by_code")
        with pytest.raises(TargetNotEmpty) as raised:
            await BackupService(target, clock).restore(archive, key)
        assert "staff: index username_1 differs" in str(raised.value)
        assert "orgs: index by_code has the keys of the archive's code_1" in str(raised.value)
        assert sorted(await target.database.list_collection_names()) == ["orgs", "staff"]


async def test_an_export_never_overwrites_and_leaves_nothing_when_refused(store, clock, tmp_path):
    key = BackupKey.generate(tmp_path / "backup.key")
    archive = tmp_path / "anbang.bak"
    archive.write_bytes(b"an older archive")
    with pytest.raises(BackupError, match="already exists"):
        await BackupService(store, clock).export(archive, key)
    assert archive.read_bytes() == b"an older archive"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["anbang.bak", "backup.key"]


# --- the backup key ---------------------------------------------------------------------------


def test_the_backup_key_file_is_private_kept_and_never_the_master_key(tmp_path, config):
    path = tmp_path / "keys" / "backup.key"
    key = BackupKey.generate(path)
    assert path.stat().st_mode & 0o777 == 0o600
    assert BackupKey.load(path).material == key.material and len(key.material) == 32
    assert BackupKey.load(path).key_id == key.key_id
    assert "material" not in repr(key)

    with pytest.raises(BackupKeyError, match="never overwritten"):
        BackupKey.generate(path)
    assert BackupKey.load(path).material == key.material

    os.chmod(path, 0o644)
    with pytest.raises(BackupKeyError, match="readable by others"):
        BackupKey.load(path)
    with pytest.raises(BackupKeyError, match="does not exist"):
        BackupKey.load(tmp_path / "missing.key")

    master = LocalKeyFile(config.master_key_file, Suite.STANDARD)
    master.create()
    with pytest.raises(BackupKeyError, match="looks like the master key file"):
        BackupKey.load(config.master_key_file)

    path.chmod(0o600)
    path.write_text('{"kind": "anbang-backup-key", "version": 1, "key": "c2hvcnQ="}')
    with pytest.raises(BackupKeyError, match="32-byte"):
        BackupKey.load(path)

"""Key management: the master-key port, the vault of wrapped keys, and a short-lived key cache.

The master key (KEK) only wraps random keys: one data key per subject, the blind-index keys and
the audit signing key. None is derived from the master key, so rotating it rewraps the vault and
touches no record.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import secrets
import time
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from pymongo import ASCENDING, IndexModel
from pymongo.errors import DuplicateKeyError

from models.clock import Clock
from models.crypto import CryptoError, Suite, aead_decrypt, aead_encrypt, new_key
from models.singleflight import SingleFlight
from models.store import CollectionSpec, Store

KEY_VAULT = CollectionSpec(
    "key_vault",
    (
        IndexModel([("purpose", ASCENDING)]),
        # Rotation walks the keys still wrapped by an older master key.
        IndexModel([("kek_id", ASCENDING)]),
    ),
)

# A known value wrapped at first start: unwrapping it proves the master key is the right one.
CANARY_ID = "canary"
CANARY_PLAINTEXT = b"anbang-master-key-canary-v1"


class MasterKeyError(Exception):
    """The master key is missing, unreadable or not the one that wrapped the vault."""


class KeyShredded(Exception):
    """The key was destroyed (crypto-shredding): what it protected is gone for good."""


class KeyUnknown(Exception):
    """No key was ever stored under this id: the ciphertext naming it was forged or damaged."""


class MasterKeyProvider(Protocol):
    """The KEK port: a local key file today, a KMS or HSM behind the same three calls."""

    @property
    def current_id(self) -> str: ...

    def wrap(self, key: bytes, aad: bytes) -> tuple[str, bytes]:
        """(the wrapping master key's id, the wrapped key)."""
        ...

    def unwrap(self, kek_id: str, wrapped: bytes, aad: bytes) -> bytes: ...


class LocalKeyFile:
    """Master keys in a JSON file (mode 0600): the current one wraps, older ones still unwrap."""

    def __init__(self, path: Path, suite: Suite):
        self.path = path
        self.suite = suite
        self._keys: dict[str, bytes] = {}
        self._current = ""

    @property
    def exists(self) -> bool:
        return self.path.exists()

    def load(self) -> None:
        try:
            mode = self.path.stat().st_mode & 0o777
            document = json.loads(self.path.read_text(encoding="utf-8"))
            keys = {kid: base64.b64decode(raw) for kid, raw in document["keys"].items()}
            current = document["current"]
        except FileNotFoundError:
            raise MasterKeyError(f"the master key file {self.path} does not exist") from None
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise MasterKeyError(
                f"the master key file {self.path} is unreadable ({type(exc).__name__})"
            ) from None
        if mode & 0o077:
            raise MasterKeyError(
                f"the master key file {self.path} is readable by others (mode {mode:o}); "
                "chmod 600 it"
            )
        if current not in keys or any(len(k) != self.suite.key_bytes for k in keys.values()):
            raise MasterKeyError(f"the master key file {self.path} does not fit suite {self.suite}")
        self._keys, self._current = keys, current

    def create(self) -> None:
        """Write a new file with one random key; never replaces an existing one (when another
        process created it first, that one is loaded)."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        kid = f"kek-{secrets.token_hex(4)}"
        self._write({kid: new_key(self.suite)}, kid, exclusive=True)
        self.load()

    def add_new_current(self) -> str:
        """A fresh master key becomes current; older ones stay to unwrap until retired."""
        kid = f"kek-{secrets.token_hex(4)}"
        keys = {**self._keys, kid: new_key(self.suite)}
        self._write(keys, kid, exclusive=False)
        self.load()
        return kid

    def retire(self, kek_id: str) -> None:
        if kek_id == self._current:
            raise MasterKeyError("the current master key cannot be retired")
        keys = {kid: key for kid, key in self._keys.items() if kid != kek_id}
        self._write(keys, self._current, exclusive=False)
        self.load()

    def _write(self, keys: dict[str, bytes], current: str, *, exclusive: bool) -> None:
        document = {
            "suite": str(self.suite),
            "current": current,
            "keys": {kid: base64.b64encode(key).decode("ascii") for kid, key in keys.items()},
        }
        temporary = self.path.with_name(f"{self.path.name}.{secrets.token_hex(4)}.tmp")
        descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(descriptor, "w", encoding="utf-8") as out:
            json.dump(document, out)
            out.flush()
            os.fsync(out.fileno())
        try:
            if exclusive:
                # link() fails when the file exists: a key is never written over another.
                with contextlib.suppress(FileExistsError):
                    os.link(temporary, self.path)
            else:
                # Atomic replace: a crash leaves the old file or the new one, never half.
                os.replace(temporary, self.path)
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(temporary)

    @property
    def current_id(self) -> str:
        return self._current

    @property
    def key_ids(self) -> list[str]:
        return list(self._keys)

    def wrap(self, key: bytes, aad: bytes) -> tuple[str, bytes]:
        nonce, sealed = aead_encrypt(self.suite, self._keys[self._current], key, aad)
        return self._current, nonce + sealed

    def unwrap(self, kek_id: str, wrapped: bytes, aad: bytes) -> bytes:
        kek = self._keys.get(kek_id)
        if kek is None:
            # Another process may have rotated the master key since this one started.
            self.load()
            kek = self._keys.get(kek_id)
        if kek is None:
            raise MasterKeyError(f"master key {kek_id} is not in {self.path}")
        return aead_decrypt(self.suite, kek, wrapped[:12], wrapped[12:], aad)


class KeyCache:
    """Unwrapped keys, briefly: bounded in count and age so few keys sit in memory for long."""

    def __init__(self, max_entries: int = 10_000, ttl_seconds: float = 300.0):
        self._entries: OrderedDict[str, tuple[float, bytes]] = OrderedDict()
        self._max = max_entries
        self._ttl = ttl_seconds

    def get(self, key_id: str) -> bytes | None:
        item = self._entries.get(key_id)
        if item is None:
            return None
        stored_at, key = item
        if time.monotonic() - stored_at > self._ttl:
            del self._entries[key_id]
            return None
        self._entries.move_to_end(key_id)
        return key

    def put(self, key_id: str, key: bytes) -> None:
        self._entries[key_id] = (time.monotonic(), key)
        self._entries.move_to_end(key_id)
        while len(self._entries) > self._max:
            self._entries.popitem(last=False)

    def drop(self, key_id: str) -> None:
        self._entries.pop(key_id, None)


@dataclass(frozen=True)
class DataKey:
    key_id: str
    key: bytes
    suite: Suite


def _aad(key_id: str, purpose: str) -> bytes:
    return f"anbang/key/v1\x00{key_id}\x00{purpose}".encode()


class KeyVault:
    """Wrapped keys in the database; unwrapped only in this process, briefly cached."""

    collections = (KEY_VAULT,)

    def __init__(
        self,
        store: Store,
        master: MasterKeyProvider,
        suite: Suite,
        clock: Clock,
        cache: KeyCache | None = None,
    ):
        self._vault = store.collection(KEY_VAULT)
        self._master = master
        self.suite = suite
        self._clock = clock
        self._cache = cache or KeyCache()
        # A burst of first requests needing one key (a fresh process, an expired entry)
        # reads and unwraps it once.
        self._loads: SingleFlight[tuple[str, str], bytes] = SingleFlight()
        self.ready = False

    @property
    def master(self) -> MasterKeyProvider:
        return self._master

    async def holds_keys(self) -> bool:
        return await self._vault.find_one({}, {"_id": 1}) is not None

    async def open(self) -> None:
        """Check the master key against the canary, writing it on first start."""
        doc = await self._vault.find_one({"_id": CANARY_ID})
        if doc is None:
            if await self._vault.find_one({"purpose": {"$ne": "canary"}}, {"_id": 1}):
                raise MasterKeyError("the key vault holds keys but no canary; refusing to start")
            with contextlib.suppress(DuplicateKeyError):
                await self._store_key(CANARY_ID, "canary", CANARY_PLAINTEXT)
            doc = await self._vault.find_one({"_id": CANARY_ID})
            assert doc is not None
        if doc.get("suite", str(self.suite)) != str(self.suite):
            raise MasterKeyError(f"the vault was made with suite {doc['suite']}, not {self.suite}")
        try:
            plain = self._master.unwrap(doc["kek_id"], doc["wrapped"], _aad(CANARY_ID, "canary"))
        except CryptoError:
            raise MasterKeyError(
                "the master key does not open this database's key vault (wrong key file?)"
            ) from None
        if plain != CANARY_PLAINTEXT:
            raise MasterKeyError("the master key canary does not match")
        self.ready = True

    async def _store_key(self, key_id: str, purpose: str, key: bytes, **extra: Any) -> None:
        kek_id, wrapped = self._master.wrap(key, _aad(key_id, purpose))
        await self._vault.insert_one(
            {
                "_id": key_id,
                "purpose": purpose,
                "suite": str(self.suite),
                "kek_id": kek_id,
                "wrapped": wrapped,
                "created_at": self._clock.now(),
                **extra,
            }
        )

    async def get_or_create(
        self, key_id: str, purpose: str, factory: Any = None, **extra: Any
    ) -> bytes:
        """The unwrapped key, creating a random one on first use (safe under races)."""
        cached = self._cache.get(key_id)
        if cached is not None:
            return cached
        return await self._loads.load(
            ("create", key_id), lambda: self._load_or_create(key_id, purpose, factory, extra)
        )

    async def _load_or_create(
        self, key_id: str, purpose: str, factory: Any, extra: dict[str, Any]
    ) -> bytes:
        doc = await self._vault.find_one({"_id": key_id})
        if doc is None:
            material = factory() if factory else new_key(self.suite)
            # Another request may create it first: then theirs is the one to use.
            with contextlib.suppress(DuplicateKeyError):
                await self._store_key(key_id, purpose, material, **extra)
            doc = await self._vault.find_one({"_id": key_id})
            assert doc is not None
        return self._unwrap_doc(doc)

    async def get(self, key_id: str) -> bytes:
        cached = self._cache.get(key_id)
        if cached is not None:
            return cached
        return await self._loads.load(("get", key_id), lambda: self._load(key_id))

    async def prefetch(self, key_ids: Iterable[str]) -> None:
        """Load the keys not yet cached in one read (a page of case files opens twenty keys:
        one round trip, not twenty). A destroyed key, or one that does not open, is left to
        `get`, which says so where the key is used."""
        wanted = sorted({key_id for key_id in key_ids if self._cache.get(key_id) is None})
        if not wanted:
            return
        async for doc in self._vault.find({"_id": {"$in": wanted}}):
            with contextlib.suppress(KeyShredded, CryptoError):
                self._unwrap_doc(doc)

    async def _load(self, key_id: str) -> bytes:
        doc = await self._vault.find_one({"_id": key_id})
        if doc is None:
            raise KeyUnknown(key_id)
        return self._unwrap_doc(doc)

    async def wrapped(self, key_id: str) -> dict[str, Any] | None:
        """A key as stored (wrapped under the master key), to carry where one read must bring
        everything (a person's check-in state); None if there is none or it was destroyed."""
        doc = await self._vault.find_one({"_id": key_id})
        if doc is None or doc.get("destroyed_at") is not None or doc.get("wrapped") is None:
            return None
        return {k: doc[k] for k in ("_id", "purpose", "kek_id", "wrapped")}

    def adopt(self, doc: dict[str, Any]) -> None:
        """Unwrap a carried copy of a key into the cache. One that no longer opens (the master
        key that wrapped it was retired) is left out: the key is then read from the vault."""
        if self._cache.get(doc["_id"]) is not None:
            return
        with contextlib.suppress(Exception):  # a stale copy costs one read, never the request
            self._unwrap_doc(doc)

    def _unwrap_doc(self, doc: dict[str, Any]) -> bytes:
        if doc.get("destroyed_at") is not None or doc.get("wrapped") is None:
            raise KeyShredded(doc["_id"])
        key = self._master.unwrap(doc["kek_id"], doc["wrapped"], _aad(doc["_id"], doc["purpose"]))
        self._cache.put(doc["_id"], key)
        return key

    async def data_key(self, subject_id: str, key_id: str | None = None) -> DataKey:
        """The subject's data key (`key_id` names a rotated one), created on first use."""
        key_id = key_id or f"dek:{subject_id}"
        key = await self.get_or_create(key_id, "dek", subject_id=subject_id)
        return DataKey(key_id, key, self.suite)

    async def new_data_key(self, subject_id: str) -> DataKey:
        """A fresh data key for a rotation; the caller re-encrypts, then destroys the old one."""
        key_id = f"dek:{subject_id}:{secrets.token_hex(4)}"
        material = new_key(self.suite)
        await self._store_key(key_id, "dek", material, subject_id=subject_id)
        self._cache.put(key_id, material)
        return DataKey(key_id, material, self.suite)

    async def destroy(self, key_id: str) -> None:
        """Crypto-shredding: the wrapped key is deleted; the entry remains as a tombstone."""
        await self._vault.update_one(
            {"_id": key_id},
            {"$set": {"destroyed_at": self._clock.now(), "wrapped": None}},
        )
        self._cache.drop(key_id)

    async def destroy_subject_keys(self, subject_id: str) -> int:
        ids = await self._vault.distinct(
            "_id", {"subject_id": subject_id, "wrapped": {"$ne": None}}
        )
        for key_id in ids:
            await self.destroy(key_id)
        return len(ids)

    async def rewrap_all(self, batch: int = 500) -> int:
        """Rewrap every key not wrapped by the current master key; resumable, idempotent."""
        current = self._master.current_id
        done = 0
        while True:
            docs = [
                doc
                async for doc in self._vault.find(
                    {"kek_id": {"$ne": current}, "wrapped": {"$ne": None}}
                ).limit(batch)
            ]
            if not docs:
                return done
            for doc in docs:
                aad = _aad(doc["_id"], doc["purpose"])
                key = self._master.unwrap(doc["kek_id"], doc["wrapped"], aad)
                kek_id, wrapped = self._master.wrap(key, aad)
                # Conditional on the old wrapping, so two rotations running at once agree.
                await self._vault.update_one(
                    {"_id": doc["_id"], "kek_id": doc["kek_id"]},
                    {"$set": {"kek_id": kek_id, "wrapped": wrapped}},
                )
                done += 1

    async def kek_ids_in_use(self) -> set[str]:
        return set(await self._vault.distinct("kek_id", {"wrapped": {"$ne": None}}))

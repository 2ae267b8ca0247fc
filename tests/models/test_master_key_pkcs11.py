"""The master key on a PKCS#11 token (SoftHSM2): the vault opens through it, the key never leaves
the token, wrong settings fail with what to fix, and a restart reads what was written."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from typing import Any

import pkcs11
import pytest
from pkcs11 import Attribute, KeyType, ObjectClass
from pkcs11 import exceptions as p11

from models.codec import FieldCodec
from models.crypto import CryptoError, Suite
from models.hsm import KEK_PREFIX, MasterKeyMissing, Pkcs11MasterKey
from models.keys import CANARY_ID, CANARY_PLAINTEXT, KeyVault, LocalKeyFile, MasterKeyError
from models.store import Store
from server.app import open_vault
from server.config import Config, Pkcs11Key
from tests.hsm_support import SoftHsm

RECORD = "张三, 身份证 330302199001011234, 病历: 抑郁症复诊"


@pytest.fixture
def token_session(softhsm: SoftHsm) -> Iterator[Any]:
    """A session of our own on the token, to look at keys as an insider with the PIN would."""
    token = pkcs11.lib(str(softhsm.module)).get_token(token_label=softhsm.token)
    with token.open(rw=True, user_pin=softhsm.pin) as session:
        yield session


@pytest.fixture
def providers() -> Iterator[list[Pkcs11MasterKey]]:
    """Providers a test opened; their sessions are closed when it ends."""
    opened: list[Pkcs11MasterKey] = []
    yield opened
    for provider in opened:
        provider.close()


async def opened(config: Config, store: Store, clock: Any, providers: list) -> KeyVault:
    vault = await open_vault(config, store, clock)
    assert isinstance(vault.master, Pkcs11MasterKey)
    providers.append(vault.master)
    return vault


def create_key(softhsm: SoftHsm, label: str) -> str:
    provider = softhsm.provider(label)
    try:
        return provider.create()
    finally:
        provider.close()


async def write_record(store: Store, vault: KeyVault, record_id: str) -> None:
    sealed = await FieldCodec(vault).seal("subject-1", None, "records", record_id, "text", RECORD)
    await store.database["records"].insert_one({"_id": record_id, "text": sealed})


async def read_record(store: Store, vault: KeyVault, record_id: str) -> Any:
    doc = await store.database["records"].find_one({"_id": record_id})
    assert doc is not None
    return await FieldCodec(vault).open("records", record_id, "text", doc["text"])


async def test_a_vault_opens_through_the_token_and_seals_records(
    store, hsm_config, clock, softhsm, hsm_label, providers
):
    kek_id = create_key(softhsm, hsm_label)
    assert kek_id.startswith(KEK_PREFIX)

    vault = await opened(hsm_config, store, clock, providers)
    assert vault.ready and vault.master.current_id == kek_id
    await write_record(store, vault, "r1")
    assert await read_record(store, vault, "r1") == RECORD

    # Every key in the vault is wrapped by the token's key, and nothing is stored in the clear.
    wrapped = [doc async for doc in store.database["key_vault"].find({})]
    assert {doc["kek_id"] for doc in wrapped} == {kek_id}
    canary = next(doc for doc in wrapped if doc["_id"] == CANARY_ID)
    assert CANARY_PLAINTEXT not in bytes(canary["wrapped"])
    raw = await store.database["records"].find_one({"_id": "r1"})
    assert "张三".encode() not in bytes(raw["text"])
    # No key file was made on the side.
    assert not hsm_config.master_key_file.exists()


async def test_a_new_provider_reads_what_an_earlier_one_wrote(
    store, hsm_config, clock, softhsm, hsm_label, providers
):
    create_key(softhsm, hsm_label)
    first = await opened(hsm_config, store, clock, providers)
    await write_record(store, first, "r1")
    first.master.close()  # type: ignore[attr-defined]
    # The module itself starts over too, as in a new process.
    library = pkcs11.lib(str(softhsm.module))
    library.reinitialize()

    again = await opened(hsm_config, store, clock, providers)
    assert await read_record(store, again, "r1") == RECORD


def test_the_master_key_never_leaves_the_token(softhsm, hsm_label, token_session):
    create_key(softhsm, hsm_label)
    key = token_session.get_key(object_class=ObjectClass.SECRET_KEY, label=hsm_label)

    assert key.key_type is KeyType.AES and key[Attribute.VALUE_LEN] == 32
    assert key[Attribute.SENSITIVE] and key[Attribute.ALWAYS_SENSITIVE]
    assert not key[Attribute.EXTRACTABLE] and key[Attribute.NEVER_EXTRACTABLE]
    assert key[Attribute.TOKEN] and key[Attribute.PRIVATE]
    # Its value cannot be read, even in a session logged in with the PIN ...
    with pytest.raises(p11.AttributeSensitive):
        key[Attribute.VALUE]
    # ... nor wrapped out under a key the holder of the PIN controls ...
    carrier = token_session.generate_key(
        KeyType.AES, 256, template={Attribute.TOKEN: False, Attribute.WRAP: True}
    )
    with pytest.raises(p11.KeyUnextractable):
        carrier.wrap_key(key)
    # ... nor made extractable afterwards.
    with pytest.raises(p11.PKCS11Error):
        key[Attribute.EXTRACTABLE] = True
    assert not key[Attribute.EXTRACTABLE]


async def test_a_wrong_pin_is_a_clear_error(store, hsm_config, clock, softhsm, hsm_label):
    create_key(softhsm, hsm_label)
    wrong = dataclasses.replace(hsm_config, pkcs11_pin="not-the-pin")
    with pytest.raises(MasterKeyError, match=r"user PIN of token 'anbang-test'.* is wrong") as err:
        await open_vault(wrong, store, clock)
    assert "not-the-pin" not in str(err.value)
    assert "ANBANG_PKCS11_PIN" in str(err.value)
    assert await store.database["key_vault"].count_documents({}) == 0


async def test_a_wrong_token_or_module_is_a_clear_error(store, hsm_config, clock, tmp_path):
    hsm = hsm_config.master_key_pkcs11
    no_token = dataclasses.replace(
        hsm_config, master_key_pkcs11=dataclasses.replace(hsm, token="elsewhere")
    )
    with pytest.raises(MasterKeyError, match=r"no token labelled 'elsewhere'.*fix token="):
        await open_vault(no_token, store, clock)

    no_module = dataclasses.replace(
        hsm_config, master_key_pkcs11=Pkcs11Key(tmp_path / "libnone.so", hsm.token, hsm.object)
    )
    with pytest.raises(MasterKeyError, match=r"libnone.so does not exist.*module="):
        await open_vault(no_module, store, clock)

    not_a_module = tmp_path / "libfake.so"
    not_a_module.write_bytes(b"not a shared library")
    fake = dataclasses.replace(
        hsm_config, master_key_pkcs11=Pkcs11Key(not_a_module, hsm.token, hsm.object)
    )
    with pytest.raises(MasterKeyError, match=r"libfake.so cannot be loaded"):
        await open_vault(fake, store, clock)


async def test_a_missing_key_is_never_created_by_a_start(
    store, hsm_config, clock, hsm_label, token_session
):
    with pytest.raises(MasterKeyMissing, match=r"no key labelled .*admin keys hsm-create"):
        await open_vault(hsm_config, store, clock)
    assert list(token_session.get_objects({Attribute.LABEL: hsm_label})) == []
    assert await store.database["key_vault"].count_documents({}) == 0


async def test_a_missing_key_over_a_vault_that_holds_keys_says_so(
    store, hsm_config, clock, softhsm, hsm_label, providers, token_session
):
    create_key(softhsm, hsm_label)
    await write_record(store, await opened(hsm_config, store, clock, providers), "r1")
    gone = dataclasses.replace(
        hsm_config,
        master_key_pkcs11=dataclasses.replace(hsm_config.master_key_pkcs11, object="renamed"),
    )
    with pytest.raises(MasterKeyError, match=r"vault holds keys: bring back the token's key"):
        await open_vault(gone, store, clock)
    assert list(token_session.get_objects({Attribute.LABEL: "renamed"})) == []


async def test_another_token_key_does_not_open_the_vault(
    store, hsm_config, clock, softhsm, hsm_label, providers
):
    first = create_key(softhsm, hsm_label)
    await opened(hsm_config, store, clock, providers)
    other_label = f"{hsm_label}-other"
    create_key(softhsm, other_label)
    # Both keys are on the token, so the canary names the first and the first opens it: the
    # vault stays readable whichever label is configured.
    other = dataclasses.replace(
        hsm_config,
        master_key_pkcs11=dataclasses.replace(hsm_config.master_key_pkcs11, object=other_label),
    )
    vault = await opened(other, store, clock, providers)
    canary = await store.database["key_vault"].find_one({"_id": CANARY_ID})
    assert canary["kek_id"] == first and vault.ready

    # A ciphertext under the first key does not open with the second: the token checks the tag.
    provider = vault.master
    assert isinstance(provider, Pkcs11MasterKey)
    kek_id, wrapped = provider.wrap(b"k" * 32, b"aad")
    assert provider.unwrap(kek_id, wrapped, b"aad") == b"k" * 32
    with pytest.raises(CryptoError):
        provider.unwrap(kek_id, wrapped, b"other place")
    with pytest.raises(CryptoError):
        provider.unwrap(kek_id, wrapped[:-1] + bytes([wrapped[-1] ^ 1]), b"aad")
    with pytest.raises(CryptoError):
        provider.unwrap(first, wrapped, b"aad")
    with pytest.raises(MasterKeyError, match=r"hsm-00ff is not on token"):
        provider.unwrap("hsm-00ff", wrapped, b"aad")


async def test_rotation_moves_every_key_to_a_new_token_key_and_retires_the_old(
    store, hsm_config, clock, softhsm, hsm_label, providers, token_session
):
    old = create_key(softhsm, hsm_label)
    vault = await opened(hsm_config, store, clock, providers)
    await write_record(store, vault, "r1")
    new_label = f"{hsm_label}-2"
    new = create_key(softhsm, new_label)
    rotated = dataclasses.replace(
        hsm_config,
        master_key_pkcs11=dataclasses.replace(hsm_config.master_key_pkcs11, object=new_label),
    )
    after = await opened(rotated, store, clock, providers)
    assert await after.rewrap_all() >= 2  # the canary and the data key at least
    assert await after.kek_ids_in_use() == {new}
    assert {old, new} <= set(after.master.key_ids)  # type: ignore[attr-defined]

    with pytest.raises(MasterKeyError, match=r"current master key cannot be retired"):
        after.master.retire(new)  # type: ignore[attr-defined]
    after.master.retire(old)  # type: ignore[attr-defined]
    assert list(token_session.get_objects({Attribute.LABEL: hsm_label})) == []

    fresh = await opened(rotated, store, clock, providers)
    assert await read_record(store, fresh, "r1") == RECORD


async def test_a_key_file_vault_moves_onto_the_token(
    store, config, hsm_config, clock, softhsm, hsm_label, providers
):
    file_vault = await open_vault(config, store, clock)
    assert isinstance(file_vault.master, LocalKeyFile)
    await write_record(store, file_vault, "r1")
    token_key = create_key(softhsm, hsm_label)

    # The old key file still opens what it wrapped; new keys are wrapped on the token.
    vault = await opened(hsm_config, store, clock, providers)
    assert await read_record(store, vault, "r1") == RECORD
    assert await vault.rewrap_all() >= 2
    assert await vault.kek_ids_in_use() == {token_key}

    # With the key file gone, everything still opens through the token alone.
    config.master_key_file.unlink()
    alone = await opened(hsm_config, store, clock, providers)
    assert await read_record(store, alone, "r1") == RECORD


async def test_a_key_that_could_leave_the_token_is_refused(
    store, hsm_config, clock, hsm_label, token_session
):
    token_session.generate_key(
        KeyType.AES,
        256,
        id=b"\x42\x42",
        label=hsm_label,
        store=True,
        template={Attribute.EXTRACTABLE: True, Attribute.SENSITIVE: False},
    )
    with pytest.raises(MasterKeyError, match=r"can leave the token"):
        await open_vault(hsm_config, store, clock)
    assert await store.database["key_vault"].count_documents({}) == 0


def test_the_key_ceremony_never_replaces_a_key(softhsm, hsm_label):
    first = create_key(softhsm, hsm_label)
    with pytest.raises(MasterKeyError, match=r"already holds a key labelled"):
        create_key(softhsm, hsm_label)
    provider = softhsm.provider(hsm_label)
    try:
        provider.load()
        assert provider.current_id == first
    finally:
        provider.close()


def test_the_sm_suite_is_refused_by_the_provider(softhsm, hsm_label):
    with pytest.raises(MasterKeyError, match=r"ANBANG_CRYPTO_SUITE=standard only"):
        Pkcs11MasterKey(softhsm.module, softhsm.token, hsm_label, softhsm.pin, Suite.SM)


def test_the_provider_never_shows_its_pin(softhsm, hsm_label):
    provider = softhsm.provider(hsm_label)
    assert softhsm.pin not in repr(provider)
    assert softhsm.pin not in provider.where


async def test_a_provider_reopens_its_session_when_the_module_starts_over(
    store, hsm_config, clock, softhsm, hsm_label, providers
):
    create_key(softhsm, hsm_label)
    vault = await opened(hsm_config, store, clock, providers)
    provider = vault.master
    kek_id, wrapped = provider.wrap(b"k" * 32, b"aad")
    # The module drops every session (an HSM restarting, a token pulled and put back) ...
    pkcs11.lib(str(softhsm.module)).reinitialize()
    # ... and, once another provider of this process has logged in again, this one shares
    # that login on its next call instead of failing every request ...
    other = softhsm.provider(hsm_label)
    other.load()
    assert provider.unwrap(kek_id, wrapped, b"aad") == b"k" * 32
    # ... and logs in itself once the other closes (which logs the whole process out).
    other.close()
    assert provider.unwrap(kek_id, wrapped, b"aad") == b"k" * 32
    assert provider.wrap(b"k" * 32, b"aad")[0] == kek_id

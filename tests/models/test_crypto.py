"""The crypto suites and the field codec: sealing bound to a place, blind indexes, signatures.

Both suites are tested the same way: `standard` (AES-256-GCM, HMAC-SHA-256, Ed25519) and `sm`
(国密: SM4-GCM, HMAC-SM3, SM2).
"""

from __future__ import annotations

import dataclasses
import hmac as std_hmac
from typing import Any

import pytest
from bson import Binary
from gmssl import func as gm_func
from gmssl import sm3 as gm_sm3
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from models.codec import FieldCodec, IntegrityError
from models.crypto import (
    NONCE_BYTES,
    CryptoError,
    Sealed,
    Suite,
    aead_decrypt,
    digest,
    field_aad,
    keyed_hash,
    new_key,
    new_signing_key,
    open_value,
    public_key,
    seal_value,
    sign,
    verify_signature,
)
from server.app import open_vault

SUITES = pytest.mark.parametrize("suite", list(Suite), ids=[str(s) for s in Suite])

PLACE = ("subjects", "65f0c0ffee0000000000abcd", "name")
VALUES: list[Any] = [
    "plain ascii",
    "张伟，浙江省温州市鹿城区五马街88号；盗窃罪，缓刑二年",
    {"name": "李娜", "phones": ["13812345678", "0577-88886666"], "age": 34, "juvenile": False},
    "",
    0,
    None,
]


def sealed_bytes(suite: Suite, key: bytes, value: Any, place=PLACE, key_id="dek:test") -> bytes:
    return seal_value(suite, key_id, key, value, field_aad(*place))


def opened(blob: bytes, key: bytes, place=PLACE) -> Any:
    return open_value(Sealed.from_bytes(blob), key, field_aad(*place))


def flip(blob: bytes, bit: int) -> bytes:
    tampered = bytearray(blob)
    tampered[bit // 8] ^= 1 << (bit % 8)
    return bytes(tampered)


def header_length(blob: bytes) -> int:
    """Version, suite, key-id length and the key id: everything before the nonce."""
    return 3 + blob[2]


# --- sealing ------------------------------------------------------------------------------------


@SUITES
@pytest.mark.parametrize("value", VALUES, ids=["ascii", "chinese", "dict", "empty", "zero", "null"])
def test_a_sealed_value_opens_to_itself(suite, value):
    key = new_key(suite)
    blob = sealed_bytes(suite, key, value)
    assert opened(blob, key) == value
    header = Sealed.from_bytes(blob)
    # The ciphertext names its suite and key: it stays readable after the configuration changes.
    assert header.suite is suite and header.key_id == "dek:test"
    assert len(header.nonce) == NONCE_BYTES


@SUITES
def test_the_ciphertext_does_not_contain_the_plaintext(suite):
    key = new_key(suite)
    for text in ("张伟", "330302199003071234", "13812345678"):
        blob = sealed_bytes(suite, key, text)
        assert text.encode("utf-8") not in blob
        assert text.encode("utf-8").hex() not in blob.hex()


@SUITES
@pytest.mark.parametrize(
    "elsewhere",
    [
        ("subject_notes", PLACE[1], PLACE[2]),  # another collection
        (PLACE[0], "65f0c0ffee0000000000abce", PLACE[2]),  # another document
        (PLACE[0], PLACE[1], "address"),  # another field
    ],
    ids=["other-collection", "other-document", "other-field"],
)
def test_a_ciphertext_moved_to_another_place_does_not_open(suite, elsewhere):
    key = new_key(suite)
    blob = sealed_bytes(suite, key, "张伟")
    with pytest.raises(CryptoError):
        opened(blob, key, elsewhere)
    # Still fine where it belongs.
    assert opened(blob, key) == "张伟"


@SUITES
def test_a_ciphertext_does_not_open_under_another_key(suite):
    blob = sealed_bytes(suite, new_key(suite), "张伟")
    with pytest.raises(CryptoError):
        opened(blob, new_key(suite))


@SUITES
def test_flipping_any_bit_of_nonce_ciphertext_or_tag_fails(suite):
    key = new_key(suite)
    blob = sealed_bytes(suite, key, {"name": "张伟", "note": "按时报到"})
    for bit in range(header_length(blob) * 8, len(blob) * 8):
        with pytest.raises(CryptoError):
            opened(flip(blob, bit), key)


@SUITES
def test_flipping_any_bit_of_the_header_fails(suite):
    """Version, suite, key-id length and key id are part of the ciphertext too: a changed header
    must fail with CryptoError, never decode some other way or raise something else."""
    key = new_key(suite)
    blob = sealed_bytes(suite, key, "张伟")
    outcomes: dict[int, str] = {}
    for bit in range(header_length(blob) * 8):
        try:
            opened(flip(blob, bit), key)
        except CryptoError:
            continue
        except Exception as exc:  # anything but CryptoError is a finding
            outcomes[bit] = type(exc).__name__
        else:
            outcomes[bit] = "opened"
    assert outcomes == {}, f"header bits that did not fail with CryptoError: {outcomes}"


@SUITES
def test_truncated_or_extended_ciphertexts_fail(suite):
    key = new_key(suite)
    blob = sealed_bytes(suite, key, "张伟")
    for cut in range(len(blob)):
        with pytest.raises(CryptoError):
            opened(blob[:cut], key)
    with pytest.raises(CryptoError):
        opened(blob + b"\x00", key)


@SUITES
def test_two_seals_of_the_same_value_differ(suite):
    key = new_key(suite)
    blobs = {sealed_bytes(suite, key, "张伟") for _ in range(50)}
    assert len(blobs) == 50
    nonces = {Sealed.from_bytes(b).nonce for b in blobs}
    assert len(nonces) == 50


def test_the_sm_suite_is_sm4_gcm():
    """RFC 8998 appendix A.1: SM4-GCM's published test vector opens with the `sm` suite."""
    key = bytes.fromhex("0123456789ABCDEFFEDCBA9876543210")
    nonce = bytes.fromhex("00001234567800000000ABCD")
    aad = bytes.fromhex("FEEDFACEDEADBEEFFEEDFACEDEADBEEFABADDAD2")
    plaintext = bytes.fromhex(
        "AAAAAAAAAAAAAAAABBBBBBBBBBBBBBBBCCCCCCCCCCCCCCCCDDDDDDDDDDDDDDDD"
        "EEEEEEEEEEEEEEEEFFFFFFFFFFFFFFFFEEEEEEEEEEEEEEEEAAAAAAAAAAAAAAAA"
    )
    ciphertext = bytes.fromhex(
        "17F399F08C67D5EE19D0DC9969C4BB7D5FD46FD3756489069157B282BB200735"
        "D82710CA5C22F0CCFA7CBF93D496AC15A56834CBCF98C397B4024A2691233B8D"
    )
    tag = bytes.fromhex("83DE3541E4C2B58177E065A9BF7B62EC")
    assert aead_decrypt(Suite.SM, key, nonce, ciphertext + tag, aad) == plaintext
    with pytest.raises(CryptoError):
        aead_decrypt(Suite.SM, key, nonce, ciphertext + flip(tag, 0), aad)


# --- blind indexes and digests ------------------------------------------------------------------


@SUITES
def test_blind_indexes_are_deterministic_per_key_and_differ_across_keys(suite):
    key, other_key = new_key(suite), new_key(suite)
    first = keyed_hash(suite, key, b"330302199003071234")
    assert first == keyed_hash(suite, key, b"330302199003071234")
    assert len(first) == 32
    assert first != keyed_hash(suite, other_key, b"330302199003071234")
    assert first != keyed_hash(suite, key, b"330302199003071235")
    assert b"330302199003071234" not in first


def _hmac_sm3(key: bytes, message: bytes) -> bytes:
    """HMAC (RFC 2104) over gmssl's independent SM3, to check the suite really is HMAC-SM3."""

    def sm3(data: bytes) -> bytes:
        return bytes.fromhex(gm_sm3.sm3_hash(gm_func.bytes_to_list(data)))

    block = key.ljust(64, b"\x00")
    inner = sm3(bytes(b ^ 0x36 for b in block) + message)
    return sm3(bytes(b ^ 0x5C for b in block) + inner)


def test_the_blind_index_of_each_suite_is_its_hmac():
    key = bytes(range(32))
    message = "张伟".encode()
    assert keyed_hash(Suite.STANDARD, key, message) == std_hmac.new(key, message, "sha256").digest()
    sm_key = bytes(range(16))
    assert keyed_hash(Suite.SM, sm_key, message) == _hmac_sm3(sm_key, message)


def test_the_digests_are_sha256_and_sm3():
    # GB/T 32905 example 1: SM3("abc").
    assert digest(Suite.SM, b"abc") == (
        "66c7f0f462eeedd9d1f2d46bdc10e4e24167c4875cf2f7a2297da02b8f4ba8e0"
    )
    assert digest(Suite.STANDARD, b"abc") == (
        "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    )


# --- signatures ---------------------------------------------------------------------------------


def changed_signatures(suite: Suite, signature: bytes) -> list[bytes]:
    """The signature with one bit of its value flipped, at many places. An SM2 signature is
    ASCII hex (case does not matter), so its value is flipped before it is encoded again."""
    if suite is Suite.STANDARD:
        return [flip(signature, bit) for bit in range(0, len(signature) * 8, 7)]
    value = bytes.fromhex(signature.decode("ascii"))
    return [flip(value, bit).hex().encode("ascii") for bit in range(0, len(value) * 8, 7)]


@SUITES
def test_signatures_verify_and_a_changed_message_or_signature_fails(suite):
    private = new_signing_key(suite)
    public = public_key(suite, private)
    message = "检查点 heads=3 at 2026-11-24T00:00:00Z".encode()
    signature = sign(suite, private, message)
    assert verify_signature(suite, public, message, signature)

    assert not verify_signature(suite, public, message + b" ", signature)
    assert not verify_signature(suite, public, flip(message, 3), signature)
    for changed in changed_signatures(suite, signature):
        assert not verify_signature(suite, public, message, changed), changed
    assert not verify_signature(suite, public, message, b"not a signature at all")
    assert not verify_signature(suite, public, message, signature[:-1])
    assert not verify_signature(suite, public, message, b"")
    other_public = public_key(suite, new_signing_key(suite))
    assert not verify_signature(suite, other_public, message, signature)


@SUITES
def test_signing_keys_are_fresh_and_their_public_keys_stable(suite):
    first, second = new_signing_key(suite), new_signing_key(suite)
    assert first != second
    assert public_key(suite, first) == public_key(suite, first)
    assert public_key(suite, first) != public_key(suite, second)


# Private keys whose SM2 public point has an x coordinate starting with the hex digits "04"
# (about one key in 256): found with gmssl's own point multiplication.
SM2_PUBLIC_X_STARTS_WITH_04 = [
    "be58ffdeccff60329db653c4c3e0a590996e2c28428fc7920d7de0c5b5e32103",  # x = 043b8ce8…
    "69267a815fb729115258ed6ee003588cf6ee0de7202c70a8e88d700f36e99322",  # x = 040fc290…
]


@pytest.mark.parametrize("private_hex", SM2_PUBLIC_X_STARTS_WITH_04, ids=["x=043b", "x=040f"])
def test_every_sm2_signing_key_signs_and_verifies(private_hex):
    """The audit signing key is random: any valid SM2 key must work, including those whose
    public key happens to start with "04" (the uncompressed-point prefix gmssl strips)."""
    from gmssl import sm2

    private = bytes.fromhex(private_hex)
    expected = sm2.CryptSM2(private_key="", public_key="")._kg(
        int(private_hex, 16), sm2.default_ecc_table["g"]
    )
    message = b"checkpoint heads"
    signature = sign(Suite.SM, private, message)
    assert verify_signature(Suite.SM, public_key(Suite.SM, private), message, signature)
    assert public_key(Suite.SM, private) == expected.encode("ascii")  # x || y, 128 hex digits


# --- properties ---------------------------------------------------------------------------------

JSON_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**53), max_value=2**53)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=40),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4)
    ),
    max_leaves=12,
)
PLACES = st.tuples(
    st.sampled_from(["subjects", "subject_notes", "attachments"]),
    st.text(alphabet="0123456789abcdef", min_size=1, max_size=24),
    st.sampled_from(["name", "id_number", "phone", "address", "text", "team"]),
)


@SUITES
@settings(max_examples=60, deadline=None)
@given(value=JSON_VALUES, place=PLACES)
def test_property_any_json_value_round_trips(suite, value, place):
    key = new_key(suite)
    assert opened(sealed_bytes(suite, key, value, place), key, place) == value


@SUITES
@settings(max_examples=60, deadline=None)
@given(value=JSON_VALUES, place=PLACES, other=PLACES)
def test_property_a_value_opens_only_in_its_own_place(suite, value, place, other):
    key = new_key(suite)
    blob = sealed_bytes(suite, key, value, place)
    if other != place:
        with pytest.raises(CryptoError):
            opened(blob, key, other)


@SUITES
@settings(max_examples=80, deadline=None)
@given(value=JSON_VALUES, data=st.data())
def test_property_any_flipped_bit_fails(suite, value, data):
    key = new_key(suite)
    blob = sealed_bytes(suite, key, value)
    bit = data.draw(st.integers(min_value=0, max_value=len(blob) * 8 - 1), label="bit")
    with pytest.raises(CryptoError):
        opened(flip(blob, bit), key)


# --- the field codec over a real key vault -------------------------------------------------------


@pytest.fixture(params=list(Suite), ids=[str(s) for s in Suite])
async def codec(request, store, config, clock) -> FieldCodec:
    vault = await open_vault(
        dataclasses.replace(config, crypto_suite=str(request.param)), store, clock
    )
    return FieldCodec(vault)


async def test_the_codec_seals_with_the_subjects_data_key(codec):
    blob = await codec.seal("s1", None, "subjects", "s1", "name", "张伟")
    assert isinstance(blob, Binary)
    assert Sealed.from_bytes(bytes(blob)).key_id == "dek:s1"
    assert await codec.open("subjects", "s1", "name", blob) == "张伟"
    with pytest.raises(IntegrityError):
        await codec.open("subjects", "s2", "name", blob)
    with pytest.raises(IntegrityError):
        await codec.open("subjects", "s1", "phone", blob)


async def test_every_tampered_bit_of_a_stored_field_is_an_integrity_error(codec):
    """Whatever bit of a stored field changes, the reader gets IntegrityError (tampering,
    logged) — never Shredded (which would pass tampering off as erasure), never another
    exception, never a value."""
    await codec.seal("s2", None, "subjects", "s2", "name", "placeholder")  # another key exists
    blob = bytes(await codec.seal("s1", None, "subjects", "s1", "name", "张伟"))
    outcomes: dict[int, str] = {}
    for bit in range(len(blob) * 8):
        try:
            await codec.open("subjects", "s1", "name", Binary(flip(blob, bit)))
        except IntegrityError:
            continue
        except Exception as exc:  # anything but IntegrityError is a finding
            outcomes.setdefault(bit // 8, type(exc).__name__)
        else:
            outcomes.setdefault(bit // 8, "opened")
    assert outcomes == {}, f"bytes whose tampering was not an integrity error: {outcomes}"


async def test_blind_indexes_are_stable_per_kind_and_differ_across_kinds(codec):
    first = await codec.blind_index("phone", "13812345678")
    assert first == await codec.blind_index("phone", "13812345678")
    assert first != await codec.blind_index("name", "13812345678")
    assert first != await codec.blind_index("phone", "13812345679")
    assert "13812345678" not in first


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(value=JSON_VALUES)
async def test_property_the_codec_round_trips(codec, value):
    blob = await codec.seal("s1", None, "subjects", "s1", "note", value)
    assert await codec.open("subjects", "s1", "note", blob) == value

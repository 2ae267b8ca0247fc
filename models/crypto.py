"""Cryptographic suites and the field codec: authenticated encryption bound to where a value lives.

Two suites, selectable as a whole: `standard` (AES-256-GCM, HMAC-SHA-256, Ed25519) and `sm`
(国密: SM4-GCM, HMAC-SM3, SM2). A ciphertext records its format version, suite and key id, so a
value written under one key or suite stays readable after the configuration changes.
"""

from __future__ import annotations

import enum
import hashlib
import json
import os
import re
from dataclasses import dataclass
from typing import Any

from cryptography.exceptions import InvalidSignature, InvalidTag
from cryptography.hazmat.primitives import hashes, hmac
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

FORMAT_VERSION = 1
NONCE_BYTES = 12  # 96-bit nonces, fresh from the OS for every encryption
TAG_BYTES = 16


class CryptoError(Exception):
    """A ciphertext that does not authenticate: tampered, moved, or under an unknown key."""


class Suite(enum.StrEnum):
    STANDARD = "standard"
    SM = "sm"

    @property
    def code(self) -> int:
        return {Suite.STANDARD: 1, Suite.SM: 2}[self]

    @classmethod
    def from_code(cls, code: int) -> Suite:
        for suite in cls:
            if suite.code == code:
                return suite
        raise CryptoError(f"unknown suite {code}")

    @property
    def key_bytes(self) -> int:
        return 32 if self is Suite.STANDARD else 16


def new_key(suite: Suite) -> bytes:
    return os.urandom(suite.key_bytes)


def aead_encrypt(suite: Suite, key: bytes, plaintext: bytes, aad: bytes) -> tuple[bytes, bytes]:
    """(nonce, ciphertext with tag)."""
    nonce = os.urandom(NONCE_BYTES)
    if suite is Suite.STANDARD:
        return nonce, AESGCM(key).encrypt(nonce, plaintext, aad)
    encryptor = Cipher(algorithms.SM4(key), modes.GCM(nonce)).encryptor()
    encryptor.authenticate_additional_data(aad)
    body = encryptor.update(plaintext) + encryptor.finalize()
    return nonce, body + encryptor.tag


def aead_decrypt(suite: Suite, key: bytes, nonce: bytes, sealed: bytes, aad: bytes) -> bytes:
    try:
        if suite is Suite.STANDARD:
            return AESGCM(key).decrypt(nonce, sealed, aad)
        if len(sealed) < TAG_BYTES:
            raise CryptoError("ciphertext too short")
        decryptor = Cipher(algorithms.SM4(key), modes.GCM(nonce, sealed[-TAG_BYTES:])).decryptor()
        decryptor.authenticate_additional_data(aad)
        return decryptor.update(sealed[:-TAG_BYTES]) + decryptor.finalize()
    except (InvalidTag, ValueError) as exc:
        raise CryptoError("the ciphertext does not authenticate") from exc


def keyed_hash(suite: Suite, key: bytes, message: bytes) -> bytes:
    """HMAC-SHA-256 or HMAC-SM3: blind indexes."""
    mac = hmac.HMAC(key, hashes.SHA256() if suite is Suite.STANDARD else hashes.SM3())
    mac.update(message)
    return mac.finalize()


def digest(suite: Suite, message: bytes) -> str:
    """SHA-256 or SM3, hex: the audit chain's links."""
    if suite is Suite.STANDARD:
        return hashlib.sha256(message).hexdigest()
    h = hashes.Hash(hashes.SM3())
    h.update(message)
    return h.finalize().hex()


def _header(suite: Suite, key_id: str) -> bytes:
    kid = key_id.encode("ascii")
    if len(kid) > 255:
        raise ValueError("key id too long")
    return bytes([FORMAT_VERSION, suite.code, len(kid)]) + kid


@dataclass(frozen=True)
class Sealed:
    """A parsed ciphertext: version, suite, key id, nonce and the sealed bytes.

    The header (version, suite, key id) is authenticated with the ciphertext: it is prepended to
    the associated data, so a changed header fails like a changed body.
    """

    suite: Suite
    key_id: str
    nonce: bytes
    body: bytes

    @property
    def header(self) -> bytes:
        return _header(self.suite, self.key_id)

    def to_bytes(self) -> bytes:
        return self.header + self.nonce + self.body

    @classmethod
    def from_bytes(cls, raw: bytes) -> Sealed:
        if len(raw) < 3 or raw[0] != FORMAT_VERSION:
            raise CryptoError("unknown ciphertext format")
        suite = Suite.from_code(raw[1])
        kid_end = 3 + raw[2]
        if len(raw) < kid_end + NONCE_BYTES + TAG_BYTES:
            raise CryptoError("ciphertext too short")
        try:
            key_id = raw[3:kid_end].decode("ascii")
        except UnicodeDecodeError:
            raise CryptoError("malformed key id") from None
        return cls(
            suite=suite,
            key_id=key_id,
            nonce=raw[kid_end : kid_end + NONCE_BYTES],
            body=raw[kid_end + NONCE_BYTES :],
        )


def field_aad(collection: str, document_id: str, field: str) -> bytes:
    # Binds a ciphertext to its place: copied to another document or field, it fails.
    return f"anbang/v1\x00{collection}\x00{document_id}\x00{field}".encode()


def seal_bytes(suite: Suite, key_id: str, key: bytes, data: bytes, aad: bytes) -> bytes:
    header = _header(suite, key_id)
    nonce, body = aead_encrypt(suite, key, data, header + aad)
    return header + nonce + body


def open_bytes(sealed: Sealed, key: bytes, aad: bytes) -> bytes:
    return aead_decrypt(sealed.suite, key, sealed.nonce, sealed.body, sealed.header + aad)


def seal_value(suite: Suite, key_id: str, key: bytes, value: Any, aad: bytes) -> bytes:
    plaintext = json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
    return seal_bytes(suite, key_id, key, plaintext, aad)


def open_value(sealed: Sealed, key: bytes, aad: bytes) -> Any:
    return json.loads(open_bytes(sealed, key, aad).decode("utf-8"))


# --- signatures (audit checkpoints) ----------------------------------------------------------


def new_signing_key(suite: Suite) -> bytes:
    """The private signing key's raw bytes."""
    if suite is Suite.STANDARD:
        from cryptography.hazmat.primitives import serialization

        return Ed25519PrivateKey.generate().private_bytes(
            serialization.Encoding.Raw,
            serialization.PrivateFormat.Raw,
            serialization.NoEncryption(),
        )
    while True:
        candidate = os.urandom(32)
        if 0 < int.from_bytes(candidate, "big") < _SM2_ORDER - 1:
            return candidate


_SM2_SIGNATURE = re.compile(rb"[0-9a-f]{128}")

# The order n of the SM2 curve's base point (GB/T 32918.5): a private key must lie in [1, n-2].
_SM2_ORDER = int("FFFFFFFEFFFFFFFFFFFFFFFFFFFFFFFF7203DF6B21C6052B53BBF40939D54123", 16)


def public_key(suite: Suite, private: bytes) -> bytes:
    if suite is Suite.STANDARD:
        from cryptography.hazmat.primitives import serialization

        return (
            Ed25519PrivateKey.from_private_bytes(private)
            .public_key()
            .public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        )
    return _sm2(private).public_key.encode("ascii")


def sign(suite: Suite, private: bytes, message: bytes) -> bytes:
    if suite is Suite.STANDARD:
        return Ed25519PrivateKey.from_private_bytes(private).sign(message)
    from gmssl import func

    signer = _sm2(private)
    return signer.sign_with_sm3(message, func.random_hex(signer.para_len)).encode("ascii")


def verify_signature(suite: Suite, public: bytes, message: bytes, signature: bytes) -> bool:
    if suite is Suite.STANDARD:
        try:
            Ed25519PublicKey.from_public_bytes(public).verify(signature, message)
        except (InvalidSignature, ValueError):
            return False
        return True
    from gmssl import sm2

    # Only the canonical form (128 lowercase hex digits, r then s): gmssl parses with int(),
    # which would also accept padding, spaces and other letter cases of the same numbers.
    if not _SM2_SIGNATURE.fullmatch(signature):
        return False
    try:
        verifier = _with_public_key(
            sm2.CryptSM2(private_key="", public_key=""), public.decode("ascii")
        )
        return bool(verifier.verify_with_sm3(signature.decode("ascii"), message))
    except Exception:
        # gmssl raises all sorts on malformed input: any of them means "not a valid signature".
        return False


def _sm2(private: bytes) -> Any:
    from gmssl import sm2

    private_hex = private.hex()
    # The public key is the private scalar times the curve's base point.
    signer = sm2.CryptSM2(private_key=private_hex, public_key="")
    public_hex = signer._kg(int(private_hex, 16), sm2.default_ecc_table["g"])
    return _with_public_key(signer, public_hex)


def _with_public_key(crypt: Any, public_hex: str) -> Any:
    # gmssl's constructor strips a leading "04" (the uncompressed-point prefix) with lstrip,
    # which also eats the first digits of an x coordinate that begins with 0 or 4: set the key
    # after construction instead. Its own _kg output carries no prefix.
    crypt.public_key = public_hex.removeprefix("04") if len(public_hex) == 130 else public_hex
    return crypt

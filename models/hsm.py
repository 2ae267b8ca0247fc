"""The master key in a hardware security module over PKCS#11: keys are wrapped on the token."""

from __future__ import annotations

import contextlib
import os
import secrets
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import pkcs11
from pkcs11 import Attribute, GCMParams, KeyType, Mechanism, ObjectClass
from pkcs11 import exceptions as p11

from models.crypto import NONCE_BYTES, CryptoError, Suite
from models.keys import LocalKeyFile, MasterKeyError

KEK_PREFIX = "hsm-"
KEK_BITS = 256
_T = TypeVar("_T")

# The master key can only encrypt and decrypt on the token: it never leaves it (not
# extractable, sensitive), cannot wrap other token keys out, and its attributes are frozen.
KEK_TEMPLATE: dict[Attribute, Any] = {
    Attribute.TOKEN: True,
    Attribute.PRIVATE: True,
    Attribute.SENSITIVE: True,
    Attribute.EXTRACTABLE: False,
    Attribute.MODIFIABLE: False,
    Attribute.ENCRYPT: True,
    Attribute.DECRYPT: True,
    Attribute.WRAP: False,
    Attribute.UNWRAP: False,
    Attribute.SIGN: False,
    Attribute.VERIFY: False,
    Attribute.DERIVE: False,
}

# A session that the module lost (token removed, HSM restarted) or whose login ended (the
# login belongs to the whole process, so closing any session of it logs every session out):
# reopened once, then retried.
_LOST_SESSION = (
    p11.SessionClosed,
    p11.SessionHandleInvalid,
    p11.DeviceRemoved,
    p11.TokenNotPresent,
    p11.UserNotLoggedIn,
    p11.ObjectHandleInvalid,
    p11.KeyHandleInvalid,
)


class MasterKeyMissing(MasterKeyError):
    """The token holds no key under the configured label."""


class Pkcs11MasterKey:
    """The KEK port on a PKCS#11 token: AES-256-GCM with the vault's associated data, computed
    on the token by a key that is sensitive and not extractable.

    A master key's id is `hsm-` and its CKA_ID in hex, so a key still opens what it wrapped after
    the configuration moves to a newer key (rotation); the label only names the current one.
    `previous` is a key file from before the move to the module: it still unwraps what it
    wrapped (never wraps) until `rotate-master` has rewrapped everything on the token.
    """

    def __init__(
        self,
        module: Path,
        token: str,
        label: str,
        pin: str,
        suite: Suite,
        *,
        previous: LocalKeyFile | None = None,
    ):
        if suite is not Suite.STANDARD:
            # PKCS#11 has no standard SM4 mechanism, and SoftHSM has none at all.
            raise MasterKeyError(
                f"a PKCS#11 master key works with ANBANG_CRYPTO_SUITE=standard only, not {suite}"
            )
        self.module = module
        self.token_label = token
        self.label = label
        self._pin = pin
        self.suite = suite
        self._lock = threading.Lock()
        self._session: Any = None
        self._keys: dict[str, Any] = {}
        self._current = ""
        self._previous = previous

    def __repr__(self) -> str:
        return f"Pkcs11MasterKey(module={self.module}, token={self.token_label}, key={self.label})"

    @property
    def where(self) -> str:
        return f"token {self.token_label!r} (module {self.module})"

    # --- session --------------------------------------------------------------------------

    def _open(self) -> None:
        if not self.module.is_file():
            raise MasterKeyError(
                f"the PKCS#11 module {self.module} does not exist: install the HSM's library "
                "or fix module= in ANBANG_MASTER_KEY"
            )
        try:
            library = pkcs11.lib(str(self.module))
        except p11.PKCS11Error as exc:
            raise MasterKeyError(
                f"the PKCS#11 module {self.module} cannot be loaded ({exc}): is it the HSM "
                "vendor's PKCS#11 library, and its configuration readable?"
            ) from None
        try:
            token = library.get_token(token_label=self.token_label)
        except p11.NoSuchToken:
            raise MasterKeyError(
                f"no token labelled {self.token_label!r} in {self.module}: fix token= in "
                "ANBANG_MASTER_KEY or initialise the token (docs/operations.md, key ceremony)"
            ) from None
        except p11.MultipleTokensReturned:
            raise MasterKeyError(
                f"more than one token is labelled {self.token_label!r} in {self.module}: "
                "give each token its own label"
            ) from None
        try:
            self._session = token.open(rw=True, user_pin=self._pin)
        except p11.UserAlreadyLoggedIn:
            # Another session of this process logged in (the PIN was checked then): this one
            # shares that login, and closing it will not log the other out.
            self._session = token.open(rw=True)
        except (p11.PinIncorrect, p11.PinInvalid, p11.PinLenRange):
            raise MasterKeyError(
                f"the user PIN of {self.where} is wrong: fix ANBANG_PKCS11_PIN_FILE or "
                "ANBANG_PKCS11_PIN (repeated wrong PINs lock the token)"
            ) from None
        except p11.PinLocked:
            raise MasterKeyError(
                f"the user PIN of {self.where} is locked: the token's security officer must "
                "reset it"
            ) from None
        except p11.UserPinNotInitialized:
            raise MasterKeyError(
                f"{self.where} has no user PIN yet: the security officer sets it first"
            ) from None
        except p11.PKCS11Error as exc:
            raise MasterKeyError(f"cannot log in to {self.where}: {type(exc).__name__}") from None
        self._keys = {}

    def _with_session(self, operation: Callable[[], _T]) -> _T:
        with self._lock:
            if self._session is None:
                self._open()
            try:
                return operation()
            except _LOST_SESSION:
                self._close()
                self._open()
                return operation()

    def close(self) -> None:
        with self._lock:
            self._close()

    def _close(self) -> None:
        session, self._session, self._keys = self._session, None, {}
        if session is not None:
            # The module may have dropped it already.
            with contextlib.suppress(p11.PKCS11Error):
                session.close()

    # --- keys on the token ----------------------------------------------------------------

    def load(self) -> None:
        """Log in and find the current master key; refuse one that could leave the token."""
        self._current = self._with_session(self._find_current)

    def _find_current(self) -> str:
        try:
            key = self._session.get_key(object_class=ObjectClass.SECRET_KEY, label=self.label)
        except p11.NoSuchKey:
            raise MasterKeyMissing(
                f"{self.where} holds no key labelled {self.label!r}: create it in the key "
                "ceremony (`python -m server admin keys hsm-create`) or fix object= in "
                "ANBANG_MASTER_KEY"
            ) from None
        except p11.MultipleObjectsReturned:
            raise MasterKeyError(
                f"{self.where} holds more than one key labelled {self.label!r}"
            ) from None
        kek_id = self._check(key, f"the key labelled {self.label!r}")
        self._keys[kek_id] = key
        return kek_id

    def _check(self, key: Any, name: str) -> str:
        if key.key_type is not KeyType.AES or key[Attribute.VALUE_LEN] * 8 != KEK_BITS:
            raise MasterKeyError(f"{name} on {self.where} is not an AES-256 key")
        if key[Attribute.EXTRACTABLE] or not key[Attribute.SENSITIVE]:
            raise MasterKeyError(
                f"{name} on {self.where} can leave the token (CKA_EXTRACTABLE true or "
                "CKA_SENSITIVE false): create a new one with `python -m server admin keys "
                "hsm-create` and rotate to it"
            )
        if not (key[Attribute.ENCRYPT] and key[Attribute.DECRYPT]):
            raise MasterKeyError(f"{name} on {self.where} may not encrypt and decrypt")
        raw_id = key[Attribute.ID]
        if not raw_id:
            raise MasterKeyError(f"{name} on {self.where} has no CKA_ID to name it by")
        return KEK_PREFIX + bytes(raw_id).hex()

    def create(self) -> str:
        """The key ceremony's step on the token: a new AES-256 key under the configured label,
        generated inside the module. Never replaces a key that holds the label."""

        def generate() -> str:
            existing = list(
                self._session.get_objects(
                    {Attribute.CLASS: ObjectClass.SECRET_KEY, Attribute.LABEL: self.label}
                )
            )
            if existing:
                raise MasterKeyError(
                    f"{self.where} already holds a key labelled {self.label!r}; a master key is "
                    "never replaced: choose a new label for a rotation"
                )
            key = self._session.generate_key(
                KeyType.AES,
                KEK_BITS,
                id=secrets.token_bytes(8),
                label=self.label,
                store=True,
                template=KEK_TEMPLATE,
            )
            kek_id = self._check(key, f"the new key {self.label!r}")
            self._keys[kek_id] = key
            return kek_id

        self._current = self._with_session(generate)
        return self._current

    @property
    def current_id(self) -> str:
        return self._current

    @property
    def key_ids(self) -> list[str]:
        """Every master key on the token (the current one and those kept for older wrappings)."""

        def listing() -> list[str]:
            keys = self._session.get_objects(
                {Attribute.CLASS: ObjectClass.SECRET_KEY, Attribute.KEY_TYPE: KeyType.AES}
            )
            return [
                KEK_PREFIX + bytes(key[Attribute.ID]).hex() for key in keys if key[Attribute.ID]
            ]

        previous = self._previous.key_ids if self._previous else []
        return self._with_session(listing) + previous

    def _key(self, kek_id: str) -> Any:
        key = self._keys.get(kek_id)
        if key is not None:
            return key
        try:
            raw_id = bytes.fromhex(kek_id.removeprefix(KEK_PREFIX))
        except ValueError:
            raw_id = b""
        if not kek_id.startswith(KEK_PREFIX) or not raw_id:
            raise MasterKeyError(
                f"master key {kek_id} is not on a PKCS#11 token: it is a key file's; set "
                "ANBANG_MASTER_KEY_FILE to that file until `rotate-master` has moved its keys"
            )
        try:
            key = self._session.get_key(object_class=ObjectClass.SECRET_KEY, id=raw_id)
        except p11.NoSuchKey:
            raise MasterKeyError(f"master key {kek_id} is not on {self.where}") from None
        except p11.MultipleObjectsReturned:
            raise MasterKeyError(f"{self.where} holds more than one key {kek_id}") from None
        self._check(key, f"master key {kek_id}")
        self._keys[kek_id] = key
        return key

    def retire(self, kek_id: str) -> None:
        """Destroy an older master key on the token (irreversible: whatever it wrapped is gone)."""
        if kek_id == self._current:
            raise MasterKeyError("the current master key cannot be retired")
        if not kek_id.startswith(KEK_PREFIX):
            raise MasterKeyError(
                f"{kek_id} is not on the token: once no key is wrapped by it, shred the old key "
                "file (docs/operations.md)"
            )

        def destroy() -> None:
            self._key(kek_id).destroy()
            self._keys.pop(kek_id, None)

        self._with_session(destroy)

    # --- the port -------------------------------------------------------------------------

    def wrap(self, key: bytes, aad: bytes) -> tuple[str, bytes]:
        kek_id = self._current
        if not kek_id:
            raise MasterKeyError(f"the master key on {self.where} is not loaded")
        nonce = os.urandom(NONCE_BYTES)

        def encrypt() -> bytes:
            return self._key(kek_id).encrypt(
                key, mechanism=Mechanism.AES_GCM, mechanism_param=GCMParams(nonce, aad)
            )

        return kek_id, nonce + self._with_session(encrypt)

    def unwrap(self, kek_id: str, wrapped: bytes, aad: bytes) -> bytes:
        if self._previous is not None and not kek_id.startswith(KEK_PREFIX):
            return self._previous.unwrap(kek_id, wrapped, aad)
        nonce, sealed = wrapped[:NONCE_BYTES], wrapped[NONCE_BYTES:]

        def decrypt() -> bytes:
            master = self._key(kek_id)
            try:
                return bytes(
                    master.decrypt(
                        sealed, mechanism=Mechanism.AES_GCM, mechanism_param=GCMParams(nonce, aad)
                    )
                )
            except (
                p11.EncryptedDataInvalid,
                p11.EncryptedDataLenRange,
                p11.DataInvalid,
                p11.DataLenRange,
                # SoftHSM answers a tag that does not verify with CKR_GENERAL_ERROR.
                p11.GeneralError,
            ):
                raise CryptoError("the wrapped key does not authenticate") from None

        return self._with_session(decrypt)

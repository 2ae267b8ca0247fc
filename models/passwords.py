"""Staff passwords: argon2id hashing off the event loop, and the password policy."""

from __future__ import annotations

import asyncio
import functools
import unicodedata
from dataclasses import dataclass
from importlib import resources

from argon2 import PasswordHasher as Argon2Hasher
from argon2 import Type
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from models.errors import InvalidInput

MIN_LENGTH = 10
MAX_LENGTH = 128


@dataclass(frozen=True)
class HashCost:
    """argon2id parameters; the default is RFC 9106's second recommended (low-memory) option."""

    time_cost: int = 3
    memory_kib: int = 64 * 1024
    parallelism: int = 4


# Only for tests: the same algorithm with small costs, so a suite can create many accounts.
TEST_COST = HashCost(time_cost=1, memory_kib=8 * 1024, parallelism=1)


@functools.cache
def _common_passwords() -> frozenset[str]:
    text = resources.files("models").joinpath("data/common_passwords.txt").read_text("utf-8")
    return frozenset(
        line.strip().lower() for line in text.splitlines() if line.strip() and line[0] != "#"
    )


def check_password_policy(password: str, username: str | None = None) -> None:
    """Raise InvalidInput naming the field when `password` is too weak."""
    normalised = unicodedata.normalize("NFKC", password)
    problem = None
    if len(normalised) < MIN_LENGTH:
        problem = f"at least {MIN_LENGTH} characters"
    elif len(normalised) > MAX_LENGTH:
        problem = f"at most {MAX_LENGTH} characters"
    elif normalised.lower() in _common_passwords():
        problem = "not one of the most common passwords"
    elif len(set(normalised)) < 4:
        problem = "more than three distinct characters"
    elif username and len(username) >= 3 and username.lower() in normalised.lower():
        problem = "not contain the username"
    if problem:
        raise InvalidInput(
            f"The password must be {problem}.",
            details=[{"field": "password", "type": "weak_password", "message": problem}],
            code="weak_password",
        )


class PasswordHasher:
    """Hashes and verifies in worker threads (argon2 releases the GIL), at most `concurrency` at a
    time so a login flood cannot exhaust memory (each hash holds `memory_kib`)."""

    def __init__(self, cost: HashCost = HashCost(), concurrency: int = 2):
        self._argon = Argon2Hasher(
            time_cost=cost.time_cost,
            memory_cost=cost.memory_kib,
            parallelism=cost.parallelism,
            type=Type.ID,
        )
        self._slots = asyncio.Semaphore(concurrency)
        self._dummy: str | None = None

    async def hash(self, password: str) -> str:
        async with self._slots:
            return await asyncio.to_thread(self._argon.hash, password)

    async def verify(self, stored_hash: str | None, password: str) -> bool:
        """Whether `password` matches; with no stored hash (an unknown user) it still spends the
        same time on a dummy hash, so timing does not tell whether an account exists."""
        if stored_hash is None:
            if self._dummy is None:
                self._dummy = await self.hash("anbang-dummy-password-for-timing")
            stored_hash = self._dummy
            password = password + "\x00never-matches"
        async with self._slots:
            try:
                return await asyncio.to_thread(self._argon.verify, stored_hash, password)
            except (VerifyMismatchError, VerificationError, InvalidHashError):
                return False

    def needs_rehash(self, stored_hash: str) -> bool:
        return self._argon.check_needs_rehash(stored_hash)

"""Attempt limits: attempts per address, and failed logins per account name (unknown names too)
from each address and from all addresses together."""

from __future__ import annotations

import datetime as dt
import hashlib
import math
from dataclasses import dataclass

from pymongo import ASCENDING, IndexModel

from models.clock import Clock
from models.errors import Locked, RateLimited
from models.store import CollectionSpec, Store, upsert_one
from models.telemetry import NullTelemetry, SignInObserver

THROTTLES = CollectionSpec(
    "throttles",
    (IndexModel([("expires_at", ASCENDING)], expireAfterSeconds=0),),
)


@dataclass(frozen=True)
class ThrottleRules:
    # A login name locks after this many failures in the window, for the address they came from
    # only (`check_login`): one address cannot lock an officer out of their own.
    failures_before_lock: int = 5
    failure_window: dt.timedelta = dt.timedelta(minutes=15)
    lock_for: dt.timedelta = dt.timedelta(minutes=15)
    attempts_per_address: int = 30
    address_window: dt.timedelta = dt.timedelta(minutes=1)
    # ...and for every address once this many failures came in the window from all of them: a
    # guess spread over many addresses is capped too. One address locks itself out of the name
    # after `failures_before_lock`, so it alone can never reach this number.
    failures_before_name_lock: int = 20


def _key(kind: str, value: str) -> str:
    # Hashed so the collection holds no usernames or addresses in the clear.
    return kind + ":" + hashlib.sha256(value.encode("utf-8")).hexdigest()


def _pair(name: str, address: str) -> str:
    # A newline never appears in a normalised name or an address: the pair is unambiguous.
    return name + "\n" + address


class ThrottleService:
    collections = (THROTTLES,)
    # Where refusals and lockouts are reported (the process's metrics); nowhere by default.
    _observer: SignInObserver = NullTelemetry()

    def __init__(self, store: Store, clock: Clock, rules: ThrottleRules = ThrottleRules()):
        self._docs = store.collection(THROTTLES)
        self._clock = clock
        self.rules = rules

    def report_to(self, observer: SignInObserver) -> None:
        self._observer = observer

    def refused(self, scope: str, reason: str) -> None:
        """Report a refusal decided elsewhere (a WeChat login code that does not exist)."""
        self._observer.sign_in_refused(scope, reason)

    async def count_address_attempt(self, scope: str, address: str) -> None:
        """Count one attempt from `address`; raise RateLimited past the limit for the window."""
        now = self._clock.now()
        window = self.rules.address_window.total_seconds()
        slot = math.floor(now.timestamp() / window)
        window_end = dt.datetime.fromtimestamp((slot + 1) * window, dt.UTC)
        doc = await upsert_one(
            self._docs,
            {"_id": _key(f"{scope}-addr-{slot}", address)},
            {"$inc": {"count": 1}, "$setOnInsert": {"expires_at": window_end}},
        )
        if doc["count"] > self.rules.attempts_per_address:
            self._observer.sign_in_refused(scope, "rate_limited")
            raise RateLimited(retry_after=max(1, math.ceil((window_end - now).total_seconds())))

    async def check_account(self, scope: str, name: str) -> None:
        """Raise Locked while the account name is locked."""
        await self._check(scope, [_key(f"{scope}-acct", name)])

    async def record_failure(self, scope: str, name: str) -> bool:
        """Count a failure for the account name; True when this failure locked it."""
        locked = await self._fail(_key(f"{scope}-acct", name), self.rules.failures_before_lock)
        self._failed(scope, locked)
        return locked

    async def clear_account(self, scope: str, name: str) -> None:
        await self._docs.delete_one({"_id": _key(f"{scope}-acct", name)})

    async def check_login(self, scope: str, name: str, address: str) -> None:
        """Raise Locked while the name is locked for `address`, or for every address."""
        await self._check(
            scope, [_key(f"{scope}-from", _pair(name, address)), _key(f"{scope}-name", name)]
        )

    async def record_login_failure(self, scope: str, name: str, address: str) -> bool:
        """Count a failed login of `name` from `address`; True when it locked the name there or
        everywhere."""
        here = await self._fail(
            _key(f"{scope}-from", _pair(name, address)), self.rules.failures_before_lock
        )
        everywhere = await self._fail(
            _key(f"{scope}-name", name), self.rules.failures_before_name_lock
        )
        self._failed(scope, here or everywhere)
        return here or everywhere

    def _failed(self, scope: str, locked: bool) -> None:
        self._observer.sign_in_refused(scope, "failed")
        if locked:
            self._observer.sign_in_locked(scope)

    async def clear_login(self, scope: str, name: str, address: str) -> None:
        """A login succeeded from `address`: its failures there are forgiven. Those from other
        addresses stand until their window passes (they were not the officer's)."""
        await self._docs.delete_one({"_id": _key(f"{scope}-from", _pair(name, address))})

    async def _check(self, scope: str, keys: list[str]) -> None:
        now = self._clock.now()
        docs = await self._docs.find({"_id": {"$in": keys}}).to_list(len(keys))
        until = max((d["locked_until"] for d in docs if d.get("locked_until")), default=None)
        if until is not None and until > now:
            self._observer.sign_in_refused(scope, "locked")
            raise Locked(details={"retry_after": math.ceil((until - now).total_seconds())})

    async def _fail(self, key: str, keep: int) -> bool:
        now = self._clock.now()
        doc = await upsert_one(
            self._docs,
            {"_id": key},
            {
                "$push": {"failures": {"$each": [now], "$slice": -keep}},
                "$set": {"expires_at": now + self.rules.failure_window + self.rules.lock_for},
            },
        )
        recent = [t for t in doc["failures"] if t > now - self.rules.failure_window]
        if len(recent) >= keep:
            await self._docs.update_one(
                {"_id": doc["_id"]},
                {"$set": {"locked_until": now + self.rules.lock_for, "failures": []}},
            )
            return True
        return False

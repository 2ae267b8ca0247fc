"""Leases against the real embedded database: one holder at a time, renewal, expiry, hand-over."""

from __future__ import annotations

import asyncio
import datetime as dt
import uuid
from dataclasses import dataclass

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from models.clock import FixedClock
from models.leases import LeaseService
from models.store import DatabaseSettings, Store

START = dt.datetime(2026, 11, 24, 8, 0, tzinfo=dt.UTC)
TTL = dt.timedelta(seconds=45)


@pytest.fixture
def clock() -> FixedClock:
    return FixedClock(START)


@pytest.fixture
def leases(store: Store, clock: FixedClock) -> LeaseService:
    return LeaseService(store, clock)


async def test_a_holder_acquires_and_renews(leases, clock):
    assert await leases.holder("jobs") is None
    assert await leases.acquire("jobs", "alpha", TTL)
    assert await leases.holder("jobs") == "alpha"

    # Renewing just before expiry extends the lease by a whole TTL from the renewal.
    clock.advance(TTL - dt.timedelta(seconds=1))
    assert await leases.acquire("jobs", "alpha", TTL)
    clock.advance(TTL - dt.timedelta(seconds=1))
    assert await leases.holder("jobs") == "alpha"
    assert not await leases.acquire("jobs", "beta", TTL)


async def test_a_second_holder_is_refused_while_the_lease_is_live(leases, clock):
    assert await leases.acquire("jobs", "alpha", TTL)
    assert not await leases.acquire("jobs", "beta", TTL)
    clock.advance(TTL - dt.timedelta(milliseconds=1))
    assert not await leases.acquire("jobs", "beta", TTL)
    assert await leases.holder("jobs") == "alpha"


async def test_a_second_holder_takes_over_once_the_lease_has_expired(leases, clock):
    assert await leases.acquire("jobs", "alpha", TTL)
    clock.advance(TTL)
    assert await leases.holder("jobs") is None
    assert await leases.acquire("jobs", "beta", TTL)
    assert await leases.holder("jobs") == "beta"
    # The old holder comes back (a long pause, a network partition): it has lost the lease.
    assert not await leases.acquire("jobs", "alpha", TTL)
    assert await leases.holder("jobs") == "beta"


async def test_an_expired_holder_may_take_its_own_lease_back(leases, clock):
    assert await leases.acquire("jobs", "alpha", TTL)
    clock.advance(TTL * 3)
    assert await leases.acquire("jobs", "alpha", TTL)
    assert await leases.holder("jobs") == "alpha"


async def test_release_hands_over_at_once(leases, clock):
    assert await leases.acquire("jobs", "alpha", TTL)
    await leases.release("jobs", "alpha")
    assert await leases.holder("jobs") is None
    # Same instant: no waiting for the TTL.
    assert await leases.acquire("jobs", "beta", TTL)
    assert await leases.holder("jobs") == "beta"


async def test_only_the_holder_can_release(leases, clock):
    assert await leases.acquire("jobs", "alpha", TTL)
    await leases.release("jobs", "beta")
    assert await leases.holder("jobs") == "alpha"
    assert not await leases.acquire("jobs", "beta", TTL)


async def test_releasing_a_lease_no_one_holds_does_nothing(leases):
    await leases.release("jobs", "alpha")
    assert await leases.holder("jobs") is None
    assert await leases.acquire("jobs", "alpha", TTL)


async def test_leases_with_different_names_are_independent(leases):
    assert await leases.acquire("jobs", "alpha", TTL)
    assert await leases.acquire("token-refresh", "beta", TTL)
    assert await leases.holder("jobs") == "alpha"
    assert await leases.holder("token-refresh") == "beta"


async def test_processes_with_their_own_clients_see_the_same_lease(store, config, clock):
    # Two processes never share a client: give the second its own connection pool.
    other_store = Store.connect(
        DatabaseSettings(uri=config.database_uri, name=config.db_name, production=False)
    )
    try:
        first = LeaseService(store, clock)
        second = LeaseService(other_store, clock)
        assert await first.acquire("jobs", "alpha", TTL)
        assert not await second.acquire("jobs", "beta", TTL)
        assert await second.holder("jobs") == "alpha"
        await first.release("jobs", "alpha")
        assert await second.acquire("jobs", "beta", TTL)
        assert await first.holder("jobs") == "beta"
    finally:
        await other_store.close()


# --- concurrency: many acquirers at the same moment --------------------------------------------

CONTENDERS = 16


async def contend(store: Store, config, clock: FixedClock) -> list[bool]:
    """CONTENDERS holders, half of them on a second client, all acquiring at the same moment."""
    other_store = Store.connect(
        DatabaseSettings(uri=config.database_uri, name=config.db_name, production=False)
    )
    try:
        services = [LeaseService(store, clock), LeaseService(other_store, clock)]
        return list(
            await asyncio.gather(
                *(services[i % 2].acquire("jobs", f"holder-{i}", TTL) for i in range(CONTENDERS))
            )
        )
    finally:
        await other_store.close()


async def test_concurrent_acquirers_of_a_new_lease_yield_exactly_one_holder(store, config, clock):
    for round_ in range(5):
        results = await contend(store, config, clock)
        assert results.count(True) == 1, f"round {round_}: {results}"
        winner = f"holder-{results.index(True)}"
        assert await LeaseService(store, clock).holder("jobs") == winner
        await LeaseService(store, clock).release("jobs", winner)


async def test_concurrent_acquirers_of_an_expired_lease_yield_exactly_one_holder(
    store, config, clock
):
    leases = LeaseService(store, clock)
    for round_ in range(5):
        assert await leases.acquire("jobs", "old-holder", TTL)
        clock.advance(TTL + dt.timedelta(seconds=1))
        results = await contend(store, config, clock)
        assert results.count(True) == 1, f"round {round_}: {results}"
        winner = f"holder-{results.index(True)}"
        assert await leases.holder("jobs") == winner
        await leases.release("jobs", winner)


# --- a model of the lease, checked against the real thing ---------------------------------------


@dataclass
class ModelLease:
    holder: str | None = None
    expires_at: dt.datetime | None = None

    def acquire(self, holder: str, now: dt.datetime) -> bool:
        if self.holder in (None, holder) or (
            self.expires_at is not None and self.expires_at <= now
        ):
            self.holder, self.expires_at = holder, now + TTL
            return True
        return False

    def release(self, holder: str) -> None:
        if self.holder == holder:
            self.holder = self.expires_at = None

    def current(self, now: dt.datetime) -> str | None:
        if self.holder is None or self.expires_at is None or self.expires_at <= now:
            return None
        return self.holder


HOLDERS = st.sampled_from(["alpha", "beta", "gamma"])
STEPS = st.lists(
    st.one_of(
        st.tuples(st.just("acquire"), HOLDERS),
        st.tuples(st.just("release"), HOLDERS),
        # Whole milliseconds: the database keeps times to the millisecond.
        st.tuples(
            st.just("advance"),
            st.one_of(
                # Right at, just before and just after expiry, where an off-by-one would hide.
                st.sampled_from([0, 1, 44_999, 45_000, 45_001]),
                st.integers(min_value=0, max_value=100_000),
            ),
        ),
    ),
    min_size=1,
    max_size=25,
)


@settings(
    max_examples=100,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(steps=STEPS)
async def test_the_lease_behaves_like_its_model(store, steps):
    clock = FixedClock(START)
    leases = LeaseService(store, clock)
    name = f"lease-{uuid.uuid4().hex}"  # a fresh lease for each example
    model = ModelLease()
    for action, argument in steps:
        if action == "acquire":
            expected = model.acquire(argument, clock.now())
            assert await leases.acquire(name, argument, TTL) is expected, (action, argument)
        elif action == "release":
            model.release(argument)
            await leases.release(name, argument)
        else:
            clock.advance(dt.timedelta(milliseconds=argument))
        assert await leases.holder(name) == model.current(clock.now())

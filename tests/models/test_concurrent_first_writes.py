"""First writes of one record that race (a double tap, logins at once from one address) each
count, and none fails."""

from __future__ import annotations

import asyncio

import pytest

from models.errors import RateLimited
from models.store import Store
from models.throttle import ThrottleRules, ThrottleService

RACERS = 8


async def test_racing_attempts_from_a_new_address_are_each_counted(store: Store, clock) -> None:
    throttle = ThrottleService(store, clock, ThrottleRules(attempts_per_address=3 * RACERS))
    for round_ in range(5):
        address = f"198.51.100.{round_}"
        await asyncio.gather(
            *(throttle.count_address_attempt("login", address) for _ in range(RACERS))
        )
        await asyncio.gather(
            *(throttle.count_address_attempt("login", address) for _ in range(2 * RACERS))
        )
        with pytest.raises(RateLimited):
            await throttle.count_address_attempt("login", address)


async def test_racing_failures_of_a_new_account_each_count_towards_its_lock(
    store: Store, clock
) -> None:
    throttle = ThrottleService(store, clock, ThrottleRules(failures_before_lock=RACERS))
    locked = await asyncio.gather(
        *(throttle.record_failure("login", "racer") for _ in range(RACERS))
    )
    assert locked.count(True) >= 1


async def test_racing_consents_of_a_new_user_each_grant_one_message(services) -> None:
    consents = services.consents
    await asyncio.gather(
        *(
            consents.accept_templates(None, "user-race", ["tmpl-a"], long_term=False)
            for _ in range(RACERS)
        )
    )
    assert (await consents.state("user-race")).one_time == {"tmpl-a": RACERS}

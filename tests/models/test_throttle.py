"""Login limits per name from each address and from all addresses together."""

from __future__ import annotations

import datetime as dt

import pytest

from models.errors import Locked
from models.store import Store
from models.throttle import ThrottleRules, ThrottleService


async def fail_unless_locked(throttle: ThrottleService, name: str, address: str) -> bool:
    """One guess as the login makes it: refused unheard while locked, else a counted failure."""
    try:
        await throttle.check_login("login", name, address)
    except Locked:
        return False
    await throttle.record_login_failure("login", name, address)
    return True


async def test_a_name_locked_from_one_address_is_open_from_another(store: Store, clock) -> None:
    throttle = ThrottleService(store, clock)
    for _ in range(5):
        assert await fail_unless_locked(throttle, "wang.li", "203.0.113.7")
    with pytest.raises(Locked):
        await throttle.check_login("login", "wang.li", "203.0.113.7")
    await throttle.check_login("login", "wang.li", "198.51.100.23")


async def test_one_address_guessing_for_hours_never_locks_the_name_elsewhere(
    store: Store, clock
) -> None:
    throttle = ThrottleService(store, clock)
    heard = 0
    for _ in range(6 * 60):  # a guess a minute for six hours
        heard += await fail_unless_locked(throttle, "wang.li", "203.0.113.7")
        await throttle.check_login("login", "wang.li", "198.51.100.23")
        clock.advance(dt.timedelta(minutes=1))
    assert heard <= 5 * (6 * 60 // 15)  # five guesses, then a quarter of an hour locked


async def test_guesses_spread_over_many_addresses_lock_the_name_everywhere(
    store: Store, clock
) -> None:
    throttle = ThrottleService(store, clock, ThrottleRules(failures_before_name_lock=20))
    for i in range(19):
        assert await throttle.record_login_failure("login", "wang.li", f"10.0.{i}.1") is False
    assert await throttle.record_login_failure("login", "wang.li", "10.0.19.1") is True
    with pytest.raises(Locked):
        await throttle.check_login("login", "wang.li", "198.51.100.23")
    clock.advance(dt.timedelta(minutes=15, seconds=1))
    await throttle.check_login("login", "wang.li", "198.51.100.23")

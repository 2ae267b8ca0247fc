"""Staff login, lockouts, address limits, TOTP, sessions, password changes and binding codes."""

from __future__ import annotations

import dataclasses
import datetime as dt

import pytest

from models import totp
from models.policy import Role
from models.throttle import ThrottleRules

LOGIN = "/api/v1/auth/login"


@pytest.fixture
async def officer(tree, make_staff):
    return await make_staff(Role.STATION_OFFICER, tree.station)


async def login(fetch, username, password, code=None):
    body = {"username": username, "password": password}
    if code is not None:
        body["totp"] = code
    return await fetch(LOGIN, "POST", json_body=body)


async def test_login_gives_a_token_that_identifies_the_caller(fetch, officer):
    answer = await login(fetch, officer.username, officer.password)
    assert answer.status == 200
    assert answer.json["user"] == {
        "id": officer.id,
        "role": "station_officer",
        "org_id": officer.org.id,
    }
    assert len(answer.json["token"]) >= 43  # 256 bits, URL-safe base64
    me = await fetch("/api/v1/me", token=answer.json["token"])
    assert me.status == 200
    assert me.json["username"] == officer.username
    assert "password_hash" not in me.json and "totp_secret" not in me.json


async def test_username_is_case_insensitive(fetch, officer):
    answer = await login(fetch, officer.username.upper(), officer.password)
    assert answer.status == 200


async def test_wrong_password_and_unknown_user_get_the_same_answer(fetch, officer):
    wrong = await login(fetch, officer.username, "Wrong-password-1")
    unknown = await login(fetch, "nobody-here", "Wrong-password-1")
    assert wrong.status == unknown.status == 401
    assert wrong.error["code"] == unknown.error["code"] == "invalid_credentials"
    assert wrong.error["message"] == unknown.error["message"]


async def test_five_failures_lock_an_account_for_fifteen_minutes(fetch, officer, clock):
    for _ in range(5):
        assert (await login(fetch, officer.username, "Wrong-password-1")).status == 401
    locked = await login(fetch, officer.username, officer.password)
    assert locked.status == 423
    assert locked.error["code"] == "locked"
    clock.advance(dt.timedelta(minutes=14, seconds=59))
    assert (await login(fetch, officer.username, officer.password)).status == 423
    clock.advance(dt.timedelta(seconds=2))
    assert (await login(fetch, officer.username, officer.password)).status == 200


async def test_unknown_names_lock_exactly_like_real_ones(fetch, officer):
    real, ghost = [], []
    for _ in range(6):
        real.append(await login(fetch, officer.username, "Wrong-password-1"))
        ghost.append(await login(fetch, "ghost-account", "Wrong-password-1"))
    assert [a.status for a in real] == [a.status for a in ghost] == [401] * 5 + [423]
    assert [a.error for a in real][-1].keys() == [a.error for a in ghost][-1].keys()
    assert real[-1].error["message"] == ghost[-1].error["message"]


async def test_failures_spread_beyond_the_window_do_not_lock(fetch, officer, clock):
    for _ in range(4):
        await login(fetch, officer.username, "Wrong-password-1")
    clock.advance(dt.timedelta(minutes=16))
    await login(fetch, officer.username, "Wrong-password-1")
    assert (await login(fetch, officer.username, officer.password)).status == 200


async def test_thirty_attempts_a_minute_from_one_address_then_429(fetch, officer, clock):
    # Spread over names so no account locks: the address limit alone must stop them.
    statuses = [(await login(fetch, f"user{i:02d}", "Wrong-password-1")).status for i in range(30)]
    assert set(statuses) == {401}
    limited = await login(fetch, officer.username, officer.password)
    assert limited.status == 429
    assert 1 <= int(limited.headers["Retry-After"]) <= 60
    clock.advance(dt.timedelta(seconds=61))
    assert (await login(fetch, officer.username, officer.password)).status == 200


async def test_disabled_account_cannot_log_in_and_its_tokens_stop(
    fetch, services, officer, tree, make_staff
):
    admin = await make_staff(Role.SYS_ADMIN, tree.county)
    token = (await login(fetch, officer.username, officer.password)).json["token"]
    admin_token = await make_staff.token_for(admin)
    disabled = await fetch(f"/api/v1/staff/{officer.id}/disable", "POST", token=admin_token)
    assert disabled.status == 200 and disabled.json["disabled"] is True
    assert (await fetch("/api/v1/me", token=token)).status == 401
    again = await login(fetch, officer.username, officer.password)
    assert again.status == 401 and again.error["code"] == "invalid_credentials"


async def test_logout_ends_the_token(fetch, officer):
    token = (await login(fetch, officer.username, officer.password)).json["token"]
    assert (await fetch("/api/v1/auth/logout", "POST", token=token)).status == 204
    after = await fetch("/api/v1/me", token=token)
    assert after.status == 401
    assert after.error["code"] == "invalid_token"


async def test_idle_sessions_expire_after_thirty_minutes(fetch, officer, clock):
    token = (await login(fetch, officer.username, officer.password)).json["token"]
    clock.advance(dt.timedelta(minutes=29))
    assert (await fetch("/api/v1/me", token=token)).status == 200
    clock.advance(dt.timedelta(minutes=29))
    assert (await fetch("/api/v1/me", token=token)).status == 200  # activity keeps it alive
    clock.advance(dt.timedelta(minutes=30, seconds=1))
    assert (await fetch("/api/v1/me", token=token)).status == 401


async def test_sessions_end_after_twelve_hours_whatever_the_activity(fetch, officer, clock):
    answer = await login(fetch, officer.username, officer.password)
    token = answer.json["token"]
    expires = dt.datetime.fromisoformat(answer.json["expires_at"])
    assert expires - clock.now() == dt.timedelta(hours=12)
    for _ in range(25):
        clock.advance(dt.timedelta(minutes=29, seconds=59))
        status = (await fetch("/api/v1/me", token=token)).status
        if clock.now() < expires:
            assert status == 200
    assert clock.now() >= expires
    assert (await fetch("/api/v1/me", token=token)).status == 401


async def test_garbage_and_missing_tokens_are_401(fetch):
    assert (await fetch("/api/v1/me")).status == 401
    assert (await fetch("/api/v1/me", headers={"Authorization": "Bearer x" * 300})).status == 401
    assert (await fetch("/api/v1/me", headers={"Authorization": "Basic abc"})).status == 401
    # A bad token on a public route is ignored rather than refused.
    assert (await fetch("/healthz", headers={"Authorization": "Bearer nope"})).status == 200


async def test_password_change_revokes_every_session(fetch, officer):
    first = (await login(fetch, officer.username, officer.password)).json["token"]
    second = (await login(fetch, officer.username, officer.password)).json["token"]
    new_password = "Another-good-pass-42"
    changed = await fetch(
        "/api/v1/me/password",
        "POST",
        token=first,
        json_body={"current_password": officer.password, "new_password": new_password},
    )
    assert changed.status == 204
    assert (await fetch("/api/v1/me", token=first)).status == 401
    assert (await fetch("/api/v1/me", token=second)).status == 401
    assert (await login(fetch, officer.username, officer.password)).status == 401
    assert (await login(fetch, officer.username, new_password)).status == 200


@pytest.mark.parametrize(
    ("new_password", "problem"),
    [
        ("short-1", "at least 10 characters"),
        ("password123", "not one of the most common passwords"),
        ("aaaaaaaaaaaa", "more than three distinct characters"),
    ],
)
async def test_weak_passwords_are_refused_with_the_field(fetch, officer, new_password, problem):
    token = (await login(fetch, officer.username, officer.password)).json["token"]
    answer = await fetch(
        "/api/v1/me/password",
        "POST",
        token=token,
        json_body={"current_password": officer.password, "new_password": new_password},
    )
    assert answer.status == 422
    assert answer.error["details"][0]["field"] == "password"
    assert answer.error["details"][0]["message"] == problem


async def test_password_containing_the_username_is_refused(fetch, officer):
    token = (await login(fetch, officer.username, officer.password)).json["token"]
    answer = await fetch(
        "/api/v1/me/password",
        "POST",
        token=token,
        json_body={
            "current_password": officer.password,
            "new_password": f"x{officer.username}-2026",
        },
    )
    assert answer.status == 422
    assert answer.error["details"][0]["message"] == "not contain the username"


async def enrol(fetch, clock, token):
    begun = await fetch("/api/v1/me/totp", "POST", token=token)
    assert begun.status == 201
    secret = begun.json["secret"]
    fetch.never_reveal(secret, except_paths=("/api/v1/me/totp",))
    assert begun.json["provisioning_uri"].startswith("otpauth://totp/")
    confirmed = await fetch(
        "/api/v1/me/totp/confirm",
        "POST",
        token=token,
        json_body={"code": totp.code_at(secret, clock.now())},
    )
    assert confirmed.status == 204
    return secret


async def test_totp_enrolment_then_login_needs_the_code(fetch, officer, clock):
    token = (await login(fetch, officer.username, officer.password)).json["token"]
    secret = await enrol(fetch, clock, token)
    clock.advance(dt.timedelta(seconds=30))
    # Without the code, or with a wrong one, the answer is a wrong password's: it never tells
    # a guesser that the password was right.
    bad_password = await login(fetch, officer.username, "Wrong-password-1")
    without = await login(fetch, officer.username, officer.password)
    wrong = await login(fetch, officer.username, officer.password, "000000")
    for refused in (without, wrong):
        assert refused.status == bad_password.status == 401
        assert refused.error["code"] == bad_password.error["code"] == "invalid_credentials"
        assert refused.error["message"] == bad_password.error["message"]
    code = totp.code_at(secret, clock.now())
    assert (await login(fetch, officer.username, officer.password, code)).status == 200
    me = await fetch("/api/v1/me", token=token)
    assert me.json["totp_enrolled"] is True


async def test_a_right_password_without_the_code_counts_towards_the_lock(
    fetch, services, officer, clock
):
    token = (await login(fetch, officer.username, officer.password)).json["token"]
    secret = await enrol(fetch, clock, token)
    clock.advance(dt.timedelta(seconds=30))
    for _ in range(5):
        refused = await login(fetch, officer.username, officer.password)
        assert refused.status == 401 and refused.error["code"] == "invalid_credentials"
    code = totp.code_at(secret, clock.now())
    assert (await login(fetch, officer.username, officer.password, code)).status == 423
    entries = await services.audit.entries_for(officer.id)
    refusals = [e["outcome"] for e in entries if e["action"] == "auth.login"]
    assert refusals.count("refused:totp_missing") == 5


async def test_a_totp_code_is_accepted_once(fetch, officer, clock):
    token = (await login(fetch, officer.username, officer.password)).json["token"]
    secret = await enrol(fetch, clock, token)
    clock.advance(dt.timedelta(seconds=30))
    code = totp.code_at(secret, clock.now())
    assert (await login(fetch, officer.username, officer.password, code)).status == 200
    replay = await login(fetch, officer.username, officer.password, code)
    assert replay.status == 401 and replay.error["code"] == "invalid_credentials"
    # Nor an older code still inside the drift window.
    previous = totp.code_at(secret, clock.now() - dt.timedelta(seconds=30))
    assert (await login(fetch, officer.username, officer.password, previous)).status == 401
    clock.advance(dt.timedelta(seconds=30))
    fresh = totp.code_at(secret, clock.now())
    assert (await login(fetch, officer.username, officer.password, fresh)).status == 200


async def test_enrolment_cannot_be_repeated(fetch, officer, clock):
    token = (await login(fetch, officer.username, officer.password)).json["token"]
    await enrol(fetch, clock, token)
    again = await fetch("/api/v1/me/totp", "POST", token=token)
    assert again.status == 409 and again.error["code"] == "already_enrolled"


async def test_required_totp_restricts_the_session_until_enrolled(
    store, config, clock, vault, tree, make_staff
):
    from models.passwords import TEST_COST
    from server.app import assemble_api
    from tests.conftest import Fetch, serve_runtime

    strict = dataclasses.replace(config, require_totp=True)
    served = await serve_runtime(assemble_api(store, strict, vault, clock, hash_cost=TEST_COST))
    client = Fetch(served.base_url)
    try:
        officer = await make_staff(Role.STATION_OFFICER, tree.station)
        answer = await login(client, officer.username, officer.password)
        assert answer.status == 200
        assert answer.json["required_step"] == "totp_enrolment"
        token = answer.json["token"]
        blocked = await client("/api/v1/staff", token=token)
        assert blocked.status == 403 and blocked.error["code"] == "totp_enrolment_required"
        code = await client("/api/v1/me/binding-code", "POST", token=token)
        assert code.status == 403
        assert (await client("/api/v1/me", token=token)).status == 200
        await enrol(client, clock, token)
        assert (await client("/api/v1/staff", token=token)).status == 200
    finally:
        client.close()
        served.server.stop()


async def test_reset_password_forces_a_change_at_next_login(fetch, officer, tree, make_staff):
    admin = await make_staff(Role.SYS_ADMIN, tree.county)
    admin_token = await make_staff.token_for(admin)
    reset = await fetch(f"/api/v1/staff/{officer.id}/password-reset", "POST", token=admin_token)
    assert reset.status == 200
    temporary = reset.json["temporary_password"]
    answer = await login(fetch, officer.username, temporary)
    assert answer.status == 200 and answer.json["required_step"] == "password_change"
    token = answer.json["token"]
    assert (await fetch("/api/v1/staff", token=token)).status == 403
    changed = await fetch(
        "/api/v1/me/password",
        "POST",
        token=token,
        json_body={"current_password": temporary, "new_password": "Fresh-password-77"},
    )
    assert changed.status == 204
    after = await login(fetch, officer.username, "Fresh-password-77")
    assert after.json["required_step"] is None


async def test_staff_binding_code_is_single_use_material(fetch, officer, clock):
    token = (await login(fetch, officer.username, officer.password)).json["token"]
    first = await fetch("/api/v1/me/binding-code", "POST", token=token)
    assert first.status == 201
    assert len(first.json["code"]) == 8
    expires = dt.datetime.fromisoformat(first.json["expires_at"])
    assert dt.timedelta(0) < expires - clock.now() <= dt.timedelta(minutes=10)
    second = await fetch("/api/v1/me/binding-code", "POST", token=token)
    assert second.json["code"] != first.json["code"]


async def test_login_attempts_are_audited_without_the_password(fetch, services, officer):
    await login(fetch, officer.username, "Wrong-password-1")
    await login(fetch, officer.username, officer.password)
    entries = await services.audit.entries_for(officer.id)
    outcomes = sorted(e["outcome"] for e in entries if e["action"] == "auth.login")
    assert outcomes == ["ok", "refused:invalid_credentials"]
    assert "Wrong-password-1" not in repr(entries) and officer.password not in repr(entries)


def test_default_limits_are_the_documented_ones():
    rules = ThrottleRules()
    assert (rules.failures_before_lock, rules.failure_window, rules.lock_for) == (
        5,
        dt.timedelta(minutes=15),
        dt.timedelta(minutes=15),
    )
    assert (rules.attempts_per_address, rules.address_window) == (30, dt.timedelta(minutes=1))
    assert rules.failures_before_name_lock == 20


async def test_the_totp_secret_rests_encrypted(fetch, officer, clock, store):
    token = (await login(fetch, officer.username, officer.password)).json["token"]
    secret = await enrol(fetch, clock, token)
    doc = await store.database["staff"].find_one({"username": officer.username})
    assert secret not in repr(doc)
    assert secret.encode() not in bytes(doc["totp_secret"])

"""Sessions stay on their side: a WeChat session never reaches the console API, whoever it
belongs to; an unbound WeChat user reaches nothing but binding; a person no worker endpoint."""

from __future__ import annotations

import re

from bson import ObjectId

from models.policy import Role
from tests.handlers.test_access_matrix import CONCEALED, MP_ONLY, protected_operations
from tests.mp_support import enrol, local

GROUP = re.compile(r"\(\?P<[a-z_]+>\[\^/\]\+\)")

CORRECTIONS = {
    "type": "community_corrections",
    "start_date": "2026-11-02",
    "end_date": "2027-11-01",
    "sentence_type": "probation",
}


def concrete(pattern: str) -> str:
    return GROUP.sub(str(ObjectId()), pattern)


async def test_mini_program_sessions_never_reach_the_console_api(
    api, fetch, tree, make_staff, clock, mp_clients
):
    clock.set(local(2026, 11, 2, 8, 0))
    officer = await make_staff.token_for(await make_staff(Role.STATION_OFFICER, tree.station))
    _, person = await enrol(fetch, mp_clients, tree, officer, CORRECTIONS, "channel-person")
    unbound = mp_clients()
    await unbound.login("channel-unbound")
    failures = []
    for pattern, method, action in protected_operations():
        path = concrete(pattern)
        body = {} if method in ("POST", "PUT", "PATCH") else None
        if pattern in MP_ONLY:
            if action == "self":
                continue
            answer = await unbound.call(method, path, body)
            if answer.status != 403 or answer.json["error"]["code"] != "not_bound":
                failures.append(f"unbound {method} {pattern}: {answer.status}")
            if pattern.startswith("/mp/v1/worker/"):
                answer = await person.call(method, path, body)
                if answer.status != 403:
                    failures.append(f"person {method} {pattern}: {answer.status}")
            continue
        for who, client in (("person", person), ("unbound", unbound)):
            answer = await client.call(method, path, body)
            if (pattern, method) in CONCEALED:
                # A photo is concealed from everyone who may not see it: 404, never cached.
                if answer.status != 404 or answer.headers.get("Cache-Control") != "no-store":
                    failures.append(f"{who} {method} {pattern}: {answer.status}")
                continue
            if answer.status != 403 or answer.json["error"]["code"] != "wrong_channel":
                failures.append(f"{who} {method} {pattern}: {answer.status}")
    assert not failures, "\n".join(failures)

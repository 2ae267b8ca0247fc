"""Every route x every role x in-scope / out-of-scope, checked against the running server.

The expected outcome of each case comes from the policy table, not from the test: a role the
table does not name gets 403, an allowed role gets success in scope and 404 outside it, and an
anonymous caller gets 401. A route added without a case here fails the first test.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from models import totp
from models.orgs import Org, OrgKind
from models.policy import PUBLIC, SELF, Policy, Role
from server.app import all_routes
from tests.conftest import Account, StaffFactory, Tree

# The role a node of each kind naturally holds, for targets created in a given node.
ROLE_FOR_KIND = {
    OrgKind.CITY: Role.CITY_OFFICER,
    OrgKind.COUNTY: Role.COUNTY_OFFICER,
    OrgKind.STATION: Role.STATION_OFFICER,
    OrgKind.COMMUNITY: Role.GRID_WORKER,
    OrgKind.GRID: Role.GRID_WORKER,
}
CHILD_KIND = {
    OrgKind.CITY: OrgKind.COUNTY,
    OrgKind.COUNTY: OrgKind.STATION,
    OrgKind.STATION: OrgKind.COMMUNITY,
    OrgKind.COMMUNITY: OrgKind.GRID,
}


@dataclass
class Request:
    path: str
    json_body: Any = None
    body: bytes | None = None
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class Env:
    tree: Tree
    make_staff: StaffFactory
    caller: Account

    def node(self, in_scope: bool) -> Org:
        """A node in the caller's subtree (its own), or the same kind of node elsewhere."""
        if in_scope:
            return self.caller.org
        return self.tree.home_for(self.caller.role, other=True)

    async def target_staff(self, in_scope: bool) -> Account:
        node = self.node(in_scope)
        return await self.make_staff(ROLE_FOR_KIND[node.kind], node)


Builder = Callable[[Env, bool], Awaitable[Request]]


def code() -> str:
    return "T" + uuid.uuid4().hex[:12]


async def new_org(env: Env, in_scope: bool) -> Request:
    parent = env.node(in_scope)
    return Request(
        "/api/v1/orgs",
        {
            "name": "新节点",
            "code": code(),
            "kind": str(CHILD_KIND[parent.kind]),
            "parent_id": parent.id,
        },
    )


async def new_staff(env: Env, in_scope: bool) -> Request:
    node = env.node(in_scope)
    return Request(
        "/api/v1/staff",
        {
            "username": "u" + uuid.uuid4().hex[:10],
            "password": "Matrix-pass-2026",
            "name": "新人",
            "role": str(ROLE_FOR_KIND[node.kind]),
            "org_id": node.id,
        },
    )


async def import_staff(env: Env, in_scope: bool) -> Request:
    node = env.node(in_scope)
    text = (
        "username,name,role,org_code,is_agency_head\n"
        f"u{uuid.uuid4().hex[:10]},导入,{ROLE_FOR_KIND[node.kind]},{node.code},0\n"
    )
    return Request("/api/v1/staff/import", body=text.encode(), headers={"Content-Type": "text/csv"})


def on_staff(suffix: str, body: Callable[[Env, bool], Any] | None = None) -> Builder:
    async def build(env: Env, in_scope: bool) -> Request:
        target = await env.target_staff(in_scope)
        return Request(f"/api/v1/staff/{target.id}{suffix}", body(env, in_scope) if body else None)

    return build


async def one_org(env: Env, in_scope: bool) -> Request:
    return Request(f"/api/v1/orgs/{env.node(in_scope).id}")


def plain(path: str, json_body: Any = None) -> Builder:
    async def build(env: Env, in_scope: bool) -> Request:
        return Request(path, json_body)

    return build


async def change_password(env: Env, in_scope: bool) -> Request:
    return Request(
        "/api/v1/me/password",
        {"current_password": env.caller.password, "new_password": "Changed-pass-2026"},
    )


async def confirm_totp(env: Env, in_scope: bool) -> Request:
    secret, _ = await env.make_staff.services.staff.begin_totp(env.caller.identity)
    clock_now = env.make_staff.services.staff._clock.now()
    return Request("/api/v1/me/totp/confirm", {"code": totp.code_at(secret, clock_now)})


# (path pattern, method) -> (builder, success status, status outside scope or None: no target)
CASES: dict[tuple[str, str], tuple[Builder, int, int | None]] = {
    ("/api/v1/auth/logout", "POST"): (plain("/api/v1/auth/logout"), 204, None),
    ("/api/v1/me", "GET"): (plain("/api/v1/me"), 200, None),
    ("/api/v1/me/password", "POST"): (change_password, 204, None),
    ("/api/v1/me/totp", "POST"): (plain("/api/v1/me/totp"), 201, None),
    ("/api/v1/me/totp/confirm", "POST"): (confirm_totp, 204, None),
    ("/api/v1/me/binding-code", "POST"): (plain("/api/v1/me/binding-code"), 201, None),
    ("/api/v1/orgs", "POST"): (new_org, 201, 404),
    ("/api/v1/orgs", "GET"): (plain("/api/v1/orgs"), 200, None),
    ("/api/v1/orgs/(?P<org_id>[^/]+)", "GET"): (one_org, 200, 404),
    ("/api/v1/staff", "POST"): (new_staff, 201, 404),
    ("/api/v1/staff", "GET"): (plain("/api/v1/staff"), 200, None),
    # A file naming an organisation outside the caller's scope is refused as a whole.
    ("/api/v1/staff/import", "POST"): (import_staff, 201, 422),
    ("/api/v1/staff/(?P<staff_id>[^/]+)", "GET"): (on_staff(""), 200, 404),
    ("/api/v1/staff/(?P<staff_id>[^/]+)/password-reset", "POST"): (
        on_staff("/password-reset"),
        200,
        404,
    ),
    ("/api/v1/staff/(?P<staff_id>[^/]+)/disable", "POST"): (on_staff("/disable"), 200, 404),
    ("/api/v1/staff/(?P<staff_id>[^/]+)/enable", "POST"): (on_staff("/enable"), 200, 404),
    ("/api/v1/staff/(?P<staff_id>[^/]+)/move", "POST"): (
        on_staff("/move", lambda env, _in: {"org_id": env.caller.org.id}),
        200,
        404,
    ),
    ("/api/v1/policy", "GET"): (plain("/api/v1/policy"), 200, None),
}


def protected_operations() -> list[tuple[str, str, str]]:
    operations = []
    for route in all_routes():
        pattern, handler = route[0], route[1]
        declared = handler.access
        for method in ("GET", "POST", "PUT", "PATCH", "DELETE"):
            if not callable(getattr(handler, method.lower(), None)) or getattr(
                handler, method.lower()
            ) is getattr(handler.__mro__[-2], method.lower(), None):
                continue
            action = declared if isinstance(declared, str) else declared.get(method)
            if action is not None and action != PUBLIC:
                operations.append((pattern, method, action))
    return operations


def test_every_protected_route_has_a_matrix_case():
    missing = [(p, m) for p, m, _ in protected_operations() if (p, m) not in CASES]
    assert not missing, f"add access-matrix cases for {missing}"


async def send(fetch, method: str, request: Request, token: str | None):
    return await fetch(
        request.path,
        method,
        json_body=request.json_body,
        body=request.body,
        headers=request.headers,
        token=token,
    )


async def test_the_matrix_matches_the_policy_table(fetch, tree, make_staff):
    policy = Policy()
    failures = []
    checked = 0
    for pattern, method, action in protected_operations():
        builder, success, outside = CASES[(pattern, method)]
        for role in Role:
            for in_scope in (True, False) if outside is not None else (True,):
                caller = await make_staff(role, tree.home_for(role))
                token = await make_staff.token_for(caller)
                env = Env(tree, make_staff, caller)
                request = await builder(env, in_scope)
                allowed = action == SELF or policy.allows(caller.identity, action)
                expected = (success if in_scope else outside) if allowed else 403
                answer = await send(fetch, method, request, token)
                checked += 1
                if answer.status != expected:
                    failures.append(
                        f"{method} {pattern} as {role} "
                        f"{'in' if in_scope else 'out of'} scope: "
                        f"{answer.status}, expected {expected}"
                    )
    assert not failures, "\n".join(failures)
    assert checked >= len(CASES) * len(Role)


async def test_anonymous_callers_get_401_everywhere(fetch, tree, make_staff):
    caller = await make_staff(Role.SYS_ADMIN, tree.county)
    env = Env(tree, make_staff, caller)
    for pattern, method, _ in protected_operations():
        builder, _, _ = CASES[(pattern, method)]
        answer = await send(fetch, method, await builder(env, True), None)
        assert answer.status == 401, f"{method} {pattern}: {answer.status}"

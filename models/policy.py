"""The access policy: every route names an action, and the policy decides who may perform it."""

from __future__ import annotations

from dataclasses import dataclass

# Actions anyone may perform without an identity (health probes, the API description, login).
PUBLIC = "public"


@dataclass(frozen=True)
class Identity:
    """Who is calling; anonymous callers have no user id."""

    user_id: str | None = None
    role: str | None = None
    org_id: str | None = None

    @property
    def authenticated(self) -> bool:
        return self.user_id is not None


ANONYMOUS = Identity()


class Policy:
    """Deny by default: an action is allowed only when the table names the caller's role."""

    def __init__(self, table: dict[str, frozenset[str]] | None = None):
        self._table = {PUBLIC: frozenset({"*"}), **(table or {})}

    def knows(self, action: str) -> bool:
        return action in self._table

    def allows(self, identity: Identity, action: str) -> bool:
        roles = self._table.get(action)
        if roles is None:
            return False
        if "*" in roles:
            return True
        return identity.role is not None and identity.role in roles

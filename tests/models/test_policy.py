"""The policy table walked as a whole: separation of duties (三员分立, GB/T 22239 level 3)."""

from __future__ import annotations

from models.identity import Identity
from models.policy import (
    ACTION_KINDS,
    ADMIN_ROLES,
    CASE_ROLES,
    CONFIRMED_BY,
    DEFAULT_TABLE,
    SELF,
    ActionKind,
    Policy,
    Role,
)

ADMINISTRATORS = (Role.SYS_ADMIN, Role.SECURITY_ADMIN, Role.AUDIT_ADMIN)


def as_role(role: Role | None) -> Identity:
    return Identity(user_id="someone", role=None if role is None else str(role), org_id="x")


def test_every_action_of_the_table_is_classified():
    assert set(ADMIN_ROLES) == set(ADMINISTRATORS)
    unclassified = sorted(set(DEFAULT_TABLE) - set(ACTION_KINDS))
    stale = sorted(set(ACTION_KINDS) - set(DEFAULT_TABLE))
    assert not unclassified, f"declare a kind in ACTION_KINDS for {unclassified}"
    assert not stale, f"ACTION_KINDS names actions the table lacks: {stale}"


def test_no_administrator_holds_a_case_write_or_an_irreversible_action():
    policy = Policy()
    held = {
        (role, action, ACTION_KINDS[action])
        for role in ADMINISTRATORS
        for action in DEFAULT_TABLE
        if policy.allows(as_role(role), action)
    }
    forbidden = sorted(
        (str(role), action)
        for role, action, kind in held
        if kind in (ActionKind.CASE_WRITE, ActionKind.IRREVERSIBLE)
    )
    assert not forbidden, f"administrators holding case writes or irreversible acts: {forbidden}"
    # The walk saw what each administrator does hold.
    assert {(role, kind) for role, _, kind in held} >= {
        (Role.SYS_ADMIN, ActionKind.SYSTEM),
        (Role.SECURITY_ADMIN, ActionKind.ROLES),
        (Role.SECURITY_ADMIN, ActionKind.CONFIRM),
        (Role.AUDIT_ADMIN, ActionKind.READ),
    }


def test_each_duty_belongs_to_one_administrator():
    def holders(kind: ActionKind) -> set[Role]:
        return {
            role
            for action, rule in DEFAULT_TABLE.items()
            if ACTION_KINDS[action] is kind
            for role in rule.roles
            if isinstance(role, Role)
        }

    # Only the security administrator grants roles and confirms; the system administrator
    # does neither, and the roles-granting administrator opens no account.
    assert holders(ActionKind.ROLES) == {Role.SECURITY_ADMIN}
    assert holders(ActionKind.CONFIRM) == {Role.SECURITY_ADMIN}
    assert DEFAULT_TABLE["staff.create"].roles == {Role.SYS_ADMIN}
    assert DEFAULT_TABLE["staff.import"].roles == {Role.SYS_ADMIN}
    assert holders(ActionKind.SYSTEM) & {Role.SECURITY_ADMIN, Role.AUDIT_ADMIN} == set()
    # The audit administrator reads and changes nothing.
    audit_kinds = {
        ACTION_KINDS[action]
        for action, rule in DEFAULT_TABLE.items()
        if Role.AUDIT_ADMIN in rule.roles
    }
    assert audit_kinds <= {ActionKind.READ, ActionKind.SELF}


def test_every_irreversible_action_needs_another_persons_confirmation():
    irreversible = [a for a, kind in ACTION_KINDS.items() if kind is ActionKind.IRREVERSIBLE]
    assert irreversible, "the table declares no irreversible action"
    for action in irreversible:
        confirm = CONFIRMED_BY.get(action)
        assert confirm is not None, f"{action} has no confirming action"
        assert ACTION_KINDS[confirm] is ActionKind.CONFIRM
        proposers, confirmers = DEFAULT_TABLE[action].roles, DEFAULT_TABLE[confirm].roles
        # A case-side officer proposes; an administrator other than the system administrator
        # confirms: no role does both, so no one account does both.
        assert proposers <= CASE_ROLES and proposers
        assert confirmers <= ADMIN_ROLES - {Role.SYS_ADMIN} and confirmers
        assert not proposers & confirmers


def test_an_account_without_a_role_may_only_set_itself_up():
    policy = Policy()
    roleless = as_role(None)
    allowed = sorted(action for action in DEFAULT_TABLE if policy.allows(roleless, action))
    assert allowed == ["me.password", "me.totp"]
    assert policy.allows(roleless, SELF)
    # An unbound mini-program session is not a staff account waiting for a role.
    unbound = Identity(user_id="wx", role=None, channel="mp")
    assert not policy.allows(unbound, "me.password")

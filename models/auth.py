"""Staff login: password, second factor, lockouts and per-address limits, then a session."""

from __future__ import annotations

from dataclasses import dataclass

from models.audit import AuditContext, AuditService
from models.errors import NotAuthenticated
from models.identity import Identity
from models.passwords import PasswordHasher
from models.sessions import IssuedSession, SessionService
from models.staff import StaffService, StaffView, normalise_username
from models.throttle import ThrottleService

LOGIN = "login"


def _wrong_credentials() -> NotAuthenticated:
    # One answer for a wrong name, password or TOTP code, and for a missing code.
    return NotAuthenticated("Wrong username, password or TOTP code.", code="invalid_credentials")


class Restriction:
    """What a session must do before anything else."""

    PASSWORD_CHANGE = "password_change"  # noqa: S105 - a step name, not a password
    TOTP_ENROLMENT = "totp_enrolment"


@dataclass(frozen=True)
class LoginResult:
    session: IssuedSession
    staff: StaffView
    restricted: str | None


class AuthService:
    def __init__(
        self,
        staff: StaffService,
        sessions: SessionService,
        throttle: ThrottleService,
        audit: AuditService,
        hasher: PasswordHasher,
        require_totp: bool,
    ):
        self._staff = staff
        self._sessions = sessions
        self._throttle = throttle
        self._audit = audit
        self._hasher = hasher
        self.require_totp = require_totp

    async def login(
        self, ctx: AuditContext, username: str, password: str, totp_code: str | None
    ) -> LoginResult:
        # Order matters: the address limit and the lock are checked before any password work,
        # and an unknown name takes the same path and time as a wrong password. Limits are per
        # address and per name from that address (and from all addresses together), so one
        # address cannot lock an officer out of the login at their own desk.
        address = ctx.remote_ip or "unknown"
        await self._throttle.count_address_attempt(LOGIN, address)
        name = normalise_username(username)
        await self._throttle.check_login(LOGIN, name, address)
        doc = await self._staff.find_for_login(name)
        password_ok = await self._hasher.verify(doc["password_hash"] if doc else None, password)
        if doc is None or not password_ok or doc.get("disabled"):
            await self._refuse(ctx, name, address, doc, "invalid_credentials")
            raise _wrong_credentials()

        enrolled = bool(doc.get("totp_secret"))
        if enrolled and not (totp_code and await self._staff.consume_totp(doc, totp_code)):
            # A right password with no code, or a wrong one, is a failed attempt answered exactly
            # as a wrong password is: anything else would confirm the password to a guesser.
            await self._refuse(
                ctx, name, address, doc, "invalid_totp" if totp_code else "totp_missing"
            )
            raise _wrong_credentials()

        restricted = None
        if doc.get("must_change_password"):
            restricted = Restriction.PASSWORD_CHANGE
        elif self.require_totp and not enrolled:
            restricted = Restriction.TOTP_ENROLMENT
        identity = Identity(
            user_id=str(doc["_id"]),
            role=doc["role"],
            org_id=str(doc["org_id"]),
            org_path=tuple(doc["org_path"]),
            channel="staff",
            second_factor=enrolled,
            restricted=restricted,
        )
        issued = await self._sessions.issue(identity)
        await self._throttle.clear_login(LOGIN, name, address)
        await self._audit.record(
            AuditContext(identity, ctx.request_id, ctx.remote_ip, ctx.client_request_id),
            "auth.login",
            resource="staff",
            resource_id=identity.user_id,
            details={"second_factor": enrolled, "restricted": restricted},
        )
        await self._staff.rehash_if_needed(doc, password)
        return LoginResult(
            session=issued, staff=await self._staff.me(identity), restricted=restricted
        )

    async def _refuse(
        self, ctx: AuditContext, name: str, address: str, doc: dict | None, reason: str
    ) -> None:
        locked = await self._throttle.record_login_failure(LOGIN, name, address)
        await self._audit.record(
            ctx,
            "auth.login",
            resource="staff",
            resource_id=str(doc["_id"]) if doc else None,
            outcome=f"refused:{reason}",
            details={"locked": locked, "known_account": doc is not None},
        )

    async def logout(self, ctx: AuditContext) -> None:
        if ctx.identity.session_id:
            await self._sessions.revoke(ctx.identity.session_id)
            await self._audit.record(
                ctx, "auth.logout", resource="staff", resource_id=ctx.identity.user_id
            )

    async def resolve(
        self, token: str, *, fresh: bool = False, batched_seen: bool = False
    ) -> Identity | None:
        return await self._sessions.resolve(token, fresh=fresh, batched_seen=batched_seen)

    async def second_factor_enrolled(self, session_id: str) -> None:
        """The session that just enrolled TOTP proved the factor: lift its restriction."""
        await self._sessions.lift_restriction(session_id, second_factor=True)

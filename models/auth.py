"""Staff login: password, second factor, lockouts and per-address limits, then a session."""

from __future__ import annotations

from dataclasses import dataclass

from models.audit import AuditContext, AuditService
from models.errors import NotAuthenticated
from models.passwords import PasswordHasher
from models.policy import Identity
from models.sessions import IssuedSession, SessionService
from models.staff import StaffService, StaffView, normalise_username
from models.throttle import ThrottleService

LOGIN = "login"


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
        # and an unknown name takes the same path and time as a wrong password.
        await self._throttle.count_address_attempt(LOGIN, ctx.remote_ip or "unknown")
        name = normalise_username(username)
        await self._throttle.check_account(LOGIN, name)
        doc = await self._staff.find_for_login(name)
        password_ok = await self._hasher.verify(doc["password_hash"] if doc else None, password)
        if doc is None or not password_ok or doc.get("disabled"):
            await self._refuse(ctx, name, doc, "invalid_credentials")
            raise NotAuthenticated("Wrong username or password.", code="invalid_credentials")

        enrolled = bool(doc.get("totp_secret"))
        if enrolled:
            if not totp_code:
                # The password was right, but no session is opened on it alone.
                raise NotAuthenticated("This account needs its TOTP code.", code="totp_required")
            if not await self._staff.consume_totp(doc, totp_code):
                await self._refuse(ctx, name, doc, "invalid_totp")
                raise NotAuthenticated(
                    "The TOTP code is wrong or was already used.", code="invalid_totp"
                )

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
        await self._throttle.clear_account(LOGIN, name)
        await self._audit.record(
            AuditContext(identity, ctx.request_id, ctx.remote_ip),
            "auth.login",
            resource="staff",
            resource_id=identity.user_id,
            details={"second_factor": enrolled, "restricted": restricted},
        )
        await self._staff.rehash_if_needed(doc, password)
        return LoginResult(
            session=issued, staff=await self._staff.me(identity), restricted=restricted
        )

    async def _refuse(self, ctx: AuditContext, name: str, doc: dict | None, reason: str) -> None:
        locked = await self._throttle.record_failure(LOGIN, name)
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

    async def resolve(self, token: str, *, fresh: bool = False) -> Identity | None:
        return await self._sessions.resolve(token, fresh=fresh)

    async def second_factor_enrolled(self, session_id: str) -> None:
        """The session that just enrolled TOTP proved the factor: lift its restriction."""
        await self._sessions.lift_restriction(session_id, second_factor=True)

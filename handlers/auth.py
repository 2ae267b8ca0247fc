"""Staff identity endpoints: login, logout, me, password change, TOTP enrolment, binding code."""

from __future__ import annotations

import datetime as dt

from pydantic import Field

from handlers.base import BaseHandler, Out, Strict, endpoint
from models.policy import PUBLIC, SELF


class LoginBody(Strict):
    username: str = Field(min_length=1, max_length=64)
    password: str = Field(min_length=1, max_length=256)
    totp: str | None = Field(default=None, max_length=10)


class UserSummary(Out):
    id: str
    role: str | None  # None until the security administrator grants one
    org_id: str


class LoginAnswer(Out):
    token: str
    expires_at: dt.datetime
    user: UserSummary
    # A step the account must take before anything else: `password_change` or `totp_enrolment`.
    required_step: str | None = None


class NoticeOut(Out):
    id: str
    # role_granted, role_withdrawn (the security administrator), password_reset and
    # role_suspended (an administrator's reset): what someone else did to this account;
    # role_review (to a security administrator): `staff_id`'s role awaits a grant again.
    kind: str
    at: dt.datetime
    role: str | None
    is_agency_head: bool
    staff_id: str | None = None
    username: str | None = None


class Me(Out):
    id: str
    username: str
    name: str
    role: str | None  # None until the security administrator grants one
    org_id: str
    is_agency_head: bool
    totp_enrolled: bool
    must_change_password: bool
    required_step: str | None = None
    # Unseen notices, oldest first; shown at the console until dismissed.
    notices: list[NoticeOut] = []


class PasswordChangeBody(Strict):
    current_password: str = Field(min_length=1, max_length=256)
    new_password: str = Field(min_length=1, max_length=256)


class TotpEnrolment(Out):
    secret: str
    provisioning_uri: str


class TotpConfirmBody(Strict):
    code: str = Field(min_length=6, max_length=6, pattern=r"^[0-9]{6}$")


class BindingCode(Out):
    code: str
    expires_at: dt.datetime


class LoginHandler(BaseHandler):
    access = PUBLIC

    @endpoint(
        "Staff login with password and, when enrolled, a TOTP code",
        body=LoginBody,
        response=LoginAnswer,
        errors=(401, 423, 429),
        tags=("identity",),
    )
    async def post(self) -> None:
        body = self.parse(LoginBody)
        result = await self.ctx.auth.login(
            self.audit_context, body.username, body.password, body.totp
        )
        staff = result.staff
        self.respond(
            LoginAnswer(
                token=result.session.token,
                expires_at=result.session.expires_at,
                user=UserSummary(id=staff.id, role=staff.role, org_id=staff.org_id),
                required_step=result.restricted,
            )
        )


class LogoutHandler(BaseHandler):
    access = SELF

    @endpoint("End this session; its token stops working", status=204, tags=("identity",))
    async def post(self) -> None:
        await self.ctx.auth.logout(self.audit_context)
        self.respond(None, status=204)


class MeHandler(BaseHandler):
    access = SELF

    @endpoint("The caller's own account", response=Me, tags=("identity",))
    async def get(self) -> None:
        staff = await self.ctx.staff.me(self.identity)
        self.respond(
            Me(
                id=staff.id,
                username=staff.username,
                name=staff.name,
                role=staff.role,
                org_id=staff.org_id,
                is_agency_head=staff.is_agency_head,
                totp_enrolled=staff.totp_enrolled,
                must_change_password=staff.must_change_password,
                required_step=self.identity.restricted,
                notices=[
                    NoticeOut(**notice.__dict__)
                    for notice in await self.ctx.staff.notices(self.identity)
                ],
            )
        )


class NoticesSeenHandler(BaseHandler):
    access = SELF

    @endpoint("Dismiss the notices shown so far", status=204, tags=("identity",))
    async def post(self) -> None:
        await self.ctx.staff.dismiss_notices(self.identity)
        self.respond(None, status=204)


class PasswordHandler(BaseHandler):
    access = "me.password"

    @endpoint(
        "Change the caller's password; every session of the account ends",
        body=PasswordChangeBody,
        status=204,
        errors=(422,),
        tags=("identity",),
    )
    async def post(self) -> None:
        body = self.parse(PasswordChangeBody)
        await self.ctx.staff.change_own_password(
            self.audit_context, body.current_password, body.new_password
        )
        self.respond(None, status=204)


class TotpHandler(BaseHandler):
    access = "me.totp"

    @endpoint(
        "Begin TOTP enrolment: the secret and provisioning URI, shown once",
        response=TotpEnrolment,
        status=201,
        errors=(409,),
        tags=("identity",),
    )
    async def post(self) -> None:
        secret, uri = await self.ctx.staff.begin_totp(self.identity)
        self.respond(TotpEnrolment(secret=secret, provisioning_uri=uri), status=201)


class TotpConfirmHandler(BaseHandler):
    access = "me.totp"

    @endpoint(
        "Finish TOTP enrolment with a code from the authenticator",
        body=TotpConfirmBody,
        status=204,
        errors=(409, 422),
        tags=("identity",),
    )
    async def post(self) -> None:
        body = self.parse(TotpConfirmBody)
        await self.ctx.staff.confirm_totp(self.audit_context, body.code)
        if self.identity.session_id:
            await self.ctx.auth.second_factor_enrolled(self.identity.session_id)
        self.respond(None, status=204)


class StaffBindingCodeHandler(BaseHandler):
    access = "me.binding_code"

    @endpoint(
        "A single-use code to bind the caller's WeChat (password session only)",
        response=BindingCode,
        status=201,
        tags=("identity",),
    )
    async def post(self) -> None:
        issued = await self.ctx.bindings.issue_for_staff(self.audit_context)
        self.respond(BindingCode(code=issued.code, expires_at=issued.expires_at), status=201)


routes = [
    (r"/api/v1/auth/login", LoginHandler),
    (r"/api/v1/auth/logout", LogoutHandler),
    (r"/api/v1/me", MeHandler),
    (r"/api/v1/me/notices/seen", NoticesSeenHandler),
    (r"/api/v1/me/password", PasswordHandler),
    (r"/api/v1/me/totp", TotpHandler),
    (r"/api/v1/me/totp/confirm", TotpConfirmHandler),
    (r"/api/v1/me/binding-code", StaffBindingCodeHandler),
]

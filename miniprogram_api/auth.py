"""Mini-program sign-in: WeChat login, binding to a person, guardian or staff member, and `me`."""

from __future__ import annotations

import datetime as dt
import enum

from pydantic import ConfigDict, Field

from handlers.base import Out, Strict, endpoint
from miniprogram_api.base import MpHandler
from models.policy import PUBLIC, SELF, MpRole, Role

# Who a mini-program session acts as: the person or a guardian, or a staff member by their own
# role (not a generic `staff`): the worker's screens and the actions the policy lets them take
# follow that role. Built from the two role enums, so a role added there is declared here too.
SessionRole = enum.StrEnum(  # type: ignore[misc]
    "SessionRole", [(role.name, role.value) for role in (*MpRole, *Role)]
)
ROLE_DESCRIPTION = (
    "`subject` or `guardian`: the person's screens; a staff role: the worker's screens; "
    "null: not bound yet"
)


class LoginBody(Strict):
    # The code `wx.login` answers.
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{"code": "0a3Xk7000mU1xR1bQz200Yk2eC0Xk70G"}]},
    )

    code: str = Field(min_length=1, max_length=256)


class LoginOut(Out):
    token: str
    expires_at: dt.datetime
    bound: bool
    role: SessionRole | None = Field(description=ROLE_DESCRIPTION)


class BindBody(Strict):
    model_config = ConfigDict(
        extra="forbid", json_schema_extra={"examples": [{"binding_code": "K7QM3XPA"}]}
    )

    binding_code: str = Field(min_length=4, max_length=32)


class BindOut(Out):
    role: SessionRole
    subject_id: str | None = None


class MeOut(Out):
    role: SessionRole | None = Field(description=ROLE_DESCRIPTION)
    bound: bool
    subject_id: str | None = None
    # A person or guardian: the file's name and station; nothing else leaves the file here.
    name: str | None = None
    station: str | None = None


class LoginHandler(MpHandler):
    """Not idempotent by key: a caller without a session has no key space of its own, and a
    retried login simply opens another session."""

    access = PUBLIC
    ignores_caller = True

    @endpoint(
        "Sign in with a `wx.login` code; never answers WeChat's session key",
        body=LoginBody,
        response=LoginOut,
        errors=(400, 422, 429, 503),
        tags=("mini-program",),
        codes=(
            ("invalid_login_code", 400, "登录凭证无效或已过期：请重新调用 wx.login"),
            ("rate_limited", 429, "操作过于频繁：按 Retry-After 稍后重试"),
        ),
        summary_zh="微信登录：用 wx.login 的 code 换取会话令牌",
    )
    async def post(self) -> None:
        body = self.parse(LoginBody)
        result = await self.ctx.mp_accounts.login(self.audit_context, body.code)
        self.respond(
            LoginOut(
                token=result.token,
                expires_at=result.expires_at,
                bound=result.bound,
                role=result.role,
            )
        )


class BindHandler(MpHandler):
    access = SELF

    @endpoint(
        "Bind this WeChat account with a single-use code from the worker",
        body=BindBody,
        response=BindOut,
        errors=(400, 401, 422, 429),
        tags=("mini-program",),
        idempotency="optional",
        codes=(
            ("invalid_binding_code", 400, "绑定码无效、已过期或已被使用"),
            ("rate_limited", 429, "尝试过于频繁：按 Retry-After 稍后重试"),
        ),
        summary_zh="用工作人员提供的绑定码绑定本微信账号",
    )
    async def post(self) -> None:
        body = self.parse(BindBody)

        async def produce() -> tuple[BindOut, int]:
            result = await self.ctx.mp_accounts.bind(self.audit_context, body.binding_code)
            return BindOut(role=result.role, subject_id=result.subject_id), 200

        # A retry of a bind that worked answers the same (the code itself is used up).
        await self.respond_once(produce)


class LogoutHandler(MpHandler):
    access = SELF

    @endpoint(
        "End this session (the binding stays)",
        status=204,
        errors=(401,),
        tags=("mini-program",),
        summary_zh="退出登录（绑定关系保留）",
    )
    async def post(self) -> None:
        await self.ctx.mp_accounts.logout(self.audit_context)
        self.respond(None, status=204)


class MeHandler(MpHandler):
    access = SELF

    @endpoint(
        "Who this session acts as, with the person's own minimal profile",
        response=MeOut,
        errors=(401,),
        tags=("mini-program",),
        summary_zh="当前会话的身份与本人基本信息",
    )
    async def get(self) -> None:
        identity = self.identity
        me = MeOut(role=identity.role, bound=identity.role is not None)
        if identity.subject_id is not None:
            profile = await self.ctx.subjects.own_profile(self.audit_context)
            me.subject_id = identity.subject_id
            me.name = profile["name"]
            me.station = profile["station"]
        self.respond(me)


routes = [
    (r"/mp/v1/auth/login", LoginHandler),
    (r"/mp/v1/auth/bind", BindHandler),
    (r"/mp/v1/auth/logout", LogoutHandler),
    (r"/mp/v1/me", MeHandler),
]

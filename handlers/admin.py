"""Administration endpoints: the organisation tree, staff accounts and the policy table."""

from __future__ import annotations

from pydantic import Field

from handlers.base import BaseHandler, Out, Strict, csv_media, endpoint, path_id
from handlers.query import object_id, page_size, query, query_args, yes_no
from models.orgs import Org, OrgKind
from models.policy import Role
from models.staff import StaffView

ID_PATTERN = r"[0-9a-fA-F]{24}"
MAX_PAGE = 200


class OrgBody(Strict):
    name: str = Field(min_length=1, max_length=100)
    code: str = Field(min_length=2, max_length=20)
    kind: OrgKind
    parent_id: str | None = Field(default=None, pattern=f"^{ID_PATTERN}$")


class OrgOut(Out):
    id: str
    name: str
    code: str
    kind: str
    parent_id: str | None

    @classmethod
    def of(cls, org: Org) -> OrgOut:
        return cls(id=org.id, name=org.name, code=org.code, kind=org.kind, parent_id=org.parent_id)


class OrgList(Out):
    items: list[OrgOut]


class StaffBody(Strict):
    username: str = Field(min_length=3, max_length=32)
    # Optional: without it the server generates one. Either way it works once (changed at
    # first login), and the role waits for the security administrator.
    password: str | None = Field(default=None, min_length=1, max_length=256)
    name: str = Field(min_length=1, max_length=50)
    role: Role
    org_id: str = Field(pattern=f"^{ID_PATTERN}$")
    is_agency_head: bool = False


class StaffOut(Out):
    id: str
    username: str
    name: str
    role: str | None  # None until the security administrator grants one
    org_id: str
    is_agency_head: bool
    disabled: bool
    totp_enrolled: bool
    must_change_password: bool
    version: int
    requested_role: str | None
    requested_agency_head: bool

    @classmethod
    def of(cls, view: StaffView) -> StaffOut:
        return cls(**view.__dict__)


class CreatedStaffOut(StaffOut):
    # Shown once, when the server generated the password; never stored in the clear.
    temporary_password: str | None


class StaffPage(Out):
    items: list[StaffOut]
    next_cursor: str | None


class RoleBody(Strict):
    # None withdraws the role: the account keeps its login and reaches nothing.
    role: Role | None
    is_agency_head: bool = False


class MoveBody(Strict):
    org_id: str = Field(pattern=f"^{ID_PATTERN}$")


class TemporaryPassword(Out):
    temporary_password: str


class ImportedAccountOut(Out):
    username: str
    temporary_password: str


class ImportAnswer(Out):
    imported: int
    accounts: list[ImportedAccountOut]


class PolicyRuleOut(Out):
    action: str
    roles: list[str]
    scope: str
    narrower: dict[str, str]
    description: str


class PolicyOut(Out):
    rules: list[PolicyRuleOut]


class OrgsHandler(BaseHandler):
    access = {"POST": "orgs.create", "GET": "orgs.read"}

    @endpoint(
        "Add a node to the organisation tree, under one in the caller's scope",
        body=OrgBody,
        response=OrgOut,
        status=201,
        errors=(404, 409),
        tags=("organisation",),
    )
    async def post(self) -> None:
        body = self.parse(OrgBody)
        org = await self.ctx.orgs.create(
            self.audit_context,
            name=body.name,
            code=body.code,
            kind=body.kind,
            parent_id=body.parent_id,
        )
        self.respond(OrgOut.of(org), status=201)

    @endpoint(
        "The caller's subtree of the organisation tree", response=OrgList, tags=("organisation",)
    )
    async def get(self) -> None:
        orgs = await self.ctx.orgs.subtree(self.identity)
        self.respond(OrgList(items=[OrgOut.of(org) for org in orgs]))


class OrgHandler(BaseHandler):
    access = "orgs.read"

    @endpoint(
        "One node of the tree, when in scope",
        response=OrgOut,
        errors=(404,),
        tags=("organisation",),
    )
    async def get(self, org_id: str) -> None:
        self.respond(OrgOut.of(await self.ctx.orgs.get_in_scope(self.identity, org_id)))


class StaffListHandler(BaseHandler):
    access = {"POST": "staff.create", "GET": "staff.read"}

    @endpoint(
        "Create a staff account in the caller's scope: a one-time password, and no role until "
        "the security administrator grants the requested one",
        body=StaffBody,
        response=CreatedStaffOut,
        status=201,
        errors=(404, 409),
        tags=("organisation",),
    )
    async def post(self) -> None:
        body = self.parse(StaffBody)
        view, generated = await self.ctx.staff.open_account(
            self.audit_context,
            username=body.username,
            password=body.password,
            name=body.name,
            role=body.role,
            org_id=body.org_id,
            is_agency_head=body.is_agency_head,
        )
        self.respond(
            CreatedStaffOut(**StaffOut.of(view).model_dump(), temporary_password=generated),
            status=201,
        )

    @endpoint(
        "Staff accounts in the caller's scope, by cursor",
        response=StaffPage,
        tags=("organisation",),
    )
    @query(
        object_id("cursor", "The `next_cursor` of the previous page"),
        page_size(50, MAX_PAGE),
    )
    async def get(self) -> None:
        args = query_args(self)
        items, next_cursor = await self.ctx.staff.list(self.identity, args["cursor"], args["limit"])
        self.respond(StaffPage(items=[StaffOut.of(v) for v in items], next_cursor=next_cursor))


class RolesHandler(BaseHandler):
    access = "roles.read"

    @endpoint(
        "Accounts in the caller's scope with their roles (`?pending=1`: awaiting a grant)",
        response=StaffPage,
        tags=("organisation",),
    )
    @query(
        object_id("cursor", "The `next_cursor` of the previous page"),
        page_size(50, MAX_PAGE),
        yes_no("pending", "1: only accounts whose requested role awaits a grant"),
    )
    async def get(self) -> None:
        args = query_args(self)
        items, next_cursor = await self.ctx.staff.list(
            self.identity, args["cursor"], args["limit"], pending=bool(args["pending"])
        )
        self.respond(StaffPage(items=[StaffOut.of(v) for v in items], next_cursor=next_cursor))


class StaffRoleHandler(BaseHandler):
    access = "roles.grant"

    @endpoint(
        "Grant, change or withdraw an account's role (audited; the owner is notified and "
        "their sessions end)",
        body=RoleBody,
        response=StaffOut,
        errors=(404, 409),
        tags=("organisation",),
    )
    async def put(self, staff_id: str) -> None:
        body = self.parse(RoleBody)
        view = await self.ctx.staff.grant_role(
            self.audit_context, staff_id, body.role, body.is_agency_head
        )
        self.respond(StaffOut.of(view))


class StaffHandler(BaseHandler):
    access = "staff.read"

    @endpoint(
        "One staff account, when in scope", response=StaffOut, errors=(404,), tags=("organisation",)
    )
    async def get(self, staff_id: str) -> None:
        self.respond(StaffOut.of(await self.ctx.staff.get(self.identity, staff_id)))


class StaffPasswordResetHandler(BaseHandler):
    access = "staff.manage"

    @endpoint(
        "Reset a password: a temporary one, changed at next login; sessions end",
        response=TemporaryPassword,
        errors=(404,),
        tags=("organisation",),
    )
    async def post(self, staff_id: str) -> None:
        password = await self.ctx.staff.reset_password(self.audit_context, staff_id)
        self.respond(TemporaryPassword(temporary_password=password))


class StaffDisableHandler(BaseHandler):
    access = "staff.manage"
    disabled = True

    @endpoint(
        "Disable an account; its sessions end at once",
        response=StaffOut,
        errors=(404, 409),
        tags=("organisation",),
    )
    async def post(self, staff_id: str) -> None:
        view = await self.ctx.staff.set_disabled(self.audit_context, staff_id, self.disabled)
        self.respond(StaffOut.of(view))


class StaffEnableHandler(StaffDisableHandler):
    disabled = False


class StaffMoveHandler(BaseHandler):
    access = "staff.manage"

    @endpoint(
        "Move an account to another node (audited; its sessions end)",
        body=MoveBody,
        response=StaffOut,
        errors=(404,),
        tags=("organisation",),
    )
    async def post(self, staff_id: str) -> None:
        body = self.parse(MoveBody)
        view = await self.ctx.staff.move(self.audit_context, staff_id, body.org_id)
        self.respond(StaffOut.of(view))


class StaffImportHandler(BaseHandler):
    access = "staff.import"

    @endpoint(
        "Import accounts from a UTF-8 CSV file (text/csv): all rows or none",
        body_media=csv_media(
            "username, name, role, org_code and optionally is_agency_head (1 or 0)",
            "username,name,role,org_code,is_agency_head\r\nli.na,李娜,social_worker,330302001,0\r\n",
        ),
        response=ImportAnswer,
        status=201,
        errors=(409,),
        tags=("organisation",),
    )
    async def post(self) -> None:
        text = self.csv_text()
        accounts = await self.ctx.staff.import_csv(self.audit_context, text)
        self.respond(
            ImportAnswer(
                imported=len(accounts),
                accounts=[
                    ImportedAccountOut(username=a.username, temporary_password=a.temporary_password)
                    for a in accounts
                ],
            ),
            status=201,
        )


class PolicyHandler(BaseHandler):
    access = "policy.read"

    @endpoint("The access policy table", response=PolicyOut, tags=("organisation",))
    async def get(self) -> None:
        rules = [
            PolicyRuleOut(
                action=action,
                roles=sorted(rule.roles),
                scope=rule.scope,
                narrower={str(k): str(v) for k, v in rule.narrower.items()},
                description=rule.description,
            )
            for action, rule in sorted(self.ctx.policy.actions().items())
        ]
        self.respond(PolicyOut(rules=rules))


routes = [
    (r"/api/v1/orgs", OrgsHandler),
    (rf"/api/v1/orgs/{path_id('org_id')}", OrgHandler),
    (r"/api/v1/staff", StaffListHandler),
    (r"/api/v1/staff/import", StaffImportHandler),
    (r"/api/v1/staff/roles", RolesHandler),
    (rf"/api/v1/staff/{path_id('staff_id')}", StaffHandler),
    (rf"/api/v1/staff/{path_id('staff_id')}/role", StaffRoleHandler),
    (rf"/api/v1/staff/{path_id('staff_id')}/password-reset", StaffPasswordResetHandler),
    (rf"/api/v1/staff/{path_id('staff_id')}/disable", StaffDisableHandler),
    (rf"/api/v1/staff/{path_id('staff_id')}/enable", StaffEnableHandler),
    (rf"/api/v1/staff/{path_id('staff_id')}/move", StaffMoveHandler),
    (r"/api/v1/policy", PolicyHandler),
]

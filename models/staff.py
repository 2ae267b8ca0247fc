"""Staff accounts: creation, scope, passwords, TOTP enrolment, moves, disabling and CSV import."""

from __future__ import annotations

import builtins  # `list` in a service class names its method; `builtins.list` the type
import csv
import datetime as dt
import io
import re
import secrets
import string
import unicodedata
from dataclasses import dataclass
from typing import Any

from bson import ObjectId
from pymongo import ASCENDING, IndexModel, ReturnDocument
from pymongo.errors import DuplicateKeyError

from models import totp
from models.audit import AuditContext, AuditService
from models.clock import Clock
from models.codec import FieldCodec
from models.errors import Conflict, Forbidden, InvalidInput, NotFound
from models.identity import Identity
from models.ids import parse_id
from models.orgs import Org, OrgKind, OrgService
from models.passwords import PasswordHasher, check_password_policy
from models.policy import CASE_ROLES, Role
from models.sessions import SessionService
from models.store import CollectionSpec, Store, still_there

STAFF = CollectionSpec(
    "staff",
    (
        IndexModel([("username", ASCENDING)], unique=True),
        IndexModel([("org_path", ASCENDING), ("role", ASCENDING)]),
    ),
)

USERNAME_PATTERN = re.compile(r"^[a-z0-9][a-z0-9._-]{2,31}$")

# Where each role may sit in the tree; administrators may sit anywhere.
ROLE_ORG_KINDS: dict[Role, frozenset[OrgKind]] = {
    Role.CITY_OFFICER: frozenset({OrgKind.CITY}),
    Role.COUNTY_OFFICER: frozenset({OrgKind.COUNTY}),
    Role.STATION_OFFICER: frozenset({OrgKind.STATION}),
    Role.SOCIAL_WORKER: frozenset({OrgKind.STATION, OrgKind.COMMUNITY}),
    Role.GRID_WORKER: frozenset({OrgKind.COMMUNITY, OrgKind.GRID}),
    Role.HEALTH_WORKER: frozenset({OrgKind.COUNTY, OrgKind.STATION, OrgKind.COMMUNITY}),
    Role.POLICE: frozenset({OrgKind.COUNTY, OrgKind.STATION}),
    Role.ASSISTANCE_COORDINATOR: frozenset({OrgKind.COUNTY, OrgKind.STATION}),
    Role.OVERSIGHT: frozenset({OrgKind.CITY, OrgKind.COUNTY}),
}

MAX_IMPORT_ROWS = 5000
# The most recent notices an account keeps until its owner has seen them.
MAX_NOTICES = 20
IMPORT_COLUMNS = ("username", "name", "role", "org_code", "is_agency_head")


def normalise_username(raw: str) -> str:
    return unicodedata.normalize("NFKC", raw).strip().lower()


def temporary_password() -> str:
    """A random password for a reset or an import; the holder must change it at first login."""
    alphabet = string.ascii_letters + string.digits
    return "".join(secrets.choice(alphabet) for _ in range(16))


@dataclass(frozen=True)
class StaffView:
    """What may leave the service: never a hash, a secret or a step counter."""

    id: str
    username: str
    name: str
    # None until the security administrator grants a role (三员分立).
    role: str | None
    org_id: str
    is_agency_head: bool
    disabled: bool
    totp_enrolled: bool
    must_change_password: bool
    version: int
    # What the system administrator asked for when creating the account, until it is granted.
    requested_role: str | None = None
    requested_agency_head: bool = False

    @classmethod
    def from_doc(cls, doc: dict[str, Any]) -> StaffView:
        request = doc.get("role_request") or {}
        return cls(
            id=str(doc["_id"]),
            username=doc["username"],
            name=doc["name"],
            role=doc.get("role"),
            org_id=str(doc["org_id"]),
            is_agency_head=bool(doc.get("is_agency_head")),
            disabled=bool(doc.get("disabled")),
            totp_enrolled=bool(doc.get("totp_secret")),
            must_change_password=bool(doc.get("must_change_password")),
            version=int(doc.get("version", 1)),
            requested_role=request.get("role"),
            requested_agency_head=bool(request.get("is_agency_head")),
        )


@dataclass(frozen=True)
class Notice:
    """Something done to an account by someone else, shown to its owner at the console."""

    id: str
    kind: str  # role_granted, role_withdrawn, password_reset, role_suspended, role_review
    at: dt.datetime
    role: str | None
    is_agency_head: bool
    # role_review (to a security administrator): the account whose role awaits a grant again.
    staff_id: str | None = None
    username: str | None = None

    @classmethod
    def from_doc(cls, doc: dict[str, Any]) -> Notice:
        return cls(
            id=doc["id"],
            kind=doc["kind"],
            at=doc["at"],
            role=doc.get("role"),
            is_agency_head=bool(doc.get("is_agency_head")),
            staff_id=doc.get("staff_id"),
            username=doc.get("username"),
        )


@dataclass(frozen=True)
class ImportProblem:
    line: int
    field: str
    message: str


@dataclass(frozen=True)
class ImportedAccount:
    username: str
    temporary_password: str


class StaffService:
    collections = (STAFF,)

    def __init__(
        self,
        store: Store,
        clock: Clock,
        audit: AuditService,
        orgs: OrgService,
        sessions: SessionService,
        hasher: PasswordHasher,
        codec: FieldCodec,
    ):
        self._store = store
        self._staff = store.collection(STAFF)
        self._clock = clock
        self._audit = audit
        self._orgs = orgs
        self._sessions = sessions
        self._hasher = hasher
        self._codec = codec

    # --- reads ----------------------------------------------------------------------------

    async def find_for_login(self, username: str) -> dict[str, Any] | None:
        return await self._staff.find_one({"username": normalise_username(username)})

    async def get_doc(self, staff_id: str) -> dict[str, Any]:
        doc = await self._staff.find_one({"_id": parse_id(staff_id, "staff member")})
        if doc is None:
            raise NotFound("No such staff member.")
        return doc

    async def lookup(self, staff_id: str) -> dict[str, Any] | None:
        """The raw account document, or None; for services checking an assignment."""
        try:
            return await self.get_doc(staff_id)
        except NotFound:
            return None

    async def get(self, identity: Identity, staff_id: str) -> StaffView:
        doc = await self.get_doc(staff_id)
        if not identity.reaches(doc["org_path"]):
            raise NotFound("No such staff member.")
        return StaffView.from_doc(doc)

    async def me(self, identity: Identity) -> StaffView:
        return StaffView.from_doc(await self.get_doc(identity.user_id or ""))

    async def list(
        self, identity: Identity, cursor: str | None, limit: int, *, pending: bool = False
    ) -> tuple[list[StaffView], str | None]:
        query: dict[str, Any] = {"org_path": identity.org_id}
        if pending:
            query["role_request"] = {"$type": "object"}
        if cursor:
            query["_id"] = {"$gt": parse_id(cursor, "cursor")}
        docs = [
            doc async for doc in self._staff.find(query).sort("_id", ASCENDING).limit(limit + 1)
        ]
        next_cursor = str(docs[limit - 1]["_id"]) if len(docs) > limit else None
        return [StaffView.from_doc(doc) for doc in docs[:limit]], next_cursor

    async def accounts_matching(
        self, identity: Identity, text: str, limit: int
    ) -> builtins.list[StaffView]:
        """Accounts in the caller's subtree whose name or username holds `text`, by name: the
        audit administrator picks an account by what people call it, not by its id."""
        pattern = re.escape(text.strip())
        query: dict[str, Any] = {
            "org_path": identity.org_id,
            "$or": [
                {"name": {"$regex": pattern}},
                {"username": {"$regex": pattern, "$options": "i"}},
            ],
        }
        cursor = self._staff.find(query).sort([("name", ASCENDING), ("_id", ASCENDING)])
        return [StaffView.from_doc(doc) async for doc in cursor.limit(limit)]

    async def any_exists(self) -> bool:
        return await self._staff.find_one({}, {"_id": 1}) is not None

    # --- creation -----------------------------------------------------------------------------

    def _check_role_place(self, role: Role, org: Org, is_agency_head: bool) -> None:
        allowed = ROLE_ORG_KINDS.get(role)
        if allowed is not None and org.kind not in allowed:
            kinds = ", ".join(sorted(allowed))
            raise InvalidInput(
                f"A {role} belongs to a {kinds}, not a {org.kind}.",
                details=[{"field": "org_id", "type": "role_org_mismatch"}],
            )
        if is_agency_head and role != Role.COUNTY_OFFICER:
            raise InvalidInput(
                "Only a county officer can be the agency head.",
                details=[{"field": "is_agency_head"}],
            )

    def _new_doc(
        self,
        *,
        username: str,
        name: str,
        role: Role,
        org: Org,
        is_agency_head: bool,
        password_hash: str,
        must_change_password: bool,
        granted_by: Identity,
    ) -> dict[str, Any]:
        now = self._clock.now()
        # 三员分立: the composition root and the command line (the operator at the server's
        # shell, who holds the master key anyway) grant the role at once; an account a system
        # administrator creates over the API waits, role-less, for the security administrator,
        # and its password, chosen or generated by an administrator, works once.
        granted = granted_by.unscoped
        return {
            "_id": ObjectId(),
            "username": username,
            "name": name,
            "role": str(role) if granted else None,
            "role_request": None
            if granted
            else {
                "role": str(role),
                "is_agency_head": is_agency_head,
                "by": granted_by.user_id,
                "at": now,
            },
            "org_id": ObjectId(org.id),
            "org_path": list(org.path),
            "is_agency_head": is_agency_head and granted,
            "password_hash": password_hash,
            "must_change_password": must_change_password or not granted,
            "notices": [],
            "totp_secret": None,
            "totp_pending_secret": None,
            "totp_last_step": 0,
            "disabled": False,
            "created_at": now,
            "updated_at": now,
            "version": 1,
        }

    def _validate_identity_fields(self, username: str, name: str) -> tuple[str, str]:
        username = normalise_username(username)
        if not USERNAME_PATTERN.match(username):
            raise InvalidInput(
                "The username must be 3 to 32 lowercase letters, digits, dots, hyphens or "
                "underscores, starting with a letter or digit.",
                details=[{"field": "username"}],
            )
        name = unicodedata.normalize("NFKC", name).strip()
        if not name or len(name) > 50:
            raise InvalidInput("The name must be 1 to 50 characters.", details=[{"field": "name"}])
        return username, name

    async def create(
        self,
        ctx: AuditContext,
        *,
        username: str,
        password: str,
        name: str,
        role: str,
        org_id: str,
        is_agency_head: bool = False,
        must_change_password: bool = False,
    ) -> StaffView:
        username, name = self._validate_identity_fields(username, name)
        try:
            staff_role = Role(role)
        except ValueError:
            raise InvalidInput(f"Unknown role {role!r}.", details=[{"field": "role"}]) from None
        org = await self._orgs.get(org_id)
        if not ctx.identity.reaches(org.path):
            raise NotFound("No such organisation.")
        self._check_role_place(staff_role, org, is_agency_head)
        check_password_policy(password, username)
        doc = self._new_doc(
            username=username,
            name=name,
            role=staff_role,
            org=org,
            is_agency_head=is_agency_head,
            password_hash=await self._hasher.hash(password),
            must_change_password=must_change_password,
            granted_by=ctx.identity,
        )
        async with self._audit.change(
            ctx,
            "staff.create",
            resource="staff",
            resource_id=str(doc["_id"]),
            details={
                "role": str(staff_role),
                "granted": doc["role"] is not None,
                "org_id": org.id,
            },
        ):
            try:
                await self._staff.insert_one(doc)
            except DuplicateKeyError:
                raise Conflict("This username is taken.", code="exists") from None
        return StaffView.from_doc(doc)

    async def open_account(
        self,
        ctx: AuditContext,
        *,
        username: str,
        name: str,
        role: str,
        org_id: str,
        is_agency_head: bool = False,
        password: str | None = None,
    ) -> tuple[StaffView, str | None]:
        """An administrator's new account: a one-time password (generated unless one is given,
        then shown once), changed at first login; the role waits for the security
        administrator. Returns the account and the generated password, if any."""
        generated = temporary_password() if password is None else None
        view = await self.create(
            ctx,
            username=username,
            password=generated or password or "",
            name=name,
            role=role,
            org_id=org_id,
            is_agency_head=is_agency_head,
            must_change_password=True,
        )
        return view, generated

    # --- roles: the security administrator ------------------------------------------------

    async def grant_role(
        self, ctx: AuditContext, staff_id: str, role: str | None, is_agency_head: bool
    ) -> StaffView:
        """Grant, change or (with None) withdraw an account's role; audited, the owner is
        notified and every session of the account ends (its authority changed)."""
        doc = await self._in_scope_doc(ctx, staff_id)
        if staff_id == ctx.identity.user_id:
            raise Conflict("You cannot change your own role.", code="self")
        new_role: Role | None = None
        if role is not None:
            try:
                new_role = Role(role)
            except ValueError:
                raise InvalidInput(f"Unknown role {role!r}.", details=[{"field": "role"}]) from None
            org = await self._orgs.get(str(doc["org_id"]))
            self._check_role_place(new_role, org, is_agency_head)
        elif is_agency_head:
            raise InvalidInput(
                "Only a county officer can be the agency head.",
                details=[{"field": "is_agency_head"}],
            )
        now = self._clock.now()
        notice = {
            "id": str(ObjectId()),
            "kind": "role_granted" if new_role is not None else "role_withdrawn",
            "at": now,
            "role": str(new_role) if new_role is not None else doc.get("role"),
            "is_agency_head": is_agency_head,
        }
        async with self._audit.change(
            ctx,
            "staff.grant_role",
            resource="staff",
            resource_id=staff_id,
            details={
                "from": doc.get("role"),
                "to": notice["role"] if new_role is not None else None,
                "is_agency_head": is_agency_head,
            },
        ):
            updated = await self._staff.find_one_and_update(
                {"_id": doc["_id"], "version": doc.get("version", 1)},
                {
                    "$set": {
                        "role": str(new_role) if new_role is not None else None,
                        "is_agency_head": is_agency_head,
                        "role_request": None,
                        "updated_at": now,
                    },
                    "$inc": {"version": 1},
                    "$push": {"notices": {"$each": [notice], "$slice": -MAX_NOTICES}},
                },
                return_document=ReturnDocument.AFTER,
            )
            if updated is None:
                raise Conflict("The account changed meanwhile; try again.", code="stale")
            await self._sessions.revoke_all(staff_id)
        return StaffView.from_doc(updated)

    # --- notices to the account's owner ----------------------------------------------------

    async def notices(self, identity: Identity) -> builtins.list[Notice]:
        doc = await self.get_doc(identity.user_id or "")
        return [Notice.from_doc(n) for n in doc.get("notices") or []]

    async def dismiss_notices(self, identity: Identity) -> None:
        """The owner has read their notices: drop those shown so far (not one added since)."""
        await self._staff.update_one(
            {"_id": parse_id(identity.user_id or "", "staff member")},
            {"$pull": {"notices": {"at": {"$lte": self._clock.now()}}}},
        )

    # --- administration -----------------------------------------------------------------------

    async def _in_scope_doc(self, ctx: AuditContext, staff_id: str) -> dict[str, Any]:
        doc = await self.get_doc(staff_id)
        if not ctx.identity.reaches(doc["org_path"]):
            raise NotFound("No such staff member.")
        return doc

    async def id_for_username(self, username: str) -> str:
        doc = await self._staff.find_one({"username": normalise_username(username)}, {"_id": 1})
        if doc is None:
            raise NotFound("No such staff member.")
        return str(doc["_id"])

    async def reset_password(self, ctx: AuditContext, staff_id: str) -> str:
        """Give the account a temporary password, to be changed at next login; revoke tokens.

        三员分立: an administrator who resets another's password sees the one-time password
        and could sign in first, so a case role the account holds is suspended: it goes back
        to a request awaiting the security administrator, as for a newly opened account. The
        operator at the command line (unscoped, holding the master key anyway) keeps it."""
        doc = await self._in_scope_doc(ctx, staff_id)
        role = doc.get("role")
        if (
            not ctx.identity.unscoped
            and ctx.identity.user_id != staff_id
            and role in (Role.SECURITY_ADMIN, Role.AUDIT_ADMIN)
        ):
            # Signing in first as the security administrator would let the resetter grant
            # itself case roles; nobody is left to re-grant the role if it were suspended.
            raise Forbidden(
                "A security or audit administrator's password is reset at the command line "
                "(python -m server admin reset-password).",
                code="reset_at_command_line",
            )
        password = temporary_password()
        password_hash = await self._hasher.hash(password)
        now = self._clock.now()
        suspend = (
            not ctx.identity.unscoped
            and ctx.identity.user_id != staff_id
            and role is not None
            and Role(role) in CASE_ROLES
        )
        notices: list[dict[str, Any]] = [
            {"id": str(ObjectId()), "kind": "password_reset", "at": now, "role": None}
        ]
        update: dict[str, Any] = {
            "password_hash": password_hash,
            "must_change_password": True,
            "updated_at": now,
        }
        if suspend:
            is_head = bool(doc.get("is_agency_head"))
            update |= {
                "role": None,
                "is_agency_head": False,
                "role_request": {
                    "role": role,
                    "is_agency_head": is_head,
                    "by": ctx.identity.user_id,
                    "at": now,
                    "reason": "password_reset",
                },
            }
            notices.append(
                {
                    "id": str(ObjectId()),
                    "kind": "role_suspended",
                    "at": now,
                    "role": role,
                    "is_agency_head": is_head,
                }
            )
        async with self._audit.change(
            ctx,
            "staff.reset_password",
            resource="staff",
            resource_id=staff_id,
            details={"role_suspended": role if suspend else None},
        ):
            # Conditional on the version: a grant landing meanwhile must not be undone unseen.
            result = await self._staff.update_one(
                {"_id": doc["_id"], "version": doc.get("version", 1)},
                {
                    "$set": update,
                    "$inc": {"version": 1},
                    # The owner learns of it at their next login: a reset they did not ask
                    # for is the trace of an administrator signing in as them.
                    "$push": {"notices": {"$each": notices, "$slice": -MAX_NOTICES}},
                },
            )
            if result.matched_count != 1:
                raise Conflict("The account changed meanwhile; try again.", code="stale")
            await self._sessions.revoke_all(staff_id)
            if suspend and role is not None:
                await self._tell_security_admins(doc, role, now)
        return password

    async def _tell_security_admins(self, doc: dict[str, Any], role: str, now: dt.datetime) -> None:
        """A notice to every security administrator whose scope holds the account: a role
        awaits their grant again."""
        await self._staff.update_many(
            {
                "role": str(Role.SECURITY_ADMIN),
                "disabled": {"$ne": True},
                "org_id": {"$in": [ObjectId(node) for node in doc["org_path"]]},
            },
            {
                "$push": {
                    "notices": {
                        "$each": [
                            {
                                "id": str(ObjectId()),
                                "kind": "role_review",
                                "at": now,
                                "role": role,
                                "is_agency_head": bool(doc.get("is_agency_head")),
                                "staff_id": str(doc["_id"]),
                                "username": doc["username"],
                            }
                        ],
                        "$slice": -MAX_NOTICES,
                    }
                }
            },
        )

    async def set_disabled(self, ctx: AuditContext, staff_id: str, disabled: bool) -> StaffView:
        doc = await self._in_scope_doc(ctx, staff_id)
        if staff_id == ctx.identity.user_id and disabled:
            raise Conflict("You cannot disable your own account.", code="self")
        action = "staff.disable" if disabled else "staff.enable"
        async with self._audit.change(ctx, action, resource="staff", resource_id=staff_id):
            updated = await self._staff.find_one_and_update(
                {"_id": doc["_id"]},
                {
                    "$set": {"disabled": disabled, "updated_at": self._clock.now()},
                    "$inc": {"version": 1},
                },
                return_document=ReturnDocument.AFTER,
            )
            updated = still_there(updated)
            if disabled:
                await self._sessions.revoke_all(staff_id)
        return StaffView.from_doc(updated)

    async def move(self, ctx: AuditContext, staff_id: str, org_id: str) -> StaffView:
        """Move a staff member to another node; audited, and their sessions end (scope changed)."""
        doc = await self._in_scope_doc(ctx, staff_id)
        target = await self._orgs.get(org_id)
        if not ctx.identity.reaches(target.path):
            raise NotFound("No such organisation.")
        role = doc.get("role") or (doc.get("role_request") or {}).get("role")
        if role:
            self._check_role_place(Role(role), target, bool(doc.get("is_agency_head")))
        async with self._audit.change(
            ctx,
            "staff.move",
            resource="staff",
            resource_id=staff_id,
            details={"from_org_id": str(doc["org_id"]), "to_org_id": target.id},
        ):
            updated = await self._staff.find_one_and_update(
                {"_id": doc["_id"]},
                {
                    "$set": {
                        "org_id": ObjectId(target.id),
                        "org_path": list(target.path),
                        "updated_at": self._clock.now(),
                    },
                    "$inc": {"version": 1},
                },
                return_document=ReturnDocument.AFTER,
            )
            updated = still_there(updated)
            await self._sessions.revoke_all(staff_id)
        return StaffView.from_doc(updated)

    # --- the caller's own account ----------------------------------------------------------

    async def change_own_password(
        self, ctx: AuditContext, current_password: str, new_password: str
    ) -> None:
        doc = await self.get_doc(ctx.identity.user_id or "")
        if not await self._hasher.verify(doc["password_hash"], current_password):
            raise InvalidInput(
                "The current password is wrong.",
                details=[{"field": "current_password"}],
                code="wrong_password",
            )
        check_password_policy(new_password, doc["username"])
        if await self._hasher.verify(doc["password_hash"], new_password):
            raise InvalidInput(
                "The new password must differ from the current one.",
                details=[{"field": "new_password"}],
            )
        password_hash = await self._hasher.hash(new_password)
        async with self._audit.change(
            ctx, "staff.change_password", resource="staff", resource_id=str(doc["_id"])
        ):
            await self._staff.update_one(
                {"_id": doc["_id"]},
                {
                    "$set": {
                        "password_hash": password_hash,
                        "must_change_password": False,
                        "updated_at": self._clock.now(),
                    },
                    "$inc": {"version": 1},
                },
            )
            # Every token ends, this one included: whoever may have learnt the old password
            # must not keep a session opened with it.
            await self._sessions.revoke_all(str(doc["_id"]))

    async def begin_totp(self, identity: Identity) -> tuple[str, str]:
        doc = await self.get_doc(identity.user_id or "")
        if doc.get("totp_secret"):
            raise Conflict("A second factor is already enrolled.", code="already_enrolled")
        secret = totp.new_secret()
        sealed = await self._codec.seal_secret("staff", str(doc["_id"]), "totp_pending", secret)
        await self._staff.update_one({"_id": doc["_id"]}, {"$set": {"totp_pending_secret": sealed}})
        return secret, totp.provisioning_uri(secret, doc["username"])

    async def confirm_totp(self, ctx: AuditContext, code: str) -> None:
        doc = await self.get_doc(ctx.identity.user_id or "")
        sealed_pending = doc.get("totp_pending_secret")
        if doc.get("totp_secret") or not sealed_pending:
            raise Conflict("No enrolment is in progress.", code="no_enrolment")
        staff_id = str(doc["_id"])
        pending = await self._codec.open("staff", staff_id, "totp_pending", sealed_pending)
        step = totp.matching_step(pending, code, self._clock.now())
        if step is None:
            raise InvalidInput("The code is wrong.", details=[{"field": "code"}], code="wrong_code")
        sealed = await self._codec.seal_secret("staff", staff_id, "totp_secret", pending)
        async with self._audit.change(
            ctx, "staff.totp_enrol", resource="staff", resource_id=staff_id
        ):
            await self._staff.update_one(
                {"_id": doc["_id"], "totp_pending_secret": sealed_pending},
                {
                    "$set": {
                        "totp_secret": sealed,
                        "totp_pending_secret": None,
                        "totp_last_step": step,
                    }
                },
            )

    async def consume_totp(self, doc: dict[str, Any], code: str | None) -> bool:
        """Whether `code` is valid for the account and unused: each step's code works once."""
        sealed = doc.get("totp_secret")
        if not sealed or not code:
            return False
        secret = await self._codec.open("staff", str(doc["_id"]), "totp_secret", sealed)
        step = totp.matching_step(secret, code, self._clock.now())
        if step is None:
            return False
        # Conditional on the last step so two concurrent logins cannot both use one code.
        result = await self._staff.update_one(
            {"_id": doc["_id"], "totp_last_step": {"$lt": step}},
            {"$set": {"totp_last_step": step}},
        )
        return result.modified_count == 1

    async def rehash_if_needed(self, doc: dict[str, Any], password: str) -> None:
        if self._hasher.needs_rehash(doc["password_hash"]):
            await self._staff.update_one(
                {"_id": doc["_id"]}, {"$set": {"password_hash": await self._hasher.hash(password)}}
            )

    # --- bulk import -----------------------------------------------------------------------

    async def import_csv(self, ctx: AuditContext, text: str) -> builtins.list[ImportedAccount]:
        """Create every account in a CSV file, or none: a bad row is reported by line number."""
        rows, problems = self._read_rows(text)
        seen: dict[str, int] = {}
        orgs: dict[str, Org | None] = {}
        prepared: list[tuple[int, dict[str, Any]]] = []
        for line, row in rows:
            try:
                username, name = self._validate_identity_fields(row["username"], row["name"])
            except InvalidInput as exc:
                problems.append(ImportProblem(line, exc.details[0]["field"], exc.message))
                continue
            if username in seen:
                problems.append(ImportProblem(line, "username", f"repeats line {seen[username]}"))
                continue
            seen[username] = line
            try:
                role = Role(row["role"].strip())
            except ValueError:
                problems.append(ImportProblem(line, "role", f"unknown role {row['role']!r}"))
                continue
            code = row["org_code"].strip()
            if code not in orgs:
                orgs[code] = await self._orgs.by_code(code)
            org = orgs[code]
            if org is None or (not ctx.identity.reaches(org.path)):
                problems.append(ImportProblem(line, "org_code", f"no organisation {code!r}"))
                continue
            head_raw = (row.get("is_agency_head") or "").strip().lower()
            if head_raw not in ("", "0", "1", "true", "false", "yes", "no", "是", "否"):
                problems.append(ImportProblem(line, "is_agency_head", "must be 1 or 0"))
                continue
            is_head = head_raw in ("1", "true", "yes", "是")
            try:
                self._check_role_place(role, org, is_head)
            except InvalidInput as exc:
                problems.append(ImportProblem(line, exc.details[0]["field"], exc.message))
                continue
            prepared.append(
                (
                    line,
                    {
                        "username": username,
                        "name": name,
                        "role": role,
                        "org": org,
                        "is_agency_head": is_head,
                    },
                )
            )
        if prepared:
            taken = {
                doc["username"]
                async for doc in self._staff.find(
                    {"username": {"$in": [fields["username"] for _, fields in prepared]}},
                    {"username": 1},
                )
            }
            problems += [
                ImportProblem(line, "username", "already exists")
                for line, fields in prepared
                if fields["username"] in taken
            ]
        if problems:
            raise InvalidInput(
                f"The file has {len(problems)} bad row(s); nothing was imported.",
                details=[
                    {"line": p.line, "field": p.field, "message": p.message}
                    for p in sorted(problems, key=lambda p: p.line)
                ],
                code="bad_rows",
            )
        accounts: list[ImportedAccount] = []
        docs = []
        for _, fields in prepared:
            password = temporary_password()
            docs.append(
                self._new_doc(
                    username=fields["username"],
                    name=fields["name"],
                    role=fields["role"],
                    org=fields["org"],
                    is_agency_head=fields["is_agency_head"],
                    password_hash=await self._hasher.hash(password),
                    must_change_password=True,
                    granted_by=ctx.identity,
                )
            )
            accounts.append(ImportedAccount(fields["username"], password))
        # All or nothing, also against a concurrent creation of one of these usernames.
        async with (
            self._audit.change(ctx, "staff.import", resource="staff", details={"count": len(docs)}),
            self._store.transaction() as session,
        ):
            try:
                await self._staff.insert_many(docs, ordered=True, session=session)
            except DuplicateKeyError:
                raise Conflict(
                    "An account in the file was created meanwhile; nothing was imported.",
                    code="exists",
                ) from None
        return accounts

    def _read_rows(
        self, text: str
    ) -> tuple[builtins.list[tuple[int, dict[str, str]]], builtins.list[ImportProblem]]:
        text = text.removeprefix("\ufeff")  # Excel writes UTF-8 CSV with a byte-order mark
        reader = csv.DictReader(io.StringIO(text, newline=""))
        header = [name.strip() for name in (reader.fieldnames or [])]
        missing = [column for column in IMPORT_COLUMNS[:4] if column not in header]
        if missing:
            raise InvalidInput(
                "The header row must name " + ", ".join(IMPORT_COLUMNS[:4]) + ".",
                details=[
                    {"line": 1, "field": column, "message": "missing column"} for column in missing
                ],
                code="bad_rows",
            )
        reader.fieldnames = header
        rows: list[tuple[int, dict[str, str]]] = []
        problems: list[ImportProblem] = []
        for row in reader:
            line = reader.line_num
            if len(rows) >= MAX_IMPORT_ROWS:
                raise InvalidInput(
                    f"A file may hold at most {MAX_IMPORT_ROWS} accounts.", code="too_many_rows"
                )
            if None in row:
                problems.append(ImportProblem(line, "(row)", "more fields than the header"))
                continue
            cleaned = {key: (value or "") for key, value in row.items()}
            if not any(value.strip() for value in cleaned.values()):
                continue
            rows.append((line, cleaned))
        if not rows and not problems:
            raise InvalidInput("The file holds no accounts.", code="bad_rows")
        return rows, problems

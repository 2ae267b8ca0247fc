"""Mini-program accounts: WeChat login, the binding of a WeChat user to a person, guardian or
staff member, and the sessions that carry it. The WeChat session key stays here, sealed."""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from pymongo import ASCENDING, IndexModel, ReturnDocument
from pymongo.errors import DuplicateKeyError

from models.audit import AuditContext, AuditService
from models.bindings import BindingCodeService, IssuedCode
from models.checkin_state import STATES, CheckinStates
from models.clock import LOCAL_TZ, Clock
from models.codec import FieldCodec
from models.errors import BadRequest, Conflict, Forbidden, Locked, RateLimited, Unavailable
from models.identity import Identity
from models.policy import MpRole
from models.scope import ScopeService
from models.sessions import SessionService
from models.staff import StaffService
from models.store import CollectionSpec, OrderedWriteError, Store, Write
from models.subjects import ADULT_AGE, SubjectService, SubjectStatus, minor_on
from models.throttle import ThrottleService
from models.wechat import (
    WeChatBusy,
    WeChatInvalidCode,
    WeChatPort,
    WeChatQuota,
    WeChatUnavailable,
)

log = logging.getLogger("anbang.mp_accounts")

WECHAT_USERS = CollectionSpec(
    "wechat_users",
    # Re-binding finds whoever held the binding before (a person has one WeChat at a time).
    (IndexModel([("binding.target_id", ASCENDING), ("binding.kind", ASCENDING)], sparse=True),),
)
BIND = "mp_bind"


@dataclass(frozen=True)
class MpLogin:
    token: str
    expires_at: dt.datetime
    bound: bool
    role: str | None


@dataclass(frozen=True)
class MpBinding:
    role: str
    subject_id: str | None


class MpAccountService:
    collections = (WECHAT_USERS,)

    def __init__(
        self,
        store: Store,
        clock: Clock,
        audit: AuditService,
        codec: FieldCodec,
        wechat: WeChatPort,
        sessions: SessionService,
        bindings: BindingCodeService,
        subjects: SubjectService,
        staff: StaffService,
        throttle: ThrottleService,
        *,
        scope: ScopeService,
        states: CheckinStates,
    ):
        self._users = store.collection(WECHAT_USERS)
        self._states = states
        self._clock = clock
        self._audit = audit
        self._codec = codec
        self._wechat = wechat
        self._sessions = sessions
        self._bindings = bindings
        self._subjects = subjects
        self._scope = scope
        self._staff = staff
        self._throttle = throttle
        self._login_listeners: list[Callable[[Identity], Awaitable[None]]] = []

    def on_login(self, listener: Callable[[Identity], Awaitable[None]]) -> None:
        """Run `listener` after each login and binding (check-ins load the person's context
        ahead)."""
        self._login_listeners.append(listener)

    async def login(self, ctx: AuditContext, code: str) -> MpLogin:
        """Exchange a `wx.login` code for our own session; the caller learns whether (and as
        whom) this WeChat user is bound, never WeChat's session key."""
        await self._throttle.count_address_attempt("mp_login", ctx.remote_ip or "")
        try:
            session = await self._wechat.code_to_session(code)
        except WeChatInvalidCode:
            self._throttle.refused("mp_login", "invalid_code")
            raise BadRequest(
                "The login code is invalid or has expired.",
                code="invalid_login_code",
                message_zh="登录凭证无效或已过期，请重新进入小程序。",
            ) from None
        except WeChatQuota:
            raise RateLimited(
                "WeChat's quota is exhausted; try again later.",
                message_zh="微信服务繁忙，请稍后再试。",
            ) from None
        except (WeChatBusy, WeChatUnavailable):
            raise Unavailable(
                "WeChat is not answering; try again shortly.",
                message_zh="微信服务暂时不可用，请稍后重试。",
            ) from None
        user_id = await self.user_id_for(session.openid)
        now = self._clock.now()
        # One read brings the WeChat user's binding and, for a person, their check-in state.
        found = await (
            await self._users.aggregate(
                [
                    {"$match": {"_id": user_id}},
                    {
                        "$lookup": {
                            "from": STATES.name,
                            "localField": "binding.target_id",
                            "foreignField": "_id",
                            "as": "state",
                        }
                    },
                ]
            )
        ).to_list()
        doc: dict[str, Any] = found[0] if found else {"_id": user_id}
        joined: list[dict[str, Any]] = doc.pop("state", None) or []
        identity, current = await self._identity_now(doc, joined[0] if joined else None)
        issued, ours = self._sessions.prepare(identity)
        user_write = Write(
            WECHAT_USERS.name,
            filter={"_id": user_id},
            update={
                "$set": {
                    "session_key": await self._codec.seal_secret(
                        "wechat_users", user_id, "session_key", session.session_key
                    ),
                    "last_login_at": now,
                },
                "$setOnInsert": {
                    "openid": await self._codec.seal_secret(
                        "wechat_users", user_id, "openid", session.openid
                    ),
                    "created_at": now,
                },
            },
            upsert=True,
        )

        def writes(entry: str) -> list[Write]:
            # The entry first, the WeChat user's new session key, then the session naming the
            # entry: no session without its entry.
            assert ours.document is not None
            ours.document["audit_entry"] = entry
            return [user_write, ours]

        for attempt in range(2):
            try:
                await self._audit.record_with(
                    AuditContext(identity, ctx.request_id, ctx.remote_ip, ctx.client_request_id),
                    "mp.login",
                    writes,
                    resource="wechat_user",
                    resource_id=user_id,
                    subject_id=identity.subject_id,
                    details={"bound": identity.role is not None, "role": identity.role},
                    outcome="ok",
                )
                break
            except OrderedWriteError as exc:
                # A first login tapped twice, on a server that does not retry such an upsert
                # itself: the other created the user first and nothing after it ran (the
                # outcome entry says so). Once more, as an update of the user now there.
                if attempt or not (exc.index == 1 and isinstance(exc.cause, DuplicateKeyError)):
                    raise exc.cause from None
        self._sessions.issued(issued, ours)
        if not current:
            # The person's check-in state was missing or old: built now, not at the check-in.
            await self._signed_in(identity)
        return MpLogin(issued.token, issued.expires_at, identity.role is not None, identity.role)

    async def _signed_in(self, identity: Identity) -> None:
        for listener in self._login_listeners:
            try:
                await listener(identity)
            except Exception as exc:  # a warm-up that fails costs speed, never the login
                log.warning(
                    "login listener failed", extra={"fields": {"error": type(exc).__name__}}
                )

    async def _identity(self, doc: dict[str, Any]) -> Identity:
        binding = doc.get("binding") or {}
        person = binding and binding["kind"] != "staff"
        state = await self._states.read(str(binding["target_id"])) if person else None
        return (await self._identity_now(doc, state))[0]

    async def _identity_now(
        self, doc: dict[str, Any], state: dict[str, Any] | None
    ) -> tuple[Identity, bool]:
        """Who a WeChat user acts as now: its binding, re-read so a disabled account, a moved
        file or a closed one is never acted for on an old snapshot; and whether the person's
        check-in state is current (it was read for this, and its key unwrapped)."""
        user_id = str(doc["_id"])
        unbound = Identity(user_id=user_id, channel="mp", wechat_user_id=user_id)
        binding = doc.get("binding")
        if not binding:
            return unbound, True
        if binding["kind"] == "staff":
            staff = await self._staff.lookup(binding["target_id"])
            if staff is None or staff.get("disabled"):
                return unbound, True
            identity = Identity(
                user_id=str(staff["_id"]),
                role=staff["role"],
                org_id=str(staff["org_id"]),
                org_path=tuple(staff["org_path"]),
                channel="mp",
                wechat_user_id=user_id,
            )
            return identity, True
        subject_id = str(binding["target_id"])
        # The check-in state carries the file's place and status, kept in step by every writer
        # of them: read instead of the file, it also readies the check-in that follows.
        subject: dict[str, Any] | None
        current = self._states.usable(state, self._clock.now())
        if current:
            assert state is not None
            subject = state["subject"]
            self._codec.adopt_key(state.get("key"))
        else:
            subject = await self._subjects.document(subject_id)
        if subject is None or subject.get("status") == SubjectStatus.SHREDDED:
            return unbound, True
        identity = Identity(
            user_id=user_id,
            role=binding["kind"],
            org_id=str(subject["org_id"]),
            org_path=tuple(subject["org_path"]),
            channel="mp",
            subject_id=str(subject["_id"]),
            wechat_user_id=user_id,
        )
        return identity, current

    async def bind(self, ctx: AuditContext, code: str) -> MpBinding:
        """Redeem a binding code for the calling WeChat user. Attempts are limited per WeChat
        user and per address; a new binding replaces the target's previous WeChat user."""
        user_id = ctx.identity.wechat_user_id
        if ctx.identity.channel != "mp" or user_id is None:
            raise Forbidden("Binding is done from the mini-program.", code="mp_only")
        await self._throttle.count_address_attempt(BIND, ctx.remote_ip or "")
        try:
            await self._throttle.check_account(BIND, user_id)
        except Locked:
            raise RateLimited(
                "Too many wrong binding codes; try again later.",
                retry_after=15 * 60,
                message_zh="绑定码错误次数过多，请稍后再试。",
            ) from None
        issued = await self._bindings.redeem(code)
        if issued is None:
            await self._throttle.record_failure(BIND, user_id)
            await self._audit.record(
                ctx, "mp.bind", resource="wechat_user", resource_id=user_id, outcome="refused"
            )
            raise BadRequest(
                "The binding code is invalid, expired or used.",
                code="invalid_binding_code",
                message_zh="绑定码无效或已过期，请向您的工作人员重新获取。",
            )
        kind, target_id = issued["purpose"], str(issued["target_id"])
        binding = {"kind": kind, "target_id": target_id, "bound_at": self._clock.now()}
        async with self._audit.change(
            ctx,
            "mp.bind",
            resource="wechat_user",
            resource_id=user_id,
            subject_id=None if kind == "staff" else target_id,
            details={"kind": kind},
        ):
            # Re-binding: whoever held this person's (or account's) binding loses it, with
            # their sessions; a guardian binding does not displace the person's own.
            async for previous in self._users.find(
                {"binding.target_id": target_id, "binding.kind": kind}, {"_id": 1}
            ):
                if previous["_id"] == user_id:
                    continue
                await self._users.update_one({"_id": previous["_id"]}, {"$unset": {"binding": ""}})
                await self._sessions.rebind(
                    str(previous["_id"]),
                    Identity(
                        user_id=str(previous["_id"]),
                        channel="mp",
                        wechat_user_id=str(previous["_id"]),
                    ),
                )
            doc = await self._users.find_one_and_update(
                {"_id": user_id},
                {"$set": {"binding": binding}},
                return_document=ReturnDocument.AFTER,
            )
            if doc is None:
                raise Forbidden("Sign in again first.", code="mp_only")
            identity = await self._identity(doc)
            await self._sessions.rebind(user_id, identity)
        await self._throttle.clear_account(BIND, user_id)
        await self._signed_in(identity)
        return MpBinding(role=str(identity.role), subject_id=None if kind == "staff" else target_id)

    async def logout(self, ctx: AuditContext) -> None:
        """End this WeChat session (the binding stays: the next login is bound again)."""
        if ctx.identity.session_id:
            await self._sessions.revoke(ctx.identity.session_id)
            await self._audit.record(
                ctx,
                "mp.logout",
                resource="wechat_user",
                resource_id=ctx.identity.wechat_user_id,
                subject_id=ctx.identity.subject_id,
            )

    async def issue_code(self, ctx: AuditContext, subject_id: str, purpose: str) -> IssuedCode:
        """A worker issues the person (or their guardian) a single-use binding code."""
        subject = await self._scope.require(ctx, subject_id, "subjects.binding_code")
        if subject.get("status") == SubjectStatus.SHREDDED:
            raise Forbidden("This case file was erased.", code="shredded")
        if purpose == MpRole.GUARDIAN and not await self._has_guardian(subject):
            # A guardian acts on the person's file from WeChat: only a mental-health patient
            # (精神卫生法 Art. 28) or a minor (民法典 Art. 27) has one; an adult acts alone.
            raise Conflict(
                "Only a mental-health patient or a minor has a guardian to bind.",
                code="no_guardian",
                details={"field": "role"},
                message_zh="只有精神障碍患者或未成年人可以绑定监护人。",
            )
        return await self._bindings.issue_for_subject(ctx, subject_id, purpose)

    async def guardian_is_told(self, subject_id: str) -> bool:
        """Whether a guardian bound to the person hears of decisions about them today: the
        rule a guardian code is issued under, asked again now (a minor comes of age)."""
        subject = await self._subjects.document(subject_id)
        return subject is not None and await self._has_guardian(subject)

    async def _has_guardian(self, subject: dict[str, Any]) -> bool:
        if "mental_health" in (subject.get("populations") or []):
            return True
        sealed = (subject.get("enc") or {}).get("birth_date")
        if sealed is None:
            return False
        birth = await self._codec.open("subjects", str(subject["_id"]), "birth_date", sealed)
        today = self._clock.now().astimezone(LOCAL_TZ).date()
        # One rule with the case file: 周岁 is reached the day after the 18th birthday.
        return minor_on(dt.date.fromisoformat(str(birth)), today, ADULT_AGE)

    async def user_id_for(self, openid: str) -> str:
        """Our user id for a WeChat openid (a keyed hash: the openid itself is kept sealed)."""
        return await self._codec.blind_index("openid", openid)

    async def openid(self, wechat_user_id: str) -> str | None:
        """The WeChat openid behind one of our users (for a subscribe message)."""
        doc = await self._users.find_one({"_id": wechat_user_id}, {"openid": 1})
        if doc is None:
            return None
        return str(await self._codec.open("wechat_users", wechat_user_id, "openid", doc["openid"]))

    async def users_for(self, recipient: str, audience: list[str] | None = None) -> list[str]:
        """The WeChat users a message to `subject:<id>` (the person and any guardian, or only
        those in `audience`) or `staff:<id>` reaches."""
        kind, _, target = recipient.partition(":")
        kinds = [str(MpRole.SUBJECT), str(MpRole.GUARDIAN)] if kind == "subject" else ["staff"]
        if kind == "subject" and audience is not None:
            kinds = [k for k in kinds if k in audience]
        return [
            str(doc["_id"])
            async for doc in self._users.find({"binding.target_id": target}, {"binding": 1})
            if doc["binding"]["kind"] in kinds
        ]

"""The composition root: build the database handle, services and adapters once, and inject them."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import cache
from typing import Any

import tornado.web

from handlers import (
    absences,
    admin,
    alerts,
    assistance,
    audit_log,
    auth,
    caseload,
    checkins,
    counseling,
    dashboard,
    documents,
    elocation,
    leave,
    obligations,
    ops,
    programs,
    psychiatric_referrals,
    reports,
    sanctions,
    subjects,
    transfers,
    wellbeing,
)
from handlers.base import AppContext, NotFoundHandler, log_request
from handlers.console import audit as console_audit
from handlers.console import casefile as console_casefile
from handlers.console import casework as console_casework
from handlers.console import contact as console_contact
from handlers.console import dashboard as console_dashboard
from handlers.console import documents as console_documents
from handlers.console import operations as console_operations
from handlers.console import oversight as console_oversight
from handlers.console import pages as console
from handlers.console.pages import TEMPLATES as CONSOLE_TEMPLATES
from handlers.openapi import build_openapi
from miniprogram_api import auth as mp_auth
from miniprogram_api import checkins as mp_checkins
from miniprogram_api import consents as mp_consents
from miniprogram_api import documents as mp_documents
from miniprogram_api import me as mp_me
from miniprogram_api import push as wechat_push
from miniprogram_api import records as mp_records
from miniprogram_api import requests as mp_requests
from miniprogram_api import uploads as mp_uploads
from miniprogram_api import worker as mp_worker
from miniprogram_api.notifier import LocalSms, SmsPort, WeChatNotifier
from miniprogram_api.wechat import StableTokenSource, WeChatAdapter
from models.absences import AbsenceService
from models.alerts import AlertService
from models.assistance import AssistanceService
from models.attachments import AttachmentService
from models.audit import AuditContext, AuditService, ChainAnchor
from models.auth import AuthService
from models.bindings import BindingCodeService
from models.case_roster import CaseRoster
from models.caseload import CaseloadService
from models.checkin_state import CheckinStates
from models.checkins import CheckinService, FaceVerificationPort, LocalFaceVerifier
from models.clock import Clock, SystemClock
from models.codec import FieldCodec
from models.consents import ConsentService
from models.content_check import ContentCheckService
from models.counseling import CounselingService
from models.crypto import Suite
from models.dashboard import DashboardService
from models.decision_notices import DecisionNoticeService
from models.documents import DocumentService, DocumentTemplates
from models.elocation import ElocationService
from models.errors import Conflict
from models.health import ReadinessService
from models.hsm import MasterKeyMissing, Pkcs11MasterKey
from models.idempotency import IdempotencyService
from models.identity import Identity
from models.investigations import InvestigationService
from models.keys import KeyVault, LocalKeyFile, MasterKeyError
from models.leases import LeaseService
from models.leave import LeaveService
from models.mp_accounts import MpAccountService
from models.notifications import DeliveryLog, LocalNotifier, NotificationService, NotifierPort
from models.obligations import OCCURRENCES, ObligationService
from models.orgs import OrgKind, OrgService
from models.passwords import HashCost, PasswordHasher
from models.policy import Policy
from models.programs import ProgramService
from models.psychiatric_referrals import PsychiatricReferralService
from models.registry import Services, declared_collections, sealed_holders
from models.reports import ReportService
from models.resealing import Resealer
from models.rules import RuleBook, RulesService
from models.sanctions import SanctionService
from models.scope import ScopeService
from models.sessions import SessionService
from models.staff import StaffService
from models.store import CollectionSpec, DatabaseSettings, Store
from models.subject_import import SubjectImportService
from models.subjects import SubjectService
from models.telemetry import NullTelemetry, Telemetry
from models.throttle import ThrottleService
from models.transfers import TransferService
from models.uploads import UploadService
from models.wechat import WeChatTokenService
from models.wechat_push import WeChatPushService
from models.wellbeing import Survey, WellbeingService
from models.window_history import WindowHistory
from models.workdays import WorkdayCalendar
from server.config import Config
from server.metrics import Metrics, request_logger

log = logging.getLogger("anbang.server")

API_TITLE = "Anbang (安帮) API"
API_VERSION = "0.1.0"


def all_routes() -> list[tuple[Any, ...]]:
    """Every route of the API process, gathered from each module's own route list."""
    return [
        *ops.routes,
        *auth.routes,
        *admin.routes,
        *subjects.routes,
        *programs.routes,
        *psychiatric_referrals.routes,
        *leave.routes,
        *sanctions.routes,
        *elocation.routes,
        *transfers.routes,
        *obligations.routes,
        *absences.routes,
        *wellbeing.routes,
        *counseling.routes,
        *caseload.routes,
        *alerts.routes,
        *checkins.routes,
        *assistance.routes,
        *audit_log.routes,
        *reports.routes,
        *dashboard.routes,
        *documents.routes,
        *mp_auth.routes,
        *mp_me.routes,
        *mp_uploads.routes,
        *mp_checkins.routes,
        *mp_requests.routes,
        *mp_records.routes,
        *mp_consents.routes,
        *mp_documents.routes,
        *mp_worker.routes,
        *wechat_push.routes,
    ]


def collection_specs() -> list[CollectionSpec]:
    """Every collection the services declare, for index creation at start."""
    return declared_collections(
        LeaseService, ThrottleService, AttachmentService, CaseRoster, WindowHistory, CheckinStates
    )


class DatabaseNotReady(Exception):
    pass


class DatabaseTooOld(DatabaseNotReady):
    """The server answers but is older than the release line this code is built and tested on."""


# MongoDB 8.0: the line production runs and the only one the tests exercise (the embedded database
# reports 8.2). The code's own features need 4.4 (docs/operations.md, "MongoDB server version").
MIN_SERVER_VERSION = (8, 0)
_VERSION = re.compile(r"(\d+)\.(\d+)(?:\.\d+)?(?:[-+][0-9A-Za-z.+-]*)?")


def require_server_version(version: object) -> None:
    """Refuse a server older than MIN_SERVER_VERSION, or one whose version cannot be read."""
    floor = ".".join(map(str, MIN_SERVER_VERSION))
    found = version.strip() if isinstance(version, str) else None
    match = _VERSION.fullmatch(found) if found else None
    if match is None:
        raise DatabaseTooOld(
            f"the database reported version {version!r}, which is not a MongoDB version; "
            f"Anbang needs MongoDB {floor} or later: check MONGODB_URI points at a MongoDB "
            "replica set"
        )
    # Majors and minors compared as numbers: "10.0" is newer than "8.0", "7.3" older.
    if (int(match[1]), int(match[2])) < MIN_SERVER_VERSION:
        raise DatabaseTooOld(
            f"the database is MongoDB {found}; Anbang needs MongoDB {floor} or later: "
            f"upgrade the replica set to {floor} (one major version at a time, setting "
            "featureCompatibilityVersion after each) or point MONGODB_URI at one that is"
        )


def connect_store(
    config: Config, *, operation_timeout_ms: int | None = None, metrics: Metrics | None = None
) -> Store:
    return Store.connect(
        DatabaseSettings(
            uri=config.database_uri,
            name=config.db_name,
            production=config.production,
            operation_timeout_ms=operation_timeout_ms,
            max_idle_time_ms=config.db_max_idle_ms,
            # Every command counted by name and outcome (server/metrics.py).
            event_listeners=(metrics.command_listener(),) if metrics else (),
        )
    )


async def wait_for_database(store: Store, seconds: float) -> None:
    """Wait until the database answers and check its version; else stop with a clear error."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    while not await store.ping(timeout_seconds=2.0):
        if loop.time() >= deadline:
            raise DatabaseNotReady(
                f"the database did not answer within {seconds:.0f} s; check MONGODB_URI "
                "(or start the embedded database with `python -m server db`)"
            )
        await asyncio.sleep(0.5)
    # One command per process start; every process (API, jobs, CLI) comes through here.
    info = await store.database.command("buildInfo")
    require_server_version(info.get("version"))


@dataclass
class ApiRuntime:
    """What one API process holds: its store, the injected context and the Tornado application."""

    store: Store
    context: AppContext
    app: tornado.web.Application
    services: Services
    # What the process's metrics listener serves (server/serving.py starts it).
    metrics: Metrics | None = None

    async def close(self) -> None:
        await self.services.close()
        await self.store.close()


def route_table(routes: Sequence[tuple[Any, ...]]) -> list[tornado.web.URLSpec]:
    """The API's routes and the console's, their patterns compiled. An application holds its
    table without changing it, so applications built over one process's databases (the test
    suite's, one per test) can share one table rather than each compiling 216 patterns."""
    # The console (HTML pages over the API) is served beside the API, not described by it.
    # The casework pages first: `/console/subjects/new` is not a case file's id.
    return [
        tornado.web.URLSpec(*route)
        for route in [
            *routes,
            *console_casework.routes,
            *console_contact.routes,
            *console_casefile.routes,
            *console_dashboard.routes,
            *console_documents.routes,
            *console.routes,
            *console_oversight.routes,
            *console_operations.routes,
            *console_audit.routes,
        ]
    ]


def make_app(
    context: AppContext,
    routes: Sequence[tuple[Any, ...]],
    log_function: Callable[[tornado.web.RequestHandler], None] = log_request,
    table: Sequence[tornado.web.URLSpec] | None = None,
) -> tornado.web.Application:
    """The application serving `routes` (the API's, which its OpenAPI document describes) and
    the console; `table`: `route_table(routes)` compiled already."""
    routes = list(routes)

    @cache
    def openapi() -> dict[str, Any]:
        return build_openapi(routes, title=API_TITLE, version=API_VERSION)

    context.openapi_factory = openapi
    return tornado.web.Application(
        list(table if table is not None else route_table(routes)),
        anbang=context,
        template_path=str(CONSOLE_TEMPLATES),
        default_handler_class=NotFoundHandler,
        log_function=log_function,
        serve_traceback=False,
        debug=False,
        # Tornado's own `_xsrf` cookie: HTTPS only in production, like every other cookie.
        xsrf_cookie_kwargs={"secure": True} if context.production else {},
    )


async def open_vault(config: Config, store: Store, clock: Clock) -> KeyVault:
    """The key vault under the configured master key; a missing or wrong key stops the process
    with a clear message, and a new key is never created over a vault that holds keys."""
    suite = Suite(config.crypto_suite)
    hsm = config.master_key_pkcs11
    if hsm is not None:
        # A key on the token is made only in the key ceremony (`admin keys hsm-create`), never
        # here; a key file still present opens what it wrapped until `rotate-master` moves it.
        previous = LocalKeyFile(config.master_key_file, suite)
        if previous.exists:
            previous.load()
        token = Pkcs11MasterKey(
            hsm.module,
            hsm.token,
            hsm.object,
            config.pkcs11_pin,
            suite,
            previous=previous if previous.exists else None,
        )
        vault = KeyVault(store, token, suite, clock)
        try:
            token.load()
        except MasterKeyMissing as exc:
            if await vault.holds_keys():
                raise MasterKeyError(
                    f"{exc}; this database's key vault holds keys: bring back the token's key "
                    "(a new key would make every record unreadable)"
                ) from None
            raise
        await vault.open()
        return vault
    provider = LocalKeyFile(config.master_key_file, suite)
    vault = KeyVault(store, provider, suite, clock)
    if config.master_key_file.exists():
        provider.load()
    elif await vault.holds_keys():
        raise MasterKeyError(
            f"the master key file {config.master_key_file} is missing, but this database's key "
            "vault holds keys: restore the file (a new key would make every record unreadable)"
        )
    else:
        provider.create()
    await vault.open()
    return vault


# The local stand-in's fixed development credentials (server/wechat_standin.py).
STANDIN_APPID = "wx-standin-appid"
STANDIN_SECRET = "standin-secret"  # noqa: S105 - a development value, not a credential


def wechat_credentials(config: Config) -> tuple[str, str]:
    """The configured WeChat app, or in development the local stand-in's."""
    if config.wechat_appid and config.wechat_secret:
        return config.wechat_appid, config.wechat_secret
    return STANDIN_APPID, STANDIN_SECRET


def wechat_token_source(config: Config) -> StableTokenSource:
    return StableTokenSource(config.wechat_base_url, *wechat_credentials(config))


def wechat_adapter(config: Config, tokens: WeChatTokenService) -> WeChatAdapter:
    """The WeChat client every process uses; the token is the one the jobs process stored."""
    appid, secret = wechat_credentials(config)

    async def current_token() -> str | None:
        return await tokens.current(appid)

    return WeChatAdapter(
        config.wechat_base_url,
        appid,
        secret,
        token_provider=current_token,
        token_refresher=tokens.renew,
        # A proxy from the environment only in production (an egress proxy); never for the
        # stand-in on loopback.
        trust_env=config.production,
    )


def build_services(
    store: Store,
    config: Config,
    clock: Clock,
    vault: KeyVault,
    hash_cost: HashCost | None = None,
    process_role: str = "api",
    notifier: NotifierPort | None = None,
    face: FaceVerificationPort | None = None,
    push_notifications: bool = False,
    sms: SmsPort | None = None,
    telemetry: Telemetry | None = None,
) -> Services:
    """Every domain service of one process, wired once (the WeChat token source included)."""
    hasher = PasswordHasher(hash_cost or HashCost())
    policy = Policy()
    codec = FieldCodec(vault=vault)
    # Reasons given about a person are sealed under the person's key in the audit log too.
    # Keyed chains, each opened and closed with an anchor in the export file.
    anchor = ChainAnchor(vault, config.audit_export)
    audit = AuditService(
        store=store,
        clock=clock,
        suite=vault.suite,
        process_role=process_role,
        anchor=anchor,
        codec=codec,
    )
    orgs = OrgService(store=store, clock=clock, audit=audit)
    sessions = SessionService(store=store, clock=clock)
    staff = StaffService(
        store=store,
        clock=clock,
        audit=audit,
        orgs=orgs,
        sessions=sessions,
        hasher=hasher,
        codec=codec,
    )
    throttle = ThrottleService(store=store, clock=clock)
    # What services report goes to the process's metrics (nowhere for tools and tests).
    telemetry = telemetry or NullTelemetry()
    throttle.report_to(telemetry)
    auth_service = AuthService(
        staff=staff,
        sessions=sessions,
        throttle=throttle,
        audit=audit,
        hasher=hasher,
        require_totp=config.require_totp,
    )
    rules = RulesService(store=store, clock=clock, audit=audit, orgs=orgs, book=RuleBook.load())
    alerts_service = AlertService(store=store, clock=clock, audit=audit, rules=rules, staff=staff)
    attachments = AttachmentService(store=store, vault=vault)
    scope = ScopeService(
        store=store,
        clock=clock,
        audit=audit,
        policy=policy,
        codec=codec,
        orgs=orgs,
        alerts=alerts_service,
    )
    checkin_states = CheckinStates(store=store)
    subjects_service = SubjectService(
        store=store,
        clock=clock,
        audit=audit,
        codec=codec,
        vault=vault,
        orgs=orgs,
        alerts=alerts_service,
        policy=policy,
        attachments=attachments,
        rules=rules,
        roster=CaseRoster(store=store),
        resealer=Resealer(store=store, codec=codec, attachments=attachments),
        scope=scope,
        states=checkin_states,
    )
    calendar = WorkdayCalendar.load()
    investigations = InvestigationService(
        store=store,
        clock=clock,
        audit=audit,
        codec=codec,
        subjects=subjects_service,
        orgs=orgs,
        rules=rules,
        calendar=calendar,
        scope=scope,
    )
    wechat_tokens = WeChatTokenService(
        store=store, clock=clock, codec=codec, source=wechat_token_source(config)
    )
    wechat = wechat_adapter(config, wechat_tokens)
    bindings = BindingCodeService(store=store, clock=clock, audit=audit)
    mp_accounts = MpAccountService(
        store=store,
        clock=clock,
        audit=audit,
        codec=codec,
        wechat=wechat,
        sessions=sessions,
        bindings=bindings,
        subjects=subjects_service,
        staff=staff,
        throttle=throttle,
        scope=scope,
        states=checkin_states,
    )
    consents = ConsentService(store=store, clock=clock, audit=audit)
    deliveries = DeliveryLog(store=store, clock=clock)
    deliveries.report_to(telemetry)
    if notifier is None and push_notifications:
        notifier = WeChatNotifier(
            wechat,
            mp_accounts,
            consents,
            subjects_service,
            deliveries,
            clock,
            sms or LocalSms(),
            templates=config.wechat_templates or None,
        )
    notifications = NotificationService(
        store=store, clock=clock, notifier=notifier or LocalNotifier(), codec=codec
    )
    # Every decision about a person becomes their message (and a guardian's where due).
    notices = DecisionNoticeService(
        notifications=notifications, subjects=subjects_service, accounts=mp_accounts
    )
    program_service = ProgramService(
        store=store,
        clock=clock,
        audit=audit,
        codec=codec,
        subjects=subjects_service,
        rules=rules,
        calendar=calendar,
        alerts=alerts_service,
        notices=notices,
        scope=scope,
    )
    obligation_service = ObligationService(
        store=store,
        clock=clock,
        audit=audit,
        programs=program_service,
        subjects=subjects_service,
        alerts=alerts_service,
        notifications=notifications,
        codec=codec,
        scope=scope,
        history=WindowHistory(store=store, clock=clock, source=OCCURRENCES),
        states=checkin_states,
    )
    # A change to a program replans what lies ahead.
    program_service.subscribe(obligation_service.reschedule)
    # A risk level reaching 3 opens a 转诊 task (严重精神障碍管理治疗工作规范 2018).
    referral_service = PsychiatricReferralService(
        store=store,
        clock=clock,
        audit=audit,
        codec=codec,
        subjects=subjects_service,
        rules=rules,
        scope=scope,
    )
    program_service.subscribe(referral_service.on_program_change)
    absence_service = AbsenceService(
        store=store,
        clock=clock,
        audit=audit,
        codec=codec,
        subjects=subjects_service,
        programs=program_service,
        alerts=alerts_service,
        scope=scope,
    )
    counseling_service = CounselingService(
        store=store,
        clock=clock,
        audit=audit,
        codec=codec,
        subjects=subjects_service,
        obligations=obligation_service,
        staff_lookup=staff.lookup,
        notices=notices,
        staff_in_scope=staff.list,
        scope=scope,
    )
    leave_service = LeaveService(
        store=store,
        clock=clock,
        audit=audit,
        codec=codec,
        subjects=subjects_service,
        programs=program_service,
        rules=rules,
        alerts=alerts_service,
        notices=notices,
        scope=scope,
    )
    sanction_service = SanctionService(
        store=store,
        clock=clock,
        audit=audit,
        codec=codec,
        subjects=subjects_service,
        programs=program_service,
        rules=rules,
        notices=notices,
        scope=scope,
    )
    # The agency-head check reads the account at decision time, not the session's snapshot.
    elocation_service = ElocationService(
        store=store,
        clock=clock,
        audit=audit,
        codec=codec,
        subjects=subjects_service,
        programs=program_service,
        rules=rules,
        staff=staff,
        sanctions=sanction_service,
        leave=leave_service,
        notices=notices,
        scope=scope,
    )
    # A handover moves every record that carries the person's station along with the file.
    transfer_service = TransferService(
        store=store,
        clock=clock,
        audit=audit,
        codec=codec,
        subjects=subjects_service,
        programs=program_service,
        orgs=orgs,
        rules=rules,
        calendar=calendar,
        relocators=(
            leave_service.relocate,
            sanction_service.relocate,
            elocation_service.relocate,
        ),
        notices=notices,
        scope=scope,
    )
    uploads = UploadService(
        store=store,
        audit=audit,
        codec=codec,
        attachments=attachments,
        subjects=subjects_service,
        clock=clock,
        states=checkin_states,
    )
    checkin_service = CheckinService(
        store=store,
        clock=clock,
        audit=audit,
        codec=codec,
        subjects=subjects_service,
        obligations=obligation_service,
        orgs=orgs,
        leave=leave_service,
        elocation=elocation_service,
        rules=rules,
        uploads=uploads,
        face=face or LocalFaceVerifier(),
        policy=policy,
        staff=staff,
        notices=notices,
        states=checkin_states,
        sessions=sessions,
    )
    assistance_service = AssistanceService(
        store=store,
        clock=clock,
        audit=audit,
        codec=codec,
        subjects=subjects_service,
        orgs=orgs,
        rules=rules,
        obligations=obligation_service,
        notifications=notifications,
        policy=policy,
        notices=notices,
        staff=staff,
        scope=scope,
    )
    checkin_service.report_to(telemetry)
    # A person who signs in is about to check in: their context is loaded ahead; a decision
    # on leave or e-location taken in this process reaches their next check-in at once.
    mp_accounts.on_login(checkin_service.prefetch)
    leave_service.on_change(checkin_service.forget)
    elocation_service.on_change(checkin_service.forget)
    # A check-in stored by a request that died before updating its window still counts.
    obligation_service.add_evidence_source(checkin_service.evidence_for)
    caseload_service = CaseloadService(
        store=store,
        clock=clock,
        audit=audit,
        codec=codec,
        subjects=subjects_service,
        sanctions=sanction_service,
        rules=rules,
        alerts=alerts_service,
        referrals=referral_service,
        scope=scope,
    )
    # Official documents are made from the records those services decide.
    document_service = DocumentService(
        store=store,
        clock=clock,
        audit=audit,
        codec=codec,
        subjects=subjects_service,
        orgs=orgs,
        programs=program_service,
        sanctions=sanction_service,
        leave=leave_service,
        elocation=elocation_service,
        transfers=transfer_service,
        investigations=investigations,
        templates=DocumentTemplates.load(),
        notices=notices,
        scope=scope,
    )
    # The survey a person may answer with a check-in: a need opens an assistance request, a
    # screen at its cut-off alerts the assigned worker.
    wellbeing_service = WellbeingService(
        store=store,
        clock=clock,
        audit=audit,
        codec=codec,
        subjects=subjects_service,
        rules=rules,
        assistance=assistance_service,
        alerts=alerts_service,
        survey=Survey.load(),
        scope=scope,
    )
    # Key rotation rewrites every field sealed with the person's key, wherever it is kept.
    wechat_push_service = WeChatPushService(
        store=store, clock=clock, audit=audit, codec=codec, consents=consents
    )
    reports_service = ReportService(
        store=store,
        clock=clock,
        audit=audit,
        orgs=orgs,
        subjects=subjects_service,
        staff_lookup=staff.lookup,
        scope=scope,
    )
    wechat_push_service.report_to(telemetry)
    services = Services(
        deliveries=deliveries,
        consents=consents,
        # Subscribe-message acceptances pushed by WeChat are recorded as consents.
        wechat_push=wechat_push_service,
        idempotency=IdempotencyService(store=store, clock=clock, codec=codec),
        assistance=assistance_service,
        absences=absence_service,
        wellbeing=wellbeing_service,
        documents=document_service,
        content_check=ContentCheckService(
            wechat=wechat, accounts=mp_accounts, enabled=config.msg_sec_check
        ),
        reports=reports_service,
        dashboard=DashboardService(
            clock=clock,
            audit=audit,
            orgs=orgs,
            programs=program_service,
            obligations=obligation_service,
            alerts=alerts_service,
            leave=leave_service,
            sanctions=sanction_service,
            reports=reports_service,
        ),
        wechat=wechat,
        mp_accounts=mp_accounts,
        uploads=uploads,
        checkins=checkin_service,
        wechat_tokens=wechat_tokens,
        caseload=caseload_service,
        psychiatric_referrals=referral_service,
        leave=leave_service,
        sanctions=sanction_service,
        elocation=elocation_service,
        transfers=transfer_service,
        counseling=counseling_service,
        notifications=notifications,
        notices=notices,
        obligations=obligation_service,
        investigations=investigations,
        rules=rules,
        programs=program_service,
        audit=audit,
        orgs=orgs,
        staff=staff,
        sessions=sessions,
        auth=auth_service,
        bindings=bindings,
        vault=vault,
        alerts=alerts_service,
        subjects=subjects_service,
        subject_import=SubjectImportService(subjects=subjects_service, orgs=orgs),
        scope=scope,
        policy=policy,
    )
    # Key rotation and shredding reach every record sealed with a person's key.
    for holder in sealed_holders(services):
        subjects_service.add_sealed_locations(holder.sealed_fields)
    return services


def assemble_api(
    store: Store,
    config: Config,
    vault: KeyVault,
    clock: Clock | None = None,
    *,
    hash_cost: HashCost | None = None,
    metrics: Metrics | None = None,
    table: Sequence[tornado.web.URLSpec] | None = None,
) -> ApiRuntime:
    """Build the services and the application around an open store and vault (tests too);
    `table`: `route_table(all_routes())`, when the caller has it compiled already."""
    clock = clock or SystemClock()
    metrics = metrics or Metrics("api", API_VERSION)
    services = build_services(store, config, clock, vault, hash_cost, telemetry=metrics)
    metrics.watch_review_queue(services.checkins, clock)

    async def keys_loaded() -> bool:
        return vault.ready

    context = AppContext(
        **{f.name: getattr(services, f.name) for f in dataclasses.fields(services)},
        readiness=ReadinessService({"database": store.ping, "keys": keys_loaded}),
        clock=clock,
        wechat_appid=services.wechat.appid,
        push_token=config.wechat_push_token,
        push_aes_key=config.wechat_push_aes_key,
        max_body_bytes=config.max_body_bytes,
        production=config.production,
        map_tiles=config.map_tiles,
    )
    return ApiRuntime(
        store=store,
        context=context,
        app=make_app(context, all_routes(), request_logger(metrics), table),
        services=services,
        metrics=metrics,
    )


SYSTEM = AuditContext(
    Identity(user_id="system", role="system", unscoped=True), request_id="bootstrap"
)


async def bootstrap_admin(services: Services, config: Config) -> bool:
    """Create the first sys_admin from ANBANG_BOOTSTRAP_ADMIN when no staff exist yet."""
    if not config.bootstrap_admin or await services.staff.any_exists():
        return False
    username, _, password = config.bootstrap_admin.partition(":")
    root = await services.orgs.by_code("root")
    if root is None:
        try:
            root = await services.orgs.create(
                SYSTEM,
                name="根节点",
                code="root",
                kind=OrgKind.CITY,
                parent_id=None,
            )
        except Conflict:
            root = await services.orgs.by_code("root")
    assert root is not None
    try:
        await services.staff.create(
            SYSTEM,
            username=username,
            password=password,
            name="系统管理员",
            role="sys_admin",
            org_id=root.id,
        )
    except Conflict:
        return False  # another process created it first
    log.info("bootstrap administrator created", extra={"fields": {"username": username}})
    return True


async def build_api(config: Config, *, clock: Clock | None = None) -> ApiRuntime:
    metrics = Metrics("api", API_VERSION)
    store = connect_store(
        config, operation_timeout_ms=config.db_operation_timeout_ms, metrics=metrics
    )
    try:
        await wait_for_database(store, config.db_wait_seconds)
        await store.ensure_indexes(collection_specs())
        vault = await open_vault(config, store, clock or SystemClock())
        runtime = assemble_api(store, config, vault, clock, metrics=metrics)
        await bootstrap_admin(runtime.services, config)
    except BaseException:
        await store.close()
        raise
    return runtime

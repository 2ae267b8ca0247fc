"""The domain services of one process, declared once: built by keyword in `server/app.py`, seen
by handlers through `AppContext` (which extends this) as typed fields."""

from __future__ import annotations

import logging
import typing
from dataclasses import dataclass, fields
from typing import Protocol

from models.absences import AbsenceService
from models.alerts import AlertService
from models.assistance import AssistanceService
from models.audit import AuditService
from models.auth import AuthService
from models.bindings import BindingCodeService
from models.caseload import CaseloadService
from models.checkins import CheckinService
from models.consents import ConsentService
from models.content_check import ContentCheckService
from models.counseling import CounselingService
from models.dashboard import DashboardService
from models.decision_notices import DecisionNoticeService
from models.documents import DocumentService
from models.elocation import ElocationService
from models.idempotency import IdempotencyService
from models.investigations import InvestigationService
from models.keys import KeyVault
from models.leave import LeaveService
from models.mp_accounts import MpAccountService
from models.notifications import DeliveryLog, NotificationService
from models.obligations import ObligationService
from models.orgs import OrgService
from models.policy import Policy
from models.programs import ProgramService
from models.psychiatric_referrals import PsychiatricReferralService
from models.reports import ReportService
from models.rules import RulesService
from models.sanctions import SanctionService
from models.scope import ScopeService
from models.sessions import SessionService
from models.staff import StaffService
from models.store import CollectionSpec
from models.subject_import import SubjectImportService
from models.subjects import SubjectService
from models.transfers import TransferService
from models.uploads import UploadService
from models.wechat import WeChatPort, WeChatTokenService
from models.wechat_push import WeChatPushService
from models.wellbeing import WellbeingService

log = logging.getLogger("anbang.server")


class WeChatClient(WeChatPort, Protocol):
    """The WeChat client a process holds (the adapter in `miniprogram_api/wechat.py`)."""

    @property
    def appid(self) -> str: ...

    async def close(self) -> None: ...


@dataclass
class Services:
    """The domain services of one process, wired once."""

    audit: AuditService
    orgs: OrgService
    staff: StaffService
    sessions: SessionService
    auth: AuthService
    bindings: BindingCodeService
    vault: KeyVault
    alerts: AlertService
    subjects: SubjectService
    subject_import: SubjectImportService
    scope: ScopeService
    policy: Policy
    rules: RulesService
    programs: ProgramService
    investigations: InvestigationService
    leave: LeaveService
    sanctions: SanctionService
    elocation: ElocationService
    transfers: TransferService
    obligations: ObligationService
    notifications: NotificationService
    # Decision notices to the person; the documents (文书) service announces through it too.
    notices: DecisionNoticeService
    counseling: CounselingService
    caseload: CaseloadService
    psychiatric_referrals: PsychiatricReferralService
    wechat_tokens: WeChatTokenService
    wechat: WeChatClient
    mp_accounts: MpAccountService
    uploads: UploadService
    checkins: CheckinService
    consents: ConsentService
    wechat_push: WeChatPushService
    idempotency: IdempotencyService
    deliveries: DeliveryLog
    assistance: AssistanceService
    content_check: ContentCheckService
    reports: ReportService
    dashboard: DashboardService
    absences: AbsenceService
    wellbeing: WellbeingService
    documents: DocumentService

    async def close(self) -> None:
        """Release what the services hold beyond the database (the WeChat client's threads),
        closing this process's audit chain first (its head anchored outside the database)."""
        try:
            await self.audit.close()
        except OSError as exc:
            # Stopping goes on; the log says the head was not anchored.
            log.warning(
                "audit chain not closed", extra={"fields": {"exception": type(exc).__name__}}
            )
        await self.wechat.close()


def sealed_holders(services: Services) -> list[typing.Any]:
    """The services that seal fields with a person's key (`sealed_fields`), so key rotation and
    shredding can reach every record sealed with it."""
    found = [getattr(services, f.name) for f in fields(services)]
    return [service for service in found if getattr(type(service), "sealed_fields", None)]


def declared_collections(*extra: type) -> list[CollectionSpec]:
    """Every collection the registry's services (and `extra` components) declare, each once."""
    hints = typing.get_type_hints(Services)
    classes = [hints[f.name] for f in fields(Services)] + list(extra)
    specs: dict[str, CollectionSpec] = {}
    for cls in classes:
        for spec in getattr(cls, "collections", ()):
            specs.setdefault(spec.name, spec)
    return list(specs.values())

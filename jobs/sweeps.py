"""The periodic sweeps the jobs process runs (each idempotent, each catching up by itself)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Awaitable, Callable
from typing import Any

from models.assistance import AssistanceService
from models.audit import AuditCheckpointer, AuditContext
from models.caseload import CaseloadService
from models.clock import LOCAL_TZ
from models.dashboard import chart_since
from models.elocation import ElocationService
from models.leave import LeaveService
from models.notifications import NotificationService
from models.obligations import ObligationService
from models.orgs import OrgKind, OrgService
from models.programs import ProgramService
from models.subjects import SubjectService
from models.wechat import WeChatTokenService, WeChatUnavailable


class AuditCheckpointSweep:
    """Signs every audit chain's head and appends it to the export file outside the database."""

    name = "audit_checkpoint"
    interval_seconds = 300
    description = "sign the head of every audit chain and export the checkpoint"

    def __init__(self, open_checkpointer: Callable[[], Awaitable[AuditCheckpointer]]):
        # Opened on first run: unwrapping the signing key needs the database.
        self._open = open_checkpointer
        self._checkpointer: AuditCheckpointer | None = None

    async def run(self, now: dt.datetime) -> dict[str, Any]:
        if self._checkpointer is None:
            self._checkpointer = await self._open()
        document = await self._checkpointer.checkpoint()
        return {"chains": len(document["heads"])}


class IntakeDeadlineSweep:
    """Alerts the station when a person has not reported for intake by the deadline."""

    name = "intake_deadlines"
    interval_seconds = 900
    description = "alert stations about intake reports past their deadline"

    def __init__(self, programs: ProgramService):
        self._programs = programs

    async def run(self, now: dt.datetime) -> dict[str, Any]:
        today = now.astimezone(LOCAL_TZ).date()
        return {"alerts": await self._programs.alert_missed_intakes(today)}


class MaterialiseSweep:
    """Stores every open program's occurrences up to the horizon (what is stored is skipped)."""

    name = "materialise"
    interval_seconds = 3600
    description = "store the occurrences of every open program up to the horizon"

    def __init__(self, obligations: ObligationService):
        self._obligations = obligations

    async def run(self, now: dt.datetime) -> dict[str, Any]:
        return await self._obligations.materialise_all(now)


class CloseWindowsSweep:
    """Marks windows that ended unmet as missed and alerts whoever must act."""

    name = "close_windows"
    interval_seconds = 300
    description = "mark ended, unmet windows missed and raise their alerts"

    def __init__(self, obligations: ObligationService):
        self._obligations = obligations

    async def run(self, now: dt.datetime) -> dict[str, Any]:
        return await self._obligations.close_windows(now)


class ReminderSweep:
    """Reminds people (and workers, for their own obligations) before windows open."""

    name = "reminders"
    interval_seconds = 600
    description = "send reminders before obligation windows open"

    def __init__(self, obligations: ObligationService):
        self._obligations = obligations

    async def run(self, now: dt.datetime) -> dict[str, Any]:
        return await self._obligations.send_reminders(now)


class NoticesSweep:
    """Pushes queued decision notices (subscribe message with consent, else SMS if urgent)."""

    name = "notices"
    # A refusal or an overdue return should reach the person's phone within a minute or so.
    interval_seconds = 60
    description = "push queued decision notices through WeChat (or SMS when urgent)"

    def __init__(self, notifications: NotificationService):
        self._notifications = notifications

    async def run(self, now: dt.datetime) -> dict[str, Any]:
        return await self._notifications.deliver_queued()


class ProgramsEndingSweep:
    """Alerts stations about programs whose term ends within 30 days."""

    name = "programs_ending"
    interval_seconds = 3600
    description = "flag programs ending within 30 days"

    def __init__(self, programs: ProgramService):
        self._programs = programs

    async def run(self, now: dt.datetime) -> dict[str, Any]:
        return {"alerts": await self._programs.alert_ending(now.astimezone(LOCAL_TZ).date())}


class StaysEndingSweep:
    """Tells people (and their workers) before a 阳光之家 stay reaches its limit."""

    name = "stays_ending"
    interval_seconds = 3600
    description = "remind people whose stay at a facility ends within 14 days"

    def __init__(self, assistance: AssistanceService):
        self._assistance = assistance

    async def run(self, now: dt.datetime) -> dict[str, Any]:
        return {"reminders": await self._assistance.remind_stays_ending(now)}


class LeaveReturnsSweep:
    """Alerts stations about approved leave whose return (销假) is overdue."""

    name = "leave_returns"
    interval_seconds = 3600
    description = "alert stations about overdue returns from leave"

    def __init__(self, leave: LeaveService):
        self._leave = leave

    async def run(self, now: dt.datetime) -> dict[str, Any]:
        return {"alerts": await self._leave.alert_overdue_returns(now.astimezone(LOCAL_TZ).date())}


class ElocationExpirySweep:
    """Ends e-location orders whose last day has passed (社区矫正法 Art. 29)."""

    name = "elocation_expiry"
    interval_seconds = 3600
    description = "end e-location orders past their last day"

    def __init__(self, elocation: ElocationService):
        self._elocation = elocation

    async def run(self, now: dt.datetime) -> dict[str, Any]:
        ended = await self._elocation.end_expired_orders(now.astimezone(LOCAL_TZ).date())
        return {"ended": ended}


class LostContactSweep:
    """Escalates misses nobody could follow up: 失去联系, a search task and a 脱管 episode."""

    name = "lost_contact"
    interval_seconds = 900
    description = "escalate missed check-ins without contact to 失去联系 and 脱管"

    def __init__(self, caseload: CaseloadService):
        self._caseload = caseload

    async def run(self, now: dt.datetime) -> dict[str, Any]:
        return await self._caseload.escalate_lost_contact(now)


class RetentionSweep:
    """Crypto-shreds case files whose retention period has ended (where one is set)."""

    name = "retention"
    interval_seconds = 86400
    description = "crypto-shred case files past their jurisdiction's retention period"

    def __init__(self, programs: ProgramService, subjects: SubjectService, ctx: AuditContext):
        self._programs = programs
        self._subjects = subjects
        self._ctx = ctx

    async def run(self, now: dt.datetime) -> dict[str, Any]:
        shredded = 0
        for subject_id in await self._programs.retention_expired(now.astimezone(LOCAL_TZ).date()):
            document = await self._subjects.document(subject_id)
            if document is None or document.get("status") == "shredded":
                continue
            await self._subjects.shred(self._ctx, subject_id)
            shredded += 1
        return {"shredded": shredded}


class CaseRosterSweep:
    """Rebuilds the case list's rosters from the case files: what a crash between a file's write
    and its roster's write left behind is put right by the next night."""

    name = "case_roster"
    interval_seconds = 86400
    description = "rebuild the case list's rosters from the case files"

    def __init__(self, subjects: SubjectService):
        self._subjects = subjects

    async def run(self, now: dt.datetime) -> dict[str, Any]:
        return await self._subjects.rebuild_case_roster()


class WindowHistorySweep:
    """Counts the last 13 months' check-in windows anew and puts right the kept counts of
    settled days (models/window_history.py) that a crash between a window's write and its
    day's forgetting left wrong; it also counts yesterday before the first dashboard."""

    name = "window_history"
    interval_seconds = 86400
    description = "recount the dashboard's kept check-in counts of settled days"

    def __init__(self, obligations: ObligationService, orgs: OrgService):
        self._obligations = obligations
        self._orgs = orgs

    async def run(self, now: dt.datetime) -> dict[str, Any]:
        since = chart_since(now.astimezone(LOCAL_TZ).date())
        stations = [list(s.path) for s in await self._orgs.of_kind(OrgKind.STATION)]
        return await self._obligations.recount_history(stations, since)


class WeChatTokenSweep:
    """The lease holder keeps the shared WeChat access token fresh for every process."""

    name = "wechat_token"
    interval_seconds = 300
    description = "refresh the shared WeChat access token before it expires"

    def __init__(self, tokens: WeChatTokenService):
        self._tokens = tokens

    async def run(self, now: dt.datetime) -> dict[str, Any]:
        try:
            return await self._tokens.refresh()
        except WeChatUnavailable as exc:
            # WeChat down is a condition to report, not a crash: the next run tries again and
            # processes keep the token they have until it expires.
            return {"refreshed": False, "error": str(exc)}

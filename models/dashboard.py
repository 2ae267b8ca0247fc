"""The dashboard of a station, county or city: who is supervised (by population and level),
today's windows, what is overdue or open, check-in punctuality over the last 12 weeks and 12
months and how programs ended, each counted in the database by the service that owns the
records (a few aggregations in all, however many people the node has)."""

from __future__ import annotations

import asyncio
import datetime as dt
from collections import Counter
from collections.abc import Iterable, Mapping
from typing import Any

from models.alerts import AlertService
from models.audit import AuditContext, AuditService
from models.clock import LOCAL_TZ, Clock
from models.errors import InvalidInput
from models.leave import LeaveService
from models.obligations import ObligationService
from models.orgs import Org, OrgKind, OrgService
from models.programs import SUPERVISED_STATUSES, ProgramService
from models.reports import STATUS_FIGURE, UNIT_KIND, Month, ReportService, rates
from models.sanctions import SanctionService

DASHBOARD_KINDS = (OrgKind.STATION, OrgKind.COUNTY, OrgKind.CITY)
WEEKS = 12
MONTHS = 12
# How programs ended (解除/终止, models/programs.py TERMINATION_KINDS), over the last year.
OUTCOME_LABELS = {
    "completed": "期满解除",
    "revoked": "撤销/收监",
    "died": "死亡",
    "other": "其他原因终止",
}
OUTCOME_DAYS = 365
# Today's windows as the officer reads them: met (on time or late), still open, missed, excused.
TODAY_FIGURE = {"done": "met", "late": "met", "missed": "missed", "excused": "excused"}
TODAY_LABELS = {"met": "已完成", "open": "待完成", "missed": "未完成", "excused": "已豁免"}
SIGNING_MONTHS = 6
SIGNING_MAX_MONTHS = 24
SUPERVISED = tuple(str(s) for s in SUPERVISED_STATUSES)


def _months(today: dt.date) -> list[Month]:
    """The current month and the eleven before it, oldest first."""
    first = today.replace(day=1)
    next_first = (first.replace(day=28) + dt.timedelta(days=4)).replace(day=1)
    months = [Month(f"{first:%Y-%m}", first, next_first)]
    while len(months) < MONTHS:
        months.append(months[-1].previous())
    return months[::-1]


def _weeks(today: dt.date) -> list[dt.date]:
    """The Mondays of the current week and the eleven before it, oldest first."""
    monday = today - dt.timedelta(days=today.weekday())
    return [monday - dt.timedelta(weeks=n) for n in range(WEEKS - 1, -1, -1)]


def _period(values: Counter[str]) -> dict[str, Any]:
    """A period's check-ins, with the report's own rates (models/reports.py `rates`): on time
    of those settled, and met of those due."""
    derived = rates(
        {
            **{f"obligations_{k}": v for k, v in values.items()},
            **{f"checkins_{k}": v for k, v in values.items()},
        },
        [],
    )
    return {
        **{k: values[k] for k in ("due", "on_time", "late", "missed", "excused", "pending")},
        "on_time_rate": derived["on_time_rate"],
        "checkin_rate": derived["checkin_rate"],
    }


def chart_since(today: dt.date) -> dt.date:
    """The first day the check-in charts show: the oldest of their 12 months and 12 weeks."""
    return min(_months(today)[0].first, _weeks(today)[0])


class DashboardService:
    def __init__(
        self,
        clock: Clock,
        audit: AuditService,
        orgs: OrgService,
        programs: ProgramService,
        obligations: ObligationService,
        alerts: AlertService,
        leave: LeaveService,
        sanctions: SanctionService,
        reports: ReportService,
    ):
        self._clock = clock
        self._audit = audit
        self._orgs = orgs
        self._programs = programs
        self._obligations = obligations
        self._alerts = alerts
        self._leave = leave
        self._sanctions = sanctions
        self._reports = reports

    async def _node(self, ctx: AuditContext, org_id: str | None) -> Org:
        identity = ctx.identity
        target = org_id or identity.org_id
        if not target:
            raise InvalidInput("The organisation is required.", details=[{"field": "org"}])
        org = await self._orgs.get_in_scope(identity, target)
        if org.kind not in DASHBOARD_KINDS:
            raise InvalidInput(
                "A dashboard is for a station, a county or a city.", details=[{"field": "org"}]
            )
        return org

    async def signing(
        self, ctx: AuditContext, org_id: str | None, months: int = SIGNING_MONTHS
    ) -> dict[str, Any]:
        """Which monthly reports of the node and of each unit below it (a county's stations, a
        city's counties) are signed, for the last `months` months that have ended; a month
        with no signed report is outstanding."""
        if not 1 <= months <= SIGNING_MAX_MONTHS:
            raise InvalidInput(
                f"Between 1 and {SIGNING_MAX_MONTHS} months.", details=[{"field": "months"}]
            )
        org = await self._node(ctx, org_id)
        today = self._clock.now().astimezone(LOCAL_TZ).date()
        ended = [_months(today)[-1].previous()]
        while len(ended) < months:
            ended.append(ended[-1].previous())
        labels = [m.label for m in ended]
        unit_kind = UNIT_KIND.get(org.kind)
        nodes = [org]
        if unit_kind is not None:
            below = [n for n in await self._orgs.below(org.id) if n.kind == unit_kind]
            nodes += sorted(below, key=lambda n: n.code)
        states = await self._reports.signing_states([n.id for n in nodes], labels)
        rows = []
        for node in nodes:
            cells = []
            for label in labels:
                state = states.get((node.id, label))
                cells.append(
                    {
                        "month": label,
                        "status": state["status"] if state else "none",
                        "report_id": state["report_id"] if state else None,
                        "version": state["version"] if state else None,
                        "signed_at": state["signed_at"] if state else None,
                        "changed": state["changed"] if state else False,
                    }
                )
            rows.append(
                {
                    "org_id": node.id,
                    "name": node.name,
                    "kind": str(node.kind),
                    "months": cells,
                    "unsigned": sum(c["status"] != "signed" for c in cells),
                }
            )
        await self._audit.record(
            ctx, "reports.read", resource="signing", resource_id=org.id, details={"months": months}
        )
        return {
            "org": {"id": org.id, "name": org.name, "kind": str(org.kind)},
            "months": labels,
            "rows": rows,
            "unsigned": sum(r["unsigned"] for r in rows),
        }

    async def overview(self, ctx: AuditContext, org_id: str | None) -> dict[str, Any]:
        """The figures of the caller's node (or `org_id` within it: a station, county or city),
        with a line per unit below it (a county's stations, a city's counties)."""
        org = await self._node(ctx, org_id)
        now = self._clock.now()
        today = now.astimezone(LOCAL_TZ).date()
        depth = len(org.path)
        unit_kind = UNIT_KIND.get(org.kind)
        tree = await self._orgs.below(org.id)
        units = {n.id: n for n in tree if n.kind == unit_kind}
        stations = [list(n.path) for n in tree if n.kind == OrgKind.STATION]
        months, weeks = _months(today), _weeks(today)
        since = chart_since(today)
        ended_since = today - dt.timedelta(days=OUTCOME_DAYS)
        # All at once; two groups because `gather` keeps each result's type up to six of them.
        (
            ((programs, people), (today_windows, checkins_today), history),
            (alerts, leave, detached),
        ) = await asyncio.gather(
            asyncio.gather(
                self._programs.figures_by_station(org.id, depth, stations, today, ended_since),
                # Today's windows, and today's check-in windows closed by now for the charts.
                self._obligations.windows_today(org.id, depth),
                # Days before today from the counts kept of settled days (a year of daily
                # windows read whole costs seconds); today's closed windows counted live.
                self._obligations.checkin_history(org.id, stations, since),
            ),
            asyncio.gather(
                self._alerts.count_open(org.id, depth),
                self._leave.count_in_progress(org.id, depth, today),
                self._sanctions.count_open_detachments(org.id, depth),
            ),
        )
        checkins = checkins_today + [
            {
                "u": c.station[depth] if len(c.station) > depth else None,
                "st": c.status,
                "d": c.day.isoformat(),
                "n": c.n,
            }
            for c in history
        ]
        figures = self._figures(
            None, programs, people, today_windows, checkins, alerts, leave, detached, months, weeks
        )
        rows = []
        for unit in sorted(units.values(), key=lambda u: u.code):
            line = self._figures(
                unit.id,
                programs,
                people,
                today_windows,
                checkins,
                alerts,
                leave,
                detached,
                months,
                weeks,
            )
            rows.append(
                {
                    "org_id": unit.id,
                    "name": unit.name,
                    "kind": str(unit.kind),
                    **{
                        k: line[k]
                        for k in (
                            "supervised",
                            "pending_intake",
                            "overdue_intake",
                            "detachments_open",
                            "alerts_open",
                            "leave_in_progress",
                            "windows_today",
                        )
                    },
                    "strict": line["by_level"].get("strict", 0),
                    "checkins_12_weeks": line["checkins_total"],
                }
            )
        await self._audit.record(
            ctx, "dashboard.read", resource="org", resource_id=org.id, details={"units": len(rows)}
        )
        figures.pop("checkins_total")
        return {
            "org": {"id": org.id, "name": org.name, "kind": str(org.kind)},
            "as_of": now,
            "today": today.isoformat(),
            **figures,
            "outcomes": self._outcomes(programs, ended_since),
            "units": rows,
        }

    @staticmethod
    def _figures(
        unit: str | None,
        programs: list[dict[str, Any]],
        people: Mapping[Any, int],
        today_windows: Iterable[dict[str, Any]],
        checkins: Iterable[dict[str, Any]],
        alerts: Mapping[Any, int],
        leave: Mapping[Any, int],
        detached: Mapping[Any, int],
        months: list[Month],
        weeks: list[dt.date],
    ) -> dict[str, Any]:
        """The figures of the whole node (`unit` None) or of one unit below it."""

        def mine(key: Any) -> bool:
            return unit is None or key == unit

        def total(counts: Mapping[Any, int]) -> int:
            return sum(n for key, n in counts.items() if mine(key))

        by_population: Counter[str] = Counter()
        by_level: Counter[str] = Counter()
        pending = overdue = 0
        for group in programs:
            if not mine(group.get("u")):
                continue
            if group["status"] not in SUPERVISED:
                continue
            by_population[group["type"]] += group["n"]
            if group.get("level"):
                by_level[group["level"]] += group["n"]
            if group["status"] == "pending_intake":
                pending += group["n"]
                if group.get("overdue"):
                    overdue += group["n"]
        windows: Counter[str] = Counter()
        for group in today_windows:
            if mine(group.get("u")):
                windows[TODAY_FIGURE.get(group["st"], "open")] += group["n"]
                windows["due"] += group["n"]
        week_index = {w: i for i, w in enumerate(weeks)}
        weekly = [Counter[str]() for _ in weeks]
        monthly = [Counter[str]() for _ in months]
        month_index = {m.first: i for i, m in enumerate(months)}
        for group in checkins:
            if not mine(group.get("u")):
                continue
            day = dt.date.fromisoformat(group["d"])
            figure = STATUS_FIGURE.get(group["st"], "missed")
            week = week_index.get(day - dt.timedelta(days=day.weekday()))
            month = month_index.get(day.replace(day=1))
            for bucket in (
                weekly[week] if week is not None else None,
                monthly[month] if month is not None else None,
            ):
                if bucket is not None:
                    bucket["due"] += group["n"]
                    bucket[figure] += group["n"]
        all_weeks: Counter[str] = Counter()
        for bucket in weekly:
            all_weeks.update(bucket)
        return {
            "supervised": total(people),
            "pending_intake": pending,
            "by_population": dict(sorted(by_population.items())),
            "by_level": {k: by_level.get(k, 0) for k in ("strict", "normal", "lenient")},
            "windows_today": {k: windows.get(k, 0) for k in ("due", *TODAY_LABELS)},
            "overdue_intake": overdue,
            "detachments_open": total(detached),
            "alerts_open": total(alerts),
            "leave_in_progress": total(leave),
            "checkins_weekly": [
                {"period": f"{w:%Y-%m-%d}", **_period(b)}
                for w, b in zip(weeks, weekly, strict=True)
            ],
            "checkins_monthly": [
                {"period": m.label, **_period(b)} for m, b in zip(months, monthly, strict=True)
            ],
            "checkins_total": _period(all_weeks),
        }

    @staticmethod
    def _outcomes(programs: list[dict[str, Any]], since: dt.date) -> dict[str, Any]:
        """Programs ended since `since`, by how they ended, and each way's share."""
        ended: Counter[str] = Counter()
        for group in programs:
            if group.get("outcome"):
                ended[group["outcome"]] += group["n"]
        count = sum(ended.values())
        return {
            "since": since.isoformat(),
            "ended": count,
            "by_outcome": {k: ended.get(k, 0) for k in OUTCOME_LABELS},
            "rates": {
                k: (round(ended.get(k, 0) / count, 4) if count else None) for k in OUTCOME_LABELS
            },
        }

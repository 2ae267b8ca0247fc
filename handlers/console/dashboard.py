"""The console's overview pages: the dashboard of a station, county or city (figure tiles, each a
link to the list behind it, and charts of check-in punctuality), the county overview of which
units signed which months, and the queues of decisions waiting on the officer."""

from __future__ import annotations

import json
import urllib.parse
from typing import Any

from handlers.console.base import ApiAnswer
from handlers.console.pages import Page
from models.dashboard import OUTCOME_LABELS, TODAY_LABELS
from models.reports import LEVEL_LABELS, PROGRAM_LABELS

# The figures that need attention, with where each one's list is.
ATTENTION_ZH = {
    "overdue_intake": "逾期未报到",
    "detachments_open": "脱管(未结束)",
    "alerts_open": "未处理预警",
    "leave_in_progress": "请假外出中",
}


def _rate(value: float | None) -> str:
    return "—" if value is None else f"{value * 100:.1f}%"


def _query(path: str, params: dict[str, str | None]) -> str:
    kept = {k: v for k, v in params.items() if v}
    return path + ("?" + urllib.parse.urlencode(kept) if kept else "")


def _org_query(org: str | None) -> str:
    return _query("", {"org": org})


class OverviewPage(Page):
    """What the dashboard pages share: the node asked for (`?org=`, else the officer's own)."""

    def get_template_namespace(self) -> dict[str, Any]:
        namespace = super().get_template_namespace()
        namespace.update(rate=_rate, outcome_labels=OUTCOME_LABELS, today_labels=TODAY_LABELS)
        return namespace

    @property
    def org_asked(self) -> str | None:
        return self.get_query_argument("org", None) or None


class DashboardPage(OverviewPage):
    async def get(self) -> None:
        board = await self.api_ok("GET", "/api/v1/dashboard" + _org_query(self.org_asked))
        org = board["org"]
        # The case list is the caller's scope: another node's figures are listed for it alone.
        station = org["id"] if org["kind"] == "station" and org["id"] != self.me["org_id"] else None

        def subjects(**params: str) -> str:
            return _query("/console/subjects", {**params, "station": station})

        population = [
            (
                f"fig-pop-{kind}",
                PROGRAM_LABELS.get(kind, kind),
                count,
                subjects(population=kind, status="active"),
            )
            for kind, count in board["by_population"].items()
        ]
        levels = [
            (
                f"fig-level-{level}",
                LEVEL_LABELS[level],
                board["by_level"].get(level, 0),
                subjects(population="community_corrections", status="active"),
            )
            for level in LEVEL_LABELS
        ]
        today = [
            (f"fig-today-{key}", label, board["windows_today"][key], "/console/")
            for key, label in (("due", "今日到期"), *TODAY_LABELS.items())
        ]
        today[3] = (*today[3][:3], subjects(flag="overdue"))  # missed: the overdue list
        attention = [
            ("fig-overdue_intake", ATTENTION_ZH["overdue_intake"], board["overdue_intake"],
             subjects(program_status="pending_intake")),
            ("fig-detachments_open", ATTENTION_ZH["detachments_open"], board["detachments_open"],
             subjects(flag="detached")),
            ("fig-alerts_open", ATTENTION_ZH["alerts_open"], board["alerts_open"],
             "/console/alerts"),
            ("fig-leave_in_progress", ATTENTION_ZH["leave_in_progress"],
             board["leave_in_progress"], "/console/leave"),
        ]  # fmt: skip
        charts = {
            "weeks": {
                "labels": [w["period"][5:] for w in board["checkins_weekly"]],
                "values": [_percent(w["on_time_rate"]) for w in board["checkins_weekly"]],
            },
            "months": {
                "labels": [m["period"] for m in board["checkins_monthly"]],
                "values": [_percent(m["on_time_rate"]) for m in board["checkins_monthly"]],
            },
            "population": {
                "labels": [PROGRAM_LABELS.get(k, k) for k in board["by_population"]],
                "values": list(board["by_population"].values()),
            },
        }
        self.render(
            "dashboard.html",
            board=board,
            supervised=(
                "fig-supervised",
                "在册人数",
                board["supervised"],
                subjects(status="active"),
            ),
            population=population,
            levels=levels,
            today=today,
            attention=attention,
            charts=json.dumps(charts, ensure_ascii=False),
        )


def _percent(value: float | None) -> float | None:
    return None if value is None else round(value * 100, 1)


class SigningPage(OverviewPage):
    """The county overview: which units signed which months, what is outstanding, and the way
    into each report and its drill-down."""

    async def get(self) -> None:
        query = _org_query(self.org_asked)
        signing = await self.api_ok("GET", "/api/v1/dashboard/signing" + query)
        board = await self.api("GET", "/api/v1/dashboard" + query)
        units = {u["org_id"]: u for u in board.body["units"]} if board.ok else {}
        if board.ok:
            units[board.body["org"]["id"]] = board.body  # the node's own line: its totals
        self.render("overview.html", signing=signing, units=units)


# --- the queues of decisions ----------------------------------------------------------------


class QueuesPage(OverviewPage):
    """Decisions waiting on the officer, each with the person, what is asked, the deadline and
    the statutory basis: e-location orders, transfers to accept, 调查评估 to assign, stays
    beyond the limit, referrals to approve. A queue the role may not read is left out."""

    QUEUES = (
        ("elocation", "电子定位待审批", "elocation.decide",
         "/api/v1/elocation-orders?status=pending"),
        ("transfers", "执行地变更待接收", "transfers.manage",
         "/api/v1/transfers?status=requested"),
        ("investigations", "调查评估待指派", "investigations.manage",
         "/api/v1/investigations?status=requested"),
        ("stays", "入住期限待延长", "assistance.extend",
         "/api/v1/assistance/stays?status=ending"),
        ("referrals", "帮扶转介待审批", "assistance.approve",
         "/api/v1/assistance/referrals?status=requested"),
    )  # fmt: skip

    async def get(self) -> None:
        queues = []
        for key, title, action, path in self.QUEUES:
            if not self.may(action):
                continue
            answer = await self.api("GET", path)
            queues.append(
                {
                    "key": key,
                    "title": title,
                    "items": [_queue_row(key, i) for i in answer.body["items"]]
                    if answer.ok
                    else [],
                    "error": None if answer.ok else _unavailable(answer),
                }
            )
        self.render("queues.html", queues=queues)


def _unavailable(answer: ApiAnswer) -> str:
    return answer.message_zh()


GROUND_ZH = {
    "breach_of_prohibition": "违反禁止令",
    "left_without_approval": "无正当理由未经批准离开所居住的市、县",
    "refused_report_after_warning": "拒不按照规定报告自己的活动情况，被给予警告",
    "public_security_penalty": "违反监督管理规定，被给予治安管理处罚",
    "revocation_pending": "拟提请撤销缓刑、假释或者暂予监外执行收监执行",
}


# Assistance needs (handlers/assistance.py `Need`) as the officer reads them.
NEED_ZH = {
    "housing": "住房",
    "food": "就餐",
    "job": "就业",
    "training": "技能培训",
    "legal": "法律援助",
    "benefits": "社会救助",
}
# 帮扶 in law (the rules' source for the needs a person may ask help with).
REFERRAL_BASIS = "社区矫正法第五章(教育帮扶)"


def _queue_row(key: str, item: dict[str, Any]) -> dict[str, Any]:
    """One waiting decision as the queue shows it: who, what is asked, by when, on what law."""
    deadline = item.get("deadline")
    basis = item.get("basis")
    if key == "elocation":
        asked = "续期" if item.get("renews") else "使用电子定位装置"
        asked += f"({item['start_date']} 至 {item['end_date']}):"
        asked += GROUND_ZH.get(item["ground"], "")
    elif key == "transfers":
        asked = f"执行地由 {item['from_org_name']} 变更至 {item['to_org_name']},请决定是否接收"
    elif key == "investigations":
        asked = "调查评估(速裁程序)" if item["expedited"] else "调查评估"
        asked += f",法院 {item['requested_on']} 委托,请指派司法所"
        if item.get("deadline_provisional"):
            deadline = f"{deadline}(暂定)"
    elif key == "stays":
        asked = f"{item.get('resource_name') or ''} 入住至 {item['stay_until']},"
        asked += f"最长可延至 {item['max_until']}"
    else:
        needs = "、".join(NEED_ZH.get(n, n) for n in item.get("needs") or [])
        asked = f"帮扶转介:{needs}"
        basis = REFERRAL_BASIS
    return {
        "id": item["id"],
        "subject_id": item.get("subject_id"),
        "name": item.get("subject_name"),
        "asked": asked,
        "deadline": deadline,
        "basis": basis,
    }


routes = [
    (r"/console/dashboard", DashboardPage),
    (r"/console/overview", SigningPage),
    (r"/console/queues", QueuesPage),
]

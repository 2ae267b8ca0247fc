"""The console's daily operations: alerts told in Chinese (who, what happened, what is due, where
to act) with their acknowledgements kept in sight, and the assistance board (resources with their
occupancy, waiting lists in order by name, offers, placements, check-outs and extensions)."""

from __future__ import annotations

import asyncio
import datetime as dt
import urllib.parse
from collections.abc import Callable, Mapping
from typing import Any

from handlers.console.base import ApiAnswer, path_id
from handlers.console.pages import KIND_ZH, PROGRAM_LABELS, Errors, FormPage, local_time
from models.clock import LOCAL_TZ

# --- alerts -----------------------------------------------------------------------------------


def _day(value: Any) -> str:
    """`2026-11-02` from a date, an ISO date or an ISO time (local)."""
    if not value:
        return ""
    text = str(value)
    return local_time(text)[:10] if "T" in text else text[:10]


def _program(details: Mapping[str, Any]) -> str:
    return PROGRAM_LABELS.get(str(details.get("type") or ""), "")


# What each alert kind says happened and what it asks of the reader, from its details (ids,
# dates and counts only: the name comes from the file, as the reader may see it).
AlertText = Callable[[Mapping[str, Any]], tuple[str, str]]
ALERT_TEXT: dict[str, tuple[str, AlertText]] = {
    "intake_overdue": (
        "逾期未报到",
        lambda d: (
            f"{_program(d)}应于 {_day(d.get('due'))} 前报到，至今未报到。",
            "立即核实下落；无正当理由未报到的，依法通报并提请处理。",
        ),
    ),
    "obligation_missed": (
        "未按时履行",
        lambda d: (
            f"{KIND_ZH.get(str(d.get('kind')), '规定事项')}未在 {local_time(d.get('window_end'))}"
            " 前完成。",
            "联系本人了解原因，并记入档案。",
        ),
    ),
    "lost_contact": (
        "失去联系",
        lambda d: (
            f"已连续 {d.get('hours', '')} 小时无法联系本人，按脱管处理。",
            "立即组织查找，查找情况记入档案；必要时通报公安机关。",
        ),
    ),
    "leave_return_overdue": (
        "外出逾期未归",
        lambda d: (
            f"请假外出应于 {_day(d.get('end_date'))} 返回，逾期未销假。",
            "联系本人督促返回并办理销假；无正当理由的，依法处理。",
        ),
    ),
    "serious_breach": (
        "严重违反规定",
        lambda d: (
            (
                f"拒绝或逃避检测已达 {d['refused_or_evaded']} 次(规定上限 {d.get('limit')} 次)。"
                if "refused_or_evaded" in d
                else f"缺席已达 {d.get('absences', 0)} 次、共 {d.get('absent_days', 0)} 天"
                f"(规定上限 {d.get('limit')})。"
            ),
            "由公安机关依法处理。",
        ),
    ),
    "mental_health_high_risk": (
        "高风险患者",
        lambda d: (
            f"{_day(d.get('on'))} 风险评估为 {d['risk_level']} 级。"
            if d.get("risk_level") is not None
            else f"{_day(d.get('on'))} 风险评估达到高风险等级。",
            "落实监护和应急处置措施，公安、卫生健康部门共同跟进。",
        ),
    ),
    "release_coming": (
        "即将出监(所)",
        lambda d: (
            f"将于 {_day(d.get('release_date'))} 出监(所)，通知于 {_day(d.get('received_on'))}"
            " 收到。",
            f"做好衔接，督促本人于 {_day(d.get('intake_due'))} 前报到。",
        ),
    ),
    "program_ending": (
        "即将期满",
        lambda d: (
            f"{_program(d)}将于 {_day(d.get('end_date'))} 期满。",
            "准备期满解除：宣告、证明书和安置帮教衔接。",
        ),
    ),
    "duplicate_intake_elsewhere": (
        "异地重复建档",
        lambda d: (
            "其他单位试图为该人员重复建档，档案已在本辖区。",
            "与对方单位核实该人员的执行地。",
        ),
    ),
    "break_glass": (
        "紧急查阅档案",
        lambda d: (
            "有工作人员以紧急查阅方式打开了该档案。",
            "查看访问记录，核实查阅理由是否成立。",
        ),
    ),
    "wellbeing_screen": (
        "需要关心",
        lambda d: (
            "签到时的身心状况问卷提示需要关心本人。",
            str(d.get("due_zh") or f"请于 {_day(d.get('due'))} 前联系本人。"),
        ),
    ),
}
ROLES_ZH = {"police": "公安民警", "health_worker": "卫生健康工作人员"}


def alert_row(alert: Mapping[str, Any], may_log: bool) -> dict[str, Any]:
    """One alert as the page shows it: never the kind's code or an id."""
    details = alert.get("details") or {}
    title, text = ALERT_TEXT.get(
        alert["kind"], ("提醒", lambda _d: ("有一项需要处理的提醒。", "查看档案并处理。"))
    )
    happened, due = text(details)
    subject_id = alert.get("subject_id")
    act = f"/console/subjects/{subject_id}" if subject_id else None
    act_label = "查看档案"
    if alert["kind"] == "break_glass" and subject_id and may_log:
        act, act_label = f"/console/subjects/{subject_id}/access-log", "查看访问记录"
    elif alert["kind"] in ("leave_return_overdue",):
        act_label = "查看档案并销假"
    roles = details.get("for_roles") or []
    return {
        "id": alert["id"],
        "title": title,
        "name": alert.get("subject_name") or ("(无权查看姓名)" if subject_id else ""),
        "happened": happened,
        "due": due,
        "act": act,
        "act_label": act_label,
        "for_roles": "、".join(ROLES_ZH.get(r, r) for r in roles),
        "roles": roles,
        "at": local_time(alert["created_at"]),
        "acknowledged_at": local_time(alert.get("acknowledged_at")),
        "acknowledged_by": alert.get("acknowledged_by_name") or "",
    }


ALERTS_PER_PAGE = 20


def _page_number(raw: str | None) -> int:
    """`?page=` as a page number: anything else is the first page."""
    return int(raw) if raw and raw.isdigit() and 0 < int(raw) <= 100_000 else 1


class AlertsPage(FormPage):
    """Open alerts and those acknowledged, each list in numbered pages (`?page=` and
    `?done=`) with how many there are in all."""

    template = "alerts.html"

    async def get(self) -> None:
        await self.show()

    async def load(self, **_: str) -> dict[str, Any]:
        # The same lists whichever alert's acknowledgement came back refused.
        page = _page_number(self.get_query_argument("page", None))
        done_page = _page_number(self.get_query_argument("done", None))
        opened, done = await asyncio.gather(
            self.api_ok("GET", f"/api/v1/alerts?status=open&page={page}&limit={ALERTS_PER_PAGE}"),
            self.api_ok(
                "GET",
                f"/api/v1/alerts?status=acknowledged&page={done_page}&limit={ALERTS_PER_PAGE}",
            ),
        )
        may_log = self.may("subjects.access_log")

        def pages(listed: Mapping[str, Any]) -> int:
            return max(1, -(-int(listed["total"]) // int(listed["per_page"])))

        def link(**chosen: int) -> str:
            here = {"page": page, "done": done_page, **chosen}
            kept = {k: str(v) for k, v in here.items() if v != 1}
            return "/console/alerts" + ("?" + urllib.parse.urlencode(kept) if kept else "")

        return {
            "alerts": [alert_row(a, may_log) for a in opened["items"]],
            "done": [alert_row(a, may_log) for a in done["items"]],
            "opened": opened,
            "acknowledged": done,
            "open_pages": pages(opened),
            "done_pages": pages(done),
            "link": link,
            "can_ack": self.may("alerts.ack"),
        }

    def refusal(self, answer: ApiAnswer, typed: dict[str, Any]) -> tuple[Errors, str | None]:
        return {}, _said(answer)


class AlertAck(AlertsPage):
    async def post(self, alert_id: str) -> None:
        await self.submit("POST", f"/api/v1/alerts/{alert_id}/ack", None, {}, "/console/alerts")


# Refusals these pages meet beyond the console's common ones (handlers/console/base.py).
REFUSED_ZH = {
    "not_alert_role": "此提醒应由其他岗位处理。",
    "not_assigned": "只有负责该对象的工作人员可以确认此提醒。",
    "invalid_transition": "该记录的状态已变化，请刷新后重试。",
    "beyond_limit": "延长后的期限超过规定上限。",
    "needs_approval": "延长入住须经县(区)司法局批准。",
    "not_eligible": "该人员不符合此项帮扶资源的条件。",
    "inactive": "该帮扶资源已停用。",
}


def _said(answer: ApiAnswer) -> str:
    return REFUSED_ZH.get(answer.error_code or "", "") or answer.message_zh()


# --- assistance -------------------------------------------------------------------------------

RESOURCE_ZH = {
    "sunshine_home": "阳光之家",
    "transitional_base": "过渡性安置基地",
    "shelter": "临时救助住所",
    "meals": "就餐服务",
    "job": "就业岗位",
    "course": "技能培训",
    "legal_aid": "法律援助",
    "benefit": "社会救助申请",
}
NEED_ZH = {
    "housing": "住房",
    "food": "就餐",
    "job": "就业",
    "training": "技能培训",
    "legal": "法律援助",
    "benefits": "社会救助",
}
REFERRAL_ZH = {
    "requested": "待审批",
    "approved": "已同意，待安排",
    "offered": "已提供，待本人答复",
    "accepted": "本人已接受，待安置",
    "placed": "已安置",
    "enrolled": "已入学/入职",
    "completed": "已完成",
    "declined": "未安排",
    "cancelled": "已取消",
    "no_show": "未按时报到",
}
# Referrals still moving (the board's work); finished ones are the summary's.
OPEN_REFERRALS = ("requested", "approved", "offered", "accepted", "placed", "enrolled")
# A transition's button and whether it asks for a reason (models/assistance.py NEEDS_REASON).
STEPS = {
    "requested": (("approved", "同意转介", "assistance.approve"),
                  ("declined", "不予安排", "assistance.manage")),
    "approved": (("offered", "提供资源", "assistance.manage"),),
    "offered": (("accepted", "本人已接受", "assistance.manage"),
                ("declined", "本人拒绝", "assistance.manage")),
    "accepted": (("no_show", "未按时报到", "assistance.place"),),
}  # fmt: skip
NEEDS_REASON = frozenset({"declined", "cancelled", "no_show"})


def _this_month(now: dt.datetime) -> str:
    return f"{now.astimezone(LOCAL_TZ):%Y-%m}"


class AssistancePage(FormPage):
    """Every resource the caller reaches with its occupancy and waiting list (names in order),
    the referrals in progress with the step each waits for, and the stays ending soon."""

    template = "assistance.html"

    async def get(self) -> None:
        await self.show()

    async def load(self, **_: str) -> dict[str, Any]:
        # The same board whichever step came back refused.
        month = self.get_query_argument("month", "") or _this_month(self.ctx.clock.now())
        summary: ApiAnswer | None = None
        if self.may("assistance.summary"):
            summary = await self.api(
                "GET",
                "/api/v1/assistance/summary?"
                + urllib.parse.urlencode({"org_id": self.me["org_id"], "month": month}),
            )
        referrals = await self.api_ok("GET", "/api/v1/assistance/referrals?limit=500")
        items = referrals["items"]
        names = {r["id"]: r.get("subject_name") for r in items}
        # The resources: those of the node (the summary) and those referrals go to (a station's
        # county facilities, a coordinator's own).
        ids = [o["id"] for o in summary.body["occupancy"]] if summary and summary.ok else []
        ids += [r["resource_id"] for r in items if r.get("resource_id")]
        ids = list(dict.fromkeys(ids))
        answers = await asyncio.gather(
            *(self.api("GET", f"/api/v1/assistance/resources/{rid}") for rid in ids),
            *(self.api("GET", f"/api/v1/assistance/resources/{rid}/waiting-list") for rid in ids),
        )
        resources = []
        for resource, waiting in zip(answers[: len(ids)], answers[len(ids) :], strict=True):
            if not resource.ok:
                continue
            queue = waiting.body["items"] if waiting.ok else []
            resources.append(
                {
                    **resource.body,
                    "kind_zh": RESOURCE_ZH.get(resource.body["kind"], "其他"),
                    "waiting_list": [
                        {
                            "position": w["position"],
                            "name": names.get(w["referral_id"]) or "(无权查看姓名)",
                            "since": local_time(w["since"]),
                        }
                        for w in queue
                    ],
                }
            )
        stays = None
        if self.may("assistance.extend"):
            ending = await self.api("GET", "/api/v1/assistance/stays?status=ending")
            stays = ending.body["items"] if ending.ok else []
        resource_names = {r["id"]: r["name"] for r in resources}
        open_items = [r for r in items if r["status"] in OPEN_REFERRALS]
        return {
            "month": month,
            "summary": summary.body if summary and summary.ok else None,
            "resources": resources,
            "referrals": [_referral_row(r, resource_names, self.may) for r in open_items],
            "stays": stays,
            "needs_zh": NEED_ZH,
            "done": None,
        }

    def refusal(self, answer: ApiAnswer, typed: dict[str, Any]) -> tuple[Errors, str | None]:
        """A refusal as the one line above the board."""
        if answer.error_code == "full":
            details = (answer.body or {}).get("error", {}).get("details") or {}
            position = details.get("waiting_position")
            return {}, f"暂无空位，已列入等候名单第 {position} 位。"
        return {}, "请检查填写的日期和内容。" if answer.field_errors() else _said(answer)


def _referral_row(
    r: Mapping[str, Any], resource_names: Mapping[str, str], may: Callable[[str], bool]
) -> dict[str, Any]:
    status = r["status"]
    steps = [(to, label) for to, label, action in STEPS.get(status, ()) if may(action)]
    return {
        "id": r["id"],
        "subject_id": r["subject_id"],
        "name": r.get("subject_name") or "(无权查看姓名)",
        "needs": "、".join(NEED_ZH.get(n, n) for n in r["needs"]),
        "status": REFERRAL_ZH.get(status, status),
        "resource": resource_names.get(r.get("resource_id") or "", ""),
        "resource_id": r.get("resource_id"),
        "position": r.get("waiting_position"),
        "steps": steps,
        "offer": status == "approved" and may("assistance.manage"),
        "place": status == "accepted" and may("assistance.place"),
        # The placement's id is the resource's and the referral's (models/assistance.py).
        "placement_id": f"{r['resource_id']}:{r['id']}" if r.get("resource_id") else None,
        "checkout": status in ("placed", "enrolled") and may("assistance.place"),
    }


class AssistanceAction(AssistancePage):
    """One step on the board, then back to it: a referral's transition, a placement, a
    check-out or an extension. A refusal is shown on the board in the API's words."""

    async def post(self, what: str, target: str) -> None:
        arg = self.get_body_argument
        if what == "transition":
            to = arg("to", "")
            body: dict[str, Any] = {"to": to}
            if arg("reason", "").strip():
                body["reason"] = arg("reason").strip()
            elif to in NEEDS_REASON:
                await self.show(error="请填写原因。", status=422)
                return
            if arg("resource_id", ""):
                body["resource_id"] = arg("resource_id")
            path = f"/api/v1/assistance/referrals/{target}/transition"
        elif what == "place":
            body = {"referral_id": target, "resource_id": arg("resource_id", "")}
            path = "/api/v1/assistance/placements"
        elif what == "checkout":
            if not arg("reason", "").strip():
                await self.show(error="请填写离开原因。", status=422)
                return
            body = {"reason": arg("reason").strip()}
            path = f"/api/v1/assistance/placements/{target}/checkout"
        elif what == "extension":
            if not arg("reason", "").strip() or not arg("until", ""):
                await self.show(error="请填写延长至的日期和理由。", status=422)
                return
            body = {"until": arg("until"), "reason": arg("reason").strip()}
            path = f"/api/v1/assistance/placements/{target}/extension"
        else:
            self.send_error(404)
            return
        await self.submit("POST", path, body, {}, "/console/assistance")


routes = [
    (r"/console/alerts", AlertsPage),
    (rf"/console/alerts/{path_id('alert_id')}/ack", AlertAck),
    (r"/console/assistance", AssistancePage),
    (
        rf"/console/assistance/(?P<what>transition|place|checkout|extension)/{path_id('target')}",
        AssistanceAction,
    ),
]

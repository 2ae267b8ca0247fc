"""The console's audit views: a case file's access log for those allowed (who read or changed it,
when, why), filtered by day, role and kind; and the audit administrator's view of logins,
refusals and administrative changes."""

from __future__ import annotations

import datetime as dt
import re
import urllib.parse
from collections.abc import Mapping
from typing import Any

from handlers.console.base import path_id
from handlers.console.pages import ROLE_ZH, Page, local_time
from models.clock import LOCAL_TZ

# What an entry's action means, as the reader says it; an action not listed reads by its
# family (the part before the dot), never as its code.
ACTION_ZH = {
    "subjects.read": "查阅档案",
    "subjects.list": "查看名单",
    "subjects.search": "查找档案",
    "subjects.create": "建立档案",
    "subjects.update": "修改档案",
    "subjects.assign": "指派工作人员",
    "subjects.note": "填写工作记录",
    "subjects.notes.read": "查阅工作记录",
    "subjects.photo": "保存照片",
    "subjects.photo.read": "查看照片",
    "subjects.break_glass": "紧急查阅",
    "subjects.access_log": "查看访问记录",
    "subjects.access_log_lookup": "查找档案(访问记录)",
    "subjects.move": "变更管辖",
    "subjects.shred": "销毁档案",
    "subjects.rotate_key": "更换密钥",
    "subjects.hand_over": "移交工作",
    "programs.create": "建立矫正(帮教)事项",
    "programs.intake": "登记报到",
    "programs.transition": "变更执行状态",
    "binding_code.issue": "签发小程序绑定码",
    "mp.bind": "本人绑定小程序",
    "mp.login": "本人登录小程序",
    "checkins.read": "查看签到",
    "checkins.photo.read": "查看签到照片",
    "checkins.review": "审核签到",
    "checkins.record": "签到",
    "leave.read": "查看请假",
    "leave.request": "申请请假",
    "leave.return": "销假",
    "sanctions.read": "查看奖惩",
    "sanctions.propose": "提出奖惩建议",
    "sanctions.suggest": "提出奖惩建议",
    "documents.read": "查看文书",
    "documents.create": "制作文书",
    "documents.void": "作废文书",
    "auth.login": "登录",
    "auth.logout": "退出登录",
    "staff.create": "新建账号",
    "staff.import": "批量导入账号",
    "staff.grant_role": "授予或收回角色",
    "staff.reset_password": "重置密码",
    "staff.disable": "停用账号",
    "staff.enable": "启用账号",
    "staff.move": "调整账号所属单位",
    "orgs.create": "新增机构",
    "orgs.area": "设定签到范围",
    "rules.propose": "提出规则变更",
    "rules.confirm": "确认规则变更",
    "rules.refuse": "否决规则变更",
    "rules.override": "调整规则",
    "backup.export": "导出备份",
}
FAMILY_ZH = {
    "subjects": "档案操作",
    "programs": "矫正(帮教)事项",
    "obligations": "履行事项",
    "checkins": "签到",
    "leave": "请假",
    "sanctions": "奖惩",
    "documents": "文书",
    "assistance": "帮扶",
    "visits": "走访",
    "wellbeing": "身心状况",
    "alerts": "预警",
    "elocation": "电子定位",
    "transfers": "执行地变更",
    "investigations": "调查评估",
    "reports": "月度报表",
    "counseling": "心理辅导",
    "absences": "缺席记录",
    "detachments": "脱管记录",
    "caseload": "工作量",
    "mp": "小程序",
    "binding_code": "小程序绑定码",
    "uploads": "上传",
    "auth": "登录",
    "staff": "账号管理",
    "orgs": "机构管理",
    "rules": "规则管理",
    "audit": "审计查询",
    "backup": "备份",
}
REFUSAL_ZH = {
    "forbidden": "无权限",
    "invalid_credentials": "密码错误",
    "wrong_code": "动态验证码错误",
    "locked": "账号锁定",
    "unknown_account": "账号不存在",
    "disabled": "账号已停用",
}
# Who acted through the mini-program (no staff role).
PERSON_ZH = {"subject": "本人(小程序)", "guardian": "监护人(小程序)"}
CHANGE_KINDS = ("update", "create", "assign", "note", "photo", "move", "shred", "review", "void")
FILTER_KINDS = {"": "全部", "read": "查阅", "change": "办理或修改", "refused": "被拒绝"}
EVENT_KINDS = {"login": "登录记录", "refusal": "拒绝记录", "admin": "管理操作"}
_DAY = re.compile(r"^\d{4}-\d{2}-\d{2}$")


def action_text(action: str) -> str:
    base = action.removesuffix(".outcome")
    text = ACTION_ZH.get(base) or FAMILY_ZH.get(base.split(".", 1)[0], "其他操作")
    return text + "(结果)" if action.endswith(".outcome") else text


def outcome_text(outcome: str | None) -> str:
    if not outcome or outcome == "ok":
        return "成功"
    if outcome == "pending":
        return "已提交"
    if outcome.startswith("refused:"):
        why = REFUSAL_ZH.get(outcome.split(":", 1)[1])
        return f"被拒绝({why})" if why else "被拒绝"
    return {"failed": "失败", "unknown": "结果未知"}.get(outcome, "其他")


def _role(role: str | None) -> str:
    return ROLE_ZH.get(role or "") or PERSON_ZH.get(role or "") or ("系统" if not role else "其他")


def _actor(entry: Mapping[str, Any]) -> str:
    """Who acted, by name: a staff member's, else what they were (the system, the person)."""
    if entry.get("actor_name"):
        return str(entry["actor_name"])
    if not entry.get("role") and str(entry.get("action", "")).startswith("mp."):
        return "微信用户(绑定前)"  # a WeChat user binding to the file: no role yet
    if not entry.get("role") or entry.get("actor_id") == "system":
        return "系统"
    return PERSON_ZH.get(str(entry["role"]), "(未知账号)")


def _kind_of(entry: Mapping[str, Any]) -> str:
    if (entry.get("outcome") or "").startswith("refused"):
        return "refused"
    action = str(entry["action"]).removesuffix(".outcome")
    if action.endswith(".read") or action.split(".")[-1] in ("list", "search", "access_log"):
        return "read"
    return "change" if action.split(".")[-1] in CHANGE_KINDS or "." in action else "read"


def _day(raw: str | None) -> dt.date | None:
    if not raw or not _DAY.match(raw):
        return None
    try:
        return dt.date.fromisoformat(raw)
    except ValueError:
        return None


class AccessLogPage(Page):
    """Who read or changed one case file: the API's log, filtered here by day, role and kind."""

    async def get(self, subject_id: str) -> None:
        log = await self.api_ok("GET", f"/api/v1/subjects/{subject_id}/access-log")
        # The file's name for those who read files (the audit administrator reads none, and
        # asking would only add a refusal to the log).
        name = None
        if self.may("subjects.read"):
            subject = await self.api("GET", f"/api/v1/subjects/{subject_id}")
            name = subject.body.get("name") if subject.ok else None
        since = _day(self.get_query_argument("from", None))
        until = _day(self.get_query_argument("to", None))
        role = self.get_query_argument("role", "")
        kind = self.get_query_argument("kind", "")
        rows = []
        for entry in log["items"]:
            day = dt.datetime.fromisoformat(entry["at"]).astimezone(LOCAL_TZ).date()
            if (since and day < since) or (until and day > until):
                continue
            if role and entry.get("role") != role:
                continue
            if kind and _kind_of(entry) != kind:
                continue
            rows.append(
                {
                    "at": local_time(entry["at"]),
                    "role": _role(entry.get("role")),
                    "who": _actor(entry),
                    "action": action_text(entry["action"]),
                    "outcome": outcome_text(entry.get("outcome")),
                    "reason": entry.get("reason")
                    or ("已填写(仅办案人员可见)" if entry.get("reason_given") else ""),
                }
            )
        roles = sorted({e.get("role") for e in log["items"] if e.get("role")})
        self.render(
            "access_log.html",
            subject_id=subject_id,
            name=name,
            rows=rows,
            total=len(log["items"]),
            roles=[(r, _role(r)) for r in roles],
            kinds=FILTER_KINDS,
            chosen={
                "from": since.isoformat() if since else "",
                "to": until.isoformat() if until else "",
                "role": role,
                "kind": kind,
            },
        )


class AuditPage(Page):
    """The audit administrator's view: logins, refusals or administrative changes."""

    async def get(self) -> None:
        kind = self.get_query_argument("kind", "login")
        kind = kind if kind in EVENT_KINDS else "login"
        today = self.ctx.clock.now().astimezone(LOCAL_TZ).date()
        until = _day(self.get_query_argument("to", None)) or today
        since = _day(self.get_query_argument("from", None)) or until - dt.timedelta(days=6)
        actor = self.get_query_argument("actor_id", "")
        if not re.fullmatch(r"[0-9a-f]{24}", actor):
            actor = ""
        typed = self.get_query_argument("account", "").strip()[:30]
        # The account is chosen by name: one match is taken, several are offered to choose
        # from (each a link carrying its id), none is said.
        choices: list[dict[str, Any]] = []
        account_error = None
        if typed and not actor:
            found = await self.api(
                "GET", "/api/v1/audit/accounts?" + urllib.parse.urlencode({"q": typed})
            )
            if not found.ok:
                account_error = found.message_zh()
            elif len(found.body["items"]) == 1:
                account = found.body["items"][0]
                actor, typed = account["id"], _account_label(account)
            elif found.body["items"]:
                choices = [
                    {"id": a["id"], "label": _account_label(a), "role": _role(a.get("role"))}
                    for a in found.body["items"]
                ]
            else:
                account_error = f"没有找到姓名或用户名含“{typed}”的账号。"
        query = {"kind": kind, "from": since.isoformat(), "to": until.isoformat()}
        if actor:
            query["actor_id"] = actor
        answer = await self.api("GET", "/api/v1/audit/events?" + urllib.parse.urlencode(query))
        rows = []
        for e in answer.body["items"] if answer.ok else []:
            rows.append(
                {
                    "at": local_time(e["at"]),
                    # A refused login names the account tried when one has that username.
                    "who": e.get("actor_name") or "(未知账号)",
                    "username": e.get("actor_username") or "",
                    "actor_id": _account_id(e),
                    # A refused login acted as no one: not the system, nobody signed in.
                    "role": "未登录"
                    if e["action"] == "auth.login" and not e.get("actor_id")
                    else _role(e.get("role")),
                    "action": action_text(e["action"]),
                    "outcome": outcome_text(e.get("outcome")),
                    "ip": e.get("remote_ip") or "",
                    "file": e.get("resource_id") if e.get("resource") == "subject" else None,
                }
            )
        self.render(
            "audit.html",
            kinds=EVENT_KINDS,
            kind=kind,
            rows=rows,
            error=None if answer.ok else answer.message_zh(),
            choices=choices,
            account_error=account_error,
            chosen={
                "from": since.isoformat(),
                "to": until.isoformat(),
                "actor_id": actor,
                "account": typed,
            },
        )


def _account_label(account: Mapping[str, Any]) -> str:
    return f"{account['name']}({account['username']})"


def _account_id(entry: Mapping[str, Any]) -> str:
    """The account an entry is about, for the link to its entries: who acted, or the account
    a refused login tried (named, so one that exists)."""
    if entry.get("actor_id"):
        return str(entry["actor_id"])
    if entry.get("action") == "auth.login" and entry.get("actor_name"):
        return str(entry.get("resource_id") or "")
    return ""


MATCHED_ZH = {"name": "姓名", "id_number": "身份证号", "phone": "手机号"}


class AccessLogFind(Page):
    """The audit page's "a file's access log" box: the person's exact name, ID number or phone
    finds the file (one is opened at once, several are offered by station and opening day);
    nobody types an id."""

    async def get(self) -> None:
        typed = self.get_query_argument("q", "").strip()[:50]
        if not typed:
            self.redirect("/console/audit")
            return
        found = await self.api("GET", "/api/v1/audit/files?" + urllib.parse.urlencode({"q": typed}))
        files = found.body["items"] if found.ok else []
        if len(files) == 1:
            self.redirect(f"/console/subjects/{files[0]['id']}/access-log")
            return
        error = None
        if not found.ok:
            error = found.message_zh()
        elif not files:
            error = f"您的辖区内没有姓名、身份证号或手机号为“{typed}”的档案。"
        self.render(
            "access_log_find.html",
            typed=typed,
            error=error,
            files=[{**f, "matched": MATCHED_ZH.get(f["matched"], "")} for f in files],
        )


routes = [
    (r"/console/audit", AuditPage),
    (r"/console/audit/file", AccessLogFind),
    (rf"/console/subjects/{path_id('subject_id')}/access-log", AccessLogPage),
]

"""The console's pages: login (with TOTP), the caseload, a case file, leave and sanction
decisions and the monthly compliance reports (check-in review and history:
handlers/console/oversight.py; alerts and assistance: handlers/console/operations.py)."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import functools
import inspect
import json
import urllib.parse
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar

from tornado.concurrent import Future

from handlers.console.base import (
    CSP,
    SANCTION_ZH,
    ApiAnswer,
    ApiRefused,
    ConsoleHandler,
    SessionExpired,
    SignedInHandler,
    path_id,
)
from handlers.console.inprocess import LocalExchange
from handlers.console.maps import distance_text, gap_text, map_json
from models.caseload import MAX_SUBJECTS
from models.clock import LOCAL_TZ
from models.reports import FIGURE_LABELS, LEVEL_LABELS, PROGRAM_LABELS, RATE_LABELS, TREND_LABELS

STATIC_DIR = Path(__file__).parent / "static"
TEMPLATES = Path(__file__).parent / "templates"
LEVEL_OF_ROLE = {"station_officer": "station", "county_officer": "county", "city_officer": "city"}
ROLE_ZH = {
    "station_officer": "司法所工作人员",
    "county_officer": "县(区)司法局工作人员",
    "city_officer": "市司法局工作人员",
    "social_worker": "社会工作者",
    "grid_worker": "网格员",
    "health_worker": "卫生健康工作人员",
    "police": "公安民警",
    "assistance_coordinator": "帮扶机构协调员",
    "oversight": "监督人员",
    "sys_admin": "系统管理员",
    "security_admin": "安全管理员",
    "audit_admin": "审计管理员",
}
KIND_ZH = {
    "remote_checkin": "定位签到",
    "in_person_report": "当面报到",
    "written_report": "书面报告",
    "education": "教育学习",
    "community_service": "公益活动",
    "drug_test": "尿检",
    "medical_reexam": "病情复查",
    "mental_followup": "随访",
    "counseling": "心理辅导",
    "contact": "帮教联系",
}
STATUS_ZH = {
    "scheduled": "待办",
    "open": "进行中",
    "done": "已完成",
    "late": "逾期完成",
    "missed": "未完成",
    "excused": "已豁免",
    "pending_review": "待审核",
    "pending": "审批中",
    "approved": "已批准",
    "rejected": "未批准",
    # A case file's state.
    "active": "在册",
    "shredded": "已销毁",
}
PROGRAM_STATUS_ZH = {
    "pending_intake": "待报到",
    "active": "执行中",
    "suspended": "中止",
    "transferred": "已转出",
    "ended": "已结束",
}
LEVEL_ZH = {"station": "司法所", "county": "县(区)司法局", "city": "市司法局"}
FLAG_ZH = {
    "impossible_travel": "位移过快",
    "low_accuracy": "定位精度低",
    "clock_skew": "设备时间异常",
    "offline": "离线补传",
    "photo_reused": "照片重复",
    "device_changed": "更换设备",
    "face_review": "人脸待核",
    "face_mismatch": "人脸不符",
    "no_area": "未设范围",
}
# What each flag means, for the officer deciding whether to accept the check-in.
FLAG_HELP = {
    "impossible_travel": "与上次签到相比，移动速度超过交通工具可能达到的速度。",
    "low_accuracy": "手机定位精度低于规定，位置可能有较大偏差。",
    "clock_skew": "手机拍摄时间与服务器收到时间相差过大，手机时间可能被修改。",
    "offline": "签到时段结束后才收到，为离线补传。",
    "photo_reused": "照片与此前某次签到的照片完全相同。",
    "device_changed": "与上次签到使用的手机不同。",
    "face_review": "照片需人工核对是否本人。",
    "face_mismatch": "人脸比对认为不是本人。",
    "no_area": "所属司法所或县(区)未设定允许活动范围，无法判断是否在范围内。",
}
# A check-in's own result (the obligation's states are STATUS_ZH).
CHECKIN_STATUS_ZH = {
    "on_time": "按时签到",
    "late": "迟到签到",
    "outside_area": "超出范围",
    "rejected": "不予认可",
}
REVIEW_ZH = {"pending": "待审核", "accepted": "已认可", "rejected": "不认可"}
# A program's statutory fields, and the states of transfers and 调查评估 (console/casefile.py).
SENTENCE_ZH = {
    "control": "管制",
    "probation": "缓刑",
    "parole": "假释",
    "medical_parole": "暂予监外执行",
}
DRUG_MODE_ZH = {"community_detox": "社区戒毒", "community_rehab": "社区康复"}
TERMINATION_ZH = {
    "completed": "期满解除",
    "revoked": "撤销(收监执行)",
    "died": "死亡",
    "other": "其他原因终止",
}
TRANSFER_STATUS_ZH = {
    "requested": "待接收方答复",
    "accepted": "已同意接收,待移交",
    "rejected": "接收方不同意",
    "handed_over": "已移交,待报到",
    "completed": "已到新执行地报到",
}
INVESTIGATION_STATUS_ZH = {
    "requested": "待指派司法所",
    "assigned": "调查中",
    "reported": "已提交评估意见",
    "closed": "已办结",
    "withdrawn": "法院已撤回",
}
RECOMMENDATION_ZH = {"suitable": "适宜社区矫正", "unsuitable": "不适宜社区矫正"}


def local_time(value: str | None) -> str:
    if not value:
        return ""
    return dt.datetime.fromisoformat(value).astimezone(LOCAL_TZ).strftime("%Y-%m-%d %H:%M")


LABELS = {
    "kind": KIND_ZH,
    "status": STATUS_ZH,
    "program_status": PROGRAM_STATUS_ZH,
    "level": LEVEL_ZH,
    "flag": FLAG_ZH,
    "flag_help": FLAG_HELP,
    "checkin_status": CHECKIN_STATUS_ZH,
    "review": REVIEW_ZH,
    "sentence": SENTENCE_ZH,
    "drug_mode": DRUG_MODE_ZH,
    "termination": TERMINATION_ZH,
    "transfer_status": TRANSFER_STATUS_ZH,
    "investigation_status": INVESTIGATION_STATUS_ZH,
    "recommendation": RECOMMENDATION_ZH,
    "role": ROLE_ZH,
    "program": PROGRAM_LABELS,
    "supervision": LEVEL_LABELS,
    "trend": TREND_LABELS,
    "figure": FIGURE_LABELS,
    "rate": RATE_LABELS,
}


def notice_text(notice: dict[str, Any]) -> str:
    """What someone else did to the reader's account, in the reader's words."""
    role = ROLE_ZH.get(notice.get("role") or "", notice.get("role") or "")
    if notice["kind"] == "role_granted":
        head = "（机构负责人）" if notice.get("is_agency_head") else ""
        return f"安全管理员已授予您“{role}”角色{head}。如非本人知悉，请立即联系安全管理员。"
    if notice["kind"] == "role_withdrawn":
        return f"安全管理员已收回您的“{role}”角色。"
    if notice["kind"] == "password_reset":
        return "管理员重置了您的密码。如非本人申请，请立即联系安全管理员。"
    if notice["kind"] == "role_suspended":
        return f"因密码由管理员重置，您的“{role}”角色已暂停，待安全管理员重新授予后恢复。"
    if notice["kind"] == "role_review":
        who = notice.get("username") or ""
        return f"账号 {who} 的密码被管理员重置，其“{role}”角色已暂停，待您核实后重新授予。"
    return "您的账号有变更。"


FORM_ONLY_ZH = "此地址用于提交表单，请从页面上的按钮办理。"


class Page(SignedInHandler):
    async def prepare(self) -> None:
        # A form's address opened as a page (a bookmark, a reload after a redirect): its
        # handler's page takes fewer path parts than the form's, so say so instead of failing.
        if self.request.method == "GET" and not _takes(self.get, self.path_args, self.path_kwargs):
            self.set_status(405)
            self.set_header("Allow", "POST")
            self.render("error.html", message=FORM_ONLY_ZH, status=405)
            return
        await super().prepare()

    def get_template_namespace(self) -> dict[str, Any]:
        namespace = super().get_template_namespace()
        namespace.update(
            labels=LABELS, local_time=local_time, my_level=self.my_level, notice_text=notice_text
        )
        namespace.update(
            distance_text=distance_text,
            gap_text=gap_text,
            map_json=functools.partial(map_json, tiles=self.ctx.map_tiles),
        )
        return namespace

    def set_default_headers(self) -> None:
        super().set_default_headers()
        if self.ctx.map_tiles:
            # The configured tile server may serve the maps' images (and nothing else).
            parts = urllib.parse.urlsplit(self.ctx.map_tiles)
            origin = f"{parts.scheme}://{parts.netloc}"
            self.set_header(
                "Content-Security-Policy", CSP.replace("img-src ", f"img-src {origin} ")
            )

    @property
    def my_level(self) -> str | None:
        return LEVEL_OF_ROLE.get((getattr(self, "me", None) or {}).get("role", ""))


def _takes(method: Any, args: list[Any], kwargs: dict[str, Any]) -> bool:
    try:
        inspect.signature(method).bind(*args, **kwargs)
    except TypeError:
        return False
    return True


# A form's words beside its fields, by field name (or by record, then field, on a page with one
# form per record).
Errors = dict[str, Any]


class FormPage(Page):
    """A page with a form, declared once: its `template`, what it shows beside the form
    (`load`) and what an API refusal says beside the form's fields (`refusal`). `show` renders
    it; `submit` calls the API and redirects on success, or shows the form again as typed with
    the refusal beside its fields, under the API's status."""

    template = ""

    async def load(self, *args: Any, **kwargs: Any) -> dict[str, Any]:
        """What the template shows besides the form, read through the API for the route's own
        path arguments; read afresh each time, so a form that comes back shows the record as
        it is now."""
        return {}

    def render_form(
        self, context: dict[str, Any], typed: dict[str, Any], errors: Errors, error: str | None
    ) -> None:
        """The template with what was typed, the words beside each field and the one above the
        form (a page whose template names them otherwise says so here)."""
        self.render(self.template, **context, typed=typed, errors=errors, error=error)

    async def show(
        self,
        typed: dict[str, Any] | None = None,
        errors: Errors | None = None,
        error: str | None = None,
        *,
        status: int | None = None,
        context: dict[str, Any] | None = None,
        **extra: Any,
    ) -> None:
        """The page with its form (`status` 422 for one refused before the API was asked);
        `context` when the page has just loaded it, `extra` for what one showing adds."""
        if status is not None:
            self.set_status(status)
        if context is None:
            context = await self.load(*self.path_args, **self.path_kwargs)
        self.render_form({**context, **extra}, typed or {}, errors or {}, error)

    def refusal(self, answer: ApiAnswer, typed: dict[str, Any]) -> tuple[Errors, str | None]:
        """A refusal as (words beside the fields, words above the form): the fields the API
        names, else its message."""
        errors = answer.field_errors()
        return errors, None if errors else answer.message_zh()

    async def submit(
        self,
        method: str,
        path: str,
        body: Any,
        typed: dict[str, Any],
        done: str | Callable[[Any], str],
    ) -> None:
        """Ask the API; on success go to `done` (or where it says for the answer's body),
        otherwise show the form again as typed, with the refusal, under the API's status."""
        answer = await self.api(method, path, body)
        if answer.ok:
            self.redirect(done if isinstance(done, str) else done(answer.body))
            return
        errors, error = self.refusal(answer, typed)
        await self.show(typed, errors, error, status=answer.status)


# --- signing in -------------------------------------------------------------------------------


class LoginPage(ConsoleHandler):
    async def get(self) -> None:
        self.render(
            "login.html",
            next=self.safe_next(self.get_query_argument("next", None)),
            username="",
            error=None,
            errors={},
        )

    async def post(self) -> None:
        username = self.get_body_argument("username", "").strip()
        password = self.get_body_argument("password", "")
        totp = self.get_body_argument("totp", "").strip() or None
        target = self.safe_next(self.get_body_argument("next", None))
        errors = {}
        if not username:
            errors["username"] = "请输入用户名"
        if not password:
            errors["password"] = "请输入密码"  # noqa: S105 - a message, not a password
        if errors:
            self.set_status(422)
            self.render(
                "login.html",
                next=target,
                username=username,
                error=None,
                errors=errors,
            )
            return
        body: dict[str, Any] = {"username": username, "password": password}
        if totp:
            body["totp"] = totp
        answer = await self.api("POST", "/api/v1/auth/login", body, anonymous=True)
        if answer.ok:
            self.start_session(answer.body["token"])
            step = answer.body.get("required_step")
            if step == "totp_enrolment":
                self.redirect("/console/totp")
            elif step == "password_change":
                self.redirect("/console/password")
            else:
                self.redirect(target)
            return
        # The code is asked for with the password, never after it: an answer that asked for it
        # would tell whoever typed the password that it was right.
        self.set_status(answer.status)
        field_errors = answer.field_errors()
        self.render(
            "login.html",
            next=target,
            username=username,
            error=None if field_errors else answer.message_zh(),
            errors=field_errors,
        )


class LogoutPage(ConsoleHandler):
    async def post(self) -> None:
        if self.token:
            with contextlib.suppress(SessionExpired):
                await self.api("POST", "/api/v1/auth/logout")
        self.end_session()
        self.redirect("/console/login")


class RestrictedPage(FormPage):
    """A page a restricted session may open (it is where the restriction is lifted)."""

    async def prepare(self) -> None:
        await ConsoleHandler.prepare(self)
        if not self.token:
            raise SessionExpired()
        me = await self.api("GET", "/api/v1/me")
        if not me.ok:
            raise ApiRefused(me)
        self.me = me.body


class TotpPage(RestrictedPage):
    async def get(self) -> None:
        enrolment = await self.api_ok("POST", "/api/v1/me/totp")
        self.render("totp.html", enrolment=enrolment, errors={}, code="")

    async def post(self) -> None:
        code = self.get_body_argument("code", "").strip()
        answer = await self.api("POST", "/api/v1/me/totp/confirm", {"code": code})
        if answer.ok:
            self.redirect("/console/")
            return
        enrolment = {
            "secret": self.get_body_argument("secret", ""),
            "provisioning_uri": self.get_body_argument("provisioning_uri", ""),
        }
        if answer.error_code == "wrong_code":
            errors = {"code": answer.message_zh()}
        elif answer.status == 422:
            errors = {"code": "请输入 6 位数字动态验证码"}
        else:
            errors = {"code": answer.message_zh()}
        self.set_status(answer.status)
        self.render("totp.html", enrolment=enrolment, errors=errors, code=code)


class PasswordPage(RestrictedPage):
    template = "password.html"

    async def get(self) -> None:
        await self.show()

    async def post(self) -> None:
        body = {
            "current_password": self.get_body_argument("current_password", ""),
            "new_password": self.get_body_argument("new_password", ""),
        }
        # Passwords are never typed back into the form.
        await self.submit("POST", "/api/v1/me/password", body, {}, "/console/")


class NoticesSeen(Page):
    async def post(self) -> None:
        await self.api_ok("POST", "/api/v1/me/notices/seen")
        self.redirect("/console/")


# --- the day's work ---------------------------------------------------------------------------


class CaseloadPage(Page):
    async def get(self) -> None:
        if not self.may("caseload.read"):
            # An administrator, the police, a coordinator: no caseload here (asking the API
            # would only add a refusal to the audit log); the menu holds what the role does.
            self.render(
                "caseload.html",
                items=[],
                caseload_error=None,
                no_caseload=True,
                open_alerts=None,
                cut_at=None,
                files_total=None,
            )
            return
        caseload = await self.api("GET", "/api/v1/caseload")
        alerts = await self.api("GET", "/api/v1/alerts?status=open&limit=1")
        # The caseload looks at the first MAX_SUBJECTS files in scope: say so when there are more.
        files = await self.api("GET", "/api/v1/subjects?page=1&limit=1&status=active")
        self.render(
            "caseload.html",
            items=caseload.body["items"] if caseload.ok else [],
            caseload_error=None if caseload.ok else caseload.message_zh(),
            open_alerts=alerts.body["total"] if alerts.ok else None,
            cut_at=MAX_SUBJECTS if files.ok and files.body["total"] > MAX_SUBJECTS else None,
            files_total=files.body["total"] if files.ok else None,
            no_caseload=False,
        )


class SubjectPage(FormPage):
    template = "subject.html"

    async def get(self, subject_id: str) -> None:
        await self.show()

    async def load(self, subject_id: str) -> dict[str, Any]:
        subject = await self.api_ok("GET", f"/api/v1/subjects/{subject_id}")
        programs = await self.api("GET", f"/api/v1/subjects/{subject_id}/programs")
        today = self.ctx.clock.now().astimezone(LOCAL_TZ).date()
        query = urllib.parse.urlencode(
            {
                "from": (today - dt.timedelta(days=30)).isoformat(),
                "to": (today + dt.timedelta(days=7)).isoformat(),
            }
        )
        obligations = await self.api("GET", f"/api/v1/subjects/{subject_id}/obligations?{query}")
        notes = await self.api("GET", f"/api/v1/subjects/{subject_id}/notes")
        visits = await self.api("GET", f"/api/v1/subjects/{subject_id}/visits")
        # The first page of the check-in history (roles that may not read check-ins: None).
        history = await self.api("GET", f"/api/v1/subjects/{subject_id}/checkins?limit=10")
        transfers = await self.api("GET", f"/api/v1/subjects/{subject_id}/transfers")
        items = obligations.body["items"] if obligations.ok else []
        return {
            "subject": subject,
            "programs": programs.body["items"] if programs.ok else [],
            "checkins": [o for o in items if o["kind"] == "remote_checkin"],
            "others": [o for o in items if o["kind"] != "remote_checkin"],
            "notes": notes.body["items"] if notes.ok else None,
            "visits": visits.body["items"] if visits.ok else None,
            "history": history.body["items"] if history.ok else None,
            "history_next": history.body["next_cursor"] if history.ok else None,
            "transfers": transfers.body["items"] if transfers.ok else None,
        }

    def render_form(
        self, context: dict[str, Any], typed: dict[str, Any], errors: Errors, error: str | None
    ) -> None:
        # The note's box is the page's one field (`note` in its template), with no line above.
        self.render(self.template, **context, note=typed.get("text", ""), errors=errors)

    def refusal(self, answer: ApiAnswer, typed: dict[str, Any]) -> tuple[Errors, str | None]:
        errors = answer.field_errors() or {"text": answer.message_zh()}
        if "text" in errors and not typed["text"].strip():
            errors["text"] = "请填写记录内容"
        return errors, None

    async def post(self, subject_id: str) -> None:
        typed = {"text": self.get_body_argument("text", "")}
        await self.submit(
            "POST",
            f"/api/v1/subjects/{subject_id}/notes",
            typed,
            typed,
            f"/console/subjects/{subject_id}",
        )


# Decided records shown under the pending ones, each with the documents made from it.
DECIDED_SHOWN = 10


def _decided_at(record: dict[str, Any]) -> str:
    steps = record.get("steps") or []
    return str(record.get("decided_at") or (steps[-1].get("at") if steps else "") or "")


class DecisionForms(FormPage):
    """A list of records, each with its own decision form (yes or no, and a comment): what was
    typed and what is wrong are keyed by the record."""

    async def decide(
        self, record_id: str, path: str, *, verb: str, back: str, missing: str
    ) -> None:
        """The decision (`verb`: yes or no) and its comment to the API's `path`, then `back` to
        the list; a comment left empty is `missing`."""
        comment = self.get_body_argument("comment", "")
        typed = {record_id: comment}
        if not comment.strip():
            await self.show(typed, {record_id: {"comment": missing}}, status=422)
            return
        body = {verb: self.get_body_argument(verb, "") == "1", "comment": comment}
        await self.submit("POST", path, body, typed, back)

    def refusal(self, answer: ApiAnswer, typed: dict[str, Any]) -> tuple[Errors, str | None]:
        (record_id,) = typed
        return {record_id: answer.field_errors() or {"comment": answer.message_zh()}}, None


class DecidedRecordsPage(DecisionForms):
    """What the leave and sanction pages share: the latest decided records, each beside the
    documents (文书) made from it, with their PDFs to print (issue 27)."""

    async def decided(self, paths: list[str]) -> list[dict[str, Any]]:
        answers = await asyncio.gather(*(self.api("GET", path) for path in paths))
        records = [r for a in answers if a.ok for r in a.body["items"]]
        records.sort(key=_decided_at, reverse=True)
        records = records[:DECIDED_SHOWN]
        documents: dict[str, list[dict[str, Any]]] = {}
        if self.may("documents.read"):
            people = list(dict.fromkeys(r["subject_id"] for r in records))
            lists = await asyncio.gather(
                *(self.api("GET", f"/api/v1/subjects/{sid}/documents") for sid in people)
            )
            for listed in lists:
                for d in listed.body["items"] if listed.ok else []:
                    documents.setdefault(d["record_id"], []).append(d)
        return [
            {**r, "decided_on": _decided_at(r)[:10], "documents": documents.get(r["id"], [])}
            for r in records
        ]


class LeavePage(DecidedRecordsPage):
    template = "leave.html"

    async def get(self) -> None:
        await self.show()

    async def load(self, **_: str) -> dict[str, Any]:
        # The same list whichever request's form came back (the decision's address names it).
        requests = await self.api_ok("GET", "/api/v1/leave-requests?status=pending")
        decided = await self.decided(
            [
                f"/api/v1/leave-requests?status={status}&limit={DECIDED_SHOWN}"
                for status in ("approved", "rejected")
            ]
        )
        return {"requests": requests["items"], "decided": decided}


class LeaveDecision(LeavePage):
    async def post(self, leave_id: str) -> None:
        await self.decide(
            leave_id,
            f"/api/v1/leave-requests/{leave_id}/decision",
            verb="approve",
            back="/console/leave",
            missing="请填写审批意见",
        )


class SanctionsPage(DecidedRecordsPage):
    template = "sanctions.html"

    async def get(self) -> None:
        await self.show()

    async def load(self, **_: str) -> dict[str, Any]:
        pending = await self.api_ok("GET", "/api/v1/sanctions?status=pending")
        decided = await self.decided(
            [
                f"/api/v1/sanctions?status={status}&limit={DECIDED_SHOWN}"
                for status in ("approved", "rejected")
            ]
        )
        return {"items": pending["items"], "kinds": SANCTION_ZH, "decided": decided}


class SanctionDecision(SanctionsPage):
    async def post(self, sanction_id: str) -> None:
        await self.decide(
            sanction_id,
            f"/api/v1/sanctions/{sanction_id}/decision",
            verb="approve",
            back="/console/sanctions",
            missing="请填写审批意见",
        )


# --- monthly compliance -----------------------------------------------------------------------


def _last_month(now: dt.datetime) -> str:
    first = now.astimezone(LOCAL_TZ).date().replace(day=1)
    return f"{first - dt.timedelta(days=1):%Y-%m}"


class ReportsPage(FormPage):
    template = "reports.html"

    async def get(self) -> None:
        await self.show({"org_id": self.me["org_id"], "month": _last_month(self.ctx.clock.now())})

    async def load(self) -> dict[str, Any]:
        orgs = await self.api("GET", "/api/v1/orgs")
        nodes = [
            o
            for o in (orgs.body.get("items", []) if orgs.ok else [])
            if o.get("kind") in ("station", "county", "city")
        ]
        return {"orgs": nodes}

    def render_form(
        self, context: dict[str, Any], typed: dict[str, Any], errors: Errors, error: str | None
    ) -> None:
        # The template names the form's two fields itself.
        self.render(self.template, **context, **typed, errors=errors, error=error)

    def refusal(self, answer: ApiAnswer, typed: dict[str, Any]) -> tuple[Errors, str | None]:
        errors = answer.field_errors()
        if answer.error_code == "month_not_ended":
            errors["month"] = answer.message_zh()
        elif "month" in errors:
            errors["month"] = "请按 YYYY-MM 填写月份"
        return errors, None if errors else answer.message_zh()

    async def post(self) -> None:
        typed = {
            "org_id": self.get_body_argument("org_id", ""),
            "month": self.get_body_argument("month", "").strip(),
        }
        await self.submit(
            "POST",
            "/api/v1/reports/compliance",
            typed,
            typed,
            lambda report: f"/console/reports/{report['id']}",
        )


class ReportPage(FormPage):
    template = "report.html"

    async def get(self, report_id: str) -> None:
        await self.show()

    async def load(self, report_id: str) -> dict[str, Any]:
        report = await self.api_ok("GET", f"/api/v1/reports/compliance/{report_id}")
        charts = {
            "programs": {
                "labels": [PROGRAM_LABELS.get(p, p) for p in report["by_program"]],
                "values": [
                    round((v.get("compliance_rate") or 0) * 100, 1)
                    for v in report["by_program"].values()
                ],
            },
            "units": {
                "labels": [u["name"] for u in report["units"]],
                "values": [
                    round((u["rates"]["compliance_rate"] or 0) * 100, 1) for u in report["units"]
                ],
                "missed": [u["figures"].get("checkins_missed", 0) for u in report["units"]],
            },
        }
        can_sign = self.my_level is not None and self.my_level == _REPORT_LEVEL.get(
            report["org_kind"]
        )
        return {
            "report": report,
            "charts": json.dumps(charts, ensure_ascii=False),
            "can_sign": can_sign,
        }

    def render_form(
        self, context: dict[str, Any], typed: dict[str, Any], errors: Errors, error: str | None
    ) -> None:
        # The signing comment is the page's one field, `comment` in its template.
        self.render(
            self.template, **context, comment=typed.get("comment", ""), errors=errors, error=error
        )


_REPORT_LEVEL = {"station": "station", "county": "county", "city": "city"}


class ReportSign(ReportPage):
    async def post(self, report_id: str) -> None:
        comment = self.get_body_argument("comment", "")
        resign = self.get_body_argument("resign", "") == "1"
        await self.submit(
            "POST",
            f"/api/v1/reports/compliance/{report_id}/sign",
            {"comment": comment, "resign": resign},
            {"comment": comment},
            f"/console/reports/{report_id}",
        )

    def refusal(self, answer: ApiAnswer, typed: dict[str, Any]) -> tuple[Errors, str | None]:
        errors = answer.field_errors()
        if errors:
            return errors, None
        message = answer.message_zh()
        details = (answer.body or {}).get("error", {}).get("details")
        if answer.error_code == "units_unsigned" and isinstance(details, dict):
            # Which units have yet to sign, by name.
            names = "、".join(u.get("name", "") for u in details.get("unsigned", []))
            message += f"(未签署:{names})"
        return errors, message


class DrillPage(Page):
    async def get(self, report_id: str) -> None:
        figure = self.get_query_argument("figure", "")
        version = self.get_query_argument("version", None)
        query = {"figure": figure}
        if version:
            query["version"] = version
        answer = await self.api_ok(
            "GET",
            f"/api/v1/reports/compliance/{report_id}/subjects?" + urllib.parse.urlencode(query),
        )
        self.render("drill.html", report_id=report_id, figure=figure, items=answer["items"])


class ReportDownload(Page):
    """The API's export, relayed as it streams (never held whole in this process)."""

    FORMATS: ClassVar[dict[str, str]] = {"xlsx": "xlsx", "pdf": "pdf"}

    async def get(self, report_id: str) -> None:
        fmt = self.FORMATS.get(self.get_query_argument("format", ""))
        if fmt is None:
            raise ApiRefused(ApiAnswer(422, None, {}, b""))

        def relay(answer: LocalExchange, chunk: bytes) -> Future[None]:
            # Only a file is relayed as it streams; a refusal is kept and answered as a page.
            if not self._headers_written:
                self.set_header("Content-Type", answer.headers.get("Content-Type", ""))
                self.set_header(
                    "Content-Disposition", answer.headers.get("Content-Disposition", "")
                )
                self.set_header("Content-Security-Policy", "default-src 'none'")
            self.write(chunk)
            return self.flush()

        exchange = await self.call_api(
            "GET",
            f"/api/v1/reports/compliance/{report_id}?format={fmt}",
            {"Authorization": f"Bearer {self.token}"},
            relay=relay,
            allowed_s=300,
        )
        if exchange.status == 401:
            raise SessionExpired()
        if exchange.cut and self._headers_written:
            # The export broke midway: the browser sees a broken transfer, never a whole-looking
            # file.
            self.request.connection.close()  # type: ignore[union-attr]
            return
        if exchange.status != 200 or exchange.cut:
            raise ApiRefused(ApiAnswer(exchange.status or 503, None, {}, b""))
        self.finish()


class StaticFile(ConsoleHandler):
    """The console's own script, style and chart library; names are fixed, never from the path."""

    FILES: ClassVar[dict[str, str]] = {
        "console.js": "text/javascript",
        "console.css": "text/css",
        "chart-4.6.1.umd.min.js": "text/javascript",
        "leaflet-1.9.4.js": "text/javascript",
        "leaflet-1.9.4.css": "text/css",
        "map.js": "text/javascript",
    }

    async def get(self, name: str) -> None:
        media_type = self.FILES.get(name)
        if media_type is None:
            self.send_error(404)
            return
        self.set_header("Content-Type", f"{media_type}; charset=utf-8")
        self.set_header("Cache-Control", "public, max-age=3600")
        self.finish((STATIC_DIR / name).read_bytes())


class Home(ConsoleHandler):
    async def get(self) -> None:
        self.redirect("/console/")


routes = [
    (r"/console", Home),
    (r"/console/", CaseloadPage),
    (r"/console/login", LoginPage),
    (r"/console/logout", LogoutPage),
    (r"/console/totp", TotpPage),
    (r"/console/password", PasswordPage),
    (r"/console/notices/seen", NoticesSeen),
    (rf"/console/subjects/{path_id('subject_id')}", SubjectPage),
    (r"/console/leave", LeavePage),
    (rf"/console/leave/{path_id('leave_id')}/decision", LeaveDecision),
    (r"/console/sanctions", SanctionsPage),
    (rf"/console/sanctions/{path_id('sanction_id')}/decision", SanctionDecision),
    (r"/console/reports", ReportsPage),
    (rf"/console/reports/{path_id('report_id')}", ReportPage),
    (rf"/console/reports/{path_id('report_id')}/sign", ReportSign),
    (rf"/console/reports/{path_id('report_id')}/subjects", DrillPage),
    (rf"/console/reports/{path_id('report_id')}/download", ReportDownload),
    (r"/console/static/(?P<name>[A-Za-z0-9_.-]+)", StaticFile),
]

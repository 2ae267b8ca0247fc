"""The console's contact work on a case file: visits and talks, excuses, drug-test results and
hours; counselling booked from what is free; sanctions and praise beside the statutory
suggestion, electronic location, leave on behalf and 销假; needs and referrals to the county's
resources. Every form goes through the staff API and names a refused field in Chinese."""

from __future__ import annotations

import datetime as dt
import urllib.parse
from typing import Any

from handlers.console.base import SANCTION_ZH, ApiAnswer, ApiRefused, path_id
from handlers.console.pages import FormPage, local_time
from models.clock import LOCAL_TZ

VISIT_KINDS_ZH = {"visit": "走访", "talk": "谈话", "followup": "随访"}
OUTCOME_ZH = {"negative": "阴性", "positive": "阳性", "refused": "拒绝检测", "evaded": "逃避检测"}
SESSION_STATUS_ZH = {
    "booked": "已预约",
    "attended": "已参加",
    "no_show": "未到",
    "cancelled": "已取消",
}
LENGTHS_ZH = {"30": "30 分钟", "45": "45 分钟", "60": "1 小时", "90": "1.5 小时", "120": "2 小时"}
GROUNDS_ZH = {
    "breach_of_prohibition": "违反人民法院禁止令",
    "left_without_approval": "无正当理由未经批准离开所居住的市、县",
    "refused_report_after_warning": "拒不按照规定报告自己的活动情况，被给予警告",
    "public_security_penalty": "违反监督管理规定，被给予治安管理处罚",
    "revocation_pending": "拟提请撤销缓刑、假释或者暂予监外执行收监执行",
}
# The rule a suggestion rests on, in the officer's words (`{}`: the rule's value).
RULE_TEXT_ZH = {
    "detachment.warn_after_days": "脱管超过 {} 天的给予警告，未超过的给予训诫",
    "detachment.revoke_after_months": "脱管超过 {} 个月的提请撤销缓刑/假释",
    "sanctions.admonishments_to_warn": "训诫 {} 次仍未纠正的给予警告",
    "sanctions.warnings_to_revoke": "警告 {} 次仍未纠正的提请撤销缓刑/假释",
}
ORDER_STATUS_ZH = {
    "pending": "审批中",
    "approved": "已批准",
    "rejected": "未批准",
    "ended": "已结束",
}
REFERRAL_STATUS_ZH = {
    "requested": "待司法所同意",
    "approved": "司法所已同意",
    "offered": "已联系帮扶资源",
    "accepted": "本人已接受",
    "placed": "已安置",
    "enrolled": "已入学/入职",
    "completed": "帮扶已完成",
    "declined": "未获安排",
    "cancelled": "已取消",
    "no_show": "未按时报到",
}
RESOURCE_KINDS_ZH = {
    "sunshine_home": "阳光之家",
    "transitional_base": "过渡性安置基地",
    "shelter": "救助站",
    "meals": "供餐点",
    "job": "就业岗位",
    "course": "职业技能培训",
    "legal_aid": "法律援助",
    "benefit": "社会救助申请",
}
REFERRAL_NEEDS_ZH = {
    "housing": "住所",
    "food": "饮食",
    "job": "就业",
    "training": "技能培训",
    "legal": "法律援助",
    "benefits": "社会救助",
}
ASSESSED_NEEDS_ZH = {
    "housing": "无固定住所",
    "food": "基本生活困难",
    "income": "无稳定收入",
    "employment": "无业",
    "training": "需要技能培训",
    "legal": "需要法律援助",
    "benefits": "需要申请社会救助",
}
# A referral's next steps, by its state: (target state, button text, the action that takes it).
STEPS = {
    "requested": (("approved", "同意", "assistance.approve"),),
    "approved": (("offered", "联系该资源", "assistance.manage"),),
    "offered": (("accepted", "本人接受", "assistance.manage"),),
}
# Kinds whose result is a plain "done" recorded by staff (drug tests have outcomes; hours and
# contacts are met by their own records; check-ins by the person).
DONE_KINDS = ("in_person_report", "written_report", "medical_reexam")
HOURS_KINDS = ("education", "community_service")
OPEN_STATES = ("scheduled", "open", "missed")

SAVED_ZH = {
    "visit": "走访/谈话已记录。",
    "excuse": "已豁免。",
    "result": "结果已记录。",
    "hours": "时长已记录。",
    "book": "心理辅导已预约。",
    "cancel": "预约已取消。",
    "sanction": "已提交审批。",
    "elocation": "电子定位申请已提交，待县(区)司法局负责人审批。",
    "renewal": "续期申请已提交。",
    "leave": "请假已登记，待审批。",
    "return": "已销假。",
    "needs": "需求评估已保存。",
    "refer": "已转介，待司法所同意。",
    "step": "已办理。",
    "placed": "已安置。",
}


def _details(answer: ApiAnswer) -> list[dict[str, Any]]:
    details = (answer.body or {}).get("error", {}).get("details")
    return [d for d in details if isinstance(d, dict)] if isinstance(details, list) else []


def _refused_fields(answer: ApiAnswer) -> list[str]:
    return [str(d.get("field", "")).split(".", 1)[0] for d in _details(answer)]


class ContactWork(FormPage):
    """A page of work on one case file: its forms, a word when one saved, and the errors of the
    one that did not (`form`), beside its fields (keys `form.field`)."""

    page_action: tuple[str, ...] = ()

    def refuse_unless_any(self, *actions: str) -> None:
        if not any(self.may(a) for a in actions):
            raise ApiRefused(ApiAnswer(403, None, {}, b""))

    def get_template_namespace(self) -> dict[str, Any]:
        namespace = super().get_template_namespace()
        namespace.update(
            visit_kinds=VISIT_KINDS_ZH,
            outcomes=OUTCOME_ZH,
            session_statuses=SESSION_STATUS_ZH,
            lengths=LENGTHS_ZH,
            sanction_kinds=SANCTION_ZH,
            grounds=GROUNDS_ZH,
            order_statuses=ORDER_STATUS_ZH,
            rule_text=lambda key, value: RULE_TEXT_ZH.get(key, "规则 {}").format(value),
            referral_statuses=REFERRAL_STATUS_ZH,
            resource_kinds=RESOURCE_KINDS_ZH,
            referral_needs=REFERRAL_NEEDS_ZH,
            assessed_needs=ASSESSED_NEEDS_ZH,
            steps=STEPS,
            done_kinds=DONE_KINDS,
            hours_kinds=HOURS_KINDS,
            open_states=OPEN_STATES,
            hhmm=lambda v: local_time(v)[11:16] if v else "",
        )
        return namespace

    def today(self) -> dt.date:
        return self.ctx.clock.now().astimezone(LOCAL_TZ).date()

    async def get(self, subject_id: str) -> None:
        self.refuse_unless_any(*self.page_action)
        await self.show(saved=SAVED_ZH.get(self.get_query_argument("saved", "")))

    async def load(self, subject_id: str) -> dict[str, Any]:
        subject = await self.api_ok("GET", f"/api/v1/subjects/{subject_id}")
        # No form came back and none saved, unless the showing says which.
        return {"subject": subject, "form": "", "saved": None, **await self.gather(subject)}

    async def gather(self, subject: dict[str, Any]) -> dict[str, Any]:
        """What this page lists beside its forms."""
        return {}

    def arg(self, name: str) -> str:
        return self.get_body_argument(name, "").strip()

    def done(self, subject_id: str, page: str, word: str, anchor: str = "") -> None:
        self.redirect(f"/console/subjects/{subject_id}/{page}?saved={word}{anchor}")

    async def answer_refused(
        self,
        form: str,
        typed: dict[str, str],
        answer: ApiAnswer,
        labels: dict[str, str],
        conflicts: dict[str, tuple[str, str]] | None = None,
    ) -> None:
        """An API refusal as the form's errors: a field it names gets its label's message; a
        known conflict its own sentence beside the field it concerns."""
        if answer.status in (401, 403, 404) and answer.error_code not in (conflicts or {}):
            if answer.status == 403 and labels:
                await self.show(typed, {}, answer.message_zh(), status=403, form=form)
                return
            raise ApiRefused(answer)
        errors: dict[str, str] = {}
        known = (conflicts or {}).get(answer.error_code or "")
        if known is not None:
            field, message = known
            errors[f"{form}.{field}"] = message
        for field in _refused_fields(answer):
            if field in labels:
                errors[f"{form}.{field}"] = labels[field]
        message = (answer.body or {}).get("error", {}).get("message_zh")
        error = None if errors else (message or answer.message_zh())
        await self.show(typed, errors, error, status=max(answer.status, 400), form=form)


# --- contact work: visits, talks, excuses, results, hours --------------------------------------


class ContactPage(ContactWork):
    page_action = ("obligations.read", "visits.record")
    template = "contact_work.html"

    async def gather(self, subject: dict[str, Any]) -> dict[str, Any]:
        sid = subject["id"]
        today = self.today()
        query = urllib.parse.urlencode(
            {
                "from": (today - dt.timedelta(days=62)).isoformat(),
                "to": (today + dt.timedelta(days=31)).isoformat(),
            }
        )
        obligations = await self.api("GET", f"/api/v1/subjects/{sid}/obligations?{query}")
        visits = await self.api("GET", f"/api/v1/subjects/{sid}/visits")
        kinds = ("followup",) if self.me["role"] == "health_worker" else ("visit", "talk")
        # Check-ins are the person's own, reviewed on their own page: not listed here.
        items = obligations.body["items"] if obligations.ok else None
        if items is not None:
            items = [o for o in items if o["kind"] != "remote_checkin"]
        return {
            "obligations": items,
            "visits": visits.body["items"] if visits.ok else None,
            "kinds": kinds,
            "today": today.isoformat(),
            "now": self.ctx.clock.now().astimezone(LOCAL_TZ).strftime("%Y-%m-%dT%H:%M"),
        }

    async def post(self, subject_id: str) -> None:
        form = self.arg("form")
        if form == "visit":
            await self._visit(subject_id)
        elif form in ("excuse", "result", "hours"):
            await self._occurrence(subject_id, form)
        else:
            raise ApiRefused(ApiAnswer(422, None, {}, b""))

    async def _visit(self, subject_id: str) -> None:
        self.refuse_unless_any("visits.record")
        typed = {k: self.arg(k) for k in ("kind", "place", "at", "note")}
        errors = {}
        if typed["kind"] not in VISIT_KINDS_ZH:
            errors["visit.kind"] = "请选择类型"
        if not typed["place"]:
            errors["visit.place"] = "请填写地点"
        elif len(typed["place"]) > 200:
            errors["visit.place"] = "地点不超过 200 个字"
        if not typed["note"]:
            errors["visit.note"] = "请填写谈话或走访内容"
        at = None
        try:
            at = dt.datetime.fromisoformat(typed["at"]).replace(tzinfo=LOCAL_TZ)
        except ValueError:
            errors["visit.at"] = "请填写时间"
        if at is not None and at > self.ctx.clock.now() + dt.timedelta(minutes=5):
            errors["visit.at"] = "时间不能晚于现在"
        if errors:
            await self.show(typed, errors, status=422, form="visit")
            return
        assert at is not None
        body = {
            "kind": typed["kind"],
            "place": typed["place"],
            "note": typed["note"],
            "at": at.isoformat(),
        }
        answer = await self.api("POST", f"/api/v1/subjects/{subject_id}/visits", body)
        if answer.ok:
            self.done(subject_id, "contact", "visit")
            return
        await self.answer_refused(
            "visit",
            typed,
            answer,
            {
                "note": "内容不超过 5000 个字",
                "place": "地点不超过 200 个字",
                "at": "时间不正确",
                "kind": "请选择类型",
            },
        )

    async def _occurrence(self, subject_id: str, form: str) -> None:
        occurrence = self.arg("occurrence_id")
        typed = {"occurrence_id": occurrence}
        errors: dict[str, str] = {}
        body: dict[str, Any]
        if form == "excuse":
            self.refuse_unless_any("obligations.excuse")
            typed["reason"] = self.arg("reason")
            if len(typed["reason"]) < 2:
                errors["excuse.reason"] = "请填写豁免理由(至少 2 个字)"
            body = {"reason": typed["reason"]}
            labels = {"reason": "豁免理由为 2 至 500 个字"}
        elif form == "result":
            self.refuse_unless_any("obligations.record")
            typed["outcome"] = self.arg("outcome")
            if typed["outcome"] not in (*OUTCOME_ZH, "done"):
                errors["result.outcome"] = "请选择检测结果"
            body = {"outcome": typed["outcome"]}
            labels = {"outcome": "请选择检测结果"}
        else:
            self.refuse_unless_any("obligations.record")
            typed.update({k: self.arg(k) for k in ("on", "hours", "place", "confirmed_by")})
            try:
                hours = float(typed["hours"])
            except ValueError:
                hours = 0
            if not 0 < hours <= 24:
                errors["hours.hours"] = "请填写时长(小时，大于 0)"
            if not typed["on"]:
                errors["hours.on"] = "请填写日期"
            if not typed["place"]:
                errors["hours.place"] = "请填写地点或课程"
            if not typed["confirmed_by"]:
                errors["hours.confirmed_by"] = "请填写确认人"
            body = {
                "on": typed["on"],
                "hours": hours,
                "place": typed["place"],
                "confirmed_by": typed["confirmed_by"],
            }
            labels = {
                "on": "日期须在该月的时段内",
                "hours": "时长不正确",
                "place": "地点或课程不超过 200 个字",
                "confirmed_by": "确认人不超过 100 个字",
            }
        if errors:
            await self.show(typed, errors, status=422, form=form)
            return
        answer = await self.api("POST", f"/api/v1/obligations/{occurrence}/{form}", body)
        if answer.ok:
            self.done(subject_id, "contact", form)
            return
        await self.answer_refused(
            form,
            typed,
            answer,
            labels,
            {
                "hours_short": ("outcome", "学习/公益时长尚未达到要求，请先登记时长"),
                "invalid_transition": ("reason", "该事项的状态已变化，不能再办理"),
            },
        )


# --- counselling: booked from what is free ---------------------------------------------------


class CounselingPage(ContactWork):
    page_action = ("counseling.read",)
    template = "contact_counseling.html"

    def chosen_day(self) -> tuple[str, str]:
        raw = self.get_argument("date", "")
        try:
            day = dt.date.fromisoformat(raw)
        except ValueError:
            day = self.today() + dt.timedelta(days=1)
        minutes = self.get_argument("minutes", "60")
        return day.isoformat(), minutes if minutes in LENGTHS_ZH else "60"

    async def gather(self, subject: dict[str, Any]) -> dict[str, Any]:
        sid = subject["id"]
        day, minutes = self.chosen_day()
        sessions = await self.api("GET", f"/api/v1/subjects/{sid}/counseling")
        free = await self.api(
            "GET",
            "/api/v1/counseling/availability?"
            + urllib.parse.urlencode({"subject_id": sid, "date": day, "minutes": minutes}),
        )
        found = free.body if free.ok else {"counselors": [], "rooms": []}
        names = {c["id"]: c["name"] for c in found["counselors"]}
        # Each free start of each counsellor, as one choice: who and when, never an id typed.
        length = dt.timedelta(minutes=int(minutes))
        slots = [
            (f"{c['id']}|{start}", f"{hhmm_of(start)}–{hhmm_of(start, length)} {c['name']}")
            for c in found["counselors"]
            for start in c["free"]
        ]
        slots.sort(key=lambda s: s[1])
        return {
            "sessions": sessions.body["items"] if sessions.ok else [],
            "names": names,
            "slots": slots,
            "rooms": found["rooms"],
            "day": day,
            "minutes": minutes,
            "past_day": day < self.today().isoformat(),
        }

    async def post(self, subject_id: str) -> None:
        self.refuse_unless_any("counseling.manage")
        if self.arg("form") == "cancel":
            session_id = self.arg("session_id")
            answer = await self.api("POST", f"/api/v1/counseling/{session_id}/cancel")
            if answer.ok:
                self.done(subject_id, "counseling", "cancel")
                return
            await self.answer_refused(
                "cancel",
                {},
                answer,
                {},
                {"invalid_transition": ("session", "该预约已不能取消(已参加或已取消)")},
            )
            return
        typed = {k: self.arg(k) for k in ("slot", "room", "new_room", "date", "minutes")}
        errors: dict[str, str] = {}
        counselor, _, start_text = typed["slot"].partition("|")
        start = None
        try:
            start = dt.datetime.fromisoformat(start_text.replace("Z", "+00:00"))
        except ValueError:
            errors["book.slot"] = "请选择时间和咨询师"
        room = typed["new_room"] or typed["room"]
        if len(room) > 50:
            errors["book.room"] = "咨询室名称不超过 50 个字"
        minutes = typed["minutes"] if typed["minutes"] in LENGTHS_ZH else "60"
        if errors or start is None:
            await self.show(typed, errors, status=422, form="book")
            return
        body: dict[str, Any] = {
            "counselor_id": counselor,
            "start": start.isoformat(),
            "end": (start + dt.timedelta(minutes=int(minutes))).isoformat(),
        }
        if room:
            body["room"] = room
        answer = await self.api("POST", f"/api/v1/subjects/{subject_id}/counseling", body)
        if answer.ok:
            self.redirect(
                f"/console/subjects/{subject_id}/counseling?"
                + urllib.parse.urlencode({"saved": "book", "date": typed["date"]})
            )
            return
        await self.answer_refused(
            "book",
            typed,
            answer,
            {
                "counselor_id": "请选择本辖区在岗的咨询师",
                "start": "请选择今后的时段",
                "end": "时长不正确",
                "room": "咨询室名称不正确",
            },
            {"double_booked": ("slot", "该时段咨询师或咨询室已被预约，请另选")},
        )


def hhmm_of(moment: str, later: dt.timedelta = dt.timedelta(0)) -> str:
    """A UTC moment of the API as the local hour and minute (`later` added)."""
    at = dt.datetime.fromisoformat(moment.replace("Z", "+00:00")) + later
    return at.astimezone(LOCAL_TZ).strftime("%H:%M")


# --- decisions started here: sanctions and praise, electronic location, leave ------------------


class DecisionsPage(ContactWork):
    page_action = ("sanctions.propose", "elocation.request", "leave.request", "leave.return")
    template = "contact_decisions.html"

    async def gather(self, subject: dict[str, Any]) -> dict[str, Any]:
        sid = subject["id"]
        suggestions = None
        if self.may("sanctions.read"):
            got = await self.api("GET", f"/api/v1/subjects/{sid}/sanction-suggestions")
            suggestions = got.body["items"] if got.ok else []
        leaves = orders = None
        if self.may("leave.history"):
            got = await self.api("GET", f"/api/v1/subjects/{sid}/leave-requests")
            leaves = got.body["items"] if got.ok else []
        if self.may("elocation.read"):
            got = await self.api("GET", f"/api/v1/subjects/{sid}/elocation-orders")
            orders = got.body["items"] if got.ok else []
        return {
            "suggestions": suggestions,
            "leaves": leaves,
            "orders": orders,
            # What may be renewed: approved, not yet ended, with no renewal asked for.
            "renewable": [
                o for o in orders or [] if o["status"] == "approved" and not o.get("renewed_by")
            ],
            "today": self.today().isoformat(),
        }

    async def post(self, subject_id: str) -> None:
        form = self.arg("form")
        handlers = {
            "sanction": self._sanction,
            "elocation": self._elocation,
            "renewal": self._renewal,
            "leave": self._leave,
            "return": self._return,
        }
        if form not in handlers:
            raise ApiRefused(ApiAnswer(422, None, {}, b""))
        await handlers[form](subject_id)

    async def _sanction(self, subject_id: str) -> None:
        self.refuse_unless_any("sanctions.propose")
        typed = {k: self.arg(k) for k in ("kind", "reason", "detachment_id")}
        errors = {}
        if typed["kind"] not in SANCTION_ZH:
            errors["sanction.kind"] = "请选择奖惩类型"
        if not typed["reason"]:
            errors["sanction.reason"] = "请填写事实和理由"
        if errors:
            await self.show(typed, errors, status=422, form="sanction")
            return
        body = {"kind": typed["kind"], "reason": typed["reason"]}
        if typed["detachment_id"]:
            body["detachment_id"] = typed["detachment_id"]
        answer = await self.api("POST", f"/api/v1/subjects/{subject_id}/sanctions", body)
        if answer.ok:
            self.done(subject_id, "decisions", "sanction")
            return
        await self.answer_refused(
            "sanction",
            typed,
            answer,
            {
                "kind": "请选择奖惩类型",
                "reason": "事实和理由不超过 2000 个字",
                "detachment_id": "请选择脱管情形",
            },
            {"not_under_corrections": ("kind", "该人员没有执行中的社区矫正")},
        )

    async def _elocation(self, subject_id: str) -> None:
        self.refuse_unless_any("elocation.request")
        names = ("ground", "start_date", "end_date", "reason", "left_on", "prohibition_index")
        typed = {k: self.arg(k) for k in names}
        errors = {}
        if typed["ground"] not in GROUNDS_ZH:
            errors["elocation.ground"] = "请选择法定情形"
        for name, label in (("start_date", "开始日期"), ("end_date", "结束日期")):
            if not typed[name]:
                errors[f"elocation.{name}"] = f"请填写{label}"
        if not typed["reason"]:
            errors["elocation.reason"] = "请填写理由"
        if errors:
            await self.show(typed, errors, status=422, form="elocation")
            return
        body: dict[str, Any] = {
            k: typed[k] for k in ("ground", "start_date", "end_date", "reason") if typed[k]
        }
        if typed["left_on"]:
            body["left_on"] = typed["left_on"]
        if typed["prohibition_index"].isdigit():
            body["prohibition_index"] = int(typed["prohibition_index"])
        answer = await self.api("POST", f"/api/v1/subjects/{subject_id}/elocation-orders", body)
        if answer.ok:
            self.done(subject_id, "decisions", "elocation")
            return
        await self.answer_refused(
            "elocation",
            typed,
            answer,
            {
                "ground": "请选择法定情形",
                "start_date": "开始日期不正确",
                "end_date": "结束日期不正确(每次不超过规定的月数)",
                "reason": "理由不超过 2000 个字",
                "left_on": "请填写离开的日期",
                "prohibition_index": "请选择违反的禁止令",
            },
            {
                "ground_not_on_file": ("ground", "档案中没有该情形的记录(如警告、治安管理处罚)"),
                "ground_disproved": ("ground", "该期间已批准请假，不构成未经批准离开"),
                "not_under_corrections": ("ground", "该人员没有执行中的社区矫正"),
                "exists": ("start_date", "该期间已有电子定位决定或申请"),
            },
        )

    async def _renewal(self, subject_id: str) -> None:
        self.refuse_unless_any("elocation.request")
        typed = {k: self.arg(k) for k in ("order_id", "renew_end_date", "renew_reason")}
        errors = {}
        if not typed["order_id"]:
            errors["renewal.order_id"] = "请选择要续期的电子定位"
        if not typed["renew_end_date"]:
            errors["renewal.end_date"] = "请填写续期至"
        if not typed["renew_reason"]:
            errors["renewal.reason"] = "请填写理由"
        if errors:
            await self.show(typed, errors, status=422, form="renewal")
            return
        answer = await self.api(
            "POST",
            f"/api/v1/elocation-orders/{typed['order_id']}/renewals",
            {"end_date": typed["renew_end_date"], "reason": typed["renew_reason"]},
        )
        if answer.ok:
            self.done(subject_id, "decisions", "renewal")
            return
        if answer.status == 404:
            await self.show(
                typed, {"renewal.order_id": "请从列表中选择电子定位"}, status=422, form="renewal"
            )
            return
        await self.answer_refused(
            "renewal",
            typed,
            answer,
            {"end_date": "续期至不正确", "reason": "理由不超过 2000 个字"},
            {
                "invalid_transition": ("order_id", "只有已批准的电子定位可以续期"),
                "exists": ("order_id", "该电子定位已申请续期"),
            },
        )

    async def _leave(self, subject_id: str) -> None:
        self.refuse_unless_any("leave.request")
        typed = {k: self.arg(k) for k in ("start_date", "end_date", "destination", "leave_reason")}
        errors = {}
        for name, label in (
            ("start_date", "开始日期"),
            ("end_date", "结束日期"),
            ("destination", "目的地"),
            ("leave_reason", "事由"),
        ):
            if not typed[name]:
                errors[f"leave.{name}"] = f"请填写{label}"
        if errors:
            await self.show(typed, errors, status=422, form="leave")
            return
        body = {
            "start_date": typed["start_date"],
            "end_date": typed["end_date"],
            "destination": typed["destination"],
            "reason": typed["leave_reason"],
        }
        answer = await self.api("POST", f"/api/v1/subjects/{subject_id}/leave-requests", body)
        if answer.ok:
            self.done(subject_id, "decisions", "leave")
            return
        fields = {
            "start_date": "开始日期不正确(不早于今天)",
            "end_date": "结束日期不正确(不早于开始日期)",
            "destination": "目的地不超过 200 个字",
            "reason": "事由不超过 1000 个字",
        }
        if "reason" in _refused_fields(answer):
            fields["leave_reason"] = fields.pop("reason")
        await self.answer_refused(
            "leave",
            typed,
            answer,
            fields,
            {
                "not_under_corrections": ("start_date", "该人员没有执行中的社区矫正"),
            },
        )

    async def _return(self, subject_id: str) -> None:
        self.refuse_unless_any("leave.return")
        typed = {k: self.arg(k) for k in ("leave_id", "date")}
        if not typed["date"]:
            await self.show(typed, {"return.date": "请填写销假日期"}, status=422, form="return")
            return
        answer = await self.api(
            "POST", f"/api/v1/leave-requests/{typed['leave_id']}/return", {"date": typed["date"]}
        )
        if answer.ok:
            self.done(subject_id, "decisions", "return")
            return
        await self.answer_refused(
            "return",
            typed,
            answer,
            {"date": "销假日期不正确(不早于请假开始，不晚于今天)"},
            {"invalid_transition": ("date", "该请假尚未批准或已销假")},
        )


# --- assistance: needs, referral to a resource from the county's list, placement --------------


class HelpPage(ContactWork):
    page_action = ("assistance.manage", "assistance.read")
    template = "contact_assistance.html"

    async def gather(self, subject: dict[str, Any]) -> dict[str, Any]:
        sid = subject["id"]
        directory = await self.api("GET", "/api/v1/assistance/directory?open=1")
        referrals = await self.api("GET", f"/api/v1/assistance/referrals?subject_id={sid}")
        resources = directory.body["items"] if directory.ok else []
        # The current assessment (none yet: 404), shown and used to fill the form in.
        needs = None
        if self.may("assistance.needs"):
            assessed = await self.api("GET", f"/api/v1/subjects/{sid}/needs")
            needs = assessed.body if assessed.ok else None
        return {
            "resources": resources,
            "by_id": {r["id"]: r for r in resources},
            "referrals": referrals.body["items"] if referrals.ok else [],
            "needs": needs,
        }

    async def post(self, subject_id: str) -> None:
        form = self.arg("form")
        if form == "needs":
            await self._needs(subject_id)
        elif form == "refer":
            await self._refer(subject_id)
        elif form == "step":
            await self._step(subject_id)
        elif form == "place":
            await self._place(subject_id)
        else:
            raise ApiRefused(ApiAnswer(422, None, {}, b""))

    async def _needs(self, subject_id: str) -> None:
        self.refuse_unless_any("assistance.manage")
        chosen = set(self.get_body_arguments("need"))
        body = {need: need in chosen for need in ASSESSED_NEEDS_ZH}
        answer = await self.api("PUT", f"/api/v1/subjects/{subject_id}/needs", body)
        if answer.ok:
            word = "needs"
            self.redirect(
                f"/console/subjects/{subject_id}/help?saved={word}"
                + ("&three_nos=1" if answer.body.get("three_nos") else "")
            )
            return
        await self.answer_refused("needs", {}, answer, {})

    async def _refer(self, subject_id: str) -> None:
        self.refuse_unless_any("assistance.manage")
        needs = [n for n in self.get_body_arguments("referral_need") if n in REFERRAL_NEEDS_ZH]
        typed = {"resource_id": self.arg("resource_id"), "note": self.arg("note")}
        typed["needs"] = ",".join(needs)
        errors = {}
        if not needs:
            errors["refer.needs"] = "请至少选择一项需求"
        if not typed["resource_id"]:
            errors["refer.resource_id"] = "请从列表中选择帮扶资源"
        if len(typed["note"]) > 2000:
            errors["refer.note"] = "说明不超过 2000 个字"
        if errors:
            await self.show(typed, errors, status=422, form="refer")
            return
        body = {
            "subject_id": subject_id,
            "needs": needs,
            "resource_id": typed["resource_id"],
            "note": typed["note"],
        }
        answer = await self.api("POST", "/api/v1/assistance/referrals", body)
        if answer.ok:
            self.done(subject_id, "help", "refer")
            return
        if answer.status == 404 and "resource" in (answer.body or {}).get("error", {}).get(
            "message", ""
        ):
            await self.show(
                typed, {"refer.resource_id": "请从列表中选择帮扶资源"}, status=422, form="refer"
            )
            return
        await self.answer_refused(
            "refer",
            typed,
            answer,
            {"needs": "请至少选择一项需求", "resource_id": "请从列表中选择帮扶资源"},
        )

    async def _step(self, subject_id: str) -> None:
        referral_id, to = self.arg("referral_id"), self.arg("to")
        allowed = {t: a for steps in STEPS.values() for t, _, a in steps}
        if to not in allowed:
            raise ApiRefused(ApiAnswer(422, None, {}, b""))
        self.refuse_unless_any(allowed[to])
        answer = await self.api(
            "POST", f"/api/v1/assistance/referrals/{referral_id}/transition", {"to": to}
        )
        if answer.ok:
            self.done(subject_id, "help", "step")
            return
        await self.answer_refused(
            "step",
            {"referral_id": referral_id},
            answer,
            {},
            {
                "invalid_transition": ("to", "该转介的状态已变化，请刷新后重试"),
                "inactive": ("to", "该帮扶资源已暂停接收"),
            },
        )

    async def _place(self, subject_id: str) -> None:
        self.refuse_unless_any("assistance.place")
        referral_id, resource_id = self.arg("referral_id"), self.arg("resource_id")
        answer = await self.api(
            "POST",
            "/api/v1/assistance/placements",
            {"referral_id": referral_id, "resource_id": resource_id},
        )
        if answer.ok:
            self.done(subject_id, "help", "placed")
            return
        if answer.error_code == "full":
            position = ((answer.body or {}).get("error", {}).get("details") or {}).get(
                "waiting_position"
            )
            await self.show(
                {"referral_id": referral_id},
                {"place.resource_id": f"名额已满，已排队候补(第 {position} 位)"},
                status=409,
                form="place",
            )
            return
        await self.answer_refused(
            "place",
            {"referral_id": referral_id},
            answer,
            {},
            {
                "invalid_transition": ("resource_id", "该转介尚不能安置(须本人接受后)"),
                "not_eligible": ("resource_id", "该资源不接收此类人员"),
            },
        )


routes = [
    (rf"/console/subjects/{path_id('subject_id')}/contact", ContactPage),
    (rf"/console/subjects/{path_id('subject_id')}/counseling", CounselingPage),
    (rf"/console/subjects/{path_id('subject_id')}/decisions", DecisionsPage),
    (rf"/console/subjects/{path_id('subject_id')}/help", HelpPage),
]

"""The console's work on a case file: programs opened, changed and ended with their statutory
fields, the intake recorded, workers and the 矫正小组 assigned, transfers started, answered and
handed over, and 调查评估 recorded, assigned, answered and closed; all through the staff API."""

from __future__ import annotations

import urllib.parse
from typing import Any

from handlers.console.base import ApiAnswer, ApiRefused, path_id
from handlers.console.casework import CaseworkPage
from handlers.console.pages import DRUG_MODE_ZH, SENTENCE_ZH, TERMINATION_ZH, Errors
from handlers.messages import validation_message
from models.clock import LOCAL_TZ
from models.reports import LEVEL_LABELS, PROGRAM_LABELS

# What each form's fields are called, for the words beside a field the API refused.
LABELS = {
    "type": "项目类别",
    "start_date": "开始日期",
    "end_date": "结束日期",
    "release_date": "刑满释放日期",
    "sentence_type": "矫正类别",
    "supervision_level": "管理等级",
    "prohibitions": "禁止令",
    "plan": "矫正方案",
    "key_person": "重点帮教对象",
    "volunteer_checkins": "自愿签到",
    "mode": "类别",
    "working_group": "工作小组",
    "diagnosis": "诊断",
    "risk_level": "危险性评估等级",
    "guardian": "监护人",
    "guardian_name": "监护人姓名",
    "guardian_phone": "监护人电话",
    "guardian_relation": "与本人关系",
    "care_team": "关爱帮扶小组",
    "date": "日期",
    "level": "等级",
    "from_date": "生效日期",
    "on": "日期",
    "reason": "理由",
    "kind": "终止原因",
    "certificate_number": "解除证明书编号",
    "confirm": "确认",
    "community_rehab": "社区康复",
    "social_worker_ids": "社会工作者",
    "grid_worker_ids": "网格员",
    "team": "矫正小组",
    "to_org_id": "变更后的司法所",
    "comment": "意见",
    "court": "委托法院",
    "requested_on": "委托日期",
    "expedited": "速裁程序",
    "station_id": "承办司法所",
    "recommendation": "评估意见",
    "opinion": "调查评估意见书",
    "subject_id": "档案",
    "prison": "送达通知的监狱(看守所)",
    "received_on": "收到通知日期",
}
# Service refusals that carry a reason of their own (`type`), in the law's words.
REASONS_ZH = {
    "female_member_required": "女性社区矫正对象的矫正小组应当有女性成员(社区矫正法第二十五条)",
}
# What the API's refusals by code mean on these pages.
CODES_ZH = {
    "invalid_transition": "该记录的状态已变化,此步骤不能办理,请刷新后查看。",
    "not_your_step": "此步骤应由对方单位办理。",
    "exists": "该人员已有正在办理的执行地变更。",
    "wrong_type": "该类项目没有此项。",
}
STEP_DONE_ZH = {
    "opened": "项目已开设。",
    "intake": "已登记报到。",
    "level": "管理等级已调整。",
    "risk": "危险性评估已记录。",
    "terminate": "项目已终止。",
    "assigned": "人员分配已保存。",
    "requested": "执行地变更申请已提交。",
    "decision": "已答复。",
    "handover": "已移交。",
    "arrival": "已登记报到。",
    "created": "调查评估委托已登记。",
    "assign": "已指派司法所。",
    "report": "评估意见已提交。",
    "close": "已办结。",
    "suspend": "项目已中止。",
    "resume": "项目已恢复执行。",
    "notice": "刑满释放通知已登记,已开设安置帮教项目(待报到)。",
}
RISK_ZH = {str(n): f"{n} 级" for n in range(6)}
# The statutory basis of a rule a page shows a flag for, in the officer's words; the number
# itself is the jurisdiction's, read from the record that was judged by it.
RULE_BASIS_ZH = {
    "resettlement.release_notice_days": (
        "司法部 1999 年关于刑满释放人员衔接工作的通知:监狱(看守所)应于释放前一个月"
        "将释放通知送达安置帮教部门"
    ),
}
# Why a program's state changed, when the service names it by a word rather than a sentence.
HISTORY_ZH = {"opened": "开设项目", "intake": "报到", **TERMINATION_ZH}
TEAM_ROWS = 5
UNSAVED_ZH = "未保存:请按提示修改后重试。"


def refusal_errors(answer: ApiAnswer) -> dict[str, str]:
    """The API's 422 details as Chinese words beside the fields they name (`guardian.name` is
    the form's `guardian_name`; `prohibitions.2` is `prohibitions`)."""
    details = (answer.body or {}).get("error", {}).get("details")
    errors: dict[str, str] = {}
    if answer.status != 422 or not isinstance(details, list):
        return errors
    for item in details:
        if not isinstance(item, dict) or "field" not in item:
            continue
        parts = str(item["field"]).split(".")
        joined = "_".join(parts[:2])
        field = joined if joined in LABELS else parts[0]
        kind = str(item.get("type") or "")
        if kind in REASONS_ZH:
            errors[field] = REASONS_ZH[kind]
            continue
        said = validation_message(kind) if kind and kind != "invalid" else "填写不正确"
        errors[field] = LABELS.get(field, "此项") + ":" + said
    return errors


def page_error(answer: ApiAnswer, errors: dict[str, str]) -> str | None:
    """The message at the top of a refused form: none when the fields say it all."""
    if errors:
        return UNSAVED_ZH
    message = CODES_ZH.get(answer.error_code or "")
    if message is None:
        said = (answer.body or {}).get("error", {}).get("message_zh")
        message = said or answer.message_zh()
    return message


def history_reason(reason: str | None) -> str:
    """A step's reason as people read it: a known word in Chinese, an officer's own sentence as
    written, and never a bare code."""
    if not reason:
        return ""
    if reason in HISTORY_ZH:
        return HISTORY_ZH[reason]
    return "" if reason.isascii() else reason


def _lines(text: str) -> list[str]:
    return [line.strip() for line in text.splitlines() if line.strip()]


class CaseFilePage(CaseworkPage):
    def get_template_namespace(self) -> dict[str, Any]:
        namespace = super().get_template_namespace()
        namespace.update(
            field_names=LABELS,
            sentences=SENTENCE_ZH,
            drug_modes=DRUG_MODE_ZH,
            terminations=TERMINATION_ZH,
            supervision=LEVEL_LABELS,
            program_types=PROGRAM_LABELS,
            risks=RISK_ZH,
            history_reason=history_reason,
            rule_basis=RULE_BASIS_ZH,
        )
        return namespace

    def today(self) -> str:
        return self.ctx.clock.now().astimezone(LOCAL_TZ).date().isoformat()

    def done(self) -> str | None:
        return STEP_DONE_ZH.get(self.get_query_argument("done", ""))

    def typed(self, *names: str) -> dict[str, str]:
        return {name: self.get_body_argument(name, "").strip() for name in names}

    def refusal(self, answer: ApiAnswer, typed: dict[str, Any]) -> tuple[Errors, str | None]:
        """A refusal the page shows beside the form; one that is not about the form (scope,
        policy, an expired session) becomes the error page."""
        if answer.status in (401, 403, 404, 410) and answer.error_code != "not_your_step":
            raise ApiRefused(answer)
        errors = refusal_errors(answer)
        return errors, page_error(answer, errors)

    async def subject(self, subject_id: str) -> dict[str, Any]:
        """The case file a form is opened from."""
        return {"subject": await self.api_ok("GET", f"/api/v1/subjects/{subject_id}")}


# --- programs -------------------------------------------------------------------------------


PROGRAM_FIELDS = {
    "community_corrections": (
        "start_date",
        "end_date",
        "sentence_type",
        "supervision_level",
        "prohibitions",
        "plan",
    ),
    "resettlement": ("start_date", "release_date", "end_date", "key_person", "volunteer_checkins"),
    "drug_rehab": ("start_date", "end_date", "mode", "working_group"),
    "mental_health": (
        "start_date",
        "end_date",
        "diagnosis",
        "risk_level",
        "guardian_name",
        "guardian_phone",
        "guardian_relation",
        "care_team",
    ),
}
LIST_FIELDS = ("prohibitions", "working_group", "care_team")
CHECKBOXES = ("key_person", "volunteer_checkins")


def program_body(kind: str, typed: dict[str, str]) -> dict[str, Any]:
    """The form as the API's body for `kind`: empty fields left out (the API names what is
    missing), lists one item a line, the guardian as one object."""
    body: dict[str, Any] = {"type": kind}
    guardian: dict[str, str] = {}
    for name in PROGRAM_FIELDS[kind]:
        value = typed.get(name, "")
        if name in CHECKBOXES:
            body[name] = value == "1"
        elif name in LIST_FIELDS:
            if value:
                body[name] = _lines(value)
        elif name.startswith("guardian_"):
            if value:
                guardian[name.removeprefix("guardian_")] = value
        elif name == "risk_level":
            if value.isascii() and value.isdigit():
                body[name] = int(value)
        elif value:
            body[name] = value
    if kind == "mental_health":
        body["guardian"] = guardian
    return body


class NewProgramPage(CaseFilePage):
    template = "casefile_program_new.html"

    async def get(self, subject_id: str) -> None:
        self.refuse_unless("programs.create")
        asked = self.get_query_argument("type", "")
        kind = asked if asked in PROGRAM_FIELDS else ""
        await self.show({"type": kind, "start_date": self.today()})

    async def load(self, subject_id: str) -> dict[str, Any]:
        return await self.subject(subject_id)

    def render_form(
        self, context: dict[str, Any], typed: dict[str, Any], errors: Errors, error: str | None
    ) -> None:
        # The type chosen first decides the form's fields (none chosen: the choice of types).
        kind = typed.get("type") or None
        fields = PROGRAM_FIELDS.get(kind or "", ())
        super().render_form({**context, "kind": kind, "fields": fields}, typed, errors, error)

    def refusal(self, answer: ApiAnswer, typed: dict[str, Any]) -> tuple[Errors, str | None]:
        errors, error = super().refusal(answer, typed)
        if "guardian" in errors:
            for part in ("name", "phone", "relation"):
                if not typed.get(f"guardian_{part}"):
                    errors.setdefault(f"guardian_{part}", LABELS[f"guardian_{part}"] + ":必须填写")
        return errors, error

    async def post(self, subject_id: str) -> None:
        self.refuse_unless("programs.create")
        kind = self.get_body_argument("type", "")
        if kind not in PROGRAM_FIELDS:
            self.redirect(f"/console/subjects/{subject_id}/programs/new")
            return
        typed = self.typed("type", *PROGRAM_FIELDS[kind])
        await self.submit(
            "POST",
            f"/api/v1/subjects/{subject_id}/programs",
            program_body(kind, typed),
            typed,
            lambda program: f"/console/programs/{program['id']}?done=opened",
        )


NOTICE_FIELDS = ("prison", "release_date", "received_on")
# What a refused notice means: the service's date rules, beside the field each names, and a
# conflict at the top of the form.
NOTICE_RULES_ZH = {
    "received_on": "不能晚于今天",
    "release_date": "应不早于收到通知的日期,且在其后一年之内",
}
NOTICE_CONFLICTS_ZH = {"exists": "该人员已有未结束的安置帮教项目,无需再登记释放通知。"}


class ReleaseNoticePage(CaseFilePage):
    """A prison's 刑满释放通知 recorded on the file: it opens the 安置帮教 program (pending
    intake from the release date); one received too close to release is flagged late."""

    template = "casefile_release_notice.html"

    async def get(self, subject_id: str) -> None:
        self.refuse_unless("programs.create")
        await self.show({"received_on": self.today()})

    async def load(self, subject_id: str) -> dict[str, Any]:
        return await self.subject(subject_id)

    def refusal(self, answer: ApiAnswer, typed: dict[str, Any]) -> tuple[Errors, str | None]:
        errors, error = super().refusal(answer, typed)
        for item in (answer.body or {}).get("error", {}).get("details") or []:
            field = item.get("field") if isinstance(item, dict) else None
            if field in NOTICE_RULES_ZH and not item.get("type"):
                # A rule of the service's (not a malformed date): say which.
                errors[field] = LABELS[field] + ":" + NOTICE_RULES_ZH[field]
        return errors, NOTICE_CONFLICTS_ZH.get(answer.error_code or "", error)

    async def post(self, subject_id: str) -> None:
        self.refuse_unless("programs.create")
        typed = self.typed(*NOTICE_FIELDS)
        errors = {k: LABELS[k] + ":必须填写" for k in NOTICE_FIELDS if not typed[k]}
        if errors:
            await self.show(typed, errors, UNSAVED_ZH, status=422)
            return
        await self.submit(
            "POST",
            f"/api/v1/subjects/{subject_id}/release-notices",
            {k: typed[k] for k in NOTICE_FIELDS},
            typed,
            lambda program: f"/console/programs/{program['id']}?done=notice",
        )


# Each step on a program: its API path, its fields, and whether it cannot be undone.
PROGRAM_STEPS = {
    "intake": ("/intake", ("date",)),
    "level": ("/supervision-level", ("level", "from_date", "reason")),
    "risk": ("/risk", ("level", "on", "reason")),
    "terminate": ("/terminate", ("kind", "date", "certificate_number")),
    "suspend": ("/transition", ("reason",)),
    "resume": ("/transition", ("reason",)),
}
# 中止 and 恢复 are lifecycle moves: the status each asks the API for.
TRANSITION_TO = {"suspend": "suspended", "resume": "active"}
# 社区戒毒 ended with a 社区康复 decision (禁毒法 Art. 48): its fields on the terminate form.
REHAB_FIELDS = ("community_rehab", "rehab_end")


class ProgramPage(CaseFilePage):
    template = "casefile_program.html"

    async def get(self, program_id: str) -> None:
        self.refuse_unless("programs.read")
        await self.show()

    async def load(self, program_id: str, step: str | None = None) -> dict[str, Any]:
        """The program with the form of `step` open (none: the page as opened)."""
        program = await self.api_ok("GET", f"/api/v1/programs/{program_id}")
        subject = await self.api_ok("GET", f"/api/v1/subjects/{program['subject_id']}")
        return {
            "program": program,
            "subject": subject,
            "step": step,
            "done": None if step else self.done(),
            "today": self.today(),
        }


class ProgramStep(ProgramPage):
    async def post(self, program_id: str, step: str) -> None:
        self.refuse_unless("programs.manage")
        suffix, names = PROGRAM_STEPS[step]
        typed = self.typed(*names, *REHAB_FIELDS, "confirm")
        body: dict[str, Any] = {k: v for k, v in typed.items() if v and k in names}
        if step == "risk" and typed["level"].isdigit():
            body["level"] = int(typed["level"])
        if step == "terminate" and typed["community_rehab"] == "1":
            body["community_rehab"] = {"end_date": typed["rehab_end"]} if typed["rehab_end"] else {}
        if step == "terminate" and typed["confirm"] != "1":
            # Ending a program cannot be undone: the officer ticks that they mean it.
            errors = {"confirm": "终止后不可撤销,请勾选确认后再提交"}
            await self.show(typed, errors, "未保存:请确认。", status=422)
            return
        if step in TRANSITION_TO:
            errors = {}
            if len(typed["reason"]) < 2:
                errors["reason"] = LABELS["reason"] + ":请填写(至少 2 个字)"
            if step == "suspend" and typed["confirm"] != "1":
                # Suspending stops the program's work until it is resumed: said, then ticked.
                errors["confirm"] = "请勾选确认中止"
            if errors:
                await self.show(typed, errors, UNSAVED_ZH, status=422)
                return
            body = {"to": TRANSITION_TO[step], "reason": typed["reason"]}
        await self.submit(
            "POST",
            f"/api/v1/programs/{program_id}{suffix}",
            body,
            typed,
            f"/console/programs/{program_id}?done={step}",
        )


# --- assignments ----------------------------------------------------------------------------


class AssignmentsPage(CaseFilePage):
    """The workers and the 矫正小组 of a case file: what is typed is the social and grid workers
    ticked (`social`, `grid`) and the team's rows (`team`)."""

    template = "casefile_assignments.html"

    async def get(self, subject_id: str) -> None:
        self.refuse_unless("subjects.assign")
        context = await self.load(subject_id)
        current = context["subject"].get("assignments") or {}
        team = [
            {k: str(v or "") for k, v in member.items()} for member in current.get("team") or []
        ]
        chosen = {
            "social": set(current.get("social_worker_ids") or []),
            "grid": set(current.get("grid_worker_ids") or []),
            "team": team,
        }
        await self.show(chosen, context=context)

    async def load(self, subject_id: str) -> dict[str, Any]:
        subject = await self.api_ok("GET", f"/api/v1/subjects/{subject_id}")
        workers = await self.workers() if self.may("staff.read") else []
        return {
            "subject": subject,
            "social_workers": [w for w in workers if w["role"] == "social_worker"],
            "grid_workers": [w for w in workers if w["role"] == "grid_worker"],
            "done": self.done(),
        }

    async def workers(self) -> list[dict[str, Any]]:
        """Social and grid workers in the caller's scope, by name (every page of the list)."""
        found: list[dict[str, Any]] = []
        cursor = ""
        for _ in range(10):
            query = {"limit": "200", **({"cursor": cursor} if cursor else {})}
            answer = await self.api("GET", "/api/v1/staff?" + urllib.parse.urlencode(query))
            if not answer.ok:
                break
            found += [
                s
                for s in answer.body["items"]
                if s.get("role") in ("social_worker", "grid_worker") and not s.get("disabled")
            ]
            cursor = answer.body.get("next_cursor") or ""
            if not cursor:
                break
        return sorted(found, key=lambda s: s["name"])

    def render_form(
        self, context: dict[str, Any], typed: dict[str, Any], errors: Errors, error: str | None
    ) -> None:
        # The team's rows as typed, and empty ones to add members in.
        team = typed["team"]
        rows = team + [{} for _ in range(max(TEAM_ROWS - len(team), 1))]
        self.render(
            self.template,
            **context,
            social=typed["social"],
            grid=typed["grid"],
            team=rows,
            errors=errors,
            error=error,
        )

    async def post(self, subject_id: str) -> None:
        self.refuse_unless("subjects.assign")
        social = [s for s in self.get_body_arguments("social_worker_ids") if s]
        grid = [s for s in self.get_body_arguments("grid_worker_ids") if s]
        team: list[dict[str, str]] = []
        errors: dict[str, str] = {}
        rows = self.get_body_argument("team_rows", "0")
        for i in range(min(int(rows), 20) if rows.isascii() and rows.isdigit() else 0):
            member = self.typed(*(f"team_{i}_{k}" for k in ("name", "relation", "phone", "gender")))
            row = {k.rsplit("_", 1)[1]: v for k, v in member.items() if v}
            if not row:
                continue
            if not row.get("name") or not row.get("relation"):
                errors["team"] = "矫正小组成员请填写姓名和与本人关系"
            team.append(row)
        chosen = {"social": set(social), "grid": set(grid), "team": team}
        if errors:
            await self.show(chosen, errors, UNSAVED_ZH, status=422)
            return
        await self.submit(
            "PUT",
            f"/api/v1/subjects/{subject_id}/assignments",
            {"social_worker_ids": social, "grid_worker_ids": grid, "team": team},
            chosen,
            f"/console/subjects/{subject_id}/assignments?done=assigned",
        )


# --- transfers ------------------------------------------------------------------------------


class NewTransferPage(CaseFilePage):
    template = "casefile_transfer_new.html"

    async def get(self, subject_id: str) -> None:
        self.refuse_unless("transfers.manage")
        await self.show()

    async def load(self, subject_id: str) -> dict[str, Any]:
        subject = await self.api_ok("GET", f"/api/v1/subjects/{subject_id}")
        stations = await self.api_ok("GET", "/api/v1/transfer-destinations")
        return {
            "subject": subject,
            "stations": [s for s in stations["items"] if s["id"] != subject["org_id"]],
        }

    async def post(self, subject_id: str) -> None:
        self.refuse_unless("transfers.manage")
        typed = self.typed("to_org_id", "reason")
        errors = {k: LABELS[k] + ":必须填写" for k, v in typed.items() if not v}
        if "to_org_id" in errors:
            errors["to_org_id"] = "请选择变更后的司法所"
        if errors:
            await self.show(typed, errors, "未提交:请按提示填写。", status=422)
            return
        await self.submit(
            "POST",
            f"/api/v1/subjects/{subject_id}/transfers",
            typed,
            typed,
            lambda transfer: f"/console/transfers/{transfer['id']}?done=requested",
        )


class TransferPage(CaseFilePage):
    template = "casefile_transfer.html"

    async def get(self, transfer_id: str) -> None:
        self.refuse_unless("transfers.read")
        await self.show()

    async def side_of(self, org_id: str) -> str | None:
        """The station's name when it is in the caller's scope (the caller acts for it)."""
        answer = await self.api("GET", f"/api/v1/orgs/{org_id}")
        return answer.body["name"] if answer.ok else None

    async def load(self, transfer_id: str, step: str | None = None) -> dict[str, Any]:
        """The transfer with the form of `step` open (none: the page as opened)."""
        transfer = await self.api_ok("GET", f"/api/v1/transfers/{transfer_id}")
        sending = await self.side_of(transfer["from_org_id"])
        receiving = await self.side_of(transfer["to_org_id"])
        names = {
            s["id"]: s["name"]
            for s in (await self.api_ok("GET", "/api/v1/transfer-destinations"))["items"]
        } if self.may("transfers.manage") else {}  # fmt: skip
        subject = await self.api("GET", f"/api/v1/subjects/{transfer['subject_id']}")
        name = subject.body.get("name") if subject.ok else None
        if not subject.ok and transfer["status"] == "requested":
            # Before the handover the receiving side reaches only the queue's name of the person.
            queue = await self.api("GET", "/api/v1/transfers?status=requested")
            items = queue.body["items"] if queue.ok else []
            name = next((i["subject_name"] for i in items if i["id"] == transfer_id), None)
        return {
            "transfer": transfer,
            "subject": subject.body if subject.ok else None,
            "person": name,
            "from_name": sending or names.get(transfer["from_org_id"], "外单位"),
            "to_name": receiving or names.get(transfer["to_org_id"], "外单位"),
            "sending": sending is not None,
            "receiving": receiving is not None,
            "step": step,
            "done": None if step else self.done(),
            "today": self.today(),
        }


class TransferStep(TransferPage):
    async def post(self, transfer_id: str, step: str) -> None:
        self.refuse_unless("transfers.manage")
        typed = self.typed("accept", "comment", "date", "confirm")
        if step == "decision":
            accept = typed["accept"] == "1"
            if not accept and typed["confirm"] != "1":
                # Refusing ends the transfer: the officer ticks that they mean it.
                errors = {"confirm": "不同意接收后该申请即告结束,请勾选确认后再提交"}
                await self.show(typed, errors, "未提交:请确认。", status=422)
                return
            body: dict[str, Any] = {"accept": accept, "comment": typed["comment"]}
        else:
            body = {"date": typed["date"]} if typed["date"] else {}
        await self.submit(
            "POST",
            f"/api/v1/transfers/{transfer_id}/{step}",
            body,
            typed,
            f"/console/transfers/{transfer_id}?done={step}",
        )


# --- 调查评估 -----------------------------------------------------------------------------------


class InvestigationsPage(CaseFilePage):
    """The investigations at the caller's node: to assign (the county), to answer (the
    station) and to close, each linking to its page."""

    async def get(self) -> None:
        self.refuse_unless("investigations.read")
        lists = []
        for status, title in (
            ("requested", "待指派司法所"),
            ("assigned", "待提交评估意见"),
            ("reported", "待办结"),
        ):
            if status == "requested" and self.my_level == "station":
                continue  # the county assigns; a station has none to assign
            answer = await self.api_ok("GET", f"/api/v1/investigations?status={status}")
            lists.append((status, title, answer["items"]))
        self.render("casefile_investigations.html", lists=lists)


class NewInvestigationPage(CaseFilePage):
    template = "casefile_investigation_new.html"

    async def get(self, subject_id: str) -> None:
        self.refuse_unless("investigations.manage")
        await self.show({"requested_on": self.today()})

    async def load(self, subject_id: str) -> dict[str, Any]:
        return await self.subject(subject_id)

    async def post(self, subject_id: str) -> None:
        self.refuse_unless("investigations.manage")
        typed = self.typed("court", "requested_on", "expedited")
        body: dict[str, Any] = {
            "subject_id": subject_id,
            "expedited": typed["expedited"] == "1",
            **{k: typed[k] for k in ("court", "requested_on") if typed[k]},
        }
        await self.submit(
            "POST",
            "/api/v1/investigations",
            body,
            typed,
            lambda investigation: f"/console/investigations/{investigation['id']}?done=created",
        )


class InvestigationPage(CaseFilePage):
    template = "casefile_investigation.html"

    async def get(self, investigation_id: str) -> None:
        self.refuse_unless("investigations.read")
        await self.show()

    async def load(self, investigation_id: str, step: str | None = None) -> dict[str, Any]:
        """The investigation with the form of `step` open (none: the page as opened)."""
        found = await self.api_ok("GET", f"/api/v1/investigations/{investigation_id}")
        subject = await self.api("GET", f"/api/v1/subjects/{found['subject_id']}")
        # The county assigns to one of its own stations; a station sees only its own node.
        orgs = await self.file_orgs()
        stations = [
            o for o in orgs if o["kind"] == "station" and o["parent_id"] == found["county_id"]
        ]
        return {
            "found": found,
            "subject": subject.body if subject.ok else None,
            "stations": stations,
            "station_name": next((o["name"] for o in orgs if o["id"] == found["station_id"]), None),
            "step": step,
            "done": None if step else self.done(),
            "today": self.today(),
        }


class InvestigationStep(InvestigationPage):
    async def post(self, investigation_id: str, step: str) -> None:
        self.refuse_unless("investigations.manage")
        typed = self.typed("station_id", "recommendation", "opinion", "on", "withdrawn", "confirm")
        body: dict[str, Any]
        if step == "assign":
            body = {"station_id": typed["station_id"]} if typed["station_id"] else {}
        elif step == "report":
            body = {k: typed[k] for k in ("recommendation", "opinion", "on") if typed[k]}
        else:
            body = {"withdrawn": typed["withdrawn"] == "1"}
        await self.submit(
            "POST",
            f"/api/v1/investigations/{investigation_id}/{step}",
            body,
            typed,
            f"/console/investigations/{investigation_id}?done={step}",
        )


routes = [
    (rf"/console/subjects/{path_id('subject_id')}/programs/new", NewProgramPage),
    (rf"/console/subjects/{path_id('subject_id')}/release-notice", ReleaseNoticePage),
    (rf"/console/programs/{path_id('program_id')}", ProgramPage),
    (
        rf"/console/programs/{path_id('program_id')}"
        r"/(?P<step>intake|level|risk|terminate|suspend|resume)",
        ProgramStep,
    ),
    (rf"/console/subjects/{path_id('subject_id')}/assignments", AssignmentsPage),
    (rf"/console/subjects/{path_id('subject_id')}/transfers/new", NewTransferPage),
    (rf"/console/transfers/{path_id('transfer_id')}", TransferPage),
    (
        rf"/console/transfers/{path_id('transfer_id')}/(?P<step>decision|handover|arrival)",
        TransferStep,
    ),
    (r"/console/investigations", InvestigationsPage),
    (rf"/console/subjects/{path_id('subject_id')}/investigations/new", NewInvestigationPage),
    (rf"/console/investigations/{path_id('investigation_id')}", InvestigationPage),
    (
        rf"/console/investigations/{path_id('investigation_id')}/(?P<step>assign|report|close)",
        InvestigationStep,
    ),
]

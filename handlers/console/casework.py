"""The console's casework pages: the case list (search, filters, sorting, pages), a case file
opened and edited, and a binding code shown as a printable QR code; all through the staff API."""

from __future__ import annotations

import datetime as dt
import math
import urllib.parse
from typing import Any

import segno
from tornado.escape import xhtml_escape

from handlers.console.base import ApiAnswer, ApiRefused, path_id
from handlers.console.pages import PROGRAM_STATUS_ZH, Errors, FormPage
from models.clock import LOCAL_TZ
from models.reports import PROGRAM_LABELS

PER_PAGE = 20
FIELD_LABELS = {
    "name": "姓名",
    "id_type": "证件类型",
    "id_number": "证件号码",
    "phone": "手机号码",
    "gender": "性别",
    "birth_date": "出生日期",
    "address": "住址",
    "org_id": "所属单位",
}
# What an officer reads beside a field the API refused (by field); the label is prefixed.
FIELD_HINTS = {
    "name": "请填写 1 至 50 个字",
    "id_number": "不正确：请核对号码、校验位，及与出生日期、性别是否一致",
    "phone": "不正确：请填写 11 位手机号码",
    "gender": "请选择",
    "birth_date": "不正确：请按 YYYY-MM-DD 填写，且不晚于今天",
    "address": "请填写 2 至 200 个字",
    "org_id": "请选择本辖区内的司法所、社区或网格",
    "id_type": "请选择",
}
ID_TYPE_ZH = {
    "resident": "居民身份证",
    "hk_mo": "港澳居民来往内地通行证",
    "tw": "台湾居民来往大陆通行证",
    "foreign": "外国人护照或永久居留证",
}
GENDER_ZH = {"male": "男", "female": "女"}
CASE_FLAGS_ZH = {
    "overdue": "30 天内有未完成事项",
    "detached": "脱管",
    "juvenile": "未成年人",
    "unassigned": "未分配社工",
}
SORTS_ZH = {
    "newest": "建档时间(新→旧)",
    "oldest": "建档时间(旧→新)",
    "updated": "最近修改",
    "station": "所属单位",
}
SUBJECT_STATUS_ZH = {"active": "在册", "shredded": "已销毁"}
BINDING_ROLES_ZH = {"subject": "本人", "guardian": "监护人"}
SAVED_ZH = {"created": "档案已建立。", "saved": "已保存。"}
CONFLICT_ZH = "该档案已被他人修改，请查看最新内容后重试"
ORG_KINDS_FOR_FILES = ("station", "community", "grid")
EDITABLE = ("name", "id_number", "phone", "gender", "birth_date", "address", "org_id")


def _field_errors(answer: ApiAnswer) -> dict[str, str]:
    """The API's refusal as Chinese words beside the fields it names."""
    errors = {}
    for field in answer.field_errors():
        label = FIELD_LABELS.get(field)
        if label is not None:
            errors[field] = label + FIELD_HINTS.get(field, "填写不正确")
    return errors


class CaseworkPage(FormPage):
    def get_template_namespace(self) -> dict[str, Any]:
        namespace = super().get_template_namespace()
        namespace.update(
            field_labels=FIELD_LABELS,
            id_types=ID_TYPE_ZH,
            genders=GENDER_ZH,
            populations=PROGRAM_LABELS,
        )
        return namespace

    def refuse_unless(self, action: str) -> None:
        """A page for an action the officer's role may not perform: a clear refusal page."""
        if not self.may(action):
            raise ApiRefused(ApiAnswer(403, None, {}, b""))

    async def file_orgs(self) -> list[dict[str, Any]]:
        """The nodes a case file may belong to, in the caller's scope (officers read the tree;
        others file under their own node)."""
        if not self.may("orgs.read"):
            return []
        answer = await self.api("GET", "/api/v1/orgs")
        items = answer.body.get("items", []) if answer.ok else []
        return [o for o in items if o.get("kind") in ORG_KINDS_FOR_FILES]


# --- the case list ----------------------------------------------------------------------------


class CaseListPage(CaseworkPage):
    """Filters travel in the page's URL (a list can be bookmarked); what is searched for (a
    name, an ID number, a phone) only in a form's body, never in a URL a proxy or the browser's
    history keeps."""

    async def get(self) -> None:
        self.refuse_unless("subjects.read")
        await self._list(self.get_query_argument, self.get_query_arguments, q="")

    async def post(self) -> None:
        self.refuse_unless("subjects.read")
        q = self.get_body_argument("q", "").strip()
        if not q:
            # Nothing searched for: the list's own URL, so that it can be kept and shared.
            pairs = [
                (name, self.get_body_argument(name, "").strip())
                for name in (*_FILTERS, "sort", "page")
            ]
            pairs += [("flag", f) for f in self.get_body_arguments("flag")]
            kept = [(k, v) for k, v in pairs if v]
            self.redirect(
                "/console/subjects" + ("?" + urllib.parse.urlencode(kept) if kept else "")
            )
            return
        await self._list(self.get_body_argument, self.get_body_arguments, q=q)

    async def _list(self, one: Any, many: Any, q: str) -> None:
        chosen = {name: str(one(name, "")).strip() for name in _FILTERS}
        chosen["q"] = q
        chosen["status"] = chosen["status"] or "active"
        flags = [f for f in many("flag") if f in CASE_FLAGS_ZH]
        sort = one("sort", "newest")
        sort = sort if sort in SORTS_ZH else "newest"
        page = one("page", "1")
        page = page if page.isascii() and page.isdigit() and 0 < len(page) < 6 else "1"
        query: dict[str, str] = {k: v for k, v in chosen.items() if v}
        if flags:
            query["flag"] = ",".join(flags)
        query.update(sort=sort, page=str(max(1, int(page))), limit=str(PER_PAGE))
        # In-process: this query string never leaves the process, nor reaches a log.
        answer = await self.api("GET", "/api/v1/subjects?" + urllib.parse.urlencode(query))
        error = None
        listed: dict[str, Any] = {"items": [], "total": 0, "page": 1, "per_page": PER_PAGE}
        if answer.ok:
            listed = answer.body
        elif answer.status == 422:
            error = "筛选条件不正确：" + "、".join(
                _QUERY_ZH.get(f, f) for f in _query_fields(answer)
            )
        else:
            raise ApiRefused(answer)
        stations = await self.file_orgs()
        workers: list[dict[str, Any]] = []
        if self.may("staff.read"):
            staff = await self.api("GET", "/api/v1/staff?limit=200")
            workers = [
                s
                for s in (staff.body.get("items", []) if staff.ok else [])
                if s.get("role") in ("social_worker", "grid_worker") and not s.get("disabled")
            ]

        def nav(text: str, rel: str = "", **changes: Any) -> str:
            """A link to another page or order of this list; a small form when a search is
            shown (its words go in the body, not in the link)."""
            args = {**query, **{k: str(v) for k, v in changes.items()}}
            args.pop("limit", None)
            pairs = [(k, v) for k, v in args.items() if k != "flag"]
            pairs += [("flag", f) for f in args.get("flag", "").split(",") if f]
            label = xhtml_escape(text)
            if not chosen["q"]:
                href = xhtml_escape("/console/subjects?" + urllib.parse.urlencode(pairs))
                rel_attr = f' rel="{rel}"' if rel else ""
                return f'<a href="{href}"{rel_attr}>{label}</a>'
            hidden = "".join(
                f'<input type="hidden" name="{xhtml_escape(k)}" value="{xhtml_escape(v)}">'
                for k, v in pairs
            )
            xsrf = self.xsrf_form_html()
            return (
                f'<form method="post" action="/console/subjects" class="inline">{xsrf}{hidden}'
                f'<button type="submit" class="link" data-rel="{rel}">{label}</button></form>'
            )

        self.render(
            "subjects.html",
            listed=listed,
            chosen=chosen,
            flags=flags,
            sort=sort,
            pages=max(1, math.ceil(listed["total"] / listed["per_page"])),
            stations=stations,
            workers=workers,
            nav=nav,
            error=error,
            case_flags=CASE_FLAGS_ZH,
            sorts=SORTS_ZH,
            subject_statuses=SUBJECT_STATUS_ZH,
            program_statuses=PROGRAM_STATUS_ZH,
        )


_FILTERS = ("population", "status", "program_status", "station", "worker")
_QUERY_ZH = {
    "q": "查询内容",
    "population": "人员类别",
    "status": "档案状态",
    "program_status": "矫正/帮教状态",
    "station": "所属单位",
    "worker": "负责人员",
    "flag": "标记",
    "sort": "排序",
    "page": "页码",
}


def _query_fields(answer: ApiAnswer) -> list[str]:
    details = (answer.body or {}).get("error", {}).get("details") or []
    return [str(d.get("field")) for d in details if isinstance(d, dict)]


# --- a case file opened and edited --------------------------------------------------------------


class SubjectForm(CaseworkPage):
    """A case file's own form, new or edited: a refused field is named by its label and hint."""

    template = "subject_form.html"

    def refusal(self, answer: ApiAnswer, typed: dict[str, Any]) -> tuple[Errors, str | None]:
        errors = _field_errors(answer)
        return errors, None if errors else answer.message_zh()


class NewCaseFilePage(SubjectForm):
    async def get(self) -> None:
        self.refuse_unless("subjects.create")
        await self.show({"id_type": "resident", "org_id": self.me["org_id"]})

    async def load(self) -> dict[str, Any]:
        return {
            "heading": "新建档案",
            "action": "/console/subjects/new",
            "subject": None,
            "existing": None,
            "orgs": await self.file_orgs(),
            "conflict": None,
            "saved": None,
            "was": {},
            "version": None,
        }

    def refusal(self, answer: ApiAnswer, typed: dict[str, Any]) -> tuple[Errors, str | None]:
        if answer.error_code == "exists":
            return {"id_number": "该证件号码已建档"}, "该人员已有档案。"
        if answer.error_code == "exists_elsewhere":
            error = "该人员已在其他辖区建档，已通知其所属县(区)司法局。"
            return {"id_number": "该证件号码已在其他辖区建档"}, error
        return super().refusal(answer, typed)

    async def post(self) -> None:
        self.refuse_unless("subjects.create")
        typed = {name: self.get_body_argument(name, "").strip() for name in ("id_type", *EDITABLE)}
        body: dict[str, Any] = {k: v for k, v in typed.items() if v}
        errors = {f: FIELD_LABELS[f] + "必须填写" for f in EDITABLE if not typed.get(f)}
        if errors:
            await self.show(typed, errors, status=422)
            return
        answer = await self.api("POST", "/api/v1/subjects", body)
        if answer.ok:
            self.redirect(f"/console/subjects/{answer.body['id']}/edit?saved=created")
            return
        errors, error = self.refusal(answer, typed)
        # The file the number already has, linked from the form.
        existing = None
        if answer.error_code == "exists":
            existing = (answer.body["error"].get("details") or {}).get("id")
        await self.show(typed, errors, error, status=answer.status, existing=existing)


class EditCaseFilePage(SubjectForm):
    async def get(self, subject_id: str) -> None:
        self.refuse_unless("subjects.update")
        context = await self.load(subject_id)
        saved = SAVED_ZH.get(self.get_query_argument("saved", ""))
        await self.show(_values(context["subject"]), context=context, saved=saved)

    async def load(self, subject_id: str) -> dict[str, Any]:
        subject = await self.api_ok("GET", f"/api/v1/subjects/{subject_id}")
        return {
            "heading": "编辑档案",
            "action": f"/console/subjects/{subject['id']}/edit",
            "subject": subject,
            "existing": None,
            "orgs": await self.file_orgs(),
            "conflict": None,
            "saved": None,
            # The values and the version the form was read at (a save sends only what changed).
            "was": _values(subject),
            "version": subject["version"],
        }

    async def post(self, subject_id: str) -> None:
        self.refuse_unless("subjects.update")
        typed = {name: self.get_body_argument(name, "").strip() for name in EDITABLE}
        shown = {name: self.get_body_argument(f"was_{name}", "") for name in EDITABLE}
        raw_version = self.get_body_argument("version", "")
        version = int(raw_version) if raw_version.isascii() and raw_version.isdigit() else 0
        # Only what the officer changed goes to the API: a field masked on this page (a
        # juvenile's identity) is never sent back, and a field left alone is not overwritten.
        changes = {k: v for k, v in typed.items() if k in shown and v != shown[k]}
        errors = {f: FIELD_LABELS[f] + "必须填写" for f, v in changes.items() if not v}
        if errors:
            await self.show(typed, errors, status=422, was=shown, version=version)
            return
        answer = await self.api(
            "PATCH",
            f"/api/v1/subjects/{subject_id}",
            {"version": version, **changes},
        )
        if answer.ok:
            self.redirect(f"/console/subjects/{subject_id}/edit?saved=saved")
            return
        if answer.status in (401, 403, 404, 410):
            raise ApiRefused(answer)
        fresh = await self.load(subject_id)
        if answer.status == 409 and answer.error_code == "stale_version":
            # Someone saved first: their values are shown beside what this officer typed, and
            # the form now carries the fresh version, so saving again is a deliberate choice.
            # What this officer changed stays typed; the rest shows the fresh values, so saving
            # again changes only what they meant to.
            latest = _values(fresh["subject"])
            kept = {k: (v if k in changes else latest[k]) for k, v in typed.items()}
            await self.show(
                kept, {}, CONFLICT_ZH, status=answer.status, context=fresh, conflict=latest
            )
            return
        errors, error = self.refusal(answer, typed)
        if answer.error_code == "exists":
            errors = {"id_number": "该证件号码已属于另一份档案"}
        # Not saved: the form keeps the version and the values it was read at.
        await self.show(
            typed, errors, error, status=answer.status, context=fresh, was=shown, version=version
        )


def _values(subject: dict[str, Any]) -> dict[str, str]:
    values = {name: str(subject.get(name) or "") for name in EDITABLE}
    values["org_id"] = str(subject.get("org_id") or "")
    return values


# --- binding the person's (or guardian's) WeChat ------------------------------------------------


class BindingPage(CaseworkPage):
    async def get(self, subject_id: str) -> None:
        self.refuse_unless("subjects.binding_code")
        subject = await self.api_ok("GET", f"/api/v1/subjects/{subject_id}")
        self.render("binding.html", subject=subject, issued=None, role="subject", error=None)

    async def post(self, subject_id: str) -> None:
        self.refuse_unless("subjects.binding_code")
        role = self.get_body_argument("role", "subject")
        role = role if role in BINDING_ROLES_ZH else "subject"
        subject = await self.api_ok("GET", f"/api/v1/subjects/{subject_id}")
        answer = await self.api(
            "POST", f"/api/v1/subjects/{subject_id}/binding-code", {"role": role}
        )
        if not answer.ok:
            if answer.status in (401, 403, 404):
                raise ApiRefused(answer)
            self.set_status(answer.status)
            message = (answer.body or {}).get("error", {}).get("message_zh")
            if answer.error_code == "no_guardian":
                message = "只有精神障碍患者或未成年人可以绑定监护人。"
            self.render(
                "binding.html",
                subject=subject,
                issued=None,
                role=role,
                error=message or answer.message_zh(),
            )
            return
        code = answer.body["code"]
        expires = dt.datetime.fromisoformat(answer.body["expires_at"]).astimezone(LOCAL_TZ)
        # What the mini-program's scan hands to POST /mp/v1/auth/bind: the code itself, as a
        # full QR code (WeChat's scanner does not read the Micro QR segno would pick for it).
        qr = segno.make_qr(code, error="m")
        self.set_status(201)
        self.render(
            "binding.html",
            subject=subject,
            issued={
                "code": code,
                "role": BINDING_ROLES_ZH[role],
                "expires": expires.strftime("%Y-%m-%d %H:%M"),
                "svg": qr.svg_inline(border=4, omitsize=True, title=f"绑定码 {code}"),
            },
            role=role,
            error=None,
        )


# Ahead of the console's `/console/subjects/<id>`, which `new` would otherwise match.
routes = [
    (r"/console/subjects", CaseListPage),
    (r"/console/subjects/new", NewCaseFilePage),
    (rf"/console/subjects/{path_id('subject_id')}/edit", EditCaseFilePage),
    (rf"/console/subjects/{path_id('subject_id')}/binding", BindingPage),
]

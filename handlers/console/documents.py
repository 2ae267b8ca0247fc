"""The console's documents page: a file's documents (文书) with their PDFs to open and print, and
the decided records on the file that a document can be made from, each with its button."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from handlers.console.base import ApiAnswer, ApiRefused, path_id
from handlers.console.pages import Errors, FormPage, Page

# Which document each decided praise or sanction is served as.
SANCTION_DOCUMENT: Mapping[str, str] = {
    "admonish": "admonish_decision",
    "warn": "warning_decision",
    "praise": "praise_decision",
    "public_security_penalty": "public_security_penalty_request",
    "revoke_request": "revoke_request",
    "imprison_request": "imprison_request",
}
SANCTION_ZH: Mapping[str, str] = {
    "admonish": "训诫",
    "warn": "警告",
    "praise": "表扬",
    "public_security_penalty": "提请治安管理处罚",
    "revoke_request": "提请撤销缓刑、假释",
    "imprison_request": "提请收监执行",
}
# The documents a program's decisions are served as, by program type.
PROGRAM_DOCUMENTS: Mapping[str, tuple[tuple[str, str], ...]] = {
    "community_corrections": (
        ("intake_declaration", "社区矫正宣告书"),
        ("correction_plan", "社区矫正方案"),
        ("end_declaration", "解除社区矫正宣告书"),
        ("end_certificate", "解除社区矫正证明书"),
    ),
    "drug_rehab": (("detox_agreement", "社区戒毒协议"), ("rehab_decision", "社区康复执行通知书")),
    "resettlement": (("assistance_handover", "安置帮教衔接交接表"),),
}
PROGRAM_ZH = {
    "community_corrections": "社区矫正",
    "drug_rehab": "社区戒毒（康复）",
    "resettlement": "安置帮教",
}
STATUS_ZH = {"issued": "有效", "voided": "已作废"}
LEAVE_ZH = {"approved": "已批准", "rejected": "未批准"}


def decided(kind: str, program: dict[str, Any]) -> bool:
    """Whether the program holds the decision `kind` is made from (the API checks it again)."""
    details = program.get("details") or {}
    ended = (details.get("termination") or {}).get("kind") == "completed"
    return {
        "intake_declaration": bool(details.get("intake_done")),
        "correction_plan": bool(details.get("plan")),
        "end_declaration": program["status"] == "ended" and ended,
        "end_certificate": program["status"] == "ended" and ended,
        "detox_agreement": details.get("mode") == "community_detox"
        and bool(details.get("intake_done")),
        "rehab_decision": details.get("mode") == "community_rehab"
        and bool(details.get("from_program_id")),
        "assistance_handover": details.get("term_from") == "end_of_corrections",
    }.get(kind, False)


MADE_ZH = {
    "not_decided": "该记录尚未作出决定，不能制作文书。",
    "already_issued": "该记录已制作此文书；如需重新制作，请先作废原文书。",
}


class DocumentsPage(FormPage):
    template = "documents.html"

    async def get(self, subject_id: str) -> None:
        await self.show()

    async def load(self, subject_id: str) -> dict[str, Any]:
        subject = await self.api_ok("GET", f"/api/v1/subjects/{subject_id}")
        documents = await self.api_ok("GET", f"/api/v1/subjects/{subject_id}/documents")
        made = {(d["kind"], d["record_id"]) for d in documents["items"] if d["status"] == "issued"}
        candidates: list[dict[str, Any]] = []
        sanctions = await self.api("GET", "/api/v1/sanctions?status=approved&limit=200")
        for s in sanctions.body["items"] if sanctions.ok else []:
            if s["subject_id"] == subject_id and s["kind"] in SANCTION_DOCUMENT:
                kind = SANCTION_DOCUMENT[s["kind"]]
                candidates.append(
                    {
                        "what": f"{SANCTION_ZH[s['kind']]}（{(s.get('decided_at') or '')[:10]}）",
                        "kind": kind,
                        "record_id": s["id"],
                        "made": (kind, s["id"]) in made,
                    }
                )
        programs = await self.api("GET", f"/api/v1/subjects/{subject_id}/programs")
        for p in programs.body["items"] if programs.ok else []:
            for kind, title in PROGRAM_DOCUMENTS.get(p["type"], ()):
                if not decided(kind, p):
                    continue
                candidates.append(
                    {
                        "what": f"{PROGRAM_ZH[p['type']]}（{p['start_date']}起）：{title}",
                        "kind": kind,
                        "record_id": p["id"],
                        "made": (kind, p["id"]) in made,
                    }
                )
        for status, status_zh in LEAVE_ZH.items():
            leave = await self.api("GET", f"/api/v1/leave-requests?status={status}&limit=200")
            for r in leave.body["items"] if leave.ok else []:
                if r["subject_id"] == subject_id:
                    candidates.append(
                        {
                            "what": f"外出（{r['start_date']}至{r['end_date']}，{status_zh}）",
                            "kind": "leave_approval",
                            "record_id": r["id"],
                            "made": ("leave_approval", r["id"]) in made,
                        }
                    )
        return {
            "subject": subject,
            "documents": documents["items"],
            "candidates": candidates,
            "status_zh": STATUS_ZH,
        }

    def render_form(
        self, context: dict[str, Any], typed: dict[str, Any], errors: Errors, error: str | None
    ) -> None:
        # The page's one line about the document asked for is `message` in its template.
        self.render(self.template, **context, message=error)

    def refusal(self, answer: ApiAnswer, typed: dict[str, Any]) -> tuple[Errors, str | None]:
        if answer.status in (401, 403, 404):
            raise ApiRefused(answer)
        return {}, MADE_ZH.get(answer.error_code or "", answer.message_zh())

    async def post(self, subject_id: str) -> None:
        body = {
            "kind": self.get_body_argument("kind", ""),
            "record_id": self.get_body_argument("record_id", ""),
        }
        await self.submit(
            "POST", "/api/v1/documents", body, {}, f"/console/subjects/{subject_id}/documents"
        )


class DocumentPdfPage(Page):
    """The PDF itself, for the browser's viewer to show and print."""

    async def get(self, document_id: str) -> None:
        answer = await self.api("GET", f"/api/v1/documents/{document_id}/pdf")
        if not answer.ok:
            raise ApiRefused(answer)
        self.set_header("Content-Type", "application/pdf")
        self.set_header("Content-Disposition", "inline")
        self.finish(answer.raw)


routes = [
    (rf"/console/subjects/{path_id('subject_id')}/documents", DocumentsPage),
    (rf"/console/documents/{path_id('document_id')}/pdf", DocumentPdfPage),
]

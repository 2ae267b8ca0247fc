"""The documents served on the person (宣告书, 决定书), readable in the mini-program and
downloadable as the same PDF the office printed."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping

from pydantic import Field

from handlers.base import Out, endpoint, path_id
from handlers.query import page_size, query, query_args
from miniprogram_api.base import MpHandler
from models.documents import DocumentView

PAGE = page_size(20, 100)
STATUS_TEXT: Mapping[str, str] = {"issued": "有效", "voided": "已作废"}


class OwnDocumentOut(Out):
    id: str
    title: str = Field(description="The document's Chinese name, e.g. 训诫决定书")
    number: str = Field(description="Its number, e.g. 〔2026〕鹿城矫训字第3号")
    status: str = Field(description="issued | voided")
    status_text: str
    issued_on: str
    issued_at: dt.datetime
    pdf_path: str = Field(description="Where its PDF is downloaded")


class OwnDocumentListOut(Out):
    items: list[OwnDocumentOut]


def own_out(view: DocumentView) -> OwnDocumentOut:
    return OwnDocumentOut(
        id=view.id,
        title=view.title,
        number=view.number,
        status=view.status,
        status_text=STATUS_TEXT.get(view.status, view.status),
        issued_on=view.issued_on,
        issued_at=view.issued_at,
        pdf_path=f"/mp/v1/documents/{view.id}/pdf",
    )


class OwnDocumentsHandler(MpHandler):
    access = "mp.self"

    @endpoint(
        "The documents served on the caller (a guardian: on the person), newest first",
        response=OwnDocumentListOut,
        errors=(401, 403, 422),
        tags=("mini-program",),
        summary_zh="送达本人的文书（宣告书、决定书）",
    )
    @query(PAGE)
    async def get(self) -> None:
        views = await self.ctx.documents.own(self.audit_context, query_args(self)["limit"])
        self.respond(OwnDocumentListOut(items=[own_out(v) for v in views]))


class OwnDocumentPdfHandler(MpHandler):
    access = "mp.self"

    def set_default_headers(self) -> None:
        super().set_default_headers()
        self.set_header("Cache-Control", "no-store")

    @endpoint(
        "One document served on the caller, as its PDF; anyone else's answers 404",
        errors=(401, 403, 404, 503),
        tags=("mini-program",),
        codes=(("not_found", 404, "未找到该文书（或不是送达本人的文书）"),),
        summary_zh="下载送达本人的一份文书（PDF）",
    )
    async def get(self, document_id: str) -> None:
        view, pdf = await self.ctx.documents.own_pdf(self.audit_context, document_id)
        self.set_header("Content-Type", "application/pdf")
        self.set_header("Content-Disposition", f'inline; filename="document-{view.id}.pdf"')
        self.finish(pdf)


routes = [
    (r"/mp/v1/documents", OwnDocumentsHandler),
    (rf"/mp/v1/documents/{path_id('document_id')}/pdf", OwnDocumentPdfHandler),
]

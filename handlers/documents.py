"""Official document endpoints (文书): make one from a decided record, list a file's, read one,
download its A4 PDF (a reprint is the same file), and void one so it can be reissued."""

from __future__ import annotations

import datetime as dt
import re
from typing import Any

from pydantic import Field

from handlers.base import BaseHandler, Out, Strict, endpoint, path_id
from models.documents import DocumentView

ID_PATTERN = r"^[0-9a-fA-F]{24}$"
_SAFE_NAME = re.compile(r"[^0-9A-Za-z_-]")


class MakeBody(Strict):
    kind: str = Field(min_length=1, max_length=64, description="The document's kind")
    record_id: str = Field(pattern=ID_PATTERN, description="The decided record it is made from")


class VoidBody(Strict):
    reason: str = Field(min_length=1, max_length=1000)


class DocumentOut(Out):
    id: str
    subject_id: str
    kind: str
    title: str
    number: str
    status: str = Field(description="issued | voided")
    served: bool = Field(description="Served on the person (readable in the mini-program)")
    source: str
    record_id: str
    issued_on: str
    issued_at: dt.datetime
    sha256: str = Field(description="SHA-256 of the canonical content, as audited")
    replaces: str | None = None
    replaced_by: str | None = None
    void_reason: str | None = None
    voided_at: dt.datetime | None = None
    content: dict[str, Any] | None = None

    @classmethod
    def of(cls, view: DocumentView) -> DocumentOut:
        return cls(**view.__dict__)


class DocumentList(Out):
    items: list[DocumentOut]


def pdf_name(view: DocumentView) -> str:
    return _SAFE_NAME.sub("_", f"{view.kind}-{view.id}") + ".pdf"


NOT_DECIDED = ("not_decided", 409, "the record is not decided: no document is made from it")
ALREADY_ISSUED = ("already_issued", 409, "the record has this document in force; void it first")


class DocumentsHandler(BaseHandler):
    access = "documents.create"

    @endpoint(
        "Make a document from a decided record, numbered per county, kind and year",
        body=MakeBody,
        response=DocumentOut,
        status=201,
        errors=(404, 409, 422),
        tags=("documents",),
        codes=(NOT_DECIDED, ALREADY_ISSUED),
    )
    async def post(self) -> None:
        body = self.parse(MakeBody)
        view = await self.ctx.documents.make(self.audit_context, body.kind, body.record_id)
        self.respond(DocumentOut.of(view), status=201)


class SubjectDocumentsHandler(BaseHandler):
    access = "documents.read"

    @endpoint(
        "A file's documents, oldest first, voided ones included (without their content)",
        response=DocumentList,
        errors=(404,),
        tags=("documents",),
    )
    async def get(self, subject_id: str) -> None:
        views = await self.ctx.documents.list_for_subject(self.audit_context, subject_id)
        self.respond(DocumentList(items=[DocumentOut.of(v) for v in views]))


class DocumentHandler(BaseHandler):
    access = "documents.read"

    @endpoint(
        "One document with its content", response=DocumentOut, errors=(404,), tags=("documents",)
    )
    async def get(self, document_id: str) -> None:
        view = await self.ctx.documents.get(self.audit_context, document_id)
        self.respond(DocumentOut.of(view))


class DocumentPdfHandler(BaseHandler):
    access = "documents.read"

    def set_default_headers(self) -> None:
        super().set_default_headers()
        self.set_header("Cache-Control", "no-store")

    @endpoint(
        "The document as an A4 PDF (its Chinese font embedded); a reprint is the same file",
        errors=(404, 503),
        tags=("documents",),
    )
    async def get(self, document_id: str) -> None:
        view, pdf = await self.ctx.documents.pdf(self.audit_context, document_id)
        self.set_header("Content-Type", "application/pdf")
        self.set_header("Content-Disposition", f'inline; filename="{pdf_name(view)}"')
        self.finish(pdf)


class VoidHandler(BaseHandler):
    access = "documents.void"

    @endpoint(
        "Void a document with a reason (kept, marked voided); the record's document can then "
        "be made again under a new number",
        body=VoidBody,
        response=DocumentOut,
        errors=(404, 409, 422),
        tags=("documents",),
        codes=(("already_voided", 409, "the document is voided already"),),
    )
    async def post(self, document_id: str) -> None:
        body = self.parse(VoidBody)
        view = await self.ctx.documents.void(self.audit_context, document_id, body.reason)
        self.respond(DocumentOut.of(view))


routes = [
    (r"/api/v1/documents", DocumentsHandler),
    (rf"/api/v1/subjects/{path_id('subject_id')}/documents", SubjectDocumentsHandler),
    (rf"/api/v1/documents/{path_id('document_id')}", DocumentHandler),
    (rf"/api/v1/documents/{path_id('document_id')}/pdf", DocumentPdfHandler),
    (rf"/api/v1/documents/{path_id('document_id')}/void", VoidHandler),
]

"""Case-file endpoints: create, read, edit, assign, search, notes, break-glass, access log."""

from __future__ import annotations

import datetime as dt
from typing import Any, Literal

from pydantic import Field
from tornado.ioloop import IOLoop

from handlers.base import BaseHandler, Out, RequestError, Strict, csv_media, endpoint, path_id
from handlers.photos import PhotoStreamHandler
from handlers.query import exact_person, matching, object_id, one_of, page_size, query, query_args
from models.attachments import AttachmentWriter
from models.identity_numbers import IdType
from models.programs import ProgramStatus, ProgramType
from models.subjects import (
    CASE_LIST_FLAGS,
    CASE_LIST_SORTS,
    CaseListQuery,
    SubjectInput,
    SubjectStatus,
    SubjectView,
)

ID_PATTERN = r"^[0-9a-fA-F]{24}$"
MAX_PAGE = 100


class SubjectBody(Strict):
    name: str = Field(min_length=1, max_length=50)
    id_type: IdType = IdType.RESIDENT
    id_number: str = Field(min_length=5, max_length=30)
    phone: str = Field(min_length=5, max_length=30)
    gender: Literal["male", "female"]
    birth_date: dt.date
    address: str = Field(min_length=2, max_length=200)
    org_id: str = Field(pattern=ID_PATTERN)


class SubjectPatch(Strict):
    # At most what the database holds (a 64-bit integer): a larger one answered 500.
    version: int = Field(ge=1, le=2**63 - 1)
    name: str | None = Field(default=None, min_length=1, max_length=50)
    id_number: str | None = Field(default=None, min_length=5, max_length=30)
    phone: str | None = Field(default=None, min_length=5, max_length=30)
    gender: Literal["male", "female"] | None = None
    birth_date: dt.date | None = None
    address: str | None = Field(default=None, min_length=2, max_length=200)
    org_id: str | None = Field(default=None, pattern=ID_PATTERN)


class TeamMember(Strict):
    name: str = Field(min_length=1, max_length=50)
    relation: str = Field(min_length=1, max_length=50)
    phone: str | None = Field(default=None, max_length=30)
    gender: Literal["male", "female"] | None = None


class AssignmentsBody(Strict):
    social_worker_ids: list[str] = Field(default_factory=list, max_length=20)
    grid_worker_ids: list[str] = Field(default_factory=list, max_length=20)
    team: list[TeamMember] = Field(default_factory=list, max_length=20)


class Assignments(Out):
    social_worker_ids: list[str]
    grid_worker_ids: list[str]
    team: list[dict[str, Any]] | None = None


class SubjectOut(Out):
    id: str
    version: int
    org_id: str
    status: str
    populations: list[str]
    juvenile: bool
    name: str | None = None
    id_type: str | None = None
    id_number: str | None = None
    phone: str | None = None
    gender: str | None = None
    birth_date: str | None = None
    address: str | None = None
    masked: list[str]
    has_photo: bool
    access: str
    assignments: Assignments | None = None

    @classmethod
    def of(cls, view: SubjectView) -> SubjectOut:
        return cls(
            id=view.id,
            version=view.version,
            org_id=view.org_id,
            status=view.status,
            populations=view.populations,
            juvenile=view.juvenile,
            masked=view.masked,
            has_photo=view.has_photo,
            access=view.access,
            assignments=Assignments(**view.assignments) if view.assignments else None,
            **{k: (str(v) if v is not None else None) for k, v in view.fields.items()},
        )


class SubjectPage(Out):
    items: list[SubjectOut]
    next_cursor: str | None
    # Numbered pages (`?page=`): how many files match in all, and names for the ids shown.
    total: int | None = None
    page: int | None = None
    per_page: int | None = None
    org_names: dict[str, str] | None = None
    worker_names: dict[str, str] | None = None


class SearchBody(Strict):
    id_number: str | None = Field(default=None, min_length=1, max_length=30)
    phone: str | None = Field(default=None, min_length=1, max_length=30)
    name: str | None = Field(default=None, min_length=1, max_length=50)
    population: str | None = Field(default=None, max_length=40)
    status: str | None = Field(default=None, max_length=40)
    cursor: str | None = Field(default=None, pattern=ID_PATTERN)
    limit: int = Field(default=20, ge=1, le=MAX_PAGE)


class NoteBody(Strict):
    text: str = Field(min_length=1, max_length=5000)


class NoteOut(Out):
    id: str
    at: dt.datetime
    author_id: str
    text: str | None = None


class NoteList(Out):
    items: list[NoteOut]


class BreakGlassBody(Strict):
    reason: str = Field(min_length=10, max_length=500)


class BreakGlassOut(Out):
    subject_id: str
    expires_at: dt.datetime


class AccessEntry(Out):
    at: dt.datetime
    actor_id: str | None
    # The staff member's name beside the id (none for the system or the person themselves).
    actor_name: str | None = None
    role: str | None
    action: str
    outcome: str | None
    # The reason's text for case officers; the audit administrator sees only that one was given.
    reason: str | None
    reason_given: bool = False
    request_id: str | None


class AccessLog(Out):
    items: list[AccessEntry]


class ImportOut(Out):
    imported: int
    ids: list[str]


class SubjectsHandler(BaseHandler):
    access = {"POST": "subjects.create", "GET": "subjects.read"}

    @endpoint(
        "Open a case file; 409 `exists` (in scope, with its id) or `exists_elsewhere`",
        body=SubjectBody,
        response=SubjectOut,
        status=201,
        errors=(404, 409),
        tags=("case files",),
    )
    async def post(self) -> None:
        body = self.parse(SubjectBody)
        view = await self.ctx.subjects.create(self.audit_context, SubjectInput(**body.model_dump()))
        self.respond(SubjectOut.of(view), status=201)

    @endpoint(
        "The caller's case files: cursor pages, or numbered pages searched, filtered and "
        "sorted (`page`)",
        response=SubjectPage,
        tags=("case files",),
    )
    @query(
        one_of("population", ProgramType, "Only subjects with a program of this type"),
        one_of(
            "status",
            (SubjectStatus.ACTIVE, SubjectStatus.SHREDDED),
            "Only case files in this state",
        ),
        object_id("cursor", "The `next_cursor` of the previous page (cursor pages only)"),
        page_size(20, MAX_PAGE),
        matching(
            "page",
            "A numbered page, 1 first: answers `total`, `page` and `per_page` (`limit`); also "
            "chosen by any parameter below",
            r"^[1-9][0-9]{0,5}$",
        ),
        exact_person(),
        one_of("program_status", ProgramStatus, "Only subjects with a program in this state"),
        object_id("station", "Only case files under this node"),
        matching("worker", "Only case files assigned to this worker", r"^[A-Za-z0-9_:-]{1,64}$"),
        matching(
            "flag",
            "Comma-separated: " + ", ".join(CASE_LIST_FLAGS) + " (all must hold)",
            rf"^({'|'.join(CASE_LIST_FLAGS)})(,({'|'.join(CASE_LIST_FLAGS)}))*$",
        ),
        one_of("sort", CASE_LIST_SORTS, "Order of numbered pages (default newest)"),
    )
    async def get(self) -> None:
        args = query_args(self)
        numbered = ("page", "q", "program_status", "station", "worker", "flag", "sort")
        if any(args[name] is not None for name in numbered):
            if args["cursor"] is not None:
                raise RequestError(
                    422,
                    "validation_failed",
                    "Invalid query.",
                    [{"field": "cursor", "message": "not with numbered pages"}],
                )
            listed = await self.ctx.subjects.case_list(
                self.audit_context,
                CaseListQuery(
                    q=args["q"],
                    population=args["population"],
                    status=args["status"],
                    program_status=args["program_status"],
                    station=args["station"],
                    worker=args["worker"],
                    flags=frozenset((args["flag"] or "").split(",")) - {""},
                    sort=args["sort"] or "newest",
                    page=int(args["page"] or 1),
                    per_page=args["limit"],
                ),
                self.ctx.staff.lookup,
            )
            self.respond(
                SubjectPage(
                    items=[SubjectOut.of(v) for v in listed.items],
                    next_cursor=None,
                    total=listed.total,
                    page=listed.page,
                    per_page=listed.per_page,
                    org_names=listed.org_names,
                    worker_names=listed.worker_names,
                )
            )
            return
        page = await self.ctx.subjects.list(
            self.audit_context,
            population=args["population"],
            status=args["status"],
            cursor=args["cursor"],
            limit=args["limit"],
        )
        self.respond(
            SubjectPage(items=[SubjectOut.of(v) for v in page.items], next_cursor=page.next_cursor)
        )


class SubjectSearchHandler(BaseHandler):
    access = "subjects.search"

    @endpoint(
        "Find case files by exact ID number, phone or name (blind indexes)",
        body=SearchBody,
        response=SubjectPage,
        tags=("case files",),
    )
    async def post(self) -> None:
        body = self.parse(SearchBody)
        page = await self.ctx.subjects.search(
            self.audit_context,
            id_number=body.id_number,
            phone=body.phone,
            name=body.name,
            population=body.population,
            status=body.status,
            cursor=body.cursor,
            limit=body.limit,
        )
        self.respond(
            SubjectPage(items=[SubjectOut.of(v) for v in page.items], next_cursor=page.next_cursor)
        )


class SubjectHandler(BaseHandler):
    access = {"GET": "subjects.read", "PATCH": "subjects.update"}

    @endpoint(
        "A case file, decrypted and masked per role; 404 when out of scope",
        response=SubjectOut,
        errors=(404, 410),
        tags=("case files",),
    )
    async def get(self, subject_id: str) -> None:
        self.respond(SubjectOut.of(await self.ctx.subjects.read(self.audit_context, subject_id)))

    @endpoint(
        "Edit a case file naming the version read; 409 when it is stale",
        body=SubjectPatch,
        response=SubjectOut,
        errors=(404, 409),
        tags=("case files",),
    )
    async def patch(self, subject_id: str) -> None:
        body = self.parse(SubjectPatch)
        changes = body.model_dump(exclude={"version"}, exclude_none=True)
        view = await self.ctx.subjects.update(self.audit_context, subject_id, body.version, changes)
        self.respond(SubjectOut.of(view))


class AssignmentsHandler(BaseHandler):
    access = "subjects.assign"

    @endpoint(
        "Assign social workers, grid workers and the 矫正小组",
        body=AssignmentsBody,
        response=SubjectOut,
        errors=(404, 422),
        tags=("case files",),
    )
    async def put(self, subject_id: str) -> None:
        body = self.parse(AssignmentsBody)
        view = await self.ctx.subjects.set_assignments(
            self.audit_context,
            subject_id,
            body.social_worker_ids,
            body.grid_worker_ids,
            [member.model_dump(exclude_none=True) for member in body.team],
            self.ctx.staff.lookup,
        )
        self.respond(SubjectOut.of(view))


class NotesHandler(BaseHandler):
    access = "subjects.notes"

    @endpoint(
        "Add a note (encrypted at rest)",
        body=NoteBody,
        response=NoteOut,
        status=201,
        errors=(404,),
        tags=("case files",),
    )
    async def post(self, subject_id: str) -> None:
        body = self.parse(NoteBody)
        note = await self.ctx.subjects.add_note(self.audit_context, subject_id, body.text)
        self.respond(NoteOut(**note), status=201)

    @endpoint("The notes on a case file", response=NoteList, errors=(404,), tags=("case files",))
    async def get(self, subject_id: str) -> None:
        notes = await self.ctx.subjects.notes(self.audit_context, subject_id)
        self.respond(NoteList(items=[NoteOut(**note) for note in notes]))


class BreakGlassHandler(BaseHandler):
    access = "subjects.break_glass"

    @endpoint(
        "Open an out-of-scope case file for 3 hours, stating why (audited, alerted)",
        body=BreakGlassBody,
        response=BreakGlassOut,
        status=201,
        errors=(404, 409),
        tags=("case files",),
    )
    async def post(self, subject_id: str) -> None:
        body = self.parse(BreakGlassBody)
        grant = await self.ctx.scope.break_glass(self.audit_context, subject_id, body.reason)
        self.respond(BreakGlassOut(**grant), status=201)


class AccessLogHandler(BaseHandler):
    access = "subjects.access_log"

    @endpoint(
        "Who read or changed this case file, when and why, each staff member by name",
        response=AccessLog,
        errors=(404,),
        tags=("case files",),
    )
    async def get(self, subject_id: str) -> None:
        entries = await self.ctx.subjects.access_log(
            self.audit_context, subject_id, self.ctx.staff.lookup
        )
        self.respond(AccessLog(items=[AccessEntry(**entry) for entry in entries]))


class SubjectImportHandler(BaseHandler):
    access = "subjects.import"
    max_body_bytes = 8 << 20

    @endpoint(
        "Import case files from a UTF-8 CSV file (text/csv): all rows or none",
        body_media=csv_media(
            "name, id_type, id_number, phone, gender, birth_date, address and org_code",
            "name,id_type,id_number,phone,gender,birth_date,address,org_code\r\n"
            "赵敏,foreign,E12345678,13700000001,female,1985-05-05,五马街1号,330302001\r\n",
        ),
        response=ImportOut,
        status=201,
        errors=(409,),
        tags=("case files",),
    )
    async def post(self) -> None:
        text = self.csv_text()
        ids = await self.ctx.subject_import.import_csv(self.audit_context, text)
        self.respond(ImportOut(imported=len(ids), ids=ids), status=201)


class PhotoOut(Out):
    attachment_id: str
    content_type: str
    size: int


# Recognised by content, never by the name or header a client claims.
IMAGE_SIGNATURES = {b"\xff\xd8\xff": "image/jpeg", b"\x89PNG\r\n\x1a\n": "image/png"}


class SubjectPhotoHandler(PhotoStreamHandler):
    """The subject's photo: encrypted while it streams in, decrypted while it streams out
    (a refused GET answers 404, never 403)."""

    access = {"PUT": "subjects.photo", "GET": "subjects.read"}
    max_body_bytes = 5 << 20
    # Also set here, not only in `prepare`: a method Tornado refuses (TRACE) never reaches
    # `prepare`, yet the connection's close still asks for the writer.
    _writer: AttachmentWriter | None = None
    _head = b""
    _refusal: RequestError | None = None

    async def prepare(self) -> None:
        self._writer: AttachmentWriter | None = None
        self._head = b""
        self._refusal: RequestError | None = None
        await super().prepare()
        if self.request.method != "PUT" or self._deferred_refusal is not None:
            return
        declared = self.request.headers.get("Content-Type", "").split(";", 1)[0].strip()
        if declared not in IMAGE_SIGNATURES.values():
            raise RequestError(415, "unsupported_media_type", "Send a JPEG or PNG image.")
        self._writer = await self.ctx.subjects.begin_photo(
            self.audit_context, self.path_kwargs["subject_id"], declared, self.body_limit
        )

    async def data_received(self, chunk: bytes) -> None:
        if self._writer is None:
            super().data_received(chunk)
            return
        if self._refusal is not None:
            return
        if len(self._head) < 8:
            self._head += chunk[: 8 - len(self._head)]
            if len(self._head) >= 8 and not any(
                self._head.startswith(sig) and kind == self._writer.content_type
                for sig, kind in IMAGE_SIGNATURES.items()
            ):
                self._refusal = RequestError(
                    415, "unsupported_media_type", "The file is not the image it claims to be."
                )
                return
        try:
            await self._writer.write(chunk)
        except ValueError:
            self._refusal = RequestError(
                413, "body_too_large", "The photo is too large.", {"limit": self.body_limit}
            )

    def on_connection_close(self) -> None:
        if self._writer is not None:
            IOLoop.current().add_callback(self._writer.abort)

    @endpoint(
        "Store the subject's photo (JPEG or PNG body, at most 5 MiB), encrypted",
        body_media={
            kind: {"schema": {"type": "string", "format": "binary"}}
            for kind in IMAGE_SIGNATURES.values()
        },
        response=PhotoOut,
        status=201,
        errors=(404, 413, 415),
        tags=("case files",),
    )
    async def put(self, subject_id: str) -> None:
        assert self._writer is not None
        if self._refusal is None and len(self._head) < 8:
            self._refusal = RequestError(415, "unsupported_media_type", "Send a JPEG or PNG image.")
        if self._refusal is not None:
            await self._writer.abort()
            raise self._refusal
        info = await self.ctx.subjects.finish_photo(self.audit_context, self._writer)
        self._writer = None
        self.respond(
            PhotoOut(attachment_id=info.id, content_type=info.content_type, size=info.size),
            status=201,
        )

    @endpoint("The subject's photo, streamed", errors=(404,), tags=("case files",))
    async def get(self, subject_id: str) -> None:
        info, chunks = await self.ctx.subjects.photo(self.audit_context, subject_id)
        await self.stream(info, chunks)


routes = [
    (r"/api/v1/subjects", SubjectsHandler),
    (r"/api/v1/subjects/search", SubjectSearchHandler),
    (r"/api/v1/subjects/import", SubjectImportHandler),
    (rf"/api/v1/subjects/{path_id('subject_id')}", SubjectHandler),
    (rf"/api/v1/subjects/{path_id('subject_id')}/assignments", AssignmentsHandler),
    (rf"/api/v1/subjects/{path_id('subject_id')}/notes", NotesHandler),
    (rf"/api/v1/subjects/{path_id('subject_id')}/break-glass", BreakGlassHandler),
    (rf"/api/v1/subjects/{path_id('subject_id')}/access-log", AccessLogHandler),
    (rf"/api/v1/subjects/{path_id('subject_id')}/photo", SubjectPhotoHandler),
]

"""Staff endpoints for monthly compliance: a node's report (JSON, XLSX or PDF), its drill-down to
the people behind a figure, the officer's sign-off, and one person's month."""

from __future__ import annotations

import asyncio
import datetime as dt
import re
from collections.abc import Iterator, Mapping
from typing import IO, Any, Literal

from pydantic import Field
from tornado.iostream import StreamClosedError

from handlers.base import BaseHandler, Out, Strict, endpoint, path_id
from handlers.query import calendar_month, one_of, query, query_args, required, text
from models.reports import FIGURE_KEYS, ReportView


class CreateBody(Strict):
    org_id: str = Field(min_length=1, max_length=64)
    month: str = Field(min_length=1, max_length=16, description="YYYY-MM, a month that has ended")


class SignBody(Strict):
    comment: str = Field(default="", max_length=1000)
    # Replacing a signed version after the data changed is asked for, never implied.
    resign: bool = False


class SignatureOut(Out):
    version: int
    sha256: str
    at: dt.datetime
    by: str
    comment: str


class UnitOut(Out):
    org_id: str
    name: str
    kind: str
    figures: dict[str, int | float]
    rates: dict[str, float | None]
    # Reports stored before quiet units were listed carry no mark: each of their units had a record.
    nothing_recorded: bool = Field(
        default=False,
        description="Nobody supervised and nothing recorded in the unit this month (all zeros)",
    )


class ReportOut(Out):
    """The figures of the signed snapshot once signed (else of the latest computation);
    `changes` lists what moved in the data since the signature."""

    id: str
    org_id: str
    org_name: str
    org_kind: str
    month: str
    status: Literal["draft", "signed"]
    generated_at: dt.datetime
    sha256: str
    figures: dict[str, int | float]
    rates: dict[str, float | None]
    by_program: dict[str, dict[str, int | float | None]]
    by_level: dict[str, int]
    by_trend: dict[str, int]
    units: list[UnitOut]
    signed: SignatureOut | None
    signatures: list[SignatureOut]
    changes: dict[str, Any] | None


class DrillRowOut(Out):
    subject_id: str
    name: str | None
    unit_id: str | None
    value: int | float
    programs: list[str]
    trend: str


class DrillOut(Out):
    figure: str
    items: list[DrillRowOut]


class SubjectMonthOut(Out):
    subject_id: str
    month: str
    figures: dict[str, int | float]
    rates: dict[str, float | None]
    programs: list[str]
    supervision_level: str | None
    risk_level: int | None
    trend: str
    missed_previous_month: int


def report_out(view: ReportView) -> ReportOut:
    summary = view.summary
    return ReportOut(
        id=view.id,
        org_id=view.org_id,
        org_name=view.org_name,
        org_kind=view.org_kind,
        month=view.month,
        status=view.status,
        generated_at=view.generated_at,
        sha256=summary["sha256"],
        figures=summary["figures"],
        rates=summary["rates"],
        by_program=summary["by_program"],
        by_level=summary["by_level"],
        by_trend=summary["by_trend"],
        units=[UnitOut(**unit) for unit in summary["units"]],
        signed=SignatureOut(**view.signed) if view.signed else None,
        signatures=[SignatureOut(**s) for s in view.signatures],
        changes=view.changes,
    )


def _render_xlsx(data: Mapping[str, Any]) -> IO[bytes]:
    # openpyxl and reportlab (with numpy) load at the first export, not at every process start:
    # they were a fifth of the time `python -m server` took to import.
    from handlers.report_exports import render_xlsx

    return render_xlsx(data)


def _render_pdf(data: Mapping[str, Any]) -> IO[bytes]:
    from handlers.report_exports import render_pdf

    return render_pdf(data)


EXPORTS = {
    "xlsx": (
        _render_xlsx,
        "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
    ),
    "pdf": (_render_pdf, "application/pdf"),
}
EXPORT_CHUNK_BYTES = 64 * 1024


def report_chunks(file: IO[bytes]) -> Iterator[bytes]:
    """The rendered file, from its start, in chunks."""
    file.seek(0)
    while chunk := file.read(EXPORT_CHUNK_BYTES):
        yield chunk


_SAFE_NAME = re.compile(r"[^0-9A-Za-z_-]")


class ReportsHandler(BaseHandler):
    access = "reports.create"

    @endpoint(
        "A station's, county's or city's report for a month that has ended (computed now; "
        "asked again, it is refreshed and, once signed, shows what changed)",
        body=CreateBody,
        response=ReportOut,
        status=201,
        errors=(404, 422),
        tags=("reports",),
    )
    async def post(self) -> None:
        body = self.parse(CreateBody)
        view, created = await self.ctx.reports.generate(self.audit_context, body.org_id, body.month)
        self.respond(report_out(view), status=201 if created else 200)


class ReportHandler(BaseHandler):
    access = "reports.read"

    @endpoint(
        "The report (`?format=json|xlsx|pdf`); the exports are streamed",
        response=ReportOut,
        errors=(404, 422),
        tags=("reports",),
    )
    @query(one_of("format", ("json", *EXPORTS), "The report's form", default="json"))
    async def get(self, report_id: str) -> None:
        fmt = query_args(self)["format"]
        if fmt == "json":
            self.respond(report_out(await self.ctx.reports.get(self.audit_context, report_id)))
            return
        render, media_type = EXPORTS[fmt]
        data = await self.ctx.reports.export_data(self.audit_context, report_id, fmt)
        # Rendering is CPU work: off the event loop, into a file spooled to disk when large.
        file: IO[bytes] = await asyncio.to_thread(render, data)
        try:
            report = data["report"]
            name = _SAFE_NAME.sub("_", f"compliance-{report.org_id}-{report.month}")
            self.set_header("Content-Type", media_type)
            self.set_header("Content-Disposition", f'attachment; filename="{name}.{fmt}"')
            for chunk in report_chunks(file):
                self.write(chunk)
                try:
                    await self.flush()
                except StreamClosedError:
                    return
            self.finish()
        finally:
            file.close()


class SignHandler(BaseHandler):
    access = "reports.sign"

    @endpoint(
        "Sign the report as its data stands (the officer of the report's level): the snapshot "
        "is frozen and its hash audited; unchanged, signing again changes nothing; changed, "
        "it needs `resign: true`",
        body=SignBody,
        response=ReportOut,
        errors=(403, 404, 409, 422),
        tags=("reports",),
    )
    async def post(self, report_id: str) -> None:
        body = self.parse(SignBody)
        view = await self.ctx.reports.sign(
            self.audit_context, report_id, body.comment, resign=body.resign
        )
        self.respond(report_out(view))


class DrillDownHandler(BaseHandler):
    access = "reports.read"

    @endpoint(
        "The people behind one figure (`?figure=&version=current|signed&unit_id=`), as the "
        "caller may see them",
        response=DrillOut,
        errors=(404, 422),
        tags=("reports",),
    )
    @query(
        required(one_of("figure", FIGURE_KEYS, "One of the report's figures")),
        one_of(
            "version",
            ("current", "signed"),
            "The data as it stands, or the signed snapshot (default: the signed one once signed)",
        ),
        text("unit_id", "Only the people of this unit (a county's station, a city's county)"),
    )
    async def get(self, report_id: str) -> None:
        args = query_args(self)
        figure = args["figure"]
        items = await self.ctx.reports.drill_down(
            self.audit_context,
            report_id,
            figure,
            version=args["version"],
            unit_id=args["unit_id"],
        )
        self.respond(DrillOut(figure=figure, items=[DrillRowOut(**item) for item in items]))


class SubjectMonthHandler(BaseHandler):
    access = "compliance.read"

    @endpoint(
        "One person's month (`?month=YYYY-MM`): obligations by outcome, check-in rate, hours, "
        "leave, alerts, 脱管, sanctions, drug tests, follow-ups, assistance and the risk trend",
        response=SubjectMonthOut,
        errors=(404, 422),
        tags=("reports",),
    )
    @query(calendar_month("month", "The month, ended in Asia/Shanghai"))
    async def get(self, subject_id: str) -> None:
        month = query_args(self)["month"]
        result = await self.ctx.reports.subject_month(self.audit_context, subject_id, month)
        self.respond(SubjectMonthOut(**result))


routes = [
    (r"/api/v1/reports/compliance", ReportsHandler),
    (rf"/api/v1/reports/compliance/{path_id('report_id')}", ReportHandler),
    (rf"/api/v1/reports/compliance/{path_id('report_id')}/sign", SignHandler),
    (rf"/api/v1/reports/compliance/{path_id('report_id')}/subjects", DrillDownHandler),
    (rf"/api/v1/subjects/{path_id('subject_id')}/compliance", SubjectMonthHandler),
]

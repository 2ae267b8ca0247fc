"""Printable exports of a compliance report (XLSX and PDF), rendered from the same stored data
as its JSON into a spooled temporary file that the handler streams out in chunks (the handler
imports this module at the first export: openpyxl and reportlab are slow to load)."""

from __future__ import annotations

import tempfile
from collections.abc import Mapping, Sequence
from typing import IO, Any, cast

from openpyxl import Workbook
from openpyxl.cell import WriteOnlyCell
from openpyxl.styles import Alignment, Font, PatternFill
from openpyxl.utils import get_column_letter
from openpyxl.worksheet._write_only import WriteOnlyWorksheet
from openpyxl.worksheet.properties import PageSetupProperties
from openpyxl.worksheet.worksheet import Worksheet
from reportlab.lib import colors
from reportlab.lib.pagesizes import A4, landscape
from reportlab.lib.styles import ParagraphStyle
from reportlab.lib.units import mm
from reportlab.pdfgen.canvas import Canvas
from reportlab.platypus import Paragraph, SimpleDocTemplate, Spacer, Table, TableStyle

from models.clock import LOCAL_TZ
from models.document_pdf import embedded_font
from models.reports import (
    FIGURE_KEYS,
    FIGURE_LABELS,
    LEVEL_LABELS,
    PROGRAM_LABELS,
    RATE_LABELS,
    TREND_LABELS,
)

SPOOL_BYTES = 1 << 20
KIND_LABELS = {"station": "司法所", "county": "县(区)司法局", "city": "市司法局"}
# The per-person columns of the PDF (a landscape page holds about a dozen).
PDF_PERSON_FIGURES = (
    "obligations_due",
    "obligations_on_time",
    "obligations_late",
    "obligations_missed",
    "obligations_excused",
    "checkins_missed",
    "leave_days",
    "alerts",
    "detachment_days",
)
HEADER_FILL = PatternFill("solid", fgColor="DDE4EE")
# The mark of a unit where nobody was supervised and nothing was recorded in the month.
QUIET_MARK = "本月无记录"
# Section headings are numbered by what the report holds (a station has no units below it).
SECTION_NUMERALS = "一二三四五六七八九十"


def title_of(data: Mapping[str, Any]) -> str:
    report = data["report"]
    return f"{report.org_name} {report.month} 月度合规报告"


def signature_line(data: Mapping[str, Any]) -> str:
    report = data["report"]
    if report.signed is None:
        return "草稿(未签署)"
    at = report.signed["at"].astimezone(LOCAL_TZ).strftime("%Y-%m-%d %H:%M")
    signer = data.get("signer") or report.signed["by"]
    return f"签署人:{signer}  签署时间:{at}  第{report.signed['version']}版"


def _format_rate(value: float | None) -> str:
    return "—" if value is None else f"{value * 100:.1f}%"


def _rate_cell(key: str, value: float | None) -> str:
    if key == "alert_ack_median_minutes":
        return "—" if value is None else f"{value:g}"
    return _format_rate(value)


def _remark(unit: Mapping[str, Any]) -> str:
    return QUIET_MARK if unit.get("nothing_recorded") else ""


def numbered(titles: Sequence[str]) -> list[str]:
    """Section headings numbered by their position among those present: 一、 二、 三、 ..."""
    return [f"{SECTION_NUMERALS[index]}、{title}" for index, title in enumerate(titles)]


def _programs(row: Mapping[str, Any]) -> str:
    return "、".join(PROGRAM_LABELS.get(p, p) for p in row["programs"])


def _spool() -> IO[bytes]:
    return tempfile.SpooledTemporaryFile(max_size=SPOOL_BYTES)


# --- XLSX -----------------------------------------------------------------------------------------


def _header(sheet: WriteOnlyWorksheet, labels: Sequence[str]) -> None:
    cells = []
    for label in labels:
        cell = WriteOnlyCell(sheet, value=label)
        cell.font = Font(bold=True)
        cell.fill = HEADER_FILL
        cell.alignment = Alignment(horizontal="center", vertical="center", wrap_text=True)
        cells.append(cell)
    sheet.append(cells)


def _printable(
    sheet: WriteOnlyWorksheet, widths: Sequence[float], header: str, freeze: str = "A2"
) -> None:
    """A4 landscape, fitted to the page width, the header row repeated on every page."""
    # A write-only sheet has these settings of Worksheet's (openpyxl copies them onto its class);
    # the type stubs declare only the write-only methods.
    page = cast(Worksheet, sheet)
    page.freeze_panes = freeze
    for index, width in enumerate(widths, start=1):
        page.column_dimensions[get_column_letter(index)].width = width
    page.print_title_rows = "1:1"
    page.page_setup.orientation = "landscape"
    page.page_setup.paperSize = Worksheet.PAPERSIZE_A4
    page.page_setup.fitToWidth = 1
    page.page_setup.fitToHeight = 0
    page.sheet_properties.pageSetUpPr = PageSetupProperties(fitToPage=True)
    # openpyxl makes both with every sheet; its stubs allow None.
    assert page.oddHeader is not None and page.oddFooter is not None
    page.oddHeader.center.text = header
    page.oddFooter.center.text = "第 &P 页 / 共 &N 页"


def render_xlsx(data: Mapping[str, Any]) -> IO[bytes]:
    report = data["report"]
    summary = data["summary"]
    header = f"{title_of(data)}  {signature_line(data)}"
    book = Workbook(write_only=True)
    book.properties.title = title_of(data)

    totals = book.create_sheet("汇总")
    _printable(totals, (34, 16), header)
    _header(totals, ("指标", "数值"))
    totals.append(["单位", f"{report.org_name}({KIND_LABELS.get(report.org_kind, '')})"])
    totals.append(["月份", report.month])
    totals.append(["状态", signature_line(data)])
    for key in FIGURE_KEYS:
        totals.append([FIGURE_LABELS[key], summary["figures"].get(key, 0)])
    for key, label in RATE_LABELS.items():
        totals.append([label, _rate_cell(key, summary["rates"].get(key))])
    for program, counts in summary["by_program"].items():
        name = PROGRAM_LABELS.get(program, program)
        totals.append([f"{name} 人数", counts["subjects"]])
        totals.append([f"{name} 履行率", _format_rate(counts["compliance_rate"])])
    for level, count in summary["by_level"].items():
        totals.append([f"{LEVEL_LABELS.get(level, level)} 人数", count])
    totals.append(["校验值(SHA-256)", summary["sha256"]])

    if summary["units"]:
        units = book.create_sheet("分单位")
        unit_figures = [k for k in FIGURE_KEYS if k != "subjects"]
        _printable(units, (22, 12, 10, 10, 10, *([9] * len(unit_figures))), header, freeze="C2")
        _header(
            units,
            (
                "单位",
                "备注",
                "在册人数",
                "履行率",
                "签到率",
                *(FIGURE_LABELS[k] for k in unit_figures),
            ),
        )
        for unit in summary["units"]:
            units.append(
                [
                    unit["name"],
                    _remark(unit),
                    unit["figures"].get("subjects", 0),
                    _format_rate(unit["rates"]["compliance_rate"]),
                    _format_rate(unit["rates"]["checkin_rate"]),
                    *(unit["figures"].get(k, 0) for k in unit_figures),
                ]
            )

    people = book.create_sheet("人员明细")
    person_figures = [k for k in FIGURE_KEYS if k not in ("subjects", "overdue")]
    _printable(people, (12, 18, 16, 8, 8, *([9] * len(person_figures))), header, freeze="C2")
    _header(
        people,
        ("姓名", "司法所", "项目", "管理等级", "趋势", *(FIGURE_LABELS[k] for k in person_figures)),
    )
    for row in data["rows"]:
        people.append(
            [
                row.get("name") or "(不可见)",
                row.get("station_name") or "",
                _programs(row),
                LEVEL_LABELS.get(row.get("level") or "", ""),
                TREND_LABELS.get(row["trend"], row["trend"]),
                *(row["values"].get(k, 0) for k in person_figures),
            ]
        )
    file = _spool()
    book.save(file)
    return file


# --- PDF ------------------------------------------------------------------------------------------


def render_pdf(data: Mapping[str, Any]) -> IO[bytes]:
    # The Chinese font is embedded (a subset): a reader without a Chinese font pack still shows
    # the text, which stays text (searchable, extractable).
    font = embedded_font()
    report = data["report"]
    summary = data["summary"]
    title = title_of(data)
    signed_line = signature_line(data)
    printed = data["printed_at"].astimezone(LOCAL_TZ).strftime("%Y-%m-%d %H:%M")
    body = ParagraphStyle("body", fontName=font, fontSize=9, leading=12)
    heading = ParagraphStyle("heading", fontName=font, fontSize=14, leading=20)
    section = ParagraphStyle("section", fontName=font, fontSize=11, leading=16)

    def page_frame(canvas: Canvas, document: SimpleDocTemplate) -> None:
        canvas.saveState()
        canvas.setFont(font, 8)
        width, height = document.pagesize
        canvas.drawString(15 * mm, height - 10 * mm, f"{report.org_name}  {report.month}")
        canvas.drawRightString(width - 15 * mm, height - 10 * mm, signed_line)
        canvas.drawString(15 * mm, 8 * mm, f"打印时间 {printed}")
        canvas.drawRightString(width - 15 * mm, 8 * mm, f"第 {document.page} 页")
        canvas.restoreState()

    grid = TableStyle(
        [
            ("FONTNAME", (0, 0), (-1, -1), font),
            ("FONTSIZE", (0, 0), (-1, -1), 8),
            ("GRID", (0, 0), (-1, -1), 0.25, colors.grey),
            ("BACKGROUND", (0, 0), (-1, 0), colors.HexColor("#DDE4EE")),
            ("VALIGN", (0, 0), (-1, -1), "MIDDLE"),
        ]
    )
    story: list[Any] = [
        Paragraph(title, heading),
        Paragraph(f"{KIND_LABELS.get(report.org_kind, '')}:{report.org_name}  {signed_line}", body),
        Spacer(1, 4 * mm),
    ]
    # Each section is its title and what follows it; numbered once the present ones are known.
    sections: list[tuple[str, list[Any]]] = []
    figures = [(FIGURE_LABELS[k], str(summary["figures"].get(k, 0))) for k in FIGURE_KEYS]
    figures += [(label, _rate_cell(k, summary["rates"].get(k))) for k, label in RATE_LABELS.items()]
    # Two label-value pairs per line keep the summary on one page.
    half = (len(figures) + 1) // 2
    pairs = [
        [*figures[i], *(figures[i + half] if i + half < len(figures) else ("", ""))]
        for i in range(half)
    ]
    table = Table([["指标", "数值", "指标", "数值"], *pairs], repeatRows=1)
    table.setStyle(grid)
    sections.append(("汇总", [table, Spacer(1, 4 * mm)]))

    if summary["by_program"]:
        rows = [["项目", "人数", "履行率", "签到率", "未完成", "漏签到"]]
        for program, counts in summary["by_program"].items():
            rows.append(
                [
                    PROGRAM_LABELS.get(program, program),
                    str(counts["subjects"]),
                    _format_rate(counts["compliance_rate"]),
                    _format_rate(counts["checkin_rate"]),
                    str(counts["obligations_missed"]),
                    str(counts["checkins_missed"]),
                ]
            )
        program_table = Table(rows, repeatRows=1)
        program_table.setStyle(grid)
        sections.append(("分项目", [program_table, Spacer(1, 4 * mm)]))

    if summary["units"]:
        rows = [
            [
                "单位",
                "备注",
                "在册人数",
                "履行率",
                "签到率",
                "漏签到",
                "脱管(次)",
                "预警",
                "逾期未办",
            ]
        ]
        for unit in summary["units"]:
            f = unit["figures"]
            rows.append(
                [
                    unit["name"],
                    _remark(unit),
                    str(f.get("subjects", 0)),
                    _format_rate(unit["rates"]["compliance_rate"]),
                    _format_rate(unit["rates"]["checkin_rate"]),
                    str(f.get("checkins_missed", 0)),
                    str(f.get("detachments", 0)),
                    str(f.get("alerts", 0)),
                    str(f.get("overdue", 0)),
                ]
            )
        unit_table = Table(rows, repeatRows=1)
        unit_table.setStyle(grid)
        sections.append(("分单位", [unit_table, Spacer(1, 4 * mm)]))

    rows = [["姓名", "司法所", "项目", "趋势", *(FIGURE_LABELS[k] for k in PDF_PERSON_FIGURES)]]
    for row in data["rows"]:
        rows.append(
            [
                row.get("name") or "(不可见)",
                row.get("station_name") or "",
                _programs(row),
                TREND_LABELS.get(row["trend"], row["trend"]),
                *(str(row["values"].get(k, 0)) for k in PDF_PERSON_FIGURES),
            ]
        )
    people = Table(rows, repeatRows=1)
    people.setStyle(grid)
    sections.append(("人员明细", [people]))
    headings = numbered([title for title, _ in sections])
    for heading_text, (_, flowables) in zip(headings, sections, strict=True):
        story += [Paragraph(heading_text, section), *flowables]

    file = _spool()
    document = SimpleDocTemplate(
        file,
        pagesize=landscape(A4),
        title=title,
        author=data.get("signer") or "",
        initialFontName=font,
        topMargin=16 * mm,
        bottomMargin=14 * mm,
        leftMargin=15 * mm,
        rightMargin=15 * mm,
    )
    document.build(story, onFirstPage=page_frame, onLaterPages=page_frame)
    return file

"""PDF rendering with an embedded Chinese font: the official documents (文书) on A4, and the font
every other PDF of the system (the monthly report) is set in."""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from reportlab.lib import colors
from reportlab.lib.enums import TA_CENTER, TA_JUSTIFY, TA_RIGHT
from reportlab.lib.pagesizes import A4
from reportlab.lib.styles import ParagraphStyle
from reportlab.lib.units import mm
from reportlab.pdfbase import pdfmetrics
from reportlab.pdfbase.ttfonts import TTFError, TTFont
from reportlab.pdfgen.canvas import Canvas
from reportlab.platypus import (
    KeepTogether,
    Paragraph,
    SimpleDocTemplate,
    Spacer,
    Table,
    TableStyle,
)
from reportlab.platypus.flowables import Flowable

from models.clock import date_zh
from models.errors import Unavailable

# AR PL UMing (Debian fonts-arphic-uming, `make fonts`): a Song (Ming) face, as official documents
# are set, with TrueType outlines that reportlab subsets and embeds (the Noto CJK fonts are CFF,
# which it cannot embed). The Arphic Public License allows embedding. The collection's first face
# is the simplified-Chinese one (UMing CN).
FONT_NAME = "AnbangSong"
FONT_PATH = Path("/usr/share/fonts/truetype/arphic/uming.ttc")
FONT_PACKAGE = "fonts-arphic-uming"
MISSING_ZH = "服务器未安装文书所用的中文字体，暂时无法生成PDF，请联系系统管理员（make fonts）。"


class FontMissing(Unavailable):
    """The Chinese font PDFs embed is not installed: no PDF can be made until it is."""

    code = "font_missing"


def embedded_font(path: Path = FONT_PATH, name: str = FONT_NAME) -> str:
    """Register the Chinese font with reportlab (once per process; its registry is reportlab's
    own) and answer its name. A missing font is a clear 503, never a PDF of empty boxes."""
    if name in pdfmetrics.getRegisteredFontNames():
        return name
    try:
        pdfmetrics.registerFont(TTFont(name, str(path), subfontIndex=0))
    except (OSError, TTFError) as exc:
        raise FontMissing(
            f"The PDF font {path} is missing; install the Debian package {FONT_PACKAGE} "
            "(`make fonts`).",
            message_zh=MISSING_ZH,
        ) from exc
    return name


class SealBlock(Flowable):
    """The signature and seal block at the foot of a document: the issuing body, the place
    for its seal (a circle where the seal is pressed), and the date."""

    def __init__(self, font: str, issuer: str, date_text: str, width: float):
        super().__init__()
        self.font = font
        self.issuer = issuer
        self.date_text = date_text
        self.width = width
        self.height = 36 * mm

    def wrap(self, available_width: float, available_height: float) -> tuple[float, float]:
        return self.width, self.height

    def draw(self) -> None:
        canvas = self.canv
        right = self.width - 8 * mm
        centre_x = right - 28 * mm
        canvas.saveState()
        canvas.setStrokeColor(colors.HexColor("#B22222"))
        canvas.setDash(2, 2)
        canvas.circle(centre_x, 18 * mm, 16 * mm, stroke=1, fill=0)
        canvas.setFillColor(colors.HexColor("#B22222"))
        canvas.setFont(self.font, 9)
        canvas.drawCentredString(centre_x, 6 * mm, "（印章）")
        canvas.setFillColor(colors.black)
        canvas.setFont(self.font, 14)
        canvas.drawRightString(right, 22 * mm, self.issuer)
        canvas.drawRightString(right, 14 * mm, self.date_text)
        canvas.restoreState()


def _escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def render_document(content: Mapping[str, Any], status: str = "issued") -> bytes:
    """The A4 PDF of a document's stored content: title, number line, the person's particulars,
    the body, each level's decision where there are levels, the signature and seal block, and
    the receipt line of a document served on the person. The same content always gives the
    same bytes (`invariant`: no clock or random id in the file)."""
    font = embedded_font()
    title_style = ParagraphStyle(
        "title", fontName=font, fontSize=22, leading=30, alignment=TA_CENTER
    )
    number_style = ParagraphStyle(
        "number", fontName=font, fontSize=12, leading=18, alignment=TA_RIGHT
    )
    body_style = ParagraphStyle(
        "body",
        fontName=font,
        fontSize=14,
        leading=24,
        firstLineIndent=28,
        alignment=TA_JUSTIFY,
        wordWrap="CJK",
    )
    cell_style = ParagraphStyle("cell", fontName=font, fontSize=11, leading=15, wordWrap="CJK")
    small_style = ParagraphStyle("small", fontName=font, fontSize=10, leading=14)
    width = A4[0] - 50 * mm
    story: list[Flowable] = []
    if status == "voided":
        story.append(Paragraph("（本文书已作废）", number_style))
    story += [
        Paragraph(_escape(content["title"]), title_style),
        Spacer(1, 3 * mm),
        Paragraph(_escape(content["number"]), number_style),
        Spacer(1, 4 * mm),
    ]
    fields: Sequence[Sequence[str]] = content.get("fields") or []
    if fields:
        rows = [
            [Paragraph(_escape(label), cell_style), Paragraph(_escape(value or "—"), cell_style)]
            for label, value in fields
        ]
        table = Table(rows, colWidths=[32 * mm, width - 32 * mm])
        table.setStyle(
            TableStyle(
                [
                    ("GRID", (0, 0), (-1, -1), 0.5, colors.black),
                    ("VALIGN", (0, 0), (-1, -1), "MIDDLE"),
                    ("BACKGROUND", (0, 0), (0, -1), colors.HexColor("#F2F2F2")),
                ]
            )
        )
        story += [table, Spacer(1, 5 * mm)]
    for paragraph in content.get("paragraphs") or []:
        story.append(Paragraph(_escape(paragraph), body_style))
    steps: Sequence[Sequence[str]] = content.get("steps") or []
    if steps:
        rows = [[Paragraph(h, cell_style) for h in ("审批层级", "意见", "说明", "日期")]]
        rows += [[Paragraph(_escape(cell or "—"), cell_style) for cell in step] for step in steps]
        table = Table(rows, colWidths=[34 * mm, 24 * mm, width - 92 * mm, 34 * mm])
        table.setStyle(
            TableStyle(
                [
                    ("GRID", (0, 0), (-1, -1), 0.5, colors.black),
                    ("BACKGROUND", (0, 0), (-1, 0), colors.HexColor("#F2F2F2")),
                    ("VALIGN", (0, 0), (-1, -1), "MIDDLE"),
                ]
            )
        )
        story += [Spacer(1, 4 * mm), table]
    story.append(Spacer(1, 8 * mm))
    story.append(
        KeepTogether([SealBlock(font, content["issuer"], date_zh(content["issued_on"]), width)])
    )
    if content.get("served"):
        story += [
            Spacer(1, 6 * mm),
            Paragraph(
                "本文书已向当事人宣告、送达。当事人签收：______________  年____月____日",
                small_style,
            ),
        ]
    if content.get("copies"):
        story += [Spacer(1, 3 * mm), Paragraph(_escape(f"抄送：{content['copies']}"), small_style)]

    def footer(canvas: Canvas, document: SimpleDocTemplate) -> None:
        canvas.saveState()
        canvas.setFont(font, 8)
        canvas.drawCentredString(A4[0] / 2, 12 * mm, f"{content['number']}  第 {document.page} 页")
        canvas.restoreState()

    buffer = io.BytesIO()
    document = SimpleDocTemplate(
        buffer,
        pagesize=A4,
        title=f"{content['title']} {content['number']}",
        author=content["issuer"],
        subject=content["title"],
        creator="安帮",
        invariant=1,
        initialFontName=font,
        topMargin=30 * mm,
        bottomMargin=25 * mm,
        leftMargin=25 * mm,
        rightMargin=25 * mm,
    )
    document.build(story, onFirstPage=footer, onLaterPages=footer)
    return buffer.getvalue()

"""Documents at the console, in a real browser: the file's documents page offers a document for
each decided record, makes it, lists it with its number, and opens its PDF; the PDF renders to
a page image through poppler's `pdftoppm` (kept by `make screenshots`)."""

from __future__ import annotations

import asyncio
import subprocess

from models.audit import AuditContext
from models.sanctions import SanctionKind
from server.app import SYSTEM
from tests.browser_support import login


def run(*args: str) -> str:
    return subprocess.run(args, check=True, capture_output=True, text=True, timeout=60).stdout


async def test_screenshots_of_a_document_made_at_the_console_and_its_pdf(
    page, supervised, services, screenshot_dir
):
    sanctions = services.sanctions
    view = await sanctions.propose(
        SYSTEM, supervised.subject_id, SanctionKind.WARN, "无正当理由未按时参加教育学习"
    )
    for level, account in (("station", supervised.officer), ("county", supervised.county)):
        assert level in view.levels
        view = await sanctions.decide(
            AuditContext(account.identity, request_id="console-documents"), view.id, True, "查实"
        )
    assert view.status == "approved"

    await login(page, supervised.county, f"/console/subjects/{supervised.subject_id}")
    await page.click("#documents-link")
    await page.wait_for_url(f"**/console/subjects/{supervised.subject_id}/documents")
    assert "暂无文书" in await page.inner_text("#documents")
    # Only decisions taken are offered: the term has not ended, so no 解除 documents yet.
    offered = await page.inner_text("#candidates")
    assert "警告" in offered and "解除" not in offered and "宣告书" not in offered
    offer = page.locator("#candidates tr", has_text="警告")
    await offer.locator("button[type=submit]").click()
    await page.wait_for_url(f"**/console/subjects/{supervised.subject_id}/documents")
    row = page.locator("#documents tbody tr").first
    shown = await row.inner_text()
    assert "警告决定书" in shown and "矫警字第1号" in shown and "有效" in shown
    assert "issued" not in shown
    assert "已制作" in await page.inner_text("#candidates")
    await page.screenshot(path=screenshot_dir / "documents.png", full_page=True)

    link = row.locator("a", has_text="打开 PDF")
    pdf = await page.request.get(await link.get_attribute("href") or "")
    assert pdf.status == 200 and pdf.headers["content-type"] == "application/pdf"
    body = await pdf.body()
    assert body.startswith(b"%PDF")
    pdf_path = screenshot_dir / "document.pdf"
    pdf_path.write_bytes(body)
    # The page as a reader without any Chinese font of its own draws it: poppler renders only
    # from what the file embeds for the Chinese text.
    await asyncio.to_thread(
        run,
        "pdftoppm",
        "-png",
        "-r",
        "80",
        "-singlefile",
        str(pdf_path),
        str(screenshot_dir / "document"),
    )
    image = screenshot_dir / "document.png"
    assert image.stat().st_size > 20_000
    fonts = await asyncio.to_thread(run, "pdffonts", str(pdf_path))
    chinese = [line for line in fonts.splitlines() if "UMing" in line]
    # Embedded, subset, with its Unicode map (the text is text).
    assert chinese and all(line.split()[-5:-2] == ["yes", "yes", "yes"] for line in chinese)

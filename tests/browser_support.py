"""Browser fixtures for the console's tests: Debian's headless Chromium driven by Playwright, a
page at 1366x768 in zh-CN, and a login helper (a pytest plugin named in tests/conftest.py)."""

from __future__ import annotations

import os
import shutil
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio
from playwright.async_api import Browser, Page, async_playwright

# Chromium as this machine's sandbox runs it: no GPU, no sandbox (root), no network chatter.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def chromium_path() -> str:
    path = os.environ.get("ANBANG_CHROMIUM") or shutil.which("chromium")
    if not path:
        pytest.fail(
            "Debian's chromium is missing: `make test` installs it (apt-get install chromium)"
        )
    return path


@pytest_asyncio.fixture(scope="session")
async def browser() -> AsyncIterator[Browser]:
    async with async_playwright() as playwright:
        launched = await playwright.chromium.launch(
            executable_path=chromium_path(), headless=True, args=CHROMIUM_ARGS
        )
        yield launched
        await launched.close()


@pytest_asyncio.fixture
async def page(browser: Browser, api) -> AsyncIterator[Page]:
    context = await browser.new_context(
        base_url=api.base_url,
        viewport={"width": 1366, "height": 768},
        locale="zh-CN",
        accept_downloads=True,
    )
    opened = await context.new_page()
    yield opened
    await context.close()


@pytest.fixture
def screenshot_dir(tmp_path: Path) -> Path:
    """Where a console test saves its screenshots: var/screenshots/ under `make screenshots`
    (ANBANG_SCREENSHOTS), else the test's own temporary folder."""
    target = Path(os.environ.get("ANBANG_SCREENSHOTS") or tmp_path)
    target.mkdir(parents=True, exist_ok=True)
    return target


async def login(page: Page, account, next_path: str = "/console/") -> None:
    await page.goto(f"/console/login?next={next_path}")
    await page.fill("#username", account.username)
    await page.fill("#password", account.password)
    await page.click("button[type=submit]")
    await page.wait_for_load_state()

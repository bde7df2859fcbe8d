"""A real headless browser (Debian's Chromium driven by Playwright) for the pages people see."""

from __future__ import annotations

import contextlib
import shutil
from collections.abc import AsyncIterator
from pathlib import Path

from playwright.async_api import Page, async_playwright

ARTIFACTS = Path(__file__).resolve().parents[1] / "test-artifacts"


def chromium_path() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found is None:
        raise RuntimeError("Chromium is not installed: run ./scripts/setup (it installs chromium)")
    return found


@contextlib.asynccontextmanager
async def browser_page() -> AsyncIterator[Page]:
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(
            executable_path=chromium_path(),
            args=[
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
            ],
        )
        try:
            # The sandbox Microsoft cloud uses a private CA the browser does not know.
            context = await browser.new_context(ignore_https_errors=True)
            yield await context.new_page()
        finally:
            await browser.close()


async def assert_renders(page: Page, name: str) -> Path:
    """The page shows its heading and text on screen; a screenshot is kept for people to see."""
    heading = page.get_by_role("heading", level=1)
    await heading.wait_for(state="visible")
    box = await page.locator("main").bounding_box()
    assert box is not None
    assert box["width"] > 200
    assert box["height"] > 100
    heading_box = await heading.bounding_box()
    assert heading_box is not None
    assert heading_box["height"] > 10
    ARTIFACTS.mkdir(exist_ok=True)
    shot = ARTIFACTS / f"{name}.png"
    await page.screenshot(path=str(shot), full_page=True)
    assert shot.stat().st_size > 5_000  # a blank page compresses to far less
    return shot

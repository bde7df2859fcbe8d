"""The sandbox consent page in a real headless browser: type the account, click Accept/Cancel."""

from __future__ import annotations

import urllib.parse

import pytest
from playwright.async_api import Route, async_playwright

from tests.browser import chromium_path

from .conftest import ADMIN, CONTOSO, MAILFLOW_ID, REDIRECT, Cloud

CHROMIUM = chromium_path()


@pytest.mark.parametrize(("button", "expected"), [("Accept", "admin_consent"), ("Cancel", "error")])
async def test_click_through_consent(cloud: Cloud, button: str, expected: str) -> None:
    query = urllib.parse.urlencode(
        {
            "client_id": MAILFLOW_ID,
            "scope": "https://outlook.office365.com/.default",
            "redirect_uri": REDIRECT,
            "state": "s-browser",
        }
    )
    landed: list[str] = []

    async def bot(route: Route) -> None:
        landed.append(route.request.url)
        await route.fulfill(status=200, content_type="text/html", body="<p>recorded</p>")

    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=CHROMIUM)
        try:
            context = await browser.new_context(ignore_https_errors=True)
            page = await context.new_page()
            await page.route(f"{REDIRECT}*", bot)
            await page.goto(f"{cloud.login_url}/contoso.com/v2.0/adminconsent?{query}")
            await page.get_by_label("Sign in as").fill(ADMIN)
            await page.get_by_role("button", name=button).click()
            await page.wait_for_url(f"{REDIRECT}*")
        finally:
            await browser.close()
    answer = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(landed[0]).query))
    assert expected in answer
    assert answer["state"] == "s-browser"
    if expected == "admin_consent":
        assert answer["tenant"] == CONTOSO

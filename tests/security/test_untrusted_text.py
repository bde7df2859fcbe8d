"""Text from Microsoft's redirect reaches Slack as data, never as markup: no broadcast mention,
no live link, no forged button text — posted by the bot into the thread."""

from __future__ import annotations

import json
from urllib.parse import parse_qs, urlencode, urlsplit

from tests.integration.conftest import Harness
from tests.integration.steps import latest_link

INJECTED = "<!channel> <!here> <https://evil.example/consent|Open the new consent page>"


def markup_in(messages: list[object]) -> list[str]:
    text = json.dumps([[m.text, m.blocks] for m in messages])  # type: ignore[attr-defined]
    return [piece for piece in ("<!channel>", "<!here>", "<https://evil.example") if piece in text]


async def test_a_refusal_with_markup_in_it_is_shown_as_text(harness: Harness) -> None:
    root_ts = await harness.start_session("contoso.com")
    _, url = await latest_link(harness, root_ts)
    state = parse_qs(urlsplit(url).query)["state"][0]
    page = await harness.http.get(
        f"{harness.base_url}/microsoft/callback?"
        + urlencode({"state": state, "error": "invalid_request", "error_description": INJECTED})
    )
    assert page.status_code == 200
    note = await harness.slack.wait_for(
        lambda s: [m for m in harness.thread(root_ts) if "Microsoft refused" in m.text]
    )
    assert "invalid_request" in note[0].text  # the setup reached the bot: the code is shown
    assert "&lt;!channel&gt;" in note[0].text  # …and the free text, as text
    assert markup_in(harness.thread(root_ts)) == []
    assert "<!channel>" not in page.text  # the browser page escapes it too (HTML)


async def test_an_error_code_that_is_not_a_code_is_not_echoed(harness: Harness) -> None:
    root_ts = await harness.start_session("contoso.com")
    _, url = await latest_link(harness, root_ts)
    state = parse_qs(urlsplit(url).query)["state"][0]
    await harness.http.get(
        f"{harness.base_url}/microsoft/callback?" + urlencode({"state": state, "error": INJECTED})
    )
    note = await harness.slack.wait_for(
        lambda s: [m for m in harness.thread(root_ts) if "Microsoft refused" in m.text]
    )
    assert "unrecognised_error" in note[0].text
    assert markup_in(harness.thread(root_ts)) == []


async def test_a_wrong_tenant_with_markup_in_it_is_shown_as_text(harness: Harness) -> None:
    root_ts = await harness.start_session("contoso.com")
    _, url = await latest_link(harness, root_ts)
    state = parse_qs(urlsplit(url).query)["state"][0]
    await harness.http.get(
        f"{harness.base_url}/microsoft/callback?"
        + urlencode({"state": state, "admin_consent": "True", "tenant": INJECTED})
    )
    note = await harness.slack.wait_for(
        lambda s: [m for m in harness.thread(root_ts) if "Nothing was recorded" in m.text]
    )
    assert "&lt;!here&gt;" in note[0].text
    assert markup_in(harness.thread(root_ts)) == []

"""Steps 1 and 3: the consent link, Microsoft (sandbox), the redirect back, the page, the thread."""

from __future__ import annotations

import hashlib
import json
from urllib.parse import parse_qs, urlsplit

from bot.actors import TENANT_GLOBAL_ADMIN
from bot.steps.consent.views import ACTION_CONSENT_OPEN, ACTION_CONSENT_RENEW
from bot.workflow import EventKind, Phase
from tests.browser import assert_renders, browser_page
from tests.conftest import DIRSYNC_CLIENT_ID, MAILFLOW_CLIENT_ID
from tests.integration.conftest import (
    ADMIN,
    CHANNEL,
    CONTOSO_ID,
    EXCHANGE_ADMIN_UPN,
    FABRIKAM_ADMIN_UPN,
    FABRIKAM_ID,
    GLOBAL_ADMIN_UPN,
    GROUP_ADMIN,
    OUTSIDER,
    Harness,
    ephemeral_for,
)
from tests.integration.steps import consent_buttons, follow, latest_link, role_through_workflow


async def opener_noted(harness: Harness, url: str, user_id: str) -> None:
    """Wait until the link's state records who clicked it (a fact in Redis: ``state.oauth``
    keeps a state under its SHA-256)."""
    [state] = parse_qs(urlsplit(url).query)["state"]
    key = f"pi:oauth:{{{hashlib.sha256(state.encode()).hexdigest()}}}"

    async def noted() -> bool:
        raw = await harness.redis.get(key)
        return raw is not None and json.loads(raw).get("opened_by") == user_id

    await harness.stored(key, noted)


async def test_mailflow_consent_in_a_real_browser(harness: Harness) -> None:
    root_ts = await harness.start_session("contoso.com")
    prompt_ts, url = await latest_link(harness, root_ts)
    query = parse_qs(urlsplit(url).query)
    assert urlsplit(url).path == f"/login/{CONTOSO_ID}/v2.0/adminconsent"
    assert query["client_id"] == [MAILFLOW_CLIENT_ID]
    assert query["scope"] == [f"{harness.microsoft_url}/exchange/.default"]
    assert query["redirect_uri"] == [f"http://127.0.0.1:{harness.port}/microsoft/callback"]

    # The admin clicks the button in Slack (acked, and who clicked is remembered)...
    response = await harness.driver.click(
        user_id=ADMIN, channel_id=CHANNEL, message_ts=prompt_ts, action_id=ACTION_CONSENT_OPEN
    )
    assert response.status_code == 200
    # (The click is acked before the bot notes who clicked: wait for that note.)
    await opener_noted(harness, url, ADMIN)
    # ...and the browser opens the link, signs in, accepts, and lands on our page.
    async with browser_page() as page:
        await page.goto(url)
        await page.get_by_label("Sign in as").fill(GLOBAL_ADMIN_UPN)
        await page.get_by_role("button", name="Accept").click()
        await page.wait_for_url(f"{harness.base_url}/microsoft/callback*")
        await assert_renders(page, "consent-recorded")
        assert await page.title() == "Consent recorded for contoso.com · provision-inline"
        text = await page.locator("main").inner_text()
        assert "mail-flow app" in text
        thread_link = await page.get_by_role("link", name="Back to the Slack thread").get_attribute(
            "href"
        )
    assert thread_link == harness.slack.message(CHANNEL, root_ts).permalink

    # The step's own message now says it is done, and by whom as far as anyone knows: Microsoft
    # does not say who signed in; the admin only opened the link.
    step = await harness.slack.wait_for(
        lambda s: "given by a Global Administrator" in s.message(CHANNEL, prompt_ts).text
    )
    assert step
    done = harness.slack.message(CHANNEL, prompt_ts)
    assert f"<@{ADMIN}> opened the consent link" in done.text
    assert ACTION_CONSENT_OPEN not in json.dumps(done.blocks)
    root = harness.slack.message(CHANNEL, root_ts)
    assert "given by a Global Administrator of the tenant" in json.dumps(root.blocks)
    assert f"done by <@{ADMIN}>" not in json.dumps(root.blocks)
    [session] = await harness.runtime.store.active()
    assert session.phase is Phase.MAILFLOW_CONSENTED
    assert session.last(EventKind.MAILFLOW_CONSENT).actor == TENANT_GLOBAL_ADMIN
    audit = await harness.runtime.store.audit(session.id)
    [recorded] = [e for e in audit if e.action == "mailflow_consent"]
    assert recorded.actor == TENANT_GLOBAL_ADMIN
    assert recorded.detail["clicked_by"] == ADMIN
    tenant = harness.microsoft.tenant(CONTOSO_ID)
    assert tenant.service_principal(MAILFLOW_CLIENT_ID) is not None


async def test_cancel_at_microsoft_is_explained_with_a_new_link(harness: Harness) -> None:
    root_ts = await harness.start_session("contoso.com")
    _, url = await latest_link(harness, root_ts)
    async with browser_page() as page:
        await page.goto(url)
        await page.get_by_label("Sign in as").fill(GLOBAL_ADMIN_UPN)
        await page.get_by_role("button", name="Cancel").click()
        await page.wait_for_url(f"{harness.base_url}/microsoft/callback*")
        await assert_renders(page, "consent-cancelled")
        assert "was cancelled" in await page.locator("main").inner_text()
    # What happened is a message of its own; the step's message got a new link.
    await harness.slack.wait_for(
        lambda s: any("cancelled the consent" in m.text for m in harness.thread(root_ts))
    )
    await harness.slack.wait_for(lambda s: consent_buttons(harness, root_ts)[0][1]["url"] != url)
    assert len(consent_buttons(harness, root_ts)) == 1
    [session] = await harness.runtime.store.active()
    assert session.phase is Phase.STARTED
    audit = await harness.runtime.store.audit(session.id)
    assert [e.result for e in audit if e.action == "mailflow_consent_redirect"] == ["cancelled"]


async def test_a_refusal_by_microsoft_is_explained(harness: Harness) -> None:
    """An Exchange administrator is not allowed to grant tenant-wide consent."""
    root_ts = await harness.start_session("contoso.com")
    _, url = await latest_link(harness, root_ts)
    page = await follow(harness, url, EXCHANGE_ADMIN_UPN, "accept")
    assert page.status_code == 200
    assert "Consent not given" in page.text
    assert "AADSTS90094" in page.text
    note = await harness.slack.wait_for(
        lambda s: [m for m in harness.thread(root_ts) if "Microsoft refused" in m.text]
    )
    assert "Global Administrator" in note[0].text
    [session] = await harness.runtime.store.active()
    assert session.phase is Phase.STARTED


async def test_replayed_and_unknown_and_missing_states_change_nothing(harness: Harness) -> None:
    root_ts = await harness.start_session("contoso.com")
    _, url = await latest_link(harness, root_ts)
    first = await follow(harness, url, GLOBAL_ADMIN_UPN, "accept")
    assert "Consent recorded" in first.text
    callback = str(first.url)
    again = await harness.http.get(callback)
    assert again.status_code == 400
    assert "already used" in again.text
    assert harness.slack.message(CHANNEL, root_ts).permalink in again.text
    forged = await harness.http.get(
        f"{harness.base_url}/microsoft/callback",
        params={"admin_consent": "True", "tenant": CONTOSO_ID, "state": "made-up"},
    )
    assert forged.status_code == 400
    assert "not valid" in forged.text
    missing = await harness.http.get(f"{harness.base_url}/microsoft/callback")
    assert missing.status_code == 400
    assert "needs a link from Slack" in missing.text
    consents = [m for m in harness.thread(root_ts) if "given by a Global Admin" in m.text]
    assert len(consents) == 1
    async with browser_page() as browser:
        await browser.goto(callback)
        await assert_renders(browser, "link-replayed")


async def test_an_expired_link_records_nothing_and_can_be_renewed(harness: Harness) -> None:
    root_ts = await harness.start_session("contoso.com")
    prompt_ts, url = await latest_link(harness, root_ts)
    harness.clock.advance(16 * 60)
    page = await follow(harness, url, GLOBAL_ADMIN_UPN, "accept")
    assert page.status_code == 400
    assert "expired" in page.text
    [session] = await harness.runtime.store.active()
    assert session.phase is Phase.STARTED

    await harness.driver.click(
        user_id=OUTSIDER, channel_id=CHANNEL, message_ts=prompt_ts, action_id=ACTION_CONSENT_RENEW
    )
    await ephemeral_for(harness, OUTSIDER, "You can't make a new consent link")
    await harness.driver.click(
        user_id=GROUP_ADMIN,
        channel_id=CHANNEL,
        message_ts=prompt_ts,
        action_id=ACTION_CONSENT_RENEW,
    )
    await harness.slack.wait_for(lambda s: s.message(CHANNEL, prompt_ts).edited == 1)
    _, fresh = await latest_link(harness, root_ts)
    assert fresh != url
    done = await follow(harness, fresh, GLOBAL_ADMIN_UPN, "accept")
    assert "Consent recorded" in done.text


async def test_consent_in_another_tenant_is_refused_and_explained(harness: Harness) -> None:
    root_ts = await harness.start_session("contoso.com")
    _, url = await latest_link(harness, root_ts)
    page = await follow(harness, url, FABRIKAM_ADMIN_UPN, "accept")
    assert page.status_code == 400
    assert "different tenant" in page.text
    assert FABRIKAM_ID in page.text
    note = await harness.slack.wait_for(
        lambda s: [m for m in harness.thread(root_ts) if FABRIKAM_ID in m.text]
    )
    assert "Nothing was recorded" in note[0].text
    [session] = await harness.runtime.store.active()
    assert session.phase is Phase.STARTED


async def test_consent_given_twice_is_recorded_once(harness: Harness) -> None:
    root_ts = await harness.start_session("contoso.com")
    prompt_ts, first_url = await latest_link(harness, root_ts)
    await harness.driver.click(
        user_id=ADMIN, channel_id=CHANNEL, message_ts=prompt_ts, action_id=ACTION_CONSENT_RENEW
    )
    await harness.slack.wait_for(lambda s: s.message(CHANNEL, prompt_ts).edited == 1)
    _, second_url = await latest_link(harness, root_ts)
    assert (
        "Consent recorded" in (await follow(harness, second_url, GLOBAL_ADMIN_UPN, "accept")).text
    )
    again = await follow(harness, first_url, GLOBAL_ADMIN_UPN, "accept")
    assert "already recorded" in again.text
    notes = [m for m in harness.thread(root_ts) if "given by a Global Admin" in m.text]
    assert len(notes) == 1
    # Once the step is done, its message offers no new link any more.
    await harness.slack.wait_for(
        lambda s: ACTION_CONSENT_RENEW not in json.dumps(s.message(CHANNEL, prompt_ts).blocks)
    )


async def test_directory_sync_consent_is_step_three(harness: Harness) -> None:
    root_ts = await harness.start_session("contoso.com")
    _, url = await latest_link(harness, root_ts)
    await follow(harness, url, GLOBAL_ADMIN_UPN, "accept")
    [session] = await harness.runtime.store.active()
    await role_through_workflow(harness, session.id)
    await harness.slack.wait_for(lambda s: consent_buttons(harness, root_ts, "dirsync"))
    _, url = await latest_link(harness, root_ts)
    assert parse_qs(urlsplit(url).query)["client_id"] == [DIRSYNC_CLIENT_ID]
    assert parse_qs(urlsplit(url).query)["scope"] == [f"{harness.microsoft_url}/graph/.default"]
    page = await follow(harness, url, GLOBAL_ADMIN_UPN, "accept")
    assert "Consent recorded" in page.text
    assert "directory-sync app" in page.text
    [session] = await harness.runtime.store.active()
    assert session.phase is Phase.DIRECTORY_CONSENTED
    assert harness.microsoft.tenant(CONTOSO_ID).service_principal(DIRSYNC_CLIENT_ID) is not None
    # Recorded once Graph showed the app's principal with its permissions, as the tenant's
    # Global Administrator's.
    audit = await harness.runtime.store.audit(session.id)
    [recorded] = [e for e in audit if e.action == "directory_consent"]
    assert recorded.actor == TENANT_GLOBAL_ADMIN
    assert recorded.detail["confirmed_by"] == "graph_app_role_assignments"
    graph_reads = [r.path for r in harness.microsoft.requests_to("graph")]
    assert any(f"servicePrincipals(appId='{DIRSYNC_CLIENT_ID}')" in p for p in graph_reads)

"""The root message's and the consent steps' buttons, called directly."""

from __future__ import annotations

from slack_bolt.context.ack.async_ack import AsyncAck

from bot.session.views import ACTION_CANCEL
from bot.steps.consent.views import ACTION_CONSENT_OPEN, ACTION_CONSENT_RENEW
from bot.steps.verify.views import ACTION_VERIFY
from bot.workflow import Phase
from handlers.actions import (
    cancel_clicked,
    consent_link_opened,
    consent_link_renewed,
    verify_clicked,
)
from tests.handlers.conftest import acked, click_body, context_for, ephemerals_to, respond_to
from tests.integration.conftest import ADMIN, CHANNEL, GROUP_ADMIN, OUTSIDER, Harness
from tests.integration.steps import latest_link, ready_to_verify
from tests.integration.test_verification import verify_button_ts


async def test_opening_a_consent_link_notes_who_clicked(harness: Harness) -> None:
    root_ts = await harness.start_session("contoso.com")
    prompt_ts, url = await latest_link(harness, root_ts)
    body = click_body(harness, prompt_ts, ACTION_CONSENT_OPEN, OUTSIDER)
    ack = AsyncAck()
    await consent_link_opened(ack=ack, body=body, context=context_for(harness))
    assert acked(ack) == {}
    state = body["actions"][0]["value"]
    redeemed = await harness.runtime.provisioner.oauth.redeem(state, now=harness.clock())
    assert redeemed.binding is not None
    assert redeemed.binding.opened_by == OUTSIDER
    assert state in url


async def test_a_new_consent_link_replaces_the_old_one_in_place(harness: Harness) -> None:
    root_ts = await harness.start_session("contoso.com")
    prompt_ts, first_url = await latest_link(harness, root_ts)
    body = click_body(harness, prompt_ts, ACTION_CONSENT_RENEW, ADMIN)
    ack = AsyncAck()
    await consent_link_renewed(
        ack=ack, body=body, respond=respond_to(body), context=context_for(harness)
    )
    assert acked(ack) == {}
    assert harness.slack.message(CHANNEL, prompt_ts).edited == 1
    _, second_url = await latest_link(harness, root_ts)
    assert second_url != first_url


async def test_verify_starts_the_verification(harness: Harness) -> None:
    root_ts, session_id = await ready_to_verify(harness)
    before = await harness.version_of(session_id)
    body = click_body(harness, verify_button_ts(harness, root_ts), ACTION_VERIFY, ADMIN)
    ack = AsyncAck()
    await verify_clicked(ack=ack, body=body, respond=respond_to(body), context=context_for(harness))
    assert acked(ack) == {}
    assert await harness.settled(session_id, after_version=before) is Phase.PLAN_SHOWN


async def test_cancel_then_a_second_cancel_is_told_who_was_first(harness: Harness) -> None:
    root_ts = await harness.start_session("contoso.com")
    [session] = await harness.runtime.store.active()
    # Both clicks were made on the message as it was (the first removes the button).
    bodies = [click_body(harness, root_ts, ACTION_CANCEL, user) for user in (ADMIN, GROUP_ADMIN)]
    for body in bodies:
        ack = AsyncAck()
        await cancel_clicked(
            ack=ack, body=body, respond=respond_to(body), context=context_for(harness)
        )
        assert acked(ack) == {}
    assert (await harness.store.require(session.id)).phase is Phase.CANCELLED
    late = await ephemerals_to(harness, GROUP_ADMIN, "Already done")
    assert f"<@{ADMIN}> cancelled provisioning" in late.text

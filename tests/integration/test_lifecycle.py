"""Status, cancel, expiry, App Home, and a session outliving the process that started it."""

from __future__ import annotations

import asyncio
import json

from bot.session.views import ACTION_CANCEL
from bot.workflow import Phase
from tests.integration.conftest import (
    ADMIN,
    APPROVER,
    CHANNEL,
    GROUP_ADMIN,
    OUTSIDER,
    Harness,
    ephemeral_for,
)


async def test_status_lists_the_channel_sessions_with_their_history(harness: Harness) -> None:
    root_ts = await harness.start_session("contoso.com")
    await harness.driver.slash_command(user_id=APPROVER, channel_id=CHANNEL, text="status")
    status = await ephemeral_for(harness, APPROVER, "contoso.com")
    shown = json.dumps(status.blocks)
    assert "Consent for mail flow" in shown
    assert harness.slack.message(CHANNEL, root_ts).permalink in shown
    assert "start: ok" in shown
    assert "root_posted: ok" in shown

    await harness.driver.slash_command(user_id=OUTSIDER, channel_id=CHANNEL, text="status")
    await ephemeral_for(harness, OUTSIDER, "You can't see provisioning status")


async def test_status_with_nothing_running(harness: Harness) -> None:
    await harness.driver.slash_command(user_id=ADMIN, channel_id=CHANNEL, text="status")
    await ephemeral_for(harness, ADMIN, "No provisioning session is active in this channel")


async def test_cancel_by_command_updates_root_and_thread_and_frees_the_tenant(
    harness: Harness,
) -> None:
    root_ts = await harness.start_session("contoso.com")
    await harness.driver.slash_command(
        user_id=GROUP_ADMIN, channel_id=CHANNEL, text="cancel contoso.com"
    )
    await ephemeral_for(harness, GROUP_ADMIN, "Cancelled the provisioning of *contoso.com*")
    root = harness.slack.message(CHANNEL, root_ts)
    assert root.edited == 1
    assert "Cancelled" in root.text
    assert ACTION_CANCEL not in json.dumps(root.blocks)  # no buttons left on a finished session
    assert any("cancelled provisioning" in m.text for m in harness.thread(root_ts)), (
        harness.slack.dump(30)
    )
    assert await harness.runtime.store.active() == []
    # The tenant is free again: a new session can start.
    await harness.start_session("contoso.com")


async def test_cancel_refusals_and_nothing_to_cancel(harness: Harness) -> None:
    await harness.driver.slash_command(user_id=ADMIN, channel_id=CHANNEL, text="cancel")
    await ephemeral_for(harness, ADMIN, "No active provisioning session in this channel")
    await harness.start_session("contoso.com")
    await harness.driver.slash_command(user_id=APPROVER, channel_id=CHANNEL, text="cancel")
    await ephemeral_for(harness, APPROVER, "You can't cancel provisioning")
    [session] = await harness.runtime.store.active()
    assert session.phase is Phase.STARTED


async def test_cancel_button_and_a_second_click(harness: Harness) -> None:
    root_ts = await harness.start_session("contoso.com")
    await harness.driver.click(
        user_id=OUTSIDER, channel_id=CHANNEL, message_ts=root_ts, action_id=ACTION_CANCEL
    )
    await ephemeral_for(harness, OUTSIDER, "You can't cancel provisioning")
    assert (await harness.runtime.store.active())[0].phase is Phase.STARTED

    [session] = await harness.runtime.store.active()
    # Two admins click at once: both payloads were built from the same message.
    clicks = [
        harness.driver.build_click(
            user_id=user, channel_id=CHANNEL, message_ts=root_ts, action_id=ACTION_CANCEL
        )
        for user in (ADMIN, GROUP_ADMIN)
    ]
    responses = await asyncio.gather(*(harness.driver.send(click) for click in clicks))
    assert [r.status_code for r in responses] == [200, 200]
    loser_note = await harness.slack.wait_for(
        lambda s: [e for e in s.ephemerals if "Already done" in e.text] or None
    )
    sessions_audit = await harness.runtime.store.audit(session.id)
    cancels = [entry for entry in sessions_audit if entry.action == "cancel"]
    assert len(cancels) == 1
    loser = GROUP_ADMIN if cancels[0].actor == ADMIN else ADMIN
    assert loser_note[-1].user == loser
    assert f"<@{cancels[0].actor}> cancelled provisioning" in loser_note[-1].text
    await harness.slack.wait_for(
        lambda s: any("cancelled provisioning" in m.text for m in harness.thread(root_ts))
    )
    assert sum("cancelled provisioning" in m.text for m in harness.thread(root_ts)) == 1


async def test_a_restarted_bot_continues_a_session_it_did_not_create(harness: Harness) -> None:
    root_ts = await harness.start_session("contoso.com")
    first_runtime = harness.runtime
    await harness.restart()
    assert harness.runtime is not first_runtime
    await harness.driver.slash_command(user_id=ADMIN, channel_id=CHANNEL, text="status")
    await ephemeral_for(harness, ADMIN, "contoso.com")
    await harness.driver.click(
        user_id=ADMIN, channel_id=CHANNEL, message_ts=root_ts, action_id=ACTION_CANCEL
    )
    await harness.slack.wait_for(lambda s: "Cancelled" in s.message(CHANNEL, root_ts).text)


async def test_a_session_survives_a_redis_restart(harness: Harness, redis_server) -> None:  # type: ignore[no-untyped-def]
    root_ts = await harness.start_session("contoso.com")
    redis_server.restart()
    await harness.driver.click(
        user_id=ADMIN, channel_id=CHANNEL, message_ts=root_ts, action_id=ACTION_CANCEL
    )
    await harness.slack.wait_for(lambda s: "Cancelled" in s.message(CHANNEL, root_ts).text)


async def test_idle_sessions_expire_with_a_message(harness: Harness) -> None:
    root_ts = await harness.start_session("contoso.com")
    assert await harness.runtime.provisioner.expire_idle() == []
    harness.clock.advance(harness.runtime.settings.session_idle_seconds + 1)
    [expired] = await harness.runtime.provisioner.expire_idle()
    assert expired.after.phase is Phase.EXPIRED
    assert "Expired" in harness.slack.message(CHANNEL, root_ts).text
    assert any("expired" in m.text for m in harness.thread(root_ts))
    assert await harness.runtime.store.holder_of(expired.after.tenant_id) is None
    assert await harness.runtime.provisioner.expire_idle() == []


async def test_app_home_lists_what_the_viewer_can_act_on(harness: Harness) -> None:
    root_ts = await harness.start_session("contoso.com")
    await harness.driver.open_home(user_id=ADMIN)
    home = await harness.slack.wait_for(lambda s: s.home_views.get(ADMIN))
    assert "contoso.com" in json.dumps(home)
    assert harness.slack.message(CHANNEL, root_ts).permalink in json.dumps(home)
    await harness.driver.open_home(user_id=OUTSIDER)
    nothing = await harness.slack.wait_for(lambda s: s.home_views.get(OUTSIDER))
    assert "contoso.com" not in json.dumps(nothing)
    assert "Nothing waits for you" in json.dumps(nothing)

"""The outbox (issue 11): a transition's Slack effects are stored with it and delivered at least
once, never twice, whoever delivers them: the process that made the change, a later one, or a
process started after the first one went away. Through the real HTTP stack, the sandbox Slack
and a private redis-server; waits are for facts.
"""

from __future__ import annotations

import json
from collections import Counter
from typing import Any

from bot.steps.mailflow.views import ACTION_ACKNOWLEDGE
from bot.workflow import Phase
from state.outbox import PENDING_INDEX
from tests.conftest import METRICS_AUTH
from tests.integration.conftest import ADMIN, CHANNEL, Harness, ephemeral_for, metric
from tests.integration.steps import consent_now, ready_to_verify
from tests.integration.test_apply import (
    NOTIFY,
    announcements,
    org,
    plan_shown,
    submit_and_finish,
    with_button,
)
from tests.integration.test_verification import click_verify


def texts(harness: Harness, root_ts: str) -> list[str]:
    return [m.text for m in harness.thread(root_ts)]


def posted_twice(harness: Harness, root_ts: str) -> list[str]:
    counts = Counter(json.dumps(m.blocks, sort_keys=True) for m in harness.thread(root_ts))
    return [blocks[:80] for blocks, count in counts.items() if count > 1]


async def waiting(harness: Harness, session_id: str) -> int:
    return int(await harness.store.outbox.length(session_id))


async def pending(harness: Harness) -> list[str]:
    return [m.decode() for m in await harness.redis.zrange(PENDING_INDEX, 0, -1)]


async def status_for(harness: Harness, user: str, containing: str) -> Any:
    await harness.driver.slash_command(user_id=user, channel_id=CHANNEL, text="status")
    return await ephemeral_for(harness, user, containing)


async def test_a_step_message_slack_refused_is_delivered_later_exactly_once(
    harness: Harness,
) -> None:
    root_ts = await harness.start_session("contoso.com")
    [session] = await harness.store.active()
    harness.slack.fail_next("chat.postMessage", "internal_error", status=500)

    await consent_now(harness, root_ts)  # stored; step 2's message is refused by Slack

    stored = await harness.store.require(session.id)
    assert stored.phase is Phase.MAILFLOW_CONSENTED
    assert len(harness.thread(root_ts)) == 1  # step 1 only: step 2's prompt did not arrive
    assert await waiting(harness, session.id) == 1
    assert session.id in await pending(harness)
    head = await harness.store.outbox.head(session.id)
    assert head is not None
    assert head.attempts == 1
    assert "internal_error" in head.last_error
    assert head.not_before > harness.clock()  # not before its backoff

    status = await status_for(harness, ADMIN, "contoso.com")
    shown = json.dumps(status.blocks)
    assert "waiting to be posted (Slack answered internal_error)" in shown
    assert "the bot keeps trying on its own" in shown

    await harness.runtime.provisioner.deliver_pending()  # too early: nothing happens
    assert len(harness.thread(root_ts)) == 1

    harness.clock.advance(head.not_before - harness.clock() + 0.1)
    await harness.runtime.provisioner.deliver_pending()

    thread = texts(harness, root_ts)
    assert len(thread) == 2, thread  # step 1 (edited to say who consented) and step 2's prompt
    assert posted_twice(harness, root_ts) == []
    assert await waiting(harness, session.id) == 0
    assert session.id not in await pending(harness)  # the index forgets a drained session


async def test_a_process_started_after_the_first_went_away_delivers_what_was_left(
    harness: Harness,
) -> None:
    """Stored, not delivered, process gone: the next process delivers the messages once."""
    root_ts = await harness.start_session("contoso.com")
    [session] = await harness.store.active()
    harness.slack.fail_next("chat.postMessage", "internal_error", status=500)
    await consent_now(harness, root_ts)
    assert len(harness.thread(root_ts)) == 1
    before = len(harness.slack.calls_to("chat.postMessage"))

    await harness.restart()  # this process is gone; a new one starts on the same Redis
    harness.clock.advance(60)
    await harness.runtime.provisioner.deliver_pending()

    assert len(harness.thread(root_ts)) == 2
    assert posted_twice(harness, root_ts) == []
    assert len(harness.slack.calls_to("chat.postMessage")) == before + 1
    assert await waiting(harness, session.id) == 0


async def test_the_next_change_delivers_the_older_messages_first(harness: Harness) -> None:
    """Whoever changes the session next delivers what is waiting, in order, before its own."""
    root_ts = await harness.start_session("contoso.com")
    [session] = await harness.store.active()
    harness.slack.fail_next("chat.postMessage", "internal_error", status=500)
    await consent_now(harness, root_ts)
    assert await waiting(harness, session.id) == 1
    harness.clock.advance(60)

    await harness.driver.slash_command(user_id=ADMIN, channel_id=CHANNEL, text="cancel")
    assert await harness.settled(session.id) is Phase.CANCELLED

    assert await waiting(harness, session.id) == 0
    assert posted_twice(harness, root_ts) == []
    posts = [
        str(call.params.get("text", ""))
        for call in harness.slack.calls_to("chat.postMessage")
        if call.ok and call.params.get("thread_ts") == root_ts
    ]
    step_two = next(i for i, text in enumerate(posts) if text.startswith("Step 2"))
    cancelled = next(i for i, text in enumerate(posts) if "cancelled" in text.lower())
    assert step_two < cancelled, posts  # in the order the transitions were made


async def test_an_announcement_a_channel_refuses_is_given_up_and_status_says_what_to_do(
    harness: Harness,
) -> None:
    harness.slack.add_channel(NOTIFY, "mail-security")
    harness.slack.set_bot_membership(NOTIFY, False)
    harness.environment["NOTIFY_CHANNEL"] = NOTIFY
    await harness.restart()
    root_ts, session_id = await plan_shown(harness)

    assert await submit_and_finish(harness, root_ts, session_id) is Phase.PROTECTED

    async def given_up() -> bool:
        return bool(await harness.store.outbox.undelivered([session_id]))

    await harness.stored(f"pi:{{{session_id}}}:undelivered", given_up)

    assert len(announcements(harness, CHANNEL)) == 1  # posted once where it could be
    assert announcements(harness, NOTIFY) == []
    assert await waiting(harness, session_id) == 0  # given up on, not retried for ever
    [failure] = (await harness.store.outbox.undelivered([session_id]))[session_id]
    assert failure.error == "Slack answered not_in_channel"
    assert failure.effects == ("refresh_root", "show_steps", "announce")

    metrics = (await harness.http.get(f"{harness.base_url}/metrics", headers=METRICS_AUTH)).text
    assert metric(metrics, "provision_inline_outbox_sessions", state="undelivered") == 1
    assert metric(metrics, "provision_inline_outbox_sessions", state="pending") == 0

    status = await status_for(harness, ADMIN, "could not be posted")
    shown = json.dumps(status.blocks)
    assert "the announcement" in shown
    assert "not_in_channel" in shown
    assert "/invite @provision-inline" in shown


async def test_warnings_acknowledged_before_the_submit_message_is_noted_still_show(
    harness: Harness,
) -> None:
    """The click on *Acknowledge warnings* comes in the instant between Slack posting the Submit
    message and the bot noting its ts: the acknowledgement is shown in it all the same (its edit
    is an outbox entry, delivered after the plan's)."""
    org(harness).objects.setdefault("OutboundConnector", {})["archive connector"] = {
        "Identity": "Archive Connector",
        "Name": "Archive Connector",
        "Guid": "guid-archive",
        "Enabled": True,
        "ConnectorType": "Partner",
        "IsTransportRuleScoped": True,
        "SmartHosts": ["archive.example.org"],
    }
    root_ts, session_id = await ready_to_verify(harness)
    clicked: list[int] = []

    async def acknowledge_at_once() -> None:
        message = with_button(harness, root_ts, ACTION_ACKNOWLEDGE)
        assert message is not None
        response = await harness.driver.click(
            user_id=ADMIN, channel_id=CHANNEL, message_ts=message.ts, action_id=ACTION_ACKNOWLEDGE
        )
        clicked.append(response.status_code)

    harness.slack.after_next_success(
        "chat.postMessage",
        acknowledge_at_once,
        when=lambda params: ACTION_ACKNOWLEDGE in str(params.get("blocks")),
    )
    before = await harness.version_of(session_id)
    await click_verify(harness, root_ts)

    assert await harness.settled(session_id, after_version=before) is Phase.PLAN_SHOWN
    assert clicked == [200]
    await harness.slack.wait_for(
        lambda s: any("acknowledged the 1 warning" in m.text for m in harness.thread(root_ts))
    )
    session = await harness.store.require(session_id)
    assert session.plan is not None
    assert session.plan.acknowledged is not None

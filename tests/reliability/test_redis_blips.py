"""Redis blips, through the real HTTP stack (integration harness, private redis-server).

With Redis stopped, every Slack request is still acked with HTTP 200 inside Slack's 3 s, nothing
changes, and the user is told to try again (an ephemeral message, or a field error on a submitted
form); once Redis is back the same action works. Microsoft's redirect gets an HTML page (503)
saying the same, and its link still works afterwards. A blip shorter than the budget before the
ack is ridden out: the request waits for Redis and succeeds.

Waits are for facts (a message in the sandbox Slack, a retry stamina scheduled), never sleeps.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator

import pytest
import stamina
from redis.exceptions import ConnectionError as RedisConnectionError
from slack_bolt.context.ack.async_ack import AsyncAck
from stamina.instrumentation import RetryDetails

from bot.sandbox.redis_server import RedisServer
from bot.session.views import REDIS_UNAVAILABLE
from bot.steps.consent.views import ACTION_CONSENT_RENEW
from handlers.access import require_anyone
from handlers.services import services
from tests.handlers.conftest import Next, acked, click_body, context_for, respond_to
from tests.integration.conftest import (
    ADMIN,
    CHANNEL,
    GLOBAL_ADMIN_UPN,
    Harness,
    ephemeral_for,
)
from tests.integration.steps import consent_buttons, follow, latest_link
from tests.microsoft_cloud import recording_retries

SLACK_ACK_LIMIT_SECONDS = 3.0


@contextlib.asynccontextmanager
async def redis_down(harness: Harness, server: RedisServer) -> AsyncIterator[None]:
    """Redis stopped inside; started again (same data: AOF) on the way out, whatever happened,
    with the keyspace notifications the harness's waits rely on."""
    server.stop()
    try:
        yield
    finally:
        if not server.running:
            server.start()
        # The test's own client has no retries: its pooled connections died with the server.
        await harness.redis.connection_pool.disconnect()
        await harness.redis.config_set("notify-keyspace-events", "KA")


def unavailable_notes(harness: Harness) -> list[str]:
    return [e.text for e in harness.slack.ephemerals if REDIS_UNAVAILABLE in e.text]


async def test_a_command_while_redis_is_down_is_acked_and_answered(
    harness: Harness, redis_server: RedisServer
) -> None:
    async with redis_down(harness, redis_server):
        started = time.perf_counter()
        response = await harness.driver.slash_command(user_id=ADMIN, channel_id=CHANNEL)
        acked_in = time.perf_counter() - started
        assert response.status_code == 200
        assert acked_in < SLACK_ACK_LIMIT_SECONDS
        await ephemeral_for(harness, ADMIN, REDIS_UNAVAILABLE)
    assert harness.slack.calls_to("views.open") == []
    # Redis is back: the same command opens the start form.
    await harness.open_start_modal()
    assert len(unavailable_notes(harness)) == 1


async def test_a_click_while_redis_is_down_changes_nothing_and_works_afterwards(
    harness: Harness, redis_server: RedisServer
) -> None:
    root_ts = await harness.start_session("contoso.com")
    prompt_ts, url = await latest_link(harness, root_ts)
    [session] = await harness.store.active()
    audit = await harness.store.audit(session.id)
    edits = harness.slack.message(CHANNEL, prompt_ts).edited
    async with redis_down(harness, redis_server):
        started = time.perf_counter()
        response = await harness.driver.click(
            user_id=ADMIN, channel_id=CHANNEL, message_ts=prompt_ts, action_id=ACTION_CONSENT_RENEW
        )
        acked_in = time.perf_counter() - started
        assert response.status_code == 200
        assert acked_in < SLACK_ACK_LIMIT_SECONDS
        await ephemeral_for(harness, ADMIN, REDIS_UNAVAILABLE)
    # Nothing changed: the session, its audit, the step's message and its link.
    [after] = await harness.store.active()
    assert after.version == session.version
    assert await harness.store.audit(session.id) == audit
    assert harness.slack.message(CHANNEL, prompt_ts).edited == edits
    assert consent_buttons(harness, root_ts)[-1][1]["url"] == url
    # Redis is back: the same button makes a new link.
    await harness.driver.click(
        user_id=ADMIN, channel_id=CHANNEL, message_ts=prompt_ts, action_id=ACTION_CONSENT_RENEW
    )
    await harness.slack.wait_for(lambda s: s.message(CHANNEL, prompt_ts).edited == edits + 1)
    _, fresh = await latest_link(harness, root_ts)
    assert fresh != url
    assert len(unavailable_notes(harness)) == 1


async def test_a_submission_while_redis_is_down_keeps_the_form_with_a_field_error(
    harness: Harness, redis_server: RedisServer
) -> None:
    view_id = await harness.open_start_modal()
    async with redis_down(harness, redis_server):
        started = time.perf_counter()
        response = await harness.driver.submit_view(
            user_id=ADMIN, view_id=view_id, values={"tenant_input": "contoso.com"}
        )
        acked_in = time.perf_counter() - started
        assert response.status_code == 200
        assert acked_in < SLACK_ACK_LIMIT_SECONDS
        assert list(harness.driver.view_errors(response).values()) == [REDIS_UNAVAILABLE]
        assert harness.slack.views[view_id].is_open
    assert await harness.store.active() == []
    assert harness.slack.calls_to("chat.postMessage") == []
    # Redis is back: the same form, submitted again, starts the session.
    response = await harness.driver.submit_view(
        user_id=ADMIN, view_id=view_id, values={"tenant_input": "contoso.com"}
    )
    assert harness.driver.view_errors(response) == {}
    await harness.wait_for_root("contoso.com")
    assert len(await harness.store.active()) == 1


async def test_the_microsoft_callback_while_redis_is_down_says_so_and_keeps_the_link(
    harness: Harness, redis_server: RedisServer
) -> None:
    root_ts = await harness.start_session("contoso.com")
    _, url = await latest_link(harness, root_ts)
    async with redis_down(harness, redis_server):
        page = await follow(harness, url, GLOBAL_ADMIN_UPN, "accept")
        assert page.status_code == 503
        assert page.headers["content-type"].startswith("text/html")
        assert "Redis is unavailable for a moment: nothing was changed." in page.text
        assert "the link has not been used and still works" in page.text
        # Any state at all, known or not: the same page, never a bare 500.
        bare = await harness.http.get(
            f"{harness.base_url}/microsoft/callback", params={"state": "whatever"}
        )
        assert bare.status_code == 503
        assert "Redis is unavailable" in bare.text
    # Redis is back: the very same link completes the consent.
    page = await follow(harness, url, GLOBAL_ADMIN_UPN, "accept")
    assert "Consent recorded" in page.text, page.text


async def test_the_channel_check_past_the_deadline_acks_and_tells_the_user(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The authorisation's session read (a click bound to its channel) is retried until the
    request's deadline, then the click is acked, goes no further, and its user is told."""
    root_ts = await harness.start_session("contoso.com")
    prompt_ts, _ = await latest_link(harness, root_ts)
    body = click_body(harness, prompt_ts, ACTION_CONSENT_RENEW, ADMIN)
    context = context_for(harness)
    attempts = 0

    async def unreachable(session_id: str) -> None:
        nonlocal attempts
        attempts += 1
        raise RedisConnectionError("Connection refused")

    monkeypatch.setattr(services(context).store, "get_with_posts", unreachable)
    ack, after = AsyncAck(), Next()  # type: ignore[no-untyped-call]
    started = time.perf_counter()
    await require_anyone("make a new consent link")(
        ack=ack, body=body, context=context, respond=respond_to(body), next=after
    )
    assert time.perf_counter() - started < SLACK_ACK_LIMIT_SECONDS
    assert acked(ack) == {}
    assert after.calls == 0
    assert attempts > 1  # retried, not given up at the first failure
    await ephemeral_for(harness, ADMIN, REDIS_UNAVAILABLE)


async def test_a_clicks_channel_check_after_its_ack_tells_the_user_when_redis_stays_away(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Through the HTTP stack: the click is acked at once (the session read comes after the
    ack), the read is retried for a few seconds, then the user is told to try again and the
    click's work never runs."""
    monkeypatch.setattr("handlers.access.AFTER_ACK_REDIS_PATIENCE_SECONDS", 0.5)
    root_ts = await harness.start_session("contoso.com")
    prompt_ts, _ = await latest_link(harness, root_ts)
    [session] = await harness.runtime.store.active()
    attempts = 0

    async def unreachable(session_id: str) -> None:
        nonlocal attempts
        attempts += 1
        raise RedisConnectionError("Connection refused")

    monkeypatch.setattr(harness.runtime.store, "get_with_posts", unreachable)
    started = time.perf_counter()
    answer = await harness.driver.click(
        user_id=ADMIN, channel_id=CHANNEL, message_ts=prompt_ts, action_id=ACTION_CONSENT_RENEW
    )
    assert answer.status_code == 200
    assert time.perf_counter() - started < SLACK_ACK_LIMIT_SECONDS
    await ephemeral_for(harness, ADMIN, REDIS_UNAVAILABLE)
    assert attempts > 1
    after = await harness.runtime.store.require(session.id)
    assert after.version == session.version  # no new link was made


async def test_a_short_blip_is_ridden_out(harness: Harness, redis_server: RedisServer) -> None:
    """Redis goes away; a command arrives and is retried (with real backoff waits); Redis comes
    back within the budget: the command succeeds and nobody is told to try again."""
    retrying = asyncio.Event()

    def scheduled(details: RetryDetails) -> None:
        if isinstance(details.caused_by, RedisConnectionError):
            retrying.set()

    with stamina.set_testing(False), recording_retries(scheduled):
        async with redis_down(harness, redis_server):
            command = asyncio.create_task(
                harness.driver.slash_command(user_id=ADMIN, channel_id=CHANNEL)
            )
            async with asyncio.timeout(SLACK_ACK_LIMIT_SECONDS):
                await retrying.wait()  # the fact: the duplicate filter is retrying
            assert not command.done()
            await asyncio.to_thread(redis_server.start)  # the loop keeps retrying meanwhile
        response = await command
    assert response.status_code == 200
    await harness.slack.wait_for(lambda s: s.calls_to("views.open"))
    assert unavailable_notes(harness) == []

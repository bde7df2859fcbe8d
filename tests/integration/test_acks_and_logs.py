"""Slack gets its ack at once whatever Microsoft does; logs never carry a secret."""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from bot.session.views import ACTION_CANCEL, START_CALLBACK
from bot.steps.consent.views import ACTION_CONSENT_OPEN, ACTION_CONSENT_RENEW
from state.sessions import unpack_record
from tests.conftest import DIRSYNC_SECRET, MAILFLOW_SECRET, SIGNING_SECRET
from tests.integration.conftest import (
    ADMIN,
    CHANNEL,
    GLOBAL_ADMIN_UPN,
    Harness,
    every_slot_taken,
)
from tests.integration.test_consent import latest_link

ACK_LIMIT = 1.0  # seconds; Slack's own limit is 3


async def timed(send: Callable[[], Awaitable[httpx.Response]]) -> float:
    started = time.perf_counter()
    response = await send()
    assert response.status_code == 200
    return time.perf_counter() - started


async def test_every_interaction_is_acked_quickly_while_microsoft_takes_5_seconds(
    harness: Harness,
) -> None:
    root_ts = await harness.start_session("contoso.com")
    prompt_ts, _ = await latest_link(harness, root_ts)
    harness.microsoft.set_latency(5.0)
    driver = harness.driver
    durations = {
        "help": await timed(
            lambda: driver.slash_command(user_id=ADMIN, channel_id=CHANNEL, text="help")
        ),
        "status": await timed(
            lambda: driver.slash_command(user_id=ADMIN, channel_id=CHANNEL, text="status")
        ),
        "start": await timed(lambda: driver.slash_command(user_id=ADMIN, channel_id=CHANNEL)),
        "consent click": await timed(
            lambda: driver.click(
                user_id=ADMIN,
                channel_id=CHANNEL,
                message_ts=prompt_ts,
                action_id=ACTION_CONSENT_OPEN,
            )
        ),
        "new link": await timed(
            lambda: driver.click(
                user_id=ADMIN,
                channel_id=CHANNEL,
                message_ts=prompt_ts,
                action_id=ACTION_CONSENT_RENEW,
            )
        ),
        "home": await timed(lambda: driver.open_home(user_id=ADMIN)),
        "cancel": await timed(
            lambda: driver.click(
                user_id=ADMIN, channel_id=CHANNEL, message_ts=root_ts, action_id=ACTION_CANCEL
            )
        ),
    }
    slow = {name: seconds for name, seconds in durations.items() if seconds >= ACK_LIMIT}
    assert not slow, durations
    await harness.slack.wait_for(lambda s: "Cancelled" in s.message(CHANNEL, root_ts).text)


async def test_no_secret_token_or_state_reaches_the_logs(
    harness: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    root_ts = await harness.start_session("contoso.com")
    _, url = await latest_link(harness, root_ts)
    state = parse_qs(urlsplit(url).query)["state"][0]
    harness.microsoft.sign_in(GLOBAL_ADMIN_UPN, auto="accept")
    async with httpx.AsyncClient(follow_redirects=True, timeout=10) as browser:
        page = await browser.get(url)
    assert "Consent recorded" in page.text
    await harness.slack.wait_for(
        lambda s: any("given by a Global Administrator" in m.text for m in harness.thread(root_ts))
    )
    await harness.driver.slash_command(user_id=ADMIN, channel_id=CHANNEL, text="status")
    await harness.slack.wait_for(lambda s: s.ephemerals)
    logged = "\n".join(record.getMessage() + " " + repr(record.args) for record in caplog.records)
    assert caplog.records, "expected the bot to log something at DEBUG"
    # (The state itself is no secret: it is in the link everyone in the channel sees.)
    for secret in (SIGNING_SECRET, MAILFLOW_SECRET, DIRSYNC_SECRET, harness.slack.bot_token):
        assert secret not in logged
    # Nor in Redis: nothing the store keeps holds a secret, and states only as hashes.
    redis = harness.runtime.redis
    for key in await redis.keys("*"):
        kind = await redis.type(key)
        if kind in (b"string", "string"):
            dumped = str(await redis.get(key))
        elif kind in (b"hash", "hash"):
            # A session's record is stored compressed: read as the store reads it.
            fields = await redis.hgetall(key)
            dumped = str({k: unpack_record(v) for k, v in fields.items()})
        elif kind in (b"stream", "stream"):
            dumped = str(await redis.xrange(key))
        elif kind in (b"zset", "zset"):
            dumped = str(await redis.zrange(key, 0, -1))
        elif kind in (b"list", "list"):
            dumped = str(await redis.lrange(key, 0, -1))
        else:
            dumped = str(await redis.smembers(key))
        for secret in (SIGNING_SECRET, MAILFLOW_SECRET, DIRSYNC_SECRET, state):
            assert secret not in dumped, key


async def test_acks_come_first_acked_work_waits_for_a_slot(harness: Harness) -> None:
    """With every slot for acked work taken, a command is still acked at once; its reply comes
    when a slot frees (acks first: under a burst, a new request never queues for its ack behind
    all the work acked before it)."""
    inflight = harness.runtime.inflight
    before = len(harness.slack.ephemerals)
    driver = harness.driver
    async with every_slot_taken(inflight):
        took = await timed(
            lambda: driver.slash_command(user_id=ADMIN, channel_id=CHANNEL, text="help")
        )
        assert took < ACK_LIMIT
        assert inflight.waiting == 1  # acked, and waiting for a slot before it goes on
        assert len(harness.slack.ephemerals) == before
    await harness.slack.wait_for(lambda s: len(s.ephemerals) > before, timeout=10)
    assert inflight.waiting == 0


async def test_a_form_opens_at_once_even_when_acked_work_waits(harness: Harness) -> None:
    """Slack's trigger id lasts 3 s: the listener that opens the start form does not wait in
    line for a slot, while other acked work does."""
    inflight = harness.runtime.inflight
    async with every_slot_taken(inflight):
        await harness.driver.slash_command(user_id=ADMIN, channel_id=CHANNEL)
        await harness.slack.wait_for(
            lambda s: [v for v in s.open_views(ADMIN) if v.callback_id == START_CALLBACK],
            timeout=10,
        )
        assert inflight.waiting == 0


async def test_a_lone_request_over_http_is_not_taken_for_a_burst(harness: Harness) -> None:
    """A request is counted as being acked once, from its arrival at the web route: its work
    starts when it is answered, not when the burst window after it closes."""
    harness.runtime.inflight.busy_for = 60  # a burst would hold the work back for 10 s
    before = len(harness.slack.ephemerals)
    await harness.driver.slash_command(user_id=ADMIN, channel_id=CHANNEL, text="help")
    await harness.slack.wait_for(lambda s: len(s.ephemerals) > before, timeout=5)

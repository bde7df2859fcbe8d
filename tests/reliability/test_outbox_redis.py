"""A Redis restart in the middle of posting a transition's messages (issue 11): Slack has accepted
a post, Redis goes away before the bot has recorded its ts, and comes back. The bot waits for it
to record the ts, so nothing is posted twice, and the rest of the messages follow."""

from __future__ import annotations

import asyncio
import json
from collections import Counter

import stamina
from redis.exceptions import ConnectionError as RedisConnectionError
from stamina.instrumentation import RetryDetails

from bot.sandbox.redis_server import RedisServer
from bot.workflow import Phase
from tests.integration.conftest import Harness
from tests.integration.steps import consent_now
from tests.microsoft_cloud import recording_retries


async def test_a_redis_restart_while_messages_are_posted_loses_and_doubles_nothing(
    harness: Harness, redis_server: RedisServer
) -> None:
    root_ts = await harness.start_session("contoso.com")
    [session] = await harness.store.active()
    retrying = asyncio.Event()

    def scheduled(details: RetryDetails) -> None:
        if isinstance(details.caused_by, RedisConnectionError):
            retrying.set()

    async def redis_goes_away() -> None:
        await asyncio.to_thread(redis_server.stop)

    # Step 2's prompt is the consent's one post: Slack has it, the bot has not recorded it yet.
    harness.slack.after_next_success("chat.postMessage", redis_goes_away)
    with stamina.set_testing(False), recording_retries(scheduled):
        consent = asyncio.create_task(consent_now(harness, root_ts))
        try:
            async with asyncio.timeout(20):
                await retrying.wait()  # the fact: recording the ts waits for Redis
            assert not consent.done()
        finally:
            if not redis_server.running:
                await asyncio.to_thread(redis_server.start)
            await harness.redis.connection_pool.disconnect()
            await harness.redis.config_set("notify-keyspace-events", "KA")
        await consent

    assert await harness.settled(session.id) is Phase.MAILFLOW_CONSENTED
    thread = harness.thread(root_ts)
    assert [m.text.split(" ")[0] for m in thread] == [":white_check_mark:", "Step"]
    counts = Counter(json.dumps(m.blocks, sort_keys=True) for m in thread)
    assert max(counts.values()) == 1
    posts = [c for c in harness.slack.calls_to("chat.postMessage") if c.ok]
    assert len(posts) == 3  # the root, step 1, step 2: each once
    kept = await harness.redis.hgetall(f"pi:{{{session.id}}}:messages")
    assert str(thread[1].ts).encode() in kept.values()

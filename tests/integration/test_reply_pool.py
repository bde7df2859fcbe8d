"""Replies to response URLs reuse the process's connection pool, and go only to Slack's."""

from __future__ import annotations

import pytest

from bot.blocks import Message
from handlers.services import Services
from tests.integration.conftest import ADMIN, CHANNEL, Harness
from tests.security.forge import listening

REPLIES = 5


async def test_replies_share_kept_alive_connections_instead_of_one_each(
    harness: Harness,
) -> None:
    for asked in range(REPLIES):
        await harness.driver.slash_command(user_id=ADMIN, channel_id=CHANNEL, text="help")
        await harness.slack.wait_for(
            lambda s, wanted=asked + 1: len(s.calls_to("response_url")) >= wanted or None
        )
    replies = harness.slack.calls_to("response_url")
    assert len(replies) == REPLIES
    assert all(reply.ok and reply.client is not None for reply in replies)
    # Bolt's own respond opened a connection (an aiohttp session) per reply: five ports.
    assert len({reply.client for reply in replies}) < REPLIES


async def test_a_reply_to_a_foreign_url_is_refused_without_a_request(
    harness: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    replies = Services.of(harness.runtime).replies
    async with listening() as attacker:
        with caplog.at_level("WARNING", logger="handlers.reply"):
            sent = await replies.ephemeral(attacker.url, Message("hello", []))
    assert sent is False
    assert attacker.received == []
    refusals = [
        r.getMessage() for r in caplog.records if "not a Slack response URL" in r.getMessage()
    ]
    assert refusals
    assert "/hooks/" not in " ".join(refusals)  # a response URL's path is a credential

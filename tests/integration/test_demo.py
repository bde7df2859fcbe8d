"""``provision-inline-bot demo``: runs as a user would run it, reads like the conversation."""

from __future__ import annotations

import asyncio
import os
import sys
import time

from redis.asyncio import Redis

from bot.sandbox.redis_server import RedisServer
from bot.steps.mailflow.views import ANNOUNCEMENT


async def run_demo(redis_url: str) -> tuple[int, str, str, float]:
    environment = {k: v for k, v in os.environ.items() if not k.startswith(("SLACK_", "INLINE_"))}
    environment["REDIS_URL"] = redis_url
    started = time.monotonic()
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "handlers.main",
        "demo",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=environment,
    )
    async with asyncio.timeout(60):
        out, err = await process.communicate()
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode(), time.monotonic() - started


async def test_the_demo_plays_the_whole_conversation(
    redis: Redis, redis_server: RedisServer
) -> None:
    code, out, err, took = await run_demo(redis_server.url)
    assert code == 0, err
    assert took < 60
    assert f"using {redis_server.url}" in out
    # It reads like the conversation, in order.
    milestones = [
        "👤 ada types /provision-inline in #mail-provisioning",
        "#mail-provisioning · provision-inline (bot):",
        "Consent for mail flow",
        "👤 Grace (Global Administrator of Northwind) clicks [Open Microsoft consent page]",
        "Consent recorded",
        "👤 ada clicks [Request the role (PIM)]",
        "Role request for review",
        "👤 april clicks [Acknowledge]",
        "👤 ada clicks [Assign for me] and hands the sign-in to Priya",
        "`priya@northwind.example` (signed in at Microsoft) assigned the Exchange Administrator",
        "Exchange Administrator role assigned",
        "Step 3 — consent for directory sync: given by a Global Administrator",
        "👤 ada clicks [Verify]",
        "Every grant is in place",
        "Exchange Online pre-flight checks",
        "Exchange Online change plan",
        "👤 ada clicks [Acknowledge warnings]",
        "👤 ada clicks [Submit]",
        "15 of 15 changes applied",
        "Exchange Online mail flow is configured",
        f"🛡 {ANNOUNCEMENT}",
        "#security-notices · provision-inline (bot):",
    ]
    position = 0
    for milestone in milestones:
        found = out.find(milestone, position)
        assert found >= 0, f"{milestone!r} missing (or out of order) in:\n{out}"
        position = found
    assert "Exchange Administrator role: acknowledged by @april" in out
    # The thread tells the story in few messages: one per step, the plan, the summary.
    assert out.count("↳ thread in") <= 10
    assert "<@" not in out  # mentions are shown as names
    # It leaves nothing of its sessions behind in a Redis it shares.
    assert await redis.keys("pi:{*") == []
    assert await redis.keys("pi:tenant:*") == []


async def test_the_demo_starts_its_own_redis_when_none_answers(redis: Redis) -> None:
    code, out, err, took = await run_demo("redis://127.0.0.1:1/0")
    assert code == 0, err
    assert "using a private redis-server" in out
    assert ANNOUNCEMENT in out
    assert took < 60

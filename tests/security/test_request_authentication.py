"""Every Slack request that acts is authenticated, in HTTP mode and in Socket Mode.

Each test first proves its setup reaches the bot (a genuine request has its effect), then sends
the attacker's request and shows it had none: no Slack call, no session, no Redis key.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator

import httpx

from bot.sandbox.server import free_port
from tests.integration.conftest import ADMIN, CHANNEL, Harness, ephemeral_for
from tests.integration.test_cli import running
from tests.integration.test_socket_mode import APP_TOKEN, Output, connected


async def keys(harness: Harness) -> list[bytes]:
    return sorted(await harness.redis.keys("pi:*"))


async def test_http_mode_refuses_unsigned_badly_signed_and_stale_requests(
    harness: Harness,
) -> None:
    genuine = await harness.driver.slash_command(user_id=ADMIN, channel_id=CHANNEL, text="help")
    assert genuine.status_code == 200
    await ephemeral_for(harness, ADMIN, "/provision-inline status")  # the setup reaches the bot

    calls, stored = len(harness.slack.calls), await keys(harness)
    start = harness.driver.build_slash_command(user_id=ADMIN, channel_id=CHANNEL)
    unsigned = await harness.http.post(
        start.url, content=start.body, headers={"Content-Type": start.content_type}
    )
    forged = await harness.driver.send(start, signature_override="v0=" + "0" * 64)
    stale = await harness.driver.send(
        harness.driver.build_slash_command(user_id=ADMIN, channel_id=CHANNEL),
        timestamp=int(harness.clock()) - 10 * 60,
    )
    assert [unsigned.status_code, forged.status_code, stale.status_code] == [401, 401, 401]
    assert len(harness.slack.calls) == calls  # no modal opened, nothing posted
    assert await keys(harness) == stored


@contextlib.asynccontextmanager
async def socket_bot_without_signing_secret(harness: Harness) -> AsyncIterator[int]:
    """The manifest's default deployment: Socket Mode, an app token, no signing secret."""
    harness.slack.app_token = APP_TOKEN
    port = free_port()
    environment = {
        "PATH": os.environ["PATH"],
        "SSL_CERT_FILE": os.environ["SSL_CERT_FILE"],
        **harness.environment,
        "PORT": str(port),
        "SLACK_APP_TOKEN": APP_TOKEN,
    }
    del environment["SLACK_SIGNING_SECRET"]
    async with running(["socket"], environment) as process:
        assert process.stderr is not None
        output = Output()
        reader = asyncio.ensure_future(output.read(process.stderr))
        try:
            await connected(harness, process, output)
            await output.wait_for("Uvicorn running on")
            yield port
        finally:
            if process.returncode is None:
                process.kill()
                await process.wait()
            await reader


async def test_socket_mode_serves_no_slack_route_over_http(harness: Harness) -> None:
    async with socket_bot_without_signing_secret(harness) as port:
        harness.driver.transport = "socket_mode"
        try:
            genuine = await harness.driver.slash_command(
                user_id=ADMIN, channel_id=CHANNEL, text="help"
            )
            assert genuine.status_code == 200
            await ephemeral_for(harness, ADMIN, "/provision-inline status")
        finally:
            harness.driver.transport = "http"
        base = f"http://127.0.0.1:{port}"
        assert (await harness.http.get(f"{base}/healthz")).status_code == 200

        calls, stored = len(harness.slack.calls), await keys(harness)
        harness.driver.events_url = f"{base}/slack/events"
        start = harness.driver.build_slash_command(user_id=ADMIN, channel_id=CHANNEL)
        attempts: list[httpx.Response] = [
            await harness.http.post(
                start.url, content=start.body, headers={"Content-Type": start.content_type}
            ),
            # Signed with the secret an operator might have left behind: still not served.
            await harness.driver.send(start),
        ]
        assert [a.status_code for a in attempts] == [404, 404]
        assert len(harness.slack.calls) == calls
        assert await keys(harness) == stored

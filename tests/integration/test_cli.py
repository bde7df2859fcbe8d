"""The console script as an operator runs it: a real process, real signals."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
from collections.abc import AsyncIterator

from bot.cli import check
from bot.config import Mode, load_settings
from bot.sandbox.server import free_port
from handlers import wire
from tests.integration.conftest import ADMIN, CHANNEL, Harness, ephemeral_for

SCRIPT = [sys.executable, "-m", "handlers.main"]


@contextlib.asynccontextmanager
async def running(
    arguments: list[str], environment: dict[str, str]
) -> AsyncIterator[asyncio.subprocess.Process]:
    process = await asyncio.create_subprocess_exec(
        *SCRIPT,
        *arguments,
        env=environment,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        yield process
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


async def read_until(stream: asyncio.StreamReader, marker: str, seconds: float = 20) -> str:
    seen: list[str] = []
    async with asyncio.timeout(seconds):
        while True:
            line = (await stream.readline()).decode()
            if not line:
                raise AssertionError(
                    "process ended before saying: " + marker + "\n" + "".join(seen)
                )
            seen.append(line)
            if marker in line:
                return "".join(seen)


def process_environment(harness: Harness, **overrides: str) -> dict[str, str]:
    environment = {
        "PATH": os.environ["PATH"],
        "SSL_CERT_FILE": os.environ["SSL_CERT_FILE"],
        **harness.environment,
    }
    environment.update(overrides)
    return environment


async def test_serve_answers_health_and_a_signed_command_then_stops_on_sigterm(
    harness: Harness, tmp_path
) -> None:  # type: ignore[no-untyped-def]
    port = free_port()
    environment = process_environment(harness, PORT=str(port))
    async with running(["serve"], environment) as process:
        assert process.stderr is not None
        await read_until(process.stderr, "Uvicorn running on")
        base = f"http://127.0.0.1:{port}"
        health = await harness.http.get(f"{base}/healthz")
        assert health.status_code == 200
        harness.driver.events_url = f"{base}/slack/events"
        response = await harness.driver.slash_command(
            user_id=ADMIN, channel_id=CHANNEL, text="help"
        )
        assert response.status_code == 200
        await ephemeral_for(harness, ADMIN, "/provision-inline status")
        process.send_signal(signal.SIGTERM)
        async with asyncio.timeout(15):
            assert await process.wait() == 0


async def test_serve_with_a_variable_missing_exits_naming_it(harness: Harness, tmp_path) -> None:  # type: ignore[no-untyped-def]
    environment = process_environment(harness)
    del environment["SLACK_SIGNING_SECRET"]
    del environment["INLINE_IP_RANGES"]
    async with running(["serve"], environment) as process:
        async with asyncio.timeout(20):
            _, stderr = await process.communicate()
    assert process.returncode == 2
    message = stderr.decode()
    assert "SLACK_SIGNING_SECRET is missing" in message
    assert "INLINE_IP_RANGES is missing" in message
    assert "2 configuration problem(s)" in message
    assert harness.environment["SLACK_BOT_TOKEN"] not in message


async def test_check_reports_each_dependency(harness: Harness, redis_server) -> None:  # type: ignore[no-untyped-def]
    settings = load_settings(harness.environment, Mode.CHECK)
    results = {result.name: result for result in await check(settings, wire)}
    assert all(result.ok for result in results.values()), results
    assert "provision-inline" in results["slack"].detail
    redis_server.stop()
    try:
        results = {result.name: result for result in await check(settings, wire)}
    finally:
        redis_server.start()
    assert not results["redis"].ok
    assert results["slack"].ok


async def test_check_reports_a_bad_slack_token(harness: Harness) -> None:
    environment = dict(harness.environment, SLACK_BOT_TOKEN="xoxb-revoked")
    settings = load_settings(environment, Mode.CHECK)
    results = {result.name: result for result in await check(settings, wire)}
    assert not results["slack"].ok
    assert "invalid_auth" in results["slack"].detail


async def test_check_tries_the_app_token_when_socket_mode_is_configured(harness: Harness) -> None:
    good = load_settings(
        dict(harness.environment, SLACK_APP_TOKEN=harness.slack.app_token or ""), Mode.SOCKET
    )
    results = {result.name: result for result in await check(good, wire)}
    assert results["socket mode"].ok
    bad = load_settings(dict(harness.environment, SLACK_APP_TOKEN="xapp-1-revoked"), Mode.SOCKET)
    results = {result.name: result for result in await check(bad, wire)}
    assert not results["socket mode"].ok
    assert "invalid_auth" in results["socket mode"].detail
    assert "xapp-1-revoked" not in results["socket mode"].detail

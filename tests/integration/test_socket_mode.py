"""``provision-inline-bot socket`` as an operator runs it: a real process connected to the
sandbox's Socket Mode server, people played through Socket Mode envelopes, real signals."""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import pytest

from bot.sandbox.server import free_port
from bot.sandbox.slack import SocketConnection
from bot.sandbox.slack_driver import SocketAckResponse
from tests.conftest import METRICS_AUTH
from tests.integration.conftest import ADMIN, CHANNEL, Harness, ephemeral_for, metric
from tests.integration.test_cli import process_environment, running

APP_TOKEN = "xapp-1-A0SANDBOX-1-integration"


@dataclass
class Output:
    """What the process writes to stderr, read as it comes (so the pipe never fills)."""

    lines: list[str] = field(default_factory=list)
    changed: asyncio.Condition = field(default_factory=asyncio.Condition)
    ended: bool = False

    async def read(self, stream: asyncio.StreamReader) -> None:
        while line := (await stream.readline()).decode(errors="replace"):
            async with self.changed:
                self.lines.append(line)
                self.changed.notify_all()
        async with self.changed:
            self.ended = True
            self.changed.notify_all()

    async def wait_for(self, marker: str, seconds: float = 30) -> None:
        async with asyncio.timeout(seconds), self.changed:
            while not any(marker in line for line in self.lines):
                if self.ended:
                    raise AssertionError(f"process ended before saying {marker!r}:\n{self}")
                await self.changed.wait()

    def __str__(self) -> str:
        return "".join(self.lines[-60:])


@dataclass
class SocketBot:
    process: asyncio.subprocess.Process
    output: Output
    port: int
    connection: SocketConnection

    async def stop(self) -> int:
        self.process.send_signal(signal.SIGTERM)
        async with asyncio.timeout(20):
            return await self.process.wait()


async def connected(
    harness: Harness, process: asyncio.subprocess.Process, output: Output
) -> SocketConnection:
    """The bot's Socket Mode connection, once the sandbox has said hello on it (or the reason
    there is none: the process ended, or nothing connected in time)."""
    hello = asyncio.ensure_future(
        harness.slack.wait_for(lambda s: s.socket_connections(), timeout=30)
    )
    exited = asyncio.ensure_future(process.wait())
    try:
        await asyncio.wait({hello, exited}, return_when=asyncio.FIRST_COMPLETED)
        if not hello.done():
            raise AssertionError(
                f"the bot exited ({process.returncode}) before connecting:\n{output}"
            )
        try:
            connections: list[SocketConnection] = hello.result()
        except TimeoutError as error:
            raise AssertionError(f"the bot did not connect:\n{error}\n{output}") from None
        return connections[0]
    finally:
        for task in (hello, exited):
            task.cancel()
        await asyncio.gather(hello, exited, return_exceptions=True)


@contextlib.asynccontextmanager
async def socket_bot(harness: Harness) -> AsyncIterator[SocketBot]:
    harness.slack.app_token = APP_TOKEN
    port = free_port()
    environment = process_environment(harness, PORT=str(port), SLACK_APP_TOKEN=APP_TOKEN)
    async with running(["socket"], environment) as process:
        assert process.stderr is not None
        output = Output()
        reader = asyncio.ensure_future(output.read(process.stderr))
        try:
            connection = await connected(harness, process, output)
            harness.driver.transport = "socket_mode"
            yield SocketBot(process, output, port, connection)
        finally:
            harness.driver.transport = "http"
            if process.returncode is None:
                process.kill()
                await process.wait()
            await reader


async def test_socket_mode_serves_commands_modals_health_and_stops_on_sigterm(
    harness: Harness,
) -> None:
    async with socket_bot(harness) as bot:
        opened = harness.slack.calls_to("apps.connections.open")
        assert opened
        assert all(call.ok for call in opened)

        response = await harness.driver.slash_command(
            user_id=ADMIN, channel_id=CHANNEL, text="help"
        )
        assert isinstance(response, SocketAckResponse)
        assert response.status_code == 200, response.ack
        await ephemeral_for(harness, ADMIN, "/provision-inline status")

        view_id = await harness.open_start_modal(ADMIN)
        response = await harness.driver.submit_view(
            user_id=ADMIN, view_id=view_id, values={"tenant_input": "contoso.com"}
        )
        assert response.status_code == 200, response
        assert harness.driver.view_errors(response) == {}
        root_ts = await harness.wait_for_root("contoso.com")
        assert harness.thread(root_ts)
        assert harness.root_messages()

        acks = harness.slack.calls_to("socket_mode.ack")
        assert [a.params["type"] for a in acks] == ["slash_commands"] * 2 + ["interactive"]
        assert all(a.ok for a in acks), harness.slack.dump()
        assert {a.params["connection_id"] for a in harness.slack.calls_to("socket_mode.envelope")}
        assert all(
            e.params["connection_id"] == bot.connection.id
            for e in harness.slack.calls_to("socket_mode.envelope")
        )

        await bot.output.wait_for("Uvicorn running on")
        health = await harness.http.get(f"http://127.0.0.1:{bot.port}/healthz")
        assert health.status_code == 200

        assert await bot.stop() == 0, str(bot.output)
        await harness.slack.wait_for(lambda s: s.calls_to("socket_mode.closed"))
        assert harness.slack.socket_connections() == []


async def test_socket_mode_reconnects_when_slack_asks_for_a_refresh(harness: Harness) -> None:
    async with socket_bot(harness) as bot:
        opened = len(harness.slack.calls_to("apps.connections.open"))
        assert await harness.slack.disconnect("refresh_requested") == [bot.connection.id]
        [new] = await harness.slack.wait_for(
            lambda s: [c for c in s.socket_connections() if c.id != bot.connection.id]
        )
        await harness.slack.wait_for(
            lambda s: [c.id for c in s.socket_connections()] == [new.id], timeout=15
        )
        assert len(harness.slack.calls_to("apps.connections.open")) == opened + 1  # a new URL

        response = await harness.driver.slash_command(
            user_id=ADMIN, channel_id=CHANNEL, text="help"
        )
        assert response.status_code == 200, response
        await ephemeral_for(harness, ADMIN, "/provision-inline status")
        [envelope] = harness.slack.calls_to("socket_mode.envelope")
        assert envelope.params["connection_id"] == new.id

        assert await bot.stop() == 0, str(bot.output)


async def test_socket_mode_acks_are_counted_in_metrics(harness: Harness) -> None:
    async with socket_bot(harness) as bot:
        response = await harness.driver.slash_command(
            user_id=ADMIN, channel_id=CHANNEL, text="help"
        )
        assert response.status_code == 200
        await bot.output.wait_for("Uvicorn running on")
        metrics = (
            await harness.http.get(f"http://127.0.0.1:{bot.port}/metrics", headers=METRICS_AUTH)
        ).text
        assert await bot.stop() == 0
    assert metric(metrics, "provision_inline_requests_total", kind="slash_command") == 1, metrics
    assert metric(metrics, "provision_inline_ack_seconds_count") == 1, metrics


async def test_socket_mode_with_a_refused_app_token_stops_naming_it(harness: Harness) -> None:
    harness.slack.app_token = APP_TOKEN
    revoked = "xapp-1-A0SANDBOX-1-revoked"
    environment = process_environment(harness, PORT=str(free_port()), SLACK_APP_TOKEN=revoked)
    async with running(["socket"], environment) as process:
        try:
            async with asyncio.timeout(10):
                _, stderr = await process.communicate()
        except TimeoutError:
            pytest.fail("the bot kept retrying a token Slack refused")
    message = stderr.decode()
    assert process.returncode not in (0, None)
    assert process.returncode > 0
    assert "SLACK_APP_TOKEN" in message
    assert "invalid_auth" in message
    assert revoked not in message

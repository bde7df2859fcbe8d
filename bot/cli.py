"""``provision-inline-bot serve | socket | check``."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import FrameType

import httpx
import uvicorn
import uvloop
from redis.exceptions import RedisError
from slack_sdk.errors import SlackApiError

from bot.app import Runtime, Wire, build_runtime
from bot.config import ConfigError, Mode, Settings, load_settings
from bot.ops.collector import tune_for_serving

__all__ = ["main"]

logger = logging.getLogger("bot")


def _environment() -> Mapping[str, str]:
    """The process environment, completed (never overridden) by a ``.env`` file if present."""
    from dotenv import dotenv_values

    merged = {key: value for key, value in dotenv_values(".env").items() if value is not None}
    merged.update(os.environ)
    return merged


class _GracefulServer(uvicorn.Server):
    """Drains in-flight requests on SIGTERM/SIGINT, then exits 0: a stop that was asked for is
    not a failure (plain uvicorn re-raises the signal after draining)."""

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if self.should_exit and sig == signal.SIGINT:
            self.force_exit = True  # a second Ctrl-C: stop now
            return
        logger.info(
            "%s received: finishing requests in flight, then stopping", signal.Signals(sig).name
        )
        self.should_exit = True


def _uvicorn(runtime: Runtime) -> uvicorn.Server:
    settings = runtime.settings
    config = uvicorn.Config(
        runtime.web,
        host=settings.host,
        port=settings.port,
        log_level="info",
        proxy_headers=True,
        timeout_graceful_shutdown=10,
    )
    return _GracefulServer(config)


async def serve(settings: Settings, wire: Wire) -> None:
    """HTTP mode: uvicorn serves Slack's requests; SIGTERM/SIGINT drain and stop it."""
    runtime = build_runtime(settings, wire=wire)
    tune_for_serving(runtime.inflight)
    try:
        await _uvicorn(runtime).serve()
    finally:
        await runtime.aclose()


_REFUSED_APP_TOKEN = frozenset(
    {"invalid_auth", "not_authed", "not_allowed_token_type", "token_revoked", "account_inactive"}
)


async def socket_mode(settings: Settings, wire: Wire) -> int:
    """Socket Mode for Slack, plus the same web app (health, metrics, Microsoft's redirect)."""
    from slack_bolt.adapter.socket_mode.async_handler import AsyncSocketModeHandler

    assert settings.slack_app_token is not None  # load_settings(mode=SOCKET) guarantees it
    runtime = build_runtime(settings, wire=wire)
    app_token = settings.slack_app_token.reveal()
    # Refuse a bad app token at once: the Socket Mode client would retry it forever.
    try:
        await runtime.slack.apps_connections_open(app_token=app_token)
    except SlackApiError as error:
        code = str(error.response.get("error"))
        if code in _REFUSED_APP_TOKEN:
            print(
                f"provision-inline cannot start: Slack refused SLACK_APP_TOKEN ({code}). Create "
                "an app-level token with connections:write under Basic Information.",
                file=sys.stderr,
            )
            await runtime.aclose()
            return 1
        raise

    # Requests and ack latency are counted by the global middleware, as over HTTP.
    handler = AsyncSocketModeHandler(runtime.bolt, app_token)
    await handler.connect_async()  # type: ignore[no-untyped-call]
    tune_for_serving(runtime.inflight)
    try:
        await _uvicorn(runtime).serve()  # returns on SIGTERM/SIGINT
    finally:
        await handler.close_async()  # type: ignore[no-untyped-call]
        await runtime.aclose()
    return 0


@dataclass(frozen=True)
class CheckResult:
    name: str
    ok: bool
    detail: str


async def check(settings: Settings, wire: Wire) -> list[CheckResult]:
    """Each dependency, tried for real, reported ok/failed with the reason."""
    runtime = build_runtime(
        settings, wire=wire, sweep_interval_seconds=None, orphan_check_seconds=None
    )
    results = [CheckResult("configuration", True, "every variable is set and well-formed")]
    try:
        try:
            await runtime.store.ping()
            results.append(CheckResult("redis", True, "PING answered"))
        except (RedisError, OSError) as error:
            results.append(CheckResult("redis", False, f"{type(error).__name__}: {error}"))
        try:
            answer = await runtime.slack.auth_test()
            results.append(
                CheckResult(
                    "slack", True, f"auth.test: bot {answer.get('user')} in {answer.get('team')}"
                )
            )
        except SlackApiError as error:
            results.append(CheckResult("slack", False, f"auth.test: {error.response.get('error')}"))
        except (OSError, TimeoutError, ValueError) as error:
            results.append(CheckResult("slack", False, f"{type(error).__name__}: {error}"))
        if settings.slack_app_token is not None:
            try:
                await runtime.slack.apps_connections_open(
                    app_token=settings.slack_app_token.reveal()
                )
                results.append(CheckResult("socket mode", True, "apps.connections.open answered"))
            except SlackApiError as error:
                results.append(
                    CheckResult(
                        "socket mode",
                        False,
                        f"apps.connections.open: {error.response.get('error')} (SLACK_APP_TOKEN)",
                    )
                )
        url = f"{settings.microsoft_login_url}/organizations/v2.0/.well-known/openid-configuration"
        try:
            response = await runtime.http.get(url)
            ok = response.status_code == 200 and "token_endpoint" in response.json()
            results.append(
                CheckResult("microsoft", ok, f"login discovery answered {response.status_code}")
            )
        except (httpx.HTTPError, ValueError) as error:
            results.append(CheckResult("microsoft", False, f"{type(error).__name__}: {error}"))
    finally:
        await runtime.aclose()
    return results


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="provision-inline-bot",
        description="Slack app that provisions Exchange Online (Inline Mode) protection.",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("serve", help="serve Slack's HTTP requests (HOST:PORT)")
    commands.add_parser("socket", help="connect to Slack over Socket Mode")
    commands.add_parser("check", help="check configuration, Redis, Slack and Microsoft")
    commands.add_parser("demo", help="play the whole conversation against the built-in sandbox")
    return parser


def main(argv: Sequence[str] | None = None, *, wire: Wire) -> int:
    """Run one command; ``wire`` attaches the listeners (``handlers.main`` passes them)."""
    arguments = _parser().parse_args(argv)
    if arguments.command == "demo":  # no configuration: everything is the sandbox
        from bot import demo

        return demo.main(wire=wire)
    logging.basicConfig(
        level=os.environ.get("LOG_LEVEL", "INFO").upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    mode = Mode(arguments.command)
    try:
        settings = load_settings(_environment(), mode)
    except ConfigError as error:
        print(error, file=sys.stderr)
        return 2
    # Served on libuv's event loop: the loop's own work is a large part of each request's CPU
    # (uvicorn picks uvloop only when it creates the loop, and here the loop is made first).
    if mode is Mode.HTTP:
        uvloop.run(serve(settings, wire))
    elif mode is Mode.SOCKET:
        return uvloop.run(socket_mode(settings, wire))
    else:
        results = asyncio.run(check(settings, wire))
        for result in results:
            print(f"{'ok    ' if result.ok else 'FAILED'} {result.name}: {result.detail}")
        return 0 if all(result.ok for result in results) else 1
    return 0

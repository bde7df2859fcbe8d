"""Shared fixtures: a private redis-server for the whole run, a valid environment, and (through
``tests.microsoft_cloud``) the sandbox Microsoft cloud over real TLS."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest
import stamina
from redis.asyncio import Redis

from bot.sandbox.redis_server import RedisServer

pytest_plugins = ["tests.microsoft_cloud"]  # the sandbox Microsoft cloud's fixtures

MAILFLOW_CLIENT_ID = "11111111-2222-3333-4444-555555555555"
DIRSYNC_CLIENT_ID = "66666666-7777-8888-9999-000000000000"
SIGNING_SECRET = "sandbox-signing-secret-0123456789"
METRICS_TOKEN = "sandbox-metrics-token-0123456789abcdef"
METRICS_AUTH = {"Authorization": f"Bearer {METRICS_TOKEN}"}
MAILFLOW_SECRET = "mailflow-client-secret-value"
DIRSYNC_SECRET = "dirsync-client-secret-value"


def base_environment(**overrides: str) -> dict[str, str]:
    """Every variable of DESIGN §5 with a valid value; tests override or drop what they need."""
    environment = {
        "SLACK_BOT_TOKEN": "xoxb-sandbox-token",
        "SLACK_SIGNING_SECRET": SIGNING_SECRET,
        "SLACK_API_URL": "http://127.0.0.1:9/api/",
        "REDIS_URL": "redis://127.0.0.1:6379/0",
        "PUBLIC_URL": "https://provision.example.test",
        "PROVISION_ADMINS": "U0ADMIN,S0ADMINS",
        "PROVISION_APPROVERS": "U0APPROVER",
        "MAILFLOW_CLIENT_ID": MAILFLOW_CLIENT_ID,
        "MAILFLOW_CLIENT_SECRET": MAILFLOW_SECRET,
        "DIRSYNC_CLIENT_ID": DIRSYNC_CLIENT_ID,
        "DIRSYNC_CLIENT_SECRET": DIRSYNC_SECRET,
        "MICROSOFT_LOGIN_URL": "https://127.0.0.1:9/login",
        "MICROSOFT_GRAPH_URL": "https://127.0.0.1:9/graph",
        "MICROSOFT_EXCHANGE_URL": "https://127.0.0.1:9/exchange",
        "INLINE_INBOUND_SMART_HOST": "inbound.relay.example.net",
        "INLINE_OUTBOUND_SMART_HOST": "outbound.relay.example.net",
        "INLINE_IP_RANGES": "203.0.113.0/24,198.51.100.7",
        "INLINE_TLS_CERTIFICATE_NAME": "relay.example.net",
        "INLINE_SCANNED_HEADER": "X-Inline-Scanned",
        "METRICS_TOKEN": METRICS_TOKEN,
    }
    environment.update(overrides)
    return environment


@pytest.fixture(autouse=True)
def instant_retries() -> Iterator[None]:
    """stamina's testing mode: retries of Microsoft calls happen at once, never really waiting,
    as often as the policy allows (``cap``). Tests see them through ``tests.microsoft_cloud``'s
    ``recording_retries``."""
    with stamina.set_testing(True, attempts=1000, cap=True):
        yield


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    server = RedisServer()
    server.start()
    try:
        yield server
    finally:
        server.close()


@pytest.fixture
async def redis(redis_server: RedisServer) -> AsyncIterator[Redis]:
    """A clean database on the private server for each test."""
    client = Redis.from_url(redis_server.url)
    await client.flushall()
    try:
        yield client
    finally:
        await client.aclose()


#: The user property a chaos run's figures travel in to the terminal summary (here, not in
#: tests/reliability: with xdist only the root conftest runs in the controller).
CHAOS_SUMMARY = "chaos summary"


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """Each chaos run's figures (kills, restarts, requests, late acks, violations); they come
    in the test reports, so a run on an xdist worker is summarised too."""
    for reports in terminalreporter.stats.values():
        for report in reports:
            for name, value in getattr(report, "user_properties", ()):
                if name != CHAOS_SUMMARY or getattr(report, "when", "") != "call":
                    continue
                form, described = value
                terminalreporter.write_sep("-", f"chaos suite, {form} form")
                for line in described.splitlines():
                    terminalreporter.write_line(line)

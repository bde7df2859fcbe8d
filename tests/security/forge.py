"""What the attacker's tests share: a request rebuilt with a changed payload (signed when sent,
as a leaked signing secret or a replaying proxy would), and a server that records whatever the
bot might send to an address the attacker controls."""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field, replace
from typing import Any
from urllib.parse import urlencode

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from bot.sandbox.server import serve_asgi
from bot.sandbox.slack_driver import SignedRequest
from tests.integration.conftest import Harness

__all__ = ["Listener", "listening", "session_keys", "slack_effects", "with_payload"]


def with_payload(request: SignedRequest, payload: dict[str, Any]) -> SignedRequest:
    """``request`` carrying ``payload`` instead, encoded as Slack encodes that kind."""
    if request.kind == "slash_command":
        body = urlencode(payload).encode()
    elif request.content_type == "application/json":
        body = json.dumps(payload, separators=(",", ":")).encode()
    else:
        body = urlencode({"payload": json.dumps(payload, separators=(",", ":"))}).encode()
    return replace(request, body=body, payload=payload)


@dataclass
class Listener:
    """An address of the attacker's: every request that reaches it is kept."""

    url: str = ""
    received: list[str] = field(default_factory=list)


@contextlib.asynccontextmanager
async def listening() -> AsyncIterator[Listener]:
    listener = Listener()

    async def record(request: Request) -> Response:
        listener.received.append(f"{request.method} {request.url.path}")
        return PlainTextResponse("ok")

    app = Starlette(routes=[Route("/{path:path}", record, methods=["GET", "POST", "PUT"])])
    async with serve_asgi(app) as server:
        listener.url = f"{server.base_url}/hooks/T0/B0/attacker"
        yield listener


def slack_effects(harness: Harness) -> list[str]:
    """Every call the bot made to Slack so far (Web API and response URLs alike; not the Socket
    Mode envelopes Slack sent it, nor the acks they got)."""
    return [
        str(call.method)
        for call in harness.slack.calls
        if not str(call.method).startswith("socket_mode.")
    ]


async def session_keys(harness: Harness) -> list[bytes]:
    """The bot's state in Redis, without the duplicate filter's claims (every delivery, even a
    refused one, may leave a claim of its ids: that is the filter at work, not a change)."""
    return sorted(k for k in await harness.redis.keys("pi:*") if not k.startswith(b"pi:once:"))


def interaction(harness: Harness, payload: dict[str, Any]) -> SignedRequest:
    """A block action or submission with exactly ``payload`` (for shapes Slack would not send)."""
    base = SignedRequest(
        kind=str(payload.get("type", "block_actions")),
        url=harness.driver.events_url,
        body=b"",
        content_type="application/x-www-form-urlencoded",
        payload={},
    )
    return with_payload(base, payload)

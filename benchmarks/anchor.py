"""The anchor: the fastest a Bolt app can answer Slack on this machine.

A bare Bolt ``AsyncApp`` whose listeners only call ``ack()``, behind the product's server stack:
the same Starlette route body (``to_async_bolt_request`` → ``async_dispatch`` →
``to_starlette_response``), the same uvicorn settings as ``provision-inline-bot serve``
(``bot.cli``: log level info with access log, proxy headers; uvloop and httptools, which
uvicorn picks when installed and the product runs on), the same Slack client and request
verification (signed requests, the same signing secret). Run as its own process::

    SLACK_SIGNING_SECRET=… SLACK_BOT_TOKEN=… SLACK_API_URL=… PORT=… python -m benchmarks.anchor
"""

from __future__ import annotations

import logging
import os
import re

import uvicorn
from slack_bolt.adapter.starlette.async_handler import (
    to_async_bolt_request,
    to_starlette_response,
)
from slack_bolt.async_app import AsyncApp
from slack_bolt.context.ack.async_ack import AsyncAck
from slack_sdk.web.async_client import AsyncWebClient
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route


async def only_ack(ack: AsyncAck) -> None:
    await ack()


def build(signing_secret: str, token: str, api_url: str) -> Starlette:
    bolt = AsyncApp(
        client=AsyncWebClient(token=token, base_url=api_url),
        signing_secret=signing_secret,
        request_verification_enabled=True,
        process_before_response=False,
        logger=logging.getLogger("anchor.bolt"),
    )
    everything = re.compile(".*")
    bolt.command(re.compile("^/.*"))(only_ack)
    bolt.action(everything)(only_ack)
    bolt.view(everything)(only_ack)
    bolt.event("app_home_opened")(only_ack)

    async def slack_events(request: Request) -> Response:
        body = await request.body()
        return to_starlette_response(
            await bolt.async_dispatch(to_async_bolt_request(request, body))
        )

    async def healthz(request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    return Starlette(
        routes=[
            Route("/slack/events", slack_events, methods=["POST"]),
            Route("/healthz", healthz, methods=["GET"]),
        ]
    )


def main() -> None:
    logging.basicConfig(
        level=os.environ.get("LOG_LEVEL", "INFO").upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    app = build(
        os.environ["SLACK_SIGNING_SECRET"],
        os.environ["SLACK_BOT_TOKEN"],
        os.environ["SLACK_API_URL"],
    )
    config = uvicorn.Config(
        app,
        host=os.environ.get("HOST", "127.0.0.1"),
        port=int(os.environ["PORT"]),
        log_level="info",
        proxy_headers=True,
        timeout_graceful_shutdown=10,
    )
    uvicorn.Server(config).run()


if __name__ == "__main__":
    main()

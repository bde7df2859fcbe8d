"""The HTTP face: ``/slack/events`` (Bolt), ``/microsoft/callback``, ``/healthz``, ``/metrics``.

The expiry timer lives in the web app's lifespan, so it runs in ``serve`` and ``socket`` alike and
stops with the server.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import Counter
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING
from urllib.parse import parse_qs

from redis.exceptions import RedisError
from slack_bolt.adapter.starlette.async_handler import AsyncSlackRequestHandler
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Route

from bot.web import pages

if TYPE_CHECKING:
    from bot.app import Runtime

logger = logging.getLogger(__name__)


def _payload_kind(request: Request, body: bytes) -> str:
    """What Slack sent, for the metrics: an event (JSON), an interaction, or a command."""
    if request.headers.get("content-type", "").startswith("application/json"):
        return "event"
    fields = parse_qs(body.decode(errors="replace"), max_num_fields=50)
    if "payload" in fields:
        return "interactive"
    if "command" in fields:
        return "slash_command"
    return "other"


def build_web(runtime: Runtime, *, sweep_interval_seconds: float | None) -> Starlette:
    slack_handler = AsyncSlackRequestHandler(runtime.bolt)

    async def slack_events(request: Request) -> Response:
        started = time.perf_counter()
        body = await request.body()
        response = await slack_handler.handle(request)
        runtime.metrics.observe_ack(
            _payload_kind(request, body), response.status_code, time.perf_counter() - started
        )
        return response

    async def microsoft_callback(request: Request) -> Response:
        # Consents come back as GET with a query; the role sign-in as a form POST.
        if request.method == "POST":
            form = await request.form()
            params = {key: value for key, value in form.items() if isinstance(value, str)}
        else:
            params = dict(request.query_params)
        page = await runtime.callbacks.returned(params)
        return HTMLResponse(
            pages.render(page),
            status_code=page.status,
            headers={
                "Cache-Control": "no-store",
                "Referrer-Policy": "no-referrer",
                "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'",
                "X-Frame-Options": "DENY",
            },
        )

    async def healthz(request: Request) -> Response:
        try:
            async with asyncio.timeout(2):
                await runtime.store.ping()
        except (RedisError, OSError, TimeoutError) as error:
            return JSONResponse(
                {"status": "unavailable", "redis": f"unreachable ({type(error).__name__})"},
                status_code=503,
            )
        return JSONResponse({"status": "ok", "redis": "ok"})

    async def metrics(request: Request) -> Response:
        try:
            phases = Counter(session.phase.value for session in await runtime.store.active())
        except (RedisError, OSError):
            phases = Counter()
        body, content_type = runtime.metrics.render(phases, request.headers.get("accept", ""))
        return Response(body, headers={"Content-Type": content_type})

    async def sweep_periodically(interval: float) -> None:
        """Expire idle sessions and resume background jobs whose process went away."""
        while True:
            try:
                await runtime.jobs.resume_orphans()
                await runtime.role_step.remind_and_expire()
                await runtime.provisioner.expire_idle()
            except (RedisError, OSError):
                logger.warning("sweep skipped: Redis unavailable", exc_info=True)
            await asyncio.sleep(interval)  # a timer, not a wait for some other work

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        timer = (
            asyncio.create_task(sweep_periodically(sweep_interval_seconds))
            if sweep_interval_seconds
            else None
        )
        try:
            yield
        finally:
            if timer is not None:
                timer.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await timer

    return Starlette(
        routes=[
            Route("/slack/events", slack_events, methods=["POST"]),
            Route("/microsoft/callback", microsoft_callback, methods=["GET", "POST"]),
            Route("/healthz", healthz, methods=["GET"]),
            Route("/metrics", metrics, methods=["GET"]),
        ],
        lifespan=lifespan,
    )

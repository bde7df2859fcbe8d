"""The HTTP face: ``/slack/events`` (Bolt), ``/microsoft/callback``, ``/healthz``, ``/metrics``.

The expiry timer lives in the web app's lifespan, so it runs in ``serve`` and ``socket`` alike and
stops with the server.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import Counter
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

from redis.exceptions import RedisError
from slack_bolt.adapter.starlette.async_handler import AsyncSlackRequestHandler
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from bot.web import pages

if TYPE_CHECKING:
    from bot.app import Runtime

logger = logging.getLogger(__name__)


def build_web(runtime: Runtime, *, sweep_interval_seconds: float | None) -> Starlette:
    slack_handler = AsyncSlackRequestHandler(runtime.bolt)

    async def slack_events(request: Request) -> Response:
        # Acks are timed by the global middleware (handlers.middleware), in both modes.
        return await slack_handler.handle(request)

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
        return PlainTextResponse(
            runtime.metrics.render(phases), media_type="text/plain; version=0.0.4"
        )

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

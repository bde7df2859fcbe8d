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
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Route

from bot.web import pages
from handlers.limits import LimitRequestBodies

if TYPE_CHECKING:
    from bot.app import Runtime

logger = logging.getLogger(__name__)

SLACK_EVENTS = "/slack/events"
MICROSOFT_CALLBACK = "/microsoft/callback"
# Bodies above these are refused (413) before they are read.
BODY_LIMITS = {SLACK_EVENTS: 256 * 1024, MICROSOFT_CALLBACK: 8 * 1024}
_PAGE_HEADERS = {
    "Cache-Control": "no-store",
    "Referrer-Policy": "no-referrer",
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'",
    "X-Frame-Options": "DENY",
}


def page_response(page: pages.Page) -> HTMLResponse:
    """An HTML page for the admin's browser, never cached, framed or leaking the referrer."""
    return HTMLResponse(pages.render(page), status_code=page.status, headers=_PAGE_HEADERS)


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
        return page_response(await runtime.callbacks.returned(params))

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

    routes = [
        Route(MICROSOFT_CALLBACK, microsoft_callback, methods=["GET", "POST"]),
        Route("/healthz", healthz, methods=["GET"]),
        Route("/metrics", metrics, methods=["GET"]),
    ]
    if runtime.settings.slack_signing_secret is not None:
        # Without a signing secret (Socket Mode) Slack's requests come over the websocket;
        # an HTTP route that could not verify them is not served at all.
        routes.insert(0, Route(SLACK_EVENTS, slack_events, methods=["POST"]))
    return Starlette(
        routes=routes,
        lifespan=lifespan,
        middleware=[
            Middleware(
                LimitRequestBodies,
                limits=BODY_LIMITS,
                refusals={
                    MICROSOFT_CALLBACK: lambda limit: page_response(pages.request_too_large(limit))
                },
            )
        ],
    )

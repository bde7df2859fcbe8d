"""The HTTP face: ``/slack/events`` (Bolt), ``/microsoft/callback``, ``/healthz``, ``/metrics``.

The timers live in the web app's lifespan, so they run in ``serve`` and ``socket`` alike and stop
with the server: the sweep (reminders, expiry; every minute) and the orphan check (jobs whose
process died; every few seconds, see ``bot.jobs``).
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING

import aiohttp
from redis.exceptions import RedisError
from slack_bolt.adapter.starlette.async_handler import (
    to_async_bolt_request,
    to_starlette_response,
)
from slack_bolt.request.async_request import AsyncBoltRequest
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from bot.web import pages
from bot.workflow import TERMINAL, Phase
from handlers.limits import LimitRequestBodies

if TYPE_CHECKING:
    from bot.app import Runtime
    from handlers.door import Door

logger = logging.getLogger(__name__)

SLACK_EVENTS = "/slack/events"
MICROSOFT_CALLBACK = "/microsoft/callback"
# Bodies above these are refused (413) before they are read.
BODY_LIMITS = {SLACK_EVENTS: 256 * 1024, MICROSOFT_CALLBACK: 8 * 1024}
# What only the role-assignment sign-in carries: accepted by form POST only (response_mode=
# form_post), never in a URL that browsers, proxies and access logs keep.
SIGN_IN_ANSWER = frozenset({"code", "id_token", "access_token"})
_PAGE_HEADERS = {
    "Cache-Control": "no-store",
    "Referrer-Policy": "no-referrer",
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'",
    "X-Frame-Options": "DENY",
}


def page_response(page: pages.Page) -> HTMLResponse:
    """An HTML page for the admin's browser, never cached, framed or leaking the referrer."""
    return HTMLResponse(pages.render(page), status_code=page.status, headers=_PAGE_HEADERS)


# How often each replica looks for outbox entries nobody is delivering: with the delivery lease
# (``DeliveryPolicy.lease_seconds``) it bounds how late a crashed process's messages arrive.
OUTBOX_PASS_SECONDS = 1.0

ACTIVE_PHASES = [phase.value for phase in Phase if phase not in TERMINAL]


def metrics_allowed(request: Request, token: str | None) -> bool:
    """``Authorization: Bearer <METRICS_TOKEN>``, compared in constant time; without a token
    configured, nobody (``/metrics`` is off)."""
    if token is None:
        return False
    scheme, _, given = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer":
        return False
    return hmac.compare_digest(given.strip().encode(), token.encode())


def build_web(
    runtime: Runtime,
    *,
    door: Door | None,
    sweep_interval_seconds: float | None,
    orphan_check_seconds: float | None,
) -> Starlette:
    """The web app; ``door`` answers what it can of ``/slack/events`` before Bolt runs.
    Without a door (no signing secret: Socket Mode) that route is not served at all: Slack's
    requests come over the websocket, and an HTTP route could not verify them."""
    configured = runtime.settings.metrics_token
    metrics_token = configured.reveal() if configured is not None else None

    def slack_events_through(door: Door) -> Callable[[Request], Awaitable[Response]]:
        async def slack_events(request: Request) -> Response:
            # Acks are timed by the door or the global middleware (handlers.middleware); from
            # here to the answer no new acked work starts (acks first, bot.ops.inflight).
            with runtime.inflight.acking():
                return await answer_slack(request, arrived=time.perf_counter())

        def malformed_slack_request(request: Request, body: bytes, error: Exception) -> Response:
            """A body that is not a Slack payload: 401 unless signed (as Bolt would answer),
            else 400 and one log line naming the error's kind (never the body: it may hold
            secrets)."""
            if not door.signatures.carried_in(body, lambda name: request.headers.get(name, "")):
                return PlainTextResponse("Unauthorized", status_code=401)
            logger.warning(
                "refused a signed Slack request whose body could not be read (%s)",
                type(error).__name__,
            )
            return PlainTextResponse("Malformed Slack request.", status_code=400)

        async def answer_slack(request: Request, *, arrived: float) -> Response:
            body = await request.body()
            # What a body Bolt cannot parse makes it raise: bad JSON or UTF-8, a payload of the
            # wrong shape (a list, a number where an object is expected).
            try:
                bolt_request: AsyncBoltRequest = to_async_bolt_request(request, body)
            except (ValueError, TypeError, AttributeError, LookupError) as error:
                return malformed_slack_request(request, body, error)
            answered = await door.answer(bolt_request, body, arrived=arrived)
            if answered is not None:
                return answered
            return to_starlette_response(await runtime.bolt.async_dispatch(bolt_request))

        return slack_events

    async def microsoft_callback(request: Request) -> Response:
        # Consents come back as GET with a query; the role sign-in as a form POST, only.
        if request.method == "POST":
            form = await request.form()
            params = {key: value for key, value in form.items() if isinstance(value, str)}
        else:
            params = dict(request.query_params)
            if SIGN_IN_ANSWER & params.keys():
                logger.warning("refused a sign-in answer sent by GET; its state was not used")
                return page_response(pages.sign_in_answer_by_get())
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
        if not metrics_allowed(request, metrics_token):
            return PlainTextResponse(
                "Unauthorized: /metrics needs Authorization: Bearer <METRICS_TOKEN>"
                + ("" if metrics_token else " (no METRICS_TOKEN is configured: /metrics is off)"),
                status_code=401,
                headers={"WWW-Authenticate": 'Bearer realm="metrics"'},
            )
        outbox: dict[str, int] = {}
        phases: dict[str, int] = {}
        try:
            counted = await runtime.store.count_in_phases(ACTIVE_PHASES)
            phases = {phase: count for phase, count in counted.items() if count}
            outbox["pending"] = await runtime.store.outbox.count_pending()
            outbox["undelivered"] = await runtime.store.outbox.count_undelivered()
        except (RedisError, OSError):
            phases = {}
        body, content_type = runtime.metrics.render(
            phases, request.headers.get("accept", ""), outbox=outbox
        )
        return Response(body, headers={"Content-Type": content_type})

    async def sweep_periodically(interval: float) -> None:
        """Remind approvers, close stale role requests, expire idle sessions."""
        while True:
            try:
                await runtime.role_step.remind_and_expire()
                await runtime.provisioner.expire_idle()
            except (RedisError, OSError):
                logger.warning("sweep skipped: Redis unavailable", exc_info=True)
            await asyncio.sleep(interval)  # a timer, not a wait for some other work

    async def deliver_periodically(interval: float) -> None:
        """Deliver outbox entries nobody delivered (their process died, Slack failed for a
        while): every replica passes often, the delivery lease keeps them from doubling up."""
        while True:
            try:
                await runtime.provisioner.deliver_pending()
            except (RedisError, OSError):
                logger.warning("outbox pass skipped: Redis unavailable", exc_info=True)
            await asyncio.sleep(interval)  # a timer, not a wait for some other work

    async def check_orphans_periodically(interval: float) -> None:
        """Resume background jobs whose process went away: often, since the thread promises
        when a job acts next (``bot.jobs.RESUME_WITHIN_SECONDS`` counts this interval)."""
        while True:
            try:
                await runtime.jobs.resume_orphans()
            except (RedisError, OSError):
                logger.warning("orphan check skipped: Redis unavailable", exc_info=True)
            await asyncio.sleep(interval)  # a timer, not a wait for some other work

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        try:
            migrated = await runtime.store.migrate_indexes()
        except (RedisError, OSError):
            logger.warning("could not check the session indexes: Redis unavailable")
        else:
            if migrated:
                logger.info("indexed %d active sessions of an earlier version", migrated)
        # One pool of connections to Slack for the process's lifetime: without it slack_sdk
        # opens (and, against Slack, handshakes) a connection for every call.
        slack_pool = aiohttp.ClientSession()
        runtime.slack.session = slack_pool
        # The outbox pass runs where the sweep does (serving, not the tests' in-process bot).
        outbox_pass = OUTBOX_PASS_SECONDS if sweep_interval_seconds else None
        timers = [
            asyncio.create_task(timer(interval))
            for timer, interval in (
                (sweep_periodically, sweep_interval_seconds),
                (check_orphans_periodically, orphan_check_seconds),
                (deliver_periodically, outbox_pass),
            )
            if interval
        ]
        try:
            yield
        finally:
            for timer in timers:
                timer.cancel()
            for timer in timers:
                with contextlib.suppress(asyncio.CancelledError):
                    await timer
            runtime.slack.session = None  # work still finishing opens its own connections
            await slack_pool.close()

    routes = [
        Route(MICROSOFT_CALLBACK, microsoft_callback, methods=["GET", "POST"]),
        Route("/healthz", healthz, methods=["GET"]),
        Route("/metrics", metrics, methods=["GET"]),
    ]
    if door is not None:
        routes.insert(0, Route(SLACK_EVENTS, slack_events_through(door), methods=["POST"]))
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

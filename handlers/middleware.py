"""Global middleware, in the order ``handlers.wire`` installs it (after Bolt's own checks, so only
verified requests get here), for HTTP and Socket Mode alike:

1. ``RequestScope``: puts the ``Services`` into the request's context and gives the request an
   ``ack`` that times itself (the ack latency metric), enrols the listener's task as work in
   flight (so SIGTERM drains acked work), and stays given once given.
2. ``drop_duplicate_deliveries``: Slack's redeliveries are acked and dropped before any listener
   sees them.

Why an ack that stays given: when a listener that has already acked fails within Bolt's 10 ms
polling of the ack, Bolt's runner resets the ack to None and Slack sees a 404 after three
seconds. With this ack, Slack gets the 200 it was promised and the error still reaches the error
handler (``handlers.errors``), which logs it with its traceback and tells the user.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from slack_bolt.context.ack.async_ack import AsyncAck
from slack_bolt.context.async_context import AsyncBoltContext
from slack_bolt.middleware.async_middleware import AsyncMiddleware
from slack_bolt.request.async_request import AsyncBoltRequest
from slack_bolt.request.payload_utils import is_event, is_slash_command
from slack_bolt.response import BoltResponse

from bot.ops.inflight import InFlight
from bot.ops.metrics import Metrics
from handlers.services import CONTEXT_KEY, Services, services

__all__ = ["RequestScope", "TrackedAck", "delivery_key", "drop_duplicate_deliveries", "kind_of"]

logger = logging.getLogger(__name__)


def kind_of(body: dict[str, Any]) -> str:
    """What Slack sent, for the metrics: a slash command, an event, or an interaction."""
    if is_slash_command(body):
        return "slash_command"
    if is_event(body):
        return "event"
    if body.get("type"):
        return "interactive"
    return "other"


class TrackedAck(AsyncAck):
    """Bolt's ``ack`` that also observes its own latency, enrols the acking listener's task as
    in flight, and is never taken back once given (see the module's docstring)."""

    def __init__(
        self, *, kind: str, metrics: Metrics, inflight: InFlight, clock: Callable[[], float]
    ) -> None:
        self._given: BoltResponse | None = None
        super().__init__()  # type: ignore[no-untyped-call]
        self._kind = kind
        self._metrics = metrics
        self._inflight = inflight
        self._clock = clock
        self._started = clock()
        # The task that dispatches the request: an ack given there (Bolt's automatic ack of
        # events) is not the listener's; the listener enrols itself by acking in its own task.
        self._dispatching = asyncio.current_task()

    @property
    def response(self) -> BoltResponse | None:
        return self._given

    @response.setter
    def response(self, value: BoltResponse | None) -> None:
        if value is None:
            return  # Bolt's reset after a failing listener: what Slack was told stands
        first = self._given is None
        self._given = value
        task = asyncio.current_task()
        if task is not None and task is not self._dispatching:
            self._inflight.enrol(task)
        if first:
            self._metrics.observe_ack(self._kind, value.status, self._clock() - self._started)


class RequestScope(AsyncMiddleware):
    """Global middleware: ``Services`` into the context, and a ``TrackedAck`` for the request."""

    def __init__(
        self, services: Services, *, clock: Callable[[], float] = time.perf_counter
    ) -> None:
        self._services = services
        self._clock = clock

    async def async_process(
        self,
        *,
        req: AsyncBoltRequest,
        resp: BoltResponse,
        next: Callable[[], Awaitable[BoltResponse]],
    ) -> BoltResponse | None:
        req.context[CONTEXT_KEY] = self._services
        req.context["ack"] = TrackedAck(
            kind=kind_of(req.body),
            metrics=self._services.metrics,
            inflight=self._services.inflight,
            clock=self._clock,
        )
        await next()
        # None, not ``resp``: a response here would replace the listener's ack (its body).
        return None


def delivery_key(body: dict[str, Any]) -> str | None:
    """The id that is the same for every delivery of one Slack request, if it has one.

    Slack redelivers a request it thinks failed (``X-Slack-Retry-Num``), and a flaky network can
    deliver the same request twice: ``event_id`` for events, ``trigger_id`` for commands, clicks
    and submissions.
    """
    if body.get("event_id"):
        return f"event:{body['event_id']}"
    if body.get("trigger_id"):
        return f"trigger:{body['trigger_id']}"
    return None


async def drop_duplicate_deliveries(
    body: dict[str, Any],
    context: AsyncBoltContext,
    ack: AsyncAck,
    next: Callable[[], Awaitable[None]],
) -> BoltResponse | None:
    """Global middleware: the first delivery claims its id in Redis (``SET NX``); any later one
    is acked and dropped."""
    key = delivery_key(body)
    found = services(context)
    if key is not None and not await found.store.claim_once(key, ttl=3600):
        found.metrics.count_duplicate()
        logger.info("dropped a duplicate Slack delivery (%s)", key.split(":", 1)[0])
        return await ack()
    await next()
    return None

"""Global middleware, in the order ``handlers.wire`` installs it (after Bolt's own checks, so only
verified requests get here), for HTTP and Socket Mode alike. Over HTTP a command, a click or an
event was answered at the door before Bolt ran (``handlers.door``, ``ANSWERED_AT_DOOR_KEY``):
the same chain then runs as its acked work, its duplicate filter already applied.

1. ``RequestScope``: puts the ``Services`` into the request's context and gives the request an
   ``ack`` that times itself (the ack latency metric), enrols the listener's task as work in
   flight (so SIGTERM drains acked work), waits for a work slot (acks first) unless its listener
   opens a form, and stays given once given.
2. ``RefuseMalformedPayloads`` (installed first, before Bolt builds any listener's arguments):
   a payload without the fields every listener relies on (who,
   where, which button, which form) is answered 400 over HTTP (an ack in Socket Mode, so Slack
   does not redeliver it) and logged once, naming the missing field, never the payload.
3. ``refuse_foreign_response_urls``: the bot replies only to Slack's response URLs; a request
   carrying another one (its own or a modal's carried ``response_url``) is acked, logged and
   dropped, so nothing is ever POSTed there.
4. ``drop_duplicate_deliveries``: Slack's redeliveries and exact replays of a signed request are
   acked and dropped before any listener sees them (``first_delivery``, shared with the door).
   Its claims ride out a Redis blip (retried until the request's deadline, ``handlers.blips``);
   past it the request is acked, nothing is done and the user is told to try again.

Why an ack that stays given: when a listener that has already acked fails within Bolt's 10 ms
polling of the ack, Bolt's runner resets the ack to None and Slack sees a 404 after three
seconds. With this ack, Slack gets the 200 it was promised and the error still reaches the error
handler (``handlers.errors``), which logs it with its traceback and tells the user.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections.abc import Awaitable, Callable
from functools import partial
from typing import Any

from slack_bolt.context.ack.async_ack import AsyncAck
from slack_bolt.context.async_context import AsyncBoltContext
from slack_bolt.middleware.async_middleware import AsyncMiddleware
from slack_bolt.request.async_request import AsyncBoltRequest
from slack_bolt.request.payload_utils import is_event, is_slash_command
from slack_bolt.response import BoltResponse

from bot.ops.inflight import InFlight
from bot.ops.metrics import Metrics
from handlers.blips import REDIS_DEADLINE_KEY, redis_deadline, tell_redis_unavailable
from handlers.reply import PooledRespond, ReplyOrigins, carried_response_urls
from handlers.services import CONTEXT_KEY, Services, services
from state.patience import BEFORE_ACK_BUDGET_SECONDS, RedisUnavailable, within

__all__ = [
    "SIGNATURE_WINDOW_SECONDS",
    "ListenerStopped",
    "RefuseMalformedPayloads",
    "RequestScope",
    "TrackedAck",
    "delivery_key",
    "drop_duplicate_deliveries",
    "first_delivery",
    "foreign_response_urls",
    "kind_of",
    "malformed",
    "refuse_foreign_response_urls",
]

#: Bolt refuses a signed request whose timestamp is more than 5 minutes from now (either way),
#: so one signature can be replayed for at most 10 minutes: its claim outlives that.
SIGNATURE_WINDOW_SECONDS = 15 * 60

#: In a request's context when ``handlers.door`` answered Slack before Bolt ran: the ack is
#: given, the delivery claimed, and the task running Bolt holds the request's work slot (or,
#: for a listener that opens a form, needs none).
ANSWERED_AT_DOOR_KEY = "provision_inline_answered_at_door"

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


class ListenerStopped(Exception):
    """Raised from a listener's ``ack()`` when a check made after the ack (``check_after``)
    refused the request: the listener goes no further, and nothing is wrong."""


class TrackedAck(AsyncAck):
    """Bolt's ``ack`` that also observes its own latency, enrols the acking listener's task as
    in flight, and is never taken back once given (see the module's docstring).

    ``answered_at_door``: Slack was answered before Bolt ran (``handlers.door``), which observed
    the latency; the ack stands given, and the task running Bolt already holds a work slot."""

    def __init__(
        self,
        *,
        kind: str,
        metrics: Metrics,
        inflight: InFlight,
        clock: Callable[[], float],
        opens_a_form: bool = False,
        answered_at_door: bool = False,
    ) -> None:
        self._given: BoltResponse | None = None
        super().__init__()  # type: ignore[no-untyped-call]
        self._kind = kind
        self._metrics = metrics
        self._inflight = inflight
        self._clock = clock
        self._went_on = False
        self.opens_a_form = opens_a_form  # its work runs at once: Slack's trigger id lasts 3 s
        self.answered_at_door = answered_at_door
        if answered_at_door:
            self._given = BoltResponse(status=200, body="")
        self._checks: list[Callable[[], Awaitable[bool]]] = []
        self._waiter: asyncio.Future[None] | None = None
        self._started = clock()
        # The task that dispatches the request: an ack given there (Bolt's automatic ack of
        # events) is not the listener's; the listener enrols itself by acking in its own task.
        self._dispatching = asyncio.current_task()

    async def __call__(self, *args: Any, **kwargs: Any) -> BoltResponse:
        """Ack, then wait for a work slot before the listener goes on (acks first): the ack is
        already given, so Slack has its answer whatever the wait; the slot is the listener
        task's until it ends. Then the checks made after the ack (``check_after``)."""
        given: BoltResponse = await super().__call__(*args, **kwargs)
        task = asyncio.current_task()
        if task is None or self._went_on:
            return given
        if not self.answered_at_door:
            if task is self._dispatching:
                return given  # Bolt's automatic ack, not the listener's
            if not self.opens_a_form:
                await self._inflight.take_slot()
        self._went_on = True
        for check in self._checks:
            if not await check():
                raise ListenerStopped
        return given

    def check_after(self, check: Callable[[], Awaitable[bool]]) -> None:
        """Run ``check`` in the listener's task right after its ack (and its slot), before the
        listener goes on; when it answers False, the listener stops there (``ListenerStopped``):
        the check has told the user why. The ack stays given."""
        self._checks.append(check)

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
            if self._waiter is not None and not self._waiter.done():
                self._waiter.set_result(None)

    def when_given(self, waiter: asyncio.Future[None]) -> None:
        """Resolve ``waiter`` when the ack is given (at once if it already is): the runner
        answers Slack then (``handlers.runner``)."""
        if self._given is not None:
            if not waiter.done():
                waiter.set_result(None)
            return
        self._waiter = waiter


class RequestScope(AsyncMiddleware):
    """Global middleware: ``Services`` into the context, and a ``TrackedAck`` for the request.

    ``opens_a_form(body)``: whether the request's listener opens a modal after its ack. Slack's
    trigger id lasts 3 s, so its work does not wait in line behind other acked work."""

    def __init__(
        self,
        services: Services,
        *,
        opens_a_form: Callable[[dict[str, Any]], bool] = lambda body: False,
        clock: Callable[[], float] = time.perf_counter,
    ) -> None:
        self._services = services
        self._opens_a_form = opens_a_form
        self._clock = clock

    async def async_process(
        self,
        *,
        req: AsyncBoltRequest,
        resp: BoltResponse,
        next: Callable[[], Awaitable[BoltResponse]],
    ) -> BoltResponse | None:
        req.context[CONTEXT_KEY] = self._services
        # One deadline for every Redis call before the ack (see handlers.blips).
        req.context[REDIS_DEADLINE_KEY] = (
            asyncio.get_running_loop().time() + BEFORE_ACK_BUDGET_SECONDS
        )
        # Bolt's own respond opens a new connection per reply; this one reuses the pool.
        req.context["respond"] = PooledRespond(
            response_url=req.context.response_url, replies=self._services.replies
        )
        req.context["ack"] = TrackedAck(
            kind=kind_of(req.body),
            metrics=self._services.metrics,
            inflight=self._services.inflight,
            clock=self._clock,
            opens_a_form=self._opens_a_form(req.body),
            answered_at_door=bool(req.context.get(ANSWERED_AT_DOOR_KEY)),
        )
        if req.mode == "http":
            await next()  # counted as being acked by the web route, from its arrival
        else:
            with self._services.inflight.acking():  # acks first: no new work starts meanwhile
                await next()
        # None, not ``resp``: a response here would replace the listener's ack (its body).
        return None


def _is_text(value: Any) -> bool:
    return isinstance(value, str) and bool(value)


def _user_problem(body: dict[str, Any]) -> str | None:
    user = body.get("user")
    if not isinstance(user, dict) or not _is_text(user.get("id")):
        return "no user.id"
    return None


def malformed(body: dict[str, Any]) -> str | None:
    """What is missing from a payload the listeners would act on (None when nothing is).

    Only the fields every listener of that kind reads: who sent it, where, which button or form;
    a kind the app does not handle is left to Bolt (it matches no listener).
    """
    if "command" in body:
        for name in ("command", "user_id", "channel_id"):
            if not _is_text(body.get(name)):
                return f"no {name}"
        for name in ("text", "response_url", "trigger_id"):
            if name in body and not isinstance(body[name], str):
                return f"{name} is not text"
        return None
    kind = body.get("type")
    if kind == "block_actions":
        actions = body.get("actions")
        if not isinstance(actions, list) or not actions:
            return "no actions"
        if not all(isinstance(a, dict) and _is_text(a.get("action_id")) for a in actions):
            return "an action without action_id"
        if any("value" in a and not isinstance(a["value"], str) for a in actions):
            return "an action value that is not text"
        for name in ("container", "channel", "view", "message"):
            if body.get(name) is not None and not isinstance(body[name], dict):
                return f"{name} is not an object"
        return _user_problem(body)
    if kind in ("view_submission", "view_closed"):
        view = body.get("view")
        if not isinstance(view, dict) or not _is_text(view.get("callback_id")):
            return "no view.callback_id"
        if not isinstance(view.get("private_metadata", ""), str):
            return "view.private_metadata is not text"
        state = view.get("state", {}) if kind == "view_closed" else view.get("state")
        if not isinstance(state, dict) or not isinstance(state.get("values", {}), dict):
            return "no view.state.values"
        urls = body.get("response_urls", [])
        if not isinstance(urls, list) or not all(isinstance(u, dict) for u in urls):
            return "response_urls is not a list of objects"
        return _user_problem(body)
    if kind == "event_callback":
        event = body.get("event")
        if not isinstance(event, dict) or not _is_text(event.get("type")):
            return "no event.type"
    return None


class RefuseMalformedPayloads(AsyncMiddleware):
    """Global middleware, the first of ours: a verified payload missing what the listeners need
    does nothing. A class, so it sees the request before Bolt builds any listener's arguments
    (which would fail on such a payload: ``actions`` that is not a list, ...)."""

    async def async_process(
        self,
        *,
        req: AsyncBoltRequest,
        resp: BoltResponse,
        next: Callable[[], Awaitable[BoltResponse]],
    ) -> BoltResponse | None:
        body = req.body if isinstance(req.body, dict) else {}
        problem = malformed(body) if body is req.body else "not an object"
        if problem is None:
            await next()
            return None
        logger.warning("refused a malformed Slack %s: %s", kind_of(body), problem)
        if req.mode == "socket_mode":
            return BoltResponse(status=200, body="")  # acked (no redelivery), nothing done
        return BoltResponse(status=400, body="Malformed Slack request.")


def foreign_response_urls(body: dict[str, Any], origins: ReplyOrigins) -> list[str]:
    """The response URLs ``body`` carries that are not Slack's (``carried_response_urls``)."""
    return [url for url in carried_response_urls(body) if not origins.allows(url)]


async def refuse_foreign_response_urls(
    body: dict[str, Any],
    context: AsyncBoltContext,
    ack: AsyncAck,
    next: Callable[[], Awaitable[None]],
) -> BoltResponse | None:
    """Global middleware: a request whose response URL is not Slack's is acked and dropped."""
    origins = services(context).replies.origins
    foreign = foreign_response_urls(body, origins)
    if not foreign:
        await next()
        return None
    logger.warning(
        "refused a Slack %s whose response_url points to %s, not Slack: nothing was sent there",
        kind_of(body),
        ", ".join(sorted({origins.describe(url) for url in foreign})),
    )
    return await ack()


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


def signature_key(request: AsyncBoltRequest | None) -> str | None:
    """What is unique to one genuine HTTP delivery, whatever its payload: its signature (an HMAC
    of the timestamp and the body). An exact replay carries the same one; Socket Mode has none
    (its envelopes come over the app's own authenticated connection)."""
    if request is None or request.mode != "http":
        return None
    signatures = request.headers.get("x-slack-signature") or []
    return f"signature:{signatures[0]}" if signatures and signatures[0] else None


async def first_delivery(
    found: Services, body: dict[str, Any], request: AsyncBoltRequest | None, deadline: float
) -> bool:
    """Claim the request's delivery id in Redis (``SET NX``), or its signature when it has none:
    True for the first delivery, False for a later one (counted and logged). Retried until
    ``deadline`` (the event loop's clock), then ``RedisUnavailable``."""
    # An exact replay carries the same delivery id as the original: the signature is claimed
    # only for a payload without one.
    key, ttl = delivery_key(body), 3600
    if key is None:
        key, ttl = signature_key(request), SIGNATURE_WINDOW_SECONDS
    if key is None:
        return True
    token = secrets.token_hex(8)  # this delivery's: a retried claim recognises itself
    claim = partial(found.store.claim_once, key, ttl=ttl, token=token)
    if await within(deadline, "duplicate filter", claim):
        return True
    found.metrics.count_duplicate()
    logger.info("dropped a duplicate Slack delivery (%s)", key.split(":", 1)[0])
    return False


async def drop_duplicate_deliveries(
    body: dict[str, Any],
    context: AsyncBoltContext,
    ack: AsyncAck,
    next: Callable[[], Awaitable[None]],
    request: AsyncBoltRequest | None = None,
) -> BoltResponse | None:
    """Global middleware: a delivery whose id (or, without one, signature) was claimed before is
    acked and dropped (``first_delivery``); when Redis does not answer within the request's
    deadline, the request is acked, dropped, and its user told. A request answered at the door
    was claimed there (``handlers.door``)."""
    if context.get(ANSWERED_AT_DOOR_KEY):
        await next()
        return None
    found = services(context)
    try:
        first = await first_delivery(found, body, request, redis_deadline(context))
    except RedisUnavailable:
        return await tell_redis_unavailable(body, found, ack, "duplicate filter")
    if not first:
        return await ack()
    await next()
    return None

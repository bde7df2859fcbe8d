"""Slack's HTTP requests answered at the door, before Bolt runs.

A slash command, a button click or an event is always acked with an empty 200: every listener
of those kinds acks first and replies through the response URL. So once such a request is
known to be Slack's (its signature), whole (``malformed``), replying only to Slack
(``foreign_response_urls``) and new (the duplicate filter's claim in Redis), the answer cannot
depend on anything else, and it leaves at once. Bolt's whole chain (its own checks, who may act,
the listener) then runs as the request's acked work: in line behind other acked work while
requests keep arriving (acks first, ``bot.ops.inflight``), at once for a listener that opens a
form (Slack's trigger id lasts 3 s).

Everything else takes Bolt's path before the answer: a view submission (its answer may carry
field errors), a request the door cannot vouch for (unsigned, malformed, a foreign response URL:
Bolt's middleware answers and logs those), and what no listener handles (Bolt answers 404).
Socket Mode has no door: its envelopes are acked by Bolt's chain (``handlers.middleware``).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from functools import partial
from typing import Any

from slack_bolt.request.async_request import AsyncBoltRequest
from slack_bolt.response import BoltResponse
from starlette.responses import Response

from handlers.blips import tell_redis_unavailable_later
from handlers.middleware import (
    ANSWERED_AT_DOOR_KEY,
    first_delivery,
    foreign_response_urls,
    kind_of,
    malformed,
)
from handlers.services import Services
from handlers.signing import SlackSignatures
from state.patience import BEFORE_ACK_BUDGET_SECONDS, RedisUnavailable

__all__ = ["Door", "Handled"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Handled:
    """What the wired listeners handle, as the door sees it: slash commands by name, clicks by
    action id, events by type."""

    commands: frozenset[str]
    actions: frozenset[str]
    events: frozenset[str]

    def acked_empty(self, body: dict[str, Any]) -> bool:
        """Whether ``body`` (well formed) goes to a listener whose ack is an empty 200."""
        if "command" in body:
            return body["command"] in self.commands
        kind = body.get("type")
        if kind == "block_actions":
            return body["actions"][0]["action_id"] in self.actions
        if kind == "event_callback":
            return body["event"]["type"] in self.events
        return False


class Door:
    """Answers what it can before Bolt runs (see the module's docstring); ``answer`` returns
    None for a request Bolt must answer itself."""

    def __init__(
        self,
        *,
        services: Services,
        handled: Handled,
        opens_a_form: Callable[[dict[str, Any]], bool],
        signatures: SlackSignatures,
        dispatch: Callable[[AsyncBoltRequest], Awaitable[BoltResponse]],
        clock: Callable[[], float] = time.perf_counter,
    ) -> None:
        self._services = services
        self._handled = handled
        self._opens_a_form = opens_a_form
        self._signatures = signatures
        self._dispatch = dispatch
        self._clock = clock

    @property
    def signatures(self) -> SlackSignatures:
        """The app's signing secret, for the web route's check of a body Bolt cannot parse."""
        return self._signatures

    async def answer(
        self, request: AsyncBoltRequest, raw: bytes, *, arrived: float
    ) -> Response | None:
        """The answer to Slack, with the request's work to follow it; None: Bolt answers.
        ``arrived``: when the request arrived (``clock``), for the ack latency metric."""
        body = request.body
        if (
            not isinstance(body, dict)
            or malformed(body) is not None
            or not self._handled.acked_empty(body)
            or not self._signatures.carried_by(request, raw)
        ):
            return None
        found = self._services
        if foreign_response_urls(body, found.replies.origins):
            return None  # Bolt's middleware acks, logs and drops it
        deadline = asyncio.get_running_loop().time() + BEFORE_ACK_BUDGET_SECONDS
        try:
            if await first_delivery(found, body, request, deadline):
                # Only the raw request waits in line; Bolt parses it again when its turn comes.
                headers = _header_texts(request)
                found.inflight.start_in_turn(
                    partial(self._go_on, request.raw_body, headers),
                    name="slack request answered at the door",
                    holds=_held_bytes(request.raw_body, headers),
                    at_once=self._opens_a_form(body),
                )
        except RedisUnavailable:
            tell_redis_unavailable_later(body, found, "duplicate filter")
        found.metrics.observe_ack(kind_of(body), 200, self._clock() - arrived)
        return Response(b"", status_code=200)

    async def _go_on(self, raw_body: str, headers: dict[str, str]) -> None:
        """After the answer, in the request's turn: Bolt's whole chain, on the bytes verified
        on arrival, signed anew (``handlers.signing``: the turn may come after Bolt's window)."""
        request = AsyncBoltRequest(
            body=raw_body,
            headers=self._signatures.renewed(headers, raw_body),
            context={ANSWERED_AT_DOOR_KEY: True},
        )
        answered = await self._dispatch(request)
        if answered.status >= 400:
            # Slack was answered 200 at the door: this is the only trace of Bolt's refusal.
            logger.warning(
                "Bolt answered %d to a Slack %s the door had answered: nothing was done",
                answered.status,
                kind_of(request.body),
            )


#: What a raw request waiting in line holds besides its text: the dict and the callable.
HELD_OVERHEAD_BYTES = 1024


def _held_bytes(raw_body: str, headers: dict[str, str]) -> int:
    return (
        len(raw_body)
        + sum(len(name) + len(value) for name, value in headers.items())
        + HELD_OVERHEAD_BYTES
    )


def _header_texts(request: AsyncBoltRequest) -> dict[str, str]:
    """The request's headers, each name's first value: a dict holding only text, which the
    collector does not track. Pairs in tuples are tracked until a collection looks at them,
    and a burst's thousands of waiting requests made the collection after it walk them all."""
    return {name: values[0] for name, values in request.headers.items() if values}

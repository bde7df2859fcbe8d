"""Riding out Redis blips where time is short: before Slack's ack.

Slack waits 3 s for the ack and does not retry clicks or form submissions, so a Redis call made
before the ack (the duplicate filter's ``SET NX``, the authorisation's session read) is retried
with backoff (stamina) until a deadline that leaves time to ack. Past it ``RedisUnavailable`` is
raised, and the caller acks and tells the user that nothing was changed.

Only failures that a moment may cure are retried: a refused or lost connection, a timeout,
a server still loading its data (``BusyLoadingError`` is a ``ConnectionError``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TypeVar

import stamina
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from state.sessions import StateError

__all__ = [
    "BEFORE_ACK_BUDGET_SECONDS",
    "TRANSIENT",
    "RedisUnavailable",
    "within",
]

T = TypeVar("T")

#: Every Redis call a request makes before its ack, retries included, ends within this (Slack's
#: limit is 3 s; the rest is left for the access check's Slack call and the network).
BEFORE_ACK_BUDGET_SECONDS = 1.5

#: What a Redis restart or a network blip raises (the client wraps the socket's errors in these).
TRANSIENT: tuple[type[Exception], ...] = (RedisConnectionError, RedisTimeoutError)
# ... and, for the deadline, asyncio's own.
_GAVE_UP: tuple[type[Exception], ...] = (*TRANSIENT, TimeoutError)


class RedisUnavailable(StateError):
    """Redis did not answer in time. ``consumed``: something single-use was already taken before
    the failure (an OAuth state), so retrying the same request cannot succeed."""

    def __init__(self, what: str, *, consumed: bool = False) -> None:
        self.consumed = consumed
        super().__init__(f"Redis unavailable: {what}")


async def within(deadline: float, what: str, call: Callable[[], Awaitable[T]]) -> T:
    """``await call()``, retried on transient failures until ``deadline`` (the event loop's
    clock); ``RedisUnavailable`` once it has passed."""
    remaining = deadline - asyncio.get_running_loop().time()
    if remaining <= 0:
        raise RedisUnavailable(f"{what}: no time left before the ack")
    try:
        # The first try bare: almost every call succeeds, and stamina's retry context costs
        # more CPU than the round trip itself on this path (every Slack request, twice).
        async with asyncio.timeout(remaining):
            return await call()
    except TRANSIENT:
        pass
    except TimeoutError as error:
        raise RedisUnavailable(what) from error
    remaining = deadline - asyncio.get_running_loop().time()
    if remaining <= 0:
        raise RedisUnavailable(what)
    try:
        async with asyncio.timeout(remaining):
            async for attempt in stamina.retry_context(
                on=TRANSIENT,
                attempts=None,
                timeout=remaining,
                wait_initial=0.02,
                wait_max=0.25,
                wait_jitter=0.02,
            ):
                with attempt:
                    return await call()
    except _GAVE_UP as error:
        raise RedisUnavailable(what) from error
    raise AssertionError("stamina gave up without raising")  # pragma: no cover

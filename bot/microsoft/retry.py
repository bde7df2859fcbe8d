"""One retry policy for every call to Microsoft.

Microsoft asks callers to back off: 429 and 503 answers carry ``Retry-After`` (seconds, or an HTTP
date) and a well-behaved client waits that long. Other transient failures (network errors,
timeouts, 500/502/504) are retried with exponential backoff plus random jitter. Both the number of
attempts and the total time are capped; when either runs out ``MicrosoftUnavailable`` is raised with
the last ``Retry-After`` Microsoft sent, so the caller can tell the user when to try again.

The sleep, the clock and the random source are injectable so tests neither wait nor guess::

    delays: list[float] = []

    async def record(seconds: float) -> None:
        delays.append(seconds)

    policy = RetryPolicy(sleep=record)

A request that must not run twice (``idempotent=False``) is retried only when Microsoft certainly
did not act on it: the connection could not be opened, or the answer was 429/503.
"""

from __future__ import annotations

import asyncio
import email.utils
import logging
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

import httpx

from bot.microsoft.errors import MicrosoftUnavailable

__all__ = ["DEFAULT_RETRY", "RetryPolicy", "parse_retry_after"]

log = logging.getLogger(__name__)

#: Answers that mean "not now": retried.
TRANSIENT_STATUSES: frozenset[int] = frozenset({429, 500, 502, 503, 504})
#: Answers that mean Microsoft did not act on the request (safe to resend even a POST).
NOT_PROCESSED_STATUSES: frozenset[int] = frozenset({429, 503})


def parse_retry_after(value: str | None, *, now: datetime | None = None) -> float | None:
    """Seconds to wait from ``Retry-After`` (seconds or an HTTP date); ``None`` if absent."""
    if value is None:
        return None
    text = value.strip()
    try:
        return max(0.0, float(text))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - (now or datetime.now(UTC))).total_seconds())


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how long to retry (stamina-style: attempts and total time both capped)."""

    max_attempts: int = 5
    max_total_seconds: float = 60.0
    base_delay: float = 0.5
    max_delay: float = 30.0
    jitter: float = 0.5
    sleep: Callable[[float], Awaitable[None]] = field(
        default=asyncio.sleep, compare=False, repr=False
    )
    clock: Callable[[], float] = field(default=time.monotonic, compare=False, repr=False)
    random: Callable[[], float] = field(default=random.random, compare=False, repr=False)

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        if self.max_total_seconds < 0 or self.base_delay < 0 or self.jitter < 0:
            raise ValueError("durations must not be negative")

    def backoff(self, attempt: int) -> float:
        """The wait after failed attempt number ``attempt`` (1-based) without a ``Retry-After``."""
        exponential: float = self.base_delay * (2.0 ** (attempt - 1))
        jitter: float = self.random() * self.jitter
        return min(self.max_delay, exponential + jitter)

    async def send(
        self,
        call: Callable[[], Awaitable[httpx.Response]],
        *,
        idempotent: bool = True,
        what: str = "Microsoft",
    ) -> httpx.Response:
        """Run ``call`` until it answers something other than a transient failure.

        Returns the first non-transient response (any status, the caller maps errors). Raises
        ``MicrosoftUnavailable`` once attempts or total time are used up, or at once when a
        ``Retry-After`` would outlast the remaining time budget.
        """
        started = self.clock()
        attempt = 0
        while True:
            attempt += 1
            retry_after: float | None = None
            try:
                response = await call()
            except httpx.TransportError as error:
                certainly_unsent = isinstance(
                    error, httpx.ConnectError | httpx.ConnectTimeout | httpx.PoolTimeout
                )
                if not idempotent and not certainly_unsent:
                    raise MicrosoftUnavailable(
                        f"{what} did not answer ({type(error).__name__}); not retried because"
                        " the request may have been processed"
                    ) from error
                reason = f"{type(error).__name__}"
                failure: BaseException | None = error
            else:
                retryable = TRANSIENT_STATUSES if idempotent else NOT_PROCESSED_STATUSES
                if response.status_code not in retryable:
                    return response
                retry_after = parse_retry_after(response.headers.get("Retry-After"))
                await response.aclose()
                reason = f"HTTP {response.status_code}"
                failure = None
            wait = retry_after if retry_after is not None else self.backoff(attempt)
            elapsed = self.clock() - started
            if attempt >= self.max_attempts or elapsed + wait > self.max_total_seconds:
                message = f"{what} unavailable after {attempt} attempt(s): {reason}"
                raise MicrosoftUnavailable(message, retry_after=retry_after) from failure
            log.warning(
                "%s answered %s (attempt %d of %d); retrying in %.2fs",
                what,
                reason,
                attempt,
                self.max_attempts,
                wait,
            )
            await self.sleep(wait)


#: The policy the clients use unless given another.
DEFAULT_RETRY = RetryPolicy()

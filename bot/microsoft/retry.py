"""One retry policy for every call to Microsoft, carried out by ``stamina``.

Microsoft asks callers to back off: 429 and 503 answers carry ``Retry-After`` (seconds, or an HTTP
date) and a well-behaved client waits that long. Other transient failures (network errors,
timeouts, 500/502/504) are retried with stamina's exponential backoff plus random jitter. Both the
number of attempts and the total time are capped (a ``Retry-After`` that would outlast the time
left ends the retries at once); when either runs out ``MicrosoftUnavailable`` is raised with the
last ``Retry-After`` Microsoft sent, so the caller can tell the user when to try again.

A request that must not run twice (``idempotent=False``) is retried only when Microsoft certainly
did not act on it: the connection could not be opened, or the answer was 429/503.

Tests neither wait nor guess: ``stamina.set_testing(True, ...)`` makes every backoff instant, and a
hook given to ``stamina.instrumentation.set_on_retry_hooks`` sees each scheduled retry. While it
is scheduled, ``caused_by`` is the ``MicrosoftUnavailable`` of the failed attempt, whose
``retry_after`` is the wait Microsoft asked for (and the policy honours)::

    def record(details: stamina.instrumentation.RetryDetails) -> None:
        waits.append(details.caused_by.retry_after)
"""

from __future__ import annotations

import email.utils
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime

import httpx
import stamina

from bot.microsoft.errors import MicrosoftUnavailable
from bot.ops.inflight import waiting_elsewhere

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


def _certainly_unsent(error: httpx.TransportError) -> bool:
    """The request never reached Microsoft (so even a POST may be sent again)."""
    return isinstance(error, httpx.ConnectError | httpx.ConnectTimeout | httpx.PoolTimeout)


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how long to retry: attempts and total time both capped.

    ``base_delay``, ``max_delay`` and ``jitter`` shape stamina's exponential backoff (the wait
    after failed attempt *n* is ``min(max_delay, base_delay * 2 ** (n - 1) + random(0, jitter))``)
    for failures that carry no ``Retry-After``.
    """

    max_attempts: int = 5
    max_total_seconds: float = 60.0
    base_delay: float = 0.5
    max_delay: float = 30.0
    jitter: float = 0.5

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        if self.max_total_seconds <= 0 or self.base_delay < 0 or self.jitter < 0:
            raise ValueError("durations must not be negative (and the total time not zero)")

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

        Meanwhile the calling task's work slot, if it holds one, is free for other work
        (``waiting_elsewhere``): the wait is Microsoft's, not this process's.
        """
        async with waiting_elsewhere():
            return await self._send(call, idempotent=idempotent, what=what)

    async def _send(
        self,
        call: Callable[[], Awaitable[httpx.Response]],
        *,
        idempotent: bool,
        what: str,
    ) -> httpx.Response:
        retryable = TRANSIENT_STATUSES if idempotent else NOT_PROCESSED_STATUSES
        started = time.monotonic()

        def retry_on(error: Exception) -> bool | float:
            """stamina's predicate: retry or not, and Microsoft's own wait where it sent one."""
            if isinstance(error, MicrosoftUnavailable):  # a 429/5xx answer, raised below
                if error.retry_after is None:
                    return True  # stamina's backoff
                remaining = self.max_total_seconds - (time.monotonic() - started)
                return error.retry_after if error.retry_after <= remaining else False
            if isinstance(error, httpx.TransportError):
                return idempotent or _certainly_unsent(error)
            return False

        attempts = 0
        reason = ""

        async def one_attempt() -> httpx.Response:
            """The response, or ``MicrosoftUnavailable`` (retried) for a transient answer."""
            nonlocal reason
            try:
                response = await call()
            except httpx.TransportError as error:
                reason = type(error).__name__
                raise
            if response.status_code not in retryable:
                return response
            reason = f"HTTP {response.status_code}"
            retry_after = parse_retry_after(response.headers.get("Retry-After"))
            await response.aclose()
            raise MicrosoftUnavailable(f"{what} answered {reason}", retry_after=retry_after)

        try:
            async for attempt in stamina.retry_context(
                on=retry_on,
                attempts=self.max_attempts,
                timeout=self.max_total_seconds,
                wait_initial=self.base_delay,
                wait_max=self.max_delay,
                wait_jitter=self.jitter,
            ):
                with attempt:
                    attempts = attempt.num
                    if attempts > 1:
                        log.warning(
                            "%s answered %s; attempt %d of %d",
                            what,
                            reason,
                            attempts,
                            self.max_attempts,
                        )
                    return await one_attempt()
        except MicrosoftUnavailable as error:
            message = f"{what} unavailable after {attempts} attempt(s): {reason}"
            raise MicrosoftUnavailable(message, retry_after=error.retry_after) from error
        except httpx.TransportError as error:
            if not idempotent and not _certainly_unsent(error):
                raise MicrosoftUnavailable(
                    f"{what} did not answer ({reason}); not retried because"
                    " the request may have been processed"
                ) from error
            message = f"{what} unavailable after {attempts} attempt(s): {reason}"
            raise MicrosoftUnavailable(message) from error
        raise AssertionError("unreachable: stamina either returned or raised")


#: The policy the clients use unless given another.
DEFAULT_RETRY = RetryPolicy()

"""Verify, and wait through the role's replication to Exchange Online.

Right after the Exchange Administrator role is assigned, Exchange keeps answering 401/403 for a
while (up to about 30 minutes): the checks then come back with nothing failed and the Exchange check
``waiting``. ``verify_until_ready`` asks again with backoff (15 s, doubling up to 2 min, never past
the limit), tells the caller before each wait through ``on_progress`` (to update the thread), and
returns the first time everything passes, something really fails, or the limit is reached.

Sleep and clock are injected, so tests advance a manual clock instead of waiting::

    async def sleep(seconds: float) -> None:
        clock.advance(seconds)

    outcome = await verify_until_ready(ctx, sleep=sleep, clock=clock)
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from datetime import timedelta

from bot.microsoft.access import VerifyContext
from bot.steps.verify.checks import verify
from bot.steps.verify.model import (
    DEFAULT_LIMIT,
    FIRST_INTERVAL,
    MAX_INTERVAL,
    CheckResult,
    CheckStatus,
    Outcome,
    Problem,
    ProgressCallback,
    Verification,
    VerifyOutcome,
)

__all__ = [
    "DEFAULT_LIMIT",
    "FIRST_INTERVAL",
    "MAX_INTERVAL",
    "Outcome",
    "ProgressCallback",
    "VerifyOutcome",
    "verify_until_ready",
]

log = logging.getLogger(__name__)


def _minutes(delta: timedelta) -> str:
    minutes = max(1, round(delta.total_seconds() / 60))
    return f"{minutes} minute" + ("" if minutes == 1 else "s")


def _timed_out(
    verification: Verification, limit: timedelta, attempts: int, mailflow_app_id: str
) -> Verification:
    for check in verification.checks:
        if check.status is CheckStatus.WAITING:
            verification = verification.with_check(
                CheckResult(
                    check.name,
                    CheckStatus.FAILED,
                    f"Exchange Online still refuses the mail-flow app after {_minutes(limit)} of"
                    f" checking ({attempts} attempts), although the consent and the Exchange"
                    " Administrator role are in place.",
                    "Microsoft usually replicates a role within 30 minutes. In Entra ID > Roles"
                    " and administrators > Exchange Administrator, check that the app with ID"
                    f" {mailflow_app_id} is listed under Active assignments (not Eligible), then"
                    " click Verify again later. If Exchange still refuses an hour after the"
                    " assignment, remove it and assign the role again (step 2).",
                    Problem.REPLICATION_TIMED_OUT,
                    2,
                )
            )
    return verification


def _ended(
    ctx: VerifyContext,
    outcome: Outcome,
    verification: Verification,
    attempts: int,
    elapsed: float,
    limit: timedelta,
) -> VerifyOutcome:
    log.info(
        "verification of tenant %s ended %s after %d attempt(s), %.0f s",
        ctx.tenant_id,
        outcome,
        attempts,
        elapsed,
    )
    return VerifyOutcome(outcome, verification, attempts, timedelta(seconds=elapsed), limit)


async def verify_until_ready(
    ctx: VerifyContext,
    *,
    limit: timedelta = DEFAULT_LIMIT,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    clock: Callable[[], float] = time.monotonic,
    on_progress: ProgressCallback | None = None,
    first_interval: timedelta = FIRST_INTERVAL,
    max_interval: timedelta = MAX_INTERVAL,
) -> VerifyOutcome:
    """Verify now, and again with backoff while only the role's replication is missing.

    Keeps waiting while the verification is ``replication_pending``; once it has been, a run
    where Microsoft was merely unavailable does not end the wait either. Returns ``READY``,
    ``FAILED`` (a reason waiting does not cure: the result says what to fix) or ``TIMED_OUT``.
    ``on_progress`` is awaited before every wait (not after the last run) and should not raise:
    what it raises ends the wait. Cancelling the calling task stops the wait at once.
    """
    if limit < timedelta(0):
        raise ValueError("limit must not be negative")
    started = clock()
    limit_seconds = limit.total_seconds()
    interval = first_interval.total_seconds()
    attempts = 0
    seen_pending = False
    while True:
        attempts += 1
        verification = await verify(ctx)
        elapsed = max(0.0, clock() - started)

        if verification.passed:
            return _ended(ctx, Outcome.READY, verification, attempts, elapsed, limit)
        seen_pending = seen_pending or verification.replication_pending
        if not (verification.replication_pending or (seen_pending and verification.transient_only)):
            return _ended(ctx, Outcome.FAILED, verification, attempts, elapsed, limit)
        remaining = limit_seconds - elapsed
        if remaining <= 0:
            timed_out = _timed_out(verification, limit, attempts, ctx.mailflow_app_id)
            return _ended(ctx, Outcome.TIMED_OUT, timed_out, attempts, elapsed, limit)
        next_in = min(interval, remaining)
        log.info(
            "tenant %s: Exchange does not accept the mail-flow app yet (attempt %d);"
            " checking again in %.0f s",
            ctx.tenant_id,
            attempts,
            next_in,
        )
        if on_progress is not None:
            await on_progress(
                attempts, timedelta(seconds=elapsed), timedelta(seconds=next_in), verification
            )
        await sleep(next_in)
        interval = min(interval * 2, max_interval.total_seconds())

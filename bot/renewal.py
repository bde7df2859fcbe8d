"""Keeping a lease while work runs: renew it every so often until the work is done.

The work's end is told by an event, not only by cancelling the renewal: a Redis client can turn
the ``CancelledError`` that interrupts a renewal in flight into a connection error (seen with
redis-py under load), and a loop that tries again after connection errors then renews the lease
for ever, for work that has ended, while whoever waits for the renewal to stop waits with it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable

from redis.exceptions import RedisError

__all__ = ["renewed"]

logger = logging.getLogger(__name__)


@contextlib.asynccontextmanager
async def renewed(
    renew: Callable[[], Awaitable[bool]],
    *,
    every: float,
    what: str,
    on_lost: Callable[[], object] | None = None,
) -> AsyncIterator[None]:
    """Call ``renew`` every ``every`` seconds while the block runs. A renewal that finds the
    lease gone (``renew`` returns False) stops renewing and calls ``on_lost``; one that fails
    on Redis is tried again at the next turn (the lease still has time left). On leaving the
    block the renewing stops, even if a renewal was in flight."""
    done = asyncio.Event()

    async def keep() -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(every):  # a timer: renew well before expiry
                    await done.wait()
            if done.is_set():
                return
            try:
                held = await renew()
            except (RedisError, OSError):
                logger.warning("could not renew %s", what, exc_info=True)
                continue
            if done.is_set():
                return
            if not held:
                logger.warning("lost %s", what)
                if on_lost is not None:
                    on_lost()
                return

    task = asyncio.create_task(keep(), name=f"renewing {what}")
    try:
        yield
    finally:
        done.set()
        task.cancel()  # interrupts a renewal in flight; ``done`` ends the loop if it is swallowed
        with contextlib.suppress(asyncio.CancelledError):
            await task

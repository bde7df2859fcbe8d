"""Work that continues after Slack has been acked, tracked so shutdown can wait for it.

Bolt answers Slack when a listener calls ``ack()`` and lets the listener run on in the
background. A graceful stop must let those listeners finish before closing Redis and the HTTP
clients, or a change the user was promised could be cut off half-way.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, ParamSpec

__all__ = ["InFlight"]

logger = logging.getLogger(__name__)

P = ParamSpec("P")


ErrorReporter = Callable[[Exception, Mapping[str, Any]], Awaitable[None]]


class InFlight:
    """Tracks running listeners; reports their unexpected errors itself.

    Reporting here rather than through Bolt's error handler matters: when a listener that has
    already acked fails within Bolt's 10 ms polling of the ack, Bolt resets the ack and answers
    Slack 404 after three seconds. An error caught here never reaches that path.
    """

    def __init__(self) -> None:
        self._tasks: set[asyncio.Task[object]] = set()
        self.on_error: ErrorReporter | None = None

    def track(self, listener: Callable[P, Awaitable[None]]) -> Callable[P, Awaitable[None]]:
        """Wrap a listener so that its task is known while it runs (Bolt unwraps for kwargs)."""

        @functools.wraps(listener)
        async def tracked(*args: P.args, **kwargs: P.kwargs) -> None:
            task = asyncio.current_task()
            if task is not None:
                self._tasks.add(task)
            try:
                await listener(*args, **kwargs)
            except Exception as error:
                if self.on_error is None:
                    raise
                await self.on_error(error, kwargs)
            finally:
                if task is not None:
                    self._tasks.discard(task)

        return tracked

    async def drain(self, grace_seconds: float) -> None:
        """Wait up to ``grace_seconds`` for running listeners; log any that did not finish."""
        running = self._tasks - {asyncio.current_task()}
        if not running:
            return
        _, unfinished = await asyncio.wait(running, timeout=grace_seconds)
        if unfinished:
            logger.warning("%d listener(s) still running at shutdown", len(unfinished))

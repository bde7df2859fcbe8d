"""Work that continues after Slack has been acked, tracked so shutdown can wait for it.

Bolt answers Slack when a listener calls ``ack()`` and lets the listener run on in the
background. A graceful stop must let those listeners finish before closing Redis and the HTTP
clients, or a change the user was promised could be cut off half-way.

Who enrols a task is the Slack side's business (``handlers.middleware`` does it for every
acked listener); this module only keeps the set and waits for it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from typing import Any

__all__ = ["InFlight"]

logger = logging.getLogger(__name__)


ACKED_WORK_AT_ONCE = 16
"""Listeners of one process going on with their work after the ack at the same time (the rest
wait, already acked): enough to keep Redis and Slack busy, few enough that under a burst a new
request's ack never queues behind more than that much work on the event loop."""


class InFlight:
    """The tasks doing acked work; ``drain`` waits for them at shutdown. Acks first: a listener
    goes on after its ack only when one of ``at_once`` slots is free (``take_slot``)."""

    def __init__(self, at_once: int = ACKED_WORK_AT_ONCE) -> None:
        self._tasks: set[asyncio.Task[Any]] = set()
        self.slots = asyncio.Semaphore(at_once)
        self.waiting = 0  # acked listeners waiting for a slot

    def __len__(self) -> int:
        return len(self._tasks)

    def enrol(self, task: asyncio.Task[Any]) -> None:
        """Count ``task`` as in flight until it finishes (enrolling twice is harmless)."""
        if task.done() or task in self._tasks:
            return
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def take_slot(self, task: asyncio.Task[Any]) -> None:
        """Wait for a free slot; ``task`` holds it until it ends."""
        self.waiting += 1
        try:
            await self.slots.acquire()
        finally:
            self.waiting -= 1
        task.add_done_callback(lambda _: self.slots.release())

    def spawn(self, work: Coroutine[Any, Any, None], *, name: str) -> asyncio.Task[None]:
        """Run ``work`` after the ack, in flight until done; its failure is logged with its
        traceback (nobody awaits it)."""
        task = asyncio.create_task(work, name=name)
        self.enrol(task)
        task.add_done_callback(_log_failure)
        return task

    async def drain(self, grace_seconds: float) -> None:
        """Wait up to ``grace_seconds`` for running work; log any that did not finish."""
        running = self._tasks - {asyncio.current_task()}
        if not running:
            return
        _, unfinished = await asyncio.wait(running, timeout=grace_seconds)
        if unfinished:
            logger.warning("%d listener(s) still running at shutdown", len(unfinished))


def _log_failure(task: asyncio.Task[None]) -> None:
    if task.cancelled():
        return
    error = task.exception()
    if error is not None:
        logger.error("%s failed after the ack", task.get_name(), exc_info=error)

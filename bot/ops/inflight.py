"""Work that continues after Slack has been acked, tracked so shutdown can wait for it.

Bolt answers Slack when a listener calls ``ack()`` and lets the listener run on in the
background. A graceful stop must let those listeners finish before closing Redis and the HTTP
clients, or a change the user was promised could be cut off half-way.

Who enrols a task is the Slack side's business (``handlers.middleware`` does it for every
acked listener); this module only keeps the set and waits for it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Coroutine, Iterator
from typing import Any

__all__ = ["InFlight"]

logger = logging.getLogger(__name__)


ACKED_WORK_AT_ONCE = 16
"""Listeners of one process going on with their work after the ack at the same time (the rest
wait, already acked): enough to keep Redis and Slack busy, few enough that under a burst a new
request's ack never queues behind more than that much work on the event loop."""

ACKS_FIRST_FOR_SECONDS = 2.0
"""How long acked work may wait for the requests still to be acked: while any is, no new work
starts, unless the longest waiting has waited this long. Slack needs its ack within 3 s; the
person who clicked sees the effect at most this much later, however busy the process."""


class InFlight:
    """The tasks doing acked work; ``drain`` waits for them at shutdown.

    Acks first: a listener goes on after its ack only with one of ``at_once`` slots
    (``take_slot``), handed out in the order asked, and only while no request of this process is
    still to be acked (``acking``), unless the first in line has waited ``acks_first_for``
    seconds. Work that runs keeps its slot; new work does not start in front of an ack.
    """

    def __init__(
        self,
        at_once: int = ACKED_WORK_AT_ONCE,
        *,
        acks_first_for: float = ACKS_FIRST_FOR_SECONDS,
    ) -> None:
        self._tasks: set[asyncio.Task[Any]] = set()
        self._free = at_once
        self._acks_first_for = acks_first_for
        self._line: deque[tuple[float, asyncio.Future[None]]] = deque()
        self._to_ack = 0
        self._overdue: asyncio.TimerHandle | None = None

    def __len__(self) -> int:
        return len(self._tasks)

    @property
    def waiting(self) -> int:
        """Acked listeners waiting for a slot."""
        return sum(1 for _, turn in self._line if not turn.done())

    @property
    def free_slots(self) -> int:
        return self._free

    @property
    def to_ack(self) -> int:
        """Requests of this process not yet acked."""
        return self._to_ack

    def enrol(self, task: asyncio.Task[Any]) -> None:
        """Count ``task`` as in flight until it finishes (enrolling twice is harmless)."""
        if task.done() or task in self._tasks:
            return
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    @contextlib.contextmanager
    def acking(self) -> Iterator[None]:
        """Around a request until it is acked (or answered without an ack): no new work starts
        meanwhile, unless it has waited too long."""
        self._to_ack += 1
        try:
            yield
        finally:
            self._to_ack -= 1
            if not self._to_ack:
                self._hand_out()

    async def take_slot(self, task: asyncio.Task[Any]) -> None:
        """Wait for a slot, in line; ``task`` holds it until it ends."""
        loop = asyncio.get_running_loop()
        turn: asyncio.Future[None] = loop.create_future()
        self._line.append((loop.time(), turn))
        self._hand_out()
        try:
            await turn
        except asyncio.CancelledError:
            if turn.done() and not turn.cancelled():
                self._release()  # given a slot in the instant it was cancelled
            raise
        task.add_done_callback(lambda _: self._release())

    def take_every_slot(self) -> int:
        """Take every free slot (tests: acked work must wait); ``give_back`` returns them."""
        taken, self._free = self._free, 0
        return taken

    def give_back(self, slots: int) -> None:
        self._free += slots
        self._hand_out()

    def _release(self) -> None:
        self._free += 1
        self._hand_out()

    def _hand_out(self) -> None:
        """Give free slots to the first in line: at once while nothing waits for its ack, else
        only to work that has waited ``acks_first_for`` (a timer comes back for it)."""
        if self._overdue is not None:
            self._overdue.cancel()
            self._overdue = None
        line = self._line
        while line and line[0][1].done():
            line.popleft()  # cancelled while waiting
        if not line or not self._free:
            return
        loop = asyncio.get_running_loop()
        now = loop.time()
        while line and self._free:
            since, turn = line[0]
            if turn.done():
                line.popleft()
                continue
            if self._to_ack and now - since < self._acks_first_for:
                self._overdue = loop.call_at(since + self._acks_first_for, self._hand_out)
                return
            line.popleft()
            self._free -= 1
            turn.set_result(None)

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

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
import contextvars
import logging
from collections import deque
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator
from typing import Any

__all__ = ["InFlight", "waiting_elsewhere"]

logger = logging.getLogger(__name__)


ACKED_WORK_AT_ONCE = 16
"""Listeners of one process going on with their work after the ack at the same time, when no
request is waiting for its ack: enough to keep Redis, Slack and Microsoft busy."""

ACKED_WORK_WHILE_BUSY = 4
"""The same while requests keep arriving: each ack waits, at each of its steps, behind at most
this much work on the event loop."""

ACKS_FIRST_FOR_SECONDS = 10.0
"""How long acked work may wait while requests keep arriving: after that it goes on anyway
(within ``ACKED_WORK_WHILE_BUSY``). A burst is answered first and its effects follow it; under
load that never ends, work still gets its turn this late."""

MOST_WAITING_BYTES = 200 * 2**20
"""What acked work waiting for a slot may hold: past that, acks first stops and work goes on as
if the process were quiet, so the acks slow down instead of memory growing. A 5-second burst at
this process's full ack rate holds about a tenth of it (BENCHMARKS.md)."""

WAITING_LISTENER_BYTES = 20 * 1024
"""What a listener waiting for its slot holds (its request, its context, its task and their
frames), measured; a request answered at the door waits as only its raw request
(``start_in_turn``), a few KiB."""

MOST_AWAY = 48
"""Tasks that may lend their slot at once while they wait on another service (``elsewhere``);
past that a waiting task keeps its slot. With the slots, at most 64 calls to Microsoft from
acked work, under the HTTP client's 100 connections: past those, calls queue in httpcore's pool,
which walks its whole queue at every answer, and the event loop's time goes to that
(BENCHMARKS.md: acks of 200-300 ms)."""

BUSY_FOR_SECONDS = 0.01
"""Requests being acked at the same time start a burst; acks this close after it keep it going,
and after its last ack the process counts as busy this much longer: its requests arrive a few
milliseconds apart, and work started in each gap would delay the next ack. Requests one after
the other, never acked at the same time, are no burst: each one's work goes on at once."""


#: The ``InFlight`` whose work slot the current task holds (set in the task that takes it).
_SLOT_OF: contextvars.ContextVar[InFlight | None] = contextvars.ContextVar(
    "provision_inline_slot_of", default=None
)


@contextlib.asynccontextmanager
async def waiting_elsewhere() -> AsyncIterator[None]:
    """Around a wait on another service (Microsoft's answer, its ``Retry-After``): the current
    task's work slot, if it holds one, is free meanwhile (``InFlight.elsewhere``). Anywhere
    else, nothing happens."""
    inflight = _SLOT_OF.get()
    if inflight is None:
        yield
        return
    async with inflight.elsewhere():
        yield


class InFlight:
    """The tasks doing acked work; ``drain`` waits for them at shutdown.

    Acks first: a listener goes on after its ack only with a slot (``take_slot``), handed out
    in the order asked. While a request of this process is being acked (``acking``), or a
    burst of them was a moment ago, no new work starts unless the first in line has waited
    ``acks_first_for`` seconds, and then only up to ``while_busy`` at once; when the process is
    quiet (or what waits holds more than ``most_waiting_bytes``), up to ``at_once``. Work that
    runs keeps its slot (new work does not start in front of an ack), except while it waits on
    another service (``elsewhere``; at most ``most_away`` at once): a slot is for work on this
    process, and sixteen tasks waiting seconds for Microsoft would otherwise hold every other
    interaction's work in line.
    """

    def __init__(
        self,
        at_once: int = ACKED_WORK_AT_ONCE,
        *,
        while_busy: int = ACKED_WORK_WHILE_BUSY,
        acks_first_for: float = ACKS_FIRST_FOR_SECONDS,
        busy_for: float = BUSY_FOR_SECONDS,
        most_waiting_bytes: int = MOST_WAITING_BYTES,
        most_away: int = MOST_AWAY,
    ) -> None:
        self._tasks: set[asyncio.Task[Any]] = set()
        self._holders: set[asyncio.Task[Any]] = set()  # tasks holding a slot now
        self._most_away = most_away
        self._away = 0  # tasks that lent their slot (``elsewhere``)
        self._at_once = at_once
        self._while_busy = min(while_busy, at_once)
        self._free = at_once
        self._acks_first_for = acks_first_for
        self.busy_for = busy_for
        """Seconds between acks that make them a burst (``BUSY_FOR_SECONDS``)."""
        self._most_waiting_bytes = most_waiting_bytes
        self._waiting_bytes = 0
        # In line: since when, the turn (a listener's future, or work not started), its bytes.
        self._line: deque[tuple[float, asyncio.Future[None] | _Start, int]] = deque()
        self._to_ack = 0
        self._last_acked = float("-inf")
        self._in_a_burst = False
        self._later: asyncio.TimerHandle | None = None
        self._holding = False
        self._draining = False  # ``drain``: whatever waits goes on
        self.on_hold: Callable[[bool], None] | None = None
        """Told when work starts being held back for the acks (True) and when it no longer is:
        the serving process pauses the garbage collector meanwhile (``bot.ops.collector``)."""

    def __len__(self) -> int:
        return len(self._tasks)

    @property
    def waiting(self) -> int:
        """Acked listeners waiting for a slot."""
        return sum(1 for _, turn, _ in self._line if not turn.done())

    @property
    def waiting_bytes(self) -> int:
        """About what the work in line holds (``WAITING_LISTENER_BYTES`` a listener)."""
        return self._waiting_bytes

    @property
    def free_slots(self) -> int:
        return self._free

    @property
    def holding(self) -> bool:
        """Whether work is held back for the acks right now."""
        return self._holding

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
            now = asyncio.get_running_loop().time()
            # Requests acked at the same time start a burst; it goes on while the next ack comes
            # within ``busy_for``. Requests one after the other (a person, a client that waits
            # for each answer) are no burst: each one's work goes on at once.
            self._in_a_burst = self._to_ack > 0 or (
                self._in_a_burst and now - self._last_acked < self.busy_for
            )
            self._last_acked = now
            if not self._to_ack:
                self._hand_out()

    async def take_slot(self) -> None:
        """Wait for a slot, in line; the current task holds it until it ends."""
        task = asyncio.current_task()
        if task is None:
            raise RuntimeError("take_slot is for a task: its end gives the slot back")
        await self._wait_for_turn(first=False)
        _SLOT_OF.set(self)
        self._hold_slot(task)

    async def _wait_for_turn(self, *, first: bool) -> None:
        """Wait in line for a slot (at its head when ``first``), then it is the caller's."""
        turn: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._line_up(turn, WAITING_LISTENER_BYTES, first=first)
        try:
            await turn
        except asyncio.CancelledError:
            if turn.done() and not turn.cancelled():
                self._release()  # given a slot in the instant it was cancelled
            raise

    def _hold_slot(self, task: asyncio.Task[Any]) -> None:
        self._holders.add(task)
        task.add_done_callback(self._let_go)

    def _let_go(self, task: asyncio.Task[Any]) -> None:
        """``task`` ended: its slot is free, unless it was away (``elsewhere``) when it ended."""
        if task in self._holders:
            self._holders.discard(task)
            self._release()

    @contextlib.asynccontextmanager
    async def elsewhere(self) -> AsyncIterator[None]:
        """Around a wait on another service: the current task's slot is free meanwhile, and
        taken again after it, at the head of the line (work begun finishes before new work
        starts; acks still come first). Nothing happens for a task holding no slot."""
        task = asyncio.current_task()
        if task is None or task not in self._holders or self._away >= self._most_away:
            yield
            return
        self._holders.discard(task)
        self._away += 1
        self._release()
        cancelled = False
        try:
            yield
        except asyncio.CancelledError:
            cancelled = True  # the task ends: no slot to take again
            raise
        finally:
            self._away -= 1
            if not cancelled:
                await self._wait_for_turn(first=True)
                self._holders.add(task)

    def start_in_turn(
        self,
        work: Callable[[], Coroutine[Any, Any, None]],
        *,
        name: str,
        holds: int,
        at_once: bool = False,
    ) -> None:
        """Start ``work()`` when its turn in line comes, as if its task had taken a slot
        (``take_slot``); ``at_once``: now, without a slot (a form's trigger id lasts 3 s).
        ``holds``: about the bytes ``work`` holds meanwhile.

        Until then only ``work`` waits, not a task: a callable holding what its request needs
        (its raw body, say), a few hundred bytes the collector hardly looks at, where a waiting
        task holds its whole chain of frames."""
        if at_once:
            self.spawn(work(), name=name)
            return
        self._line_up(_Start(self._started, work, name), holds)

    def _line_up(
        self, turn: asyncio.Future[None] | _Start, holds: int, *, first: bool = False
    ) -> None:
        place = (asyncio.get_running_loop().time(), turn, holds)
        if first:
            self._line.appendleft(place)
        else:
            self._line.append(place)
        self._waiting_bytes += holds
        self._hand_out()

    def _first_waiting(self) -> tuple[float, asyncio.Future[None] | _Start] | None:
        """The first in line still waiting, and since when (those cancelled meanwhile leave)."""
        line = self._line
        while line:
            since, turn, holds = line[0]
            if not turn.done():
                return since, turn
            line.popleft()
            self._waiting_bytes -= holds
        return None

    def _started(self, work: Coroutine[Any, Any, None], name: str) -> None:
        """Work given its slot by ``_hand_out`` (``start_in_turn``): the slot is back at its end."""
        context = contextvars.copy_context()
        context.run(_SLOT_OF.set, self)
        self._hold_slot(self.spawn(work, name=name, context=context))

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
        """Give free slots to the first in line, as the class says; when the line must wait, a
        timer comes back when that changes (the process turns quiet, the first is overdue)."""
        self._hold(self._hand_out_while_allowed())

    def _hand_out_while_allowed(self) -> bool:
        """Hand out what may go on; True when work is held back for the acks."""
        if self._later is not None:
            self._later.cancel()
            self._later = None
        if self._first_waiting() is None or not self._free:
            return False
        loop = asyncio.get_running_loop()
        now = loop.time()
        quiet_at = self._last_acked + self.busy_for
        acking = self._to_ack > 0 or (self._in_a_burst and now < quiet_at)
        busy = acking and not self._draining and self._waiting_bytes <= self._most_waiting_bytes
        while self._free and (first := self._first_waiting()) is not None:
            since, turn = first
            if busy:
                running = self._at_once - self._free
                overdue_at = since + self._acks_first_for
                if now < overdue_at:
                    # Back when the first is overdue, or sooner when the process turns quiet.
                    back = overdue_at if self._to_ack else min(overdue_at, quiet_at)
                    self._later = loop.call_at(back, self._hand_out)
                    return True
                if running >= self._while_busy:
                    if not self._to_ack:
                        self._later = loop.call_at(quiet_at, self._hand_out)
                    return False  # else a slot coming back hands out again
            self._waiting_bytes -= self._line.popleft()[2]
            self._free -= 1
            turn.set_result(None)
        return False

    def _hold(self, holding: bool) -> None:
        if holding != self._holding:
            self._holding = holding
            if self.on_hold is not None:
                self.on_hold(holding)

    def spawn(
        self,
        work: Coroutine[Any, Any, None],
        *,
        name: str,
        context: contextvars.Context | None = None,
    ) -> asyncio.Task[None]:
        """Run ``work`` after the ack, in flight until done; its failure is logged with its
        traceback (nobody awaits it)."""
        task = asyncio.create_task(work, name=name, context=context)
        self.enrol(task)
        task.add_done_callback(_log_failure)
        return task

    async def drain(self, grace_seconds: float) -> None:
        """Wait up to ``grace_seconds`` for running work and for work still in line, which goes
        on meanwhile as if the process were quiet (nothing more is being acked); log what did
        not finish or start."""
        loop = asyncio.get_running_loop()
        until = loop.time() + grace_seconds
        me = asyncio.current_task()
        self._draining = True
        try:
            self._hand_out()
            while running := self._tasks - {me}:
                remaining = until - loop.time()
                if remaining <= 0:
                    break
                # Each one that ends gives its slot to the next in line, a new task.
                await asyncio.wait(running, timeout=remaining, return_when=asyncio.FIRST_COMPLETED)
        finally:
            self._draining = False
        unfinished, unstarted = len(self._tasks - {me}), self.waiting
        if unfinished or unstarted:
            logger.warning(
                "at shutdown, %d acked listener(s) still running and %d not started",
                unfinished,
                unstarted,
            )


class _Start:
    """A place in line for work not started yet (``InFlight.start_in_turn``): given its slot
    (``set_result``, as a waiting listener's future is), it starts."""

    __slots__ = ("_begun", "_name", "_start", "_work")

    def __init__(
        self,
        start: Callable[[Coroutine[Any, Any, None], str], None],
        work: Callable[[], Coroutine[Any, Any, None]],
        name: str,
    ) -> None:
        self._start = start
        self._work = work
        self._name = name
        self._begun = False

    def done(self) -> bool:
        return self._begun

    def set_result(self, _: None) -> None:
        self._begun = True
        self._start(self._work(), self._name)


def _log_failure(task: asyncio.Task[None]) -> None:
    if task.cancelled():
        return
    error = task.exception()
    if error is not None:
        logger.error("%s failed after the ack", task.get_name(), exc_info=error)

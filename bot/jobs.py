"""Background jobs that outlive a click: verification polling and applying the change plan.

A session in a working phase (``runners``) has exactly one job running somewhere: the process
that takes the session's Redis lease runs it and renews the lease while it works. If that process
dies, the lease lapses and any process resumes the job from the session's stored state: each
process looks for such orphans every ``ORPHAN_CHECK_SECONDS`` (``resume_orphans``), and a click in
the session takes the job over at once (``resume``). A job must therefore be safe to start again
from the top.

What the thread promises is derived from these figures: a job whose process died runs again
within ``RESUME_WITHIN_SECONDS`` (the lease's last renewal lapses, the next orphan check finds it,
the takeover starts it), so a message saying when the job will next act adds that much.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping

from bot.renewal import renewed
from bot.workflow import Phase, Session
from state.sessions import SessionStore

__all__ = [
    "JOB_LEASE_RENEW_SECONDS",
    "JOB_LEASE_SECONDS",
    "ORPHAN_CHECK_SECONDS",
    "RESUME_WITHIN_SECONDS",
    "TAKEOVER_SECONDS",
    "Jobs",
    "Runner",
]

logger = logging.getLogger(__name__)

Runner = Callable[[Session], Awaitable[None]]

# How long a job's lease outlives its holder's last renewal. Short, because a job whose process
# died waits this long before anyone may resume it.
JOB_LEASE_SECONDS = 10
# How often the holder renews it: three renewals per lease, so a renewal lost to a Redis blip
# does not hand the job over while its process is alive.
JOB_LEASE_RENEW_SECONDS = 3.0
# How often each process looks for working sessions whose lease has lapsed (cheap: the active
# sessions and one lease read per working one). Reminders and expiry keep their slow sweep.
ORPHAN_CHECK_SECONDS = 3.0
# Room for the takeover itself: the orphan check's reads, taking the lease, reading the session.
TAKEOVER_SECONDS = 2.0
# A job whose process died is running again within this long after its last renewal: the lease
# lapses, the next orphan check finds it, the takeover starts it. What the thread promises adds
# it to the job's own wait (verification's "next check within …").
RESUME_WITHIN_SECONDS = JOB_LEASE_SECONDS + ORPHAN_CHECK_SECONDS + TAKEOVER_SECONDS


class Jobs:
    def __init__(
        self,
        store: SessionStore[Session],
        runners: Mapping[Phase, Runner],
        *,
        lease_seconds: int = JOB_LEASE_SECONDS,
        renew_seconds: float = JOB_LEASE_RENEW_SECONDS,
    ) -> None:
        if renew_seconds >= lease_seconds:
            raise ValueError("the lease must be renewed before it lapses")
        self._store = store
        self._runners = dict(runners)
        self._lease_seconds = lease_seconds
        self._renew_seconds = renew_seconds
        self._owner = f"process-{secrets.token_hex(6)}"
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._stopped = False

    @property
    def owner(self) -> str:
        """The name this process holds leases under."""
        return self._owner

    def launch(self, session: Session) -> None:
        """Start the job for ``session``'s phase here, unless one already runs in this process
        or the process is stopping (its jobs are another process's to resume)."""
        if self._stopped or session.phase not in self._runners:
            return
        running = self._tasks.get(session.id)
        if running is not None and not running.done():
            # The job of the phase before may still be finishing here (verification shows the
            # plan from inside its job, and Submit can come before it returns): run this one
            # after it. ``_run`` reads the phase again, so a duplicate launch does nothing.
            running.add_done_callback(lambda _: self.launch(session))
            return
        task = asyncio.create_task(self._run(session), name=f"job-{session.id}")
        self._tasks[session.id] = task
        task.add_done_callback(lambda done: self._forget(session.id, done))

    def _forget(self, session_id: str, task: asyncio.Task[None]) -> None:
        if self._tasks.get(session_id) is task:
            del self._tasks[session_id]

    async def wait(self, session_id: str) -> None:
        """Await this process's job for the session, if it has one (tests and shutdown)."""
        task = self._tasks.get(session_id)
        if task is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def resume(self, session: Session) -> bool:
        """Launch ``session``'s job if it is in a working phase and nobody holds its lease (its
        process died); True if it was launched here."""
        if session.phase not in self._runners:
            return False
        running = self._tasks.get(session.id)
        if running is not None and not running.done():
            return False  # this process runs it (its lease is held or being taken)
        if await self._store.lease_holder(session.id) is not None:
            return False
        self.launch(session)
        return True

    async def take_over(self, session: Session, *, now: float) -> bool:
        """``resume`` for someone's click: only once the session has not changed for a lease's
        length. A job whose transition was just stored holds no lease yet either (its launch,
        after the transition's other effects, is still to come in whichever process made it),
        and a click then must not be told the job had stopped."""
        if now - session.updated_at < self._lease_seconds:
            return False
        return await self.resume(session)

    @contextlib.asynccontextmanager
    async def held(self, session_id: str) -> AsyncIterator[bool]:
        """Hold the session's lease (renewed) around work a request does itself, as a job
        would: if its process dies, the orphan check runs the phase's runner (the recovery)
        once the lease lapses. Yields False when another process holds it (nothing is held)."""
        if not await self._store.take_lease(session_id, self._owner, ttl=self._lease_seconds):
            yield False
            return
        try:
            async with self._renewed(session_id, None):
                yield True
        finally:
            await self._store.release_lease(session_id, self._owner)

    async def resume_orphans(self) -> int:
        """Launch the jobs of working sessions whose lease has lapsed; returns how many."""
        resumed = 0
        for phase in self._runners:  # the working phases' indexes: no other session is read
            for session in await self._store.in_phase(phase):
                if await self.resume(session):
                    resumed += 1
        return resumed

    async def stop(self) -> None:
        """Cancel this process's jobs and hand their leases back, so a restart resumes them.
        No job starts here afterwards: a launch deferred behind a cancelled job would otherwise
        start it again on a process that is going away, holding the lease from the next one."""
        self._stopped = True
        tasks = list(self._tasks.values())
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _run(self, session: Session) -> None:
        if not await self._store.take_lease(session.id, self._owner, ttl=self._lease_seconds):
            return  # another process runs it
        job = asyncio.current_task()
        assert job is not None  # _run is always a task of its own (launch)
        try:
            async with self._renewed(session.id, job):
                current = await self._store.get(session.id)
                runner = self._runners.get(current.phase) if current else None
                if current is not None and runner is not None:
                    await runner(current)
        except asyncio.CancelledError:
            raise
        except Exception:
            logger.exception("background job for session %s failed", session.id)
        finally:
            await self._store.release_lease(session.id, self._owner)

    def _renewed(
        self, session_id: str, job: asyncio.Task[None] | None
    ) -> contextlib.AbstractAsyncContextManager[None]:
        """The lease renewed while the work runs; a lost lease stops the job, since another
        process may already have resumed it (``job`` None: work a request holds the lease
        for, which finishes what it started)."""

        async def renew() -> bool:
            return await self._store.renew_lease(session_id, self._owner, ttl=self._lease_seconds)

        return renewed(
            renew,
            every=self._renew_seconds,
            what=f"the lease of session {session_id}",
            on_lost=job.cancel if job is not None else None,
        )

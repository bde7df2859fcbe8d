"""Background jobs that outlive a click: verification polling and applying the change plan.

A session in a working phase (``runners``) has exactly one job running somewhere: the process
that takes the session's Redis lease runs it and renews the lease while it works. If that process
dies, the lease lapses and the next sweep (on any replica, or the restarted bot) resumes the job
from the session's stored state. A job must therefore be safe to start again from the top.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from collections.abc import Awaitable, Callable, Mapping

from bot.workflow import Phase, Session
from state.sessions import SessionStore

__all__ = ["Jobs", "Runner"]

logger = logging.getLogger(__name__)

Runner = Callable[[Session], Awaitable[None]]


class Jobs:
    def __init__(
        self,
        store: SessionStore[Session],
        runners: Mapping[Phase, Runner],
        *,
        lease_seconds: int = 60,
    ) -> None:
        self._store = store
        self._runners = dict(runners)
        self._lease_seconds = lease_seconds
        self._owner = f"process-{secrets.token_hex(6)}"
        self._tasks: dict[str, asyncio.Task[None]] = {}

    def launch(self, session: Session) -> None:
        """Start the job for ``session``'s phase here, unless one already runs in this process."""
        if session.phase not in self._runners:
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

    async def resume_orphans(self) -> int:
        """Launch the jobs of working sessions whose lease has lapsed; returns how many."""
        resumed = 0
        for session in await self._store.active():
            if (
                session.phase in self._runners
                and await self._store.lease_holder(session.id) is None
            ):
                self.launch(session)
                resumed += 1
        return resumed

    async def stop(self) -> None:
        """Cancel this process's jobs and hand their leases back, so a restart resumes them."""
        tasks = list(self._tasks.values())
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _run(self, session: Session) -> None:
        if not await self._store.take_lease(session.id, self._owner, ttl=self._lease_seconds):
            return  # another process runs it
        renewer = asyncio.create_task(self._keep_lease(session.id))
        try:
            current = await self._store.get(session.id)
            runner = self._runners.get(current.phase) if current else None
            if current is not None and runner is not None:
                await runner(current)
        except asyncio.CancelledError:
            raise
        except Exception:
            logger.exception("background job for session %s failed", session.id)
        finally:
            renewer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await renewer
            await self._store.release_lease(session.id, self._owner)

    async def _keep_lease(self, session_id: str) -> None:
        while True:
            await asyncio.sleep(self._lease_seconds / 3)  # a timer: renew well before expiry
            if not await self._store.renew_lease(session_id, self._owner, ttl=self._lease_seconds):
                logger.warning("lost the lease of session %s", session_id)
                return

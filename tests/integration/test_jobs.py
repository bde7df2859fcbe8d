"""Background jobs: one runner per session across processes, resumed when a process dies, and
stopped where the lease was lost (another process may have resumed it)."""

from __future__ import annotations

import asyncio

import pytest
from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError

from bot.jobs import Jobs
from bot.workflow import Phase, Scope, Session
from state.sessions import SessionStore


def working_session(session_id: str = "job1") -> Session:
    return Session(
        id=session_id,
        tenant_id=f"tenant-{session_id}",
        tenant_label="contoso.com",
        scope=Scope.FULL,
        channel_id="C0PROV",
        started_by="U0ADMIN",
        created_at=1.0,
        updated_at=1.0,
        phase=Phase.VERIFYING,
    )


@pytest.fixture
def store(redis: Redis) -> SessionStore[Session]:
    return SessionStore(redis, decode=Session.from_json, active_ttl=3600, retention_ttl=7200)


async def test_one_process_runs_a_session_job_and_another_resumes_it_after_a_crash(
    store: SessionStore[Session],
) -> None:
    session = await store.create(working_session(), detail={})
    started: list[str] = []
    running = asyncio.Event()
    release = asyncio.Event()

    def runner_for(name: str):  # type: ignore[no-untyped-def]
        async def run(current: Session) -> None:
            started.append(name)
            running.set()
            await release.wait()

        return run

    first = Jobs(store, {Phase.VERIFYING: runner_for("first")}, lease_seconds=30)
    second = Jobs(store, {Phase.VERIFYING: runner_for("second")}, lease_seconds=30)
    first.launch(session)
    await running.wait()
    assert await store.lease_holder(session.id) is not None
    assert await second.resume_orphans() == 0  # leased: nobody else starts it
    second.launch(session)
    await second.wait(session.id)  # it finds the lease taken and gives up at once
    assert started == ["first"]
    await first.stop()  # the first process goes away; its lease is handed back
    assert await store.lease_holder(session.id) is None
    assert await second.resume_orphans() == 1
    release.set()
    await second.wait(session.id)
    assert started == ["first", "second"]
    assert await store.lease_holder(session.id) is None


async def test_a_stopped_process_starts_no_job_not_even_one_deferred_behind_another(
    store: SessionStore[Session],
) -> None:
    """A launch that comes while the session's job still runs here waits for it; when the
    process stops, the running job is cancelled and the waiting launch must not start it
    again: it would hold the lease on a process going away, and the next process could not
    resume the job."""
    session = await store.create(working_session(), detail={})
    started: list[str] = []
    running = asyncio.Event()

    async def run(current: Session) -> None:
        started.append(current.id)
        running.set()
        await asyncio.Event().wait()  # works until cancelled

    jobs = Jobs(store, {Phase.VERIFYING: run}, lease_seconds=30)
    jobs.launch(session)
    await running.wait()
    jobs.launch(session)  # deferred behind the running one
    await jobs.stop()
    await asyncio.sleep(0)  # the done callbacks of the cancelled job have run
    async with asyncio.timeout(10):  # a job started again would work on, until cancelled
        await jobs.wait(session.id)
    assert started == [session.id]
    assert await store.lease_holder(session.id) is None
    jobs.launch(session)
    await jobs.wait(session.id)
    assert started == [session.id]


async def test_sessions_in_phases_without_a_runner_are_left_alone(
    store: SessionStore[Session],
) -> None:
    session = await store.create(
        Session(**{**working_session("job2").__dict__, "phase": Phase.STARTED}), detail={}
    )
    ran: list[Session] = []

    async def run(current: Session) -> None:
        ran.append(current)

    jobs = Jobs(store, {Phase.VERIFYING: run})
    jobs.launch(session)
    assert await jobs.resume_orphans() == 0
    assert ran == []


async def test_resume_launches_only_a_job_nobody_holds(store: SessionStore[Session]) -> None:
    session = await store.create(working_session("job3"), detail={})
    started = asyncio.Event()
    release = asyncio.Event()

    async def run(current: Session) -> None:
        started.set()
        await release.wait()

    jobs = Jobs(store, {Phase.VERIFYING: run})
    assert await store.take_lease(session.id, "process-dead", ttl=30)
    assert not await jobs.resume(session)  # the lease still says its process is alive
    await store.release_lease(session.id, "process-dead")  # as if it lapsed
    assert await jobs.resume(session)
    await started.wait()
    assert not await jobs.resume(session)  # it runs here now
    release.set()
    await jobs.wait(session.id)


async def test_a_click_takes_over_only_a_job_that_had_time_to_start(
    store: SessionStore[Session],
) -> None:
    """No lease right after the transition into a working phase means the job is still being
    launched (by whichever process made the transition), not that its process died."""
    session = await store.create(working_session("job6"), detail={})
    release = asyncio.Event()

    async def run(current: Session) -> None:
        await release.wait()

    jobs = Jobs(store, {Phase.VERIFYING: run}, lease_seconds=10)
    assert not await jobs.take_over(session, now=session.updated_at + 9)
    assert await store.lease_holder(session.id) is None  # nothing was launched
    assert await jobs.take_over(session, now=session.updated_at + 10)
    release.set()
    await jobs.wait(session.id)


async def test_a_job_whose_lease_was_lost_stops_here(store: SessionStore[Session]) -> None:
    session = await store.create(working_session("job4"), detail={})
    running = asyncio.Event()
    stopped = asyncio.Event()

    async def run(current: Session) -> None:
        running.set()
        try:
            await asyncio.Event().wait()  # works until stopped
        finally:
            stopped.set()

    jobs = Jobs(store, {Phase.VERIFYING: run}, lease_seconds=10, renew_seconds=0.05)
    jobs.launch(session)
    await running.wait()
    # The lease lapsed (a long Redis outage, a stalled process) and another process took it.
    holder = await store.lease_holder(session.id)
    assert holder is not None
    await store.release_lease(session.id, holder)
    assert await store.take_lease(session.id, "process-other", ttl=10)
    async with asyncio.timeout(5):
        await stopped.wait()  # the next renewal finds the lease gone and stops the job
    await jobs.wait(session.id)
    assert await store.lease_holder(session.id) == "process-other"  # left to its new holder


async def test_a_renewal_lost_to_a_redis_blip_is_tried_again(
    store: SessionStore[Session], monkeypatch: pytest.MonkeyPatch
) -> None:
    session = await store.create(working_session("job5"), detail={})
    renewals: list[str] = []
    renewed_after_the_blip = asyncio.Event()
    renew = store.renew_lease

    async def blipping_renew(session_id: str, owner: str, *, ttl: int) -> bool:
        if not renewals:
            renewals.append("failed")
            raise RedisConnectionError("Redis restarting")
        renewals.append("renewed")
        renewed_after_the_blip.set()
        return await renew(session_id, owner, ttl=ttl)

    monkeypatch.setattr(store, "renew_lease", blipping_renew)
    release = asyncio.Event()

    async def run(current: Session) -> None:
        await release.wait()

    jobs = Jobs(store, {Phase.VERIFYING: run}, lease_seconds=10, renew_seconds=0.05)
    jobs.launch(session)
    async with asyncio.timeout(5):
        await renewed_after_the_blip.wait()
    assert renewals[:2] == ["failed", "renewed"]
    assert await store.lease_holder(session.id) is not None  # still this process's job
    release.set()
    await jobs.wait(session.id)
    assert await store.lease_holder(session.id) is None

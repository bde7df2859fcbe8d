"""Background jobs: one runner per session across processes, resumed when a process dies."""

from __future__ import annotations

import asyncio

import pytest
from redis.asyncio import Redis

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

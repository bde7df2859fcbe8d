"""The session store against a real redis-server."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from typing import Any

import pytest
from redis.asyncio import Redis

from bot.sandbox.redis_server import RedisServer
from bot.workflow import Event, EventKind, Phase, Scope, Session, TransitionNotAllowed, advance
from state.connection import MAX_CONNECTIONS, connect
from state.sessions import SessionGone, SessionStore, TenantBusy, VersionConflict

TENANT = "0f1e2d3c-4b5a-4697-8899-aabbccddeeff"


def new_session(session_id: str = "s1", tenant_id: str = TENANT) -> Session:
    return Session(
        id=session_id,
        tenant_id=tenant_id,
        tenant_label="contoso.com",
        scope=Scope.FULL,
        channel_id="C0PROV",
        started_by="U0ADMIN",
        created_at=1.0,
        updated_at=1.0,
    )


@pytest.fixture
def store(redis: Redis) -> SessionStore[Session]:
    return SessionStore(redis, decode=Session.from_json, active_ttl=3600, retention_ttl=7200)


async def test_create_get_and_audit(store: SessionStore[Session], redis: Redis) -> None:
    await store.create(new_session(), detail={"tenant": "contoso.com"})
    assert await store.get("s1") == new_session()
    assert await store.holder_of(TENANT) == "s1"
    [entry] = await store.audit("s1")
    assert (entry.actor, entry.action, entry.detail) == (
        "U0ADMIN",
        "start",
        {"tenant": "contoso.com"},
    )
    keys = sorted(key.decode() for key in await redis.keys("pi:{s1}:*"))
    assert keys == ["pi:{s1}:audit", "pi:{s1}:messages", "pi:{s1}:session"]
    assert 0 < await redis.ttl("pi:{s1}:session") <= 3600


async def test_a_session_knows_every_message_posted_for_it(
    store: SessionStore[Session], redis: Redis
) -> None:
    """A new session keeps every post's ts, so a message missing from them is a copy the bot
    lost track of; a session from before that rule (no marker) disowns nothing."""
    await store.create(new_session(), detail={})
    now = 1800000000.0
    assert await store.begin_post("s1", "posting:a", now + 30, "out:1.0") is None
    _, posting = await store.get_with_posts("s1")
    # Posted and not recorded yet: it may be the message clicked, until the record gives up.
    assert not posting.disowns("1700000000.000200", now=now)
    assert posting.disowns("1700000000.000200", now=now + 31)
    await store.keep_post("s1", ["out:1.0", "step@0"], "1700000000.000100", posting="posting:a")
    session, posted = await store.get_with_posts("s1")
    assert session == new_session()
    assert posted.posting_until == ()
    assert not posted.disowns("1700000000.000100", now=now)
    assert posted.disowns("1700000000.000200", now=now)
    assert await store.begin_post("s1", "posting:b", now + 30, "out:1.0") == "1700000000.000100"
    await redis.hdel("pi:{s1}:messages", "every_post", "posting:b")
    _, older = await store.get_with_posts("s1")
    assert not older.disowns("1700000000.000200", now=now)
    gone, nothing = await store.get_with_posts("nope")
    assert gone is None
    assert not nothing.disowns("1700000000.000200", now=now)


async def test_one_active_session_per_tenant(store: SessionStore[Session]) -> None:
    await store.create(new_session("s1"), detail={})
    with pytest.raises(TenantBusy) as busy:
        await store.create(new_session("s2"), detail={})
    assert busy.value.session_id == "s1"
    assert await store.get("s2") is None
    await store.create(new_session("s3", tenant_id="another-tenant"), detail={})


async def test_concurrent_creates_for_one_tenant_make_one_session(
    store: SessionStore[Session],
) -> None:
    results = await asyncio.gather(
        *(store.create(new_session(f"s{n}"), detail={}) for n in range(10)),
        return_exceptions=True,
    )
    created = [result for result in results if isinstance(result, Session)]
    assert len(created) == 1
    assert all(isinstance(result, TenantBusy) for result in results if result not in created)
    assert [session.id for session in await store.active()] == [created[0].id]


async def test_many_rounds_of_concurrent_starts_each_make_one_session(
    store: SessionStore[Session], redis: Redis
) -> None:
    for round_number in range(20):
        tenant = f"tenant-round-{round_number}"
        results = await asyncio.gather(
            *(
                store.create(new_session(f"r{round_number}-{n}", tenant), detail={})
                for n in range(5)
            ),
            return_exceptions=True,
        )
        created = [result for result in results if isinstance(result, Session)]
        assert len(created) == 1, results
        # The losers leave no record behind: only the winner's session and audit exist.
        pattern = "pi:{r" + str(round_number) + "-*"
        keys = {k.decode() for k in await redis.keys(pattern)}
        assert keys == {
            f"pi:{{{created[0].id}}}:session",
            f"pi:{{{created[0].id}}}:audit",
            f"pi:{{{created[0].id}}}:messages",
        }


class PausingAfterLock(Redis):
    """A Redis client that holds the first tenant-lock ``SET`` it makes right after Redis has
    answered it: the moment between taking the lock and going on, made as long as a test wants."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.locked = asyncio.Event()
        self.go_on = asyncio.Event()
        self._paused = False

    async def set(self, name: Any, *args: Any, **kwargs: Any) -> Any:  # type: ignore[override]
        answer = await super().set(name, *args, **kwargs)
        if str(name).startswith("pi:tenant:") and not self._paused:
            self._paused = True
            self.locked.set()
            await self.go_on.wait()
        return answer


async def test_a_start_paused_right_after_taking_the_lock_still_makes_one_session(
    redis_server: RedisServer, redis: Redis
) -> None:
    """Two starts for one tenant: the first stops just after taking the lock; the second must
    find a session behind it, not a stale lock to take over."""
    pausing = PausingAfterLock.from_url(redis_server.url)
    first_store = SessionStore(
        pausing, decode=Session.from_json, active_ttl=3600, retention_ttl=7200
    )
    second_store = SessionStore(
        redis, decode=Session.from_json, active_ttl=3600, retention_ttl=7200
    )
    try:
        first = asyncio.ensure_future(first_store.create(new_session("first"), detail={}))
        await pausing.locked.wait()
        with pytest.raises(TenantBusy):
            await second_store.create(new_session("second"), detail={})
        pausing.go_on.set()
        assert await first == new_session("first")
        assert [s.id for s in await second_store.active()] == ["first"]
    finally:
        await pausing.aclose()


async def test_a_lock_whose_holder_has_no_record_is_taken_over(
    store: SessionStore[Session], redis: Redis
) -> None:
    session = new_session("fresh")
    await redis.set(f"pi:tenant:{{{session.tenant_id}}}", "ghost")  # its session is gone
    assert await store.create(session, detail={}) == session
    assert await store.holder_of(session.tenant_id) == "fresh"


async def test_compare_and_set_refuses_a_stale_version(store: SessionStore[Session]) -> None:
    session = await store.create(new_session(), detail={})
    first = advance(session, Event(EventKind.MAILFLOW_CONSENT, "U0GA", 2.0))
    await store.replace(session, first.after, actor="U0GA", action="mailflow_consent")
    stale = advance(session, Event(EventKind.CANCEL, "U0ADMIN", 2.5))
    with pytest.raises(VersionConflict):
        await store.replace(session, stale.after, actor="U0ADMIN", action="cancel")
    stored = await store.require("s1")
    assert stored.phase is Phase.MAILFLOW_CONSENTED
    assert [entry.action for entry in await store.audit("s1")] == ["start", "mailflow_consent"]


async def test_a_session_is_indexed_under_its_new_phase_before_it_gets_there(
    store: SessionStore[Session], redis: Redis
) -> None:
    """The phase index is written before the record's compare-and-set (the server's own log
    of the commands, in order): a crash or a Redis restart after the record changed cannot
    leave the session missing from its new phase's index, where the orphan check and the job
    resumption look for it."""
    session = await store.create(new_session(), detail={})
    first = advance(session, Event(EventKind.MAILFLOW_CONSENT, "U0GA", 2.0))
    await redis.config_set("slowlog-log-slower-than", 0)
    await redis.slowlog_reset()
    try:
        await store.replace(session, first.after, actor="U0GA", action="mailflow_consent")
        logged = await redis.slowlog_get(64)
    finally:
        await redis.config_set("slowlog-log-slower-than", 10000)
    names = [
        entry["command"].decode(errors="replace").split()[0:2]
        for entry in sorted(logged, key=lambda entry: entry["id"])
    ]
    index = ["ZADD", "pi:active:phase:mailflow_consented"]
    stored = next(i for i, name in enumerate(names) if name[0] in ("EVALSHA", "EVAL"))
    assert index in names[:stored], names


async def test_two_racing_decisions_store_exactly_one(store: SessionStore[Session]) -> None:
    session = await store.create(new_session(), detail={})

    async def decide(actor: str) -> str:
        while True:
            current = await store.require("s1")
            try:
                transition = advance(current, Event(EventKind.CANCEL, actor, 3.0))
            except TransitionNotAllowed:
                return "refused"
            try:
                await store.replace(current, transition.after, actor=actor, action="cancel")
            except VersionConflict:
                continue
            return "stored"

    outcomes = await asyncio.gather(*(decide(f"U{n}") for n in range(8)))
    assert sorted(outcomes).count("stored") == 1
    assert [e.action for e in await store.audit(session.id)].count("cancel") == 1


async def test_finished_sessions_leave_the_index_and_keep_their_audit(
    store: SessionStore[Session], redis: Redis
) -> None:
    session = await store.create(new_session(), detail={})
    cancelled = advance(session, Event(EventKind.CANCEL, "U0ADMIN", 2.0)).after
    await store.replace(session, cancelled, actor="U0ADMIN", action="cancel")
    await store.release_tenant(cancelled)
    assert await store.active() == []
    assert await store.holder_of(TENANT) is None
    assert 3600 < await redis.ttl("pi:{s1}:audit") <= 7200
    await store.create(new_session("s2"), detail={})


async def test_a_stale_tenant_lock_does_not_block_a_new_session(
    store: SessionStore[Session], redis: Redis
) -> None:
    await redis.set(f"pi:tenant:{{{TENANT}}}", "vanished-session")
    await store.create(new_session("s2"), detail={})
    assert await store.holder_of(TENANT) == "s2"


async def test_replace_on_a_missing_session(store: SessionStore[Session]) -> None:
    session = new_session()
    with pytest.raises(SessionGone):
        await store.replace(session, replace(session, version=1), actor="U", action="x")


async def test_claim_once(store: SessionStore[Session]) -> None:
    assert await store.claim_once("trigger:1") is True
    assert await store.claim_once("trigger:1") is False
    assert await store.claim_once("trigger:2") is True


async def test_claims_made_at_the_same_moment_share_one_round_trip(
    store: SessionStore[Session], redis: Redis
) -> None:
    """Ten requests claiming their trigger and signature at once: one pipeline carries all
    twenty ``SET NX`` (the server saw them from one connection), and each request gets its own
    answers, a repeated trigger losing to the first."""
    await redis.config_set("slowlog-log-slower-than", 0)
    await redis.slowlog_reset()
    try:
        answers = await asyncio.gather(
            *(
                store.claim_each(
                    [(f"trigger:{n % 9}", 60), (f"signature:{n}", 60)], token=f"request-{n}"
                )
                for n in range(10)
            )
        )
        logged = await redis.slowlog_get(128)
    finally:
        await redis.config_set("slowlog-log-slower-than", 10000)
    assert answers == [[True, True]] * 9 + [[False, True]]
    sets = [entry for entry in logged if entry["command"].split()[0] == b"SET"]
    assert len(sets) == 20
    assert len({entry["client_address"] for entry in sets}) == 1
    # A retried claim whose answer was lost finds its own token: still the first.
    again = await store.claim_each([("trigger:0", 60)], token="request-0")
    assert again == [True]


async def test_sessions_survive_a_redis_restart(
    store: SessionStore[Session], redis_server: RedisServer
) -> None:
    session = await store.create(new_session(), detail={})
    moved = advance(session, Event(EventKind.MAILFLOW_CONSENT, "U0GA", 2.0)).after
    await store.replace(session, moved, actor="U0GA", action="mailflow_consent")
    redis_server.restart()
    fresh = Redis.from_url(redis_server.url)
    try:
        again = SessionStore(fresh, decode=Session.from_json, active_ttl=3600, retention_ttl=7200)
        assert await again.require("s1") == moved
        assert len(await again.audit("s1")) == 2
        assert await again.holder_of(TENANT) == "s1"
    finally:
        await fresh.aclose()


async def test_the_tenant_lock_lives_as_long_as_its_session(
    store: SessionStore[Session], redis: Redis
) -> None:
    session = await store.create(new_session(), detail={})
    await redis.expire(f"pi:tenant:{{{TENANT}}}", 5)  # nearly lapsed...
    moved = advance(session, Event(EventKind.MAILFLOW_CONSENT, "U0GA", 2.0)).after
    await store.replace(session, moved, actor="U0GA", action="mailflow_consent")
    assert await redis.ttl(f"pi:tenant:{{{TENANT}}}") > 3000  # ...renewed by the change
    with pytest.raises(TenantBusy):
        await store.create(new_session("s2"), detail={})


async def test_refusals_are_kept_apart_capped_and_only_for_a_session(redis: Redis) -> None:
    store = SessionStore(
        redis, decode=Session.from_json, active_ttl=3600, retention_ttl=7200, refusals_kept=5
    )
    assert not await store.record_refusal("nobody", actor="U0OUTSIDER", action="refused: x")
    assert await redis.keys("pi:*refusals") == []
    await store.create(new_session(), detail={})
    for n in range(12):
        assert await store.record_refusal(
            "s1", actor="U0OUTSIDER", action=f"refused: {n}", detail={"reason": "r"}
        )
    refusals = await store.refusals("s1")
    assert [r.action for r in refusals] == [f"refused: {n}" for n in range(7, 12)]
    assert refusals[-1].detail == {"reason": "r"}
    assert 7000 < await redis.ttl("pi:{s1}:refusals") <= 7200  # as long as the audit is kept
    assert [e.action for e in await store.audit("s1")] == ["start"]


async def test_the_latest_audit_entries_come_newest_last(store: SessionStore[Session]) -> None:
    await store.create(new_session(), detail={})
    for n in range(150):
        await store.record("s1", actor="U0ADMIN", action=f"check {n}", result="ok")
    latest = await store.latest_audit("s1", count=3)
    assert [e.action for e in latest] == ["check 147", "check 148", "check 149"]


# -- indexes (issue 12): listings read what they show, never every session --------------------


def in_channel(session_id: str, channel_id: str, tenant: str) -> Session:
    return replace(new_session(session_id, tenant), channel_id=channel_id)


async def hgets(redis: Redis) -> int:
    stats = await redis.info("commandstats")
    return int(stats.get("cmdstat_hget", {}).get("calls", 0))


async def test_a_channel_listing_reads_that_channel_s_sessions_only(
    store: SessionStore[Session], redis: Redis
) -> None:
    for n in range(5):
        await store.create(in_channel(f"a{n}", "C0A", f"tenant-a{n}"), detail={})
    for n in range(200):
        await store.create(in_channel(f"b{n}", f"C0B{n % 20}", f"tenant-b{n}"), detail={})
    before = await hgets(redis)

    listed = await store.in_channel("C0A")

    assert sorted(s.id for s in listed) == [f"a{n}" for n in range(5)]
    assert await hgets(redis) - before == 5  # one record read per session shown, no more
    assert await store.count_active() == 205


async def test_indexes_follow_phases_and_forget_finished_sessions(
    store: SessionStore[Session],
) -> None:
    session = await store.create(new_session(), detail={})
    assert [s.id for s in await store.in_phase(Phase.STARTED)] == ["s1"]
    cancelled = advance(session, Event(EventKind.CANCEL, "U0ADMIN", 5.0)).after
    await store.replace(session, cancelled, actor="U0ADMIN", action="cancel")

    assert await store.in_phase(Phase.STARTED) == []
    assert await store.in_phase(Phase.CANCELLED) == []  # finished sessions are not listed
    assert await store.in_channel("C0PROV") == []
    assert await store.count_in_phases([Phase.STARTED, Phase.CANCELLED]) == {
        Phase.STARTED: 0,
        Phase.CANCELLED: 0,
    }


async def test_a_stale_index_entry_is_repaired_when_read(
    store: SessionStore[Session], redis: Redis
) -> None:
    """A crash between storing a record and updating its indexes leaves an entry under the old
    phase: the next listing of that phase drops it and files the session where it is."""
    session = await store.create(new_session(), detail={})
    await redis.zadd(f"pi:active:phase:{Phase.ROLE_REQUESTED}", {session.id: 1.0})

    assert await store.in_phase(Phase.ROLE_REQUESTED) == []
    assert await redis.zrange(f"pi:active:phase:{Phase.ROLE_REQUESTED}", 0, -1) == []
    assert [s.id for s in await store.in_phase(Phase.STARTED)] == [session.id]


async def test_idle_sessions_are_found_by_their_last_change(
    store: SessionStore[Session],
) -> None:
    old = await store.create(replace(new_session("old", "t-old"), updated_at=100.0), detail={})
    await store.create(replace(new_session("new", "t-new"), updated_at=900.0), detail={})

    assert [s.id for s in await store.idle_since(500.0)] == [old.id]
    assert [s.id for s in await store.newest(1)] == ["new"]


async def test_sessions_of_an_earlier_version_are_indexed_at_start_up(
    store: SessionStore[Session], redis: Redis
) -> None:
    session = await store.create(new_session(), detail={})
    for key in await redis.keys("pi:active*"):
        await redis.delete(key)
    await redis.sadd("pi:sessions", session.id, "gone")  # how earlier versions listed them

    assert await store.migrate_indexes() == 1
    assert [s.id for s in await store.in_channel("C0PROV")] == [session.id]
    assert not await redis.exists("pi:sessions")
    assert await store.migrate_indexes() == 0


async def test_a_command_past_the_pools_connections_waits_for_one_instead_of_failing(
    redis_server: RedisServer,
) -> None:
    client = connect(redis_server.url)
    try:
        # Every connection held by a blocking pop for a moment, and one command more.
        waits = [client.blpop([f"empty:{n}"], timeout=0.3) for n in range(MAX_CONNECTIONS)]
        answers = await asyncio.gather(*waits, client.ping())
    finally:
        await client.aclose()
    assert answers == [None] * MAX_CONNECTIONS + [True]

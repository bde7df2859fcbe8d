"""The courier that delivers outbox entries, against a real redis-server: in order per session,
one deliverer at a time, Slack's ``Retry-After`` honoured, retries bounded, hopeless errors given
up at once. Entries are written as the product writes them (the store's compare-and-set); what
delivering means is the test's own ``perform`` (the Slack side is tested through the sandbox in
``test_outbox.py``), failing with the errors slack_sdk raises."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from redis.asyncio import Redis
from slack_sdk.errors import SlackApiError
from slack_sdk.web.slack_response import SlackResponse

from bot.session.outbox import Courier, DeliveryPolicy, entry_for
from bot.workflow import Event, EventKind, Session, Thread, Transition, advance
from state.outbox import PENDING_INDEX
from state.sessions import SessionStore
from tests.integration.test_session_store import new_session


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def slack_error(code: str, *, status: int = 200, retry_after: str | None = None) -> SlackApiError:
    response = SlackResponse(
        client=None,
        http_verb="POST",
        api_url="https://slack.com/api/chat.postMessage",
        req_args={},
        data={"ok": False, "error": code},
        headers={"Retry-After": retry_after} if retry_after else {},
        status_code=status,
    )
    return SlackApiError(f"The request to the Slack API failed: {code}", response)


class Slack:
    """What ``perform`` did, and the failures it is told to raise, in order."""

    def __init__(self) -> None:
        self.delivered: list[int] = []
        self.failures: list[Exception] = []
        self.gate: asyncio.Event | None = None
        self.entered = asyncio.Event()

    async def perform(self, transition: Transition) -> None:
        self.entered.set()
        if self.gate is not None:
            await self.gate.wait()
        if self.failures:
            raise self.failures.pop(0)
        self.delivered.append(transition.after.version)


@pytest.fixture
def store(redis: Redis) -> SessionStore[Session]:
    return SessionStore(redis, decode=Session.from_json, active_ttl=3600, retention_ttl=7200)


async def change(store: SessionStore[Session], session: Session, event: Event) -> Session:
    transition = advance(session, event)
    entry = entry_for(transition)
    assert entry is not None
    await store.replace(
        session, transition.after, actor=event.actor, action=event.kind.value, outbox=entry
    )
    return transition.after


async def with_entries(store: SessionStore[Session], count: int) -> Session:
    """A session whose outbox holds ``count`` entries (root posted, then cancelled)."""
    session = await store.create(new_session(), detail={})
    session = await change(
        store, session, Event(EventKind.ROOT_POSTED, "U0ADMIN", 2.0, payload=Thread("1.000001"))
    )
    if count > 1:
        session = await change(store, session, Event(EventKind.CANCEL, "U0ADMIN", 3.0))
    return session


def courier(store: SessionStore[Session], slack: Slack, clock: Clock, **policy: Any) -> Courier:
    return Courier(store.outbox, slack.perform, clock=clock, policy=DeliveryPolicy(**policy))


async def test_entries_are_delivered_in_order_and_the_index_forgets_the_session(
    store: SessionStore[Session], redis: Redis
) -> None:
    session = await with_entries(store, 2)
    slack, clock = Slack(), Clock()
    assert await redis.zrange(PENDING_INDEX, 0, -1) == [session.id.encode()]

    await courier(store, slack, clock).deliver_pending()

    assert slack.delivered == [1, 2]
    assert await store.outbox.length(session.id) == 0
    assert await redis.zrange(PENDING_INDEX, 0, -1) == []


async def test_slack_rate_limit_waits_retry_after_and_keeps_the_order(
    store: SessionStore[Session],
) -> None:
    session = await with_entries(store, 2)
    slack, clock = Slack(), Clock()
    slack.failures.append(slack_error("ratelimited", status=429, retry_after="30"))
    deliverer = courier(store, slack, clock)

    await deliverer.deliver(session.id)

    head = await store.outbox.head(session.id)
    assert head is not None
    assert head.not_before == clock.now + 30  # Slack's Retry-After, longer than the backoff
    assert head.last_error == "Slack rate limit (ratelimited)"
    assert slack.delivered == []  # the second entry does not overtake the first
    clock.now += 29
    await deliverer.deliver_pending()
    assert slack.delivered == []
    clock.now += 1
    await deliverer.deliver_pending()
    assert slack.delivered == [1, 2]


async def test_retries_are_bounded_then_the_entry_is_given_up_and_the_next_goes(
    store: SessionStore[Session], redis: Redis
) -> None:
    session = await with_entries(store, 2)
    slack, clock = Slack(), Clock()
    slack.failures.extend(slack_error("internal_error", status=500) for _ in range(3))
    deliverer = courier(store, slack, clock, attempts=3, first_retry_seconds=2)
    waits = []
    for _ in range(3):
        await deliverer.deliver_pending()
        head = await store.outbox.head(session.id)
        if head is not None and head.attempts:
            waits.append(head.not_before - clock.now)
            clock.now = head.not_before

    assert waits == [2, 4]  # doubling backoff, then the third failure gives up
    assert slack.delivered == [2]
    [failure] = (await store.outbox.undelivered([session.id]))[session.id]
    assert (failure.version, failure.attempts) == (1, 3)
    assert failure.effects == ("show_steps",)
    assert failure.error == "Slack answered internal_error"
    assert await store.outbox.with_undelivered(session.channel_id) == [session.id]
    assert await store.outbox.with_undelivered("C0ELSEWHERE") == []
    assert await store.outbox.count_undelivered() == 1
    assert await redis.zrange(PENDING_INDEX, 0, -1) == []


async def test_an_error_no_retry_can_fix_is_given_up_at_once(
    store: SessionStore[Session],
) -> None:
    session = await with_entries(store, 1)
    slack, clock = Slack(), Clock()
    slack.failures.append(slack_error("not_in_channel"))

    await courier(store, slack, clock).deliver(session.id)

    [failure] = (await store.outbox.undelivered([session.id]))[session.id]
    assert (failure.attempts, failure.error) == (1, "Slack answered not_in_channel")
    assert await store.outbox.length(session.id) == 0


async def test_one_deliverer_at_a_time_and_what_arrives_meanwhile_is_not_forgotten(
    store: SessionStore[Session],
) -> None:
    """Two processes: while the first delivers, the second's attempt returns at once (no
    double post); an entry written meanwhile is delivered by the first when it looks again."""
    session = await with_entries(store, 1)
    slack, clock = Slack(), Clock()
    slack.gate = asyncio.Event()
    first, second = courier(store, slack, clock), courier(store, slack, clock)

    delivering = asyncio.create_task(first.deliver(session.id))
    await slack.entered.wait()  # the first is inside the delivery, holding the lease
    session = await change(store, session, Event(EventKind.CANCEL, "U0ADMIN", 3.0))
    await second.deliver(session.id)  # refused the lease: returns without delivering
    assert slack.delivered == []
    slack.gate.set()
    await delivering

    assert slack.delivered == [1, 2]
    assert await store.outbox.length(session.id) == 0


async def test_a_lease_left_by_a_dead_deliverer_is_taken_over_when_it_lapses(
    store: SessionStore[Session], redis: Redis
) -> None:
    session = await with_entries(store, 1)
    lease = f"pi:{{{session.id}}}:delivering"
    await redis.config_set("notify-keyspace-events", "Kx")  # expirations, as they happen
    pubsub = redis.pubsub()
    await pubsub.subscribe(f"__keyspace@0__:{lease}")
    await redis.set(lease, "courier-dead", px=200)
    slack, clock = Slack(), Clock()
    deliverer = courier(store, slack, clock)

    await deliverer.deliver(session.id)
    assert slack.delivered == []  # the dead process's lease still holds

    async with asyncio.timeout(5):  # the lease's own expiry, announced by Redis
        while (
            message := await pubsub.get_message(ignore_subscribe_messages=True, timeout=None)
        ) is None or message["data"] != b"expired":
            pass
    await pubsub.aclose()
    await deliverer.deliver(session.id)
    assert slack.delivered == [1]


async def test_two_tasks_of_one_process_queue_and_the_second_returns_when_its_entry_is_sent(
    store: SessionStore[Session],
) -> None:
    """A second request changing the session while this process delivers it waits for that
    delivery, which takes the new entry too: when it returns, its messages are out."""
    session = await with_entries(store, 1)
    slack, clock = Slack(), Clock()
    slack.gate = asyncio.Event()
    deliverer = courier(store, slack, clock)

    first = asyncio.create_task(deliverer.deliver(session.id))
    await slack.entered.wait()
    session = await change(store, session, Event(EventKind.CANCEL, "U0ADMIN", 3.0))
    second = asyncio.create_task(deliverer.deliver(session.id))
    await asyncio.sleep(0)  # let it reach the wait (it cannot finish: the first holds the gate)
    assert not second.done()
    slack.gate.set()
    await second

    assert slack.delivered == [1, 2]  # the second's entry is out when it returns
    await first

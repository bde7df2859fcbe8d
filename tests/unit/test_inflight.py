"""Acks first: acked work waits, in line, while a request of the process is still to be acked,
unless it has waited too long; slots are handed out in the order asked and come back when the
work ends or gives up."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any

from bot.ops.inflight import WAITING_LISTENER_BYTES, InFlight, waiting_elsewhere


async def _work(
    inflight: InFlight,
    started: list[str],
    name: str,
    done: asyncio.Event,
    going: asyncio.Event | None = None,
) -> None:
    await inflight.take_slot()
    started.append(name)
    if going is not None:
        going.set()
    await done.wait()


def _later(
    started: list[str], name: str, done: asyncio.Event | None = None
) -> Callable[[], Coroutine[Any, Any, None]]:
    """Work not started yet (``start_in_turn``): once started it notes ``name``, then waits
    for ``done`` (or a turn of the loop, as real work takes)."""

    async def work() -> None:
        started.append(name)
        if done is None:
            await asyncio.sleep(0)
        else:
            await done.wait()

    return work


async def _settled() -> None:
    """Let every ready task run until it waits again."""
    for _ in range(5):
        await asyncio.sleep(0)


async def test_no_new_work_starts_while_a_request_waits_for_its_ack() -> None:
    inflight = InFlight(at_once=4, acks_first_for=60, busy_for=0)
    started: list[str] = []
    done = asyncio.Event()
    with inflight.acking():
        work = asyncio.create_task(_work(inflight, started, "acked", done))
        await _settled()
        assert (started, inflight.waiting, inflight.free_slots) == ([], 1, 4)
    await _settled()
    assert (started, inflight.waiting, inflight.free_slots) == (["acked"], 0, 3)
    done.set()
    await work
    assert inflight.free_slots == 4


async def test_work_that_waited_too_long_starts_even_while_acks_are_pending() -> None:
    inflight = InFlight(at_once=4, acks_first_for=0.05, busy_for=0)
    started: list[str] = []
    done, going = asyncio.Event(), asyncio.Event()
    with inflight.acking():
        work = asyncio.create_task(_work(inflight, started, "overdue", done, going))
        await _settled()
        assert started == []
        # Started by the InFlight's own timer, the request still not acked.
        await asyncio.wait_for(going.wait(), timeout=5)
        assert (started, inflight.to_ack) == (["overdue"], 1)
    done.set()
    await work


async def test_slots_are_handed_out_in_the_order_asked() -> None:
    inflight = InFlight(at_once=1, acks_first_for=60, busy_for=0)
    started: list[str] = []
    finish = {name: asyncio.Event() for name in "abc"}
    taken = inflight.take_every_slot()
    tasks = []
    for name in "abc":
        tasks.append(asyncio.create_task(_work(inflight, started, name, finish[name])))
        await _settled()
    inflight.give_back(taken)
    await _settled()
    assert started == ["a"]
    for name, now in (("a", ["a", "b"]), ("b", ["a", "b", "c"])):
        finish[name].set()
        await _settled()
        assert started == now
    finish["c"].set()
    await asyncio.gather(*tasks)
    assert inflight.free_slots == 1


async def test_work_cancelled_while_waiting_gives_up_its_place_and_no_slot() -> None:
    inflight = InFlight(at_once=1, acks_first_for=60, busy_for=0)
    started: list[str] = []
    done = asyncio.Event()
    taken = inflight.take_every_slot()
    first = asyncio.create_task(_work(inflight, started, "cancelled", done))
    second = asyncio.create_task(_work(inflight, started, "next", done))
    await _settled()
    first.cancel()
    await _settled()
    inflight.give_back(taken)
    await _settled()
    assert started == ["next"]
    done.set()
    await second
    assert first.cancelled()
    assert (inflight.free_slots, inflight.waiting) == (1, 0)


async def test_a_burst_counts_as_busy_a_moment_after_its_last_ack() -> None:
    inflight = InFlight(at_once=4, acks_first_for=60, busy_for=0.05)
    started: list[str] = []
    done, going = asyncio.Event(), asyncio.Event()
    works: list[asyncio.Task[None]] = []
    for name in ("lone", "next"):  # one after the other, never at the same time: no burst
        with inflight.acking():
            works.append(asyncio.create_task(_work(inflight, started, name, done)))
            await _settled()
        await _settled()
    assert started == ["lone", "next"]  # each one's work goes on at once
    with inflight.acking(), inflight.acking():  # two acked at the same time: a burst
        pass
    with inflight.acking():  # the next ack comes within busy_for: the burst goes on
        works.append(asyncio.create_task(_work(inflight, started, "after", done, going)))
        await _settled()
    await _settled()
    assert started == ["lone", "next"]  # the next request of the burst may be a moment away
    await asyncio.wait_for(going.wait(), timeout=5)  # the InFlight's own timer lets it go
    done.set()
    await asyncio.gather(*works)


async def test_overdue_work_goes_on_only_a_few_at_a_time_while_busy() -> None:
    inflight = InFlight(at_once=4, while_busy=1, acks_first_for=0.05, busy_for=0)
    started: list[str] = []
    done, going = asyncio.Event(), asyncio.Event()
    with inflight.acking():
        works = [asyncio.create_task(_work(inflight, started, name, done, going)) for name in "ab"]
        await asyncio.wait_for(going.wait(), timeout=5)
        await _settled()
        assert (started, inflight.waiting) == (["a"], 1)
    await _settled()  # quiet again: the rest goes on
    assert started == ["a", "b"]
    done.set()
    await asyncio.gather(*works)


async def test_past_the_most_waiting_work_goes_on_whatever_the_acks() -> None:
    inflight = InFlight(
        at_once=4, acks_first_for=60, busy_for=0, most_waiting_bytes=2 * WAITING_LISTENER_BYTES
    )
    started: list[str] = []
    done = asyncio.Event()
    with inflight.acking():
        works = []
        for name in "ab":
            works.append(asyncio.create_task(_work(inflight, started, name, done)))
            await _settled()
        assert started == []  # two may wait
        works.append(asyncio.create_task(_work(inflight, started, "c", done)))
        await _settled()
        assert sorted(started) == ["a", "b", "c"]  # the third makes too many: the line moves
    done.set()
    await asyncio.gather(*works)


async def test_work_not_started_yet_waits_in_the_same_line_and_holds_its_slot() -> None:
    """``start_in_turn``: work that is only a callable until its turn (a request answered at
    the door) keeps its place among waiting listeners, holds a slot while it runs, and counts
    the bytes it said it holds while it waits; ``at_once`` skips the line."""
    inflight = InFlight(at_once=1, acks_first_for=60, busy_for=0)
    started: list[str] = []
    done = asyncio.Event()

    with inflight.acking():
        inflight.start_in_turn(_later(started, "first", done), name="first", holds=3000)
        listener = asyncio.create_task(_work(inflight, started, "listener", done))
        await _settled()
        inflight.start_in_turn(_later(started, "form", done), name="form", holds=3000, at_once=True)
        await _settled()
        assert started == ["form"]  # the rest waits for the ack
        assert (inflight.waiting, inflight.waiting_bytes) == (2, 3000 + WAITING_LISTENER_BYTES)
    await _settled()
    assert started == ["form", "first"]  # one slot: the listener waits for it
    assert (inflight.waiting, inflight.free_slots) == (1, 0)
    done.set()
    await listener
    assert started == ["form", "first", "listener"]
    assert (inflight.waiting, inflight.waiting_bytes) == (0, 0)
    await inflight.drain(grace_seconds=5)
    await _settled()  # the slots come back in the tasks' done callbacks
    assert inflight.free_slots == 1


async def test_drain_starts_what_still_waits_in_line_and_waits_for_it() -> None:
    """At shutdown nothing more is acked: work held back for a burst goes on, one slot at a
    time here, and the drain waits for all of it."""
    inflight = InFlight(at_once=1, acks_first_for=60, busy_for=60)
    finished: list[str] = []

    with inflight.acking(), inflight.acking():  # two acks at once: a burst
        for name in "ab":
            inflight.start_in_turn(_later(finished, name), name=name, holds=100)
    await _settled()
    assert (finished, inflight.waiting) == ([], 2)  # held for the burst's window
    await inflight.drain(grace_seconds=5)
    assert (finished, inflight.waiting, len(inflight)) == (["a", "b"], 0, 0)


async def _away_then_back(
    inflight: InFlight, started: list[str], answered: asyncio.Event, done: asyncio.Event
) -> None:
    """Work that waits on another service half-way (``waiting_elsewhere``)."""
    await inflight.take_slot()
    started.append("away")
    async with waiting_elsewhere():
        await answered.wait()
    started.append("back")
    await done.wait()


async def test_work_waiting_on_another_service_lends_its_slot_and_takes_it_back_first() -> None:
    inflight = InFlight(at_once=1, busy_for=0)
    started: list[str] = []
    answered, away_done, next_done, last_done = (asyncio.Event() for _ in range(4))
    away = asyncio.create_task(_away_then_back(inflight, started, answered, away_done))
    await _settled()
    assert (started, inflight.free_slots) == (["away"], 1)
    # Its slot is free while it waits: the next work goes on, the one after waits in line.
    following = asyncio.create_task(_work(inflight, started, "next", next_done))
    last = asyncio.create_task(_work(inflight, started, "last", last_done))
    await _settled()
    assert (started, inflight.waiting) == (["away", "next"], 1)
    # Answered, it waits for a slot at the head of the line: before the work that was there.
    answered.set()
    await _settled()
    assert (started, inflight.waiting) == (["away", "next"], 2)
    next_done.set()
    await _settled()
    assert started == ["away", "next", "back"]
    away_done.set()
    await _settled()
    assert started == ["away", "next", "back", "last"]
    last_done.set()
    await asyncio.gather(away, following, last)
    assert (inflight.free_slots, inflight.waiting) == (1, 0)


async def test_work_cancelled_while_waiting_on_another_service_takes_no_slot_back() -> None:
    inflight = InFlight(at_once=1, busy_for=0)
    started: list[str] = []
    answered, done = asyncio.Event(), asyncio.Event()
    away = asyncio.create_task(_away_then_back(inflight, started, answered, done))
    await _settled()
    away.cancel()
    await asyncio.gather(away, return_exceptions=True)
    assert (started, inflight.free_slots, inflight.waiting) == (["away"], 1, 0)


async def test_waiting_on_another_service_without_a_slot_lends_nothing() -> None:
    inflight = InFlight(at_once=2, busy_for=0)
    async with inflight.elsewhere():
        assert inflight.free_slots == 2
    async with waiting_elsewhere():  # no slot taken in this task: nothing to lend
        assert inflight.free_slots == 2
    assert inflight.free_slots == 2


async def test_only_so_many_tasks_lend_their_slot_at_once() -> None:
    inflight = InFlight(at_once=3, busy_for=0, most_away=1)
    started: list[str] = []
    answered, done = asyncio.Event(), asyncio.Event()
    away = [
        asyncio.create_task(_away_then_back(inflight, started, answered, done)) for _ in range(2)
    ]
    await _settled()
    # One lent its slot; the other waits on the service holding its own.
    assert (started, inflight.free_slots) == (["away", "away"], 2)
    answered.set()
    done.set()
    await asyncio.gather(*away)
    assert (started, inflight.free_slots) == (["away", "away", "back", "back"], 3)

"""Acks first: acked work waits, in line, while a request of the process is still to be acked,
unless it has waited too long; slots are handed out in the order asked and come back when the
work ends or gives up."""

from __future__ import annotations

import asyncio

from bot.ops.inflight import InFlight


async def _work(
    inflight: InFlight,
    started: list[str],
    name: str,
    done: asyncio.Event,
    going: asyncio.Event | None = None,
) -> None:
    task = asyncio.current_task()
    assert task is not None
    await inflight.take_slot(task)
    started.append(name)
    if going is not None:
        going.set()
    await done.wait()


async def _settled() -> None:
    """Let every ready task run until it waits again."""
    for _ in range(5):
        await asyncio.sleep(0)


async def test_no_new_work_starts_while_a_request_waits_for_its_ack() -> None:
    inflight = InFlight(at_once=4, acks_first_for=60)
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
    inflight = InFlight(at_once=4, acks_first_for=0.05)
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
    inflight = InFlight(at_once=1, acks_first_for=60)
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
    inflight = InFlight(at_once=1, acks_first_for=60)
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

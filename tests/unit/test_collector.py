"""A serving process freezes what start-up made, collects garbage less often, and not at all
while acked work is held back for the acks (the collector's pauses were most of the ack's p99)."""

from __future__ import annotations

import asyncio
import gc
from collections.abc import Iterator

import pytest

from bot.ops.collector import SERVING_THRESHOLDS, tune_for_serving
from bot.ops.inflight import InFlight


@pytest.fixture
def collector_restored() -> Iterator[None]:
    before = gc.get_threshold()
    try:
        yield
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)
        gc.enable()


@pytest.mark.usefixtures("collector_restored")
def test_a_serving_process_freezes_its_start_up_and_collects_less_often() -> None:
    tune_for_serving(InFlight())
    assert gc.get_threshold() == SERVING_THRESHOLDS
    assert gc.get_freeze_count() > 0
    assert gc.isenabled()


@pytest.mark.usefixtures("collector_restored")
async def test_no_collection_while_work_is_held_back_for_the_acks() -> None:
    inflight = InFlight(at_once=2, acks_first_for=60, busy_for=0)
    tune_for_serving(inflight)
    done, going = asyncio.Event(), asyncio.Event()

    async def work() -> None:
        await inflight.take_slot()
        going.set()
        await done.wait()

    with inflight.acking():
        held = asyncio.create_task(work())
        for _ in range(3):
            await asyncio.sleep(0)
        assert (inflight.holding, gc.isenabled()) == (True, False)
    await asyncio.wait_for(going.wait(), timeout=5)  # answered: the work goes on
    assert (inflight.holding, gc.isenabled()) == (False, True)
    done.set()
    await held

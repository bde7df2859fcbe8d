"""A serving process freezes what start-up made and collects garbage rarely (the collector's
pauses were most of the ack's p99)."""

from __future__ import annotations

import gc

from bot.ops.collector import SERVING_THRESHOLDS, tune_for_serving


def test_a_serving_process_freezes_its_start_up_and_collects_rarely() -> None:
    before = gc.get_threshold()
    try:
        tune_for_serving()
        assert gc.get_threshold() == SERVING_THRESHOLDS
        assert gc.get_freeze_count() > 0
        assert SERVING_THRESHOLDS[0] > 10 * before[0]
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)

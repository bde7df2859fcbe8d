"""Python's garbage collector set for a server that answers Slack within its ack deadline.

A collection stops the event loop for as long as it takes to walk the objects of the
generations it collects. During a burst the process holds thousands of acked listeners back
(acks first, ``bot.ops.inflight``), each a few hundred live objects, and every young collection
walks them again: measured with ``python -m benchmarks ack`` (*New link* at 10 connections),
collections of 20-60 ms, enough to put the ack's p99 at 2-4× the bare Bolt app's. So, in
``serve`` and ``socket`` once the runtime is built:

- what start-up made is moved out of the collector's sight (``gc.freeze``: it lives as long as
  the process);
- while work is held back for the acks, the collector waits (at most
  ``ACKS_FIRST_FOR_SECONDS``, or until too many wait: then the work goes on and so does the
  collector). Almost all of a request's garbage is freed by reference counting the moment it is
  dropped; reference cycles made meanwhile are collected when the burst has been answered
  (measured: the same peak memory as with the collector running);
- otherwise it runs less often than CPython's default (``SERVING_THRESHOLDS``).
"""

from __future__ import annotations

import gc

from bot.ops.inflight import InFlight

__all__ = ["SERVING_THRESHOLDS", "pause_while_holding", "tune_for_serving"]

SERVING_THRESHOLDS = (10_000, 10, 10)
"""Allocations before a young collection, young collections before a middle one, middle ones
before a full one (CPython's defaults: 700, 10, 10)."""


def pause_while_holding(holding: bool) -> None:
    """``InFlight.on_hold``: no collection while acked work is held back for the acks."""
    if holding:
        gc.disable()
    else:
        gc.enable()


def tune_for_serving(inflight: InFlight) -> None:
    """Call once start-up is done: freeze what exists, collect less often, and not at all
    while ``inflight`` holds work back for the acks."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(*SERVING_THRESHOLDS)
    inflight.on_hold = pause_while_holding

"""Python's garbage collector set for a server that answers Slack within its ack deadline.

With CPython's default thresholds (700, 10, 10) a busy process runs a young collection every
few requests and a full one every few hundred, and each full one walks every object the process
has ever kept: the modules, the Bolt app, the clients. Measured with ``python -m benchmarks ack``
those pauses were most of the ack's p99 (133 ms against 33 ms at 10 connections). So, once the
runtime is built: what start-up made is moved out of the collector's sight (``gc.freeze``: it
lives as long as the process), and collections run a hundred times less often. Almost all of a
request's garbage is freed by reference counting the moment it is dropped; what the collector
is left (reference cycles) is held a little longer, a few megabytes at most.
"""

from __future__ import annotations

import gc

__all__ = ["SERVING_THRESHOLDS", "tune_for_serving"]

SERVING_THRESHOLDS = (50_000, 20, 100)
"""Allocations before a young collection, young collections before a middle one, middle ones
before a full one (CPython's defaults: 700, 10, 10)."""


def tune_for_serving() -> None:
    """Call once start-up is done: freeze what exists, then collect rarely."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(*SERVING_THRESHOLDS)

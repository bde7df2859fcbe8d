"""``python -m benchmarks [PART ...] [--quick]``: measure the product against its baselines.

Parts (all by default, in this order):

  redis           3: Redis commands and round trips per interaction of a whole provisioning
  memory          4: Redis memory per active and per finished session (the same provisioning)
  latency         6: a whole provisioning and its verification against injected Microsoft latency
  ack             1: the ack path against a bare Bolt app, wrk at 10 and 50 connections, A B A B
  slow-microsoft  2: the ack path with the sandbox Microsoft answering in 2 s against 0 s
  listing         5: status and App Home with 10, 1,000 and 100,000 sessions

Every figure is a ratio against a baseline measured in the same run (or a count); absolute times
are printed beside them only to show what the ratios are made of. ``--quick`` is a smoke run
(about a minute): short runs, one pair, 10 connections, 1,000 sessions at most.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from benchmarks.ack import part_ack, part_slow_microsoft
from benchmarks.listing import part_listing
from benchmarks.load import wrk_available
from benchmarks.provisioning import part_provisioning
from benchmarks.report import Row, save, table
from benchmarks.world import world

PARTS = ("redis", "memory", "latency", "ack", "slow-microsoft", "listing")


@dataclass(frozen=True)
class Settings:
    """How long and how much: the full run and the quick one."""

    duration: float  # seconds of one wrk run
    pairs: int  # A B pairs per measure
    connections: tuple[int, ...]
    paced_delay_ms: int  # part 2: each connection waits this long between requests
    check_delay_ms: int  # part 2: the same for the click that asks Graph (its work is slow)
    latency: float  # part 6: seconds added to every Microsoft answer
    sizes: tuple[int, ...]  # part 5: sessions
    repeats: int  # part 5: answers timed per size
    limit: float  # part 5: seconds an answer may take before it is given up
    sweep_limit: float  # part 5: seconds a replica's start-up sweep is waited for


FULL = Settings(5.0, 2, (10, 50), 100, 500, 0.1, (10, 1_000, 100_000), 15, 45.0, 150.0)
QUICK = Settings(1.0, 1, (10,), 200, 500, 0.02, (10, 1_000), 1, 15.0, 15.0)


def machine() -> dict[str, object]:
    """What the figures were measured on."""
    cpu = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    versions: dict[str, str] = {}
    for program in ("redis-server", "wrk"):
        path = shutil.which(program)
        versions[program] = "not installed"
        if path is None:
            continue
        with contextlib.suppress(OSError, subprocess.SubprocessError, IndexError):
            found = subprocess.run(  # noqa: S603 - a program found on PATH, no input
                [path, "--version"], capture_output=True, text=True, check=False
            )
            versions[program] = (found.stdout or found.stderr).splitlines()[0].strip()
    return {
        "nproc": os.cpu_count(),
        "cpu": cpu,
        "python": platform.python_version(),
        "redis": versions["redis-server"],
        "wrk": versions["wrk"],
        "load average at start": os.getloadavg(),
    }


async def run(
    parts: Sequence[str],
    settings: Settings,
    *,
    workdir: Path,
    log: Callable[[str], None] = print,
) -> list[Row]:
    """Run ``parts``; the rows of figures, in the order of ``PARTS``."""
    rows: list[Row] = []
    wanted = [p for p in PARTS if p in parts]
    if {"ack"} & set(wanted) and not wrk_available():
        raise SystemExit("wrk is not installed: run ./scripts/setup (it installs it)")
    async with world(workdir) as here:
        if "redis" in wanted or "memory" in wanted:
            log("parts 3 and 4: one whole provisioning, Redis counted and weighed")
            found = await part_provisioning(here, latency=0.0, with_redis=True, log=log)
            rows += [
                r
                for r in found
                if ("redis" in wanted and r.part.startswith("3"))
                or ("memory" in wanted and r.part.startswith("4"))
            ]
        if "latency" in wanted:
            log(f"part 6: a whole provisioning with Microsoft answering in {settings.latency} s")
            rows += await part_provisioning(
                here, latency=settings.latency, with_redis=False, log=log
            )
        if "ack" in wanted:
            log("part 1: the ack path, product against the bare Bolt app (A B A B)")
            await here.flush()
            bot = await here.start_bot()
            anchor = await here.start_anchor()
            try:
                found, _ = await part_ack(
                    here,
                    bot,
                    anchor,
                    connections=settings.connections,
                    duration=settings.duration,
                    pairs=settings.pairs,
                    log=log,
                )
                rows += found
            finally:
                await here.stop(anchor)
                await here.stop(bot)
        if "slow-microsoft" in wanted:
            log("part 2: the ack path with Microsoft answering in 2 s against 0 s (A B A B)")
            await here.flush()
            bot = await here.start_bot()
            try:
                found, _ = await part_slow_microsoft(
                    here,
                    bot,
                    duration=settings.duration,
                    pairs=settings.pairs,
                    delay_ms=settings.paced_delay_ms,
                    check_delay_ms=settings.check_delay_ms,
                    log=log,
                )
                rows += found
            finally:
                await here.stop(bot)
        if "listing" in wanted:
            log("part 5: status and App Home as sessions grow")
            rows += await part_listing(
                here,
                sizes=settings.sizes,
                repeats=settings.repeats,
                limit=settings.limit,
                sweep_limit=settings.sweep_limit,
                log=log,
            )
    return rows


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks", description=__doc__.split("\n")[0]
    )
    parser.add_argument("parts", nargs="*", metavar="PART", help=f"any of {', '.join(PARTS)}")
    parser.add_argument("--quick", action="store_true", help="a smoke run of about a minute")
    parser.add_argument(
        "--json", type=Path, help="also write the figures and the machine to this file"
    )
    parser.add_argument("--keep", action="store_true", help="keep the work directory (logs)")
    arguments = parser.parse_args(argv)
    parts = arguments.parts or list(PARTS)
    unknown = [p for p in parts if p not in PARTS]
    if unknown:
        parser.error(f"unknown part(s) {', '.join(unknown)}; parts: {', '.join(PARTS)}")
    settings = QUICK if arguments.quick else FULL
    logging.basicConfig(level=logging.WARNING)
    workdir = Path(tempfile.mkdtemp(prefix="pi-bench-"))
    context = machine()
    command = "python -m benchmarks " + " ".join(argv if argv is not None else sys.argv[1:])
    print(f"{command.strip()}\nmachine: {context}\nwork directory: {workdir}", flush=True)
    started = time.monotonic()
    try:
        rows = asyncio.run(
            run(parts, settings, workdir=workdir, log=lambda s: print(s, flush=True))
        )
    finally:
        if not arguments.keep:
            shutil.rmtree(workdir, ignore_errors=True)
    elapsed = time.monotonic() - started
    print()
    print(table(rows))
    failed = [r for r in rows if r.passes is False]
    print(
        f"\n{len(rows)} figures in {elapsed:.0f} s; {len(failed)} miss the issue's targets. "
        f"Load average now {os.getloadavg()}: the machine may be shared, compare ratios, not times."
    )
    if arguments.json:
        context.update({"command": command.strip(), "seconds": round(elapsed)})
        save(arguments.json, rows, context)
    return 0


if __name__ == "__main__":
    sys.exit(main())

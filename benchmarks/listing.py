"""Part 5 (``listing``): ``/provision-inline status`` and the App Home tab with 10, 1,000 and
100,000 active sessions spread over 1,000 channels, the viewer's channel holding 10.

Sessions are seeded through the product's own store (``SessionStore.create``: the record, its
audit entry, the tenant lock, the active index — whatever index ``create`` maintains is
maintained), many at once, each with a root message in the sandbox Slack (so a permalink to its
thread exists, as in real life). The viewer is an admin: App Home lists every active session.

Each answer is timed from the signed request to its Slack effect (the ``response_url`` post of
``status``; the ``views.publish`` of App Home), three times per size (the median kept), and the
Redis commands it cost are read from ``INFO commandstats``. An answer that takes longer than the
limit is given up (the bot is restarted, so the abandoned work stops) and shown as "> limit".
"""

from __future__ import annotations

import asyncio
import gc
import secrets
import statistics
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass

from benchmarks.report import Row
from benchmarks.world import ADMIN, BotProcess, World
from bot.sandbox.slack import SandboxSlack
from bot.workflow import Scope, Session
from state.sessions import SessionStore

CHANNELS = 1000
VIEWER_CHANNEL = "C0LIST0000"
IN_VIEWER_CHANNEL = 10
#: Answers before the timed ones in each size (not counted): a fresh process warms up.
WARM_UP = 5
SEED_AT_ONCE = 64  # concurrent creates (the client's pool holds 100 connections)


def channel(n: int) -> str:
    return f"C0LIST{n:04d}"


@dataclass
class Seeder:
    world: World
    store: SessionStore[Session]
    seeded: int = 0

    async def up_to(self, total: int) -> float:
        """Seed until ``total`` sessions exist; the seconds it took."""
        started = time.monotonic()
        slack = self.world.slack
        now = time.time()
        pending: list[Session] = []
        while self.seeded < total:
            n = self.seeded
            if n < IN_VIEWER_CHANNEL:
                where = VIEWER_CHANNEL
            else:
                where = channel(1 + (n - IN_VIEWER_CHANNEL) % (CHANNELS - 1))
            label = f"t{n:06d}.example"
            root = slack.post_user_message(where, slack.bot_user_id, f"Provisioning {label}")
            pending.append(
                Session(
                    id=secrets.token_hex(8),
                    tenant_id=str(uuid.uuid4()),
                    tenant_label=label,
                    scope=Scope.FULL,
                    channel_id=where,
                    started_by=ADMIN,
                    created_at=now,
                    updated_at=now,
                    root_ts=root,
                )
            )
            self.seeded += 1
            if len(pending) >= SEED_AT_ONCE or self.seeded == total:
                await asyncio.gather(
                    *(self.store.create(s, detail={"tenant": s.tenant_label}) for s in pending)
                )
                pending = []
        return time.monotonic() - started


@dataclass
class Answer:
    seconds: float | None  # None: given up after the limit
    commands: int


async def answer(
    world: World,
    bot: BotProcess,
    what: str,
    *,
    limit: float,
) -> Answer:
    """One ``status`` (``what="status"``) or App Home opening, timed to its Slack effect."""
    driver = world.driver
    driver.events_url = bot.events_url
    before = await world.commandstats()
    since = len(world.slack.calls)
    method = "response_url" if what == "status" else "views.publish"
    started = time.monotonic()
    if what == "status":
        response = await driver.slash_command(
            user_id=ADMIN, channel_id=VIEWER_CHANNEL, text="status"
        )
    else:
        response = await driver.open_home(user_id=ADMIN)
    if response.status_code != 200:
        raise RuntimeError(f"{what} answered {response.status_code}")
    seen = since

    def arrived(slack: SandboxSlack) -> bool:
        nonlocal seen  # only the calls recorded since the last look (there may be 100,000s)
        calls = slack.calls
        found = any(c.method == method for c in calls[seen:])
        seen = len(calls)
        return found

    try:
        await world.slack.wait_for(arrived, timeout=limit)
    except TimeoutError:
        return Answer(None, _commands(await world.commandstats(), before))
    seconds = time.monotonic() - started
    return Answer(seconds, _commands(await world.commandstats(), before))


def _commands(after: dict[str, int], before: dict[str, int]) -> int:
    return sum(
        calls - before.get(name, 0)
        for name, calls in after.items()
        if name != "info" and calls > before.get(name, 0)
    )


def _shown(answers: list[Answer], limit: float) -> str:
    return ", ".join(
        f"{a.seconds * 1000:.0f} ms" if a.seconds else f"> {limit:.0f} s" for a in answers
    )


async def sweep(world: World, *, limit: float) -> tuple[float | None, int, BotProcess]:
    """Start a replica and wait until its start-up sweep is over (Redis quiet for a second):
    the seconds it took (None past ``limit``) and the Redis commands it sent. Each replica sweeps
    at start-up and then once a minute (``bot.cli`` → ``handlers.web``'s timer)."""
    before = await world.commandstats()
    started = time.monotonic()
    bot = await world.start_bot()
    # Quiet: no more than an idle replica's own timers send in a second (the outbox pass each
    # second, the orphan check every 3 s), so a sweep's end is seen despite them.
    idle_per_second = 5
    last = -1
    quiet_since = time.monotonic()
    while True:
        now = await world.commandstats()
        count = _commands(now, before)
        if last < 0 or count - last > idle_per_second:
            last, quiet_since = count, time.monotonic()
        elif time.monotonic() - quiet_since >= 1.0:
            return quiet_since - started, count, bot
        if time.monotonic() - started > limit:
            return None, count, bot
        await asyncio.sleep(0.1)  # watching another process's Redis traffic: nothing to await


async def part_listing(
    world: World,
    *,
    sizes: tuple[int, ...],
    repeats: int,
    limit: float,
    sweep_limit: float,
    log: Callable[[str], None],
) -> list[Row]:
    """Answers are timed once the replica's start-up sweep is over, so a minute's quiet follows
    (the next sweep starts a minute after the last one ended)."""
    for n in range(CHANNELS):
        world.slack.add_channel(channel(n), f"listing-{n:04d}")
    await world.flush()
    seeder = Seeder(world, world.store())
    results: dict[tuple[str, int], list[Answer]] = {}
    sweeps: dict[int, tuple[float | None, int]] = {}
    rows: list[Row] = []
    running: BotProcess | None = None
    try:
        for size in sizes:
            took = await seeder.up_to(size)
            log(f"  seeded {size:,} sessions ({took:.1f} s)")
            # The sandbox Slack (this process) now holds what seeding posted: out of its
            # collector's sight, so that Slack's side of an answer does not grow with it.
            gc.collect()
            gc.freeze()
            seconds, commands, bot = await sweep(world, limit=sweep_limit)
            running = bot
            sweeps[size] = (seconds, commands)
            shown = f"{seconds:.1f} s" if seconds is not None else f"> {sweep_limit:.0f} s"
            log(f"  a replica's start-up sweep: {shown}, {commands:,} Redis commands")
            for what in ("status", "home"):
                found: list[Answer] = []
                # A fresh process answers its first requests slower (connections opened, code
                # and caches warmed): 5 answers before the timed ones, so that the sizes
                # compare the listing, not the start-up.
                for _ in range(WARM_UP if repeats > WARM_UP else 0):
                    if (await answer(world, bot, what, limit=limit)).seconds is None:
                        break
                for _ in range(repeats):
                    got = await answer(world, bot, what, limit=limit)
                    found.append(got)
                    if got.seconds is None:
                        await world.stop(bot)  # stop the work it gave up on
                        bot = running = await world.start_bot()
                        break
                    if got.seconds > 5:
                        break  # one slow answer says enough; repeats would only take long
                results[(what, size)] = found
                shown = _shown(found, limit)
                log(f"  {what} with {size:,}: {shown}, {found[0].commands} Redis commands")
            await world.stop(bot)
            running = None
    finally:
        if running is not None:
            await world.stop(running)
        await world.flush()
        gc.unfreeze()
    smallest, largest = min(sizes), max(sizes)
    for size in sizes:
        seconds, commands = sweeps[size]
        rows.append(
            Row(
                "5 listing",
                f"a replica's sweep (at start-up, then every minute) with {size:,} sessions: "
                "Redis commands",
                float(commands),
                "",
                None,
                (f"{seconds:.1f} s" if seconds is not None else f"> {sweep_limit:.0f} s (given up)")
                + "; every replica sweeps: R replicas send R× this a minute",
            )
        )
    for what, label in (("status", "/provision-inline status"), ("home", "App Home (admin)")):

        def median(size: int, what: str = what) -> float | None:
            times = [a.seconds for a in results[(what, size)]]
            if any(t is None for t in times):
                return None
            return statistics.median([t for t in times if t is not None])

        for size in sizes:
            found = results[(what, size)]
            value = median(size)
            rows.append(
                Row(
                    "5 listing",
                    f"{label} with {size:,} sessions: time to the Slack effect (ms)",
                    value * 1000 if value is not None else float("nan"),
                    "",
                    None,
                    f"{_shown(found, limit)}; Redis commands per answer: {found[0].commands:,}",
                )
            )
        low, high = median(smallest), median(largest)
        if low is None:
            continue
        ratio = high / low if high is not None else limit / low
        rows.append(
            Row(
                "5 listing",
                f"{label}: time with {largest:,} sessions / with {smallest:,}",
                ratio,
                "≤ 1.20",
                high is not None and ratio <= 1.2,
                (
                    ""
                    if high is not None
                    else f"gave up after {limit:.0f} s: ratio is a lower bound; "
                )
                + f"sessions spread over {CHANNELS} channels, {IN_VIEWER_CHANNEL} in the viewer's",
            )
        )
    return rows

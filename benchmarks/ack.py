"""Parts 1 and 2: the ack path under load (wrk), side by side with a baseline, A B A B.

Part 1 (``ack``): the product against the anchor (a bare Bolt app that only acks), for a slash
command (``/provision-inline status`` from an admin), a block action (*New link* on a session's
consent step: a fresh sign-in link, the step message edited) and a view submission (the start
form, each with a new tenant: Microsoft's look-up, then a new session), at 10 and 50
connections, wrk at full speed.

Part 2 (``slow-microsoft``): the product against itself with the sandbox Microsoft answering in
0 s (A) and 2 s (B), for the command, the *New link* click and a click whose work after the ack
asks Microsoft (*I've assigned it*: a role check in Graph), at a paced 10 connections.

Every product run waits, after wrk stops, for the Slack effect of every acked request to arrive
in the sandbox ("done"), so work deferred past the ack is counted; the table gives both the ack
rate and the done rate.
"""

from __future__ import annotations

import contextlib
import json
import os
import statistics
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

from benchmarks.flow import Conversation
from benchmarks.load import (
    Template,
    WrkResult,
    form_template,
    interaction_template,
    run_wrk,
    write_pool,
)
from benchmarks.report import Row
from benchmarks.world import (
    ADMIN,
    CHANNEL,
    DIRSYNC_CLIENT_ID,
    BotProcess,
    World,
    cpu_seconds,
    in_flight,
)
from bot.sandbox.slack import RecordedCall, SandboxSlack
from bot.session.views import START_CALLBACK
from bot.steps.consent.views import ACTION_CONSENT_RENEW
from bot.steps.role.views import ACTION_CHECK

POOL_RATE = 10_000  # requests a second a pool is made for (more than either server answers here)
DRAIN_TIMEOUT = 90.0


@dataclass(frozen=True)
class Kind:
    """One kind of interaction: its template and what its Slack effect looks like."""

    name: str
    label: str
    template: Template
    effect: Callable[[RecordedCall], bool]


@dataclass
class Run:
    target: str
    kind: str
    connections: int
    wrk: WrkResult
    effects: int | None = None
    drain: float | None = None
    failed_calls: int = 0
    problems: list[str] = field(default_factory=list)
    failures: Counter[str] = field(default_factory=Counter)  # failed Slack calls, by error
    cpu: dict[str, float] = field(default_factory=dict)  # ms of CPU per request, by process
    microsoft_in_flight: int = 0  # the most Microsoft calls in flight at once

    @property
    def errors(self) -> int:
        missing = 0
        if self.effects is not None:
            missing = max(0, self.wrk.requests - self.wrk.errors.get("status", 0) - self.effects)
        return self.wrk.error_count + self.failed_calls + len(self.problems) + missing

    @property
    def done_rate(self) -> float:
        """Interactions whose effect arrived, per second of wrk's run plus the drain."""
        if self.effects is None:
            return self.wrk.rps
        return self.effects / (self.wrk.duration + (self.drain or 0.0))


class EffectCounter:
    """Counts recorded calls that are effects of ``kind``, incrementally (the sandbox may
    record tens of thousands of calls in a run)."""

    def __init__(self, slack: SandboxSlack, effect: Callable[[RecordedCall], bool]) -> None:
        self.slack = slack
        self.effect = effect
        self.seen = len(slack.calls)
        self.count = 0
        self.failed = 0
        self.failures: Counter[str] = Counter()

    def update(self) -> int:
        calls = self.slack.calls
        while self.seen < len(calls):
            call = calls[self.seen]
            self.seen += 1
            if not call.ok:
                self.failed += 1
                self.failures[f"{call.method}: {call.error}"] += 1
            elif self.effect(call):
                self.count += 1
        return self.count


def kinds(world: World, session: Conversation) -> dict[str, Kind]:
    """The interactions of part 1, on ``session`` (started, at its first step)."""
    driver = world.driver
    slack = world.slack
    command = driver.build_slash_command(user_id=ADMIN, channel_id=CHANNEL, text="status")
    found = session.find(ACTION_CONSENT_RENEW)
    assert found is not None
    step_ts = found[0]
    click = driver.build_click(
        user_id=ADMIN, channel_id=CHANNEL, message_ts=step_ts, action_id=ACTION_CONSENT_RENEW
    )
    views = [v for v in slack.open_views(ADMIN) if v.callback_id == START_CALLBACK]
    assert views, "the start form should be open (the command that opened it ran first)"
    form = driver.build_view_submission(
        user_id=ADMIN, view_id=views[-1].id, values={"tenant_input": "BENCHxTENANTx"}
    )
    return {
        "command": Kind(
            "command",
            "slash command /provision-inline status",
            form_template(
                "command",
                {k: str(v) for k, v in command.payload.items()},
                {"channel_id": CHANNEL, "user_id": ADMIN},
            ),
            lambda call: call.method == "response_url",
        ),
        "click": Kind(
            "click",
            "block action: New link (consent step)",
            interaction_template(
                "click",
                click.payload,
                {
                    "channel_id": CHANNEL,
                    "user_id": ADMIN,
                    "message_ts": step_ts,
                    "thread_ts": session.root_ts,
                },
            ),
            lambda call: call.method == "chat.update" and call.params.get("ts") == step_ts,
        ),
        "submission": Kind(
            "submission",
            "view submission: start form, new tenant",
            interaction_template("submission", form.payload, None, fresh_tenant=True),
            lambda call: (
                call.method == "chat.postMessage"
                and bool(call.params.get("thread_ts"))
                and "consent_mailflow" in json.dumps(call.params.get("blocks"))
            ),
        ),
    }


def check_kind(world: World, session: Conversation) -> Kind:
    """*I've assigned it* on a session whose role waits to be assigned: each click asks Graph
    (the role is not there) and posts what it found in the thread."""
    found = session.find(ACTION_CHECK)
    assert found is not None
    ts = found[0]
    click = world.driver.build_click(
        user_id=ADMIN, channel_id=CHANNEL, message_ts=ts, action_id=ACTION_CHECK
    )
    root = session.root_ts
    return Kind(
        "check",
        "block action: I've assigned it (asks Graph)",
        interaction_template(
            "check",
            click.payload,
            {"channel_id": CHANNEL, "user_id": ADMIN, "message_ts": ts, "thread_ts": root},
        ),
        lambda call: call.method == "chat.postMessage" and call.params.get("thread_ts") == root,
    )


async def measure(
    world: World,
    target: BotProcess,
    kind: Kind,
    *,
    connections: int,
    duration: float,
    delay_ms: int = 0,
    wait_for_effects: bool,
    label: str | None = None,
) -> Run:
    size = (
        int(POOL_RATE * (duration + 1))
        if not delay_ms
        else int(connections * (1000 / delay_ms + 5) * (duration + 1))
    )
    pool = write_pool(world, kind.template, size, world.workdir / "pool.txt")
    counter = EffectCounter(world.slack, kind.effect)
    log_from = target.log_size()
    pids = {
        "server": target.process.pid,
        "sandbox": os.getpid(),
        "redis": await world.redis_pid(),
    }
    cpu_before = {name: cpu_seconds(pid) for name, pid in pids.items()}
    calls_since = time.time()
    result = await run_wrk(
        target.events_url,
        pool,
        connections=connections,
        duration=duration,
        workdir=world.workdir,
        delay_ms=delay_ms,
    )
    ended = time.monotonic()
    run = Run(label or target.name, kind.name, connections, result)
    if wait_for_effects:
        wanted = result.requests - result.errors.get("status", 0)
        with contextlib.suppress(TimeoutError):
            await world.slack.wait_for(lambda _: counter.update() >= wanted, timeout=DRAIN_TIMEOUT)
        run.drain = time.monotonic() - ended
        run.effects = counter.update()
        run.failed_calls = counter.failed
        run.failures = counter.failures
    run.problems = target.log_problems(log_from)
    requests = max(1, result.requests)
    run.cpu = {
        name: (cpu_seconds(pid) - cpu_before[name]) * 1000 / requests for name, pid in pids.items()
    }
    run.microsoft_in_flight = in_flight(world.timing.requests, calls_since)
    pool.unlink()
    return run


def _ratio(value: float, baseline: float) -> float:
    return value / baseline if baseline else float("nan")


def _median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def _series(values: list[float]) -> str:
    return ", ".join(f"{v:.2f}" for v in values)


async def part_ack(
    world: World,
    bot: BotProcess,
    anchor: BotProcess,
    *,
    connections: tuple[int, ...],
    duration: float,
    pairs: int,
    only: tuple[str, ...] = ("command", "click", "submission"),
    log: Callable[[str], None],
) -> tuple[list[Row], list[Run]]:
    session = Conversation(world, bot, world.tenants["alpha"])
    await session.start()
    # The start form the view submissions come from: opened by the bot, as for a person.
    await world.driver.slash_command(user_id=ADMIN, channel_id=CHANNEL)
    await world.slack.wait_for(
        lambda s: [v for v in s.open_views(ADMIN) if v.callback_id == START_CALLBACK], timeout=30
    )
    every = kinds(world, session)
    rows: list[Row] = []
    runs: list[Run] = []
    for name in only:
        kind = every[name]
        for conns in connections:
            pairs_seen: list[tuple[Run, Run]] = []
            for _ in range(pairs):
                a = await measure(
                    world,
                    anchor,
                    kind,
                    connections=conns,
                    duration=duration,
                    wait_for_effects=False,
                    label="anchor",
                )
                b = await measure(
                    world,
                    bot,
                    kind,
                    connections=conns,
                    duration=duration,
                    wait_for_effects=True,
                    label="product",
                )
                log(
                    f"  {name} c={conns}: anchor {a.wrk.rps:7.0f}/s p99 {a.wrk.p99_ms:6.1f} ms | "
                    f"product {b.wrk.rps:7.0f}/s p99 {b.wrk.p99_ms:6.1f} ms, done "
                    f"{b.done_rate:6.0f}/s (drain {b.drain or 0:.1f} s), errors {b.errors}"
                    + (" WRAPPED" if a.wrk.wrapped or b.wrk.wrapped else "")
                )
                pairs_seen.append((a, b))
                runs += [a, b]
            rows += ack_rows(kind, conns, pairs_seen)
    return rows, runs


def _why(runs: list[Run]) -> str:
    """What the errors of ``runs`` were, briefly."""
    parts: list[str] = []
    for run in runs:
        if run.wrk.errors:
            parts.append(f"wrk {run.wrk.errors}")
        if run.failures:
            parts.append(", ".join(f"{k} ×{n}" for k, n in run.failures.most_common(3)))
        if run.problems:
            parts.append(f"log: {run.problems[0][:160]}")
        if run.effects is not None:
            missing = run.wrk.requests - run.wrk.errors.get("status", 0) - run.effects
            if missing > 0:
                parts.append(f"{missing} effects never arrived")
    return (": " + "; ".join(parts)) if parts else ""


def _cpu(pairs: list[tuple[Run, Run]]) -> str:
    def mean(runs: list[Run], name: str) -> float:
        return statistics.mean(r.cpu.get(name, 0.0) for r in runs)

    anchors = [a for a, _ in pairs]
    products = [b for _, b in pairs]
    return (
        f"anchor {mean(anchors, 'server'):.2f}, product {mean(products, 'server'):.2f}, "
        f"sandbox Slack/Microsoft {mean(products, 'sandbox'):.2f} (with the anchor "
        f"{mean(anchors, 'sandbox'):.2f}), redis {mean(products, 'redis'):.2f}"
    )


def ack_rows(kind: Kind, conns: int, pairs: list[tuple[Run, Run]]) -> list[Row]:
    throughput = [_ratio(b.wrk.rps, a.wrk.rps) for a, b in pairs]
    done = [_ratio(b.done_rate, a.wrk.rps) for a, b in pairs]
    p99 = [_ratio(b.wrk.p99_ms, a.wrk.p99_ms) for a, b in pairs]
    errors = sum(b.errors for _, b in pairs)
    why = _why([b for _, b in pairs])
    wrapped = any(a.wrk.wrapped or b.wrk.wrapped for a, b in pairs)
    detail = (
        f"anchor {_series([a.wrk.rps for a, _ in pairs])}/s, p99 "
        f"{_series([a.wrk.p99_ms for a, _ in pairs])} ms; product "
        f"{_series([b.wrk.rps for _, b in pairs])}/s, p99 "
        f"{_series([b.wrk.p99_ms for _, b in pairs])} ms, done "
        f"{_series([b.done_rate for _, b in pairs])}/s; CPU ms per request: "
        f"{_cpu(pairs)}" + ("; POOL WRAPPED: repeats were sent" if wrapped else "")
    )
    anchors_rps = [a.wrk.rps for a, _ in pairs]
    anchors_p99 = [a.wrk.p99_ms for a, _ in pairs]
    if len(pairs) > 1:
        spread_rps = _ratio(max(anchors_rps), min(anchors_rps))
        spread_p99 = _ratio(max(anchors_p99), min(anchors_p99))
        detail += (
            f"; noise: the anchor's own runs differ by ×{spread_rps:.2f} in throughput, "
            f"×{spread_p99:.2f} in p99"
        )
    what = f"{kind.label}, {conns} conn."
    return [
        Row(
            "1 ack",
            f"{what}: throughput ratio",
            _median(throughput),
            "≥ 0.90",
            _median(throughput) >= 0.9,
            _series(throughput) + " | " + detail,
        ),
        Row("1 ack", f"{what}: done-rate ratio", _median(done), "", None, _series(done)),
        Row(
            "1 ack", f"{what}: p99 ratio", _median(p99), "≤ 1.50", _median(p99) <= 1.5, _series(p99)
        ),
        Row(
            "1 ack",
            f"{what}: errors (product)",
            float(errors),
            "0",
            errors == 0,
            "wrk errors + failed Slack calls + bot log errors + effects missing" + why,
        ),
    ]


async def part_slow_microsoft(
    world: World,
    bot: BotProcess,
    *,
    duration: float,
    pairs: int,
    delay_ms: int,
    check_delay_ms: int,
    log: Callable[[str], None],
) -> tuple[list[Row], list[Run]]:
    main = Conversation(world, bot, world.tenants["alpha"])
    await main.start()
    await world.driver.slash_command(user_id=ADMIN, channel_id=CHANNEL)
    await world.slack.wait_for(
        lambda s: [v for v in s.open_views(ADMIN) if v.callback_id == START_CALLBACK], timeout=30
    )
    every = kinds(world, main)
    role = Conversation(world, bot, world.tenants["bravo"])
    await role.start()
    await role.role()
    await role.portal()
    world.microsoft.consent(role.tenant.sandbox.tenant_id, DIRSYNC_CLIENT_ID)
    # The check asks Microsoft four times per click: at 2 s a click's work takes seconds, so it
    # is paced slower than the others (its backlog must drain between runs), and runs longer by
    # as much, so that its p99 too is taken over some 450 answers, not the largest of 90.
    chosen = [
        (every["command"], delay_ms),
        (every["click"], delay_ms),
        (check_kind(world, role), check_delay_ms),
    ]
    rows: list[Row] = []
    runs: list[Run] = []
    conns = 10
    for kind, pace in chosen:
        seen: list[tuple[Run, Run]] = []
        lasting = duration * pace / delay_ms
        for _ in range(pairs):
            world.microsoft.set_latency(0.0)
            a = await measure(
                world,
                bot,
                kind,
                connections=conns,
                duration=lasting,
                delay_ms=pace,
                wait_for_effects=True,
                label="microsoft 0 s",
            )
            world.microsoft.set_latency(2.0)
            b = await measure(
                world,
                bot,
                kind,
                connections=conns,
                duration=lasting,
                delay_ms=pace,
                wait_for_effects=True,
                label="microsoft 2 s",
            )
            world.microsoft.set_latency(0.0)
            log(
                f"  {kind.name}: 0 s {a.wrk.rps:5.0f}/s p99 {a.wrk.p99_ms:6.1f} ms (drain "
                f"{a.drain or 0:.1f} s) | 2 s {b.wrk.rps:5.0f}/s p99 {b.wrk.p99_ms:6.1f} ms "
                f"(drain {b.drain or 0:.1f} s), errors {a.errors}+{b.errors}"
            )
            seen.append((a, b))
            runs += [a, b]
        p99 = [_ratio(b.wrk.p99_ms, a.wrk.p99_ms) for a, b in seen]
        baseline = [a.wrk.p99_ms for a, _ in seen]
        noise = _ratio(max(baseline), min(baseline)) if len(baseline) > 1 else float("nan")
        drains = [b.drain or 0.0 for _, b in seen]
        errors = sum(a.errors + b.errors for a, b in seen)
        rows.append(
            Row(
                "2 slow Microsoft",
                f"{kind.label}: ack p99 ratio, Microsoft 2 s vs 0 s",
                _median(p99),
                "≤ 1.20",
                _median(p99) <= 1.2,
                f"{_series(p99)}; p99 0 s {_series([a.wrk.p99_ms for a, _ in seen])} ms, "
                f"2 s {_series([b.wrk.p99_ms for _, b in seen])} ms; {conns} conn. paced to "
                f"≤ {conns * 1000 // pace}/s for {lasting:.0f} s "
                f"({', '.join(str(b.wrk.requests) for _, b in seen)} answers at 2 s); "
                f"effects drained {_series(drains)} s after wrk (2 s), "
                f"Microsoft calls in flight at most "
                f"{', '.join(str(b.microsoft_in_flight) for _, b in seen)}; errors {errors}; "
                f"noise: the 0 s runs' p99 differ by ×{noise:.2f}",
            )
        )
    return rows, runs

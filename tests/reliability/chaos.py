"""The chaos suite's machinery: replicas, a router, people, a killer, Redis restarts, invariants.

``Chaos`` starts, in the test process, the sandbox Slack and the sandbox Microsoft cloud (over
TLS) and a router; beside them a private ``redis-server`` (AOF, ``appendfsync always``) and
``replicas`` processes of ``provision-inline-bot serve`` (HTTP mode, signed requests), each on
its own port. ``PUBLIC_URL`` is the router, so Slack's requests and the admins' browsers coming
back from Microsoft both reach a random live replica. Then:

- ``Person`` plays the people of one session (its admin, its approver, the tenant's Global
  Administrator and Privileged Role Administrator) through the whole procedure, the way people
  do: they look at the thread, press what is there to press, and when a press got "try again",
  an error or nothing at all, they look again and press again;
- the killer SIGKILLs a random replica every few seconds and starts it again; targeted kills
  hold one chosen Slack or Microsoft call in the sandbox (``bot.sandbox.holds``), kill the very
  process that made it (found from the call's client port), then drop the call (it never
  reached Slack) or release it (Microsoft did it; its answer goes nowhere);
- Redis is stopped (SIGTERM or SIGKILL) and started again under traffic; while it is down a
  person asks for ``/provision-inline status``, so some click always meets a Redis outage.

``Report`` holds what happened (every Slack request with its ack time and the replica that
answered, every kill, every Redis outage) and checks the invariants of issue 11 on the final
state of Redis, the sandbox Slack and the sandbox Exchange Online.

The only timers are the chaos's own (when to kill, how long Redis stays down, how long a person
thinks before trying again) and the patience bounds; everything else waits for facts: a replica
saying it is ready, a held call arriving, a change in what a person sees, a process exiting.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import re
import signal
import sys
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from html import unescape
from pathlib import Path
from typing import Any, Literal

import httpx
from redis.asyncio import Redis

from bot.config import load_settings
from bot.sandbox.holds import HeldCall, Hold
from bot.sandbox.microsoft import (
    EXCHANGE_ADMINISTRATOR,
    GLOBAL_ADMINISTRATOR,
    PRIVILEGED_ROLE_ADMINISTRATOR,
    SandboxMicrosoft,
    SandboxTenant,
    SandboxUser,
    vendor_apps,
)
from bot.sandbox.redis_server import RedisServer
from bot.sandbox.server import SandboxTLS, free_port, serve_asgi
from bot.sandbox.slack import RecordedCall, SandboxSlack
from bot.sandbox.slack_driver import SlackDriver, SlackDriverError
from bot.session.views import root_message
from bot.steps.consent.views import ACTION_CONSENT_OPEN, ACTION_CONSENT_RENEW
from bot.steps.mailflow.desired import FULL, allow_list_entries, object_names
from bot.steps.mailflow.views import ACTION_ACKNOWLEDGE as ACTION_ACKNOWLEDGE_WARNINGS
from bot.steps.mailflow.views import ACTION_RETRY, ACTION_SUBMIT, ANNOUNCEMENT
from bot.steps.role.model import JUSTIFICATION_ACTION
from bot.steps.role.views import (
    ACTION_ACKNOWLEDGE,
    ACTION_ASSIGN_SIGN_IN,
    ACTION_NEW_SIGN_IN,
    ACTION_REQUEST_OPEN,
    ACTION_REQUEST_OPEN_DIRECT,
    ACTION_REQUEST_OPEN_PIM,
)
from bot.steps.verify.views import ACTION_VERIFY
from bot.workflow import WORKING, Phase, Session
from state.patience import BEFORE_ACK_BUDGET_SECONDS
from state.sessions import SessionStore
from tests.conftest import (
    CHAOS_SUMMARY,
    DIRSYNC_CLIENT_ID,
    DIRSYNC_SECRET,
    MAILFLOW_CLIENT_ID,
    MAILFLOW_SECRET,
    SIGNING_SECRET,
    base_environment,
)

__all__ = ["CHAOS_SUMMARY", "REPORTS", "TARGETS", "Chaos", "ChaosConfig", "Report"]

#: Every report made in this test run, by form.
REPORTS: list[tuple[str, Report]] = []

ACK_LIMIT = 3.0  # seconds Slack waits for an ack
# Seconds from Slack's answer to a post until its ts is recorded, at most, with Redis up (a
# moment: one round trip; generous for a loaded two-core machine).
RECORD_MOMENT = 1.0
TRY_AGAIN = "Redis is unavailable for a moment"
SOMETHING_WRONG = "Something went wrong on our side"
NOTIFY_CHANNEL = "C0CHAOSNOTIFY"
STATUS = "/provision-inline status"
JUSTIFICATION = "Inline mail protection configures Exchange Online mail flow (chaos run)."

# Targeted kills: (name, what is held, what becomes of it). "slack:" ones sit between a stored
# transition and its Slack effects (the held call is dropped: it never reached Slack);
# "microsoft:" ones between a Microsoft call and the state write (released: Microsoft did it).
TARGETS: Mapping[str, str] = {
    "slack:assign-prompt": "the edit that offers 'Assign the role', after an approver's "
    "Acknowledge was stored",
    "slack:step3-prompt": "the post of step 3's consent prompt, after the role was recorded",
    "slack:plan": "the post of the change plan, inside the verification job",
    "microsoft:consent-confirm": "the mail-flow app's token request that confirms a consent, "
    "inside Microsoft's redirect",
    "microsoft:sign-in-redeem": "the redemption of the sign-in code, inside the sign-in answer",
    "microsoft:exchange-apply": "the first New-* cmdlet of the apply job",
    "microsoft:role-assign": "the PIM request that assigns the role, inside the sign-in answer",
}


@dataclass(frozen=True)
class ChaosConfig:
    sessions: int = 6  # per wave
    min_kills: int = 5
    min_redis_restarts: int = 1
    max_waves: int = 1  # more waves (fresh sessions) until the minimums are reached
    replicas: int = 3
    kill_every: tuple[float, float] = (3.0, 6.0)  # seconds between random kills
    redis_every: tuple[float, float] = (8.0, 14.0)  # seconds between Redis restarts
    # Seconds Redis stays down: alternately past the 1.5 s the bot waits for it before an ack
    # ("try again") and within it (ridden out). The long one leaves room for two whole waits,
    # so the observer can ask again when a kill takes their first answer.
    redis_down_long: tuple[float, float] = (4.0, 5.0)
    redis_down_short: tuple[float, float] = (0.2, 1.2)
    targets: tuple[str, ...] = ()
    wave_deadline: float = 240.0  # seconds a wave's people may take at most
    stall: float = 20.0  # a person gives up after this long with nothing to do or seen
    job_patience: float = 150.0  # ... or this long while the bot says it is working
    seed: int | None = None


# -- processes -----------------------------------------------------------------------------------


def _bot_command() -> list[str]:
    script = Path(sys.executable).with_name("provision-inline-bot")
    if script.exists():
        return [str(script), "serve"]
    return [sys.executable, "-m", "handlers.main", "serve"]


class Replica:
    """One ``provision-inline-bot serve`` process on a fixed port (kept across restarts)."""

    def __init__(self, name: str, environment: Mapping[str, str], log_dir: Path) -> None:
        self.name = name
        self.port = free_port()
        self.environment = {**environment, "PORT": str(self.port)}
        self.log_path = log_dir / f"{name}.log"
        self.process: asyncio.subprocess.Process | None = None
        self.lock = asyncio.Lock()  # one kill or restart at a time
        self.starts = 0
        self._reader: asyncio.Task[None] | None = None

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None else None

    async def start(self, timeout: float = 60.0) -> None:  # noqa: ASYNC109 - a deadline
        """Start and return once uvicorn says it is listening."""
        ready = asyncio.get_running_loop().create_future()
        self.starts += 1
        with self.log_path.open("a") as log:
            log.write(f"---- start {self.starts} ----\n")
        process = await asyncio.create_subprocess_exec(
            *_bot_command(),
            env=self.environment,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        self.process = process
        self._reader = asyncio.create_task(self._read(process, ready))
        try:
            async with asyncio.timeout(timeout):
                await asyncio.shield(ready)
        except (TimeoutError, RuntimeError):
            await self.kill()
            raise RuntimeError(
                f"replica {self.name} did not start within {timeout}s:\n{self.log_tail()}"
            ) from None

    async def _read(self, process: asyncio.subprocess.Process, ready: asyncio.Future[None]) -> None:
        assert process.stdout is not None
        with self.log_path.open("a") as log:
            async for raw in process.stdout:
                line = raw.decode(errors="replace")
                log.write(line)
                if "Uvicorn running on" in line and not ready.done():
                    ready.set_result(None)
        if not ready.done():
            ready.set_exception(RuntimeError("the process ended before it was ready"))
            ready.exception()  # retrieved: nobody may be waiting any more

    def log_tail(self, lines: int = 40) -> str:
        if not self.log_path.exists():
            return ""
        return "".join(self.log_path.read_text(errors="replace").splitlines(True)[-lines:])

    async def kill(self) -> frozenset[int]:
        """SIGKILL, as a crash: nothing is flushed, no request is finished. Returns the local
        ports of the TCP connections the process held (its calls to Slack among them), so a
        post can be traced afterwards to the process that made it."""
        held = self.ports()
        await self._end(signal.SIGKILL)
        return held

    def ports(self) -> frozenset[int]:
        """The local ports of the TCP sockets this process holds (Linux /proc)."""
        if self.process is None:
            return frozenset()
        inodes = set()
        with contextlib.suppress(OSError):
            for fd in Path(f"/proc/{self.process.pid}/fd").iterdir():
                with contextlib.suppress(OSError):
                    target = os.readlink(fd)
                    if target.startswith("socket:["):
                        inodes.add(target[8:-1])
        return frozenset(port for port, inode in _socket_table().items() if inode in inodes)

    async def stop(self) -> None:
        """SIGTERM: requests in flight are finished, then the process exits."""
        await self._end(signal.SIGTERM)

    async def _end(self, how: signal.Signals) -> None:
        process, reader = self.process, self._reader
        self.process, self._reader = None, None
        if process is None:
            return
        if process.returncode is None:
            process.send_signal(how)
        try:
            async with asyncio.timeout(20):
                await process.wait()
        except TimeoutError:
            process.kill()
            await process.wait()
        if reader is not None:
            await reader  # the pipe's end: its transport closes with it

    def owns_port(self, port: int) -> bool:
        """Whether this process holds the TCP socket whose local port is ``port``."""
        if self.process is None:
            return False
        inode = _socket_inode(port)
        if inode is None:
            return False
        wanted = f"socket:[{inode}]"
        fds = Path(f"/proc/{self.process.pid}/fd")
        try:
            for fd in fds.iterdir():
                with contextlib.suppress(OSError):
                    if os.readlink(fd) == wanted:
                        return True
        except OSError:
            return False
        return False


def _socket_inode(port: int) -> str | None:
    """The inode of the TCP socket bound locally to ``port`` (Linux: /proc/net/tcp[6])."""
    return _socket_table().get(port)


def _socket_table() -> dict[int, str]:
    """Local port → socket inode of every TCP socket of this machine (/proc/net/tcp[6])."""
    table: dict[int, str] = {}
    for name in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError), open(name) as rows:
            next(rows)
            for row in rows:
                parts = row.split()
                if parts[9] != "0":
                    table.setdefault(int(parts[1].rsplit(":", 1)[1], 16), parts[9])
    return table


# -- the router ----------------------------------------------------------------------------------

_HOP_BY_HOP = frozenset(
    {b"host", b"connection", b"content-length", b"transfer-encoding", b"keep-alive"}
)


@dataclass
class Routed:
    at: float
    path: str
    replica: str | None
    status: int
    refused: list[str]


class Router:
    """An ASGI reverse proxy: each request to a random replica; a replica that refuses the
    connection (down, or still starting) means another is tried; a replica that dies with the
    request in hand means 502 (the caller sees a failure, as Slack would)."""

    def __init__(self, replicas: Sequence[Replica], rng: random.Random, clock: Callable[[], float]):
        self.replicas = list(replicas)
        self.rng = rng
        self.clock = clock
        self.routed: list[Routed] = []
        self._http = httpx.AsyncClient(
            timeout=httpx.Timeout(30.0, connect=2.0),
            limits=httpx.Limits(max_keepalive_connections=0),
        )

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        if scope["type"] != "http":
            return
        chunks = []
        while True:
            message = await receive()
            chunks.append(message.get("body", b""))
            if not message.get("more_body"):
                break
        body = b"".join(chunks)
        raw_path: bytes = scope.get("raw_path") or scope["path"].encode()
        query: bytes = scope.get("query_string", b"")
        target = raw_path.decode("latin-1") + ("?" + query.decode("latin-1") if query else "")
        headers = [(k, v) for k, v in scope["headers"] if k.lower() not in _HOP_BY_HOP]
        headers.append((b"connection", b"close"))
        order = self.rng.sample(self.replicas, len(self.replicas))
        record = Routed(self.clock(), scope["path"], None, 503, [])
        self.routed.append(record)
        for replica in order:
            try:
                answer = await self._http.request(
                    scope["method"],
                    f"http://127.0.0.1:{replica.port}{target}",
                    content=body,
                    headers=headers,
                )
            except httpx.ConnectError:
                record.refused.append(replica.name)
                continue
            except httpx.TransportError as error:  # died with the request in hand
                record.replica, record.status = replica.name, 502
                await _respond(send, 502, [], f"{replica.name}: {type(error).__name__}".encode())
                return
            record.replica, record.status = replica.name, answer.status_code
            kept = [
                (k.encode("latin-1"), v.encode("latin-1"))
                for k, v in answer.headers.items()
                if k.lower().encode() not in _HOP_BY_HOP and k.lower() != "content-encoding"
            ]
            kept.append((b"x-chaos-replica", replica.name.encode()))
            await _respond(send, answer.status_code, kept, answer.content)
            return
        await _respond(send, 503, [], b"no replica accepted the connection")


async def _respond(send: Any, status: int, headers: list[tuple[bytes, bytes]], body: bytes) -> None:
    headers = [*headers, (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


# -- what happened -------------------------------------------------------------------------------

Outcome = Literal["", "changed", "told", "try_again", "error", "silence", "lost", "failed"]


@dataclass
class Attempt:
    """One request a person sent (to Slack's endpoint, or a browser's to the callback)."""

    session: int
    who: str
    what: str
    kind: Literal["slack", "browser"]
    sent: float
    seconds: float
    status: int
    replica: str | None
    outcome: Outcome = ""
    redis_down: bool = False


@dataclass
class Kill:
    at: float
    replica: str
    reason: str  # "random" or a target's name
    note: str = ""
    ports: frozenset[int] = frozenset()  # the local ports the process held when it was killed


@dataclass
class Outage:
    down: float
    up: float
    how: str  # "SIGTERM" or "SIGKILL"


@dataclass
class SessionResult:
    index: int
    tenant: str
    session_id: str | None
    phase: str | None
    target: str | None
    stuck: str | None
    finished: float | None = None


@dataclass
class Report:
    config: ChaosConfig
    seconds: float = 0.0
    waves: int = 0
    sessions: list[SessionResult] = field(default_factory=list)
    attempts: list[Attempt] = field(default_factory=list)
    kills: list[Kill] = field(default_factory=list)
    outages: list[Outage] = field(default_factory=list)
    routed: list[Routed] = field(default_factory=list)
    violations: dict[str, list[str]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    # Posts made again because their process died between Slack's answer and the record.
    repeated_unrecorded: list[str] = field(default_factory=list)

    INVARIANTS = (
        "final_state",
        "no_step_twice",
        "slack_posts",
        "exchange_once",
        "acks",
        "redis_down_answers",
    )

    @property
    def late_acks(self) -> list[Attempt]:
        return [
            a
            for a in self.attempts
            if a.kind == "slack" and a.status not in (502, 503) and a.seconds > ACK_LIMIT
        ]

    def figures(self) -> dict[str, Any]:
        slack = [a for a in self.attempts if a.kind == "slack"]
        targeted = Counter(k.reason for k in self.kills if k.reason != "random")
        return {
            "seconds": round(self.seconds, 1),
            "waves": self.waves,
            "sessions": len(self.sessions),
            "protected": sum(1 for s in self.sessions if s.phase == Phase.PROTECTED.value),
            "kills": len(self.kills),
            "random_kills": sum(1 for k in self.kills if k.reason == "random"),
            "targeted_kills": dict(targeted),
            "redis_restarts": len(self.outages),
            "redis_down_seconds": round(sum(o.up - o.down for o in self.outages), 1),
            "slack_requests": len(slack),
            "browser_requests": sum(1 for a in self.attempts if a.kind == "browser"),
            "requests_during_redis_outage": sum(1 for a in self.attempts if a.redis_down),
            "router_failovers": sum(len(r.refused) for r in self.routed),
            "lost_to_kills": sum(1 for a in self.attempts if a.status == 502),
            "no_replica": sum(1 for r in self.routed if r.status == 503 and r.replica is None),
            "outcomes": dict(Counter(a.outcome for a in self.attempts if a.outcome)),
            "late_acks": len(self.late_acks),
            "slowest_ack": round(max((a.seconds for a in slack if a.status == 200), default=0), 2),
            "posts_repeated_after_a_kill_before_their_record": len(self.repeated_unrecorded),
            "violations": {name: len(found) for name, found in self.violations.items()},
        }

    def transcript(self) -> str:
        """Every request, kill and Redis outage in time order (for a post-mortem)."""
        lines: list[tuple[float, str]] = [
            (
                a.sent,
                f"{a.sent:8.2f} session {a.session:>3} {a.who} {a.what}: HTTP {a.status} in "
                f"{a.seconds:.2f}s via {a.replica} -> {a.outcome or '-'}"
                + (" (Redis down)" if a.redis_down else ""),
            )
            for a in self.attempts
        ]
        lines += [(k.at, f"{k.at:8.2f} KILL {k.replica} ({k.reason}) {k.note}") for k in self.kills]
        lines += [
            (o.down, f"{o.down:8.2f} REDIS DOWN ({o.how}) until {o.up:.2f}") for o in self.outages
        ]
        return "\n".join(line for _, line in sorted(lines))

    def describe(self) -> str:
        lines = [f"chaos figures: {json.dumps(self.figures())}"]
        for name in self.INVARIANTS:
            found = self.violations.get(name, [])
            lines.append(f"  {name}: {'holds' if not found else f'{len(found)} violation(s)'}")
            lines += [f"    - {v}" for v in found[:25]]
        for result in self.sessions:
            if result.phase != Phase.PROTECTED.value or result.stuck:
                lines.append(
                    f"  session {result.index} ({result.tenant}, target {result.target}): "
                    f"phase {result.phase}; {result.stuck or ''}"
                )
        for late in self.late_acks[:10]:
            lines.append(f"  late ack: {late.what} {late.seconds:.2f}s via {late.replica}")
        lines += [f"  repeated in the outbox's window: {r}" for r in self.repeated_unrecorded]
        lines += [f"  note: {note}" for note in self.notes[:80]]
        return "\n".join(lines)


# -- the people ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Cast:
    """One session's tenant, channel and people."""

    index: int
    tenant_id: str
    domain: str
    channel: str
    admin: str
    approver: str
    global_admin: str
    role_admin: str

    def tenant(self) -> SandboxTenant:
        return SandboxTenant(
            tenant_id=self.tenant_id,
            display_name=f"Chaos {self.index}",
            initial_domain=f"chaos{self.index}.onmicrosoft.com",
            domains=[self.domain],
            users=[
                SandboxUser(self.global_admin, f"Grace {self.index}", roles={GLOBAL_ADMINISTRATOR}),
                SandboxUser(
                    self.role_admin, f"Priya {self.index}", roles={PRIVILEGED_ROLE_ADMINISTRATOR}
                ),
            ],
            default_domain=self.domain,
        )


class Stuck(Exception):
    """A person gave up: nothing to do, and nothing changed for too long."""


class Vanished(Exception):
    """What a person was about to press or fill in changed under their finger (the button or
    the form is gone): they look again."""


@dataclass(frozen=True)
class Move:
    action: str
    ts: str
    element: dict[str, Any]
    edited: int


# Buttons by what a person does first when several are there (later steps first).
_PRIORITY = (
    ACTION_RETRY,
    ACTION_SUBMIT,
    ACTION_ACKNOWLEDGE_WARNINGS,
    ACTION_VERIFY,
    "consent:dirsync",
    ACTION_ASSIGN_SIGN_IN,
    ACTION_ACKNOWLEDGE,
    ACTION_REQUEST_OPEN_PIM,
    ACTION_REQUEST_OPEN,
    ACTION_REQUEST_OPEN_DIRECT,
    "consent:mailflow",
)
REQUEST_OPENERS = (ACTION_REQUEST_OPEN_PIM, ACTION_REQUEST_OPEN, ACTION_REQUEST_OPEN_DIRECT)
OBSERVER = "U0OBSERVER"  # an admin who asks for the status while Redis is down
_TRIES = 6  # presses of one button (on one version of its message) before a person gives up


class Person:
    """The people of one session, driving it to the end."""

    def __init__(self, chaos: Chaos, cast: Cast, target: str | None) -> None:
        self.chaos = chaos
        self.cast = cast
        self.target = target
        self.root_ts: str | None = None
        self.stuck: str | None = None
        self._tries: Counter[tuple[str, str, int]] = Counter()
        self._done_with: set[tuple[str, str, int]] = set()
        self._struck = False
        self.finished: float | None = None

    # -- looking -------------------------------------------------------------------------------

    @property
    def slack(self) -> SandboxSlack:
        return self.chaos.slack

    def root(self) -> Any | None:
        for message in self.slack.messages(self.cast.channel):
            if message.user == self.slack.bot_user_id and message.text.startswith(
                "Inline Mode provisioning for"
            ):
                return message
        return None

    def thread(self) -> list[Any]:
        if self.root_ts is None:
            return []
        return [
            m
            for m in self.slack.messages(self.cast.channel, thread_ts=self.root_ts)
            if m.ts != self.root_ts
        ]

    def _signature(self, user: str | None = None, *, views: bool = True) -> tuple[Any, ...]:
        """What the people see: the channel and the thread, their ephemerals, their modals
        (not after a submission: the form closing is Slack's doing, not the bot's answer)."""
        users = (user,) if user else (self.cast.admin, self.cast.approver)
        channel = self.slack.messages(self.cast.channel)
        return (
            tuple((m.ts, m.edited) for m in channel),
            tuple((m.ts, m.edited) for m in self.thread()),
            sum(1 for e in self.slack.ephemerals if e.user in users),
            tuple((v.id, v.updates) for v in self.slack.open_views() if v.user in users)
            if views
            else None,
        )

    async def _changed(
        self, before: tuple[Any, ...], seconds: float, user: str | None = None
    ) -> bool:
        """Whether what the people see changes within ``seconds``."""
        views = before[3] is not None
        try:
            await self.slack.wait_for(
                lambda _: self._signature(user, views=views) != before, timeout=seconds
            )
        except TimeoutError:
            return False
        return True

    def _ephemerals(self, user: str) -> list[Any]:
        return [e for e in self.slack.ephemerals if e.user == user]

    def done(self) -> bool:
        """Done when the channel hears the tenant is protected (the summary in the thread comes
        before the session is stored as protected)."""
        return any(
            m.text.startswith(ANNOUNCEMENT) and self.cast.domain in m.text
            for m in self.slack.messages(self.cast.channel)
        )

    def _bot_working(self) -> bool:
        root = self.root()
        text = root.text if root is not None else ""
        return any(word in text for word in ("Verifying", "Configuring"))

    # -- acting --------------------------------------------------------------------------------

    async def _send(
        self, who: str, what: str, send: Callable[[], Awaitable[httpx.Response]]
    ) -> tuple[httpx.Response | None, Attempt]:
        chaos = self.chaos
        sent = chaos.clock()
        try:
            response: httpx.Response | None = await send()
        except httpx.TransportError:
            response = None
        except SlackDriverError as gone:
            raise Vanished(str(gone)) from None
        attempt = Attempt(
            session=self.cast.index,
            who=who,
            what=what,
            kind="slack",
            sent=sent,
            seconds=chaos.clock() - sent,
            status=response.status_code if response is not None else 0,
            replica=response.headers.get("x-chaos-replica") if response is not None else None,
            redis_down=chaos.redis_down_at(sent),
        )
        chaos.report.attempts.append(attempt)
        return response, attempt

    async def _observe(
        self,
        attempt: Attempt,
        before: tuple[Any, ...],
        user: str,
        patience: float = 8.0,
        *,
        answer_expected: bool = False,
    ) -> Outcome:
        """What came of a press: a change people see, a "try again", an error, or silence.

        With ``answer_expected`` (a command that always answers its user) only an ephemeral
        message to ``user`` counts. A press sent while Redis was down that changed something
        else first is given a moment more for its own answer, which may be on its way."""
        seen: int = before[2]  # the user's ephemerals before the press (an answer may beat us here)
        if attempt.status != 200:
            attempt.outcome = "lost" if attempt.status in (0, 502, 503) else "failed"
            return attempt.outcome

        def answered(_: Any) -> bool:
            return len(self._ephemerals(user)) > seen

        if answer_expected:
            try:
                await self.slack.wait_for(answered, timeout=patience)
                changed = True
            except TimeoutError:
                changed = False
        else:
            changed = await self._changed(before, patience, user)
        if not changed:
            attempt.outcome = "lost" if self.chaos.killed_since(attempt) else "silence"
            return attempt.outcome
        if attempt.redis_down and not answered(None):
            with contextlib.suppress(TimeoutError):
                await self.slack.wait_for(answered, timeout=3.0)
        told = [e.text for e in self._ephemerals(user)][seen:]
        if any(TRY_AGAIN in text for text in told):
            attempt.outcome = "try_again"
        elif any(SOMETHING_WRONG in text for text in told):
            attempt.outcome = "error"
        elif told:
            attempt.outcome = "told"
        else:
            attempt.outcome = "changed"
        return attempt.outcome

    async def _think(self) -> None:
        """A person's pause before trying again (a timer: people are not events)."""
        await asyncio.sleep(self.chaos.rng.uniform(0.2, 1.0))

    async def _press(self, who: str, move: Move) -> Outcome:
        before = self._signature(who)
        response, attempt = await self._send(
            who,
            f"press {move.action}",
            lambda: self.chaos.driver.click(
                user_id=who,
                channel_id=self.cast.channel,
                message_ts=move.ts,
                action_id=move.action,
            ),
        )
        del response
        return await self._observe(attempt, before, who)

    async def _browser(
        self, who: str, what: str, request: Callable[[httpx.AsyncClient], Awaitable[httpx.Response]]
    ) -> httpx.Response | None:
        chaos = self.chaos
        sent = chaos.clock()
        try:
            response: httpx.Response | None = await request(chaos.browser)
        except httpx.TransportError:
            response = None
        last = response
        chaos.report.attempts.append(
            Attempt(
                session=self.cast.index,
                who=who,
                what=what,
                kind="browser",
                sent=sent,
                seconds=chaos.clock() - sent,
                status=last.status_code if last is not None else 0,
                replica=last.headers.get("x-chaos-replica") if last is not None else None,
                redis_down=chaos.redis_down_at(sent),
            )
        )
        return response

    # -- the procedure -------------------------------------------------------------------------

    async def run(self) -> None:
        try:
            async with asyncio.timeout(self.chaos.config.wave_deadline):
                await self.start()
                await self._drive()
            self.finished = self.chaos.clock()
        except TimeoutError:
            self.stuck = f"not finished within {self.chaos.config.wave_deadline}s"
        except Stuck as stuck:
            self.stuck = str(stuck)

    async def start(self) -> None:
        """Start the session (``/provision-inline``, the form), until its thread opens."""
        admin = self.cast.admin
        for _ in range(_TRIES * 2):
            root = self.root()
            if root is not None:
                self.root_ts = root.ts
                return
            earlier = {v.id for v in self.slack.open_views(admin)}
            before = self._signature(admin)
            _, attempt = await self._send(
                admin,
                "/provision-inline",
                lambda: self.chaos.driver.slash_command(
                    user_id=admin, channel_id=self.cast.channel
                ),
            )
            outcome = await self._observe(attempt, before, admin)
            fresh = [v for v in self.slack.open_views(admin) if v.id not in earlier]
            if outcome != "changed" or not fresh:
                await self._think()
                continue
            with contextlib.suppress(Vanished):
                await self._submit_start(fresh[-1].id)
            # The session starts after the ack: the root message is what people wait for.
            with contextlib.suppress(TimeoutError):
                await self.slack.wait_for(lambda _: self.root() is not None, timeout=15)
        root = self.root()
        if root is None:
            busy = [e.text for e in self._ephemerals(admin) if "already" in e.text]
            raise Stuck(f"could not start the session (told: {busy[-1:] or 'nothing'})")
        self.root_ts = root.ts

    async def _submit_start(self, view_id: str) -> None:
        admin = self.cast.admin
        for _ in range(_TRIES):
            view = self.slack.views.get(view_id)
            if view is None or not view.is_open or self.root() is not None:
                return
            if "tenant_input" not in json.dumps(view.view):
                return  # switched to "checking": the start goes on after the ack
            before = self._signature(admin)
            response, attempt = await self._send(
                admin,
                "submit start",
                lambda: self.chaos.driver.submit_view(
                    user_id=admin, view_id=view_id, values={"tenant_input": self.cast.domain}
                ),
            )
            errors = SlackDriver.view_errors(response) if response is not None else {}
            if response is not None and response.status_code == 200 and not errors:
                attempt.outcome = "changed"
                return
            attempt.outcome = (
                "try_again"
                if any(TRY_AGAIN in e for e in errors.values())
                else ("lost" if attempt.status in (0, 502, 503) else "told")
            )
            del before
            await self._think()

    def _moves(self) -> dict[str, Move]:
        """The newest button of each kind in the thread, as people see it."""
        found: dict[str, Move] = {}
        for message in reversed(self.thread()):
            for block in message.blocks:
                elements = list(block.get("elements", []))
                if "accessory" in block:
                    elements.append(block["accessory"])
                for element in elements:
                    action = element.get("action_id") if isinstance(element, dict) else None
                    if not action:
                        continue
                    if action == ACTION_CONSENT_OPEN:
                        action = (
                            f"consent:{str(block.get('block_id', '')).removeprefix('consent_')}"
                        )
                    found.setdefault(action, Move(action, message.ts, element, message.edited))
        return found

    def _next_move(self) -> Move | None:
        moves = self._moves()
        for action in _PRIORITY:
            move = moves.get(action)
            if move is None:
                continue
            key = _key(move)
            if key in self._done_with:
                continue
            if self._tries[key] >= _TRIES:
                raise Stuck(f"pressed {move.action} {_TRIES} times on one message, to no effect")
            return move
        return None

    async def _drive(self) -> None:
        config = self.chaos.config
        while not self.done():
            move = self._next_move()
            if move is None:
                before = self._signature()
                patience = config.job_patience if self._bot_working() else config.stall
                if not await self._changed(before, patience):
                    root = self.root()
                    raise Stuck(
                        f"nothing to press and nothing changed for {patience:.0f}s; the channel "
                        f"says: {root.text[:160] if root else 'nothing'!r}"
                    )
                continue
            key = _key(move)
            self._tries[key] += 1
            sent_before = len(self.chaos.report.attempts)
            try:
                outcome = await self._perform(move)
            except Vanished:
                continue  # look again
            if not self._reached_a_replica(sent_before):
                # Every replica was down at once (restarting after kills, slowly on a loaded
                # machine): nobody answered, so the press does not count as one that failed.
                self._tries[key] -= 1
            if outcome in ("changed", "told"):
                self._done_with.add(key)
            elif outcome in ("try_again", "error", "lost", "silence", "failed"):
                await self._think()

    def _reached_a_replica(self, since: int) -> bool:
        """Whether a request these people sent since attempt number ``since`` reached a replica
        (the router answers 503 without one when none is up)."""
        sent = [a for a in self.chaos.report.attempts[since:] if a.session == self.cast.index]
        return not sent or any(a.replica is not None for a in sent)

    async def _perform(self, move: Move) -> Outcome:
        admin, approver = self.cast.admin, self.cast.approver
        if move.action.startswith("consent:"):
            return await self._consent(move)
        if move.action == ACTION_ASSIGN_SIGN_IN:
            return await self._sign_in(move)
        if move.action in REQUEST_OPENERS:
            return await self._request_role(move)
        if move.action == ACTION_ACKNOWLEDGE:
            if self._aim("slack:assign-prompt"):
                self._strike(
                    "slack:assign-prompt",
                    self.slack.hold(
                        "chat.update",
                        lambda p: (
                            p.get("channel") == self.cast.channel
                            and str(p.get("text", "")).startswith(
                                "Assign the Exchange Administrator"
                            )
                        ),
                    ),
                    "drop",
                )
            return await self._press(approver, move)
        if move.action == ACTION_VERIFY and self._aim("slack:plan"):
            self._strike(
                "slack:plan",
                self.slack.hold(
                    "chat.postMessage",
                    lambda p: (
                        p.get("channel") == self.cast.channel
                        and str(p.get("text", "")).startswith("Exchange Online change plan")
                    ),
                ),
                "drop",
            )
        if move.action == ACTION_SUBMIT and self._aim("microsoft:exchange-apply"):
            tenant = self.cast.tenant_id
            self._strike(
                "microsoft:exchange-apply",
                self.chaos.microsoft.hold(
                    "exchange",
                    path_contains=tenant,
                    matching=lambda call: '"New-' in json.dumps(call.params),
                ),
                "release",
            )
        return await self._press(admin, move)

    # -- single steps, for deterministic tests -------------------------------------------------

    async def consent_link(self, app: str, timeout: float = 20.0) -> str:  # noqa: ASYNC109
        """The link of the consent button of ``app`` ("mailflow", "dirsync"), once shown."""
        move = await self.slack.wait_for(
            lambda _: self._moves().get(f"consent:{app}"), timeout=timeout
        )
        return str(move.element["url"])

    async def visit_consent(self, url: str) -> httpx.Response | None:
        """The Global Administrator opens the consent link and accepts (``None``: no answer)."""
        return await self._browser(
            self.cast.global_admin,
            "consent",
            lambda browser: browser.post(
                url,
                data={"decision": "accept", "login_hint": self.cast.global_admin},
                follow_redirects=True,
            ),
        )

    async def request_role_once(self, timeout: float = 20.0) -> Outcome:  # noqa: ASYNC109
        """The admin opens the role request form and sends it."""

        def opener(_: Any) -> Move | None:
            moves = self._moves()
            return next((moves[a] for a in REQUEST_OPENERS if a in moves), None)

        return await self._request_role(await self.slack.wait_for(opener, timeout=timeout))

    # -- targeted kills ------------------------------------------------------------------------

    def _aim(self, target: str) -> bool:
        """Whether this session suffers ``target`` now (once)."""
        if self.target != target or self._struck:
            return False
        self._struck = True
        return True

    def _principal(self) -> str | None:
        """The mail-flow app's service principal in this session's tenant (once consented)."""
        principal = self.chaos.microsoft.tenant(self.cast.tenant_id).service_principal(
            MAILFLOW_CLIENT_ID
        )
        return principal.id if principal else None

    def _strike(self, target: str, hold: Hold, then: Literal["drop", "release"]) -> None:
        self.chaos.spawn(self.chaos.strike(target, hold, then))

    # -- the steps -----------------------------------------------------------------------------

    async def _consent(self, move: Move) -> Outcome:
        admin = self.cast.admin
        app = move.action.removeprefix("consent:")
        url = str(move.element.get("url", ""))
        # The button is a link: Slack tells the app who clicked, the browser opens the link.
        await self._send(
            admin,
            f"press consent {app}",
            lambda: self.chaos.driver.click(
                user_id=admin,
                channel_id=self.cast.channel,
                message_ts=move.ts,
                action_id=ACTION_CONSENT_OPEN,
            ),
        )
        if app == "mailflow" and self._aim("microsoft:consent-confirm"):
            tenant, client = self.cast.tenant_id, MAILFLOW_CLIENT_ID
            self._strike(
                "microsoft:consent-confirm",
                self.chaos.microsoft.hold(
                    "login",
                    method="POST",
                    path_contains=f"/{tenant}/oauth2/v2.0/token",
                    matching=lambda call: (
                        isinstance(call.params, dict)
                        and call.params.get("client_id") == client
                        and call.params.get("grant_type") == "client_credentials"
                    ),
                ),
                "release",
            )
        before = self._signature()
        for _ in range(_TRIES):
            page = await self._browser(
                self.cast.global_admin,
                f"consent {app}",
                lambda browser: browser.post(
                    url,
                    data={"decision": "accept", "login_hint": self.cast.global_admin},
                    follow_redirects=True,
                ),
            )
            text = unescape(page.text) if page is not None else ""
            if "Consent recorded" in text or "already recorded" in text:
                await self._changed(before, 8.0)
                return "changed"
            if "Reload this page" in text:
                await self._think()
                continue
            break
        # The link was used up (or the answer was lost): New link, as the thread offers.
        renewed = await self._press(
            admin, Move(ACTION_CONSENT_RENEW, move.ts, move.element, move.edited)
        )
        return "lost" if renewed == "changed" else renewed

    async def _request_role(self, move: Move) -> Outcome:
        admin = self.cast.admin
        earlier = {v.id for v in self.slack.open_views(admin)}
        outcome = await self._press(admin, move)
        fresh = [v for v in self.slack.open_views(admin) if v.id not in earlier]
        if not fresh:
            with contextlib.suppress(TimeoutError):
                fresh = await self.slack.wait_for(
                    lambda s: [v for v in s.open_views(admin) if v.id not in earlier] or None,
                    timeout=5,
                )
        if not fresh:
            return outcome if outcome != "changed" else "silence"
        view_id = fresh[-1].id
        for _ in range(_TRIES):
            view = self.slack.views.get(view_id)
            if view is None or not view.is_open:
                return "changed"
            before = self._signature(admin, views=False)
            response, attempt = await self._send(
                admin,
                "submit role request",
                lambda: self.chaos.driver.submit_view(
                    user_id=admin, view_id=view_id, values={JUSTIFICATION_ACTION: JUSTIFICATION}
                ),
            )
            errors = SlackDriver.view_errors(response) if response is not None else {}
            if response is not None and response.status_code == 200 and not errors:
                return await self._observe(attempt, before, admin)
            attempt.outcome = (
                "try_again"
                if any(TRY_AGAIN in e for e in errors.values())
                else ("lost" if attempt.status in (0, 502, 503) else "told")
            )
            await self._think()
        return "failed"

    async def _sign_in(self, move: Move) -> Outcome:
        admin, upn = self.cast.admin, self.cast.role_admin
        url = str(move.element.get("url", ""))
        await self._send(
            admin,
            "press assign for me",
            lambda: self.chaos.driver.click(
                user_id=admin,
                channel_id=self.cast.channel,
                message_ts=move.ts,
                action_id=ACTION_ASSIGN_SIGN_IN,
            ),
        )
        page = await self._browser(
            upn,
            "sign in at Microsoft",
            lambda browser: browser.post(url, data={"decision": "accept", "login_hint": upn}),
        )
        form = _answer_form(page)
        if form is None:
            return "failed"
        action, fields = form
        tenant = self.cast.tenant_id
        if self._aim("microsoft:sign-in-redeem"):
            self._strike(
                "microsoft:sign-in-redeem",
                self.chaos.microsoft.hold(
                    "login",
                    method="POST",
                    path_contains=f"/{tenant}/oauth2/v2.0/token",
                    matching=lambda call: (
                        isinstance(call.params, dict)
                        and call.params.get("grant_type") == "authorization_code"
                    ),
                ),
                "release",
            )
        elif self._aim("microsoft:role-assign"):
            self._strike(
                "microsoft:role-assign",
                self.chaos.microsoft.hold(
                    "graph",
                    method="POST",
                    path_contains="/roleManagement/directory/",
                    matching=lambda call: (
                        isinstance(call.params, dict)
                        and call.params.get("principalId") == self._principal()
                    ),
                ),
                "release",
            )
        elif self._aim("slack:step3-prompt"):
            self._strike(
                "slack:step3-prompt",
                self.slack.hold(
                    "chat.postMessage",
                    lambda p: (
                        p.get("channel") == self.cast.channel
                        and str(p.get("text", "")).startswith("Step 3 — consent for directory sync")
                    ),
                ),
                "drop",
            )
        before = self._signature()
        answer = await self._browser(
            upn, "sign-in answer", lambda browser: browser.post(action, data=fields)
        )
        text = unescape(answer.text) if answer is not None else ""
        if "role assigned" in text:
            await self._changed(before, 8.0)
            return "changed"
        # The answer was lost or refused: the thread offers a new sign-in link. A sign-in
        # whose answer died with its replica left a claim behind: the thread says a fresh link
        # comes once the claim is released, so the people wait for the step's message to
        # change rather than press the used link again.
        moves = self._moves()
        renew = moves.get(ACTION_NEW_SIGN_IN)
        if renew is not None:
            await self._press(admin, renew)
        with contextlib.suppress(TimeoutError):
            await self.slack.wait_for(
                lambda _: self._moved_on_from(move), timeout=self.chaos.config.stall
            )
        return "lost"

    def _moved_on_from(self, move: Move) -> bool:
        """Whether the button of ``move`` was replaced (a fresh link) or is gone."""
        now = self._moves().get(move.action)
        return now is None or _key(now) != _key(move)


def _key(move: Move) -> tuple[str, str, int]:
    """A press as people remember it: which button, on which message, as it then read (the
    three ways to open the role request are one choice)."""
    action = "role_request_open" if move.action in REQUEST_OPENERS else move.action
    return (action, move.ts, move.edited)


def _answer_form(page: httpx.Response | None) -> tuple[str, dict[str, str]] | None:
    """The form (action, fields) Microsoft's sign-in page posts back to the bot."""
    if page is None or page.status_code != 200:
        return None
    found = re.search(r"action='([^']+)'", page.text)
    if not found:
        return None
    fields = {
        unescape(name): unescape(value)
        for name, value in re.findall(r"name='([^']+)' value='([^']*)'", page.text)
    }
    return unescape(found.group(1)), fields


# -- the world -----------------------------------------------------------------------------------


class Chaos:
    """The sandboxes, Redis, the replicas and the router; ``run`` plays the chaos."""

    def __init__(self, config: ChaosConfig, tls: SandboxTLS, directory: Path) -> None:
        self.config = config
        self.tls = tls
        self.directory = directory
        self.seed = config.seed if config.seed is not None else random.randrange(2**32)
        self.rng = random.Random(self.seed)
        self.report = Report(config)
        self.report.notes.append(f"seed {self.seed}")
        self.slack = SandboxSlack()
        self.slack.add_channel(NOTIFY_CHANNEL, "mail-security")
        self.slack.add_user(OBSERVER, "observer")
        self.casts = [self._cast(n + 1) for n in range(config.sessions * config.max_waves)]
        self.microsoft = SandboxMicrosoft(
            [cast.tenant() for cast in self.casts],
            vendor_apps(MAILFLOW_CLIENT_ID, MAILFLOW_SECRET, DIRSYNC_CLIENT_ID, DIRSYNC_SECRET),
        )
        self.redis_server = RedisServer()
        self.replicas: list[Replica] = []
        self.router: Router | None = None
        self.driver: SlackDriver
        self.browser: httpx.AsyncClient
        self.redis: Redis
        self._tasks: set[asyncio.Task[None]] = set()
        self._outage_started: float | None = None
        self._started = time.monotonic()
        self._wall_started = time.time()  # the sandbox Slack stamps its calls with time.time()
        self._people: list[Person] = []
        self.environment: dict[str, str] = {}

    def clock(self) -> float:
        return time.monotonic() - self._started

    # -- set-up --------------------------------------------------------------------------------

    def _cast(self, index: int) -> Cast:
        """The ``index``-th session's tenant, channel and people (known to the sandbox Slack)."""
        cast = Cast(
            index=index,
            tenant_id=str(uuid.uuid4()),
            domain=f"chaos{index}.example",
            channel=f"C0CHAOS{index:03d}",
            admin=f"U0ADMIN{index:03d}",
            approver=f"U0APPROVER{index:03d}",
            global_admin=f"ga@chaos{index}.example",
            role_admin=f"pra@chaos{index}.example",
        )
        self.slack.add_user(cast.admin, f"admin{index}")
        self.slack.add_user(cast.approver, f"approver{index}")
        self.slack.add_channel(cast.channel, f"provisioning-{index}")
        return cast

    @classmethod
    @contextlib.asynccontextmanager
    async def running(
        cls, config: ChaosConfig, tls: SandboxTLS, directory: Path
    ) -> AsyncIterator[Chaos]:
        """The sandboxes, Redis, the router and the replicas, started (and stopped after)."""
        chaos = cls(config, tls, directory)
        await asyncio.to_thread(chaos.redis_server.start)
        try:
            async with contextlib.AsyncExitStack() as stack:
                stack.push_async_callback(chaos._stop_replicas)
                stack.push_async_callback(chaos._cancel_tasks)
                slack_server = await stack.enter_async_context(serve_asgi(chaos.slack.app))
                ms_server = await stack.enter_async_context(
                    serve_asgi(chaos.microsoft.app, tls=tls)
                )
                chaos.browser = await stack.enter_async_context(
                    httpx.AsyncClient(verify=tls.client_context(), timeout=30)
                )
                http = await stack.enter_async_context(httpx.AsyncClient(timeout=30))
                chaos.redis = Redis.from_url(chaos.redis_server.url)
                stack.push_async_callback(chaos.redis.aclose)
                router_port = free_port()
                public = f"http://127.0.0.1:{router_port}"
                chaos.environment = {
                    "PATH": os.environ["PATH"],
                    "SSL_CERT_FILE": str(tls.ca_file),
                    "LOG_LEVEL": "INFO",
                    **base_environment(
                        SLACK_API_URL=f"{slack_server.base_url}/api/",
                        REDIS_URL=chaos.redis_server.url,
                        MICROSOFT_LOGIN_URL=f"{ms_server.base_url}/login",
                        MICROSOFT_GRAPH_URL=f"{ms_server.base_url}/graph",
                        MICROSOFT_EXCHANGE_URL=f"{ms_server.base_url}/exchange",
                        PROVISION_ADMINS=",".join([*(c.admin for c in chaos.casts), OBSERVER]),
                        PROVISION_APPROVERS=",".join(c.approver for c in chaos.casts),
                        PUBLIC_URL=public,
                        NOTIFY_CHANNEL=NOTIFY_CHANNEL,
                    ),
                }
                chaos.replicas = [
                    Replica(f"r{n + 1}", chaos.environment, directory)
                    for n in range(config.replicas)
                ]
                chaos.router = Router(chaos.replicas, chaos.rng, chaos.clock)
                stack.push_async_callback(chaos.router.aclose)
                await stack.enter_async_context(serve_asgi(chaos.router, port=router_port))
                chaos.driver = SlackDriver(
                    sandbox=chaos.slack,
                    sandbox_base_url=slack_server.base_url,
                    events_url=f"{public}/slack/events",
                    signing_secret=SIGNING_SECRET,
                    http=http,
                )
                await asyncio.gather(*(replica.start() for replica in chaos.replicas))
                yield chaos
        finally:
            chaos.slack.holds.release_all()
            chaos.microsoft.holds.release_all()
            await asyncio.to_thread(chaos.redis_server.close)

    async def _stop_replicas(self) -> None:
        self.slack.holds.release_all()
        self.microsoft.holds.release_all()
        await asyncio.gather(*(replica.stop() for replica in self.replicas))

    async def _cancel_tasks(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError):
                await task

    def person(self, index: int, target: str | None = None) -> Person:
        """The people of the ``index``-th session (for tests that drive it step by step)."""
        person = Person(self, self.casts[index], target)
        self._people.append(person)
        return person

    async def session_of(self, cast: Cast) -> Session | None:
        """The session Redis holds for ``cast``'s tenant, if any."""
        return (await self._sessions()).get(cast.tenant_id)

    def spawn(self, work: Awaitable[None]) -> None:
        task = asyncio.ensure_future(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- facts the people and the report need ---------------------------------------------------

    def redis_down_at(self, at: float) -> bool:
        if self._outage_started is not None and at >= self._outage_started:
            return True
        return any(o.down <= at <= o.up for o in self.report.outages)

    def killed_since(self, attempt: Attempt) -> bool:
        """Whether the replica that answered ``attempt`` was killed after it was sent."""
        return any(k.replica == attempt.replica and k.at >= attempt.sent for k in self.report.kills)

    def owner_of(self, call: HeldCall) -> Replica | None:
        if call.client is None:
            return None
        port = call.client[1]
        return next((r for r in self.replicas if r.owns_port(port)), None)

    # -- the chaos -----------------------------------------------------------------------------

    async def strike(self, target: str, hold: Hold, then: Literal["drop", "release"]) -> None:
        """Wait for the held call, kill the process that made it, drop or release the call,
        start the process again."""
        try:
            call = await hold.reached(timeout=90)
        except TimeoutError:
            hold.release()
            self.report.notes.append(f"target {target}: the held call never came")
            return
        replica = self.owner_of(call)
        if replica is None:  # a random kill was quicker: the call is lost or done all the same
            hold.drop() if then == "drop" else hold.release()
            self.report.notes.append(f"target {target}: the caller had already gone")
            return
        async with replica.lock:
            ports = await replica.kill()
            self.report.kills.append(Kill(self.clock(), replica.name, target, call.path, ports))
            hold.drop() if then == "drop" else hold.release()
            await replica.start()

    async def _kill_randomly(self, stop: asyncio.Event) -> None:
        low, high = self.config.kill_every
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.rng.uniform(low, high)):  # the chaos's timer
                    await stop.wait()
            if stop.is_set():
                return
            free = [r for r in self.replicas if not r.lock.locked() and r.process is not None]
            if len(free) < 2:  # keep one replica up, as a rolling failure would
                continue
            replica = self.rng.choice(free)
            async with replica.lock:
                ports = await replica.kill()
                self.report.kills.append(Kill(self.clock(), replica.name, "random", "", ports))
                await replica.start()

    async def _restart_redis(self, stop: asyncio.Event) -> None:
        low, high = self.config.redis_every
        server = self.redis_server
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.rng.uniform(low, high)):
                    await stop.wait()
            if stop.is_set():
                return
            odd = len(self.report.outages) % 2 == 1
            how = "SIGKILL" if odd else "SIGTERM"
            lasting = self.config.redis_down_short if odd else self.config.redis_down_long
            self._outage_started = self.clock()
            await asyncio.to_thread(server.kill if how == "SIGKILL" else server.stop)
            down = self._outage_started
            lasts = self.rng.uniform(*lasting)
            probe = asyncio.ensure_future(self._probe_during_outage(self.clock() + lasts))
            await asyncio.sleep(lasts)  # the outage
            await asyncio.to_thread(server.start)
            self._outage_started = None
            self.report.outages.append(Outage(down, self.clock(), how))
            await probe

    async def _probe_during_outage(self, ends: float) -> None:
        """Someone (an admin apart from the sessions' people) asks for the status in a session's
        channel while Redis is down (until ``ends``, on ``clock``): they must hear "try again"
        (or, once Redis is back, get the status). Asked again while the outage will outlast
        the bot's wait for Redis before an ack, until they hear "try again": a kill may take
        an answer, and a request it delays may be answered once Redis is back."""
        people = [p for p in self._people if p.root_ts is not None] or self._people
        if not people:
            return
        person = self.rng.choice(people)
        outlasting = BEFORE_ACK_BUDGET_SECONDS + 0.5  # the wait, and the request's way there
        while True:
            before = person._signature(OBSERVER)
            _, attempt = await person._send(
                OBSERVER,
                STATUS,
                lambda: self.driver.slash_command(
                    user_id=OBSERVER, channel_id=person.cast.channel, text="status"
                ),
            )
            outcome = await person._observe(attempt, before, OBSERVER, answer_expected=True)
            if outcome == "try_again" or self._outage_started is None:
                return
            if outcome != "lost" and self.clock() + outlasting >= ends:
                return  # answered, and too little of the outage is left to ask again

    async def run(self) -> Report:
        """Drive waves of sessions under the chaos until the minimums are reached."""
        config = self.config
        stop = asyncio.Event()
        killer = asyncio.create_task(self._kill_randomly(stop))
        restarter = asyncio.create_task(self._restart_redis(stop))
        started = self.clock()
        try:
            for wave in range(config.max_waves):
                casts = self.casts[wave * config.sessions : (wave + 1) * config.sessions]
                targets = list(config.targets)
                people = [
                    Person(self, cast, targets[n] if n < len(targets) else None)
                    for n, cast in enumerate(casts)
                ]
                self._people = people
                await asyncio.gather(*(person.run() for person in people))
                self.report.waves = wave + 1
                for person in people:
                    self.report.sessions.append(
                        SessionResult(
                            person.cast.index,
                            person.cast.domain,
                            None,
                            None,
                            person.target,
                            person.stuck,
                            person.finished,
                        )
                    )
                if (
                    len(self.report.kills) >= config.min_kills
                    and len(self.report.outages) >= config.min_redis_restarts
                ):
                    break
            stop.set()
            await asyncio.gather(killer, restarter)
            await self._cancel_tasks()
            self.slack.holds.release_all()
            self.microsoft.holds.release_all()
            # The people are done; what the bot still owes them (an announcement in
            # NOTIFY_CHANNEL, a job finishing) is delivered before the replicas stop.
            await self._quiet()
        finally:
            stop.set()
            await asyncio.gather(killer, restarter)
            # Whatever is still held goes on, then every replica finishes what it has in hand.
            await self._cancel_tasks()
            await self._stop_replicas()
        self.report.seconds = self.clock() - started
        if self.router is not None:
            self.report.routed = self.router.routed
        await self._check()
        return self.report

    async def _quiet(self, timeout: float = 90.0) -> None:  # noqa: ASYNC109 - a deadline
        """Wait until no session has undelivered outbox entries, a job at work or a lease held:
        a fact in Redis, woken by keyspace notifications. Not reached in ``timeout`` seconds:
        noted, and the invariants say what is missing."""
        await self.redis.config_set("notify-keyspace-events", "KA")
        pubsub = self.redis.pubsub()
        await pubsub.psubscribe("__keyspace@*__:pi:*")  # before the first look
        busy: list[str] = []
        try:
            async with asyncio.timeout(timeout):
                while True:
                    busy = await self._busy()
                    if not busy:
                        return
                    await pubsub.get_message(ignore_subscribe_messages=True, timeout=None)
        except TimeoutError:
            self.report.notes.append(f"not quiet after {timeout:.0f}s: {'; '.join(busy[:5])}")
        finally:
            await pubsub.punsubscribe()
            await pubsub.aclose()

    async def _busy(self) -> list[str]:
        busy = []
        sessions = await self._sessions()  # (sets up the store too)
        pending = set(await self._store.outbox.pending())
        for session in sessions.values():
            undelivered = await self._store.outbox.length(session.id)
            holder = await self._store.lease_holder(session.id)
            if undelivered or holder or session.phase in WORKING:
                head = await self._store.outbox.head(session.id)
                deliverer = await self.redis.get(f"pi:{{{session.id}}}:delivering")
                busy.append(
                    f"{session.tenant_label} ({session.id}): {session.phase}, {undelivered} "
                    f"outbox entries (pending index: {session.id in pending}; head: "
                    f"{head.attempts if head else '-'} attempts, not before "
                    f"{head.not_before - time.time() if head else 0:.0f}s from now, "
                    f"{head.last_error if head else ''!r}; delivery lease {deliverer!r}), "
                    f"job lease {holder}"
                )
        return busy

    def unrecorded(self, call: RecordedCall) -> str | None:
        """Whether the process that made ``call`` (a post) was killed between Slack's answer
        and the record of its ts: the moment the record takes, or as long as a Redis outage
        lasts (the record waits it out). Then its outbox entry was delivered again and the
        post made anew; chat:write offers no way to find the first one (RELIABILITY.md)."""
        if call.client is None:
            return None
        answered = call.at - self._wall_started
        port = call.client[1]
        kill = next((k for k in self.report.kills if k.at >= answered and port in k.ports), None)
        if kill is None:
            return None
        until = answered + RECORD_MOMENT
        for outage in sorted(self.report.outages, key=lambda o: o.down):
            if outage.down <= until and outage.up >= answered:
                until = max(until, outage.up + RECORD_MOMENT)
        if kill.at > until:
            return None
        return (
            f"its process ({kill.replica}) was killed {kill.at - answered:.2f}s after Slack's "
            f"answer ({kill.reason} kill)"
        )

    def _posts_in_time(self, cast: Cast, session: Session) -> list[str]:
        """The session's thread posts on the chaos clock, to set beside the transcript's kills
        and outages (a post-mortem of a missing or repeated message)."""
        return [
            f"session {cast.index}: {call.at - self._wall_started:8.2f} posted "
            f"{str(call.params.get('text', ''))[:50]!r} as {call.response.get('ts')}"
            for call in self.slack.calls_to("chat.postMessage")
            if call.ok and call.params.get("thread_ts") == session.root_ts
        ]

    # -- the invariants ------------------------------------------------------------------------

    async def _sessions(self) -> dict[str, Session]:
        """Every session Redis holds, by tenant id."""
        store: SessionStore[Session] = SessionStore(
            self.redis, decode=Session.from_json, active_ttl=3600, retention_ttl=3600
        )
        found: dict[str, Session] = {}
        async for key in self.redis.scan_iter(match="pi:{*}:session"):
            session_id = key.decode().split("{", 1)[1].split("}", 1)[0]
            session = await store.get(session_id)
            if session is not None:
                found[session.tenant_id] = session
        self._store = store
        return found

    async def _check(self) -> None:
        report = self.report
        sessions = await self._sessions()
        casts = {c.index: c for c in self.casts}
        violations: dict[str, list[str]] = {name: [] for name in Report.INVARIANTS}
        for result in report.sessions:
            cast = casts[result.index]
            session = sessions.get(cast.tenant_id)
            result.session_id = session.id if session else None
            result.phase = session.phase.value if session else None
            where = f"session {cast.index} ({cast.domain})"
            if session is None or session.phase is not Phase.PROTECTED:
                violations["final_state"].append(
                    f"{where} ended {result.phase or 'without a session'}, not protected"
                    + (f" (people: {result.stuck})" if result.stuck else "")
                )
            if session is not None:
                audit = await self._store.audit(session.id, count=10_000)
                violations["no_step_twice"] += steps_twice(where, session, audit)
                found = posts_violations(
                    where,
                    self.slack,
                    cast,
                    session,
                    explain=self.unrecorded,
                    explained=report.repeated_unrecorded,
                )
                violations["slack_posts"] += found
                if found:
                    report.notes += self._posts_in_time(cast, session)
            violations["exchange_once"] += exchange_violations(where, self.microsoft, cast, session)
        violations["acks"] = [
            f"{a.what} by {a.who} acked after {a.seconds:.2f}s (via {a.replica})"
            for a in report.late_acks
        ]
        for attempt in report.attempts:
            if attempt.kind != "slack" or not attempt.redis_down:
                continue
            if attempt.status in (0, 502, 503) or attempt.outcome == "lost":
                continue  # the replica died with it: a kill, not Redis
            if attempt.status != 200 or attempt.seconds > ACK_LIMIT:
                violations["redis_down_answers"].append(
                    f"{attempt.what} by {attempt.who} during a Redis outage: HTTP "
                    f"{attempt.status} after {attempt.seconds:.2f}s"
                )
            elif attempt.outcome == "silence":
                violations["redis_down_answers"].append(
                    f"{attempt.what} by {attempt.who} during a Redis outage: acked, then silence"
                )
            elif attempt.what == STATUS and attempt.outcome not in ("try_again", "told"):
                violations["redis_down_answers"].append(
                    f"{attempt.what} by {attempt.who} during a Redis outage: no answer to its "
                    f"user ({attempt.outcome})"
                )
        report.violations = violations


# -- invariant helpers ---------------------------------------------------------------------------

# Decisions that happen once in a provisioning, whatever the clicks and the crashes.
_ONCE = (
    "mailflow_consent",
    "role_request",
    "role_acknowledge",
    "role_assigning",
    "role_assigned",
    "directory_consent",
    "verification_passed",
    "submit",
    "apply_succeeded",
)

_PASSED: Mapping[str, Phase] = {
    "mailflow_consent": Phase.MAILFLOW_CONSENTED,
    "role_request": Phase.ROLE_REQUESTED,
    "role_acknowledge": Phase.ROLE_ACKNOWLEDGED,
    "role_assigned": Phase.ROLE_ASSIGNED,
    "directory_consent": Phase.DIRECTORY_CONSENTED,
    "verification_passed": Phase.PLAN_SHOWN,
    "submit": Phase.APPLYING,
    "apply_succeeded": Phase.PROTECTED,
}


# Decisions a recorded release opens again: a claim on the role released (its sign-in was
# interrupted, or Microsoft refused) is claimed anew by the next sign-in, a person's own act.
_REOPENED_BY: Mapping[str, str] = {"role_assigning": "role_assign_failed"}


def steps_twice(where: str, session: Session, audit: Sequence[Any]) -> list[str]:
    counts = Counter(entry.action for entry in audit)
    found = [
        f"{where}: {action} recorded {counts[action]} times"
        for action in _ONCE
        if counts[action] > 1 + counts[_REOPENED_BY.get(action, "")]
    ]
    assigned = [e for e in audit if e.action == "role_assignment" and e.result == "assigned"]
    if len(assigned) > 1:
        found.append(f"{where}: the role was assigned at Microsoft {len(assigned)} times")
    return found


def _reached(session: Session) -> set[Phase]:
    return {entry.phase for entry in session.history} | {session.phase}


# A bot message's kind, by the text it was posted with: (kind, top-level?, test).
_KINDS: tuple[tuple[str, bool, Callable[[str], bool]], ...] = (
    ("root", True, lambda t: t.startswith("Inline Mode provisioning for")),
    ("announcement", True, lambda t: t.startswith(ANNOUNCEMENT)),
    ("step 1 message", False, lambda t: "Step 1 — consent for mail flow" in t),
    ("step 3 message", False, lambda t: "Step 3 — consent for directory sync" in t),
    (
        "step 2 message",
        False,
        lambda t: t.startswith(("Step 2:", "Role request for review:", "Assign the Exchange")),
    ),
    ("approvers' notification", False, lambda t: t.startswith(":bell:") and "asks for" in t),
    (
        "step 4 (verify) message",
        False,
        lambda t: t.startswith("Step 4 for ") or "*Step 4 — verify:*" in t,
    ),
    ("plan's domains and checks", False, lambda t: t.startswith("*Step 4 — the change plan.*")),
    ("change plan", False, lambda t: t.startswith("Exchange Online change plan")),
    (
        "Submit message",
        False,
        lambda t: t.startswith(
            (
                "Review the pre-flight checks",
                ":hourglass_flowing_sand: Reading the tenant",
                ":rocket:",
            )
        ),
    ),
    ("summary", False, lambda t: t.startswith("Exchange Online mail flow is configured")),
)

# The phase from which each kind must exist (exactly once).
_DUE: Mapping[str, Phase] = {
    "root": Phase.STARTED,
    "step 1 message": Phase.STARTED,
    "step 2 message": Phase.MAILFLOW_CONSENTED,
    "approvers' notification": Phase.ROLE_REQUESTED,
    "step 3 message": Phase.ROLE_ASSIGNED,
    "step 4 (verify) message": Phase.DIRECTORY_CONSENTED,
    "plan's domains and checks": Phase.PLAN_SHOWN,
    "change plan": Phase.PLAN_SHOWN,
    "Submit message": Phase.PLAN_SHOWN,
    "summary": Phase.PROTECTED,
    "announcement": Phase.PROTECTED,
}


def _kind(text: str, top_level: bool) -> str:
    for kind, top, test in _KINDS:
        if top == top_level and test(text):
            return kind
    return "other"


# What a step's message says once the session has reached a phase (it is edited as it moves):
# (kind, phase reached, test of its text now). Where a phase is left again, the later wins.
_SHOWS: tuple[tuple[str, Phase, Callable[[str], bool]], ...] = (
    ("step 1 message", Phase.MAILFLOW_CONSENTED, lambda t: t.startswith(":white_check_mark:")),
    ("step 3 message", Phase.DIRECTORY_CONSENTED, lambda t: t.startswith(":white_check_mark:")),
    (
        "step 2 message",
        Phase.ROLE_ASSIGNED,
        lambda t: "assigned the Exchange Administrator role" in t,
    ),
    ("step 4 (verify) message", Phase.PLAN_SHOWN, lambda t: t.startswith("Every grant")),
    (
        "Submit message",
        Phase.PROTECTED,
        # "Nothing to change.": a resumed job found every change already made
        lambda t: "changes applied" in t or "Nothing to change" in t,
    ),
)
# ... and while the session stands in a phase.
_SHOWS_NOW: Mapping[Phase, tuple[str, Callable[[str], bool]]] = {
    Phase.ROLE_REQUESTED: ("step 2 message", lambda t: t.startswith("Role request for review")),
    Phase.ROLE_ACKNOWLEDGED: (
        "step 2 message",
        lambda t: t.startswith("Assign the Exchange Administrator role"),
    ),
}


#: Why a post may have been made twice, or None: given its earlier copy (``Chaos.unrecorded``).
Explain = Callable[[RecordedCall], str | None]


def posts_violations(
    where: str,
    slack: SandboxSlack,
    cast: Cast,
    session: Session,
    *,
    explain: Explain | None = None,
    explained: list[str] | None = None,
) -> list[str]:
    """Each message the session owes, posted exactly once; the root checklist and each step's
    message edited to where the session stands; the announcement once in each channel.

    A message posted again is not a violation when ``explain`` finds, for every earlier copy,
    that its process died between Slack's answer and the record of its ts (the outbox's
    documented at-least-once window); it goes to ``explained`` instead."""
    found: list[str] = []
    calls: dict[str, list[RecordedCall]] = {}
    for call in slack.calls_to("chat.postMessage"):
        if not call.ok or call.params.get("channel") != cast.channel:
            continue
        thread = call.params.get("thread_ts")
        if thread is not None and thread != session.root_ts:
            continue
        kind = _kind(str(call.params.get("text", "")), top_level=thread is None)
        calls.setdefault(kind, []).append(call)
    posted = {kind: [str(c.response.get("ts")) for c in made] for kind, made in calls.items()}

    def repeated(what: str, copies: list[RecordedCall]) -> None:
        reasons = [explain(c) if explain else None for c in copies[:-1]]
        problem = f"{where}: {what} was posted {len(copies)} times"
        if explained is not None and all(reasons):
            explained.append(f"{problem}: {'; '.join(r for r in reasons if r)}")
        else:
            found.append(problem)

    reached = _reached(session)
    for kind, phase in _DUE.items():
        count = len(posted.get(kind, []))
        due = phase in reached
        if kind in ("plan's domains and checks", "change plan", "Submit message"):
            due = session.plan is not None and bool(session.plan.domains)
        if due and count == 0:
            found.append(f"{where}: the {kind} is missing")
        elif count > 1:
            repeated(f"the {kind}", calls[kind])

    def now(kind: str) -> str | None:
        """The text now of the latest message of ``kind``: the one the bot keeps editing. (A
        copy posted again in the outbox's window leaves the first one behind, unknown to the
        bot and as it was; a repeat outside that window is a violation of its own above.)"""
        for ts in posted.get(kind, [])[-1:]:
            with contextlib.suppress(KeyError):
                return slack.message(cast.channel, ts).text
        return None

    shows = [(kind, test) for kind, phase, test in _SHOWS if phase in reached]
    if session.phase in _SHOWS_NOW:
        shows.append(_SHOWS_NOW[session.phase])
    for kind, test in shows:
        text = now(kind)
        if text is not None and not test(text):
            shown = text if len(text) <= 160 else f"{text[:70]}…{text[-80:]}"
            found.append(f"{where}: the {kind} still says {shown!r}")
    root = now("root")
    expected = root_message(session).text
    if root is not None and root != expected:
        found.append(f"{where}: the root checklist says {root[:90]!r}, not {expected[:90]!r}")
    if session.phase is Phase.PROTECTED:
        notes = [
            c
            for c in slack.calls_to("chat.postMessage")
            if c.ok
            and c.params.get("channel") == NOTIFY_CHANNEL
            and str(c.params.get("text", "")).startswith(ANNOUNCEMENT)
            and cast.domain in str(c.params.get("text", ""))
        ]
        if len(notes) > 1:
            repeated(f"the announcement in {NOTIFY_CHANNEL}", notes)
        elif not notes:
            found.append(f"{where}: 0 announcements in {NOTIFY_CHANNEL}, not 1")
    return found


def exchange_violations(
    where: str, microsoft: SandboxMicrosoft, cast: Cast, session: Session | None
) -> list[str]:
    """Each object created at most once, nothing removed, the allow list without repeats; a
    protected tenant holds every object of DESIGN §3."""
    found: list[str] = []
    created: Counter[tuple[str, str]] = Counter()
    for request in microsoft.requests_to("exchange"):
        if cast.tenant_id not in request.path or request.status != 200:
            continue
        body = request.body if isinstance(request.body, dict) else {}
        cmdlet = body.get("CmdletInput") or {}
        name = str(cmdlet.get("CmdletName", ""))
        parameters = cmdlet.get("Parameters") or {}
        if name.startswith("New-"):
            created[(name[4:], str(parameters.get("Name") or parameters.get("DisplayName")))] += 1
        elif name.startswith("Remove-"):
            found.append(f"{where}: {name} {parameters.get('Identity')} was run")
    found += [
        f"{where}: {kind} {name!r} created {count} times"
        for (kind, name), count in created.items()
        if count > 1
    ]
    tenant = microsoft.tenant(cast.tenant_id)
    org = tenant.exchange
    if len(org.ip_allow_list) != len(set(org.ip_allow_list)):
        found.append(f"{where}: the IP allow list repeats entries: {org.ip_allow_list}")
    principal = tenant.service_principal(MAILFLOW_CLIENT_ID)
    if principal is not None:
        roles = [
            a
            for a in tenant.role_assignments
            if a.principal_id == principal.id and a.role_definition_id == EXCHANGE_ADMINISTRATOR
        ]
        if len(roles) > 1:
            found.append(f"{where}: {len(roles)} Exchange Administrator assignments of the app")
    if session is not None and session.phase is Phase.PROTECTED:
        settings = load_settings(base_environment())
        names = object_names(settings.inline.name_prefix)
        wanted = {(str(kind), name) for d in FULL for kind, name in names.of(d)}
        held = {
            (kind, obj["Name"]) for kind, store in org.objects.items() for obj in store.values()
        }
        if wanted - held:
            found.append(f"{where}: protected, but Exchange lacks {sorted(wanted - held)}")
        entries = set(allow_list_entries(settings.inline.ip_ranges))
        if not entries <= set(org.ip_allow_list):
            found.append(
                f"{where}: the IP allow list lacks {sorted(entries - set(org.ip_allow_list))}"
            )
    return found

"""The world the benchmarks run in: sandbox Slack and Microsoft, a private redis-server, the bot
and the anchor as separate processes.

The sandboxes are served by this (the harness's) process on loopback ports; the bot runs as
production runs it (``provision-inline-bot serve``, HTTP mode, signed requests) in a process of
its own, against them and a private ``redis-server``; the anchor (a bare Bolt app that only
acks, ``benchmarks.anchor``) runs in another, behind the same uvicorn + Starlette stack.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import signal
import sys
import time
import uuid
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from redis.asyncio import Redis
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from bot.sandbox.microsoft import (
    GLOBAL_ADMINISTRATOR,
    SandboxMicrosoft,
    SandboxTenant,
    SandboxUser,
    vendor_apps,
)
from bot.sandbox.redis_server import RedisServer
from bot.sandbox.server import SandboxTLS, free_port, serve_asgi
from bot.sandbox.slack import SandboxSlack
from bot.sandbox.slack_driver import SlackDriver
from bot.workflow import Session
from state.sessions import SessionStore

ADMIN = "U0BENCHADA"
APPROVER = "U0BENCHAPRIL"
CHANNEL = "C0BENCH"
NOTIFY = "C0BENCHSEC"
MAILFLOW_CLIENT_ID = "a1b2c3d4-0000-4000-8000-00000000be0e"
DIRSYNC_CLIENT_ID = "a1b2c3d4-0000-4000-8000-00000000be5c"
TENANTS = ("alpha", "bravo", "charlie", "delta")
BENCH_HEADER = "x-bench-interaction"

PROJECT = Path(__file__).resolve().parents[1]


@dataclass
class TimedRequest:
    """One request the sandbox Microsoft answered, with when it started and ended (harness
    clock), what it carried and what it answered: the raw material of the dependency chains."""

    start: float
    end: float
    method: str
    path: str
    query: str
    headers: Mapping[str, str]
    body: bytes
    status: int
    response: bytes


class Timing:
    """ASGI middleware around the sandbox Microsoft: records every request with its start and
    end time and both bodies (the sandbox itself records requests only when they end)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.requests: list[TimedRequest] = []

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.time()
        sent: list[bytes] = []
        received: list[bytes] = []
        status = 0

        async def receive_recorded() -> Message:
            message = await receive()
            if message["type"] == "http.request":
                received.append(message.get("body", b""))
            return message

        async def send_recorded(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            elif message["type"] == "http.response.body":
                sent.append(message.get("body", b""))
            await send(message)

        try:
            await self.app(scope, receive_recorded, send_recorded)
        finally:
            self.requests.append(
                TimedRequest(
                    start=start,
                    end=time.time(),
                    method=str(scope["method"]),
                    path=str(scope["path"]),
                    query=bytes(scope.get("query_string", b"")).decode("latin-1"),
                    headers={k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]},
                    body=b"".join(received),
                    status=status,
                    response=b"".join(sent),
                )
            )


@dataclass(frozen=True)
class Tenant:
    """A sandbox tenant and the people of it the flow needs."""

    sandbox: SandboxTenant
    domain: str  # what the admin types in the start form

    @property
    def global_admin(self) -> str:
        return f"grace@{self.domain}"

    @property
    def role_admin(self) -> str:
        return f"priya@{self.domain}"


def tenant(name: str, domains: int = 20) -> Tenant:
    """A tenant like the demo's (PIM, Entra ID P2, an archiving connector without the prefix:
    one warning to acknowledge), with ``domains`` verified domains besides the initial one, and
    no replication delay (verification is measured without waiting)."""
    domain = f"{name}.example"
    names = [domain] + [f"d{n:02d}.{domain}" for n in range(1, domains)]
    found = SandboxTenant(
        tenant_id=str(uuid.uuid4()),
        display_name=f"{name.title()} Traders",
        initial_domain=f"{name}.onmicrosoft.com",
        domains=names,
        users=[
            SandboxUser(f"grace@{domain}", "Grace Global", roles={GLOBAL_ADMINISTRATOR}),
            SandboxUser(f"priya@{domain}", "Priya Privileged", roles={GLOBAL_ADMINISTRATOR}),
        ],
        pim_enabled=True,
        replication_delay=0.0,
    )
    found.exchange.objects["OutboundConnector"] = {"archive connector": archive_connector()}
    return Tenant(found, domain)


def archive_connector() -> dict[str, Any]:
    """The demo's pre-existing connector without the prefix: one warning to acknowledge."""
    return {
        "Identity": "Archive Connector",
        "Name": "Archive Connector",
        "Guid": str(uuid.uuid4()),
        "Enabled": True,
        "ConnectorType": "Partner",
        "IsTransportRuleScoped": True,
        "SmartHosts": ["archive.example.org"],
    }


def bare_tenant(tenant_id: str) -> SandboxTenant:
    """A tenant that only has to be found (the start form's look-up)."""
    return SandboxTenant(
        tenant_id=tenant_id,
        display_name=f"Tenant {tenant_id[:8]}",
        initial_domain=f"t{tenant_id[:8]}.onmicrosoft.com",
    )


@dataclass
class BotProcess:
    """A server process (the bot or the anchor) on ``port``, its output in ``log``."""

    name: str
    port: int
    process: asyncio.subprocess.Process
    log: Path

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def events_url(self) -> str:
        return f"{self.base_url}/slack/events"

    def log_problems(self, since: int = 0) -> list[str]:
        """Lines of the log (from byte ``since``) that report an error or a traceback."""
        text = self.log.read_bytes()[since:].decode(errors="replace")
        return [
            line
            for line in text.splitlines()
            if " ERROR " in line or line.startswith("Traceback") or " CRITICAL " in line
        ]

    def log_size(self) -> int:
        return self.log.stat().st_size if self.log.exists() else 0

    async def stop(self) -> None:
        if self.process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.process.send_signal(signal.SIGTERM)
            try:
                async with asyncio.timeout(30):
                    await self.process.wait()
            except TimeoutError:
                self.process.kill()
                await self.process.wait()


@dataclass
class World:
    """Everything a benchmark part needs; built by ``world()``."""

    tls: SandboxTLS
    slack: SandboxSlack
    slack_url: str
    microsoft: SandboxMicrosoft
    microsoft_url: str
    timing: Timing
    redis_server: RedisServer
    redis: Redis
    http: httpx.AsyncClient
    driver: SlackDriver
    signing_secret: str
    secrets: Mapping[str, str]
    workdir: Path
    tenants: dict[str, Tenant]
    processes: list[BotProcess] = field(default_factory=list)

    # -- the environment ---------------------------------------------------------------------

    def bot_environment(self, port: int, **overrides: str) -> dict[str, str]:
        environment = {
            "PATH": os.environ.get("PATH", ""),
            "SSL_CERT_FILE": str(self.tls.ca_file),
            "PYTHONPATH": str(PROJECT),
            "SLACK_BOT_TOKEN": self.slack.bot_token,
            "SLACK_SIGNING_SECRET": self.signing_secret,
            "SLACK_API_URL": f"{self.slack_url}/api/",
            "REDIS_URL": self.redis_server.url,
            "PUBLIC_URL": f"http://127.0.0.1:{port}",
            "HOST": "127.0.0.1",
            "PORT": str(port),
            "PROVISION_ADMINS": ADMIN,
            "PROVISION_APPROVERS": APPROVER,
            "NOTIFY_CHANNEL": NOTIFY,
            "MAILFLOW_CLIENT_ID": MAILFLOW_CLIENT_ID,
            "MAILFLOW_CLIENT_SECRET": self.secrets["mailflow"],
            "DIRSYNC_CLIENT_ID": DIRSYNC_CLIENT_ID,
            "DIRSYNC_CLIENT_SECRET": self.secrets["dirsync"],
            "MICROSOFT_LOGIN_URL": f"{self.microsoft_url}/login",
            "MICROSOFT_GRAPH_URL": f"{self.microsoft_url}/graph",
            "MICROSOFT_EXCHANGE_URL": f"{self.microsoft_url}/exchange",
            "INLINE_INBOUND_SMART_HOST": "inbound.relay.example.net",
            "INLINE_OUTBOUND_SMART_HOST": "outbound.relay.example.net",
            "INLINE_IP_RANGES": "203.0.113.0/24,198.51.100.7",
            "INLINE_TLS_CERTIFICATE_NAME": "relay.example.net",
            "INLINE_SCANNED_HEADER": "X-Inline-Scanned",
        }
        environment.update(overrides)
        return environment

    # -- processes -----------------------------------------------------------------------------

    async def start_process(
        self, name: str, module: str, arguments: Sequence[str], **overrides: str
    ) -> BotProcess:
        port = free_port()
        log = self.workdir / f"{name}-{len(self.processes)}.log"
        handle = log.open("wb")
        try:
            process = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                module,
                *arguments,
                env=self.bot_environment(port, **overrides),
                cwd=str(self.workdir),  # no .env of the checkout is read
                stdout=handle,
                stderr=asyncio.subprocess.STDOUT,
            )
        finally:
            handle.close()
        started = BotProcess(name, port, process, log)
        self.processes.append(started)
        await self._until_healthy(started)
        return started

    async def _until_healthy(self, started: BotProcess, within: float = 30.0) -> None:
        deadline = time.monotonic() + within
        while True:
            if started.process.returncode is not None:
                raise RuntimeError(
                    f"{started.name} exited with {started.process.returncode}:\n"
                    + started.log.read_text(errors="replace")[-3000:]
                )
            with contextlib.suppress(httpx.HTTPError):
                answer = await self.http.get(f"{started.base_url}/healthz", timeout=2)
                if answer.status_code == 200:
                    return
            if time.monotonic() > deadline:
                raise RuntimeError(f"{started.name} did not become healthy within {within}s")
            await asyncio.sleep(0.05)  # polling a child process's start-up: nothing to wait on

    async def start_bot(self, *, instrumented: bool = False, **overrides: str) -> BotProcess:
        """The product as production runs it: ``provision-inline-bot serve`` (its module), or
        the same with the benchmark's Redis and ack counters (``benchmarks.instrumented``)."""
        if instrumented:
            return await self.start_process(
                "bot-instrumented", "benchmarks.instrumented", ["serve"], **overrides
            )
        return await self.start_process("bot", "handlers.main", ["serve"], **overrides)

    async def start_anchor(self) -> BotProcess:
        return await self.start_process("anchor", "benchmarks.anchor", [])

    async def stop(self, process: BotProcess) -> None:
        await process.stop()
        if process in self.processes:
            self.processes.remove(process)

    # -- Redis -----------------------------------------------------------------------------------

    def store(self) -> SessionStore[Session]:
        """The product's own session store on this Redis (to read or seed sessions)."""
        return SessionStore(
            self.redis,
            decode=Session.from_json,
            active_ttl=14 * 24 * 3600,
            retention_ttl=90 * 24 * 3600,
        )

    async def flush(self) -> None:
        await self.redis.flushall()

    async def redis_pid(self) -> int:
        info: Mapping[str, Any] = await self.redis.info("server")
        return int(info["process_id"])

    async def commandstats(self) -> dict[str, int]:
        """``INFO commandstats``: calls per command since the last reset (scripts' inner
        commands included)."""
        info: Mapping[str, Any] = await self.redis.info("commandstats")
        calls: dict[str, int] = {}
        for name, stats in info.items():
            command = name.removeprefix("cmdstat_")
            calls[command] = int(stats["calls"]) if isinstance(stats, dict) else 0
        return calls


def _add_people(slack: SandboxSlack) -> None:
    slack.add_user(ADMIN, "ada")
    slack.add_user(APPROVER, "april")
    slack.add_channel(CHANNEL, "mail-provisioning")
    slack.add_channel(NOTIFY, "security-notices")


@contextlib.asynccontextmanager
async def world(workdir: Path) -> AsyncIterator[World]:
    """Sandboxes served, redis-server started, nothing of the bot yet."""
    tls = SandboxTLS.create(workdir)
    slack = SandboxSlack()
    _add_people(slack)
    tenants = {name: tenant(name) for name in TENANTS}
    app_secrets = {"mailflow": secrets.token_urlsafe(24), "dirsync": secrets.token_urlsafe(24)}
    apps = vendor_apps(
        MAILFLOW_CLIENT_ID, app_secrets["mailflow"], DIRSYNC_CLIENT_ID, app_secrets["dirsync"]
    )
    microsoft = SandboxMicrosoft([t.sandbox for t in tenants.values()], apps)
    timing = Timing(microsoft.app)
    # Production's AOF setting (appendonly, fsync every second), not the tests' fsync always.
    redis_server = RedisServer(["--appendfsync", "everysec", "--maxclients", "10000"])
    await asyncio.to_thread(redis_server.start)
    trusted = os.environ.get("SSL_CERT_FILE")
    os.environ["SSL_CERT_FILE"] = str(tls.ca_file)  # the harness's own clients trust the CA
    try:
        async with contextlib.AsyncExitStack() as stack:
            slack_server = await stack.enter_async_context(serve_asgi(slack.app))
            ms_server = await stack.enter_async_context(serve_asgi(timing, tls=tls))
            http = await stack.enter_async_context(
                httpx.AsyncClient(timeout=30, limits=httpx.Limits(max_connections=200))
            )
            redis = Redis.from_url(redis_server.url)
            stack.push_async_callback(redis.aclose)
            signing_secret = secrets.token_hex(16)
            driver = SlackDriver(
                sandbox=slack,
                sandbox_base_url=slack_server.base_url,
                events_url="",
                signing_secret=signing_secret,
                http=http,
            )
            built = World(
                tls=tls,
                slack=slack,
                slack_url=slack_server.base_url,
                microsoft=microsoft,
                microsoft_url=ms_server.base_url,
                timing=timing,
                redis_server=redis_server,
                redis=redis,
                http=http,
                driver=driver,
                signing_secret=signing_secret,
                secrets=app_secrets,
                workdir=workdir,
                tenants=tenants,
            )
            try:
                yield built
            finally:
                for process in list(built.processes):
                    await built.stop(process)
    finally:
        await asyncio.to_thread(redis_server.close)
        if trusted is None:
            os.environ.pop("SSL_CERT_FILE", None)
        else:
            os.environ["SSL_CERT_FILE"] = trusted


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time the process ``pid`` has used so far (Linux ``/proc``)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def in_flight(requests: Sequence[TimedRequest], since: float) -> int:
    """The most Microsoft calls that were in flight at once, among those started after
    ``since``."""
    edges = sorted(
        [(r.start, 1) for r in requests if r.start >= since]
        + [(r.end, -1) for r in requests if r.start >= since]
    )
    most = current = 0
    for _, step in edges:
        current += step
        most = max(most, current)
    return most

"""A running bot for each test: real HTTP (uvicorn), real Redis, sandbox Slack and Microsoft.

``Harness`` gives a test the people (``driver``: signed slash commands, clicks, submissions),
what Slack received (``slack``), what Microsoft received (``microsoft``) and the bot's own
``runtime``. ``restart()`` replaces the bot with a freshly built one on the same Redis, as a
deploy would; ``crash()`` does too, leaving behind what a killed process leaves (its jobs'
leases, until they lapse).
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from redis.asyncio import Redis
from stamina.instrumentation import RetryDetails

from bot.app import Runtime, build_runtime
from bot.config import load_settings
from bot.ops.inflight import ACKED_WORK_AT_ONCE, InFlight
from bot.sandbox.microsoft import (
    EXCHANGE_ADMINISTRATOR,
    GLOBAL_ADMINISTRATOR,
    PRIVILEGED_ROLE_ADMINISTRATOR,
    ManualClock,
    SandboxMicrosoft,
    SandboxTenant,
    SandboxUser,
    vendor_apps,
)
from bot.sandbox.redis_server import RedisServer
from bot.sandbox.server import SandboxTLS, free_port, serve_asgi
from bot.sandbox.slack import SandboxSlack
from bot.sandbox.slack_driver import SlackDriver
from bot.workflow import WORKING, Phase
from handlers import wire
from state.scripts import session_key
from tests.conftest import (
    DIRSYNC_CLIENT_ID,
    DIRSYNC_SECRET,
    MAILFLOW_CLIENT_ID,
    MAILFLOW_SECRET,
    SIGNING_SECRET,
    base_environment,
)
from tests.microsoft_cloud import CONTOSO, FABRIKAM, recording_retries, requested_wait
from tests.microsoft_cloud import contoso as standard_contoso
from tests.microsoft_cloud import fabrikam as standard_fabrikam

CONTOSO_ID = CONTOSO
FABRIKAM_ID = FABRIKAM
CHANNEL = "C0PROV"
ADMIN = "U0ADMIN"
GROUP_ADMIN = "U0GROUPADMIN"
APPROVER = "U0APPROVER"
OUTSIDER = "U0OUTSIDER"
SECOND_APPROVER = "U0APPROVER2"
ROLE_ADMIN_UPN = "pra@contoso.com"
GLOBAL_ADMIN_UPN = "ga@contoso.com"
EXCHANGE_ADMIN_UPN = "exo@contoso.com"
FABRIKAM_ADMIN_UPN = "ga@fabrikam.example"

T = TypeVar("T")


def _job_stacks() -> str:
    """Where this process's jobs and lease renewals are (for a wait that timed out)."""
    found = []
    for task in asyncio.all_tasks():
        if task.get_name().startswith(("job-", "renewing")):
            trace = io.StringIO()
            task.print_stack(file=trace)
            found.append(f"\n{task.get_name()}:\n{trace.getvalue()}")
    return "".join(found)


def session_keys(session_id: str) -> str:
    """The pattern of a session's Redis keys (record, audit, lease, refs)."""
    return f"pi:{{{session_id}}}:*"


@dataclass
class Clock:
    """The bot's clock: real time plus whatever a test has skipped ahead."""

    base: Callable[[], float]
    offset: float = 0.0

    def __call__(self) -> float:
        return self.base() + self.offset

    def advance(self, seconds: float) -> None:
        self.offset += seconds


@dataclass
class Harness:
    slack: SandboxSlack
    slack_url: str
    microsoft: SandboxMicrosoft
    microsoft_url: str
    driver: SlackDriver
    http: httpx.AsyncClient
    runtime: Runtime
    base_url: str
    clock: Clock
    environment: dict[str, str]
    port: int
    microsoft_clock: ManualClock
    redis: Redis
    slept: list[float] = field(default_factory=list)
    # The bot's frequent look for jobs whose process died: off unless a test turns it on (the
    # other tests resume jobs themselves, at the moment they choose).
    orphan_check_seconds: float | None = None
    # While set (``hold_waits``), the bot's waits stay under way until the event is set.
    held_waits: asyncio.Event | None = None
    wait_began: asyncio.Event = field(default_factory=asyncio.Event)
    _stack: contextlib.AsyncExitStack = field(default_factory=contextlib.AsyncExitStack)

    @property
    def store(self) -> Any:
        return self.runtime.store

    def root_messages(self) -> list[Any]:
        return [m for m in self.slack.messages(CHANNEL) if m.user == self.slack.bot_user_id]

    def thread(self, root_ts: str) -> list[Any]:
        return [m for m in self.slack.messages(CHANNEL, thread_ts=root_ts) if m.ts != root_ts]

    async def start_bot(self) -> None:
        settings = load_settings(self.environment)
        runtime = build_runtime(
            settings,
            wire=wire,
            clock=self.clock,
            sweep_interval_seconds=None,
            orphan_check_seconds=self.orphan_check_seconds,
            sleep=self.sleep,
            monotonic=self.microsoft_clock,
        )
        server = await self._stack.enter_async_context(serve_asgi(runtime.web, port=self.port))
        self._stack.push_async_callback(runtime.aclose)
        self.runtime = runtime
        self.base_url = server.base_url
        self.driver.events_url = f"{server.base_url}/slack/events"

    async def version_of(self, session_id: str) -> int:
        return int((await self.store.require(session_id)).version)

    async def stored(
        self,
        keys: str,
        check: Callable[[], Awaitable[T | bool | None]],
        *,
        timeout: float = 20.0,  # noqa: ASYNC109 - asyncio.timeout inside, as slack.wait_for
    ) -> T:
        """The first truthy ``await check()``: a fact in Redis, about the keys matching ``keys``.

        ``check`` is evaluated at once, then again whenever one of those keys changes: woken by
        Redis keyspace notifications, never by a timer. ``TimeoutError`` after ``timeout`` s.
        """
        pattern = f"__keyspace@*__:{keys}"
        pubsub = self.redis.pubsub()
        await pubsub.psubscribe(pattern)  # before the first look, so no change is missed
        try:
            async with asyncio.timeout(timeout):
                while True:
                    result = await check()
                    if result:
                        return result  # type: ignore[return-value]
                    await pubsub.get_message(ignore_subscribe_messages=True, timeout=None)
        finally:
            await pubsub.punsubscribe(pattern)
            await pubsub.aclose()

    async def settled(
        self,
        session_id: str,
        *,
        after_version: int = -1,
        timeout: float = 20.0,  # noqa: ASYNC109 - asyncio.timeout inside, as slack.wait_for
    ) -> Phase:
        """The phase once the session has moved past ``after_version``, no job works on it and
        its outbox is delivered (every Slack effect of its transitions has been made, and the
        deliverer has given its lease back).

        Without ``after_version`` the caller must already have seen the job at work (one of
        its messages), otherwise the session may simply not have reached the job yet.

        A fact in Redis, not a task of this process: the click that starts a job is acked
        before the job exists, so "this process's task" may not be there yet. Woken by
        keyspace notifications (``stored``), never by a timer.
        """
        last = "nothing read yet"

        async def check() -> Phase | None:
            nonlocal last
            session = await self.store.require(session_id)
            holder = await self.store.lease_holder(session_id)
            undelivered = await self.store.outbox.length(session_id)
            # The deliverer gives its lease back after the last entry: until then it is at work.
            delivering = await self.runtime.redis.exists(session_key(session_id, "delivering"))
            last = (
                f"phase {session.phase}, version {session.version}, lease {holder}, "
                f"{undelivered} outbox entries, delivery lease {'held' if delivering else 'free'}"
            )
            if (
                session.version > after_version
                and session.phase not in WORKING
                and holder is None
                and undelivered == 0
                and not delivering
            ):
                return Phase(session.phase)
            return None

        try:
            return await self.stored(session_keys(session_id), check, timeout=timeout)
        except TimeoutError:
            raise TimeoutError(
                f"session {session_id} did not settle past version {after_version} "
                f"within {timeout}s (last seen: {last}; this bot's jobs are "
                f"{self.runtime.jobs.owner}){_job_stacks()}"
            ) from None

    async def sleep(self, seconds: float) -> None:
        """The bot's waiting, in tests: Microsoft's time moves on at once, nobody really waits
        (unless the test holds the waits)."""
        self.waited(seconds)
        held = self.held_waits
        if held is None:
            await asyncio.sleep(0)  # still a point where other tasks may run, as a real wait is
            return
        self.wait_began.set()
        await held.wait()  # ends when the test releases it, or when the waiting job is stopped

    def hold_waits(self) -> None:
        """From now on the bot's waits stay under way (as a real 15 s wait is, for a while)
        until ``release_waits``: how a test catches a job mid-wait. ``wait_began`` is set once
        one has begun."""
        self.held_waits = asyncio.Event()
        self.wait_began.clear()

    def release_waits(self) -> None:
        """End the held waits: they, and every later one, pass at once again."""
        if self.held_waits is not None:
            self.held_waits.set()
        self.held_waits = None

    def waited(self, seconds: float) -> None:
        """Record a wait of the bot's and move Microsoft's time on by it."""
        self.slept.append(seconds)
        self.microsoft_clock.advance(seconds)

    def retried(self, details: RetryDetails) -> None:
        """A retry stamina scheduled (instantly, in its testing mode): the wait it stands for
        (Microsoft's ``Retry-After``) counts as waited, as the verification's polling does."""
        self.waited(requested_wait(details))

    async def restart(self) -> None:
        """Stop this bot completely and start a new one (same Redis, same sandboxes)."""
        await self._stack.aclose()
        self._stack = contextlib.AsyncExitStack()
        await self.start_bot()

    async def crash(self) -> None:
        """Stop this bot as a kill would, and start a new one (same Redis, same sandboxes): its
        jobs stop where they are and hand nothing back, so their leases stay in Redis until
        they lapse (a graceful ``restart`` releases them)."""

        async def hands_nothing_back(session_id: str, owner: str) -> None:
            return None

        self.runtime.store.release_lease = hands_nothing_back
        await self.restart()

    async def open_start_modal(self, user_id: str = ADMIN) -> str:
        # A start modal may still be open from an earlier start (a slow look-up leaves it open,
        # saying the session has started): wait for the one this command opens.
        earlier = {view.id for view in self.slack.open_views(user_id)}
        response = await self.driver.slash_command(user_id=user_id, channel_id=CHANNEL)
        assert response.status_code == 200
        view = await self.slack.wait_for(
            lambda s: [v for v in s.open_views(user_id) if v.id not in earlier][-1:] or None
        )
        return str(view[0].id)

    async def wait_for_root(self, tenant: str, *, known: frozenset[str] = frozenset()) -> str:
        """The ts of the root message for ``tenant``, once its thread has been opened
        (``known``: messages already there, e.g. an earlier session's root and announcement)."""
        root = await self.slack.wait_for(
            lambda s: (
                [m for m in s.messages(CHANNEL) if tenant in m.text and str(m.ts) not in known]
                or None
            )
        )
        ts = str(root[-1].ts)
        await self.slack.wait_for(lambda s: self.thread(ts))
        return ts

    async def start_session(self, tenant: str = "contoso.com", user_id: str = ADMIN) -> str:
        """Run the command and the modal; return the root message's ts."""
        known = frozenset(str(m.ts) for m in self.slack.messages(CHANNEL))
        view_id = await self.open_start_modal(user_id)
        response = await self.driver.submit_view(
            user_id=user_id, view_id=view_id, values={"tenant_input": tenant}
        )
        assert self.driver.view_errors(response) == {}
        root_ts = await self.wait_for_root(tenant.lower(), known=known)
        # Under load the tenant look-up can outlast Slack's budget: the form then shows
        # "Looking up…" and is updated after the session has started. Wait for that too, so
        # the start's last Slack call has been made when a test takes its snapshot.
        await self.slack.wait_for(
            lambda s: not any("Looking up" in str(v.view) for v in s.open_views(user_id)),
            timeout=20,
        )
        return root_ts


def contoso() -> SandboxTenant:
    return standard_contoso(
        SandboxUser(GLOBAL_ADMIN_UPN, "Grace Global", roles={GLOBAL_ADMINISTRATOR}),
        SandboxUser(EXCHANGE_ADMIN_UPN, "Ezra Exchange", roles={EXCHANGE_ADMINISTRATOR}),
        SandboxUser(ROLE_ADMIN_UPN, "Priya Roles", roles={PRIVILEGED_ROLE_ADMINISTRATOR}),
        domains=["contoso.com"],
        default_domain=None,
    )


def fabrikam() -> SandboxTenant:
    return standard_fabrikam(FABRIKAM_ADMIN_UPN, "Fay Fabrikam", licensed=True)


@pytest.fixture
async def harness(
    redis: Redis,
    redis_server: RedisServer,
    tls: SandboxTLS,
    monkeypatch: pytest.MonkeyPatch,
) -> AsyncIterator[Harness]:
    # The bot trusts the sandbox's private CA the way an operator would: SSL_CERT_FILE.
    monkeypatch.setenv("SSL_CERT_FILE", str(tls.ca_file))
    slack = SandboxSlack()
    for user_id, name in (
        (ADMIN, "ada"),
        (GROUP_ADMIN, "gus"),
        (APPROVER, "april"),
        (OUTSIDER, "otto"),
        (SECOND_APPROVER, "bea"),
    ):
        slack.add_user(user_id, name)
    slack.add_usergroup("S0ADMINS", "exchange-admins", [GROUP_ADMIN])
    slack.add_usergroup("S0APPROVERS", "change-approvers", [SECOND_APPROVER])
    slack.add_channel(CHANNEL, "mail-provisioning")
    slack.add_channel("C0NOBOT", "elsewhere", bot_is_member=False)
    microsoft_clock = ManualClock(now=time.time())
    apps = vendor_apps(MAILFLOW_CLIENT_ID, MAILFLOW_SECRET, DIRSYNC_CLIENT_ID, DIRSYNC_SECRET)
    microsoft = SandboxMicrosoft([contoso(), fabrikam()], apps, clock=microsoft_clock)
    port = free_port()
    async with contextlib.AsyncExitStack() as stack:
        slack_server = await stack.enter_async_context(serve_asgi(slack.app))
        ms_server = await stack.enter_async_context(serve_asgi(microsoft.app, tls=tls))
        http = await stack.enter_async_context(httpx.AsyncClient(timeout=10))
        environment = base_environment(
            SLACK_API_URL=f"{slack_server.base_url}/api/",
            REDIS_URL=redis_server.url,
            MICROSOFT_LOGIN_URL=f"{ms_server.base_url}/login",
            MICROSOFT_GRAPH_URL=f"{ms_server.base_url}/graph",
            MICROSOFT_EXCHANGE_URL=f"{ms_server.base_url}/exchange",
            PROVISION_ADMINS=f"{ADMIN},S0ADMINS",
            PROVISION_APPROVERS=f"{APPROVER},S0APPROVERS",
            PUBLIC_URL=f"http://127.0.0.1:{port}",
        )
        driver = SlackDriver(
            sandbox=slack,
            sandbox_base_url=slack_server.base_url,
            events_url="",
            signing_secret=SIGNING_SECRET,
            http=http,
        )
        harness = Harness(
            slack=slack,
            slack_url=slack_server.base_url,
            microsoft=microsoft,
            microsoft_url=ms_server.base_url,
            driver=driver,
            http=http,
            runtime=None,  # type: ignore[arg-type]  # set by start_bot
            base_url="",
            clock=Clock(base=time.time),
            environment=environment,
            port=port,
            microsoft_clock=microsoft_clock,
            redis=redis,
        )
        # settled() waits on keyspace notifications instead of polling.
        await redis.config_set("notify-keyspace-events", "KA")
        stack.enter_context(recording_retries(harness.retried))
        await harness.start_bot()
        try:
            yield harness
        finally:
            await harness._stack.aclose()


def metric(exposition: str, name: str, **labels: str) -> float | None:
    """The value of sample ``name`` with exactly ``labels`` in a ``/metrics`` answer, if any."""
    for family in text_string_to_metric_families(exposition):
        for sample in family.samples:
            if sample.name == name and sample.labels == labels:
                return float(sample.value)
    return None


async def ephemeral_for(harness: Harness, user_id: str, containing: str) -> Any:
    """Wait for the ephemeral message to ``user_id`` that contains ``containing``."""
    found = await harness.slack.wait_for(
        lambda s: [e for e in s.ephemerals if e.user == user_id and containing in e.text] or None
    )
    return found[-1]


@contextlib.asynccontextmanager
async def every_slot_taken(inflight: InFlight) -> AsyncIterator[None]:
    """Inside: every slot for acked work is taken, once the work running now (a session's
    start, say) has ended and given its slot back, so no acked work can start; they are given
    back on the way out."""
    await inflight.drain(grace_seconds=10)
    taken = inflight.take_every_slot()
    assert taken == ACKED_WORK_AT_ONCE
    try:
        yield
    finally:
        inflight.give_back(taken)

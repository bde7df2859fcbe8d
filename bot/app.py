"""The app factory: one ``Runtime`` holds the Bolt app, the web app and their shared clients.

Tests, the CLI and the demo all build the product through ``build_runtime``; nothing here starts
serving (``serve``/``socket`` in ``bot.cli`` do that through uvicorn and Socket Mode).
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol

import httpx
from slack_bolt.async_app import AsyncApp
from slack_sdk.http_retry.builtin_async_handlers import (
    AsyncConnectionErrorRetryHandler,
    AsyncRateLimitErrorRetryHandler,
)
from slack_sdk.web.async_client import AsyncWebClient
from starlette.applications import Starlette

from bot.config import Settings, sealing_key_material
from bot.jobs import ORPHAN_CHECK_SECONDS, Jobs
from bot.microsoft.access import MicrosoftAccess, microsoft_app, microsoft_apps
from bot.microsoft.identity import MicrosoftApp
from bot.microsoft.sealing import Sealer
from bot.microsoft.tenants import TenantDirectory
from bot.ops.inflight import InFlight
from bot.ops.metrics import Metrics
from bot.session.access import AccessPolicy
from bot.session.service import Provisioner
from bot.steps.consent.model import ConsentApp, ConsentTarget, ConsentTargets
from bot.steps.consent.step import ConsentDesk
from bot.steps.mailflow.step import MailFlowDesk
from bot.steps.role.step import RoleStep, RoleStepSettings
from bot.steps.table import StepServices, build_steps
from bot.web.callback import MicrosoftReturns
from bot.workflow import Session
from state.connection import RedisClient, connect
from state.oauth import OAuthStates
from state.sessions import SessionStore

__all__ = ["Runtime", "Wire", "build_runtime"]

logger = logging.getLogger(__name__)


@dataclass
class Runtime:
    """Everything one process needs; ``aclose`` releases the connections."""

    settings: Settings
    bolt: AsyncApp
    web: Starlette
    slack: AsyncWebClient
    redis: RedisClient
    http: httpx.AsyncClient
    store: SessionStore[Session]
    access: AccessPolicy
    tenants: TenantDirectory
    provisioner: Provisioner
    consents: ConsentDesk
    role_step: RoleStep
    callbacks: MicrosoftReturns
    metrics: Metrics
    inflight: InFlight
    jobs: Jobs
    mailflow_app: MicrosoftApp
    dirsync_app: MicrosoftApp
    mailflow: MailFlowDesk  # step 4's plan, Submit and apply job

    async def aclose(self) -> None:
        """Let acked work finish (bounded), hand background jobs back, close the connections."""
        await self.inflight.drain(grace_seconds=20)
        await self.jobs.stop()
        await self.mailflow_app.aclose()
        await self.dirsync_app.aclose()
        await self.http.aclose()
        await self.redis.aclose()


class Wire(Protocol):
    """Registers the Slack listeners on ``runtime.bolt`` and returns the web app serving them.

    ``handlers.wire`` is the one used everywhere; it is passed in because ``bot`` never imports
    ``handlers`` (the listeners depend on the product, not the other way round).
    """

    def __call__(
        self,
        runtime: Runtime,
        *,
        sweep_interval_seconds: float | None,
        orphan_check_seconds: float | None,
    ) -> Starlette: ...


def build_runtime(
    settings: Settings,
    *,
    wire: Wire,
    clock: Callable[[], float] = time.time,
    sweep_interval_seconds: float | None = 60.0,
    orphan_check_seconds: float | None = ORPHAN_CHECK_SECONDS,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    monotonic: Callable[[], float] = time.monotonic,
) -> Runtime:
    """Wire the product together. ``sweep_interval_seconds=None`` turns the sweep timer off
    (tests drive ``provisioner.expire_idle`` themselves), ``orphan_check_seconds=None`` the
    frequent look for jobs whose process died (tests call ``jobs.resume_orphans``); ``sleep``
    and ``monotonic`` pace verification's wait for the role to replicate (tests pass a sleep
    that moves the sandbox's clock instead). Retries of Microsoft's HTTP calls are stamina's (its
    testing mode in tests)."""
    slack = AsyncWebClient(
        token=settings.slack_bot_token.reveal(),
        base_url=settings.slack_api_url,
        retry_handlers=[
            AsyncConnectionErrorRetryHandler(max_retry_count=2),
            AsyncRateLimitErrorRetryHandler(max_retry_count=2),
        ],
    )
    # Every HTTP request is verified. Without a signing secret (Socket Mode, where Slack's
    # requests arrive over the websocket), the web app does not serve /slack/events, and the
    # secret Bolt holds is random: nothing sent over HTTP could carry a valid signature.
    configured = settings.slack_signing_secret
    bolt = AsyncApp(
        client=slack,
        signing_secret=configured.reveal() if configured else secrets.token_urlsafe(32),
        request_verification_enabled=True,
        process_before_response=False,
        logger=logging.getLogger("bot.bolt"),
    )
    sentinel_password = settings.redis_sentinel_password
    redis = connect(
        settings.redis_url.reveal(),
        cluster=settings.redis_cluster,
        sentinels=settings.redis_sentinels,
        sentinel_master=settings.redis_sentinel_master,
        sentinel_password=sentinel_password.reveal() if sentinel_password else None,
    )
    store = SessionStore(
        redis,
        decode=Session.from_json,
        active_ttl=settings.session_idle_seconds * 2,
        retention_ttl=settings.audit_retention_seconds,
    )
    http = httpx.AsyncClient(timeout=httpx.Timeout(10.0, connect=5.0))
    metrics = Metrics()
    consent_targets = ConsentTargets(
        login_url=settings.microsoft_login_url,
        redirect_uri=settings.callback_url,
        apps={
            ConsentApp.MAILFLOW: ConsentTarget(
                settings.mailflow_app.client_id, settings.microsoft_exchange_url
            ),
            ConsentApp.DIRSYNC: ConsentTarget(
                settings.dirsync_app.client_id, settings.microsoft_graph_url
            ),
        },
    )
    mailflow_app, dirsync_app = microsoft_apps(settings)
    access = AccessPolicy(slack, admins=settings.admins, approvers=settings.approvers, clock=clock)
    services = StepServices(
        consent=consent_targets,
        role=RoleStepSettings(
            mailflow_app_id=settings.mailflow_app.client_id,
            graph_url=settings.microsoft_graph_url,
            redirect_uri=settings.callback_url,
            remind_after_seconds=settings.role_request_remind_seconds,
            expire_after_seconds=settings.role_request_expire_seconds,
        ),
        access=access,
        http=http,
        microsoft=MicrosoftAccess(
            settings=settings, mailflow=mailflow_app, dirsync=dirsync_app, http=http
        ),
        new_dirsync_app=lambda: microsoft_app(settings, settings.dirsync_app),
        sealer=Sealer(sealing_key_material(settings)),
        sleep=sleep,
        monotonic=monotonic,
    )
    provisioner = Provisioner(
        store=store,
        slack=slack,
        clock=clock,
        idle_seconds=settings.session_idle_seconds,
        oauth=OAuthStates(redis),
        steps=lambda built: build_steps(built, services),
        notify_channel=settings.notify_channel,
    )
    steps = provisioner.steps
    runtime = Runtime(
        settings=settings,
        bolt=bolt,
        web=Starlette(),
        slack=slack,
        redis=redis,
        http=http,
        store=store,
        access=access,
        tenants=TenantDirectory(http, settings.microsoft_login_url),
        provisioner=provisioner,
        consents=steps.find(ConsentDesk),
        role_step=steps.find(RoleStep),
        mailflow=steps.find(MailFlowDesk),
        callbacks=MicrosoftReturns(provisioner),
        metrics=metrics,
        inflight=InFlight(),
        jobs=provisioner.jobs,
        mailflow_app=mailflow_app,
        dirsync_app=dirsync_app,
    )
    runtime.web = wire(
        runtime,
        sweep_interval_seconds=sweep_interval_seconds,
        orphan_check_seconds=orphan_check_seconds,
    )
    return runtime

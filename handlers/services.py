"""What the listeners use, and how they reach it: Bolt's ``context``.

The global middleware (``handlers.middleware.RequestScope``) puts one ``Services`` into the
context of every request; a listener asks for ``context`` and calls ``services(context)``. A test
calls a listener with a context it built the same way (``AsyncBoltContext(services=...)``).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from slack_bolt.context.async_context import AsyncBoltContext
from slack_sdk.web.async_client import AsyncWebClient

from bot.jobs import Jobs
from bot.microsoft.tenants import TenantDirectory
from bot.ops.inflight import InFlight
from bot.ops.metrics import Metrics
from bot.session.access import AccessPolicy
from bot.session.service import Provisioner
from bot.steps.consent.step import ConsentDesk
from bot.steps.mailflow.step import MailFlowDesk
from bot.steps.role.step import RoleStep
from bot.workflow import Session
from handlers.reply import Replies, ReplyOrigins
from state.sessions import SessionStore

if TYPE_CHECKING:
    from bot.app import Runtime

__all__ = ["CONTEXT_KEY", "Services", "services"]

CONTEXT_KEY = "services"


@dataclass(frozen=True)
class Services:
    """The product as the listeners see it: who may act, the session service, the steps, the
    Slack client (for views), and the process's own bookkeeping (metrics, work in flight)."""

    access: AccessPolicy
    provisioner: Provisioner
    consents: ConsentDesk
    role_step: RoleStep
    mailflow: MailFlowDesk
    jobs: Jobs  # taken over by a click when their process died (handlers.reply)
    tenants: TenantDirectory
    slack: AsyncWebClient
    store: SessionStore[Session]  # the duplicate filter's claims
    metrics: Metrics
    inflight: InFlight
    tenant_lookup_budget_seconds: float
    # Refusals are recorded and answered after the ack, a few at a time: a flood of refused
    # clicks must not take every Redis connection (past the pool's 100, commands wait).
    refusal_slots: asyncio.Semaphore = field(default_factory=lambda: asyncio.Semaphore(8))
    # Replies to response URLs: only to Slack's (the middleware refuses a request carrying
    # another), over the Slack client's connection pool.
    replies: Replies = field(
        default_factory=lambda: Replies(
            ReplyOrigins.for_api("https://slack.com/api/"), pool=lambda: None
        )
    )

    async def take_over_job(self, session: Session) -> bool:
        """Launch the session's job here if its process died (``Jobs.take_over``)."""
        return await self.jobs.take_over(session, now=self.provisioner.now())

    @classmethod
    def of(cls, runtime: Runtime) -> Services:
        return cls(
            access=runtime.access,
            provisioner=runtime.provisioner,
            consents=runtime.consents,
            role_step=runtime.role_step,
            mailflow=runtime.mailflow,
            jobs=runtime.jobs,
            tenants=runtime.tenants,
            slack=runtime.slack,
            store=runtime.store,
            metrics=runtime.metrics,
            inflight=runtime.inflight,
            tenant_lookup_budget_seconds=runtime.settings.tenant_lookup_budget_seconds,
            replies=Replies(
                ReplyOrigins.for_api(runtime.settings.slack_api_url),
                pool=lambda: runtime.slack.session,
            ),
        )


def services(context: AsyncBoltContext) -> Services:
    """The request's ``Services``, put there by the global middleware."""
    found = context.get(CONTEXT_KEY)
    if not isinstance(found, Services):
        raise TypeError("no Services in the Bolt context: is handlers.wire's middleware on?")
    return found

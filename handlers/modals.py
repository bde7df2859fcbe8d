"""The start form's submission (admins only, see ``handlers.wire``): check the tenant, then start
(or point to) the session.

A modal's field errors can only be returned in the ack, and Slack waits at most 3 seconds for it.
So the tenant's syntax is checked at once, and Microsoft is given ``tenant_lookup_budget_seconds``
to say whether the tenant exists: within that time an unknown tenant becomes a field error; past
it the modal is switched to a "checking" view and the look-up finishes after the ack.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

from slack_bolt.context.ack.async_ack import AsyncAck
from slack_bolt.context.async_context import AsyncBoltContext

from bot.microsoft.discovery import normalise_tenant_input
from bot.microsoft.errors import MicrosoftError, MicrosoftUnavailable, UnknownTenant
from bot.session.service import Busy, Started
from bot.session.views import (
    SCOPE_ACTION,
    SCOPE_BLOCK,
    TENANT_ACTION,
    TENANT_BLOCK,
    busy_message,
    checking_modal,
    notice_modal,
    start_modal,
    started_modal,
)
from bot.workflow import Scope
from handlers.services import services

__all__ = ["start_submitted", "tenant_problem"]

logger = logging.getLogger(__name__)


def tenant_problem(error: MicrosoftError, tenant: str) -> str:
    """What to tell the admin when Microsoft could not confirm the tenant."""
    if isinstance(error, UnknownTenant):
        return (
            f"Microsoft knows no tenant called {tenant}. Check the spelling, or use the tenant "
            "ID from the Entra admin center (Overview page)."
        )
    if isinstance(error, MicrosoftUnavailable):
        return "Microsoft did not answer. Nothing was started; press Start again in a minute."
    return f"Microsoft could not confirm {tenant} ({type(error).__name__}). Press Start again."


async def start_submitted(
    ack: AsyncAck, body: dict[str, Any], view: dict[str, Any], context: AsyncBoltContext
) -> None:
    """The start form: field errors in the ack while Microsoft answers in time, then the
    session (or a pointer to the tenant's existing one)."""
    found = services(context)
    provisioner = found.provisioner
    user_id = body["user"]["id"]
    values = view["state"]["values"]
    typed = values[TENANT_BLOCK][TENANT_ACTION].get("value") or ""
    chosen = values.get(SCOPE_BLOCK, {}).get(SCOPE_ACTION, {}).get("selected_option") or {}
    scope = Scope(chosen.get("value") or Scope.FULL.value)
    metadata: dict[str, Any] = json.loads(view.get("private_metadata") or "{}")
    try:
        tenant = normalise_tenant_input(typed)
    except ValueError as invalid:
        await ack(response_action="errors", errors={TENANT_BLOCK: str(invalid)})
        return
    lookup = asyncio.create_task(found.tenants.resolve(tenant))
    finished, _ = await asyncio.wait({lookup}, timeout=found.tenant_lookup_budget_seconds)
    if finished:
        try:
            identity = lookup.result()
        except MicrosoftError as error:
            await ack(
                response_action="errors", errors={TENANT_BLOCK: tenant_problem(error, tenant)}
            )
            return
        await ack()
    else:
        await ack(response_action="update", view=checking_modal(tenant))
        try:
            identity = await lookup
        except MicrosoftError as error:
            await found.slack.views_update(
                view_id=view["id"],
                view=start_modal(
                    private_metadata=view.get("private_metadata") or "{}",
                    scope=scope,
                    tenant_value=typed,
                    problem=tenant_problem(error, tenant),
                ),
            )
            return
    outcome = await provisioner.start(
        user_id=user_id,
        channel_id=metadata["channel"],
        tenant=identity,
        label=identity.queried_as,
        scope=scope,
    )
    if isinstance(outcome, Started):
        if not finished:
            await found.slack.views_update(view_id=view["id"], view=started_modal(outcome.session))
        return
    problem = (
        busy_message(outcome.session, outcome.permalink)
        if isinstance(outcome, Busy)
        else outcome.message
    )
    await found.replies.ephemeral(metadata.get("response_url"), problem)
    if not finished:
        await found.slack.views_update(view_id=view["id"], view=notice_modal(problem))

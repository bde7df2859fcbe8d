"""The App Home tab: the sessions the viewer can act on, with links to their threads."""

from __future__ import annotations

from typing import Any

from slack_bolt.context.ack.async_ack import AsyncAck
from slack_bolt.context.async_context import AsyncBoltContext

from bot.session.access import AccessCheckFailed
from handlers.services import services

__all__ = ["home_opened"]


async def home_opened(ack: AsyncAck, event: dict[str, Any], context: AsyncBoltContext) -> None:
    # Bolt has acked the event already; acking again here counts this work as in flight.
    await ack()
    if event.get("tab", "home") != "home":
        return
    found = services(context)
    user_id = event["user"]
    try:
        is_admin = await found.access.is_admin(user_id)
        is_approver = await found.access.is_approver(user_id)
    except AccessCheckFailed:
        is_admin = is_approver = False
    view = await found.provisioner.home(is_admin=is_admin, is_approver=is_approver)
    await found.slack.views_publish(user_id=user_id, view=view)

"""Buttons of the root message and of steps 1, 3 and 4's first half: consent links, Verify,
Cancel. Who may click is ``handlers.wire``'s business (``handlers.access``)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from slack_bolt.context.ack.async_ack import AsyncAck
from slack_bolt.context.async_context import AsyncBoltContext
from slack_bolt.context.respond.async_respond import AsyncRespond

from bot.blocks import Message
from bot.steps.consent.model import ConsentApp
from bot.workflow import Event, EventKind
from handlers.reply import answer_for_session, say
from handlers.services import Services, services

__all__ = ["cancel_clicked", "consent_link_opened", "consent_link_renewed", "verify_clicked"]


async def consent_link_opened(
    ack: AsyncAck, body: dict[str, Any], context: AsyncBoltContext
) -> None:
    """A URL button opens the browser by itself; Slack still wants the click acked."""
    await ack()
    await services(context).consents.opened(body["actions"][0]["value"], body["user"]["id"])


async def consent_link_renewed(
    ack: AsyncAck, body: dict[str, Any], respond: AsyncRespond, context: AsyncBoltContext
) -> None:
    """*New link*: a fresh consent link in place of the expired or used one."""
    await ack()
    session_id, _, app = body["actions"][0]["value"].partition(":")
    problem = await services(context).consents.renew(
        session_id,
        ConsentApp(app),
        channel_id=body["container"]["channel_id"],
        message_ts=body["container"]["message_ts"],
    )
    await say(respond, problem)


def _move(found: Services, kind: EventKind) -> Callable[[str, str], Awaitable[Message | None]]:
    """The work of a button that only moves the session (its value is the session id)."""

    async def move(session_id: str, user_id: str) -> Message | None:
        provisioner = found.provisioner
        await provisioner.handle(session_id, Event(kind, actor=user_id, at=provisioner.now()))
        return None

    return move


async def verify_clicked(
    ack: AsyncAck, body: dict[str, Any], respond: AsyncRespond, context: AsyncBoltContext
) -> None:
    await ack()
    found = services(context)
    await answer_for_session(
        body, respond, _move(found, EventKind.VERIFY), take_over=found.take_over_job
    )


async def cancel_clicked(
    ack: AsyncAck, body: dict[str, Any], respond: AsyncRespond, context: AsyncBoltContext
) -> None:
    await ack()
    found = services(context)
    await answer_for_session(
        body, respond, _move(found, EventKind.CANCEL), take_over=found.take_over_job
    )

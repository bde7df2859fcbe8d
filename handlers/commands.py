"""``/provision-inline``: one listener per sub-command (``handlers.wire`` tells them apart with
``asked_for``): help, status, cancel, and (no argument, or ``upgrade``) the start form."""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from slack_bolt.context.ack.async_ack import AsyncAck
from slack_bolt.context.async_context import AsyncBoltContext
from slack_bolt.context.respond.async_respond import AsyncRespond
from slack_sdk.errors import SlackApiError

from bot.blocks import Message
from bot.session.commands import CommandKind, parse_command
from bot.session.views import help_message, notice, refused_transition_message, start_modal
from bot.workflow import Event, EventKind, Scope, TransitionNotAllowed
from handlers import reply
from handlers.services import services

__all__ = [
    "COMMAND",
    "asked_for",
    "cancel_session",
    "open_start_form",
    "show_help",
    "show_status",
]

logger = logging.getLogger(__name__)

COMMAND = "/provision-inline"


def asked_for(*kinds: CommandKind) -> Callable[..., Awaitable[bool]]:
    """A listener matcher: the command's text names one of ``kinds``."""

    async def matches(body: dict[str, Any]) -> bool:
        return parse_command(body.get("text") or "").kind in kinds

    matches.__name__ = matches.__qualname__ = "asked_for_" + "_or_".join(kinds)
    return matches


async def _say(respond: AsyncRespond, message: Message) -> None:
    await reply.say(respond, message, replace_original=None)


async def show_help(
    ack: AsyncAck, command: dict[str, Any], respond: AsyncRespond, context: AsyncBoltContext
) -> None:
    """``help``, or a word the bot does not know (then the help, after saying so)."""
    await ack()
    admins = services(context).access.admins
    parsed = parse_command(command.get("text") or "")
    if parsed.kind is CommandKind.UNKNOWN:
        unknown = notice(f"I don't know `{parsed.argument}`. Here is what I do know:")
        usage = help_message(admins)
        await _say(respond, Message(f"{unknown.text}\n{usage.text}", unknown.blocks + usage.blocks))
        return
    await _say(respond, help_message(admins))


async def show_status(
    ack: AsyncAck, command: dict[str, Any], respond: AsyncRespond, context: AsyncBoltContext
) -> None:
    """``status``: the channel's sessions, their checklists and newest audit entries."""
    await ack()
    await _say(respond, await services(context).provisioner.status(command["channel_id"]))


async def cancel_session(
    ack: AsyncAck, command: dict[str, Any], respond: AsyncRespond, context: AsyncBoltContext
) -> None:
    """``cancel [tenant]``: the channel's one active session, or the one named."""
    await ack()
    provisioner = services(context).provisioner
    argument = parse_command(command.get("text") or "").argument
    sessions = await provisioner.sessions_in_channel(command["channel_id"])
    wanted = argument.strip().lower()
    if wanted:
        sessions = [s for s in sessions if wanted in (s.tenant_label.lower(), s.tenant_id.lower())]
    if not sessions:
        what = f"for `{argument}` " if wanted else ""
        await _say(
            respond,
            notice(
                f"No active provisioning session {what}in this channel, so nothing was "
                "cancelled. `/provision-inline status` lists the active ones."
            ),
        )
        return
    if len(sessions) > 1:
        names = ", ".join(f"`{s.tenant_label}`" for s in sessions)
        await _say(
            respond,
            notice(
                f"Several sessions are active here ({names}). Name the one to cancel: "
                "`/provision-inline cancel <tenant>`. Nothing was cancelled."
            ),
        )
        return
    session = sessions[0]
    event = Event(EventKind.CANCEL, actor=command["user_id"], at=provisioner.now())
    try:
        await provisioner.handle(session.id, event)
    except TransitionNotAllowed as refused:
        await _say(respond, refused_transition_message(refused))
        return
    await _say(respond, notice(f"Cancelled the provisioning of *{session.tenant_label}*."))


async def open_start_form(
    ack: AsyncAck, command: dict[str, Any], respond: AsyncRespond, context: AsyncBoltContext
) -> None:
    """No argument: the start form; ``upgrade``: the same form, scope "add outbound"."""
    await ack()
    upgrade = parse_command(command.get("text") or "").kind is CommandKind.UPGRADE
    metadata = json.dumps(
        {"channel": command["channel_id"], "response_url": command.get("response_url")}
    )
    try:
        await services(context).slack.views_open(
            trigger_id=command["trigger_id"],
            view=start_modal(
                private_metadata=metadata, scope=Scope.UPGRADE if upgrade else Scope.FULL
            ),
        )
    except SlackApiError as error:
        if error.response.get("error") not in ("expired_trigger_id", "invalid_trigger_id"):
            raise
        await _say(
            respond,
            notice(
                "Slack closed the window for opening the form before I could open it. "
                "Run `/provision-inline` again."
            ),
        )

"""``/provision-inline``: help, status, cancel, and (no argument) the start modal."""

from __future__ import annotations

import json
import logging
from typing import TYPE_CHECKING, Any

from slack_bolt.context.ack.async_ack import AsyncAck
from slack_bolt.context.respond.async_respond import AsyncRespond
from slack_sdk.errors import SlackApiError

from bot.blocks import Message
from bot.session.access import AccessCheckFailed
from bot.session.commands import Command, CommandKind, parse_command
from bot.session.views import (
    help_message,
    notice,
    refusal_message,
    refused_transition_message,
    start_modal,
)
from bot.workflow import Event, EventKind, Scope, TransitionNotAllowed
from handlers import reply

if TYPE_CHECKING:
    from bot.app import Runtime

logger = logging.getLogger(__name__)

COMMAND = "/provision-inline"


def register(runtime: Runtime) -> None:
    access = runtime.access
    provisioner = runtime.provisioner

    async def say(respond: AsyncRespond, message: Message) -> None:
        await reply.say(respond, message, replace_original=None)

    async def allowed(respond: AsyncRespond, user_id: str, *, action: str, approvers: bool) -> bool:
        try:
            if await access.is_admin(user_id):
                return True
            if approvers and await access.is_approver(user_id):
                return True
        except AccessCheckFailed as failure:
            await say(
                respond,
                notice(
                    f":warning: I could not check who belongs to {failure.group_id} "
                    f"(Slack said `{failure.slack_error}`), so nothing was done. Try again in a "
                    "minute; if it persists, check the bot's `usergroups:read` scope."
                ),
            )
            return False
        allowed_principals = access.admins + (access.approvers if approvers else ())
        await say(respond, refusal_message(action, allowed_principals))
        return False

    async def start(command: dict[str, Any], respond: AsyncRespond, upgrade: bool = False) -> None:
        metadata = json.dumps(
            {"channel": command["channel_id"], "response_url": command.get("response_url")}
        )
        scope = Scope.UPGRADE if upgrade else Scope.FULL
        try:
            await runtime.slack.views_open(
                trigger_id=command["trigger_id"],
                view=start_modal(private_metadata=metadata, scope=scope),
            )
        except SlackApiError as error:
            if error.response.get("error") not in ("expired_trigger_id", "invalid_trigger_id"):
                raise
            await say(
                respond,
                notice(
                    "Slack closed the window for opening the form before I could open it. "
                    "Run `/provision-inline` again."
                ),
            )

    async def cancel(parsed: Command, user_id: str, channel_id: str, respond: AsyncRespond) -> None:
        sessions = await provisioner.sessions_in_channel(channel_id)
        wanted = parsed.argument.strip().lower()
        if wanted:
            sessions = [
                s for s in sessions if wanted in (s.tenant_label.lower(), s.tenant_id.lower())
            ]
        if not sessions:
            what = f"for `{parsed.argument}` " if wanted else ""
            await say(
                respond,
                notice(
                    f"No active provisioning session {what}in this channel, so nothing was "
                    "cancelled. `/provision-inline status` lists the active ones."
                ),
            )
            return
        if len(sessions) > 1:
            names = ", ".join(f"`{s.tenant_label}`" for s in sessions)
            await say(
                respond,
                notice(
                    f"Several sessions are active here ({names}). Name the one to cancel: "
                    "`/provision-inline cancel <tenant>`. Nothing was cancelled."
                ),
            )
            return
        session = sessions[0]
        event = Event(EventKind.CANCEL, actor=user_id, at=provisioner.now())
        try:
            await provisioner.handle(session.id, event)
        except TransitionNotAllowed as refused:
            await say(respond, refused_transition_message(refused))
            return
        await say(respond, notice(f"Cancelled the provisioning of *{session.tenant_label}*."))

    @runtime.bolt.command(COMMAND)
    @runtime.inflight.track
    async def provision_inline(
        ack: AsyncAck, command: dict[str, Any], respond: AsyncRespond
    ) -> None:
        await ack()
        parsed = parse_command(command.get("text") or "")
        user_id = command["user_id"]
        channel_id = command["channel_id"]
        if parsed.kind is CommandKind.HELP:
            await say(respond, help_message(access.admins))
        elif parsed.kind is CommandKind.UNKNOWN:
            unknown = notice(f"I don't know `{parsed.argument}`. Here is what I do know:")
            usage = help_message(access.admins)
            await say(
                respond, Message(f"{unknown.text}\n{usage.text}", unknown.blocks + usage.blocks)
            )
        elif parsed.kind is CommandKind.STATUS:
            if await allowed(respond, user_id, action="see provisioning status", approvers=True):
                await say(respond, await provisioner.status(channel_id))
        elif parsed.kind is CommandKind.CANCEL:
            if await allowed(respond, user_id, action="cancel provisioning", approvers=False):
                await cancel(parsed, user_id, channel_id, respond)
        elif parsed.kind is CommandKind.UPGRADE:
            if await allowed(respond, user_id, action="start an upgrade", approvers=False):
                await start(command, respond, upgrade=True)
        elif await allowed(respond, user_id, action="start provisioning", approvers=False):
            await start(command, respond)

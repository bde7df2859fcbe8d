"""Ephemeral replies (through ``respond`` or a ``response_url``: they work even where the bot is not
a member), and the admin check the buttons share."""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from slack_bolt.context.respond.async_respond import AsyncRespond
from slack_sdk.webhook.async_client import AsyncWebhookClient

from bot.blocks import Message
from bot.session.access import AccessCheckFailed, AccessPolicy
from bot.session.views import notice, refusal_message, refused_transition_message
from bot.workflow import TransitionNotAllowed
from state.sessions import SessionGone

if TYPE_CHECKING:
    from bot.app import Runtime

logger = logging.getLogger(__name__)

SESSION_GONE = notice(
    "This session no longer exists (it ended long ago and its record expired). "
    "Start a new one with `/provision-inline`."
)


async def say(
    respond: AsyncRespond, message: Message | None, *, replace_original: bool | None = False
) -> None:
    """Tell the one user who acted (ephemeral); nothing when ``message`` is None."""
    if message is None:
        return
    await respond(
        text=message.text,
        blocks=message.blocks,
        response_type="ephemeral",
        replace_original=replace_original,
    )


async def is_admin(access: AccessPolicy, user_id: str) -> bool:
    """Whether ``user_id`` is an admin; not when Slack would not say who is in a user group."""
    try:
        return await access.is_admin(user_id)
    except AccessCheckFailed:
        return False


async def as_admin(
    runtime: Runtime,
    body: dict[str, Any],
    respond: AsyncRespond,
    action: str,
    work: Callable[[str, str], Awaitable[Message | None]],
) -> None:
    """Run ``work(session_id, user_id)`` for an admin's button (its value is the session id) and
    tell the user its answer; tell anyone else who may (and record the refusal in the audit)."""
    user_id = body["user"]["id"]
    session_id = body["actions"][0]["value"]
    if not await is_admin(runtime.access, user_id):
        await runtime.provisioner.record_refusal(session_id, user_id, action)
        await say(respond, refusal_message(action, runtime.access.admins))
        return
    try:
        answer = await work(session_id, user_id)
    except TransitionNotAllowed as refused:
        answer = refused_transition_message(refused)
    except SessionGone:
        answer = SESSION_GONE
    await say(respond, answer)


def response_url_of(body: dict[str, Any]) -> str | None:
    """The request's own response_url, or the one a modal carried over from its command."""
    url = body.get("response_url")
    if isinstance(url, str) and url:
        return url
    metadata = (body.get("view") or {}).get("private_metadata")
    if metadata:
        try:
            carried = json.loads(metadata).get("response_url")
        except (ValueError, AttributeError):
            return None
        return carried if isinstance(carried, str) and carried else None
    return None


async def reply_ephemeral(response_url: str | None, message: Message) -> bool:
    """Send ``message`` to the one user who acted; False if Slack would not take it."""
    if not response_url:
        return False
    answer = await AsyncWebhookClient(response_url).send(
        text=message.text,
        blocks=message.blocks,
        response_type="ephemeral",
        replace_original=False,
    )
    if answer.status_code != 200:
        logger.warning("response_url refused the reply: HTTP %s", answer.status_code)
        return False
    return True

"""Who may act: one listener middleware, attached where ``handlers.wire`` registers a listener.

``require_admin(action)`` lets ``PROVISION_ADMINS`` through, ``require_approver(action)``
``PROVISION_APPROVERS``, ``require_admin_or_approver(action)`` either. Anyone else gets the ack
at once (nothing happens), then an ephemeral reply naming who may, and the refusal is recorded
in the session's capped refusal stream, every time (a slash command or a start form has no
session yet: it is logged, not recorded).

The check runs before the listener, so before its ack: it is bounded (user groups are listed by
Slack, cached for a minute), and the reply and the record are made after the ack.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from slack_bolt.context.ack.async_ack import AsyncAck
from slack_bolt.context.async_context import AsyncBoltContext
from slack_bolt.context.respond.async_respond import AsyncRespond
from slack_bolt.response import BoltResponse

from bot.blocks import Message
from bot.session.access import AccessCheckFailed
from bot.session.views import notice, refusal_message
from handlers.reply import reply_ephemeral, response_url_of, say, session_of
from handlers.services import Services, services

__all__ = [
    "ACCESS_CHECK_BUDGET_SECONDS",
    "ListenerMiddleware",
    "require_admin",
    "require_admin_or_approver",
    "require_approver",
    "user_of",
]

logger = logging.getLogger(__name__)

ACCESS_CHECK_BUDGET_SECONDS = 2.0  # Slack waits 3 s for the ack, and the check comes first

ListenerMiddleware = Callable[..., Awaitable[BoltResponse | None]]


def user_of(body: dict[str, Any]) -> str:
    """Who sent the request: a slash command's ``user_id`` or an interaction's ``user.id``."""
    if "user_id" in body:
        return str(body["user_id"])
    return str(body["user"]["id"])


def require_admin(action: str) -> ListenerMiddleware:
    """Only admins may ``action`` (e.g. "cancel provisioning")."""
    return _require(action, admins=True, approvers=False)


def require_approver(action: str) -> ListenerMiddleware:
    """Only approvers may ``action`` (e.g. "acknowledge role requests")."""
    return _require(action, admins=False, approvers=True)


def require_admin_or_approver(action: str) -> ListenerMiddleware:
    """Admins and approvers may ``action`` (e.g. "see provisioning status")."""
    return _require(action, admins=True, approvers=True)


def _could_not_check(failure: AccessCheckFailed | None) -> Message:
    if failure is None:
        cause = "Slack did not say in time who belongs to your user groups"
    else:
        cause = (
            f"I could not check who belongs to {failure.group_id} "
            f"(Slack said `{failure.slack_error}`)"
        )
    return notice(
        f":warning: {cause}, so nothing was done. Try again in a minute; if it persists, check "
        "the bot's `usergroups:read` scope."
    )


def _require(action: str, *, admins: bool, approvers: bool) -> ListenerMiddleware:
    async def require(
        ack: AsyncAck,
        body: dict[str, Any],
        context: AsyncBoltContext,
        respond: AsyncRespond | None,
        next: Callable[[], Awaitable[None]],
    ) -> BoltResponse | None:
        found = services(context)
        user_id = user_of(body)
        reason: str | None = None
        try:
            async with asyncio.timeout(ACCESS_CHECK_BUDGET_SECONDS):
                allowed = (admins and await found.access.is_admin(user_id)) or (
                    approvers and await found.access.is_approver(user_id)
                )
        except AccessCheckFailed as failure:
            answer, reason = _could_not_check(failure), f"could not list {failure.group_id}"
        except TimeoutError:
            answer, reason = _could_not_check(None), "user groups not listed in time"
        else:
            if allowed:
                await next()
                return None
            principals: Sequence[str] = (found.access.admins if admins else ()) + (
                found.access.approvers if approvers else ()
            )
            answer = refusal_message(action, principals)
        given = await ack()
        found.inflight.spawn(
            _refuse(found, body, respond, user_id, action, answer, reason),
            name=f"refusal: {action}",
        )
        return given

    who = "admin_or_approver" if admins and approvers else "admin" if admins else "approver"
    require.__name__ = require.__qualname__ = f"require_{who}({action!r})"
    return require


async def _refuse(
    found: Services,
    body: dict[str, Any],
    respond: AsyncRespond | None,
    user_id: str,
    action: str,
    answer: Message,
    reason: str | None,
) -> None:
    """Record the refusal (when it concerns a session), then tell the user."""
    async with found.refusal_slots:
        session_id = session_of(body)
        if session_id is not None:
            await found.provisioner.record_refusal(session_id, user_id, action, reason=reason)
        else:
            logger.info("refused %s to %s (no session to record it in)", action, user_id)
        if respond is not None:
            # A slash command's response_url takes no replace_original; an interaction's
            # keeps the clicked message as it is.
            await say(respond, answer, replace_original=None if "command" in body else False)
        else:
            await reply_ephemeral(response_url_of(body), answer)

"""Who may act: one listener middleware, attached where ``handlers.wire`` registers a listener.

``require_admin(action)`` lets ``PROVISION_ADMINS`` through, ``require_approver(action)``
``PROVISION_APPROVERS``, ``require_admin_or_approver(action)`` either, ``require_anyone(action)``
everybody. Anyone else gets the ack at once (nothing happens), then an ephemeral reply naming who
may, and the refusal is recorded in the session's capped refusal stream, every time (a slash
command or a start form has no session yet: it is logged, not recorded).

Every one of them also binds a click to its session's channel: a button of a session clicked in
a message of another channel is refused and recorded the same way (a click in a modal or the
Home tab has no channel; the listener's own checks apply there). So is a click on a leftover
copy of a message the bot posted twice (its process died after Slack took the post and before
its ts was recorded, so the outbox posted it again): the copy shows a step as it was, and it is
stripped of its buttons.

Who may act is checked before the listener, so before its ack (over HTTP a command or a click was
answered at the door already, ``handlers.door``, and the check runs in its turn): it is bounded
(user groups are listed by Slack, cached for at most a minute; ``fresh=True`` asks Slack every
time, for the commitments: a modal's submission, Submit, acknowledging a role request), and the
reply and the record are made after the ack. Where a click may act (its channel, its copy) needs
the session from Redis, so it is checked right after the ack, before the listener goes on
(``TrackedAck.check_after``): the ack waits for no Redis read but the duplicate filter's, and a
refused click stops there (``ListenerStopped``). That read rides out a Redis blip for a few
seconds; past them the user is told to try again and nothing is done. (Called without the product's
``TrackedAck``, as some tests call it, the check is made before the ack, within the request's
deadline, ``handlers.blips``.)
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any

from slack_bolt.context.ack.async_ack import AsyncAck
from slack_bolt.context.async_context import AsyncBoltContext
from slack_bolt.context.respond.async_respond import AsyncRespond
from slack_bolt.response import BoltResponse

from bot.blocks import Message
from bot.session.access import AccessCheckFailed
from bot.session.views import (
    notice,
    out_of_date_copy_answer,
    redis_unavailable_message,
    refusal_message,
    wrong_channel_message,
)
from handlers.blips import before_ack, tell_redis_unavailable
from handlers.middleware import TrackedAck
from handlers.reply import response_url_of, say, session_of
from handlers.services import Services, services
from state.patience import RedisUnavailable, within

__all__ = [
    "ACCESS_CHECK_BUDGET_SECONDS",
    "ListenerMiddleware",
    "require_admin",
    "require_admin_or_approver",
    "require_anyone",
    "require_approver",
    "user_of",
]

logger = logging.getLogger(__name__)

ACCESS_CHECK_BUDGET_SECONDS = 2.0  # Slack waits 3 s for the ack, and the check comes first
AFTER_ACK_REDIS_PATIENCE_SECONDS = 5.0  # a click's channel check after its ack rides out a blip

ListenerMiddleware = Callable[..., Awaitable[BoltResponse | None]]


def user_of(body: dict[str, Any]) -> str:
    """Who sent the request: a slash command's ``user_id`` or an interaction's ``user.id``."""
    if "user_id" in body:
        return str(body["user_id"])
    return str(body["user"]["id"])


def require_admin(action: str, *, fresh: bool = False) -> ListenerMiddleware:
    """Only admins may ``action`` (e.g. "cancel provisioning"); ``fresh``: no cached groups."""
    return _require(action, admins=True, approvers=False, fresh=fresh)


def require_approver(action: str, *, fresh: bool = False) -> ListenerMiddleware:
    """Only approvers may ``action`` (e.g. "acknowledge role requests")."""
    return _require(action, admins=False, approvers=True, fresh=fresh)


def require_admin_or_approver(action: str) -> ListenerMiddleware:
    """Admins and approvers may ``action`` (e.g. "see provisioning status")."""
    return _require(action, admins=True, approvers=True, fresh=False)


def require_anyone(action: str) -> ListenerMiddleware:
    """Anybody may ``action`` (Microsoft or the step decides), in the session's channel only."""
    return _require(action, admins=False, approvers=False, fresh=False)


def clicked_in(body: dict[str, Any]) -> str | None:
    """The channel of the message whose button was clicked; None outside a message (a modal,
    the Home tab) and for anything that is not a click."""
    if body.get("type") != "block_actions":
        return None
    container = body.get("container") or {}
    if container.get("type") != "message":
        return None
    channel = container.get("channel_id") or (body.get("channel") or {}).get("id")
    return str(channel) if channel else None


@dataclass(frozen=True)
class _Misplaced:
    """A click on a session's button where it may not act: why, and what to tell the user."""

    answer: Message
    reason: str
    leftover: tuple[str, str] | None = None  # (channel, ts) of a leftover copy to retire


def _bound_to_a_session(body: dict[str, Any]) -> bool:
    """A click in a message on a session's button: its channel and its copy are checked."""
    return clicked_in(body) is not None and session_of(body) is not None


async def _misplaced(
    found: Services, body: dict[str, Any], within: Callable[[str, Callable[[], Any]], Any]
) -> _Misplaced | None:
    """Whether ``body`` is a click on a session's button in another channel, or on a leftover
    copy of a message the bot posted twice (the outbox's at-least-once window: a process died
    after Slack took a post and before its ts was recorded). Such a copy's buttons show the step
    as it was, so acting on them would act on a past the session has left. ``within`` makes the
    session read ride out a Redis blip (``handlers.blips`` before the ack, ``state.patience``
    after it)."""
    channel = clicked_in(body)
    session_id = session_of(body)
    if channel is None or session_id is None:
        return None
    session, posted = await within("channel check", partial(found.store.get_with_posts, session_id))
    if session is None:
        return None
    if session.channel_id != channel:
        return _Misplaced(
            wrong_channel_message(session.channel_id),
            f"clicked in {channel}, not the session's channel",
        )
    container = body.get("container") or {}
    ts = container.get("message_ts")
    if (
        session.is_active
        and isinstance(ts, str)
        and not container.get("is_ephemeral")
        and ts != session.root_ts
        and posted.disowns(ts, now=time.time())
    ):
        return _Misplaced(
            out_of_date_copy_answer(),
            f"clicked on a leftover copy ({ts}) of a message posted twice",
            leftover=(channel, ts),
        )
    return None


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


def _require(action: str, *, admins: bool, approvers: bool, fresh: bool) -> ListenerMiddleware:
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
        leftover: tuple[str, str] | None = None
        # A click's session is read after its ack when the ack can wait for it (acks first).
        later = isinstance(ack, TrackedAck) and _bound_to_a_session(body)
        try:
            async with asyncio.timeout(ACCESS_CHECK_BUDGET_SECONDS):
                allowed = (
                    (not admins and not approvers)
                    or (admins and await found.access.is_admin(user_id, fresh=fresh))
                    or (approvers and await found.access.is_approver(user_id, fresh=fresh))
                )
                misplaced = (
                    await _misplaced(found, body, partial(before_ack, context))
                    if allowed and not later
                    else None
                )
        except RedisUnavailable:
            return await tell_redis_unavailable(body, found, ack, "channel check")
        except AccessCheckFailed as failure:
            answer, reason = _could_not_check(failure), f"could not list {failure.group_id}"
        except TimeoutError:
            answer, reason = _could_not_check(None), "user groups not listed in time"
        else:
            if allowed and misplaced is None:
                if later:
                    assert isinstance(ack, TrackedAck)
                    ack.check_after(partial(_in_place, found, body, respond, user_id, action))
                await next()
                return None
            if misplaced is not None:
                answer, reason = misplaced.answer, misplaced.reason
                leftover = misplaced.leftover
            else:
                principals: Sequence[str] = (found.access.admins if admins else ()) + (
                    found.access.approvers if approvers else ()
                )
                answer = refusal_message(action, principals)
        given = await ack()
        found.inflight.spawn(
            _refuse(found, body, respond, user_id, action, answer, reason, leftover),
            name=f"refusal: {action}",
        )
        return given

    who = (
        "admin_or_approver"
        if admins and approvers
        else "admin"
        if admins
        else "approver"
        if approvers
        else "anyone"
    )
    require.__name__ = require.__qualname__ = f"require_{who}({action!r})"
    return require


async def _in_place(
    found: Services,
    body: dict[str, Any],
    respond: AsyncRespond | None,
    user_id: str,
    action: str,
) -> bool:
    """After the ack: True when the click is where it may act; else it is refused as before
    the ack would have refused it (recorded, the user told, a leftover copy retired)."""
    deadline = asyncio.get_running_loop().time() + AFTER_ACK_REDIS_PATIENCE_SECONDS
    try:
        misplaced = await _misplaced(found, body, partial(within, deadline))
    except RedisUnavailable:
        logger.warning("Redis unavailable for a click's channel check: told the user")
        await found.replies.ephemeral(response_url_of(body), redis_unavailable_message())
        return False
    if misplaced is None:
        return True
    await _refuse(
        found,
        body,
        respond,
        user_id,
        action,
        misplaced.answer,
        misplaced.reason,
        misplaced.leftover,
    )
    return False


async def _refuse(
    found: Services,
    body: dict[str, Any],
    respond: AsyncRespond | None,
    user_id: str,
    action: str,
    answer: Message,
    reason: str | None,
    leftover: tuple[str, str] | None = None,
) -> None:
    """Record the refusal (when it concerns a session), then tell the user; a leftover copy
    of a message loses its buttons, so nobody is misled by it again."""
    async with found.refusal_slots:
        session_id = session_of(body)
        if session_id is not None:
            await found.provisioner.record_refusal(session_id, user_id, action, reason=reason)
        else:
            logger.info("refused %s to %s (no session to record it in)", action, user_id)
        if respond is not None and respond.response_url:
            # A slash command's response_url takes no replace_original; an interaction's
            # keeps the clicked message as it is.
            await say(respond, answer, replace_original=None if "command" in body else False)
        else:  # a modal's submission: the response_url its command carried over
            await found.replies.ephemeral(response_url_of(body), answer)
        if leftover is not None:
            await found.provisioner.retire_copy(*leftover)

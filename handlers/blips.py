"""When Redis does not answer before the ack: the request is acked (never a 5xx, which Slack
would not retry for a click or a form), nothing is done, and the user is told to try again.

Each request gets one deadline for all its Redis calls before the ack (``RequestScope`` sets it,
``state.patience.within`` retries until it), so the ack stays inside Slack's 3 s whatever the
number of calls.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from slack_bolt.context.ack.async_ack import AsyncAck
from slack_bolt.context.async_context import AsyncBoltContext
from slack_bolt.response import BoltResponse

from bot.session.views import REDIS_UNAVAILABLE, notice_modal, redis_unavailable_message
from handlers.reply import response_url_of
from handlers.services import Services
from state.patience import BEFORE_ACK_BUDGET_SECONDS, within

__all__ = [
    "REDIS_DEADLINE_KEY",
    "before_ack",
    "redis_deadline",
    "tell_redis_unavailable",
    "tell_redis_unavailable_later",
]

logger = logging.getLogger(__name__)

REDIS_DEADLINE_KEY = "provision_inline_redis_deadline"

_TOLD = "Redis unavailable before the ack (%s): told the user to try again"

T = TypeVar("T")


def redis_deadline(context: AsyncBoltContext) -> float:
    """When the request's Redis calls before the ack must have finished (the event loop's clock)."""
    given = context.get(REDIS_DEADLINE_KEY)
    if isinstance(given, float):
        return given
    deadline = asyncio.get_running_loop().time() + BEFORE_ACK_BUDGET_SECONDS
    context[REDIS_DEADLINE_KEY] = deadline
    return deadline


async def before_ack(context: AsyncBoltContext, what: str, call: Callable[[], Awaitable[T]]) -> T:
    """A Redis call made before the ack: retried until the request's deadline, then
    ``RedisUnavailable``."""
    return await within(redis_deadline(context), what, call)


async def tell_redis_unavailable(
    body: dict[str, Any], found: Services, ack: AsyncAck, what: str
) -> BoltResponse:
    """Ack a request whose Redis calls ran out of time, and tell its user nothing was changed: a
    field error on a submitted form (the form stays open, its input kept), an ephemeral
    message otherwise (events have nobody to tell)."""
    if body.get("type") == "view_submission":
        logger.warning(_TOLD, what)
        values = ((body.get("view") or {}).get("state") or {}).get("values") or {}
        if values:
            return await ack(
                response_action="errors", errors={next(iter(values)): REDIS_UNAVAILABLE}
            )
        return await ack(response_action="update", view=notice_modal(redis_unavailable_message()))
    given = await ack()
    tell_redis_unavailable_later(body, found, what)
    return given


def tell_redis_unavailable_later(body: dict[str, Any], found: Services, what: str) -> None:
    """After the ack: tell the request's user (an ephemeral reply to its response URL) that
    Redis did not answer (for ``what``, logged) and nothing was done."""
    logger.warning(_TOLD, what)
    url = response_url_of(body)
    if url:
        found.inflight.spawn(_tell(found, url), name="redis unavailable: tell the user")


async def _tell(found: Services, url: str) -> None:
    await found.replies.ephemeral(url, redis_unavailable_message())

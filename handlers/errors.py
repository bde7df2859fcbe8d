"""The last line: an unexpected error is logged with its traceback and the user is told.

``on_unexpected_error`` is Bolt's error handler (``handlers.wire`` installs it): Bolt calls it
for an error raised by a listener (after the ack or before it) or by a middleware.
"""

from __future__ import annotations

import logging
import secrets
from typing import Any

from slack_bolt.context.async_context import AsyncBoltContext

from bot.session.views import error_message
from handlers.middleware import ListenerStopped
from handlers.reply import response_url_of
from handlers.services import CONTEXT_KEY, Services

__all__ = ["on_unexpected_error"]

logger = logging.getLogger(__name__)


async def on_unexpected_error(
    error: Exception, body: dict[str, Any], context: AsyncBoltContext
) -> None:
    if isinstance(error, ListenerStopped):
        return  # refused after its ack, and told (handlers.access): nothing went wrong
    reference = secrets.token_hex(4)
    found = context.get(CONTEXT_KEY)
    if isinstance(found, Services):  # absent only if the failure came before our middleware
        found.metrics.count_error(type(error).__name__)
    logger.error(
        "unexpected error (reference %s) handling a %s request",
        reference,
        body.get("type") or body.get("command") or "Slack",
        exc_info=error,
    )
    if not isinstance(found, Services):
        return  # nobody checked the request's response URL: it is not replied to
    try:
        await found.replies.ephemeral(response_url_of(body), error_message(reference))
    except Exception:
        logger.exception("could not tell the user about error %s", reference)

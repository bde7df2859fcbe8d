"""The last line: an unexpected error is logged with its traceback and the user is told."""

from __future__ import annotations

import logging
import secrets
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from bot.session.views import error_message
from handlers.reply import reply_ephemeral, response_url_of

if TYPE_CHECKING:
    from bot.app import Runtime

logger = logging.getLogger(__name__)


def register(runtime: Runtime) -> None:
    async def from_listener(error: Exception, arguments: Mapping[str, Any]) -> None:
        # A listener's own arguments: the request body, or for commands the command itself.
        body = arguments.get("body") or arguments.get("command") or {}
        await on_unexpected_error(error, body)

    runtime.inflight.on_error = from_listener

    @runtime.bolt.error
    async def on_unexpected_error(error: Exception, body: dict[str, Any]) -> None:
        reference = secrets.token_hex(4)
        runtime.metrics.count_error(type(error).__name__)
        logger.error(
            "unexpected error (reference %s) handling a %s request",
            reference,
            body.get("type") or body.get("command") or "Slack",
            exc_info=error,
        )
        try:
            await reply_ephemeral(response_url_of(body), error_message(reference))
        except Exception:
            logger.exception("could not tell the user about error %s", reference)

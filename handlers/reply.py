"""Ephemeral replies through a ``response_url`` (works even where the bot is not a member)."""

from __future__ import annotations

import json
import logging
from typing import Any

from slack_sdk.webhook.async_client import AsyncWebhookClient

from bot.views import Message

logger = logging.getLogger(__name__)


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

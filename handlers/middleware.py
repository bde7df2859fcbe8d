"""Global middleware: drop Slack's duplicate deliveries before any listener sees them.

Slack redelivers a request it thinks failed (``X-Slack-Retry-Num``), and a flaky network can
deliver the same request twice. Each delivery carries an id that identifies it: ``event_id`` for
events, ``trigger_id`` for commands, clicks and submissions. The first delivery claims it in Redis
(``SET NX``); any later one is acknowledged and dropped.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from slack_bolt.request.async_request import AsyncBoltRequest
from slack_bolt.response import BoltResponse

if TYPE_CHECKING:
    from bot.app import Runtime

logger = logging.getLogger(__name__)


def delivery_key(body: dict[str, Any]) -> str | None:
    """The id that is the same for every delivery of one Slack request, if it has one."""
    if body.get("event_id"):
        return f"event:{body['event_id']}"
    if body.get("trigger_id"):
        return f"trigger:{body['trigger_id']}"
    return None


def register(runtime: Runtime) -> None:
    store = runtime.store
    metrics = runtime.metrics

    @runtime.bolt.middleware
    async def drop_duplicate_deliveries(
        req: AsyncBoltRequest, resp: BoltResponse, next: Callable[[], Awaitable[None]]
    ) -> BoltResponse | None:
        key = delivery_key(req.body)
        if key is not None and not await store.claim_once(key, ttl=3600):
            metrics.count_duplicate()
            logger.info("dropped a duplicate Slack delivery (%s)", key.split(":", 1)[0])
            return BoltResponse(status=200, body="")
        await next()
        return None

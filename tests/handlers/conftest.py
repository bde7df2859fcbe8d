"""Listeners called directly, the way Bolt would call them, against a real runtime.

The ``harness`` of the integration tests provides the runtime (real Redis, sandbox Slack and
Microsoft); a test builds the request with the sandbox's driver (the payload Slack would send),
and calls the listener with a real ``AsyncAck`` (it keeps what it was given), a real
``AsyncRespond`` to the payload's ``response_url`` (the sandbox records what the user saw), and
a context holding the ``Services`` as the global middleware puts them there.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from slack_bolt.context.ack.async_ack import AsyncAck
from slack_bolt.context.async_context import AsyncBoltContext
from slack_bolt.context.respond.async_respond import AsyncRespond

from handlers.services import CONTEXT_KEY, Services
from tests.integration import conftest as integration
from tests.integration.conftest import ADMIN, CHANNEL, Harness

harness = integration.harness  # the fixture, shared with the integration tests


def context_for(harness: Harness) -> AsyncBoltContext:
    return AsyncBoltContext({CONTEXT_KEY: Services.of(harness.runtime)})


def services_of(harness: Harness) -> Services:
    return Services.of(harness.runtime)


def respond_to(body: dict[str, Any]) -> AsyncRespond:
    return AsyncRespond(response_url=body["response_url"])


def acked(ack: AsyncAck) -> dict[str, Any]:
    """What the ack told Slack: its JSON body ({} for an empty ack); fails if never acked."""
    assert ack.response is not None, "the listener did not ack"
    assert ack.response.status == 200
    body = ack.response.body
    if not body:
        return {}
    parsed = json.loads(body)
    assert isinstance(parsed, dict)
    return parsed


def command_body(harness: Harness, user_id: str = ADMIN, text: str = "") -> dict[str, Any]:
    request = harness.driver.build_slash_command(user_id=user_id, channel_id=CHANNEL, text=text)
    return dict(request.payload)


def click_body(harness: Harness, message_ts: str, action_id: str, user_id: str) -> dict[str, Any]:
    request = harness.driver.build_click(
        user_id=user_id, channel_id=CHANNEL, message_ts=message_ts, action_id=action_id
    )
    return dict(request.payload)


def submission_body(
    harness: Harness,
    view_id: str,
    values: dict[str, Any],
    user_id: str = ADMIN,
    *,
    enforce: bool = True,
) -> dict[str, Any]:
    """A submission of the open modal ``view_id``; ``enforce=False`` lets through what Slack's
    own checks (required fields) would stop."""
    request = harness.driver.build_view_submission(
        user_id=user_id, view_id=view_id, values=values, enforce=enforce
    )
    return dict(request.payload)


@dataclass
class Next:
    """Bolt's ``next`` for a middleware: records whether the chain went on."""

    calls: int = 0

    async def __call__(self) -> None:
        self.calls += 1


async def ephemerals_to(harness: Harness, user_id: str, containing: str) -> Any:
    return await integration.ephemeral_for(harness, user_id, containing)

"""A malformed but signed payload gets a clean 4xx over HTTP (an ack in Socket Mode) with nothing
done, and one log line without secrets; never a 500, never a traceback in the answer."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

import pytest

from bot.sandbox.slack_driver import SignedRequest
from bot.session.views import ACTION_CANCEL
from tests.conftest import SIGNING_SECRET
from tests.integration.conftest import ADMIN, CHANNEL, Harness, ephemeral_for
from tests.security.forge import interaction, session_keys, slack_effects, with_payload
from tests.security.test_request_authentication import socket_bot_without_signing_secret

LIST_PAYLOAD = urlencode({"payload": "[]"}).encode()


def click_without_user(harness: Harness) -> dict[str, Any]:
    return {
        "type": "block_actions",
        "team": {"id": harness.slack.team_id},
        "api_app_id": harness.slack.app_id,
        "trigger_id": harness.slack.issue_trigger_id(user_id=ADMIN),
        "container": {"type": "message", "channel_id": CHANNEL, "message_ts": "1.000001"},
        "channel": {"id": CHANNEL},
        "response_url": harness.slack.new_response_url(
            harness.slack_url, channel_id=CHANNEL, user_id=ADMIN
        ),
        "actions": [{"action_id": ACTION_CANCEL, "type": "button", "value": "s-1"}],
    }


async def test_http_malformed_signed_payloads_get_400_and_do_nothing(
    harness: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    await harness.driver.slash_command(user_id=ADMIN, channel_id=CHANNEL, text="help")
    await ephemeral_for(harness, ADMIN, "/provision-inline status")  # the setup works
    calls, stored = slack_effects(harness), await session_keys(harness)

    form = "application/x-www-form-urlencoded"
    command = harness.driver.build_slash_command(user_id=ADMIN, channel_id=CHANNEL)
    attacks = [
        SignedRequest("block_actions", command.url, b"payload=%7Bnot+json", form, {}),
        SignedRequest("block_actions", command.url, b"[1,2]", "application/json", {}),
        SignedRequest("block_actions", command.url, b'{"x":"\xff"}', "application/json", {}),
        with_payload(command, {k: v for k, v in command.payload.items() if k != "channel_id"}),
        interaction(harness, click_without_user(harness)),
        interaction(harness, {**click_without_user(harness), "user": {"id": ADMIN}, "actions": 7}),
        SignedRequest(
            "block_actions", command.url, urlencode({"payload": "[]"}).encode(), form, {}
        ),
    ]
    with caplog.at_level("WARNING"):
        answers = [await harness.driver.send(a) for a in attacks]
    assert [a.status_code for a in answers] == [400] * len(attacks), [a.text for a in answers]
    assert all("Traceback" not in a.text and len(a.text) < 100 for a in answers)
    lines = [r.getMessage() for r in caplog.records if "refused a" in r.getMessage()]
    assert len(lines) == len(attacks), lines  # once each
    assert not [r for r in caplog.records if r.levelname == "ERROR"]
    assert SIGNING_SECRET not in caplog.text
    assert "not+json" not in caplog.text

    unsigned = await harness.http.post(
        command.url, content=b"payload=%7Bnot+json", headers={"Content-Type": form}
    )
    assert unsigned.status_code == 401  # not signed: refused as any unsigned request

    await harness.driver.slash_command(user_id=ADMIN, channel_id=CHANNEL, text="status")
    await ephemeral_for(harness, ADMIN, "No provisioning")
    assert slack_effects(harness)[len(calls) :] == ["response_url"]  # the status answer only
    assert await session_keys(harness) == stored


async def test_socket_mode_malformed_payloads_are_acked_with_nothing_done(
    harness: Harness,
) -> None:
    async with socket_bot_without_signing_secret(harness):
        harness.driver.transport = "socket_mode"
        await harness.driver.slash_command(user_id=ADMIN, channel_id=CHANNEL, text="help")
        await ephemeral_for(harness, ADMIN, "/provision-inline status")
        calls, stored = slack_effects(harness), await session_keys(harness)

        command = harness.driver.build_slash_command(user_id=ADMIN, channel_id=CHANNEL)
        attacks = [
            interaction(harness, click_without_user(harness)),
            with_payload(command, {k: v for k, v in command.payload.items() if k != "user_id"}),
        ]
        answers = [await harness.driver.send(a) for a in attacks]
        assert [a.status_code for a in answers] == [200, 200]  # acked in time, not 504

        await harness.driver.slash_command(user_id=ADMIN, channel_id=CHANNEL, text="status")
        await ephemeral_for(harness, ADMIN, "No provisioning")
        assert slack_effects(harness)[len(calls) :] == ["response_url"]
        assert await session_keys(harness) == stored

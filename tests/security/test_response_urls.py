"""Replies go only to Slack's response URLs (``hooks.slack.com``, or SLACK_API_URL's origin as in
the sandbox): a request that names another one, in its own ``response_url`` or in the
``private_metadata`` a modal carries, is refused before any listener, in both modes, and nothing
is sent there."""

from __future__ import annotations

import json

import pytest

from tests.integration.conftest import ADMIN, CHANNEL, Harness, ephemeral_for
from tests.security.forge import listening, session_keys, slack_effects, with_payload
from tests.security.test_request_authentication import socket_bot_without_signing_secret

REFUSED = "whose response_url points to"


async def test_http_replies_never_go_to_a_foreign_response_url(
    harness: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    async with listening() as attacker:
        await harness.driver.slash_command(user_id=ADMIN, channel_id=CHANNEL, text="help")
        await ephemeral_for(harness, ADMIN, "/provision-inline status")  # the setup works
        view_id = await harness.open_start_modal()
        calls, stored = slack_effects(harness), await session_keys(harness)

        help_request = harness.driver.build_slash_command(
            user_id=ADMIN, channel_id=CHANNEL, text="help"
        )
        forged_help = with_payload(
            help_request, {**help_request.payload, "response_url": attacker.url}
        )
        submission = harness.driver.build_view_submission(
            user_id=ADMIN, view_id=view_id, values={"tenant_input": "contoso.com"}
        )
        view = dict(submission.payload["view"])
        carried = json.loads(view["private_metadata"])
        view["private_metadata"] = json.dumps({**carried, "response_url": attacker.url})
        forged_submission = with_payload(submission, {**submission.payload, "view": view})

        with caplog.at_level("WARNING", logger="handlers.middleware"):
            answers = [await harness.driver.send(r) for r in (forged_help, forged_submission)]
        assert [a.status_code for a in answers] == [200, 200]
        refusals = [r.getMessage() for r in caplog.records if REFUSED in r.getMessage()]
        assert len(refusals) == 2, refusals
        assert all(attacker.url.split("/hooks")[0] in line for line in refusals)
        assert "/hooks/" not in " ".join(refusals)  # the path of a response URL is a credential

        # A genuine request after them has its effect, so they were handled before it.
        await harness.driver.slash_command(user_id=ADMIN, channel_id=CHANNEL, text="status")
        await ephemeral_for(harness, ADMIN, "No provisioning")
        assert attacker.received == []
        assert slack_effects(harness)[len(calls) :] == ["response_url"]  # the status answer
        assert await session_keys(harness) == stored  # no session started by the forged submission
        assert await harness.runtime.store.active() == []


async def test_socket_mode_replies_never_go_to_a_foreign_response_url(harness: Harness) -> None:
    async with listening() as attacker, socket_bot_without_signing_secret(harness):
        harness.driver.transport = "socket_mode"
        genuine = await harness.driver.slash_command(user_id=ADMIN, channel_id=CHANNEL, text="help")
        assert genuine.status_code == 200
        await ephemeral_for(harness, ADMIN, "/provision-inline status")
        calls, stored = slack_effects(harness), await session_keys(harness)

        help_request = harness.driver.build_slash_command(
            user_id=ADMIN, channel_id=CHANNEL, text="help"
        )
        forged = with_payload(help_request, {**help_request.payload, "response_url": attacker.url})
        assert (await harness.driver.send(forged)).status_code == 200  # acked, nothing done
        await harness.driver.slash_command(user_id=ADMIN, channel_id=CHANNEL, text="status")
        await ephemeral_for(harness, ADMIN, "No provisioning")
        assert attacker.received == []
        new_calls = slack_effects(harness)[len(calls) :]
        assert new_calls.count("response_url") == 1, new_calls
        assert await session_keys(harness) == stored

"""User groups are asked of Slack once per minute at most, on the policy's own clock."""

from __future__ import annotations

import pytest
from slack_sdk.web.async_client import AsyncWebClient

from bot.sandbox.microsoft import ManualClock
from bot.sandbox.server import serve_asgi
from bot.sandbox.slack import SandboxSlack
from bot.session.access import AccessCheckFailed, AccessPolicy


async def test_group_members_are_remembered_for_a_minute() -> None:
    slack = SandboxSlack()
    slack.add_usergroup("S0ADMINS", "exchange-admins", ["U0GUS"])
    clock = ManualClock()
    async with serve_asgi(slack.app) as server:
        client = AsyncWebClient(token=slack.bot_token, base_url=f"{server.base_url}/api/")
        access = AccessPolicy(
            client, admins=["U0ADA", "S0ADMINS"], approvers=["S0ADMINS"], clock=clock
        )
        assert await access.is_admin("U0ADA")  # listed by id: Slack is not asked
        assert slack.calls_to("usergroups.users.list") == []
        assert await access.is_admin("U0GUS")
        assert await access.is_approver("U0GUS")
        assert not await access.is_admin("U0OTTO")
        assert len(slack.calls_to("usergroups.users.list")) == 1
        # Membership changes; the bot sees it once the minute is over.
        slack.add_usergroup("S0ADMINS", "exchange-admins", ["U0OTTO"])
        clock.advance(59)
        assert await access.is_admin("U0GUS")
        assert len(slack.calls_to("usergroups.users.list")) == 1
        clock.advance(1)
        assert not await access.is_admin("U0GUS")
        assert await access.is_admin("U0OTTO")
        assert len(slack.calls_to("usergroups.users.list")) == 2


async def test_a_failed_lookup_is_not_remembered() -> None:
    slack = SandboxSlack()
    clock = ManualClock()
    async with serve_asgi(slack.app) as server:
        client = AsyncWebClient(token=slack.bot_token, base_url=f"{server.base_url}/api/")
        access = AccessPolicy(client, admins=["S0LATER"], approvers=[], clock=clock)
        with pytest.raises(AccessCheckFailed):  # no such group (yet)
            await access.is_admin("U0GUS")
        slack.add_usergroup("S0LATER", "later", ["U0GUS"])
        assert await access.is_admin("U0GUS")

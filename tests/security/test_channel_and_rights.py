"""Clicks are bound to their session's channel, and rights are checked on every action: group
membership cached at most 60 s, and asked afresh for a modal's submission and for acknowledging
a role request, so somebody removed a moment ago commits nothing."""

from __future__ import annotations

from bot.session.views import ACTION_CANCEL
from bot.steps.role.views import ACTION_ACKNOWLEDGE, ACTION_REQUEST_OPEN_PIM
from bot.workflow import Phase
from tests.integration.conftest import (
    ADMIN,
    CHANNEL,
    GROUP_ADMIN,
    SECOND_APPROVER,
    Harness,
    ephemeral_for,
)
from tests.integration.test_role import (
    JUSTIFICATION,
    at_step_two,
    click,
    phase_of,
    request_role,
)
from tests.security.forge import session_keys, slack_effects, with_payload

ELSEWHERE = "C0NOBOT"


def remove_from_group(harness: Harness, group_id: str, user_id: str) -> None:
    harness.slack.usergroups[group_id]["users"].remove(user_id)


async def test_a_click_outside_the_sessions_channel_is_refused_and_recorded(
    harness: Harness,
) -> None:
    root_ts = await harness.start_session("contoso.com")
    [session] = await harness.runtime.store.active()
    click_request = harness.driver.build_click(
        user_id=ADMIN, channel_id=CHANNEL, message_ts=root_ts, action_id=ACTION_CANCEL
    )
    payload = dict(click_request.payload)
    payload["container"] = {**payload["container"], "channel_id": ELSEWHERE}
    payload["channel"] = {"id": ELSEWHERE, "name": "elsewhere"}
    calls = slack_effects(harness)

    answer = await harness.driver.send(with_payload(click_request, payload))
    assert answer.status_code == 200
    refusal = await ephemeral_for(harness, ADMIN, "belongs to a provisioning session in")
    assert f"<#{CHANNEL}>" in refusal.text
    [recorded] = await harness.runtime.store.refusals(session.id)
    assert (recorded.actor, recorded.action) == (ADMIN, "refused: cancel provisioning")
    assert ELSEWHERE in recorded.detail["reason"]
    after = await harness.runtime.store.require(session.id)
    assert (after.phase, after.version) == (session.phase, session.version)
    assert slack_effects(harness)[len(calls) :] == ["response_url"]  # the refusal only

    # The same click in the session's channel works.
    await harness.driver.click(
        user_id=ADMIN, channel_id=CHANNEL, message_ts=root_ts, action_id=ACTION_CANCEL
    )
    assert await harness.settled(session.id, after_version=session.version) is Phase.CANCELLED


async def test_a_modal_opened_before_its_user_was_removed_does_not_submit(
    harness: Harness,
) -> None:
    view_id = await harness.open_start_modal(GROUP_ADMIN)  # a group member: the modal opens
    stored = await session_keys(harness)
    remove_from_group(harness, "S0ADMINS", GROUP_ADMIN)  # within the minute the cache keeps
    answer = await harness.driver.submit_view(
        user_id=GROUP_ADMIN, view_id=view_id, values={"tenant_input": "contoso.com"}
    )
    assert answer.status_code == 200
    await ephemeral_for(harness, GROUP_ADMIN, "You can't start provisioning")
    assert await harness.runtime.store.active() == []
    assert await session_keys(harness) == stored


async def test_membership_is_cached_at_most_a_minute_for_other_actions(harness: Harness) -> None:
    await harness.driver.slash_command(user_id=GROUP_ADMIN, channel_id=CHANNEL, text="cancel")
    await ephemeral_for(harness, GROUP_ADMIN, "nothing was cancelled")  # allowed: a member
    remove_from_group(harness, "S0ADMINS", GROUP_ADMIN)
    harness.clock.advance(61)
    await harness.driver.slash_command(user_id=GROUP_ADMIN, channel_id=CHANNEL, text="cancel")
    await ephemeral_for(harness, GROUP_ADMIN, "You can't cancel provisioning")


async def test_acknowledging_checks_the_approver_afresh(harness: Harness) -> None:
    root_ts, session_id = await at_step_two(harness)
    await request_role(
        harness, root_ts, {"justification_input": JUSTIFICATION}, opener=ACTION_REQUEST_OPEN_PIM
    )
    # A group approver is seen (and cached) as one: status is theirs to see.
    await harness.driver.slash_command(user_id=SECOND_APPROVER, channel_id=CHANNEL, text="status")
    await ephemeral_for(harness, SECOND_APPROVER, "contoso.com")
    remove_from_group(harness, "S0APPROVERS", SECOND_APPROVER)
    version = await harness.version_of(session_id)

    await click(harness, root_ts, ACTION_ACKNOWLEDGE, SECOND_APPROVER)
    await ephemeral_for(harness, SECOND_APPROVER, "You can't acknowledge role requests")
    assert await phase_of(harness, session_id) is Phase.ROLE_REQUESTED
    assert await harness.version_of(session_id) == version

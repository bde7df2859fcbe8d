"""The thread tells the story in few messages (issue 8, item 6).

A whole provisioning through the real conversation: ada starts it, a Global Administrator
consents twice, ada requests the role, april acknowledges, Priya (a Privileged Role
Administrator) signs in through the link ada opened, ada verifies and submits. The thread holds
one message per step, the plan and the summary; each says who actually acted.
"""

from __future__ import annotations

import json

from bot.steps.mailflow.views import ACTION_SUBMIT
from bot.steps.role.views import ACTION_ACKNOWLEDGE as ACTION_ACKNOWLEDGE_ROLE
from bot.steps.role.views import ACTION_REQUEST_OPEN_PIM
from bot.workflow import Phase
from tests.integration.conftest import (
    ADMIN,
    APPROVER,
    CHANNEL,
    ROLE_ADMIN_UPN,
    Harness,
)
from tests.integration.steps import consent_now
from tests.integration.test_role import (
    JUSTIFICATION,
    click,
    request_role,
    sign_in_and_assign,
    wait_button,
)
from tests.integration.test_verification import click_verify


def said(harness: Harness, root_ts: str) -> str:
    """Everything the thread shows now (the blocks of every message)."""
    return "\n".join(json.dumps(m.blocks, ensure_ascii=False) for m in harness.thread(root_ts))


async def test_a_whole_provisioning_tells_its_story_in_at_most_ten_messages(
    harness: Harness,
) -> None:
    root_ts = await harness.start_session("contoso.com")
    await consent_now(harness, root_ts)
    [session] = await harness.runtime.store.active()
    await request_role(
        harness, root_ts, {"justification_input": JUSTIFICATION}, opener=ACTION_REQUEST_OPEN_PIM
    )
    await click(harness, root_ts, ACTION_ACKNOWLEDGE_ROLE, APPROVER)
    # ada opens "Assign for me"; Priya signs in at Microsoft with it.
    page = await sign_in_and_assign(harness, root_ts, ROLE_ADMIN_UPN)
    assert "role assigned" in page.text
    await consent_now(harness, root_ts, nth=2)
    await click_verify(harness, root_ts)
    await wait_button(harness, root_ts, ACTION_SUBMIT)
    await click(harness, root_ts, ACTION_SUBMIT, ADMIN)
    await harness.slack.wait_for(
        lambda s: any("mail flow is configured" in m.text for m in harness.thread(root_ts)),
        timeout=20,
    )
    assert await harness.settled(session.id) is Phase.PROTECTED

    thread = harness.thread(root_ts)
    assert len(thread) <= 10, "\n".join(m.text[:100] for m in thread)
    story = said(harness, root_ts)
    # Consents: Microsoft does not say who signed in, so the thread does not guess.
    assert story.count("given by a Global Administrator of *contoso.com*") == 2
    # The role: requested by ada, acknowledged by april, assigned by whoever signed in.
    assert f"Requested by <@{ADMIN}>" in story
    assert f"acknowledged by <@{APPROVER}>" in story
    signed_in = f"`{ROLE_ADMIN_UPN}` (signed in at Microsoft)"
    assert f"{signed_in} assigned the *Exchange Administrator*" in story
    assert f"<@{ADMIN}> assigned" not in story
    # The approvers were told by a post (an edit of the step's message notifies nobody).
    [asked] = [m for m in thread if ":bell:" in m.text and "Acknowledge" in m.text]
    assert f"<@{APPROVER}>" in asked.text
    assert "<!subteam^S0APPROVERS>" in asked.text
    # Verify and Submit: who pressed them.
    assert f"Verify pressed by <@{ADMIN}>" in story
    assert f"<@{ADMIN}> submitted the change plan" in story
    # No step is left asking for something.
    assert "Waiting for" not in story
    # The channel's checklist names the same people.
    root = json.dumps(harness.slack.message(CHANNEL, root_ts).blocks)
    assert root.count("given by a Global Administrator of the tenant") == 2
    assert f"assigned by `{ROLE_ADMIN_UPN}` (signed in at Microsoft)" in root
    assert f"submitted by <@{ADMIN}>" in root

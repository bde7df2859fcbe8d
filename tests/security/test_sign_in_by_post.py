"""The role-assignment sign-in answer (``response_mode=form_post``) is taken by POST only: the same
answer sent by GET (code and state in the URL, where browsers, proxies and logs keep them) gets a
page that explains, uses nothing (the state stays unredeemed) and changes nothing."""

from __future__ import annotations

import httpx

from bot.steps.role.views import ACTION_ACKNOWLEDGE, ACTION_ASSIGN_SIGN_IN, ACTION_REQUEST_OPEN_PIM
from bot.workflow import Phase
from tests.integration.conftest import ADMIN, APPROVER, CHANNEL, ROLE_ADMIN_UPN, Harness
from tests.integration.steps import answer_form, sign_in_url
from tests.integration.test_role import (
    JUSTIFICATION,
    at_step_two,
    click,
    phase_of,
    request_role,
    wait_button,
)
from tests.security.forge import session_keys


async def test_a_sign_in_answer_by_get_is_explained_and_unused(harness: Harness) -> None:
    root_ts, session_id = await at_step_two(harness)
    await request_role(
        harness, root_ts, {"justification_input": JUSTIFICATION}, opener=ACTION_REQUEST_OPEN_PIM
    )
    await click(harness, root_ts, ACTION_ACKNOWLEDGE, APPROVER)
    ts = await wait_button(harness, root_ts, ACTION_ASSIGN_SIGN_IN)
    before = await harness.version_of(session_id)
    await harness.driver.click(
        user_id=ADMIN, channel_id=CHANNEL, message_ts=ts, action_id=ACTION_ASSIGN_SIGN_IN
    )

    # The click's work (after its answer) is stored and its Slack effects made: the keys are
    # still when the snapshot below is taken.
    await harness.settled(session_id, after_version=before)
    version = await harness.version_of(session_id)
    harness.microsoft.sign_in(ROLE_ADMIN_UPN, auto="accept")
    async with httpx.AsyncClient(timeout=10) as browser:
        action, fields = answer_form(await browser.get(sign_in_url(harness, ts)))
        logins = len(harness.microsoft.requests_to("login"))
        stored = await session_keys(harness)

        by_get = await browser.get(action, params=fields)
        assert by_get.status_code == 400
        assert "must be posted" in by_get.text
        assert fields["code"] not in by_get.text
        only_id_token = await browser.get(action, params={"id_token": "x.y.z", "state": "s"})
        assert only_id_token.status_code == 400
        assert await harness.version_of(session_id) == version
        assert await phase_of(harness, session_id) is Phase.ROLE_ACKNOWLEDGED
        assert len(harness.microsoft.requests_to("login")) == logins  # no code redeemed
        assert await session_keys(harness) == stored  # the state is still there, unused

        # The same answer by POST, as Microsoft sends it, still works: nothing was used up.
        by_post = await browser.post(action, data=fields)
    assert by_post.status_code == 200, by_post.text
    assert await harness.settled(session_id, after_version=version) is not Phase.ROLE_ACKNOWLEDGED

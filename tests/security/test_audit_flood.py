"""A flood of refused clicks from an outsider, through the real HTTP stack: each is refused and
recorded apart, the refusals are capped, and the session's decisions stay whole in its audit."""

from __future__ import annotations

import asyncio

from bot.session.views import ACTION_CANCEL
from bot.workflow import Phase
from state.sessions import REFUSALS_KEPT
from tests.integration.conftest import ADMIN, CHANNEL, OUTSIDER, Harness, ephemeral_for
from tests.integration.steps import latest_link

FLOOD = 150


async def test_150_refused_clicks_leave_the_audit_whole_and_status_current(
    harness: Harness,
) -> None:
    root_ts = await harness.start_session("contoso.com")
    await latest_link(harness, root_ts)
    [session] = await harness.runtime.store.active()
    decisions = await harness.store.audit(session.id)
    assert decisions  # the setup reached the bot: the start is in the audit

    async def refused() -> int:
        answer = await harness.driver.click(
            user_id=OUTSIDER, channel_id=CHANNEL, message_ts=root_ts, action_id=ACTION_CANCEL
        )
        return int(answer.status_code)

    for _ in range(FLOOD // 25):  # as fast as one client sends, 25 at a time
        assert set(await asyncio.gather(*(refused() for _ in range(25)))) == {200}
    await harness.slack.wait_for(
        lambda s: len([e for e in s.ephemerals if e.user == OUTSIDER]) >= FLOOD or None,
        timeout=30,
    )
    assert await harness.store.audit(session.id) == decisions
    refusals = await harness.runtime.store.refusals(session.id, count=1000)
    assert len(refusals) == REFUSALS_KEPT < FLOOD
    assert {r.actor for r in refusals} == {OUTSIDER}

    # Status still shows the session's newest decisions, none of the flood.
    await harness.driver.slash_command(user_id=ADMIN, channel_id=CHANNEL, text="status")
    status = await ephemeral_for(harness, ADMIN, "contoso.com")
    assert decisions[-1].action in str(status.blocks)
    assert OUTSIDER not in str(status.blocks)
    # And a decision still goes through.
    await harness.driver.click(
        user_id=ADMIN, channel_id=CHANNEL, message_ts=root_ts, action_id=ACTION_CANCEL
    )
    assert await harness.settled(session.id, after_version=session.version) is Phase.CANCELLED

"""``require_admin`` / ``require_approver`` / ``require_admin_or_approver``, called as Bolt calls a
listener middleware: who goes through, who is told who may, and that every refusal is recorded
apart from the decisions."""

from __future__ import annotations

import asyncio

from slack_bolt.context.ack.async_ack import AsyncAck

from bot.session.views import ACTION_CANCEL
from handlers.access import require_admin, require_admin_or_approver, require_approver
from state.sessions import REFUSALS_KEPT
from tests.handlers.conftest import (
    Next,
    acked,
    click_body,
    command_body,
    context_for,
    ephemerals_to,
    respond_to,
)
from tests.integration.conftest import ADMIN, APPROVER, GROUP_ADMIN, OUTSIDER, Harness
from tests.integration.steps import latest_link


async def session_with_root(harness: Harness) -> tuple[str, str]:
    """A started session whose step 1 prompt (and its audit entry) is in place."""
    root_ts = await harness.start_session("contoso.com")
    await latest_link(harness, root_ts)
    [session] = await harness.runtime.store.active()
    return root_ts, session.id


async def test_admins_go_through_directly_or_by_user_group(harness: Harness) -> None:
    root_ts, session_id = await session_with_root(harness)
    middleware = require_admin("cancel provisioning")
    for user in (ADMIN, GROUP_ADMIN):
        body = click_body(harness, root_ts, ACTION_CANCEL, user)
        ack, after = AsyncAck(), Next()
        answer = await middleware(
            ack=ack, body=body, context=context_for(harness), respond=respond_to(body), next=after
        )
        assert (answer, after.calls, ack.response) == (None, 1, None)  # the listener acks
    assert await harness.runtime.store.refusals(session_id) == []


async def test_an_outsider_is_acked_told_who_may_and_the_refusal_recorded(
    harness: Harness,
) -> None:
    root_ts, session_id = await session_with_root(harness)
    audit_before = await harness.store.audit(session_id)
    body = click_body(harness, root_ts, ACTION_CANCEL, OUTSIDER)
    ack, after = AsyncAck(), Next()
    answer = await require_admin("cancel provisioning")(
        ack=ack, body=body, context=context_for(harness), respond=respond_to(body), next=after
    )
    assert after.calls == 0
    assert answer is ack.response
    assert acked(ack) == {}
    refusal = await ephemerals_to(harness, OUTSIDER, "You can't cancel provisioning")
    assert f"<@{ADMIN}>" in refusal.text
    assert "<!subteam^S0ADMINS>" in refusal.text
    [recorded] = await harness.runtime.store.refusals(session_id)
    assert (recorded.actor, recorded.action, recorded.result) == (
        OUTSIDER,
        "refused: cancel provisioning",
        "not_allowed",
    )
    assert await harness.store.audit(session_id) == audit_before  # decisions only


async def test_approvers_decide_and_admins_are_not_approvers(harness: Harness) -> None:
    root_ts, session_id = await session_with_root(harness)
    middleware = require_approver("acknowledge role requests")
    body = click_body(harness, root_ts, ACTION_CANCEL, APPROVER)  # any session button will do
    after = Next()
    await middleware(
        ack=AsyncAck(), body=body, context=context_for(harness), respond=None, next=after
    )
    assert after.calls == 1
    body = click_body(harness, root_ts, ACTION_CANCEL, ADMIN)
    await middleware(
        ack=AsyncAck(),
        body=body,
        context=context_for(harness),
        respond=respond_to(body),
        next=after,
    )
    assert after.calls == 1
    refusal = await ephemerals_to(harness, ADMIN, "You can't acknowledge role requests")
    assert f"<@{APPROVER}>" in refusal.text
    assert f"<@{ADMIN}>" not in refusal.text
    [recorded] = await harness.runtime.store.refusals(session_id)
    assert recorded.actor == ADMIN


async def test_a_refused_command_is_answered_and_nothing_is_recorded(harness: Harness) -> None:
    await harness.start_session("contoso.com")
    body = command_body(harness, OUTSIDER, "status")
    ack, after = AsyncAck(), Next()
    await require_admin_or_approver("see provisioning status")(
        ack=ack, body=body, context=context_for(harness), respond=respond_to(body), next=after
    )
    assert after.calls == 0
    assert acked(ack) == {}
    refusal = await ephemerals_to(harness, OUTSIDER, "You can't see provisioning status")
    assert f"<@{APPROVER}>" in refusal.text
    assert f"<@{ADMIN}>" in refusal.text
    assert await harness.redis.keys("pi:*refusals") == []


async def test_when_slack_will_not_list_a_user_group_nothing_is_done_and_it_is_said(
    harness: Harness,
) -> None:
    root_ts, session_id = await session_with_root(harness)
    harness.slack.fail_next("usergroups.users.list", "ratelimited")
    body = click_body(harness, root_ts, ACTION_CANCEL, GROUP_ADMIN)
    after = Next()
    await require_admin("cancel provisioning")(
        ack=AsyncAck(),
        body=body,
        context=context_for(harness),
        respond=respond_to(body),
        next=after,
    )
    assert after.calls == 0
    note = await ephemerals_to(harness, GROUP_ADMIN, "I could not check who belongs to S0ADMINS")
    assert "`ratelimited`" in note.text
    assert "nothing was done" in note.text
    [recorded] = await harness.runtime.store.refusals(session_id)
    assert recorded.detail == {"reason": "could not list S0ADMINS"}


async def test_a_flood_of_refused_clicks_never_pushes_decisions_out_of_the_audit(
    harness: Harness,
) -> None:
    root_ts, session_id = await session_with_root(harness)
    decisions = await harness.store.audit(session_id)
    middleware = require_admin("cancel provisioning")
    context = context_for(harness)

    async def refused_click() -> None:
        body = click_body(harness, root_ts, ACTION_CANCEL, OUTSIDER)
        await middleware(
            ack=AsyncAck(), body=body, context=context, respond=respond_to(body), next=Next()
        )

    await asyncio.gather(*(refused_click() for _ in range(150)))
    # Each refusal is recorded before its reply is sent: 150 replies, 150 records.
    await harness.slack.wait_for(
        lambda s: len([e for e in s.ephemerals if e.user == OUTSIDER]) == 150 or None
    )
    assert await harness.store.audit(session_id) == decisions
    refusals = await harness.runtime.store.refusals(session_id, count=1000)
    assert len(refusals) == REFUSALS_KEPT < 150  # capped: the oldest went first
    assert {r.actor for r in refusals} == {OUTSIDER}
    assert [r.id for r in refusals] == sorted(r.id for r in refusals)
    # The session's decisions still come through: an admin cancels, and status shows it.
    body = click_body(harness, root_ts, ACTION_CANCEL, ADMIN)
    after = Next()
    await middleware(
        ack=AsyncAck(), body=body, context=context, respond=respond_to(body), next=after
    )
    assert after.calls == 1
    latest = await harness.runtime.store.latest_audit(session_id, count=len(decisions))
    assert latest == decisions  # nothing but decisions, newest last

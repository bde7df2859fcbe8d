"""The App Home tab, called directly: admins see the active sessions, others an empty list."""

from __future__ import annotations

import json
from dataclasses import replace

from slack_bolt.context.ack.async_ack import AsyncAck

from bot.workflow import Phase
from handlers.home import home_opened
from tests.handlers.conftest import context_for
from tests.integration.conftest import ADMIN, APPROVER, OUTSIDER, Harness
from tests.integration.test_session_store import new_session


def published_for(harness: Harness, user_id: str) -> str:
    [call] = [c for c in harness.slack.calls_to("views.publish") if c.params["user_id"] == user_id]
    return json.dumps(call.params["view"])


async def test_home_shows_admins_the_active_sessions_and_others_none(harness: Harness) -> None:
    await harness.start_session("contoso.com")
    for user in (ADMIN, OUTSIDER):
        event = {"type": "app_home_opened", "user": user, "tab": "home"}
        await home_opened(ack=AsyncAck(), event=event, context=context_for(harness))
    assert "contoso.com" in published_for(harness, ADMIN)
    assert "contoso.com" not in published_for(harness, OUTSIDER)


async def test_the_messages_tab_publishes_nothing(harness: Harness) -> None:
    event = {"type": "app_home_opened", "user": ADMIN, "tab": "messages"}
    await home_opened(ack=AsyncAck(), event=event, context=context_for(harness))
    assert harness.slack.calls_to("views.publish") == []


async def test_home_shows_the_newest_sessions_and_counts_the_rest(harness: Harness) -> None:
    """Many sessions: the newest 10 are shown (read from the index), the others counted."""
    for n in range(15):
        session = replace(
            new_session(f"s{n:02d}", f"tenant-{n}"), tenant_label=f"t{n:02d}.example", updated_at=n
        )
        await harness.store.create(session, detail={})
    event = {"type": "app_home_opened", "user": ADMIN, "tab": "home"}
    await home_opened(ack=AsyncAck(), event=event, context=context_for(harness))

    shown = published_for(harness, ADMIN)
    assert "t14.example" in shown  # the newest
    assert "t05.example" in shown
    assert "t04.example" not in shown  # the five oldest are counted, not shown
    assert "and 5 more active session(s)" in shown


async def test_approvers_see_the_longest_waiting_requests_and_how_many_more_wait(
    harness: Harness,
) -> None:
    for n in range(12):
        session = replace(
            new_session(f"r{n:02d}", f"tenant-r{n}"),
            tenant_label=f"r{n:02d}.example",
            phase=Phase.ROLE_REQUESTED,
            updated_at=n,
        )
        await harness.store.create(session, detail={})
    await harness.store.create(new_session("other", "tenant-other"), detail={})
    event = {"type": "app_home_opened", "user": APPROVER, "tab": "home"}
    await home_opened(ack=AsyncAck(), event=event, context=context_for(harness))

    shown = published_for(harness, APPROVER)
    assert "r00.example" in shown  # waiting longest
    assert "r09.example" in shown
    assert "r10.example" not in shown
    assert "and 2 more active session(s)" in shown
    assert "other" not in shown  # not waiting for an approver

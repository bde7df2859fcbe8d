"""The start form's submission, called directly: field errors in the ack, a slow Microsoft, a
started session, a tenant already being provisioned."""

from __future__ import annotations

from slack_bolt.context.ack.async_ack import AsyncAck

from handlers.modals import start_submitted
from tests.handlers.conftest import acked, context_for, ephemerals_to, submission_body
from tests.integration.conftest import ADMIN, GROUP_ADMIN, Harness


async def submit(harness: Harness, tenant: str, user: str = ADMIN) -> tuple[AsyncAck, str]:
    view_id = await harness.open_start_modal(user)
    body = submission_body(harness, view_id, {"tenant_input": tenant}, user)
    ack = AsyncAck()
    await start_submitted(ack=ack, body=body, view=body["view"], context=context_for(harness))
    return ack, view_id


async def test_a_malformed_or_unknown_tenant_is_a_field_error(harness: Harness) -> None:
    ack, _ = await submit(harness, "not a domain!")
    assert set(acked(ack)["errors"]) == {"tenant"}
    ack, _ = await submit(harness, "nosuchtenant.example")
    answer = acked(ack)
    assert answer["response_action"] == "errors"
    assert "Microsoft knows no tenant called nosuchtenant.example" in answer["errors"]["tenant"]
    assert await harness.runtime.store.active() == []


async def test_a_known_tenant_starts_its_session_and_a_second_start_points_to_it(
    harness: Harness,
) -> None:
    ack, _ = await submit(harness, "contoso.com")
    assert acked(ack) == {}
    await harness.wait_for_root("contoso.com")
    [session] = await harness.runtime.store.active()
    assert session.started_by == ADMIN
    ack, _ = await submit(harness, "contoso.com", GROUP_ADMIN)
    assert acked(ack) == {}
    await ephemerals_to(harness, GROUP_ADMIN, "already under way")
    assert len(await harness.runtime.store.active()) == 1


async def test_a_slow_microsoft_gets_a_checking_view_then_the_started_one(
    harness: Harness,
) -> None:
    harness.microsoft.set_latency(5.0, "login")
    ack, view_id = await submit(harness, "contoso.com")
    answer = acked(ack)
    assert answer["response_action"] == "update"
    assert "Looking up *contoso.com* with Microsoft" in str(answer["view"]["blocks"])
    # The listener has returned: the session is started and the form says so.
    assert "has started" in str(harness.slack.views[view_id].view["blocks"])
    assert len(await harness.runtime.store.active()) == 1

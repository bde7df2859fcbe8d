"""The change plan's buttons, called directly: Check again, Acknowledge warnings, Retry (when
there is nothing to retry), Submit."""

from __future__ import annotations

from slack_bolt.context.ack.async_ack import AsyncAck

from bot.steps.mailflow.views import (
    ACTION_ACKNOWLEDGE,
    ACTION_CHECK_AGAIN,
    ACTION_RETRY,
    ACTION_SUBMIT,
)
from bot.workflow import Phase
from handlers.plan import acknowledge_clicked, check_again_clicked, retry_clicked, submit_clicked
from tests.handlers.conftest import acked, context_for, ephemerals_to, respond_to
from tests.integration.conftest import ADMIN, CHANNEL, Harness
from tests.integration.test_apply import org, outcome, plan_shown, with_button


def plan_button(harness: Harness, root_ts: str, action_id: str) -> dict[str, object]:
    message = with_button(harness, root_ts, action_id)
    assert message is not None, f"no {action_id} in the thread"
    request = harness.driver.build_click(
        user_id=ADMIN, channel_id=CHANNEL, message_ts=message.ts, action_id=action_id
    )
    return dict(request.payload)


async def test_the_plan_s_buttons(harness: Harness) -> None:
    org(harness).objects.setdefault("OutboundConnector", {})["archive connector"] = {
        "Identity": "Archive Connector",
        "Name": "Archive Connector",
        "Guid": "guid-archive",
        "Enabled": True,
        "ConnectorType": "Partner",
        "IsTransportRuleScoped": True,
        "SmartHosts": ["archive.example.org"],
    }  # an unrelated connector: a warning to acknowledge
    root_ts, session_id = await plan_shown(harness)
    context = context_for(harness)

    body = plan_button(harness, root_ts, ACTION_CHECK_AGAIN)
    ack = AsyncAck()
    await check_again_clicked(ack=ack, body=body, respond=respond_to(body), context=context)
    assert acked(ack) == {}
    assert [
        e.actor for e in await harness.store.audit(session_id) if e.action == "plan_check_again"
    ] == [ADMIN]

    # Nothing has failed, so there is no Retry button yet: a stale one (it carries the session
    # id, as the plan's buttons do) is told the session has moved on.
    assert with_button(harness, root_ts, ACTION_RETRY) is None
    body = plan_button(harness, root_ts, ACTION_SUBMIT)
    body["actions"][0]["action_id"] = ACTION_RETRY  # type: ignore[index]
    ack = AsyncAck()
    await retry_clicked(ack=ack, body=body, respond=respond_to(body), context=context)
    assert acked(ack) == {}
    await ephemerals_to(harness, ADMIN, "Nothing was changed")

    body = plan_button(harness, root_ts, ACTION_ACKNOWLEDGE)
    ack = AsyncAck()
    await acknowledge_clicked(ack=ack, body=body, respond=respond_to(body), context=context)
    assert acked(ack) == {}
    assert any("acknowledged the 1 warning" in m.text for m in harness.thread(root_ts))

    after = len(harness.thread(root_ts))
    body = plan_button(harness, root_ts, ACTION_SUBMIT)
    ack = AsyncAck()
    await submit_clicked(ack=ack, body=body, respond=respond_to(body), context=context)
    assert acked(ack) == {}
    assert await outcome(harness, root_ts, session_id, after) is Phase.PROTECTED

"""Step 2's listeners, called directly: the request form, the decision, the assignment help."""

from __future__ import annotations

from slack_bolt.context.ack.async_ack import AsyncAck

from bot.steps.role.views import (
    ACTION_ACKNOWLEDGE,
    ACTION_ASSIGN_SIGN_IN,
    ACTION_CHECK,
    ACTION_PORTAL,
    ACTION_REQUEST_OPEN_PIM,
    ACTION_WITHDRAW,
)
from bot.workflow import Phase
from handlers.role import (
    assignment_help,
    decided,
    open_request,
    request_submitted,
    sign_in_opened,
)
from tests.handlers.conftest import (
    acked,
    click_body,
    context_for,
    ephemerals_to,
    respond_to,
    submission_body,
)
from tests.integration.conftest import ADMIN, APPROVER, CHANNEL, OUTSIDER, Harness
from tests.integration.test_role import JUSTIFICATION, at_step_two, phase_of, wait_button


async def requested(harness: Harness) -> tuple[str, str]:
    """Step 2 with the request form opened by the listener and submitted. (root ts, id)"""
    root_ts, session_id = await at_step_two(harness)
    ts = await wait_button(harness, root_ts, ACTION_REQUEST_OPEN_PIM)
    body = click_body(harness, ts, ACTION_REQUEST_OPEN_PIM, ADMIN)
    ack = AsyncAck()
    await open_request(ack=ack, body=body, respond=respond_to(body), context=context_for(harness))
    assert acked(ack) == {}
    [form] = [v for v in harness.slack.open_views(ADMIN) if v.callback_id == "role_request"]

    empty = submission_body(harness, form.id, {"justification_input": ""}, enforce=False)
    ack = AsyncAck()
    await request_submitted(ack=ack, body=empty, view=empty["view"], context=context_for(harness))
    assert acked(ack)["response_action"] == "errors"
    assert await phase_of(harness, session_id) is Phase.MAILFLOW_CONSENTED

    body = submission_body(harness, form.id, {"justification_input": JUSTIFICATION})
    ack = AsyncAck()
    await request_submitted(ack=ack, body=body, view=body["view"], context=context_for(harness))
    assert acked(ack) == {}
    assert await phase_of(harness, session_id) is Phase.ROLE_REQUESTED
    return root_ts, session_id


async def test_the_request_form_opens_checks_its_fields_and_submits(harness: Harness) -> None:
    root_ts, _ = await requested(harness)
    await wait_button(harness, root_ts, ACTION_ACKNOWLEDGE)


async def test_the_requester_alone_may_withdraw_and_an_approver_acknowledges(
    harness: Harness,
) -> None:
    root_ts, session_id = await requested(harness)
    ts = await wait_button(harness, root_ts, ACTION_ACKNOWLEDGE)
    body = click_body(harness, ts, ACTION_WITHDRAW, OUTSIDER)
    ack = AsyncAck()
    await decided(ack=ack, body=body, respond=respond_to(body), context=context_for(harness))
    assert acked(ack) == {}
    refusal = await ephemerals_to(harness, OUTSIDER, "who made the request, can withdraw it")
    assert f"<@{ADMIN}>" in refusal.text
    assert await phase_of(harness, session_id) is Phase.ROLE_REQUESTED

    body = click_body(harness, ts, ACTION_ACKNOWLEDGE, APPROVER)
    await decided(ack=AsyncAck(), body=body, respond=respond_to(body), context=context_for(harness))
    assert await phase_of(harness, session_id) is Phase.ROLE_ACKNOWLEDGED


async def test_assignment_help_and_the_sign_in_button(harness: Harness) -> None:
    root_ts, session_id = await requested(harness)
    ts = await wait_button(harness, root_ts, ACTION_ACKNOWLEDGE)
    body = click_body(harness, ts, ACTION_ACKNOWLEDGE, APPROVER)
    await decided(ack=AsyncAck(), body=body, respond=respond_to(body), context=context_for(harness))

    ts = await wait_button(harness, root_ts, ACTION_ASSIGN_SIGN_IN)
    ack = AsyncAck()
    body = click_body(harness, ts, ACTION_ASSIGN_SIGN_IN, ADMIN)
    await sign_in_opened(ack=ack, body=body, context=context_for(harness))
    assert acked(ack) == {}

    before = len(harness.thread(root_ts))
    body = click_body(harness, ts, ACTION_PORTAL, ADMIN)
    ack = AsyncAck()
    await assignment_help(
        ack=ack, body=body, respond=respond_to(body), context=context_for(harness)
    )
    assert acked(ack) == {}
    # The portal's steps, in the step's own message (edited, not a new post).
    await harness.slack.wait_for(
        lambda s: "Roles and administrators" in str(s.message(CHANNEL, ts).blocks)
    )
    assert len(harness.thread(root_ts)) == before
    # "I've assigned it" before directory sync is consented: recorded as said, not checked.
    ts = await wait_button(harness, root_ts, ACTION_CHECK)
    body = click_body(harness, ts, ACTION_CHECK, ADMIN)
    await assignment_help(
        ack=AsyncAck(), body=body, respond=respond_to(body), context=context_for(harness)
    )
    assert await phase_of(harness, session_id) is Phase.ROLE_ASSIGNED

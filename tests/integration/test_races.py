"""Two people acting at once on one session (issue 8): each race ends in exactly one decision, the
one who lost is told who was first, and Microsoft gets exactly the request an approver
acknowledged. The two actions go out together (``asyncio.gather``) as signed requests through the
real HTTP stack; either may win, and the assertions hold for both orders.
"""

from __future__ import annotations

import asyncio
from collections import Counter

import httpx

from bot.sandbox.microsoft import EXCHANGE_ADMINISTRATOR, PolicyRules
from bot.steps.mailflow.views import ACTION_SUBMIT
from bot.steps.role.model import RoleRequest, SeenRequest
from bot.steps.role.views import (
    ACTION_ACKNOWLEDGE,
    ACTION_ASSIGN_SIGN_IN,
    ACTION_NEW_SIGN_IN,
    ACTION_REQUEST_AMEND,
    ACTION_REQUEST_OPEN_PIM,
)
from bot.workflow import Event, EventKind, Phase, Session
from tests.integration.conftest import (
    ADMIN,
    APPROVER,
    CHANNEL,
    CONTOSO_ID,
    GROUP_ADMIN,
    ROLE_ADMIN_UPN,
    SECOND_APPROVER,
    Harness,
    ephemeral_for,
    session_keys,
)
from tests.integration.steps import microsoft_answer, sign_in_url
from tests.integration.test_apply import (
    announcements,
    exchange_writes,
    expected_named,
    outcome,
    plan_shown,
)
from tests.integration.test_apply import with_button as last_with_button
from tests.integration.test_role import (
    JUSTIFICATION,
    at_step_two,
    click,
    request_role,
    sign_in_and_assign,
    wait_button,
    with_button,
)


async def session_of(harness: Harness, session_id: str) -> Session:
    session: Session = await harness.store.require(session_id)
    return session


def button_url(harness: Harness, root_ts: str, action_id: str) -> str | None:
    """The link of the newest ``action_id`` button in the thread."""
    for message in reversed(harness.thread(root_ts)):
        for block in message.blocks:
            for element in block.get("elements", []):
                if element.get("action_id") == action_id:
                    return str(element.get("url"))
    return None


def schedule_justifications(harness: Harness) -> list[str]:
    """What Microsoft was asked to assign (PIM requests), in order."""
    return [r["justification"] for r in harness.microsoft.tenant(CONTOSO_ID).schedule_requests]


async def open_request_form(harness: Harness, root_ts: str, opener: str, user: str) -> str:
    """Click ``opener`` as ``user``; the id of the request form that opens."""
    before = {view.id for view in harness.slack.open_views(user)}
    await click(harness, root_ts, opener, user)
    [view] = await harness.slack.wait_for(
        lambda s: [v for v in s.open_views(user) if v.id not in before] or None
    )
    return str(view.id)


async def sign_in_form(
    harness: Harness, root_ts: str, *, clicker: str, upn: str
) -> tuple[str, dict[str, str]]:
    """``clicker`` presses "Assign for me" and ``upn`` signs in at Microsoft; returns the form
    the browser would post back to the bot (action, fields), not yet posted."""
    ts = await wait_button(harness, root_ts, ACTION_ASSIGN_SIGN_IN)
    session_id = (await harness.store.active())[0].id
    before = await harness.version_of(session_id)
    await harness.driver.click(
        user_id=clicker, channel_id=CHANNEL, message_ts=ts, action_id=ACTION_ASSIGN_SIGN_IN
    )
    await harness.settled(session_id, after_version=before)  # who opened it is recorded
    return await microsoft_answer(harness, sign_in_url(harness, ts), upn)


async def post_form(action: str, fields: dict[str, str]) -> httpx.Response:
    async with httpx.AsyncClient(timeout=10) as browser:
        return await browser.post(action, data=fields)


async def test_two_acknowledgements_at_once_make_one_and_that_request_is_assigned(
    harness: Harness,
) -> None:
    root_ts, session_id = await at_step_two(harness)
    await request_role(
        harness, root_ts, {"justification_input": JUSTIFICATION}, opener=ACTION_REQUEST_OPEN_PIM
    )
    ts = await wait_button(harness, root_ts, ACTION_ACKNOWLEDGE)
    clicks = [
        harness.driver.build_click(
            user_id=user, channel_id=CHANNEL, message_ts=ts, action_id=ACTION_ACKNOWLEDGE
        )
        for user in (APPROVER, SECOND_APPROVER)
    ]
    await asyncio.gather(*(harness.driver.send(c) for c in clicks))

    [loser_reply] = await harness.slack.wait_for(
        lambda s: [e for e in s.ephemerals if "Already done" in e.text] or None
    )
    session = await session_of(harness, session_id)
    ack = session.role.acknowledgement
    assert session.phase is Phase.ROLE_ACKNOWLEDGED
    assert ack is not None
    assert session.role.request is not None
    assert ack.request_digest == session.role.request.digest()
    assert loser_reply.user == ({APPROVER, SECOND_APPROVER} - {ack.by}).pop()
    assert f"<@{ack.by}> acknowledged the role request" in loser_reply.text
    audit = await harness.store.audit(session_id)
    assert [e.actor for e in audit if e.action == "role_acknowledge"] == [ack.by]

    page = await sign_in_and_assign(harness, root_ts, ROLE_ADMIN_UPN)
    assert "role assigned" in page.text
    assert schedule_justifications(harness) == [session.role.request.justification]


async def test_acknowledge_while_the_request_is_amended(harness: Harness) -> None:
    """After Microsoft asked for a ticket, the admin amends the acknowledged request while a
    second approver clicks Acknowledge on the review of the old one (a stale view)."""
    harness.microsoft.tenant(CONTOSO_ID).role_policies[EXCHANGE_ADMINISTRATOR] = PolicyRules(
        enabled_rules=("Justification", "Ticketing")
    )
    root_ts, session_id = await at_step_two(harness)
    await request_role(
        harness, root_ts, {"justification_input": JUSTIFICATION}, opener=ACTION_REQUEST_OPEN_PIM
    )
    review_ts = await wait_button(harness, root_ts, ACTION_ACKNOWLEDGE)
    # The second approver's view of the first request, clicked later.
    stale_ack = harness.driver.build_click(
        user_id=SECOND_APPROVER,
        channel_id=CHANNEL,
        message_ts=review_ts,
        action_id=ACTION_ACKNOWLEDGE,
    )
    await click(harness, root_ts, ACTION_ACKNOWLEDGE, APPROVER)
    page = await sign_in_and_assign(harness, root_ts, ROLE_ADMIN_UPN)
    assert "not assigned" in page.text
    assert schedule_justifications(harness) == []  # refused by the policy: nothing assigned
    first = (await session_of(harness, session_id)).role.request
    assert first is not None

    form = await open_request_form(harness, root_ts, ACTION_REQUEST_AMEND, ADMIN)
    amended = "Inline mail protection, with the change ticket Microsoft asked for"
    amend = harness.driver.build_view_submission(
        user_id=ADMIN,
        view_id=form,
        values={
            "justification_input": amended,
            "ticket_number_input": "INC-77",
            "ticket_system_input": "Jira",
        },
    )
    await asyncio.gather(harness.driver.send(stale_ack), harness.driver.send(amend))

    reply = await ephemeral_for(harness, SECOND_APPROVER, "Nothing was changed")
    # Whichever came first, the approver is told who: the first approver, or the admin who
    # replaced the request they were looking at.
    assert f"<@{APPROVER}> acknowledged" in reply.text or f"<@{ADMIN}> sent" in reply.text

    # The approver refused first is answered before the amendment (acked already) is stored.
    async def amended_request() -> Session | None:
        found = await session_of(harness, session_id)
        return found if found.phase is not Phase.ROLE_ACKNOWLEDGED else None

    session = await harness.stored(session_keys(session_id), amended_request)
    assert session.phase is Phase.ROLE_REQUESTED
    assert session.role.request is not None
    assert session.role.request.justification == amended
    assert session.role.acknowledgement is None  # the amended request waits for its own
    audit = await harness.store.audit(session_id)
    acks = [e for e in audit if e.action == "role_acknowledge"]
    assert [(e.actor, e.detail["request_digest"]) for e in acks] == [(APPROVER, first.digest())]

    await harness.slack.wait_for(
        lambda s: len(with_button(harness, root_ts, ACTION_ACKNOWLEDGE)) == 1
    )
    await click(harness, root_ts, ACTION_ACKNOWLEDGE, SECOND_APPROVER)
    page = await sign_in_and_assign(harness, root_ts, ROLE_ADMIN_UPN)
    assert "role assigned" in page.text
    assert schedule_justifications(harness) == [amended]
    [assigned] = harness.microsoft.tenant(CONTOSO_ID).schedule_requests
    assert assigned["ticketInfo"]["ticketNumber"] == "INC-77"


async def test_a_click_on_a_stale_review_acknowledges_nothing(harness: Harness) -> None:
    """The same stale view, clicked after the amendment (the order the race may not show)."""
    harness.microsoft.tenant(CONTOSO_ID).role_policies[EXCHANGE_ADMINISTRATOR] = PolicyRules(
        enabled_rules=("Justification", "Ticketing")
    )
    root_ts, session_id = await at_step_two(harness)
    await request_role(
        harness, root_ts, {"justification_input": JUSTIFICATION}, opener=ACTION_REQUEST_OPEN_PIM
    )
    review_ts = await wait_button(harness, root_ts, ACTION_ACKNOWLEDGE)
    stale_ack = harness.driver.build_click(
        user_id=SECOND_APPROVER,
        channel_id=CHANNEL,
        message_ts=review_ts,
        action_id=ACTION_ACKNOWLEDGE,
    )
    await click(harness, root_ts, ACTION_ACKNOWLEDGE, APPROVER)
    await sign_in_and_assign(harness, root_ts, ROLE_ADMIN_UPN)
    response = await request_role(
        harness,
        root_ts,
        {
            "justification_input": "Amended after Microsoft asked for a ticket",
            "ticket_number_input": "INC-78",
            "ticket_system_input": "Jira",
        },
        opener=ACTION_REQUEST_AMEND,
    )
    assert harness.driver.view_errors(response) == {}
    await harness.slack.wait_for(
        lambda s: len(with_button(harness, root_ts, ACTION_ACKNOWLEDGE)) == 1
    )
    await harness.driver.send(stale_ack)
    reply = await ephemeral_for(harness, SECOND_APPROVER, "changed after you saw it")
    assert f"<@{ADMIN}>" in reply.text
    session = await session_of(harness, session_id)
    assert session.phase is Phase.ROLE_REQUESTED
    assert session.role.acknowledgement is None


async def _signing_in_with_a_form_left_open(
    harness: Harness,
) -> tuple[str, str, RoleRequest, str, dict[str, str]]:
    """Another admin opens the first request form while the step still offers it and leaves it
    open; the request is made and acknowledged, and the sign-in's answer is ready to post:
    the session, the open form, the acknowledged request, and where and what to post."""
    root_ts, session_id = await at_step_two(harness)
    form = await open_request_form(harness, root_ts, ACTION_REQUEST_OPEN_PIM, GROUP_ADMIN)
    await request_role(
        harness, root_ts, {"justification_input": JUSTIFICATION}, opener=ACTION_REQUEST_OPEN_PIM
    )
    await click(harness, root_ts, ACTION_ACKNOWLEDGE, APPROVER)
    acknowledged = (await session_of(harness, session_id)).role.request
    assert acknowledged is not None
    action, fields = await sign_in_form(harness, root_ts, clicker=ADMIN, upn=ROLE_ADMIN_UPN)
    return session_id, form, acknowledged, action, fields


async def test_sign_in_return_while_the_request_is_resubmitted(harness: Harness) -> None:
    session_id, form, acknowledged, action, fields = await _signing_in_with_a_form_left_open(
        harness
    )
    changed = "A different justification, sent while the sign-in comes back"
    resubmit = harness.driver.build_view_submission(
        user_id=GROUP_ADMIN, view_id=form, values={"justification_input": changed}
    )

    page, _ = await asyncio.gather(post_form(action, fields), harness.driver.send(resubmit))

    # A first request's form cannot replace a request already made, whichever comes first:
    # the acknowledged request goes to Microsoft, and the admin is told who requested it.
    reply = await ephemeral_for(harness, GROUP_ADMIN, "Nothing was changed")
    assert f"<@{ADMIN}>" in reply.text
    assert "role assigned" in page.text
    session = await session_of(harness, session_id)
    assert session.phase is Phase.ROLE_ASSIGNED
    assert session.role.request == acknowledged
    assert schedule_justifications(harness) == [JUSTIFICATION]


async def test_two_submits_at_once_apply_the_plan_once(harness: Harness) -> None:
    root_ts, session_id = await plan_shown(harness)
    message = last_with_button(harness, root_ts, ACTION_SUBMIT)
    assert message is not None
    after = len(harness.thread(root_ts))
    clicks = [
        harness.driver.build_click(
            user_id=user, channel_id=CHANNEL, message_ts=message.ts, action_id=ACTION_SUBMIT
        )
        for user in (ADMIN, GROUP_ADMIN)
    ]
    await asyncio.gather(*(harness.driver.send(c) for c in clicks))

    [loser_reply] = await harness.slack.wait_for(
        lambda s: [e for e in s.ephemerals if "Already done" in e.text] or None
    )
    assert await outcome(harness, root_ts, session_id, after) is Phase.PROTECTED
    audit = await harness.store.audit(session_id)
    [submitted] = [e for e in audit if e.action == "submit"]
    assert loser_reply.user == ({ADMIN, GROUP_ADMIN} - {submitted.actor}).pop()
    assert f"<@{submitted.actor}> submitted the change plan" in loser_reply.text
    created = Counter(
        parameters.get("Name")
        for cmdlet, parameters in exchange_writes(harness)
        if "New-" in cmdlet
    )
    assert created
    assert max(created.values()) == 1  # nothing created twice
    assert {name for _, name in expected_named(harness)} <= set(created)
    assert len(announcements(harness, CHANNEL)) == 1


async def test_a_sign_in_interrupted_before_microsoft_answered_is_released(
    harness: Harness,
) -> None:
    """A process that stopped between claiming the request and Microsoft's answer leaves the
    session assigning; the sweep gives the step back after a while, with the same request and
    acknowledgement (nothing to approve again)."""
    root_ts, session_id = await at_step_two(harness)
    await request_role(
        harness, root_ts, {"justification_input": JUSTIFICATION}, opener=ACTION_REQUEST_OPEN_PIM
    )
    await click(harness, root_ts, ACTION_ACKNOWLEDGE, APPROVER)
    await wait_button(harness, root_ts, ACTION_ASSIGN_SIGN_IN)
    acknowledged = (await session_of(harness, session_id)).role.request
    assert acknowledged is not None
    provisioner = harness.runtime.provisioner
    claim = Event(
        EventKind.ROLE_ASSIGNING,
        GROUP_ADMIN,
        provisioner.now(),
        payload=SeenRequest(acknowledged.digest()),
    )
    await provisioner.handle(session_id, claim)  # ...and the process stops here
    role_step = harness.runtime.role_step
    await role_step.remind_and_expire()
    assert (await session_of(harness, session_id)).phase is Phase.ROLE_ASSIGNING  # still early
    harness.clock.advance(16 * 60)
    await role_step.remind_and_expire()
    session = await session_of(harness, session_id)
    assert session.phase is Phase.ROLE_ACKNOWLEDGED
    assert session.role.acknowledged_request == acknowledged
    assert any("was interrupted" in m.text for m in harness.thread(root_ts))
    stale = button_url(harness, root_ts, ACTION_ASSIGN_SIGN_IN)
    await click(harness, root_ts, ACTION_NEW_SIGN_IN, ADMIN)  # the first link has expired
    await harness.slack.wait_for(
        lambda s: button_url(harness, root_ts, ACTION_ASSIGN_SIGN_IN) != stale
    )
    page = await sign_in_and_assign(harness, root_ts, ROLE_ADMIN_UPN)
    assert "role assigned" in page.text
    assert schedule_justifications(harness) == [JUSTIFICATION]


async def test_a_first_request_form_sent_after_the_sign_in_names_who_requested(
    harness: Harness,
) -> None:
    """The order the race above may take: the role is assigned first, then the other admin's
    form arrives. It is refused, naming who requested the role, and changes nothing."""
    session_id, form, acknowledged, action, fields = await _signing_in_with_a_form_left_open(
        harness
    )
    page = await post_form(action, fields)
    assert "role assigned" in page.text
    resubmit = harness.driver.build_view_submission(
        user_id=GROUP_ADMIN,
        view_id=form,
        values={"justification_input": "Sent too late, after the sign-in"},
    )
    await harness.driver.send(resubmit)
    reply = await ephemeral_for(harness, GROUP_ADMIN, "Nothing was changed")
    assert f"<@{ADMIN}> requested the role" in reply.text
    session = await session_of(harness, session_id)
    assert session.phase is Phase.ROLE_ASSIGNED
    assert session.role.request == acknowledged

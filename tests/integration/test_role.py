"""Step 2 end to end: request in a modal, approvers in the thread, assignment two ways."""

from __future__ import annotations

import asyncio
import json
import logging

import httpx
import pytest

from bot.jobs import RESUME_WITHIN_SECONDS
from bot.sandbox.microsoft import EXCHANGE_ADMINISTRATOR, PolicyRules
from bot.session.service import STEP_MESSAGE
from bot.steps.role.model import RoleRequest, SeenRequest
from bot.steps.role.step import _MESSAGE as STEP_MESSAGE_NAME
from bot.steps.role.views import (
    ACTION_ACKNOWLEDGE,
    ACTION_ASSIGN_SIGN_IN,
    ACTION_CHECK,
    ACTION_DECLINE,
    ACTION_NEW_SIGN_IN,
    ACTION_PORTAL,
    ACTION_REQUEST_AMEND,
    ACTION_REQUEST_OPEN,
    ACTION_REQUEST_OPEN_DIRECT,
    ACTION_REQUEST_OPEN_PIM,
    ACTION_WITHDRAW,
)
from bot.workflow import Event, EventKind, Phase
from tests.conftest import DIRSYNC_CLIENT_ID, MAILFLOW_CLIENT_ID
from tests.integration.conftest import (
    ADMIN,
    APPROVER,
    CHANNEL,
    CONTOSO_ID,
    EXCHANGE_ADMIN_UPN,
    FABRIKAM_ID,
    GROUP_ADMIN,
    OUTSIDER,
    ROLE_ADMIN_UPN,
    SECOND_APPROVER,
    Harness,
    ephemeral_for,
    session_keys,
)
from tests.integration.steps import consent_now, microsoft_answer, sign_in_url
from tests.integration.test_verification import click_verify, finished

JUSTIFICATION = 'Inline mail protection for CHG-1234: "Exchange" <mail-flow> & more — ok?'


def button_ts(harness: Harness, root_ts: str, action_id: str) -> str:
    for message in reversed(harness.thread(root_ts)):
        if f'"action_id": "{action_id}"' in json.dumps(message.blocks):
            return message.ts
    raise AssertionError(f"no {action_id} button in the thread")


async def wait_button(harness: Harness, root_ts: str, action_id: str) -> str:
    needle = f'"action_id": "{action_id}"'
    await harness.slack.wait_for(
        lambda s: any(needle in json.dumps(m.blocks) for m in harness.thread(root_ts))
    )
    return button_ts(harness, root_ts, action_id)


async def review_posted(harness: Harness, root_ts: str, session_id: str) -> str:
    """The ts of the step's message once it shows the review (Acknowledge) and the bot has kept
    it as the step's message: deciding or closing the request edits the message it finds kept."""
    review_ts = await wait_button(harness, root_ts, ACTION_ACKNOWLEDGE)

    async def ts_stored() -> bool:
        session = await harness.store.require(session_id)
        provisioner = harness.runtime.provisioner
        return await provisioner.kept(session, STEP_MESSAGE_NAME, STEP_MESSAGE) == review_ts

    await harness.stored(session_keys(session_id), ts_stored)
    return review_ts


async def click(harness: Harness, root_ts: str, action_id: str, user: str) -> None:
    ts = await wait_button(harness, root_ts, action_id)
    response = await harness.driver.click(
        user_id=user, channel_id=CHANNEL, message_ts=ts, action_id=action_id
    )
    assert response.status_code == 200


async def at_step_two(
    harness: Harness, tenant: str = "contoso.com", *, dirsync_consented: bool = False
) -> tuple[str, str]:
    if dirsync_consented:
        harness.microsoft.consent(
            CONTOSO_ID if tenant == "contoso.com" else FABRIKAM_ID, DIRSYNC_CLIENT_ID
        )
    root_ts = await harness.start_session(tenant)
    await consent_now(
        harness, root_ts, upn="ga@contoso.com" if tenant == "contoso.com" else "ga@fabrikam.example"
    )
    [session] = await harness.runtime.store.active()
    return root_ts, session.id


async def request_role(
    harness: Harness,
    root_ts: str,
    values: dict[str, str],
    *,
    opener: str = ACTION_REQUEST_OPEN,
    user: str = ADMIN,
) -> httpx.Response:
    before = {view.id for view in harness.slack.open_views(user)}
    await click(harness, root_ts, opener, user)
    [view] = await harness.slack.wait_for(
        lambda s: [v for v in s.open_views(user) if v.id not in before] or None
    )
    assert view.callback_id == "role_request"
    return await harness.driver.submit_view(user_id=user, view_id=view.id, values=values)


def with_button(harness: Harness, root_ts: str, action_id: str) -> list[str]:
    needle = f'"action_id": "{action_id}"'
    return [m.ts for m in harness.thread(root_ts) if needle in json.dumps(m.blocks)]


async def sign_in_and_assign(
    harness: Harness, root_ts: str, upn: str, *, nth: int = 1
) -> httpx.Response:
    """Press the ``nth`` "Assign for me" of the thread, sign in at Microsoft, and let the
    browser post the answer back."""
    found = await harness.slack.wait_for(
        lambda s: with_button(harness, root_ts, ACTION_ASSIGN_SIGN_IN)[nth - 1 : nth] or None
    )
    ts = found[0]
    await harness.driver.click(
        user_id=ADMIN, channel_id=CHANNEL, message_ts=ts, action_id=ACTION_ASSIGN_SIGN_IN
    )
    action, fields = await microsoft_answer(harness, sign_in_url(harness, ts), upn)
    async with httpx.AsyncClient(timeout=10) as browser:
        return await browser.post(action, data=fields)


async def phase_of(harness: Harness, session_id: str) -> Phase:
    return (await harness.runtime.store.require(session_id)).phase


async def test_pim_tenant_request_with_ticket_and_schedule_reaches_microsoft_exactly(
    harness: Harness,
) -> None:
    tenant = harness.microsoft.tenant(CONTOSO_ID)
    tenant.role_policies[EXCHANGE_ADMINISTRATOR] = PolicyRules(
        enabled_rules=("Justification", "Ticketing"),
        expiration_required=True,
        maximum_duration="P30D",
    )
    root_ts, session_id = await at_step_two(harness, dirsync_consented=True)
    app_ts = await wait_button(harness, root_ts, ACTION_REQUEST_OPEN)
    app_message = json.dumps(harness.slack.message(CHANNEL, app_ts).blocks)
    assert MAILFLOW_CLIENT_ID in app_message
    assert "Privileged Role Administrator" in app_message
    assert "ticket" in app_message.lower()

    response = await request_role(
        harness,
        root_ts,
        {
            "justification_input": JUSTIFICATION,
            "ticket_number_input": "CHG-1234",
            "ticket_system_input": "ServiceNow",
            "duration_choice": "P30D",
        },
    )
    assert harness.driver.view_errors(response) == {}
    review_ts = await review_posted(harness, root_ts, session_id)
    assert await phase_of(harness, session_id) is Phase.ROLE_REQUESTED

    await click(harness, root_ts, ACTION_ACKNOWLEDGE, APPROVER)
    await wait_button(harness, root_ts, ACTION_ASSIGN_SIGN_IN)
    page = await sign_in_and_assign(harness, root_ts, ROLE_ADMIN_UPN)
    assert "Exchange Administrator role assigned" in page.text
    assert await phase_of(harness, session_id) is Phase.ROLE_ASSIGNED
    # The acknowledging click marks the review decided only after it has offered the
    # assignment, concurrently with the sign-in: wait for that edit before looking at it.
    await harness.slack.wait_for(lambda s: s.message(CHANNEL, review_ts).edited)

    [recorded] = tenant.schedule_requests
    assert recorded["justification"] == JUSTIFICATION
    assert recorded["ticketInfo"] == {"ticketNumber": "CHG-1234", "ticketSystem": "ServiceNow"}
    assert recorded["scheduleInfo"]["expiration"]["type"] == "afterDuration"
    assert recorded["scheduleInfo"]["expiration"]["duration"] == "P30D"
    assert not with_button(harness, root_ts, ACTION_ACKNOWLEDGE)  # decided: no buttons left
    # The step's one message says who assigned it and who acknowledged the request.
    decided = [
        m
        for m in harness.thread(root_ts)
        if f"acknowledged by <@{APPROVER}>" in json.dumps(m.blocks)
    ]
    assert decided
    assert decided[0].edited
    audit = await harness.runtime.store.audit(session_id)
    [assignment] = [e for e in audit if e.action == "role_assignment"]
    assert assignment.result == "assigned"
    assert assignment.detail["graph_request_ids"]
    assert assignment.detail["signed_in_as"] == ROLE_ADMIN_UPN
    # Every request, decision and assignment shows in status, with Graph's request ids.
    await harness.driver.slash_command(user_id=ADMIN, channel_id=CHANNEL, text="status")
    status = await ephemeral_for(harness, ADMIN, "contoso.com")
    shown = json.dumps(status.blocks)
    for action in ("role_request", "role_acknowledge", "role_assignment", "role_assigned"):
        assert f"{action}:" in shown
    assert assignment.detail["graph_request_ids"].split(",")[0] in shown


async def test_tenant_without_p2_gets_a_direct_assignment(harness: Harness) -> None:
    fabrikam = harness.microsoft.tenant(FABRIKAM_ID)
    fabrikam.premium_p2 = False
    fabrikam.users.append(
        type(fabrikam.users[0])(
            "pra@fabrikam.example", "Pat Roles", roles=set(fabrikam.users[0].roles)
        )
    )
    root_ts, session_id = await at_step_two(harness, "fabrikam.example", dirsync_consented=True)
    app_ts = await wait_button(harness, root_ts, ACTION_REQUEST_OPEN)
    assert "without PIM" in json.dumps(harness.slack.message(CHANNEL, app_ts).blocks)
    await request_role(harness, root_ts, {"justification_input": ""})
    await click(harness, root_ts, ACTION_ACKNOWLEDGE, APPROVER)
    page = await sign_in_and_assign(harness, root_ts, "ga@fabrikam.example")
    assert "assigned" in page.text
    assert await phase_of(harness, session_id) is Phase.ROLE_ASSIGNED
    assert fabrikam.schedule_requests == []
    assert [a.via for a in fabrikam.role_assignments] == ["direct"]


async def test_self_acknowledgement_and_non_approvers_are_refused(harness: Harness) -> None:
    root_ts, session_id = await at_step_two(harness)
    await request_role(
        harness,
        root_ts,
        {"justification_input": JUSTIFICATION},
        opener=ACTION_REQUEST_OPEN_PIM,
    )
    await wait_button(harness, root_ts, ACTION_ACKNOWLEDGE)
    await click(harness, root_ts, ACTION_ACKNOWLEDGE, OUTSIDER)
    await ephemeral_for(harness, OUTSIDER, "You can't acknowledge role requests")
    assert await phase_of(harness, session_id) is Phase.ROLE_REQUESTED


async def test_the_requester_cannot_acknowledge_their_own_request(harness: Harness) -> None:
    harness.environment["PROVISION_ADMINS"] += f",{APPROVER}"
    await harness.restart()
    root_ts, session_id = await at_step_two(harness)
    await request_role(
        harness,
        root_ts,
        {"justification_input": JUSTIFICATION},
        opener=ACTION_REQUEST_OPEN_PIM,
        user=APPROVER,
    )
    await click(harness, root_ts, ACTION_ACKNOWLEDGE, APPROVER)
    await ephemeral_for(harness, APPROVER, "can't acknowledge it yourself")
    assert await phase_of(harness, session_id) is Phase.ROLE_REQUESTED


async def test_two_approvers_at_once_make_one_decision(harness: Harness) -> None:
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
    loser = await harness.slack.wait_for(
        lambda s: [e for e in s.ephemerals if "Already done" in e.text] or None
    )
    audit = await harness.runtime.store.audit(session_id)
    [decision] = [e for e in audit if e.action == "role_acknowledge"]
    assert loser[0].user != decision.actor
    assert f"<@{decision.actor}> acknowledged" in loser[0].text
    assert await phase_of(harness, session_id) is Phase.ROLE_ACKNOWLEDGED
    # The step's message may say so after the loser's reply: wait for it, then count.
    said = f"acknowledged by <@{decision.actor}>"
    await harness.slack.wait_for(
        lambda s: any(said in json.dumps(m.blocks) for m in harness.thread(root_ts))
    )
    assert sum("acknowledged by" in json.dumps(m.blocks) for m in harness.thread(root_ts)) == 1


async def test_decline_and_withdraw_return_to_the_request(harness: Harness) -> None:
    root_ts, session_id = await at_step_two(harness)
    await request_role(
        harness, root_ts, {"justification_input": JUSTIFICATION}, opener=ACTION_REQUEST_OPEN_PIM
    )
    await click(harness, root_ts, ACTION_DECLINE, SECOND_APPROVER)
    await harness.slack.wait_for(
        lambda s: any(
            f"declined by <@{SECOND_APPROVER}>" in json.dumps(m.blocks)
            for m in harness.thread(root_ts)
        )
    )
    assert await phase_of(harness, session_id) is Phase.MAILFLOW_CONSENTED
    await request_role(
        harness, root_ts, {"justification_input": JUSTIFICATION}, opener=ACTION_REQUEST_OPEN_PIM
    )
    await click(harness, root_ts, ACTION_WITHDRAW, GROUP_ADMIN)
    await ephemeral_for(harness, GROUP_ADMIN, "Only <@U0ADMIN>, who made the request")
    await click(harness, root_ts, ACTION_WITHDRAW, ADMIN)
    await harness.slack.wait_for(
        lambda s: any(
            f"withdrawn by <@{ADMIN}>" in json.dumps(m.blocks) for m in harness.thread(root_ts)
        )
    )
    assert await phase_of(harness, session_id) is Phase.MAILFLOW_CONSENTED


async def test_a_waiting_request_reminds_approvers_then_expires(harness: Harness) -> None:
    root_ts, session_id = await at_step_two(harness)
    await request_role(
        harness, root_ts, {"justification_input": JUSTIFICATION}, opener=ACTION_REQUEST_OPEN_PIM
    )
    await review_posted(harness, root_ts, session_id)
    role_step = harness.runtime.role_step
    await role_step.remind_and_expire()
    assert not any("still waiting" in m.text for m in harness.thread(root_ts))
    harness.clock.advance(5 * 3600)
    await role_step.remind_and_expire()
    await role_step.remind_and_expire()  # reminds once, not at every sweep
    reminders = [m for m in harness.thread(root_ts) if "still waiting" in m.text]
    assert len(reminders) == 1
    assert f"<@{APPROVER}>" in reminders[0].text
    assert "<!subteam^S0APPROVERS>" in reminders[0].text
    harness.clock.advance(20 * 3600)
    await role_step.remind_and_expire()
    assert await phase_of(harness, session_id) is Phase.MAILFLOW_CONSENTED
    assert any(
        "nobody acknowledged it in time" in json.dumps(m.blocks) for m in harness.thread(root_ts)
    )
    assert ACTION_ACKNOWLEDGE not in json.dumps([m.blocks for m in harness.thread(root_ts)])


async def test_microsoft_asks_for_a_ticket_the_form_did_not_know_about(harness: Harness) -> None:
    """PIM assumed (the policy was not readable yet); the policy wants a ticket after all."""
    harness.microsoft.tenant(CONTOSO_ID).role_policies[EXCHANGE_ADMINISTRATOR] = PolicyRules(
        enabled_rules=("Justification", "Ticketing")
    )
    root_ts, session_id = await at_step_two(harness)
    await request_role(
        harness, root_ts, {"justification_input": JUSTIFICATION}, opener=ACTION_REQUEST_OPEN_PIM
    )
    await click(harness, root_ts, ACTION_ACKNOWLEDGE, APPROVER)
    page = await sign_in_and_assign(harness, root_ts, ROLE_ADMIN_UPN)
    assert "not assigned" in page.text
    assert await phase_of(harness, session_id) is Phase.ROLE_ACKNOWLEDGED
    # The thread says what is missing and reopens the form with the ticket fields.
    response = await request_role(
        harness,
        root_ts,
        {
            "justification_input": JUSTIFICATION,
            "ticket_number_input": "INC-77",
            "ticket_system_input": "Jira",
        },
        opener=ACTION_REQUEST_AMEND,
    )
    assert harness.driver.view_errors(response) == {}
    # A changed request is reviewed again.
    await harness.slack.wait_for(
        lambda s: len(with_button(harness, root_ts, ACTION_ACKNOWLEDGE)) == 1
    )
    assert await phase_of(harness, session_id) is Phase.ROLE_REQUESTED
    await click(harness, root_ts, ACTION_ACKNOWLEDGE, SECOND_APPROVER)
    page = await sign_in_and_assign(harness, root_ts, ROLE_ADMIN_UPN)
    assert "role assigned" in page.text
    recorded = harness.microsoft.tenant(CONTOSO_ID).schedule_requests[-1]
    assert recorded["ticketInfo"]["ticketNumber"] == "INC-77"


async def test_a_signed_in_user_without_the_right_role_is_told_who_can(harness: Harness) -> None:
    """An Exchange administrator signs in: Microsoft refuses the assignment (403)."""
    root_ts, session_id = await at_step_two(harness, dirsync_consented=True)
    await request_role(harness, root_ts, {"justification_input": JUSTIFICATION})
    await click(harness, root_ts, ACTION_ACKNOWLEDGE, APPROVER)
    page = await sign_in_and_assign(harness, root_ts, EXCHANGE_ADMIN_UPN)
    assert "not assigned" in page.text
    signed_in = with_button(harness, root_ts, ACTION_ASSIGN_SIGN_IN)[0]
    [note] = await harness.slack.wait_for(
        lambda s: (
            [m for m in harness.thread(root_ts) if m.ts > signed_in and ":bell:" not in m.text]
            or None
        )
    )
    shown = json.dumps(note.blocks)
    assert "Privileged Role Administrator" in shown
    assert EXCHANGE_ADMIN_UPN in shown
    assert await phase_of(harness, session_id) is Phase.ROLE_ACKNOWLEDGED
    assert harness.microsoft.tenant(CONTOSO_ID).role_assignments == []


async def test_portal_path_then_replication_delay_in_verification(harness: Harness) -> None:
    harness.microsoft.replication_delay = 900.0
    root_ts, session_id = await at_step_two(harness)
    await request_role(
        harness, root_ts, {"justification_input": ""}, opener=ACTION_REQUEST_OPEN_DIRECT
    )
    await click(harness, root_ts, ACTION_ACKNOWLEDGE, APPROVER)
    await click(harness, root_ts, ACTION_PORTAL, ADMIN)
    steps = await harness.slack.wait_for(
        lambda s: [m for m in harness.thread(root_ts) if "Add assignments" in json.dumps(m.blocks)]
    )
    assert MAILFLOW_CLIENT_ID in json.dumps(steps[0].blocks)
    # The admin assigns the role in the portal...
    principal = harness.microsoft.tenant(CONTOSO_ID).service_principal(MAILFLOW_CLIENT_ID)
    assert principal is not None
    harness.microsoft.assign_role(CONTOSO_ID, principal.id, EXCHANGE_ADMINISTRATOR)
    # ...and says so; before step 3 the bot cannot read the directory, so step 4 will check.
    await click(harness, root_ts, ACTION_CHECK, ADMIN)
    await harness.slack.wait_for(
        lambda s: any(f"<@{ADMIN}> said it is assigned" in m.text for m in harness.thread(root_ts))
    )
    assert await phase_of(harness, session_id) is Phase.ROLE_ASSIGNED
    await consent_now(harness, root_ts, nth=2)
    await click_verify(harness, root_ts)
    await harness.slack.wait_for(
        lambda s: any("Every grant is in place" in m.text for m in harness.thread(root_ts)),
        timeout=15,
    )
    assert await finished(harness, session_id) is Phase.PLAN_SHOWN
    assert sum(harness.slept) >= 900


async def test_no_delegated_token_is_kept_in_redis_or_logs(
    harness: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    root_ts, _ = await at_step_two(harness)
    await request_role(
        harness, root_ts, {"justification_input": JUSTIFICATION}, opener=ACTION_REQUEST_OPEN_PIM
    )
    await click(harness, root_ts, ACTION_ACKNOWLEDGE, APPROVER)
    await sign_in_and_assign(harness, root_ts, ROLE_ADMIN_UPN)
    issued = [
        token for token, record in harness.microsoft._tokens.items() if record.user is not None
    ]
    assert issued, "the sign-in should have produced a delegated token"
    logged = "\n".join(r.getMessage() + repr(r.args) for r in caplog.records)
    redis = harness.runtime.redis
    stored = []
    for key in await redis.keys("*"):
        kind = (await redis.type(key)).decode()
        if kind == "string":
            stored.append(str(await redis.get(key)))
        elif kind == "hash":
            stored.append(str(await redis.hgetall(key)))
        elif kind == "stream":
            stored.append(str(await redis.xrange(key)))
    everything = logged + "\n".join(stored)
    for token in issued:
        assert token not in everything


async def test_two_admins_submitting_requests_at_once_make_one_reviewed_request(
    harness: Harness,
) -> None:
    root_ts, session_id = await at_step_two(harness)
    views = {}
    for user in (ADMIN, GROUP_ADMIN):
        await click(harness, root_ts, ACTION_REQUEST_OPEN_PIM, user)
        [view] = await harness.slack.wait_for(
            lambda s, user=user: (
                [v for v in s.open_views(user) if v.callback_id == "role_request"] or None
            )
        )
        views[user] = view.id
    texts = {ADMIN: "Justification typed by ada, first", GROUP_ADMIN: "Justification typed by gus"}
    submissions = [
        harness.driver.build_view_submission(
            user_id=user, view_id=views[user], values={"justification_input": texts[user]}
        )
        for user in (ADMIN, GROUP_ADMIN)
    ]
    await asyncio.gather(*(harness.driver.send(s) for s in submissions))
    await harness.slack.wait_for(lambda s: [e for e in s.ephemerals if "Already done" in e.text])
    audit = await harness.runtime.store.audit(session_id)
    [winner] = [e.actor for e in audit if e.action == "role_request"]
    loser = GROUP_ADMIN if winner == ADMIN else ADMIN
    review_ts = await wait_button(harness, root_ts, ACTION_ACKNOWLEDGE)
    shown = json.dumps(harness.slack.message(CHANNEL, review_ts).blocks)
    assert texts[winner] in shown
    assert texts[loser] not in shown
    await click(harness, root_ts, ACTION_ACKNOWLEDGE, APPROVER)
    await wait_button(harness, root_ts, ACTION_ASSIGN_SIGN_IN)
    await sign_in_and_assign(harness, root_ts, ROLE_ADMIN_UPN)
    [recorded] = harness.microsoft.tenant(CONTOSO_ID).schedule_requests
    assert recorded["justification"] == texts[winner]


async def claim_assignment(harness: Harness, session_id: str) -> None:
    """Request, acknowledge and claim the role (the sign-in's answer about to assign it),
    walked through the workflow."""
    provisioner = harness.runtime.provisioner
    request = RoleRequest("Inline mail protection configures mail flow", requested_by=ADMIN)
    for kind, actor, payload in (
        (EventKind.ROLE_REQUEST, ADMIN, request),
        (EventKind.ROLE_ACKNOWLEDGE, APPROVER, None),
        (EventKind.ROLE_ASSIGNING, ROLE_ADMIN_UPN, SeenRequest(request.digest())),
    ):
        await provisioner.handle(session_id, Event(kind, actor, provisioner.now(), payload=payload))


async def released_by_the_orphan_check(
    harness: Harness, root_ts: str, session_id: str, saying: str
) -> None:
    """The claimed request, its process gone, is released by the orphan check, and the thread
    then says ``saying``."""
    claimed = await harness.store.require(session_id)
    assert claimed.phase is Phase.ROLE_ASSIGNING
    assert await harness.runtime.jobs.resume_orphans() == 1
    assert await harness.settled(session_id, after_version=claimed.version) is (
        Phase.ROLE_ACKNOWLEDGED
    )
    await harness.slack.wait_for(lambda s: any(saying in m.text for m in harness.thread(root_ts)))


async def test_an_assignment_whose_process_died_is_released_by_the_orphan_check(
    harness: Harness,
) -> None:
    """The sign-in's answer claimed the request (``role_assigning``) and its process died before
    Microsoft's answer was recorded: no lease holds the claim, so the orphan check releases it
    and the thread says what to do, instead of the session waiting 15 minutes for the sweep."""
    root_ts, session_id = await at_step_two(harness)
    await claim_assignment(harness, session_id)
    await released_by_the_orphan_check(harness, root_ts, session_id, "was interrupted")
    assert await harness.runtime.jobs.resume_orphans() == 0


async def test_the_orphan_check_leaves_an_assignment_in_progress_alone(harness: Harness) -> None:
    """While the sign-in's answer assigns, it holds the session's lease: nothing is released."""
    _, session_id = await at_step_two(harness)
    async with harness.runtime.jobs.held(session_id) as held:
        assert held
        await claim_assignment(harness, session_id)
        assert await harness.runtime.jobs.resume_orphans() == 0
        async with harness.runtime.jobs.held(session_id) as second:
            assert not second  # another answer for the same session waits its turn
    assert (await harness.store.require(session_id)).phase is Phase.ROLE_ASSIGNING


async def test_an_assignment_recorded_before_its_process_died_is_completed(
    harness: Harness,
) -> None:
    """Microsoft's "assigned" was recorded, then the process died before the step was: the
    orphan check records the step (no second sign-in, no second assignment)."""
    _, session_id = await at_step_two(harness)
    await claim_assignment(harness, session_id)
    await harness.store.record(
        session_id, actor=ROLE_ADMIN_UPN, action="role_assignment", result="assigned"
    )
    claimed = await harness.store.require(session_id)

    assert await harness.runtime.jobs.resume_orphans() == 1
    assert await harness.settled(session_id, after_version=claimed.version) is (Phase.ROLE_ASSIGNED)
    audit = await harness.store.audit(session_id)
    assert [e.action for e in audit].count("role_assigned") == 1


async def test_while_an_interrupted_assignment_is_claimed_people_are_told_to_wait(
    harness: Harness,
) -> None:
    """The claim of a sign-in whose process died is released only by the orphan check. Until
    then, an admin who asks for a new sign-in link is told the role is being assigned and
    when a fresh link comes (not "not waiting"), and a second sign-in's answer gets a page
    saying the same: nothing is sent to Microsoft with it. Then the fresh link comes."""
    root_ts, session_id = await at_step_two(harness)
    await claim_assignment(harness, session_id)
    await wait_button(harness, root_ts, ACTION_ASSIGN_SIGN_IN)
    before = len(harness.microsoft.requests)

    await click(harness, root_ts, ACTION_NEW_SIGN_IN, ADMIN)
    told = await ephemeral_for(harness, ADMIN, "being assigned with an earlier sign-in")
    assert f"within {RESUME_WITHIN_SECONDS} seconds" in told.text
    page = await sign_in_and_assign(harness, root_ts, ROLE_ADMIN_UPN)
    assert page.status_code == 409
    assert "already being assigned" in page.text
    assert "nothing was sent to Microsoft" in page.text
    assert not [r for r in harness.microsoft.requests[before:] if "/roleManagement/" in r.path], (
        "a sign-in's answer reached Microsoft's role management while another claim held"
    )
    await released_by_the_orphan_check(harness, root_ts, session_id, "its link is a fresh one")


async def test_checks_of_one_tenant_reuse_the_directory_sync_apps_token(harness: Harness) -> None:
    root_ts, session_id = await at_step_two(harness, "fabrikam.example", dirsync_consented=True)
    await request_role(harness, root_ts, {"justification_input": JUSTIFICATION})
    await click(harness, root_ts, ACTION_ACKNOWLEDGE, APPROVER)
    await click(harness, root_ts, ACTION_PORTAL, ADMIN)  # the portal's steps end in the check
    before = len(harness.microsoft.requests)
    not_yet = "role is not active for the mail-flow app yet"
    for checks in (1, 2):
        await click(harness, root_ts, ACTION_CHECK, ADMIN)
        await harness.slack.wait_for(
            lambda s, wanted=checks: (
                sum(not_yet in m.text for m in harness.thread(root_ts)) >= wanted or None
            )
        )
    assert await phase_of(harness, session_id) is Phase.ROLE_ACKNOWLEDGED
    asked = harness.microsoft.requests[before:]
    assert [r for r in asked if r.service == "graph"], "each check reads the directory"
    # The tenant's MSAL app (and the token it got when the step began) is the process's, not
    # a throw-away per click: no discovery and no token request for the two checks.
    assert [r.path for r in asked if r.service == "login"] == []


async def test_a_first_request_opened_after_the_request_was_made_is_refused(
    harness: Harness,
) -> None:
    """The request buttons are on step 2's first message only. A click on them once the request
    exists (an earlier copy of that message, still in the thread after an interruption, or a
    click Slack delivers late) opens no form and changes nothing: only *Complete the request*
    amends a request."""
    root_ts, session_id = await at_step_two(harness)
    opener_ts = await wait_button(harness, root_ts, ACTION_REQUEST_OPEN_PIM)
    stale = harness.driver.build_click(
        user_id=GROUP_ADMIN,
        channel_id=CHANNEL,
        message_ts=opener_ts,
        action_id=ACTION_REQUEST_OPEN_PIM,
    )
    await request_role(
        harness, root_ts, {"justification_input": JUSTIFICATION}, opener=ACTION_REQUEST_OPEN_PIM
    )
    await review_posted(harness, root_ts, session_id)  # the request is stored and shown
    requested = await harness.version_of(session_id)
    await click(harness, root_ts, ACTION_ACKNOWLEDGE, APPROVER)
    assert await harness.settled(session_id, after_version=requested) is (Phase.ROLE_ACKNOWLEDGED)
    acknowledged = await harness.store.require(session_id)
    forms = len(harness.slack.open_views(GROUP_ADMIN))

    response = await harness.driver.send(stale)
    assert response.status_code == 200
    told = await ephemeral_for(harness, GROUP_ADMIN, "Already done")
    assert f"<@{ADMIN}> requested the role" in told.text
    assert "Nothing was changed" in told.text
    assert len(harness.slack.open_views(GROUP_ADMIN)) == forms  # no form opened
    after = await harness.store.require(session_id)
    assert (after.phase, after.version) == (Phase.ROLE_ACKNOWLEDGED, acknowledged.version)

"""Step 4, first half: Verify in the thread, checked against the sandbox Microsoft cloud."""

from __future__ import annotations

import json

from bot.sandbox.microsoft import EXCHANGE_ADMINISTRATOR
from bot.steps.mailflow.views import ACTION_SUBMIT
from bot.steps.verify.views import ACTION_VERIFY
from bot.workflow import Phase
from tests.conftest import MAILFLOW_CLIENT_ID
from tests.integration.conftest import (
    ADMIN,
    CHANNEL,
    CONTOSO_ID,
    OUTSIDER,
    Harness,
    ephemeral_for,
)
from tests.integration.steps import ready_to_verify


def verify_button_ts(harness: Harness, root_ts: str) -> str:
    for message in reversed(harness.thread(root_ts)):
        if ACTION_VERIFY in json.dumps(message.blocks):
            return message.ts
    raise AssertionError("no Verify button in the thread")


async def click_verify(harness: Harness, root_ts: str, user: str = ADMIN) -> None:
    await harness.slack.wait_for(
        lambda s: any(ACTION_VERIFY in json.dumps(m.blocks) for m in harness.thread(root_ts))
    )
    response = await harness.driver.click(
        user_id=user,
        channel_id=CHANNEL,
        message_ts=verify_button_ts(harness, root_ts),
        action_id=ACTION_VERIFY,
    )
    assert response.status_code == 200


async def finished(harness: Harness, session_id: str) -> Phase:
    """The phase once verification has ended (the caller has seen the job's message)."""
    return await harness.settled(session_id)


async def test_a_well_provisioned_tenant_passes(harness: Harness) -> None:
    root_ts, session_id = await ready_to_verify(harness)
    await click_verify(harness, root_ts)
    await harness.slack.wait_for(
        lambda s: any("Every grant is in place" in m.text for m in harness.thread(root_ts))
    )
    assert await finished(harness, session_id) is Phase.PLAN_SHOWN
    checklist = next(
        m
        for m in harness.thread(root_ts)
        if "Exchange.ManageAsApp" in json.dumps(m.blocks) and m.edited
    )
    assert ":x:" not in json.dumps(checklist.blocks)
    assert harness.slept == []


async def test_a_missing_role_fails_with_the_reason_and_the_fix(harness: Harness) -> None:
    root_ts, session_id = await ready_to_verify(harness, assign_role=False)
    await click_verify(harness, root_ts)
    summary = await harness.slack.wait_for(
        lambda s: [
            m
            for m in harness.thread(root_ts)
            if "problem" in m.text and "Verify again" in json.dumps(m.blocks)
        ]
    )
    assert await finished(harness, session_id) is Phase.DIRECTORY_CONSENTED
    shown = json.dumps([m.blocks for m in harness.thread(root_ts)])
    assert "Exchange Administrator" in shown
    assert "step 2" in shown.lower()
    del summary
    # Verify again is offered, and works once the role is there.

    principal = harness.microsoft.tenant(CONTOSO_ID).service_principal(MAILFLOW_CLIENT_ID)
    assert principal is not None
    harness.microsoft.assign_role(CONTOSO_ID, principal.id, EXCHANGE_ADMINISTRATOR)
    await click_verify(harness, root_ts)
    await harness.slack.wait_for(
        lambda s: any("Every grant is in place" in m.text for m in harness.thread(root_ts))
    )
    assert await finished(harness, session_id) is Phase.PLAN_SHOWN


async def test_verification_waits_for_role_replication_and_continues_by_itself(
    harness: Harness,
) -> None:
    harness.microsoft.replication_delay = 600.0
    root_ts, session_id = await ready_to_verify(harness)
    await click_verify(harness, root_ts)
    await harness.slack.wait_for(
        lambda s: any("Every grant is in place" in m.text for m in harness.thread(root_ts)),
        timeout=15,
    )
    assert await finished(harness, session_id) is Phase.PLAN_SHOWN
    assert sum(harness.slept) >= 600  # it waited (in Microsoft's time) for the role to arrive
    progress = [m for m in harness.thread(root_ts) if m.edited >= 2]
    assert progress, "the progress message should have been edited while waiting"


async def test_throttling_bursts_are_survived(harness: Harness) -> None:
    root_ts, session_id = await ready_to_verify(harness)
    harness.microsoft.fail("graph", status=429, retry_after=7, times=3)
    harness.microsoft.fail("exchange", status=503, retry_after=5, times=2)
    await click_verify(harness, root_ts)
    await harness.slack.wait_for(
        lambda s: any("Every grant is in place" in m.text for m in harness.thread(root_ts))
    )
    assert await finished(harness, session_id) is Phase.PLAN_SHOWN
    assert 7 in harness.slept
    assert 5 in harness.slept


async def test_only_admins_may_verify(harness: Harness) -> None:
    root_ts, session_id = await ready_to_verify(harness)
    await click_verify(harness, root_ts, user=OUTSIDER)
    await ephemeral_for(harness, OUTSIDER, "You can't verify the grants")
    assert (await harness.runtime.store.require(session_id)).phase is Phase.DIRECTORY_CONSENTED


async def test_a_restart_during_verification_resumes_it(harness: Harness) -> None:
    harness.microsoft.replication_delay = 600.0
    root_ts, session_id = await ready_to_verify(harness)
    harness.microsoft.set_latency(0.3, "exchange")
    await click_verify(harness, root_ts)
    await harness.slack.wait_for(  # the job is at work: its progress is in the step's message
        lambda s: any(
            "Waiting for Microsoft to replicate" in m.text for m in harness.thread(root_ts)
        )
    )
    await harness.restart()  # the job is handed back mid-way
    assert (await harness.runtime.store.require(session_id)).phase is Phase.VERIFYING
    assert await harness.runtime.jobs.resume_orphans() == 1
    harness.microsoft.set_latency(0.0, "exchange")
    await harness.slack.wait_for(
        lambda s: any("Every grant is in place" in m.text for m in harness.thread(root_ts)),
        timeout=15,
    )
    assert await finished(harness, session_id) is Phase.PLAN_SHOWN


async def test_a_slack_failure_during_verification_is_reported_and_verify_offered_again(
    harness: Harness,
) -> None:
    root_ts, session_id = await ready_to_verify(harness)
    # Slack's edits fail three times: the channel checklist and the step's message saying who
    # pressed Verify (the outbox keeps those and tries again), then the job's result in that
    # message (the job reports it in the thread).
    for _ in range(3):
        harness.slack.fail_next("chat.update", "internal_error")
    # The bot's clock stands still: the outbox's retry (1 s later) is due only when the test
    # moves the clock on, however slowly a loaded machine runs the job meanwhile.
    frozen = harness.clock.base()
    harness.clock.base = lambda: frozen
    await click_verify(harness, root_ts)
    note = await harness.slack.wait_for(
        lambda s: [m for m in harness.thread(root_ts) if "unexpected error" in m.text] or None
    )
    assert "press Verify to try again" in note[0].text
    assert ACTION_VERIFY in json.dumps(note[0].blocks)  # someone has to act: Verify is offered
    head = await harness.store.outbox.head(session_id)
    assert head is not None
    assert "internal_error" in head.last_error
    harness.clock.advance(head.not_before - harness.clock())
    await harness.runtime.provisioner.deliver_pending()  # the checklist catches up
    assert await finished(harness, session_id) is Phase.DIRECTORY_CONSENTED
    root = harness.slack.message(CHANNEL, root_ts)
    assert "Verify" in root.text or "verif" in root.text.lower()
    assert await harness.runtime.store.lease_holder(session_id) is None


async def test_a_verify_pressed_on_an_earlier_message_after_the_plan_is_shown_changes_nothing(
    harness: Harness,
) -> None:
    """Once the plan is shown no message offers Verify; a click made on the Verify prompt as it
    read before (Slack delivers it late, or a person's screen was behind) is answered "already
    done" and neither verifies again nor posts the plan a second time."""
    root_ts, session_id = await ready_to_verify(harness)
    await harness.slack.wait_for(
        lambda s: any(ACTION_VERIFY in json.dumps(m.blocks) for m in harness.thread(root_ts))
    )
    stale = harness.driver.build_click(
        user_id=ADMIN,
        channel_id=CHANNEL,
        message_ts=verify_button_ts(harness, root_ts),
        action_id=ACTION_VERIFY,
    )
    await click_verify(harness, root_ts)
    await harness.slack.wait_for(
        lambda s: any(ACTION_SUBMIT in json.dumps(m.blocks) for m in harness.thread(root_ts))
    )
    assert await harness.settled(session_id) is Phase.PLAN_SHOWN
    shown = await harness.store.require(session_id)

    def plans() -> int:
        thread = harness.thread(root_ts)
        return sum(m.text.startswith("Exchange Online change plan") for m in thread)

    assert plans() == 1
    response = await harness.driver.send(stale)
    assert response.status_code == 200
    told = await ephemeral_for(harness, ADMIN, "Already done")
    assert "Nothing was changed" in told.text
    after = await harness.store.require(session_id)
    assert (after.phase, after.version) == (Phase.PLAN_SHOWN, shown.version)
    assert plans() == 1


async def test_the_plan_reads_graph_and_exchange_side_by_side(harness: Harness) -> None:
    """Verification has just named the initial domain, so the plan's Exchange reads do not wait
    for Graph's domains: with the plan's ``GET /domains`` held, they reach Microsoft anyway. Both
    are read afresh (the plan shows the tenant as it is when shown)."""
    root_ts, session_id = await ready_to_verify(harness)
    listed: list[object] = []

    def plans_listing(call: object) -> bool:
        listed.append(call)
        return len(listed) == 2  # the first is verification's

    domains = harness.microsoft.hold(
        "graph", method="GET", path_contains="/v1.0/domains", matching=plans_listing
    )
    connectors = harness.microsoft.hold(
        "exchange",
        method="POST",
        matching=lambda call: call.params["CmdletInput"]["CmdletName"] == "Get-OutboundConnector",
    )
    await click_verify(harness, root_ts)
    try:
        await domains.reached()
        await connectors.reached()
        assert not domains.decided
    finally:
        harness.microsoft.holds.release_all()
    await harness.slack.wait_for(
        lambda s: any(ACTION_SUBMIT in json.dumps(m.blocks) for m in harness.thread(root_ts))
    )
    assert await harness.settled(session_id) is Phase.PLAN_SHOWN
    accepted = [
        r
        for r in harness.microsoft.requests_to("exchange")
        if r.body["CmdletInput"]["CmdletName"] == "Get-AcceptedDomain"
    ]
    assert len(accepted) == 2  # verification's check, and the plan's own read

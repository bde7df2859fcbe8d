"""Background jobs after a crash, through the real HTTP stack (integration harness, private
redis-server): a verification killed mid-wait runs again within the time its thread promised,
and a click in a session whose job died takes the job over.

The kill is ``Harness.crash``: the bot stops without handing its jobs' leases back, as a killed
process leaves them, and a new bot starts on the same Redis. Its lease then lapses in real time
(Redis's own expiry), and the new bot's orphan check runs on its production interval: nothing
is shortened for the test. Waits are for facts (a message edited in the sandbox Slack, the
lease in Redis), never sleeps.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from typing import Any

from bot.jobs import JOB_LEASE_SECONDS, ORPHAN_CHECK_SECONDS
from bot.sandbox.microsoft import EXCHANGE_ADMINISTRATOR
from bot.steps.verify.views import ACTION_VERIFY
from bot.workflow import Phase
from tests.conftest import MAILFLOW_CLIENT_ID
from tests.integration.conftest import (
    ADMIN,
    CHANNEL,
    CONTOSO_ID,
    Harness,
    ephemeral_for,
    session_keys,
)
from tests.integration.steps import ready_to_verify

WAITING = "Waiting for Microsoft to replicate"
# What the thread says while verification waits for the role: the first wait (15 s) and, for a
# process dying meanwhile, the lease lapsing, the next orphan check and the takeover (15 s).
PROMISE = "Next check within 30 s"


def progress(harness: Harness, root_ts: str) -> Any:
    """The step's message while it waits, once it is there."""
    return next((m for m in harness.thread(root_ts) if WAITING in m.text), None)


def promised_seconds(text: str) -> int:
    found = re.search(r"Next check within (\d+) s\b", text)
    assert found is not None, text
    return int(found.group(1))


async def click_verify(harness: Harness, root_ts: str) -> None:
    """Click the newest Verify button in the thread."""
    ts = next(
        m.ts for m in reversed(harness.thread(root_ts)) if ACTION_VERIFY in json.dumps(m.blocks)
    )
    response = await harness.driver.click(
        user_id=ADMIN, channel_id=CHANNEL, message_ts=ts, action_id=ACTION_VERIFY
    )
    assert response.status_code == 200


async def test_a_verification_killed_mid_wait_checks_again_within_the_promised_time(
    harness: Harness,
) -> None:
    harness.microsoft.replication_delay = 600.0  # the role takes ten minutes to reach Exchange
    root_ts, session_id = await ready_to_verify(harness)
    harness.hold_waits()  # the bot's 15 s wait stays under way: the kill comes in the middle
    await click_verify(harness, root_ts)
    waiting = await harness.slack.wait_for(lambda s: progress(harness, root_ts))
    assert PROMISE in waiting.text
    async with asyncio.timeout(5):
        await harness.wait_began.wait()  # the job is in its wait
    first_wait = harness.slept[-1]  # what the promise is about: the wait just begun
    assert first_wait == 15
    # After a crash the promise leaves this much beyond the wait itself.
    crash_allowance = promised_seconds(waiting.text) - first_wait
    dead_process = await harness.store.lease_holder(session_id)
    assert dead_process is not None
    edits_before = waiting.edited

    harness.orphan_check_seconds = ORPHAN_CHECK_SECONDS  # the new bot checks as production does
    killed_at = time.monotonic()
    await harness.crash()
    # The kill handed nothing back: the dead process still holds the lease, for now.
    assert await harness.store.lease_holder(session_id) == dead_process

    async def taken_over() -> str | None:
        holder = await harness.store.lease_holder(session_id)
        return holder if holder not in (None, dead_process) else None

    await harness.stored(session_keys(session_id), taken_over, timeout=crash_allowance)
    resumed_after = time.monotonic() - killed_at
    # The resumed job's check: it verifies again at once and edits the step's message.
    await harness.slack.wait_for(
        lambda s: (
            (message := progress(harness, root_ts)) is not None and message.edited > edits_before
        ),
        timeout=max(0.0, crash_allowance - (time.monotonic() - killed_at)),
    )
    checked_after = time.monotonic() - killed_at
    # Had the process died just before its wait ended, the check would come this much after
    # the wait: within the promise.
    assert resumed_after <= checked_after <= crash_allowance, (resumed_after, checked_after)
    assert (await harness.store.require(session_id)).phase is Phase.VERIFYING

    harness.release_waits()
    await harness.slack.wait_for(
        lambda s: any("Every grant is in place" in m.text for m in harness.thread(root_ts)),
        timeout=15,
    )
    assert await harness.settled(session_id) is Phase.PLAN_SHOWN


async def test_a_click_takes_over_a_job_whose_process_died(harness: Harness) -> None:
    root_ts, session_id = await ready_to_verify(harness, assign_role=False)
    await click_verify(harness, root_ts)  # fails (no role): the thread offers Verify again
    await harness.slack.wait_for(
        lambda s: any("Verify again" in json.dumps(m.blocks) for m in harness.thread(root_ts))
    )
    assert await harness.settled(session_id) is Phase.DIRECTORY_CONSENTED
    harness.microsoft.replication_delay = 600.0
    principal = harness.microsoft.tenant(CONTOSO_ID).service_principal(MAILFLOW_CLIENT_ID)
    assert principal is not None
    harness.microsoft.assign_role(CONTOSO_ID, principal.id, EXCHANGE_ADMINISTRATOR)
    harness.hold_waits()
    await click_verify(harness, root_ts)
    waiting = await harness.slack.wait_for(lambda s: progress(harness, root_ts))
    async with asyncio.timeout(5):
        await harness.wait_began.wait()  # the job is in its wait

    # While the job runs, another click is answered as before: it is under way.
    await click_verify(harness, root_ts)
    await ephemeral_for(harness, ADMIN, "Already done")

    dead_process = await harness.store.lease_holder(session_id)
    edits_before = waiting.edited
    await harness.crash()  # the orphan check is off: only the click can bring the job back
    # Its lease lapses, as it does JOB_LEASE_SECONDS after the kill (the bot's clock says so).
    await harness.store.release_lease(session_id, dead_process)
    harness.clock.advance(JOB_LEASE_SECONDS)
    await click_verify(harness, root_ts)
    answer = await ephemeral_for(harness, ADMIN, "Verification had stopped")
    assert "started again now" in answer.text
    await harness.slack.wait_for(
        lambda s: (
            (message := progress(harness, root_ts)) is not None and message.edited > edits_before
        )
    )
    assert await harness.store.lease_holder(session_id) not in (None, dead_process)

    harness.release_waits()
    await harness.slack.wait_for(
        lambda s: any("Every grant is in place" in m.text for m in harness.thread(root_ts)),
        timeout=15,
    )
    assert await harness.settled(session_id) is Phase.PLAN_SHOWN

"""``verify_until_ready``: waiting through the role's replication on an injected clock."""

from __future__ import annotations

from datetime import timedelta

from bot.jobs import RESUME_WITHIN_SECONDS
from bot.sandbox.microsoft import ManualClock
from bot.sandbox.slack import validate_blocks
from bot.steps.verify.model import CheckName, CheckStatus, Outcome, Problem, Verification
from bot.steps.verify.ready import verify_until_ready
from bot.steps.verify.views import progress_message, summary_message

from .conftest import CONTOSO, DIRSYNC_ID, MAILFLOW_ID, Cloud, ContextFactory, FakeTime

RESUMES_WITHIN = timedelta(seconds=RESUME_WITHIN_SECONDS)


class Progress:
    def __init__(self) -> None:
        self.calls: list[tuple[int, timedelta, timedelta, Verification]] = []

    async def __call__(
        self, attempt: int, elapsed: timedelta, next_in: timedelta, verification: Verification
    ) -> None:
        message = progress_message(
            attempt, elapsed, next_in, verification, resumes_within=RESUMES_WITHIN
        )
        assert validate_blocks(message.blocks, surface="message") == []
        self.calls.append((attempt, elapsed, next_in, verification))


async def test_waits_through_replication_then_passes(
    cloud: Cloud, make_context: ContextFactory, fake_time: FakeTime, delays: list[float]
) -> None:
    cloud.sandbox.replication_delay = 600
    cloud.provision()
    progress = Progress()
    outcome = await verify_until_ready(
        make_context(), sleep=fake_time.sleep, clock=fake_time.now, on_progress=progress
    )
    assert outcome.outcome is Outcome.READY
    assert outcome.ready
    assert outcome.verification.passed
    # 15 s doubling to 2 min: checks at 0, 15, 45, 105, 225, 345, 465, 585 and 705 s.
    assert fake_time.slept == [15, 30, 60, 120, 120, 120, 120, 120]
    assert outcome.attempts == 9
    assert outcome.elapsed == timedelta(seconds=705)
    assert [c[0] for c in progress.calls] == list(range(1, 9))
    assert [c[1].total_seconds() for c in progress.calls] == [0, 15, 45, 105, 225, 345, 465, 585]
    assert [c[2].total_seconds() for c in progress.calls] == fake_time.slept
    assert all(c[3].replication_pending for c in progress.calls)
    assert delays == []  # no retries were needed: the waiting is verify_until_ready's own
    exchange = [r.status for r in cloud.sandbox.requests_to("exchange")]
    assert exchange == [403] * 8 + [200]
    message = summary_message(outcome, verify_again_action_id="verify_again")
    assert validate_blocks(message.blocks, surface="message") == []
    assert "Every grant is in place" in message.text
    assert not any(b["type"] == "actions" for b in message.blocks)
    first = progress_message(*progress.calls[0], resumes_within=RESUMES_WITHIN)
    assert "Waiting for Microsoft to replicate" in first.text
    assert "up to 30 minutes" in first.text
    assert "Next check within 30 s" in first.text  # 15 s, and 15 s for a crash meanwhile


async def test_limit_reached_says_so(
    cloud: Cloud, make_context: ContextFactory, fake_time: FakeTime
) -> None:
    cloud.sandbox.replication_delay = 3600
    cloud.provision()
    progress = Progress()
    outcome = await verify_until_ready(
        make_context(), sleep=fake_time.sleep, clock=fake_time.now, on_progress=progress
    )
    assert outcome.outcome is Outcome.TIMED_OUT
    assert sum(fake_time.slept) == 1800  # the last wait is cut to end exactly at the limit
    assert fake_time.slept[-1] == 15
    assert max(fake_time.slept) == 120
    assert outcome.elapsed == timedelta(minutes=30)
    assert outcome.attempts == len(fake_time.slept) + 1 == len(progress.calls) + 1
    e = outcome.verification.check(CheckName.EXCHANGE)
    assert (e.status, e.problem, e.step) == (
        CheckStatus.FAILED,
        Problem.REPLICATION_TIMED_OUT,
        2,
    )
    assert "after 30 minutes" in e.reason
    assert e.fix is not None
    assert MAILFLOW_ID in e.fix
    assert "Active assignments" in e.fix
    message = summary_message(
        outcome, verify_again_action_id="verify_again", verify_again_value="s1"
    )
    assert validate_blocks(message.blocks, surface="message") == []
    assert "still refuses the mail-flow app after 30 min" in message.text
    actions = [b for b in message.blocks if b["type"] == "actions"]
    assert actions[0]["elements"][0]["action_id"] == "verify_again"


async def test_shorter_limit(
    cloud: Cloud, make_context: ContextFactory, fake_time: FakeTime
) -> None:
    cloud.sandbox.replication_delay = 3600
    cloud.provision()
    outcome = await verify_until_ready(
        make_context(), limit=timedelta(seconds=40), sleep=fake_time.sleep, clock=fake_time.now
    )
    assert outcome.outcome is Outcome.TIMED_OUT
    assert fake_time.slept == [15, 25]


async def test_a_real_failure_ends_at_once(
    cloud: Cloud, make_context: ContextFactory, fake_time: FakeTime
) -> None:
    cloud.consent(CONTOSO, MAILFLOW_ID)
    cloud.consent(CONTOSO, DIRSYNC_ID)  # no role: Exchange's 403 is not replication
    progress = Progress()
    outcome = await verify_until_ready(
        make_context(), sleep=fake_time.sleep, clock=fake_time.now, on_progress=progress
    )
    assert outcome.outcome is Outcome.FAILED
    assert outcome.attempts == 1
    assert fake_time.slept == []
    assert progress.calls == []
    assert outcome.verification.check(CheckName.MAILFLOW_ROLE).problem is Problem.ROLE_MISSING
    message = summary_message(outcome, verify_again_action_id="verify_again")
    assert validate_blocks(message.blocks, surface="message") == []
    assert "Verification found 2 problems" in message.text


async def test_a_failure_appearing_while_waiting_ends_the_wait(
    cloud: Cloud, make_context: ContextFactory, fake_time: FakeTime, clock: ManualClock
) -> None:
    cloud.sandbox.replication_delay = 3600
    sp = cloud.provision()
    tenant = cloud.sandbox.tenant(CONTOSO)

    async def remove_role(
        attempt: int, elapsed: timedelta, next_in: timedelta, verification: Verification
    ) -> None:
        if attempt == 2:
            tenant.role_assignments = [a for a in tenant.role_assignments if a.principal_id != sp]

    outcome = await verify_until_ready(
        make_context(), sleep=fake_time.sleep, clock=fake_time.now, on_progress=remove_role
    )
    assert outcome.outcome is Outcome.FAILED
    assert outcome.attempts == 3
    assert outcome.verification.check(CheckName.MAILFLOW_ROLE).problem is Problem.ROLE_MISSING


async def test_bursts_while_waiting_are_survived(
    cloud: Cloud, make_context: ContextFactory, fake_time: FakeTime, delays: list[float]
) -> None:
    cloud.sandbox.replication_delay = 60
    cloud.provision()
    cloud.sandbox.fail("exchange", status=429, retry_after=3, times=2)
    cloud.sandbox.fail("graph", status=503, retry_after=1, times=4)
    outcome = await verify_until_ready(make_context(), sleep=fake_time.sleep, clock=fake_time.now)
    assert outcome.outcome is Outcome.READY
    assert sorted(delays) == [1.0, 1.0, 1.0, 1.0, 3.0, 3.0]
    assert fake_time.slept == [15, 30, 60]


async def test_an_outage_during_the_wait_does_not_end_it(
    cloud: Cloud, make_context: ContextFactory, fake_time: FakeTime, delays: list[float]
) -> None:
    cloud.sandbox.replication_delay = 100
    cloud.provision()
    tenant = cloud.sandbox

    async def outage(
        attempt: int, elapsed: timedelta, next_in: timedelta, verification: Verification
    ) -> None:
        if attempt == 1:  # the next run meets an Exchange outage longer than the retries
            tenant.fail("exchange", status=503, times=5)

    outcome = await verify_until_ready(
        make_context(), sleep=fake_time.sleep, clock=fake_time.now, on_progress=outage
    )
    assert outcome.outcome is Outcome.READY
    assert len(delays) == 4  # five attempts in the second run, then it gave up for that run
    assert fake_time.slept == [15, 30, 60]


async def test_outage_on_the_first_run_is_reported(
    cloud: Cloud, make_context: ContextFactory, fake_time: FakeTime
) -> None:
    cloud.provision()
    cloud.sandbox.fail("exchange", status=503, times=5)
    outcome = await verify_until_ready(make_context(), sleep=fake_time.sleep, clock=fake_time.now)
    assert outcome.outcome is Outcome.FAILED
    assert outcome.verification.check(CheckName.EXCHANGE).problem is Problem.UNAVAILABLE
    assert fake_time.slept == []

"""The Block Kit builders: valid for Slack, and saying everything in words too."""

from __future__ import annotations

from datetime import timedelta

import pytest

from bot.jobs import (
    JOB_LEASE_RENEW_SECONDS,
    JOB_LEASE_SECONDS,
    ORPHAN_CHECK_SECONDS,
    RESUME_WITHIN_SECONDS,
)
from bot.sandbox.slack import validate_blocks
from bot.steps.verify.model import (
    CheckName,
    CheckResult,
    CheckStatus,
    Outcome,
    Problem,
    Verification,
    VerifyOutcome,
)
from bot.steps.verify.views import (
    checklist_message,
    format_duration,
    progress_message,
    summary_message,
)

NOW = 1_750_000_000.0


def sample() -> Verification:
    return Verification(
        tenant_id="0f1e2d3c-4b5a-4697-8899-aabbccddeeff",
        checks=(
            CheckResult(CheckName.MAILFLOW_PERMISSION, CheckStatus.PASSED, "Holds it."),
            CheckResult(
                CheckName.MAILFLOW_ROLE,
                CheckStatus.FAILED,
                "The mail-flow app has no Exchange Administrator role <b>&</b>.",
                "Step 2: Roles and administrators > Exchange Administrator > Add assignments.",
                Problem.ROLE_MISSING,
                2,
            ),
            CheckResult(
                CheckName.DIRSYNC_CONSENT,
                CheckStatus.FAILED,
                "Not checked: blocked.",
                "Step 3.",
                Problem.NOT_CHECKED,
                3,
            ),
            CheckResult(CheckName.DOMAINS, CheckStatus.PASSED, "x" * 5000),
            CheckResult(
                CheckName.EXCHANGE,
                CheckStatus.WAITING,
                "Exchange still refuses.",
                "Nothing to do.",
                Problem.REPLICATION_PENDING,
            ),
        ),
        checked_at=NOW,
        via_pim=False,
    )


def test_checklist() -> None:
    message = checklist_message(sample())
    assert validate_blocks(message.blocks, surface="message") == []
    assert message.text.startswith("Verification: 2 of 5 checks passed, 2 failed, 1 waiting.")
    role = message.blocks[2]["text"]["text"]
    assert ":x: *Mail-flow app holds an active Exchange Administrator role* — failed" in role
    assert "&lt;b&gt;&amp;&lt;/b&gt;" in role  # mrkdwn control characters escaped
    assert "*Fix:* Step 2: Roles and administrators &gt; Exchange Administrator" in role
    assert ":white_circle:" in message.blocks[3]["text"]["text"]
    assert "not checked" in message.blocks[3]["text"]["text"]
    assert "*What happens next:* Nothing to do." in message.blocks[5]["text"]["text"]
    assert len(message.blocks[4]["text"]["text"]) <= 3000
    context = message.blocks[-1]["elements"][0]["text"]
    assert "<!date^1750000000^" in context
    assert "no Entra ID P2" in context


def test_the_promised_check_allows_for_the_job_resuming_after_a_crash() -> None:
    """The wait, then the lease lapsing, the next orphan check and the takeover: the promise
    holds even when the process dies just before the check was due."""
    assert RESUME_WITHIN_SECONDS >= JOB_LEASE_SECONDS + ORPHAN_CHECK_SECONDS
    assert JOB_LEASE_RENEW_SECONDS * 3 <= JOB_LEASE_SECONDS  # one lost renewal hands nothing over
    first_wait = timedelta(seconds=15)
    message = progress_message(
        1,
        timedelta(0),
        first_wait,
        sample(),
        resumes_within=timedelta(seconds=RESUME_WITHIN_SECONDS),
    )
    promised = format_duration(first_wait + timedelta(seconds=RESUME_WITHIN_SECONDS))
    assert f"Next check within {promised}." in message.text
    assert promised == "30 s"


def test_progress() -> None:
    message = progress_message(
        4,
        timedelta(seconds=105),
        timedelta(minutes=2),
        sample(),
        resumes_within=timedelta(seconds=15),
        limit=timedelta(minutes=30),
    )
    assert validate_blocks(message.blocks, surface="message") == []
    assert "(can take up to 30 minutes). Next check within 2 min 15 s." in message.text
    assert "Attempt 4 · waiting for 1 min 45 s so far" in message.text
    assert "gives up after 30 min" in message.text


@pytest.mark.parametrize("outcome", list(Outcome))
def test_summary(outcome: Outcome) -> None:
    result = VerifyOutcome(outcome, sample(), 3, timedelta(seconds=45), timedelta(minutes=30))
    message = summary_message(result, verify_again_action_id="verify_again", verify_again_value="")
    assert validate_blocks(message.blocks, surface="message") == []
    has_button = any(b["type"] == "actions" for b in message.blocks)
    assert has_button is (outcome is not Outcome.READY)
    assert "3 attempt(s) over 45 s" in message.text


def test_durations() -> None:
    assert format_duration(timedelta(seconds=15)) == "15 s"
    assert format_duration(timedelta(minutes=2)) == "2 min"
    assert format_duration(timedelta(seconds=90)) == "1 min 30 s"
    assert format_duration(timedelta(minutes=65, seconds=5)) == "1 h 5 min"
    assert format_duration(timedelta(0)) == "0 s"

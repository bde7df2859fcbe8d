"""No token and no client secret reaches the logs, whatever verification meets."""

from __future__ import annotations

import logging
import re

import pytest

from bot.microsoft.model import EXCHANGE_MANAGE_AS_APP
from bot.steps.verify.checks import verify
from bot.steps.verify.ready import verify_until_ready
from bot.steps.verify.views import checklist_message, summary_message

from .conftest import (
    CONTOSO,
    DIRSYNC_SECRET,
    MAILFLOW_ID,
    MAILFLOW_SECRET,
    Cloud,
    ContextFactory,
    FakeTime,
)


async def test_no_token_or_secret_in_logs(
    cloud: Cloud,
    make_context: ContextFactory,
    fake_time: FakeTime,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    shown: list[str] = []

    # Missing consent (token errors), a wrong secret, a refused Exchange call …
    shown.append(repr(await verify(make_context())))
    cloud.consent(CONTOSO, MAILFLOW_ID)
    shown.append(repr(await verify(make_context(mailflow_secret="wrong-" + MAILFLOW_SECRET))))
    cloud.revoke_app_role(CONTOSO, MAILFLOW_ID, EXCHANGE_MANAGE_AS_APP)
    shown.append(repr(await verify(make_context())))
    # … throttling, and a replication wait ending in success.
    cloud.sandbox.replication_delay = 60
    cloud.provision()
    cloud.sandbox.fail("graph", status=429, retry_after=1, times=2)
    outcome = await verify_until_ready(make_context(), sleep=fake_time.sleep, clock=fake_time.now)
    assert outcome.ready
    shown.append(repr(outcome))
    shown.append(str(checklist_message(outcome.verification)))
    shown.append(str(summary_message(outcome)))

    issued = list(cloud.sandbox._tokens)  # every access token the sandbox handed out
    assert issued
    logged = "\n".join(
        [
            caplog.text,
            *(r.getMessage() for r in caplog.records),
            *(str(r.args) for r in caplog.records),
        ]
    )
    assert "verification of tenant" in logged  # the capture did see our logs
    everything = logged + "\n".join(shown)
    for secret in (MAILFLOW_SECRET, DIRSYNC_SECRET):
        assert secret not in everything
    for token in issued:
        assert token not in everything
    assert "sbx-at-" not in everything
    assert re.search(r"Bearer\s+\w", everything) is None  # no Authorization header value

"""The error handler, called as Bolt calls it: logged with its traceback, counted, and the user
told with a reference they can quote."""

from __future__ import annotations

import logging

import pytest

from handlers.errors import on_unexpected_error
from tests.handlers.conftest import command_body, context_for, ephemerals_to
from tests.integration.conftest import ADMIN, Harness


async def test_an_unexpected_error_is_logged_counted_and_told(
    harness: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    body = command_body(harness, ADMIN, "status")
    error = RuntimeError("the disk is full")
    await on_unexpected_error(error=error, body=body, context=context_for(harness))
    note = await ephemerals_to(harness, ADMIN, "Something went wrong on our side")
    reference = note.text.rsplit("`", 2)[-2]
    [logged] = [r for r in caplog.records if reference in r.getMessage()]
    assert logged.levelno == logging.ERROR
    assert logged.exc_info is not None
    assert "the disk is full" in str(logged.exc_info[1])
    assert "/provision-inline" in logged.getMessage()
    assert (
        harness.runtime.metrics.registry.get_sample_value(
            "provision_inline_errors_total", {"type": "RuntimeError"}
        )
        == 1
    )

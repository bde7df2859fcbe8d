"""The listener runner answers Slack the moment a listener acks (no 10 ms polling), and keeps
Bolt's rules otherwise: an ack's body is the answer, a failure before the ack is a 500 and goes
to the error handler, a listener that never acks leaves the request unanswered (404)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any

import pytest
from slack_bolt.async_app import AsyncApp
from slack_bolt.context.ack.async_ack import AsyncAck
from slack_bolt.listener import asyncio_runner
from slack_bolt.request.async_request import AsyncBoltRequest
from slack_bolt.response import BoltResponse

from handlers.middleware import RequestScope
from handlers.runner import PromptAckRunner, install
from handlers.services import Services
from tests.handlers.conftest import command_body
from tests.integration.conftest import Harness


def _no_polling(monkeypatch: pytest.MonkeyPatch) -> None:
    """Bolt's runner waits for the ack with ``asyncio.sleep(0.01)``: make that fail."""

    async def polled(*_: Any, **__: Any) -> None:
        raise AssertionError("the runner polled for the ack")

    monkeypatch.setattr(
        asyncio_runner,
        "asyncio",
        SimpleNamespace(sleep=polled, ensure_future=asyncio.ensure_future),
    )


def _app(harness: Harness) -> tuple[AsyncApp, list[Exception], asyncio.Event]:
    app = AsyncApp(
        client=harness.runtime.slack,
        signing_secret="not used: the requests are Socket Mode's",
        request_verification_enabled=False,
        process_before_response=False,
    )
    install(app)
    app.use(RequestScope(Services.of(harness.runtime)))
    errors: list[Exception] = []
    heard = asyncio.Event()

    async def on_error(error: Exception) -> None:
        errors.append(error)
        heard.set()

    app.error(on_error)
    return app, errors, heard


def _command(harness: Harness) -> AsyncBoltRequest:
    return AsyncBoltRequest(body=command_body(harness, text="help"), mode="socket_mode")


async def test_the_wired_app_uses_the_prompt_runner(harness: Harness) -> None:
    assert isinstance(harness.runtime.bolt.listener_runner, PromptAckRunner)


@dataclass
class Dispatched:
    response: BoltResponse
    errors: list[Exception]  # what the error handler heard
    heard: asyncio.Event  # set when it hears something


async def _dispatch(
    harness: Harness,
    monkeypatch: pytest.MonkeyPatch,
    listener: Callable[[AsyncAck], Awaitable[None]],
    *,
    within: float = 5,
) -> Dispatched:
    """A `/provision-inline` command through a fresh app whose one listener is ``listener``,
    with Bolt's polling made to fail; answered ``within`` seconds."""
    _no_polling(monkeypatch)
    app, errors, heard = _app(harness)
    app.command("/provision-inline")(listener)
    response = await asyncio.wait_for(app.async_dispatch(_command(harness)), timeout=within)
    return Dispatched(response, errors, heard)


async def test_slack_is_answered_at_the_ack_while_the_listener_goes_on(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    release, finished = asyncio.Event(), asyncio.Event()

    async def listener(ack: AsyncAck) -> None:
        await ack(text="on it")
        await release.wait()
        finished.set()

    answered = await _dispatch(harness, monkeypatch, listener)
    assert (answered.response.status, answered.response.body) == (200, "on it")
    assert not finished.is_set()  # answered before the listener's work was done
    release.set()
    await asyncio.wait_for(finished.wait(), timeout=5)
    assert answered.errors == []


async def test_a_failure_before_the_ack_is_a_500_and_reaches_the_error_handler(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def listener(ack: AsyncAck) -> None:
        raise ValueError("before the ack")

    answered = await _dispatch(harness, monkeypatch, listener)
    assert answered.response.status == 500
    assert [str(e) for e in answered.errors] == ["before the ack"]


async def test_a_failure_after_the_ack_leaves_the_answer_and_reaches_the_error_handler(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    go_on = asyncio.Event()

    async def listener(ack: AsyncAck) -> None:
        await ack()
        await go_on.wait()
        raise ValueError("after the ack")

    answered = await _dispatch(harness, monkeypatch, listener)
    assert answered.response.status == 200
    go_on.set()
    await asyncio.wait_for(answered.heard.wait(), timeout=5)
    assert [str(e) for e in answered.errors] == ["after the ack"]


async def test_a_listener_that_returns_without_acking_leaves_the_request_unhandled_at_once(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def listener(ack: AsyncAck) -> None:
        return None

    # Bolt's runner would poll for three seconds before giving up; this one knows at once.
    answered = await _dispatch(harness, monkeypatch, listener, within=1)
    assert answered.response.status == 404
    assert answered.errors == []

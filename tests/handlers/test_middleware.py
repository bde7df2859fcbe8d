"""The global middleware: services in the context, an ack that times itself, enrols the acked
work for the drain and stays given; the duplicate filter; and, through the real Bolt app, a
listener that fails right after its ack (Bolt's reset-ack 404)."""

from __future__ import annotations

import asyncio
import logging
import time

import pytest
from slack_bolt.request.async_request import AsyncBoltRequest
from slack_bolt.response import BoltResponse

from bot.steps.consent.views import ACTION_CONSENT_RENEW
from handlers.middleware import RequestScope, TrackedAck, drop_duplicate_deliveries, kind_of
from handlers.services import CONTEXT_KEY, Services, services
from tests.handlers.conftest import Next, acked, click_body, command_body, context_for
from tests.integration.conftest import ADMIN, Harness, ephemeral_for
from tests.integration.steps import latest_link


async def test_the_scope_puts_services_and_a_tracked_ack_into_the_context(
    harness: Harness,
) -> None:
    found = Services.of(harness.runtime)
    request = AsyncBoltRequest(body=command_body(harness, text="help"), mode="socket_mode")
    after = Next()
    answer = await RequestScope(found).async_process(
        req=request, resp=BoltResponse(status=200), next=after
    )
    # None, so that the listener's own ack (with its body) is what Slack gets.
    assert (answer, after.calls) == (None, 1)
    assert services(request.context) is found
    assert isinstance(request.context.ack, TrackedAck)
    assert request.context[CONTEXT_KEY] is found


def test_payload_kinds() -> None:
    assert kind_of({"command": "/provision-inline", "text": ""}) == "slash_command"
    assert kind_of({"type": "event_callback", "event": {"type": "app_home_opened"}}) == "event"
    assert kind_of({"type": "block_actions", "actions": []}) == "interactive"
    assert kind_of({}) == "other"


def tracked_ack(found: Services, kind: str) -> TrackedAck:
    return TrackedAck(
        kind=kind, metrics=found.metrics, inflight=found.inflight, clock=time.perf_counter
    )


async def test_an_ack_is_timed_once_and_its_listener_is_in_flight_until_done(
    harness: Harness,
) -> None:
    found = Services.of(harness.runtime)
    ack = tracked_ack(found, "interactive")
    release = asyncio.Event()
    acked_yet = asyncio.Event()

    async def listener() -> None:  # what Bolt runs in its own task after the dispatch
        await ack()
        acked_yet.set()
        await release.wait()
        await ack()  # a second ack is neither timed nor enrolled twice

    task = asyncio.create_task(listener())
    await acked_yet.wait()
    assert len(found.inflight) == 1
    sample = found.metrics.registry.get_sample_value
    assert sample("provision_inline_ack_seconds_count") == 1
    assert sample("provision_inline_requests_total", {"kind": "interactive"}) == 1
    assert sample("provision_inline_acks_total", {"status": "200"}) == 1
    drained = asyncio.create_task(found.inflight.drain(grace_seconds=10))
    release.set()
    await drained
    assert task.done()  # the drain returned only once the acked work had finished
    assert len(found.inflight) == 0
    assert sample("provision_inline_ack_seconds_count") == 1


async def test_an_ack_in_the_dispatching_task_enrols_nothing_and_stays_given(
    harness: Harness,
) -> None:
    found = Services.of(harness.runtime)
    ack = tracked_ack(found, "event")
    given = await ack()  # Bolt's automatic ack of an event, before the listener's task exists
    assert len(found.inflight) == 0
    ack.response = None  # what Bolt's runner does when a listener fails after acking
    assert ack.response is given
    assert acked(ack) == {}


async def test_duplicate_deliveries_are_acked_and_dropped(harness: Harness) -> None:
    body = command_body(harness, text="help")
    context = context_for(harness)
    found = services(context)
    first, again = Next(), Next()
    assert await drop_duplicate_deliveries(body, context, tracked_ack(found, "x"), first) is None
    ack = tracked_ack(found, "slash_command")
    answer = await drop_duplicate_deliveries(body, context, ack, again)
    assert (first.calls, again.calls) == (1, 0)
    assert answer is ack.response
    assert acked(ack) == {}
    assert found.metrics.registry.get_sample_value("provision_inline_duplicates_total") == 1


async def test_a_listener_failing_right_after_its_ack_still_answers_200_and_tells_the_user(
    harness: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    """Through the real app (Socket Mode request, all middleware and listeners as wired): a
    *New link* button whose value names no known consent app makes the listener raise at once
    after acking, within Bolt's 10 ms polling of the ack."""
    root_ts = await harness.start_session("contoso.com")
    prompt_ts, _ = await latest_link(harness, root_ts)
    body = click_body(harness, prompt_ts, ACTION_CONSENT_RENEW, ADMIN)
    session_id = body["actions"][0]["value"].partition(":")[0]
    body["actions"][0]["value"] = f"{session_id}:no-such-app"
    started = time.perf_counter()
    response = await harness.runtime.bolt.async_dispatch(
        AsyncBoltRequest(body=body, mode="socket_mode")
    )
    assert response.status == 200
    assert time.perf_counter() - started < 1.0  # not Bolt's 404 after 3 s
    note = await ephemeral_for(harness, ADMIN, "Something went wrong on our side")
    reference = note.text.rsplit("`", 2)[-2]
    [logged] = [r for r in caplog.records if reference in r.getMessage()]
    assert logged.levelno == logging.ERROR
    assert logged.exc_info is not None
    assert isinstance(logged.exc_info[1], ValueError)
    assert (
        harness.runtime.metrics.registry.get_sample_value(
            "provision_inline_errors_total", {"type": "ValueError"}
        )
        == 1
    )

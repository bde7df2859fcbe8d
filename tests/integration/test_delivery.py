"""What arrives over HTTP: signatures, Slack's retries, acks, health and metrics."""

from __future__ import annotations

import asyncio
import time

from tests.conftest import METRICS_AUTH
from tests.integration.conftest import ADMIN, CHANNEL, Harness, metric


async def test_a_bad_signature_is_refused_with_401_and_no_effect(harness: Harness) -> None:
    response = await harness.driver.slash_command(
        user_id=ADMIN, channel_id=CHANNEL, signature_override="v0=" + "0" * 64
    )
    assert response.status_code == 401
    stale = harness.driver.build_slash_command(user_id=ADMIN, channel_id=CHANNEL)
    response = await harness.driver.send(stale, timestamp=int(time.time()) - 3600)
    assert response.status_code == 401
    # Give the bot every chance to have done something, then check it did nothing.
    await harness.driver.slash_command(user_id=ADMIN, channel_id=CHANNEL, text="help")
    await harness.slack.wait_for(lambda s: s.ephemerals)
    assert harness.slack.calls_to("views.open") == []
    assert len(harness.slack.ephemerals) == 1


async def test_a_retried_slash_command_opens_one_modal(harness: Harness) -> None:
    command = harness.driver.build_slash_command(user_id=ADMIN, channel_id=CHANNEL)
    first = await harness.driver.send(command)
    again = await harness.driver.resend(command, retry_num=1)
    assert (first.status_code, again.status_code) == (200, 200)
    await harness.slack.wait_for(lambda s: s.calls_to("views.open"))
    await harness.driver.slash_command(user_id=ADMIN, channel_id=CHANNEL, text="help")
    await harness.slack.wait_for(lambda s: s.ephemerals)
    assert len(harness.slack.calls_to("views.open")) == 1


async def test_a_retried_submission_makes_one_session(harness: Harness) -> None:
    view_id = await harness.open_start_modal()
    submission = harness.driver.build_view_submission(
        user_id=ADMIN, view_id=view_id, values={"tenant_input": "contoso.com"}
    )
    responses = await asyncio.gather(
        harness.driver.send(submission), harness.driver.resend(submission, retry_num=1)
    )
    assert [r.status_code for r in responses] == [200, 200]
    root_ts = await harness.wait_for_root("contoso.com")
    assert [m.ts for m in harness.root_messages()] == [root_ts]
    assert len(await harness.runtime.store.active()) == 1
    assert "already" not in " ".join(e.text for e in harness.slack.ephemerals)
    metrics = (await harness.http.get(f"{harness.base_url}/metrics", headers=METRICS_AUTH)).text
    assert metric(metrics, "provision_inline_duplicates_total") == 1


async def test_slow_microsoft_does_not_hold_up_the_ack(harness: Harness) -> None:
    """Microsoft answers in 5 s; Slack still gets its ack well inside 3 s, and the modal says
    what is happening until the session has started."""
    harness.microsoft.set_latency(5.0, "login")
    view_id = await harness.open_start_modal()
    started = time.perf_counter()
    response = await harness.driver.submit_view(
        user_id=ADMIN, view_id=view_id, values={"tenant_input": "contoso.com"}
    )
    acked_in = time.perf_counter() - started
    assert response.status_code == 200
    assert acked_in < 2.0
    checking = harness.slack.views[view_id].view
    assert "Looking up *contoso.com* with Microsoft" in str(checking["blocks"])
    await harness.wait_for_root("contoso.com")
    await harness.slack.wait_for(lambda s: "has started" in str(s.views[view_id].view["blocks"]))


async def test_slow_microsoft_and_an_unknown_tenant_reopens_the_form(harness: Harness) -> None:
    harness.microsoft.set_latency(5.0, "login")
    view_id = await harness.open_start_modal()
    await harness.driver.submit_view(
        user_id=ADMIN, view_id=view_id, values={"tenant_input": "nosuchtenant.example"}
    )
    form = await harness.slack.wait_for(
        lambda s: (
            "knows no tenant" in str(s.views[view_id].view["blocks"]) and s.views[view_id].view
        )
    )
    assert form["callback_id"] == "start_provisioning"
    assert "nosuchtenant.example" in str(form["blocks"])  # what was typed is kept
    assert await harness.runtime.store.active() == []


async def test_healthz_and_metrics(harness: Harness, redis_server) -> None:  # type: ignore[no-untyped-def]
    health = await harness.http.get(f"{harness.base_url}/healthz")
    assert (health.status_code, health.json()["redis"]) == (200, "ok")
    await harness.start_session("contoso.com")
    metrics = (await harness.http.get(f"{harness.base_url}/metrics", headers=METRICS_AUTH)).text
    assert metric(metrics, "provision_inline_sessions", state="started") == 1
    assert metric(metrics, "provision_inline_requests_total", kind="slash_command") == 1
    assert (metric(metrics, "provision_inline_acks_total", status="200") or 0) >= 1
    redis_server.stop()
    try:
        down = await harness.http.get(f"{harness.base_url}/healthz")
        assert down.status_code == 503
        assert "unreachable" in down.json()["redis"]
    finally:
        redis_server.start()
    back = await harness.http.get(f"{harness.base_url}/healthz")
    assert back.status_code == 200

"""``/metrics`` answers only ``Authorization: Bearer <METRICS_TOKEN>`` (compared in constant time);
without a token configured it answers 401 to everybody (it is off)."""

from __future__ import annotations

from tests.conftest import METRICS_AUTH, METRICS_TOKEN
from tests.integration.conftest import ADMIN, CHANNEL, Harness, ephemeral_for, metric


async def test_metrics_need_the_bearer_token(harness: Harness) -> None:
    await harness.driver.slash_command(user_id=ADMIN, channel_id=CHANNEL, text="help")
    await ephemeral_for(harness, ADMIN, "/provision-inline status")
    url = f"{harness.base_url}/metrics"
    genuine = await harness.http.get(url, headers=METRICS_AUTH)
    assert genuine.status_code == 200
    assert metric(genuine.text, "provision_inline_requests_total", kind="slash_command") == 1

    refused = [
        await harness.http.get(url),
        await harness.http.get(url, headers={"Authorization": f"Bearer {METRICS_TOKEN[:-1]}x"}),
        await harness.http.get(url, headers={"Authorization": f"Basic {METRICS_TOKEN}"}),
        await harness.http.get(url, headers={"Authorization": "Bearer"}),
    ]
    assert [r.status_code for r in refused] == [401] * 4
    assert all("provision_inline" not in r.text for r in refused)
    assert refused[0].headers["WWW-Authenticate"].startswith("Bearer")


async def test_without_a_token_metrics_are_off(harness: Harness) -> None:
    del harness.environment["METRICS_TOKEN"]
    await harness.restart()
    await harness.driver.slash_command(user_id=ADMIN, channel_id=CHANNEL, text="help")
    await ephemeral_for(harness, ADMIN, "/provision-inline status")  # the bot serves
    assert (await harness.http.get(f"{harness.base_url}/healthz")).status_code == 200
    for headers in ({}, METRICS_AUTH, {"Authorization": "Bearer"}):
        answer = await harness.http.get(f"{harness.base_url}/metrics", headers=headers)
        assert answer.status_code == 401
        assert "provision_inline" not in answer.text

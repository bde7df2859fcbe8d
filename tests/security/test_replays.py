"""An exact replay of a signed HTTP request is processed once, even when its payload has no
``event_id`` or ``trigger_id``: the duplicate filter also claims the request's signature (unique
to one delivery: an HMAC of its timestamp and body) for longer than Bolt's timestamp window."""

from __future__ import annotations

from tests.integration.conftest import ADMIN, CHANNEL, Harness, ephemeral_for
from tests.security.forge import session_keys, slack_effects, with_payload


def helps_to(harness: Harness, user_id: str) -> int:
    return sum(
        1
        for e in harness.slack.ephemerals
        if e.user == user_id and "/provision-inline status" in e.text
    )


async def test_an_exact_replay_without_delivery_ids_is_processed_once(harness: Harness) -> None:
    built = harness.driver.build_slash_command(user_id=ADMIN, channel_id=CHANNEL, text="help")
    without_ids = with_payload(built, {k: v for k, v in built.payload.items() if k != "trigger_id"})
    stamp = int(harness.clock())
    first = await harness.driver.send(without_ids, timestamp=stamp)
    assert first.status_code == 200
    await ephemeral_for(harness, ADMIN, "/provision-inline status")  # the genuine one worked
    assert helps_to(harness, ADMIN) == 1
    calls, stored = slack_effects(harness), await session_keys(harness)

    # The same bytes with the same timestamp and signature, as a recording proxy replays them.
    replays = [await harness.driver.send(without_ids, timestamp=stamp) for _ in range(3)]
    assert [r.status_code for r in replays] == [200, 200, 200]  # acked, dropped

    await harness.driver.slash_command(user_id=ADMIN, channel_id=CHANNEL, text="status")
    await ephemeral_for(harness, ADMIN, "No provisioning")  # handled after the replays
    assert helps_to(harness, ADMIN) == 1
    assert slack_effects(harness)[len(calls) :] == ["response_url"]  # the status answer only
    assert await session_keys(harness) == stored


async def test_a_replayed_start_form_submission_starts_nothing_more(harness: Harness) -> None:
    view_id = await harness.open_start_modal()
    submission = harness.driver.build_view_submission(
        user_id=ADMIN, view_id=view_id, values={"tenant_input": "contoso.com"}
    )
    stamp = int(harness.clock())
    assert (await harness.driver.send(submission, timestamp=stamp)).status_code == 200
    await harness.wait_for_root("contoso.com")
    [session] = await harness.runtime.store.active()
    calls = slack_effects(harness)
    replayed = await harness.driver.send(submission, timestamp=stamp)
    assert (replayed.status_code, replayed.content) == (200, b"")
    assert [s.id for s in await harness.runtime.store.active()] == [session.id]
    assert (await harness.runtime.store.require(session.id)).version == session.version
    assert slack_effects(harness) == calls

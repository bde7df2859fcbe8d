"""Slack's HTTP requests answered at the door (``handlers.door``): a command, a click or an
event is answered once it is signed, whole and new; who may act and the listener run after the
answer, in line with other acked work. What the door cannot vouch for goes to Bolt first."""

from __future__ import annotations

import gc
import time

from slack_bolt.request.async_request import AsyncBoltRequest

from bot.steps.consent.views import ACTION_CONSENT_RENEW
from handlers import opens_a_form
from handlers.door import Door, Handled
from handlers.services import Services
from handlers.signing import SlackSignatures
from tests.conftest import METRICS_AUTH, SIGNING_SECRET
from tests.integration.conftest import (
    ADMIN,
    CHANNEL,
    OUTSIDER,
    Harness,
    ephemeral_for,
    every_slot_taken,
    metric,
)
from tests.integration.test_consent import latest_link
from tests.security.forge import with_payload


async def test_who_may_act_is_checked_after_the_answer_and_still_refuses(
    harness: Harness,
) -> None:
    """An outsider's command is answered at once (an empty 200) while no acked work may start;
    the refusal comes when its turn does, and nothing else happens."""
    inflight = harness.runtime.inflight
    async with every_slot_taken(inflight):
        response = await harness.driver.slash_command(
            user_id=OUTSIDER, channel_id=CHANNEL, text="status"
        )
        assert (response.status_code, response.content) == (200, b"")
        assert inflight.waiting == 1  # the whole of Bolt's chain waits for its turn
        assert 0 < inflight.waiting_bytes < 8 * 1024  # the raw request, not a task
        assert harness.slack.ephemerals == []
    refusal = await harness.slack.wait_for(
        lambda s: [e for e in s.ephemerals if e.user == OUTSIDER], timeout=10
    )
    assert "see provisioning status" in refusal[0].text
    assert inflight.waiting == 0


async def test_a_redelivered_click_is_dropped_at_the_door(harness: Harness) -> None:
    """Slack's retry of a click (the same trigger id, signed anew) is answered and dropped:
    it never waits in line, and the step is renewed once."""
    root_ts = await harness.start_session("contoso.com")
    prompt_ts, _ = await latest_link(harness, root_ts)
    click = harness.driver.build_click(
        user_id=ADMIN, channel_id=CHANNEL, message_ts=prompt_ts, action_id=ACTION_CONSENT_RENEW
    )
    updates = len(harness.slack.calls_to("chat.update"))
    inflight = harness.runtime.inflight
    async with every_slot_taken(inflight):
        first = await harness.driver.send(click)
        again = await harness.driver.resend(click, retry_num=1)
        assert (first.status_code, again.status_code) == (200, 200)
        assert inflight.waiting == 1
    await harness.slack.wait_for(lambda s: len(s.calls_to("chat.update")) > updates, timeout=10)
    await harness.driver.slash_command(user_id=ADMIN, channel_id=CHANNEL, text="help")
    await harness.slack.wait_for(lambda s: s.ephemerals)  # handled after both deliveries
    assert len(harness.slack.calls_to("chat.update")) == updates + 1
    metrics = (await harness.http.get(f"{harness.base_url}/metrics", headers=METRICS_AUTH)).text
    assert metric(metrics, "provision_inline_duplicates_total") == 1


async def test_what_no_listener_handles_is_left_to_bolt(harness: Harness) -> None:
    """A click on a button the bot does not know is not answered at the door: Bolt answers
    404, as it does for any unhandled request, and nothing waits in line."""
    root_ts = await harness.start_session("contoso.com")
    prompt_ts, _ = await latest_link(harness, root_ts)
    click = harness.driver.build_click(
        user_id=ADMIN, channel_id=CHANNEL, message_ts=prompt_ts, action_id=ACTION_CONSENT_RENEW
    )
    payload = dict(click.payload)
    payload["actions"] = [{**payload["actions"][0], "action_id": "no_such_button"}]
    inflight = harness.runtime.inflight
    async with every_slot_taken(inflight):
        response = await harness.driver.send(with_payload(click, payload))
        assert response.status_code == 404
        assert inflight.waiting == 0


async def test_a_foreign_response_url_is_left_to_bolt_which_drops_it(harness: Harness) -> None:
    """A signed command whose response URL is not Slack's: the door does not vouch for it, and
    Bolt's middleware acks it and does nothing (nothing waits in line, nothing is posted)."""
    built = harness.driver.build_slash_command(user_id=ADMIN, channel_id=CHANNEL, text="help")
    forged = with_payload(built, {**built.payload, "response_url": "https://evil.example/hook"})
    inflight = harness.runtime.inflight
    async with every_slot_taken(inflight):
        response = await harness.driver.send(forged)
        assert response.status_code == 200
        assert inflight.waiting == 0
    await harness.driver.slash_command(user_id=ADMIN, channel_id=CHANNEL, text="help")
    await harness.slack.wait_for(lambda s: s.ephemerals)
    assert len(harness.slack.ephemerals) == 1


def _command_door(harness: Harness, signatures: SlackSignatures) -> Door:
    """A door for ``/provision-inline`` on the harness's bot, checking with ``signatures``."""
    runtime = harness.runtime
    return Door(
        services=Services.of(runtime),
        handled=Handled(
            commands=frozenset({"/provision-inline"}), actions=frozenset(), events=frozenset()
        ),
        opens_a_form=opens_a_form,
        signatures=signatures,
        dispatch=runtime.bolt.async_dispatch,
    )


def _signed_command(
    harness: Harness, *, at: float, headers: dict[str, str] | None = None
) -> tuple[AsyncBoltRequest, bytes]:
    """``/provision-inline help`` from the admin, as Bolt parses it, signed at ``at``; and its
    raw body."""
    built = harness.driver.build_slash_command(user_id=ADMIN, channel_id=CHANNEL, text="help")
    stamp = int(at)
    request = AsyncBoltRequest(
        body=built.body.decode(),
        headers={
            "content-type": built.content_type,
            **(headers or {}),
            "x-slack-request-timestamp": str(stamp),
            "x-slack-signature": harness.driver.sign(built.body, stamp),
        },
    )
    return request, built.body


async def test_a_request_whose_turn_comes_after_slacks_window_still_runs(
    harness: Harness,
) -> None:
    """The door checks the signature on arrival; Bolt checks it again in the request's turn,
    which under a long burst may come more than 5 minutes later. The door then hands Bolt the
    bytes it verified, signed anew, and the command still runs."""
    now = [time.time() - 400]  # the request arrives 400 s before its turn
    door = _command_door(harness, SlackSignatures(SIGNING_SECRET, clock=lambda: now[0]))
    request, raw = _signed_command(harness, at=now[0])
    inflight = harness.runtime.inflight
    async with every_slot_taken(inflight):
        answer = await door.answer(request, raw, arrived=time.perf_counter())
        assert answer is not None
        assert answer.status_code == 200
        assert inflight.waiting == 1
        now[0] = time.time()  # its turn: the original timestamp is 400 s old
    await ephemeral_for(harness, ADMIN, "/provision-inline status")


async def test_what_waits_in_line_holds_its_headers_out_of_the_collectors_sight(
    harness: Harness,
) -> None:
    """A burst leaves thousands of answered requests waiting in line, and the collection after
    it walks every tracked object they hold: a waiting request keeps its headers in a dict of
    text, which the collector does not track (pairs in tuples would be, a dozen a request)."""
    door = _command_door(harness, SlackSignatures(SIGNING_SECRET))
    forwarded_for = [f"203.0.113.{n}" for n in range(20)]  # one per request, to look for
    inflight = harness.runtime.inflight
    async with every_slot_taken(inflight):
        for address in forwarded_for:
            request, raw = _signed_command(
                harness, at=time.time(), headers={"x-forwarded-for": address}
            )
            answer = await door.answer(request, raw, arrived=time.perf_counter())
            assert answer is not None
        del request, address
        assert inflight.waiting == len(forwarded_for)
        holders = [
            type(holder).__name__
            for address in forwarded_for
            for holder in gc.get_referrers(address)
            if holder is not forwarded_for
        ]
    assert holders == []

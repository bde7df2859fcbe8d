"""SandboxSlack (simulated Web API) and SlackDriver (the human side), over real HTTP."""

from __future__ import annotations

import asyncio
import json
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl

import httpx
import pytest
from slack_sdk.errors import SlackApiError
from slack_sdk.http_retry.builtin_async_handlers import AsyncRateLimitErrorRetryHandler
from slack_sdk.signature import SignatureVerifier
from slack_sdk.web.async_client import AsyncWebClient
from slack_sdk.webhook.async_client import AsyncWebhookClient
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from bot.sandbox.server import RunningServer, serve_asgi
from bot.sandbox.slack import SandboxSlack, validate_blocks, validate_view
from bot.sandbox.slack_driver import SlackDriver, SlackDriverError

SIGNING_SECRET = "sandbox-signing-secret"
TOKEN = "xoxb-sandbox-token"


class FakeClock:
    def __init__(self) -> None:
        self.now = 1_700_000_000.0

    def __call__(self) -> float:
        return self.now


@dataclass
class FakeBot:
    """A stand-in for the bot's HTTP endpoint: verifies signatures, records, acks as told."""

    verifier: SignatureVerifier = field(default_factory=lambda: SignatureVerifier(SIGNING_SECRET))
    received: list[dict[str, Any]] = field(default_factory=list)
    acks: deque[dict[str, Any] | None] = field(default_factory=deque)
    got_request: asyncio.Event = field(default_factory=asyncio.Event)

    async def endpoint(self, request: Request) -> Response:
        body = await request.body()
        if not self.verifier.is_valid_request(body, dict(request.headers)):
            return Response("invalid signature", status_code=401)
        content_type = request.headers["content-type"]
        if content_type.startswith("application/json"):
            payload = json.loads(body)
        else:
            form = dict(parse_qsl(body.decode(), keep_blank_values=True))
            payload = json.loads(form["payload"]) if "payload" in form else form
        self.received.append({"headers": dict(request.headers), "body": body, "payload": payload})
        self.got_request.set()
        if payload.get("type") == "url_verification":
            return JSONResponse({"challenge": payload["challenge"]})
        ack = self.acks.popleft() if self.acks else None
        return Response(status_code=200) if ack is None else JSONResponse(ack)

    @property
    def app(self) -> Starlette:
        return Starlette(routes=[Route("/slack/events", self.endpoint, methods=["POST"])])


@dataclass
class World:
    sandbox: SandboxSlack
    clock: FakeClock
    server: RunningServer
    client: AsyncWebClient
    bot: FakeBot
    driver: SlackDriver
    http: httpx.AsyncClient


@pytest.fixture
async def world() -> AsyncIterator[World]:
    clock = FakeClock()
    sandbox = SandboxSlack(clock=clock)
    sandbox.add_user("U1", "alice", real_name="Alice Admin")
    sandbox.add_user("U2", "bob")
    sandbox.add_channel("C1", "provisioning")
    sandbox.add_channel("C2", "elsewhere", bot_is_member=False)
    sandbox.add_channel("C3", "private-few", members=["U1"])
    sandbox.add_usergroup("S1", "approvers", ["U1", "U2"])
    bot = FakeBot()
    async with (
        serve_asgi(sandbox.app) as server,
        serve_asgi(bot.app) as bot_server,
        httpx.AsyncClient() as http,
    ):
        client = AsyncWebClient(token=TOKEN, base_url=f"{server.base_url}/api/")
        driver = SlackDriver(
            sandbox=sandbox,
            sandbox_base_url=server.base_url,
            events_url=f"{bot_server.base_url}/slack/events",
            signing_secret=SIGNING_SECRET,
            http=http,
        )
        yield World(sandbox, clock, server, client, bot, driver, http)


def section(text: str, **extra: Any) -> dict[str, Any]:
    return {"type": "section", "text": {"type": "mrkdwn", "text": text}, **extra}


def button(action_id: str, text: str = "Go", **extra: Any) -> dict[str, Any]:
    return {
        "type": "button",
        "action_id": action_id,
        "text": {"type": "plain_text", "text": text},
        **extra,
    }


MODAL: dict[str, Any] = {
    "type": "modal",
    "callback_id": "tenant",
    "private_metadata": "session-1",
    "title": {"type": "plain_text", "text": "Provision"},
    "submit": {"type": "plain_text", "text": "Next"},
    "blocks": [
        {
            "type": "input",
            "block_id": "domain",
            "label": {"type": "plain_text", "text": "Domain"},
            "element": {"type": "plain_text_input", "action_id": "domain_value", "max_length": 50},
        },
        {
            "type": "input",
            "block_id": "pim",
            "label": {"type": "plain_text", "text": "PIM"},
            "element": {
                "type": "static_select",
                "action_id": "pim_choice",
                "options": [
                    {"text": {"type": "plain_text", "text": "On"}, "value": "on"},
                    {"text": {"type": "plain_text", "text": "Off"}, "value": "off"},
                ],
            },
        },
        {
            "type": "input",
            "block_id": "extras",
            "optional": True,
            "label": {"type": "plain_text", "text": "Extras"},
            "element": {
                "type": "checkboxes",
                "action_id": "extras_pick",
                "options": [
                    {"text": {"type": "plain_text", "text": "Spoof"}, "value": "spoof"},
                    {"text": {"type": "mrkdwn", "text": "*Junk*"}, "value": "junk"},
                ],
            },
        },
        {"type": "actions", "elements": [button("help", "Help")]},
    ],
}


# ---- Web API basics ------------------------------------------------------------------------


async def test_auth_test_and_token_errors(world: World) -> None:
    result = await world.client.auth_test()
    assert result["user_id"] == "U0BOT"
    assert result["team_id"] == "T0SANDBOX"
    assert result["bot_id"] == "B0SANDBOX"

    bad = AsyncWebClient(token="xoxb-wrong", base_url=world.client.base_url)
    with pytest.raises(SlackApiError) as caught:
        await bad.auth_test()
    assert caught.value.response["error"] == "invalid_auth"

    plain = await world.http.post(f"{world.server.base_url}/api/auth.test")
    assert plain.status_code == 200
    assert plain.json() == {"ok": False, "error": "not_authed"}

    as_form_token = await world.http.post(
        f"{world.server.base_url}/api/auth.test", data={"token": TOKEN}
    )
    assert as_form_token.json()["ok"] is True

    with pytest.raises(SlackApiError) as caught:
        await world.client.api_call("chat.frobnicate")
    assert caught.value.response.status_code == 200
    assert caught.value.response["error"] == "unknown_method"


async def test_post_message_records_state_and_unique_ts(world: World) -> None:
    first = await world.client.chat_postMessage(
        channel="C1", text="hello", blocks=[section("*hello*")]
    )
    second = await world.client.chat_postMessage(channel="#provisioning", text="again")
    assert first["channel"] == "C1"
    assert second["channel"] == "C1"
    assert first["ts"] < second["ts"]  # same fake time, still unique and increasing
    assert first["ts"] == "1700000000.000000"
    assert first["message"]["blocks"][0]["text"]["text"] == "*hello*"
    assert first["message"]["blocks"][0]["block_id"]  # Slack fills block_id in

    reply = await world.client.chat_postMessage(
        channel="C1", text="in thread", thread_ts=first["ts"]
    )
    assert [m.text for m in world.sandbox.messages("C1")] == ["hello", "again"]
    replies = world.sandbox.messages("C1", thread_ts=first["ts"])
    assert [m.ts for m in replies] == [reply["ts"]]
    assert replies[0].thread_ts == first["ts"]

    call = world.sandbox.calls_to("chat.postMessage")[0]
    assert call.ok
    assert call.params["channel"] == "C1"
    assert isinstance(call.params["blocks"], list)


async def test_post_message_form_encoded_blocks_string(world: World) -> None:
    response = await world.http.post(
        f"{world.server.base_url}/api/chat.postMessage",
        headers={"Authorization": f"Bearer {TOKEN}"},
        data={"channel": "C1", "text": "form", "blocks": json.dumps([section("from a form")])},
    )
    body = response.json()
    assert body["ok"] is True
    message = world.sandbox.message("C1", body["ts"])
    assert message.blocks[0]["text"]["text"] == "from a form"

    broken = await world.http.post(
        f"{world.server.base_url}/api/chat.postMessage",
        headers={"Authorization": f"Bearer {TOKEN}"},
        data={"channel": "C1", "blocks": "[not json"},
    )
    assert broken.json()["error"] == "invalid_blocks_format"


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"channel": "C404", "text": "x"}, "channel_not_found"),
        ({"channel": "C2", "text": "x"}, "not_in_channel"),
        ({"channel": "C1"}, "no_text"),
        ({"channel": "C1", "text": "x" * 40_001}, "msg_too_long"),
        ({"channel": "C1", "text": "x", "thread_ts": "1600000000.000001"}, "thread_not_found"),
        ({"channel": "C1", "text": "x", "thread_ts": "yesterday"}, "invalid_thread_ts"),
    ],
)
async def test_post_message_errors(world: World, kwargs: dict[str, Any], error: str) -> None:
    with pytest.raises(SlackApiError) as caught:  # api_call: no client-side text warning
        await world.client.api_call("chat.postMessage", json=kwargs)
    assert caught.value.response.status_code == 200
    assert caught.value.response["error"] == error
    assert world.sandbox.calls[-1].error == error
    assert world.sandbox.messages("C1") == []


async def test_post_message_invalid_blocks_says_which_and_why(world: World) -> None:
    blocks = [section("ok"), {"type": "header", "text": {"type": "plain_text", "text": "h" * 151}}]
    with pytest.raises(SlackApiError) as caught:
        await world.client.chat_postMessage(channel="C1", text="t", blocks=blocks)
    response = caught.value.response
    assert response["error"] == "invalid_blocks"
    messages = response["response_metadata"]["messages"]
    assert messages == [
        "[ERROR] must be less than 151 characters [json-pointer:/blocks/1/text/text]"
    ]


async def test_chat_update_and_errors(world: World) -> None:
    posted = await world.client.chat_postMessage(channel="C1", text="v1", blocks=[section("one")])
    updated = await world.client.chat_update(
        channel="C1", ts=posted["ts"], text="v2", blocks=[section("two")]
    )
    assert updated["ts"] == posted["ts"]
    message = world.sandbox.message("C1", posted["ts"])
    assert (message.text, message.blocks[0]["text"]["text"], message.edited) == ("v2", "two", 1)

    await world.client.chat_update(channel="C1", ts=posted["ts"], text="v3")  # keeps blocks
    message = world.sandbox.message("C1", posted["ts"])
    assert (message.text, message.blocks[0]["text"]["text"], message.edited) == ("v3", "two", 2)

    human_ts = world.sandbox.post_user_message("C1", "U1", "mine")
    update_cases: list[tuple[dict[str, Any], str]] = [
        ({"channel": "C1", "ts": "1.000001", "text": "x"}, "message_not_found"),
        ({"channel": "C1", "ts": human_ts, "text": "x"}, "cant_update_message"),
        ({"channel": "C404", "ts": posted["ts"], "text": "x"}, "channel_not_found"),
        (
            {"channel": "C1", "ts": posted["ts"], "text": "t", "blocks": [{"type": "section"}]},
            "invalid_blocks",
        ),
    ]
    for kwargs, error in update_cases:
        with pytest.raises(SlackApiError) as caught:
            await world.client.chat_update(**kwargs)
        assert caught.value.response["error"] == error
    assert world.sandbox.message("C1", posted["ts"]).edited == 2


async def test_ephemeral_and_permalink(world: World) -> None:
    result = await world.client.chat_postEphemeral(channel="C1", user="U1", text="psst")
    assert result["message_ts"]
    assert world.sandbox.ephemerals[-1].user == "U1"
    assert world.sandbox.ephemerals[-1].text == "psst"

    cases: list[tuple[dict[str, Any], str]] = [
        ({"channel": "C3", "user": "U2", "text": "x"}, "user_not_in_channel"),
        ({"channel": "C1", "user": "U999", "text": "x"}, "user_not_found"),
        ({"channel": "C2", "user": "U1", "text": "x"}, "not_in_channel"),
    ]
    for kwargs, error in cases:
        with pytest.raises(SlackApiError) as caught:
            await world.client.chat_postEphemeral(**kwargs)
        assert caught.value.response["error"] == error

    parent = await world.client.chat_postMessage(channel="C1", text="parent")
    reply = await world.client.chat_postMessage(channel="C1", text="r", thread_ts=parent["ts"])
    link = await world.client.chat_getPermalink(channel="C1", message_ts=parent["ts"])
    assert link["permalink"] == (
        f"https://sandbox.slack.test/archives/C1/p{parent['ts'].replace('.', '')}"
    )
    thread_link = await world.client.chat_getPermalink(channel="C1", message_ts=reply["ts"])
    assert thread_link["permalink"].endswith(f"?thread_ts={parent['ts']}&cid=C1")
    assert world.sandbox.message("C1", reply["ts"]).permalink == thread_link["permalink"]
    with pytest.raises(SlackApiError) as caught:
        await world.client.chat_getPermalink(channel="C1", message_ts="1.000002")
    assert caught.value.response["error"] == "message_not_found"


async def test_directory_methods(world: World) -> None:
    members = await world.client.usergroups_users_list(usergroup="S1")
    assert members["users"] == ["U1", "U2"]
    user = await world.client.users_info(user="U1")
    assert user["user"]["real_name"] == "Alice Admin"
    channel = await world.client.conversations_info(channel="C2")
    assert channel["channel"]["name"] == "elsewhere"
    assert channel["channel"]["is_member"] is False
    for call, error in [
        (world.client.usergroups_users_list(usergroup="S404"), "no_such_subteam"),
        (world.client.users_info(user="U404"), "user_not_found"),
        (world.client.conversations_info(channel="C404"), "channel_not_found"),
    ]:
        with pytest.raises(SlackApiError) as caught:
            await call
        assert caught.value.response["error"] == error


# ---- views ---------------------------------------------------------------------------------


async def test_views_open_trigger_rules(world: World) -> None:
    trigger = world.sandbox.issue_trigger_id(user_id="U1")
    opened = await world.client.views_open(trigger_id=trigger, view=MODAL)
    view = opened["view"]
    assert view["id"] in world.sandbox.views
    assert view["hash"]
    assert view["callback_id"] == "tenant"
    record = world.sandbox.views[view["id"]]
    assert record.is_open
    assert record.user == "U1"

    with pytest.raises(SlackApiError) as caught:
        await world.client.views_open(trigger_id=trigger, view=MODAL)
    assert caught.value.response["error"] == "exchanged_trigger_id"

    with pytest.raises(SlackApiError) as caught:
        await world.client.views_open(trigger_id="12345.67890.bogus", view=MODAL)
    assert caught.value.response["error"] == "invalid_trigger_id"

    old = world.sandbox.issue_trigger_id(user_id="U1")
    world.clock.now += 3.5
    with pytest.raises(SlackApiError) as caught:
        await world.client.views_open(trigger_id=old, view=MODAL)
    assert caught.value.response["error"] == "expired_trigger_id"

    fresh = world.sandbox.issue_trigger_id(user_id="U1")
    world.clock.now += 2.9
    assert (await world.client.views_open(trigger_id=fresh, view=MODAL))["ok"]


async def test_views_open_rejects_invalid_view(world: World) -> None:
    bad = {**MODAL, "title": {"type": "plain_text", "text": "A title that is far too long"}}
    bad.pop("submit")
    with pytest.raises(SlackApiError) as caught:
        await world.client.views_open(trigger_id=world.sandbox.issue_trigger_id(), view=bad)
    response = caught.value.response
    assert response["error"] == "invalid_arguments"
    assert response["response_metadata"]["messages"] == [
        "[ERROR] must be less than 25 characters [json-pointer:/view/title/text]",
        "[ERROR] submit is required when an input block is present [json-pointer:/view/submit]",
    ]
    assert world.sandbox.views == {}


async def test_views_update_push_and_hash(world: World) -> None:
    opened = await world.client.views_open(
        trigger_id=world.sandbox.issue_trigger_id(user_id="U1"),
        view={**MODAL, "external_id": "ext-1"},
    )
    view_id, first_hash = opened["view"]["id"], opened["view"]["hash"]
    world.clock.now += 1
    changed = {**MODAL, "title": {"type": "plain_text", "text": "Step 2"}}
    updated = await world.client.views_update(view_id=view_id, hash=first_hash, view=changed)
    assert updated["view"]["id"] == view_id
    assert updated["view"]["hash"] != first_hash
    assert world.sandbox.views[view_id].view["title"]["text"] == "Step 2"
    assert world.sandbox.views[view_id].updates == 1

    with pytest.raises(SlackApiError) as caught:
        await world.client.views_update(view_id=view_id, hash=first_hash, view=MODAL)
    assert caught.value.response["error"] == "hash_conflict"

    by_external = await world.client.views_update(
        external_id="ext-1", view={**MODAL, "external_id": "ext-1"}
    )
    assert by_external["view"]["id"] == view_id

    with pytest.raises(SlackApiError) as caught:
        await world.client.views_update(view_id="V404", view=MODAL)
    assert caught.value.response["error"] == "not_found"

    for _ in range(2):
        pushed = await world.client.views_push(
            trigger_id=world.sandbox.issue_trigger_id(user_id="U1"), view=MODAL
        )
    assert pushed["view"]["root_view_id"] == view_id
    assert len(world.sandbox.open_views("U1")) == 3
    with pytest.raises(SlackApiError) as caught:
        await world.client.views_push(
            trigger_id=world.sandbox.issue_trigger_id(user_id="U1"), view=MODAL
        )
    assert caught.value.response["error"] == "push_limit_reached"


async def test_views_publish_home(world: World) -> None:
    home = {
        "type": "home",
        "blocks": [section("Welcome"), {"type": "actions", "elements": [button("start")]}],
    }
    published = await world.client.views_publish(user_id="U1", view=home)
    assert published["view"]["type"] == "home"
    assert world.sandbox.home_views["U1"]["blocks"][0]["text"]["text"] == "Welcome"
    with pytest.raises(SlackApiError) as caught:
        await world.client.views_publish(user_id="U1", view=home, hash="stale.hash")
    assert caught.value.response["error"] == "hash_conflict"
    with pytest.raises(SlackApiError) as caught:
        await world.client.views_publish(user_id="U404", view=home)
    assert caught.value.response["error"] == "invalid_arguments"
    with_input = {"type": "home", "blocks": MODAL["blocks"][:1]}
    with pytest.raises(SlackApiError) as caught:
        await world.client.views_publish(user_id="U1", view=with_input)
    assert (
        "input blocks are not allowed in a home"
        in caught.value.response["response_metadata"]["messages"][0]
    )


# ---- fault injection and waiting -----------------------------------------------------------


async def test_fail_next_and_rate_limit(world: World) -> None:
    world.sandbox.fail_next("chat.postMessage", "internal_error")
    with pytest.raises(SlackApiError) as caught:
        await world.client.chat_postMessage(channel="C1", text="x")
    assert caught.value.response["error"] == "internal_error"
    assert (await world.client.chat_postMessage(channel="C1", text="x"))["ok"]

    world.sandbox.fail_next("views.open", "ratelimited", status=429, retry_after=7)
    with pytest.raises(SlackApiError) as caught:
        await world.client.views_open(trigger_id=world.sandbox.issue_trigger_id(), view=MODAL)
    response = caught.value.response
    assert response.status_code == 429
    assert response.headers["Retry-After"] == "7"
    assert response["error"] == "ratelimited"

    retrying = AsyncWebClient(
        token=TOKEN,
        base_url=world.client.base_url,
        retry_handlers=[AsyncRateLimitErrorRetryHandler(max_retry_count=1)],
    )
    world.sandbox.fail_next("users.info", "ratelimited", status=429, retry_after=0)
    assert (await retrying.users_info(user="U2"))["user"]["name"] == "bob"
    assert [c.status for c in world.sandbox.calls_to("users.info")] == [429, 200]


async def test_wait_for_wakes_on_recorded_call(world: World) -> None:
    def posted_done(sandbox: SandboxSlack) -> str | None:
        for message in sandbox.messages("C1"):
            if message.text == "done":
                return message.ts
        return None

    waiter = asyncio.create_task(world.sandbox.wait_for(posted_done, timeout=5))
    assert not waiter.done()
    await world.client.chat_postMessage(channel="C1", text="not yet")
    assert not waiter.done()
    posted = await world.client.chat_postMessage(channel="C1", text="done")
    assert await waiter == posted["ts"]


async def test_wait_for_times_out_with_readable_dump(world: World) -> None:
    await world.client.chat_postMessage(channel="C1", text="something else")
    with pytest.raises(TimeoutError) as caught:
        await world.sandbox.wait_for(lambda s: s.messages("C9"), timeout=0.05)
    text = str(caught.value)
    assert "condition not met within 0.05s" in text
    assert "chat.postMessage ok" in text
    assert "something else" in text


# ---- Block Kit validation -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("blocks", "expected"),
    [
        ([{"type": "sectoin"}], "unknown block type `sectoin` [json-pointer:/blocks/0/type]"),
        ([{"type": "section"}], "section must have text or fields [json-pointer:/blocks/0]"),
        ([section("")], "must be at least 1 character(s) long [json-pointer:/blocks/0/text/text]"),
        (
            [section("x" * 3001)],
            "must be less than 3001 characters [json-pointer:/blocks/0/text/text]",
        ),
        (
            [{"type": "section", "text": {"type": "markdown", "text": "x"}}],
            "must be one of plain_text, mrkdwn",
        ),
        ([{"type": "header", "text": {"type": "mrkdwn", "text": "x"}}], "must be plain_text"),
        ([{"type": "divider", "colour": "red"}], "unsupported property `colour`"),
        (
            [{"type": "divider", "block_id": "a"}, {"type": "divider", "block_id": "a"}],
            "duplicate block_id `a`",
        ),
        (
            [{"type": "divider", "block_id": "b" * 256}],
            "must be less than 256 characters [json-pointer:/blocks/0/block_id]",
        ),
        ([{"type": "divider"}] * 51, "no more than 50 items allowed [json-pointer:/blocks]"),
        ([{"type": "actions", "elements": [button("a"), button("a")]}], "duplicate action_id `a`"),
        (
            [{"type": "actions", "elements": [button("a", "x" * 76)]}],
            "must be less than 76 characters",
        ),
        (
            [{"type": "actions", "elements": [button("a", value="v" * 2001)]}],
            "[json-pointer:/blocks/0/elements/0/value]",
        ),
        (
            [{"type": "actions", "elements": [button("a", url="https://x/" + "u" * 3000)]}],
            "/elements/0/url]",
        ),
        (
            [{"type": "actions", "elements": [button("a", style="warning")]}],
            "must be one of primary, danger",
        ),
        (
            [{"type": "actions", "elements": [button(f"a{i}") for i in range(26)]}],
            "must be an array of 1 to 25 elements",
        ),
        (
            [{"type": "actions", "elements": [{"type": "plain_text_input", "action_id": "t"}]}],
            "not allowed in an actions block",
        ),
        (
            [{"type": "context", "elements": [{"type": "mrkdwn", "text": "c"}] * 11}],
            "must be an array of 1 to 10 elements",
        ),
        (
            [{"type": "section", "fields": [{"type": "mrkdwn", "text": "f"}] * 11}],
            "must be an array of 1 to 10 text objects",
        ),
        (
            [{"type": "section", "fields": [{"type": "mrkdwn", "text": "f" * 2001}]}],
            "[json-pointer:/blocks/0/fields/0/text]",
        ),
        (
            [
                {
                    "type": "input",
                    "label": {"type": "plain_text", "text": "l"},
                    "element": {"type": "plain_text_input"},
                }
            ],
            "input blocks are not allowed in a message",
        ),
        ([{"type": "image", "image_url": "https://x/i.png"}], "missing required field: alt_text"),
        (
            [section("s", accessory={"type": "static_select", "action_id": "s", "options": []})],
            "must have between 1 and 100 items",
        ),
        (
            [
                section(
                    "s",
                    accessory={
                        "type": "overflow",
                        "action_id": "o",
                        "options": [
                            {"text": {"type": "plain_text", "text": "t"}, "value": str(i)}
                            for i in range(6)
                        ],
                    },
                )
            ],
            "must have between 1 and 5 items",
        ),
        (
            [
                section(
                    "s",
                    accessory={
                        "type": "static_select",
                        "action_id": "s",
                        "options": [
                            {"text": {"type": "plain_text", "text": "t"}, "value": "v" * 151}
                        ],
                    },
                )
            ],
            "must be less than 151 characters",
        ),
        (
            [
                section(
                    "s",
                    accessory={
                        "type": "static_select",
                        "action_id": "s",
                        "options": [{"text": {"type": "mrkdwn", "text": "t"}, "value": "v"}],
                    },
                )
            ],
            "must be plain_text",
        ),
        (
            [
                section(
                    "s",
                    accessory={
                        "type": "datepicker",
                        "action_id": "d",
                        "initial_date": "2024-13-01",
                    },
                )
            ],
            "YYYY-MM-DD",
        ),
        (
            [
                section(
                    "s",
                    accessory={
                        "type": "users_select",
                        "action_id": "u",
                        "placeholder": {"type": "plain_text", "text": "p" * 151},
                    },
                )
            ],
            "/accessory/placeholder/text]",
        ),
        (
            [
                section(
                    "s",
                    accessory=button(
                        "b",
                        confirm={
                            "title": {"type": "plain_text", "text": "t"},
                            "text": {"type": "plain_text", "text": "x"},
                            "confirm": {"type": "plain_text", "text": "y" * 31},
                            "deny": {"type": "plain_text", "text": "n"},
                        },
                    ),
                )
            ],
            "/accessory/confirm/confirm/text]",
        ),
    ],
)
def test_validate_blocks_rejects(blocks: list[dict[str, Any]], expected: str) -> None:
    problems = validate_blocks(blocks, surface="message")
    assert any(expected in p for p in problems), problems


def test_validate_blocks_accepts_realistic_payload() -> None:
    blocks = [
        {
            "type": "header",
            "text": {"type": "plain_text", "text": "Provision Inline Mode", "emoji": True},
        },
        section(
            "*Tenant* contoso.onmicrosoft.com",
            accessory={"type": "image", "image_url": "https://x/i.png", "alt_text": "logo"},
        ),
        {
            "type": "section",
            "fields": [
                {"type": "mrkdwn", "text": "*State*"},
                {"type": "plain_text", "text": "waiting"},
            ],
        },
        {"type": "divider"},
        {
            "type": "context",
            "elements": [
                {"type": "mrkdwn", "text": "requested by <@U1>"},
                {"type": "image", "image_url": "https://x/a.png", "alt_text": "a"},
            ],
        },
        {
            "type": "actions",
            "block_id": "approval",
            "elements": [
                button("approve", "Approve", style="primary", value="s1"),
                button(
                    "reject",
                    "Reject",
                    style="danger",
                    value="s1",
                    confirm={
                        "title": {"type": "plain_text", "text": "Sure?"},
                        "text": {"type": "mrkdwn", "text": "This *rejects* it."},
                        "confirm": {"type": "plain_text", "text": "Reject"},
                        "deny": {"type": "plain_text", "text": "Back"},
                        "style": "danger",
                    },
                ),
                {
                    "type": "overflow",
                    "action_id": "more",
                    "options": [
                        {
                            "text": {"type": "plain_text", "text": "Docs"},
                            "value": "docs",
                            "url": "https://example.com",
                        }
                    ],
                },
                {
                    "type": "users_select",
                    "action_id": "who",
                    "placeholder": {"type": "plain_text", "text": "Pick"},
                },
                {
                    "type": "conversations_select",
                    "action_id": "where",
                    "filter": {"include": ["public", "private"]},
                },
            ],
        },
        {
            "type": "rich_text",
            "elements": [
                {
                    "type": "rich_text_section",
                    "elements": [{"type": "text", "text": "hi", "style": {"bold": True}}],
                }
            ],
        },
    ]
    assert validate_blocks(blocks, surface="message") == []
    assert validate_blocks([{"type": "divider"}] * 100, surface="home") == []
    assert validate_blocks([{"type": "divider"}] * 101, surface="modal") == [
        "no more than 100 items allowed [json-pointer:/blocks]"
    ]


def test_validate_view_rules() -> None:
    assert validate_view(MODAL) == []
    assert validate_view({"type": "home", "blocks": [section("hi")]}) == []
    too_much = {
        **MODAL,
        "submit": {"type": "plain_text", "text": "s" * 25},
        "close": {"type": "mrkdwn", "text": "c"},
        "private_metadata": "m" * 3001,
        "callback_id": "c" * 256,
        "colour": "red",
    }
    problems = validate_view(too_much)
    for expected in [
        "[json-pointer:/view/submit/text]",
        "must be plain_text [json-pointer:/view/close/type]",
        "[json-pointer:/view/private_metadata]",
        "[json-pointer:/view/callback_id]",
        "unsupported property `colour`",
    ]:
        assert any(expected in p for p in problems), (expected, problems)
    assert validate_view({"type": "dialog"}) == [
        "must be one of modal, home [json-pointer:/view/type]"
    ]
    assert any("title" in p for p in validate_view({"type": "modal", "blocks": []}))
    assert any("submit" in p for p in validate_view({"type": "home", "blocks": [], "submit": {}}))

    def modal_with(element: dict[str, Any]) -> dict[str, Any]:
        return {
            **MODAL,
            "blocks": [
                {"type": "input", "label": {"type": "plain_text", "text": "l"}, "element": element}
            ],
        }

    element_cases: list[tuple[dict[str, Any], str]] = [
        ({"type": "plain_text_input", "action_id": "t", "max_length": 3001}, "between 1 and 3000"),
        (
            {"type": "plain_text_input", "action_id": "t", "min_length": 10, "max_length": 5},
            "greater than max_length",
        ),
        ({"type": "number_input", "action_id": "n"}, "is_decimal_allowed"),
        (
            {
                "type": "number_input",
                "action_id": "n",
                "is_decimal_allowed": False,
                "min_value": "1.5",
            },
            "is_decimal_allowed",
        ),
        ({"type": "radio_buttons", "action_id": "r", "options": []}, "between 1 and 10"),
        (
            {
                "type": "static_select",
                "action_id": "s",
                "options": [{"text": {"type": "plain_text", "text": "a"}, "value": "a"}],
                "initial_option": {"text": {"type": "plain_text", "text": "b"}, "value": "b"},
            },
            "must match one of the provided options",
        ),
        (
            {"type": "button", "action_id": "b", "text": {"type": "plain_text", "text": "b"}},
            "not allowed in an input block",
        ),
    ]
    for element, expected in element_cases:
        problems = validate_view(modal_with(element))
        assert any(expected in p for p in problems), (expected, problems)
    label_too_long = {
        **MODAL,
        "blocks": [{**MODAL["blocks"][0], "label": {"type": "plain_text", "text": "l" * 2001}}],
    }
    assert any("/view/blocks/0/label/text" in p for p in validate_view(label_too_long))


# ---- the driver ----------------------------------------------------------------------------


async def test_slash_command_is_signed_and_shaped_like_slack(world: World) -> None:
    response = await world.driver.slash_command(user_id="U1", channel_id="C1", text="start contoso")
    assert response.status_code == 200
    received = world.bot.received[-1]
    payload = received["payload"]
    for key in (
        "token",
        "team_id",
        "team_domain",
        "channel_id",
        "channel_name",
        "user_id",
        "user_name",
        "command",
        "text",
        "api_app_id",
        "response_url",
        "trigger_id",
    ):
        assert key in payload
    assert payload["command"] == "/provision-inline"
    assert payload["text"] == "start contoso"
    assert payload["channel_name"] == "provisioning"
    assert payload["user_name"] == "alice"
    assert received["headers"]["content-type"] == "application/x-www-form-urlencoded"
    assert "x-slack-retry-num" not in received["headers"]

    # the trigger works with views.open (the bot would do this)
    opened = await world.client.views_open(trigger_id=payload["trigger_id"], view=MODAL)
    assert world.sandbox.views[opened["view"]["id"]].user == "U1"

    # Slack's retry: the identical body, with retry headers
    request = world.driver.last_request
    assert request is not None
    await world.driver.resend(request, retry_num=1)
    retried = world.bot.received[-1]
    assert retried["body"] == received["body"]
    assert retried["headers"]["x-slack-retry-num"] == "1"
    assert retried["headers"]["x-slack-retry-reason"] == "http_timeout"

    forged = await world.driver.slash_command(
        user_id="U1", channel_id="C1", signature_override="v0=" + "0" * 64
    )
    assert forged.status_code == 401
    tampered = await world.driver.slash_command(
        user_id="U1", channel_id="C1", body_override=b"text=evil"
    )
    assert tampered.status_code == 200  # re-signed: body_override is sent as the signed body
    assert world.bot.received[-1]["body"] == b"text=evil"


async def test_slash_command_response_url_posts(world: World) -> None:
    await world.driver.slash_command(user_id="U1", channel_id="C1")
    response_url = world.bot.received[-1]["payload"]["response_url"]
    assert response_url.startswith(world.server.base_url)
    webhook = AsyncWebhookClient(response_url)
    first = await webhook.send(text="only you can see this")
    assert first.status_code == 200
    assert world.sandbox.ephemerals[-1].user == "U1"
    assert world.sandbox.ephemerals[-1].source == "response_url"
    await webhook.send(text="everyone sees this", response_type="in_channel")
    assert [m.text for m in world.sandbox.messages("C1")] == ["everyone sees this"]
    bad = await webhook.send(text="x", blocks=[{"type": "section"}])
    assert bad.status_code == 200
    assert json.loads(bad.body)["error"] == "invalid_blocks"
    assert world.sandbox.calls_to("response_url")[-1].error == "invalid_blocks"


async def test_click_posts_block_actions_and_response_url_replaces(world: World) -> None:
    posted = await world.client.chat_postMessage(
        channel="C1",
        text="approve?",
        blocks=[
            section("Approve?"),
            {
                "type": "actions",
                "block_id": "decide",
                "elements": [button("approve", "Approve", value="session-1")],
            },
        ],
    )
    parent = posted["ts"]
    response = await world.driver.click(
        user_id="U2", channel_id="C1", message_ts=parent, action_id="approve"
    )
    assert response.status_code == 200
    payload = world.bot.received[-1]["payload"]
    assert payload["type"] == "block_actions"
    assert payload["user"] == {"id": "U2", "username": "bob", "name": "bob", "team_id": "T0SANDBOX"}
    assert payload["container"] == {
        "type": "message",
        "message_ts": parent,
        "channel_id": "C1",
        "is_ephemeral": False,
    }
    assert payload["channel"] == {"id": "C1", "name": "provisioning"}
    assert payload["message"]["ts"] == parent
    assert payload["message"]["blocks"][1]["block_id"] == "decide"
    action = payload["actions"][0]
    assert (action["action_id"], action["block_id"], action["value"], action["type"]) == (
        "approve",
        "decide",
        "session-1",
        "button",
    )
    assert action["text"]["text"] == "Approve"
    assert payload["team"] == {"id": "T0SANDBOX", "domain": "sandbox"}

    await AsyncWebhookClient(payload["response_url"]).send(
        text="approved by bob", blocks=[section("Approved by <@U2>")], replace_original=True
    )
    message = world.sandbox.message("C1", parent)
    assert message.text == "approved by bob"
    assert message.edited == 1

    with pytest.raises(SlackDriverError, match="no element with action_id 'approve'"):
        await world.driver.click(
            user_id="U2", channel_id="C1", message_ts=parent, action_id="approve"
        )

    reply = await world.client.chat_postMessage(
        channel="C1",
        text="pick",
        thread_ts=parent,
        blocks=[
            section(
                "Pick",
                accessory={
                    "type": "static_select",
                    "action_id": "pim",
                    "options": [{"text": {"type": "plain_text", "text": "On"}, "value": "on"}],
                },
            )
        ],
    )
    await world.driver.click(
        user_id="U1", channel_id="C1", message_ts=reply["ts"], action_id="pim", value="on"
    )
    payload = world.bot.received[-1]["payload"]
    assert payload["container"]["thread_ts"] == parent
    assert payload["message"]["thread_ts"] == parent
    assert payload["actions"][0]["selected_option"]["value"] == "on"
    with pytest.raises(SlackDriverError, match="has no option 'off'"):
        await world.driver.click(
            user_id="U1", channel_id="C1", message_ts=reply["ts"], action_id="pim", value="off"
        )


async def test_submit_view_applies_response_actions(world: World) -> None:
    opened = await world.client.views_open(
        trigger_id=world.sandbox.issue_trigger_id(user_id="U1"), view=MODAL
    )
    view_id = opened["view"]["id"]

    with pytest.raises(SlackDriverError, match="required input 'pim_choice'"):
        await world.driver.submit_view(
            user_id="U1", view_id=view_id, values={"domain_value": "contoso.com"}
        )
    with pytest.raises(SlackDriverError, match=r"no input with action_id \['nope'\]"):
        await world.driver.submit_view(user_id="U1", view_id=view_id, values={"nope": "x"})

    world.bot.acks.append(
        {"response_action": "errors", "errors": {"domain": "Not a verified domain"}}
    )
    response = await world.driver.submit_view(
        user_id="U1",
        view_id=view_id,
        values={"domain_value": "contoso.com", "pim_choice": "on", "extras_pick": ["junk"]},
    )
    assert SlackDriver.view_errors(response) == {"domain": "Not a verified domain"}
    assert world.sandbox.views[view_id].is_open
    payload = world.bot.received[-1]["payload"]
    assert payload["type"] == "view_submission"
    assert payload["view"]["id"] == view_id
    assert payload["view"]["callback_id"] == "tenant"
    assert payload["view"]["private_metadata"] == "session-1"
    assert payload["view"]["hash"] == opened["view"]["hash"]
    assert payload["trigger_id"]
    values = payload["view"]["state"]["values"]
    assert values["domain"]["domain_value"] == {"type": "plain_text_input", "value": "contoso.com"}
    assert values["pim"]["pim_choice"]["selected_option"]["value"] == "on"
    assert [o["value"] for o in values["extras"]["extras_pick"]["selected_options"]] == ["junk"]

    next_step = {**MODAL, "title": {"type": "plain_text", "text": "Sign in"}}
    world.bot.acks.append({"response_action": "update", "view": next_step})
    await world.driver.submit_view(
        user_id="U1", view_id=view_id, values={"domain_value": "contoso.com", "pim_choice": "off"}
    )
    assert world.sandbox.views[view_id].view["title"]["text"] == "Sign in"
    assert world.sandbox.views[view_id].is_open

    world.bot.acks.append(None)  # empty ack: Slack closes the view
    await world.driver.submit_view(
        user_id="U1", view_id=view_id, values={"domain_value": "contoso.com", "pim_choice": "off"}
    )
    assert not world.sandbox.views[view_id].is_open
    outcomes = [c.params["response_action"] for c in world.sandbox.calls_to("response_action")]
    assert outcomes == ["errors", "update", None]


async def test_click_in_view_and_home(world: World) -> None:
    opened = await world.client.views_open(
        trigger_id=world.sandbox.issue_trigger_id(user_id="U1"), view=MODAL
    )
    view_id = opened["view"]["id"]
    await world.driver.click_in_view(
        user_id="U1", view_id=view_id, action_id="help", state={"domain_value": "partial"}
    )
    payload = world.bot.received[-1]["payload"]
    assert payload["container"] == {"type": "view", "view_id": view_id}
    assert payload["view"]["state"]["values"]["domain"]["domain_value"]["value"] == "partial"
    pushed = await world.client.views_push(trigger_id=payload["trigger_id"], view=MODAL)
    assert pushed["view"]["previous_view_id"] == view_id

    await world.client.views_publish(
        user_id="U2",
        view={"type": "home", "blocks": [{"type": "actions", "elements": [button("start")]}]},
    )
    await world.driver.open_home(user_id="U2")
    event_payload = world.bot.received[-1]["payload"]
    assert event_payload["type"] == "event_callback"
    assert event_payload["event"]["type"] == "app_home_opened"
    assert event_payload["event"]["user"] == "U2"
    assert event_payload["event"]["view"]["type"] == "home"
    assert world.bot.received[-1]["headers"]["content-type"] == "application/json"
    await world.driver.open_home(user_id="U2")
    assert world.bot.received[-1]["payload"]["event_id"] != event_payload["event_id"]

    await world.driver.click_home(user_id="U2", action_id="start")
    home_click = world.bot.received[-1]["payload"]
    assert home_click["view"]["type"] == "home"
    assert home_click["actions"][0]["action_id"] == "start"

    challenge = await world.driver.url_verification("abc")
    assert challenge.json() == {"challenge": "abc"}


# ---- against a real Bolt app -----------------------------------------------------------------


async def test_real_bolt_app_round_trip(world: World) -> None:
    from slack_bolt.adapter.starlette.async_handler import AsyncSlackRequestHandler
    from slack_bolt.async_app import AsyncAck, AsyncApp, AsyncRespond

    app = AsyncApp(
        client=AsyncWebClient(token=TOKEN, base_url=world.client.base_url),
        signing_secret=SIGNING_SECRET,
    )

    @app.command("/provision-inline")
    async def command(ack: AsyncAck, body: dict[str, Any], respond: AsyncRespond) -> None:
        await ack()
        await app.client.views_open(trigger_id=body["trigger_id"], view=MODAL)
        await respond(text="opening the form")

    @app.view("tenant")
    async def submitted(ack: AsyncAck, view: dict[str, Any]) -> None:
        domain = view["state"]["values"]["domain"]["domain_value"]["value"]
        if not domain.endswith(".com"):
            await ack(response_action="errors", errors={"domain": "use a .com domain"})
            return
        await ack()
        await app.client.chat_postMessage(
            channel="C1",
            text=f"provisioning {domain}",
            blocks=[{"type": "actions", "elements": [button("approve", "Approve")]}],
        )

    @app.action("approve")
    async def approve(ack: AsyncAck, respond: AsyncRespond, body: dict[str, Any]) -> None:
        await ack()
        await respond(replace_original=True, text=f"approved by <@{body['user']['id']}>")

    handler = AsyncSlackRequestHandler(app)

    async def endpoint(request: Request) -> Response:
        return await handler.handle(request)

    bolt_app = Starlette(routes=[Route("/slack/events", endpoint, methods=["POST"])])
    async with serve_asgi(bolt_app) as bolt_server:
        driver = SlackDriver(
            sandbox=world.sandbox,
            sandbox_base_url=world.server.base_url,
            events_url=f"{bolt_server.base_url}/slack/events",
            signing_secret=SIGNING_SECRET,
            http=world.http,
        )
        response = await driver.slash_command(user_id="U1", channel_id="C1")
        assert response.status_code == 200
        view = await world.sandbox.wait_for(lambda s: next(iter(s.open_views("U1")), None))
        await world.sandbox.wait_for(lambda s: s.ephemerals)
        assert world.sandbox.ephemerals[-1].text == "opening the form"

        rejected = await driver.submit_view(
            user_id="U1",
            view_id=view.id,
            values={"domain_value": "contoso.org", "pim_choice": "on"},
        )
        assert SlackDriver.view_errors(rejected) == {"domain": "use a .com domain"}
        assert world.sandbox.views[view.id].is_open

        await driver.submit_view(
            user_id="U1",
            view_id=view.id,
            values={"domain_value": "contoso.com", "pim_choice": "on"},
        )
        assert not world.sandbox.views[view.id].is_open
        posted = await world.sandbox.wait_for(lambda s: next(iter(s.messages("C1")), None))
        assert posted.text == "provisioning contoso.com"

        await driver.click(user_id="U2", channel_id="C1", message_ts=posted.ts, action_id="approve")
        updated = await world.sandbox.wait_for(
            lambda s: s.message("C1", posted.ts) if s.message("C1", posted.ts).edited else None
        )
        assert updated.text == "approved by <@U2>"
        assert updated.blocks == []

        forged = await driver.slash_command(
            user_id="U1", channel_id="C1", signature_override="v0=00"
        )
        assert forged.status_code == 401


async def test_a_held_call_waits_then_is_carried_out_when_released(world: World) -> None:
    hold = world.sandbox.hold("chat.postMessage", lambda params: params.get("text") == "held")
    await world.client.chat_postMessage(channel="C1", text="not held")
    posting = asyncio.create_task(world.client.chat_postMessage(channel="C1", text="held"))
    call = await hold.reached()
    assert call.params["text"] == "held"
    assert call.client is not None
    assert call.client[0] == "127.0.0.1"
    assert [m.text for m in world.sandbox.messages("C1")] == ["not held"]  # not yet
    hold.release()
    answer = await posting
    assert answer["ok"]
    assert [m.text for m in world.sandbox.messages("C1")] == ["not held", "held"]
    # Spent: the next matching call goes through at once.
    await world.client.chat_postMessage(channel="C1", text="held")
    assert len(world.sandbox.messages("C1")) == 3


async def test_a_dropped_call_is_not_carried_out_and_its_connection_breaks(world: World) -> None:
    hold = world.sandbox.hold("chat.update")
    posted = await world.client.chat_postMessage(channel="C1", text="before")
    updating = asyncio.create_task(
        world.client.chat_update(channel="C1", ts=posted["ts"], text="after")
    )
    await hold.reached()
    hold.drop()
    with pytest.raises(Exception) as caught:  # noqa: PT011 - whatever the client makes of it
        await updating
    assert not isinstance(caught.value, SlackApiError)  # no answer from Slack at all
    assert world.sandbox.message("C1", posted["ts"]).text == "before"
    [dropped] = world.sandbox.calls_to("chat.update")
    assert dropped.error == "dropped"


async def test_an_unreached_hold_times_out_naming_itself(world: World) -> None:
    hold = world.sandbox.hold("views.open")
    with pytest.raises(TimeoutError, match=r"views\.open"):
        await hold.reached(timeout=0.05)
    world.sandbox.holds.release_all()

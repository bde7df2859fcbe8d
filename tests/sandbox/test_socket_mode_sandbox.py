"""The sandbox's Socket Mode server, driven by Slack's own client (slack_sdk's aiohttp
``SocketModeClient``), and ``SlackDriver`` delivering through it."""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import httpx
import pytest
from slack_sdk.errors import SlackApiError
from slack_sdk.socket_mode.aiohttp import SocketModeClient
from slack_sdk.socket_mode.async_client import AsyncBaseSocketModeClient
from slack_sdk.socket_mode.request import SocketModeRequest
from slack_sdk.socket_mode.response import SocketModeResponse
from slack_sdk.web.async_client import AsyncWebClient

from bot.sandbox.server import RunningServer, serve_asgi
from bot.sandbox.slack import SandboxSlack
from bot.sandbox.slack_driver import SlackDriver, SlackDriverError, SocketAckResponse

APP_TOKEN = "xapp-1-A0SANDBOX-1-test"
BOT_TOKEN = "xoxb-sandbox-token"
NO_ACK = object()

MODAL: dict[str, Any] = {
    "type": "modal",
    "callback_id": "tenant",
    "title": {"type": "plain_text", "text": "Provision"},
    "submit": {"type": "plain_text", "text": "Next"},
    "blocks": [
        {
            "type": "input",
            "block_id": "domain",
            "label": {"type": "plain_text", "text": "Domain"},
            "element": {"type": "plain_text_input", "action_id": "domain_value"},
        }
    ],
}


@dataclass
class App:
    """A Socket Mode app built on slack_sdk's client: records what it is sent, acks as told
    (``acks``: a payload dict, ``None`` for an empty ack, ``NO_ACK`` to stay silent)."""

    client: SocketModeClient
    messages: asyncio.Queue[dict[str, Any]] = field(default_factory=asyncio.Queue)
    requests: list[SocketModeRequest] = field(default_factory=list)
    acks: deque[object] = field(default_factory=deque)
    silent: list[SocketModeRequest] = field(default_factory=list)

    async def on_message(
        self, client: AsyncBaseSocketModeClient, message: dict[str, Any], raw: str | None
    ) -> None:
        await self.messages.put(message)

    async def on_request(
        self, client: AsyncBaseSocketModeClient, request: SocketModeRequest
    ) -> None:
        self.requests.append(request)
        ack = self.acks.popleft() if self.acks else None
        if ack is NO_ACK:
            self.silent.append(request)
            return
        payload = ack if isinstance(ack, dict) else None
        await client.send_socket_mode_response(SocketModeResponse(request.envelope_id, payload))

    async def ack_late(self, request: SocketModeRequest) -> None:
        await self.client.send_socket_mode_response(SocketModeResponse(request.envelope_id))


@dataclass
class World:
    sandbox: SandboxSlack
    server: RunningServer
    web: AsyncWebClient
    connect: Callable[[], Awaitable[App]]


async def close_client(client: SocketModeClient) -> None:
    await client.close()
    tasks = [client.message_processor, client.current_session_monitor, client.message_receiver]
    await asyncio.gather(*(t for t in tasks if t is not None), return_exceptions=True)


@pytest.fixture
async def world() -> AsyncIterator[World]:
    sandbox = SandboxSlack(app_token=APP_TOKEN)
    sandbox.add_user("U1", "alice")
    sandbox.add_channel("C1", "provisioning")
    clients: list[SocketModeClient] = []
    async with serve_asgi(sandbox.app) as server:
        web = AsyncWebClient(base_url=f"{server.base_url}/api/")

        async def connect() -> App:
            client = SocketModeClient(app_token=APP_TOKEN, web_client=web, ping_interval=2)
            clients.append(client)
            app = App(client)
            client.message_listeners.append(app.on_message)
            client.socket_mode_request_listeners.append(app.on_request)
            await client.connect()
            return app

        try:
            yield World(sandbox, server, web, connect)
        finally:
            for client in clients:
                await close_client(client)


def hellos(sandbox: SandboxSlack) -> list[Any]:
    return sandbox.calls_to("socket_mode.hello")


# ---- apps.connections.open ---------------------------------------------------------------------


async def test_apps_connections_open_gives_a_socket_url_for_the_app_token(world: World) -> None:
    answer = await world.web.apps_connections_open(app_token=APP_TOKEN)
    assert answer["ok"] is True
    assert answer["url"].startswith("ws://127.0.0.1:")
    assert "/socket-mode/" in answer["url"]
    second = await world.web.apps_connections_open(app_token=APP_TOKEN)
    assert second["url"] != answer["url"]  # a fresh ticket each time


@pytest.mark.parametrize(
    ("token", "error"),
    [(BOT_TOKEN, "not_allowed_token_type"), ("xapp-1-A0OTHER-1-nope", "invalid_auth")],
)
async def test_apps_connections_open_refuses_other_tokens(
    world: World, token: str, error: str
) -> None:
    with pytest.raises(SlackApiError) as raised:
        await world.web.apps_connections_open(app_token=token)
    assert raised.value.response["error"] == error


async def test_apps_connections_open_without_a_token_is_not_authed(world: World) -> None:
    async with httpx.AsyncClient() as http:
        answer = await http.post(f"{world.server.base_url}/api/apps.connections.open")
    assert answer.json() == {"ok": False, "error": "not_authed"}


async def test_the_app_token_is_not_a_bot_token(world: World) -> None:
    client = AsyncWebClient(token=APP_TOKEN, base_url=f"{world.server.base_url}/api/")
    with pytest.raises(SlackApiError) as raised:
        await client.chat_postMessage(channel="C1", text="hi")
    assert raised.value.response["error"] == "not_allowed_token_type"


async def test_a_sandbox_without_socket_mode_refuses_every_app_token() -> None:
    sandbox = SandboxSlack(app_token=None)
    async with serve_asgi(sandbox.app) as server:
        web = AsyncWebClient(base_url=f"{server.base_url}/api/")
        with pytest.raises(SlackApiError) as raised:
            await web.apps_connections_open(app_token=APP_TOKEN)
    assert raised.value.response["error"] == "invalid_auth"


async def test_a_socket_url_is_good_for_one_connection(world: World) -> None:
    url = (await world.web.apps_connections_open(app_token=APP_TOKEN))["url"]
    async with aiohttp.ClientSession() as session:
        async with session.ws_connect(url) as ws:
            hello = await ws.receive_json()
            assert hello["type"] == "hello"
            with pytest.raises(aiohttp.WSServerHandshakeError) as raised:
                await session.ws_connect(url)
            assert raised.value.status == 401
        bad = url.rsplit("/", 1)[0] + "/not-a-ticket"
        with pytest.raises(aiohttp.WSServerHandshakeError):
            await session.ws_connect(bad)
    failed = world.sandbox.calls_to("socket_mode.connect")
    assert [c.error for c in failed] == ["invalid_ticket", "invalid_ticket"]


# ---- the connection ------------------------------------------------------------------------


async def test_hello_on_connect_counts_the_connections(world: World) -> None:
    first = await world.connect()
    hello = await asyncio.wait_for(first.messages.get(), 5)
    assert hello["type"] == "hello"
    assert hello["num_connections"] == 1
    assert hello["connection_info"] == {"app_id": world.sandbox.app_id}
    second = await world.connect()
    assert (await asyncio.wait_for(second.messages.get(), 5))["num_connections"] == 2
    assert len(world.sandbox.socket_connections()) == 2
    assert len(world.sandbox.calls_to("apps.connections.open")) == 2


async def test_the_server_answers_the_clients_pings_and_pings_it(world: World) -> None:
    await world.connect()
    # slack_sdk pings as soon as it is connected; the sandbox pongs (else it would reconnect).
    await world.sandbox.wait_for(lambda s: s.socket_connections()[0].pings_received >= 1)
    seconds = await world.sandbox.ping()
    assert 0 <= seconds < 3
    assert world.sandbox.socket_connections()[0].pongs_received == 1


async def test_ping_without_a_connection_is_a_lookup_error(world: World) -> None:
    with pytest.raises(LookupError):
        await world.sandbox.ping()


# ---- envelopes and acks --------------------------------------------------------------------


async def test_an_envelope_reaches_the_app_and_its_ack_payload_comes_back(world: World) -> None:
    app = await world.connect()
    errors = {"response_action": "errors", "errors": {"domain": "Unknown tenant"}}
    app.acks.append(errors)
    payload = {"type": "view_submission", "view": {"id": "V1", "state": {"values": {}}}}
    ack = await world.sandbox.deliver("interactive", payload)
    assert ack.acked is True
    assert ack.payload == errors
    assert ack.seconds is not None
    assert 0 <= ack.seconds < 3
    [request] = app.requests
    assert request.type == "interactive"
    assert request.envelope_id == ack.envelope.envelope_id
    assert request.payload == payload
    assert request.accepts_response_payload is True
    assert request.retry_attempt == 0
    assert request.retry_reason == ""
    recorded = world.sandbox.calls_to("socket_mode.ack")[-1]
    assert recorded.ok
    assert recorded.params["payload"] == errors


async def test_an_empty_ack_has_no_payload_and_events_take_none(world: World) -> None:
    app = await world.connect()
    body = {"type": "event_callback", "event": {"type": "app_home_opened", "user": "U1"}}
    ack = await world.sandbox.deliver("events_api", body, retry_attempt=2, retry_reason="timeout")
    assert ack.acked is True
    assert ack.payload is None
    [request] = app.requests
    assert request.accepts_response_payload is False
    assert request.retry_attempt == 2
    assert request.retry_reason == "timeout"


async def test_an_envelope_not_acked_in_time_counts_as_not_acked(world: World) -> None:
    app = await world.connect()
    app.acks.append(NO_ACK)
    ack = await world.sandbox.deliver("slash_commands", {"command": "/x"}, timeout=0.2)
    assert ack.acked is False
    assert ack.error == "operation_timeout"
    assert world.sandbox.calls_to("socket_mode.ack")[-1].error == "operation_timeout"
    await app.ack_late(app.silent[0])
    late = await world.sandbox.wait_for(
        lambda s: [c for c in s.calls_to("socket_mode.ack") if c.error == "ack_after_timeout"]
    )
    assert late[0].params["text"].startswith("{")


async def test_with_no_connection_an_envelope_is_not_dispatched(world: World) -> None:
    ack = await world.sandbox.deliver("slash_commands", {"command": "/x"})
    assert (ack.acked, ack.error) == (False, "dispatch_failed")
    with pytest.raises(ValueError, match="unknown envelope type"):
        await world.sandbox.deliver("commands", {})


async def test_envelopes_take_turns_over_the_open_connections(world: World) -> None:
    first = await world.connect()
    second = await world.connect()
    for _ in range(4):
        assert (await world.sandbox.deliver("events_api", {"type": "event_callback"})).acked
    assert (len(first.requests), len(second.requests)) == (2, 2)


# ---- disconnects ---------------------------------------------------------------------------


async def test_disconnect_refresh_requested_makes_the_client_reconnect(world: World) -> None:
    app = await world.connect()
    [old] = world.sandbox.socket_connections()
    assert await world.sandbox.disconnect("refresh_requested") == [old.id]
    await world.sandbox.wait_for(
        lambda s: len(hellos(s)) == 2 and [c.id for c in s.socket_connections()] != [old.id]
    )
    [new] = world.sandbox.socket_connections()
    assert new.id != old.id
    assert len(world.sandbox.calls_to("apps.connections.open")) == 2
    closed = world.sandbox.calls_to("socket_mode.closed")
    assert [c.params["connection_id"] for c in closed] == [old.id]
    app.acks.append({"text": "still here"})
    ack = await world.sandbox.deliver("slash_commands", {"command": "/x"})
    assert ack.payload == {"text": "still here"}
    assert ack.envelope.connection_id == new.id


async def test_a_connection_closed_by_slack_is_reopened_by_the_client(world: World) -> None:
    await world.connect()
    [old] = world.sandbox.socket_connections()
    assert await world.sandbox.close_connection() == [old.id]
    await world.sandbox.wait_for(lambda s: len(hellos(s)) == 2 and s.socket_connections())
    assert world.sandbox.socket_connections()[0].id != old.id


async def test_aclose_closes_the_connections_and_the_server(world: World) -> None:
    app = await world.connect()
    app.client.auto_reconnect_enabled = False
    app.client.default_auto_reconnect_enabled = False
    await world.sandbox.aclose()
    assert world.sandbox.socket_connections() == []
    await world.sandbox.aclose()  # idempotent
    # A later apps.connections.open starts a new server.
    assert (await world.web.apps_connections_open(app_token=APP_TOKEN))["ok"]


# ---- SlackDriver over Socket Mode ----------------------------------------------------------


@contextlib.asynccontextmanager
async def socket_driver(world: World) -> AsyncIterator[SlackDriver]:
    async with httpx.AsyncClient() as http:
        yield SlackDriver(
            sandbox=world.sandbox,
            sandbox_base_url=world.server.base_url,
            events_url="http://127.0.0.1:9/never-used",
            signing_secret="unused",
            http=http,
            transport="socket_mode",
        )


async def test_driver_slash_command_goes_as_an_envelope_and_returns_the_ack(
    world: World,
) -> None:
    app = await world.connect()
    app.acks.append({"response_type": "ephemeral", "text": "Working on it"})
    async with socket_driver(world) as driver:
        response = await driver.slash_command(user_id="U1", channel_id="C1", text="help")
    assert isinstance(response, SocketAckResponse)
    assert response.status_code == 200
    assert response.json() == {"response_type": "ephemeral", "text": "Working on it"}
    assert driver.last_response is response
    [request] = app.requests
    assert request.type == "slash_commands"
    assert request.accepts_response_payload is True
    assert request.payload["command"] == "/provision-inline"
    assert request.payload["text"] == "help"
    assert request.payload["channel_id"] == "C1"
    assert request.payload["response_url"].startswith(world.server.base_url)
    assert all(isinstance(value, str) for value in request.payload.values())


async def test_driver_submission_errors_keep_the_view_open_and_read_like_http(
    world: World,
) -> None:
    app = await world.connect()
    view = world.sandbox.open_view(MODAL, "U1")
    app.acks.append({"response_action": "errors", "errors": {"domain": "Unknown tenant"}})
    async with socket_driver(world) as driver:
        response = await driver.submit_view(
            user_id="U1", view_id=view.id, values={"domain_value": "nope.example"}
        )
        assert driver.view_errors(response) == {"domain": "Unknown tenant"}
        assert world.sandbox.views[view.id].is_open
        [request] = app.requests
        assert request.type == "interactive"
        assert request.payload["type"] == "view_submission"
        state = request.payload["view"]["state"]["values"]
        assert state["domain"]["domain_value"]["value"] == "nope.example"
        response = await driver.submit_view(
            user_id="U1", view_id=view.id, values={"domain_value": "contoso.com"}
        )
    assert response.status_code == 200
    assert response.content == b""
    assert not world.sandbox.views[view.id].is_open


async def test_driver_events_go_as_events_api_envelopes_with_retries(world: World) -> None:
    app = await world.connect()
    async with socket_driver(world) as driver:
        response = await driver.open_home(user_id="U1")
        assert response.status_code == 200
        request = driver.build_event({"type": "app_mention", "user": "U1", "text": "hi"})
        await driver.send(request)
        await driver.resend(request, retry_num=1, retry_reason="timeout")
        with pytest.raises(SlackDriverError, match="url_verification"):
            await driver.url_verification()
        with pytest.raises(SlackDriverError, match="not signed"):
            await driver.send(request, signature_override="v0=bad")
    home, mention, retry = app.requests
    assert home.type == "events_api"
    assert home.payload["type"] == "event_callback"
    assert home.payload["event"]["type"] == "app_home_opened"
    assert home.accepts_response_payload is False
    assert mention.payload == retry.payload
    assert (retry.retry_attempt, retry.retry_reason) == (1, "timeout")


async def test_driver_reports_an_envelope_that_was_not_acked(world: World) -> None:
    app = await world.connect()
    app.acks.append(NO_ACK)
    async with socket_driver(world) as driver:
        driver.ack_timeout = 0.2
        response = await driver.slash_command(user_id="U1", channel_id="C1")
    assert isinstance(response, SocketAckResponse)
    assert response.status_code == 504
    assert response.ack.error == "operation_timeout"
    assert driver.ack_body(response) is None

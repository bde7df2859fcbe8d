"""``/provision-inline``'s listeners, called directly: help, status, cancel, the start form."""

from __future__ import annotations

import json

from slack_bolt.context.ack.async_ack import AsyncAck

from bot.session.commands import CommandKind
from bot.workflow import Scope
from handlers.commands import (
    asked_for,
    cancel_session,
    open_start_form,
    show_help,
    show_status,
)
from tests.handlers.conftest import acked, command_body, context_for, ephemerals_to, respond_to
from tests.integration.conftest import ADMIN, Harness
from tests.integration.steps import latest_link


async def test_sub_commands_are_told_apart() -> None:
    status, start = asked_for(CommandKind.STATUS), asked_for(CommandKind.START)
    assert await status({"text": " Status "})
    assert not await status({"text": "cancel"})
    assert await start({"text": ""})
    assert not await start({"text": "upgrade"})
    assert await asked_for(CommandKind.HELP, CommandKind.UNKNOWN)({"text": "frobnicate"})


async def test_help_and_an_unknown_word(harness: Harness) -> None:
    for text in ("help", "frobnicate"):
        body = command_body(harness, ADMIN, text)
        ack = AsyncAck()
        await show_help(
            ack=ack, command=body, respond=respond_to(body), context=context_for(harness)
        )
        assert acked(ack) == {}
    await ephemerals_to(harness, ADMIN, "/provision-inline status")
    unknown = await ephemerals_to(harness, ADMIN, "I don't know `frobnicate`")
    assert "/provision-inline cancel" in unknown.text


async def test_status_lists_the_channel_s_sessions(harness: Harness) -> None:
    root_ts = await harness.start_session("contoso.com")
    await latest_link(harness, root_ts)
    body = command_body(harness, ADMIN, "status")
    ack = AsyncAck()
    await show_status(ack=ack, command=body, respond=respond_to(body), context=context_for(harness))
    assert acked(ack) == {}
    status = await ephemerals_to(harness, ADMIN, "contoso.com: Next")
    assert f"<@{ADMIN}> start: ok" in json.dumps(status.blocks)


async def test_cancel_with_nothing_to_cancel_then_the_one_session(harness: Harness) -> None:
    body = command_body(harness, ADMIN, "cancel")
    await cancel_session(
        ack=AsyncAck(), command=body, respond=respond_to(body), context=context_for(harness)
    )
    await ephemerals_to(harness, ADMIN, "No active provisioning session in this channel")
    await harness.start_session("contoso.com")
    body = command_body(harness, ADMIN, "cancel contoso.com")
    await cancel_session(
        ack=AsyncAck(), command=body, respond=respond_to(body), context=context_for(harness)
    )
    await ephemerals_to(harness, ADMIN, "Cancelled the provisioning of *contoso.com*")
    assert await harness.runtime.store.active() == []


async def test_the_start_form_opens_with_the_scope_asked_for(harness: Harness) -> None:
    for text, scope in (("", Scope.FULL), ("upgrade", Scope.UPGRADE)):
        body = command_body(harness, ADMIN, text)
        ack = AsyncAck()
        await open_start_form(
            ack=ack, command=body, respond=respond_to(body), context=context_for(harness)
        )
        assert acked(ack) == {}
        [view] = harness.slack.open_views(ADMIN)[-1:]
        assert view.callback_id == "start_provisioning"
        [chosen] = [
            element["initial_option"]["value"]
            for block in view.view["blocks"]
            for element in [block.get("element") or {}]
            if "initial_option" in element
        ]
        assert chosen == scope

"""Buttons of the change plan: Acknowledge warnings, Submit, Check again, Retry (admins only)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from slack_bolt.context.ack.async_ack import AsyncAck
from slack_bolt.context.respond.async_respond import AsyncRespond

from bot.blocks import Message
from bot.steps.mailflow.views import (
    ACTION_ACKNOWLEDGE,
    ACTION_CHECK_AGAIN,
    ACTION_RETRY,
    ACTION_SUBMIT,
)
from bot.workflow import Event, EventKind
from handlers.reply import as_admin

if TYPE_CHECKING:
    from bot.app import Runtime


def register(runtime: Runtime) -> None:
    provisioner = runtime.provisioner

    @runtime.bolt.action(ACTION_SUBMIT)
    @runtime.inflight.track
    async def submit_clicked(ack: AsyncAck, body: dict[str, Any], respond: AsyncRespond) -> None:
        await ack()
        await as_admin(runtime, body, respond, "submit the change plan", runtime.mailflow.submit)

    @runtime.bolt.action(ACTION_ACKNOWLEDGE)
    @runtime.inflight.track
    async def acknowledge_clicked(
        ack: AsyncAck, body: dict[str, Any], respond: AsyncRespond
    ) -> None:
        await ack()
        await as_admin(
            runtime, body, respond, "acknowledge the warnings", runtime.mailflow.acknowledge
        )

    @runtime.bolt.action(ACTION_CHECK_AGAIN)
    @runtime.inflight.track
    async def check_again_clicked(
        ack: AsyncAck, body: dict[str, Any], respond: AsyncRespond
    ) -> None:
        await ack()
        await as_admin(runtime, body, respond, "run the checks again", runtime.mailflow.check_again)

    @runtime.bolt.action(ACTION_RETRY)
    @runtime.inflight.track
    async def retry_clicked(ack: AsyncAck, body: dict[str, Any], respond: AsyncRespond) -> None:
        await ack()

        async def retry(session_id: str, user_id: str) -> Message | None:
            await provisioner.handle(
                session_id, Event(EventKind.RETRY, actor=user_id, at=provisioner.now())
            )
            return None

        await as_admin(runtime, body, respond, "retry configuring Exchange Online", retry)

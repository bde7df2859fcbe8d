"""Buttons of the change plan: Acknowledge warnings, Submit, Check again, Retry (admins only, see
``handlers.wire``)."""

from __future__ import annotations

from typing import Any

from slack_bolt.context.ack.async_ack import AsyncAck
from slack_bolt.context.async_context import AsyncBoltContext
from slack_bolt.context.respond.async_respond import AsyncRespond

from bot.blocks import Message
from bot.workflow import Event, EventKind
from handlers.reply import answer_for_session
from handlers.services import services

__all__ = ["acknowledge_clicked", "check_again_clicked", "retry_clicked", "submit_clicked"]


async def submit_clicked(
    ack: AsyncAck, body: dict[str, Any], respond: AsyncRespond, context: AsyncBoltContext
) -> None:
    await ack()
    found = services(context)
    await answer_for_session(body, respond, found.mailflow.submit, take_over=found.take_over_job)


async def acknowledge_clicked(
    ack: AsyncAck, body: dict[str, Any], respond: AsyncRespond, context: AsyncBoltContext
) -> None:
    await ack()
    found = services(context)
    await answer_for_session(
        body, respond, found.mailflow.acknowledge, take_over=found.take_over_job
    )


async def check_again_clicked(
    ack: AsyncAck, body: dict[str, Any], respond: AsyncRespond, context: AsyncBoltContext
) -> None:
    await ack()
    found = services(context)
    await answer_for_session(
        body, respond, found.mailflow.check_again, take_over=found.take_over_job
    )


async def retry_clicked(
    ack: AsyncAck, body: dict[str, Any], respond: AsyncRespond, context: AsyncBoltContext
) -> None:
    await ack()
    found = services(context)
    provisioner = found.provisioner

    async def retry(session_id: str, user_id: str) -> Message | None:
        event = Event(EventKind.RETRY, actor=user_id, at=provisioner.now())
        await provisioner.handle(session_id, event)
        return None

    await answer_for_session(body, respond, retry, take_over=found.take_over_job)

"""Buttons of the change plan: Acknowledge warnings, Submit, Check again, Retry (admins only)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from slack_bolt.context.ack.async_ack import AsyncAck
from slack_bolt.context.respond.async_respond import AsyncRespond

from bot.access import AccessCheckFailed
from bot.mailflow.render import ACTION_ACKNOWLEDGE, ACTION_RETRY
from bot.provisioning_views import ACTION_CHECK_AGAIN, ACTION_SUBMIT
from bot.views import Message, notice, refusal_message, refused_transition_message
from bot.workflow import Event, EventKind, TransitionNotAllowed
from state.sessions import SessionGone

if TYPE_CHECKING:
    from bot.app import Runtime

_GONE = notice(
    "This session no longer exists (it ended long ago and its record expired). "
    "Start a new one with `/provision-inline`."
)


def register(runtime: Runtime) -> None:
    provisioner = runtime.provisioner

    async def say(respond: AsyncRespond, message: Message) -> None:
        await respond(
            text=message.text,
            blocks=message.blocks,
            response_type="ephemeral",
            replace_original=False,
        )

    async def as_admin(
        body: dict[str, Any],
        respond: AsyncRespond,
        action: str,
        work: Callable[[str, str], Awaitable[Message | None]],
    ) -> None:
        """Run ``work(session_id, user_id)`` for an admin; tell anyone else who may."""
        user_id = body["user"]["id"]
        session_id = body["actions"][0]["value"]
        try:
            may = await runtime.access.is_admin(user_id)
        except AccessCheckFailed:
            may = False
        if not may:
            await provisioner.store.record(
                session_id, actor=user_id, action=f"refused: {action}", result="not_admin"
            )
            await say(respond, refusal_message(action, runtime.access.admins))
            return
        try:
            answer = await work(session_id, user_id)
        except TransitionNotAllowed as refused:
            answer = refused_transition_message(refused)
        except SessionGone:
            answer = _GONE
        if answer is not None:
            await say(respond, answer)

    @runtime.bolt.action(ACTION_SUBMIT)
    @runtime.inflight.track
    async def submit_clicked(ack: AsyncAck, body: dict[str, Any], respond: AsyncRespond) -> None:
        await ack()
        await as_admin(body, respond, "submit the change plan", runtime.mailflow.submit)

    @runtime.bolt.action(ACTION_ACKNOWLEDGE)
    @runtime.inflight.track
    async def acknowledge_clicked(
        ack: AsyncAck, body: dict[str, Any], respond: AsyncRespond
    ) -> None:
        await ack()
        await as_admin(body, respond, "acknowledge the warnings", runtime.mailflow.acknowledge)

    @runtime.bolt.action(ACTION_CHECK_AGAIN)
    @runtime.inflight.track
    async def check_again_clicked(
        ack: AsyncAck, body: dict[str, Any], respond: AsyncRespond
    ) -> None:
        await ack()
        await as_admin(body, respond, "run the checks again", runtime.mailflow.check_again)

    @runtime.bolt.action(ACTION_RETRY)
    @runtime.inflight.track
    async def retry_clicked(ack: AsyncAck, body: dict[str, Any], respond: AsyncRespond) -> None:
        await ack()

        async def retry(session_id: str, user_id: str) -> Message | None:
            await provisioner.handle(
                session_id, Event(EventKind.RETRY, actor=user_id, at=provisioner.now())
            )
            return None

        await as_admin(body, respond, "retry configuring Exchange Online", retry)

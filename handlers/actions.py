"""Buttons in the channel and the thread: who may click is checked after the ack."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from slack_bolt.context.ack.async_ack import AsyncAck
from slack_bolt.context.respond.async_respond import AsyncRespond

from bot.session.views import ACTION_CANCEL, refusal_message
from bot.steps.consent.model import ConsentApp
from bot.steps.consent.views import ACTION_CONSENT_OPEN, ACTION_CONSENT_RENEW
from bot.steps.verify.views import ACTION_VERIFY
from bot.workflow import Event, EventKind
from handlers.reply import as_admin, is_admin, say

if TYPE_CHECKING:
    from bot.app import Runtime


def register(runtime: Runtime) -> None:
    provisioner = runtime.provisioner

    async def act(
        body: dict[str, Any], respond: AsyncRespond, *, action: str, kind: EventKind
    ) -> None:
        """An admin's button that moves the session (its value is the session id)."""

        async def move(session_id: str, user_id: str) -> None:
            await provisioner.handle(session_id, Event(kind, actor=user_id, at=provisioner.now()))

        await as_admin(runtime, body, respond, action, move)

    @runtime.bolt.action(ACTION_CONSENT_OPEN)
    @runtime.inflight.track
    async def consent_link_opened(ack: AsyncAck, body: dict[str, Any]) -> None:
        # A URL button opens the browser by itself; Slack still wants the click acked.
        await ack()
        await runtime.consents.opened(body["actions"][0]["value"], body["user"]["id"])

    @runtime.bolt.action(ACTION_CONSENT_RENEW)
    @runtime.inflight.track
    async def consent_link_renewed(
        ack: AsyncAck, body: dict[str, Any], respond: AsyncRespond
    ) -> None:
        await ack()
        if not await is_admin(runtime.access, body["user"]["id"]):
            await say(respond, refusal_message("make a new consent link", runtime.access.admins))
            return
        session_id, _, app = body["actions"][0]["value"].partition(":")
        problem = await runtime.consents.renew(
            session_id,
            ConsentApp(app),
            channel_id=body["container"]["channel_id"],
            message_ts=body["container"]["message_ts"],
        )
        if problem is not None:
            await say(respond, problem)

    @runtime.bolt.action(ACTION_VERIFY)
    @runtime.inflight.track
    async def verify_clicked(ack: AsyncAck, body: dict[str, Any], respond: AsyncRespond) -> None:
        await ack()
        await act(
            body,
            respond,
            action="verify the grants",
            kind=EventKind.VERIFY,
        )

    @runtime.bolt.action(ACTION_CANCEL)
    @runtime.inflight.track
    async def cancel_clicked(ack: AsyncAck, body: dict[str, Any], respond: AsyncRespond) -> None:
        await ack()
        await act(body, respond, action="cancel provisioning", kind=EventKind.CANCEL)

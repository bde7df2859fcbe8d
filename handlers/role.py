"""Step 2's buttons and modal: request, acknowledge/decline/withdraw, assign, check."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from slack_bolt.context.ack.async_ack import AsyncAck
from slack_bolt.context.respond.async_respond import AsyncRespond
from slack_sdk.errors import SlackApiError

from bot.session.views import notice, refusal_message
from bot.steps.role.model import REQUEST_CALLBACK, validate
from bot.steps.role.requirements import RoleRequirements
from bot.steps.role.views import (
    ACTION_ACKNOWLEDGE,
    ACTION_ASSIGN_SIGN_IN,
    ACTION_CHECK,
    ACTION_DECLINE,
    ACTION_NEW_SIGN_IN,
    ACTION_PORTAL,
    ACTION_REQUEST_AMEND,
    ACTION_REQUEST_OPEN,
    ACTION_REQUEST_OPEN_DIRECT,
    ACTION_REQUEST_OPEN_PIM,
    ACTION_WITHDRAW,
    request_modal,
)
from bot.workflow import EventKind
from handlers.reply import is_admin, reply_ephemeral, response_url_of, say

if TYPE_CHECKING:
    from bot.app import Runtime

_OPENERS = {
    ACTION_REQUEST_OPEN: None,  # the policy was read: use what is stored
    ACTION_REQUEST_AMEND: None,  # Microsoft asked for more: stored, tightened
    ACTION_REQUEST_OPEN_PIM: RoleRequirements.assumed_pim,
    ACTION_REQUEST_OPEN_DIRECT: RoleRequirements.without_pim,
}

_DECISIONS = {
    ACTION_ACKNOWLEDGE: EventKind.ROLE_ACKNOWLEDGE,
    ACTION_DECLINE: EventKind.ROLE_DECLINE,
    ACTION_WITHDRAW: EventKind.ROLE_WITHDRAW,
}


def register(runtime: Runtime) -> None:
    step = runtime.role_step

    async def open_request(ack: AsyncAck, body: dict[str, Any], respond: AsyncRespond) -> None:
        await ack()
        action = body["actions"][0]
        session_id = action["value"]
        user_id = body["user"]["id"]
        if not await is_admin(runtime.access, user_id):
            await say(respond, refusal_message("request the role", runtime.access.admins))
            return
        make = _OPENERS[action["action_id"]]
        requirements = make() if make else await step.requirements(session_id)
        if requirements is None:
            requirements = RoleRequirements.assumed_pim()
        await step.remember_requirements(session_id, requirements)
        amending = action["action_id"] == ACTION_REQUEST_AMEND
        metadata = json.dumps({"session": session_id, "response_url": body.get("response_url")})
        try:
            await runtime.slack.views_open(
                trigger_id=body["trigger_id"],
                view=request_modal(
                    requirements,
                    private_metadata=metadata,
                    initial=await step.request(session_id) if amending else None,
                    notice="Microsoft asked for more; complete what is marked."
                    if amending
                    else None,
                ),
            )
        except SlackApiError as error:
            if error.response.get("error") not in ("expired_trigger_id", "invalid_trigger_id"):
                raise
            await say(respond, notice("Slack closed the form's window; press the button again."))

    for action_id in _OPENERS:
        runtime.bolt.action(action_id)(runtime.inflight.track(open_request))

    @runtime.bolt.view(REQUEST_CALLBACK)
    @runtime.inflight.track
    async def request_submitted(ack: AsyncAck, body: dict[str, Any], view: dict[str, Any]) -> None:
        metadata = json.loads(view.get("private_metadata") or "{}")
        session_id = metadata["session"]
        user_id = body["user"]["id"]
        requirements = await step.requirements(session_id) or RoleRequirements.assumed_pim()
        checked = validate(view["state"]["values"], requirements, requested_by=user_id)
        if isinstance(checked, dict):
            await ack(response_action="errors", errors=checked)
            return
        await ack()
        refused = await step.submit(session_id, checked)
        if refused is not None:
            await reply_ephemeral(response_url_of(body), refused)

    @runtime.bolt.action(ACTION_ACKNOWLEDGE)
    @runtime.bolt.action(ACTION_DECLINE)
    @runtime.bolt.action(ACTION_WITHDRAW)
    @runtime.inflight.track
    async def decided(ack: AsyncAck, body: dict[str, Any], respond: AsyncRespond) -> None:
        await ack()
        action = body["actions"][0]
        reply = await step.decide(
            action["value"], body["user"]["id"], _DECISIONS[action["action_id"]]
        )
        await say(respond, reply)

    @runtime.bolt.action(ACTION_ASSIGN_SIGN_IN)
    @runtime.inflight.track
    async def sign_in_opened(ack: AsyncAck, body: dict[str, Any]) -> None:
        await ack()  # a URL button: the browser opens by itself
        await step.sign_in_opened(body["actions"][0]["value"], body["user"]["id"])

    @runtime.bolt.action(ACTION_NEW_SIGN_IN)
    @runtime.bolt.action(ACTION_PORTAL)
    @runtime.bolt.action(ACTION_CHECK)
    @runtime.inflight.track
    async def assignment_help(ack: AsyncAck, body: dict[str, Any], respond: AsyncRespond) -> None:
        await ack()
        action = body["actions"][0]
        user_id = body["user"]["id"]
        if not await is_admin(runtime.access, user_id):
            await say(respond, refusal_message("act on the role assignment", runtime.access.admins))
            return
        session_id = action["value"]
        if action["action_id"] == ACTION_NEW_SIGN_IN:
            await say(respond, await step.new_sign_in(session_id))
        elif action["action_id"] == ACTION_PORTAL:
            await say(respond, await step.portal_steps(session_id))
        else:
            await say(respond, await step.check(session_id, user_id))

"""Step 2's buttons and form: request, acknowledge/decline/withdraw, assign, check. Who may click
is ``handlers.wire``'s business (``handlers.access``)."""

from __future__ import annotations

import json
from typing import Any

from slack_bolt.context.ack.async_ack import AsyncAck
from slack_bolt.context.async_context import AsyncBoltContext
from slack_bolt.context.respond.async_respond import AsyncRespond
from slack_sdk.errors import SlackApiError

from bot.session.views import notice
from bot.steps.role.model import validate
from bot.steps.role.requirements import RoleRequirements
from bot.steps.role.views import (
    ACTION_ACKNOWLEDGE,
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
from handlers.reply import response_url_of, say
from handlers.services import services

__all__ = [
    "DECISIONS",
    "OPENERS",
    "assignment_help",
    "decided",
    "open_request",
    "request_submitted",
    "sign_in_opened",
]

OPENERS = {
    ACTION_REQUEST_OPEN: None,  # the policy was read: use what is stored
    ACTION_REQUEST_AMEND: None,  # Microsoft asked for more: stored, tightened
    ACTION_REQUEST_OPEN_PIM: RoleRequirements.assumed_pim,
    ACTION_REQUEST_OPEN_DIRECT: RoleRequirements.without_pim,
}

DECISIONS = {
    ACTION_ACKNOWLEDGE: EventKind.ROLE_ACKNOWLEDGE,
    ACTION_DECLINE: EventKind.ROLE_DECLINE,
    ACTION_WITHDRAW: EventKind.ROLE_WITHDRAW,
}


async def open_request(
    ack: AsyncAck, body: dict[str, Any], respond: AsyncRespond, context: AsyncBoltContext
) -> None:
    """Open the request form: with the policy read, assumed (PIM or not), or amended."""
    await ack()
    found = services(context)
    step = found.role_step
    action = body["actions"][0]
    session_id = action["value"]
    amending = action["action_id"] == ACTION_REQUEST_AMEND
    if not amending and (refused := await step.may_request(session_id)) is not None:
        await say(respond, refused)
        return
    make = OPENERS[action["action_id"]]
    requirements = make() if make else await step.requirements(session_id)
    if requirements is None:
        requirements = RoleRequirements.assumed_pim()
    await step.remember_requirements(session_id, requirements)
    metadata = json.dumps(
        {"session": session_id, "response_url": body.get("response_url"), "amending": amending}
    )
    try:
        await found.slack.views_open(
            trigger_id=body["trigger_id"],
            view=request_modal(
                requirements,
                private_metadata=metadata,
                initial=await step.request(session_id) if amending else None,
                notice="Microsoft asked for more; complete what is marked." if amending else None,
            ),
        )
    except SlackApiError as error:
        if error.response.get("error") not in ("expired_trigger_id", "invalid_trigger_id"):
            raise
        await say(respond, notice("Slack closed the form's window; press the button again."))


async def request_submitted(
    ack: AsyncAck, body: dict[str, Any], view: dict[str, Any], context: AsyncBoltContext
) -> None:
    """The request form: field errors in the ack, then the request goes to the approvers."""
    found = services(context)
    step = found.role_step
    metadata = json.loads(view.get("private_metadata") or "{}")
    session_id = metadata["session"]
    user_id = body["user"]["id"]
    requirements = await step.requirements(session_id) or RoleRequirements.assumed_pim()
    checked = validate(view["state"]["values"], requirements, requested_by=user_id)
    if isinstance(checked, dict):
        await ack(response_action="errors", errors=checked)
        return
    await ack()
    refused = await step.submit(session_id, checked, amending=bool(metadata.get("amending")))
    if refused is not None:
        await found.replies.ephemeral(response_url_of(body), refused)


async def decided(
    ack: AsyncAck, body: dict[str, Any], respond: AsyncRespond, context: AsyncBoltContext
) -> None:
    """Acknowledge or decline (approvers), withdraw (the requester)."""
    await ack()
    action = body["actions"][0]
    answer = await services(context).role_step.decide(
        action["value"], body["user"]["id"], DECISIONS[action["action_id"]]
    )
    await say(respond, answer)


async def sign_in_opened(ack: AsyncAck, body: dict[str, Any], context: AsyncBoltContext) -> None:
    await ack()  # a URL button: the browser opens by itself
    await services(context).role_step.sign_in_opened(
        body["actions"][0]["value"], body["user"]["id"]
    )


async def assignment_help(
    ack: AsyncAck, body: dict[str, Any], respond: AsyncRespond, context: AsyncBoltContext
) -> None:
    """*New sign-in link*, *I'll do it in the portal*, *I've assigned it* / *Check again*."""
    await ack()
    step = services(context).role_step
    action = body["actions"][0]
    session_id = action["value"]
    if action["action_id"] == ACTION_NEW_SIGN_IN:
        await say(respond, await step.new_sign_in(session_id))
    elif action["action_id"] == ACTION_PORTAL:
        await say(respond, await step.portal_steps(session_id))
    else:
        await say(respond, await step.check(session_id, body["user"]["id"]))

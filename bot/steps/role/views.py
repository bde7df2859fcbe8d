"""Block Kit for step 2 (the Exchange Administrator role), built by pure functions.

Messages come as ``bot.views.Message(text, blocks)``; the modal as a view dict. Buttons carry
``value`` (the caller's session id) and these ``action_id``s:

=============================  ==========================================================
``role_request_open``          open the request modal (policy known)
``role_request_open_pim``      open it, the admin says the tenant uses PIM
``role_request_open_direct``   open it, the admin says the tenant has no PIM
``role_acknowledge``           an approver acknowledges the request (primary)
``role_decline``               an approver declines it (with a confirmation)
``role_withdraw``              the requester withdraws it (with a confirmation)
``role_assign_sign_in``        URL button: the "Assign for me" Microsoft sign-in
``role_sign_in_renew``         post a fresh sign-in link (the old one expired or was used)
``role_assign_portal``         "I'll do it in the portal": post the portal steps
``role_assigned_check``        "I've assigned it" / "Check again": check through Graph
``role_request_amend``         reopen the modal with what the PIM policy turned out to need
=============================  ==========================================================

The modal (``callback_id`` ``role_request``) has the input blocks of ``bot.steps.role.model``:
``role_justification``/``justification_input``, ``role_ticket_number``/``ticket_number_input``,
``role_ticket_system``/``ticket_system_input``, ``role_duration``/``duration_choice``.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, timedelta
from typing import Any, Literal

from bot.actors import signed_in_at_microsoft
from bot.blocks import Block, Message, mention, when
from bot.blocks import actions as _actions
from bot.blocks import button as _button
from bot.blocks import confirm as _confirm
from bot.blocks import context as _context
from bot.blocks import escape as _escape
from bot.blocks import mrkdwn as _mrkdwn
from bot.blocks import plain as _plain
from bot.blocks import section as _section
from bot.steps.role.assign import (
    Assigned,
    AssignmentCheck,
    AssignmentOutcome,
    Failed,
    NeedsMore,
    NotPermitted,
    Pending,
    SignInFailed,
)
from bot.steps.role.model import (
    DURATION_ACTION,
    DURATION_BLOCK,
    JUSTIFICATION_ACTION,
    JUSTIFICATION_BLOCK,
    REQUEST_CALLBACK,
    TICKET_FIELD_MAX_LENGTH,
    TICKET_NUMBER_ACTION,
    TICKET_NUMBER_BLOCK,
    TICKET_SYSTEM_ACTION,
    TICKET_SYSTEM_BLOCK,
    RoleRequest,
    duration_choices,
)
from bot.steps.role.requirements import RoleRequirements, describe_duration, iso_duration

__all__ = [
    "ACTION_ACKNOWLEDGE",
    "ACTION_ASSIGN_SIGN_IN",
    "ACTION_CHECK",
    "ACTION_DECLINE",
    "ACTION_NEW_SIGN_IN",
    "ACTION_PORTAL",
    "ACTION_REQUEST_AMEND",
    "ACTION_REQUEST_OPEN",
    "ACTION_REQUEST_OPEN_DIRECT",
    "ACTION_REQUEST_OPEN_PIM",
    "ACTION_WITHDRAW",
    "ENTRA_PORTAL",
    "Decision",
    "app_message",
    "approval_wanted_message",
    "assignment_choice_message",
    "check_message",
    "decided_message",
    "outcome_message",
    "own_request_message",
    "portal_steps_message",
    "previous_request_line",
    "request_modal",
    "review_message",
    "role_done_message",
    "role_stopped_message",
    "with_request",
]

ACTION_REQUEST_OPEN = "role_request_open"
ACTION_REQUEST_OPEN_PIM = "role_request_open_pim"
ACTION_REQUEST_OPEN_DIRECT = "role_request_open_direct"
ACTION_ACKNOWLEDGE = "role_acknowledge"
ACTION_DECLINE = "role_decline"
ACTION_WITHDRAW = "role_withdraw"
ACTION_ASSIGN_SIGN_IN = "role_assign_sign_in"
ACTION_NEW_SIGN_IN = "role_sign_in_renew"
ACTION_PORTAL = "role_assign_portal"
ACTION_CHECK = "role_assigned_check"
ACTION_REQUEST_AMEND = "role_request_amend"

ENTRA_PORTAL = "https://entra.microsoft.com"

#: How a pending request ended (``decided_message``).
Decision = Literal["acknowledged", "declined", "withdrawn", "expired"]


_WHO_MAY_ASSIGN = (
    "a *Privileged Role Administrator* or a *Global Administrator* (an Exchange Administrator "
    "cannot assign roles)"
)


# -- tiny Block Kit helpers (the same shape as bot.views) -----------------------------------------


def _code(text: str) -> str:
    return "`" + _escape(text).replace("`", "'") + "`"


def _exact_text(text: str, *, preformatted: bool) -> Block:
    """Text shown exactly as typed (rich text: no mrkdwn interpretation), quoted or as a
    copyable preformatted block."""
    kind = "rich_text_preformatted" if preformatted else "rich_text_quote"
    return {
        "type": "rich_text",
        "elements": [{"type": kind, "elements": [{"type": "text", "text": text}]}],
    }


def _app_line(app_name: str, app_id: str) -> str:
    return f"*{_escape(app_name)}* (app ID {_code(app_id)})"


def _duration_words(duration: timedelta | None) -> str:
    return "permanent" if duration is None else describe_duration(duration)


def _request_fields(request: RoleRequest, requirements: RoleRequirements) -> Block:
    fields = [
        _mrkdwn(f"*Requested by*\n{mention(request.requested_by)}"),
        _mrkdwn(
            "*Assignment*\n"
            + ("active, through PIM" if requirements.pim else "direct (no PIM)")
            + f", {_duration_words(request.duration)}"
        ),
    ]
    if request.ticket_number:
        system = f" ({_escape(request.ticket_system)})" if request.ticket_system else ""
        fields.append(_mrkdwn(f"*Ticket*\n{_escape(request.ticket_number)}{system}"))
    return {"type": "section", "fields": fields}


def _justification_blocks(request: RoleRequest) -> list[Block]:
    if not request.justification:
        return [_context("No justification given.")]
    return [_context("*Justification*"), _exact_text(request.justification, preformatted=False)]


# -- (a) the app and what the role is for --------------------------------------------------------


def app_message(
    *,
    app_name: str,
    app_id: str,
    requirements: RoleRequirements | None,
    value: str,
) -> Message:
    """After step 1: the mail-flow app, why it needs the role, who may assign it, and the button
    that opens the request. ``requirements`` ``None``: the PIM policy could not be read, so the
    admin says whether PIM applies (two buttons)."""
    intro = (
        "*Step 2 — the Exchange Administrator role.* The mail-flow app "
        f"{_app_line(app_name, app_id)} needs the *Exchange Administrator* directory role. "
        "Exchange Online reads the role from the app's token: without it, Exchange refuses the "
        "app, and the service cannot configure mail flow (connectors, transport rules, allow "
        f"lists).\nWho may assign it: {_WHO_MAY_ASSIGN}."
    )
    blocks: list[Block] = [_section(intro)]
    if requirements is None:
        blocks.append(
            _section(
                "I could not read the tenant's Privileged Identity Management (PIM) policy yet. "
                "Does this tenant manage roles with PIM? (If *Roles and administrators › "
                "Exchange administrator › Add assignments* in Entra shows a *Setting* tab, it "
                "does; tenants without Microsoft Entra ID P2 have no PIM.)"
            )
        )
        blocks.append(
            _actions(
                "role_app_actions",
                _button(ACTION_REQUEST_OPEN_PIM, "Request the role (PIM)", value, style="primary"),
                _button(ACTION_REQUEST_OPEN_DIRECT, "Request the role (no PIM)", value),
            )
        )
        policy = "PIM unknown"
    else:
        blocks.append(_section(requirements.explanation()))
        blocks.append(
            _actions(
                "role_app_actions",
                _button(ACTION_REQUEST_OPEN, "Request the role", value, style="primary"),
            )
        )
        policy = "with PIM" if requirements.pim else "without PIM"
    blocks.append(_context(f"App ID: {_code(app_id)} · Role: Exchange Administrator · {policy}"))
    text = (
        f"Step 2: the mail-flow app {app_name} (app ID {app_id}) needs the Exchange "
        "Administrator role; a Privileged Role Administrator assigns it."
    )
    return Message(text=text, blocks=blocks)


# -- (b) the request modal -----------------------------------------------------------------------


def request_modal(
    requirements: RoleRequirements,
    *,
    private_metadata: str,
    initial: RoleRequest | None = None,
    notice: str | None = None,
) -> dict[str, Any]:
    """The modal that collects the request (``callback_id`` ``role_request``). ``initial``
    prefills it (reopened after Microsoft asked for more); ``notice`` says why it reopened."""
    blocks: list[Block] = []
    if notice:
        blocks.append(_section(f":warning: {_escape(notice)}"))
    blocks.append(_section(requirements.explanation()))
    justification: Block = {
        "type": "plain_text_input",
        "action_id": JUSTIFICATION_ACTION,
        "multiline": True,
        "max_length": requirements.justification_max_length,
        "placeholder": _plain("Inline mail protection must configure Exchange Online mail flow."),
    }
    if requirements.justification_required and requirements.justification_min_length:
        justification["min_length"] = requirements.justification_min_length
    if initial is not None and initial.justification:
        justification["initial_value"] = initial.justification
    blocks.append(
        {
            "type": "input",
            "block_id": JUSTIFICATION_BLOCK,
            "optional": not requirements.justification_required,
            "label": _plain("Justification"),
            "hint": _plain(
                "Why the mail-flow app needs the role. Approvers read it here"
                + (", and PIM records it with the assignment." if requirements.pim else ".")
            ),
            "element": justification,
        }
    )
    if requirements.ticketing_required:
        for block_id, action_id, label, placeholder, prefill in (
            (
                TICKET_NUMBER_BLOCK,
                TICKET_NUMBER_ACTION,
                "Ticket number",
                "CHG0012345",
                initial.ticket_number if initial else None,
            ),
            (
                TICKET_SYSTEM_BLOCK,
                TICKET_SYSTEM_ACTION,
                "Ticket system",
                "ServiceNow",
                initial.ticket_system if initial else None,
            ),
        ):
            element: Block = {
                "type": "plain_text_input",
                "action_id": action_id,
                "max_length": TICKET_FIELD_MAX_LENGTH,
                "placeholder": _plain(placeholder),
            }
            if prefill:
                element["initial_value"] = prefill
            blocks.append(
                {
                    "type": "input",
                    "block_id": block_id,
                    "label": _plain(label),
                    "element": element,
                }
            )
    if requirements.expiration_required:
        options = [
            {"text": _plain(describe_duration(choice)), "value": iso_duration(choice)}
            for choice in duration_choices(requirements)
        ]
        chosen = options[-1]
        if initial is not None and initial.duration is not None:
            wanted = iso_duration(initial.duration)
            chosen = next((o for o in options if o["value"] == wanted), chosen)
        blocks.append(
            {
                "type": "input",
                "block_id": DURATION_BLOCK,
                "label": _plain("Assignment duration"),
                "hint": _plain(
                    "The policy does not allow permanent assignments; at most "
                    f"{describe_duration(requirements.longest_duration)}. When it ends, the "
                    "service stops configuring mail flow until the role is assigned again."
                ),
                "element": {
                    "type": "static_select",
                    "action_id": DURATION_ACTION,
                    "options": options,
                    "initial_option": chosen,
                },
            }
        )
    return {
        "type": "modal",
        "callback_id": REQUEST_CALLBACK,
        "private_metadata": private_metadata,
        "title": _plain("Exchange admin role"),
        "submit": _plain("Send for review"),
        "close": _plain("Cancel"),
        "blocks": blocks,
    }


# -- (c) the request for review, (d) its decided form --------------------------------------------


def own_request_message(approvers: Sequence[str]) -> Message:
    text = (
        "You made this request, so you can't acknowledge it yourself: a privileged role needs a "
        f"second person. Ask another approver ({', '.join(mention(a) for a in approvers)})."
    )
    return Message(text=text, blocks=[_section(text)])


def approval_wanted_message(requested_by: str, approvers: Sequence[str]) -> Message:
    """A new post that notifies the approvers (an edit of the step's message notifies nobody)."""
    who = ", ".join(mention(a) for a in approvers) or "Approvers"
    text = (
        f":bell: {who}: {mention(requested_by)} asks for the *Exchange Administrator* role for the "
        "mail-flow app. Review the request in step 2 above, then *Acknowledge* or *Decline* it."
    )
    return Message(text=text, blocks=[_section(text)])


def review_message(
    request: RoleRequest,
    requirements: RoleRequirements,
    *,
    app_name: str,
    app_id: str,
    at: float,
    approvers: Sequence[str],
    value: str,
) -> Message:
    """The request posted in the thread: Acknowledge / Decline for approvers, Withdraw for the
    requester."""
    who = mention(request.requested_by)
    blocks: list[Block] = [
        _section(
            f":raised_hand: *Role request for review.* {who} asks that the mail-flow app "
            f"{_app_line(app_name, app_id)} get the *Exchange Administrator* role."
        ),
        _request_fields(request, requirements),
        *_justification_blocks(request),
        _actions(
            "role_review_actions",
            _button(ACTION_ACKNOWLEDGE, "Acknowledge", value, style="primary"),
            _button(
                ACTION_DECLINE,
                "Decline",
                value,
                style="danger",
                confirm=_confirm(
                    "Decline the request?",
                    "The role is not assigned; the requester can send a new request.",
                    "Decline",
                    "Keep it",
                ),
            ),
            _button(
                ACTION_WITHDRAW,
                "Withdraw",
                value,
                confirm=_confirm(
                    "Withdraw your request?",
                    "Approvers can no longer acknowledge it; you can send a new one.",
                    "Withdraw",
                    "Keep it",
                ),
            ),
        ),
        _context(
            f"Requested {when(at)} · Approvers: "
            + (", ".join(mention(a) for a in approvers) or "none configured")
            + " · The requester cannot acknowledge their own request; only they may withdraw it."
        ),
    ]
    text = (
        f"Role request for review: {who} asks for the Exchange Administrator role for the "
        f"mail-flow app {app_name} ({_duration_words(request.duration)})."
    )
    return Message(text=text, blocks=blocks)


_DECISION_WORDS: dict[Decision, tuple[str, str]] = {
    "acknowledged": (":white_check_mark:", "Acknowledged"),
    "declined": (":x:", "Declined"),
    "withdrawn": (":leftwards_arrow_with_hook:", "Withdrawn"),
    "expired": (":hourglass:", "Expired"),
}


def decided_message(
    request: RoleRequest,
    requirements: RoleRequirements,
    *,
    app_name: str,
    app_id: str,
    requested_at: float,
    decision: Decision,
    by: str,
    at: float,
    reason: str | None = None,
) -> Message:
    """The review message once decided: who decided and when; no buttons any more.
    ``by`` is a Slack user id, or ``"system"`` for an expiry."""
    icon, word = _DECISION_WORDS[decision]
    if decision == "expired":
        outcome = f"{icon} *{word}* {when(at)}: nobody acknowledged it in time."
    else:
        outcome = f"{icon} *{word}* by {mention(by)} {when(at)}."
    if reason:
        outcome += f"\nReason: {_escape(reason)}"
    blocks: list[Block] = [
        _section(
            f"*Role request* by {mention(request.requested_by)}: the *Exchange Administrator* "
            f"role for the mail-flow app {_app_line(app_name, app_id)}."
        ),
        _request_fields(request, requirements),
        *_justification_blocks(request),
        _section(outcome),
        _context(f"Requested {when(requested_at)}"),
    ]
    text = f"Role request for the mail-flow app {app_name}: {word.lower()}."
    return Message(text=text, blocks=blocks)


# -- (e) the two ways to assign ------------------------------------------------------------------


def assignment_choice_message(
    requirements: RoleRequirements,
    *,
    app_name: str,
    app_id: str,
    sign_in_url: str,
    link_expires_at: float,
    value: str,
) -> Message:
    """After acknowledgement: "Assign for me" (a Microsoft sign-in) or the portal."""
    what = (
        "makes the PIM request with the justification, ticket and duration from the request"
        if requirements.pim
        else "assigns the role directly"
    )
    lines = [
        f"*Assign the role.* Waiting for {_WHO_MAY_ASSIGN} to give "
        f"{_app_line(app_name, app_id)} the Exchange Administrator role, in one of two ways:",
        f"• *Assign for me*: sign in with Microsoft; the bot {what} on your behalf, reports "
        f"the result here, and forgets the sign-in. The link works once and expires "
        f"{when(link_expires_at)}; *New sign-in link* makes a fresh one.",
        "• *I'll do it in the portal*: the exact steps in the Microsoft Entra admin center, then "
        "the bot checks the result.",
    ]
    if requirements.mfa_required:
        lines.append(":lock: The PIM policy requires multifactor authentication: sign in with MFA.")
    blocks: list[Block] = [
        _section("\n".join(lines)),
        _actions(
            "role_assign_actions",
            _button(
                ACTION_ASSIGN_SIGN_IN, "Assign for me", value, style="primary", url=sign_in_url
            ),
            _button(ACTION_NEW_SIGN_IN, "New sign-in link", value),
            _button(ACTION_PORTAL, "I'll do it in the portal", value),
        ),
    ]
    text = (
        f"Assign the Exchange Administrator role to {app_name}: sign in with Microsoft "
        "(Assign for me) or follow the portal steps."
    )
    return Message(text=text, blocks=blocks)


def portal_steps_message(
    request: RoleRequest,
    requirements: RoleRequirements,
    *,
    app_name: str,
    app_id: str,
    value: str,
    portal_url: str = ENTRA_PORTAL,
) -> Message:
    """The exact portal steps for this tenant (PIM or not), with "I've assigned it"."""
    app = _escape(app_name)
    open_portal = (
        f"Open the <{portal_url}|Microsoft Entra admin center>, signed in as {_WHO_MAY_ASSIGN}."
    )
    find_role = (
        "Go to *Roles and administrators* (Identity › Roles & admins) and open "
        "*Exchange administrator*, then choose *Add assignments*."
    )
    after: list[Block] = []
    if requirements.pim:
        if request.duration is None:
            how_long = "tick *Permanently assigned*"
        else:
            how_long = (
                "leave *Permanently assigned* unticked and set *Assignment ends* "
                f"{describe_duration(request.duration)} from now"
            )
        steps = [
            open_portal,
            find_role,
            f"Under *Select member(s)* choose *No member selected*, search for the app ID "
            f"{_code(app_id)}, select *{app}* and choose *Select*.",
            f"Choose *Next* to open the *Setting* tab. Choose assignment type *Active* (not "
            f"Eligible: an app cannot activate an eligible role) and {how_long}.",
            "Paste the justification below into *Enter justification*"
            + (
                f"; enter ticket number {_code(request.ticket_number)} and ticket system "
                f"{_code(request.ticket_system or '')}"
                if request.ticket_number
                else ""
            )
            + ".",
            "Choose *Assign*.",
        ]
        if request.justification:
            after = [
                _context("*Justification to paste*"),
                _exact_text(request.justification, preformatted=True),
            ]
    else:
        steps = [
            open_portal,
            find_role,
            f"Search for the app ID {_code(app_id)} and select *{app}*.",
            "Choose *Add*.",
        ]
    numbered = "\n".join(f"{number}. {step}" for number, step in enumerate(steps, start=1))
    heading = "with PIM" if requirements.pim else "without PIM"
    blocks: list[Block] = [
        _section(f"*Assign the role in the portal ({heading}).*\n{numbered}"),
        *after,
        _section(
            "Then press *I've assigned it*: the bot checks with Microsoft. A new assignment can "
            "take a minute to show."
        ),
        _actions(
            "role_portal_actions",
            _button(ACTION_CHECK, "I've assigned it", value, style="primary"),
            _button(ACTION_NEW_SIGN_IN, "Assign for me instead", value),
        ),
    ]
    text = (
        f"Portal steps ({heading}): Roles and administrators › Exchange administrator › Add "
        f"assignments, app ID {app_id}; then press I've assigned it."
    )
    return Message(text=text, blocks=blocks)


# -- (f) outcomes ----------------------------------------------------------------------------------


def _signed_in(user: str | None) -> str:
    """Who signed in at Microsoft, rendered as every Microsoft-vouched actor is (``mention``)."""
    return mention(signed_in_at_microsoft(user)) if user else "The signed-in administrator"


def _ids_context(request_ids: Sequence[str]) -> list[Block]:
    if not request_ids:
        return []
    return [_context("Microsoft Graph request ids: " + ", ".join(_code(i) for i in request_ids))]


def outcome_message(
    outcome: AssignmentOutcome,
    request: RoleRequest,
    *,
    app_name: str,
    app_id: str,
    value: str,
) -> Message:
    """What happened after "Assign for me", with the buttons that apply."""
    app = _app_line(app_name, app_id)
    blocks: list[Block] = []
    if isinstance(outcome, Assigned):
        first = outcome.assignments[0] if outcome.assignments else None
        until = (
            f"until {first.end.astimezone(UTC):%Y-%m-%d %H:%M} UTC"
            if first is not None and first.end is not None
            else "permanently"
        )
        if outcome.already:
            text = (
                f":white_check_mark: {app} already holds an active *Exchange Administrator* "
                f"assignment ({until}); nothing new was assigned. Step 2 is done."
            )
        else:
            how = "through PIM" if outcome.via == "pim" else "directly"
            text = (
                f":white_check_mark: {_signed_in(outcome.assigned_by)} assigned the *Exchange "
                f"Administrator* role to {app} {how}, active {until}. Step 2 is done."
            )
        parts = [text]
        if outcome.switched_to_direct:
            note = (
                ":information_source: Microsoft answered that this tenant has no Entra ID P2, so "
                "PIM is not available here: the role was assigned directly instead, and a "
                "direct assignment is permanent."
            )
            if request.duration is not None:
                note += (
                    f" The requested duration ({describe_duration(request.duration)}) does not "
                    "apply; remove the assignment by hand when it should end."
                )
            parts.append(note)
        parts.append("Exchange can take up to 30 minutes to notice the role; step 4 waits for it.")
        blocks.append(_section("\n".join(parts)))
        if outcome.schedule_request_id:
            blocks.append(_context(f"PIM request {_code(outcome.schedule_request_id)}"))
        fallback = (
            "The mail-flow app already holds the Exchange Administrator role."
            if outcome.already
            else f"{_signed_in(outcome.assigned_by)} assigned the Exchange Administrator role to "
            "the mail-flow app."
        )
    elif isinstance(outcome, Pending):
        blocks.append(
            _section(
                f":hourglass_flowing_sand: Microsoft accepted the PIM request for {app} "
                f"({_code(outcome.schedule_request_id)}), but it is not active yet: status "
                f"*{_escape(outcome.status)}*. Press *Check again* once it is complete."
            )
        )
        blocks.append(
            _actions(
                "role_outcome_actions", _button(ACTION_CHECK, "Check again", value, style="primary")
            )
        )
        fallback = "The PIM request is accepted but not active yet."
    elif isinstance(outcome, NeedsMore):
        wanted = []
        if "JustificationRule" in outcome.rules:
            wanted.append("a justification")
        if "TicketingRule" in outcome.rules:
            wanted.append("a ticket number and ticket system")
        if "ExpirationRule" in outcome.rules:
            limit = outcome.requirements.maximum_duration
            wanted.append(
                "a time-bound assignment"
                + (f" of at most {describe_duration(limit)}" if limit else "")
            )
        others = [
            r
            for r in outcome.rules
            if r not in ("JustificationRule", "TicketingRule", "ExpirationRule", "MfaRule")
        ]
        lines = [f":warning: The tenant's PIM policy refused the request for {app}."]
        if wanted:
            lines.append(
                "It requires "
                + ", ".join(wanted)
                + ": press *Complete the request* to add what is missing; the request then goes "
                "to the approvers again."
            )
        if outcome.mfa:
            lines.append(
                ":lock: The policy requires multifactor authentication, and the sign-in of "
                f"{_escape(outcome.assigned_by or 'the administrator')} did not include it. "
                "Use *New sign-in link* and complete MFA when "
                "Microsoft asks, or assign in the portal (it asks for MFA itself)."
            )
        if others:
            lines.append(
                "Microsoft also named these rules: " + ", ".join(_code(r) for r in others) + "."
            )
        lines.append("Nothing was assigned.")
        blocks.append(_section("\n".join(lines)))
        buttons = []
        if outcome.fields:
            buttons.append(
                _button(ACTION_REQUEST_AMEND, "Complete the request", value, style="primary")
            )
        if outcome.mfa:
            buttons.append(_button(ACTION_NEW_SIGN_IN, "New sign-in link", value))
        buttons.append(_button(ACTION_PORTAL, "I'll do it in the portal", value))
        blocks.append(_actions("role_outcome_actions", *buttons))
        fallback = "The PIM policy refused the request; more is needed."
    elif isinstance(outcome, NotPermitted):
        needed = " or ".join(f"*{role}*" for role in outcome.needed)
        text = (
            f":no_entry: {_signed_in(outcome.user)} may not assign directory roles in this "
            f"tenant. Microsoft requires {needed}; an Exchange Administrator cannot assign roles. "
            "Ask someone who holds one of these roles to use *New sign-in link*, or to follow "
            "the portal steps. Nothing was assigned."
        )
        if outcome.switched_to_direct:
            text += (
                "\n:information_source: The tenant has no Entra ID P2, so the role will be "
                "assigned directly (PIM is not available)."
            )
        blocks.append(_section(text))
        blocks.append(
            _actions(
                "role_outcome_actions",
                _button(ACTION_NEW_SIGN_IN, "New sign-in link", value, style="primary"),
                _button(ACTION_PORTAL, "I'll do it in the portal", value),
            )
        )
        fallback = "The signed-in user may not assign roles; nothing was assigned."
    elif isinstance(outcome, SignInFailed):
        if outcome.error == "access_denied":
            reason = "The Microsoft sign-in was cancelled."
        elif outcome.error == "state_mismatch":
            reason = "That sign-in link was already used or belongs to another request."
        elif outcome.error == "nonce_mismatch":
            reason = (
                "A sign-in answer came back whose ID token was not issued for the bot's sign-in"
                " link (its nonce did not match), so it was not used."
            )
        elif outcome.error == "wrong_tenant":
            reason = f"{_escape(outcome.description)} Sign in with an account of this tenant."
        elif outcome.error == "token_expired":
            reason = "The sign-in expired before the role could be assigned."
        else:
            reason = (
                f"Microsoft refused the sign-in ({_code(outcome.error)}): "
                f"{_escape(outcome.description)}"
            )
        blocks.append(
            _section(
                f":leftwards_arrow_with_hook: {reason} Nothing was assigned. Use *New sign-in "
                "link* to try again, or assign in the portal."
            )
        )
        blocks.append(
            _actions(
                "role_outcome_actions",
                _button(ACTION_NEW_SIGN_IN, "New sign-in link", value, style="primary"),
                _button(ACTION_PORTAL, "I'll do it in the portal", value),
            )
        )
        fallback = "The Microsoft sign-in did not complete; nothing was assigned."
    else:
        blocks.append(_section(_failed_text(outcome, app)))
        blocks.append(
            _actions(
                "role_outcome_actions",
                _button(ACTION_CHECK, "Check the assignment", value),
                _button(ACTION_NEW_SIGN_IN, "New sign-in link", value),
                _button(ACTION_PORTAL, "I'll do it in the portal", value),
            )
        )
        fallback = "Assigning the role did not complete."
    blocks += _ids_context(outcome.request_ids)
    return Message(text=fallback, blocks=blocks)


def _failed_text(outcome: Failed, app: str) -> str:
    if outcome.retryable:
        return (
            f":warning: Microsoft could not be reached or is overloaded "
            f"({_escape(outcome.message)}), so the role for {app} may not be assigned. Try "
            "again in a few minutes; *Check the assignment* shows whether it went through."
        )
    return (
        f":x: Microsoft refused to assign the role to {app}: {_code(outcome.code)} — "
        f"{_escape(outcome.message)} Nothing more was done; check the assignment, or assign it "
        "in the portal."
    )


def check_message(check: AssignmentCheck, *, value: str, checked_by: str, at: float) -> Message:
    """The answer to "I've assigned it": what Graph shows, and "Check again" when not done."""
    blocks: list[Block] = [
        _section(check.summary),
        _context(f"Checked by {mention(checked_by)} {when(at)}"),
    ]
    if not check.assigned:
        blocks.append(
            _actions(
                "role_check_actions",
                _button(ACTION_CHECK, "Check again", value, style="primary"),
            )
        )
    blocks += _ids_context(check.request_ids)
    fallback = (
        "The Exchange Administrator role is assigned to the mail-flow app."
        if check.assigned
        else "The Exchange Administrator role is not active for the mail-flow app yet."
    )
    return Message(text=fallback, blocks=blocks)


# -- (g) the step's one message: how it ended ---------------------------------------------------


def with_request(
    lead: Message,
    request: RoleRequest | None,
    requirements: RoleRequirements,
    *,
    requested_at: float | None,
    acknowledged_by: str | None,
    acknowledged_at: float | None,
) -> Message:
    """``lead`` followed by the request it is about: who asked, how, and who acknowledged."""
    if request is None:
        return lead
    story = f"Requested by {mention(request.requested_by)}"
    if requested_at is not None:
        story += f" {when(requested_at)}"
    if acknowledged_by is not None:
        story += f" · acknowledged by {mention(acknowledged_by)}"
        if acknowledged_at is not None:
            story += f" {when(acknowledged_at)}"
    blocks = [*lead.blocks, _request_fields(request, requirements), _context(story)]
    return Message(text=lead.text, blocks=blocks[:50])


def previous_request_line(decision: Decision, by: str, at: float) -> Block:
    """Above the request button again: how the last request ended."""
    icon, word = _DECISION_WORDS[decision]
    if decision == "expired":
        text = f"{icon} The last request expired {when(at)}: nobody acknowledged it in time."
    else:
        text = f"{icon} The last request was {word.lower()} by {mention(by)} {when(at)}."
    return _context(text)


def role_done_message(*, app_name: str, app_id: str, by: str, at: float, checked: bool) -> Message:
    """Step 2 recorded without a sign-in of the bot's: found in place by an upgrade
    (``by`` ``system``), or confirmed by someone in Slack (``checked``: seen in Microsoft)."""
    app = _app_line(app_name, app_id)
    if by == "system":
        text = (
            f":white_check_mark: *Step 2 — Exchange Administrator role:* {app} already holds "
            f"it (checked by the bot {when(at)}), so it was not asked again."
        )
    elif checked:
        text = (
            f":white_check_mark: *Step 2 — Exchange Administrator role:* assigned to {app}; "
            f"{mention(by)} said it was done in the portal and Microsoft shows it ({when(at)})."
        )
    else:
        text = (
            f":white_check_mark: *Step 2 — Exchange Administrator role:* {mention(by)} said it "
            f"is assigned to {app} ({when(at)}). The bot could not look yet; step 4 checks it."
        )
    return Message(text=text, blocks=[_section(text)])


def role_stopped_message(phase_word: str) -> Message:
    text = (
        f":heavy_minus_sign: *Step 2 — Exchange Administrator role:* not assigned; the session "
        f"{phase_word} first."
    )
    return Message(text=text, blocks=[_section(text)])

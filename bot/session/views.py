"""Block Kit, built by pure functions from sessions and events (no I/O, no clock reads).

Every message comes as ``Message(text, blocks)``: ``text`` is the notification and screen-reader
fallback Slack shows where blocks cannot be, so it always says the whole thing in words.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from bot.actors import microsoft_user, signed_in_at_microsoft
from bot.blocks import Block, Message, mention, untrusted_text, when
from bot.blocks import context as _context
from bot.blocks import header as _header
from bot.blocks import mrkdwn as _mrkdwn
from bot.blocks import plain as _plain
from bot.blocks import section as _section
from bot.workflow import (
    EventKind,
    Phase,
    Scope,
    Session,
    Step,
    StepProgress,
    StepStatus,
    Transition,
    TransitionNotAllowed,
    TransitionRefused,
    Why,
    checklist,
)

__all__ = [
    "ACTION_CANCEL",
    "REDIS_UNAVAILABLE",
    "START_CALLBACK",
    "DeliveryTrouble",
    "busy_message",
    "checking_modal",
    "delivery_lines",
    "error_message",
    "help_message",
    "home_view",
    "not_in_channel_message",
    "notice",
    "notice_modal",
    "phase_summary",
    "redis_unavailable_message",
    "refusal_message",
    "refused_transition_message",
    "root_message",
    "start_modal",
    "started_modal",
    "status_message",
    "thread_note",
    "wrong_channel_message",
]


class AuditLine(Protocol):
    """One audit entry as ``status`` shows it (the store's entries have this shape)."""

    @property
    def at(self) -> float: ...

    @property
    def actor(self) -> str: ...

    @property
    def action(self) -> str: ...

    @property
    def result(self) -> str: ...

    @property
    def detail(self) -> Mapping[str, str]: ...


START_CALLBACK = "start_provisioning"
TENANT_BLOCK = "tenant"
TENANT_ACTION = "tenant_input"
SCOPE_BLOCK = "scope"
SCOPE_ACTION = "scope_choice"
ACTION_CANCEL = "session_cancel"


_SCOPE_CHOICES: Mapping[Scope, tuple[str, str, str, str]] = {
    # scope: (title, option, option description, hint)
    Scope.FULL: (
        "Provision Inline Mode",
        "Inbound and outbound mail",
        "Mail to and from the protected domains passes the service.",
        "Already protected inbound only? Use /provision-inline upgrade instead.",
    ),
    Scope.UPGRADE: (
        "Upgrade to outbound",
        "Add outbound protection (upgrade)",
        "The tenant is protected inbound; add the outbound objects only.",
        "Steps already done for this tenant are checked, not asked again.",
    ),
}


def start_modal(
    *,
    private_metadata: str,
    scope: Scope = Scope.FULL,
    tenant_value: str | None = None,
    problem: str | None = None,
) -> dict[str, Any]:
    """The modal that starts a session: which tenant, and the scope (full or upgrade)."""
    title, option_text, option_description, hint = _SCOPE_CHOICES[scope]
    tenant_element: dict[str, Any] = {
        "type": "plain_text_input",
        "action_id": TENANT_ACTION,
        "max_length": 253,
        "placeholder": _plain("contoso.com or 00000000-0000-0000-0000-000000000000"),
    }
    if tenant_value:
        tenant_element["initial_value"] = tenant_value
    option = {
        "text": _plain(option_text),
        "description": _plain(option_description),
        "value": scope.value,
    }
    blocks: list[Block] = [
        _section(
            "This starts the four steps that connect Exchange Online to the inline mail-"
            "protection service. You will need a *Global Administrator* for the two consents "
            "and a *Privileged Role Administrator* for the role assignment."
        ),
    ]
    if problem:
        blocks.append(_section(f":warning: {problem}"))
    blocks += [
        {
            "type": "input",
            "block_id": TENANT_BLOCK,
            "label": _plain("Microsoft 365 tenant"),
            "hint": _plain("A verified domain of the tenant, or its tenant id."),
            "element": tenant_element,
        },
        {
            "type": "input",
            "block_id": SCOPE_BLOCK,
            "label": _plain("Protection scope"),
            "hint": _plain(hint),
            "element": {
                "type": "radio_buttons",
                "action_id": SCOPE_ACTION,
                "options": [option],
                "initial_option": option,
            },
        },
    ]
    return {
        "type": "modal",
        "callback_id": START_CALLBACK,
        "private_metadata": private_metadata,
        "title": _plain(title),
        "submit": _plain("Start"),
        "close": _plain("Cancel"),
        "blocks": blocks,
    }


def checking_modal(tenant: str) -> dict[str, Any]:
    """Shown while Microsoft takes longer than Slack lets a modal wait."""
    return {
        "type": "modal",
        "title": _plain("Provision Inline Mode"),
        "close": _plain("Close"),
        "blocks": [
            _section(
                f":hourglass_flowing_sand: Looking up *{tenant}* with Microsoft. Microsoft is "
                "answering slowly; this window updates by itself when it has an answer."
            )
        ],
    }


def started_modal(session: Session) -> dict[str, Any]:
    return {
        "type": "modal",
        "title": _plain("Provision Inline Mode"),
        "close": _plain("Close"),
        "blocks": [
            _section(
                f":white_check_mark: Provisioning of *{session.tenant_label}* has started in "
                f"<#{session.channel_id}>. Follow the thread there."
            )
        ],
    }


_STATUS_ICON: Mapping[StepStatus, str] = {
    StepStatus.DONE: ":white_check_mark:",
    StepStatus.CURRENT: ":arrow_forward:",
    StepStatus.WAITING: ":white_circle:",
    StepStatus.STOPPED: ":heavy_minus_sign:",
}

_PHASE_SUMMARY: Mapping[Phase, str] = {
    Phase.STARTED: "Next: a Global Administrator consents to the mail-flow app (step 1).",
    Phase.MAILFLOW_CONSENTED: "Next: request the Exchange Administrator role for the mail-flow "
    "app (step 2).",
    Phase.ROLE_REQUESTED: "Next: an approver acknowledges the role request (step 2).",
    Phase.ROLE_ACKNOWLEDGED: "Next: a Privileged Role Administrator assigns the role (step 2).",
    Phase.ROLE_ASSIGNING: "Assigning the role at Microsoft with the sign-in that just came back "
    "(step 2)…",
    Phase.ROLE_ASSIGNED: "Next: a Global Administrator consents to the directory-sync app "
    "(step 3).",
    Phase.DIRECTORY_CONSENTED: "Next: verify the grants and review the change plan (step 4).",
    Phase.VERIFYING: "Verifying the grants with Microsoft…",
    Phase.PLAN_SHOWN: "Next: review the change plan in the thread and submit it (step 4).",
    Phase.APPLYING: "Configuring Exchange Online mail flow…",
    Phase.PROTECTED: "Exchange Online protected in inline mode.",
    Phase.FAILED: "Configuring Exchange Online stopped on an error; see the thread to retry.",
    Phase.CANCELLED: "Cancelled. Nothing more will happen in this session.",
    Phase.EXPIRED: "Expired after a long pause. Start again with /provision-inline.",
}


def phase_summary(phase: Phase) -> str:
    """The one-line status the root message shows for ``phase``."""
    return _PHASE_SUMMARY[phase]


def _done_by(session: Session, step: Step, by: str) -> str:
    """Who did a step, as far as the bot knows it: Microsoft's consent redirect names nobody,
    and a role assigned through a sign-in was assigned by the account that signed in."""
    if by == "system" and step is not Step.VERIFY_AND_SUBMIT:
        return "found in place by the bot"
    if step in (Step.MAILFLOW_CONSENT, Step.DIRECTORY_CONSENT):
        return "given by a Global Administrator of the tenant"
    if step is Step.EXCHANGE_ROLE and session.role.assigned_as:
        return f"assigned by {mention(signed_in_at_microsoft(session.role.assigned_as))}"
    if step is Step.VERIFY_AND_SUBMIT:
        submitted = session.last(EventKind.SUBMIT)
        return f"submitted by {mention(submitted.actor)}" if submitted else "done by the bot"
    return f"done by {mention(by)}"


def _step_line(session: Session, index: int, row: StepProgress) -> str:
    line = f"{_STATUS_ICON[row.status]} *{index}. {row.title}*"
    if row.status is StepStatus.DONE and row.done_by and row.done_at is not None:
        line += f" — {_done_by(session, row.step, row.done_by)}, {when(row.done_at)}"
    elif row.status is StepStatus.CURRENT:
        line += " — in progress"
    return line


def root_message(session: Session) -> Message:
    """The channel message that stays current for the whole session: the live checklist."""
    steps = checklist(session)
    lines = [_step_line(session, number, row) for number, row in enumerate(steps, start=1)]
    summary = _PHASE_SUMMARY[session.phase]
    blocks: list[Block] = [
        _header(f"Inline Mode provisioning: {session.tenant_label}"),
        _context(
            f"Tenant `{session.tenant_id}` · started by {mention(session.started_by)}, "
            f"{when(session.created_at)}"
        ),
        _section("\n".join(lines)),
        _section(f"*Status:* {summary}"),
    ]
    if session.is_active:
        blocks.append(
            {
                "type": "actions",
                "block_id": "session_controls",
                "elements": [
                    {
                        "type": "button",
                        "action_id": ACTION_CANCEL,
                        "text": _plain("Cancel provisioning"),
                        "style": "danger",
                        "value": session.id,
                        "confirm": {
                            "title": _plain("Cancel provisioning?"),
                            "text": _mrkdwn(
                                f"The session for *{session.tenant_label}* stops here. What was "
                                "already granted in Microsoft stays as it is."
                            ),
                            "confirm": _plain("Cancel it"),
                            "deny": _plain("Keep going"),
                        },
                    }
                ],
            }
        )
    text = f"Inline Mode provisioning for {session.tenant_label}: {summary}"
    return Message(text=text, blocks=blocks)


_EVENT_SENTENCE: Mapping[EventKind, str] = {
    EventKind.MAILFLOW_CONSENT: "consented to the mail-flow app (step 1 done)",
    EventKind.ROLE_REQUEST: "requested the Exchange Administrator role for the mail-flow app",
    EventKind.ROLE_ACKNOWLEDGE: "acknowledged the role request",
    EventKind.ROLE_DECLINE: "declined the role request",
    EventKind.ROLE_WITHDRAW: "withdrew the role request",
    EventKind.ROLE_REQUEST_EXPIRED: "closed the role request: nobody acknowledged it in time",
    EventKind.ROLE_FOUND: "found the Exchange Administrator role already assigned (step 2 done)",
    EventKind.ROLE_ASSIGNED: "assigned the Exchange Administrator role (step 2 done)",
    EventKind.ROLE_ASSIGNING: "signed in to assign the acknowledged role request",
    EventKind.ROLE_ASSIGN_FAILED: "did not get the role assigned",
    EventKind.DIRECTORY_CONSENT: "consented to the directory-sync app (step 3 done)",
    EventKind.VERIFY: "started verification",
    EventKind.VERIFICATION_PASSED: "verified every grant",
    EventKind.VERIFICATION_FAILED: "found grants missing during verification",
    EventKind.SUBMIT: "submitted the change plan",
    EventKind.APPLY_SUCCEEDED: "finished configuring Exchange Online",
    EventKind.APPLY_FAILED: "stopped configuring Exchange Online on an error",
    EventKind.RETRY: "retried configuring Exchange Online",
    EventKind.CANCEL: "cancelled provisioning",
    EventKind.EXPIRE: "expired this session",
    EventKind.ROOT_POSTED: "opened this thread",
    EventKind.ROLE_REQUIREMENTS: "recorded what the tenant's PIM policy demands",
    EventKind.ROLE_REMINDED: "reminded the approvers",
    EventKind.ROLE_SIGN_IN_OPENED: "opened the sign-in to assign the role",
    EventKind.UPGRADE_CHECKED: "checked what is already in place",
    EventKind.PLAN_READ: "read the tenant and showed the change plan",
    EventKind.WARNINGS_ACKNOWLEDGE: "acknowledged the warnings",
}


def thread_note(transition: Transition) -> Message:
    """One line in the thread for each change of state: who, what, when, what comes next."""
    event = transition.event
    session = transition.after
    who = mention(event.actor)
    sentence = f"{who} {_EVENT_SENTENCE[event.kind]} {when(event.at)}."
    sentence = sentence[0].upper() + sentence[1:]
    if event.kind is EventKind.EXPIRE:
        sentence = (
            f"This session expired {when(event.at)} after a long pause. Nothing more will "
            "happen here; start again with `/provision-inline` when you are ready."
        )
    elif event.kind is EventKind.CANCEL:
        sentence += (
            " Nothing more will happen in this session; what was already granted in Microsoft "
            "stays. Start again with `/provision-inline` when you are ready."
        )
    signed_in_as = event.detail.get("signed_in_as")
    if signed_in_as and microsoft_user(event.actor) is None:
        sentence = sentence[:-1] + f", signed in at Microsoft as {untrusted_text(signed_in_as)}."
    reason = event.detail.get("reason")
    lines = [sentence]
    if reason:
        lines.append(f"Reason: {reason}")
    if session.is_active:
        lines.append(_PHASE_SUMMARY[session.phase])
    text = "\n".join(lines)
    return Message(text=text, blocks=[_section(text)])


def help_message(admins: Sequence[str]) -> Message:
    text = (
        "*/provision-inline* connects Exchange Online to the inline mail-protection service "
        "in four steps, in a thread of this channel.\n"
        "• `/provision-inline` — start: choose the tenant in a form\n"
        "• `/provision-inline upgrade` — add outbound protection to a tenant protected "
        "inbound only\n"
        "• `/provision-inline status` — the sessions of this channel, with their recent history\n"
        "• `/provision-inline cancel [tenant]` — stop the session of this channel "
        "(name the tenant if there are several)\n"
        "• `/provision-inline help` — this message\n"
        f"Who may start or cancel: {', '.join(mention(a) for a in admins)}."
    )
    return Message(text=text, blocks=[_section(text)])


def refusal_message(action: str, allowed: Sequence[str]) -> Message:
    who = ", ".join(mention(principal) for principal in allowed)
    text = (
        f":no_entry: You can't {action}: only {who} may. Nothing was changed. "
        "Ask one of them, or ask your Slack admin to add you to PROVISION_ADMINS."
    )
    return Message(text=text, blocks=[_section(text)])


def wrong_channel_message(channel_id: str) -> Message:
    text = (
        f":no_entry: This button belongs to a provisioning session in <#{channel_id}>; it works "
        "only there. Nothing was changed."
    )
    return Message(text=text, blocks=[_section(text)])


def out_of_date_copy_answer() -> Message:
    """The answer to a click on a copy of a message the bot posted twice (its process died
    after Slack took the first post and before the post was recorded, so it was posted again)."""
    text = (
        ":no_entry: This message is a leftover copy: I posted it twice when I restarted, and "
        "only the other copy is kept up to date. Use the same step's message further down in "
        "this thread. Nothing was changed."
    )
    return Message(text=text, blocks=[_section(text)])


def out_of_date_copy() -> Message:
    """What such a leftover copy is edited into, so nobody clicks its buttons again."""
    text = (
        ":wastebasket: A leftover copy of a step's message (posted twice when I restarted). "
        "The step's up-to-date message is further down in this thread."
    )
    return Message(text=text, blocks=[_section(text)])


def not_in_channel_message(channel_id: str) -> Message:
    text = (
        f":wave: I'm not a member of <#{channel_id}>, so I can't run the provisioning thread "
        "there. Invite me with `/invite @provision-inline` in that channel, then run "
        "`/provision-inline` again. Nothing was started."
    )
    return Message(text=text, blocks=[_section(text)])


_SLACK_USER = re.compile(r"[UW][A-Z0-9]{2,30}")


def _audit_line(entry: AuditLine) -> str:
    line = f"{when(entry.at)} {mention(entry.actor)} {entry.action}: {entry.result}"
    shown = {
        "signed_in_as": "signed in as",
        "via": "via",
        "graph_request_ids": "Graph request ids",
        "reason": "reason",
    }
    extras = [
        f"{label} {untrusted_text(entry.detail[key])}"
        for key, label in shown.items()
        if entry.detail.get(key)
    ]
    clicked_by = entry.detail.get("clicked_by", "")
    if _SLACK_USER.fullmatch(clicked_by):
        extras.append(f"link opened in Slack by {mention(clicked_by)}")
    return line + (f" ({'; '.join(extras)})" if extras else "")


@dataclass(frozen=True)
class DeliveryTrouble:
    """What the outbox could not post (yet) for one session, as ``status`` tells it."""

    given_up: tuple[tuple[tuple[str, ...], str], ...] = ()  # (effects, Slack's error), oldest first
    retrying: str | None = None  # why the message waiting now failed so far


_EFFECT_NAMES = {
    "refresh_root": "the checklist",
    "show_steps": "the step messages",
    "note_in_thread": "the note in the thread",
    "announce": "the announcement",
}


def _advice(error: str) -> str:
    if "not_in_channel" in error or "channel_not_found" in error:
        return (
            "Invite the bot to the channel (`/invite @provision-inline`); the next change in "
            "the session brings its thread up to date."
        )
    if "is_archived" in error:
        return "The channel is archived: unarchive it, or follow the session with this command."
    return (
        "The session itself is stored and continues; the bot's log has the details under this "
        "session's id. Its next change brings the thread up to date."
    )


def delivery_lines(session_id: str, trouble: DeliveryTrouble) -> list[str]:
    lines: list[str] = []
    if trouble.retrying:
        lines.append(
            f":hourglass: Messages of this session are waiting to be posted ({trouble.retrying}); "
            "the bot keeps trying on its own."
        )
    for effects, error in trouble.given_up[-3:]:
        what = ", ".join(
            _EFFECT_NAMES.get(effect, effect) for effect in effects if effect in _EFFECT_NAMES
        )
        lines.append(
            f":warning: Could not post {what or 'a message'} (`{session_id}`): "
            f"{untrusted_text(error)}. {_advice(error)}"
        )
    return lines


def status_message(
    sessions: Sequence[Session],
    history: Mapping[str, Sequence[AuditLine]],
    permalinks: Mapping[str, str],
    *,
    trouble: Mapping[str, DeliveryTrouble] | None = None,
    finished: Sequence[Session] = (),
) -> Message:
    """Ephemeral answer to ``status``: each session, its step list, its latest audit entries
    and what could not be posted; then finished sessions whose messages could not be posted."""
    trouble = trouble or {}
    blocks: list[Block] = []
    texts: list[str] = []
    if not sessions:
        text = (
            "No provisioning session is active in this channel. Start one with `/provision-inline`."
        )
        blocks.append(_section(text))
        texts.append(text)
    for session in sessions:
        link = permalinks.get(session.id)
        title = f"*{session.tenant_label}* (`{session.tenant_id}`)"
        if link:
            title += f" — <{link}|open the thread>"
        steps = "\n".join(
            _step_line(session, number, row)
            for number, row in enumerate(checklist(session), start=1)
        )
        blocks.append(_section(f"{title}\n{steps}\n*Status:* {_PHASE_SUMMARY[session.phase]}"))
        problems = delivery_lines(session.id, trouble.get(session.id, DeliveryTrouble()))
        if problems:
            blocks.append(_section("\n".join(problems)[:2900]))
        recent = history.get(session.id, ())
        if recent:
            blocks.append(_context(*[_audit_line(entry)[:2900] for entry in list(recent)[-8:]]))
        texts.append(f"{session.tenant_label}: {_PHASE_SUMMARY[session.phase]}")
    for session in finished:
        problems = delivery_lines(session.id, trouble.get(session.id, DeliveryTrouble()))
        if problems:
            summary = f"*{session.tenant_label}* ({_PHASE_SUMMARY[session.phase]})"
            blocks.append(_section("\n".join([summary, *problems])[:2900]))
            texts.append(f"{session.tenant_label}: messages could not be posted")
    return Message(text="\n".join(texts), blocks=blocks[:50])


# Sessions on the App Home tab, the newest (or, for approvers, the longest waiting) first; the
# others are counted and `/provision-inline status` lists a channel's. As many as `status` shows
# for a channel: the tab is a glance, and costs the same however many sessions there are.
HOME_SESSIONS = 10


def home_view(
    sessions: Sequence[Session], permalinks: Mapping[str, str], *, more: int = 0
) -> dict[str, Any]:
    """The App Home tab: the sessions this viewer can act on, each with a link to its thread
    (``more``: how many others there are, not shown)."""
    blocks: list[Block] = [
        _header("Inline Mode provisioning"),
    ]
    if not sessions:
        blocks.append(
            _section(
                "Nothing waits for you. Start a session with `/provision-inline` in a channel "
                "where I am a member."
            )
        )
    for session in sessions[:HOME_SESSIONS]:
        link = permalinks.get(session.id)
        where = f"<{link}|open the thread>" if link else f"in <#{session.channel_id}>"
        blocks.append(
            _section(
                f"*{session.tenant_label}* — {_PHASE_SUMMARY[session.phase]}\n"
                f"Started by {mention(session.started_by)}, {when(session.created_at)} · {where}"
            )
        )
    hidden = more + max(0, len(sessions) - HOME_SESSIONS)
    if hidden > 0:
        blocks.append(
            _context(
                f"… and {hidden} more active session(s). `/provision-inline status` in a "
                "channel lists that channel's sessions."
            )
        )
    return {"type": "home", "blocks": blocks}


def error_message(reference: str) -> Message:
    text = (
        ":warning: Something went wrong on our side, and the last action may not have completed. "
        "Check the thread or `/provision-inline status`, then try again. If it happens again, "
        f"give your Slack admin this reference: `{reference}`."
    )
    return Message(text=text, blocks=[_section(text)])


def notice(text: str) -> Message:
    """A one-paragraph ephemeral reply."""
    return Message(text=text, blocks=[_section(text)])


_PHASE_WORDS: Mapping[Phase, str] = {
    Phase.CANCELLED: "cancelled",
    Phase.EXPIRED: "expired",
    Phase.PROTECTED: "finished: Exchange Online is protected",
}


_REFUSED: Mapping[Why, str] = {
    Why.NO_REQUEST: "There is no role request to decide on in this session.",
    Why.OWN_REQUEST: "You made this request, so you can't acknowledge it yourself: a privileged "
    "role needs a second person.",
    Why.NOT_REQUESTER: "Only {who}, who made the request, can withdraw it.",
    Why.REQUEST_CHANGED: "The role request changed after you saw it: {who} sent the one now "
    "waiting in the thread. Review that one.",
    Why.NOT_ACKNOWLEDGED: "The role request was changed after it was acknowledged: the new "
    "request needs an approver's acknowledgement first.",
    Why.PLAN_NOT_READ: "The change plan is still being read from the tenant; wait for it in the "
    "thread.",
    Why.BLOCKED: "The pre-flight checks found blocking problems; fix them, then press *Check "
    "again*.",
    Why.WARNINGS_PENDING: "The warnings from the pre-flight checks must be acknowledged first.",
    Why.NO_WARNINGS: "There are no warnings to acknowledge.",
    Why.ALREADY_ACKNOWLEDGED: "Already done: {who} acknowledged the warnings.",
    Why.ALREADY_REQUESTED: "Already done: {who} requested the role. The thread's latest step 2 "
    "message shows where the request stands.",
}


def refused_transition_message(refused: TransitionNotAllowed) -> Message:
    """Why a click or command did nothing: the session moved on, and who moved it."""
    session = refused.session
    if isinstance(refused, TransitionRefused):
        text = _REFUSED[refused.why].format(who=mention(refused.decided_by))
        text += " Nothing was changed."
        return Message(text=text, blocks=[_section(text)])
    latest = session.history[-1] if session.history else None
    request = session.role.request
    if (
        refused.event.kind is EventKind.ROLE_REQUEST
        and request is not None
        and session.phase in (Phase.ROLE_ASSIGNING, Phase.ROLE_ASSIGNED)
    ):
        # A first request's form, sent after the request went on to Microsoft: who requested
        # it is the answer (as when it is refused at acknowledged), then where it stands.
        text = _REFUSED[Why.ALREADY_REQUESTED].format(who=mention(request.requested_by))
        text += f" {_PHASE_SUMMARY[session.phase]} Nothing was changed."
        return Message(text=text, blocks=[_section(text)])
    same = session.last(refused.event.kind)
    # The same move was made first: the session is still where it led, or only the bot
    # carried it on since.
    if same is not None and (
        same.phase is session.phase
        or all(e.actor == "system" for e in session.history[session.history.index(same) + 1 :])
    ):
        text = (
            f"Already done: {mention(same.actor)} {_EVENT_SENTENCE[same.kind]} "
            f"{when(same.at)}. Nothing was changed."
        )
    elif session.phase is Phase.APPLYING and refused.event.kind is EventKind.CANCEL:
        text = (
            "Exchange Online is being configured right now, and stopping halfway would leave the "
            "tenant half-configured. Nothing was cancelled: wait for the result in the thread "
            "(a few minutes at most); if it fails, you can cancel then."
        )
    elif session.phase in _PHASE_WORDS:
        by = f" by {mention(latest.actor)} {when(latest.at)}" if latest else ""
        text = (
            f"This provisioning session for *{session.tenant_label}* is already "
            f"{_PHASE_WORDS[session.phase]}{by}. Nothing was changed."
        )
    elif latest is not None:
        text = (
            f"Already done differently: {mention(latest.actor)} {_EVENT_SENTENCE[latest.kind]} "
            f"{when(latest.at)}, first. {_PHASE_SUMMARY[session.phase]} Nothing was changed."
        )
    else:
        text = f"That does not apply any more: {_PHASE_SUMMARY[session.phase]} Nothing was changed."
    return Message(text=text, blocks=[_section(text)])


def busy_message(session: Session, permalink: str | None) -> Message:
    where = f"<{permalink}|its thread>" if permalink else f"<#{session.channel_id}>"
    text = (
        f"Provisioning of *{session.tenant_label}* is already under way (started by "
        f"{mention(session.started_by)} {when(session.created_at)}): continue in {where}. "
        "Nothing new was started."
    )
    return Message(text=text, blocks=[_section(text)])


REDIS_UNAVAILABLE = (
    "Redis is unavailable for a moment: nothing was changed. Try again in a few seconds."
)


def redis_unavailable_message() -> Message:
    """The answer to a request whose Redis calls before the ack ran out of time."""
    return notice(f":warning: {REDIS_UNAVAILABLE}")


def notice_modal(message: Message) -> dict[str, Any]:
    """A modal that only tells something (after a slow start could not go ahead)."""
    return {
        "type": "modal",
        "title": _plain("Provision Inline Mode"),
        "close": _plain("Close"),
        "blocks": message.blocks,
    }

"""Block Kit for the second half of step 4 (pure): protected domains, Submit, notification.

The checklist, plan, progress, failure and summary messages come from ``bot.mailflow.render``;
this module adds what ties them to a session: which domains were chosen and why, the message
with the Submit / Check again buttons, the upgrade check, and the final announcement.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from bot.blocks import Block
from bot.blocks import button as _button
from bot.blocks import section as _section
from bot.mailflow.preflight import Finding
from bot.views import Message, mention, when
from bot.workflow import EventKind, Scope, Session

__all__ = [
    "ACTION_CHECK_AGAIN",
    "ACTION_SUBMIT",
    "ANNOUNCEMENT",
    "DomainChoice",
    "announcement_message",
    "choose_domains",
    "decision_message",
    "domains_message",
    "submit_refused_message",
    "survey_failed_message",
    "upgrade_found_message",
    "with_button_value",
]


ANNOUNCEMENT = "Exchange Online protected in inline mode."
ACTION_SUBMIT = "mailflow_submit"
ACTION_CHECK_AGAIN = "mailflow_check_again"


def with_button_value(message: Message, action_id: str, value: str) -> Message:
    """``message`` with every button ``action_id`` carrying ``value`` (e.g. the session id)."""
    blocks = []
    for block in message.blocks:
        if block.get("type") == "actions":
            block = {
                **block,
                "elements": [
                    {**e, "value": value} if e.get("action_id") == action_id else e
                    for e in block.get("elements", [])
                ],
            }
        blocks.append(block)
    return Message(message.text, blocks)


# -- protected domains ---------------------------------------------------------------------------


@dataclass(frozen=True)
class DomainChoice:
    """The domains provisioning protects, and one line of explanation per domain considered."""

    chosen: tuple[str, ...]
    reasons: tuple[str, ...]


def choose_domains(
    verified: Iterable[tuple[str, bool, bool]], accepted: Iterable[str]
) -> DomainChoice:
    """Protect the verified domains (``(name, is_verified, is_initial)``) that Exchange accepts.

    The initial ``*.onmicrosoft.com`` domain is Microsoft's routing domain, not one people send
    from: it is left out, as are unverified domains and domains Exchange does not accept.
    """
    accepted_names = {a.strip().rstrip(".").casefold() for a in accepted}
    chosen: list[str] = []
    reasons: list[str] = []
    for name, is_verified, is_initial in verified:
        domain = name.strip().rstrip(".").casefold()
        if not domain or domain in chosen:
            continue
        if is_initial or domain.endswith(".onmicrosoft.com"):
            reasons.append(f"{domain}: left out, Microsoft's initial routing domain")
        elif not is_verified:
            reasons.append(f"{domain}: left out, not verified in Entra ID")
        elif domain not in accepted_names:
            reasons.append(f"{domain}: left out, not an accepted domain in Exchange Online")
        else:
            chosen.append(domain)
            reasons.append(f"{domain}: protected (verified, and an accepted domain in Exchange)")
    return DomainChoice(tuple(chosen), tuple(reasons))


def domains_message(session: Session, choice: DomainChoice) -> Message:
    direction = (
        "outgoing mail only (upgrade; the inbound objects stay as they are)"
        if session.scope is Scope.UPGRADE
        else "incoming and outgoing mail"
    )
    names = ", ".join(f"*{d}*" for d in choice.chosen) or "_none_"
    lines = [
        f"*Step 4 — the change plan.* Every grant is verified. Protected domains: {names} "
        f"({direction}). The bot chose the tenant's verified domains that Exchange Online "
        "accepts:",
        *(f"• {reason}" for reason in choice.reasons),
        "Nothing has been changed yet: the pre-flight checks and the plan follow.",
    ]
    text = "\n".join(lines)
    return Message(text, [_section(text)])


def survey_failed_message(session: Session, problem: str) -> Message:
    text = (
        f":warning: I could not read the Exchange Online configuration of "
        f"*{session.tenant_label}*: {problem} Nothing has been changed. Press *Check again* in "
        "a minute."
    )
    return Message(
        text,
        [
            _section(text),
            {
                "type": "actions",
                "elements": [_button(ACTION_CHECK_AGAIN, "Check again", session.id)],
            },
        ],
    )


# -- Submit ----------------------------------------------------------------------------------------


def decision_message(
    session: Session,
    *,
    changes: int,
    blockers: Sequence[Finding],
    warnings: int,
    acknowledged_by: str | None,
    submitted_by: str | None = None,
    submitted_at: float | None = None,
) -> Message:
    """The message under the plan: Submit (when nothing blocks) and Check again."""
    if submitted_by is not None:
        text = f":rocket: {mention(submitted_by)} submitted the change plan"
        if submitted_at is not None:
            text += f" {when(submitted_at)}"
        text += ". Progress follows below."
        return Message(text, [_section(text)])
    elements: list[Block] = []
    if blockers:
        titles = "; ".join(f.title for f in blockers)
        text = (
            f":no_entry: *Submit is not possible yet:* the pre-flight checks found "
            f"{len(blockers)} blocking problem{'s' if len(blockers) != 1 else ''} ({titles}). "
            "The fix is shown with each one above. Nothing has been changed. When it is fixed, "
            "press *Check again*."
        )
    else:
        what = (
            f"*Submit* applies the {changes} change{'s' if changes != 1 else ''} above in that "
            "order"
            if changes
            else "Nothing needs to change: *Submit* confirms it and finishes"
        )
        text = f"Review the pre-flight checks and the change plan above. {what}."
        if warnings and acknowledged_by:
            text += (
                f"\n:white_check_mark: {mention(acknowledged_by)} acknowledged the "
                f"{warnings} warning{'s' if warnings != 1 else ''}."
            )
        elif warnings:
            text += (
                f"\n:warning: An admin must first acknowledge the {warnings} "
                f"warning{'s' if warnings != 1 else ''} (*Acknowledge warnings* on the checklist)."
            )
        text += "\nOnly provisioning admins may submit. Safe to run again: nothing is duplicated."
        submit = _button(ACTION_SUBMIT, "Submit", session.id, style="primary")
        submit["confirm"] = {
            "title": {"type": "plain_text", "text": "Apply the change plan?"},
            "text": {
                "type": "mrkdwn",
                "text": f"Exchange Online of *{session.tenant_label}* will be configured now.",
            },
            "confirm": {"type": "plain_text", "text": "Submit"},
            "deny": {"type": "plain_text", "text": "Not yet"},
        }
        elements.append(submit)
    elements.append(_button(ACTION_CHECK_AGAIN, "Check again", session.id))
    blocks = [
        _section(text),
        {"type": "actions", "block_id": "mailflow_decision", "elements": elements},
    ]
    return Message(text, blocks)


def submit_refused_message(
    *, blockers: Sequence[tuple[str, str]] = (), warnings_pending: int = 0
) -> Message:
    """Why Submit did nothing: blocking findings (title, fix) or warnings not acknowledged."""
    if blockers:
        lines = [":no_entry: Submit refused: the pre-flight checks found blocking problems."]
        lines += [f"• *{title}* — _Fix:_ {fix}" for title, fix in blockers]
        lines.append("Nothing was changed. Fix them, then press *Check again*.")
    else:
        lines = [
            f":warning: Submit refused: {warnings_pending} warning"
            f"{'s' if warnings_pending != 1 else ''} from the pre-flight checks must be "
            "acknowledged first (*Acknowledge warnings* on the checklist). Nothing was changed."
        ]
    text = "\n".join(lines)
    return Message(text, [_section(text)])


# -- upgrade ---------------------------------------------------------------------------------------


def upgrade_found_message(
    session: Session, found: Sequence[str], missing: Sequence[str]
) -> Message:
    lines = [
        f"*Upgrade of {session.tenant_label} to outbound protection.* I checked with Microsoft "
        "what is already in place, so that nothing is asked twice."
    ]
    lines += [f":white_check_mark: {item}: already in place, not asked again" for item in found]
    lines += [f":arrow_forward: {item}: needed, asked below" for item in missing]
    text = "\n".join(lines)
    return Message(text, [_section(text)])


# -- the notification ------------------------------------------------------------------------------


def announcement_message(session: Session, permalink: str | None) -> Message:
    """ "Exchange Online protected in inline mode." with tenant, people and a link to the thread."""
    submitted = session.last(EventKind.SUBMIT)
    provisioned_by = submitted.actor if submitted else session.started_by
    acknowledged = session.last(EventKind.ROLE_ACKNOWLEDGE)
    if acknowledged is not None:
        role = f"acknowledged by {mention(acknowledged.actor)}"
    elif session.last(EventKind.ROLE_FOUND) is not None:
        role = "already assigned before this session (verified by the bot)"
    else:
        role = "assigned without an acknowledgement in this session"
    scope = (
        "outbound added to the existing inbound protection"
        if session.scope is Scope.UPGRADE
        else "inbound and outbound"
    )
    details = [
        f"*Tenant:* {session.tenant_label} (`{session.tenant_id}`)",
        f"*Scope:* {scope}",
        f"*Provisioned by:* {mention(provisioned_by)}"
        + (
            f" (started by {mention(session.started_by)})"
            if provisioned_by != session.started_by
            else ""
        ),
        f"*Exchange Administrator role:* {role}",
    ]
    if permalink:
        details.append(f"<{permalink}|Open the provisioning thread>")
    text = (
        f"{ANNOUNCEMENT} Tenant: {session.tenant_label}. Provisioned by "
        f"{mention(provisioned_by)}; role {role}."
    )
    if permalink:
        text += f" Thread: {permalink}"
    blocks = [_section(f":shield: *{ANNOUNCEMENT}*"), _section("\n".join(details))]
    return Message(text, blocks)

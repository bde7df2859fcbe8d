"""Block Kit for the mail-flow step: checklist, plan, progress, failure and summary.

Also what ties them to a session: which domains were chosen and why, the message with the
Submit / Check again buttons, the upgrade check, and the final announcement.

Pure functions returning ``bot.blocks.Message`` (fallback ``text`` plus ``blocks``). Slack's
limits are kept: at most 50 blocks per message and 3000 characters per section; long content is
split over several sections, and past the block budget it is summarised ("…and 7 more").
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence

from bot.blocks import Block, Message, mention
from bot.blocks import button as _button
from bot.blocks import clip as _cut
from bot.blocks import context as _context
from bot.blocks import escape as _escape
from bot.blocks import header as _header
from bot.blocks import section as _section
from bot.steps.mailflow.apply import ApplyFailed, ApplyResult
from bot.steps.mailflow.desired import Kind, Role
from bot.steps.mailflow.model import DomainChoice
from bot.steps.mailflow.plan import Action, Change, Plan
from bot.steps.mailflow.preflight import Finding, Severity
from bot.steps.mailflow.snapshot import display
from bot.workflow import EventKind, Scope, Session

__all__ = [
    "ACTION_ACKNOWLEDGE",
    "ACTION_CHECK_AGAIN",
    "ACTION_RETRY",
    "ACTION_SUBMIT",
    "ANNOUNCEMENT",
    "announcement_message",
    "decision_message",
    "domains_message",
    "failure_message",
    "plan_message",
    "preflight_message",
    "progress_message",
    "submit_refused_message",
    "summary_message",
    "survey_failed_message",
    "upgrade_found_message",
    "with_button_value",
]


ACTION_RETRY = "mailflow_retry"
ACTION_ACKNOWLEDGE = "mailflow_acknowledge"

MAX_BLOCKS = 50
SECTION_LIMIT = 3000
_TEXT_LIMIT = 3000

_ICONS = {
    Severity.PASS: ":white_check_mark:",
    Severity.WARNING: ":warning:",
    Severity.BLOCKING: ":no_entry:",
}

_PHASES: tuple[tuple[str, frozenset[Kind]], ...] = (
    ("Groups", frozenset({Kind.DISTRIBUTION_GROUP})),
    ("Connectors", frozenset({Kind.OUTBOUND_CONNECTOR, Kind.INBOUND_CONNECTOR})),
    ("Transport rules (in priority order)", frozenset({Kind.TRANSPORT_RULE})),
    ("Connection filter IP Allow List", frozenset({Kind.IP_ALLOW_LIST})),
)


def _upper_first(text: str) -> str:
    return text[:1].upper() + text[1:]


def _sections(lines: Iterable[str]) -> list[Block]:
    """``lines`` packed into as few sections as the 3000-character limit allows."""
    blocks: list[Block] = []
    chunk = ""
    for raw in lines:
        line = _cut(raw, SECTION_LIMIT)
        candidate = f"{chunk}\n{line}" if chunk else line
        if len(candidate) > SECTION_LIMIT:
            blocks.append(_section(chunk))
            candidate = line
        chunk = candidate
    if chunk:
        blocks.append(_section(chunk))
    return blocks


def _fit(blocks: list[Block], tail: Sequence[Block] = ()) -> list[Block]:
    """At most ``MAX_BLOCKS`` blocks; ``tail`` (e.g. buttons) is always kept."""
    room = MAX_BLOCKS - len(tail)
    if len(blocks) > room:
        hidden = len(blocks) - (room - 1)
        blocks = [
            *blocks[: room - 1],
            _context(f"…and {hidden} more part{'s' if hidden != 1 else ''} not shown here."),
        ]
    return [*blocks, *tail]


def _exchange_message(message: str) -> str:
    """Exchange prefixes messages with ``|Type|``: keep the human part."""
    cleaned = re.sub(r"^\|[^|]*\|", "", message.strip())
    return cleaned.strip() or message.strip()


# -- pre-flight ----------------------------------------------------------------------------------


def preflight_message(
    findings: Sequence[Finding], *, acknowledge_action_id: str | None = ACTION_ACKNOWLEDGE
) -> Message:
    """The pre-flight checklist; with warnings (and no blocker) a button to acknowledge them."""
    blockers = [f for f in findings if f.severity is Severity.BLOCKING]
    warned = [f for f in findings if f.severity is Severity.WARNING]
    if blockers:
        verdict = f"{len(blockers)} blocking problem{'s' if len(blockers) != 1 else ''}: fix "
        verdict += "them, then run the checks again. Nothing has been changed."
    elif warned:
        verdict = f"{len(warned)} warning{'s' if len(warned) != 1 else ''} to acknowledge "
        verdict += "before the plan is applied."
    else:
        verdict = "Every check passed."
    lines = []
    for finding in findings:
        line = f"{_ICONS[finding.severity]} *{_escape(finding.title)}*"
        if finding.explanation:
            line += f"\n{_escape(finding.explanation)}"
        if finding.fix and finding.severity is not Severity.PASS:
            line += f"\n_Fix:_ {_escape(finding.fix)}"
        lines.append(line)
    blocks = [_header("Exchange Online pre-flight checks"), _section(verdict), *_sections(lines)]
    tail: list[Block] = []
    if warned and not blockers and acknowledge_action_id:
        tail.append(
            {
                "type": "actions",
                "elements": [
                    {
                        "type": "button",
                        "action_id": acknowledge_action_id,
                        "text": {"type": "plain_text", "text": "Acknowledge warnings"},
                        "value": "acknowledge",
                    }
                ],
            }
        )
    text = f"Pre-flight checks: {verdict}"
    return Message(_cut(text, _TEXT_LIMIT), _fit(blocks, tail))


# -- plan ----------------------------------------------------------------------------------------


_HIDDEN = "(this tenant's loop-prevention token, not shown)"


def _shown(change: Change, name: str, value: object) -> str:
    setting = change.target.setting(name)
    if setting is not None and setting.secret:
        return _HIDDEN
    return _escape(display(value))


def _settings_line(change: Change) -> str:
    shown = []
    for field in change.fields:
        setting = change.target.setting(field.name)
        if setting is not None and setting.role is Role.CREATE_ONLY and field.name != "Priority":
            continue
        if field.name in ("Comment", "Comments", "Notes"):
            continue  # the purpose, shown as "Why"
        shown.append(f"`{field.name}` {_shown(change, field.name, field.new)}")
    return " · ".join(shown)


def _change_lines(change: Change) -> str:
    head = f"*{change.step}.* {_escape(_upper_first(change.describe()))}"
    if change.kind is Kind.IP_ALLOW_LIST and change.action in (Action.ADD, Action.REMOVE):
        return f"{head}: {_escape(', '.join(change.entries))}\n    _Why:_ {_escape(change.reason)}"
    body = f"{head}\n    _Why:_ {_escape(change.reason)}"
    if change.action is Action.CREATE:
        settings = _settings_line(change)
        if settings:
            body += f"\n    {settings}"
    elif change.action is Action.UPDATE:
        for field in change.fields:
            old = _shown(change, field.name, field.old)
            body += f"\n    • `{field.name}`: {old} → {_shown(change, field.name, field.new)}"
    elif change.action in (Action.REPLACE, Action.VALIDATE):
        body += "\n    " + " → ".join(f"`{call.cmdlet}`" for call in change.calls)
    return body


def plan_message(plan: Plan) -> Message:
    """The change plan: what changes, why, and in which order; then what is left alone."""
    todo = plan.actionable
    blocks: list[Block] = [_header("Exchange Online change plan")]
    if plan.blocked:
        lines = [
            f":no_entry: *{_escape(_upper_first(c.kind.label))} “{_escape(c.name)}”*: "
            f"{_escape(c.reason)}"
            for c in plan.blocked
        ]
        blocks += _sections(["*Blocked: these cannot be applied*", *lines])
    if todo:
        counts = {
            "create": sum(1 for c in todo if c.action is Action.CREATE),
            "update": sum(1 for c in todo if c.action is Action.UPDATE),
            "replace": sum(1 for c in todo if c.action is Action.REPLACE),
            "validate": sum(1 for c in todo if c.action is Action.VALIDATE),
            "add": sum(1 for c in todo if c.action is Action.ADD),
            "remove": sum(1 for c in todo if c.action is Action.REMOVE),
        }
        summary = ", ".join(f"{n} to {verb}" for verb, n in counts.items() if n)
        blocks.append(
            _section(
                f"*{len(todo)} change{'s' if len(todo) != 1 else ''}* ({summary}), applied in "
                "this order: groups and connectors first, the connectors proven with "
                "Validate-OutboundConnector, then the transport rules that route to them, the IP "
                "Allow List last. Objects without our name are never touched."
            )
        )
        for title, kinds in _PHASES:
            phase = [c for c in todo if c.kind in kinds]
            if phase:
                blocks += _sections([f"*{title}*", *(_change_lines(c) for c in phase)])
    else:
        blocks.append(_section("*Nothing to change:* the tenant is configured as required."))
    if plan.left_alone:
        lines = [
            f"• {_escape(_upper_first(c.kind.label))} “{_escape(c.name)}”: {_escape(c.reason)}"
            for c in plan.left_alone
        ]
        blocks += _sections([f"*Left as they are ({len(plan.left_alone)})*", *lines])
    text = (
        f"Exchange Online change plan: {len(todo)} change(s), {len(plan.left_alone)} object(s) "
        f"left as they are, {len(plan.blocked)} blocked."
    )
    return Message(text, _fit(blocks))


# -- progress ------------------------------------------------------------------------------------


def progress_message(done: int, total: int, change: Change | None = None) -> Message:
    """One line to edit in place: "3 of 12: creating transport rule “…”…"."""
    if change is None or total == 0:
        text = f"{done} of {total} changes applied." if total else "Nothing to change."
        icon = ":white_check_mark:" if done >= total else ":hourglass_flowing_sand:"
    elif done >= change.step:
        text = f"{change.step} of {total}: {change.describe(done=True)}."
        icon = ":white_check_mark:" if done >= total else ":hourglass_flowing_sand:"
    else:
        text = f"{change.step} of {total}: {change.describe()}…"
        icon = ":hourglass_flowing_sand:"
    blocks = [_section(f"{icon} {_escape(text)}")]
    if total:
        filled = round(10 * min(done, total) / total)
        blocks.append(_context(f"`{'█' * filled}{'░' * (10 - filled)}` {done}/{total} done"))
    return Message(_cut(text, _TEXT_LIMIT), blocks)


# -- failure -------------------------------------------------------------------------------------


def _next_step(failed: ApplyFailed) -> str:
    code = failed.code
    if code == "Unavailable":
        return "Exchange Online did not answer in time. Retry in a few minutes."
    if code in ("Forbidden", "Unauthorized") or code.endswith("AccessDeniedException"):
        return (
            "Exchange refused the mail-flow app. Check that it still holds the Exchange "
            "Administrator role (a new assignment can take up to 30 minutes), then Retry."
        )
    if code == "Conflict":
        return "Rename or remove the conflicting object in the Exchange admin center, then Retry."
    if code == "NotConverged":
        return (
            "Exchange did not keep a change. Check the object in the Exchange admin center, "
            "then Retry."
        )
    return "Fix what Exchange names above if it points at the tenant's configuration, then Retry."


def failure_message(
    failed: ApplyFailed, *, retry_action_id: str = ACTION_RETRY, retry_value: str = "retry"
) -> Message:
    """What failed, Exchange's code and message, what was already applied, and a Retry button."""
    what = failed.change.describe() if failed.change else "reading the tenant's configuration"
    message = _cut(_escape(_exchange_message(failed.message)), 1500)
    blocks: list[Block] = [
        _section(f":x: *Provisioning stopped:* {_escape(what)} failed."),
        _section(f"*Exchange error* `{_escape(failed.code)}`\n>{message}"),
    ]
    if failed.applied:
        lines = [
            f"*Already applied ({len(failed.applied)})* — these stay in place:",
            *(f"• {_escape(c.describe(done=True))}" for c in failed.applied),
        ]
        blocks += _sections(lines)
    else:
        blocks.append(_section("*Already applied:* nothing, the tenant is unchanged."))
    blocks.append(
        _section(
            f"*Next step:* {_escape(_next_step(failed))} Retry reads the tenant again and "
            "continues where it stopped; nothing is created twice."
        )
    )
    tail = [
        {
            "type": "actions",
            "elements": [
                {
                    "type": "button",
                    "action_id": retry_action_id,
                    "text": {"type": "plain_text", "text": "Retry"},
                    "style": "primary",
                    "value": _cut(retry_value, 2000),
                }
            ],
        }
    ]
    text = f"Provisioning stopped: {what} failed ({failed.code}). Already applied: "
    text += f"{len(failed.applied)} change(s)."
    return Message(_cut(text, _TEXT_LIMIT), _fit(blocks, tail))


# -- summary -------------------------------------------------------------------------------------


def summary_message(result: ApplyResult) -> Message:
    """What was created, updated and found in place."""
    blocks: list[Block] = [_header("Exchange Online mail flow is configured")]
    created = [c for c in result.applied if c.action is Action.CREATE]
    added = [c for c in result.applied if c.action is Action.ADD]
    updated = [c for c in result.applied if c.action in (Action.UPDATE, Action.REPLACE)]
    removed = [c for c in result.applied if c.action is Action.REMOVE]
    if created or added:
        lines = [f"*Created ({len(created) + len(added)})*"]
        lines += [f"• {_escape(_upper_first(c.kind.label))} “{_escape(c.name)}”" for c in created]
        lines += [
            f"• {_escape(', '.join(c.entries))} added to the connection filter IP Allow List"
            for c in added
        ]
        blocks += _sections(lines)
    if updated:
        lines = [f"*Updated ({len(updated)})*"]
        lines += [
            f"• {_escape(_upper_first(c.kind.label))} “{_escape(c.name)}”: "
            + (
                _escape(", ".join(f.name for f in c.fields))
                if c.action is Action.UPDATE
                else "replaced"
            )
            for c in updated
        ]
        blocks += _sections(lines)
    if removed:
        lines = ["*Removed*"]
        lines += [
            f"• {_escape(', '.join(c.entries))} removed from the connection filter IP Allow List "
            "(added by provisioning, no longer configured)"
            for c in removed
        ]
        blocks += _sections(lines)
    kept = result.plan.left_alone
    if kept:
        lines = [f"*Already in place ({len(kept)})*"]
        lines += [f"• {_escape(_upper_first(c.kind.label))} “{_escape(c.name)}”" for c in kept]
        blocks += _sections(lines)
    warned = [f for f in result.findings if f.severity is Severity.WARNING]
    context = "Every object is in place and enabled."
    if warned:
        context += f" {len(warned)} acknowledged warning(s) from the pre-flight checks."
    blocks.append(_context(context))
    text = (
        f"Exchange Online mail flow is configured: {len(created) + len(added)} created, "
        f"{len(updated)} updated, {len(kept)} already in place."
    )
    return Message(text, _fit(blocks))


# -- the session's part of the step ------------------------------------------------------------


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
) -> Message:
    """The message under the plan: Submit (when nothing blocks) and Check again."""
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

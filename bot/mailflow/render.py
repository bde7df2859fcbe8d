"""Block Kit for the mail-flow step: checklist, plan, progress, failure and summary.

Pure functions returning ``bot.views.Message`` (fallback ``text`` plus ``blocks``). Slack's
limits are kept: at most 50 blocks per message and 3000 characters per section; long content is
split over several sections, and past the block budget it is summarised ("…and 7 more").
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence

from bot.blocks import Block
from bot.blocks import clip as _cut
from bot.blocks import context as _context
from bot.blocks import escape as _escape
from bot.blocks import header as _header
from bot.blocks import section as _section
from bot.mailflow.apply import ApplyFailed, ApplyResult
from bot.mailflow.desired import Kind, Role
from bot.mailflow.plan import Action, Change, Plan
from bot.mailflow.preflight import Finding, Severity
from bot.mailflow.snapshot import display
from bot.views import Message

__all__ = [
    "ACTION_ACKNOWLEDGE",
    "ACTION_RETRY",
    "failure_message",
    "plan_message",
    "preflight_message",
    "progress_message",
    "summary_message",
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
    ("Allow lists", frozenset({Kind.IP_ALLOW_LIST, Kind.SPOOF_ITEM})),
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


def _settings_line(change: Change) -> str:
    shown = []
    for field in change.fields:
        setting = change.target.setting(field.name)
        if setting is not None and setting.role is Role.CREATE_ONLY and field.name != "Priority":
            continue
        shown.append(f"`{field.name}` {_escape(display(field.new))}")
    return " · ".join(shown)


def _change_lines(change: Change) -> str:
    head = f"*{change.step}.* {_escape(_upper_first(change.describe()))}"
    if change.kind is Kind.IP_ALLOW_LIST and change.action is Action.ADD:
        return f"{head}: {_escape(', '.join(change.entries))}\n    _Why:_ {_escape(change.reason)}"
    body = f"{head}\n    _Why:_ {_escape(change.reason)}"
    if change.action is Action.CREATE:
        settings = _settings_line(change)
        if settings:
            body += f"\n    {settings}"
    elif change.action is Action.UPDATE:
        for field in change.fields:
            body += (
                f"\n    • `{field.name}`: {_escape(display(field.old))} → "
                f"{_escape(display(field.new))}"
            )
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
            "add": sum(1 for c in todo if c.action is Action.ADD),
        }
        summary = ", ".join(f"{n} to {verb}" for verb, n in counts.items() if n)
        blocks.append(
            _section(
                f"*{len(todo)} change{'s' if len(todo) != 1 else ''}* ({summary}), applied in "
                "this order: groups and connectors first, then the transport rules that use "
                "them, allow lists last. Objects without our name are never touched."
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
    updated = [c for c in result.applied if c.action is Action.UPDATE]
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
            f"{_escape(', '.join(f.name for f in c.fields))}"
            for c in updated
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

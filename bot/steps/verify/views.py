"""Block Kit for verification: pure functions from results to ``Message(text, blocks)``.

- ``checklist_message``: each check passed / failed / waiting, with its reason and its fix;
- ``progress_message``: "waiting for Microsoft to replicate the role …, next check in …", for
  ``verify_until_ready``'s ``on_progress`` (update the same thread message each time);
- ``summary_message``: how verification ended (ready, failed, timed out).

No I/O and no clock reads: every time shown comes from the arguments. ``text`` always says the
whole thing in words (notifications, screen readers).
"""

from __future__ import annotations

from datetime import timedelta

from bot.blocks import Block, Message, mention, when
from bot.blocks import clip as _clip
from bot.blocks import context as _context
from bot.blocks import escape as _escape
from bot.blocks import plain as _plain
from bot.blocks import section as _section
from bot.steps.verify.model import (
    DEFAULT_LIMIT,
    CheckResult,
    CheckStatus,
    Outcome,
    Problem,
    Verification,
    VerifyOutcome,
)
from bot.workflow import Session

__all__ = [
    "ACTION_VERIFY",
    "checking_message",
    "checklist_blocks",
    "checklist_message",
    "format_duration",
    "progress_message",
    "stopped_message",
    "stopped_on_error_message",
    "summary_message",
    "verify_pressed",
    "verify_prompt",
]


_ICON = {
    CheckStatus.PASSED: ":white_check_mark:",
    CheckStatus.FAILED: ":x:",
    CheckStatus.WAITING: ":hourglass_flowing_sand:",
}
_NOT_CHECKED_ICON = ":white_circle:"
_WORD = {CheckStatus.PASSED: "passed", CheckStatus.FAILED: "failed", CheckStatus.WAITING: "waiting"}


def format_duration(delta: timedelta) -> str:
    """``15 s``, ``2 min``, ``1 min 30 s``, ``1 h 5 min``."""
    seconds = max(0, round(delta.total_seconds()))
    hours, rest = divmod(seconds, 3600)
    minutes, seconds = divmod(rest, 60)
    parts = []
    if hours:
        parts.append(f"{hours} h")
    if minutes:
        parts.append(f"{minutes} min")
    if seconds and not hours:
        parts.append(f"{seconds} s")
    return " ".join(parts) or "0 s"


def _status_word(check: CheckResult) -> str:
    if check.problem is Problem.NOT_CHECKED:
        return "not checked"
    return _WORD[check.status]


def _check_block(check: CheckResult) -> Block:
    icon = _NOT_CHECKED_ICON if check.problem is Problem.NOT_CHECKED else _ICON[check.status]
    lines = [f"{icon} *{_escape(check.title)}* — {_status_word(check)}", _escape(check.reason)]
    if not check.passed and check.fix:
        label = "What happens next" if check.status is CheckStatus.WAITING else "Fix"
        lines.append(f"*{label}:* {_escape(check.fix)}")
    return _section("\n".join(lines))


def _check_line(check: CheckResult) -> str:
    line = f"{check.title}: {_status_word(check)}. {check.reason}"
    if not check.passed and check.fix:
        line += f" Fix: {check.fix}"
    return line


def _tally(verification: Verification) -> str:
    checks = verification.checks
    passed = sum(c.passed for c in checks)
    failed = sum(c.status is CheckStatus.FAILED for c in checks)
    waiting = sum(c.status is CheckStatus.WAITING for c in checks)
    words = [f"{passed} of {len(checks)} checks passed"]
    if failed:
        words.append(f"{failed} failed")
    if waiting:
        words.append(f"{waiting} waiting")
    return ", ".join(words)


def checklist_blocks(verification: Verification) -> list[Block]:
    """One section per check, then when it was checked."""
    blocks = [_check_block(check) for check in verification.checks]
    detail = f"Tenant `{_escape(verification.tenant_id)}` · checked {when(verification.checked_at)}"
    if verification.via_pim is False:
        detail += " · no Entra ID P2: roles read from direct assignments"
    blocks.append(_context(detail))
    return blocks


def _text(headline: str, verification: Verification) -> str:
    lines = [headline, *(f"• {_check_line(c)}" for c in verification.checks)]
    return _clip("\n".join(lines), 3900)


def checklist_message(verification: Verification) -> Message:
    """The verification checklist: each check with its status, reason and fix."""
    headline = f"Verification: {_tally(verification)}."
    blocks = [_section(f"*{_escape(headline)}*"), *checklist_blocks(verification)]
    return Message(text=_text(headline, verification), blocks=blocks)


def progress_message(
    attempt: int,
    elapsed: timedelta,
    next_in: timedelta,
    verification: Verification,
    *,
    resumes_within: timedelta,
    limit: timedelta = DEFAULT_LIMIT,
) -> Message:
    """While ``verify_until_ready`` waits for the role to replicate (its ``on_progress``).

    The next check is promised within ``next_in`` plus ``resumes_within``, how long a job whose
    process died takes to run again elsewhere: a promise the bot keeps after a crash too."""
    promised = format_duration(next_in + resumes_within)
    headline = (
        "Waiting for Microsoft to replicate the Exchange Administrator role to Exchange Online"
        f" (can take up to 30 minutes). Next check within {promised}."
    )
    status = (
        f"Attempt {attempt} · waiting for {format_duration(elapsed)} so far · the bot gives up"
        f" after {format_duration(limit)} · nothing to do meanwhile"
    )
    blocks = [
        _section(f"{_ICON[CheckStatus.WAITING]} *{_escape(headline)}*"),
        _context(status),
        *checklist_blocks(verification),
    ]
    return Message(text=_text(f"{headline} {status}.", verification), blocks=blocks)


def summary_message(
    outcome: VerifyOutcome,
    *,
    verify_again_action_id: str | None = None,
    verify_again_value: str = "",
) -> Message:
    """How verification ended. With ``verify_again_action_id`` a failure offers a retry button."""
    verification = outcome.verification
    if outcome.outcome is Outcome.READY:
        icon = _ICON[CheckStatus.PASSED]
        headline = (
            "Every grant is in place: Exchange Online accepts the mail-flow app."
            " Next: the change plan."
        )
    elif outcome.outcome is Outcome.TIMED_OUT:
        icon = ":warning:"
        headline = (
            "Exchange Online still refuses the mail-flow app after"
            f" {format_duration(outcome.limit)} of checking. The bot stopped waiting; see the"
            " fix below, then click Verify again."
        )
    else:
        problems = len(verification.failures)
        icon = _ICON[CheckStatus.FAILED]
        headline = (
            f"Verification found {problems} problem{'s' if problems != 1 else ''}."
            " Fix what is marked below, then click Verify again."
        )
    tally = f"{_tally(verification)} · {outcome.attempts} attempt(s)"
    if outcome.attempts > 1:
        tally += f" over {format_duration(outcome.elapsed)}"
    blocks: list[Block] = [
        _section(f"{icon} *{_escape(headline)}*"),
        _context(tally),
        *checklist_blocks(verification),
    ]
    if verify_again_action_id and outcome.outcome is not Outcome.READY:
        button: Block = {
            "type": "button",
            "action_id": verify_again_action_id,
            "text": {"type": "plain_text", "text": "Verify again", "emoji": True},
            "style": "primary",
        }
        if verify_again_value:
            button["value"] = verify_again_value[:2000]
        blocks.append({"type": "actions", "block_id": "verify_again", "elements": [button]})
    return Message(text=_text(f"{headline} ({tally}.)", verification), blocks=blocks)


ACTION_VERIFY = "verify_start"


def verify_prompt(session: Session, *, problem: str | None = None) -> Message:
    """Step 4's first half: what Verify checks, and the button (after ``problem``, again)."""
    text = (
        "*Step 4 — verify and submit.* Press *Verify*: the bot checks with Microsoft that the "
        "mail-flow app is consented and holds *Exchange.ManageAsApp*, that it has an active "
        "*Exchange Administrator* role, that the directory-sync app is consented, that the "
        "tenant's domains can be read, and that Exchange Online accepts the mail-flow app. "
        "Nothing is changed in the tenant. A role assigned minutes ago can take up to 30 "
        "minutes to reach Exchange; the bot keeps checking and continues by itself."
    )
    if problem:
        text = f":warning: Verification stopped: {_escape(problem)}\n{text}"
    return Message(
        text=f"Verification stopped: {problem}"
        if problem
        else f"Step 4 for {session.tenant_label}: press Verify to check every grant.",
        blocks=[
            _section(text),
            {
                "type": "actions",
                "block_id": "verify",
                "elements": [
                    {
                        "type": "button",
                        "action_id": ACTION_VERIFY,
                        "text": _plain("Verify"),
                        "style": "primary",
                        "value": session.id,
                    }
                ],
            },
        ],
    )


def checking_message(pressed_by: str, at: float) -> Message:
    """The step's message while the job starts: who pressed Verify."""
    text = (
        f":hourglass_flowing_sand: *Step 4 — verify:* {mention(pressed_by)} pressed Verify "
        f"{when(at)}; the bot is checking every grant with Microsoft…"
    )
    if pressed_by == "system":
        text = ":hourglass_flowing_sand: *Step 4 — verify:* checking every grant with Microsoft…"
    return Message(text=text, blocks=[_section(text)])


def verify_pressed(pressed_by: str, at: float) -> Block:
    return _context(f"Verify pressed by {mention(pressed_by)} {when(at)} · checked by the bot")


def stopped_on_error_message() -> Message:
    text = ":x: *Step 4 — verify:* stopped on an error; see below and press *Verify* again."
    return Message(text=text, blocks=[_section(text)])


def stopped_message(phase_word: str) -> Message:
    text = f":heavy_minus_sign: *Step 4 — verify:* not done; the session {phase_word} first."
    return Message(text=text, blocks=[_section(text)])

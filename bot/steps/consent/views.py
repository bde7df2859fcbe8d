"""Block Kit for the consent steps (1 and 3): the link prompt and what went wrong (pure)."""

from __future__ import annotations

import re
from collections.abc import Mapping

from bot.blocks import Message, mention, untrusted_text, when
from bot.blocks import plain as _plain
from bot.blocks import section as _section
from bot.workflow import Phase, Session

__all__ = [
    "ACTION_CONSENT_OPEN",
    "ACTION_CONSENT_RENEW",
    "consent_app_title",
    "consent_done",
    "consent_not_confirmed",
    "consent_problem",
    "consent_prompt",
    "consent_stopped",
]

ACTION_CONSENT_OPEN = "consent_open"
# An OAuth error code as Microsoft writes them (access_denied, invalid_request, …).
_ERROR_CODE = re.compile(r"[a-z][a-z0-9_]{0,63}")
ACTION_CONSENT_RENEW = "consent_renew"

_CONSENT_WORDS: Mapping[str, tuple[str, str, str]] = {
    # app: (step heading, what it is called, what the admin accepts)
    "mailflow": (
        "Step 1 — consent for mail flow",
        "mail-flow app",
        "that the service may configure Exchange Online mail flow in this tenant "
        "(application permission *Exchange.ManageAsApp* on Office 365 Exchange Online)",
    ),
    "dirsync": (
        "Step 3 — consent for directory sync",
        "directory-sync app",
        "that the service may read the tenant's users, groups and domains (directory sync)",
    ),
}


def consent_app_title(app: str) -> str:
    return _CONSENT_WORDS[app][1]


def consent_prompt(session: Session, app: str, url: str, state: str, expires_at: float) -> Message:
    """The step message with the consent link (a button) and a way to get a fresh link."""
    heading, name, accepts = _CONSENT_WORDS[app]
    text = (
        f"*{heading}.* Waiting for a *Global Administrator* of *{session.tenant_label}* to "
        f"open the link, sign in and accept {accepts}. Microsoft then sends them back here, "
        f"and this message records it.\nThe link works once and expires {when(expires_at)}; "
        "*New link* makes a fresh one."
    )
    return Message(
        text=f"{heading} for {session.tenant_label}: a Global Administrator opens the "
        f"consent link for the {name}.",
        blocks=[
            _section(text),
            {
                "type": "actions",
                "block_id": f"consent_{app}",
                "elements": [
                    {
                        "type": "button",
                        "action_id": ACTION_CONSENT_OPEN,
                        "text": _plain("Open Microsoft consent page"),
                        "url": url,
                        "value": state,
                        "style": "primary",
                    },
                    {
                        "type": "button",
                        "action_id": ACTION_CONSENT_RENEW,
                        "text": _plain("New link"),
                        "value": f"{session.id}:{app}",
                    },
                ],
            },
        ],
    )


def consent_problem(
    session: Session,
    app: str,
    *,
    opened_by: str | None,
    cancelled: bool,
    error: str,
    description: str,
    wrong_tenant: str | None = None,
) -> Message:
    """Posted in the thread when a consent came back refused, cancelled or for another tenant."""
    name = _CONSENT_WORDS[app][1]
    # What Microsoft's redirect carries is untrusted: a code only if it looks like one, the
    # free text escaped and in a code span (no mention, no link, no formatting survives).
    code = error if _ERROR_CODE.fullmatch(error) else "unrecognised_error"
    said = untrusted_text(description, 500)
    elsewhere = untrusted_text(wrong_tenant or "", 100)
    who = mention(opened_by) if opened_by else "The administrator"
    if wrong_tenant:
        text = (
            f":warning: {who} gave consent for the {name} in tenant {elsewhere}, not in "
            f"*{session.tenant_label}* (`{session.tenant_id}`). Nothing was recorded. Sign in "
            f"with a Global Administrator account of {session.tenant_label} using the new link "
            "in the step's message above."
        )
    elif cancelled:
        text = (
            f":leftwards_arrow_with_hook: {who} cancelled the consent for the {name} at "
            "Microsoft. Nothing was recorded; the step's message above has a new link for when "
            "you are ready."
        )
    else:
        text = (
            f":x: Microsoft refused the consent for the {name} (`{code}`)"
            + (f": {said}. " if said else ". ")
            + "Nothing was recorded. Sign in as a *Global Administrator* of "
            f"{session.tenant_label} and use the new link in the step's message above."
        )
    return Message(text=text, blocks=[_section(text)])


def consent_done(
    session: Session, app: str, *, by: str, at: float, clicked_by: str | None = None
) -> Message:
    """The step message once consent is recorded. Microsoft's redirect does not say who signed
    in, so the thread does not guess: "a Global Administrator of the tenant"; ``clicked_by`` is
    who opened the link from Slack; ``by`` is ``system`` when an upgrade found it in place."""
    heading = _CONSENT_WORDS[app][0]
    if by == "system":
        text = (
            f":white_check_mark: *{heading}:* already in place in *{session.tenant_label}* "
            f"(checked by the bot {when(at)}), so it was not asked again."
        )
    else:
        text = (
            f":white_check_mark: *{heading}:* given by a Global Administrator of "
            f"*{session.tenant_label}* {when(at)}, confirmed with Microsoft."
        )
        if clicked_by:
            text += f" {mention(clicked_by)} opened the consent link from this thread."
    return Message(text=text, blocks=[_section(text)])


def consent_stopped(session: Session, app: str, *, phase: Phase) -> Message:
    """The step message when the session ended before the consent was given."""
    heading, _, _ = _CONSENT_WORDS[app]
    why = "expired" if phase is Phase.EXPIRED else "was cancelled"
    text = f":heavy_minus_sign: *{heading}:* not given; the session {why} first."
    return Message(text=text, blocks=[_section(text)])


def consent_not_confirmed(session: Session, app: str, reason: str, *, retry: bool) -> Message:
    """Posted in the thread when Microsoft's redirect said "consented" but Microsoft itself does
    not show the grant in the session's tenant (yet): nothing is recorded, the step stays open."""
    name = _CONSENT_WORDS[app][1]
    then = (
        "If a Global Administrator has just accepted, Microsoft may need a minute to show it: "
        "wait a minute, then open the new link in the step's message above and accept again "
        "(accepting twice changes nothing) so the bot checks again."
        if retry
        else "Ask the bot's operator to look at its log; then use the new link in the step's "
        "message above."
    )
    text = (
        f":hourglass_flowing_sand: Microsoft has not confirmed the consent for the {name} in "
        f"*{session.tenant_label}* (`{session.tenant_id}`): {reason} Nothing was recorded; "
        f"the step stays open. {then}"
    )
    return Message(text=text, blocks=[_section(text)])

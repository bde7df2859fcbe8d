"""Block Kit primitives shared by every message and view builder (pure).

Texts are clipped to Slack's limits here, once, so no builder can produce a block Slack rejects
for length; mrkdwn from users or Microsoft goes through ``escape`` first.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from bot.actors import LEGACY_MICROSOFT, TENANT_GLOBAL_ADMIN, microsoft_user

__all__ = [
    "TEXT_LIMIT",
    "Block",
    "Message",
    "actions",
    "button",
    "clip",
    "confirm",
    "context",
    "escape",
    "header",
    "mention",
    "mrkdwn",
    "plain",
    "section",
    "untrusted_text",
    "when",
]

Block = dict[str, Any]

TEXT_LIMIT = 3000  # section and context texts
HEADER_LIMIT = 150


def clip(text: str, limit: int = TEXT_LIMIT) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def escape(text: str) -> str:
    """Text inside mrkdwn: ``&``, ``<`` and ``>`` are control characters (mentions, links)."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def untrusted_text(text: str, limit: int = 300) -> str:
    """A value from outside (Microsoft's redirect, a user, configuration) for mrkdwn: clipped,
    escaped, and in a code span, so no mention, link or formatting in it takes effect."""
    cleaned = " ".join(text.split()).replace("`", "'")
    return f"`{escape(clip(cleaned, limit))}`" if cleaned else ""


def plain(text: str) -> Block:
    return {"type": "plain_text", "text": text, "emoji": True}


def mrkdwn(text: str) -> Block:
    return {"type": "mrkdwn", "text": clip(text)}


def header(text: str) -> Block:
    return {"type": "header", "text": plain(clip(text, HEADER_LIMIT))}


def section(text: str) -> Block:
    return {"type": "section", "text": mrkdwn(text)}


def context(*texts: str) -> Block:
    return {"type": "context", "elements": [mrkdwn(text) for text in texts]}


def actions(block_id: str, *elements: Block) -> Block:
    return {"type": "actions", "block_id": block_id, "elements": list(elements)}


def button(
    action_id: str,
    text: str,
    value: str,
    *,
    style: str | None = None,
    url: str | None = None,
    confirm: Block | None = None,
) -> Block:
    made: Block = {"type": "button", "action_id": action_id, "text": plain(text)}
    if value:
        made["value"] = value
    if style:
        made["style"] = style
    if url:
        made["url"] = url
    if confirm:
        made["confirm"] = confirm
    return made


def confirm(title: str, text: str, yes: str, no: str, *, danger: bool = True) -> Block:
    dialog: Block = {
        "title": plain(title),
        "text": mrkdwn(text),
        "confirm": plain(yes),
        "deny": plain(no),
    }
    if danger:
        dialog["style"] = "danger"
    return dialog


@dataclass(frozen=True)
class Message:
    text: str
    blocks: list[Block]


def mention(principal: str) -> str:
    """How Slack renders a user (U…/W…), a user group (S…), the bot itself ("system"), or an
    actor Microsoft vouches for (``bot.actors``: its name is data, escaped in a code span)."""
    if principal == "system":
        return "the bot"
    if principal == TENANT_GLOBAL_ADMIN:
        return "a Global Administrator of the tenant"
    if principal == LEGACY_MICROSOFT:
        return "an administrator of the tenant"
    signed_in = microsoft_user(principal)
    if signed_in is not None:
        return f"{untrusted_text(signed_in, 120)} (signed in at Microsoft)"
    if principal.startswith("S"):
        return f"<!subteam^{principal}>"
    return f"<@{principal}>"


def when(at: float) -> str:
    """A date Slack shows in the reader's own time zone, with a UTC fallback."""
    fallback = datetime.fromtimestamp(at, UTC).strftime("%Y-%m-%d %H:%M UTC")
    return f"<!date^{int(at)}^{{date_short_pretty}} at {{time}}|{fallback}>"

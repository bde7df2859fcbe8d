"""Parsing the text after ``/provision-inline`` (pure)."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

__all__ = ["Command", "CommandKind", "parse_command"]


class CommandKind(StrEnum):
    START = "start"
    HELP = "help"
    STATUS = "status"
    CANCEL = "cancel"
    UPGRADE = "upgrade"  # add outbound protection to a tenant protected inbound only
    UNKNOWN = "unknown"


@dataclass(frozen=True)
class Command:
    kind: CommandKind
    argument: str = ""  # e.g. the tenant for ``cancel contoso.com``; the word for UNKNOWN


def parse_command(text: str) -> Command:
    words = text.split()
    if not words:
        return Command(CommandKind.START)
    head, rest = words[0].lower(), " ".join(words[1:])
    try:
        kind = CommandKind(head)
    except ValueError:
        return Command(CommandKind.UNKNOWN, words[0])
    if kind in (CommandKind.START, CommandKind.UNKNOWN):
        return Command(CommandKind.UNKNOWN, words[0])
    return Command(kind, rest)

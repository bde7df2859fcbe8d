from __future__ import annotations

import pytest

from bot.session.commands import Command, CommandKind, parse_command


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", Command(CommandKind.START)),
        ("   ", Command(CommandKind.START)),
        ("help", Command(CommandKind.HELP)),
        ("STATUS", Command(CommandKind.STATUS)),
        ("cancel contoso.com", Command(CommandKind.CANCEL, "contoso.com")),
        ("cancel", Command(CommandKind.CANCEL)),
        ("frobnicate now", Command(CommandKind.UNKNOWN, "frobnicate")),
        ("start", Command(CommandKind.UNKNOWN, "start")),
    ],
)
def test_parse_command(text: str, expected: Command) -> None:
    assert parse_command(text) == expected

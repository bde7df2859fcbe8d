"""The console script ``provision-inline-bot``: ``bot.cli`` with this package's listeners."""

from __future__ import annotations

from collections.abc import Sequence

from bot.cli import main as run_cli
from handlers import wire

__all__ = ["main"]


def main(argv: Sequence[str] | None = None) -> int:
    return run_cli(argv, wire=wire)


if __name__ == "__main__":
    raise SystemExit(main())

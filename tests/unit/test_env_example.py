""".env.example documents every variable the configuration reads."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
APP_PREFIXES = {"MAILFLOW", "DIRSYNC"}  # read as f"{prefix}_CLIENT_ID" and so on


def test_env_example_lists_every_variable_the_code_reads() -> None:
    source = (ROOT / "bot" / "config.py").read_text()
    named = set(re.findall(r'"([A-Z][A-Z0-9_]{2,})"', source))
    read = (named - APP_PREFIXES) | {
        f"{prefix}_{suffix}"
        for prefix in APP_PREFIXES
        for suffix in ("CLIENT_ID", "CLIENT_SECRET", "CLIENT_CERTIFICATE")
    }
    example = (ROOT / ".env.example").read_text()
    listed = set(re.findall(r"^([A-Z][A-Z0-9_]+)=", example, flags=re.MULTILINE))
    assert "SLACK_BOT_TOKEN" in read
    assert read - listed == set()

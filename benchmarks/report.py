"""The figures: one row per measure, printed as a table (and kept as JSON)."""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path


@dataclass(frozen=True)
class Row:
    part: str
    measure: str
    value: float
    target: str  # the target, "" where it sets none
    passes: bool | None  # None: no target
    detail: str = ""

    @property
    def verdict(self) -> str:
        if self.passes is None:
            return ""
        return "pass" if self.passes else "FAIL"


def _number(value: float) -> str:
    if math.isnan(value):
        return "n/a"
    if value == int(value) and abs(value) >= 10:
        return f"{int(value):,}"
    if abs(value) >= 100:
        return f"{value:,.0f}"
    return f"{value:.2f}"


def table(rows: list[Row], *, details: bool = True) -> str:
    """A Markdown table of ``rows``."""
    head = "| part | measure | value | target | verdict |" + (" detail |" if details else "")
    rule = "|---|---|---|---|---|" + ("---|" if details else "")
    lines = [head, rule]
    for row in rows:
        cells = [row.part, row.measure, _number(row.value), row.target, row.verdict]
        if details:
            cells.append(row.detail.replace("|", "/"))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def save(path: Path, rows: list[Row], context: dict[str, object]) -> None:
    path.write_text(
        json.dumps({"context": context, "rows": [asdict(r) for r in rows]}, indent=1) + "\n"
    )

"""Fixtures shared by the reliability tests; the chaos runs' figures in the terminal summary."""

from __future__ import annotations

import json

import pytest

from tests.integration import conftest as integration
from tests.reliability.chaos import REPORTS

harness = integration.harness  # the fixture, shared with the integration tests


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """Each chaos run's figures (kills, restarts, requests, late acks, violations)."""
    for form, report in REPORTS:
        terminalreporter.write_sep("-", f"chaos suite, {form} form")
        terminalreporter.write_line(json.dumps(report.figures()))
        for line in report.describe().splitlines()[1:]:
            terminalreporter.write_line(line)

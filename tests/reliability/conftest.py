"""Fixtures shared by the reliability tests."""

from __future__ import annotations

from tests.integration import conftest as integration

harness = integration.harness  # the fixture, shared with the integration tests

"""Thin Slack listeners and web routes: ack, parse, call ``bot``, render.

``wire`` is the one place they are attached to a runtime, in the order they must run (the
duplicate filter first, so a retried delivery never reaches a listener).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from handlers import actions, commands, errors, home, middleware, modals, plan, role
from handlers.web import build_web

if TYPE_CHECKING:
    from starlette.applications import Starlette

    from bot.app import Runtime

__all__ = ["wire"]


def wire(runtime: Runtime, *, sweep_interval_seconds: float | None) -> Starlette:
    """Register every Slack listener on ``runtime.bolt``; return the web app that serves them."""
    middleware.register(runtime)
    errors.register(runtime)
    commands.register(runtime)
    modals.register(runtime)
    actions.register(runtime)
    home.register(runtime)
    role.register(runtime)
    plan.register(runtime)
    return build_web(runtime, sweep_interval_seconds=sweep_interval_seconds)

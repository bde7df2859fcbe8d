"""Thin Slack listeners and web routes: ack, parse, call ``bot``, render.

Each module has one ``register(runtime)``; ``register_all`` wires them in the order they must run
(the duplicate filter first, so a retried delivery never reaches a listener).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from bot.app import Runtime


def register_all(runtime: Runtime) -> None:
    from handlers import actions, commands, errors, home, middleware, modals, plan, role

    middleware.register(runtime)
    errors.register(runtime)
    commands.register(runtime)
    modals.register(runtime)
    actions.register(runtime)
    home.register(runtime)
    role.register(runtime)
    plan.register(runtime)

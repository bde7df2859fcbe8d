"""``provision-inline-bot`` with the benchmark's counters: every Redis round trip, attributed to
the interaction that caused it and to before or after its ack.

The product is built and served exactly as by the console script (``bot.cli.main`` with
``handlers.wire``); only three things are added from outside, in this process:

- the web app is wrapped: a request carrying ``x-bench-interaction: <name>`` (the harness sets it)
  runs with that name in a context variable, which every task the request starts inherits
  (Bolt's listener tasks, the jobs a click launches);
- ``redis.asyncio.Redis.execute_command`` and ``Pipeline.execute`` note each round trip (a
  command, a script call, or a whole pipeline) with the current interaction and whether it had
  been acked yet;
- ``AsyncAck.__call__`` marks the interaction acked the moment a listener (or middleware) acks,
  and so does the HTTP answer leaving, whichever comes first (the door answers a command or a
  click before any listener runs).

The notes go to the JSON-lines file named by ``BENCH_REDIS_LOG``. Round trips outside any
interaction (the sweep timer's) are noted under ``null``.
"""

from __future__ import annotations

import contextvars
import json
import os
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import IO, TYPE_CHECKING, Any

from redis.asyncio.client import Pipeline, Redis
from slack_bolt.context.ack.async_ack import AsyncAck
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from bot.cli import main as run_cli
from handlers import wire as product_wire

if TYPE_CHECKING:
    from starlette.applications import Starlette

    from bot.app import Runtime

HEADER = b"x-bench-interaction"


@dataclass
class Current:
    name: str
    acked: bool = False


_current: contextvars.ContextVar[Current | None] = contextvars.ContextVar(
    "bench_interaction", default=None
)
_log: IO[str] | None = None


def _note(commands: Sequence[Any]) -> None:
    if _log is None:
        return
    current = _current.get()
    _log.write(
        json.dumps(
            {
                "i": current.name if current else None,
                "acked": current.acked if current else None,
                "t": time.time(),
                "cmds": [_name(command) for command in commands],
            }
        )
        + "\n"
    )
    _log.flush()


def _name(command: Any) -> str:
    return (command.decode() if isinstance(command, bytes) else str(command)).upper()


def install(path: str) -> None:
    global _log
    _log = open(path, "a")  # noqa: SIM115 - open for the life of the process

    execute_command: Any = Redis.execute_command

    async def counted_command(self: Redis, *args: Any, **options: Any) -> Any:
        _note([args[0]])
        return await execute_command(self, *args, **options)

    execute = Pipeline.execute

    async def counted_pipeline(self: Pipeline, raise_on_error: bool = True) -> Any:
        stack = [command[0][0] for command in self.command_stack]
        if stack:
            _note(stack)
        return await execute(self, raise_on_error)

    call = AsyncAck.__call__

    async def marking_ack(self: AsyncAck, *args: Any, **kwargs: Any) -> Any:
        current = _current.get()
        if current is not None:
            current.acked = True
        return await call(self, *args, **kwargs)

    Redis.execute_command = counted_command  # type: ignore[method-assign]
    Pipeline.execute = counted_pipeline  # type: ignore[method-assign]
    AsyncAck.__call__ = marking_ack  # type: ignore[method-assign]


class Tagging:
    """ASGI middleware: the request's interaction name into the context."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        name = None
        if scope["type"] == "http":
            name = dict(scope["headers"]).get(HEADER)
        if name is None:
            await self.app(scope, receive, send)
            return
        current = Current(name.decode("latin-1"))
        token = _current.set(current)

        async def marking_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                current.acked = True  # answered (at the door, or when the listener acked)
            await send(message)

        try:
            await self.app(scope, receive, marking_send)
        finally:
            _current.reset(token)


def wire(
    runtime: Runtime, *, sweep_interval_seconds: float | None, orphan_check_seconds: float | None
) -> Starlette:
    web = product_wire(
        runtime,
        sweep_interval_seconds=sweep_interval_seconds,
        orphan_check_seconds=orphan_check_seconds,
    )
    return Tagging(web)  # type: ignore[return-value]  # any ASGI app serves


def main(argv: Sequence[str] | None = None) -> int:
    install(os.environ["BENCH_REDIS_LOG"])
    return run_cli(argv, wire=wire)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

"""Holding a call a sandbox received until the test says what becomes of it.

A test that needs a process to die at an exact point (after it has stored a transition, before
Slack has its message; after Microsoft answered, before the answer is stored) arms a ``Hold``
on the sandbox that call goes to. The first matching call waits there; the test awaits
``reached()``, does what it came to do (kill the caller: ``HeldCall.client`` is the caller's
address, from which the caller's process can be found), and then decides:

- ``release()``: the call goes on as if it had never been held: the sandbox carries it out (the
  process that sent it may be gone; its answer then goes nowhere);
- ``drop()``: the call is lost on the way: the sandbox does not carry it out and cuts the
  connection (as when the sender dies before its request has left the machine).

A hold catches one call and is spent. ``Holds.release_all`` lets every held call go (clean-up).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

__all__ = ["HeldCall", "Hold", "Holds"]


@dataclass(frozen=True)
class HeldCall:
    """A call a hold caught: ``service`` ("slack", "login", "graph", "exchange"), ``method``
    (a Slack Web API method, else the HTTP method), ``path``, ``params`` (the Slack arguments
    or the parsed body) and ``client``: the caller's (host, port), as the server saw it."""

    service: str
    method: str
    path: str
    params: Any
    client: tuple[str, int] | None


class Hold:
    """One armed hold: ``matches`` picks the call to catch."""

    def __init__(self, matches: Callable[[HeldCall], bool], what: str) -> None:
        self.matches = matches
        self.what = what
        self.call: HeldCall | None = None
        self._caught = asyncio.Event()
        self._decided = asyncio.Event()
        self._go_on = True

    @property
    def decided(self) -> bool:
        return self._decided.is_set()

    async def reached(self, timeout: float = 10.0) -> HeldCall:  # noqa: ASYNC109 - a deadline
        """The held call, once one has been caught (``TimeoutError`` naming the hold if not)."""
        try:
            async with asyncio.timeout(timeout):
                await self._caught.wait()
        except TimeoutError:
            raise TimeoutError(
                f"no call matching the hold {self.what!r} within {timeout}s"
            ) from None
        assert self.call is not None
        return self.call

    def release(self) -> None:
        """Let the held call (or the next one caught, if none yet) go on."""
        self._go_on = True
        self._decided.set()

    def drop(self) -> None:
        """Lose the held call: not carried out, its connection cut."""
        self._go_on = False
        self._decided.set()

    async def _hold(self, call: HeldCall) -> bool:
        """Called by the sandbox for the caught call: True to carry it out, False to drop it."""
        self.call = call
        self._caught.set()
        await self._decided.wait()
        return self._go_on


class Holds:
    """The holds armed on one sandbox, in the order they were armed."""

    def __init__(self) -> None:
        self._armed: list[Hold] = []
        self._spent: list[Hold] = []

    def arm(self, matches: Callable[[HeldCall], bool], what: str) -> Hold:
        hold = Hold(matches, what)
        self._armed.append(hold)
        return hold

    async def pass_through(self, call: HeldCall) -> bool:
        """Hold ``call`` if an armed hold matches it (until the test decides); True when the
        call is to be carried out, False when it is to be dropped."""
        for hold in self._armed:
            if hold.matches(call):
                self._armed.remove(hold)
                self._spent.append(hold)
                return await hold._hold(call)
        return True

    def release_all(self) -> None:
        """Disarm every hold and let every held call go on."""
        self._armed.clear()
        for hold in self._spent:
            if not hold.decided:
                hold.release()

"""What every step is to the rest of the bot, and the table that lists them.

A ``Step`` owns some phases of the workflow and one thread message (two for the consent step,
one per consent), which it updates in place as the session moves through its phases: the
prompt, whom it waits for, who did it. A working phase of it has a background job; a step that
sends people to Microsoft handles their redirect back. ``StepTable`` holds the four steps and
answers, for a phase, which step owns it, which steps a transition concerns and which job to
run. It is built once, by ``bot.steps.table.build_steps``,
and never changed afterwards.

Its own module, apart from ``bot/steps/__init__.py``: the steps' models are imported by
``bot.workflow``, which this module imports.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol, TypeVar

from bot.jobs import Runner
from bot.web import pages
from bot.workflow import TERMINAL, Phase, Scope, Session, Transition
from state.oauth import OAuthState

__all__ = ["AlreadyDone", "ReturnHandler", "Step", "StepTable"]

S = TypeVar("S")


class ReturnHandler(Protocol):
    """Answers Microsoft's redirect for a valid, unused state of an active session."""

    async def returned(
        self,
        session: Session,
        binding: OAuthState,
        params: Mapping[str, str],
        thread: str | None,
    ) -> pages.Page: ...


class Step(Protocol):
    @property
    def phases(self) -> frozenset[Phase]:
        """The phases in which this step is the one being worked on."""
        ...

    async def show(self, transition: Transition) -> None:
        """Bring the step's thread message up to date with ``transition``, which entered one
        of its phases (prompt, and whom it waits for) or left them (who did it, or that the
        session stopped). Of ``transition.before`` only the phase and ``root_ts`` may be read:
        delivered from the outbox, the rest of it is the session after."""
        ...

    @property
    def jobs(self) -> Mapping[Phase, Runner]:
        """The background work of its working phases (none for most steps)."""
        ...

    @property
    def returns(self) -> Mapping[str, ReturnHandler]:
        """OAuth state purpose → the handler of Microsoft's redirect back (none for most)."""
        ...


class AlreadyDone(Protocol):
    """The upgrade scope: a step already satisfied in Microsoft is recorded, not asked again."""

    @property
    def phases(self) -> frozenset[Phase]:
        """The phases whose step may already be done in an upgraded tenant."""
        ...

    async def record_if_done(self, session: Session) -> bool:
        """Record the step of ``session.phase`` if Microsoft shows it done (True), else False."""
        ...


@dataclass(frozen=True)
class StepTable:
    """The steps in the order of DESIGN §1, and the upgrade scope's shortcut through 1–3."""

    steps: tuple[Step, ...]
    upgrade: AlreadyDone

    def __post_init__(self) -> None:
        # Every phase a session can be in belongs to exactly one step.
        owned = [phase for step in self.steps for phase in step.phases]
        active = {phase for phase in Phase if phase not in TERMINAL}
        if sorted(owned) != sorted(active):
            raise ValueError(f"the steps must own each active phase once, not {owned}")

    def find(self, kind: type[S]) -> S:
        """The step of class ``kind`` (for the listeners that call it by name)."""
        return next(step for step in self.steps if isinstance(step, kind))

    def owner(self, phase: Phase) -> Step | None:
        """The step being worked on in ``phase`` (``None`` once the session has ended)."""
        return next((step for step in self.steps if phase in step.phases), None)

    async def show(self, transition: Transition) -> None:
        """The steps a transition concerns show it: the step it leaves (who did it), then the
        step it enters. In an upgrade, a step found done in Microsoft on entering is recorded
        instead of prompted (that transition shows it)."""
        before, after = transition.before, transition.after
        left = self.owner(before.phase)
        entered = self.owner(after.phase)
        if left is not None and left is not entered:
            await left.show(transition)
        if entered is None:
            return
        arrived = before.phase is not after.phase or before.root_ts is None  # or the thread opened
        if (
            arrived
            and after.scope is Scope.UPGRADE
            and after.phase in self.upgrade.phases
            and await self.upgrade.record_if_done(after)
        ):
            return
        await entered.show(transition)

    @property
    def jobs(self) -> Mapping[Phase, Runner]:
        return {phase: run for step in self.steps for phase, run in step.jobs.items()}

    @property
    def returns(self) -> Mapping[str, ReturnHandler]:
        return {purpose: h for step in self.steps for purpose, h in step.returns.items()}

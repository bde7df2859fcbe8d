"""The verification job (first half of step 4), run in the background when an admin clicks Verify.

It checks every grant with Microsoft (``bot.verify``), keeps one thread message up to date while
it waits for the role to replicate (up to 30 minutes), posts the outcome, and moves the session
on: to the change plan when everything passed, back to "verify" with the reasons otherwise.
Started again after a restart, it simply verifies again from the top.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from collections.abc import Awaitable, Callable, Mapping
from datetime import timedelta

from bot.blocks import Message
from bot.jobs import RESUME_WITHIN_SECONDS, Runner
from bot.microsoft.access import MicrosoftAccess
from bot.session.service import STEP_MESSAGE, Provisioner
from bot.steps.protocol import ReturnHandler
from bot.steps.verify.model import Verification, VerifyOutcome
from bot.steps.verify.ready import verify_until_ready
from bot.steps.verify.views import (
    ACTION_VERIFY,
    checking_message,
    checklist_message,
    progress_message,
    stopped_message,
    stopped_on_error_message,
    summary_message,
    verify_pressed,
    verify_prompt,
)
from bot.workflow import Event, EventKind, Phase, Session, Transition, TransitionNotAllowed

__all__ = ["VerificationJob"]

_MESSAGE = "verify"  # the step's one thread message

logger = logging.getLogger(__name__)


class VerificationJob:
    """Step 4, first half (the ``Step`` protocol): the Verify prompt and the verification job."""

    phases = frozenset({Phase.DIRECTORY_CONSENTED, Phase.VERIFYING})

    def __init__(
        self,
        *,
        provisioner: Provisioner,
        microsoft: MicrosoftAccess,
        limit: timedelta = timedelta(minutes=30),
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        """``sleep`` and ``monotonic`` pace the wait for the role to replicate (tests move the
        sandbox's clock instead); HTTP retries are stamina's, not paced by them."""
        self._provisioner = provisioner
        self._microsoft = microsoft
        self._sleep = sleep
        self._monotonic = monotonic
        self._limit = limit

    @property
    def jobs(self) -> Mapping[Phase, Runner]:
        return {Phase.VERIFYING: self.run}

    @property
    def returns(self) -> Mapping[str, ReturnHandler]:
        return {}

    async def show(self, transition: Transition) -> None:
        """The step's one message: the Verify button, then who pressed it and the checks as
        the job runs them (the job shows how they ended)."""
        after = transition.after
        event = transition.event
        if after.phase is Phase.DIRECTORY_CONSENTED:
            if event.kind is not EventKind.VERIFICATION_FAILED:  # (the job showed that)
                await self._show(after, verify_prompt(after))
        elif after.phase is Phase.VERIFYING:
            await self._show(after, checking_message(event.actor, event.at))
        elif not after.is_active:
            word = "expired" if after.phase is Phase.EXPIRED else "was cancelled"
            await self._show(after, stopped_message(word))

    async def _show(self, session: Session, message: Message) -> str:
        return await self._provisioner.show_step(session, _MESSAGE, message)

    async def run(self, session: Session) -> None:
        """Verify, show the outcome and move the session on; never leaves it stuck verifying."""
        try:
            await self._verify(session)
        except asyncio.CancelledError:
            raise  # shutting down: the lease is handed back and the job resumes elsewhere
        except Exception as error:
            reference = secrets.token_hex(4)
            logger.exception(
                "verification of session %s failed (reference %s)", session.id, reference
            )
            event = Event(
                EventKind.VERIFICATION_FAILED,
                "system",
                self._provisioner.now(),
                {
                    "outcome": "error",
                    "reason": "verification stopped on an unexpected error "
                    f"({type(error).__name__}, reference {reference}); press Verify to try again",
                },
            )
            with contextlib.suppress(TransitionNotAllowed):  # it moved on meanwhile
                moved = await self._provisioner.handle(session.id, event)
                # Someone has to act: say why in a message of its own, with Verify anew.
                await self._show(moved.after, stopped_on_error_message())
                await self._provisioner.post_in_thread(
                    moved.after, verify_prompt(moved.after, problem=event.detail["reason"])
                )

    async def _verify(self, session: Session) -> None:
        provisioner = self._provisioner
        context = self._microsoft.context(session.tenant_id)
        progress_ts = await self._start_progress(session)

        async def on_progress(
            attempt: int, elapsed: timedelta, next_in: timedelta, verification: Verification
        ) -> None:
            message = progress_message(
                attempt,
                elapsed,
                next_in,
                verification,
                resumes_within=timedelta(seconds=RESUME_WITHIN_SECONDS),
                limit=self._limit,
            )
            await self._edit(session, progress_ts, message)

        outcome = await verify_until_ready(
            context,
            limit=self._limit,
            sleep=self._sleep,
            clock=self._monotonic,
            on_progress=on_progress,
        )
        pressed = session.last(EventKind.VERIFY)
        if outcome.ready:
            done = summary_message(outcome)
            if pressed is not None:
                done = Message(done.text, [*done.blocks, verify_pressed(pressed.actor, pressed.at)])
            await self._edit(session, progress_ts, done)
        else:
            await self._edit(session, progress_ts, checklist_message(outcome.verification))
            # A failure needs someone to act: a message of its own, with Verify again.
            await provisioner.post_in_thread(
                session,
                summary_message(
                    outcome, verify_again_action_id=ACTION_VERIFY, verify_again_value=session.id
                ),
            )
        await self._conclude(session, outcome)

    async def _start_progress(self, session: Session) -> str:
        """The step's message, which this run keeps editing (also when the job restarts)."""
        existing = await self._provisioner.kept(session, _MESSAGE, STEP_MESSAGE)
        if existing:
            return existing
        pressed = session.last(EventKind.VERIFY)
        actor, at = (pressed.actor, pressed.at) if pressed else ("system", session.updated_at)
        return await self._show(session, checking_message(actor, at))

    async def _edit(self, session: Session, ts: str, message: Message) -> None:
        await self._provisioner.edit(session, ts, message)

    async def _conclude(self, session: Session, outcome: VerifyOutcome) -> None:
        provisioner = self._provisioner
        verification = outcome.verification
        if outcome.ready:
            detail = {"initial_domain": verification.initial_domain or ""}
            event = Event(EventKind.VERIFICATION_PASSED, "system", provisioner.now(), detail)
        else:
            reasons = "; ".join(check.reason for check in verification.failures)[:500]
            event = Event(
                EventKind.VERIFICATION_FAILED,
                "system",
                provisioner.now(),
                {"outcome": outcome.outcome.value, "reason": reasons},
            )
        try:
            await provisioner.handle(session.id, event)
        except TransitionNotAllowed:
            # Cancelled (or expired) while we were checking: nothing more to do.
            logger.info("verification of session %s finished after it moved on", session.id)

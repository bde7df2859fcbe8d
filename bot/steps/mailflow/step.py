"""The second half of step 4: show the change plan, take Submit, apply it, announce the result.

- ``show_plan`` (the prompter of ``PLAN_SHOWN``, and *Check again*): reads the tenant (nothing is
  changed), chooses the protected domains, runs the pre-flight checks and posts the checklist,
  the plan and the Submit / Check again message in the thread;
- ``acknowledge`` and ``submit``: an admin acknowledges the warnings, then submits; Submit is
  refused while blocking findings exist (with their fixes) or warnings are not acknowledged;
- ``run`` (the job of ``APPLYING``): applies the plan through ``bot.steps.mailflow.apply``,
  editing one progress message; it re-reads and re-plans every time, so a retry or a resumed
  job after a crash never duplicates anything. The outcome moves the session to ``PROTECTED``
  (whose effects refresh the root checklist and post the notification) or ``FAILED`` (with a
  Retry button).

What the admin saw is ``Session.plan`` (recorded by the ``PLAN_READ`` self-transition), so
Submit on any replica checks the same findings under the compare-and-set, two acknowledgements
give one, and the apply job protects exactly the domains the plan showed.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from bot.blocks import Message, mention, when
from bot.blocks import section as _section
from bot.jobs import Runner
from bot.microsoft.access import MicrosoftAccess, VerifyContext
from bot.microsoft.errors import MicrosoftError
from bot.microsoft.exchange import ExchangeClient
from bot.microsoft.model import Domain
from bot.session.service import Provisioner
from bot.session.views import notice
from bot.steps.mailflow.apply import ApplyBlocked, ApplyFailed, apply, read_current
from bot.steps.mailflow.desired import (
    FULL,
    UPGRADE,
    DesiredConfiguration,
    desired_configuration,
    tenant_route_key,
)
from bot.steps.mailflow.model import Blocker, DomainChoice, PlanState, choose_domains
from bot.steps.mailflow.plan import Change, Plan, plan
from bot.steps.mailflow.preflight import Finding, blocking, preflight, warnings
from bot.steps.mailflow.views import (
    ACTION_ACKNOWLEDGE,
    ACTION_RETRY,
    decision_message,
    domains_message,
    failure_message,
    plan_message,
    preflight_message,
    progress_message,
    submit_refused_message,
    summary_message,
    survey_failed_message,
    with_button_value,
)
from bot.steps.protocol import ReturnHandler
from bot.workflow import (
    Event,
    EventKind,
    Phase,
    Scope,
    Session,
    Transition,
    TransitionNotAllowed,
    TransitionRefused,
    Why,
)

__all__ = ["MailFlowDesk", "Survey"]

logger = logging.getLogger(__name__)

DECISION = "mailflow_decision"  # the Submit / Check again message, kept under the plan's version
_MAX_BLOCKS = 50  # Slack's limit per message
_MAX_TEXT = 3900


@dataclass(frozen=True)
class Survey:
    """The tenant as read for the plan: nothing in it has been changed."""

    initial_domain: str
    domains: DomainChoice
    desired: DesiredConfiguration
    findings: tuple[Finding, ...]
    plan: Plan


def _initial_domain(listed: Iterable[Domain]) -> str:
    """The tenant's initial (onmicrosoft.com) domain among Graph's ``/domains`` ("" if none)."""
    domains = list(listed)
    return next((d.name for d in domains if d.is_initial), None) or next(
        (d.name for d in domains if d.name.casefold().endswith(".onmicrosoft.com")), ""
    )


def _fingerprint(findings: tuple[Finding, ...]) -> str:
    if not findings:
        return ""
    joined = "\n".join(sorted(f"{f.check}:{f.title}" for f in findings))
    return hashlib.sha256(joined.encode()).hexdigest()[:16]


class MailFlowDesk:
    """Step 4, second half (the ``Step`` protocol): the plan, Submit, and the apply job."""

    phases = frozenset({Phase.PLAN_SHOWN, Phase.APPLYING, Phase.FAILED})

    def __init__(
        self,
        *,
        provisioner: Provisioner,
        microsoft: MicrosoftAccess,
    ) -> None:
        self._provisioner = provisioner
        self._microsoft = microsoft
        self._settings = microsoft.settings

    @property
    def jobs(self) -> Mapping[Phase, Runner]:
        return {Phase.APPLYING: self.run}

    @property
    def returns(self) -> Mapping[str, ReturnHandler]:
        return {}

    async def show(self, transition: Transition) -> None:
        """Entering the plan: read the tenant and show it; the warnings acknowledged: say so
        in the Submit message. Submit and the job edit the Submit message themselves (it
        becomes the progress of applying)."""
        if transition.event.kind is EventKind.WARNINGS_ACKNOWLEDGE:
            await self._update_decision(transition.after, acknowledged_by=transition.event.actor)
        elif transition.after.phase is Phase.PLAN_SHOWN and transition.before.phase is not (
            Phase.PLAN_SHOWN
        ):
            # Verification has just read the initial domain: the plan's reads need not wait for it.
            known = transition.event.detail.get("initial_domain") or None
            await self.show_plan(transition.after, initial_domain=known)

    # -- reading the tenant ------------------------------------------------------------------

    def _context(self, session: Session) -> VerifyContext:
        return self._microsoft.context(session.tenant_id)

    def _desired(self, session: Session, domains: tuple[str, ...]) -> DesiredConfiguration:
        directions = UPGRADE if session.scope is Scope.UPGRADE else FULL
        route_key = tenant_route_key(self._settings, session.tenant_id)
        return desired_configuration(
            self._settings.inline, directions, domains, route_key=route_key
        )

    async def survey(
        self, session: Session, *, initial_domain: str | None = None
    ) -> tuple[Survey, ExchangeClient]:
        """Read the tenant (Graph for its domains, Exchange for its mail flow); change nothing.

        With the tenant's ``initial_domain`` known (Exchange is addressed through it), Graph and
        Exchange are read side by side; without it, Exchange once Graph has named it. Both are
        read afresh either way: the plan shows the tenant as it is now.
        """
        context = self._context(session)
        prefix = self._settings.inline.name_prefix
        if initial_domain:
            exchange = context.exchange(initial_domain)
            try:
                async with asyncio.TaskGroup() as group:
                    listing = group.create_task(context.graph.domains())
                    reading = group.create_task(read_current(exchange, prefix))
            except ExceptionGroup as failed:  # the first error, as the sequential reads raise it
                raise failed.exceptions[0] from failed
            listed, current = listing.result(), reading.result()
            initial = _initial_domain(listed) or initial_domain
            if initial.casefold() != initial_domain.casefold():
                # Not what verification read (it cannot change in Microsoft 365): read again.
                logger.warning("tenant %s names another initial domain now", session.tenant_id)
                exchange = context.exchange(initial)
                current = await read_current(exchange, prefix)
        else:
            listed = await context.graph.domains()
            initial = _initial_domain(listed)
            exchange = context.exchange(initial)
            current = await read_current(exchange, prefix)
        choice = choose_domains(
            ((d.name, d.is_verified, d.is_initial) for d in listed),
            (a.domain for a in current.accepted_domains),
        )
        desired = self._desired(session, choice.chosen)
        findings = preflight(desired, current)
        return Survey(initial, choice, desired, findings, plan(desired, current)), exchange

    # -- PLAN_SHOWN ----------------------------------------------------------------------------

    async def show_plan(self, session: Session, *, initial_domain: str | None = None) -> None:
        """Post the domains, the pre-flight checklist, the plan and the Submit message
        (``initial_domain``: the tenant's, when already known)."""
        provisioner = self._provisioner
        try:
            survey, _ = await self.survey(session, initial_domain=initial_domain)
        except MicrosoftError as error:
            logger.warning("could not read tenant %s for the plan: %s", session.tenant_id, error)
            unread = PlanState(
                blockers=(Blocker("Exchange Online could not be read", "Press Check again."),)
            )
            if await self._record_plan(session, unread, {"reason": type(error).__name__}):
                await provisioner.post_in_thread(
                    session, survey_failed_message(session, f"{type(error).__name__}.")
                )
            return
        blockers = blocking(survey.findings)
        warned = warnings(survey.findings)
        shown = PlanState(
            domains=survey.domains.chosen,
            initial_domain=survey.initial_domain,
            blockers=tuple(Blocker(f.title, f.fix) for f in blockers),
            warnings_fingerprint=_fingerprint(warned),
            warning_count=len(warned),
            changes=len(survey.plan.actionable),
        )
        detail = {
            "domains": ",".join(survey.domains.chosen),
            "changes": str(len(survey.plan.actionable)),
            "warnings": str(len(warned)),
            "blocking": str(len(blockers)),
        }
        recorded = await self._record_plan(session, shown, detail)
        if recorded is None:
            return
        domains = domains_message(recorded, survey.domains)
        checklist = with_button_value(
            preflight_message(survey.findings), ACTION_ACKNOWLEDGE, recorded.id
        )
        # One message: which domains the plan protects, and what the checks found there.
        together = [*domains.blocks, *checklist.blocks]
        if len(together) <= _MAX_BLOCKS:
            text = f"{domains.text}\n{checklist.text}"
            await provisioner.post_in_thread(recorded, Message(text[:_MAX_TEXT], together))
        else:
            await provisioner.post_in_thread(recorded, domains)
            await provisioner.post_in_thread(recorded, checklist)
        await provisioner.post_in_thread(recorded, plan_message(survey.plan))
        plan_state = recorded.plan
        decision = decision_message(
            recorded,
            changes=len(survey.plan.actionable),
            blockers=blockers,
            warnings=len(warned),
            acknowledged_by=plan_state.acknowledged_by if plan_state else None,
        )
        await provisioner.post_kept(recorded, DECISION, decision)

    async def _record_plan(
        self, session: Session, shown: PlanState, detail: dict[str, str]
    ) -> Session | None:
        """Store what is about to be shown (``None`` if the session moved on meanwhile)."""
        provisioner = self._provisioner
        event = Event(EventKind.PLAN_READ, "system", provisioner.now(), detail, shown)
        try:
            return (await provisioner.handle(session.id, event)).after
        except TransitionNotAllowed:
            logger.info("plan of session %s read after it moved on", session.id)
            return None

    async def check_again(self, session_id: str, user_id: str) -> Message | None:
        """Re-read the tenant and show the checks and the plan again (``None``: done)."""
        session = await self._provisioner.store.require(session_id)
        if session.phase is not Phase.PLAN_SHOWN:
            return notice("The plan is no longer waiting for Submit, so there is nothing to check.")
        await self._provisioner.store.record(
            session_id, actor=user_id, action="plan_check_again", result="ok"
        )
        shown = session.plan
        await self.show_plan(session, initial_domain=shown.initial_domain if shown else None)
        return None

    async def acknowledge(self, session_id: str, user_id: str) -> Message | None:
        """Record an admin's acknowledgement of the warnings last shown (one, however many
        admins click at once: the guard runs under the compare-and-set)."""
        provisioner = self._provisioner
        session = await provisioner.store.require(session_id)
        if session.phase is not Phase.PLAN_SHOWN:
            return notice("The plan is no longer waiting for Submit: nothing to acknowledge.")
        plan_state = session.plan
        detail = {
            "warnings": str(plan_state.warning_count if plan_state else 0),
            "fingerprint": plan_state.warnings_fingerprint if plan_state else "",
        }
        # Shown through the outbox (``show``), after the plan's own messages.
        await provisioner.handle(
            session_id,
            Event(EventKind.WARNINGS_ACKNOWLEDGE, user_id, provisioner.now(), detail),
        )
        return None

    async def _update_decision(self, session: Session, *, acknowledged_by: str) -> None:
        plan_state = session.plan
        if plan_state is None:
            return
        ts = await self._provisioner.kept(session, DECISION, plan_state.shown_in)
        if not ts:
            return
        decision = decision_message(
            session,
            changes=plan_state.changes,
            blockers=(),
            warnings=plan_state.warning_count,
            acknowledged_by=acknowledged_by,
        )
        await self._provisioner.edit(session, ts, decision)

    async def submit(self, session_id: str, user_id: str) -> Message | None:
        """Move to APPLYING if nothing blocks and the warnings are acknowledged (checked by the
        transition's guard, on the record the compare-and-set stores).

        Returns what to tell the admin when Submit is refused (``None`` when it went ahead).
        Raises ``TransitionNotAllowed`` when the session is not waiting for Submit.
        """
        provisioner = self._provisioner
        session = await provisioner.store.require(session_id)
        plan_state = session.plan
        detail: dict[str, str] = {}
        if plan_state is not None and plan_state.acknowledged_by:
            detail = {
                "warnings": str(plan_state.warning_count),
                "warnings_acknowledged_by": plan_state.acknowledged_by,
            }
        try:
            await provisioner.handle(
                session_id, Event(EventKind.SUBMIT, user_id, provisioner.now(), detail)
            )
        except TransitionRefused as refused:
            shown = refused.session.plan
            if refused.why is Why.BLOCKED and shown is not None:
                refusal = submit_refused_message(
                    blockers=[(b.title, b.fix) for b in shown.blockers]
                )
            elif refused.why is Why.WARNINGS_PENDING and shown is not None:
                refusal = submit_refused_message(warnings_pending=shown.warning_count)
            else:
                raise
            await provisioner.store.record(
                session_id,
                actor=user_id,
                action="submit_refused",
                result="blocked" if refused.why is Why.BLOCKED else "warnings_not_acknowledged",
            )
            return refusal
        # The job edits the Submit message into its progress, saying who submitted.
        return None

    # -- APPLYING (background job) -------------------------------------------------------------

    async def run(self, session: Session) -> None:
        """Apply the plan; conclude with APPLY_SUCCEEDED or APPLY_FAILED. Safe to run again."""
        provisioner = self._provisioner
        progress_ts = await self._start_progress(session)

        async def show(message: Message) -> None:
            await provisioner.edit(session, progress_ts, self._submitted(session, message))

        async def on_progress(done: int, total: int, change: Change) -> None:
            await show(progress_message(done, total, change))

        try:
            shown = session.plan
            if shown is None or not shown.initial_domain:
                survey, exchange = await self.survey(session)
                desired = survey.desired
            else:
                exchange = self._context(session).exchange(shown.initial_domain)
                desired = self._desired(session, shown.domains)
            result = await apply(exchange, desired, on_progress=on_progress)
        except ApplyBlocked as blocked:
            await show(notice(":no_entry: Stopped before any change: pre-flight found a blocker."))
            await provisioner.post_in_thread(
                session, preflight_message(blocked.findings, acknowledge_action_id=None)
            )
            failed = ApplyFailed(None, "Blocked", "; ".join(f.title for f in blocked.blocking), ())
            await self._failed(session, failed)
            return
        except ApplyFailed as failed:
            await show(notice(f":x: Stopped after {len(failed.applied)} change(s) applied."))
            await self._failed(session, failed)
            return
        except MicrosoftError as error:
            await show(notice(":x: Stopped: Microsoft could not be reached."))
            await self._failed(session, ApplyFailed(None, "Unavailable", str(error), ()))
            return
        except Exception as error:
            logger.exception("applying the plan of session %s failed", session.id)
            await self._failed(session, ApplyFailed(None, "Unexpected", type(error).__name__, ()))
            return
        total = len(result.applied)
        await show(progress_message(total, total))
        # Once per apply run, however often a kill makes the job resume.
        await provisioner.show_step(
            session, "apply-summary", summary_message(result), version=session.version
        )
        detail = {
            "created": str(len(result.created)),
            "updated": str(len(result.updated)),
            "in_place": str(len(result.plan.left_alone)),
        }
        await self._conclude(session, Event(EventKind.APPLY_SUCCEEDED, "system", 0.0, detail))

    async def _start_progress(self, session: Session) -> str:
        """The Submit message, which this run edits into its progress (the same one when a
        resumed job or a Retry runs again)."""
        provisioner = self._provisioner
        plan_state = session.plan
        existing = (
            await provisioner.kept(session, DECISION, plan_state.shown_in) if plan_state else None
        ) or await provisioner.kept(session, "apply")
        resumed = session.last(EventKind.RETRY) is not None or existing == await provisioner.kept(
            session, "apply"
        )
        text = (
            ":arrows_counterclockwise: Reading the tenant again and continuing…"
            if resumed
            else ":hourglass_flowing_sand: Reading the tenant's Exchange Online configuration…"
        )
        message = self._submitted(session, notice(text))
        if existing:
            await provisioner.edit(session, existing, message)
            return existing
        return await provisioner.post_kept(session, "apply", message)

    def _submitted(self, session: Session, progress: Message) -> Message:
        """``progress`` under who submitted the plan (and who retried it)."""
        lines = []
        submitted = session.last(EventKind.SUBMIT)
        if submitted is not None:
            lines.append(
                f":rocket: {mention(submitted.actor)} submitted the change plan "
                f"{when(submitted.at)}."
            )
        retried = session.last(EventKind.RETRY)
        if retried is not None:
            lines.append(f"{mention(retried.actor)} pressed Retry {when(retried.at)}.")
        if not lines:
            return progress
        head = " ".join(lines)
        return Message(f"{head} {progress.text}", [_section(head), *progress.blocks])

    async def _failed(self, session: Session, failed: ApplyFailed) -> None:
        await self._provisioner.show_step(
            session,
            "apply-failure",
            failure_message(failed, retry_action_id=ACTION_RETRY, retry_value=session.id),
            version=session.version,
        )
        detail = {"code": failed.code, "reason": failed.message[:300]}
        if failed.change is not None:
            detail["change"] = failed.change.describe()[:200]
        await self._conclude(session, Event(EventKind.APPLY_FAILED, "system", 0.0, detail))

    async def _conclude(self, session: Session, event: Event) -> None:
        provisioner = self._provisioner
        stamped = Event(event.kind, event.actor, provisioner.now(), event.detail)
        try:
            await provisioner.handle(session.id, stamped)
        except TransitionNotAllowed:
            logger.info("apply of session %s finished after it moved on", session.id)

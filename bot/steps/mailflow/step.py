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

What the admin saw is remembered in the session's refs (Redis), so Submit on any replica checks
the same findings, and the apply job protects exactly the domains the plan showed.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass

from bot.blocks import Message
from bot.microsoft.access import MicrosoftAccess, VerifyContext
from bot.microsoft.errors import MicrosoftError
from bot.microsoft.exchange import ExchangeClient
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
from bot.steps.mailflow.model import DomainChoice, choose_domains
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
from bot.workflow import Event, EventKind, Phase, Scope, Session, TransitionNotAllowed

__all__ = ["MailFlowDesk", "Survey"]

logger = logging.getLogger(__name__)

REF_DOMAINS = "mailflow:domains"
REF_INITIAL_DOMAIN = "mailflow:initial_domain"
REF_BLOCKERS = "mailflow:blockers"  # JSON [[title, fix], …] of the plan last shown
REF_WARNINGS = "mailflow:warnings"  # fingerprint of the warnings last shown ("" when none)
REF_WARNING_COUNT = "mailflow:warning_count"
REF_CHANGES = "mailflow:changes"
REF_ACKNOWLEDGED = "mailflow:acknowledged"  # "<fingerprint> <user id>"
REF_DECISION = "mailflow:decision"  # ts of the Submit / Check again message


@dataclass(frozen=True)
class Survey:
    """The tenant as read for the plan: nothing in it has been changed."""

    initial_domain: str
    domains: DomainChoice
    desired: DesiredConfiguration
    findings: tuple[Finding, ...]
    plan: Plan


def _fingerprint(findings: tuple[Finding, ...]) -> str:
    if not findings:
        return ""
    joined = "\n".join(sorted(f"{f.check}:{f.title}" for f in findings))
    return hashlib.sha256(joined.encode()).hexdigest()[:16]


class MailFlowDesk:
    def __init__(
        self,
        *,
        provisioner: Provisioner,
        microsoft: MicrosoftAccess,
    ) -> None:
        self._provisioner = provisioner
        self._microsoft = microsoft
        self._settings = microsoft.settings

    # -- reading the tenant ------------------------------------------------------------------

    def _context(self, session: Session) -> VerifyContext:
        return self._microsoft.context(session.tenant_id)

    def _desired(self, session: Session, domains: tuple[str, ...]) -> DesiredConfiguration:
        directions = UPGRADE if session.scope is Scope.UPGRADE else FULL
        route_key = tenant_route_key(self._settings, session.tenant_id)
        return desired_configuration(
            self._settings.inline, directions, domains, route_key=route_key
        )

    async def survey(self, session: Session) -> tuple[Survey, ExchangeClient]:
        """Read the tenant (Graph for its domains, Exchange for its mail flow); change nothing."""
        context = self._context(session)
        listed = await context.graph.domains()
        initial = next((d.name for d in listed if d.is_initial), None) or next(
            (d.name for d in listed if d.name.casefold().endswith(".onmicrosoft.com")), ""
        )
        exchange = context.exchange(initial)
        current = await read_current(exchange, self._settings.inline.name_prefix)
        choice = choose_domains(
            ((d.name, d.is_verified, d.is_initial) for d in listed),
            (a.domain for a in current.accepted_domains),
        )
        desired = self._desired(session, choice.chosen)
        findings = preflight(desired, current)
        return Survey(initial, choice, desired, findings, plan(desired, current)), exchange

    # -- PLAN_SHOWN ----------------------------------------------------------------------------

    async def show_plan(self, session: Session) -> None:
        """Post the domains, the pre-flight checklist, the plan and the Submit message."""
        provisioner = self._provisioner
        store = provisioner.store
        try:
            survey, _ = await self.survey(session)
        except MicrosoftError as error:
            logger.warning("could not read tenant %s for the plan: %s", session.tenant_id, error)
            await store.set_ref(
                session.id,
                REF_BLOCKERS,
                json.dumps([["Exchange Online could not be read", "Press Check again."]]),
            )
            await provisioner.post_in_thread(
                session, survey_failed_message(session, f"{type(error).__name__}.")
            )
            return
        blockers = blocking(survey.findings)
        warned = warnings(survey.findings)
        fingerprint = _fingerprint(warned)
        await store.set_ref(session.id, REF_DOMAINS, ",".join(survey.domains.chosen))
        await store.set_ref(session.id, REF_INITIAL_DOMAIN, survey.initial_domain)
        await store.set_ref(
            session.id, REF_BLOCKERS, json.dumps([[f.title, f.fix] for f in blockers])
        )
        await store.set_ref(session.id, REF_WARNINGS, fingerprint)
        await store.set_ref(session.id, REF_WARNING_COUNT, str(len(warned)))
        await store.set_ref(session.id, REF_CHANGES, str(len(survey.plan.actionable)))
        await store.record(
            session.id,
            actor="system",
            action="plan_shown",
            result="blocked" if blockers else "ok",
            detail={
                "domains": ",".join(survey.domains.chosen),
                "changes": str(len(survey.plan.actionable)),
                "warnings": str(len(warned)),
                "blocking": str(len(blockers)),
            },
        )
        acknowledged = await self._acknowledged_by(session.id, fingerprint)
        await provisioner.post_in_thread(session, domains_message(session, survey.domains))
        checklist = preflight_message(survey.findings)
        await provisioner.post_in_thread(
            session, with_button_value(checklist, ACTION_ACKNOWLEDGE, session.id)
        )
        await provisioner.post_in_thread(session, plan_message(survey.plan))
        decision = decision_message(
            session,
            changes=len(survey.plan.actionable),
            blockers=blockers,
            warnings=len(warned),
            acknowledged_by=acknowledged,
        )
        posted = await provisioner.slack.chat_postMessage(
            channel=session.channel_id,
            thread_ts=session.root_ts,
            text=decision.text,
            blocks=decision.blocks,
        )
        await store.set_ref(session.id, REF_DECISION, str(posted["ts"]))

    async def check_again(self, session_id: str, user_id: str) -> Message | None:
        """Re-read the tenant and show the checks and the plan again (``None``: done)."""
        session = await self._provisioner.store.require(session_id)
        if session.phase is not Phase.PLAN_SHOWN:
            return notice("The plan is no longer waiting for Submit, so there is nothing to check.")
        await self._provisioner.store.record(
            session_id, actor=user_id, action="plan_check_again", result="ok"
        )
        await self.show_plan(session)
        return None

    async def _acknowledged_by(self, session_id: str, fingerprint: str) -> str | None:
        if not fingerprint:
            return None
        stored = await self._provisioner.store.get_ref(session_id, REF_ACKNOWLEDGED)
        if not stored:
            return None
        print_, _, user = stored.partition(" ")
        return user if print_ == fingerprint and user else None

    async def acknowledge(self, session_id: str, user_id: str) -> Message | None:
        """Record an admin's acknowledgement of the warnings last shown."""
        provisioner = self._provisioner
        store = provisioner.store
        session = await store.require(session_id)
        if session.phase is not Phase.PLAN_SHOWN:
            return notice("The plan is no longer waiting for Submit: nothing to acknowledge.")
        fingerprint = await store.get_ref(session_id, REF_WARNINGS) or ""
        if not fingerprint:
            return notice("There are no warnings to acknowledge.")
        already = await self._acknowledged_by(session_id, fingerprint)
        if already:
            return notice(f"Already acknowledged by <@{already}>. Nothing was changed.")
        await store.set_ref(session_id, REF_ACKNOWLEDGED, f"{fingerprint} {user_id}")
        count = int(await store.get_ref(session_id, REF_WARNING_COUNT) or "0")
        await store.record(
            session_id,
            actor=user_id,
            action="warnings_acknowledged",
            result="ok",
            detail={"warnings": str(count), "fingerprint": fingerprint},
        )
        await self._update_decision(session, acknowledged_by=user_id)
        return None

    async def _update_decision(
        self,
        session: Session,
        *,
        acknowledged_by: str | None = None,
        submitted_by: str | None = None,
    ) -> None:
        store = self._provisioner.store
        ts = await store.get_ref(session.id, REF_DECISION)
        if not ts:
            return
        decision = decision_message(
            session,
            changes=int(await store.get_ref(session.id, REF_CHANGES) or "0"),
            blockers=(),
            warnings=int(await store.get_ref(session.id, REF_WARNING_COUNT) or "0"),
            acknowledged_by=acknowledged_by,
            submitted_by=submitted_by,
            submitted_at=self._provisioner.now() if submitted_by else None,
        )
        await self._provisioner.slack.chat_update(
            channel=session.channel_id, ts=ts, text=decision.text, blocks=decision.blocks
        )

    async def submit(self, session_id: str, user_id: str) -> Message | None:
        """Move to APPLYING if nothing blocks and the warnings are acknowledged.

        Returns what to tell the admin when Submit is refused (``None`` when it went ahead).
        Raises ``TransitionNotAllowed`` when the session is not waiting for Submit.
        """
        provisioner = self._provisioner
        store = provisioner.store
        session = await store.require(session_id)
        detail: dict[str, str] = {}
        if session.phase is Phase.PLAN_SHOWN:
            blockers = json.loads(await store.get_ref(session_id, REF_BLOCKERS) or "[]")
            fingerprint = await store.get_ref(session_id, REF_WARNINGS) or ""
            count = int(await store.get_ref(session_id, REF_WARNING_COUNT) or "0")
            acknowledged = await self._acknowledged_by(session_id, fingerprint)
            refusal: Message | None = None
            if blockers:
                refusal = submit_refused_message(blockers=[(t, f) for t, f in blockers])
            elif fingerprint and not acknowledged:
                refusal = submit_refused_message(warnings_pending=count)
            if refusal is not None:
                await store.record(
                    session_id,
                    actor=user_id,
                    action="submit_refused",
                    result="blocked" if blockers else "warnings_not_acknowledged",
                )
                return refusal
            if acknowledged:
                detail = {"warnings": str(count), "warnings_acknowledged_by": acknowledged}
        transition = await provisioner.handle(
            session_id, Event(EventKind.SUBMIT, user_id, provisioner.now(), detail)
        )
        await self._update_decision(transition.after, submitted_by=user_id)
        return None

    # -- APPLYING (background job) -------------------------------------------------------------

    async def run(self, session: Session) -> None:
        """Apply the plan; conclude with APPLY_SUCCEEDED or APPLY_FAILED. Safe to run again."""
        provisioner = self._provisioner
        store = provisioner.store
        progress_ts = await self._start_progress(session)

        async def show(message: Message) -> None:
            await provisioner.slack.chat_update(
                channel=session.channel_id, ts=progress_ts, text=message.text, blocks=message.blocks
            )

        async def on_progress(done: int, total: int, change: Change) -> None:
            await show(progress_message(done, total, change))

        try:
            stored = await store.get_ref(session.id, REF_DOMAINS)
            initial = await store.get_ref(session.id, REF_INITIAL_DOMAIN)
            if stored is None or not initial:
                survey, exchange = await self.survey(session)
                desired = survey.desired
            else:
                domains = tuple(d for d in stored.split(",") if d)
                exchange = self._context(session).exchange(initial)
                desired = self._desired(session, domains)
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
        await provisioner.post_in_thread(session, summary_message(result))
        detail = {
            "created": str(len(result.created)),
            "updated": str(len(result.updated)),
            "in_place": str(len(result.plan.left_alone)),
        }
        await self._conclude(session, Event(EventKind.APPLY_SUCCEEDED, "system", 0.0, detail))

    async def _start_progress(self, session: Session) -> str:
        """The one thread message this run edits (the same one when a resumed job runs again)."""
        store = self._provisioner.store
        name = f"apply:{session.version}"
        existing = await store.get_ref(session.id, name)
        text = ":hourglass_flowing_sand: Reading the tenant's Exchange Online configuration…"
        if existing:
            text = ":arrows_counterclockwise: Resumed: reading the tenant again and continuing…"
            await self._provisioner.slack.chat_update(
                channel=session.channel_id,
                ts=existing,
                text=text,
                blocks=[{"type": "section", "text": {"type": "mrkdwn", "text": text}}],
            )
            return existing
        posted = await self._provisioner.slack.chat_postMessage(
            channel=session.channel_id,
            thread_ts=session.root_ts,
            text=text,
            blocks=[{"type": "section", "text": {"type": "mrkdwn", "text": text}}],
        )
        ts = str(posted["ts"])
        await store.set_ref(session.id, name, ts)
        return ts

    async def _failed(self, session: Session, failed: ApplyFailed) -> None:
        await self._provisioner.post_in_thread(
            session, failure_message(failed, retry_action_id=ACTION_RETRY, retry_value=session.id)
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

"""Steps 1 and 3 end to end: the link's click, its renewal, and Microsoft's redirect back.

``ConsentDesk.returned`` reads Microsoft's answer to a consent (``error`` before
``admin_consent``), checks the tenant against the one bound to the state, confirms the grant with
Microsoft itself (``bot.steps.consent.confirm``: a redirect alone proves nothing), records the
step (or explains why not, in the thread) and returns the page the browser shows. The state
itself was taken by ``bot.web.callback.MicrosoftReturns``.

Microsoft's redirect names no person: the step is recorded as done by "a Global Administrator
of the tenant" (``TENANT_GLOBAL_ADMIN``); the admin who clicked the link in Slack, if one did,
is kept beside it (``clicked_by``), never as the actor.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

from bot.actors import TENANT_GLOBAL_ADMIN
from bot.blocks import Message
from bot.jobs import Runner
from bot.session.service import Provisioner
from bot.session.views import notice
from bot.steps.consent.confirm import ConfirmConsent, NotConfirmed
from bot.steps.consent.model import (
    CONSENT_EVENT,
    CONSENT_FOR_PHASE,
    ConsentApp,
    ConsentGranted,
    ConsentRefused,
    ConsentTargets,
    read_consent_redirect,
)
from bot.steps.consent.views import (
    consent_app_title,
    consent_done,
    consent_not_confirmed,
    consent_problem,
    consent_prompt,
    consent_stopped,
)
from bot.web import pages
from bot.workflow import Event, EventKind, Phase, Session, Transition, TransitionNotAllowed
from state.oauth import OAuthState

__all__ = ["ConsentDesk"]

logger = logging.getLogger(__name__)


class ConsentDesk:
    """Steps 1 and 3 (the ``Step`` protocol): a consent link, and Microsoft's redirect back."""

    phases = frozenset(CONSENT_FOR_PHASE)

    def __init__(
        self, provisioner: Provisioner, targets: ConsentTargets, confirm: ConfirmConsent
    ) -> None:
        self._provisioner = provisioner
        self._confirm = confirm
        self._oauth = provisioner.oauth
        self._store = provisioner.store
        self._targets = targets

    @property
    def jobs(self) -> Mapping[Phase, Runner]:
        return {}

    @property
    def returns(self) -> Mapping[str, ConsentDesk]:
        return {app.value: self for app in ConsentApp}

    async def show(self, transition: Transition) -> None:
        """Entering step 1 or 3: its message with a fresh link. Leaving it: who consented (a
        Global Administrator: Microsoft's redirect does not say who), or that it stopped."""
        after = transition.after
        app = CONSENT_FOR_PHASE.get(after.phase)
        if app is not None:
            await self._show(after, app, await self.consent_prompt(after, app))
            return
        left = CONSENT_FOR_PHASE[transition.before.phase]
        event = transition.event
        if event.kind is CONSENT_EVENT[left]:
            done = consent_done(
                after,
                left.value,
                by=event.actor,
                at=event.at,
                clicked_by=event.detail.get("clicked_by"),
            )
            await self._show(after, left, done)
        else:
            await self._show(after, left, consent_stopped(after, left.value, phase=after.phase))

    async def _show(self, session: Session, app: ConsentApp, message: Message) -> None:
        await self._provisioner.show_step(session, f"consent_{app.value}", message)

    async def consent_prompt(self, session: Session, app: ConsentApp) -> Message:
        """A consent step message with a fresh single-use link."""
        now = self._provisioner.now()
        state = await self._oauth.issue(
            session_id=session.id, tenant_id=session.tenant_id, purpose=app.value, now=now
        )
        url = self._targets.url(app, tenant_id=session.tenant_id, state=state)
        await self._store.record(
            session.id, actor="system", action=f"{app.value}_link_issued", result="ok"
        )
        return consent_prompt(session, app.value, url, state, now + self._oauth.lifetime)

    async def opened(self, state: str, user_id: str) -> None:
        """An admin clicked the consent button: remember who (for the audit, beside the actor;
        Microsoft will not say who signed in)."""
        await self._oauth.note_opened(state, user_id)

    async def renew(
        self, session_id: str, app: ConsentApp, *, channel_id: str, message_ts: str
    ) -> Message | None:
        """Replace the link in the step message; a notice for the user when it can't be."""
        session = await self._store.get(session_id)
        if session is None or not session.is_active:
            return notice("This provisioning session has ended; no new link was made.")
        if CONSENT_FOR_PHASE.get(session.phase) is not app:
            done = session.last(CONSENT_EVENT[app])
            return notice(
                "This consent is already recorded; no new link is needed."
                if done
                else "This consent step is not open right now; no new link was made."
            )
        prompt = await self.consent_prompt(session, app)
        await self._provisioner.slack.chat_update(
            channel=channel_id, ts=message_ts, text=prompt.text, blocks=prompt.blocks
        )
        return None

    async def returned(
        self,
        session: Session,
        binding: OAuthState,
        params: Mapping[str, str],
        thread: str | None,
    ) -> pages.Page:
        """Microsoft's redirect after an admin consent, for a valid state of an active session."""
        app = ConsentApp(binding.purpose)
        outcome = read_consent_redirect(params, expected_tenant=binding.tenant_id)
        title = consent_app_title(app.value)
        if isinstance(outcome, ConsentGranted):
            return await self._granted(session, binding, app, outcome, thread)
        if isinstance(outcome, ConsentRefused):
            await self._audit(
                session,
                binding,
                "cancelled" if outcome.cancelled else "refused",
                {"error": outcome.error, "description": outcome.description[:300]},
            )
            await self._explain_and_offer_again(
                session,
                app,
                consent_problem(
                    session,
                    app.value,
                    opened_by=None,  # who clicked in Slack is not who answered at Microsoft
                    cancelled=outcome.cancelled,
                    error=outcome.error,
                    description=outcome.description,
                ),
            )
            return pages.consent_refused(
                title, session.tenant_label, outcome.cancelled, outcome.description, thread
            )
        await self._audit(
            session, binding, "wrong_tenant", {"signed_in_tenant": outcome.signed_in_tenant}
        )
        await self._explain_and_offer_again(
            session,
            app,
            consent_problem(
                session,
                app.value,
                opened_by=None,
                cancelled=False,
                error="wrong_tenant",
                description="",
                wrong_tenant=outcome.signed_in_tenant,
            ),
        )
        return pages.consent_wrong_tenant(
            outcome.signed_in_tenant, session.tenant_label, session.tenant_id, thread
        )

    async def _granted(
        self,
        session: Session,
        binding: OAuthState,
        app: ConsentApp,
        outcome: ConsentGranted,
        thread: str | None,
    ) -> pages.Page:
        title = consent_app_title(app.value)
        kind = CONSENT_EVENT[app]
        if CONSENT_FOR_PHASE.get(session.phase) is not app:
            return await self._again(session, binding, kind, outcome, title, thread)
        # The redirect is anyone's to forge: only Microsoft's own answer records the step.
        confirmation = await self._confirm(app, binding.tenant_id)
        if isinstance(confirmation, NotConfirmed):
            await self._audit(
                session,
                binding,
                "not_confirmed",
                {"reason": confirmation.code, "scope": outcome.scope[:500]},
            )
            await self._explain_and_offer_again(
                session,
                app,
                consent_not_confirmed(
                    session, app.value, confirmation.reason, retry=confirmation.retry
                ),
            )
            return pages.consent_not_confirmed(
                title, session.tenant_label, confirmation.reason, confirmation.retry, thread
            )
        event = Event(
            kind,
            actor=TENANT_GLOBAL_ADMIN,
            at=self._provisioner.now(),
            detail={
                "tenant_id": binding.tenant_id,
                "scope": outcome.scope[:500],
                **({"clicked_by": binding.opened_by} if binding.opened_by else {}),
                **confirmation.evidence,
            },
        )
        try:
            await self._provisioner.handle(session.id, event)
        except TransitionNotAllowed as refused:
            return await self._again(refused.session, binding, kind, outcome, title, thread)
        return pages.consent_recorded(title, session.tenant_label, event.at, thread)

    async def _again(
        self,
        session: Session,
        binding: OAuthState,
        kind: EventKind,
        outcome: ConsentGranted,
        title: str,
        thread: str | None,
    ) -> pages.Page:
        """A consent for a step that is not open (already recorded): nothing to record."""
        earlier = session.last(kind)
        await self._audit(session, binding, "consent_again", {"scope": outcome.scope[:500]})
        return pages.consent_already_recorded(
            title, session.tenant_label, earlier.at if earlier else None, thread
        )

    async def _explain_and_offer_again(
        self, session: Session, app: ConsentApp, problem: Message
    ) -> None:
        """What went wrong is a message of its own (someone has to act); the step's own
        message gets the new link."""
        await self._provisioner.post_in_thread(session, problem)
        if CONSENT_FOR_PHASE.get(session.phase) is app:
            await self._show(session, app, await self.consent_prompt(session, app))

    async def _audit(
        self, session: Session, binding: OAuthState, result: str, detail: Mapping[str, str]
    ) -> None:
        # The bot received the redirect; who answered at Microsoft is unknown.
        clicked = {"clicked_by": binding.opened_by} if binding.opened_by else {}
        await self._store.record(
            session.id,
            actor="system",
            action=f"{binding.purpose}_consent_redirect",
            result=result,
            detail={**detail, **clicked},
        )

"""Step 2 in the thread: the Exchange Administrator role for the mail-flow app.

The admin requests the role (justification, ticket, duration as the tenant's PIM policy
demands); an approver acknowledges it in the thread; then someone with Privileged Role
Administrator either signs in and lets the bot assign it ("Assign for me"), or assigns it in the
portal and lets the bot check. What the step needs between clicks lives in Redis as session
refs: the requirements, the request, the review message, when it was requested.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass

import httpx

from bot.blocks import Message, mention
from bot.microsoft.errors import MicrosoftError, PremiumLicenseRequired
from bot.microsoft.graph import GraphClient
from bot.microsoft.identity import MicrosoftApp, SignInFlow
from bot.microsoft.model import EXCHANGE_ADMINISTRATOR
from bot.microsoft.sealing import Sealer, UnsealError
from bot.session.access import AccessCheckFailed, AccessPolicy
from bot.session.service import Provisioner
from bot.session.views import notice, refusal_message, refused_transition_message
from bot.steps.role.assign import Assigned, NeedsMore, RoleSignIn, audit_detail, check_assignment
from bot.steps.role.model import RoleRequest
from bot.steps.role.requirements import RoleRequirements
from bot.steps.role.views import (
    Decision,
    app_message,
    assignment_choice_message,
    check_message,
    decided_message,
    outcome_message,
    portal_steps_message,
    review_message,
)
from bot.web import pages
from bot.workflow import Event, EventKind, Phase, Session, TransitionNotAllowed, advance
from state.oauth import OAuthState

__all__ = ["RoleStep", "RoleStepSettings"]

logger = logging.getLogger(__name__)

APP_NAME = "Inline mail flow"  # how the thread names the mail-flow app registration
SIGN_IN_PURPOSE = "role"

_REQUIREMENTS = "role:requirements"
_REQUEST = "role:request"
_REVIEW_TS = "role:review_ts"
_REQUESTED_AT = "role:requested_at"
_REMINDED = "role:reminded"
_SIGN_IN_OPENED_BY = "role:sign_in_opened_by"

_DECISIONS: Mapping[EventKind, Decision] = {
    EventKind.ROLE_ACKNOWLEDGE: "acknowledged",
    EventKind.ROLE_DECLINE: "declined",
    EventKind.ROLE_WITHDRAW: "withdrawn",
    EventKind.ROLE_REQUEST_EXPIRED: "expired",
}


@dataclass(frozen=True)
class RoleStepSettings:
    mailflow_app_id: str
    graph_url: str
    redirect_uri: str
    remind_after_seconds: int
    expire_after_seconds: int


class RoleStep:
    def __init__(
        self,
        *,
        provisioner: Provisioner,
        settings: RoleStepSettings,
        access: AccessPolicy,
        http: httpx.AsyncClient,
        new_dirsync_app: Callable[[], MicrosoftApp],
        sealer: Sealer,
    ) -> None:
        self._provisioner = provisioner
        self._store = provisioner.store
        self._settings = settings
        self._access = access
        self._http = http
        self._new_app = new_dirsync_app
        self._sign_in = RoleSignIn(
            new_app=new_dirsync_app,
            graph_url=settings.graph_url,
            redirect_uri=settings.redirect_uri,
        )
        self._sealer = sealer
        provisioner.on_phase(Phase.MAILFLOW_CONSENTED, self.offer)
        provisioner.on_phase(Phase.ROLE_REQUESTED, self.review)
        provisioner.on_phase(Phase.ROLE_ACKNOWLEDGED, self.offer_assignment)

    # -- what the step needs between clicks ------------------------------------------------

    async def requirements(self, session_id: str) -> RoleRequirements | None:
        stored = await self._store.get_ref(session_id, _REQUIREMENTS)
        return RoleRequirements.from_json(stored) if stored else None

    async def submit(self, session_id: str, request: RoleRequest) -> Message | None:
        """A validated request from the form: keep it, and put it up for review."""
        provisioner = self._provisioner
        detail = {
            "justification_length": str(len(request.justification)),
            "ticket": request.ticket_number or "",
            "duration": request.duration_iso or "permanent",
        }
        event = Event(EventKind.ROLE_REQUEST, request.requested_by, provisioner.now(), detail)
        try:
            # Checked before the request is stored, so a form submitted too late (the step
            # moved on) cannot replace the request an approver is looking at.
            advance(await self._store.require(session_id), event)
            # Kept per requester: two admins submitting at once cannot overwrite each other's
            # request; the one whose transition won is the one the thread shows.
            await self._store.set_ref(
                session_id, f"{_REQUEST}:{request.requested_by}", request.to_json()
            )
            await provisioner.handle(session_id, event)
        except TransitionNotAllowed as refused:
            return refused_transition_message(refused)
        return None

    async def remember_requirements(self, session_id: str, value: RoleRequirements) -> None:
        await self._store.set_ref(session_id, _REQUIREMENTS, value.to_json())

    async def request(self, session_id: str) -> RoleRequest | None:
        """The request under review: the one made by the latest ``ROLE_REQUEST`` in history."""
        session = await self._store.get(session_id)
        latest = session.last(EventKind.ROLE_REQUEST) if session else None
        if latest is None:
            return None
        stored = await self._store.get_ref(session_id, f"{_REQUEST}:{latest.actor}")
        return RoleRequest.from_json(stored) if stored else None

    @contextlib.asynccontextmanager
    async def _graph_as_dirsync(self, tenant_id: str) -> AsyncIterator[GraphClient]:
        """Graph as the directory-sync app, through a throw-away MSAL app: step 2 usually comes
        before that app's consent, and MSAL remembers refused token requests for a while, which
        must not hold up the verification after step 3."""
        app = self._new_app()
        try:
            provider = app.token_provider(tenant_id, self._settings.graph_url)
            yield GraphClient(self._http, self._settings.graph_url, provider)
        finally:
            app.close()

    async def _read_policy(self, session: Session) -> RoleRequirements | None:
        """The tenant's PIM policy, read with the directory-sync app where it has consent."""
        try:
            async with self._graph_as_dirsync(session.tenant_id) as graph:
                policy = await graph.role_policy(EXCHANGE_ADMINISTRATOR)
        except PremiumLicenseRequired:
            return RoleRequirements.without_pim()
        except MicrosoftError as error:
            logger.info("PIM policy not readable for %s: %s", session.tenant_id, type(error))
            return None
        return RoleRequirements.from_policy(policy)

    # -- prompts (what the thread shows when the session enters a phase) --------------------

    async def offer(self, session: Session) -> None:
        """After step 1 (or a declined request): the app, the role, and the request button."""
        requirements = await self._read_policy(session)
        if requirements is not None:
            await self.remember_requirements(session.id, requirements)
        await self._provisioner.post_in_thread(
            session,
            app_message(
                app_name=APP_NAME,
                app_id=self._settings.mailflow_app_id,
                requirements=requirements,
                value=session.id,
            ),
        )

    async def review(self, session: Session) -> None:
        """A submitted request, posted for the approvers with Acknowledge and Decline."""
        request = await self.request(session.id)
        requirements = await self.requirements(session.id)
        if request is None or requirements is None:
            return
        now = self._provisioner.now()
        message = review_message(
            request,
            requirements,
            app_name=APP_NAME,
            app_id=self._settings.mailflow_app_id,
            at=now,
            approvers=self._access.approvers,
            value=session.id,
        )
        # The clock starts before the approvers can see it: reminders never come early.
        await self._store.set_ref(session.id, _REQUESTED_AT, repr(now))
        await self._store.set_ref(session.id, _REMINDED, "")
        posted = await self._provisioner.slack.chat_postMessage(
            channel=session.channel_id,
            thread_ts=session.root_ts,
            text=message.text,
            blocks=message.blocks,
        )
        await self._store.set_ref(session.id, _REVIEW_TS, str(posted["ts"]))

    async def offer_assignment(self, session: Session) -> None:
        """After acknowledgement: "Assign for me" (a fresh sign-in link) or the portal."""
        requirements = await self.requirements(session.id) or RoleRequirements.assumed_pim()
        flow = await self._sign_in.start(session.tenant_id)
        now = self._provisioner.now()
        await self._provisioner.oauth.issue(
            session_id=session.id,
            tenant_id=session.tenant_id,
            purpose=SIGN_IN_PURPOSE,
            now=now,
            state=flow.state,
            sealed=self._sealer.seal(flow.to_json()),
        )
        await self._provisioner.post_in_thread(
            session,
            assignment_choice_message(
                requirements,
                app_name=APP_NAME,
                app_id=self._settings.mailflow_app_id,
                sign_in_url=flow.auth_uri,
                link_expires_at=now + self._provisioner.oauth.lifetime,
                value=session.id,
            ),
        )

    # -- decisions ------------------------------------------------------------------------

    async def decide(self, session_id: str, user_id: str, kind: EventKind) -> Message | None:
        """Acknowledge, decline (approvers) or withdraw (the requester); a reply if refused."""
        request = await self.request(session_id)
        if request is None:
            return notice("There is no role request to decide on in this session.")
        if kind is EventKind.ROLE_WITHDRAW:
            if user_id != request.requested_by:
                return notice(
                    f"Only {mention(request.requested_by)}, who made the request, can withdraw "
                    "it. Nothing was changed."
                )
        else:
            try:
                approver = await self._access.is_approver(user_id)
            except AccessCheckFailed:
                approver = False
            if not approver:
                action = "acknowledge" if kind is EventKind.ROLE_ACKNOWLEDGE else "decline"
                await self._provisioner.record_refusal(
                    session_id, user_id, f"{action} role request"
                )
                return refusal_message(f"{action} role requests", self._access.approvers)
            if kind is EventKind.ROLE_ACKNOWLEDGE and user_id == request.requested_by:
                await self._provisioner.record_refusal(
                    session_id, user_id, "acknowledge own role request"
                )
                return notice(
                    "You made this request, so you can't acknowledge it yourself: a privileged "
                    "role needs a second person. Ask another approver "
                    f"({', '.join(mention(a) for a in self._access.approvers)})."
                )
        return await self._decide(session_id, request, user_id, kind)

    async def _decide(
        self, session_id: str, request: RoleRequest, user_id: str, kind: EventKind
    ) -> Message | None:
        provisioner = self._provisioner
        event = Event(kind, actor=user_id, at=provisioner.now())
        try:
            transition = await provisioner.handle(session_id, event)
        except TransitionNotAllowed as refused:
            return refused_transition_message(refused)
        await self._mark_review(transition.after, request, kind, user_id, event.at)
        return None

    async def _mark_review(
        self, session: Session, request: RoleRequest, kind: EventKind, by: str, at: float
    ) -> None:
        review_ts = await self._store.get_ref(session.id, _REVIEW_TS)
        requested_at = await self._store.get_ref(session.id, _REQUESTED_AT)
        requirements = await self.requirements(session.id)
        if not review_ts or requirements is None:
            return
        message = decided_message(
            request,
            requirements,
            app_name=APP_NAME,
            app_id=self._settings.mailflow_app_id,
            requested_at=float(requested_at or at),
            decision=_DECISIONS[kind],
            by=by,
            at=at,
        )
        await self._provisioner.slack.chat_update(
            channel=session.channel_id, ts=review_ts, text=message.text, blocks=message.blocks
        )

    async def remind_and_expire(self) -> None:
        """Remind approvers of a request left waiting; close it when it has waited too long."""
        now = self._provisioner.now()
        for session in await self._store.active():
            if session.phase is not Phase.ROLE_REQUESTED:
                continue
            requested_at = await self._store.get_ref(session.id, _REQUESTED_AT)
            if not requested_at:
                continue
            waited = now - float(requested_at)
            if waited >= self._settings.expire_after_seconds:
                request = await self.request(session.id)
                event = Event(
                    EventKind.ROLE_REQUEST_EXPIRED,
                    actor="system",
                    at=now,
                    detail={"reason": "no approver acknowledged it in time"},
                )
                try:
                    transition = await self._provisioner.handle(session.id, event)
                except TransitionNotAllowed:
                    continue
                if request is not None:
                    await self._mark_review(
                        transition.after, request, EventKind.ROLE_REQUEST_EXPIRED, "system", now
                    )
            elif waited >= self._settings.remind_after_seconds and not await self._store.get_ref(
                session.id, _REMINDED
            ):
                await self._store.set_ref(session.id, _REMINDED, repr(now))
                who = ", ".join(mention(a) for a in self._access.approvers)
                hours = self._settings.expire_after_seconds // 3600
                await self._provisioner.post_in_thread(
                    session,
                    notice(
                        f":bell: {who}: the role request above is still waiting for an approver. "
                        f"It closes by itself {hours} hours after it was made."
                    ),
                )

    # -- assigning ----------------------------------------------------------------------------

    async def sign_in_opened(self, session_id: str, user_id: str) -> None:
        await self._store.set_ref(session_id, _SIGN_IN_OPENED_BY, user_id)

    async def new_sign_in(self, session_id: str) -> Message | None:
        session = await self._store.get(session_id)
        if session is None or session.phase is not Phase.ROLE_ACKNOWLEDGED:
            return notice("The role is not waiting to be assigned; no new link was made.")
        await self.offer_assignment(session)
        return None

    async def portal_steps(self, session_id: str) -> Message | None:
        session = await self._store.get(session_id)
        request = await self.request(session_id)
        requirements = await self.requirements(session_id) or RoleRequirements.assumed_pim()
        if session is None or request is None or session.phase is not Phase.ROLE_ACKNOWLEDGED:
            return notice("The role is not waiting to be assigned right now.")
        await self._provisioner.post_in_thread(
            session,
            portal_steps_message(
                request,
                requirements,
                app_name=APP_NAME,
                app_id=self._settings.mailflow_app_id,
                value=session.id,
            ),
        )
        return None

    async def check(self, session_id: str, user_id: str) -> Message | None:
        """ "I've assigned it": look in Graph, and record the step when the role is there."""
        session = await self._store.get(session_id)
        if session is None or session.phase is not Phase.ROLE_ACKNOWLEDGED:
            return notice("The role is not waiting to be assigned right now.")
        provisioner = self._provisioner
        try:
            async with self._graph_as_dirsync(session.tenant_id) as graph:
                found = await check_assignment(graph, self._settings.mailflow_app_id)
        except MicrosoftError:
            # Before step 3 the bot has no way to read the directory on its own.
            await self._assigned(
                session,
                user_id,
                {"checked": "no", "why": "directory-sync app not consented yet"},
            )
            return None
        await provisioner.post_in_thread(
            session,
            check_message(found, value=session.id, checked_by=user_id, at=provisioner.now()),
        )
        if found.assigned:
            await self._assigned(
                session, user_id, {"checked": "yes", "via": "pim" if found.via_pim else "direct"}
            )
        return None

    async def _assigned(self, session: Session, actor: str, detail: Mapping[str, str]) -> None:
        event = Event(EventKind.ROLE_ASSIGNED, actor, self._provisioner.now(), detail)
        try:
            await self._provisioner.handle(session.id, event)
        except TransitionNotAllowed:
            logger.info("role for session %s was already recorded", session.id)

    async def returned(
        self,
        session: Session,
        binding: OAuthState,
        params: Mapping[str, str],
        thread: str | None,
    ) -> pages.Page:
        """Microsoft posted the sign-in back: assign the role with it, then forget it."""
        request = await self.request(session.id)
        requirements = await self.requirements(session.id) or RoleRequirements.assumed_pim()
        if session.phase is not Phase.ROLE_ACKNOWLEDGED or request is None or not binding.sealed:
            return pages.role_not_assigned(
                "The role request is not waiting to be assigned any more (it was already "
                "assigned, or changed).",
                thread,
            )
        try:
            flow = SignInFlow.from_json(self._sealer.unseal(binding.sealed, max_age_seconds=3600))
        except UnsealError:
            return pages.link_unknown()
        outcome = await self._sign_in.assign(
            session.tenant_id,
            flow,
            params,
            http=self._http,
            app_id=self._settings.mailflow_app_id,
            request=request,
            requirements=requirements,
        )
        actor = await self._store.get_ref(session.id, _SIGN_IN_OPENED_BY) or "microsoft"
        await self._store.record(
            session.id,
            actor=actor,
            action="role_assignment",
            result=outcome.kind,
            detail=audit_detail(outcome),
        )
        message = outcome_message(
            outcome,
            request,
            app_name=APP_NAME,
            app_id=self._settings.mailflow_app_id,
            value=session.id,
        )
        await self._provisioner.post_in_thread(session, message)
        if isinstance(outcome, NeedsMore):
            await self.remember_requirements(session.id, outcome.requirements)
        if isinstance(outcome, Assigned):
            await self._assigned(session, actor, audit_detail(outcome))
            how = "through a PIM request" if outcome.via == "pim" else "directly"
            return pages.role_assigned(session.tenant_label, how, thread)
        return pages.role_not_assigned(message.text, thread)

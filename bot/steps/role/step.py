"""Step 2 in the thread: the Exchange Administrator role for the mail-flow app.

The admin requests the role (justification, ticket, duration as the tenant's PIM policy
demands); an approver acknowledges it in the thread; then someone with Privileged Role
Administrator either signs in and lets the bot assign it ("Assign for me"), or assigns it in the
portal and lets the bot check. What the step knows between clicks (requirements, request,
acknowledgement, reminders, who opened the sign-in) is ``Session.role``, changed only through
workflow transitions; beside it only the ids of the messages the bot edits are kept.

The acknowledgement covers one request (its digest): the approver's click names the request
they saw, and the sign-in's return claims exactly the acknowledged request (``ROLE_ASSIGNING``,
under the compare-and-set) before sending it to Microsoft, so an amended request is never
assigned without a new acknowledgement.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass

import httpx

from bot.actors import signed_in_at_microsoft
from bot.blocks import Message, mention, when
from bot.jobs import RESUME_WITHIN_SECONDS, Runner
from bot.microsoft.errors import MicrosoftError, PremiumLicenseRequired
from bot.microsoft.graph import GraphClient
from bot.microsoft.identity import MicrosoftApp, SignInFlow
from bot.microsoft.model import EXCHANGE_ADMINISTRATOR
from bot.microsoft.sealing import Sealer, UnsealError
from bot.session.access import AccessCheckFailed, AccessPolicy
from bot.session.service import Provisioner
from bot.session.views import notice, refusal_message, refused_transition_message
from bot.steps.role.assign import (
    Assigned,
    Failed,
    NeedsMore,
    RoleSignIn,
    SignedIn,
    SignInFailed,
    audit_detail,
    check_assignment,
)
from bot.steps.role.model import AssignmentFailed, RoleAssigned, RoleRequest, SeenRequest
from bot.steps.role.requirements import RoleRequirements
from bot.steps.role.views import (
    Decision,
    app_message,
    approval_wanted_message,
    assignment_choice_message,
    check_message,
    outcome_message,
    own_request_message,
    portal_steps_message,
    previous_request_line,
    review_message,
    role_done_message,
    role_stopped_message,
    with_request,
)
from bot.web import pages
from bot.workflow import (
    AMENDING,
    Event,
    EventKind,
    Payload,
    Phase,
    Session,
    Transition,
    TransitionNotAllowed,
    advance,
)
from state.oauth import OAuthState
from state.sessions import AuditEntry

__all__ = ["RoleStep", "RoleStepSettings"]

logger = logging.getLogger(__name__)

APP_NAME = "Inline mail flow"  # how the thread names the mail-flow app registration
SIGN_IN_PURPOSE = "role"

_MESSAGE = "role"  # the step's one thread message
# A sign-in claimed this long ago without an answer was interrupted (the process stopped).
_STALE_CLAIM_SECONDS = 15 * 60

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
        dirsync_app: MicrosoftApp,
        sealer: Sealer,
    ) -> None:
        self._provisioner = provisioner
        self._store = provisioner.store
        self._settings = settings
        self._access = access
        self._http = http
        self._dirsync_app = dirsync_app
        self._sign_in = RoleSignIn(
            new_app=new_dirsync_app,
            graph_url=settings.graph_url,
            redirect_uri=settings.redirect_uri,
        )
        self._sealer = sealer

    # -- the Step protocol ------------------------------------------------------------------

    phases = frozenset(
        {
            Phase.MAILFLOW_CONSENTED,
            Phase.ROLE_REQUESTED,
            Phase.ROLE_ACKNOWLEDGED,
            Phase.ROLE_ASSIGNING,
        }
    )

    @property
    def jobs(self) -> Mapping[Phase, Runner]:
        # Not a background job: the sign-in's answer assigns while holding the session's lease;
        # if its process dies mid-way, the orphan check finds the claim without a holder and
        # this releases it (the thread says to check or sign in again).
        return {Phase.ROLE_ASSIGNING: self._interrupted}

    @property
    def returns(self) -> Mapping[str, RoleStep]:
        return {SIGN_IN_PURPOSE: self}

    async def show(self, transition: Transition) -> None:
        """The step's one message: the request button, the request waiting for an approver,
        the two ways to assign, then who assigned it (or that the session stopped)."""
        after = transition.after
        event = transition.event
        if after.phase is Phase.MAILFLOW_CONSENTED:
            decision = _DECISIONS.get(event.kind)
            await self.offer(after, (decision, event.actor, event.at) if decision else None)
        elif after.phase is Phase.ROLE_REQUESTED:
            await self.review(after)
            if event.kind is EventKind.ROLE_REQUEST and after.role.request is not None:
                # The review is an edit of the step's message, which notifies nobody: one
                # short post mentions the approvers.
                await self._provisioner.post_in_thread(
                    after,
                    approval_wanted_message(
                        after.role.request.requested_by, self._access.approvers
                    ),
                )
        elif after.phase is Phase.ROLE_ACKNOWLEDGED:
            await self.offer_assignment(after)
        elif after.phase is Phase.ROLE_ASSIGNED:
            # After a sign-in or a check in Graph, the step showed Microsoft's answer already.
            if "outcome" not in event.detail and event.detail.get("checked") != "yes":
                done = role_done_message(
                    app_name=APP_NAME,
                    app_id=self._settings.mailflow_app_id,
                    by=event.actor,
                    at=event.at,
                    checked=False,
                )
                await self._show(after, self._with_request(after, done))
        elif not after.is_active:
            word = "expired" if after.phase is Phase.EXPIRED else "was cancelled"
            await self._show(after, role_stopped_message(word))

    async def _show(self, session: Session, message: Message) -> None:
        await self._provisioner.show_step(session, _MESSAGE, message)

    def _with_request(self, session: Session, lead: Message) -> Message:
        role = session.role
        ack = role.acknowledgement
        return with_request(
            lead,
            role.request,
            role.requirements or RoleRequirements.assumed_pim(),
            requested_at=role.requested_at,
            acknowledged_by=ack.by if ack else None,
            acknowledged_at=ack.at if ack else None,
        )

    # -- what the step needs between clicks ------------------------------------------------

    async def _move(
        self,
        session_id: str,
        kind: EventKind,
        actor: str,
        *,
        detail: Mapping[str, str] | None = None,
        payload: Payload | None = None,
    ) -> Transition:
        provisioner = self._provisioner
        event = Event(kind, actor, provisioner.now(), detail or {}, payload)
        return await provisioner.handle(session_id, event)

    async def requirements(self, session_id: str) -> RoleRequirements | None:
        session = await self._store.get(session_id)
        return session.role.requirements if session else None

    async def may_request(self, session_id: str) -> Message | None:
        """Why a first request's form should not open now (``None``: it may), asked at the
        click. The answer is the transition table's own, for the move the form would make
        (``Why.ALREADY_REQUESTED`` once a request is acknowledged; the guard refuses the
        submission the same way, in its compare-and-set)."""
        session = await self._store.get(session_id)
        if session is None or session.phase is Phase.MAILFLOW_CONSENTED:
            return None
        first = Event(EventKind.ROLE_REQUEST, "system", self._provisioner.now(), {AMENDING: "no"})
        try:
            advance(session, first)
        except TransitionNotAllowed as refused:
            return refused_transition_message(refused)
        return None

    async def submit(
        self, session_id: str, request: RoleRequest, *, amending: bool = False
    ) -> Message | None:
        """A validated request from the form: store it and put it up for review (the phase
        check and the store are one compare-and-set: a form submitted too late cannot replace
        the request an approver is looking at). A first request's form (not ``amending``)
        never replaces one already made (the transition's guard, in the same compare-and-set)."""
        detail = {
            AMENDING: "yes" if amending else "no",
            "justification_length": str(len(request.justification)),
            "ticket": request.ticket_number or "",
            "duration": request.duration_iso or "permanent",
            "request_digest": request.digest(),
        }
        try:
            await self._move(
                session_id,
                EventKind.ROLE_REQUEST,
                request.requested_by,
                detail=detail,
                payload=request,
            )
        except TransitionNotAllowed as refused:
            return refused_transition_message(refused)
        return None

    async def remember_requirements(self, session_id: str, value: RoleRequirements) -> None:
        """Keep what the tenant demands while no request is made (later, the request stands)."""
        session = await self._store.get(session_id)
        if session is None or session.role.requirements == value:
            return
        with contextlib.suppress(TransitionNotAllowed):
            await self._move(
                session_id,
                EventKind.ROLE_REQUIREMENTS,
                "system",
                detail={"source": value.source, "pim": str(value.pim).lower()},
                payload=value,
            )

    async def request(self, session_id: str) -> RoleRequest | None:
        """The request under review (or acknowledged)."""
        session = await self._store.get(session_id)
        return session.role.request if session else None

    @contextlib.asynccontextmanager
    async def _graph_as_dirsync(self, tenant_id: str) -> AsyncIterator[GraphClient]:
        """Graph as the directory-sync app: the process's one (its MSAL app per tenant and its
        tokens are kept). Step 2 usually comes before that app's consent; a refused token
        request is not remembered (``MicrosoftApp.app_token``), so it cannot hold up the
        verification after step 3."""
        provider = self._dirsync_app.token_provider(tenant_id, self._settings.graph_url)
        yield GraphClient(self._http, self._settings.graph_url, provider)

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

    async def offer(
        self, session: Session, previous: tuple[Decision, str, float] | None = None
    ) -> None:
        """After step 1 (or a request that was declined, withdrawn or expired: ``previous``):
        the app, the role, and the request button."""
        requirements = await self._read_policy(session)
        if requirements is not None:
            await self.remember_requirements(session.id, requirements)
        message = app_message(
            app_name=APP_NAME,
            app_id=self._settings.mailflow_app_id,
            requirements=requirements,
            value=session.id,
        )
        if previous is not None:
            line = previous_request_line(*previous)
            message = Message(message.text, [*message.blocks, line])
        await self._show(session, message)

    async def review(self, session: Session) -> None:
        """A submitted request, posted for the approvers with Acknowledge and Decline."""
        role = session.role
        if role.request is None:
            return
        message = review_message(
            role.request,
            role.requirements or RoleRequirements.assumed_pim(),
            app_name=APP_NAME,
            app_id=self._settings.mailflow_app_id,
            at=role.requested_at or self._provisioner.now(),
            approvers=self._access.approvers,
            # The click names the request the approver saw.
            value=f"{session.id}:{role.request.digest()}",
        )
        await self._show(session, message)

    async def offer_assignment(self, session: Session) -> None:
        """After acknowledgement: "Assign for me" (a fresh sign-in link) or the portal."""
        await self._offer_sign_in(session)

    async def _offer_sign_in(self, session: Session) -> str:
        """Post "Assign for me" with a fresh sign-in link; the link."""
        requirements = session.role.requirements or RoleRequirements.assumed_pim()
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
        choice = assignment_choice_message(
            requirements,
            app_name=APP_NAME,
            app_id=self._settings.mailflow_app_id,
            sign_in_url=flow.auth_uri,
            link_expires_at=now + self._provisioner.oauth.lifetime,
            value=session.id,
        )
        await self._show(session, self._with_request(session, choice))
        return flow.auth_uri

    # -- decisions ------------------------------------------------------------------------

    async def decide(self, value: str, user_id: str, kind: EventKind) -> Message | None:
        """Acknowledge, decline (approvers) or withdraw (the requester); a reply if refused.

        ``value`` is the button's value: ``<session id>:<digest of the request shown>`` (a bare
        session id is taken as "the current request").
        """
        session_id, _, seen = value.partition(":")
        session = await self._store.get(session_id)
        request = session.role.request if session else None
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
                return own_request_message(self._access.approvers)
        # The checks above are for a clear reply; the guards of the transition decide, on the
        # record the compare-and-set stores.
        try:
            await self._move(
                session_id,
                kind,
                user_id,
                detail={"request_digest": seen or request.digest()},
                payload=SeenRequest(seen) if seen else None,
            )
        except TransitionNotAllowed as refused:
            return refused_transition_message(refused)
        return None

    async def remind_and_expire(self) -> None:
        """Remind approvers of a request left waiting; close it when it has waited too long;
        release a sign-in whose answer never came back (the process stopped meanwhile)."""
        now = self._provisioner.now()
        waiting = [
            *await self._store.in_phase(Phase.ROLE_ASSIGNING),
            *await self._store.in_phase(Phase.ROLE_REQUESTED),
        ]
        for session in waiting:
            role = session.role
            if session.phase is Phase.ROLE_ASSIGNING:
                claim = role.assigning
                if claim is None or now - claim.at >= _STALE_CLAIM_SECONDS:
                    await self._interrupted(session)
                continue
            if session.phase is not Phase.ROLE_REQUESTED or role.requested_at is None:
                continue
            waited = now - role.requested_at
            if waited >= self._settings.expire_after_seconds:
                with contextlib.suppress(TransitionNotAllowed):
                    await self._move(
                        session.id,
                        EventKind.ROLE_REQUEST_EXPIRED,
                        "system",
                        detail={"reason": "no approver acknowledged it in time"},
                    )
            elif waited >= self._settings.remind_after_seconds and role.reminded_at is None:
                try:  # the compare-and-set makes one replica the one that reminds
                    reminded = await self._move(session.id, EventKind.ROLE_REMINDED, "system")
                except TransitionNotAllowed:
                    continue
                who = ", ".join(mention(a) for a in self._access.approvers)
                hours = self._settings.expire_after_seconds // 3600
                await self._provisioner.post_in_thread(
                    reminded.after,
                    notice(
                        f":bell: {who}: the role request above is still waiting for an approver. "
                        f"It closes by itself {hours} hours after it was made."
                    ),
                )

    async def _interrupted(self, session: Session) -> None:
        """The claim's process stopped. If Microsoft's answer was recorded before it did (the
        audit has it), the step is done: record it. Otherwise release the claim."""
        answer = await self._answer_recorded(session.id)
        if answer is not None:
            await self._assigned(
                session,
                answer.actor,
                {**answer.detail, "recovered": "the answer was recorded before an interruption"},
            )
            return
        try:
            moved = await self._move(
                session.id,
                EventKind.ROLE_ASSIGN_FAILED,
                "system",
                detail={"reason": "no answer came back from the sign-in (interrupted)"},
                payload=AssignmentFailed(),
            )
        except TransitionNotAllowed:
            return
        await self._provisioner.post_in_thread(
            moved.after,
            notice(
                ":warning: The role assignment after the last sign-in was interrupted before "
                "Microsoft's answer arrived. Press *I've assigned it* to check whether it went "
                "through, or *Assign for me* again: its link is a fresh one."
            ),
        )
        # The fresh link: the release's own entry shows the step anew (``show``, acknowledged).

    async def _answer_recorded(self, session_id: str) -> AuditEntry | None:
        """Microsoft's "assigned" recorded after the latest claim, if there is one."""
        for entry in reversed(await self._store.latest_audit(session_id, count=20)):
            if entry.action == EventKind.ROLE_ASSIGNING.value:
                return None
            if entry.action == "role_assignment" and entry.result == "assigned":
                return entry
        return None

    # -- assigning ----------------------------------------------------------------------------

    async def sign_in_opened(self, session_id: str, user_id: str) -> None:
        """An admin clicked "Assign for me": remember who (recorded beside the actor, who is the
        user the sign-in's id_token names)."""
        with contextlib.suppress(TransitionNotAllowed):
            await self._move(session_id, EventKind.ROLE_SIGN_IN_OPENED, user_id)

    async def new_sign_in(self, session_id: str) -> Message | None:
        session = await self._store.get(session_id)
        if session is not None and session.phase is Phase.ROLE_ASSIGNING:
            return notice(f":hourglass_flowing_sand: {_being_assigned(session)}")
        if session is None or session.phase is not Phase.ROLE_ACKNOWLEDGED:
            return notice("The role is not waiting to be assigned; no new link was made.")
        await self.offer_assignment(session)
        return None

    async def portal_steps(self, session_id: str) -> Message | None:
        session = await self._store.get(session_id)
        if session is None or session.phase is not Phase.ROLE_ACKNOWLEDGED:
            return notice("The role is not waiting to be assigned right now.")
        request = session.role.acknowledged_request
        if request is None:
            return notice("The role is not waiting to be assigned right now.")
        steps = portal_steps_message(
            request,
            session.role.requirements or RoleRequirements.assumed_pim(),
            app_name=APP_NAME,
            app_id=self._settings.mailflow_app_id,
            value=session.id,
        )
        await self._show(session, self._with_request(session, steps))
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
        answer = check_message(found, value=session.id, checked_by=user_id, at=provisioner.now())
        if not found.assigned:
            await provisioner.post_in_thread(session, answer)  # someone has to act again
            return None
        await self._show(session, self._with_request(session, answer))
        await self._assigned(
            session, user_id, {"checked": "yes", "via": "pim" if found.via_pim else "direct"}
        )
        return None

    async def _assigned(
        self,
        session: Session,
        actor: str,
        detail: Mapping[str, str],
        signed_in_as: str | None = None,
    ) -> None:
        try:
            await self._move(
                session.id,
                EventKind.ROLE_ASSIGNED,
                actor,
                detail=detail,
                payload=RoleAssigned(signed_in_as),
            )
        except TransitionNotAllowed:
            logger.info("role for session %s was already recorded", session.id)

    async def returned(
        self,
        session: Session,
        binding: OAuthState,
        params: Mapping[str, str],
        thread: str | None,
    ) -> pages.Page:
        """Microsoft posted the sign-in back: redeem it and learn who signed in (the id_token's
        user is the actor; a wrong nonce or tenant changes nothing and gets a fresh link), claim
        the acknowledged request (compare-and-set), assign exactly that request with the
        sign-in, then forget the sign-in."""
        request = session.role.acknowledged_request
        if session.phase is not Phase.ROLE_ACKNOWLEDGED or request is None or not binding.sealed:
            return _not_waiting(session, thread)
        try:
            flow = SignInFlow.from_json(self._sealer.unseal(binding.sealed, max_age_seconds=3600))
        except UnsealError:
            return pages.link_unknown()
        signed_in = await self._sign_in.redeem(session.tenant_id, flow, params)
        if not isinstance(signed_in, SignedIn):
            return await self._sign_in_failed(session, signed_in, request, thread)
        async with self._provisioner.jobs.held(session.id) as held:
            if not held:
                return _not_waiting(session, thread)  # another answer is being assigned
            return await self._assign(session, signed_in, request, thread)

    async def _assign(
        self, session: Session, signed_in: SignedIn, request: RoleRequest, thread: str | None
    ) -> pages.Page:
        """Claim the acknowledged request and assign it with the sign-in (under the lease)."""
        actor = signed_in_at_microsoft(signed_in.user)
        opened_by = session.role.sign_in_opened_by
        clicked = {"clicked_by": opened_by} if opened_by else {}
        try:
            claimed = await self._move(
                session.id,
                EventKind.ROLE_ASSIGNING,
                actor,
                detail={"request_digest": request.digest(), **clicked},
                payload=SeenRequest(request.digest()),
            )
        except TransitionNotAllowed as refused:
            return _not_waiting(refused.session, thread)
        session = claimed.after
        claimed_request = session.role.request
        assert claimed_request is not None  # the guard of ROLE_ASSIGNING saw it
        request = claimed_request
        requirements = session.role.requirements or RoleRequirements.assumed_pim()
        try:
            outcome = await self._sign_in.assign_as(
                signed_in,
                session.tenant_id,
                http=self._http,
                app_id=self._settings.mailflow_app_id,
                request=request,
                requirements=requirements,
            )
        except Exception:
            await self._release_claim(session, actor, {"reason": "unexpected error"}, None)
            raise
        finally:
            del signed_in  # the token goes with it
        await self._store.record(
            session.id,
            actor=actor,
            action="role_assignment",
            result=outcome.kind,
            detail={**audit_detail(outcome), **clicked},
        )
        message = outcome_message(
            outcome,
            request,
            app_name=APP_NAME,
            app_id=self._settings.mailflow_app_id,
            value=session.id,
        )
        if isinstance(outcome, Assigned):
            await self._show(session, self._with_request(session, message))
            await self._assigned(
                session, actor, {**audit_detail(outcome), **clicked}, outcome.assigned_by
            )
            how = "through a PIM request" if outcome.via == "pim" else "directly"
            return pages.role_assigned(session.tenant_label, how, thread)
        # Stored before the message: its "Complete the request" opens the form with them.
        tightened = outcome.requirements if isinstance(outcome, NeedsMore) else None
        await self._release_claim(session, actor, {"outcome": outcome.kind}, tightened)
        await self._provisioner.post_in_thread(session, message)
        return pages.role_not_assigned(message.text, thread)

    async def _sign_in_failed(
        self,
        session: Session,
        outcome: SignInFailed | Failed,
        request: RoleRequest,
        thread: str | None,
    ) -> pages.Page:
        """The answer gave no usable sign-in (cancelled, refused, a wrong nonce, another
        tenant): nothing was claimed, assigned or recorded as done. Said in the thread; a
        sign-in answer that does not belong to this session also gets a fresh link."""
        opened_by = session.role.sign_in_opened_by
        await self._store.record(
            session.id,
            actor="system",  # the bot received it; nobody is vouched for
            action="role_assignment",
            result=outcome.kind,
            detail={**audit_detail(outcome), **({"clicked_by": opened_by} if opened_by else {})},
        )
        message = outcome_message(
            outcome,
            request,
            app_name=APP_NAME,
            app_id=self._settings.mailflow_app_id,
            value=session.id,
        )
        await self._provisioner.post_in_thread(session, message)
        if isinstance(outcome, SignInFailed) and outcome.error in _FOREIGN_ANSWERS:
            fresh = await self._offer_sign_in(session)
            return pages.sign_in_rejected(
                _FOREIGN_ANSWERS[outcome.error], outcome.description, fresh, thread
            )
        return pages.role_not_assigned(message.text, thread)

    async def _release_claim(
        self,
        session: Session,
        actor: str,
        detail: Mapping[str, str],
        requirements: RoleRequirements | None,
    ) -> None:
        try:
            await self._move(
                session.id,
                EventKind.ROLE_ASSIGN_FAILED,
                actor,
                detail=detail,
                payload=AssignmentFailed(requirements),
            )
        except TransitionNotAllowed:
            logger.info("role claim of session %s was already released", session.id)


# Sign-in answers that do not belong to this session's sign-in: what the page says of each.
_FOREIGN_ANSWERS: Mapping[str, str] = {
    "state_mismatch": "This sign-in answer does not belong to the sign-in link it came back for.",
    "nonce_mismatch": "The ID token in this sign-in answer was not issued for the sign-in link"
    " the bot made (its nonce does not match).",
    "wrong_tenant": "The sign-in was to another tenant than this provisioning session's.",
}


def _being_assigned(session: Session, *, dated: Callable[[float], str] = when) -> str:
    """What a person who asks for a new sign-in link meanwhile is told of the claim in hand
    (``dated``: Slack's date markup, or plain text for a web page)."""
    claimed = session.last(EventKind.ROLE_ASSIGNING)
    since = f" (its sign-in came back {dated(claimed.at)})" if claimed else ""
    return (
        f"The role is being assigned with an earlier sign-in{since}. The thread shows "
        f"Microsoft's answer; if the assignment was interrupted, the thread offers a fresh "
        f"Assign for me link within {RESUME_WITHIN_SECONDS} seconds. Nothing to do until then."
    )


def _not_waiting(session: Session, thread: str | None) -> pages.Page:
    """The page for a sign-in that came back when there was nothing (or something else) to
    assign; nothing was sent to Microsoft."""
    if session.phase is Phase.ROLE_ASSIGNING:
        return pages.role_being_assigned(_being_assigned(session, dated=pages.when), thread)
    if session.phase is Phase.ROLE_REQUESTED and session.role.request is not None:
        return pages.role_not_assigned(
            "The role request was changed after it was acknowledged, so nothing was assigned: "
            "the new request needs an approver's acknowledgement first.",
            thread,
        )
    return pages.role_not_assigned(
        "The role request is not waiting to be assigned any more (it was already assigned, or "
        "changed).",
        thread,
    )

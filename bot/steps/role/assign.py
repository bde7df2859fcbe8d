"""Assigning the Exchange Administrator role to the mail-flow app, and checking that it is there.

Two entry points for the Slack side:

- "Assign for me": ``RoleSignIn.start`` makes the sign-in link (auth code flow with PKCE, the
  delegated scope below); the Microsoft redirect (a form POST) goes to ``RoleSignIn.assign``,
  which redeems it, makes the PIM schedule request or the direct assignment through
  ``assign_with_delegated_token``, and lets the token go. The token is never returned, stored
  or logged; the MSAL application that redeemed it (and its in-memory token cache) is built for
  that one sign-in and closed afterwards.
- "I've assigned it": ``check_assignment`` reads, app-only, what Graph shows for the app.

Every Graph answer's ``request-id`` is kept on the outcome for the audit stream.
"""

from __future__ import annotations

import contextvars
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Literal

import httpx

from bot.microsoft.errors import (
    AlreadyExists,
    ConsentMissing,
    Forbidden,
    MicrosoftError,
    MicrosoftUnavailable,
    PolicyValidationFailed,
    PremiumLicenseRequired,
    ServiceError,
    TokenError,
)
from bot.microsoft.graph import GraphClient
from bot.microsoft.identity import DelegatedToken, MicrosoftApp, SignInFlow, delegated_provider
from bot.microsoft.model import EXCHANGE_ADMINISTRATOR, RoleAssignment, ServicePrincipal
from bot.microsoft.retry import DEFAULT_RETRY, RetryPolicy
from bot.steps.role.model import (
    DURATION_BLOCK,
    JUSTIFICATION_BLOCK,
    TICKET_NUMBER_BLOCK,
    TICKET_SYSTEM_BLOCK,
    RoleRequest,
)
from bot.steps.role.requirements import RoleRequirements

__all__ = [
    "ASSIGNER_ROLES",
    "ROLE_ASSIGNMENT_SCOPE",
    "Assigned",
    "AssignmentCheck",
    "AssignmentOutcome",
    "Failed",
    "NeedsMore",
    "NotPermitted",
    "Pending",
    "PendingRequest",
    "RoleSignIn",
    "SignInFailed",
    "SignedIn",
    "assign_with_delegated_token",
    "audit_detail",
    "check_assignment",
    "role_assignment_scopes",
    "watch_request_ids",
]

log = logging.getLogger(__name__)

#: The delegated Graph permission the signed-in admin grants: PIM schedule requests, direct
#: role assignments, and reading them back.
ROLE_ASSIGNMENT_SCOPE = "RoleManagement.ReadWrite.Directory"
# To find the mail-flow app's service principal with the admin's own sign-in (step 2 comes
# before the directory-sync app's consent, so no app-only Graph access exists yet).
READ_APPS_SCOPE = "Application.Read.All"
#: The directory roles that may assign Exchange Administrator (least privileged first).
ASSIGNER_ROLES = ("Privileged Role Administrator", "Global Administrator")

#: PIM request statuses that mean "not active yet, but on its way".
_PENDING_STATUSES = frozenset(
    {
        "PendingApproval",
        "PendingApprovalProvisioning",
        "PendingAdminDecision",
        "PendingProvisioning",
        "PendingScheduleCreation",
        "Granted",
        "Scheduled",
    }
)
_RULE_FIELDS: Mapping[str, tuple[str, ...]] = {
    "JustificationRule": (JUSTIFICATION_BLOCK,),
    "TicketingRule": (TICKET_NUMBER_BLOCK, TICKET_SYSTEM_BLOCK),
    "ExpirationRule": (DURATION_BLOCK,),
}


def role_assignment_scopes(graph_url: str) -> tuple[str, ...]:
    """The scopes to sign in with, on the configured Graph resource
    (``https://graph.microsoft.com/RoleManagement.ReadWrite.Directory`` and
    ``…/Application.Read.All``)."""
    base = graph_url.rstrip("/")
    return (f"{base}/{ROLE_ASSIGNMENT_SCOPE}", f"{base}/{READ_APPS_SCOPE}")


# -- outcomes ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Assigned:
    """The app holds the role. ``already``: it did before this attempt (Microsoft answered
    ``RoleAssignmentExists`` or the direct-assignment conflict, and it read back).
    ``switched_to_direct``: PIM was asked for but the tenant has no Entra ID P2
    (``AadPremiumLicenseRequired``), so the role was assigned directly and permanently."""

    via: Literal["pim", "direct"]
    already: bool
    assignments: tuple[RoleAssignment, ...]
    switched_to_direct: bool = False
    schedule_request_id: str | None = None
    assigned_by: str | None = None
    request_ids: tuple[str, ...] = ()
    kind: Literal["assigned"] = field(default="assigned", init=False)


@dataclass(frozen=True)
class Pending:
    """Microsoft accepted the PIM request but it is not active yet (``status``)."""

    schedule_request_id: str
    status: str
    assigned_by: str | None = None
    request_ids: tuple[str, ...] = ()
    kind: Literal["pending"] = field(default="pending", init=False)


@dataclass(frozen=True)
class NeedsMore:
    """The PIM policy refused the request. ``rules`` as Microsoft named them; ``fields`` the
    modal block ids to ask again; ``requirements`` the requirements tightened by the failed
    rules (open the modal with these); ``mfa``: the policy wants a multifactor sign-in."""

    rules: tuple[str, ...]
    fields: tuple[str, ...]
    requirements: RoleRequirements
    mfa: bool
    assigned_by: str | None = None
    request_ids: tuple[str, ...] = ()
    kind: Literal["needs_more"] = field(default="needs_more", init=False)


@dataclass(frozen=True)
class NotPermitted:
    """The signed-in user may not assign directory roles (403 ``Authorization_RequestDenied``).
    ``needed``: the roles that may (any one of them)."""

    user: str | None
    code: str
    needed: tuple[str, ...] = ASSIGNER_ROLES
    switched_to_direct: bool = False
    request_ids: tuple[str, ...] = ()
    kind: Literal["not_permitted"] = field(default="not_permitted", init=False)


@dataclass(frozen=True)
class SignInFailed:
    """The sign-in did not give a usable token: cancelled, refused, the wrong tenant, a stale
    link. ``error`` is the OAuth error (or ``wrong_tenant``, ``state_mismatch``)."""

    error: str
    description: str
    user: str | None = None
    request_ids: tuple[str, ...] = ()
    kind: Literal["sign_in_failed"] = field(default="sign_in_failed", init=False)


@dataclass(frozen=True)
class SignedIn:
    """A redeemed sign-in to the session's tenant: ``user`` is who Microsoft's id_token names
    (their UPN as Microsoft returned it); the token never shows in ``repr``."""

    token: DelegatedToken = field(repr=False)
    user: str


@dataclass(frozen=True)
class Failed:
    """Microsoft answered something unexpected or could not be reached; ``retryable`` when
    trying again later may help (outage, throttling)."""

    code: str
    message: str
    retryable: bool
    assigned_by: str | None = None
    request_ids: tuple[str, ...] = ()
    kind: Literal["failed"] = field(default="failed", init=False)


AssignmentOutcome = Assigned | Pending | NeedsMore | NotPermitted | SignInFailed | Failed


def audit_detail(outcome: AssignmentOutcome) -> dict[str, str]:
    """Flat strings for the session's audit stream (no token, no justification text)."""
    detail: dict[str, str] = {"outcome": outcome.kind}
    if outcome.request_ids:
        detail["graph_request_ids"] = ",".join(outcome.request_ids)
    if isinstance(outcome, Assigned):
        detail.update(via=outcome.via, already=str(outcome.already).lower())
        if outcome.switched_to_direct:
            detail["switched_to_direct"] = "true"
        if outcome.schedule_request_id:
            detail["schedule_request_id"] = outcome.schedule_request_id
        if outcome.assignments:
            detail["assignment_ids"] = ",".join(a.id for a in outcome.assignments)
    elif isinstance(outcome, Pending):
        detail.update(schedule_request_id=outcome.schedule_request_id, status=outcome.status)
    elif isinstance(outcome, NeedsMore):
        detail["rules"] = ",".join(outcome.rules)
    elif isinstance(outcome, NotPermitted | Failed):
        detail["code"] = outcome.code
    elif isinstance(outcome, SignInFailed):
        detail["error"] = outcome.error
    user = outcome.user if isinstance(outcome, NotPermitted | SignInFailed) else outcome.assigned_by
    if user:
        detail["signed_in_as"] = user
    return detail


# -- Graph request ids -------------------------------------------------------------------------

_REQUEST_IDS: contextvars.ContextVar[list[str] | None] = contextvars.ContextVar(
    "graph_request_ids", default=None
)


async def _note_request_id(response: httpx.Response) -> None:
    collected = _REQUEST_IDS.get()
    request_id = response.headers.get("request-id")
    if collected is not None and request_id and request_id not in collected:
        collected.append(request_id)


def watch_request_ids(http: httpx.AsyncClient) -> None:
    """Let the functions of this module record the ``request-id`` of every Graph answer that
    comes through ``http`` (a response hook; it records only while they run, per task).
    Without it, only the request ids of error answers are recorded."""
    hooks = http.event_hooks
    if _note_request_id not in hooks["response"]:
        http.event_hooks = {**hooks, "response": [*hooks["response"], _note_request_id]}


class _Ids:
    """The request ids of one operation: from the response hook and from errors."""

    def __init__(self) -> None:
        self.collected: list[str] = []
        self._reset: contextvars.Token[list[str] | None] | None = None

    def __enter__(self) -> _Ids:
        self._reset = _REQUEST_IDS.set(self.collected)
        return self

    def __exit__(self, *_: object) -> None:
        if self._reset is not None:
            _REQUEST_IDS.reset(self._reset)

    def note(self, error: BaseException) -> None:
        request_id = getattr(error, "request_id", None)
        if isinstance(request_id, str) and request_id and request_id not in self.collected:
            self.collected.append(request_id)

    @property
    def all(self) -> tuple[str, ...]:
        return tuple(self.collected)


# -- the assignment ----------------------------------------------------------------------------


async def assign_with_delegated_token(
    graph: GraphClient,
    *,
    principal_id: str,
    request: RoleRequest,
    requirements: RoleRequirements,
    assigned_by: str | None = None,
) -> AssignmentOutcome:
    """Give the service principal ``principal_id`` the Exchange Administrator role, as the
    signed-in admin behind ``graph``'s delegated token.

    With PIM: an ``adminAssign`` schedule request with the request's justification, ticket and
    schedule (permanent or ``afterDuration``). Without PIM, or when Microsoft answers that the
    tenant has no Entra ID P2: a direct (permanent) assignment. Microsoft's errors become
    outcomes; nothing here raises for a Graph answer.
    """
    with _Ids() as ids:
        try:
            return await _assign(graph, principal_id, request, requirements, assigned_by, ids)
        except MicrosoftError as error:
            ids.note(error)
            return _outcome_for(error, ids.all, assigned_by, switched=False)


async def _assign(
    graph: GraphClient,
    principal_id: str,
    request: RoleRequest,
    requirements: RoleRequirements,
    assigned_by: str | None,
    ids: _Ids,
) -> AssignmentOutcome:
    switched = False
    if requirements.pim:
        try:
            created = await graph.request_role_assignment(
                principal_id,
                EXCHANGE_ADMINISTRATOR,
                request.justification,
                expiration=request.expiration(),
                ticket=request.ticket(),
            )
        except AlreadyExists as error:
            ids.note(error)
            return await _already(graph, principal_id, "pim", assigned_by, ids)
        except PolicyValidationFailed as error:
            ids.note(error)
            return _needs_more(error.rules, requirements, assigned_by, ids.all)
        except PremiumLicenseRequired as error:
            ids.note(error)
            log.info("tenant has no Entra ID P2: assigning the role directly instead of via PIM")
            switched = True
        else:
            active = await graph.active_assignments(principal_id, EXCHANGE_ADMINISTRATOR)
            if active or created.status in ("Provisioned", ""):
                return Assigned(
                    via="pim",
                    already=False,
                    assignments=active.assignments,
                    schedule_request_id=created.id or None,
                    assigned_by=assigned_by,
                    request_ids=ids.all,
                )
            return Pending(
                schedule_request_id=created.id,
                status=created.status,
                assigned_by=assigned_by,
                request_ids=ids.all,
            )
    try:
        await graph.assign_role(principal_id, EXCHANGE_ADMINISTRATOR)
    except AlreadyExists as error:
        ids.note(error)
        return await _already(graph, principal_id, "direct", assigned_by, ids, switched=switched)
    except MicrosoftError as error:
        ids.note(error)
        return _outcome_for(error, ids.all, assigned_by, switched=switched)
    active = await graph.active_assignments(principal_id, EXCHANGE_ADMINISTRATOR)
    return Assigned(
        via="direct",
        already=False,
        assignments=active.assignments,
        switched_to_direct=switched,
        assigned_by=assigned_by,
        request_ids=ids.all,
    )


async def _already(
    graph: GraphClient,
    principal_id: str,
    via: Literal["pim", "direct"],
    assigned_by: str | None,
    ids: _Ids,
    *,
    switched: bool = False,
) -> AssignmentOutcome:
    active = await graph.active_assignments(principal_id, EXCHANGE_ADMINISTRATOR)
    if not active:
        return Failed(
            code="AssignmentNotReadBack",
            message="Microsoft says the assignment exists, but it does not show among the "
            "active assignments (it may be eligible rather than active, or still replicating).",
            retryable=True,
            assigned_by=assigned_by,
            request_ids=ids.all,
        )
    return Assigned(
        via="pim" if active.via_pim and via == "pim" else via,
        already=True,
        assignments=active.assignments,
        switched_to_direct=switched,
        assigned_by=assigned_by,
        request_ids=ids.all,
    )


def _needs_more(
    rules: tuple[str, ...],
    requirements: RoleRequirements,
    assigned_by: str | None,
    request_ids: tuple[str, ...],
) -> NeedsMore:
    fields = tuple(dict.fromkeys(block for rule in rules for block in _RULE_FIELDS.get(rule, ())))
    return NeedsMore(
        rules=rules,
        fields=fields,
        requirements=requirements.tightened(rules),
        mfa="MfaRule" in rules,
        assigned_by=assigned_by,
        request_ids=request_ids,
    )


def _outcome_for(
    error: MicrosoftError,
    request_ids: tuple[str, ...],
    assigned_by: str | None,
    *,
    switched: bool,
) -> AssignmentOutcome:
    if isinstance(error, Forbidden):
        return NotPermitted(
            user=assigned_by,
            code=error.code,
            switched_to_direct=switched,
            request_ids=request_ids,
        )
    if isinstance(error, ServiceError):
        return Failed(
            code=error.code,
            message=error.message,
            retryable=False,
            assigned_by=assigned_by,
            request_ids=request_ids,
        )
    if isinstance(error, MicrosoftUnavailable):
        return Failed(
            code="MicrosoftUnavailable",
            message=str(error),
            retryable=True,
            assigned_by=assigned_by,
            request_ids=request_ids,
        )
    if isinstance(error, TokenError):
        return SignInFailed(
            error=error.error,
            description=error.description,
            user=assigned_by,
            request_ids=request_ids,
        )
    return Failed(
        code=type(error).__name__,
        message=str(error),
        retryable=False,
        assigned_by=assigned_by,
        request_ids=request_ids,
    )


# -- the delegated sign-in -------------------------------------------------------------------------


@dataclass(frozen=True)
class RoleSignIn:
    """The "Assign for me" sign-in, with the scopes role assignment needs.

    ``new_app`` builds a ``MicrosoftApp`` for the app registration used for delegated sign-in
    (the directory-sync app). A fresh one is built for each start and each redirect and closed
    right after, so MSAL's in-memory token cache never outlives the one use of the token.
    ``redirect_uri`` is ``{PUBLIC_URL}/microsoft/callback``; Microsoft POSTs the result there.
    """

    new_app: Callable[[], MicrosoftApp]
    graph_url: str
    redirect_uri: str
    retry: RetryPolicy = DEFAULT_RETRY

    @property
    def scopes(self) -> tuple[str, ...]:
        return role_assignment_scopes(self.graph_url)

    async def start(
        self,
        tenant_id: str,
        *,
        login_hint: str | None = None,
        fresh_sign_in: bool = False,
    ) -> SignInFlow:
        """A sign-in link (``flow.auth_uri``) for ``tenant_id``. Keep ``flow`` server-side
        (one-time, short-lived, keyed by ``flow.state``) until the redirect.
        ``fresh_sign_in`` asks Microsoft to prompt for credentials again (after an MFA
        refusal, so the admin signs in with multifactor authentication)."""
        app = self.new_app()
        try:
            return await app.initiate_sign_in(
                tenant_id,
                self.scopes,
                self.redirect_uri,
                login_hint=login_hint,
                prompt="login" if fresh_sign_in else None,
            )
        finally:
            app.close()

    async def redeem(
        self, tenant_id: str, flow: SignInFlow, auth_response: Mapping[str, str]
    ) -> SignedIn | SignInFailed | Failed:
        """Redeem the posted answer for a token and say who signed in (the id_token's user),
        changing nothing in the tenant. A wrong state or nonce (``state_mismatch``,
        ``nonce_mismatch``) or a sign-in to another tenant (``wrong_tenant``) is a
        ``SignInFailed``; so is a cancel or a refusal."""
        app = self.new_app()
        try:
            token = await app.complete_sign_in(tenant_id, flow, auth_response)
        except MicrosoftUnavailable as error:
            return Failed(code="MicrosoftUnavailable", message=str(error), retryable=True)
        except TokenError as error:
            return _sign_in_failure(error)
        except MicrosoftError as error:
            return Failed(code=type(error).__name__, message=str(error), retryable=False)
        finally:
            app.close()
        user = token.user_principal_name or token.display_name or token.user_object_id
        if (token.tenant_id or "").lower() != tenant_id.lower():
            return SignInFailed(
                error="wrong_tenant",
                description=f"{user or 'The account'} signed in to tenant "
                f"{token.tenant_id or 'unknown'}, not to {tenant_id}.",
                user=user,
            )
        return SignedIn(token=token, user=user or "unknown")

    async def assign_as(
        self,
        signed_in: SignedIn,
        tenant_id: str,
        *,
        http: httpx.AsyncClient,
        principal_id: str | None = None,
        app_id: str | None = None,
        request: RoleRequest,
        requirements: RoleRequirements,
    ) -> AssignmentOutcome:
        """Assign the role with ``signed_in``'s token, then drop it. Never raises for a
        Microsoft answer. The principal is ``principal_id``, or the service principal of
        ``app_id`` looked up with the same sign-in (step 2 comes before any app-only Graph
        access exists)."""
        watch_request_ids(http)
        graph = GraphClient(
            http, self.graph_url, delegated_provider(signed_in.token), retry=self.retry
        )
        if principal_id is None:
            found = await _principal_of(graph, app_id or "")
            if isinstance(found, Failed):
                return found
            principal_id = found
        outcome = await assign_with_delegated_token(
            graph,
            principal_id=principal_id,
            request=request,
            requirements=requirements,
            assigned_by=signed_in.user,
        )
        del graph
        log.info(
            "role assignment for service principal %s in tenant %s: %s",
            principal_id,
            tenant_id,
            audit_detail(outcome),
        )
        return outcome

    async def assign(
        self,
        tenant_id: str,
        flow: SignInFlow,
        auth_response: Mapping[str, str],
        *,
        http: httpx.AsyncClient,
        principal_id: str | None = None,
        app_id: str | None = None,
        request: RoleRequest,
        requirements: RoleRequirements,
    ) -> AssignmentOutcome:
        """``redeem`` then ``assign_as``: on the redirect, redeem ``auth_response`` (the posted
        form fields) for a token, assign the role with it, and drop it."""
        signed_in = await self.redeem(tenant_id, flow, auth_response)
        if not isinstance(signed_in, SignedIn):
            return signed_in
        return await self.assign_as(
            signed_in,
            tenant_id,
            http=http,
            principal_id=principal_id,
            app_id=app_id,
            request=request,
            requirements=requirements,
        )


async def _principal_of(graph: GraphClient, app_id: str) -> str | Failed:
    try:
        principal = await graph.find_service_principal(app_id)
    except MicrosoftUnavailable as error:
        return Failed(code="MicrosoftUnavailable", message=str(error), retryable=True)
    except ServiceError as error:
        return Failed(code=error.code, message=error.message, retryable=False)
    if principal is None:
        return Failed(
            code="ServicePrincipalNotFound",
            message=f"The app {app_id} has no service principal in this tenant yet: give the "
            "mail-flow consent (step 1) first.",
            retryable=False,
        )
    return principal.id


def _sign_in_failure(error: TokenError) -> SignInFailed:
    if isinstance(error, ConsentMissing):
        return SignInFailed(
            error=error.error,
            description="The sign-in app has no consent for the role-assignment permission in "
            "this tenant. A Global Administrator or Privileged Role Administrator signing in "
            "once grants it.",
        )
    return SignInFailed(error=error.error, description=error.description)


# -- "I've assigned it" --------------------------------------------------------------------------


@dataclass(frozen=True)
class PendingRequest:
    id: str
    status: str
    created: datetime | None


@dataclass(frozen=True)
class AssignmentCheck:
    """What Graph shows for the mail-flow app's Exchange Administrator role.

    ``pending`` is ``None`` when pending PIM requests could not be listed (no PIM, or the read
    was refused).
    """

    app_id: str
    service_principal: ServicePrincipal | None
    assignments: tuple[RoleAssignment, ...]
    via_pim: bool
    pending: tuple[PendingRequest, ...] | None
    request_ids: tuple[str, ...] = ()

    @property
    def assigned(self) -> bool:
        return bool(self.assignments)

    @property
    def summary(self) -> str:
        """One paragraph (Slack mrkdwn) saying what was found and what to do next."""
        app = f"the mail-flow app (app ID `{self.app_id}`)"
        if self.service_principal is None:
            return (
                f"Microsoft has no service principal for {app} in this tenant: the step 1 "
                "consent is missing or was removed. A Global Administrator must consent again "
                "before the role can be assigned."
            )
        if self.assignments:
            first = self.assignments[0]
            how = "through PIM" if self.via_pim else "as a direct assignment"
            until = (
                f"until {first.end.astimezone(UTC):%Y-%m-%d %H:%M} UTC"
                if first.end is not None
                else "permanently"
            )
            return (
                f":white_check_mark: {app.capitalize()} holds an active *Exchange "
                f"Administrator* assignment {how}, {until}. Exchange can take up to 30 minutes "
                "to notice a new role; the verification in step 4 waits for it."
            )
        if self.pending:
            request = self.pending[0]
            return (
                f":hourglass_flowing_sand: A PIM request for {app} is waiting "
                f"(status *{request.status}*) and is not active yet. Complete it in Privileged "
                "Identity Management, then check again."
            )
        return (
            f":x: No active *Exchange Administrator* assignment for {app} yet. If you assigned "
            "it a moment ago, Microsoft can take a minute to show it: check again shortly. In "
            "PIM, the assignment type must be *Active*, not *Eligible* (an app cannot activate "
            "an eligible role); make sure the member you selected has this app ID."
        )


async def check_assignment(graph_app_only: GraphClient, mailflow_app_id: str) -> AssignmentCheck:
    """Is the role there? Service principal, active assignment (PIM schedule instances, or role
    assignments without Entra ID P2), and pending PIM requests. Raises ``MicrosoftError`` when
    Graph cannot be read at all (the caller says so and offers to check again)."""
    with _Ids() as ids:
        try:
            principal = await graph_app_only.find_service_principal(mailflow_app_id)
            if principal is None:
                return AssignmentCheck(
                    mailflow_app_id, None, (), via_pim=False, pending=None, request_ids=ids.all
                )
            active = await graph_app_only.active_assignments(principal.id, EXCHANGE_ADMINISTRATOR)
        except ServiceError as error:
            ids.note(error)
            raise
        pending = None
        if active.via_pim and not active:
            pending = await _pending_requests(graph_app_only, principal.id, ids)
        return AssignmentCheck(
            app_id=mailflow_app_id,
            service_principal=principal,
            assignments=active.assignments,
            via_pim=active.via_pim,
            pending=pending,
            request_ids=ids.all,
        )


async def _pending_requests(
    graph: GraphClient, principal_id: str, ids: _Ids
) -> tuple[PendingRequest, ...] | None:
    # GraphClient has no call for schedule requests yet; this uses its request plumbing
    # (retries, paging, error mapping) so the call behaves like the others.
    quoted = principal_id.replace("'", "''")
    url = graph._url(
        "roleManagement/directory/roleAssignmentScheduleRequests",
        **{"$filter": f"principalId eq '{quoted}'"},
    )
    try:
        items = await graph._collect(url)
    except MicrosoftError as error:
        ids.note(error)
        return None
    found = []
    for item in items:
        if (
            item.get("roleDefinitionId") == EXCHANGE_ADMINISTRATOR
            and item.get("status") in _PENDING_STATUSES
        ):
            created = item.get("createdDateTime")
            when = None
            if isinstance(created, str):
                try:
                    when = datetime.fromisoformat(created.replace("Z", "+00:00"))
                except ValueError:
                    when = None
            found.append(PendingRequest(str(item.get("id", "")), str(item["status"]), when))
    return tuple(found)

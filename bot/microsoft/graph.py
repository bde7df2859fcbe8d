"""Microsoft Graph (v1.0): exactly the calls provisioning needs, with typed results.

Errors are mapped by the Graph error ``code`` (see ``bot.microsoft.errors``); 429/503 honour
``Retry-After`` and other transient failures back off with jitter (``bot.microsoft.retry``);
collections follow ``@odata.nextLink``.
"""

from __future__ import annotations

import json
import logging
import re
import urllib.parse
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import httpx

from bot.microsoft.errors import (
    AlreadyExists,
    AuthorizationDenied,
    Forbidden,
    MicrosoftError,
    MicrosoftUnavailable,
    NotFound,
    PolicyValidationFailed,
    PremiumLicenseRequired,
    ServiceError,
)
from bot.microsoft.identity import TokenProvider
from bot.microsoft.model import (
    ActiveAssignments,
    AppRoleAssignment,
    Domain,
    Expiration,
    Organization,
    RoleAssignment,
    RolePolicy,
    ScheduleRequest,
    ServicePrincipal,
    Ticket,
    iso_time,
    parse_iso_duration,
    parse_time,
)
from bot.microsoft.paging import next_page
from bot.microsoft.retry import DEFAULT_RETRY, RetryPolicy, parse_retry_after

__all__ = ["GraphClient", "error_from_response"]

log = logging.getLogger(__name__)

_CONFLICT_CODES = frozenset({"Request_BadRequest"})


def _error_parts(response: httpx.Response) -> tuple[str, str, str | None]:
    code, message = f"HTTP{response.status_code}", response.reason_phrase
    request_id = response.headers.get("request-id")
    try:
        body = response.json()
    except (ValueError, json.JSONDecodeError):
        body = None
    if isinstance(body, dict) and isinstance(body.get("error"), dict):
        error = body["error"]
        code = str(error.get("code") or code)
        message = str(error.get("message") or message)
        inner = error.get("innerError") or error.get("innererror") or {}
        if isinstance(inner, dict):
            request_id = str(inner.get("request-id") or request_id or "") or None
    return code, message, request_id


_RULES = re.compile(r"\b([A-Z][A-Za-z]*Rule)\b")


def error_from_response(
    response: httpx.Response, *, what: str = "Microsoft Graph"
) -> MicrosoftError:
    """The error for a non-success Graph (or Exchange admin API) answer, chosen by ``code``."""
    status = response.status_code
    code, message, request_id = _error_parts(response)
    if status >= 500 or status == 429:
        seconds = parse_retry_after(response.headers.get("Retry-After"))
        return MicrosoftUnavailable(f"{what} answered {status} {code}", retry_after=seconds)
    if code == "AadPremiumLicenseRequired":
        return PremiumLicenseRequired(status, code, message, request_id)
    if code == "RoleAssignmentRequestPolicyValidationFailed":
        rules = tuple(dict.fromkeys(_RULES.findall(message)))
        return PolicyValidationFailed(status, code, message, request_id, rules=rules)
    if code == "RoleAssignmentExists" or code.endswith("AlreadyExistsException"):
        return AlreadyExists(status, code, message, request_id)
    if code == "Authorization_RequestDenied":
        return AuthorizationDenied(status, code, message, request_id)
    if status in (401, 403):
        return Forbidden(status, code, message, request_id)
    if status == 404 or code == "Request_ResourceNotFound" or code.endswith("NotFoundException"):
        return NotFound(status, code, message, request_id)
    return ServiceError(status, code, message, request_id)


def _odata_quote(value: str) -> str:
    return value.replace("'", "''")


# -- the client ----------------------------------------------------------------------------------


class GraphClient:
    """Graph v1.0 on ``graph_url`` (e.g. ``https://graph.microsoft.com``) with one token source.

    Use an app-only provider for reads (directory-sync app) and a delegated one (the signed-in
    administrator) to assign roles.
    """

    def __init__(
        self,
        http: httpx.AsyncClient,
        graph_url: str,
        token: TokenProvider,
        *,
        retry: RetryPolicy = DEFAULT_RETRY,
    ) -> None:
        self._http = http
        self._base = graph_url.rstrip("/") + "/v1.0"
        self._token = token
        self._retry = retry

    def __repr__(self) -> str:
        return f"GraphClient({self._base!r})"

    async def _request(
        self,
        method: str,
        url: str,
        *,
        body: Mapping[str, Any] | None = None,
        idempotent: bool = True,
    ) -> Any:
        token = await self._token.access_token()
        headers = {"Authorization": f"Bearer {token}", "Accept": "application/json"}

        async def send() -> httpx.Response:
            return await self._http.request(method, url, headers=headers, json=body)

        response = await self._retry.send(send, idempotent=idempotent, what="Microsoft Graph")
        if response.is_success:
            return response.json() if response.content else None
        error = error_from_response(response)
        log.info(
            "Graph %s %s answered %s (%s)",
            method,
            urllib.parse.urlsplit(url).path,
            response.status_code,
            getattr(error, "code", type(error).__name__),
        )
        raise error

    async def _collect(self, url: str) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = []
        next_url: str | None = url
        while next_url:
            page = await self._request("GET", next_url)
            items.extend(item for item in page.get("value", []) if isinstance(item, dict))
            next_url = next_page(page.get("@odata.nextLink"), self._base)
        return items

    def _url(self, path: str, **query: str) -> str:
        url = f"{self._base}/{path}"
        if query:
            url += "?" + urllib.parse.urlencode(query, quote_via=urllib.parse.quote)
        return url

    # -- service principals ----------------------------------------------------------------------

    async def find_service_principal(self, app_id: str) -> ServicePrincipal | None:
        """The app's service principal in this tenant; ``None`` means consent was not given."""
        url = self._url(f"servicePrincipals(appId='{_odata_quote(app_id)}')")
        try:
            body = await self._request("GET", url)
        except NotFound:
            return None
        return ServicePrincipal(
            id=body["id"],
            app_id=body["appId"],
            display_name=body.get("displayName") or "",
            app_owner_organization_id=body.get("appOwnerOrganizationId"),
        )

    async def app_role_assignments(
        self, service_principal_id: str
    ) -> tuple[AppRoleAssignment, ...]:
        """The application permissions granted to a service principal."""
        items = await self._collect(
            self._url(
                f"servicePrincipals/{urllib.parse.quote(service_principal_id)}/appRoleAssignments"
            )
        )
        return tuple(
            AppRoleAssignment(
                id=i["id"],
                principal_id=i.get("principalId", ""),
                resource_id=i.get("resourceId", ""),
                resource_display_name=i.get("resourceDisplayName") or "",
                app_role_id=i.get("appRoleId", ""),
            )
            for i in items
        )

    # -- PIM policy ------------------------------------------------------------------------------

    async def role_policy(self, role_definition_id: str) -> RolePolicy:
        """The PIM rules for admin assignments of a directory role (needs Entra ID P2)."""
        url = self._url(
            "policies/roleManagementPolicyAssignments",
            **{
                "$filter": "scopeId eq '/' and scopeType eq 'DirectoryRole' and "
                f"roleDefinitionId eq '{_odata_quote(role_definition_id)}'",
                "$expand": "policy($expand=rules)",
            },
        )
        items = await self._collect(url)
        if not items:
            raise NotFound(404, "PolicyNotFound", f"No policy for role {role_definition_id}")
        policy = items[0].get("policy") or {}
        rules = {r.get("id"): r for r in policy.get("rules", []) if isinstance(r, dict)}
        enablement = rules.get("Enablement_Admin_Assignment", {})
        enabled = set(enablement.get("enabledRules") or [])
        expiration = rules.get("Expiration_Admin_Assignment", {})
        maximum_iso = expiration.get("maximumDuration")
        return RolePolicy(
            role_definition_id=role_definition_id,
            policy_id=str(items[0].get("policyId") or policy.get("id") or ""),
            justification_required="Justification" in enabled,
            ticketing_required="Ticketing" in enabled,
            mfa_required="MultiFactorAuthentication" in enabled,
            expiration_required=bool(expiration.get("isExpirationRequired")),
            maximum_duration=parse_iso_duration(maximum_iso) if maximum_iso else None,
            maximum_duration_iso=maximum_iso or None,
        )

    # -- role assignments ------------------------------------------------------------------------

    async def request_role_assignment(
        self,
        principal_id: str,
        role_definition_id: str,
        justification: str,
        *,
        expiration: Expiration | None = None,
        ticket: Ticket | None = None,
        start: datetime | None = None,
    ) -> ScheduleRequest:
        """A PIM ``adminAssign`` request (active assignment). Raises ``AlreadyExists``,
        ``PolicyValidationFailed`` (see ``rules``), ``AuthorizationDenied``,
        ``PremiumLicenseRequired``."""
        body: dict[str, Any] = {
            "action": "adminAssign",
            "justification": justification,
            "roleDefinitionId": role_definition_id,
            "directoryScopeId": "/",
            "principalId": principal_id,
            "scheduleInfo": {
                "startDateTime": iso_time(start or datetime.now(UTC)),
                "expiration": (expiration or Expiration.never()).to_json(),
            },
        }
        if ticket is not None:
            body["ticketInfo"] = {"ticketNumber": ticket.number, "ticketSystem": ticket.system}
        created = await self._request(
            "POST",
            self._url("roleManagement/directory/roleAssignmentScheduleRequests"),
            body=body,
        )
        return ScheduleRequest(
            id=created.get("id", ""),
            status=created.get("status", ""),
            principal_id=created.get("principalId", principal_id),
            role_definition_id=created.get("roleDefinitionId", role_definition_id),
            target_schedule_id=created.get("targetScheduleId"),
        )

    async def assign_role(self, principal_id: str, role_definition_id: str) -> RoleAssignment:
        """A direct (non-PIM, permanent) assignment. An existing one raises ``AlreadyExists``."""
        try:
            created = await self._request(
                "POST",
                self._url("roleManagement/directory/roleAssignments"),
                body={
                    "@odata.type": "#microsoft.graph.unifiedRoleAssignment",
                    "roleDefinitionId": role_definition_id,
                    "principalId": principal_id,
                    "directoryScopeId": "/",
                },
            )
        except ServiceError as error:
            # A duplicate answers the generic Request_BadRequest: read back rather than parse
            # the message; an assignment that exists means the conflict was the duplicate.
            if error.code in _CONFLICT_CODES and await self.active_assignments(
                principal_id, role_definition_id
            ):
                raise AlreadyExists(
                    error.status, error.code, error.message, error.request_id
                ) from None
            raise
        return RoleAssignment(
            id=created.get("id", ""),
            principal_id=created.get("principalId", principal_id),
            role_definition_id=created.get("roleDefinitionId", role_definition_id),
            directory_scope_id=created.get("directoryScopeId", "/"),
        )

    async def active_assignments(
        self, principal_id: str, role_definition_id: str
    ) -> ActiveAssignments:
        """Active assignments of a role to a principal: PIM schedule instances, or on tenants
        without Entra ID P2 (``AadPremiumLicenseRequired``) the plain role assignments."""
        principal = _odata_quote(principal_id)
        role = _odata_quote(role_definition_id)
        try:
            items = await self._collect(
                self._url(
                    "roleManagement/directory/roleAssignmentScheduleInstances",
                    **{"$filter": f"principalId eq '{principal}' and roleDefinitionId eq '{role}'"},
                )
            )
            via_pim = True
        except PremiumLicenseRequired:
            items = await self._collect(
                self._url(
                    "roleManagement/directory/roleAssignments",
                    **{"$filter": f"principalId eq '{principal}'"},
                )
            )
            via_pim = False
        return ActiveAssignments(
            assignments=tuple(
                RoleAssignment(
                    id=i.get("id", ""),
                    principal_id=i.get("principalId", ""),
                    role_definition_id=i.get("roleDefinitionId", ""),
                    directory_scope_id=i.get("directoryScopeId", "/"),
                    start=parse_time(i.get("startDateTime")),
                    end=parse_time(i.get("endDateTime")),
                )
                for i in items
                if i.get("roleDefinitionId") == role_definition_id
            ),
            via_pim=via_pim,
        )

    async def ensure_role_assignment(
        self,
        principal_id: str,
        role_definition_id: str,
        *,
        use_pim: bool,
        justification: str = "",
        expiration: Expiration | None = None,
        ticket: Ticket | None = None,
    ) -> tuple[bool, ActiveAssignments]:
        """Assign the role unless it is already active; ``(created, assignments now)``.

        ``RoleAssignmentExists`` and the direct-assignment conflict count as success once the
        assignment reads back.
        """
        try:
            if use_pim:
                await self.request_role_assignment(
                    principal_id,
                    role_definition_id,
                    justification,
                    expiration=expiration,
                    ticket=ticket,
                )
            else:
                await self.assign_role(principal_id, role_definition_id)
            created = True
        except AlreadyExists:
            created = False
        active = await self.active_assignments(principal_id, role_definition_id)
        if not active and not created:
            raise MicrosoftError("Microsoft says the assignment exists but it does not read back")
        return created, active

    # -- tenant ------------------------------------------------------------------------------------

    async def domains(self) -> tuple[Domain, ...]:
        items = await self._collect(self._url("domains"))
        return tuple(
            Domain(
                name=i["id"],
                is_verified=bool(i.get("isVerified")),
                is_default=bool(i.get("isDefault")),
                is_initial=bool(i.get("isInitial")),
                supported_services=tuple(i.get("supportedServices") or ()),
            )
            for i in items
        )

    async def organization(self) -> Organization:
        items = await self._collect(self._url("organization"))
        if not items:
            raise NotFound(404, "Request_ResourceNotFound", "No organization object")
        org = items[0]
        verified = [d for d in org.get("verifiedDomains") or [] if isinstance(d, dict)]
        return Organization(
            id=org.get("id", ""),
            display_name=org.get("displayName") or "",
            verified_domains=tuple(d.get("name", "") for d in verified),
            default_domain=next((d["name"] for d in verified if d.get("isDefault")), None),
            initial_domain=next((d["name"] for d in verified if d.get("isInitial")), None),
        )

"""A simulated Microsoft cloud: sign-in (login), Microsoft Graph and the Exchange admin API.

One Starlette app serves all three under path prefixes, so the bot is configured with::

    MICROSOFT_LOGIN_URL=https://127.0.0.1:P/login
    MICROSOFT_GRAPH_URL=https://127.0.0.1:P/graph
    MICROSOFT_EXCHANGE_URL=https://127.0.0.1:P/exchange

Serve ``SandboxMicrosoft(...).app`` with ``bot.sandbox.server.serve_asgi(app, tls=...)``. Every
URL the sandbox hands out (discovery documents, issuers, paging links) is derived from the request,
so it needs no configuration of its own address.

What it simulates:

- login: OpenID discovery for tenant GUIDs and verified domains (400 ``AADSTS90002`` otherwise);
  v2 (``/{tenant}/v2.0/adminconsent``) and v1 (``/{tenant}/adminconsent``) admin consent; the
  authorize endpoint (auth code + PKCE + nonce) and the token endpoint (client credentials with a
  secret or a certificate assertion, authorization code, refresh token). The sign-in page is a
  small HTML form (an email field ``login_hint`` and the buttons "Accept" and "Cancel"), so a
  headless browser can click through it; ``sign_in(upn, auto=...)`` makes the "browser" signed in
  already, and with ``auto`` set the page answers at once with the redirect (no clicking).
  A user of another tenant consents in their own tenant (the redirect then names that tenant).
- Graph v1.0: the calls of DESIGN §2 with permissions enforced from the token (app roles for
  app-only tokens; scopes plus the user's directory role for delegated ones), PIM policies,
  ``AadPremiumLicenseRequired`` on tenants without P2, the assignment conflicts, paging.
- Exchange admin API: ``InvokeCommand`` over an in-memory Exchange organisation; 401 without the
  ``Exchange.ManageAsApp`` grant, 403 until an Exchange Administrator (or Global Administrator)
  role assignment of the app is older than the replication delay on the sandbox clock.
- Faults on demand (``fail``), latency (``set_latency``), and a record of every request
  (``requests``) with its parsed body (secrets redacted) and the caller behind the token.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import html
import json
import logging
import re
import secrets
import time
import urllib.parse
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

import jwt
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from bot.sandbox.exchange_reference import ExchangeReference, load_reference
from bot.sandbox.exchange_reference import Finding as ReferenceFinding
from bot.sandbox.exchange_reference import Severity as ReferenceSeverity
from bot.sandbox.holds import HeldCall, Hold, Holds

__all__ = [
    "DIRSYNC_APP_ROLES",
    "DIRSYNC_SCOPES",
    "EXCHANGE",
    "EXCHANGE_ADMINISTRATOR",
    "EXCHANGE_MANAGE_AS_APP",
    "GLOBAL_ADMINISTRATOR",
    "GRAPH",
    "MAILFLOW_APP_ROLES",
    "PRIVILEGED_ROLE_ADMINISTRATOR",
    "AppRoleGrant",
    "Fault",
    "IssuedToken",
    "ManualClock",
    "PolicyRules",
    "RecordedRequest",
    "RequiredPermission",
    "Resource",
    "RoleAssignmentRecord",
    "SandboxApp",
    "SandboxMicrosoft",
    "SandboxTenant",
    "SandboxUser",
    "ServicePrincipalRecord",
    "dirsync_registration",
    "mailflow_registration",
    "vendor_apps",
]

EXCHANGE_ADMINISTRATOR = "29232cdf-9323-42fd-ade2-1d097af3e4de"
PRIVILEGED_ROLE_ADMINISTRATOR = "e8611ab8-c189-46e8-94e1-60213ab1f814"
GLOBAL_ADMINISTRATOR = "62e90394-69f5-4237-9190-012177145e10"
EXCHANGE_MANAGE_AS_APP = "dc50a0fb-09a3-484d-be87-e023b12c6440"
ANCHOR_MAILBOX_GUID = "bb558c35-97f1-4cb9-8ff7-d53741dc928c"

ROLE_NAMES = {
    EXCHANGE_ADMINISTRATOR: "Exchange Administrator",
    PRIVILEGED_ROLE_ADMINISTRATOR: "Privileged Role Administrator",
    GLOBAL_ADMINISTRATOR: "Global Administrator",
}
ROLE_ASSIGNERS = frozenset({PRIVILEGED_ROLE_ADMINISTRATOR, GLOBAL_ADMINISTRATOR})
EXCHANGE_ROLES = frozenset({EXCHANGE_ADMINISTRATOR, GLOBAL_ADMINISTRATOR})
OIDC_SCOPES = frozenset({"openid", "profile", "offline_access", "email"})

log = logging.getLogger(__name__)

Service = Literal["login", "graph", "exchange"]


def _new_id() -> str:
    return str(uuid.uuid4())


def _iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


# -- the model -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Resource:
    """An API the apps ask permissions for (Microsoft Graph, Exchange Online)."""

    app_id: str
    display_name: str
    service: Literal["graph", "exchange"]
    identifier: str
    app_roles: Mapping[str, str]
    scopes: Mapping[str, str]


GRAPH = Resource(
    app_id="00000003-0000-0000-c000-000000000000",
    display_name="Microsoft Graph",
    service="graph",
    identifier="https://graph.microsoft.com",
    app_roles={
        "Application.Read.All": "9a5d68dd-52b0-4cc2-bd40-abcf44ac3a30",
        "Directory.Read.All": "7ab1d382-f21e-4acd-a863-ba3e13f7da61",
        "Domain.Read.All": "dbb9058a-0e50-45d7-ae91-66909b5d4664",
        "Organization.Read.All": "498476ce-e0fe-48b0-b801-37ba7e2685c6",
        "RoleManagement.Read.Directory": "483bed4a-2ad3-4361-a73b-c83ccdbdc53c",
        "RoleManagement.ReadWrite.Directory": "9e3f62cf-ca93-4989-b6ce-bf83c28f9fe8",
        "RoleManagementPolicy.Read.Directory": "69e67828-780e-47fd-b28c-7b27d14864e6",
        "User.Read.All": "df021288-bdef-4463-88db-98f22de89214",
    },
    scopes={
        "User.Read": "e1fe6dd8-ba31-4d61-89e7-88639da4683d",
        "Directory.Read.All": "06da0dbc-49e2-44d2-8312-53f166ab848a",
        "RoleManagement.Read.Directory": "741c54c3-0c1e-44a1-818b-3f97ab4e8c83",
        "RoleManagement.ReadWrite.Directory": "d01b97e9-cbc0-49fe-810a-750afd5527a3",
        "RoleAssignmentSchedule.ReadWrite.Directory": "8c026be3-8e26-4774-9372-8d5d6f21daff",
        "RoleManagementPolicy.Read.Directory": "3de2cdbe-0ff5-47d5-bdee-7f45b4749ead",
    },
)
EXCHANGE = Resource(
    app_id="00000002-0000-0ff1-ce00-000000000000",
    display_name="Office 365 Exchange Online",
    service="exchange",
    identifier="https://outlook.office365.com",
    app_roles={"Exchange.ManageAsApp": EXCHANGE_MANAGE_AS_APP},
    scopes={"Exchange.Manage": "ab4f2b77-0b06-4fc1-a9de-02113fc2ab7c"},
)
RESOURCES = (GRAPH, EXCHANGE)


@dataclass(frozen=True)
class RequiredPermission:
    """Permissions an app registration lists for one resource (by the resource's app id)."""

    resource_app_id: str
    app_roles: tuple[str, ...] = ()
    scopes: tuple[str, ...] = ()


@dataclass
class SandboxApp:
    """A multi-tenant app registration (lives in the vendor's tenant, consented into others).

    Authenticate with ``secret`` or with a certificate (``certificate_pem``: the public
    certificate, PEM; the client signs assertions with the matching private key). An empty
    ``redirect_uris`` accepts any redirect URI.
    """

    client_id: str
    display_name: str
    secret: str | None = field(default=None, repr=False)
    certificate_pem: bytes | None = field(default=None, repr=False)
    redirect_uris: tuple[str, ...] = ()
    required: tuple[RequiredPermission, ...] = ()


MAILFLOW_APP_ROLES = ("Exchange.ManageAsApp",)
DIRSYNC_APP_ROLES = (
    "Application.Read.All",
    "Domain.Read.All",
    "Organization.Read.All",
    "RoleManagement.Read.Directory",
)
DIRSYNC_SCOPES = ("User.Read", "RoleManagement.ReadWrite.Directory", "Application.Read.All")


def mailflow_registration(client_id: str, secret: str) -> SandboxApp:
    """The vendor's mail-flow app registration: Exchange.ManageAsApp on Exchange Online."""
    return SandboxApp(
        client_id=client_id,
        display_name="Inline Mail Flow",
        secret=secret,
        required=(RequiredPermission(EXCHANGE.app_id, app_roles=MAILFLOW_APP_ROLES),),
    )


def dirsync_registration(
    client_id: str,
    secret: str,
    *,
    scopes: tuple[str, ...] = DIRSYNC_SCOPES,
    certificate_pem: bytes | None = None,
) -> SandboxApp:
    """The vendor's directory-sync app registration: Graph app roles and delegated ``scopes``."""
    return SandboxApp(
        client_id=client_id,
        display_name="Inline Directory Sync",
        secret=secret,
        certificate_pem=certificate_pem,
        required=(RequiredPermission(GRAPH.app_id, app_roles=DIRSYNC_APP_ROLES, scopes=scopes),),
    )


def vendor_apps(
    mailflow_id: str,
    mailflow_secret: str,
    dirsync_id: str,
    dirsync_secret: str,
    *,
    dirsync_scopes: tuple[str, ...] = DIRSYNC_SCOPES,
    dirsync_certificate_pem: bytes | None = None,
) -> list[SandboxApp]:
    """The two app registrations, as the vendor registered them (the permissions they list)."""
    return [
        mailflow_registration(mailflow_id, mailflow_secret),
        dirsync_registration(
            dirsync_id,
            dirsync_secret,
            scopes=dirsync_scopes,
            certificate_pem=dirsync_certificate_pem,
        ),
    ]


@dataclass
class SandboxUser:
    """A user of a sandbox tenant; ``roles`` holds directory role template ids."""

    user_principal_name: str
    display_name: str = ""
    roles: set[str] = field(default_factory=set)
    user_id: str = field(default_factory=_new_id)
    mfa: bool = True


@dataclass
class PolicyRules:
    """The PIM policy for active assignments of one role (what an admin assignment needs)."""

    enabled_rules: tuple[str, ...] = ("Justification",)
    expiration_required: bool = False
    maximum_duration: str = "P180D"


@dataclass
class ServicePrincipalRecord:
    id: str
    app_id: str
    display_name: str
    app_owner_organization_id: str | None


@dataclass
class AppRoleGrant:
    id: str
    principal_id: str
    resource_id: str
    app_role_id: str
    created: float


@dataclass
class RoleAssignmentRecord:
    """An active directory role assignment; ``created`` is on the sandbox clock."""

    id: str
    principal_id: str
    role_definition_id: str
    directory_scope_id: str
    created: float
    end: float | None = None
    via: Literal["pim", "direct"] = "direct"


@dataclass
class ExchangeOrg:
    """The in-memory Exchange Online organisation of a tenant."""

    objects: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)
    ip_allow_list: list[str] = field(default_factory=list)
    spoof_items: list[dict[str, Any]] = field(default_factory=list)
    #: Smart hosts that do not answer (Validate-OutboundConnector fails for connectors using them).
    unreachable_smart_hosts: set[str] = field(default_factory=set)
    #: What the reference says about accepted calls: settings with no effect, discouraged ones.
    reference_findings: list[ReferenceFinding] = field(default_factory=list)


@dataclass
class SandboxTenant:
    """One Entra ID tenant with its Exchange Online organisation.

    ``pim_enabled``: the tenant governs roles through PIM; its ``role_policies`` apply to schedule
    requests (without it, policies require nothing). ``premium_p2=False``: the PIM APIs answer
    400 ``AadPremiumLicenseRequired``. ``replication_delay`` (seconds on the sandbox clock)
    overrides the sandbox-wide delay before a role assignment reaches Exchange.
    """

    tenant_id: str
    display_name: str
    initial_domain: str
    domains: list[str] = field(default_factory=list)
    users: list[SandboxUser] = field(default_factory=list)
    pim_enabled: bool = True
    premium_p2: bool = True
    role_policies: dict[str, PolicyRules] = field(default_factory=dict)
    replication_delay: float | None = None
    default_domain: str | None = None
    service_principals: list[ServicePrincipalRecord] = field(default_factory=list)
    app_role_grants: list[AppRoleGrant] = field(default_factory=list)
    delegated_grants: dict[tuple[str, str], set[str]] = field(default_factory=dict)
    role_assignments: list[RoleAssignmentRecord] = field(default_factory=list)
    schedule_requests: list[dict[str, Any]] = field(default_factory=list)
    exchange: ExchangeOrg = field(default_factory=ExchangeOrg)

    @property
    def verified_domains(self) -> list[str]:
        """Every verified domain, the initial ``*.onmicrosoft.com`` one first."""
        return [self.initial_domain, *[d for d in self.domains if d != self.initial_domain]]

    def policy_for(self, role_definition_id: str) -> PolicyRules:
        if not self.pim_enabled:
            return PolicyRules(
                enabled_rules=(), expiration_required=False, maximum_duration="P365D"
            )
        return self.role_policies.get(role_definition_id, PolicyRules())

    def user(self, upn_or_id: str) -> SandboxUser | None:
        key = upn_or_id.lower()
        for user in self.users:
            if key in (user.user_principal_name.lower(), user.user_id):
                return user
        return None

    def service_principal(self, app_id: str) -> ServicePrincipalRecord | None:
        for sp in self.service_principals:
            if sp.app_id == app_id:
                return sp
        return None


@dataclass
class ManualClock:
    """A clock for tests: stands still until ``advance`` is called."""

    now: float = 1_750_000_000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@dataclass
class IssuedToken:
    tenant_id: str
    client_id: str
    service: Literal["graph", "exchange"]
    user: SandboxUser | None
    roles: frozenset[str]
    scopes: frozenset[str]
    expires: float


@dataclass
class Fault:
    """A failure to inject: the next ``times`` matching requests get it."""

    service: Service | None = None
    status: int = 503
    retry_after: float | None = None
    drop: bool = False
    path_contains: str | None = None
    times: int = 1

    def matches(self, service: Service, path: str) -> bool:
        return (
            self.times > 0
            and self.service in (None, service)
            and (self.path_contains is None or self.path_contains in path)
        )


@dataclass(frozen=True)
class RecordedRequest:
    """One request the sandbox received. ``body`` is parsed JSON or form data, secrets redacted."""

    service: Service
    method: str
    path: str
    query: Mapping[str, str]
    body: Any
    client_id: str | None
    user: str | None
    tenant_id: str | None
    status: int


@dataclass
class _AuthCode:
    client_id: str
    redirect_uri: str
    tenant_id: str
    user: SandboxUser
    scopes: tuple[str, ...]
    code_challenge: str | None
    code_challenge_method: str
    nonce: str | None
    expires: float


@dataclass
class _Refresh:
    client_id: str
    tenant_id: str
    user: SandboxUser
    scopes: tuple[str, ...]


class _SandboxError(Exception):
    def __init__(self, response: Response) -> None:
        super().__init__("sandbox error response")
        self.response = response


_REDACTED_FIELDS = frozenset(
    {"client_secret", "client_assertion", "code", "code_verifier", "refresh_token", "password"}
)


class _DropFilter(logging.Filter):
    """Hides uvicorn's complaint about the responses the sandbox cuts off on purpose."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "without completing response" not in record.getMessage()


logging.getLogger("uvicorn.error").addFilter(_DropFilter())


# -- the sandbox ---------------------------------------------------------------------------------


class SandboxMicrosoft:
    """The simulated cloud. ``.app`` is the ASGI application to serve.

    ``apps``: the registered client apps. ``clock``: seconds since the epoch, used for role
    replication and timestamps (pass a ``ManualClock`` to control it). ``replication_delay``:
    seconds before a new role assignment works in Exchange. Page sizes control paging.
    """

    def __init__(
        self,
        tenants: Sequence[SandboxTenant],
        apps: Sequence[SandboxApp] = (),
        *,
        clock: Callable[[], float] = time.time,
        replication_delay: float = 0.0,
        graph_page_size: int = 100,
        exchange_page_size: int = 1000,
        token_lifetime: float = 3600.0,
        exchange_reference: ExchangeReference | None = None,
    ) -> None:
        self.tenants: dict[str, SandboxTenant] = {t.tenant_id.lower(): t for t in tenants}
        self.apps: dict[str, SandboxApp] = {a.client_id.lower(): a for a in apps}
        self.clock = clock
        self.replication_delay = replication_delay
        self.graph_page_size = graph_page_size
        self.exchange_page_size = exchange_page_size
        # Exchange refuses what Microsoft's reference says it refuses (../shared/msref).
        self.exchange_reference = exchange_reference or load_reference()
        self.token_lifetime = token_lifetime
        # A fault on demand: paging links that point at another origin (a tampered answer).
        self.next_link_origin: str | None = None
        # A fault on demand: id_tokens that name this tenant instead of the one signed in to
        # (a tampered or misrouted sign-in answer).
        self.id_token_tenant: str | None = None
        self.requests: list[RecordedRequest] = []
        self.faults: list[Fault] = []
        self.holds = Holds()
        self.latency: dict[Service | None, float] = {}
        self.browser_user: str | None = None
        self.browser_auto: Literal["accept", "cancel"] | None = None
        self._tokens: dict[str, IssuedToken] = {}
        self._codes: dict[str, _AuthCode] = {}
        self._refresh: dict[str, _Refresh] = {}
        for tenant in self.tenants.values():
            for resource in RESOURCES:
                if tenant.service_principal(resource.app_id) is None:
                    tenant.service_principals.append(
                        ServicePrincipalRecord(
                            _new_id(), resource.app_id, resource.display_name, None
                        )
                    )
        both = ["GET", "POST"]
        self.app = Starlette(
            routes=[
                Route(
                    "/login/{tenant}/v2.0/.well-known/openid-configuration",
                    self._openid_configuration,
                ),
                Route(
                    "/login/{tenant}/.well-known/openid-configuration",
                    self._openid_configuration,
                ),
                Route("/login/{tenant}/v2.0/adminconsent", self._consent_v2, methods=both),
                Route("/login/{tenant}/adminconsent", self._consent_v1, methods=both),
                Route(
                    "/login/{tenant}/oauth2/v2.0/authorize",
                    self._authorize,
                    methods=both,
                ),
                Route("/login/{tenant}/oauth2/v2.0/token", self._token, methods=["POST"]),
                Route(
                    "/graph/{path:path}", self._graph, methods=["GET", "POST", "PATCH", "DELETE"]
                ),
                Route(
                    "/exchange/adminapi/beta/{tenant}/InvokeCommand",
                    self._exchange,
                    methods=["POST"],
                ),
            ],
            middleware=[Middleware(_Instrument, sandbox=self)],
        )

    # -- control surface for tests and the demo ------------------------------------------------

    def find_tenant(self, tenant: str) -> SandboxTenant | None:
        """The tenant a GUID or a verified domain names (case-insensitive)."""
        key = tenant.lower()
        if key in self.tenants:
            return self.tenants[key]
        for candidate in self.tenants.values():
            if key in (d.lower() for d in candidate.verified_domains):
                return candidate
        return None

    def tenant(self, tenant: str) -> SandboxTenant:
        found = self.find_tenant(tenant)
        if found is None:
            raise KeyError(tenant)
        return found

    def find_user(self, upn: str) -> tuple[SandboxTenant, SandboxUser] | None:
        for tenant in self.tenants.values():
            user = tenant.user(upn)
            if user is not None:
                return tenant, user
        return None

    def sign_in(self, upn: str | None, auto: Literal["accept", "cancel"] | None = None) -> None:
        """Make the simulated browser signed in as ``upn`` (prefills the sign-in form).

        With ``auto``, consent and authorize pages answer at once with the accept or cancel
        redirect, as if the user had clicked.
        """
        self.browser_user = upn
        self.browser_auto = auto

    def fail(
        self,
        service: Service | None = None,
        *,
        status: int = 503,
        retry_after: float | None = None,
        drop: bool = False,
        path_contains: str | None = None,
        times: int = 1,
    ) -> Fault:
        """Make the next ``times`` matching requests fail (status, or a dropped connection)."""
        fault = Fault(service, status, retry_after, drop, path_contains, times)
        self.faults.append(fault)
        return fault

    def hold(
        self,
        service: Service | None = None,
        *,
        method: str | None = None,
        path_contains: str | None = None,
        matching: Callable[[HeldCall], bool] | None = None,
    ) -> Hold:
        """Hold the next matching request (of ``service``, with the HTTP ``method``, a path
        containing ``path_contains``, satisfying ``matching``) until the test releases it
        (answered as usual) or drops it (not carried out, the connection cut); see
        ``bot.sandbox.holds``."""

        def matches(call: HeldCall) -> bool:
            return (
                service in (None, call.service)
                and method in (None, call.method)
                and (path_contains is None or path_contains in call.path)
                and (matching is None or matching(call))
            )

        return self.holds.arm(matches, f"{service or 'any'} {method or ''} {path_contains or ''}")

    def set_latency(self, seconds: float, service: Service | None = None) -> None:
        """Delay every answer (of one service, or all) by ``seconds`` (0 removes it)."""
        self.latency[service] = seconds

    def consent(self, tenant: str, client_id: str) -> ServicePrincipalRecord:
        """Grant everything the app lists in the tenant, as a v1 admin consent would."""
        found = self.tenant(tenant)
        app = self.apps[client_id.lower()]
        sp = self._grant(found, app, app.required)
        return sp

    def assign_role(
        self, tenant: str, principal_id: str, role_definition_id: str, *, via: str = "direct"
    ) -> RoleAssignmentRecord:
        """Give a principal an active role assignment, as if made in the portal now."""
        found = self.tenant(tenant)
        record = RoleAssignmentRecord(
            id=_new_id(),
            principal_id=principal_id,
            role_definition_id=role_definition_id,
            directory_scope_id="/",
            created=self.clock(),
            via="pim" if via == "pim" else "direct",
        )
        found.role_assignments.append(record)
        return record

    def requests_to(self, service: Service) -> list[RecordedRequest]:
        return [r for r in self.requests if r.service == service]

    # -- shared helpers ------------------------------------------------------------------------

    def _resource_for(self, identifier: str, request: Request) -> Resource | None:
        base = str(request.base_url).rstrip("/")
        own = {GRAPH.app_id: f"{base}/graph", EXCHANGE.app_id: f"{base}/exchange"}
        wanted = identifier.rstrip("/").lower()
        for resource in RESOURCES:
            names = {resource.identifier, resource.app_id, own[resource.app_id]}
            if wanted in {n.lower() for n in names}:
                return resource
        return None

    def _split_scope(self, scope: str, request: Request) -> tuple[Resource | None, str] | None:
        """``https://graph.microsoft.com/Domain.Read.All`` → (GRAPH, "Domain.Read.All")."""
        if scope in OIDC_SCOPES:
            return (None, scope)
        if "/" not in scope:
            return (GRAPH, scope)
        identifier, _, permission = scope.rpartition("/")
        resource = self._resource_for(identifier, request)
        if resource is None:
            return None
        return (resource, permission)

    def _grant(
        self,
        tenant: SandboxTenant,
        app: SandboxApp,
        permissions: Iterable[RequiredPermission],
        *,
        delegated_scopes: Mapping[str, Iterable[str]] | None = None,
    ) -> ServicePrincipalRecord:
        sp = tenant.service_principal(app.client_id)
        if sp is None:
            sp = ServicePrincipalRecord(_new_id(), app.client_id, app.display_name, _new_id())
            tenant.service_principals.append(sp)
        for permission in permissions:
            resource = next((r for r in RESOURCES if r.app_id == permission.resource_app_id), None)
            if resource is None:
                continue
            resource_sp = tenant.service_principal(resource.app_id)
            assert resource_sp is not None
            for role_name in permission.app_roles:
                role_id = resource.app_roles.get(role_name)
                if role_id is None:
                    continue
                if not any(
                    g.principal_id == sp.id and g.app_role_id == role_id
                    for g in tenant.app_role_grants
                ):
                    tenant.app_role_grants.append(
                        AppRoleGrant(_new_id(), sp.id, resource_sp.id, role_id, self.clock())
                    )
            if permission.scopes:
                tenant.delegated_grants.setdefault((sp.id, resource.app_id), set()).update(
                    permission.scopes
                )
        for resource_app_id, scopes in (delegated_scopes or {}).items():
            tenant.delegated_grants.setdefault((sp.id, resource_app_id), set()).update(scopes)
        return sp

    def _app_roles_of(self, tenant: SandboxTenant, client_id: str, resource: Resource) -> set[str]:
        sp = tenant.service_principal(client_id)
        if sp is None:
            return set()
        by_id = {v: k for k, v in resource.app_roles.items()}
        return {
            by_id[g.app_role_id]
            for g in tenant.app_role_grants
            if g.principal_id == sp.id and g.app_role_id in by_id
        }

    def _active_assignments(self, tenant: SandboxTenant) -> list[RoleAssignmentRecord]:
        now = self.clock()
        return [a for a in tenant.role_assignments if a.end is None or a.end > now]

    def _token_for(self, request: Request) -> IssuedToken | None:
        header = request.headers.get("authorization", "")
        scheme, _, value = header.partition(" ")
        if scheme.lower() != "bearer" or not value:
            return None
        token = self._tokens.get(value.strip())
        if token is None or token.expires < time.time():
            return None
        return token

    # -- login: discovery ------------------------------------------------------------------------

    async def _openid_configuration(self, request: Request) -> Response:
        asked = request.path_params["tenant"]
        tenant = self.find_tenant(asked)
        # Like Microsoft, the multi-tenant aliases answer with a "{tenantid}" issuer template.
        multi_tenant = asked.lower() in ("common", "organizations")
        if tenant is None and not multi_tenant:
            return _login_error(
                400,
                "invalid_tenant",
                90002,
                f"Tenant '{asked}' not found. Check to make sure you have the correct tenant ID"
                " and are signing into the correct cloud.",
            )
        base = str(request.base_url).rstrip("/") + "/login"
        tid = tenant.tenant_id if tenant is not None else "{tenantid}"
        return JSONResponse(
            {
                "token_endpoint": f"{base}/{tid}/oauth2/v2.0/token",
                "token_endpoint_auth_methods_supported": [
                    "client_secret_post",
                    "private_key_jwt",
                    "client_secret_basic",
                ],
                "jwks_uri": f"{base}/{tid}/discovery/v2.0/keys",
                "response_modes_supported": ["query", "fragment", "form_post"],
                "subject_types_supported": ["pairwise"],
                "id_token_signing_alg_values_supported": ["RS256"],
                "response_types_supported": ["code", "id_token", "code id_token", "id_token token"],
                "scopes_supported": ["openid", "profile", "email", "offline_access"],
                "issuer": f"{base}/{tid}/v2.0",
                "request_uri_parameter_supported": False,
                "userinfo_endpoint": f"{base}/{tid}/openid/userinfo",
                "authorization_endpoint": f"{base}/{tid}/oauth2/v2.0/authorize",
                "device_authorization_endpoint": f"{base}/{tid}/oauth2/v2.0/devicecode",
                "http_logout_supported": True,
                "frontchannel_logout_supported": True,
                "end_session_endpoint": f"{base}/{tid}/oauth2/v2.0/logout",
                "claims_supported": ["sub", "iss", "aud", "exp", "iat", "nonce", "tid", "oid"],
                "tenant_region_scope": "EU",
                "cloud_instance_name": "sandbox.invalid",
                "cloud_graph_host_name": "graph.sandbox.invalid",
                "msgraph_host": "graph.sandbox.invalid",
            }
        )

    # -- login: consent and sign-in pages --------------------------------------------------------

    async def _consent_v2(self, request: Request) -> Response:
        return await self._interactive(request, "v2")

    async def _consent_v1(self, request: Request) -> Response:
        return await self._interactive(request, "v1")

    async def _authorize(self, request: Request) -> Response:
        return await self._interactive(request, "authorize")

    async def _interactive(
        self, request: Request, kind: Literal["v1", "v2", "authorize"]
    ) -> Response:
        response = await self._interactive_answer(request, kind)
        location = response.headers.get("location")
        if (
            kind == "authorize"
            and location
            and request.query_params.get("response_mode") == "form_post"
        ):
            target, _, query = location.partition("?")
            return _form_post(target, dict(urllib.parse.parse_qsl(query)))
        return response

    async def _interactive_answer(
        self, request: Request, kind: Literal["v1", "v2", "authorize"]
    ) -> Response:
        params = dict(request.query_params)
        tenant = self.find_tenant(request.path_params["tenant"])
        if tenant is None:
            return _error_page(400, 90002, f"Tenant '{request.path_params['tenant']}' not found.")
        client_id = params.get("client_id", "")
        app = self.apps.get(client_id.lower())
        if app is None:
            return _error_page(
                400,
                700016,
                f"Application with identifier '{client_id}' was not found in the directory.",
            )
        redirect_uri = params.get("redirect_uri", "")
        if not _redirect_allowed(app, redirect_uri):
            return _error_page(
                400,
                50011,
                f"The redirect URI '{redirect_uri}' specified in the request does not match the"
                f" redirect URIs configured for the application '{client_id}'.",
            )
        if kind == "authorize" and params.get("response_type") != "code":
            return _redirect(
                redirect_uri,
                {
                    "error": "unsupported_response_type",
                    "error_description": "AADSTS70005: response_type is not supported.",
                    "state": params.get("state"),
                },
            )
        decision: str | None = None
        upn: str | None = None
        notice = ""
        if request.method == "POST":
            form = await _read_form(request)
            decision = _form_str(form, "decision")
            upn = _form_str(form, "login_hint") or None
        elif self.browser_auto is not None and self.browser_user:
            decision, upn = self.browser_auto, self.browser_user
        if decision == "cancel":
            return _redirect(
                redirect_uri,
                {
                    "error": "access_denied",
                    "error_subcode": "cancel",
                    "error_description": "AADSTS65004: User declined to consent to access the app.",
                    "state": params.get("state"),
                },
            )
        if decision == "accept":
            found = self.find_user(upn or "")
            if found is None:
                notice = "We couldn't find an account with that username."
            else:
                home, user = found
                return self._decide(request, kind, params, app, home, user)
        prefill = params.get("login_hint") or self.browser_user or ""
        return _sign_in_page(kind, app, tenant, prefill, notice, params, request)

    def _decide(
        self,
        request: Request,
        kind: Literal["v1", "v2", "authorize"],
        params: Mapping[str, str],
        app: SandboxApp,
        tenant: SandboxTenant,
        user: SandboxUser,
    ) -> Response:
        redirect_uri = params.get("redirect_uri", "")
        state = params.get("state")
        is_admin = bool(user.roles & ROLE_ASSIGNERS)
        if kind == "authorize":
            return self._authorize_decision(request, params, app, tenant, user, is_admin)
        if not is_admin:
            return _redirect(
                redirect_uri,
                {
                    "admin_consent": "True",
                    "tenant": tenant.tenant_id,
                    "error": "access_denied",
                    "error_description": "AADSTS90094: The grant requires admin permission.",
                    "state": state,
                },
            )
        if kind == "v1":
            self._grant(tenant, app, app.required)
            return _redirect(
                redirect_uri,
                {"admin_consent": "True", "tenant": tenant.tenant_id, "state": state},
            )
        granted_scopes: list[str] = []
        chosen: list[RequiredPermission] = []
        for scope in params.get("scope", "").split():
            identifier, _, permission = scope.rpartition("/")
            resource = self._resource_for(identifier, request) if permission == ".default" else None
            if resource is None:
                return _redirect(
                    redirect_uri,
                    {
                        "error": "invalid_request",
                        "error_description": "AADSTS70011: The provided value for the input"
                        f" parameter 'scope' is not valid. The scope {scope} is not valid.",
                        "state": state,
                    },
                )
            listed = [p for p in app.required if p.resource_app_id == resource.app_id]
            if not listed:
                return _redirect(
                    redirect_uri,
                    {
                        "error": "invalid_client",
                        "error_description": "AADSTS650057: Invalid resource. The client has"
                        " requested access to a resource which is not listed in the requested"
                        " permissions in the client's application registration.",
                        "state": state,
                    },
                )
            chosen.extend(listed)
            for permission_set in listed:
                for name in (*permission_set.app_roles, *permission_set.scopes):
                    granted_scopes.append(f"{identifier}/{name}")
        if not chosen:
            return _redirect(
                redirect_uri,
                {
                    "error": "invalid_request",
                    "error_description": "AADSTS900144: The request body must contain the"
                    " following parameter: 'scope'.",
                    "state": state,
                },
            )
        self._grant(tenant, app, chosen)
        return _redirect(
            redirect_uri,
            {
                "admin_consent": "True",
                "tenant": tenant.tenant_id,
                "scope": " ".join(granted_scopes),
                "state": state,
            },
        )

    def _authorize_decision(
        self,
        request: Request,
        params: Mapping[str, str],
        app: SandboxApp,
        tenant: SandboxTenant,
        user: SandboxUser,
        is_admin: bool,
    ) -> Response:
        redirect_uri = params.get("redirect_uri", "")
        state = params.get("state")
        scopes = tuple(params.get("scope", "").split())
        wanted: dict[str, set[str]] = {}
        for scope in scopes:
            split = self._split_scope(scope, request)
            if split is None:
                return _redirect(
                    redirect_uri,
                    {
                        "error": "invalid_scope",
                        "error_description": f"AADSTS70011: The scope '{scope}' is not valid.",
                        "state": state,
                    },
                )
            resource, name = split
            if resource is not None and name != ".default":
                wanted.setdefault(resource.app_id, set()).add(name)
        sp = tenant.service_principal(app.client_id)
        missing = {
            rid: names - tenant.delegated_grants.get((sp.id, rid), set()) if sp else names
            for rid, names in wanted.items()
        }
        if any(missing.values()):
            if not is_admin:
                return _redirect(
                    redirect_uri,
                    {
                        "error": "consent_required",
                        "error_description": "AADSTS65001: The user or administrator has not"
                        " consented to use the application.",
                        "state": state,
                    },
                )
            self._grant(tenant, app, (), delegated_scopes=wanted)
        elif sp is None:
            self._grant(tenant, app, ())
        code = "sbx-code-" + secrets.token_urlsafe(24)
        self._codes[code] = _AuthCode(
            client_id=app.client_id,
            redirect_uri=redirect_uri,
            tenant_id=tenant.tenant_id,
            user=user,
            scopes=scopes,
            code_challenge=params.get("code_challenge"),
            code_challenge_method=params.get("code_challenge_method", "plain"),
            nonce=params.get("nonce"),
            expires=time.time() + 600,
        )
        client_info = _b64url(json.dumps({"uid": user.user_id, "utid": tenant.tenant_id}).encode())
        answer = {
            "code": code,
            "client_info": client_info,
            "state": state,
            "session_state": _new_id(),
        }
        return _redirect(redirect_uri, answer)

    # -- login: token endpoint ---------------------------------------------------------------------

    async def _token(self, request: Request) -> Response:
        form = await _read_form(request)
        tenant = self.find_tenant(request.path_params["tenant"])
        if tenant is None:
            return _login_error(
                400,
                "invalid_request",
                90002,
                f"Tenant '{request.path_params['tenant']}' not found.",
            )
        try:
            app = self._authenticate_client(request, form)
        except _SandboxError as refused:
            return refused.response
        grant_type = _form_str(form, "grant_type")
        if grant_type == "client_credentials":
            return self._client_credentials(request, form, tenant, app)
        if grant_type == "authorization_code":
            code = self._codes.pop(_form_str(form, "code"), None)
            if (
                code is None
                or code.expires < time.time()
                or code.client_id != app.client_id
                or code.tenant_id != tenant.tenant_id
            ):
                return _login_error(
                    400,
                    "invalid_grant",
                    70008,
                    "The provided authorization code or refresh token has expired due to"
                    " inactivity, or has been used or revoked.",
                )
            if _form_str(form, "redirect_uri") != code.redirect_uri:
                return _login_error(
                    400,
                    "invalid_grant",
                    50148,
                    "The redirect_uri does not match the one in the authorization request.",
                )
            if code.code_challenge is not None and not _pkce_ok(
                _form_str(form, "code_verifier"), code.code_challenge, code.code_challenge_method
            ):
                return _login_error(
                    400,
                    "invalid_grant",
                    501481,
                    "The Code_Verifier does not match the code_challenge supplied in the"
                    " authorization request.",
                )
            return self._user_tokens(request, tenant, app, code.user, code.scopes, code.nonce)
        if grant_type == "refresh_token":
            refresh = self._refresh.get(_form_str(form, "refresh_token"))
            if refresh is None or refresh.client_id != app.client_id:
                return _login_error(
                    400, "invalid_grant", 70008, "The refresh token has expired or was revoked."
                )
            scopes = tuple(_form_str(form, "scope").split()) or refresh.scopes
            return self._user_tokens(request, tenant, app, refresh.user, scopes, None)
        return _login_error(
            400,
            "unsupported_grant_type",
            70003,
            f"The app requested an unsupported grant type '{grant_type}'.",
        )

    def _authenticate_client(self, request: Request, form: Mapping[str, str]) -> SandboxApp:
        client_id = _form_str(form, "client_id")
        app = self.apps.get(client_id.lower())
        if app is None:
            raise _SandboxError(
                _login_error(
                    400,
                    "unauthorized_client",
                    700016,
                    f"Application with identifier '{client_id}' was not found in the directory.",
                )
            )
        secret = _form_str(form, "client_secret")
        assertion = _form_str(form, "client_assertion")
        if secret:
            if app.secret is None or not hmac.compare_digest(secret, app.secret):
                raise _SandboxError(
                    _login_error(
                        401,
                        "invalid_client",
                        7000215,
                        "Invalid client secret provided. Ensure the secret being sent in the"
                        f" request is the client secret value, not the client secret ID, for a"
                        f" secret added to app '{app.client_id}'.",
                    )
                )
            return app
        if assertion:
            endpoint = str(request.url).split("?")[0]
            if not _assertion_ok(assertion, app, endpoint):
                raise _SandboxError(
                    _login_error(
                        401,
                        "invalid_client",
                        700027,
                        "Client assertion failed signature validation.",
                    )
                )
            return app
        raise _SandboxError(
            _login_error(
                401,
                "invalid_client",
                7000218,
                "The request body must contain the following parameter: 'client_assertion'"
                " or 'client_secret'.",
            )
        )

    def _client_credentials(
        self, request: Request, form: Mapping[str, str], tenant: SandboxTenant, app: SandboxApp
    ) -> Response:
        scopes = _form_str(form, "scope").split()
        if len(scopes) != 1 or not scopes[0].endswith("/.default"):
            return _login_error(
                400,
                "invalid_scope",
                1002012,
                "The provided value for scope is not valid. Client credential flows must have a"
                " scope value with /.default suffixed to the resource identifier.",
            )
        identifier = scopes[0][: -len("/.default")]
        resource = self._resource_for(identifier, request)
        if resource is None:
            return _login_error(
                400,
                "invalid_resource",
                500011,
                f"The resource principal named {identifier} was not found in the tenant named"
                f" {tenant.display_name}.",
            )
        if tenant.service_principal(app.client_id) is None:
            return _login_error(
                400,
                "invalid_client",
                7000229,
                f"The client application {app.client_id} is missing service principal in the"
                f" tenant {tenant.tenant_id}.",
            )
        access = self._issue(
            tenant, app, resource.service, None, self._app_roles_of(tenant, app.client_id, resource)
        )
        return JSONResponse(
            {
                "token_type": "Bearer",
                "expires_in": int(self.token_lifetime),
                "ext_expires_in": int(self.token_lifetime),
                "access_token": access,
            },
            headers={"Cache-Control": "no-store"},
        )

    def _issue(
        self,
        tenant: SandboxTenant,
        app: SandboxApp,
        service: Literal["graph", "exchange"],
        user: SandboxUser | None,
        roles: Iterable[str] = (),
        scopes: Iterable[str] = (),
    ) -> str:
        """An access token shaped like Microsoft's: a JWT whose claims say for whom it is
        (``aud``, ``tid``, ``appid``, ``oid``) and what it may do (``roles`` for an app-only
        token, present only when the app holds some; ``scp`` for a delegated one). It is not
        signed: the sandbox knows its tokens by value, and the random last part keeps the value
        unguessable."""
        now = int(time.time())
        resource = next(r for r in RESOURCES if r.service == service)
        sp = tenant.service_principal(app.client_id)
        claims: dict[str, Any] = {
            "aud": resource.identifier,
            "iss": f"https://sts.windows.net/{tenant.tenant_id}/",
            "iat": now,
            "nbf": now,
            "exp": now + int(self.token_lifetime),
            "appid": app.client_id,
            "appidacr": "1",
            "idtyp": "user" if user is not None else "app",
            "tid": tenant.tenant_id,
            "ver": "1.0",
        }
        if user is not None:
            claims.update(oid=user.user_id, upn=user.user_principal_name, scp=" ".join(scopes))
        else:
            claims["oid"] = claims["sub"] = sp.id if sp is not None else ""
            if roles:
                claims["roles"] = sorted(roles)
        header = _b64url(json.dumps({"typ": "JWT", "alg": "RS256", "kid": "sandbox"}).encode())
        body = _b64url(json.dumps(claims).encode())
        value = f"{header}.{body}.sbx-at-{secrets.token_urlsafe(32)}"
        self._tokens[value] = IssuedToken(
            tenant_id=tenant.tenant_id,
            client_id=app.client_id,
            service=service,
            user=user,
            roles=frozenset(roles),
            scopes=frozenset(scopes),
            expires=time.time() + self.token_lifetime,
        )
        return value

    def _user_tokens(
        self,
        request: Request,
        tenant: SandboxTenant,
        app: SandboxApp,
        user: SandboxUser,
        scopes: tuple[str, ...],
        nonce: str | None,
    ) -> Response:
        resource: Resource = GRAPH
        names: set[str] = set()
        for scope in scopes:
            split = self._split_scope(scope, request)
            if split is None or split[0] is None:
                continue
            resource = split[0]
            names.add(split[1])
        sp = tenant.service_principal(app.client_id)
        granted = tenant.delegated_grants.get((sp.id, resource.app_id), set()) if sp else set()
        effective = granted if ".default" in names else names & granted
        access = self._issue(tenant, app, resource.service, user, (), effective)
        now = int(time.time())
        base = str(request.base_url).rstrip("/") + "/login"
        claims = {
            "aud": app.client_id,
            "iss": f"{base}/{tenant.tenant_id}/v2.0",
            "iat": now,
            "nbf": now,
            "exp": now + int(self.token_lifetime),
            "name": user.display_name or user.user_principal_name,
            "oid": user.user_id,
            "preferred_username": user.user_principal_name,
            "sub": hashlib.sha256(f"{user.user_id}{app.client_id}".encode()).hexdigest()[:43],
            "tid": self.id_token_tenant or tenant.tenant_id,
            "ver": "2.0",
            **({"nonce": nonce} if nonce else {}),
        }
        header = _b64url(json.dumps({"alg": "none", "typ": "JWT"}).encode())
        id_token = f"{header}.{_b64url(json.dumps(claims).encode())}."
        refresh = "sbx-rt-" + secrets.token_urlsafe(32)
        self._refresh[refresh] = _Refresh(app.client_id, tenant.tenant_id, user, scopes)
        prefix = resource.identifier
        return JSONResponse(
            {
                "token_type": "Bearer",
                "scope": " ".join(
                    [f"{prefix}/{n}" for n in sorted(effective)]
                    + [s for s in scopes if s in OIDC_SCOPES]
                ),
                "expires_in": int(self.token_lifetime),
                "ext_expires_in": int(self.token_lifetime),
                "access_token": access,
                "refresh_token": refresh,
                "id_token": id_token,
                "client_info": _b64url(
                    json.dumps({"uid": user.user_id, "utid": tenant.tenant_id}).encode()
                ),
            },
            headers={"Cache-Control": "no-store"},
        )

    # -- Graph -----------------------------------------------------------------------------------

    async def _graph(self, request: Request) -> Response:
        path = request.path_params["path"]
        request_id = _new_id()
        token = self._token_for(request)
        if token is None:
            return _graph_error(
                401, "InvalidAuthenticationToken", "Access token validation failure.", request_id
            )
        if token.service != "graph":
            return _graph_error(
                401,
                "InvalidAuthenticationToken",
                "Access token validation failure. Invalid audience.",
                request_id,
            )
        tenant = self.tenants[token.tenant_id]
        if not path.startswith("v1.0/"):
            return _graph_error(400, "BadRequest", "Invalid version.", request_id)
        rest = path[len("v1.0/") :]
        try:
            return await self._graph_route(request, rest, token, tenant, request_id)
        except _SandboxError as refused:
            return refused.response

    async def _graph_route(
        self,
        request: Request,
        rest: str,
        token: IssuedToken,
        tenant: SandboxTenant,
        request_id: str,
    ) -> Response:
        method = request.method
        match = re.fullmatch(r"servicePrincipals\(appId='([^']*)'\)", rest)
        if match and method == "GET":
            self._require(token, READ_APPS, request_id)
            sp = tenant.service_principal(match.group(1))
            if sp is None:
                return _graph_error(
                    404,
                    "Request_ResourceNotFound",
                    f"Resource '{match.group(1)}' does not exist or one of its queried"
                    " reference-property objects are not present.",
                    request_id,
                )
            return _graph_json(_sp_json(sp, request), request_id)
        match = re.fullmatch(r"servicePrincipals/([^/]+)/appRoleAssignments", rest)
        if match and method == "GET":
            self._require(token, READ_APPS, request_id)
            sp_id = match.group(1)
            owner = next((s for s in tenant.service_principals if s.id == sp_id), None)
            if owner is None:
                return _graph_error(
                    404,
                    "Request_ResourceNotFound",
                    f"Resource '{sp_id}' does not exist or one of its queried reference-property"
                    " objects are not present.",
                    request_id,
                )
            by_id = {s.id: s for s in tenant.service_principals}
            items = [
                {
                    "id": g.id,
                    "deletedDateTime": None,
                    "appRoleId": g.app_role_id,
                    "createdDateTime": _iso(g.created),
                    "principalDisplayName": owner.display_name,
                    "principalId": g.principal_id,
                    "principalType": "ServicePrincipal",
                    "resourceDisplayName": by_id[g.resource_id].display_name,
                    "resourceId": g.resource_id,
                }
                for g in tenant.app_role_grants
                if g.principal_id == sp_id
            ]
            return self._graph_page(request, items, request_id)
        if rest == "policies/roleManagementPolicyAssignments" and method == "GET":
            self._require(token, READ_POLICY, request_id)
            self._require_p2(tenant, request_id)
            wanted = _parse_filter(request.query_params.get("$filter", ""), request_id)
            role = wanted.get("roleDefinitionId")
            if (
                wanted.get("scopeId") != "/"
                or wanted.get("scopeType") != "DirectoryRole"
                or not role
            ):
                return _graph_error(
                    400,
                    "InvalidFilter",
                    "The filter must name scopeId, scopeType and roleDefinitionId.",
                    request_id,
                )
            return self._graph_page(request, [_policy_json(tenant, role)], request_id)
        if rest == "roleManagement/directory/roleAssignmentScheduleRequests" and method == "POST":
            return await self._schedule_request(request, token, tenant, request_id)
        if rest == "roleManagement/directory/roleAssignments" and method == "POST":
            return await self._direct_assignment(request, token, tenant, request_id)
        if rest == "roleManagement/directory/roleAssignments" and method == "GET":
            self._require(token, READ_ROLES, request_id)
            wanted = _parse_filter(request.query_params.get("$filter", ""), request_id)
            items = [
                _assignment_json(a)
                for a in self._active_assignments(tenant)
                if _assignment_match(wanted, a)
            ]
            return self._graph_page(request, items, request_id)
        if rest == "roleManagement/directory/roleAssignmentScheduleInstances" and method == "GET":
            self._require(token, READ_ROLES, request_id)
            self._require_p2(tenant, request_id)
            wanted = _parse_filter(request.query_params.get("$filter", ""), request_id)
            items = [
                {
                    **_assignment_json(a),
                    "appScopeId": None,
                    "startDateTime": _iso(a.created),
                    "endDateTime": _iso(a.end) if a.end is not None else None,
                    "assignmentType": "Assigned",
                    "memberType": "Direct",
                    "roleAssignmentOriginId": a.id,
                    "roleAssignmentScheduleId": a.id,
                }
                for a in self._active_assignments(tenant)
                if _assignment_match(wanted, a)
            ]
            return self._graph_page(request, items, request_id)
        if rest == "domains" and method == "GET":
            self._require(token, READ_DOMAINS, request_id)
            default = tenant.default_domain or tenant.verified_domains[-1]
            domains: list[dict[str, Any]] = [
                {
                    "id": name,
                    "authenticationType": "Managed",
                    "isAdminManaged": True,
                    "isDefault": name == default,
                    "isInitial": name == tenant.initial_domain,
                    "isRoot": True,
                    "isVerified": True,
                    "supportedServices": ["Email", "OfficeCommunicationsOnline"],
                }
                for name in tenant.verified_domains
            ]
            return self._graph_page(request, domains, request_id)
        if rest == "organization" and method == "GET":
            self._require(token, READ_ORG, request_id)
            default = tenant.default_domain or tenant.verified_domains[-1]
            org = {
                "id": tenant.tenant_id,
                "displayName": tenant.display_name,
                "tenantType": "AAD",
                "verifiedDomains": [
                    {
                        "capabilities": "Email, OfficeCommunicationsOnline",
                        "isDefault": name == default,
                        "isInitial": name == tenant.initial_domain,
                        "name": name,
                        "type": "Managed",
                    }
                    for name in tenant.verified_domains
                ],
            }
            return _graph_json({"value": [org]}, request_id)
        return _graph_error(
            400,
            "BadRequest",
            f"Resource not found for the segment '{rest.split('/')[0]}'.",
            request_id,
        )

    def _require(self, token: IssuedToken, allowed: frozenset[str], request_id: str) -> None:
        held = token.scopes if token.user is not None else token.roles
        if not held & allowed:
            raise _SandboxError(
                _graph_error(
                    403,
                    "Authorization_RequestDenied",
                    "Insufficient privileges to complete the operation.",
                    request_id,
                )
            )

    def _require_assigner(self, token: IssuedToken, request_id: str) -> None:
        if token.user is not None and not token.user.roles & ROLE_ASSIGNERS:
            raise _SandboxError(
                _graph_error(
                    403,
                    "Authorization_RequestDenied",
                    "Insufficient privileges to complete the operation.",
                    request_id,
                )
            )

    def _require_p2(self, tenant: SandboxTenant, request_id: str) -> None:
        if not tenant.premium_p2:
            raise _SandboxError(
                _graph_error(
                    400,
                    "AadPremiumLicenseRequired",
                    "The tenant needs an AAD Premium 2 license.",
                    request_id,
                )
            )

    def _paging_link(self, url: str) -> str:
        if self.next_link_origin is None:
            return url
        parts = urllib.parse.urlsplit(url)
        return self.next_link_origin.rstrip("/") + urllib.parse.urlunsplit(
            ("", "", parts.path, parts.query, "")
        )

    def _graph_page(
        self, request: Request, items: list[dict[str, Any]], request_id: str
    ) -> Response:
        skip = int(request.query_params.get("$skiptoken", "0") or 0)
        top = int(request.query_params.get("$top", "0") or 0) or self.graph_page_size
        size = min(top, self.graph_page_size)
        page = items[skip : skip + size]
        body: dict[str, Any] = {"value": page}
        if skip + size < len(items):
            query = dict(request.query_params)
            query["$skiptoken"] = str(skip + size)
            next_url = str(request.url.replace(query=urllib.parse.urlencode(query)))
            body["@odata.nextLink"] = self._paging_link(next_url)
        return _graph_json(body, request_id)

    async def _schedule_request(
        self, request: Request, token: IssuedToken, tenant: SandboxTenant, request_id: str
    ) -> Response:
        self._require(token, WRITE_PIM, request_id)
        self._require_p2(tenant, request_id)
        self._require_assigner(token, request_id)
        body = await _json_body(request, request_id)
        if body.get("action") != "adminAssign":
            return _graph_error(
                400, "InvalidRoleAssignmentRequest", "Only adminAssign is simulated.", request_id
            )
        role = str(body.get("roleDefinitionId", ""))
        principal = str(body.get("principalId", ""))
        self._check_principal_and_role(tenant, principal, role, request_id)
        if self._has_active(tenant, principal, role):
            return _graph_error(
                400, "RoleAssignmentExists", "The Role assignment already exists.", request_id
            )
        policy = tenant.policy_for(role)
        failed: list[str] = []
        if "Justification" in policy.enabled_rules and not str(body.get("justification") or ""):
            failed.append("JustificationRule")
        ticket = body.get("ticketInfo") or {}
        if "Ticketing" in policy.enabled_rules and not (
            isinstance(ticket, dict) and ticket.get("ticketNumber")
        ):
            failed.append("TicketingRule")
        if "MultiFactorAuthentication" in policy.enabled_rules and not (
            token.user is not None and token.user.mfa
        ):
            failed.append("MfaRule")
        schedule = body.get("scheduleInfo") or {}
        expiration = schedule.get("expiration") if isinstance(schedule, dict) else None
        if not isinstance(expiration, dict):
            expiration = {"type": "noExpiration"}
        now = self.clock()
        end: float | None = None
        kind = expiration.get("type", "noExpiration")
        maximum = _parse_duration(policy.maximum_duration)
        if kind == "afterDuration":
            duration = _parse_duration(str(expiration.get("duration", "")))
            if duration is None:
                return _graph_error(
                    400, "InvalidDuration", "The duration is not valid.", request_id
                )
            end = now + duration.total_seconds()
            if policy.expiration_required and maximum is not None and duration > maximum:
                failed.append("ExpirationRule")
        elif kind == "afterDateTime":
            try:
                when = datetime.fromisoformat(str(expiration.get("endDateTime", "")))
            except ValueError:
                return _graph_error(400, "InvalidDateTime", "endDateTime is not valid.", request_id)
            if when.tzinfo is None:
                when = when.replace(tzinfo=UTC)
            end = when.timestamp()
            if (
                policy.expiration_required
                and maximum is not None
                and end - now > maximum.total_seconds()
            ):
                failed.append("ExpirationRule")
        elif policy.expiration_required:
            failed.append("ExpirationRule")
        if failed:
            return _graph_error(
                400,
                "RoleAssignmentRequestPolicyValidationFailed",
                "The following policy rules failed: " + json.dumps(failed, separators=(",", ":")),
                request_id,
            )
        record = RoleAssignmentRecord(
            id=_new_id(),
            principal_id=principal,
            role_definition_id=role,
            directory_scope_id=str(body.get("directoryScopeId") or "/"),
            created=now,
            end=end,
            via="pim",
        )
        tenant.role_assignments.append(record)
        created = {
            "id": _new_id(),
            "status": "Provisioned",
            "createdDateTime": _iso(now),
            "completedDateTime": _iso(now),
            "action": "adminAssign",
            "principalId": principal,
            "roleDefinitionId": role,
            "directoryScopeId": record.directory_scope_id,
            "appScopeId": None,
            "isValidationOnly": False,
            "targetScheduleId": record.id,
            "justification": body.get("justification"),
            "createdBy": {
                "user": {"id": token.user.user_id} if token.user else None,
                "application": None if token.user else {"id": token.client_id},
            },
            "scheduleInfo": {"startDateTime": _iso(now), "expiration": expiration},
            "ticketInfo": ticket if isinstance(ticket, dict) else {},
        }
        tenant.schedule_requests.append(created)
        return _graph_json(created, request_id, status=201)

    def _has_active(self, tenant: SandboxTenant, principal: str, role: str) -> bool:
        return any(
            a.principal_id == principal and a.role_definition_id == role
            for a in self._active_assignments(tenant)
        )

    async def _direct_assignment(
        self, request: Request, token: IssuedToken, tenant: SandboxTenant, request_id: str
    ) -> Response:
        self._require(token, WRITE_DIRECT, request_id)
        self._require_assigner(token, request_id)
        body = await _json_body(request, request_id)
        role = str(body.get("roleDefinitionId", ""))
        principal = str(body.get("principalId", ""))
        self._check_principal_and_role(tenant, principal, role, request_id)
        if self._has_active(tenant, principal, role):
            return _graph_error(
                400,
                "Request_BadRequest",
                "A conflicting object with one or more of the specified property values is"
                " present in the directory.",
                request_id,
            )
        record = RoleAssignmentRecord(
            id=_new_id(),
            principal_id=principal,
            role_definition_id=role,
            directory_scope_id=str(body.get("directoryScopeId") or "/"),
            created=self.clock(),
        )
        tenant.role_assignments.append(record)
        return _graph_json(
            {
                "@odata.context": "https://graph.microsoft.com/v1.0/$metadata"
                "#roleManagement/directory/roleAssignments/$entity",
                "id": record.id,
                "principalId": principal,
                "roleDefinitionId": role,
                "directoryScopeId": record.directory_scope_id,
            },
            request_id,
            status=201,
        )

    def _check_principal_and_role(
        self, tenant: SandboxTenant, principal: str, role: str, request_id: str
    ) -> None:
        known = any(s.id == principal for s in tenant.service_principals) or tenant.user(principal)
        if not known:
            raise _SandboxError(
                _graph_error(
                    400,
                    "Request_BadRequest",
                    f"Resource '{principal}' does not exist or one of its queried"
                    " reference-property objects are not present.",
                    request_id,
                )
            )
        if role not in ROLE_NAMES:
            raise _SandboxError(
                _graph_error(
                    404,
                    "Request_ResourceNotFound",
                    f"The role definition '{role}' does not exist.",
                    request_id,
                )
            )

    # -- Exchange admin API ----------------------------------------------------------------------

    async def _exchange(self, request: Request) -> Response:
        request_id = _new_id()
        token = self._token_for(request)
        asked = request.path_params["tenant"]
        tenant = self.find_tenant(asked)
        if token is None or token.service != "exchange" or tenant is None:
            return _graph_error(
                401, "Unauthorized", "The access token is missing, invalid or expired.", request_id
            )
        if token.tenant_id != tenant.tenant_id:
            return _graph_error(
                401, "Unauthorized", "The token was issued for another tenant.", request_id
            )
        if "Exchange.ManageAsApp" not in token.roles:
            return _graph_error(
                401,
                "Unauthorized",
                "The application does not hold the Exchange.ManageAsApp permission.",
                request_id,
            )
        sp = tenant.service_principal(token.client_id)
        delay = (
            tenant.replication_delay
            if tenant.replication_delay is not None
            else self.replication_delay
        )
        now = self.clock()
        effective = sp is not None and any(
            a.principal_id == sp.id
            and a.role_definition_id in EXCHANGE_ROLES
            and a.created + delay <= now
            for a in self._active_assignments(tenant)
        )
        if not effective:
            return _graph_error(
                403,
                "Forbidden",
                "The role assigned to application isn't supported in this scenario. Please"
                " check the supported roles.",
                request_id,
            )
        anchor = request.headers.get("x-anchormailbox", "")
        expected = f"UPN:SystemMailbox{{{ANCHOR_MAILBOX_GUID}}}@{tenant.initial_domain}"
        if anchor.lower() != expected.lower():
            return _graph_error(
                400,
                "InvalidAnchorMailbox",
                f"X-AnchorMailbox must be {expected}.",
                request_id,
            )
        try:
            body = await _json_body(request, request_id)
            cmdlet_input = body.get("CmdletInput")
            if not isinstance(cmdlet_input, dict) or not cmdlet_input.get("CmdletName"):
                return _graph_error(
                    400, "BadRequest", "CmdletInput.CmdletName is required.", request_id
                )
            parameters = cmdlet_input.get("Parameters") or {}
            if not isinstance(parameters, dict):
                return _graph_error(400, "BadRequest", "Parameters must be an object.", request_id)
            cmdlet = str(cmdlet_input["CmdletName"])
            if self.exchange_reference is not None:
                _enforce(self.exchange_reference, tenant, cmdlet, parameters, request_id)
            results = _run_cmdlet(tenant, cmdlet, parameters, now, request_id)
        except _SandboxError as refused:
            return refused.response
        skip = int(request.query_params.get("$skiptoken", "0") or 0)
        size = self.exchange_page_size
        page: dict[str, Any] = {
            "@odata.context": f"{str(request.base_url).rstrip('/')}/exchange/adminapi/beta/"
            f"{tenant.tenant_id}/$metadata#Collection(Exchange.GenericHashTable)",
            "value": results[skip : skip + size],
        }
        if skip + size < len(results):
            page["@odata.nextLink"] = self._paging_link(
                str(request.url.replace(query=urllib.parse.urlencode({"$skiptoken": skip + size})))
            )
        return _graph_json(page, request_id)


# -- permission sets -----------------------------------------------------------------------------

READ_APPS = frozenset({"Application.Read.All", "Application.ReadWrite.All", "Directory.Read.All"})
READ_POLICY = frozenset(
    {
        "RoleManagementPolicy.Read.Directory",
        "RoleManagement.Read.Directory",
        "RoleManagement.ReadWrite.Directory",
    }
)
READ_ROLES = frozenset(
    {
        "RoleManagement.Read.Directory",
        "RoleManagement.ReadWrite.Directory",
        "RoleAssignmentSchedule.ReadWrite.Directory",
        "Directory.Read.All",
    }
)
WRITE_PIM = frozenset(
    {"RoleAssignmentSchedule.ReadWrite.Directory", "RoleManagement.ReadWrite.Directory"}
)
WRITE_DIRECT = frozenset({"RoleManagement.ReadWrite.Directory"})
READ_DOMAINS = frozenset({"Domain.Read.All", "Directory.Read.All"})
READ_ORG = frozenset({"Organization.Read.All", "Directory.Read.All", "User.Read"})


# -- Exchange cmdlets ----------------------------------------------------------------------------

_NAMED_KINDS: dict[str, dict[str, Any]] = {
    "InboundConnector": {"Enabled": True, "ConnectorType": "Partner"},
    "OutboundConnector": {"Enabled": True, "ConnectorType": "Partner"},
    "TransportRule": {"State": "Enabled", "Mode": "Enforce"},
    "DistributionGroup": {"GroupType": "Universal"},
    "UnifiedGroup": {"AccessType": "Private"},
}


def _exchange_error(status: int, code: str, message: str, request_id: str) -> _SandboxError:
    return _SandboxError(_graph_error(status, code, f"|{code}|{message}", request_id))


def _enforce(
    reference: ExchangeReference,
    tenant: SandboxTenant,
    cmdlet: str,
    parameters: dict[str, Any],
    request_id: str,
) -> None:
    """Refuse the call the way Exchange does when the reference says it would; remember the
    findings Exchange accepts silently (no effect, discouraged) for the tests."""
    verb, _, noun = cmdlet.partition("-")
    store = tenant.exchange.objects.get(noun, {})
    state: dict[str, Any] = dict(parameters)
    if verb == "New":
        state = {**_NAMED_KINDS.get(noun, {}), **parameters}
    elif "Identity" in parameters and noun in _NAMED_KINDS:
        identity = str(parameters["Identity"]).lower()
        existing = store.get(identity) or next(
            (o for o in store.values() if o.get("Guid") == parameters["Identity"]), None
        )
        state = {**(existing or {}), **parameters}
    findings = reference.check(
        cmdlet,
        parameters,
        state,
        rule_count=len(tenant.exchange.objects.get("TransportRule", {})),
        accepted_domains=tenant.verified_domains,
    )
    for finding in findings:
        if finding.severity is ReferenceSeverity.REFUSED:
            code = (
                "ParameterBindingException"
                if "parameter" in finding.message
                else "ValidationException"
            )
            raise _exchange_error(400, code, str(finding), request_id)
    tenant.exchange.reference_findings.extend(findings)


def _run_cmdlet(
    tenant: SandboxTenant,
    cmdlet: str,
    parameters: dict[str, Any],
    now: float,
    request_id: str,
) -> list[dict[str, Any]]:
    verb, _, noun = cmdlet.partition("-")
    org = tenant.exchange
    if cmdlet == "Get-AcceptedDomain":
        default = tenant.default_domain or tenant.verified_domains[-1]
        return [
            {
                "Identity": d,
                "Name": d,
                "DomainName": d,
                "DomainType": "Authoritative",
                "Default": d == default,
                "InitialDomain": d == tenant.initial_domain,
            }
            for d in tenant.verified_domains
        ]
    if noun == "HostedConnectionFilterPolicy" and verb in ("Get", "Set"):
        identity = str(parameters.get("Identity", "Default"))
        if identity != "Default":
            raise _not_found(identity, request_id)
        if verb == "Set" and "IPAllowList" in parameters:
            org.ip_allow_list[:] = _multi_value(org.ip_allow_list, parameters["IPAllowList"])
        if verb == "Set":
            return []
        return [
            {
                "Identity": "Default",
                "Name": "Default",
                "IsDefault": True,
                "IPAllowList": list(org.ip_allow_list),
                "IPBlockList": [],
                "EnableSafeList": False,
            }
        ]
    if noun == "TenantAllowBlockListSpoofItems" and verb in ("Get", "New"):
        if verb == "Get":
            return [dict(item) for item in org.spoof_items]
        spoofed = str(parameters.get("SpoofedUser", ""))
        infrastructure = str(parameters.get("SendingInfrastructure", ""))
        if not spoofed or not infrastructure:
            raise _exchange_error(
                400,
                "ParameterBindingException",
                "Cannot process command because of one or more missing mandatory parameters:"
                " SpoofedUser SendingInfrastructure.",
                request_id,
            )
        for item in org.spoof_items:
            if (
                item["SpoofedUser"].lower() == spoofed.lower()
                and item["SendingInfrastructure"].lower() == infrastructure.lower()
            ):
                raise _exchange_error(
                    400,
                    "ADObjectAlreadyExistsException",
                    f"An entry for {spoofed} and {infrastructure} already exists.",
                    request_id,
                )
        item = {
            "Identity": _new_id(),
            "SpoofedUser": spoofed,
            "SendingInfrastructure": infrastructure,
            "SpoofType": str(parameters.get("SpoofType", "External")),
            "Action": str(parameters.get("Action", "Allow")),
            "LastModifiedDateTime": _iso(now),
        }
        org.spoof_items.append(item)
        return [dict(item)]
    if noun == "TransportRule" and verb in ("Enable", "Disable"):
        # Set-TransportRule has no State parameter: Exchange switches rules with these two.
        rule = _lookup(
            org.objects.setdefault(noun, {}), str(parameters.get("Identity", "")), request_id
        )
        rule["State"] = "Enabled" if verb == "Enable" else "Disabled"
        rule["WhenChanged"] = _iso(now)
        return []
    if cmdlet == "Validate-OutboundConnector":
        connector = _lookup(
            org.objects.setdefault("OutboundConnector", {}),
            str(parameters.get("Identity", "")),
            request_id,
        )
        hosts = connector.get("SmartHosts") or []
        down = [
            h
            for h in (hosts if isinstance(hosts, list) else [hosts])
            if str(h).lower() in org.unreachable_smart_hosts
        ]
        connector["IsValidated"] = not down
        connector["LastValidationTimestamp"] = _iso(now)
        recipients = parameters.get("Recipients") or []
        return [
            {
                "Identity": connector["Name"],
                "Recipient": str(recipient),
                "IsValidated": not down,
                "Status": "Failed" if down else "Succeeded",
                "Message": (
                    f"450 4.4.317 Cannot connect to remote server [{down[0]}]: connection timed out"
                    if down
                    else "250 2.6.0 Queued mail for delivery"
                ),
            }
            for recipient in (recipients if isinstance(recipients, list) else [recipients])
        ]
    if noun in _NAMED_KINDS and verb in ("Get", "New", "Set", "Remove"):
        store = org.objects.setdefault(noun, {})
        if verb == "Get":
            wanted = parameters.get("Identity")
            if wanted is None:
                found = sorted(store.values(), key=lambda o: (o.get("Priority", 0), o["Name"]))
                return [dict(o) for o in found]
            return [dict(_lookup(store, str(wanted), request_id))]
        if verb == "New":
            name: str = str(parameters.get("Name") or parameters.get("DisplayName") or "")
            if not name:
                raise _exchange_error(
                    400,
                    "ParameterBindingException",
                    "Cannot process command because of one or more missing mandatory"
                    " parameters: Name.",
                    request_id,
                )
            if name.lower() in store:
                raise _exchange_error(
                    400,
                    "ADObjectAlreadyExistsException",
                    f"The {noun} '{name}' already exists.",
                    request_id,
                )
            created: dict[str, Any] = {
                **_NAMED_KINDS[noun],
                **parameters,
                "Identity": name,
                "Name": name,
                "Guid": _new_id(),
                "WhenCreated": _iso(now),
                "WhenChanged": _iso(now),
            }
            if noun == "TransportRule":
                # New-TransportRule -Enabled; Get- echoes State.
                enabled = created.pop("Enabled", True)
                created["State"] = "Enabled" if enabled is not False else "Disabled"
                priority = int(parameters.get("Priority", len(store)))
                for other in store.values():
                    if int(other.get("Priority", 0)) >= priority:
                        other["Priority"] = int(other.get("Priority", 0)) + 1
                created["Priority"] = priority
            if noun in ("DistributionGroup", "UnifiedGroup"):
                alias = str(parameters.get("Alias") or re.sub(r"[^A-Za-z0-9]", "", name))
                created.setdefault("Alias", alias)
                created.setdefault("PrimarySmtpAddress", f"{alias}@{tenant.initial_domain}")
            store[name.lower()] = created
            return [dict(created)]
        identity = str(parameters.get("Identity", ""))
        existing = _lookup(store, identity, request_id)
        if verb == "Remove":
            del store[existing["Name"].lower()]
            if noun == "TransportRule":
                for other in store.values():
                    if int(other.get("Priority", 0)) > int(existing.get("Priority", 0)):
                        other["Priority"] = int(other.get("Priority", 0)) - 1
            return []
        renamed = str(parameters.get("Name") or existing["Name"])
        if renamed.lower() != existing["Name"].lower():
            if renamed.lower() in store:
                raise _exchange_error(
                    400,
                    "ADObjectAlreadyExistsException",
                    f"The {noun} '{renamed}' already exists.",
                    request_id,
                )
            del store[existing["Name"].lower()]
            existing["Name"] = existing["Identity"] = renamed
            store[renamed.lower()] = existing
        for key, value in parameters.items():
            if key not in ("Identity", "Name", "Guid", "WhenCreated"):
                existing[key] = value
        existing["WhenChanged"] = _iso(now)
        return []
    raise _exchange_error(
        400,
        "CommandNotFoundException",
        f"The term '{cmdlet}' is not recognized as a name of a cmdlet.",
        request_id,
    )


def _not_found(identity: str, request_id: str) -> _SandboxError:
    return _exchange_error(
        404,
        "ManagementObjectNotFoundException",
        f"The operation couldn't be performed because object '{identity}' couldn't be found.",
        request_id,
    )


def _lookup(store: dict[str, dict[str, Any]], identity: str, request_id: str) -> dict[str, Any]:
    found = store.get(identity.lower())
    if found is None:
        found = next((o for o in store.values() if o["Guid"] == identity), None)
    if found is None:
        raise _not_found(identity, request_id)
    return found


def _multi_value(current: list[str], value: Any) -> list[str]:
    if isinstance(value, dict):
        result = list(current)
        for item in value.get("Add", []) or []:
            if item not in result:
                result.append(str(item))
        removals = {str(i) for i in value.get("Remove", []) or []}
        return [i for i in result if i not in removals]
    if isinstance(value, list):
        return [str(i) for i in value]
    if value is None:
        return []
    return [str(value)]


# -- helpers -------------------------------------------------------------------------------------


async def _read_form(request: Request) -> dict[str, str]:
    """An urlencoded form body (the sandbox needs no multipart support)."""
    raw = (await request.body()).decode("utf-8", "replace")
    return dict(urllib.parse.parse_qsl(raw, keep_blank_values=True))


def _form_str(form: Mapping[str, str], name: str) -> str:
    return form.get(name, "")


def _redirect_allowed(app: SandboxApp, redirect_uri: str) -> bool:
    if not redirect_uri:
        return False
    if app.redirect_uris:
        return redirect_uri in app.redirect_uris
    parts = urllib.parse.urlsplit(redirect_uri)
    return parts.scheme == "https" or (
        parts.scheme == "http" and parts.hostname in ("127.0.0.1", "localhost")
    )


def _form_post(redirect_uri: str, params: Mapping[str, str | None]) -> HTMLResponse:
    """``response_mode=form_post``: a page that POSTs the answer to the redirect URI."""
    fields = "".join(
        f"<input type='hidden' name='{html.escape(k)}' value='{html.escape(v)}'>"
        for k, v in params.items()
        if v is not None
    )
    return HTMLResponse(
        "<!doctype html><html lang='en'><head><meta charset='utf-8'><title>Working...</title>"
        "</head><body onload='document.forms[0].submit()'>"
        f"<form method='post' action='{html.escape(redirect_uri)}'>{fields}"
        "<noscript><button type='submit'>Continue</button></noscript></form></body></html>"
    )


def _redirect(redirect_uri: str, params: Mapping[str, str | None]) -> Response:
    query = urllib.parse.urlencode({k: v for k, v in params.items() if v is not None})
    separator = "&" if "?" in redirect_uri else "?"
    return RedirectResponse(f"{redirect_uri}{separator}{query}", status_code=302)


def _pkce_ok(verifier: str, challenge: str, method: str) -> bool:
    if not verifier:
        return False
    if method == "S256":
        computed = _b64url(hashlib.sha256(verifier.encode("ascii")).digest())
    else:
        computed = verifier
    return hmac.compare_digest(computed, challenge)


def _assertion_ok(assertion: str, app: SandboxApp, endpoint: str) -> bool:
    if app.certificate_pem is None:
        return False
    try:
        certificate = x509.load_pem_x509_certificate(app.certificate_pem)
        header = jwt.get_unverified_header(assertion)
        thumbprints = {
            _b64url(certificate.fingerprint(hashes.SHA1())),
            _b64url(certificate.fingerprint(hashes.SHA256())),
        }
        presented = {str(header.get(k, "")).rstrip("=") for k in ("x5t", "x5t#S256")}
        if not presented & thumbprints:
            return False
        claims = jwt.decode(
            assertion,
            key=certificate.public_key(),  # type: ignore[arg-type]
            algorithms=["RS256", "PS256"],
            audience=endpoint,
            options={"require": ["exp", "aud", "iss", "sub"]},
        )
    except (jwt.PyJWTError, ValueError) as error:
        log.info("client assertion refused: %s", error)
        return False
    return bool(claims.get("iss") == app.client_id and claims.get("sub") == app.client_id)


def _parse_duration(text: str) -> timedelta | None:
    match = re.fullmatch(
        r"P(?:(\d+)D)?(?:T(?:(\d+)H)?(?:(\d+)M)?(?:(\d+)S)?)?", text.strip().upper()
    )
    if not match or text.strip().upper() in ("P", "PT"):
        return None
    days, hours, minutes, seconds = (int(g) if g else 0 for g in match.groups())
    return timedelta(days=days, hours=hours, minutes=minutes, seconds=seconds)


def _parse_filter(text: str, request_id: str) -> dict[str, str]:
    """The tiny OData ``$filter`` subset the bot uses: ``a eq 'x' and b eq 'y'``."""
    wanted: dict[str, str] = {}
    if not text.strip():
        return wanted
    for clause in re.split(r"\s+and\s+", text.strip()):
        match = re.fullmatch(r"(\w+)\s+eq\s+'([^']*)'", clause.strip())
        if match is None:
            raise _SandboxError(
                _graph_error(400, "BadRequest", f"Invalid filter clause: {clause}", request_id)
            )
        wanted[match.group(1)] = match.group(2)
    return wanted


def _assignment_match(wanted: Mapping[str, str], assignment: RoleAssignmentRecord) -> bool:
    actual = {
        "principalId": assignment.principal_id,
        "roleDefinitionId": assignment.role_definition_id,
        "directoryScopeId": assignment.directory_scope_id,
    }
    return all(actual.get(key) == value for key, value in wanted.items())


async def _json_body(request: Request, request_id: str) -> dict[str, Any]:
    try:
        body = json.loads(await request.body())
    except ValueError:
        raise _SandboxError(
            _graph_error(400, "BadRequest", "The request body is not valid JSON.", request_id)
        ) from None
    if not isinstance(body, dict):
        raise _SandboxError(
            _graph_error(400, "BadRequest", "The request body must be an object.", request_id)
        )
    return body


def _assignment_json(assignment: RoleAssignmentRecord) -> dict[str, Any]:
    return {
        "id": assignment.id,
        "principalId": assignment.principal_id,
        "roleDefinitionId": assignment.role_definition_id,
        "directoryScopeId": assignment.directory_scope_id,
    }


def _sp_json(sp: ServicePrincipalRecord, request: Request) -> dict[str, Any]:
    return {
        "@odata.context": "https://graph.microsoft.com/v1.0/$metadata#servicePrincipals/$entity",
        "id": sp.id,
        "accountEnabled": True,
        "appId": sp.app_id,
        "appDisplayName": sp.display_name,
        "appOwnerOrganizationId": sp.app_owner_organization_id,
        "displayName": sp.display_name,
        "servicePrincipalType": "Application",
        "signInAudience": "AzureADMultipleOrgs",
    }


def _policy_json(tenant: SandboxTenant, role: str) -> dict[str, Any]:
    rules = tenant.policy_for(role)
    policy_id = f"DirectoryRole_{tenant.tenant_id}_{hashlib.md5(role.encode()).hexdigest()}"
    target = {
        "caller": "Admin",
        "operations": ["All"],
        "level": "Assignment",
        "inheritableSettings": [],
        "enforcedSettings": [],
    }
    return {
        "id": f"{policy_id}_{role}",
        "policyId": policy_id,
        "scopeId": "/",
        "scopeType": "DirectoryRole",
        "roleDefinitionId": role,
        "policy": {
            "id": policy_id,
            "displayName": "DirectoryRole",
            "description": "DirectoryRole",
            "isOrganizationDefault": False,
            "scopeId": "/",
            "scopeType": "DirectoryRole",
            "lastModifiedDateTime": None,
            "rules": [
                {
                    "@odata.type": "#microsoft.graph.unifiedRoleManagementPolicyExpirationRule",
                    "id": "Expiration_Admin_Eligibility",
                    "isExpirationRequired": False,
                    "maximumDuration": "P365D",
                    "target": {**target, "level": "Eligibility"},
                },
                {
                    "@odata.type": "#microsoft.graph.unifiedRoleManagementPolicyEnablementRule",
                    "id": "Enablement_Admin_Eligibility",
                    "enabledRules": [],
                    "target": {**target, "level": "Eligibility"},
                },
                {
                    "@odata.type": "#microsoft.graph.unifiedRoleManagementPolicyExpirationRule",
                    "id": "Expiration_Admin_Assignment",
                    "isExpirationRequired": rules.expiration_required,
                    "maximumDuration": rules.maximum_duration,
                    "target": target,
                },
                {
                    "@odata.type": "#microsoft.graph.unifiedRoleManagementPolicyEnablementRule",
                    "id": "Enablement_Admin_Assignment",
                    "enabledRules": list(rules.enabled_rules),
                    "target": target,
                },
                {
                    "@odata.type": "#microsoft.graph.unifiedRoleManagementPolicyEnablementRule",
                    "id": "Enablement_EndUser_Assignment",
                    "enabledRules": ["MultiFactorAuthentication", "Justification"],
                    "target": {**target, "caller": "EndUser"},
                },
            ],
        },
    }


def _graph_json(body: Any, request_id: str, status: int = 200) -> Response:
    return JSONResponse(
        body,
        status_code=status,
        headers={"request-id": request_id, "client-request-id": request_id},
    )


def _graph_error(
    status: int,
    code: str,
    message: str,
    request_id: str,
    headers: Mapping[str, str] | None = None,
) -> Response:
    body = {
        "error": {
            "code": code,
            "message": message,
            "innerError": {
                "date": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S"),
                "request-id": request_id,
                "client-request-id": request_id,
            },
        }
    }
    return JSONResponse(
        body,
        status_code=status,
        headers={"request-id": request_id, "client-request-id": request_id, **(headers or {})},
    )


def _login_error(status: int, error: str, code: int, description: str) -> JSONResponse:
    trace, correlation = _new_id(), _new_id()
    stamp = time.strftime("%Y-%m-%d %H:%M:%SZ", time.gmtime())
    return JSONResponse(
        {
            "error": error,
            "error_description": f"AADSTS{code}: {description} Trace ID: {trace}"
            f" Correlation ID: {correlation} Timestamp: {stamp}",
            "error_codes": [code],
            "timestamp": stamp,
            "trace_id": trace,
            "correlation_id": correlation,
            "error_uri": f"https://login.microsoftonline.com/error?code={code}",
        },
        status_code=status,
    )


_PAGE_STYLE = (
    "body{font-family:system-ui,sans-serif;max-width:32rem;margin:3rem auto;padding:0 1rem}"
    "button{font-size:1rem;padding:.5rem 1.25rem;margin-right:.5rem}"
    "input{font-size:1rem;padding:.4rem;width:100%;box-sizing:border-box}"
    ".notice{color:#a4262c}"
)


def _error_page(status: int, code: int, message: str) -> HTMLResponse:
    text = html.escape(f"AADSTS{code}: {message}")
    return HTMLResponse(
        "<!doctype html><html lang='en'><head><meta charset='utf-8'>"
        f"<title>Sign in error</title><style>{_PAGE_STYLE}</style></head><body>"
        f"<main><h1>Sorry, but we're having trouble signing you in.</h1><p role='alert'>{text}</p>"
        "</main></body></html>",
        status_code=status,
    )


def _sign_in_page(
    kind: Literal["v1", "v2", "authorize"],
    app: SandboxApp,
    tenant: SandboxTenant,
    prefill: str,
    notice: str,
    params: Mapping[str, str],
    request: Request,
) -> HTMLResponse:
    if kind == "authorize":
        heading = "Permissions requested"
        what = f"{app.display_name} wants to sign you in and act on your behalf."
    else:
        heading = "Permissions requested — Accept for your organization"
        what = (
            f"{app.display_name} needs permission to access resources in your organization"
            " that only an admin can grant."
        )
    permissions = "".join(
        f"<li>{html.escape(resource.display_name)}: {html.escape(name)}</li>"
        for permission in app.required
        for resource in RESOURCES
        if resource.app_id == permission.resource_app_id
        for name in (*permission.app_roles, *permission.scopes)
    )
    action = html.escape(str(request.url.replace(query=urllib.parse.urlencode(params))))
    alert = f"<p class='notice' role='alert'>{html.escape(notice)}</p>" if notice else ""
    return HTMLResponse(
        "<!doctype html><html lang='en'><head><meta charset='utf-8'>"
        f"<title>{html.escape(heading)}</title><style>{_PAGE_STYLE}</style></head><body><main>"
        f"<h1>{html.escape(heading)}</h1>"
        f"<p>{html.escape(what)}</p><p>Directory: {html.escape(tenant.display_name)}</p>"
        f"<ul>{permissions}</ul>{alert}"
        f"<form method='post' action='{action}'>"
        "<label for='login_hint'>Sign in as</label>"
        f"<input id='login_hint' name='login_hint' type='email' autocomplete='username'"
        f" value='{html.escape(prefill)}'>"
        "<p><button type='submit' name='decision' value='accept'>Accept</button>"
        "<button type='submit' name='decision' value='cancel'>Cancel</button></p>"
        "</form></main></body></html>"
    )


# -- instrumentation: latency, faults, recording -------------------------------------------------


class _Instrument:
    """ASGI middleware: applies latency and faults, and records each request."""

    def __init__(self, app: ASGIApp, sandbox: SandboxMicrosoft) -> None:
        self.app = app
        self.sandbox = sandbox

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path: str = scope["path"]
        service: Service = (
            "graph"
            if path.startswith("/graph")
            else "exchange"
            if path.startswith("/exchange")
            else "login"
        )
        chunks: list[bytes] = []
        while True:
            message = await receive()
            chunks.append(message.get("body", b""))
            if not message.get("more_body"):
                break
        raw = b"".join(chunks)
        sandbox = self.sandbox
        request = Request(scope)
        record = _Recorder(sandbox, service, request, raw)
        peer = scope.get("client")
        client = (str(peer[0]), int(peer[1])) if peer else None
        held = HeldCall(service, request.method, path, record.body, client)
        if not await sandbox.holds.pass_through(held):
            await _cut_off(send)
            record.done(0)
            return
        delay = sandbox.latency.get(service, sandbox.latency.get(None, 0.0))
        if delay:
            await asyncio.sleep(delay)
        fault = next((f for f in sandbox.faults if f.matches(service, path)), None)
        if fault is not None:
            fault.times -= 1
            if fault.drop:
                await _cut_off(send)
                record.done(0)
                return
            headers = (
                {"Retry-After": f"{fault.retry_after:g}"} if fault.retry_after is not None else {}
            )
            code = "TooManyRequests" if fault.status == 429 else "ServiceUnavailable"
            if service == "login":
                response: Response = _login_error(
                    fault.status,
                    "temporarily_unavailable",
                    50196,
                    "The server is temporarily unavailable.",
                )
                response.headers.update(headers)
            else:
                response = _graph_error(fault.status, code, "Simulated fault.", _new_id(), headers)
            record.done(fault.status)
            await response(scope, receive, send)
            return
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if replayed:
                return {"type": "http.disconnect"}
            replayed = True
            return {"type": "http.request", "body": raw, "more_body": False}

        status = 500

        async def capture(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, replay, capture)
        finally:
            record.done(status)


async def _cut_off(send: Send) -> None:
    """Start a response that promises a body and end without it: a broken connection."""
    await send(
        {"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"64")]}
    )


class _Recorder:
    def __init__(
        self, sandbox: SandboxMicrosoft, service: Service, request: Request, raw: bytes
    ) -> None:
        self.sandbox = sandbox
        self.service = service
        self.request = request
        self.body = _parse_body(request.headers.get("content-type", ""), raw)
        token = sandbox._token_for(request)
        self.client_id = token.client_id if token else None
        self.user = token.user.user_principal_name if token and token.user else None
        self.tenant_id = token.tenant_id if token else None
        if self.client_id is None and isinstance(self.body, dict):
            client: Any = self.body.get("client_id") or request.query_params.get("client_id")
            self.client_id = str(client) if client else None

    def done(self, status: int) -> None:
        self.sandbox.requests.append(
            RecordedRequest(
                service=self.service,
                method=self.request.method,
                path=self.request.url.path,
                query=dict(self.request.query_params),
                body=self.body,
                client_id=self.client_id,
                user=self.user,
                tenant_id=self.tenant_id,
                status=status,
            )
        )


def _parse_body(content_type: str, raw: bytes) -> Any:
    if not raw:
        return None
    if "json" in content_type:
        try:
            return json.loads(raw)
        except ValueError:
            return raw.decode("utf-8", "replace")
    if "x-www-form-urlencoded" in content_type:
        pairs = urllib.parse.parse_qsl(raw.decode("utf-8", "replace"), keep_blank_values=True)
        return {k: ("<redacted>" if k in _REDACTED_FIELDS else v) for k, v in pairs}
    return raw.decode("utf-8", "replace")

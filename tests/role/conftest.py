"""A sandbox Microsoft cloud over real TLS, for the role-assignment tests.

Contoso has PIM and Entra ID P2; Fabrikam has neither. Users: a Global Administrator, a
Privileged Role Administrator, an Exchange Administrator (who cannot assign roles), and one
without MFA.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from bot.microsoft.graph import GraphClient
from bot.microsoft.identity import AppCredentials, MicrosoftApp, SignInFlow
from bot.microsoft.retry import RetryPolicy
from bot.role.assign import RoleSignIn
from bot.sandbox.microsoft import (
    EXCHANGE,
    EXCHANGE_ADMINISTRATOR,
    GLOBAL_ADMINISTRATOR,
    GRAPH,
    PRIVILEGED_ROLE_ADMINISTRATOR,
    ManualClock,
    RequiredPermission,
    SandboxApp,
    SandboxMicrosoft,
    SandboxTenant,
    SandboxUser,
)
from bot.sandbox.server import SandboxTLS, serve_asgi

CONTOSO = "0f1e2d3c-4b5a-4697-8899-aabbccddeeff"
FABRIKAM = "11111111-2222-4333-8444-555555555555"
MAILFLOW_ID = "aaaaaaaa-0000-4000-8000-000000000001"
DIRSYNC_ID = "aaaaaaaa-0000-4000-8000-000000000002"
MAILFLOW_SECRET = "role-mailflow-secret~do-not-log"
DIRSYNC_SECRET = "role-dirsync-secret~do-not-log"
REDIRECT = "https://bot.example/microsoft/callback"

ADMIN = "admin@contoso.com"
PRIVILEGED = "pra@contoso.com"
EXCHANGE_ADMIN = "exo@contoso.com"
NO_MFA = "nomfa@contoso.com"
FABRIKAM_ADMIN = "admin@fabrikam.example"


@dataclass(frozen=True)
class Cloud:
    sandbox: SandboxMicrosoft
    base_url: str
    tls: SandboxTLS

    @property
    def login_url(self) -> str:
        return f"{self.base_url}/login"

    @property
    def graph_url(self) -> str:
        return f"{self.base_url}/graph"


def _tenants() -> list[SandboxTenant]:
    return [
        SandboxTenant(
            tenant_id=CONTOSO,
            display_name="Contoso",
            initial_domain="contoso.onmicrosoft.com",
            domains=["contoso.com"],
            users=[
                SandboxUser(ADMIN, "Ada Admin", roles={GLOBAL_ADMINISTRATOR}),
                SandboxUser(PRIVILEGED, "Pat Privileged", roles={PRIVILEGED_ROLE_ADMINISTRATOR}),
                SandboxUser(EXCHANGE_ADMIN, "Ezra Exchange", roles={EXCHANGE_ADMINISTRATOR}),
                SandboxUser(NO_MFA, "Nia NoMFA", roles={PRIVILEGED_ROLE_ADMINISTRATOR}, mfa=False),
            ],
            default_domain="contoso.com",
        ),
        SandboxTenant(
            tenant_id=FABRIKAM,
            display_name="Fabrikam",
            initial_domain="fabrikam.onmicrosoft.com",
            domains=["fabrikam.example"],
            users=[SandboxUser(FABRIKAM_ADMIN, "Fay Admin", roles={GLOBAL_ADMINISTRATOR})],
            pim_enabled=False,
            premium_p2=False,
        ),
    ]


def _apps() -> list[SandboxApp]:
    return [
        SandboxApp(
            client_id=MAILFLOW_ID,
            display_name="Inline Mail Flow",
            secret=MAILFLOW_SECRET,
            required=(RequiredPermission(EXCHANGE.app_id, app_roles=("Exchange.ManageAsApp",)),),
        ),
        SandboxApp(
            client_id=DIRSYNC_ID,
            display_name="Inline Directory Sync",
            secret=DIRSYNC_SECRET,
            required=(
                RequiredPermission(
                    GRAPH.app_id,
                    app_roles=(
                        "Application.Read.All",
                        "Domain.Read.All",
                        "Organization.Read.All",
                        "RoleManagement.Read.Directory",
                    ),
                    scopes=(
                        "User.Read",
                        "RoleManagement.ReadWrite.Directory",
                        "Application.Read.All",
                    ),
                ),
            ),
        ),
    ]


@pytest.fixture(scope="session")
def tls(tmp_path_factory: pytest.TempPathFactory) -> SandboxTLS:
    return SandboxTLS.create(Path(tmp_path_factory.mktemp("role-tls")))


@pytest.fixture
def sandbox() -> SandboxMicrosoft:
    return SandboxMicrosoft(_tenants(), _apps(), clock=ManualClock())


@pytest.fixture
async def cloud(sandbox: SandboxMicrosoft, tls: SandboxTLS) -> AsyncIterator[Cloud]:
    async with serve_asgi(sandbox.app, tls=tls) as server:
        yield Cloud(sandbox=sandbox, base_url=server.base_url, tls=tls)


@pytest.fixture
async def http(tls: SandboxTLS) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(verify=tls.client_context(), timeout=10) as client:
        yield client


@pytest.fixture
def delays() -> list[float]:
    return []


@pytest.fixture
def no_wait(delays: list[float]) -> RetryPolicy:
    """The default retry policy, recording its waits instead of sleeping."""

    async def record(seconds: float) -> None:
        delays.append(seconds)

    return RetryPolicy(sleep=record)


@pytest.fixture
def apps_made() -> Iterator[list[MicrosoftApp]]:
    made: list[MicrosoftApp] = []
    yield made
    for app in made:
        app.close()


@pytest.fixture
def role_sign_in(cloud: Cloud, no_wait: RetryPolicy, apps_made: list[MicrosoftApp]) -> RoleSignIn:
    """The "Assign for me" sign-in with the directory-sync app (a fresh MSAL app each use)."""

    def new_app() -> MicrosoftApp:
        app = MicrosoftApp(
            AppCredentials(DIRSYNC_ID, secret=DIRSYNC_SECRET),
            login_url=cloud.login_url,
            ca_file=cloud.tls.ca_file,
        )
        apps_made.append(app)
        return app

    return RoleSignIn(new_app, cloud.graph_url, REDIRECT, retry=no_wait)


def reader_for(
    cloud: Cloud, http: httpx.AsyncClient, tenant: str, apps_made: list[MicrosoftApp]
) -> GraphClient:
    """The directory-sync app, consented in ``tenant``, reading Graph app-only."""
    cloud.sandbox.consent(tenant, DIRSYNC_ID)
    app = MicrosoftApp(
        AppCredentials(DIRSYNC_ID, secret=DIRSYNC_SECRET),
        login_url=cloud.login_url,
        ca_file=cloud.tls.ca_file,
    )
    apps_made.append(app)
    return GraphClient(http, cloud.graph_url, app.token_provider(tenant, cloud.graph_url))


def form_fields(page: str) -> dict[str, str]:
    """The hidden fields of a ``response_mode=form_post`` page (what the browser would POST)."""
    return dict(re.findall(r"name='([^']+)' value='([^']*)'", page))


async def browser_sign_in(
    cloud: Cloud,
    http: httpx.AsyncClient,
    flow: SignInFlow,
    upn: str,
    *,
    decision: str = "accept",
) -> dict[str, str]:
    """What Microsoft posts back to the redirect after ``upn`` signs in (or cancels)."""
    cloud.sandbox.sign_in(upn, auto="accept" if decision == "accept" else "cancel")
    try:
        page = await http.get(flow.auth_uri)
    finally:
        cloud.sandbox.sign_in(None)
    assert page.status_code == 200, page.text
    return form_fields(page.text)

"""A sandbox Microsoft cloud over real TLS, for the role-assignment tests.

Contoso has PIM and Entra ID P2; Fabrikam has neither. Users: a Global Administrator, a
Privileged Role Administrator, an Exchange Administrator (who cannot assign roles), and one
without MFA.
"""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from bot.microsoft.graph import GraphClient
from bot.microsoft.identity import AppCredentials, MicrosoftApp, SignInFlow
from bot.sandbox.microsoft import (
    PRIVILEGED_ROLE_ADMINISTRATOR,
    ManualClock,
    SandboxMicrosoft,
    SandboxUser,
    vendor_apps,
)
from bot.steps.role.assign import RoleSignIn
from tests.microsoft_cloud import REDIRECT, Cloud, contoso, contoso_staff, fabrikam, form_fields

MAILFLOW_ID = "aaaaaaaa-0000-4000-8000-000000000001"
DIRSYNC_ID = "aaaaaaaa-0000-4000-8000-000000000002"
MAILFLOW_SECRET = "role-mailflow-secret~do-not-log"
DIRSYNC_SECRET = "role-dirsync-secret~do-not-log"
NO_MFA = "nomfa@contoso.com"


@pytest.fixture
def sandbox(clock: ManualClock) -> SandboxMicrosoft:
    no_mfa = SandboxUser(NO_MFA, "Nia NoMFA", roles={PRIVILEGED_ROLE_ADMINISTRATOR}, mfa=False)
    tenants = [contoso(*contoso_staff(), no_mfa, domains=["contoso.com"]), fabrikam()]
    apps = vendor_apps(MAILFLOW_ID, MAILFLOW_SECRET, DIRSYNC_ID, DIRSYNC_SECRET)
    return SandboxMicrosoft(tenants, apps, clock=clock)


@pytest.fixture
def apps_made() -> Iterator[list[MicrosoftApp]]:
    made: list[MicrosoftApp] = []
    yield made
    for app in made:
        app.close()


def dirsync_msal_app(cloud: Cloud, apps_made: list[MicrosoftApp]) -> MicrosoftApp:
    """A fresh MSAL app for the directory-sync app (closed when the test ends)."""
    app = MicrosoftApp(
        AppCredentials(DIRSYNC_ID, secret=DIRSYNC_SECRET),
        login_url=cloud.login_url,
        ca_file=cloud.tls.ca_file,
    )
    apps_made.append(app)
    return app


@pytest.fixture
def role_sign_in(cloud: Cloud, apps_made: list[MicrosoftApp]) -> RoleSignIn:
    """The "Assign for me" sign-in with the directory-sync app (a fresh MSAL app each use)."""

    return RoleSignIn(lambda: dirsync_msal_app(cloud, apps_made), cloud.graph_url, REDIRECT)


def reader_for(
    cloud: Cloud, http: httpx.AsyncClient, tenant: str, apps_made: list[MicrosoftApp]
) -> GraphClient:
    """The directory-sync app, consented in ``tenant``, reading Graph app-only."""
    cloud.sandbox.consent(tenant, DIRSYNC_ID)
    app = dirsync_msal_app(cloud, apps_made)
    return GraphClient(http, cloud.graph_url, app.token_provider(tenant, cloud.graph_url))


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

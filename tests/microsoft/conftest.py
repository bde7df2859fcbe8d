"""Fixtures for the Microsoft clients: a sandbox Microsoft cloud served over real TLS.

The cloud, TLS, ``http``, ``clock`` and ``delays`` fixtures come from
``tests.microsoft_cloud``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import trustme

from bot.microsoft.identity import AppCredentials, DelegatedToken, MicrosoftApp
from bot.sandbox.microsoft import ManualClock, SandboxApp, SandboxMicrosoft, vendor_apps
from tests.microsoft_cloud import (
    ADMIN,
    CONTOSO,
    EXCHANGE_ADMIN,
    FABRIKAM,
    FABRIKAM_ADMIN,
    PRIVILEGED,
    REDIRECT,
    Cloud,
    contoso,
    contoso_staff,
    fabrikam,
    form_fields,
)

__all__ = [  # shared with the other folders, imported from here by this folder's tests
    "ADMIN",
    "CONTOSO",
    "EXCHANGE_ADMIN",
    "FABRIKAM",
    "FABRIKAM_ADMIN",
    "PRIVILEGED",
    "REDIRECT",
    "Cloud",
]

MAILFLOW_ID = "aaaaaaaa-0000-4000-8000-000000000001"
DIRSYNC_ID = "aaaaaaaa-0000-4000-8000-000000000002"
MAILFLOW_SECRET = "mailflow-secret-Zq8~do-not-log"
DIRSYNC_SECRET = "dirsync-secret-Xy7~do-not-log"


@dataclass(frozen=True)
class Certificate:
    pem_path: Path
    certificate_pem: bytes


@pytest.fixture(scope="session")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> Certificate:
    issued = trustme.CA(key_type=trustme.KeyType.RSA).issue_cert(
        "dirsync.provision-inline.example", key_type=trustme.KeyType.RSA
    )
    path = Path(tmp_path_factory.mktemp("cert")) / "dirsync.pem"
    key = issued.private_key_pem.bytes()
    cert = issued.cert_chain_pems[0].bytes()
    path.write_bytes(key + cert)
    return Certificate(pem_path=path, certificate_pem=cert)


def registered_apps(certificate: Certificate) -> list[SandboxApp]:
    return vendor_apps(
        MAILFLOW_ID,
        MAILFLOW_SECRET,
        DIRSYNC_ID,
        DIRSYNC_SECRET,
        dirsync_scopes=("User.Read", "RoleManagement.ReadWrite.Directory"),
        dirsync_certificate_pem=certificate.certificate_pem,
    )


@pytest.fixture
def sandbox(certificate: Certificate, clock: ManualClock) -> SandboxMicrosoft:
    tenants = [contoso(*contoso_staff()), fabrikam()]
    return SandboxMicrosoft(tenants, registered_apps(certificate), clock=clock)


AppFactory = Callable[..., MicrosoftApp]


@pytest.fixture
def make_app(cloud: Cloud) -> Iterator[AppFactory]:
    """A fresh MSAL-backed app per call (MSAL caches error responses: never share one)."""
    made: list[MicrosoftApp] = []

    def build(
        client_id: str = MAILFLOW_ID,
        *,
        secret: str | None = None,
        certificate_path: Path | None = None,
    ) -> MicrosoftApp:
        if certificate_path is None and secret is None:
            secret = MAILFLOW_SECRET if client_id == MAILFLOW_ID else DIRSYNC_SECRET
        app = MicrosoftApp(
            AppCredentials(client_id, secret=secret, certificate_path=certificate_path),
            login_url=cloud.login_url,
            ca_file=cloud.tls.ca_file,
        )
        made.append(app)
        return app

    yield build
    for app in made:
        app.close()


async def delegated_sign_in(
    cloud: Cloud,
    app: MicrosoftApp,
    http: httpx.AsyncClient,
    upn: str,
    scopes: list[str],
    tenant: str = CONTOSO,
) -> DelegatedToken:
    """Sign ``upn`` in through the sandbox's authorize page (auto-accepted) and redeem the code."""
    flow = await app.initiate_sign_in(tenant, scopes, REDIRECT)
    cloud.sandbox.sign_in(upn, auto="accept")
    page = await http.get(flow.auth_uri)
    cloud.sandbox.sign_in(None)
    return await app.complete_sign_in(tenant, flow, form_fields(page.text))

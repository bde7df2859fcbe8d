"""Fixtures for the Microsoft clients: a sandbox Microsoft cloud served over real TLS."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import trustme

from bot.microsoft.identity import AppCredentials, DelegatedToken, MicrosoftApp
from bot.microsoft.retry import RetryPolicy
from bot.sandbox.microsoft import (
    EXCHANGE,
    GLOBAL_ADMINISTRATOR,
    GRAPH,
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
MAILFLOW_SECRET = "mailflow-secret-Zq8~do-not-log"
DIRSYNC_SECRET = "dirsync-secret-Xy7~do-not-log"
REDIRECT = "https://bot.example/microsoft/callback"

ADMIN = "admin@contoso.com"
PRIVILEGED = "pra@contoso.com"
EXCHANGE_ADMIN = "exo@contoso.com"
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

    @property
    def exchange_url(self) -> str:
        return f"{self.base_url}/exchange"


@dataclass(frozen=True)
class Certificate:
    pem_path: Path
    certificate_pem: bytes


@pytest.fixture(scope="session")
def tls(tmp_path_factory: pytest.TempPathFactory) -> SandboxTLS:
    return SandboxTLS.create(Path(tmp_path_factory.mktemp("tls")))


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


def contoso() -> SandboxTenant:
    from bot.sandbox.microsoft import EXCHANGE_ADMINISTRATOR, PRIVILEGED_ROLE_ADMINISTRATOR

    return SandboxTenant(
        tenant_id=CONTOSO,
        display_name="Contoso",
        initial_domain="contoso.onmicrosoft.com",
        domains=["contoso.com", "mail.contoso.com"],
        users=[
            SandboxUser(ADMIN, "Ada Admin", roles={GLOBAL_ADMINISTRATOR}),
            SandboxUser(PRIVILEGED, "Pat Privileged", roles={PRIVILEGED_ROLE_ADMINISTRATOR}),
            SandboxUser(EXCHANGE_ADMIN, "Ezra Exchange", roles={EXCHANGE_ADMINISTRATOR}),
        ],
        default_domain="contoso.com",
    )


def fabrikam() -> SandboxTenant:
    return SandboxTenant(
        tenant_id=FABRIKAM,
        display_name="Fabrikam",
        initial_domain="fabrikam.onmicrosoft.com",
        domains=["fabrikam.example"],
        users=[SandboxUser(FABRIKAM_ADMIN, "Fay Admin", roles={GLOBAL_ADMINISTRATOR})],
        pim_enabled=False,
        premium_p2=False,
    )


def registered_apps(certificate: Certificate) -> list[SandboxApp]:
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
            certificate_pem=certificate.certificate_pem,
            required=(
                RequiredPermission(
                    GRAPH.app_id,
                    app_roles=(
                        "Application.Read.All",
                        "Domain.Read.All",
                        "Organization.Read.All",
                        "RoleManagement.Read.Directory",
                    ),
                    scopes=("User.Read", "RoleManagement.ReadWrite.Directory"),
                ),
            ),
        ),
    ]


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def sandbox(certificate: Certificate, clock: ManualClock) -> SandboxMicrosoft:
    return SandboxMicrosoft([contoso(), fabrikam()], registered_apps(certificate), clock=clock)


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
    """The default policy, recording its waits instead of sleeping."""

    async def record(seconds: float) -> None:
        delays.append(seconds)

    return RetryPolicy(sleep=record)


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


def form_fields(page: str) -> dict[str, str]:
    """The hidden fields of a ``response_mode=form_post`` page (what the browser would POST)."""
    import re

    return dict(re.findall(r"name='([^']+)' value='([^']*)'", page))


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

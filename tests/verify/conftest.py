"""Fixtures for verification: the sandbox Microsoft cloud over real TLS, two tenants, two apps.

Contoso has PIM and Entra ID P2; Fabrikam has neither (its PIM APIs answer
``AadPremiumLicenseRequired``). The retry policy records its waits instead of sleeping, and the
sandbox runs on a manual clock that tests (and the injected ``sleep``) advance.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import httpx
import pytest

from bot.microsoft.identity import AppCredentials, MicrosoftApp
from bot.microsoft.retry import RetryPolicy
from bot.sandbox.microsoft import (
    EXCHANGE,
    EXCHANGE_ADMINISTRATOR,
    GLOBAL_ADMINISTRATOR,
    GRAPH,
    ManualClock,
    RequiredPermission,
    SandboxApp,
    SandboxMicrosoft,
    SandboxTenant,
    SandboxUser,
    ServicePrincipalRecord,
)
from bot.sandbox.server import SandboxTLS, serve_asgi
from bot.verify import VerifyContext

CONTOSO = "0f1e2d3c-4b5a-4697-8899-aabbccddeeff"
FABRIKAM = "11111111-2222-4333-8444-555555555555"
MAILFLOW_ID = "aaaaaaaa-0000-4000-8000-0000000000a1"
DIRSYNC_ID = "aaaaaaaa-0000-4000-8000-0000000000a2"
MAILFLOW_SECRET = "verify-mailflow-secret-Qq1~never-logged"
DIRSYNC_SECRET = "verify-dirsync-secret-Ww2~never-logged"


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

    def consent(self, tenant: str, client_id: str) -> ServicePrincipalRecord:
        return self.sandbox.consent(tenant, client_id)

    def provision(self, tenant: str = CONTOSO, *, role: str = EXCHANGE_ADMINISTRATOR) -> str:
        """Steps 1–3 done: both apps consented, the role assigned now. The mail-flow sp id."""
        mailflow = self.consent(tenant, MAILFLOW_ID)
        self.consent(tenant, DIRSYNC_ID)
        via = "pim" if self.sandbox.tenant(tenant).premium_p2 else "direct"
        self.sandbox.assign_role(tenant, mailflow.id, role, via=via)
        return mailflow.id

    def revoke_app_role(self, tenant: str, client_id: str, role_id: str) -> None:
        found = self.sandbox.tenant(tenant)
        sp = found.service_principal(client_id)
        assert sp is not None
        found.app_role_grants = [
            g
            for g in found.app_role_grants
            if not (g.principal_id == sp.id and g.app_role_id == role_id)
        ]


def tenants() -> list[SandboxTenant]:
    return [
        SandboxTenant(
            tenant_id=CONTOSO,
            display_name="Contoso",
            initial_domain="contoso.onmicrosoft.com",
            domains=["contoso.com", "mail.contoso.com"],
            users=[SandboxUser("admin@contoso.com", "Ada Admin", roles={GLOBAL_ADMINISTRATOR})],
            default_domain="contoso.com",
        ),
        SandboxTenant(
            tenant_id=FABRIKAM,
            display_name="Fabrikam",
            initial_domain="fabrikam.onmicrosoft.com",
            domains=["fabrikam.example"],
            users=[
                SandboxUser("admin@fabrikam.example", "Fay Admin", roles={GLOBAL_ADMINISTRATOR})
            ],
            pim_enabled=False,
            premium_p2=False,
        ),
    ]


def apps() -> list[SandboxApp]:
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
                ),
            ),
        ),
    ]


@pytest.fixture(scope="session")
def tls(tmp_path_factory: pytest.TempPathFactory) -> SandboxTLS:
    return SandboxTLS.create(Path(tmp_path_factory.mktemp("verify-tls")))


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def sandbox(clock: ManualClock) -> SandboxMicrosoft:
    return SandboxMicrosoft(tenants(), apps(), clock=clock)


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
    """Every wait the retry policy asked for (it never really sleeps)."""
    return []


@pytest.fixture
def retry(delays: list[float]) -> RetryPolicy:
    async def record(seconds: float) -> None:
        delays.append(seconds)

    return RetryPolicy(sleep=record)


ContextFactory = Callable[..., VerifyContext]


@pytest.fixture
def make_context(
    cloud: Cloud, http: httpx.AsyncClient, retry: RetryPolicy, clock: ManualClock
) -> Iterator[ContextFactory]:
    """A ``VerifyContext`` with fresh MSAL apps (MSAL caches error answers: never share one)."""
    made: list[MicrosoftApp] = []

    def app(client_id: str, secret: str) -> MicrosoftApp:
        built = MicrosoftApp(
            AppCredentials(client_id, secret=secret),
            login_url=cloud.login_url,
            ca_file=cloud.tls.ca_file,
        )
        made.append(built)
        return built

    def build(
        tenant: str = CONTOSO,
        *,
        initial_domain: str | None = None,
        replication_window: timedelta = timedelta(hours=1),
        mailflow_secret: str = MAILFLOW_SECRET,
    ) -> VerifyContext:
        return VerifyContext.create(
            tenant_id=tenant,
            mailflow=app(MAILFLOW_ID, mailflow_secret),
            dirsync=app(DIRSYNC_ID, DIRSYNC_SECRET),
            http=http,
            graph_url=cloud.graph_url,
            exchange_url=cloud.exchange_url,
            retry=retry,
            initial_domain=initial_domain,
            clock=clock,
            replication_window=replication_window,
        )

    yield build
    for built in made:
        built.close()


@dataclass
class FakeTime:
    """``sleep`` and ``clock`` for ``verify_until_ready``: sleeping advances the sandbox clock."""

    clock: ManualClock
    slept: list[float]

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.clock.advance(seconds)

    def now(self) -> float:
        return self.clock()


@pytest.fixture
def fake_time(clock: ManualClock) -> FakeTime:
    return FakeTime(clock, [])

"""Fixtures for verification: the sandbox Microsoft cloud over real TLS, two tenants, two apps.

Contoso has PIM and Entra ID P2; Fabrikam has neither (its PIM APIs answer
``AadPremiumLicenseRequired``). Retries are instant (stamina's testing mode; ``delays`` records
the waits they stand for), and the sandbox runs on a manual clock that tests (and the ``sleep``
injected into ``verify_until_ready``) advance.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import timedelta

import httpx
import pytest

from bot.microsoft.access import VerifyContext
from bot.microsoft.identity import AppCredentials, MicrosoftApp
from bot.sandbox.microsoft import (
    EXCHANGE_ADMINISTRATOR,
    GLOBAL_ADMINISTRATOR,
    ManualClock,
    SandboxMicrosoft,
    SandboxUser,
    ServicePrincipalRecord,
    vendor_apps,
)
from tests import microsoft_cloud
from tests.microsoft_cloud import ADMIN, CONTOSO, FABRIKAM, contoso, fabrikam

__all__ = ["CONTOSO", "FABRIKAM"]

MAILFLOW_ID = "aaaaaaaa-0000-4000-8000-0000000000a1"
DIRSYNC_ID = "aaaaaaaa-0000-4000-8000-0000000000a2"
MAILFLOW_SECRET = "verify-mailflow-secret-Qq1~never-logged"
DIRSYNC_SECRET = "verify-dirsync-secret-Ww2~never-logged"


@dataclass(frozen=True)
class Cloud(microsoft_cloud.Cloud):
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


@pytest.fixture
def cloud_type() -> type[Cloud]:
    return Cloud


@pytest.fixture
def sandbox(clock: ManualClock) -> SandboxMicrosoft:
    tenants = [contoso(SandboxUser(ADMIN, "Ada Admin", roles={GLOBAL_ADMINISTRATOR})), fabrikam()]
    apps = vendor_apps(MAILFLOW_ID, MAILFLOW_SECRET, DIRSYNC_ID, DIRSYNC_SECRET, dirsync_scopes=())
    return SandboxMicrosoft(tenants, apps, clock=clock)


ContextFactory = Callable[..., VerifyContext]


@pytest.fixture
def make_context(
    cloud: Cloud, http: httpx.AsyncClient, clock: ManualClock
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

"""The sandbox Microsoft cloud over real TLS, shared by the Microsoft, role, verify and mail-flow
tests (a pytest plugin, loaded by ``tests/conftest.py``).

Each folder's conftest provides the ``sandbox`` fixture (its tenants and app registrations) and may
override ``cloud_type`` with a ``Cloud`` subclass that adds its own helpers. The standard tenants:
Contoso has PIM and Entra ID P2; Fabrikam has neither (unless ``licensed``).
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import stamina
from stamina.instrumentation import RetryDetails

from bot.microsoft.errors import MicrosoftUnavailable
from bot.sandbox.microsoft import (
    EXCHANGE_ADMINISTRATOR,
    GLOBAL_ADMINISTRATOR,
    PRIVILEGED_ROLE_ADMINISTRATOR,
    ManualClock,
    SandboxMicrosoft,
    SandboxTenant,
    SandboxUser,
)
from bot.sandbox.server import SandboxTLS, serve_asgi

CONTOSO = "0f1e2d3c-4b5a-4697-8899-aabbccddeeff"
FABRIKAM = "11111111-2222-4333-8444-555555555555"
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


def contoso_staff() -> list[SandboxUser]:
    """Contoso's Global Administrator, Privileged Role Administrator and Exchange Administrator."""
    return [
        SandboxUser(ADMIN, "Ada Admin", roles={GLOBAL_ADMINISTRATOR}),
        SandboxUser(PRIVILEGED, "Pat Privileged", roles={PRIVILEGED_ROLE_ADMINISTRATOR}),
        SandboxUser(EXCHANGE_ADMIN, "Ezra Exchange", roles={EXCHANGE_ADMINISTRATOR}),
    ]


def contoso(
    *users: SandboxUser,
    tenant_id: str = CONTOSO,
    domains: Sequence[str] = ("contoso.com", "mail.contoso.com"),
    default_domain: str | None = "contoso.com",
) -> SandboxTenant:
    return SandboxTenant(
        tenant_id=tenant_id,
        display_name="Contoso",
        initial_domain="contoso.onmicrosoft.com",
        domains=list(domains),
        users=list(users),
        default_domain=default_domain,
    )


def fabrikam(
    admin: str = FABRIKAM_ADMIN,
    name: str = "Fay Admin",
    *,
    tenant_id: str = FABRIKAM,
    licensed: bool = False,
) -> SandboxTenant:
    """Fabrikam with one Global Administrator; without PIM and P2 unless ``licensed``."""
    return SandboxTenant(
        tenant_id=tenant_id,
        display_name="Fabrikam",
        initial_domain="fabrikam.onmicrosoft.com",
        domains=["fabrikam.example"],
        users=[SandboxUser(admin, name, roles={GLOBAL_ADMINISTRATOR})],
        pim_enabled=licensed,
        premium_p2=licensed,
    )


def form_fields(page: str) -> dict[str, str]:
    """The hidden fields of a ``response_mode=form_post`` page (what the browser would POST)."""
    return dict(re.findall(r"name='([^']+)' value='([^']*)'", page))


@pytest.fixture(scope="session")
def tls(tmp_path_factory: pytest.TempPathFactory) -> SandboxTLS:
    return SandboxTLS.create(Path(tmp_path_factory.mktemp("tls")))


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def cloud_type() -> type[Cloud]:
    """The ``Cloud`` class the ``cloud`` fixture builds (a folder may add helpers)."""
    return Cloud


@pytest.fixture
async def cloud(
    sandbox: SandboxMicrosoft, tls: SandboxTLS, cloud_type: type[Cloud]
) -> AsyncIterator[Cloud]:
    async with serve_asgi(sandbox.app, tls=tls) as server:
        yield cloud_type(sandbox=sandbox, base_url=server.base_url, tls=tls)


@pytest.fixture
async def http(tls: SandboxTLS) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(verify=tls.client_context(), timeout=10) as client:
        yield client


def requested_wait(details: RetryDetails) -> float:
    """The wait a scheduled retry stands for: the ``Retry-After`` Microsoft sent (which the policy
    hands stamina as the wait), else stamina's backoff (0 in its testing mode)."""
    cause = details.caused_by
    if isinstance(cause, MicrosoftUnavailable) and cause.retry_after is not None:
        return cause.retry_after
    return details.wait_for


@contextlib.contextmanager
def recording_retries(record: Callable[[RetryDetails], None]) -> Iterator[None]:
    """Call ``record`` for every retry stamina schedules, in this process, while inside."""
    before = stamina.instrumentation.get_on_retry_hooks()
    stamina.instrumentation.set_on_retry_hooks([*before, record])
    try:
        yield
    finally:
        stamina.instrumentation.set_on_retry_hooks(before)


@pytest.fixture
def delays() -> Iterator[list[float]]:
    """Every wait the retry policy asked for (stamina's testing mode never really sleeps)."""
    waits: list[float] = []
    with recording_retries(lambda details: waits.append(requested_wait(details))):
        yield waits

"""Fixtures for mail flow: the sandbox Microsoft cloud over real TLS, with an Exchange organisation
the mail-flow app may administer, and the protection service's (example) endpoints."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from bot.config import InlineService
from bot.microsoft.exchange import ExchangeClient
from bot.microsoft.identity import AppCredentials, MicrosoftApp
from bot.sandbox.microsoft import (
    EXCHANGE_ADMINISTRATOR,
    ManualClock,
    SandboxMicrosoft,
    SandboxTenant,
    mailflow_registration,
)
from bot.steps.mailflow.desired import DesiredConfiguration, Kind, Role
from tests import microsoft_cloud
from tests.microsoft_cloud import CONTOSO, contoso

TENANT = CONTOSO
INITIAL_DOMAIN = "contoso.onmicrosoft.com"
MAILFLOW_ID = "aaaaaaaa-0000-4000-8000-000000000001"
MAILFLOW_SECRET = "mailflow-secret-do-not-log"
PREFIX = "TMCAS Inline"
ROUTE_KEY = "route-key-of-contoso"  # the tenant's loop-prevention secret in these tests


def inline_service(prefix: str = PREFIX) -> InlineService:
    """Example endpoints (reserved example names and documentation addresses only)."""
    return InlineService(
        name_prefix=prefix,
        inbound_smart_host="inbound.relay.example.net",
        outbound_smart_host="outbound.relay.example.net",
        ip_ranges=("203.0.113.0/24", "198.51.100.7/32"),
        tls_certificate_name="returns.relay.example.net",
        scanned_header="X-Inline-Scanned",
    )


def echo_of(desired: DesiredConfiguration) -> list[tuple[Kind, dict[str, Any]]]:
    """How Exchange would echo each named desired object once created (for pure tests)."""
    echoes: list[tuple[Kind, dict[str, Any]]] = []
    for target in desired.objects:
        if target.kind is Kind.IP_ALLOW_LIST:
            continue
        echo: dict[str, Any] = dict(target.new_parameters())
        if target.kind is Kind.TRANSPORT_RULE:
            echo.pop("Enabled", None)
        for setting in target.settings:
            if setting.role is Role.STATE:
                echo[setting.name] = setting.value
        echo["Identity"] = target.name
        echoes.append((target.kind, echo))
    return echoes


@dataclass(frozen=True)
class Cloud(microsoft_cloud.Cloud):
    @property
    def tenant(self) -> SandboxTenant:
        return self.sandbox.tenant(TENANT)

    @property
    def objects(self) -> dict[str, dict[str, dict[str, Any]]]:
        """The Exchange organisation's named objects: kind → lower-case name → properties."""
        return self.tenant.exchange.objects

    def names(self, kind: Kind) -> set[str]:
        return {o["Name"] for o in self.objects.get(str(kind), {}).values()}

    def exchange_calls(self, *, succeeded: bool = False) -> list[tuple[str, dict[str, Any]]]:
        """(cmdlet, parameters) of every Exchange request (``succeeded``: answered 200 only)."""
        calls = []
        for request in self.sandbox.requests_to("exchange"):
            if succeeded and request.status != 200:
                continue
            body = request.body if isinstance(request.body, dict) else {}
            cmdlet = body.get("CmdletInput", {})
            calls.append((str(cmdlet.get("CmdletName")), dict(cmdlet.get("Parameters") or {})))
        return calls

    def writes(self, since: int = 0) -> list[tuple[str, dict[str, Any]]]:
        """The New-/Set-/Enable- calls among ``exchange_calls()[since:]``."""
        return [
            (cmdlet, parameters)
            for cmdlet, parameters in self.exchange_calls()[since:]
            if not cmdlet.startswith("Get-")
        ]


@pytest.fixture
def cloud_type() -> type[Cloud]:
    return Cloud


@pytest.fixture
def sandbox(clock: ManualClock) -> SandboxMicrosoft:
    app = mailflow_registration(MAILFLOW_ID, MAILFLOW_SECRET)
    return SandboxMicrosoft([contoso()], [app], clock=clock)


@pytest.fixture
def mailflow_app(cloud: Cloud) -> Iterator[MicrosoftApp]:
    app = MicrosoftApp(
        AppCredentials(MAILFLOW_ID, secret=MAILFLOW_SECRET),
        login_url=cloud.login_url,
        ca_file=cloud.tls.ca_file,
    )
    yield app
    app.close()


@pytest.fixture
def exchange(cloud: Cloud, mailflow_app: MicrosoftApp, http: httpx.AsyncClient) -> ExchangeClient:
    """The mail-flow app, consented and holding an effective Exchange Administrator role."""
    sp = cloud.sandbox.consent(TENANT, MAILFLOW_ID)
    cloud.sandbox.assign_role(TENANT, sp.id, EXCHANGE_ADMINISTRATOR)
    provider = mailflow_app.token_provider(TENANT, cloud.exchange_url)
    return ExchangeClient(http, cloud.exchange_url, TENANT, INITIAL_DOMAIN, provider)


@pytest.fixture
def service() -> InlineService:
    return inline_service()

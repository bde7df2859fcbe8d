from __future__ import annotations

import importlib.abc
import sys
import types
from collections.abc import Sequence

import httpx
import pytest

from bot.microsoft.discovery import TenantIdentity, normalise_tenant_input, resolve_tenant
from bot.microsoft.errors import MicrosoftUnavailable, UnknownTenant
from bot.microsoft.retry import RetryPolicy
from bot.microsoft.tenants import TenantDirectory
from bot.sandbox.microsoft import ManualClock
from bot.sandbox.server import free_port

from .conftest import CONTOSO, Cloud


@pytest.mark.parametrize(
    ("typed", "expected"),
    [
        ("contoso.com", "contoso.com"),
        ("  Contoso.COM. ", "contoso.com"),
        ("contoso.onmicrosoft.com", "contoso.onmicrosoft.com"),
        ("0F1E2D3C-4B5A-4697-8899-AABBCCDDEEFF", CONTOSO),
        ("{0f1e2d3c-4b5a-4697-8899-aabbccddeeff}", CONTOSO),
        ("bücher.example", "xn--bcher-kva.example"),
        ("a-b.co.uk", "a-b.co.uk"),
    ],
)
def test_normalise_accepts(typed: str, expected: str) -> None:
    assert normalise_tenant_input(typed) == expected


@pytest.mark.parametrize(
    ("typed", "says"),
    [
        ("", "Type the tenant"),
        ("common", "not a tenant"),
        ("Organizations", "not a tenant"),
        ("consumers", "not a tenant"),
        ("https://contoso.com", "web address"),
        ("contoso.com/path", "web address"),
        ("admin@contoso.com", "email address"),
        ("contoso com", "without spaces"),
        ("contoso", "neither a domain"),
        ("-contoso.com", "neither a domain"),
        ("contoso.c0m", "neither a domain"),
        ("contoso..com", "neither a domain"),
        ("0f1e2d3c-4b5a-4697-8899", "neither a domain"),
        ("a" * 64 + ".com", "neither a domain"),
    ],
)
def test_normalise_rejects(typed: str, says: str) -> None:
    with pytest.raises(ValueError, match=says):
        normalise_tenant_input(typed)


async def test_resolves_guid_and_domains(cloud: Cloud, http: httpx.AsyncClient) -> None:
    for asked in (CONTOSO, "contoso.com", "contoso.onmicrosoft.com", "MAIL.contoso.com"):
        assert await resolve_tenant(http, cloud.login_url, asked) == TenantIdentity(
            tenant_id=CONTOSO, queried_as=asked
        )


async def test_unknown_tenant(cloud: Cloud, http: httpx.AsyncClient) -> None:
    with pytest.raises(UnknownTenant) as caught:
        await resolve_tenant(http, cloud.login_url, "nosuchtenant.example")
    assert "AADSTS90002" in caught.value.description
    assert caught.value.tenant == "nosuchtenant.example"


async def test_network_error_is_unavailable(http: httpx.AsyncClient, delays: list[float]) -> None:
    policy = RetryPolicy(max_attempts=3)
    nowhere = f"https://127.0.0.1:{free_port()}/login"
    with pytest.raises(MicrosoftUnavailable):
        await resolve_tenant(http, nowhere, "contoso.com", retry=policy)
    assert len(delays) == 2


async def test_outage_is_retried(
    cloud: Cloud, http: httpx.AsyncClient, delays: list[float]
) -> None:
    cloud.sandbox.fail("login", status=503, retry_after=4)
    identity = await resolve_tenant(http, cloud.login_url, "contoso.com")
    assert identity.tenant_id == CONTOSO
    assert delays == [4.0]
    cloud.sandbox.fail("login", status=500, times=10)
    with pytest.raises(MicrosoftUnavailable):
        await resolve_tenant(http, cloud.login_url, "contoso.com")


async def test_resolved_tenants_are_remembered_for_ten_minutes(
    cloud: Cloud, http: httpx.AsyncClient, clock: ManualClock
) -> None:
    directory = TenantDirectory(http, cloud.login_url, clock=clock)
    with pytest.raises(UnknownTenant):
        await directory.resolve("nosuchtenant.example")
    asked = len(cloud.sandbox.requests_to("login"))
    assert (await directory.resolve("contoso.com")).tenant_id == CONTOSO
    assert len(cloud.sandbox.requests_to("login")) == asked + 1
    clock.advance(599)
    assert (await directory.resolve("contoso.com")).tenant_id == CONTOSO
    assert len(cloud.sandbox.requests_to("login")) == asked + 1
    clock.advance(1)
    assert (await directory.resolve("contoso.com")).tenant_id == CONTOSO
    assert len(cloud.sandbox.requests_to("login")) == asked + 2
    with pytest.raises(UnknownTenant):  # a failure is never remembered: Microsoft is asked again
        await directory.resolve("nosuchtenant.example")
    assert len(cloud.sandbox.requests_to("login")) == asked + 3


class _ImportSearches(importlib.abc.MetaPathFinder):
    """Notes every module Python searches for (a failed import searches each time)."""

    def __init__(self) -> None:
        self.searched: list[str] = []

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: types.ModuleType | None = None
    ) -> None:
        self.searched.append(fullname)


async def test_a_look_up_searches_for_no_module(cloud: Cloud, http: httpx.AsyncClient) -> None:
    """httpcore asks sniffio for the event loop at each lock and connection: with sniffio not
    installed, each ask is a failed import that searches every directory of ``sys.path``."""
    await resolve_tenant(http, cloud.login_url, "contoso.com")  # modules imported on first use
    searches = _ImportSearches()
    sys.meta_path.insert(0, searches)
    try:
        await resolve_tenant(http, cloud.login_url, "contoso.onmicrosoft.com")
    finally:
        sys.meta_path.remove(searches)
    assert searches.searched == []

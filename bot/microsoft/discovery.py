"""Tenant discovery: turn what an administrator typed into a tenant id, without credentials.

``GET {login}/{tenant}/v2.0/.well-known/openid-configuration`` answers for a tenant GUID or any
verified domain of the tenant; the ``issuer`` holds the tenant GUID. A 400 means no such tenant.
"""

from __future__ import annotations

import re
import urllib.parse
from dataclasses import dataclass
from typing import Any

import httpx

from bot.microsoft.errors import MicrosoftError, MicrosoftUnavailable, UnknownTenant
from bot.microsoft.retry import DEFAULT_RETRY, RetryPolicy

__all__ = ["TenantIdentity", "normalise_tenant_input", "resolve_tenant"]

_GUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
_GUID_ANYWHERE = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
_LABEL = re.compile(r"^(?!-)[a-z0-9-]{1,63}(?<!-)$")
_TLD = re.compile(r"^(?:[a-z]{2,63}|xn--[a-z0-9-]{1,59})$")
_MULTI_TENANT_ALIASES = frozenset({"common", "organizations", "consumers"})


@dataclass(frozen=True)
class TenantIdentity:
    """A tenant as Microsoft knows it: its GUID, and what it was looked up as."""

    tenant_id: str
    queried_as: str


def normalise_tenant_input(text: str) -> str:
    """Check what a user typed as a tenant and return it in canonical form.

    Accepts a tenant GUID (returned lower-case) or a DNS domain name such as ``contoso.com`` or
    ``contoso.onmicrosoft.com`` (returned lower-case, without a trailing dot, internationalised
    names in their ``xn--`` form). Raises ``ValueError`` with a sentence for the user otherwise.
    """
    value = text.strip()
    if not value:
        raise ValueError("Type the tenant's domain (e.g. contoso.com) or its tenant ID.")
    if any(ch.isspace() for ch in value):
        raise ValueError(
            "A tenant is one word: a domain such as contoso.com or a tenant ID, without spaces."
        )
    lowered = value.lower()
    if "://" in lowered or "/" in lowered or "?" in lowered or "#" in lowered:
        raise ValueError(
            "That looks like a web address. "
            "Type only the domain (e.g. contoso.com) or the tenant ID."
        )
    if "@" in lowered:
        raise ValueError(
            "That looks like an email address. Type only the part after the @ (the domain)."
        )
    stripped = lowered.strip("{}")
    if _GUID.match(stripped):
        return stripped
    if lowered in _MULTI_TENANT_ALIASES:
        raise ValueError(
            f"'{lowered}' is not a tenant. Type the tenant's own domain or its tenant ID."
        )
    domain = lowered[:-1] if lowered.endswith(".") else lowered
    if not domain.isascii():
        try:
            domain = domain.encode("idna").decode("ascii")
        except UnicodeError:
            raise ValueError(f"'{value}' is not a valid domain name.") from None
    labels = domain.split(".")
    if (
        len(domain) > 253
        or len(labels) < 2
        or not all(_LABEL.match(label) for label in labels)
        or not _TLD.match(labels[-1])
    ):
        raise ValueError(
            f"'{value}' is neither a domain name (e.g. contoso.com) nor a tenant ID "
            "(e.g. 72f988bf-86f1-41af-91ab-2d7cd011db47)."
        )
    return domain


def _tenant_from_issuer(issuer: str) -> str | None:
    path = urllib.parse.urlsplit(issuer).path
    for segment in path.split("/"):
        if _GUID.match(segment.lower()):
            return segment.lower()
    found = _GUID_ANYWHERE.search(issuer.lower())
    return found.group(0) if found else None


async def resolve_tenant(
    http: httpx.AsyncClient,
    login_url: str,
    tenant: str,
    *,
    retry: RetryPolicy = DEFAULT_RETRY,
) -> TenantIdentity:
    """Look ``tenant`` (GUID or verified domain, already normalised) up at the login endpoint.

    Raises ``UnknownTenant`` when Microsoft says there is no such tenant, ``MicrosoftUnavailable``
    on network errors, timeouts or 5xx/429 after retries, ``MicrosoftError`` on anything else odd.
    """
    segment = urllib.parse.quote(tenant, safe="")
    url = f"{login_url.rstrip('/')}/{segment}/v2.0/.well-known/openid-configuration"
    response = await retry.send(lambda: http.get(url), what="Microsoft sign-in discovery")
    if response.status_code in (400, 404):
        description = ""
        body = _json_or_none(response)
        if isinstance(body, dict):
            description = str(body.get("error_description", ""))
        if response.status_code == 400 or "AADSTS90002" in description:
            raise UnknownTenant(tenant, description)
    if response.status_code >= 500:
        raise MicrosoftUnavailable(f"Microsoft sign-in discovery answered {response.status_code}")
    if response.status_code != 200:
        raise MicrosoftError(
            f"Microsoft sign-in discovery answered {response.status_code} for {tenant!r}"
        )
    body = _json_or_none(response)
    issuer = body.get("issuer") if isinstance(body, dict) else None
    tenant_id = _tenant_from_issuer(issuer) if isinstance(issuer, str) else None
    if tenant_id is None:
        raise MicrosoftError("Microsoft sign-in discovery answered without a tenant issuer")
    return TenantIdentity(tenant_id=tenant_id, queried_as=tenant)


def _json_or_none(response: httpx.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        return None

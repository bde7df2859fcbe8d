"""Resolving what an admin typed (domain or tenant id) to a tenant id, with a short memory."""

from __future__ import annotations

import time
from collections.abc import Callable

import httpx

from bot.microsoft.discovery import TenantIdentity, resolve_tenant

__all__ = ["TenantDirectory"]


class TenantDirectory:
    """Caches successful look-ups for ``remember_seconds``: a tenant id never changes, and a
    retried modal submission should not wait for Microsoft twice."""

    def __init__(
        self,
        http: httpx.AsyncClient,
        login_url: str,
        *,
        remember_seconds: float = 600.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._http = http
        self._login_url = login_url
        self._remember_seconds = remember_seconds
        self._clock = clock
        self._known: dict[str, tuple[TenantIdentity, float]] = {}

    async def resolve(self, tenant: str) -> TenantIdentity:
        known = self._known.get(tenant)
        if known is not None and known[1] > self._clock():
            return known[0]
        identity = await resolve_tenant(self._http, self._login_url, tenant)
        self._known[tenant] = (identity, self._clock() + self._remember_seconds)
        return identity

"""Resolving what an admin typed (domain or tenant id) to a tenant id, with a short memory."""

from __future__ import annotations

import time
from collections.abc import Callable

import httpx
from cachetools import TTLCache

from bot.microsoft.discovery import TenantIdentity, resolve_tenant

__all__ = ["TenantDirectory"]


class TenantDirectory:
    """Caches successful look-ups for ``remember_seconds`` (on ``clock``): a tenant id never
    changes, and a retried modal submission should not wait for Microsoft twice. Failures are not
    remembered."""

    def __init__(
        self,
        http: httpx.AsyncClient,
        login_url: str,
        *,
        remember_seconds: float = 600.0,
        clock: Callable[[], float] = time.monotonic,
        remember_at_most: int = 1024,
    ) -> None:
        self._http = http
        self._login_url = login_url
        self._known: TTLCache[str, TenantIdentity] = TTLCache(
            maxsize=remember_at_most, ttl=remember_seconds, timer=clock
        )

    async def resolve(self, tenant: str) -> TenantIdentity:
        known = self._known.get(tenant)
        if known is not None:
            return known
        identity = await resolve_tenant(self._http, self._login_url, tenant)
        self._known[tenant] = identity  # no await between: the event loop keeps this atomic
        return identity

"""The Exchange Online admin API (the REST endpoint behind the Exchange Online PowerShell module).

``POST {exchange}/adminapi/beta/{tenantId}/InvokeCommand`` with
``{"CmdletInput": {"CmdletName": …, "Parameters": {…}}}``, an app-only token for
``{exchange}/.default`` and ``X-AnchorMailbox: UPN:SystemMailbox{bb558c35-…}@{initial domain}``.
Results come in ``value`` and page through ``@odata.nextLink`` (the same body is posted again).
Errors come as Graph-shaped ``error`` objects and map to the same tree; a 401/403 right after the
role assignment is usually replication delay (``Forbidden``).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import httpx

from bot.microsoft.graph import error_from_response
from bot.microsoft.identity import TokenProvider
from bot.microsoft.paging import next_page
from bot.microsoft.retry import DEFAULT_RETRY, RetryPolicy

__all__ = ["ANCHOR_MAILBOX", "ExchangeClient", "anchor_mailbox"]

log = logging.getLogger(__name__)

ANCHOR_MAILBOX = "SystemMailbox{bb558c35-97f1-4cb9-8ff7-d53741dc928c}"

#: Verbs that change nothing, or set the same values again: safe to resend after a dropped answer.
_REPEATABLE_VERBS = frozenset({"Get", "Set", "Test"})


def anchor_mailbox(initial_domain: str) -> str:
    """The ``X-AnchorMailbox`` value for a tenant's initial (``*.onmicrosoft.com``) domain."""
    return f"UPN:{ANCHOR_MAILBOX}@{initial_domain}"


class ExchangeClient:
    """Cmdlets against one tenant's Exchange Online organisation."""

    def __init__(
        self,
        http: httpx.AsyncClient,
        exchange_url: str,
        tenant_id: str,
        initial_domain: str,
        token: TokenProvider,
        *,
        retry: RetryPolicy = DEFAULT_RETRY,
    ) -> None:
        self._http = http
        self._url = f"{exchange_url.rstrip('/')}/adminapi/beta/{tenant_id}/InvokeCommand"
        self._anchor = anchor_mailbox(initial_domain)
        self._token = token
        self._retry = retry

    def __repr__(self) -> str:
        return f"ExchangeClient({self._url!r})"

    async def invoke(
        self, cmdlet: str, parameters: Mapping[str, Any] | None = None
    ) -> list[dict[str, Any]]:
        """Run one cmdlet; every result object, across pages.

        Raises ``NotFound`` (e.g. ``Get-TransportRule -Identity`` of a missing rule),
        ``AlreadyExists`` (``New-*`` of an existing name), ``Forbidden`` (no role yet),
        ``MicrosoftUnavailable`` after retries, ``ServiceError`` otherwise.
        """
        body = {"CmdletInput": {"CmdletName": cmdlet, "Parameters": dict(parameters or {})}}
        idempotent = cmdlet.split("-", 1)[0] in _REPEATABLE_VERBS
        results: list[dict[str, Any]] = []
        url: str | None = self._url
        while url is not None:
            page = await self._post(url, body, cmdlet, idempotent)
            results.extend(item for item in page.get("value", []) if isinstance(item, dict))
            url = next_page(page.get("@odata.nextLink"), self._url)
        return results

    async def _post(
        self, url: str, body: Mapping[str, Any], cmdlet: str, idempotent: bool
    ) -> dict[str, Any]:
        token = await self._token.access_token()
        headers = {
            "Authorization": f"Bearer {token}",
            "X-AnchorMailbox": self._anchor,
            "Accept": "application/json",
        }

        async def send() -> httpx.Response:
            return await self._http.post(url, headers=headers, json=body)

        response = await self._retry.send(
            send, idempotent=idempotent, what=f"Exchange Online ({cmdlet})"
        )
        if response.is_success:
            page = response.json() if response.content else {}
            return page if isinstance(page, dict) else {}
        error = error_from_response(response, what="Exchange Online")
        log.info("Exchange %s answered %s", cmdlet, response.status_code)
        raise error

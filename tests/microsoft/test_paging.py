"""Bearer tokens go only to the configured Microsoft hosts: a paging link elsewhere is refused."""

from __future__ import annotations

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from bot.microsoft.errors import UntrustedLink
from bot.microsoft.exchange import ExchangeClient
from bot.microsoft.graph import GraphClient
from bot.microsoft.model import EXCHANGE_ADMINISTRATOR
from bot.sandbox.server import serve_asgi

from .conftest import CONTOSO, DIRSYNC_ID, MAILFLOW_ID, AppFactory, Cloud


def elsewhere() -> tuple[Starlette, list[dict[str, str]]]:
    """A host that records what reaches it (the attacker's, in a real attack)."""
    seen: list[dict[str, str]] = []

    async def anything(request: Request) -> JSONResponse:
        seen.append(dict(request.headers))
        return JSONResponse({"value": []})

    routes = [Route("/{path:path}", anything, methods=["GET", "POST"])]
    return Starlette(routes=routes), seen


async def test_graph_does_not_follow_a_paging_link_to_another_host(
    cloud: Cloud, make_app: AppFactory, http: httpx.AsyncClient
) -> None:
    cloud.sandbox.consent(CONTOSO, DIRSYNC_ID)
    provider = make_app(DIRSYNC_ID).token_provider(CONTOSO, cloud.graph_url)
    reader = GraphClient(http, cloud.graph_url, provider)
    cloud.sandbox.graph_page_size = 1
    assert len(await reader.domains()) == 3  # paging works on the configured host

    app, seen = elsewhere()
    async with serve_asgi(app) as other:
        cloud.sandbox.next_link_origin = other.base_url
        with pytest.raises(UntrustedLink):
            await reader.domains()
    assert seen == []


async def test_exchange_does_not_follow_a_paging_link_to_another_host(
    cloud: Cloud, make_app: AppFactory, http: httpx.AsyncClient
) -> None:
    principal = cloud.sandbox.consent(CONTOSO, MAILFLOW_ID)
    cloud.sandbox.assign_role(CONTOSO, principal.id, EXCHANGE_ADMINISTRATOR)
    provider = make_app(MAILFLOW_ID).token_provider(CONTOSO, cloud.exchange_url)
    exchange = ExchangeClient(
        http, cloud.exchange_url, CONTOSO, "contoso.onmicrosoft.com", provider
    )
    cloud.sandbox.exchange_page_size = 1
    assert len(await exchange.invoke("Get-AcceptedDomain")) >= 2

    app, seen = elsewhere()
    async with serve_asgi(app) as other:
        cloud.sandbox.next_link_origin = other.base_url
        with pytest.raises(UntrustedLink):
            await exchange.invoke("Get-AcceptedDomain")
    assert seen == []

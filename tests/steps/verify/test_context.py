"""Building a ``VerifyContext`` from the configuration."""

from __future__ import annotations

import httpx

from bot.config import load_settings
from bot.microsoft.access import VerifyContext, microsoft_apps
from tests.conftest import DIRSYNC_CLIENT_ID, MAILFLOW_CLIENT_ID, base_environment


async def test_from_settings() -> None:
    settings = load_settings(base_environment())
    mailflow, dirsync = microsoft_apps(settings)
    try:
        assert (mailflow.client_id, dirsync.client_id) == (MAILFLOW_CLIENT_ID, DIRSYNC_CLIENT_ID)
        assert mailflow.login_url == settings.microsoft_login_url
        assert "secret" not in repr(mailflow).lower()
        async with httpx.AsyncClient() as http:
            ctx = VerifyContext.from_settings(
                settings,
                "0f1e2d3c-4b5a-4697-8899-aabbccddeeff",
                mailflow=mailflow,
                dirsync=dirsync,
                http=http,
            )
            assert ctx.mailflow_app_id == MAILFLOW_CLIENT_ID
            assert ctx.dirsync_app_id == DIRSYNC_CLIENT_ID
            assert ctx.initial_domain is None
            assert settings.microsoft_graph_url in repr(ctx.graph)
            exchange = ctx.exchange("contoso.onmicrosoft.com")
            assert settings.microsoft_exchange_url in repr(exchange)
            assert "0f1e2d3c-4b5a-4697-8899-aabbccddeeff" in repr(exchange)
    finally:
        mailflow.close()
        dirsync.close()

"""What a verification needs to know about one tenant, and where its Microsoft clients come from.

Two app registrations take part (DESIGN §1):

- the **directory-sync app** reads Microsoft Graph app-only (it holds ``Application.Read.All``,
  ``Domain.Read.All`` and ``RoleManagement.Read.Directory`` once step 3 is done);
- the **mail-flow app** calls the Exchange Online admin API app-only (``Exchange.ManageAsApp`` from
  step 1 plus the Exchange Administrator role from step 2).

The Slack side builds one ``VerifyContext`` per tenant with ``VerifyContext.from_settings`` (or
``VerifyContext.create`` when it holds the URLs itself); tests build it the same way against the
sandbox (stamina's testing mode makes the retries' waits instant there).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Protocol

import httpx

from bot.config import AppCredentials as ConfiguredApp
from bot.config import Settings
from bot.microsoft.exchange import ExchangeClient
from bot.microsoft.graph import GraphClient
from bot.microsoft.identity import AppCredentials, MicrosoftApp, TokenProvider
from bot.microsoft.retry import DEFAULT_RETRY, RetryPolicy

__all__ = [
    "DEFAULT_REPLICATION_WINDOW",
    "AppTokens",
    "ExchangeFactory",
    "MicrosoftAccess",
    "VerifyContext",
    "microsoft_apps",
]

#: An Exchange 401/403 longer than this after the role became active is not replication delay.
DEFAULT_REPLICATION_WINDOW = timedelta(hours=1)

#: Builds the Exchange client once the tenant's initial domain (for ``X-AnchorMailbox``) is known.
ExchangeFactory = Callable[[str], ExchangeClient]


class AppTokens(Protocol):
    """An app registration that hands out app-only tokens (``MicrosoftApp`` is one)."""

    @property
    def client_id(self) -> str: ...

    def token_provider(self, tenant_id: str, resource_url: str) -> TokenProvider: ...


@dataclass(frozen=True)
class VerifyContext:
    """One tenant's verification inputs.

    ``graph`` reads as the directory-sync app; ``exchange(initial_domain)`` calls Exchange Online
    as the mail-flow app. ``initial_domain`` (``contoso.onmicrosoft.com``) may be left ``None``:
    verification then reads it from Graph ``/domains`` (``isInitial``). ``clock`` gives seconds
    since the epoch (wall time), used to date results and to tell replication delay from a real
    refusal (``replication_window``). ``exchange_token`` is the mail-flow app's token provider for
    Exchange (the one ``exchange`` uses), so a verification can ask for the token while it still
    reads the initial domain.
    """

    tenant_id: str
    mailflow_app_id: str
    dirsync_app_id: str
    graph: GraphClient
    exchange: ExchangeFactory = field(repr=False)
    initial_domain: str | None = None
    clock: Callable[[], float] = field(default=time.time, repr=False, compare=False)
    replication_window: timedelta = DEFAULT_REPLICATION_WINDOW
    exchange_token: TokenProvider | None = field(default=None, repr=False, compare=False)

    @classmethod
    def create(
        cls,
        *,
        tenant_id: str,
        mailflow: AppTokens,
        dirsync: AppTokens,
        http: httpx.AsyncClient,
        graph_url: str,
        exchange_url: str,
        retry: RetryPolicy = DEFAULT_RETRY,
        initial_domain: str | None = None,
        clock: Callable[[], float] = time.time,
        replication_window: timedelta = DEFAULT_REPLICATION_WINDOW,
    ) -> VerifyContext:
        """The usual wiring: Graph as ``dirsync``, Exchange as ``mailflow``, one retry policy."""
        graph = GraphClient(
            http, graph_url, dirsync.token_provider(tenant_id, graph_url), retry=retry
        )
        exchange_token = mailflow.token_provider(tenant_id, exchange_url)

        def exchange(domain: str) -> ExchangeClient:
            return ExchangeClient(
                http, exchange_url, tenant_id, domain, exchange_token, retry=retry
            )

        return cls(
            tenant_id=tenant_id,
            mailflow_app_id=mailflow.client_id,
            dirsync_app_id=dirsync.client_id,
            graph=graph,
            exchange=exchange,
            initial_domain=initial_domain,
            clock=clock,
            replication_window=replication_window,
            exchange_token=exchange_token,
        )

    @classmethod
    def from_settings(
        cls,
        settings: Settings,
        tenant_id: str,
        *,
        mailflow: AppTokens,
        dirsync: AppTokens,
        http: httpx.AsyncClient,
        retry: RetryPolicy = DEFAULT_RETRY,
        initial_domain: str | None = None,
    ) -> VerifyContext:
        """``create`` with the Graph and Exchange URLs of the configuration (DESIGN §5)."""
        return cls.create(
            tenant_id=tenant_id,
            mailflow=mailflow,
            dirsync=dirsync,
            http=http,
            graph_url=settings.microsoft_graph_url,
            exchange_url=settings.microsoft_exchange_url,
            retry=retry,
            initial_domain=initial_domain,
        )


def microsoft_app(settings: Settings, credentials: ConfiguredApp) -> MicrosoftApp:
    """One app registration as an MSAL client on the configured login host."""
    return MicrosoftApp(
        AppCredentials(
            credentials.client_id,
            secret=credentials.secret.reveal() if credentials.secret else None,
            certificate_path=credentials.certificate_path,
        ),
        login_url=settings.microsoft_login_url,
    )


def microsoft_apps(settings: Settings) -> tuple[MicrosoftApp, MicrosoftApp]:
    """``(mail-flow app, directory-sync app)`` from the configuration.

    Build them once per process and share them (MSAL keeps its token cache inside); ``close``
    them at shutdown.
    """
    return microsoft_app(settings, settings.mailflow_app), microsoft_app(
        settings, settings.dirsync_app
    )


@dataclass(frozen=True)
class MicrosoftAccess:
    """What the bot's Microsoft work shares: the configuration, the two apps (built once per
    process), the HTTP client and the retry policy (carried out by stamina)."""

    settings: Settings
    mailflow: MicrosoftApp
    dirsync: MicrosoftApp
    http: httpx.AsyncClient
    retry: RetryPolicy = DEFAULT_RETRY

    def context(self, tenant_id: str) -> VerifyContext:
        """The tenant's ``VerifyContext``; its clients retry 429/503 after ``Retry-After``."""
        return VerifyContext.from_settings(
            self.settings,
            tenant_id,
            mailflow=self.mailflow,
            dirsync=self.dirsync,
            http=self.http,
            retry=self.retry,
        )

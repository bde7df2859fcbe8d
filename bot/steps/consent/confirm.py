"""Is the consent there? Asked of Microsoft, in the tenant bound to the link's ``state``.

An admin-consent redirect proves nothing by itself: anyone can build one, with any ``tenant``.
A consent is recorded only once Microsoft shows the grant, with the credentials the bot holds at
that moment:

- **mail-flow app (step 1)**: its own app-only credential. Microsoft issues it a token for
  Exchange Online in the tenant only once the app has a service principal there
  (``AADSTS7000229`` otherwise), and the token's ``roles`` are the application permissions the
  tenant granted it: ``Exchange.ManageAsApp`` must be among them. (Exchange itself cannot tell:
  before step 2 it refuses the app with or without the permission.)
- **directory-sync app (step 3)**: its own app-only Graph token reads
  ``servicePrincipals(appId=…)`` and that principal's ``appRoleAssignments``, which must hold the
  Graph application permissions verification reads with (``VERIFY_GRAPH_PERMISSIONS``).

Tokens come past MSAL's cache (``MicrosoftApp.fresh_app_token``), so a grant that has just
replicated is seen at once, and are dropped right after. Microsoft may take a moment to show a
fresh consent everywhere: then the answer is ``NotConfirmed`` with ``retry=True``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field

from bot.microsoft.access import MicrosoftAccess
from bot.microsoft.errors import (
    ConsentMissing,
    Forbidden,
    MicrosoftError,
    MicrosoftUnavailable,
    TokenError,
    UnknownTenant,
)
from bot.microsoft.graph import GraphClient
from bot.microsoft.model import GRAPH_APP_ROLES, VERIFY_GRAPH_PERMISSIONS
from bot.steps.consent.model import ConsentApp

__all__ = [
    "ConfirmConsent",
    "Confirmed",
    "ConsentConfirmation",
    "NotConfirmed",
    "confirm_with_microsoft",
]

MANAGE_AS_APP = "Exchange.ManageAsApp"


@dataclass(frozen=True)
class Confirmed:
    """Microsoft shows the grant. ``evidence``: what it showed (for the audit)."""

    evidence: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class NotConfirmed:
    """Microsoft does not show the grant (yet). ``code`` for the audit; ``reason`` a sentence
    for people; ``retry``: trying again in a minute may help (replication, an outage)."""

    code: str
    reason: str
    retry: bool = True


ConsentConfirmation = Confirmed | NotConfirmed
ConfirmConsent = Callable[[ConsentApp, str], Awaitable[ConsentConfirmation]]


def confirm_with_microsoft(microsoft: MicrosoftAccess) -> ConfirmConsent:
    """The confirmation the consent step uses in production (and against the sandbox)."""
    settings = microsoft.settings

    async def mailflow(tenant_id: str) -> ConsentConfirmation:
        token = await microsoft.mailflow.fresh_app_token(tenant_id, settings.microsoft_exchange_url)
        if MANAGE_AS_APP not in token.roles:
            return NotConfirmed(
                "permission_missing",
                "Microsoft knows the mail-flow app in this tenant, but it does not hold the"
                " Exchange.ManageAsApp permission there yet.",
            )
        return Confirmed({"confirmed_by": "exchange_token_roles", "roles": MANAGE_AS_APP})

    async def dirsync(tenant_id: str) -> ConsentConfirmation:
        token = await microsoft.dirsync.fresh_app_token(tenant_id, settings.microsoft_graph_url)
        graph = GraphClient(
            microsoft.http, settings.microsoft_graph_url, token.provider(), retry=microsoft.retry
        )
        del token
        app_id = microsoft.dirsync.client_id
        principal = await graph.find_service_principal(app_id)
        if principal is None:
            return NotConfirmed(
                "no_service_principal",
                "Microsoft Graph does not list the directory-sync app in this tenant yet.",
            )
        held = {grant.app_role_id for grant in await graph.app_role_assignments(principal.id)}
        missing = [name for name in VERIFY_GRAPH_PERMISSIONS if GRAPH_APP_ROLES[name] not in held]
        if missing:
            return NotConfirmed(
                "permission_missing",
                "Microsoft Graph lists the directory-sync app in this tenant, but not yet with"
                f" the permission(s) {', '.join(missing)}.",
            )
        return Confirmed(
            {"confirmed_by": "graph_app_role_assignments", "service_principal": principal.id}
        )

    checks = {ConsentApp.MAILFLOW: mailflow, ConsentApp.DIRSYNC: dirsync}

    async def confirm(app: ConsentApp, tenant_id: str) -> ConsentConfirmation:
        try:
            return await checks[app](tenant_id)
        except ConsentMissing:
            return NotConfirmed(
                "no_service_principal",
                "Microsoft does not show the app in this tenant yet: it has no service principal"
                " there, so no consent was given in this tenant (or it has not replicated yet).",
            )
        except UnknownTenant:
            return NotConfirmed(
                "unknown_tenant", "Microsoft does not know this tenant.", retry=False
            )
        except Forbidden:
            return NotConfirmed(
                "permission_missing",
                "Microsoft Graph does not let the directory-sync app read its own grants yet.",
            )
        except MicrosoftUnavailable:
            return NotConfirmed(
                "unavailable", "Microsoft could not be reached to confirm the consent."
            )
        except TokenError as error:
            return NotConfirmed(
                "credential_rejected",
                f"Microsoft refused the app's own credential ({error.error}); the bot's operator"
                " must renew it.",
                retry=False,
            )
        except MicrosoftError as error:
            return NotConfirmed(
                "unexpected", f"Microsoft answered unexpectedly ({type(error).__name__})."
            )

    return confirm

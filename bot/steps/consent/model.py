"""Admin consent (steps 1 and 3): the link to Microsoft and the meaning of its redirect. Pure.

The v2 admin-consent endpoint consents to one resource's permissions per ``scope``::

    GET {login}/{tenant}/v2.0/adminconsent?client_id=&scope={resource}/.default&redirect_uri=&state=

Its redirect carries ``admin_consent=True&tenant=…&scope=…&state=…`` on success, and ``error``,
``error_description`` (``error_subcode=cancel`` when the admin pressed Cancel) on failure, where
``admin_consent=True`` may still be present: ``error`` is checked first. The redirect's ``tenant``
can be forged by whoever builds the URL: it is compared with the session's tenant, never trusted.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from urllib.parse import quote, urlencode

from bot.workflow import EventKind, Phase

__all__ = [
    "CONSENT_EVENT",
    "CONSENT_FOR_PHASE",
    "ConsentApp",
    "ConsentGranted",
    "ConsentOutcome",
    "ConsentRefused",
    "ConsentTarget",
    "ConsentTargets",
    "ConsentWrongTenant",
    "admin_consent_url",
    "read_consent_redirect",
]


class ConsentApp(StrEnum):
    """Which of the two app registrations a consent is for."""

    MAILFLOW = "mailflow"
    DIRSYNC = "dirsync"


# The phase in which each consent is the open step, and the event that records it.
CONSENT_FOR_PHASE: Mapping[Phase, ConsentApp] = {
    Phase.STARTED: ConsentApp.MAILFLOW,
    Phase.ROLE_ASSIGNED: ConsentApp.DIRSYNC,
}
CONSENT_EVENT: Mapping[ConsentApp, EventKind] = {
    ConsentApp.MAILFLOW: EventKind.MAILFLOW_CONSENT,
    ConsentApp.DIRSYNC: EventKind.DIRECTORY_CONSENT,
}


def admin_consent_url(
    *,
    login_url: str,
    tenant_id: str,
    client_id: str,
    resource: str,
    redirect_uri: str,
    state: str,
) -> str:
    """The v2 admin-consent URL for ``client_id``'s permissions on ``resource``."""
    query = urlencode(
        {
            "client_id": client_id,
            "scope": f"{resource.rstrip('/')}/.default",
            "redirect_uri": redirect_uri,
            "state": state,
        }
    )
    return f"{login_url.rstrip('/')}/{quote(tenant_id, safe='')}/v2.0/adminconsent?{query}"


@dataclass(frozen=True)
class ConsentGranted:
    scope: str


@dataclass(frozen=True)
class ConsentRefused:
    """The admin cancelled, or Microsoft refused (``error`` is Microsoft's code)."""

    error: str
    description: str
    cancelled: bool


@dataclass(frozen=True)
class ConsentWrongTenant:
    """Consent was given, but in another tenant than the session's."""

    signed_in_tenant: str


ConsentOutcome = ConsentGranted | ConsentRefused | ConsentWrongTenant


def read_consent_redirect(params: Mapping[str, str], *, expected_tenant: str) -> ConsentOutcome:
    """What the redirect says, for the session bound to its ``state``."""
    error = params.get("error")
    if error:
        description = params.get("error_description", "")
        cancelled = params.get("error_subcode") == "cancel" or (
            error == "access_denied" and "AADSTS65004" in description
        )
        return ConsentRefused(error=error, description=description, cancelled=cancelled)
    if params.get("admin_consent", "").lower() != "true":
        return ConsentRefused(
            error="no_consent",
            description="Microsoft's answer did not say that consent was given.",
            cancelled=False,
        )
    tenant = params.get("tenant", "").lower()
    if not tenant:
        # Microsoft's success always names the tenant; an answer without it proves nothing.
        return ConsentRefused(
            error="no_tenant",
            description="Microsoft's answer did not name the tenant the consent was given in.",
            cancelled=False,
        )
    if tenant != expected_tenant.lower():
        return ConsentWrongTenant(signed_in_tenant=tenant)
    return ConsentGranted(scope=params.get("scope", ""))


@dataclass(frozen=True)
class ConsentTarget:
    client_id: str
    resource: str  # the resource whose permissions are consented, e.g. the Exchange URL


@dataclass(frozen=True)
class ConsentTargets:
    """Where consent links point: the login host, our redirect URI and each app's target."""

    login_url: str
    redirect_uri: str
    apps: Mapping[ConsentApp, ConsentTarget]

    def url(self, app: ConsentApp, *, tenant_id: str, state: str) -> str:
        target = self.apps[app]
        return admin_consent_url(
            login_url=self.login_url,
            tenant_id=tenant_id,
            client_id=target.client_id,
            resource=target.resource,
            redirect_uri=self.redirect_uri,
            state=state,
        )

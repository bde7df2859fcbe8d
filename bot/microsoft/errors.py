"""The errors the Microsoft clients raise.

Callers branch on the class (and, for ``ServiceError``, on ``code``), never on message text::

    MicrosoftError                      base of everything below
    ├── MicrosoftUnavailable            network error, timeout, 5xx or 429 after retries ran out
    ├── UnknownTenant                   discovery: no such tenant (GUID or domain)
    ├── UntrustedLink                   an answer's ``@odata.nextLink`` left the configured host
    ├── TokenError                      MSAL answered an ``error`` dict (or refused a redirect)
    │   └── ConsentMissing              the app is not consented / not found in the tenant
    └── ServiceError                    Graph or Exchange answered an ``error`` object
        ├── NotFound                    404 (e.g. no service principal: consent not given yet)
        ├── Forbidden                   401/403 (e.g. Exchange before the role replicated)
        │   └── AuthorizationDenied     403 Authorization_RequestDenied (user lacks the role)
        ├── AlreadyExists               RoleAssignmentExists, the direct-assignment conflict,
        │                               or an Exchange ``New-*`` of an existing name
        ├── PolicyValidationFailed      RoleAssignmentRequestPolicyValidationFailed (``rules``)
        └── PremiumLicenseRequired      AadPremiumLicenseRequired (tenant has no Entra ID P2)

No error carries a token, a client secret or an authorization code.
"""

from __future__ import annotations

__all__ = [
    "AlreadyExists",
    "AuthorizationDenied",
    "ConsentMissing",
    "Forbidden",
    "MicrosoftError",
    "MicrosoftUnavailable",
    "NotFound",
    "PolicyValidationFailed",
    "PremiumLicenseRequired",
    "ServiceError",
    "TokenError",
    "UnknownTenant",
    "UntrustedLink",
]


class MicrosoftError(Exception):
    """Base class of every error the Microsoft clients raise."""


class MicrosoftUnavailable(MicrosoftError):
    """Microsoft could not be reached or kept failing (network, timeout, 5xx, 429).

    ``retry_after`` is the last ``Retry-After`` Microsoft sent, in seconds, if any.
    """

    def __init__(self, message: str, *, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class UntrustedLink(MicrosoftError):
    """A paging link pointed away from the configured Microsoft host; it was not followed, so
    no bearer token went anywhere else."""

    def __init__(self, host: str) -> None:
        super().__init__(f"a paging link pointed to {host!r}, not the configured Microsoft host")
        self.host = host


class UnknownTenant(MicrosoftError):
    """Discovery answered that the tenant (GUID or domain) does not exist."""

    def __init__(self, tenant: str, description: str = "") -> None:
        super().__init__(f"Microsoft does not know the tenant {tenant!r}")
        self.tenant = tenant
        self.description = description


class TokenError(MicrosoftError):
    """The identity platform refused to issue a token.

    ``error`` is the OAuth error code (``invalid_client``, ``invalid_grant``, …), ``error_codes``
    the AADSTS numbers; ``description`` is Microsoft's text (never contains the secret).
    """

    def __init__(
        self,
        error: str,
        description: str = "",
        *,
        correlation_id: str | None = None,
        error_codes: tuple[int, ...] = (),
    ) -> None:
        super().__init__(f"{error}: {description}" if description else error)
        self.error = error
        self.description = description
        self.correlation_id = correlation_id
        self.error_codes = error_codes


class ConsentMissing(TokenError):
    """The app has no service principal or grant in the tenant (AADSTS7000229/65001/700016)."""


class ServiceError(MicrosoftError):
    """Graph or the Exchange admin API answered an ``error`` object.

    Branch on ``code`` (e.g. ``Request_ResourceNotFound``), never on ``message``.
    """

    def __init__(self, status: int, code: str, message: str, request_id: str | None = None) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message
        self.request_id = request_id


class NotFound(ServiceError):
    """404: the object does not exist (a missing service principal means no consent yet)."""


class Forbidden(ServiceError):
    """401/403: the caller's token does not grant this (yet: roles replicate late)."""


class AuthorizationDenied(Forbidden):
    """403 ``Authorization_RequestDenied``: the signed-in user lacks the needed directory role."""


class AlreadyExists(ServiceError):
    """The object already exists (``RoleAssignmentExists``, a conflict, an existing name)."""


class PolicyValidationFailed(ServiceError):
    """``RoleAssignmentRequestPolicyValidationFailed``; ``rules`` names the failed rules.

    E.g. ``("JustificationRule", "TicketingRule")``: ask the user for what is missing.
    """

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        request_id: str | None = None,
        *,
        rules: tuple[str, ...] = (),
    ) -> None:
        super().__init__(status, code, message, request_id)
        self.rules = rules


class PremiumLicenseRequired(ServiceError):
    """``AadPremiumLicenseRequired``: PIM APIs need Entra ID P2; use plain role assignments."""

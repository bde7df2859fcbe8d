"""Who did something, as the session's history and audit name them. Pure.

An actor is a Slack user id (``U…``/``W…``) for what people did in Slack, ``"system"`` for the
bot's own work, or someone Microsoft vouches for:

- ``TENANT_GLOBAL_ADMIN``: an admin consent. Microsoft's consent redirect names no person, only
  that a Global Administrator of the tenant granted it (the grant itself is confirmed with
  Microsoft before it is recorded).
- ``signed_in_at_microsoft(name)``: the user of a sign-in's id_token (their UPN as Microsoft
  returned it), e.g. the Privileged Role Administrator who assigned the role.

The Slack user who merely clicked the link is recorded beside them (audit detail
``clicked_by``), never as the actor.
"""

from __future__ import annotations

__all__ = [
    "LEGACY_MICROSOFT",
    "MICROSOFT_USER_PREFIX",
    "TENANT_GLOBAL_ADMIN",
    "microsoft_user",
    "signed_in_at_microsoft",
]

TENANT_GLOBAL_ADMIN = "tenant:global-admin"
MICROSOFT_USER_PREFIX = "entra:"
#: What records made before actors came from identity hold for "an admin at Microsoft".
LEGACY_MICROSOFT = "microsoft"


def signed_in_at_microsoft(name: str) -> str:
    """The actor for the user a Microsoft sign-in names (UPN, else display name, else id)."""
    return MICROSOFT_USER_PREFIX + (" ".join(name.split()) or "unknown")


def microsoft_user(actor: str) -> str | None:
    """The name in a ``signed_in_at_microsoft`` actor, ``None`` for any other actor."""
    if actor.startswith(MICROSOFT_USER_PREFIX):
        return actor[len(MICROSOFT_USER_PREFIX) :]
    return None

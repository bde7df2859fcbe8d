"""The mail-flow step's pure logic beside the plan: which domains provisioning protects."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

__all__ = ["DomainChoice", "choose_domains"]


# -- protected domains ---------------------------------------------------------------------------


@dataclass(frozen=True)
class DomainChoice:
    """The domains provisioning protects, and one line of explanation per domain considered."""

    chosen: tuple[str, ...]
    reasons: tuple[str, ...]


def choose_domains(
    verified: Iterable[tuple[str, bool, bool]], accepted: Iterable[str]
) -> DomainChoice:
    """Protect the verified domains (``(name, is_verified, is_initial)``) that Exchange accepts.

    The initial ``*.onmicrosoft.com`` domain is Microsoft's routing domain, not one people send
    from: it is left out, as are unverified domains and domains Exchange does not accept.
    """
    accepted_names = {a.strip().rstrip(".").casefold() for a in accepted}
    chosen: list[str] = []
    reasons: list[str] = []
    for name, is_verified, is_initial in verified:
        domain = name.strip().rstrip(".").casefold()
        if not domain or domain in chosen:
            continue
        if is_initial or domain.endswith(".onmicrosoft.com"):
            reasons.append(f"{domain}: left out, Microsoft's initial routing domain")
        elif not is_verified:
            reasons.append(f"{domain}: left out, not verified in Entra ID")
        elif domain not in accepted_names:
            reasons.append(f"{domain}: left out, not an accepted domain in Exchange Online")
        else:
            chosen.append(domain)
            reasons.append(f"{domain}: protected (verified, and an accepted domain in Exchange)")
    return DomainChoice(tuple(chosen), tuple(reasons))

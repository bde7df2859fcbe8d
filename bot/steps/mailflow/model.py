"""The mail-flow step's pure logic beside the plan: which domains provisioning protects, and the
step's state in the session record (the plan last shown, the warnings acknowledged, what an
upgrade found already in place)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, replace

__all__ = [
    "Blocker",
    "DomainChoice",
    "PlanState",
    "UpgradeFindings",
    "WarningsAcknowledged",
    "choose_domains",
]


# -- the step's state ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Blocker:
    title: str
    fix: str


@dataclass(frozen=True)
class WarningsAcknowledged:
    fingerprint: str  # of the warnings the admin acknowledged
    by: str
    at: float


@dataclass(frozen=True)
class PlanState:
    """What the admin was shown for Submit: Submit and the apply job rely on exactly this.

    ``shown_in`` is the session version that recorded it (its Submit message is kept under it).
    """

    domains: tuple[str, ...] = ()
    initial_domain: str = ""
    blockers: tuple[Blocker, ...] = ()
    warnings_fingerprint: str = ""  # "" when there are no warnings
    warning_count: int = 0
    changes: int = 0
    acknowledged: WarningsAcknowledged | None = None
    shown_in: int = 0

    @property
    def acknowledged_by(self) -> str | None:
        """Who acknowledged the warnings now shown (an older acknowledgement does not count)."""
        ack = self.acknowledged
        if not self.warnings_fingerprint or ack is None:
            return None
        return ack.by if ack.fingerprint == self.warnings_fingerprint else None

    def replacing(self, earlier: PlanState | None, version: int) -> PlanState:
        """This plan, shown in ``version``, keeping an acknowledgement of the same warnings."""
        kept = earlier.acknowledged if earlier is not None else None
        if kept is not None and kept.fingerprint != self.warnings_fingerprint:
            kept = None
        return replace(self, acknowledged=kept, shown_in=version)


@dataclass(frozen=True)
class UpgradeFindings:
    """The checks (``bot.steps.verify.model.CheckName`` values) an upgrade found passing."""

    passed: frozenset[str] = frozenset()


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

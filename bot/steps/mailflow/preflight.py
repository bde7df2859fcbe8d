"""Pre-flight checks: what in the tenant stops provisioning, or deserves the admin's attention.

Pure: ``preflight(desired, current)`` reads a ``Snapshot`` and returns one or more ``Finding`` per
check, each ``PASS``, ``WARNING`` (the admin acknowledges it and provisioning may go on) or
``BLOCKING`` (provisioning cannot go on until the fix is made; ``apply`` refuses).

What blocks, and why (each predicts a refusal Exchange would give half-way through the apply, or
mail flow that would silently protect nothing):

- a protected domain that is not an accepted domain, or no protected domain at all;
- the connection filter IP Allow List has no room for the service's (split) ranges (1273
  entries);
- a new rule's priority outside 0…the number of rules at that point.

Warnings: another inbound connector that recognises the service (certificate or addresses),
another transport-rule-scoped outbound connector, a rule that stops processing ahead of ours, a
spoof allow entry for a protected domain. Drift in our own objects (settings, type, a disabled
object, a rule routed elsewhere) is never a blocker: the plan repairs it (update or replacement).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum

from bot.steps.mailflow.desired import (
    IP_ALLOW_LIST_LIMIT,
    Compare,
    DesiredConfiguration,
    Direction,
    Kind,
    object_names,
)
from bot.steps.mailflow.plan import Action, missing_allow_entries, plan
from bot.steps.mailflow.snapshot import ExchangeObject, Snapshot, display, normalise

__all__ = ["Finding", "Severity", "blocking", "preflight", "warnings"]


class Severity(StrEnum):
    PASS = "pass"  # noqa: S105 (a severity, not a password)
    WARNING = "warning"
    BLOCKING = "blocking"


@dataclass(frozen=True)
class Finding:
    """One line of the checklist: ``check`` groups findings, ``fix`` says what to do (if any)."""

    check: str
    severity: Severity
    title: str
    explanation: str
    fix: str = ""


def blocking(findings: Iterable[Finding]) -> tuple[Finding, ...]:
    return tuple(f for f in findings if f.severity is Severity.BLOCKING)


def warnings(findings: Iterable[Finding]) -> tuple[Finding, ...]:
    return tuple(f for f in findings if f.severity is Severity.WARNING)


def _check_domains(desired: DesiredConfiguration, current: Snapshot) -> list[Finding]:
    if not desired.protected_domains:
        return [
            Finding(
                "accepted-domains",
                Severity.BLOCKING,
                "No domain is chosen for protection",
                "The domain transport rules name the domains whose mail goes through the "
                "protection service; without one they would protect nothing.",
                "Choose at least one accepted domain to protect.",
            )
        ]
    accepted = {d.domain.strip().rstrip(".").casefold() for d in current.accepted_domains}
    missing = [d for d in desired.protected_domains if d not in accepted]
    findings = [
        Finding(
            "accepted-domains",
            Severity.BLOCKING,
            f"{domain} is not an accepted domain",
            f"Exchange Online only handles mail for its accepted domains: rules naming "
            f"{domain} would never match, so its mail would not be protected.",
            f"Add and verify {domain} in the Microsoft 365 admin center (Settings > Domains), "
            "or leave it out of the protected domains.",
        )
        for domain in missing
    ]
    if not findings:
        findings.append(
            Finding(
                "accepted-domains",
                Severity.PASS,
                "The protected domains are accepted domains",
                ", ".join(desired.protected_domains),
            )
        )
    return findings


def _is_true(value: object) -> bool:
    return normalise(Compare.BOOL, value) is True


def _check_partner_connectors(desired: DesiredConfiguration, current: Snapshot) -> list[Finding]:
    findings = []
    for connector in current.of_kind(Kind.OUTBOUND_CONNECTOR):
        if desired.owns(connector.name) or not connector.enabled:
            continue
        if not _is_true(connector.get("IsTransportRuleScoped")):
            continue
        hosts = connector.get("SmartHosts")
        where = f" (smart hosts: {display(hosts)})" if hosts else ""
        findings.append(
            Finding(
                "partner-connectors",
                Severity.WARNING,
                f"Another transport-rule-scoped connector: “{connector.name}”",
                f"Transport rules route mail to “{connector.name}”{where}. If one of them "
                "matches the same messages as ours, the rule that runs last picks the connector: "
                "mail may skip the protection service or pass through two services.",
                f"Check which rules route to “{connector.name}” (RouteMessageOutboundConnector) "
                "and keep them away from the protected domains, or disable the connector if it "
                "belongs to a service this one replaces.",
            )
        )
    if not findings:
        findings.append(
            Finding(
                "partner-connectors",
                Severity.PASS,
                "No other transport-rule-scoped connector",
                "No other enabled outbound connector is used by transport rules.",
            )
        )
    return findings


def _final_rule_order(desired: DesiredConfiguration, current: Snapshot) -> list[ExchangeObject]:
    """The transport rules in the order they will run once the missing ones are created."""

    def priority(rule: ExchangeObject) -> int:
        value = normalise(Compare.INT, rule.get("Priority"))
        return value if isinstance(value, int) else 0

    order = sorted(current.of_kind(Kind.TRANSPORT_RULE), key=lambda r: (priority(r), r.name))
    for target in desired.objects:
        if target.kind is not Kind.TRANSPORT_RULE or current.find(target.kind, target.name):
            continue
        at = target.value("Priority")
        index = at if isinstance(at, int) and not isinstance(at, bool) else len(order)
        order.insert(min(index, len(order)), ExchangeObject(target.kind, target.name))
    return order


def _check_rule_order(desired: DesiredConfiguration, current: Snapshot) -> list[Finding]:
    order = _final_rule_order(desired, current)
    ours = [i for i, rule in enumerate(order) if desired.owns(rule.name)]
    last_ours = max(ours, default=-1)
    findings = []
    for index, rule in enumerate(order):
        if index >= last_ours or desired.owns(rule.name) or not rule.enabled:
            continue
        if not _is_true(rule.get("StopRuleProcessing")):
            continue
        findings.append(
            Finding(
                "rule-order",
                Severity.WARNING,
                f"“{rule.name}” stops rule processing ahead of ours",
                f"The transport rule “{rule.name}” (priority {rule.get('Priority')}) has "
                "StopRuleProcessing: mail it matches is never seen by the rules after it, "
                "including the ones that route mail to the protection service.",
                f"Move “{rule.name}” below the {desired.prefix} rules in the Exchange admin "
                "center (Mail flow > Rules), or narrow its conditions.",
            )
        )
    if not findings:
        findings.append(
            Finding(
                "rule-order",
                Severity.PASS,
                "No rule stops processing ahead of ours",
                "No enabled transport rule with StopRuleProcessing runs before the "
                f"{desired.prefix} rules.",
            )
        )
    return findings


def _check_own_names(desired: DesiredConfiguration, current: Snapshot) -> list[Finding]:
    """Our objects that exist: what the plan repairs (drift is never a blocker)."""
    repaired: list[str] = []
    existing = 0
    for change in plan(desired, current).changes:
        if change.kind is Kind.IP_ALLOW_LIST or change.action in (Action.VALIDATE, Action.CREATE):
            continue
        existing += 1
        if change.action is Action.UPDATE:
            repaired.append(
                f"“{change.name}” (updated: {', '.join(f.name for f in change.fields)})"
            )
        elif change.action is Action.REPLACE:
            repaired.append(f"“{change.name}” (replaced)")
    if repaired:
        explanation = (
            f"{existing} of our objects exist; the plan repairs these: {'; '.join(repaired)}."
        )
    elif existing:
        explanation = f"{existing} of our objects exist with the required settings."
    else:
        explanation = "No object carries our names yet."
    return [Finding("own-objects", Severity.PASS, "Objects with our names", explanation)]


def _check_ip_allow_list(desired: DesiredConfiguration, current: Snapshot) -> list[Finding]:
    target = next((o for o in desired.objects if o.kind is Kind.IP_ALLOW_LIST), None)
    if target is None:
        return []
    findings = []
    entries = target.value("IPAllowList")
    usable = entries if isinstance(entries, tuple) else ()
    missing = missing_allow_entries(target, current)
    used = len(current.ip_allow_list)
    room = IP_ALLOW_LIST_LIMIT - used
    if len(missing) > room:
        findings.append(
            Finding(
                "ip-allow-list",
                Severity.BLOCKING,
                "No room in the connection filter IP Allow List",
                f"The list holds {used} of {IP_ALLOW_LIST_LIMIT} entries; the service needs "
                f"{len(missing)} more.",
                f"Remove at least {len(missing) - room} stale entries from the IP Allow List "
                "(Microsoft Defender portal > Anti-spam policies > Connection filter policy), or "
                "merge single addresses into ranges.",
            )
        )
    elif missing:
        findings.append(
            Finding(
                "ip-allow-list",
                Severity.PASS,
                "Room in the connection filter IP Allow List",
                f"{used} of {IP_ALLOW_LIST_LIMIT} entries used; {len(missing)} will be added.",
            )
        )
    else:
        findings.append(
            Finding(
                "ip-allow-list",
                Severity.PASS,
                "The service's addresses are on the IP Allow List",
                f"All {len(usable)} entries are there already ({used} of "
                f"{IP_ALLOW_LIST_LIMIT} used).",
            )
        )
    return findings


def _certificate_matches(pattern: str, name: str) -> bool:
    pattern, name = pattern.strip().casefold(), name.strip().casefold()
    if not pattern or not name:
        return False
    if pattern == name:
        return True
    return any(
        wild.startswith("*.") and other.endswith(wild[1:])
        for wild, other in ((pattern, name), (name, pattern))
    )


def _overlaps(ranges: object, service: tuple[str, ...]) -> list[str]:
    found = []
    items = ranges if isinstance(ranges, list | tuple) else [ranges] if ranges else []
    for item in items:
        try:
            network = ipaddress.ip_network(str(item).strip(), strict=False)
        except ValueError:
            continue
        for ours in service:
            mine = ipaddress.ip_network(ours, strict=False)
            if network.version == mine.version and network.overlaps(mine):
                found.append(str(item))
                break
    return found


def _check_inbound_competition(desired: DesiredConfiguration, current: Snapshot) -> list[Finding]:
    connector = next((o for o in desired.objects if o.kind is Kind.INBOUND_CONNECTOR), None)
    if connector is None:
        return []
    certificate = str(connector.value("TlsSenderCertificateName") or "")
    skipped = connector.value("EFSkipIPs")
    service = skipped if isinstance(skipped, tuple) else ()
    findings = []
    for other in current.of_kind(Kind.INBOUND_CONNECTOR):
        if desired.owns(other.name) or not other.enabled:
            continue
        why = []
        if _certificate_matches(certificate, str(other.get("TlsSenderCertificateName") or "")):
            why.append(f"the certificate name {other.get('TlsSenderCertificateName')}")
        addresses = _overlaps(other.get("SenderIPAddresses"), service)
        if addresses:
            why.append(f"the addresses {', '.join(addresses)}")
        if not why:
            continue
        findings.append(
            Finding(
                "competing-connectors",
                Severity.WARNING,
                f"“{other.name}” also recognises the protection service",
                f"The inbound connector “{other.name}” matches {' and '.join(why)}. Exchange may "
                "attribute mail returning from the service to it instead of ours, without "
                "Enhanced Filtering for Connectors (SPF, DKIM and DMARC would judge the service, "
                "not the sender).",
                f"Disable or narrow “{other.name}” if it served a service this one replaces.",
            )
        )
    if not findings:
        findings.append(
            Finding(
                "competing-connectors",
                Severity.PASS,
                "No other inbound connector recognises the service",
                "No other enabled inbound connector names the service's certificate or addresses.",
            )
        )
    return findings


def _check_rule_priorities(desired: DesiredConfiguration, current: Snapshot) -> list[Finding]:
    """``New-TransportRule -Priority``: "Valid values … depend on the number of existing rules"
    (a new rule takes 0 through the count)."""
    count = len(current.of_kind(Kind.TRANSPORT_RULE))
    for call in plan(desired, current).calls:
        if call.cmdlet == "New-TransportRule":
            priority = call.parameters.get("Priority")
            if isinstance(priority, int) and not 0 <= priority <= count:
                return [
                    Finding(
                        "rule-priorities",
                        Severity.BLOCKING,
                        f"Priority {priority} is not valid for “{call.parameters.get('Name')}”",
                        f"The tenant has {count} transport rules at that point: a new rule takes "
                        f"a priority from 0 to {count}.",
                        "Check again: the plan is made from the tenant's rules as they are.",
                    )
                ]
            count += 1
        elif call.cmdlet == "Remove-TransportRule":
            count -= 1
    return []


def _check_spoof(desired: DesiredConfiguration, current: Snapshot) -> list[Finding]:
    domains = set(desired.protected_domains)
    return [
        Finding(
            "spoof-entry",
            Severity.WARNING,
            f"A spoof allow entry for {item.spoofed_user} via {item.sending_infrastructure}",
            "The Tenant Allow/Block List lets anyone sending through "
            f"{item.sending_infrastructure} appear as {item.spoofed_user}. Inline protection does "
            "not need it: Enhanced Filtering for Connectors judges the original sender of mail "
            "the service returns. Provisioning leaves the entry alone.",
            "Remove it in the Microsoft Defender portal (Tenant Allow/Block Lists > Spoofed "
            "senders) unless you made it for another reason.",
        )
        for item in current.spoof_items
        if item.spoofed_user.strip().casefold() in domains and item.action.casefold() == "allow"
    ]


def _check_upgrade(desired: DesiredConfiguration, current: Snapshot) -> list[Finding]:
    if Direction.INBOUND in desired.directions:
        return []
    inbound = object_names(desired.prefix).of(Direction.INBOUND)
    missing = [name for kind, name in inbound if current.find(kind, name) is None]
    if missing:
        return [
            Finding(
                "inbound-protection",
                Severity.WARNING,
                "The tenant is not fully protected inbound",
                f"The upgrade adds the outbound objects only; these inbound objects are missing: "
                f"{', '.join(missing)}.",
                "Run full provisioning (/provision-inline) to protect incoming mail too.",
            )
        ]
    return [
        Finding(
            "inbound-protection",
            Severity.PASS,
            "Inbound protection found",
            f"All {len(inbound)} inbound objects exist; the upgrade leaves them as they are.",
        )
    ]


def preflight(desired: DesiredConfiguration, current: Snapshot) -> tuple[Finding, ...]:
    """Every check, in checklist order."""
    return (
        *_check_domains(desired, current),
        *_check_upgrade(desired, current),
        *_check_own_names(desired, current),
        *_check_inbound_competition(desired, current),
        *_check_partner_connectors(desired, current),
        *_check_rule_order(desired, current),
        *_check_rule_priorities(desired, current),
        *_check_ip_allow_list(desired, current),
        *_check_spoof(desired, current),
    )

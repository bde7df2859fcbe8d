"""Pre-flight checks: what in the tenant stops provisioning, or deserves the admin's attention.

Pure: ``preflight(desired, current)`` reads a ``Snapshot`` and returns one or more ``Finding`` per
check, each ``PASS``, ``WARNING`` (the admin acknowledges it and provisioning may go on) or
``BLOCKING`` (provisioning cannot go on until the fix is made; ``apply`` refuses).

What blocks, and why:

- a protected domain that is not an accepted domain (Exchange would never route its mail; the
  rules would silently protect nothing), or no protected domain at all;
- an object with one of our names that an update cannot make right (``plan.conflicts``): a
  connector of another ``ConnectorType`` (changing the type changes how Exchange attributes all
  mail through it: someone built it for something else), or a transport rule with our name that
  also deletes, rejects, quarantines, redirects, copies or moderates mail (an update only writes
  the settings we own, so it would keep doing that);
- the connection filter IP Allow List has no room for the service's addresses (1273 entries);
- a Tenant Allow/Block List spoof entry for the same domain pair with an action other than Allow
  (a shared entry someone made on purpose: not ours to flip).

Everything else on our objects (smart hosts, TLS, addresses, rule conditions, mode, state,
``StopRuleProcessing``, a disabled connector) is drift that ``apply`` repairs with ``Set-``/
``Enable-`` cmdlets: reported here as ``PASS`` with what will change.
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
from bot.steps.mailflow.plan import Action, compare_object, conflicts, missing_allow_entries, plan
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
    findings = []
    drifted: list[str] = []
    existing = 0
    aliases = current.aliases()
    for target in desired.objects:
        if target.kind in (Kind.IP_ALLOW_LIST, Kind.SPOOF_ITEM):
            continue
        found = current.find(target.kind, target.name)
        if found is None:
            continue
        existing += 1
        problems = conflicts(target, found)
        if problems:
            findings.append(
                Finding(
                    "name-conflicts",
                    Severity.BLOCKING,
                    f"“{found.name}” exists with conflicting settings",
                    f"A {target.kind.label} with this name already exists, but "  # noqa: S608
                    f"{'; '.join(problems)}. An update cannot make it right without changing "
                    "mail flow someone else set up.",
                    f"Rename or remove the {target.kind.label} “{found.name}” in the Exchange "
                    "admin center, then run the checks again.",
                )
            )
            continue
        if target.kind is not Kind.DISTRIBUTION_GROUP:
            differences = compare_object(target, found, aliases)
            if differences:
                fields = ", ".join(d.name for d in differences)
                drifted.append(f"“{found.name}” ({fields})")
    if not findings:
        if drifted:
            explanation = (
                f"{existing} of our objects exist; these will be updated: {'; '.join(drifted)}."
            )
        elif existing:
            explanation = f"{existing} of our objects exist with the required settings."
        else:
            explanation = "No object carries our names yet."
        findings.append(
            Finding(
                "name-conflicts",
                Severity.PASS,
                "No conflicting object with our names",
                explanation,
            )
        )
    return findings


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
    skipped = _unlistable(desired)
    if skipped:
        findings.append(
            Finding(
                "ip-allow-list",
                Severity.WARNING,
                "Some service addresses cannot go on the IP Allow List",
                f"Exchange accepts only IPv4 addresses and ranges up to /16 there: "
                f"{', '.join(skipped)} stay off the list, so mail from them may still be "
                "filtered by the connection filter.",
                "Ask the protection service for IPv4 sending addresses, or check that mail "
                "from these addresses is not blocked.",
            )
        )
    return findings


def _unlistable(desired: DesiredConfiguration) -> list[str]:
    target = next((o for o in desired.objects if o.kind is Kind.INBOUND_CONNECTOR), None)
    ranges = target.value("SenderIPAddresses") if target else None
    skipped = []
    for item in ranges if isinstance(ranges, tuple) else ():
        network = ipaddress.ip_network(item, strict=False)
        if network.version != 4 or network.prefixlen < 16:
            skipped.append(item)
    return skipped


def _check_spoof(desired: DesiredConfiguration, current: Snapshot) -> list[Finding]:
    findings = []
    for change in plan(desired, current).changes:
        if change.kind is not Kind.SPOOF_ITEM:
            continue
        user = change.target.value("SpoofedUser")
        via = change.target.value("SendingInfrastructure")
        if change.action is Action.BLOCKED:
            findings.append(
                Finding(
                    "spoof-entry",
                    Severity.BLOCKING,
                    f"A spoof entry for {user} via {via} is not Allow",
                    change.reason,
                    "In the Microsoft Defender portal (Tenant Allow/Block Lists > Spoofed "
                    f"senders) change the entry for {user} via {via} to Allow, or remove it.",
                )
            )
        elif change.action is Action.LEAVE:
            findings.append(
                Finding(
                    "spoof-entry",
                    Severity.PASS,
                    f"The spoof allow entry for {user} exists",
                    f"The Tenant Allow/Block List already allows {user} sent via {via}.",
                )
            )
        else:
            findings.append(
                Finding(
                    "spoof-entry",
                    Severity.PASS,
                    f"The spoof allow entry for {user} will be added",
                    f"The Tenant Allow/Block List will allow {user} sent via {via}.",
                )
            )
    return findings


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
        *_check_partner_connectors(desired, current),
        *_check_rule_order(desired, current),
        *_check_ip_allow_list(desired, current),
        *_check_spoof(desired, current),
    )

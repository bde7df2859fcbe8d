"""Pre-flight checks: pass / warning / blocking, each explained and with its fix."""

from __future__ import annotations

from dataclasses import replace

from bot.config import InlineService
from bot.steps.mailflow.desired import (
    FULL,
    IP_ALLOW_LIST_LIMIT,
    UPGRADE,
    Direction,
    Kind,
    desired_configuration,
    object_names,
)
from bot.steps.mailflow.preflight import Finding, Severity, blocking, preflight, warnings
from bot.steps.mailflow.snapshot import AcceptedDomain, ExchangeObject, Snapshot, SpoofItem

from .conftest import PREFIX, ROUTE_KEY, echo_of

NAMES = object_names(PREFIX)
DOMAINS = (
    AcceptedDomain("contoso.onmicrosoft.com"),
    AcceptedDomain("Contoso.com", default=True),
)


def by_check(findings: tuple[Finding, ...]) -> dict[str, list[Finding]]:
    grouped: dict[str, list[Finding]] = {}
    for finding in findings:
        grouped.setdefault(finding.check, []).append(finding)
    return grouped


def test_fresh_tenant_passes_everything(service: InlineService) -> None:
    desired = desired_configuration(service, FULL, ["contoso.com"], route_key=ROUTE_KEY)
    findings = preflight(desired, Snapshot(accepted_domains=DOMAINS))
    assert {f.severity for f in findings} == {Severity.PASS}
    assert list(by_check(findings)) == [
        "accepted-domains",
        "own-objects",
        "competing-connectors",
        "partner-connectors",
        "rule-order",
        "ip-allow-list",
    ]
    assert all(f.title and f.explanation for f in findings)


def test_domain_that_is_not_accepted_blocks(service: InlineService) -> None:
    desired = desired_configuration(
        service, FULL, ["contoso.com", "fabrikam.example"], route_key=ROUTE_KEY
    )
    (finding,) = blocking(preflight(desired, Snapshot(accepted_domains=DOMAINS)))
    assert finding.check == "accepted-domains"
    assert "fabrikam.example" in finding.title
    assert "accepted domain" in finding.explanation
    assert "Settings > Domains" in finding.fix


def test_no_protected_domain_blocks(service: InlineService) -> None:
    desired = desired_configuration(service, FULL, [], route_key=ROUTE_KEY)
    (finding,) = blocking(preflight(desired, Snapshot(accepted_domains=DOMAINS)))
    assert finding.check == "accepted-domains"


def test_other_transport_rule_scoped_connector_warns(service: InlineService) -> None:
    desired = desired_configuration(service, FULL, ["contoso.com"], route_key=ROUTE_KEY)
    snapshot = Snapshot(
        accepted_domains=DOMAINS,
        objects=(
            ExchangeObject(
                Kind.OUTBOUND_CONNECTOR,
                "Encryption gateway",
                {"IsTransportRuleScoped": "True", "Enabled": True, "SmartHosts": ["enc.example"]},
            ),
            ExchangeObject(
                Kind.OUTBOUND_CONNECTOR,
                "Disabled gateway",
                {"IsTransportRuleScoped": True, "Enabled": False},
            ),
            ExchangeObject(
                Kind.OUTBOUND_CONNECTOR, "Plain partner", {"IsTransportRuleScoped": False}
            ),
        ),
    )
    (finding,) = warnings(preflight(desired, snapshot))
    assert finding.check == "partner-connectors"
    assert "Encryption gateway" in finding.title
    assert "enc.example" in finding.explanation
    assert finding.fix


def test_stop_rule_processing_ahead_of_ours_warns(service: InlineService) -> None:
    desired = desired_configuration(service, FULL, ["contoso.com"], route_key=ROUTE_KEY)
    ours = [ExchangeObject.from_echo(kind, echo) for kind, echo in echo_of(desired)]
    stop = {"StopRuleProcessing": True, "State": "Enabled"}
    snapshot = Snapshot(
        accepted_domains=DOMAINS,
        objects=(
            *ours,
            ExchangeObject(Kind.TRANSPORT_RULE, "Ahead", {**stop, "Priority": 2}),
            ExchangeObject(Kind.TRANSPORT_RULE, "Behind", {**stop, "Priority": 99}),
            ExchangeObject(
                Kind.TRANSPORT_RULE, "Ahead but off", {**stop, "Priority": 1, "State": "Disabled"}
            ),
            ExchangeObject(
                Kind.TRANSPORT_RULE, "Ahead, no stop", {"StopRuleProcessing": False, "Priority": 0}
            ),
        ),
    )
    (finding,) = warnings(preflight(desired, snapshot))
    assert finding.check == "rule-order"
    assert "“Ahead”" in finding.title
    assert "Mail flow > Rules" in finding.fix


def test_new_rules_go_above_existing_stop_rules(service: InlineService) -> None:
    desired = desired_configuration(service, FULL, ["contoso.com"], route_key=ROUTE_KEY)
    snapshot = Snapshot(
        accepted_domains=DOMAINS,
        objects=(
            ExchangeObject(
                Kind.TRANSPORT_RULE, "Stop", {"StopRuleProcessing": True, "Priority": 0}
            ),
        ),
    )
    assert warnings(preflight(desired, snapshot)) == ()


def test_drift_and_other_types_are_repaired_not_blocking(service: InlineService) -> None:
    desired = desired_configuration(service, FULL, ["contoso.com"], route_key=ROUTE_KEY)
    objects = []
    for kind, echo in echo_of(desired):
        if echo["Name"] == NAMES.incoming_outbound_connector:
            echo["SmartHosts"] = ["old.example.org"]
            echo["Enabled"] = False
        if echo["Name"] == NAMES.outgoing_inbound_connector:
            echo["ConnectorType"] = "Partner"
        if echo["Name"] == NAMES.incoming_skip_spam_rule:
            echo["RedirectMessageTo"] = ["archive@contoso.com"]
        objects.append(ExchangeObject.from_echo(kind, echo))
    findings = preflight(desired, Snapshot(accepted_domains=DOMAINS, objects=tuple(objects)))
    assert blocking(findings) == ()
    (own,) = by_check(findings)["own-objects"]
    assert own.severity is Severity.PASS
    assert "SmartHosts, Enabled" in own.explanation
    assert f"“{NAMES.outgoing_inbound_connector}” (replaced)" in own.explanation
    assert f"“{NAMES.incoming_skip_spam_rule}” (replaced)" in own.explanation


def test_competing_inbound_connector_warns(service: InlineService) -> None:
    desired = desired_configuration(service, FULL, ["contoso.com"], route_key=ROUTE_KEY)
    others = (
        ExchangeObject(
            Kind.INBOUND_CONNECTOR,
            "Old gateway",
            {"TlsSenderCertificateName": "*.relay.example.net", "Enabled": True},
        ),
        ExchangeObject(
            Kind.INBOUND_CONNECTOR,
            "Scanner",
            {"SenderIPAddresses": ["203.0.113.128/25"], "Enabled": True},
        ),
        ExchangeObject(
            Kind.INBOUND_CONNECTOR, "Fax", {"SenderIPAddresses": ["192.0.2.1"], "Enabled": True}
        ),
    )
    found = warnings(preflight(desired, Snapshot(DOMAINS, objects=others)))
    assert [(f.check, f.title) for f in found] == [
        ("competing-connectors", "“Old gateway” also recognises the protection service"),
        ("competing-connectors", "“Scanner” also recognises the protection service"),
    ]
    assert "Enhanced Filtering" in found[0].explanation


def test_invalid_rule_priority_blocks(service: InlineService) -> None:
    """New-TransportRule takes a priority from 0 to the number of rules: one of ours that
    exists with a high priority is replaced at that priority, which must stay valid."""
    desired = desired_configuration(service, FULL, ["contoso.com"], route_key=ROUTE_KEY)
    rule = ExchangeObject(
        Kind.TRANSPORT_RULE, NAMES.incoming_junk_rule, {"Priority": 40, "DeleteMessage": True}
    )
    (finding,) = blocking(preflight(desired, Snapshot(DOMAINS, objects=(rule,))))
    assert finding.check == "rule-priorities"
    assert "Priority 40" in finding.title


def test_ip_allow_list_room(service: InlineService) -> None:
    desired = desired_configuration(service, FULL, ["contoso.com"], route_key=ROUTE_KEY)
    full = tuple(f"10.0.{n // 256}.{n % 256}" for n in range(IP_ALLOW_LIST_LIMIT - 1))
    (finding,) = blocking(preflight(desired, Snapshot(DOMAINS, ip_allow_list=full)))
    assert finding.check == "ip-allow-list"
    assert f"{IP_ALLOW_LIST_LIMIT - 1} of {IP_ALLOW_LIST_LIMIT}" in finding.explanation
    assert "Remove at least 1" in finding.fix
    # Ours already there: no room needed.
    present = (*full[:-1], "203.0.113.0/24", "198.51.100.7")
    (ok,) = by_check(preflight(desired, Snapshot(DOMAINS, ip_allow_list=present)))["ip-allow-list"]
    assert ok.severity is Severity.PASS


def test_wide_service_range_that_does_not_fit_blocks(service: InlineService) -> None:
    """A /16 splits into 256 /24 entries for the IP Allow List: blocked when there is no room."""
    wide = replace(service, ip_ranges=("198.18.0.0/16",))
    desired = desired_configuration(wide, FULL, ["contoso.com"], route_key=ROUTE_KEY)
    used = tuple(f"10.0.{n // 256}.{n % 256}" for n in range(IP_ALLOW_LIST_LIMIT - 255))
    (finding,) = blocking(preflight(desired, Snapshot(DOMAINS, ip_allow_list=used)))
    assert finding.check == "ip-allow-list"
    assert "256 more" in finding.explanation
    room = used[:-1]
    assert blocking(preflight(desired, Snapshot(DOMAINS, ip_allow_list=room))) == ()


def test_spoof_allow_entry_for_own_domain_warns(service: InlineService) -> None:
    desired = desired_configuration(service, FULL, ["contoso.com"], route_key=ROUTE_KEY)
    present = Snapshot(DOMAINS, spoof_items=(SpoofItem("contoso.com", "relay.example.net"),))
    (finding,) = by_check(preflight(desired, present))["spoof-entry"]
    assert finding.severity is Severity.WARNING
    assert "leaves the entry alone" in finding.explanation


def test_upgrade_checks_inbound_protection(service: InlineService) -> None:
    full = desired_configuration(service, {Direction.INBOUND}, ["contoso.com"], route_key=ROUTE_KEY)
    inbound = tuple(ExchangeObject.from_echo(kind, echo) for kind, echo in echo_of(full))
    upgrade = desired_configuration(service, UPGRADE, ["contoso.com"], route_key=ROUTE_KEY)
    (found,) = by_check(preflight(upgrade, Snapshot(DOMAINS, objects=inbound)))[
        "inbound-protection"
    ]
    assert found.severity is Severity.PASS
    (missing,) = by_check(preflight(upgrade, Snapshot(DOMAINS, objects=inbound[:3])))[
        "inbound-protection"
    ]
    assert missing.severity is Severity.WARNING
    assert NAMES.incoming_domain_rule in missing.explanation

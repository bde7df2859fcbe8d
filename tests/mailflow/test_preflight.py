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

from .conftest import PREFIX, echo_of

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
    desired = desired_configuration(service, FULL, ["contoso.com"])
    findings = preflight(desired, Snapshot(accepted_domains=DOMAINS))
    assert {f.severity for f in findings} == {Severity.PASS}
    assert list(by_check(findings)) == [
        "accepted-domains",
        "name-conflicts",
        "partner-connectors",
        "rule-order",
        "ip-allow-list",
        "spoof-entry",
    ]
    assert all(f.title and f.explanation for f in findings)
    assert "will be added" in by_check(findings)["spoof-entry"][0].title


def test_domain_that_is_not_accepted_blocks(service: InlineService) -> None:
    desired = desired_configuration(service, FULL, ["contoso.com", "fabrikam.example"])
    (finding,) = blocking(preflight(desired, Snapshot(accepted_domains=DOMAINS)))
    assert finding.check == "accepted-domains"
    assert "fabrikam.example" in finding.title
    assert "accepted domain" in finding.explanation
    assert "Settings > Domains" in finding.fix


def test_no_protected_domain_blocks(service: InlineService) -> None:
    desired = desired_configuration(service, FULL, [])
    (finding,) = blocking(preflight(desired, Snapshot(accepted_domains=DOMAINS)))
    assert finding.check == "accepted-domains"


def test_other_transport_rule_scoped_connector_warns(service: InlineService) -> None:
    desired = desired_configuration(service, FULL, ["contoso.com"])
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
    desired = desired_configuration(service, FULL, ["contoso.com"])
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
    desired = desired_configuration(service, FULL, ["contoso.com"])
    snapshot = Snapshot(
        accepted_domains=DOMAINS,
        objects=(
            ExchangeObject(
                Kind.TRANSPORT_RULE, "Stop", {"StopRuleProcessing": True, "Priority": 0}
            ),
        ),
    )
    assert warnings(preflight(desired, snapshot)) == ()


def test_object_with_our_name_but_other_type_blocks(service: InlineService) -> None:
    desired = desired_configuration(service, FULL, ["contoso.com"])
    snapshot = Snapshot(
        accepted_domains=DOMAINS,
        objects=(
            ExchangeObject(
                Kind.INBOUND_CONNECTOR,
                NAMES.outgoing_inbound_connector.upper(),
                {"ConnectorType": "Partner"},
            ),
            ExchangeObject(
                Kind.TRANSPORT_RULE,
                NAMES.incoming_skip_spam_rule,
                {"RedirectMessageTo": ["archive@contoso.com"], "SetSCL": 5},
            ),
        ),
    )
    found = blocking(preflight(desired, snapshot))
    assert [f.check for f in found] == ["name-conflicts", "name-conflicts"]
    assert "ConnectorType is Partner, not OnPremises" in found[0].explanation
    assert "RedirectMessageTo" in found[1].explanation
    assert "Rename or remove" in found[0].fix


def test_drift_on_our_objects_is_updatable_and_reported(service: InlineService) -> None:
    desired = desired_configuration(service, FULL, ["contoso.com"])
    objects = []
    for kind, echo in echo_of(desired):
        if echo["Name"] == NAMES.incoming_outbound_connector:
            echo["SmartHosts"] = ["old.example.org"]
            echo["Enabled"] = False
        objects.append(ExchangeObject.from_echo(kind, echo))
    findings = preflight(desired, Snapshot(accepted_domains=DOMAINS, objects=tuple(objects)))
    (names,) = by_check(findings)["name-conflicts"]
    assert names.severity is Severity.PASS
    assert "SmartHosts, Enabled" in names.explanation


def test_ip_allow_list_room(service: InlineService) -> None:
    desired = desired_configuration(service, FULL, ["contoso.com"])
    full = tuple(f"10.0.{n // 256}.{n % 256}" for n in range(IP_ALLOW_LIST_LIMIT - 1))
    (finding,) = blocking(preflight(desired, Snapshot(DOMAINS, ip_allow_list=full)))
    assert finding.check == "ip-allow-list"
    assert f"{IP_ALLOW_LIST_LIMIT - 1} of {IP_ALLOW_LIST_LIMIT}" in finding.explanation
    assert "Remove at least 1" in finding.fix
    # Ours already there: no room needed.
    present = (*full[:-1], "203.0.113.0/24", "198.51.100.7")
    (ok,) = by_check(preflight(desired, Snapshot(DOMAINS, ip_allow_list=present)))["ip-allow-list"]
    assert ok.severity is Severity.PASS


def test_unlistable_addresses_warn(service: InlineService) -> None:
    v6 = replace(service, ip_ranges=("203.0.113.0/24", "2001:db8::/48"))
    desired = desired_configuration(v6, FULL, ["contoso.com"])
    (finding,) = warnings(preflight(desired, Snapshot(DOMAINS)))
    assert finding.check == "ip-allow-list"
    assert "2001:db8::/48" in finding.explanation


def test_spoof_entry(service: InlineService) -> None:
    desired = desired_configuration(service, FULL, ["contoso.com"])
    present = Snapshot(DOMAINS, spoof_items=(SpoofItem("contoso.com", "relay.example.net"),))
    (exists,) = by_check(preflight(desired, present))["spoof-entry"]
    assert exists.severity is Severity.PASS
    assert "exists" in exists.title
    blocked = Snapshot(
        DOMAINS, spoof_items=(SpoofItem("contoso.com", "relay.example.net", action="Block"),)
    )
    (finding,) = blocking(preflight(desired, blocked))
    assert finding.check == "spoof-entry"
    assert "Allow" in finding.fix


def test_upgrade_checks_inbound_protection(service: InlineService) -> None:
    full = desired_configuration(service, {Direction.INBOUND}, ["contoso.com"])
    inbound = tuple(ExchangeObject.from_echo(kind, echo) for kind, echo in echo_of(full))
    upgrade = desired_configuration(service, UPGRADE, ["contoso.com"])
    (found,) = by_check(preflight(upgrade, Snapshot(DOMAINS, objects=inbound)))[
        "inbound-protection"
    ]
    assert found.severity is Severity.PASS
    (missing,) = by_check(preflight(upgrade, Snapshot(DOMAINS, objects=inbound[:3])))[
        "inbound-protection"
    ]
    assert missing.severity is Severity.WARNING
    assert NAMES.incoming_domain_rule in missing.explanation

"""plan(desired, current): creates, updates with exactly the differing fields, leaves alone."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from bot.config import InlineService
from bot.steps.mailflow.desired import (
    FULL,
    IP_ALLOW_LIST_LIMIT,
    Kind,
    desired_configuration,
    object_names,
)
from bot.steps.mailflow.plan import RECORD_LABEL, Action, plan, temporary_name
from bot.steps.mailflow.snapshot import AcceptedDomain, ExchangeObject, Snapshot

from .conftest import PREFIX, ROUTE_KEY, echo_of

NAMES = object_names(PREFIX)
DOMAINS = (AcceptedDomain("contoso.com"), AcceptedDomain("contoso.onmicrosoft.com"))


def provisioned(service: InlineService, **overrides: dict[str, Any]) -> Snapshot:
    """A tenant where everything exists as Exchange would echo it; ``overrides`` by name."""
    desired = desired_configuration(service, FULL, ["contoso.com"], route_key=ROUTE_KEY)
    objects = []
    for kind, echo in echo_of(desired):
        echo.update(overrides.get(echo["Name"], {}))
        objects.append(ExchangeObject.from_echo(kind, echo))
    return Snapshot(
        accepted_domains=DOMAINS,
        objects=tuple(objects),
        ip_allow_list=("203.0.113.0/24", "198.51.100.7"),
    )


def test_fresh_tenant_creates_everything_in_order(service: InlineService) -> None:
    desired = desired_configuration(service, FULL, ["contoso.com"], route_key=ROUTE_KEY)
    result = plan(desired, Snapshot(accepted_domains=DOMAINS))
    assert [c.action for c in result.changes] == [Action.CREATE] * 6 + [Action.VALIDATE] * 2 + [
        Action.CREATE
    ] * 6 + [Action.ADD]
    created = [c.name for c in result.changes if c.action is not Action.VALIDATE]
    assert created == [o.name for o in desired.objects]
    assert [c.step for c in result.changes] == list(range(1, 16))
    # What the admin reviews is what is sent: one New- per object, in order.
    assert [call.cmdlet for call in result.calls][:6] == [
        "New-DistributionGroup",
        "New-DistributionGroup",
        "New-OutboundConnector",
        "New-OutboundConnector",
        "New-InboundConnector",
        "New-InboundConnector",
    ]
    group = result.changes[0]
    assert group.kind is Kind.DISTRIBUTION_GROUP
    assert {f.name for f in group.fields} >= {"Type", "MemberJoinRestriction"}
    assert all(f.old is None for c in result.changes for f in c.fields if c.action is Action.CREATE)
    allow = result.changes[14]
    assert allow.entries == ("203.0.113.0/24", "198.51.100.7")
    assert not result.settled


def test_provisioned_tenant_is_settled(service: InlineService) -> None:
    desired = desired_configuration(service, FULL, ["contoso.com"], route_key=ROUTE_KEY)
    result = plan(desired, provisioned(service))
    assert result.settled
    assert result.actionable == ()
    assert {c.action for c in result.changes} == {Action.LEAVE}
    assert all(c.step == 0 and c.reason for c in result.changes)


def test_echo_noise_is_not_drift(service: InlineService) -> None:
    """Case, order, duplicates, string booleans, bare /32s and group addresses all compare equal."""
    desired = desired_configuration(service, FULL, ["contoso.com"], route_key=ROUTE_KEY)
    noise: dict[str, dict[str, Any]] = {
        NAMES.incoming_outbound_connector: {
            "SmartHosts": "INBOUND.relay.example.net",
            "IsTransportRuleScoped": "True",
            "UseMXRecord": "false",
            "TlsSettings": "domainvalidation",
            "ConnectorType": "partner",
        },
        NAMES.incoming_inbound_connector: {
            "EFSkipIPs": ["198.51.100.7-198.51.100.7", "203.0.113.0/24", "203.0.113.0/24"],
            "SenderDomains": "*",
            "Enabled": 1,
            "RequireTls": None,
        },
        NAMES.incoming_user_rule: {
            "SentToMemberOf": ["TMCASInlineIncomingO365VirtualGroup@contoso.onmicrosoft.com"],
            "SenderAddressLocation": "Header",
            "RouteMessageOutboundConnector": NAMES.incoming_outbound_connector.upper(),
            "StopRuleProcessing": None,
        },
        NAMES.incoming_skip_spam_rule: {"SetSCL": "-1", "Priority": "7"},
        NAMES.incoming_group: {
            "PrimarySmtpAddress": "TMCASInlineIncomingO365VirtualGroup@contoso.onmicrosoft.com"
        },
    }
    assert plan(desired, provisioned(service, **noise)).settled


def test_drift_is_updated_with_exactly_the_differing_fields(service: InlineService) -> None:
    desired = desired_configuration(service, FULL, ["contoso.com"], route_key=ROUTE_KEY)
    snapshot = provisioned(
        service,
        **{
            NAMES.outgoing_outbound_connector: {
                "SmartHosts": ["old.example.org"],
                "Enabled": False,
                "Comment": "edited by an admin",
            },
            NAMES.incoming_domain_rule: {
                "State": "Disabled",
                "Mode": "AuditAndNotify",
                "Priority": 9,
            },
        },
    )
    result = plan(desired, snapshot)
    changes = {c.name: c for c in result.actionable if c.action is not Action.VALIDATE}
    assert set(changes) == {NAMES.outgoing_outbound_connector, NAMES.incoming_domain_rule}
    # Both outbound connectors are proven before the rules: one changed, one gets a rule back.
    validated = [c.name for c in result.actionable if c.action is Action.VALIDATE]
    assert validated == [NAMES.incoming_outbound_connector, NAMES.outgoing_outbound_connector]
    connector = changes[NAMES.outgoing_outbound_connector]
    assert connector.action is Action.UPDATE
    assert [(f.name, f.old, f.new) for f in connector.fields] == [
        ("SmartHosts", ["old.example.org"], ("outbound.relay.example.net",)),
        ("Enabled", False, True),
    ]
    rule = changes[NAMES.incoming_domain_rule]
    assert [(f.name, f.old, f.new) for f in rule.fields] == [
        ("Mode", "AuditAndNotify", "Enforce"),
        ("State", "Disabled", "Enabled"),
    ]
    assert "its Mode differs, it is disabled" in rule.reason
    assert [call.cmdlet for call in rule.calls] == ["Set-TransportRule", "Enable-TransportRule"]
    assert [c.step for c in result.actionable] == [1, 2, 3, 4]
    # A second plan on the repaired tenant is settled.
    assert plan(desired, provisioned(service)).settled


def test_connector_type_drift_is_repaired(service: InlineService) -> None:
    """An outbound connector of ours of another type is updated; an inbound one (a Partner
    connector carries Partner-only settings ``Set-`` would leave behind) is replaced."""
    desired = desired_configuration(service, FULL, ["contoso.com"], route_key=ROUTE_KEY)
    snapshot = provisioned(
        service,
        **{
            NAMES.incoming_outbound_connector: {"ConnectorType": "OnPremises"},
            NAMES.incoming_inbound_connector: {
                "ConnectorType": "Partner",
                "RequireTls": True,
                "SenderIPAddresses": ["203.0.113.0/24"],
            },
        },
    )
    result = plan(desired, snapshot)
    changes = {c.name: c for c in result.actionable if c.action is not Action.VALIDATE}
    update = changes[NAMES.incoming_outbound_connector]
    assert update.action is Action.UPDATE
    assert [(f.name, f.new) for f in update.fields] == [("ConnectorType", "Partner")]
    replaced = changes[NAMES.incoming_inbound_connector]
    assert replaced.action is Action.REPLACE
    assert "Partner connector" in replaced.reason
    assert "SenderIPAddresses" in replaced.reason
    temporary = temporary_name(NAMES.incoming_inbound_connector)
    assert temporary.startswith(PREFIX)
    assert len(temporary) <= 64
    assert [
        (c.cmdlet, c.parameters.get("Identity"), c.parameters.get("Name")) for c in replaced.calls
    ] == [
        ("New-InboundConnector", None, temporary),
        ("Remove-InboundConnector", NAMES.incoming_inbound_connector, None),
        ("Set-InboundConnector", temporary, NAMES.incoming_inbound_connector),
    ]
    assert not result.blocked


def test_rule_with_foreign_action_or_exception_is_replaced(service: InlineService) -> None:
    desired = desired_configuration(service, FULL, ["contoso.com"], route_key=ROUTE_KEY)
    snapshot = provisioned(
        service,
        **{
            NAMES.incoming_junk_rule: {"DeleteMessage": True, "Priority": 3},
            # The old design's exception on the shared service addresses.
            NAMES.incoming_domain_rule: {"ExceptIfSenderIpRanges": ["203.0.113.0/24"]},
        },
    )
    result = plan(desired, snapshot)
    replaced = {c.name: c for c in result.actionable if c.action is Action.REPLACE}
    assert set(replaced) == {NAMES.incoming_junk_rule, NAMES.incoming_domain_rule}
    assert "DeleteMessage" in replaced[NAMES.incoming_junk_rule].reason
    assert "ExceptIfSenderIpRanges" in replaced[NAMES.incoming_domain_rule].reason
    new = replaced[NAMES.incoming_junk_rule].calls[0]
    assert new.cmdlet == "New-TransportRule"
    assert new.parameters["Priority"] == 3  # takes the old rule's place
    assert "DeleteMessage" not in new.parameters


def test_objects_without_our_prefix_are_never_planned(service: InlineService) -> None:
    desired = desired_configuration(service, FULL, ["contoso.com"], route_key=ROUTE_KEY)
    base = provisioned(service)
    foreign = (
        ExchangeObject(Kind.OUTBOUND_CONNECTOR, "Other gateway", {"IsTransportRuleScoped": True}),
        ExchangeObject(Kind.TRANSPORT_RULE, "Disclaimer", {"Mode": "Audit", "State": "Disabled"}),
        ExchangeObject(Kind.TRANSPORT_RULE, f"Old {NAMES.incoming_domain_rule}", {"Mode": "Audit"}),
    )
    snapshot = Snapshot(
        base.accepted_domains, (*base.objects, *foreign), base.ip_allow_list, base.spoof_items
    )
    result = plan(desired, snapshot)
    assert result.settled
    assert {c.name for c in result.changes} == {o.name for o in desired.objects}


def test_ip_allow_list_only_adds_what_is_missing(service: InlineService) -> None:
    desired = desired_configuration(service, FULL, ["contoso.com"], route_key=ROUTE_KEY)
    base = provisioned(service)

    def with_list(entries: tuple[str, ...]) -> Snapshot:
        return Snapshot(base.accepted_domains, base.objects, entries, base.spoof_items)

    covered = plan(desired, with_list(("203.0.0.0/16", "198.51.100.0/24", "192.0.2.1")))
    assert covered.settled
    partial = plan(desired, with_list(("192.0.2.1", "203.0.113.0/24")))
    (add,) = [c for c in partial.actionable if c.action is Action.ADD]
    assert add.entries == ("198.51.100.7",)
    assert [dict(c.parameters) for c in add.calls] == [
        {"Identity": "Default", "IPAllowList": {"Add": ["198.51.100.7"]}}
    ]
    full = with_list(tuple(f"10.0.{n // 256}.{n % 256}" for n in range(IP_ALLOW_LIST_LIMIT)))
    (blocked,) = plan(desired, full).blocked
    assert blocked.kind is Kind.IP_ALLOW_LIST
    almost = with_list(tuple(f"10.0.{n // 256}.{n % 256}" for n in range(IP_ALLOW_LIST_LIMIT - 2)))
    (add,) = [c for c in plan(desired, almost).actionable if c.action is Action.ADD]
    assert add.entries == ("203.0.113.0/24", "198.51.100.7")


def test_only_recorded_allow_list_entries_are_removed(service: InlineService) -> None:
    """Provisioning records what it added (in its inbound connectors' Comment); when the
    configuration drops a range, exactly that recorded entry is removed."""
    before = desired_configuration(
        replace(service, ip_ranges=("203.0.113.0/24", "198.51.100.7/32", "192.0.2.0/24")),
        FULL,
        ["contoso.com"],
        route_key=ROUTE_KEY,
    )
    # 192.0.2.0/24 was on the list already (an admin's entry): it is not recorded as ours.
    fresh = Snapshot(accepted_domains=DOMAINS, ip_allow_list=("192.0.2.0/24", "10.1.1.1"))
    (add,) = [c for c in plan(before, fresh).changes if c.action is Action.ADD]
    assert add.entries == ("203.0.113.0/24", "198.51.100.7")
    connector = next(
        c for c in plan(before, fresh).changes if c.name == NAMES.incoming_inbound_connector
    )
    comment = dict(connector.calls[0].parameters)["Comment"]
    assert comment.endswith(f"{RECORD_LABEL} 203.0.113.0/24, 198.51.100.7")

    # Later the service drops 198.51.100.7 and 192.0.2.0/24 from the configuration.
    objects = []
    for kind, echo in echo_of(before):
        if kind is Kind.INBOUND_CONNECTOR:
            echo["Comment"] = comment
        objects.append(ExchangeObject.from_echo(kind, echo))
    tenant = Snapshot(
        accepted_domains=DOMAINS,
        objects=tuple(objects),
        ip_allow_list=("192.0.2.0/24", "10.1.1.1", "203.0.113.0/24", "198.51.100.7"),
    )
    after = desired_configuration(
        replace(service, ip_ranges=("203.0.113.0/24",)), FULL, ["contoso.com"], route_key=ROUTE_KEY
    )
    result = plan(after, tenant)
    (remove,) = [c for c in result.changes if c.action is Action.REMOVE]
    assert remove.entries == ("198.51.100.7",)  # never the admin's 192.0.2.0/24 or 10.1.1.1
    assert [dict(c.parameters) for c in remove.calls] == [
        {"Identity": "Default", "IPAllowList": {"Remove": ["198.51.100.7"]}}
    ]
    records = [
        dict(c.calls[0].parameters)["Comment"]
        for c in result.changes
        if c.kind is Kind.INBOUND_CONNECTOR
    ]
    assert all(r.endswith(f"{RECORD_LABEL} 203.0.113.0/24") for r in records)

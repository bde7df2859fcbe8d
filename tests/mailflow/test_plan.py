"""plan(desired, current): creates, updates with exactly the differing fields, leaves alone."""

from __future__ import annotations

from typing import Any

from bot.config import InlineService
from bot.steps.mailflow.desired import (
    FULL,
    IP_ALLOW_LIST_LIMIT,
    Kind,
    desired_configuration,
    object_names,
)
from bot.steps.mailflow.plan import Action, plan
from bot.steps.mailflow.snapshot import AcceptedDomain, ExchangeObject, Snapshot, SpoofItem

from .conftest import PREFIX, echo_of

NAMES = object_names(PREFIX)
DOMAINS = (AcceptedDomain("contoso.com"), AcceptedDomain("contoso.onmicrosoft.com"))


def provisioned(service: InlineService, **overrides: dict[str, Any]) -> Snapshot:
    """A tenant where everything exists as Exchange would echo it; ``overrides`` by name."""
    desired = desired_configuration(service, FULL, ["contoso.com"])
    objects = []
    for kind, echo in echo_of(desired):
        echo.update(overrides.get(echo["Name"], {}))
        objects.append(ExchangeObject.from_echo(kind, echo))
    return Snapshot(
        accepted_domains=DOMAINS,
        objects=tuple(objects),
        ip_allow_list=("203.0.113.0/24", "198.51.100.7"),
        spoof_items=(SpoofItem("contoso.com", "relay.example.net"),),
    )


def test_fresh_tenant_creates_everything_in_order(service: InlineService) -> None:
    desired = desired_configuration(service, FULL, ["contoso.com"])
    result = plan(desired, Snapshot(accepted_domains=DOMAINS))
    assert [c.action for c in result.changes] == [Action.CREATE] * 12 + [
        Action.ADD,
        Action.CREATE,
    ]
    assert [c.name for c in result.changes] == [o.name for o in desired.objects]
    assert [c.step for c in result.changes] == list(range(1, 15))
    group = result.changes[0]
    assert group.kind is Kind.DISTRIBUTION_GROUP
    assert {f.name for f in group.fields} >= {"Type", "MemberJoinRestriction"}
    assert all(f.old is None for c in result.changes for f in c.fields if c.action is Action.CREATE)
    allow = result.changes[12]
    assert allow.entries == ("203.0.113.0/24", "198.51.100.7")
    assert not result.settled


def test_provisioned_tenant_is_settled(service: InlineService) -> None:
    desired = desired_configuration(service, FULL, ["contoso.com"])
    result = plan(desired, provisioned(service))
    assert result.settled
    assert result.actionable == ()
    assert {c.action for c in result.changes} == {Action.LEAVE}
    assert all(c.step == 0 and c.reason for c in result.changes)


def test_echo_noise_is_not_drift(service: InlineService) -> None:
    """Case, order, duplicates, string booleans, bare /32s and group addresses all compare equal."""
    desired = desired_configuration(service, FULL, ["contoso.com"])
    noise: dict[str, dict[str, Any]] = {
        NAMES.incoming_outbound_connector: {
            "SmartHosts": "INBOUND.relay.example.net",
            "IsTransportRuleScoped": "True",
            "UseMXRecord": "false",
            "TlsSettings": "domainvalidation",
            "ConnectorType": "onpremises",
        },
        NAMES.incoming_inbound_connector: {
            "SenderIPAddresses": ["198.51.100.7", "203.0.113.0/24", "203.0.113.0/24"],
            "SenderDomains": "*",
            "Enabled": 1,
        },
        NAMES.incoming_user_rule: {
            "SentToMemberOf": ["TMCASInlineIncomingO365VirtualGroup@contoso.onmicrosoft.com"],
            "ExceptIfSenderIpRanges": ["198.51.100.7-198.51.100.7", "203.0.113.0/24"],
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
    desired = desired_configuration(service, FULL, ["contoso.com"])
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
    changes = {c.name: c for c in result.actionable}
    assert set(changes) == {NAMES.outgoing_outbound_connector, NAMES.incoming_domain_rule}
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
    assert "Mode, State differ" in rule.reason
    assert [c.step for c in result.actionable] == [1, 2]
    # A second plan on the repaired tenant is settled.
    assert plan(desired, provisioned(service)).settled


def test_conflicting_connector_type_is_blocked_not_updated(service: InlineService) -> None:
    desired = desired_configuration(service, FULL, ["contoso.com"])
    snapshot = provisioned(
        service,
        **{NAMES.incoming_outbound_connector: {"ConnectorType": "Partner", "SmartHosts": ["x.y"]}},
    )
    result = plan(desired, snapshot)
    (blocked,) = result.blocked
    assert blocked.name == NAMES.incoming_outbound_connector
    assert "ConnectorType is Partner" in blocked.reason
    assert blocked.fields == ()
    assert result.settled


def test_rule_with_foreign_destructive_action_is_blocked(service: InlineService) -> None:
    desired = desired_configuration(service, FULL, ["contoso.com"])
    snapshot = provisioned(service, **{NAMES.incoming_junk_rule: {"DeleteMessage": True}})
    (blocked,) = plan(desired, snapshot).blocked
    assert blocked.name == NAMES.incoming_junk_rule
    assert "DeleteMessage" in blocked.reason


def test_objects_without_our_prefix_are_never_planned(service: InlineService) -> None:
    desired = desired_configuration(service, FULL, ["contoso.com"])
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
    desired = desired_configuration(service, FULL, ["contoso.com"])
    base = provisioned(service)

    def with_list(entries: tuple[str, ...]) -> Snapshot:
        return Snapshot(base.accepted_domains, base.objects, entries, base.spoof_items)

    covered = plan(desired, with_list(("203.0.0.0/16", "198.51.100.0/24", "192.0.2.1")))
    assert covered.settled
    partial = plan(desired, with_list(("192.0.2.1", "203.0.113.0/24")))
    (add,) = partial.actionable
    assert add.action is Action.ADD
    assert add.entries == ("198.51.100.7",)
    (field,) = add.fields
    assert field.old == ("192.0.2.1", "203.0.113.0/24")
    assert field.new == ("192.0.2.1", "203.0.113.0/24", "198.51.100.7")
    full = with_list(tuple(f"10.0.{n // 256}.{n % 256}" for n in range(IP_ALLOW_LIST_LIMIT)))
    (blocked,) = plan(desired, full).blocked
    assert blocked.kind is Kind.IP_ALLOW_LIST
    almost = with_list(tuple(f"10.0.{n // 256}.{n % 256}" for n in range(IP_ALLOW_LIST_LIMIT - 2)))
    assert plan(desired, almost).actionable[0].entries == ("203.0.113.0/24", "198.51.100.7")


def test_spoof_entry(service: InlineService) -> None:
    desired = desired_configuration(service, FULL, ["contoso.com", "mail.contoso.com"])
    base = provisioned(service)
    existing = (
        SpoofItem("CONTOSO.COM", "Relay.Example.NET", action="Allow"),
        SpoofItem("mail.contoso.com", "relay.example.net", action="Block"),
    )
    snapshot = Snapshot(base.accepted_domains, base.objects, base.ip_allow_list, existing)
    result = plan(desired, snapshot)
    spoof = [c for c in result.changes if c.kind is Kind.SPOOF_ITEM]
    assert [(c.name, c.action) for c in spoof] == [
        ("contoso.com via relay.example.net", Action.LEAVE),
        ("mail.contoso.com via relay.example.net", Action.BLOCKED),
    ]
    missing = Snapshot(base.accepted_domains, base.objects, base.ip_allow_list, existing[:1])
    (create,) = [c for c in plan(desired, missing).actionable if c.kind is Kind.SPOOF_ITEM]
    assert create.action is Action.CREATE
    assert create.name == "mail.contoso.com via relay.example.net"

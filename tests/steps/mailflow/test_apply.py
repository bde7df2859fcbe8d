"""Applying the plan to the sandbox Exchange organisation over real HTTPS."""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest

from bot.config import InlineService
from bot.microsoft.exchange import ExchangeClient
from bot.steps.mailflow.apply import ApplyBlocked, ApplyFailed, apply, read_current
from bot.steps.mailflow.desired import (
    FULL,
    UPGRADE,
    Direction,
    Kind,
    desired_configuration,
    object_names,
)
from bot.steps.mailflow.plan import Action, Change, plan
from bot.steps.mailflow.preflight import Severity

from .conftest import PREFIX, ROUTE_KEY, Cloud

NAMES = object_names(PREFIX)

INBOUND_OBJECTS = {
    Kind.OUTBOUND_CONNECTOR: {NAMES.incoming_outbound_connector},
    Kind.INBOUND_CONNECTOR: {NAMES.incoming_inbound_connector},
    Kind.TRANSPORT_RULE: {
        NAMES.incoming_domain_rule,
        NAMES.incoming_user_rule,
        NAMES.incoming_skip_spam_rule,
        NAMES.incoming_junk_rule,
    },
    Kind.DISTRIBUTION_GROUP: {NAMES.incoming_group},
}
OUTBOUND_OBJECTS = {
    Kind.OUTBOUND_CONNECTOR: {NAMES.outgoing_outbound_connector},
    Kind.INBOUND_CONNECTOR: {NAMES.outgoing_inbound_connector},
    Kind.TRANSPORT_RULE: {NAMES.outgoing_domain_rule, NAMES.outgoing_user_rule},
    Kind.DISTRIBUTION_GROUP: {NAMES.outgoing_group},
}


class Recorder:
    """An ``on_progress`` callback that records every call."""

    def __init__(self) -> None:
        self.calls: list[tuple[int, int, Change]] = []

    async def __call__(self, done: int, total: int, change: Change) -> None:
        self.calls.append((done, total, change))


def news(calls: list[tuple[str, dict[str, Any]]]) -> Counter[tuple[str, str]]:
    return Counter(
        (cmdlet, str(parameters.get("Name") or parameters.get("SpoofedUser")))
        for cmdlet, parameters in calls
        if cmdlet.startswith("New-")
    )


async def test_fresh_tenant_gets_exactly_design_objects(
    cloud: Cloud, exchange: ExchangeClient, service: InlineService
) -> None:
    desired = desired_configuration(service, FULL, ["contoso.com"], route_key=ROUTE_KEY)
    progress = Recorder()
    result = await apply(exchange, desired, on_progress=progress)

    for kind in (
        Kind.OUTBOUND_CONNECTOR,
        Kind.INBOUND_CONNECTOR,
        Kind.TRANSPORT_RULE,
        Kind.DISTRIBUTION_GROUP,
    ):
        assert cloud.names(kind) == INBOUND_OBJECTS[kind] | OUTBOUND_OBJECTS[kind]
    org = cloud.tenant.exchange
    assert org.ip_allow_list == ["203.0.113.0/24", "198.51.100.7"]
    assert org.spoof_items == []
    assert len(result.applied) == 15
    assert {c.action for c in result.applied} == {Action.CREATE, Action.VALIDATE, Action.ADD}
    assert org.reference_findings == []  # nothing Microsoft's reference says has no effect

    connector = cloud.objects["OutboundConnector"][NAMES.incoming_outbound_connector.lower()]
    assert connector["ConnectorType"] == "Partner"
    assert connector["IsTransportRuleScoped"] is True
    assert connector["IsValidated"] is True
    assert "CloudServicesMailEnabled" not in connector
    assert connector["UseMXRecord"] is False
    assert connector["SmartHosts"] == ["inbound.relay.example.net"]
    assert connector["TlsSettings"] == "DomainValidation"
    assert connector["TlsDomain"] == "inbound.relay.example.net"
    assert connector["Enabled"] is True
    back = cloud.objects["InboundConnector"][NAMES.incoming_inbound_connector.lower()]
    assert back["ConnectorType"] == "OnPremises"
    assert "RequireTls" not in back
    assert "SenderIPAddresses" not in back
    assert back["TlsSenderCertificateName"] == "returns.relay.example.net"
    assert back["EFSkipIPs"] == ["203.0.113.0/24", "198.51.100.7/32"]
    assert "203.0.113.0/24, 198.51.100.7" in back["Comment"]  # the allow-list entries it added

    rules = sorted(cloud.objects["TransportRule"].values(), key=lambda r: r["Priority"])
    assert [r["Name"] for r in rules] == [
        NAMES.incoming_domain_rule,
        NAMES.incoming_user_rule,
        NAMES.incoming_skip_spam_rule,
        NAMES.incoming_junk_rule,
        NAMES.outgoing_domain_rule,
        NAMES.outgoing_user_rule,
    ]
    domain_rule = rules[0]
    assert domain_rule["FromScope"] == "NotInOrganization"
    assert domain_rule["RecipientDomainIs"] == ["contoso.com"]
    assert domain_rule["RouteMessageOutboundConnector"] == NAMES.incoming_outbound_connector
    assert domain_rule["Mode"] == "Enforce"
    assert "SenderAddressLocation" not in domain_rule
    assert "ExceptIfSenderIpRanges" not in domain_rule
    assert domain_rule["State"] == "Enabled"
    assert rules[2]["SetSCL"] == -1
    assert rules[4]["SenderDomainIs"] == ["contoso.com"]
    assert rules[4]["FromScope"] == "InOrganization"
    assert rules[5]["FromMemberOf"] == [NAMES.outgoing_group]

    # Progress: before and after each change, in order, ending at total.
    total = len(result.applied)
    assert [(done, t) for done, t, _ in progress.calls] == [
        (n, total) for step in range(total) for n in (step, step + 1)
    ]
    assert [c.step for _, _, c in progress.calls[::2]] == list(range(1, total + 1))


async def test_second_run_changes_nothing(
    cloud: Cloud, exchange: ExchangeClient, service: InlineService
) -> None:
    desired = desired_configuration(
        service, FULL, ["contoso.com", "mail.contoso.com"], route_key=ROUTE_KEY
    )
    await apply(exchange, desired)
    before = len(cloud.exchange_calls())
    progress = Recorder()
    result = await apply(exchange, desired, on_progress=progress)
    assert result.applied == ()
    assert progress.calls == []
    assert cloud.writes(before) == []
    assert plan(desired, await read_current(exchange, PREFIX)).settled
    assert cloud.tenant.exchange.spoof_items == []


async def test_drifted_and_missing_objects_only_are_changed(
    cloud: Cloud, exchange: ExchangeClient, service: InlineService
) -> None:
    desired = desired_configuration(service, FULL, ["contoso.com"], route_key=ROUTE_KEY)
    await apply(exchange, desired)
    connector = cloud.objects["OutboundConnector"][NAMES.outgoing_outbound_connector.lower()]
    connector["SmartHosts"] = ["old-relay.example.org"]
    connector["Enabled"] = False
    rule = cloud.objects["TransportRule"][NAMES.incoming_user_rule.lower()]
    rule["Mode"] = "Audit"
    del cloud.objects["TransportRule"][NAMES.incoming_junk_rule.lower()]
    cloud.tenant.exchange.ip_allow_list.remove("198.51.100.7")
    # Echo noise that must not count as drift: case, order, string booleans, /32 spelled out.
    inbound = cloud.objects["InboundConnector"][NAMES.incoming_inbound_connector.lower()]
    inbound["EFSkipIPs"] = ["198.51.100.7", "203.0.113.0/24", "203.0.113.0/24"]
    inbound["EFSkipLastIP"] = "False"
    inbound["TlsSenderCertificateName"] = "RETURNS.relay.example.net"

    before = len(cloud.exchange_calls())
    result = await apply(exchange, desired)

    # Each outbound connector is validated before a rule that routes to it changes.
    assert [(c.action, c.name) for c in result.applied] == [
        (Action.UPDATE, NAMES.outgoing_outbound_connector),
        (Action.VALIDATE, NAMES.incoming_outbound_connector),
        (Action.VALIDATE, NAMES.outgoing_outbound_connector),
        (Action.UPDATE, NAMES.incoming_user_rule),
        (Action.CREATE, NAMES.incoming_junk_rule),
        (Action.ADD, "Default"),
    ]
    validate = [
        ("Validate-OutboundConnector", {"Identity": name, "Recipients": ["postmaster@contoso.com"]})
        for name in (NAMES.incoming_outbound_connector, NAMES.outgoing_outbound_connector)
    ]
    assert cloud.writes(before) == [
        (
            "Set-OutboundConnector",
            {
                "Identity": NAMES.outgoing_outbound_connector,
                "SmartHosts": ["outbound.relay.example.net"],
                "Enabled": True,
            },
        ),
        *validate,
        ("Set-TransportRule", {"Identity": NAMES.incoming_user_rule, "Mode": "Enforce"}),
        ("New-TransportRule", result.applied[4].target.new_parameters()),
        (
            "Set-HostedConnectionFilterPolicy",
            {"Identity": "Default", "IPAllowList": {"Add": ["198.51.100.7"]}},
        ),
    ]
    updated = result.applied[0]
    assert {(f.name, repr(f.old), repr(f.new)) for f in updated.fields} == {
        ("SmartHosts", "['old-relay.example.org']", "('outbound.relay.example.net',)"),
        ("Enabled", "False", "True"),
    }
    assert plan(desired, await read_current(exchange, PREFIX)).settled


async def test_failure_in_the_middle_then_rerun_completes_without_duplicates(
    cloud: Cloud, exchange: ExchangeClient, service: InlineService
) -> None:
    desired = desired_configuration(service, FULL, ["contoso.com"], route_key=ROUTE_KEY)

    async def fail_at_fifth(done: int, total: int, change: Change) -> None:
        if change.step == 5 and done == 4:
            cloud.sandbox.fail("exchange", status=400)

    with pytest.raises(ApplyFailed) as caught:
        await apply(exchange, desired, on_progress=fail_at_fifth)
    failed = caught.value
    assert failed.change is not None
    assert failed.change.step == 5
    assert failed.code == "ServiceUnavailable"
    assert [c.step for c in failed.applied] == [1, 2, 3, 4]
    assert sum(len(store) for store in cloud.objects.values()) == 4

    result = await apply(exchange, desired)
    assert len(result.applied) == 11
    created = news(cloud.exchange_calls(succeeded=True))
    assert all(count == 1 for count in created.values()), created
    assert sum(len(store) for store in cloud.objects.values()) == 12


async def test_exchange_unavailable_is_reported_with_what_was_applied(
    cloud: Cloud, exchange: ExchangeClient, service: InlineService
) -> None:
    desired = desired_configuration(service, FULL, ["contoso.com"], route_key=ROUTE_KEY)

    async def outage(done: int, total: int, change: Change) -> None:
        if change.step == 2 and done == 1:
            cloud.sandbox.fail("exchange", status=500, times=10)

    with pytest.raises(ApplyFailed) as caught:
        await apply(exchange, desired, on_progress=outage)
    assert caught.value.code == "Unavailable"
    assert [c.name for c in caught.value.applied] == [NAMES.incoming_group]
    cloud.sandbox.faults.clear()
    await apply(exchange, desired)
    assert all(count == 1 for count in news(cloud.exchange_calls(succeeded=True)).values())


async def test_crash_during_apply_then_rerun_completes(
    cloud: Cloud, exchange: ExchangeClient, service: InlineService
) -> None:
    desired = desired_configuration(service, FULL, ["contoso.com"], route_key=ROUTE_KEY)

    class Crash(Exception):
        pass

    async def crash_after_seventh(done: int, total: int, change: Change) -> None:
        if done == 7:
            raise Crash

    with pytest.raises(Crash):
        await apply(exchange, desired, on_progress=crash_after_seventh)
    result = await apply(exchange, desired)
    # The connectors are validated again before the rules that are still missing.
    assert [c.action for c in result.applied] == [Action.VALIDATE] * 2 + [Action.CREATE] * 6 + [
        Action.ADD
    ]
    assert all(count == 1 for count in news(cloud.exchange_calls(succeeded=True)).values())
    assert plan(desired, await read_current(exchange, PREFIX)).settled


async def test_object_created_meanwhile_is_read_back_not_duplicated(
    cloud: Cloud, exchange: ExchangeClient, service: InlineService
) -> None:
    """Another run (or a person) creates an object between our read and our New-."""
    desired = desired_configuration(service, FULL, ["contoso.com"], route_key=ROUTE_KEY)
    target = desired.find(Kind.OUTBOUND_CONNECTOR, NAMES.incoming_outbound_connector)
    assert target is not None

    async def race(done: int, total: int, change: Change) -> None:
        if change.target is target and change.action is Action.CREATE and done < change.step:
            await exchange.invoke(
                "New-OutboundConnector",
                {**target.new_parameters(), "SmartHosts": ["stale.example.org"]},
            )

    result = await apply(exchange, desired, on_progress=race)
    assert target.name in [c.name for c in result.applied]
    connector = cloud.objects["OutboundConnector"][target.name.lower()]
    assert connector["SmartHosts"] == ["inbound.relay.example.net"]
    assert (
        "Set-OutboundConnector",
        {"Identity": target.name, "SmartHosts": ["inbound.relay.example.net"]},
    ) in cloud.writes()


async def test_upgrade_adds_only_outbound_objects(
    cloud: Cloud, exchange: ExchangeClient, service: InlineService
) -> None:
    inbound_only = desired_configuration(
        service, {Direction.INBOUND}, ["contoso.com"], route_key=ROUTE_KEY
    )
    await apply(exchange, inbound_only)
    snapshot_before = {
        kind: {name: dict(props) for name, props in store.items()}
        for kind, store in cloud.objects.items()
    }
    before = len(cloud.exchange_calls())

    upgrade = desired_configuration(service, UPGRADE, ["contoso.com"], route_key=ROUTE_KEY)
    result = await apply(exchange, upgrade)

    created = {(c.kind, c.name) for c in result.applied if c.action is Action.CREATE}
    assert created == {(kind, name) for kind, names in OUTBOUND_OBJECTS.items() for name in names}
    assert {c.action for c in result.applied} == {Action.CREATE, Action.VALIDATE}
    inbound_names = {n.lower() for names in INBOUND_OBJECTS.values() for n in names}
    for cmdlet, parameters in cloud.writes(before):
        touched = str(parameters.get("Name") or parameters.get("Identity")).lower()
        assert touched not in inbound_names, (cmdlet, parameters)
    for kind, store in snapshot_before.items():
        for name, props in store.items():
            now = dict(cloud.objects[kind][name])
            # Exchange itself renumbers rule priorities when a rule is inserted above.
            now.pop("Priority", None)
            props.pop("Priority", None)
            assert now == props
    checks = {f.check: f.severity for f in result.findings}
    assert checks["inbound-protection"] is Severity.PASS
    for kind, names in INBOUND_OBJECTS.items():
        assert names <= cloud.names(kind)


async def test_preflight_blocks_on_domain_that_is_not_accepted(
    cloud: Cloud, exchange: ExchangeClient, service: InlineService
) -> None:
    desired = desired_configuration(
        service, FULL, ["contoso.com", "fabrikam.example"], route_key=ROUTE_KEY
    )
    before = len(cloud.exchange_calls())
    with pytest.raises(ApplyBlocked) as caught:
        await apply(exchange, desired)
    (finding,) = caught.value.blocking
    assert finding.check == "accepted-domains"
    assert "fabrikam.example" in finding.title
    assert cloud.writes(before) == []


async def test_objects_not_owned_are_never_modified(
    cloud: Cloud, exchange: ExchangeClient, service: InlineService
) -> None:
    foreign: dict[str, dict[str, Any]] = {
        "OutboundConnector": {
            "Name": "Archive Partner Connector",
            "ConnectorType": "Partner",
            "IsTransportRuleScoped": True,
            "SmartHosts": ["archive.example.org"],
            "Enabled": False,
        },
        "InboundConnector": {
            "Name": "Fax gateway",
            "SenderDomains": ["*"],
            "ConnectorType": "OnPremises",
            "SenderIPAddresses": ["192.0.2.10"],
        },
        "TransportRule": {
            "Name": "Legal hold: stop here",
            "StopRuleProcessing": True,
            "SentToScope": "InOrganization",
            "Priority": 0,
        },
        "DistributionGroup": {"Name": "All staff"},
    }
    for kind, parameters in foreign.items():
        await exchange.invoke(f"New-{kind}", parameters)
    # An object whose name merely contains ours (not as a prefix) is not ours either.
    await exchange.invoke(
        "New-TransportRule", {"Name": f"Copy of {NAMES.incoming_domain_rule}", "Priority": 1}
    )
    cloud.tenant.exchange.ip_allow_list.append("192.0.2.0/24")

    def foreign_state() -> dict[str, dict[str, Any]]:
        found = {}
        for kind, store in cloud.objects.items():
            for props in store.values():
                if not props["Name"].startswith(PREFIX):
                    kept = dict(props)
                    kept.pop("Priority", None)
                    found[f"{kind}/{props['Name']}"] = kept
        return found

    before_state = foreign_state()
    before = len(cloud.exchange_calls())
    desired = desired_configuration(service, FULL, ["contoso.com"], route_key=ROUTE_KEY)
    first = await apply(exchange, desired)
    # Our rules are created above the legal-hold rule: it does not stop them.
    assert {f.check for f in first.findings if f.severity is Severity.WARNING} == set()
    # A stop-processing rule someone puts between ours is worth a warning.
    await exchange.invoke(
        "New-TransportRule", {"Name": "Journal: stop", "StopRuleProcessing": True, "Priority": 3}
    )
    before_state["TransportRule/Journal: stop"] = foreign_state()["TransportRule/Journal: stop"]
    second = await apply(exchange, desired)

    assert foreign_state() == before_state
    for cmdlet, parameters in cloud.writes(before):
        name = str(parameters.get("Name") or parameters.get("Identity"))
        assert name.startswith(PREFIX) or name in ("Default", "Journal: stop"), (cmdlet, parameters)
    assert cloud.tenant.exchange.ip_allow_list[0] == "192.0.2.0/24"
    assert second.applied == ()
    warnings = [f for f in second.findings if f.severity is Severity.WARNING]
    assert [(f.check, f.title) for f in warnings] == [
        ("rule-order", "“Journal: stop” stops rule processing ahead of ours")
    ]


async def test_disabled_rule_is_enabled_again(
    cloud: Cloud, exchange: ExchangeClient, service: InlineService
) -> None:
    desired = desired_configuration(service, FULL, ["contoso.com"], route_key=ROUTE_KEY)
    await apply(exchange, desired)
    cloud.objects["TransportRule"][NAMES.incoming_domain_rule.lower()]["State"] = "Disabled"
    result = await apply(exchange, desired)
    assert [(c.action, c.name) for c in result.applied] == [
        (Action.VALIDATE, NAMES.incoming_outbound_connector),
        (Action.UPDATE, NAMES.incoming_domain_rule),
    ]
    rule = cloud.objects["TransportRule"][NAMES.incoming_domain_rule.lower()]
    assert rule["State"] == "Enabled"


async def test_read_current_types_the_tenant(
    cloud: Cloud, exchange: ExchangeClient, service: InlineService
) -> None:
    await apply(
        exchange, desired_configuration(service, FULL, ["contoso.com"], route_key=ROUTE_KEY)
    )
    await exchange.invoke("New-DistributionGroup", {"Name": "All staff"})
    snapshot = await read_current(exchange, PREFIX)
    assert {d.domain for d in snapshot.accepted_domains} == {
        "contoso.onmicrosoft.com",
        "contoso.com",
        "mail.contoso.com",
    }
    assert [d.domain for d in snapshot.accepted_domains if d.default] == ["contoso.com"]
    groups = {o.name for o in snapshot.of_kind(Kind.DISTRIBUTION_GROUP)}
    assert groups == {NAMES.incoming_group, NAMES.outgoing_group}
    assert snapshot.ip_allow_list == ("203.0.113.0/24", "198.51.100.7")
    group_reads = [p for c, p in cloud.exchange_calls() if c == "Get-DistributionGroup"]
    assert group_reads[-1]["Filter"] == "Name -like 'TMCAS Inline*'"


async def test_object_removed_before_its_update_is_created(
    cloud: Cloud, exchange: ExchangeClient, service: InlineService
) -> None:
    desired = desired_configuration(service, FULL, ["contoso.com"], route_key=ROUTE_KEY)
    await apply(exchange, desired)
    key = NAMES.incoming_inbound_connector.lower()
    cloud.objects["InboundConnector"][key]["TlsSenderCertificateName"] = "old.example.org"

    async def remove_first(done: int, total: int, change: Change) -> None:
        if done == 0:
            del cloud.objects["InboundConnector"][key]

    result = await apply(exchange, desired, on_progress=remove_first)
    assert [(c.action, c.name) for c in result.applied] == [
        (Action.UPDATE, NAMES.incoming_inbound_connector)
    ]
    assert cloud.objects["InboundConnector"][key]["TlsSenderCertificateName"] == (
        "returns.relay.example.net"
    )
    assert cloud.objects["InboundConnector"][key]["ConnectorType"] == "OnPremises"


async def test_conflicting_object_created_meanwhile_stops_with_conflict(
    cloud: Cloud, exchange: ExchangeClient, service: InlineService
) -> None:
    desired = desired_configuration(service, FULL, ["contoso.com"], route_key=ROUTE_KEY)

    async def race(done: int, total: int, change: Change) -> None:
        if change.name == NAMES.outgoing_inbound_connector and done < change.step:
            await exchange.invoke(
                "New-InboundConnector",
                {"Name": change.name, "ConnectorType": "Partner", "SenderDomains": ["*"]},
            )

    change_key = NAMES.outgoing_inbound_connector.lower()
    with pytest.raises(ApplyFailed) as caught:
        await apply(exchange, desired, on_progress=race)
    assert caught.value.code == "Conflict"
    assert caught.value.change is not None
    assert caught.value.change.name == NAMES.outgoing_inbound_connector
    assert "Partner connector" in caught.value.message
    # Checking again plans its replacement: created new, then the old one removed.
    result = await apply(exchange, desired)
    replaced = [c for c in result.applied if c.action is Action.REPLACE]
    assert [c.name for c in replaced] == [NAMES.outgoing_inbound_connector]
    assert cloud.objects["InboundConnector"][change_key]["ConnectorType"] == "OnPremises"

"""Every cmdlet call of every plan, checked against Microsoft's reference (../shared/msref).

The cmdlet must exist in Exchange Online, every parameter must exist for it there, every documented
constraint must hold, and no setting may be one the reference says has no effect on that object
(or asks not to use). Zero findings, for a fresh tenant, drifted tenants, the upgrade and each
direction alone.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from bot.config import InlineService
from bot.microsoft.errors import ServiceError
from bot.microsoft.exchange import ExchangeClient
from bot.sandbox.exchange_reference import DEFAULT_PATH, ExchangeReference, Severity, load_reference
from bot.steps.mailflow.desired import (
    FULL,
    UPGRADE,
    DesiredConfiguration,
    Direction,
    Kind,
    desired_configuration,
    object_names,
)
from bot.steps.mailflow.plan import RECORD_LABEL, Plan, plan
from bot.steps.mailflow.snapshot import AcceptedDomain, ExchangeObject, Snapshot

from .conftest import PREFIX, ROUTE_KEY, echo_of

NAMES = object_names(PREFIX)
DOMAINS = (AcceptedDomain("contoso.com"), AcceptedDomain("contoso.onmicrosoft.com"))
#: What read_current sends (the Get- side of every run).
READS: tuple[tuple[str, dict[str, Any]], ...] = (
    ("Get-AcceptedDomain", {}),
    ("Get-OutboundConnector", {}),
    ("Get-InboundConnector", {}),
    ("Get-TransportRule", {"ResultSize": "Unlimited"}),
    ("Get-DistributionGroup", {"ResultSize": "Unlimited", "Filter": "Name -like 'TMCAS Inline*'"}),
    ("Get-HostedConnectionFilterPolicy", {"Identity": "Default"}),
    ("Get-TenantAllowBlockListSpoofItems", {"Identity": "Default"}),
)


@pytest.fixture(scope="module")
def reference() -> ExchangeReference:
    loaded = load_reference()
    assert loaded is not None, f"Microsoft's reference is missing: {DEFAULT_PATH}"
    return loaded


def tenant(desired: DesiredConfiguration, **overrides: dict[str, Any]) -> Snapshot:
    objects = []
    for kind, echo in echo_of(desired):
        echo.update(overrides.get(echo["Name"], {}))
        objects.append(ExchangeObject.from_echo(kind, echo))
    return Snapshot(DOMAINS, tuple(objects), ("203.0.113.0/24", "198.51.100.7"))


def findings_of(reference: ExchangeReference, planned: Plan, current: Snapshot) -> list[str]:
    found = [str(f) for cmdlet, p in READS for f in reference.check(cmdlet, p)]
    rules = len(current.of_kind(Kind.TRANSPORT_RULE))
    for call in planned.calls:
        verb, _, noun = call.cmdlet.partition("-")
        state = dict(call.parameters)
        existing = (
            current.find(Kind(noun), str(call.parameters.get("Identity")))
            if (verb == "Set" and noun != Kind.IP_ALLOW_LIST)
            else None
        )
        if existing is not None:
            state = {**existing.properties, **call.parameters}
        found += [
            str(f)
            for f in reference.check(
                call.cmdlet,
                call.parameters,
                state,
                rule_count=rules,
                accepted_domains=[d.domain for d in DOMAINS],
            )
        ]
        if call.cmdlet == "New-TransportRule":
            rules += 1
        elif call.cmdlet == "Remove-TransportRule":
            rules -= 1
    return found


def scenarios(service: InlineService) -> list[tuple[str, DesiredConfiguration, Snapshot]]:
    full = desired_configuration(service, FULL, ["contoso.com"], route_key=ROUTE_KEY)
    inbound = desired_configuration(
        service, {Direction.INBOUND}, ["contoso.com"], route_key=ROUTE_KEY
    )
    upgrade = desired_configuration(service, UPGRADE, ["contoso.com"], route_key=ROUTE_KEY)
    wide = desired_configuration(
        replace(service, ip_ranges=("198.18.0.0/23", "192.0.2.7")),
        FULL,
        ["contoso.com"],
        route_key=ROUTE_KEY,
    )
    ip_host = desired_configuration(
        replace(service, inbound_smart_host="192.0.2.25"),
        FULL,
        ["contoso.com"],
        route_key=ROUTE_KEY,
    )
    empty = Snapshot(DOMAINS)
    recorded = f"{RECORD_LABEL} 203.0.113.0/24, 198.51.100.7, 192.0.2.0/24"
    drifted = tenant(
        full,
        **{
            # The old design, as a tenant provisioned by it holds it.
            NAMES.incoming_inbound_connector: {
                "ConnectorType": "Partner",
                "RequireTls": True,
                "SenderIPAddresses": ["203.0.113.0/24"],
                "Comment": recorded,
            },
            NAMES.outgoing_inbound_connector: {"CloudServicesMailEnabled": True, "Enabled": False},
            NAMES.incoming_outbound_connector: {
                "ConnectorType": "OnPremises",
                "CloudServicesMailEnabled": True,
            },
            NAMES.outgoing_outbound_connector: {"ConnectorType": "OnPremises", "Enabled": False},
            NAMES.incoming_domain_rule: {
                "SenderAddressLocation": "HeaderOrEnvelope",
                "ExceptIfSenderIpRanges": ["203.0.113.0/24"],
                "Priority": 2,
            },
            NAMES.incoming_user_rule: {"State": "Disabled", "Mode": "Audit"},
            NAMES.incoming_junk_rule: {"DeleteMessage": True, "Priority": 5},
            NAMES.outgoing_user_rule: {"RouteMessageOutboundConnector": "Archive"},
            NAMES.outgoing_domain_rule: {"SenderDomainIs": ["old.example"]},
        },
    )
    drifted = replace(drifted, ip_allow_list=(*drifted.ip_allow_list, "192.0.2.0/24"))
    inbound_tenant = tenant(inbound)
    return [
        ("fresh, both directions", full, empty),
        ("fresh, inbound only", inbound, empty),
        ("fresh, outbound only (upgrade of nothing)", upgrade, empty),
        ("upgrade of an inbound tenant", upgrade, inbound_tenant),
        ("drifted, both directions", full, drifted),
        ("drifted, inbound only", inbound, drifted),
        ("drifted, upgrade", upgrade, drifted),
        ("wide ranges split", wide, empty),
        ("IP smart host", ip_host, empty),
    ]


def test_every_call_of_every_plan_has_zero_findings(
    reference: ExchangeReference, service: InlineService
) -> None:
    checked = 0
    cmdlets: set[str] = set()
    for name, desired, current in scenarios(service):
        planned = plan(desired, current)
        assert not planned.blocked, name
        assert planned.calls, name
        assert findings_of(reference, planned, current) == [], name
        checked += len(planned.calls)
        cmdlets |= {c.cmdlet for c in planned.calls}
    # The scenarios exercise every kind of write the product makes.
    assert cmdlets >= {
        "New-DistributionGroup",
        "New-OutboundConnector",
        "New-InboundConnector",
        "New-TransportRule",
        "Set-OutboundConnector",
        "Set-InboundConnector",
        "Set-TransportRule",
        "Enable-TransportRule",
        "Remove-InboundConnector",
        "Remove-OutboundConnector",
        "Remove-TransportRule",
        "Validate-OutboundConnector",
        "Set-HostedConnectionFilterPolicy",
    }
    assert checked > 100


def test_the_check_finds_the_old_designs_mistakes(reference: ExchangeReference) -> None:
    """The check can fail: the plan of the previous design has findings of every kind."""
    partner = {
        "Name": "X Inbound",
        "ConnectorType": "Partner",
        "SenderDomains": ["*"],
        "RequireTls": True,
        "SenderIPAddresses": ["203.0.113.0/23", "2001:db8::/48"],
        "TlsSenderCertificateName": "relay.*.example.net",
    }
    onprem = {**partner, "ConnectorType": "OnPremises", "SenderIPAddresses": ["203.0.113.0/24"]}
    onprem["TlsSenderCertificateName"] = "relay.example.net"
    rule = {
        "Name": "X Incoming",
        "FromScope": "NotInOrganization",
        "SenderAddressLocation": "HeaderOrEnvelope",
        "SetSCL": 10,
        "Priority": 7,
    }
    spoof = {
        "Identity": "Default",
        "SpoofedUser": "contoso.com",
        "SendingInfrastructure": "relay.example.net",
        "SpoofType": "External",
        "Action": "Allow",
    }
    found = [
        *reference.check("New-InboundConnector", partner),
        *reference.check("New-InboundConnector", onprem),
        *reference.check("New-OutboundConnector", {"Name": "X", "CloudServicesMailEnabled": True}),
        *reference.check("New-TransportRule", rule, rule_count=3),
        *reference.check(
            "New-TenantAllowBlockListSpoofItems", spoof, accepted_domains=["contoso.com"]
        ),
        *reference.check("New-InboundConnector", {**onprem, "State": "Enabled"}),
        *reference.check("New-ReceiveConnector", {"Name": "x"}),
    ]
    seen = {(f.parameter, f.severity) for f in found}
    assert ("SenderIPAddresses", Severity.REFUSED) in seen  # /23 and IPv6
    assert ("TlsSenderCertificateName", Severity.REFUSED) in seen  # embedded wildcard
    assert ("SenderIPAddresses", Severity.NO_EFFECT) in seen  # Partner without Restrict…
    assert ("RequireTls", Severity.NO_EFFECT) in seen  # on OnPremises
    assert ("CloudServicesMailEnabled", Severity.DISCOURAGED) in seen
    assert ("SenderAddressLocation", Severity.NO_EFFECT) in seen  # no sender condition
    assert ("SetSCL", Severity.REFUSED) in seen
    assert ("Priority", Severity.REFUSED) in seen
    assert ("SpoofedUser", Severity.REFUSED) in seen  # own domain needs a full address
    assert ("State", Severity.REFUSED) in seen  # not a New-InboundConnector parameter
    assert any(f.cmdlet == "New-ReceiveConnector" and f.severity is Severity.REFUSED for f in found)


@pytest.mark.parametrize(
    ("cmdlet", "parameters", "code"),
    [
        (
            "New-InboundConnector",
            {"Name": "TMCAS Inline X", "SenderDomains": ["*"], "Colour": "blue"},
            "ParameterBindingException",
        ),
        (
            "New-InboundConnector",
            {
                "Name": "TMCAS Inline X",
                "SenderDomains": ["*"],
                "SenderIPAddresses": ["10.0.0.0/23"],
            },
            "ValidationException",
        ),
        (
            "New-InboundConnector",
            {"Name": "TMCAS Inline X", "SenderDomains": ["*"], "ConnectorType": "Hybrid"},
            "ValidationException",
        ),
        ("New-TransportRule", {"Name": "TMCAS Inline R", "SetSCL": 10}, "ValidationException"),
        ("New-TransportRule", {"Name": "TMCAS Inline R", "Priority": 5}, "ValidationException"),
        ("New-TransportRule", {"Name": "R" * 65}, "ValidationException"),
        (
            "Set-HostedConnectionFilterPolicy",
            {"Identity": "Default", "IPAllowList": {"Add": ["10.0.0.0/16"]}},
            "ValidationException",
        ),
        ("New-InboundConnector", {"Name": "TMCAS Inline X"}, "ParameterBindingException"),
    ],
)
async def test_the_sandbox_refuses_what_exchange_refuses(
    exchange: ExchangeClient, cmdlet: str, parameters: dict[str, Any], code: str
) -> None:
    with pytest.raises(ServiceError) as refused:
        await exchange.invoke(cmdlet, parameters)
    assert refused.value.code == code

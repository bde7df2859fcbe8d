"""The desired configuration: DESIGN §3, named with the prefix, endpoints from configuration."""

from __future__ import annotations

from dataclasses import replace

import pytest

from bot.config import InlineService
from bot.steps.mailflow.desired import (
    FULL,
    UPGRADE,
    Direction,
    Kind,
    Role,
    allow_list_entries,
    desired_configuration,
    object_names,
)

from .conftest import PREFIX, inline_service

DESIGN_NAMES = {
    "Outbound Connector for Incoming Message": Kind.OUTBOUND_CONNECTOR,
    "Inbound Connector for Incoming Message": Kind.INBOUND_CONNECTOR,
    "Incoming Domain Transport Rule": Kind.TRANSPORT_RULE,
    "Incoming User Transport Rule": Kind.TRANSPORT_RULE,
    "Incoming Skip Spam Filter Transport Rule": Kind.TRANSPORT_RULE,
    "Incoming Move to Junk Folder Transport Rule": Kind.TRANSPORT_RULE,
    "Incoming O365 Virtual Group": Kind.DISTRIBUTION_GROUP,
    "Outbound Connector for Outgoing Message": Kind.OUTBOUND_CONNECTOR,
    "Inbound Connector for Outgoing Message": Kind.INBOUND_CONNECTOR,
    "Outgoing Domain Transport Rule": Kind.TRANSPORT_RULE,
    "Outgoing User Transport Rule": Kind.TRANSPORT_RULE,
    "Outgoing O365 Virtual Group": Kind.DISTRIBUTION_GROUP,
}


def test_full_provisioning_is_design_table(service: InlineService) -> None:
    desired = desired_configuration(service, FULL, ["Contoso.com.", "contoso.com"])
    named = {(o.name, o.kind) for o in desired.objects if o.kind not in _ALLOW}
    assert named == {(f"{PREFIX} {suffix}", kind) for suffix, kind in DESIGN_NAMES.items()}
    assert desired.protected_domains == ("contoso.com",)
    allow = [o for o in desired.objects if o.kind in _ALLOW]
    assert [(o.kind, o.name) for o in allow] == [
        (Kind.IP_ALLOW_LIST, "Default"),
        (Kind.SPOOF_ITEM, "contoso.com via relay.example.net"),
    ]
    assert all(desired.owns(name) for name, _ in named)


_ALLOW = (Kind.IP_ALLOW_LIST, Kind.SPOOF_ITEM)


def test_dependency_order(service: InlineService) -> None:
    desired = desired_configuration(service, FULL, ["contoso.com"])
    kinds = [o.kind for o in desired.objects]
    order = [
        Kind.DISTRIBUTION_GROUP,
        Kind.OUTBOUND_CONNECTOR,
        Kind.INBOUND_CONNECTOR,
        Kind.TRANSPORT_RULE,
        Kind.IP_ALLOW_LIST,
        Kind.SPOOF_ITEM,
    ]
    assert kinds == sorted(kinds, key=order.index)
    position = {o.name: i for i, o in enumerate(desired.objects)}
    for target in desired.objects:
        for dependency in target.depends_on:
            assert position[dependency] < position[target.name]
    priorities = [o.value("Priority") for o in desired.objects if o.kind is Kind.TRANSPORT_RULE]
    assert priorities == [0, 1, 2, 3, 4, 5]


def test_upgrade_is_outbound_only(service: InlineService) -> None:
    desired = desired_configuration(service, UPGRADE, ["contoso.com"])
    named = {o.name for o in desired.objects if o.kind not in _ALLOW}
    names = object_names(PREFIX)
    assert named == {name for _, name in names.of(Direction.OUTBOUND)}
    assert {o.direction for o in desired.objects if o.kind not in _ALLOW} == {Direction.OUTBOUND}
    rules = [o for o in desired.objects if o.kind is Kind.TRANSPORT_RULE]
    assert [r.value("Priority") for r in rules] == [0, 1]


def test_realistic_settings(service: InlineService) -> None:
    desired = desired_configuration(service, FULL, ["contoso.com"])
    names = object_names(PREFIX)
    out = desired.find(Kind.OUTBOUND_CONNECTOR, names.incoming_outbound_connector)
    assert out is not None
    assert out.new_parameters() == {
        "Name": names.incoming_outbound_connector,
        "ConnectorType": "OnPremises",
        "IsTransportRuleScoped": True,
        "UseMXRecord": False,
        "SmartHosts": ["inbound.relay.example.net"],
        "TlsSettings": "DomainValidation",
        "TlsDomain": "inbound.relay.example.net",
        "CloudServicesMailEnabled": True,
        "Enabled": True,
        "Comment": "Sends incoming mail to the protection service for scanning.",
    }
    back_in = desired.find(Kind.INBOUND_CONNECTOR, names.incoming_inbound_connector)
    back_out = desired.find(Kind.INBOUND_CONNECTOR, names.outgoing_inbound_connector)
    assert back_in is not None
    assert back_out is not None
    assert back_in.value("ConnectorType") == "Partner"
    assert back_out.value("ConnectorType") == "OnPremises"
    for back in (back_in, back_out):
        assert back.value("RequireTls") is True
        assert back.value("TlsSenderCertificateName") == "returns.relay.example.net"
        assert back.value("SenderIPAddresses") == ("203.0.113.0/24", "198.51.100.7/32")
        assert back.setting("ConnectorType").role is Role.FIXED  # type: ignore[union-attr]

    domain = desired.find(Kind.TRANSPORT_RULE, names.incoming_domain_rule)
    assert domain is not None
    parameters = domain.new_parameters()
    assert parameters["FromScope"] == "NotInOrganization"
    assert parameters["SentToScope"] == "InOrganization"
    assert parameters["RecipientDomainIs"] == ["contoso.com"]
    assert parameters["RouteMessageOutboundConnector"] == names.incoming_outbound_connector
    assert parameters["Priority"] == 0
    assert parameters["Mode"] == "Enforce"
    assert parameters["SenderAddressLocation"] == "HeaderOrEnvelope"
    assert parameters["ExceptIfSenderIpRanges"] == ["203.0.113.0/24", "198.51.100.7/32"]
    assert parameters["Enabled"] is True
    assert "State" not in parameters

    user = desired.find(Kind.TRANSPORT_RULE, names.incoming_user_rule)
    assert user is not None
    assert user.value("SentToMemberOf") == (names.incoming_group,)
    skip = desired.find(Kind.TRANSPORT_RULE, names.incoming_skip_spam_rule)
    assert skip is not None
    assert skip.value("SetSCL") == -1
    assert skip.value("HeaderMatchesMessageHeader") == "X-Inline-Scanned"
    assert skip.value("SenderIpRanges") == ("203.0.113.0/24", "198.51.100.7/32")
    junk = desired.find(Kind.TRANSPORT_RULE, names.incoming_junk_rule)
    assert junk is not None
    assert junk.value("SetSCL") == 6
    assert junk.value("HeaderContainsWords") == ("junk",)
    outgoing = desired.find(Kind.TRANSPORT_RULE, names.outgoing_domain_rule)
    assert outgoing is not None
    assert outgoing.value("FromScope") == "InOrganization"
    assert outgoing.value("SentToScope") == "NotInOrganization"
    assert outgoing.value("SenderDomainIs") == ("contoso.com",)
    out_user = desired.find(Kind.TRANSPORT_RULE, names.outgoing_user_rule)
    assert out_user is not None
    assert out_user.value("FromMemberOf") == (names.outgoing_group,)
    group = desired.find(Kind.DISTRIBUTION_GROUP, names.incoming_group)
    assert group is not None
    assert group.new_parameters()["Type"] == "Distribution"
    assert group.new_parameters()["MemberJoinRestriction"] == "Closed"
    spoof = desired.objects[-1]
    assert spoof.new_parameters() == {
        "Identity": "Default",
        "SpoofedUser": "contoso.com",
        "SendingInfrastructure": "relay.example.net",
        "SpoofType": "External",
        "Action": "Allow",
    }


def test_every_endpoint_comes_from_configuration() -> None:
    """Change every endpoint: no old value (nor any other host name) survives anywhere."""
    other = InlineService(
        name_prefix="Acme Shield",
        inbound_smart_host="in.acme.test",
        outbound_smart_host="out.acme.test",
        ip_ranges=("192.0.2.0/24",),
        tls_certificate_name="cert.acme.test",
        scanned_header="X-Acme",
        spoof_sending_infrastructure="acme.test",
    )
    desired = desired_configuration(other, FULL, ["contoso.com"])
    text = repr(desired)
    for old in ("relay.example.net", "203.0.113", "X-Inline-Scanned", "TMCAS"):
        assert old not in text
    hosts = {"in.acme.test", "out.acme.test", "cert.acme.test", "acme.test", "contoso.com"}
    for target in desired.objects:
        assert target.kind in _ALLOW or target.name.startswith("Acme Shield ")
        for setting in target.settings:
            values = setting.value if isinstance(setting.value, tuple) else (setting.value,)
            for value in values:
                if isinstance(value, str) and "." in value and " " not in value:
                    assert value in hosts | {"192.0.2.0/24", "."}, (target.name, setting)


def test_prefix_is_configurable() -> None:
    desired = desired_configuration(inline_service("Contoso Guard"), FULL, ["contoso.com"])
    assert desired.prefix == "Contoso Guard"
    assert desired.owns("contoso guard Incoming Domain Transport Rule")
    assert not desired.owns("TMCAS Inline Incoming Domain Transport Rule")


def test_needs_a_direction(service: InlineService) -> None:
    with pytest.raises(ValueError, match="direction"):
        desired_configuration(service, (), ["contoso.com"])


def test_allow_list_entries() -> None:
    assert allow_list_entries(["198.51.100.7/32", "203.0.113.0/24"]) == (
        "198.51.100.7",
        "203.0.113.0/24",
    )
    assert allow_list_entries(["192.0.2.0/23", "2001:db8::/32", "10.0.0.0/8"]) == (
        "192.0.2.0/24",
        "192.0.3.0/24",
    )
    assert allow_list_entries(["192.0.2.5/24", "192.0.2.0/24"]) == ("192.0.2.0/24",)


def test_ip_allow_list_follows_configuration(service: InlineService) -> None:
    wide = replace(service, ip_ranges=("198.18.0.0/22", "2001:db8::/48"))
    desired = desired_configuration(wide, FULL, ["contoso.com"])
    (allow,) = [o for o in desired.objects if o.kind is Kind.IP_ALLOW_LIST]
    assert allow.value("IPAllowList") == tuple(f"198.18.{n}.0/24" for n in range(4))

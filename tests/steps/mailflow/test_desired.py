"""The desired configuration: DESIGN §3, named with the prefix, endpoints from configuration."""

from __future__ import annotations

from dataclasses import replace

import pytest

from bot.config import InlineService
from bot.steps.mailflow.desired import (
    FULL,
    ROUTE_HEADER,
    UPGRADE,
    Direction,
    Kind,
    allow_list_entries,
    desired_configuration,
    object_names,
    route_token,
)

from .conftest import PREFIX, ROUTE_KEY, inline_service

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
    desired = desired_configuration(
        service, FULL, ["Contoso.com.", "contoso.com"], route_key=ROUTE_KEY
    )
    named = {(o.name, o.kind) for o in desired.objects if o.kind not in _ALLOW}
    assert named == {(f"{PREFIX} {suffix}", kind) for suffix, kind in DESIGN_NAMES.items()}
    assert desired.protected_domains == ("contoso.com",)
    allow = [o for o in desired.objects if o.kind in _ALLOW]
    assert [(o.kind, o.name) for o in allow] == [(Kind.IP_ALLOW_LIST, "Default")]
    assert all(desired.owns(name) for name, _ in named)


_ALLOW = (Kind.IP_ALLOW_LIST,)


def test_dependency_order(service: InlineService) -> None:
    desired = desired_configuration(service, FULL, ["contoso.com"], route_key=ROUTE_KEY)
    kinds = [o.kind for o in desired.objects]
    order = [
        Kind.DISTRIBUTION_GROUP,
        Kind.OUTBOUND_CONNECTOR,
        Kind.INBOUND_CONNECTOR,
        Kind.TRANSPORT_RULE,
        Kind.IP_ALLOW_LIST,
    ]
    assert kinds == sorted(kinds, key=order.index)
    position = {o.name: i for i, o in enumerate(desired.objects)}
    for target in desired.objects:
        for dependency in target.depends_on:
            assert position[dependency] < position[target.name]
    priorities = [o.value("Priority") for o in desired.objects if o.kind is Kind.TRANSPORT_RULE]
    assert priorities == [0, 1, 2, 3, 4, 5]


def test_upgrade_is_outbound_only(service: InlineService) -> None:
    desired = desired_configuration(service, UPGRADE, ["contoso.com"], route_key=ROUTE_KEY)
    named = {o.name for o in desired.objects if o.kind not in _ALLOW}
    names = object_names(PREFIX)
    assert named == {name for _, name in names.of(Direction.OUTBOUND)}
    assert {o.direction for o in desired.objects if o.kind not in _ALLOW} == {Direction.OUTBOUND}
    rules = [o for o in desired.objects if o.kind is Kind.TRANSPORT_RULE]
    assert [r.value("Priority") for r in rules] == [0, 1]


def test_connectors_touch_only_mail_passing_through_the_service(service: InlineService) -> None:
    desired = desired_configuration(service, FULL, ["contoso.com"], route_key=ROUTE_KEY)
    names = object_names(PREFIX)
    out = desired.find(Kind.OUTBOUND_CONNECTOR, names.incoming_outbound_connector)
    assert out is not None
    assert out.new_parameters() == {
        "Name": names.incoming_outbound_connector,
        "ConnectorType": "Partner",
        "IsTransportRuleScoped": True,
        "UseMXRecord": False,
        "SmartHosts": ["inbound.relay.example.net"],
        "TlsSettings": "DomainValidation",
        "TlsDomain": "inbound.relay.example.net",
        "Enabled": True,
        "Comment": out.purpose,
    }
    for name in (names.incoming_inbound_connector, names.outgoing_inbound_connector):
        back = desired.find(Kind.INBOUND_CONNECTOR, name)
        assert back is not None
        parameters = back.new_parameters()
        # OnPremises, recognised by certificate, Enhanced Filtering on the service's hop; nothing
        # that scopes it to the internet or rejects other senders.
        assert parameters["ConnectorType"] == "OnPremises"
        assert parameters["TlsSenderCertificateName"] == "returns.relay.example.net"
        assert parameters["EFSkipIPs"] == ["203.0.113.0/24", "198.51.100.7/32"]
        assert parameters["EFSkipLastIP"] is False
        for absent in (
            "RequireTls",
            "SenderIPAddresses",
            "RestrictDomainsToIPAddresses",
            "RestrictDomainsToCertificate",
            "CloudServicesMailEnabled",
        ):
            assert absent not in parameters
    for target in desired.objects:
        assert "CloudServicesMailEnabled" not in target.new_parameters()


def test_rules_and_loop_prevention(service: InlineService) -> None:
    desired = desired_configuration(service, FULL, ["contoso.com"], route_key=ROUTE_KEY)
    names = object_names(PREFIX)
    inbound_token = route_token(ROUTE_KEY, Direction.INBOUND)
    outbound_token = route_token(ROUTE_KEY, Direction.OUTBOUND)
    assert inbound_token != outbound_token
    assert route_token("another tenant's key", Direction.INBOUND) != inbound_token

    domain = desired.find(Kind.TRANSPORT_RULE, names.incoming_domain_rule)
    assert domain is not None
    parameters = domain.new_parameters()
    assert parameters["FromScope"] == "NotInOrganization"
    assert parameters["RecipientDomainIs"] == ["contoso.com"]
    assert parameters["RouteMessageOutboundConnector"] == names.incoming_outbound_connector
    assert parameters["Priority"] == 0
    assert parameters["Enabled"] is True
    assert "State" not in parameters
    # The only exception is this tenant's token, stamped on the way out: the shared service
    # addresses are no exception (another tenant's mail through the service is still scanned).
    exceptions = {k for k in parameters if k.startswith("ExceptIf")}
    assert exceptions == {"ExceptIfHeaderContainsMessageHeader", "ExceptIfHeaderContainsWords"}
    assert parameters["ExceptIfHeaderContainsMessageHeader"] == ROUTE_HEADER
    assert parameters["ExceptIfHeaderContainsWords"] == [inbound_token]
    assert (parameters["SetHeaderName"], parameters["SetHeaderValue"]) == (
        ROUTE_HEADER,
        inbound_token,
    )
    # No sender-address condition on the incoming rules: SenderAddressLocation would do nothing.
    for name in (
        names.incoming_domain_rule,
        names.incoming_user_rule,
        names.incoming_skip_spam_rule,
        names.incoming_junk_rule,
    ):
        target = desired.find(Kind.TRANSPORT_RULE, name)
        assert target is not None
        assert target.value("SenderAddressLocation") is None
    skip = desired.find(Kind.TRANSPORT_RULE, names.incoming_skip_spam_rule)
    assert skip is not None
    assert skip.value("SetSCL") == -1
    assert skip.value("SenderIpRanges") == ("203.0.113.0/24", "198.51.100.7/32")
    assert skip.value("HeaderContainsWords") == (inbound_token,)
    junk = desired.find(Kind.TRANSPORT_RULE, names.incoming_junk_rule)
    assert junk is not None
    assert junk.value("SetSCL") == 6
    assert junk.value("HeaderContainsWords") == ("junk",)
    assert junk.value("HeaderMatchesPatterns") == (inbound_token,)
    outgoing = desired.find(Kind.TRANSPORT_RULE, names.outgoing_domain_rule)
    assert outgoing is not None
    assert outgoing.value("SenderDomainIs") == ("contoso.com",)
    assert outgoing.value("SenderAddressLocation") == "HeaderOrEnvelope"
    assert outgoing.value("SetHeaderValue") == outbound_token
    group = desired.find(Kind.DISTRIBUTION_GROUP, names.incoming_group)
    assert group is not None
    assert group.new_parameters()["MemberJoinRestriction"] == "Closed"


def test_every_endpoint_comes_from_configuration() -> None:
    """Change every endpoint: no old value (nor any other host name) survives anywhere."""
    other = InlineService(
        name_prefix="Acme Shield",
        inbound_smart_host="in.acme.test",
        outbound_smart_host="out.acme.test",
        ip_ranges=("192.0.2.0/24",),
        tls_certificate_name="cert.acme.test",
        scanned_header="X-Acme",
    )
    desired = desired_configuration(other, FULL, ["contoso.com"], route_key=ROUTE_KEY)
    text = repr(desired)
    for old in ("relay.example.net", "203.0.113", "X-Inline-Scanned", "TMCAS"):
        assert old not in text
    hosts = {"in.acme.test", "out.acme.test", "cert.acme.test", "contoso.com"}
    for target in desired.objects:
        assert target.kind in _ALLOW or target.name.startswith("Acme Shield ")
        for setting in target.settings:
            values = setting.value if isinstance(setting.value, tuple) else (setting.value,)
            for value in values:
                if isinstance(value, str) and "." in value and " " not in value:
                    assert value in hosts | {"192.0.2.0/24", "."}, (target.name, setting)


def test_prefix_is_configurable() -> None:
    desired = desired_configuration(
        inline_service("Contoso Guard"), FULL, ["contoso.com"], route_key=ROUTE_KEY
    )
    assert desired.prefix == "Contoso Guard"
    assert desired.owns("contoso guard Incoming Domain Transport Rule")
    assert not desired.owns("TMCAS Inline Incoming Domain Transport Rule")


def test_needs_a_direction(service: InlineService) -> None:
    with pytest.raises(ValueError, match="direction"):
        desired_configuration(service, (), ["contoso.com"], route_key=ROUTE_KEY)


def test_allow_list_entries() -> None:
    assert allow_list_entries(["198.51.100.7/32", "203.0.113.0/24"]) == (
        "198.51.100.7",
        "203.0.113.0/24",
    )
    assert allow_list_entries(["192.0.2.0/23"]) == ("192.0.2.0/24", "192.0.3.0/24")
    assert allow_list_entries(["192.0.2.5/24", "192.0.2.0/24"]) == ("192.0.2.0/24",)


def test_ip_allow_list_follows_configuration(service: InlineService) -> None:
    wide = replace(service, ip_ranges=("198.18.0.0/22",))
    desired = desired_configuration(wide, FULL, ["contoso.com"], route_key=ROUTE_KEY)
    (allow,) = [o for o in desired.objects if o.kind is Kind.IP_ALLOW_LIST]
    assert allow.value("IPAllowList") == tuple(f"198.18.{n}.0/24" for n in range(4))

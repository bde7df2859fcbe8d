"""The Exchange Online configuration provisioning wants (DESIGN §3), as plain data.

``desired_configuration(service, directions, protected_domains)`` is pure: it turns the
``INLINE_*`` endpoints, the direction(s) and the accepted domains chosen for protection into an
ordered tuple of ``DesiredObject`` (dependency order: groups, connectors, transport rules in
priority order, then the two allow lists). Every object that provisioning owns is named with the
configured prefix; the allow-list entries live in Microsoft's shared, tenant-wide lists and are only
ever added to.

Each setting says how it is compared with what Exchange echoes (``Compare``) and what happens when
it differs (``Role``):

- ``MANAGED``: compared; a difference is repaired with the kind's ``Set-`` cmdlet.
- ``FIXED``: compared; a difference is a conflict that no update should repair (the connector's
  ``ConnectorType``: changing it changes how Exchange attributes every message through the
  connector, so an object with our name but another type was built by someone else, for something
  else, and a person decides).
- ``STATE``: compared; repaired with ``Enable-TransportRule`` (``Set-TransportRule`` has no state).
- ``CREATE_ONLY``: sent with ``New-`` only, never compared (comments, group type and join rules,
  the initial rule priority: the admin may reorder rules afterwards without the bot fighting them).

Loop prevention uses the service's IP ranges (``ExceptIfSenderIpRanges``), not the scanned header:
any external sender can stamp a header and so skip scanning, nobody else can send from the service's
addresses. The scanned header is used where it is combined with those addresses (skip the spam
filter, move to junk).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from bot.config import InlineService

__all__ = [
    "FULL",
    "IP_ALLOW_LIST_LIMIT",
    "UPGRADE",
    "Compare",
    "DesiredConfiguration",
    "DesiredObject",
    "Direction",
    "Kind",
    "Role",
    "Setting",
    "Value",
    "allow_list_entries",
    "desired_configuration",
    "object_names",
]

#: Exchange's limit on the connection filter policy's IP Allow List.
IP_ALLOW_LIST_LIMIT = 1273

#: The word the service writes into the scanned header when its verdict is junk (default).
DEFAULT_JUNK_VERDICT = "junk"


class Direction(StrEnum):
    INBOUND = "inbound"
    OUTBOUND = "outbound"


#: Full provisioning and the upgrade of a tenant protected inbound only.
FULL: frozenset[Direction] = frozenset({Direction.INBOUND, Direction.OUTBOUND})
UPGRADE: frozenset[Direction] = frozenset({Direction.OUTBOUND})


class Kind(StrEnum):
    """The Exchange object kinds, valued as the noun of their cmdlets."""

    DISTRIBUTION_GROUP = "DistributionGroup"
    OUTBOUND_CONNECTOR = "OutboundConnector"
    INBOUND_CONNECTOR = "InboundConnector"
    TRANSPORT_RULE = "TransportRule"
    IP_ALLOW_LIST = "HostedConnectionFilterPolicy"
    SPOOF_ITEM = "TenantAllowBlockListSpoofItems"

    @property
    def label(self) -> str:
        return _KIND_LABELS[self]


_KIND_LABELS = {
    Kind.DISTRIBUTION_GROUP: "distribution group",
    Kind.OUTBOUND_CONNECTOR: "outbound connector",
    Kind.INBOUND_CONNECTOR: "inbound connector",
    Kind.TRANSPORT_RULE: "transport rule",
    Kind.IP_ALLOW_LIST: "connection filter IP Allow List",
    Kind.SPOOF_ITEM: "spoof allow entry",
}


class Compare(StrEnum):
    """How a desired value is compared with Exchange's echo of it."""

    TEXT = "text"  # case-insensitive, trimmed
    BOOL = "bool"  # True/False, also "True"/"false" strings
    INT = "int"
    SET = "set"  # case-insensitive, order and duplicates ignored
    IP_SET = "ip-set"  # networks: 198.51.100.7 equals 198.51.100.7/32
    REFERENCE = "reference"  # another object, by name, alias, address or GUID
    REFERENCE_SET = "reference-set"


class Role(StrEnum):
    MANAGED = "managed"
    FIXED = "fixed"
    STATE = "state"
    CREATE_ONLY = "create-only"


Value = str | bool | int | tuple[str, ...]


@dataclass(frozen=True)
class Setting:
    name: str
    value: Value
    compare: Compare
    role: Role = Role.MANAGED


@dataclass(frozen=True)
class DesiredObject:
    """One object provisioning wants; ``direction`` is ``None`` for the shared allow lists."""

    kind: Kind
    name: str
    direction: Direction | None
    purpose: str
    settings: tuple[Setting, ...]
    depends_on: tuple[str, ...] = ()

    def setting(self, name: str) -> Setting | None:
        return next((s for s in self.settings if s.name == name), None)

    def value(self, name: str) -> Value | None:
        found = self.setting(name)
        return None if found is None else found.value

    @property
    def compared(self) -> tuple[Setting, ...]:
        return tuple(s for s in self.settings if s.role is not Role.CREATE_ONLY)

    def new_parameters(self) -> dict[str, Any]:
        """The parameters of the ``New-`` cmdlet that creates this object (JSON-ready)."""
        parameters: dict[str, Any] = {}
        if self.kind in (Kind.IP_ALLOW_LIST, Kind.SPOOF_ITEM):
            parameters["Identity"] = "Default"
        else:
            parameters["Name"] = self.name
        for setting in self.settings:
            if setting.role is Role.STATE:
                parameters["Enabled"] = str(setting.value).casefold() == "enabled"
            else:
                parameters[setting.name] = json_value(setting.value)
        return parameters


def json_value(value: Value) -> Any:
    return list(value) if isinstance(value, tuple) else value


@dataclass(frozen=True)
class DesiredConfiguration:
    prefix: str
    directions: frozenset[Direction]
    protected_domains: tuple[str, ...]
    objects: tuple[DesiredObject, ...]

    def find(self, kind: Kind, name: str) -> DesiredObject | None:
        key = name.casefold()
        return next((o for o in self.objects if o.kind is kind and o.name.casefold() == key), None)

    def owns(self, name: str) -> bool:
        """Whether ``name`` carries the configured prefix (objects without it are never touched)."""
        return name.strip().casefold().startswith(self.prefix.strip().casefold())


@dataclass(frozen=True)
class ObjectNames:
    incoming_outbound_connector: str
    incoming_inbound_connector: str
    incoming_domain_rule: str
    incoming_user_rule: str
    incoming_skip_spam_rule: str
    incoming_junk_rule: str
    incoming_group: str
    outgoing_outbound_connector: str
    outgoing_inbound_connector: str
    outgoing_domain_rule: str
    outgoing_user_rule: str
    outgoing_group: str

    def of(self, direction: Direction) -> tuple[tuple[Kind, str], ...]:
        if direction is Direction.INBOUND:
            return (
                (Kind.DISTRIBUTION_GROUP, self.incoming_group),
                (Kind.OUTBOUND_CONNECTOR, self.incoming_outbound_connector),
                (Kind.INBOUND_CONNECTOR, self.incoming_inbound_connector),
                (Kind.TRANSPORT_RULE, self.incoming_domain_rule),
                (Kind.TRANSPORT_RULE, self.incoming_user_rule),
                (Kind.TRANSPORT_RULE, self.incoming_skip_spam_rule),
                (Kind.TRANSPORT_RULE, self.incoming_junk_rule),
            )
        return (
            (Kind.DISTRIBUTION_GROUP, self.outgoing_group),
            (Kind.OUTBOUND_CONNECTOR, self.outgoing_outbound_connector),
            (Kind.INBOUND_CONNECTOR, self.outgoing_inbound_connector),
            (Kind.TRANSPORT_RULE, self.outgoing_domain_rule),
            (Kind.TRANSPORT_RULE, self.outgoing_user_rule),
        )


def object_names(prefix: str) -> ObjectNames:
    """The names of DESIGN §3 under ``prefix`` (e.g. ``TMCAS Inline``)."""
    p = prefix.strip()
    return ObjectNames(
        incoming_outbound_connector=f"{p} Outbound Connector for Incoming Message",
        incoming_inbound_connector=f"{p} Inbound Connector for Incoming Message",
        incoming_domain_rule=f"{p} Incoming Domain Transport Rule",
        incoming_user_rule=f"{p} Incoming User Transport Rule",
        incoming_skip_spam_rule=f"{p} Incoming Skip Spam Filter Transport Rule",
        incoming_junk_rule=f"{p} Incoming Move to Junk Folder Transport Rule",
        incoming_group=f"{p} Incoming O365 Virtual Group",
        outgoing_outbound_connector=f"{p} Outbound Connector for Outgoing Message",
        outgoing_inbound_connector=f"{p} Inbound Connector for Outgoing Message",
        outgoing_domain_rule=f"{p} Outgoing Domain Transport Rule",
        outgoing_user_rule=f"{p} Outgoing User Transport Rule",
        outgoing_group=f"{p} Outgoing O365 Virtual Group",
    )


def allow_list_entries(ip_ranges: Iterable[str]) -> tuple[str, ...]:
    """The IP Allow List entries for ``ip_ranges``.

    Exchange accepts IPv4 addresses and ranges from /24 to /32 only: a single address is written
    bare, a wider IPv4 range (down to /16) is split into /24s, IPv6 ranges are left out (the
    pre-flight check says so).
    """
    entries: list[str] = []
    for item in ip_ranges:
        network = ipaddress.ip_network(item, strict=False)
        if not isinstance(network, ipaddress.IPv4Network) or network.prefixlen < 16:
            continue
        parts = [network] if network.prefixlen >= 24 else list(network.subnets(new_prefix=24))
        for part in parts:
            text = str(part.network_address) if part.prefixlen == 32 else str(part)
            if text not in entries:
                entries.append(text)
    return tuple(entries)


def _connector_out(name: str, direction: Direction, host: str, purpose: str) -> DesiredObject:
    return DesiredObject(
        kind=Kind.OUTBOUND_CONNECTOR,
        name=name,
        direction=direction,
        purpose=purpose,
        settings=(
            Setting("ConnectorType", "OnPremises", Compare.TEXT, Role.FIXED),
            Setting("IsTransportRuleScoped", True, Compare.BOOL),
            Setting("UseMXRecord", False, Compare.BOOL),
            Setting("SmartHosts", (host,), Compare.SET),
            Setting("TlsSettings", "DomainValidation", Compare.TEXT),
            Setting("TlsDomain", host, Compare.TEXT),
            Setting("CloudServicesMailEnabled", True, Compare.BOOL),
            Setting("Enabled", True, Compare.BOOL),
            Setting("Comment", purpose, Compare.TEXT, Role.CREATE_ONLY),
        ),
    )


def _connector_in(
    name: str, direction: Direction, service: InlineService, purpose: str
) -> DesiredObject:
    # Mail returned inbound comes from external senders (Partner); mail returned outbound is the
    # organisation's own (OnPremises, with CloudServicesMailEnabled so Exchange keeps treating it
    # as internal and relays it to the internet).
    internal = direction is Direction.OUTBOUND
    settings = [
        Setting("ConnectorType", "OnPremises" if internal else "Partner", Compare.TEXT, Role.FIXED),
        Setting("SenderDomains", ("*",), Compare.SET),
        Setting("RequireTls", True, Compare.BOOL),
        Setting("TlsSenderCertificateName", service.tls_certificate_name, Compare.TEXT),
        Setting("SenderIPAddresses", tuple(service.ip_ranges), Compare.IP_SET),
    ]
    if internal:
        settings.append(Setting("CloudServicesMailEnabled", True, Compare.BOOL))
    settings += [
        Setting("Enabled", True, Compare.BOOL),
        Setting("Comment", purpose, Compare.TEXT, Role.CREATE_ONLY),
    ]
    return DesiredObject(Kind.INBOUND_CONNECTOR, name, direction, purpose, tuple(settings))


def _rule(
    name: str,
    direction: Direction,
    priority: int,
    purpose: str,
    conditions: Sequence[Setting],
    depends_on: tuple[str, ...] = (),
) -> DesiredObject:
    return DesiredObject(
        kind=Kind.TRANSPORT_RULE,
        name=name,
        direction=direction,
        purpose=purpose,
        settings=(
            *conditions,
            Setting("Mode", "Enforce", Compare.TEXT),
            Setting("StopRuleProcessing", False, Compare.BOOL),
            Setting("State", "Enabled", Compare.TEXT, Role.STATE),
            Setting("Priority", priority, Compare.INT, Role.CREATE_ONLY),
            Setting("Comments", purpose, Compare.TEXT, Role.CREATE_ONLY),
        ),
        depends_on=depends_on,
    )


def _group(name: str, direction: Direction, purpose: str) -> DesiredObject:
    return DesiredObject(
        kind=Kind.DISTRIBUTION_GROUP,
        name=name,
        direction=direction,
        purpose=purpose,
        settings=(
            Setting("DisplayName", name, Compare.TEXT, Role.CREATE_ONLY),
            Setting("Type", "Distribution", Compare.TEXT, Role.CREATE_ONLY),
            Setting("MemberJoinRestriction", "Closed", Compare.TEXT, Role.CREATE_ONLY),
            Setting("MemberDepartRestriction", "Closed", Compare.TEXT, Role.CREATE_ONLY),
            Setting("Notes", purpose, Compare.TEXT, Role.CREATE_ONLY),
        ),
    )


def _normalise_domains(domains: Iterable[str]) -> tuple[str, ...]:
    seen: list[str] = []
    for domain in domains:
        cleaned = domain.strip().rstrip(".").casefold()
        if cleaned and cleaned not in seen:
            seen.append(cleaned)
    return tuple(seen)


def desired_configuration(
    service: InlineService,
    directions: Iterable[Direction],
    protected_domains: Iterable[str],
    *,
    junk_verdict: str = DEFAULT_JUNK_VERDICT,
) -> DesiredConfiguration:
    """Everything DESIGN §3 creates for ``directions`` (``FULL`` or ``UPGRADE``), in order."""
    wanted = frozenset(directions)
    if not wanted:
        raise ValueError("at least one direction is needed")
    domains = _normalise_domains(protected_domains)
    names = object_names(service.name_prefix)
    ips = tuple(service.ip_ranges)
    header = service.scanned_header
    routing = (
        Setting("SenderAddressLocation", "HeaderOrEnvelope", Compare.TEXT),
        Setting("ExceptIfSenderIpRanges", ips, Compare.IP_SET),
    )
    groups: list[DesiredObject] = []
    outbound: list[DesiredObject] = []
    inbound: list[DesiredObject] = []
    rules: list[tuple[str, Direction, str, list[Setting], tuple[str, ...]]] = []

    if Direction.INBOUND in wanted:
        groups.append(
            _group(
                names.incoming_group,
                Direction.INBOUND,
                "Users whose incoming mail is protected individually (add them as members).",
            )
        )
        outbound.append(
            _connector_out(
                names.incoming_outbound_connector,
                Direction.INBOUND,
                service.inbound_smart_host,
                "Sends incoming mail to the protection service for scanning.",
            )
        )
        inbound.append(
            _connector_in(
                names.incoming_inbound_connector,
                Direction.INBOUND,
                service,
                "Accepts incoming mail back from the protection service after scanning.",
            )
        )
        connector = names.incoming_outbound_connector
        rules += [
            (
                names.incoming_domain_rule,
                Direction.INBOUND,
                "Routes mail from outside to the protected domains through the protection "
                "service, unless it comes back from the service.",
                [
                    Setting("FromScope", "NotInOrganization", Compare.TEXT),
                    Setting("SentToScope", "InOrganization", Compare.TEXT),
                    Setting("RecipientDomainIs", domains, Compare.SET),
                    Setting("RouteMessageOutboundConnector", connector, Compare.REFERENCE),
                    *routing,
                ],
                (connector,),
            ),
            (
                names.incoming_user_rule,
                Direction.INBOUND,
                "Routes mail from outside to members of the incoming group through the "
                "protection service, unless it comes back from the service.",
                [
                    Setting("FromScope", "NotInOrganization", Compare.TEXT),
                    Setting("SentToMemberOf", (names.incoming_group,), Compare.REFERENCE_SET),
                    Setting("RouteMessageOutboundConnector", connector, Compare.REFERENCE),
                    *routing,
                ],
                (names.incoming_group, connector),
            ),
            (
                names.incoming_skip_spam_rule,
                Direction.INBOUND,
                "Mail the service returns (its addresses and its scanned header, no junk "
                "verdict) skips the Exchange spam filter (SCL -1): it was scanned already.",
                [
                    Setting("FromScope", "NotInOrganization", Compare.TEXT),
                    Setting("SenderIpRanges", ips, Compare.IP_SET),
                    Setting("HeaderMatchesMessageHeader", header, Compare.TEXT),
                    Setting("HeaderMatchesPatterns", (".",), Compare.SET),
                    Setting("ExceptIfHeaderContainsMessageHeader", header, Compare.TEXT),
                    Setting("ExceptIfHeaderContainsWords", (junk_verdict,), Compare.SET),
                    Setting("SetSCL", -1, Compare.INT),
                ],
                (),
            ),
            (
                names.incoming_junk_rule,
                Direction.INBOUND,
                "Mail the service returns with a junk verdict in its scanned header gets SCL 6, "
                "so Exchange moves it to the Junk Email folder.",
                [
                    Setting("FromScope", "NotInOrganization", Compare.TEXT),
                    Setting("SenderIpRanges", ips, Compare.IP_SET),
                    Setting("HeaderContainsMessageHeader", header, Compare.TEXT),
                    Setting("HeaderContainsWords", (junk_verdict,), Compare.SET),
                    Setting("SetSCL", 6, Compare.INT),
                ],
                (),
            ),
        ]
    if Direction.OUTBOUND in wanted:
        groups.append(
            _group(
                names.outgoing_group,
                Direction.OUTBOUND,
                "Users whose outgoing mail is protected individually (add them as members).",
            )
        )
        outbound.append(
            _connector_out(
                names.outgoing_outbound_connector,
                Direction.OUTBOUND,
                service.outbound_smart_host,
                "Sends outgoing mail to the protection service for scanning.",
            )
        )
        inbound.append(
            _connector_in(
                names.outgoing_inbound_connector,
                Direction.OUTBOUND,
                service,
                "Accepts outgoing mail back from the protection service for delivery.",
            )
        )
        connector = names.outgoing_outbound_connector
        rules += [
            (
                names.outgoing_domain_rule,
                Direction.OUTBOUND,
                "Routes mail from the protected domains to outside recipients through the "
                "protection service, unless it comes back from the service.",
                [
                    Setting("FromScope", "InOrganization", Compare.TEXT),
                    Setting("SentToScope", "NotInOrganization", Compare.TEXT),
                    Setting("SenderDomainIs", domains, Compare.SET),
                    Setting("RouteMessageOutboundConnector", connector, Compare.REFERENCE),
                    *routing,
                ],
                (connector,),
            ),
            (
                names.outgoing_user_rule,
                Direction.OUTBOUND,
                "Routes mail from members of the outgoing group to outside recipients through "
                "the protection service, unless it comes back from the service.",
                [
                    Setting("FromMemberOf", (names.outgoing_group,), Compare.REFERENCE_SET),
                    Setting("SentToScope", "NotInOrganization", Compare.TEXT),
                    Setting("RouteMessageOutboundConnector", connector, Compare.REFERENCE),
                    *routing,
                ],
                (names.outgoing_group, connector),
            ),
        ]

    rule_objects = [
        _rule(name, direction, priority, purpose, conditions, depends)
        for priority, (name, direction, purpose, conditions, depends) in enumerate(rules)
    ]
    allow_lists = [
        DesiredObject(
            kind=Kind.IP_ALLOW_LIST,
            name="Default",
            direction=None,
            purpose="Mail the protection service returns is not blocked by the connection "
            "filter: its addresses go on the IP Allow List.",
            settings=(Setting("IPAllowList", allow_list_entries(ips), Compare.IP_SET),),
        ),
        *(
            DesiredObject(
                kind=Kind.SPOOF_ITEM,
                name=f"{domain} via {service.spoof_sending_infrastructure}",
                direction=None,
                purpose=f"Mail from {domain} that the service returns is not flagged as spoofed.",
                settings=(
                    Setting("SpoofedUser", domain, Compare.TEXT),
                    Setting(
                        "SendingInfrastructure", service.spoof_sending_infrastructure, Compare.TEXT
                    ),
                    Setting("SpoofType", "External", Compare.TEXT),
                    Setting("Action", "Allow", Compare.TEXT),
                ),
            )
            for domain in domains
        ),
    ]
    return DesiredConfiguration(
        prefix=service.name_prefix.strip(),
        directions=wanted,
        protected_domains=domains,
        objects=(*groups, *outbound, *inbound, *rule_objects, *allow_lists),
    )

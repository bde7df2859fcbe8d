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
- ``REPLACE``: compared; a difference is repaired by replacing the object (an inbound connector of
  another type carries settings of that type that ``Set-`` would leave behind).
- ``STATE``: compared; repaired with ``Enable-TransportRule`` (``Set-TransportRule`` has no state).
- ``CREATE_ONLY``: sent with ``New-`` only, never compared (group type and join rules, the initial
  rule priority: the admin may reorder rules afterwards without the bot fighting them).
- ``RECORD``: the inbound connectors' ``Comment``: the purpose plus the IP Allow List entries
  provisioning added (the plan completes it from the tenant).

docs/MAILFLOW.md gives the Microsoft sentence behind every setting. Loop prevention holds when the
service's addresses are shared by many tenants: the routing rules stamp ``ROUTE_HEADER`` with a
token only this tenant's rules know (``route_token``) and make that their only exception; the
spam-verdict rules need both the service's addresses and the token.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from bot.config import (
    ALLOW_LIST_LIMIT,
    InlineService,
    Settings,
    sealing_key_material,
    split_ranges,
)

__all__ = [
    "FULL",
    "IP_ALLOW_LIST_LIMIT",
    "ROUTE_HEADER",
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
    "route_token",
    "tenant_route_key",
]

#: Exchange's limit on the connection filter policy's IP Allow List.
IP_ALLOW_LIST_LIMIT = ALLOW_LIST_LIMIT

#: The header the routing rules stamp with the tenant's token when they route a message out; their
#: exception is that header carrying the token (loop prevention, docs/MAILFLOW.md §3).
ROUTE_HEADER = "X-Provision-Inline-Route"

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

    @property
    def label(self) -> str:
        return _KIND_LABELS[self]


_KIND_LABELS = {
    Kind.DISTRIBUTION_GROUP: "distribution group",
    Kind.OUTBOUND_CONNECTOR: "outbound connector",
    Kind.INBOUND_CONNECTOR: "inbound connector",
    Kind.TRANSPORT_RULE: "transport rule",
    Kind.IP_ALLOW_LIST: "connection filter IP Allow List",
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
    REPLACE = "replace"  # a difference is repaired by replacing the object
    STATE = "state"
    CREATE_ONLY = "create-only"
    RECORD = "record"  # the purpose plus what provisioning recorded (the plan fills it in)


Value = str | bool | int | tuple[str, ...]


@dataclass(frozen=True)
class Setting:
    name: str
    value: Value
    compare: Compare
    role: Role = Role.MANAGED
    secret: bool = False  # never shown in Slack (the loop-prevention token)


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
        if self.kind is Kind.IP_ALLOW_LIST:
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
    """The IP Allow List entries for ``ip_ranges`` (IPv4, /24 to /32; wider ranges split)."""
    return split_ranges(tuple(ip_ranges), 24)


def tenant_route_key(settings: Settings, tenant_id: str) -> str:
    """This tenant's loop-prevention secret: stable across runs and replicas, unknown to anyone
    without the bot's credential (reads the certificate file when that is the credential)."""
    return hmac.new(
        sealing_key_material(settings), tenant_id.casefold().encode(), hashlib.sha256
    ).hexdigest()


def route_token(route_key: str, direction: Direction) -> str:
    """The tenant's loop-prevention token for ``direction`` (docs/MAILFLOW.md §3)."""
    digest = hmac.new(route_key.encode(), f"route:{direction}".encode(), hashlib.sha256)
    return digest.hexdigest()[:32]


def _smart_host_tls(host: str) -> tuple[Setting, ...]:
    # DomainValidation checks the certificate against TlsDomain, an SMTP domain: only for a name.
    try:
        ipaddress.ip_network(host, strict=False)
    except ValueError:
        return (
            Setting("TlsSettings", "DomainValidation", Compare.TEXT),
            Setting("TlsDomain", host, Compare.TEXT),
        )
    return (Setting("TlsSettings", "CertificateValidation", Compare.TEXT),)


def _connector_out(name: str, direction: Direction, host: str, purpose: str) -> DesiredObject:
    return DesiredObject(
        kind=Kind.OUTBOUND_CONNECTOR,
        name=name,
        direction=direction,
        purpose=purpose,
        settings=(
            Setting("ConnectorType", "Partner", Compare.TEXT),
            Setting("IsTransportRuleScoped", True, Compare.BOOL),
            Setting("UseMXRecord", False, Compare.BOOL),
            Setting("SmartHosts", (host,), Compare.SET),
            *_smart_host_tls(host),
            Setting("Enabled", True, Compare.BOOL),
            Setting("Comment", purpose, Compare.TEXT, Role.CREATE_ONLY),
        ),
    )


def _connector_in(
    name: str, direction: Direction, service: InlineService, purpose: str
) -> DesiredObject:
    # OnPremises, recognised by the service's certificate; Enhanced Filtering skips the service's
    # hop. No RequireTls/SenderIPAddresses/Restrict*: see docs/MAILFLOW.md §2.
    return DesiredObject(
        Kind.INBOUND_CONNECTOR,
        name,
        direction,
        purpose,
        (
            Setting("ConnectorType", "OnPremises", Compare.TEXT, Role.REPLACE),
            Setting("SenderDomains", ("*",), Compare.SET),
            Setting("TlsSenderCertificateName", service.tls_certificate_name, Compare.TEXT),
            Setting("EFSkipIPs", tuple(service.ip_ranges), Compare.IP_SET),
            Setting("EFSkipLastIP", False, Compare.BOOL),
            Setting("Enabled", True, Compare.BOOL),
            Setting("Comment", purpose, Compare.TEXT, Role.RECORD),
        ),
    )


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


def _routing(connector: str, token: str) -> tuple[Setting, ...]:
    """Route to ``connector`` and stamp the token, unless the message already carries it."""
    return (
        Setting("ExceptIfHeaderContainsMessageHeader", ROUTE_HEADER, Compare.TEXT),
        Setting("ExceptIfHeaderContainsWords", (token,), Compare.SET, secret=True),
        Setting("RouteMessageOutboundConnector", connector, Compare.REFERENCE),
        Setting("SetHeaderName", ROUTE_HEADER, Compare.TEXT),
        Setting("SetHeaderValue", token, Compare.TEXT, secret=True),
    )


def desired_configuration(
    service: InlineService,
    directions: Iterable[Direction],
    protected_domains: Iterable[str],
    *,
    route_key: str,
    junk_verdict: str = DEFAULT_JUNK_VERDICT,
) -> DesiredConfiguration:
    """Everything DESIGN §3 creates for ``directions`` (``FULL`` or ``UPGRADE``), in order.

    ``route_key`` is this tenant's secret for the loop-prevention tokens (``route_token``).
    """
    wanted = frozenset(directions)
    if not wanted:
        raise ValueError("at least one direction is needed")
    domains = _normalise_domains(protected_domains)
    names = object_names(service.name_prefix)
    ips = tuple(service.ip_ranges)
    header = service.scanned_header
    groups: list[DesiredObject] = []
    outbound: list[DesiredObject] = []
    inbound: list[DesiredObject] = []
    rules: list[tuple[str, Direction, str, list[Setting], tuple[str, ...]]] = []

    if Direction.INBOUND in wanted:
        token = route_token(route_key, Direction.INBOUND)
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
                "Sends incoming mail that the incoming rules route to it to the protection "
                "service for scanning. Used only by those rules (transport-rule scoped).",
            )
        )
        inbound.append(
            _connector_in(
                names.incoming_inbound_connector,
                Direction.INBOUND,
                service,
                "Recognises incoming mail coming back from the protection service by its TLS "
                "certificate; Enhanced Filtering skips the service's addresses so SPF, DKIM and "
                "DMARC judge the original sender. Other mail does not use it.",
            )
        )
        connector = names.incoming_outbound_connector
        rules += [
            (
                names.incoming_domain_rule,
                Direction.INBOUND,
                "Routes mail from outside to the protected domains through the protection "
                "service, unless it already came back from it (route header with this tenant's "
                "token).",
                [
                    Setting("FromScope", "NotInOrganization", Compare.TEXT),
                    Setting("RecipientDomainIs", domains, Compare.SET),
                    *_routing(connector, token),
                ],
                (connector,),
            ),
            (
                names.incoming_user_rule,
                Direction.INBOUND,
                "Routes mail from outside to members of the incoming group through the "
                "protection service, unless it already came back from it.",
                [
                    Setting("FromScope", "NotInOrganization", Compare.TEXT),
                    Setting("SentToMemberOf", (names.incoming_group,), Compare.REFERENCE_SET),
                    *_routing(connector, token),
                ],
                (names.incoming_group, connector),
            ),
            (
                names.incoming_skip_spam_rule,
                Direction.INBOUND,
                "Mail the service scanned for this tenant (its addresses, this tenant's token, "
                "its scanned header without a junk verdict) skips the Exchange spam filter "
                "(SCL -1): it was scanned already.",
                [
                    Setting("SenderIpRanges", ips, Compare.IP_SET),
                    Setting("HeaderContainsMessageHeader", ROUTE_HEADER, Compare.TEXT),
                    Setting("HeaderContainsWords", (token,), Compare.SET, secret=True),
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
                "Mail the service scanned for this tenant with a junk verdict in its scanned "
                "header gets SCL 6, so Exchange moves it to the Junk Email folder.",
                [
                    Setting("SenderIpRanges", ips, Compare.IP_SET),
                    Setting("HeaderContainsMessageHeader", header, Compare.TEXT),
                    Setting("HeaderContainsWords", (junk_verdict,), Compare.SET),
                    Setting("HeaderMatchesMessageHeader", ROUTE_HEADER, Compare.TEXT),
                    Setting("HeaderMatchesPatterns", (token,), Compare.SET, secret=True),
                    Setting("SetSCL", 6, Compare.INT),
                ],
                (),
            ),
        ]
    if Direction.OUTBOUND in wanted:
        token = route_token(route_key, Direction.OUTBOUND)
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
                "Sends outgoing mail that the outgoing rules route to it to the protection "
                "service for scanning. Used only by those rules (transport-rule scoped).",
            )
        )
        inbound.append(
            _connector_in(
                names.outgoing_inbound_connector,
                Direction.OUTBOUND,
                service,
                "Recognises outgoing mail coming back from the protection service by its TLS "
                "certificate, so Exchange relays it on to the internet (an OnPremises "
                "connector). Other mail does not use it.",
            )
        )
        connector = names.outgoing_outbound_connector
        sender_location = Setting("SenderAddressLocation", "HeaderOrEnvelope", Compare.TEXT)
        rules += [
            (
                names.outgoing_domain_rule,
                Direction.OUTBOUND,
                "Routes mail from the protected domains to outside recipients through the "
                "protection service, unless it already came back from it.",
                [
                    Setting("FromScope", "InOrganization", Compare.TEXT),
                    Setting("SentToScope", "NotInOrganization", Compare.TEXT),
                    Setting("SenderDomainIs", domains, Compare.SET),
                    sender_location,
                    *_routing(connector, token),
                ],
                (connector,),
            ),
            (
                names.outgoing_user_rule,
                Direction.OUTBOUND,
                "Routes mail from members of the outgoing group to outside recipients through "
                "the protection service, unless it already came back from it.",
                [
                    Setting("FromMemberOf", (names.outgoing_group,), Compare.REFERENCE_SET),
                    Setting("SentToScope", "NotInOrganization", Compare.TEXT),
                    sender_location,
                    *_routing(connector, token),
                ],
                (names.outgoing_group, connector),
            ),
        ]

    rule_objects = [
        _rule(name, direction, priority, purpose, conditions, depends)
        for priority, (name, direction, purpose, conditions, depends) in enumerate(rules)
    ]
    allow_list = DesiredObject(
        kind=Kind.IP_ALLOW_LIST,
        name="Default",
        direction=None,
        purpose="Mail from the protection service's addresses is not blocked by the connection "
        "filter (IP reputation): its addresses go on the IP Allow List.",
        settings=(Setting("IPAllowList", allow_list_entries(ips), Compare.IP_SET),),
    )
    return DesiredConfiguration(
        prefix=service.name_prefix.strip(),
        directions=wanted,
        protected_domains=domains,
        objects=(*groups, *outbound, *inbound, *rule_objects, allow_list),
    )

"""``plan(desired, current) -> Plan``: the changes that bring the tenant to the desired state.

Pure: no I/O. A ``Plan`` is an ordered tuple of ``Change`` in dependency order (groups,
connectors, the validation of the outbound connectors, transport rules in priority order, the IP
Allow List last). Each change carries the exact cmdlet calls that carry it out (``calls``), so
what the admin reviews is what ``apply`` sends. The actions:

- ``CREATE``: the object is missing (``New-``);
- ``UPDATE``: the object exists with our name but compared settings differ (``Set-`` with exactly
  those fields; ``Enable-TransportRule`` when a rule is disabled);
- ``REPLACE``: the object carries settings no ``Set-`` of ours would undo (another inbound
  connector type, a lock-down flag, a rule action or condition the design does not have): a new
  object is created under a temporary prefixed name, the old one removed, the new one renamed;
- ``VALIDATE``: ``Validate-OutboundConnector`` before any rule that routes to a new or changed
  connector is created, changed or enabled;
- ``ADD`` / ``REMOVE``: entries added to the shared IP Allow List, or removed from it when the
  configuration dropped them and provisioning had recorded them as its own;
- ``LEAVE``: nothing to do, with the reason; ``BLOCKED``: no change can make it right.

Only objects named with the configured prefix are ever changed.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping
from dataclasses import dataclass, replace
from enum import StrEnum
from typing import Any

from bot.steps.mailflow.desired import (
    IP_ALLOW_LIST_LIMIT,
    Compare,
    DesiredConfiguration,
    DesiredObject,
    Kind,
    Role,
    json_value,
)
from bot.steps.mailflow.snapshot import ExchangeObject, Snapshot, normalise, same

__all__ = [
    "FOREIGN_RULE_ACTIONS",
    "RECORD_LABEL",
    "Action",
    "Call",
    "Change",
    "FieldChange",
    "Plan",
    "compare_object",
    "missing_allow_entries",
    "plan",
    "recorded_entries",
    "replacement_reasons",
    "temporary_name",
    "update_calls",
]


class Action(StrEnum):
    CREATE = "create"
    UPDATE = "update"
    REPLACE = "replace"
    VALIDATE = "validate"
    ADD = "add"
    REMOVE = "remove"
    LEAVE = "leave"
    BLOCKED = "blocked"


#: Actions a rule carrying our name must not have: they would still delete, reject, quarantine,
#: redirect or copy mail after an update that only writes our settings.
FOREIGN_RULE_ACTIONS = (
    "DeleteMessage",
    "Quarantine",
    "RejectMessageReasonText",
    "RejectMessageEnhancedStatusCode",
    "RedirectMessageTo",
    "BlindCopyTo",
    "AddToRecipients",
    "CopyTo",
    "ModerateMessageByUser",
    "ModerateMessageByManager",
)

#: Other rule conditions and actions; on a rule of ours that the design does not give them they
#: narrow or change it in ways ``Set-`` writing our settings would keep (exceptions: any
#: ``ExceptIf…``).
_RULE_PREDICATES = (
    "From",
    "FromMemberOf",
    "FromScope",
    "SentTo",
    "SentToMemberOf",
    "SentToScope",
    "RecipientDomainIs",
    "SenderDomainIs",
    "SenderIpRanges",
    "HeaderContainsMessageHeader",
    "HeaderMatchesMessageHeader",
    "SubjectContainsWords",
    "SubjectMatchesPatterns",
    "SubjectOrBodyContainsWords",
    "SubjectOrBodyMatchesPatterns",
    "FromAddressContainsWords",
    "FromAddressMatchesPatterns",
    "RecipientAddressContainsWords",
    "RecipientAddressMatchesPatterns",
    "AnyOfToHeader",
    "AnyOfToHeaderMemberOf",
    "AnyOfCcHeader",
    "AnyOfCcHeaderMemberOf",
    "AnyOfToCcHeader",
    "AnyOfToCcHeaderMemberOf",
    "AttachmentContainsWords",
    "AttachmentExtensionMatchesWords",
    "AttachmentNameMatchesPatterns",
    "AttachmentSizeOver",
    "MessageSizeOver",
    "MessageTypeMatches",
    "SCLOver",
    "WithImportance",
    "HasClassification",
    "MessageContainsDataClassifications",
    "SenderADAttributeContainsWords",
    "RecipientADAttributeContainsWords",
    "BetweenMemberOf1",
    "BetweenMemberOf2",
    "RouteMessageOutboundConnector",
    "RouteMessageOutboundRequireTls",
    "SetSCL",
    "SetHeaderName",
    "RemoveHeader",
    "PrependSubject",
    "ApplyHtmlDisclaimerText",
    "ApplyOME",
    "ApplyRightsProtectionTemplate",
    "ApplyClassification",
    "GenerateIncidentReport",
    "GenerateNotification",
    "NotifySender",
    "SmtpRejectMessageRejectText",
    "Disconnect",
    *FOREIGN_RULE_ACTIONS,
)

#: Connector settings the design never sets; on a connector of ours they change which mail it
#: takes or rejects, and ``Set-`` would have to send parameters that do nothing on our type.
_FOREIGN_CONNECTOR_SETTINGS = {
    Kind.INBOUND_CONNECTOR: (
        "RestrictDomainsToIPAddresses",
        "RestrictDomainsToCertificate",
        "SenderIPAddresses",
        "CloudServicesMailEnabled",
        "TreatMessagesAsInternal",
        "AssociatedAcceptedDomains",
        "TrustedOrganizations",
        "ScanAndDropRecipients",
        "EFTestMode",
        "EFUsers",
    ),
    Kind.OUTBOUND_CONNECTOR: (
        "CloudServicesMailEnabled",
        "RouteAllMessagesViaOnPremises",
        "AllAcceptedDomains",
        "RecipientDomains",
        "TestMode",
        "SenderRewritingEnabled",
    ),
}

#: How the inbound connectors' ``Comment`` records the IP Allow List entries provisioning added.
RECORD_LABEL = "IP Allow List entries added by provisioning:"
_RECORD = re.compile(re.escape(RECORD_LABEL) + r"\s*(.*)$", re.MULTILINE)


@dataclass(frozen=True)
class Call:
    """One cmdlet call as sent to ``InvokeCommand``."""

    cmdlet: str
    parameters: Mapping[str, Any]


@dataclass(frozen=True)
class FieldChange:
    """One setting: ``old`` as Exchange echoed it (``None``: not set / object missing)."""

    name: str
    old: Any
    new: Any


@dataclass(frozen=True)
class Change:
    action: Action
    target: DesiredObject
    reason: str
    fields: tuple[FieldChange, ...] = ()
    entries: tuple[str, ...] = ()
    calls: tuple[Call, ...] = ()
    step: int = 0  # 1-based position among the changes that act (0 for LEAVE/BLOCKED)

    @property
    def kind(self) -> Kind:
        return self.target.kind

    @property
    def name(self) -> str:
        return self.target.name

    @property
    def acts(self) -> bool:
        return self.action not in (Action.LEAVE, Action.BLOCKED)

    def describe(self, *, done: bool = False) -> str:
        """E.g. ``creating transport rule “TMCAS Inline Incoming Domain Transport Rule”``."""
        if self.kind is Kind.IP_ALLOW_LIST and self.action in (Action.ADD, Action.REMOVE):
            count = len(self.entries)
            plural = "s" if count != 1 else ""
            if self.action is Action.ADD:
                verb = "added" if done else "adding"
                where = "to"
            else:
                verb = "removed" if done else "removing"
                where = "from"
            return (
                f"{verb} {count} address range{plural} {where} the connection filter IP Allow List"
            )
        verbs = {
            Action.CREATE: ("creating", "created"),
            Action.UPDATE: ("updating", "updated"),
            Action.REPLACE: ("replacing", "replaced"),
            Action.VALIDATE: ("validating", "validated"),
            Action.ADD: ("adding to", "added to"),
            Action.REMOVE: ("removing from", "removed from"),
            Action.LEAVE: ("leaving", "left"),
            Action.BLOCKED: ("blocked:", "blocked:"),
        }
        verb = verbs[self.action][1 if done else 0]
        if self.kind is Kind.IP_ALLOW_LIST:
            return f"{verb} the connection filter IP Allow List"
        return f"{verb} {self.kind.label} “{self.name}”"


@dataclass(frozen=True)
class Plan:
    changes: tuple[Change, ...]

    @property
    def actionable(self) -> tuple[Change, ...]:
        return tuple(c for c in self.changes if c.acts)

    @property
    def left_alone(self) -> tuple[Change, ...]:
        return tuple(c for c in self.changes if c.action is Action.LEAVE)

    @property
    def blocked(self) -> tuple[Change, ...]:
        return tuple(c for c in self.changes if c.action is Action.BLOCKED)

    @property
    def calls(self) -> tuple[Call, ...]:
        return tuple(call for change in self.changes for call in change.calls)

    @property
    def settled(self) -> bool:
        """Nothing to create, update, replace or add (a validation alone is not a change)."""
        return not any(c.action is not Action.VALIDATE for c in self.actionable)


def _is_set(value: Any) -> bool:
    if isinstance(value, str):
        return value.strip().casefold() not in ("", "false", "$false")
    return value not in (None, False, [], ())


def replacement_reasons(target: DesiredObject, current: ExchangeObject) -> tuple[str, ...]:
    """Why an object of ours must be replaced rather than updated (empty: an update will do)."""
    found: list[str] = []
    for setting in target.settings:
        if setting.role is Role.REPLACE and not same(setting, current.get(setting.name)):
            found.append(f"it is a {current.get(setting.name)!s} connector, not {setting.value!s}")
    ours = {s.name for s in target.settings}
    if target.kind is Kind.TRANSPORT_RULE:
        for key, value in current.properties.items():
            if key in ours or not _is_set(value):
                continue
            if key in _RULE_PREDICATES or key.startswith("ExceptIf"):
                found.append(f"it also has {key}")
            elif key == "SenderAddressLocation" and str(value).casefold() != "header":
                found.append(f"it also has {key} {value}")
    for key in _FOREIGN_CONNECTOR_SETTINGS.get(target.kind, ()):
        if key not in ours and _is_set(current.get(key)):
            found.append(f"it also has {key}")
    return tuple(found)


def compare_object(
    target: DesiredObject, current: ExchangeObject, aliases: Mapping[str, str] | None = None
) -> tuple[FieldChange, ...]:
    """The compared settings of ``target`` that ``current`` does not have (old → new)."""
    return tuple(
        FieldChange(setting.name, current.get(setting.name), setting.value)
        for setting in target.compared
        if setting.role is not Role.REPLACE
        and not same(setting, current.get(setting.name), aliases)
    )


def _spans(current: tuple[str, ...]) -> list[tuple[int, int, int]]:
    """The current entries as (version, first, last) address spans (parsed once)."""
    spans: list[tuple[int, int, int]] = []
    for item in current:
        text = item.strip()
        try:
            if "-" in text:
                first, last = (ipaddress.ip_address(p.strip()) for p in text.split("-"))
                spans.append((first.version, int(first), int(last)))
            else:
                network = ipaddress.ip_network(text, strict=False)
                spans.append(
                    (network.version, int(network.network_address), int(network.broadcast_address))
                )
        except ValueError:
            continue
    return spans


def _covered(entry: str, spans: list[tuple[int, int, int]]) -> bool:
    try:
        wanted = ipaddress.ip_network(entry, strict=False)
    except ValueError:
        return False
    low, high = int(wanted.network_address), int(wanted.broadcast_address)
    return any(v == wanted.version and a <= low and high <= b for v, a, b in spans)


def _same_entry(a: str, b: str) -> bool:
    return normalise(Compare.IP_SET, a) == normalise(Compare.IP_SET, b)


def missing_allow_entries(target: DesiredObject, current: Snapshot) -> tuple[str, ...]:
    """Desired IP Allow List entries that no current entry covers."""
    wanted = target.value("IPAllowList")
    entries = wanted if isinstance(wanted, tuple) else ()
    spans = _spans(current.ip_allow_list)
    return tuple(e for e in entries if not _covered(e, spans))


def recorded_entries(desired: DesiredConfiguration, current: Snapshot) -> tuple[str, ...]:
    """The IP Allow List entries provisioning recorded as added (in our inbound connectors)."""
    found: list[str] = []
    for connector in current.of_kind(Kind.INBOUND_CONNECTOR):
        if not desired.owns(connector.name):
            continue
        match = _RECORD.search(str(connector.get("Comment") or ""))
        for item in match.group(1).split(",") if match else ():
            entry = item.strip()
            if entry and not any(_same_entry(entry, f) for f in found):
                found.append(entry)
    return tuple(found)


def _record_text(purpose: str, entries: tuple[str, ...]) -> str:
    return f"{purpose}\n{RECORD_LABEL} {', '.join(entries)}" if entries else purpose


def temporary_name(name: str) -> str:
    """The name a replacement is created under (prefixed too; within Exchange's 64 characters)."""
    return f"{name[:57]} (new)"


def _with_record(target: DesiredObject, record: str | None) -> DesiredObject:
    if record is None:
        return target
    settings = tuple(
        replace(s, value=record) if s.role is Role.RECORD else s for s in target.settings
    )
    return replace(target, settings=settings)


def _create(target: DesiredObject) -> Change:
    parameters = target.new_parameters()
    return Change(
        Action.CREATE,
        target,
        target.purpose,
        tuple(
            FieldChange(name, None, value) for name, value in parameters.items() if name != "Name"
        ),
        calls=(Call(f"New-{target.kind}", parameters),),
    )


def update_calls(target: DesiredObject, fields: tuple[FieldChange, ...]) -> tuple[Call, ...]:
    parameters: dict[str, Any] = {}
    enable = False
    for change in fields:
        setting = target.setting(change.name)
        if setting is None:
            continue
        if setting.role is Role.STATE:
            enable = True
        else:
            parameters[setting.name] = json_value(setting.value)
    calls: list[Call] = []
    if parameters:
        calls.append(Call(f"Set-{target.kind}", {"Identity": target.name, **parameters}))
    if enable:
        calls.append(Call(f"Enable-{target.kind}", {"Identity": target.name}))
    return tuple(calls)


def _replace(target: DesiredObject, found: ExchangeObject, reasons: tuple[str, ...]) -> Change:
    temporary = temporary_name(target.name)
    parameters = {**target.new_parameters(), "Name": temporary}
    if target.kind is Kind.TRANSPORT_RULE:
        at = normalise(Compare.INT, found.get("Priority"))
        if isinstance(at, int):
            parameters["Priority"] = at  # the new rule takes the old one's place
    if target.kind is Kind.DISTRIBUTION_GROUP:
        parameters["DisplayName"] = temporary
    return Change(
        Action.REPLACE,
        target,
        f"Exists, but {'; '.join(reasons)}: Set- would leave that in place, so a new "
        f"{target.kind.label} replaces it (created first, then the old one is removed).",
        calls=(
            Call(f"New-{target.kind}", parameters),
            Call(f"Remove-{target.kind}", {"Identity": target.name}),
            Call(f"Set-{target.kind}", {"Identity": temporary, "Name": target.name}),
        ),
    )


def _plan_object(target: DesiredObject, current: Snapshot, aliases: Mapping[str, str]) -> Change:
    found = current.find(target.kind, target.name)
    if found is None:
        return _create(target)
    if target.kind is Kind.DISTRIBUTION_GROUP:
        return Change(
            Action.LEAVE,
            target,
            f"{target.purpose} Exists; its members are yours to manage in Exchange.",
        )
    reasons = replacement_reasons(target, found)
    if reasons:
        return _replace(target, found, reasons)
    differences = compare_object(target, found, aliases)
    if not differences:
        return Change(Action.LEAVE, target, f"{target.purpose} Exists with the required settings.")
    what = []
    for field in differences:
        setting = target.setting(field.name)
        if field.name == "Enabled" or (setting is not None and setting.role is Role.STATE):
            what.append("it is disabled")
        elif field.name == "RouteMessageOutboundConnector":
            what.append("it routes mail to another connector")
        elif setting is not None and setting.role is Role.RECORD:
            what.append("its record of the IP Allow List entries provisioning added changes")
        else:
            what.append(f"its {field.name} differs")
    return Change(
        Action.UPDATE,
        target,
        f"{target.purpose} Exists, but {', '.join(dict.fromkeys(what))}: updated in place.",
        differences,
        calls=update_calls(target, differences),
    )


def _allow_list_changes(
    target: DesiredObject, current: Snapshot, recorded: tuple[str, ...]
) -> list[Change]:
    wanted = target.value("IPAllowList")
    entries = wanted if isinstance(wanted, tuple) else ()
    missing = missing_allow_entries(target, current)
    stale = tuple(
        r
        for r in recorded
        if not any(_same_entry(r, e) for e in entries)
        and any(_same_entry(r, have) for have in current.ip_allow_list)
    )
    changes: list[Change] = []
    room = IP_ALLOW_LIST_LIMIT - len(current.ip_allow_list) + len(stale)
    if missing and len(missing) > room:
        return [
            Change(
                Action.BLOCKED,
                target,
                f"The list holds {len(current.ip_allow_list)} of {IP_ALLOW_LIST_LIMIT} entries: "
                f"{len(missing)} more do not fit.",
            )
        ]
    if stale:
        changes.append(
            Change(
                Action.REMOVE,
                target,
                "The configuration no longer lists these service addresses, and provisioning "
                "had added them: only they are removed.",
                entries=stale,
                calls=(
                    Call(
                        f"Set-{Kind.IP_ALLOW_LIST}",
                        {"Identity": "Default", "IPAllowList": {"Remove": list(stale)}},
                    ),
                ),
            )
        )
    if missing:
        changes.append(
            Change(
                Action.ADD,
                target,
                target.purpose,
                entries=missing,
                calls=(
                    Call(
                        f"Set-{Kind.IP_ALLOW_LIST}",
                        {"Identity": "Default", "IPAllowList": {"Add": list(missing)}},
                    ),
                ),
            )
        )
    if not changes:
        changes.append(
            Change(
                Action.LEAVE,
                target,
                f"{target.purpose} Every address of the service is on the list already.",
            )
        )
    return changes


def _validation(
    connector: DesiredObject, domains: tuple[str, ...], routed_by: list[str]
) -> Change | None:
    if not domains:
        return None
    return Change(
        Action.VALIDATE,
        connector,
        "Proves Exchange can deliver through this connector to the protection service before "
        "any rule routes mail to it: a smart host that does not answer stops the apply here, "
        f"before {' and '.join(f'“{r}”' for r in routed_by) or 'the rules'} route mail there.",
        calls=(
            Call(
                "Validate-OutboundConnector",
                {"Identity": connector.name, "Recipients": [f"postmaster@{domains[0]}"]},
            ),
        ),
    )


def plan(desired: DesiredConfiguration, current: Snapshot) -> Plan:
    """The ordered changes from ``current`` to ``desired`` (see the module docstring)."""
    aliases = current.aliases()
    recorded = recorded_entries(desired, current)
    allow_target = next((o for o in desired.objects if o.kind is Kind.IP_ALLOW_LIST), None)
    allow_changes = (
        _allow_list_changes(allow_target, current, recorded) if allow_target is not None else []
    )
    added = tuple(e for c in allow_changes if c.action is Action.ADD for e in c.entries)
    removed = tuple(e for c in allow_changes if c.action is Action.REMOVE for e in c.entries)
    wanted_entries = allow_target.value("IPAllowList") if allow_target is not None else ()
    kept = [
        e
        for e in (*recorded, *added)
        if not any(_same_entry(e, r) for r in removed)
        and any(
            _same_entry(e, w) for w in (wanted_entries if isinstance(wanted_entries, tuple) else ())
        )
    ]
    record_entries = tuple(dict.fromkeys(kept))

    changes: list[Change] = []
    for target in desired.objects:
        if target.kind is Kind.IP_ALLOW_LIST:
            continue
        record = (
            _record_text(target.purpose, record_entries)
            if any(s.role is Role.RECORD for s in target.settings)
            else None
        )
        changes.append(_plan_object(_with_record(target, record), current, aliases))

    # Validate each outbound connector that is new or changed, or that a changing rule routes to,
    # right before the first rule.
    acting = {c.name.casefold() for c in changes if c.acts}
    validations: list[Change] = []
    for connector in (o for o in desired.objects if o.kind is Kind.OUTBOUND_CONNECTOR):
        routed_by = [
            o.name
            for o in desired.objects
            if o.kind is Kind.TRANSPORT_RULE
            and str(o.value("RouteMessageOutboundConnector") or "").casefold()
            == connector.name.casefold()
        ]
        if connector.name.casefold() in acting or any(r.casefold() in acting for r in routed_by):
            validation = _validation(connector, desired.protected_domains, routed_by)
            if validation is not None:
                validations.append(validation)
    first_rule = next(
        (i for i, c in enumerate(changes) if c.kind is Kind.TRANSPORT_RULE), len(changes)
    )
    ordered = [*changes[:first_rule], *validations, *changes[first_rule:], *allow_changes]

    numbered: list[Change] = []
    step = 0
    for change in ordered:
        if change.acts:
            step += 1
            change = replace(change, step=step)
        numbered.append(change)
    return Plan(tuple(numbered))

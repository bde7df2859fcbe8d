"""``plan(desired, current) -> Plan``: the changes that bring the tenant to the desired state.

Pure: no I/O. A ``Plan`` is an ordered tuple of ``Change``, in the order of the desired objects,
which is the dependency order (groups, connectors, transport rules in priority order, allow lists
last). Each change is one of:

- ``CREATE``: the object is missing (every parameter of its ``New-`` cmdlet is listed);
- ``UPDATE``: the object exists with our name but some compared settings differ (exactly those
  fields, old and new value);
- ``ADD``: entries missing from a shared allow list (only additions, never removals);
- ``LEAVE``: nothing to do, with the reason;
- ``BLOCKED``: an update cannot make it right (see ``conflicts``); the pre-flight check reports
  it as blocking and ``apply`` refuses to start.

Only desired objects are ever planned, and every desired object is named with the configured
prefix: objects that do not carry it are never changed. The allow lists are Microsoft's shared,
tenant-wide lists: the plan only adds what is missing there.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass, replace
from enum import StrEnum
from typing import Any

from bot.steps.mailflow.desired import (
    IP_ALLOW_LIST_LIMIT,
    DesiredConfiguration,
    DesiredObject,
    Kind,
    Role,
)
from bot.steps.mailflow.snapshot import ExchangeObject, Snapshot, same

__all__ = [
    "FOREIGN_RULE_ACTIONS",
    "Action",
    "Change",
    "FieldChange",
    "Plan",
    "compare_object",
    "conflicts",
    "missing_allow_entries",
    "plan",
]


class Action(StrEnum):
    CREATE = "create"
    UPDATE = "update"
    ADD = "add"
    LEAVE = "leave"
    BLOCKED = "blocked"


#: Actions a rule carrying our name must not have: an update only writes the settings we own, so
#: mail would still be deleted, rejected, quarantined, redirected or copied elsewhere.
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
    step: int = 0  # 1-based position among the changes that act (0 for LEAVE/BLOCKED)

    @property
    def kind(self) -> Kind:
        return self.target.kind

    @property
    def name(self) -> str:
        return self.target.name

    @property
    def acts(self) -> bool:
        return self.action in (Action.CREATE, Action.UPDATE, Action.ADD)

    def describe(self, *, done: bool = False) -> str:
        """E.g. ``creating transport rule “TMCAS Inline Incoming Domain Transport Rule”``."""
        verbs = {
            Action.CREATE: ("creating", "created"),
            Action.UPDATE: ("updating", "updated"),
            Action.ADD: ("adding to", "added to"),
            Action.LEAVE: ("leaving", "left"),
            Action.BLOCKED: ("blocked:", "blocked:"),
        }
        verb = verbs[self.action][1 if done else 0]
        if self.kind is Kind.IP_ALLOW_LIST:
            if self.action is Action.ADD:
                count = len(self.entries)
                plural = "s" if count != 1 else ""
                verb = "added" if done else "adding"
                return (
                    f"{verb} {count} address range{plural} to the connection filter IP Allow List"
                )
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
    def settled(self) -> bool:
        """Nothing to create, update or add."""
        return not self.actionable


def conflicts(target: DesiredObject, current: ExchangeObject) -> tuple[str, ...]:
    """Why an existing object with our name cannot be made right by an update (empty: it can)."""
    found: list[str] = []
    for setting in target.settings:
        if setting.role is Role.FIXED and not same(setting, current.get(setting.name)):
            found.append(
                f"its {setting.name} is {current.get(setting.name)!s}, not {setting.value!s}"
            )
    if target.kind is Kind.TRANSPORT_RULE:
        for action in FOREIGN_RULE_ACTIONS:
            value = current.get(action)
            if value not in (None, False, "", [], "False", "false"):
                found.append(f"it also has the action {action}")
    return tuple(found)


def compare_object(
    target: DesiredObject, current: ExchangeObject, aliases: Mapping[str, str] | None = None
) -> tuple[FieldChange, ...]:
    """The compared settings of ``target`` that ``current`` does not have (old → new)."""
    return tuple(
        FieldChange(setting.name, current.get(setting.name), setting.value)
        for setting in target.compared
        if setting.role is not Role.FIXED and not same(setting, current.get(setting.name), aliases)
    )


def _covered(entry: str, current: tuple[str, ...]) -> bool:
    try:
        wanted = ipaddress.ip_network(entry, strict=False)
    except ValueError:
        return entry.casefold() in (c.casefold() for c in current)
    for item in current:
        text = item.strip()
        try:
            if "-" in text:
                first, last = (ipaddress.ip_address(p.strip()) for p in text.split("-"))
                if (
                    first.version == wanted.version
                    and first <= wanted.network_address  # type: ignore[operator]
                    and wanted.broadcast_address <= last  # type: ignore[operator]
                ):
                    return True
                continue
            have = ipaddress.ip_network(text, strict=False)
        except ValueError:
            continue
        if have.version == wanted.version and wanted.subnet_of(have):  # type: ignore[arg-type]
            return True
    return False


def missing_allow_entries(target: DesiredObject, current: Snapshot) -> tuple[str, ...]:
    """Desired IP Allow List entries that no current entry covers."""
    wanted = target.value("IPAllowList")
    entries = wanted if isinstance(wanted, tuple) else ()
    return tuple(e for e in entries if not _covered(e, current.ip_allow_list))


def _create(target: DesiredObject, *, naming: str) -> Change:
    """Create ``target`` with its parameters (all but ``naming``, which names it)."""
    return Change(
        Action.CREATE,
        target,
        target.purpose,
        tuple(
            FieldChange(name, None, value)
            for name, value in target.new_parameters().items()
            if name != naming
        ),
    )


def _plan_object(target: DesiredObject, current: Snapshot, aliases: Mapping[str, str]) -> Change:
    found = current.find(target.kind, target.name)
    if found is None:
        return _create(target, naming="Name")
    problems = conflicts(target, found)
    if problems:
        return Change(
            Action.BLOCKED,
            target,
            f"An existing {target.kind.label} has this name but {'; '.join(problems)}: an update "
            "cannot make it right. Rename or remove it, then run provisioning again.",
        )
    if target.kind is Kind.DISTRIBUTION_GROUP:
        return Change(Action.LEAVE, target, "Exists; its members are yours to manage in Exchange.")
    differences = compare_object(target, found, aliases)
    if not differences:
        return Change(Action.LEAVE, target, "Exists with the required settings.")
    names = ", ".join(d.name for d in differences)
    return Change(
        Action.UPDATE,
        target,
        f"Exists, but {names} differ{'s' if len(differences) == 1 else ''} from what the "
        "protection service needs.",
        differences,
    )


def _plan_ip_allow_list(target: DesiredObject, current: Snapshot) -> Change:
    wanted = target.value("IPAllowList")
    if not wanted:
        return Change(
            Action.LEAVE,
            target,
            "The service has no IPv4 ranges that Exchange's IP Allow List accepts.",
        )
    missing = missing_allow_entries(target, current)
    if not missing:
        return Change(Action.LEAVE, target, "Every address of the service is on the list already.")
    room = IP_ALLOW_LIST_LIMIT - len(current.ip_allow_list)
    if len(missing) > room:
        return Change(
            Action.BLOCKED,
            target,
            f"The list holds {len(current.ip_allow_list)} of {IP_ALLOW_LIST_LIMIT} entries: "
            f"{len(missing)} more do not fit.",
        )
    old = tuple(current.ip_allow_list)
    return Change(
        Action.ADD,
        target,
        target.purpose,
        (FieldChange("IPAllowList", old, (*old, *missing)),),
        entries=missing,
    )


def _plan_spoof_item(target: DesiredObject, current: Snapshot) -> Change:
    user = str(target.value("SpoofedUser"))
    infrastructure = str(target.value("SendingInfrastructure"))
    found = next((i for i in current.spoof_items if i.matches(user, infrastructure)), None)
    if found is None:
        return _create(target, naming="Identity")
    if found.action.casefold() != "allow":
        return Change(
            Action.BLOCKED,
            target,
            f"The Tenant Allow/Block List has an entry for {user} via {infrastructure} with "
            f"action {found.action}: change it to Allow (it is not provisioning's to change).",
        )
    return Change(Action.LEAVE, target, "The Tenant Allow/Block List allows it already.")


def plan(desired: DesiredConfiguration, current: Snapshot) -> Plan:
    """The ordered changes from ``current`` to ``desired`` (see the module docstring)."""
    aliases = current.aliases()
    changes: list[Change] = []
    step = 0
    for target in desired.objects:
        if target.kind is Kind.IP_ALLOW_LIST:
            change = _plan_ip_allow_list(target, current)
        elif target.kind is Kind.SPOOF_ITEM:
            change = _plan_spoof_item(target, current)
        else:
            change = _plan_object(target, current, aliases)
        if change.acts:
            step += 1
            change = replace(change, step=step)
        changes.append(change)
    return Plan(tuple(changes))

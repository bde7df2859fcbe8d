"""A typed, read-only snapshot of the tenant's mail-flow objects, and how echoes are compared.

``bot.steps.mailflow.apply.read_current`` fills it from the ``Get-`` cmdlets; ``plan`` and
``preflight`` only read it. Exchange echoes values loosely (``"True"`` or ``true``, one string or
a list, names in any case, a referenced group by name, alias, address or GUID), so every comparison
goes through
``normalise`` with the setting's ``Compare`` mode.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from bot.steps.mailflow.desired import Compare, Kind, Setting

__all__ = [
    "AcceptedDomain",
    "ExchangeObject",
    "Snapshot",
    "SpoofItem",
    "display",
    "normalise",
    "same",
]


@dataclass(frozen=True)
class ExchangeObject:
    """One connector, transport rule or group as Exchange echoed it (``properties``)."""

    kind: Kind
    name: str
    properties: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def from_echo(cls, kind: Kind, echo: Mapping[str, Any]) -> ExchangeObject:
        name = str(echo.get("Name") or echo.get("DisplayName") or echo.get("Identity") or "")
        return cls(kind, name, MappingProxyType(dict(echo)))

    def get(self, key: str) -> Any:
        return self.properties.get(key)

    @property
    def enabled(self) -> bool:
        if self.kind is Kind.TRANSPORT_RULE:
            state = self.get("State")
            return state is None or str(state).casefold() == "enabled"
        return _bool(self.get("Enabled")) is not False


@dataclass(frozen=True)
class AcceptedDomain:
    domain: str
    domain_type: str = "Authoritative"
    default: bool = False


@dataclass(frozen=True)
class SpoofItem:
    spoofed_user: str
    sending_infrastructure: str
    spoof_type: str = "External"
    action: str = "Allow"
    identity: str = ""

    def matches(self, spoofed_user: str, sending_infrastructure: str) -> bool:
        return (
            self.spoofed_user.casefold() == spoofed_user.casefold()
            and self.sending_infrastructure.casefold() == sending_infrastructure.casefold()
        )


@dataclass(frozen=True)
class Snapshot:
    """What the tenant holds now (only what provisioning reads)."""

    accepted_domains: tuple[AcceptedDomain, ...] = ()
    objects: tuple[ExchangeObject, ...] = ()
    ip_allow_list: tuple[str, ...] = ()
    spoof_items: tuple[SpoofItem, ...] = ()

    def of_kind(self, kind: Kind) -> tuple[ExchangeObject, ...]:
        return tuple(o for o in self.objects if o.kind is kind)

    def find(self, kind: Kind, name: str) -> ExchangeObject | None:
        key = name.strip().casefold()
        return next(
            (o for o in self.objects if o.kind is kind and o.name.strip().casefold() == key), None
        )

    def with_object(self, found: ExchangeObject) -> Snapshot:
        """This snapshot with ``found`` added or replacing the object of the same kind and name."""
        kept = tuple(
            o
            for o in self.objects
            if not (o.kind is found.kind and o.name.casefold() == found.name.casefold())
        )
        return Snapshot(self.accepted_domains, (*kept, found), self.ip_allow_list, self.spoof_items)

    def aliases(self) -> dict[str, str]:
        """Every way Exchange may echo a group or connector (alias, address, GUID…) → its name."""
        found: dict[str, str] = {}
        for obj in self.objects:
            if obj.kind is Kind.TRANSPORT_RULE:
                continue
            for key in (
                "Identity",
                "Alias",
                "PrimarySmtpAddress",
                "DisplayName",
                "DistinguishedName",
                "Guid",
                "ExternalDirectoryObjectId",
            ):
                value = obj.get(key)
                if isinstance(value, str) and value.strip():
                    found.setdefault(value.strip().casefold(), obj.name.casefold())
            found[obj.name.casefold()] = obj.name.casefold()
        return found


def _bool(value: Any) -> bool | None:
    if isinstance(value, list) and len(value) == 1:
        value = value[0]
    if isinstance(value, bool):
        return value
    if isinstance(value, int | float):
        return bool(value)
    if isinstance(value, str):
        text = value.strip().casefold().lstrip("$")
        if text in ("true", "1", "yes"):
            return True
        if text in ("false", "0", "no"):
            return False
    return None


def _items(value: Any) -> list[Any]:
    if value is None:
        return []
    if isinstance(value, list | tuple | set | frozenset):
        return [v for v in value if v is not None and str(v).strip()]
    if isinstance(value, str) and not value.strip():
        return []
    return [value]


def _network(value: Any) -> object:
    text = str(value).strip()
    try:
        return ipaddress.ip_network(text, strict=False)
    except ValueError:
        try:
            # Exchange also echoes address ranges as "first-last".
            first, last = (ipaddress.ip_address(part.strip()) for part in text.split("-"))
            nets = tuple(ipaddress.summarize_address_range(first, last))
            return nets[0] if len(nets) == 1 else nets
        except ValueError:
            return text.casefold()


def normalise(mode: Compare, value: Any, aliases: Mapping[str, str] | None = None) -> object:
    """A comparable form of ``value`` (desired or echoed) under ``mode``."""
    names = aliases or {}
    if mode is Compare.BOOL:
        # An unset switch is $false in Exchange (an echo without the property means false).
        return False if value is None or value == [] else _bool(value)
    if mode is Compare.INT:
        if isinstance(value, list) and len(value) == 1:
            value = value[0]
        try:
            return int(str(value).strip())
        except ValueError:
            return None
    if mode is Compare.TEXT:
        items = _items(value)
        return str(items[0]).strip().casefold() if len(items) == 1 else None
    if mode is Compare.REFERENCE:
        items = _items(value)
        if len(items) != 1:
            return None
        key = str(items[0]).strip().casefold()
        return names.get(key, key)
    if mode is Compare.REFERENCE_SET:
        keys = (str(v).strip().casefold() for v in _items(value))
        return frozenset(names.get(k, k) for k in keys)
    if mode is Compare.IP_SET:
        return frozenset(_network(v) for v in _items(value))
    return frozenset(str(v).strip().casefold() for v in _items(value))


def same(setting: Setting, echoed: Any, aliases: Mapping[str, str] | None = None) -> bool:
    """Whether Exchange's ``echoed`` value already is ``setting``'s desired value."""
    return normalise(setting.compare, setting.value, aliases) == normalise(
        setting.compare, echoed, aliases
    )


def display(value: Any) -> str:
    """A short readable form of a desired or echoed value (for plans and messages)."""
    if value is None:
        return "(not set)"
    if isinstance(value, bool):
        return "$true" if value else "$false"
    if isinstance(value, list | tuple | set | frozenset):
        items = [str(v) for v in value]
        return ", ".join(items) if items else "(empty)"
    text = str(value)
    return text if text else "(empty)"

"""Microsoft's cmdlet reference (``../shared/msref/exchange.json``) as checks on a cmdlet call.

The sandbox Exchange refuses what real Exchange refuses (``Severity.REFUSED``: an unknown
parameter, one that does not apply to Exchange Online, a missing mandatory one, a value outside
what the reference documents); the tests also fail on settings the reference says have no effect
on that object (``NO_EFFECT``: ``RequireTls`` on an OnPremises connector, ``SenderAddressLocation``
without a sender condition…) or that Microsoft asks not to use (``DISCOURAGED``).

The reference is read at run time from the directory beside the repository (as CI provides it),
never copied into it. ``check`` needs the object as it will be after the call (``state``: the
current object merged with the parameters) because several rules depend on other settings.
"""

from __future__ import annotations

import ipaddress
import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from functools import cache
from pathlib import Path
from typing import Any

__all__ = ["DEFAULT_PATH", "ExchangeReference", "Finding", "Severity", "load_reference"]

DEFAULT_PATH = Path(__file__).resolve().parents[2].parent / "shared" / "msref" / "exchange.json"

_MAX_LENGTH = re.compile(r"maximum length is (\d+) characters")
_DISCOURAGED = "recommend that you don't use this parameter"
_DNS_LABEL = re.compile(r"^[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?$")
_COMMON = {"Confirm", "WhatIf"}


class Severity(StrEnum):
    REFUSED = "refused"  # Exchange answers with an error
    NO_EFFECT = "no-effect"  # accepted, but the reference says it does nothing there
    DISCOURAGED = "discouraged"  # Microsoft asks not to use it


@dataclass(frozen=True)
class Finding:
    cmdlet: str
    parameter: str
    severity: Severity
    message: str
    quote: str = ""

    def __str__(self) -> str:
        quote = f' ("{self.quote}")' if self.quote else ""
        return f"{self.cmdlet} -{self.parameter}: {self.severity}: {self.message}{quote}"


def _items(value: Any) -> list[Any]:
    if value is None:
        return []
    if isinstance(value, dict):
        return [v for key in ("Add", "Remove") for v in (value.get(key) or [])]
    if isinstance(value, list | tuple):
        return list(value)
    return [value]


def _is_set(value: Any) -> bool:
    if isinstance(value, str):
        return value.strip().casefold() not in ("", "false", "$false")
    return value not in (None, False, [], (), {})


def _text(value: Any) -> str:
    return str(value).strip().casefold()


def _domain(value: str) -> bool:
    return len(value) <= 253 and all(_DNS_LABEL.match(label) for label in value.split("."))


def _network(text: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network | None:
    try:
        return ipaddress.ip_network(text.strip(), strict=False)
    except ValueError:
        return None


def _range(text: str) -> tuple[Any, Any] | None:
    if "-" not in text:
        return None
    try:
        first, last = (ipaddress.ip_address(p.strip()) for p in text.split("-", 1))
    except ValueError:
        return None
    return first, last


class ExchangeReference:
    def __init__(self, data: Mapping[str, Any]) -> None:
        self._data = data
        self._sets: list[list[str]] = data["applicability_sets"]
        self._index: Mapping[str, int] = data["cmdlet_index"]
        self._cmdlets: Mapping[str, Any] = data["cmdlets"]
        self._constraints: dict[tuple[str, str], list[Mapping[str, Any]]] = {}
        for rule in data["constraints"]:
            self._constraints.setdefault((rule["cmdlet"], rule["param"]), []).append(rule)
        self.extra_rules: dict[str, Mapping[str, Any]] = {r["id"]: r for r in data["extra_rules"]}

    def exists_in_exchange_online(self, cmdlet: str) -> bool:
        detail = self._cmdlets.get(cmdlet)
        if detail is not None:
            return bool(detail.get("eo"))
        index = self._index.get(cmdlet)
        return index is not None and "Exchange Online" in self._sets[index]

    def parameters(self, cmdlet: str) -> Mapping[str, Any] | None:
        detail = self._cmdlets.get(cmdlet)
        return None if detail is None else detail.get("parameters", {})

    def check(
        self,
        cmdlet: str,
        parameters: Mapping[str, Any],
        state: Mapping[str, Any] | None = None,
        *,
        rule_count: int | None = None,
        accepted_domains: Iterable[str] = (),
    ) -> list[Finding]:
        """Every finding for one call; ``state`` is the object after the call (``parameters``
        when omitted)."""
        after = dict(state if state is not None else parameters)
        if not self.exists_in_exchange_online(cmdlet):
            return [
                Finding(
                    cmdlet,
                    "",
                    Severity.REFUSED,
                    f"The term '{cmdlet}' is not recognized as a cmdlet in Exchange Online.",
                )
            ]
        documented = self.parameters(cmdlet)
        if documented is None:
            return []  # the extract holds no parameter detail for this cmdlet
        findings: list[Finding] = []
        for name, spec in documented.items():
            if spec.get("required") == "True" and spec.get("eo") and name not in parameters:
                findings.append(
                    Finding(
                        cmdlet,
                        name,
                        Severity.REFUSED,
                        "Cannot process command because of one or more missing mandatory "
                        f"parameters: {name}.",
                    )
                )
        for name, value in parameters.items():
            spec = documented.get(name)
            if spec is None or not spec.get("eo"):
                findings.append(
                    Finding(
                        cmdlet,
                        name,
                        Severity.REFUSED,
                        f"A parameter cannot be found that matches parameter name '{name}'"
                        + ("" if spec is None else " (it does not apply to Exchange Online)."),
                    )
                )
                continue
            findings += self._check_value(cmdlet, name, spec, value)
            for rule in self._constraints.get((cmdlet, name), ()):
                problem = self._constraint(rule, value, after, rule_count, accepted_domains)
                if problem is not None:
                    severity, message = problem
                    findings.append(Finding(cmdlet, name, severity, message, rule["quote"]))
        return findings

    def _check_value(
        self, cmdlet: str, name: str, spec: Mapping[str, Any], value: Any
    ) -> list[Finding]:
        findings = []
        notes = " ".join(spec.get("notes", ()))
        values = [str(v) for v in spec.get("values", ())]
        onprem = {v.casefold() for v in spec.get("values_onprem_only", ())}
        if value is not None and values:
            if set(values) <= {"$true", "$false"}:
                if not isinstance(value, bool):
                    findings.append(
                        Finding(cmdlet, name, Severity.REFUSED, f"{value!r} is not $true/$false.")
                    )
            else:
                allowed = {v.casefold() for v in values} - onprem
                for item in _items(value):
                    if _text(item) not in allowed:
                        findings.append(
                            Finding(
                                cmdlet,
                                name,
                                Severity.REFUSED,
                                f"Cannot convert value {item!r}: valid values in Exchange Online "
                                f"are {', '.join(v for v in values if v.casefold() in allowed)}.",
                            )
                        )
        limit = _MAX_LENGTH.search(notes)
        if limit and isinstance(value, str) and len(value) > int(limit.group(1)):
            findings.append(
                Finding(
                    cmdlet,
                    name,
                    Severity.REFUSED,
                    f"The length of the value is {len(value)}: at most {limit.group(1)}.",
                    limit.group(0),
                )
            )
        if _DISCOURAGED in notes and value is not None:
            findings.append(
                Finding(
                    cmdlet,
                    name,
                    Severity.DISCOURAGED,
                    "Microsoft recommends not using this parameter unless directed to.",
                    "We recommend that you don't use this parameter unless you are directed to "
                    "do so by Microsoft Customer Service and Support",
                )
            )
        return findings

    def _constraint(
        self,
        rule: Mapping[str, Any],
        value: Any,
        after: Mapping[str, Any],
        rule_count: int | None,
        accepted_domains: Iterable[str],
    ) -> tuple[Severity, str] | None:
        kind = rule["kind"]
        args = rule.get("args", {})
        items = [str(i) for i in _items(value)]
        refused = Severity.REFUSED
        connector_type = _text(after.get("ConnectorType") or "")
        if kind == "ipv4_cidr":
            for item in items:
                if _range(item):
                    continue
                network = _network(item)
                if network is None:
                    return refused, f"{item} is not an IP address, range or CIDR."
                if network.version == 4 and network.prefixlen < args["min_prefix"]:
                    return refused, f"{item}: the mask must be /{args['min_prefix']} to /32."
        elif kind == "no_ipv6":
            for item in items:
                network = _network(item)
                bounds = _range(item)
                if (network and network.version == 6) or (bounds and bounds[0].version == 6):
                    return refused, f"{item} is IPv6."
        elif kind == "range_max":
            for item in items:
                bounds = _range(item)
                if bounds and int(bounds[1]) - int(bounds[0]) + 1 > args["max"]:
                    return refused, f"{item} holds more than {args['max']} addresses."
        elif kind == "ip_or_range_or_cidr":
            for item in items:
                if not (_range(item) or _network(item)):
                    return refused, f"{item} is not an IP address, range or CIDR."
        elif kind == "smtp_domain_wildcard_prefix":
            for item in items:
                domain = item[2:] if item.startswith("*.") else item
                if item != "*" and ("*" in domain or not _domain(domain)):
                    return refused, f"{item} is not an SMTP domain (a wildcard only as *.domain)."
        elif kind == "smart_host":
            for item in items:
                if not (_network(item) or ("." in item and _domain(item))):
                    return refused, f"{item} is not an FQDN, IP address or CIDR range."
        elif kind == "needs_smarthosts_when_false":
            if value is False and not _items(after.get("SmartHosts")):
                return refused, "UseMXRecord $false needs SmartHosts."
        elif kind == "partner_needs_flag":
            if items and connector_type == "partner" and after.get(args["flag"]) is not True:
                return (
                    Severity.NO_EFFECT,
                    f"no effect on a Partner connector without {args['flag']}.",
                )
        elif kind == "needs_true":
            if _is_set(value) and after.get(args["flag"]) is False:
                return Severity.NO_EFFECT, f"no effect while {args['flag']} is $false."
        elif kind == "partner_only":
            if value is not None and connector_type != "partner":
                return (
                    Severity.NO_EFFECT,
                    f"no effect on a {connector_type or 'default'} connector.",
                )
        elif kind == "onpremises_only":
            if _is_set(value) and connector_type != "onpremises":
                return refused, "requires an OnPremises connector."
        elif kind == "needs_value":
            if _is_set(value) and not _is_set(after.get(args["other"])):
                return Severity.NO_EFFECT, f"no effect without {args['other']}."
        elif kind == "needs_value_eq":
            if _is_set(value) and _text(after.get(args["other"]) or "") != _text(args["value"]):
                return Severity.NO_EFFECT, f"no effect unless {args['other']} is {args['value']}."
        elif kind == "treat_internal":
            if value is True and after.get("CloudServicesMailEnabled") is True:
                return refused, "can't be $true with CloudServicesMailEnabled $true."
        elif kind == "int_range":
            try:
                number = int(value)
            except (TypeError, ValueError):
                return refused, f"{value!r} is not an integer."
            if not args["min"] <= number <= args["max"] or isinstance(value, bool):
                return refused, f"{value} is outside {args['min']}…{args['max']}."
        elif kind == "rule_priority":
            if rule_count is not None and isinstance(value, int):
                top = rule_count if rule["cmdlet"].startswith("New-") else rule_count - 1
                if not 0 <= value <= max(top, 0):
                    return refused, f"priority {value}: valid values are 0 through {top}."
        elif kind == "max_length":
            if isinstance(value, str) and len(value) > args["max"]:
                return refused, f"longer than {args['max']} characters."
        elif kind == "no_edge_spaces":
            if any(item != item.strip() for item in items):
                return refused, "leading or trailing spaces."
        elif kind == "regex":
            for item in items:
                try:
                    re.compile(item)
                except re.error:
                    return refused, f"{item!r} is not a regular expression."
        elif kind == "envelope_scope":
            allowed = {n for pair in re.findall(r"- (\w+) and (\w+)", rule["quote"]) for n in pair}
            if _text(value or "header") != "header" and not any(
                _is_set(after.get(n)) for n in allowed
            ):
                return Severity.NO_EFFECT, "no sender condition searches the envelope."
        elif kind == "multivalued_add":
            if isinstance(value, dict) and not set(value) <= {"Add", "Remove"}:
                return refused, "use @{Add=…} or @{Remove=…}."
        elif kind == "sending_infrastructure":
            for item in items:
                network = _network(item)
                if not (("." in item and _domain(item)) or (network and network.prefixlen == 24)):
                    return refused, f"{item} is neither a domain nor a /24."
        elif kind == "spoofed_user":
            own = {_text(d) for d in accepted_domains}
            if any("@" not in item and _text(item) in own for item in items):
                return refused, "for the organisation's own domains, a full email address."
        elif kind == "literal" and str(value) != args["value"]:
            return refused, f"must be {args['value']}."
        return None


@cache
def load_reference(path: Path = DEFAULT_PATH) -> ExchangeReference | None:
    """The reference at ``path`` (``None`` when it is not there, e.g. an installed demo)."""
    if not path.is_file():
        return None
    return ExchangeReference(json.loads(path.read_text()))

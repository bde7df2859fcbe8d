"""Reading the tenant and applying the plan through the Exchange admin API.

``read_current`` runs the ``Get-`` cmdlets and returns a ``Snapshot``. ``apply`` reads, runs the
pre-flight checks (refusing with ``ApplyBlocked`` on a blocking finding: nothing is changed),
plans, and carries out the changes in plan order, calling ``on_progress`` before and after each:

- before the n-th change: ``on_progress(n - 1, total, change)``; after it: ``on_progress(n, total,
  change)`` (``change.step`` is n, so a renderer can tell "creating" from "created");
- ``CREATE`` runs ``New-<Kind>``; if Exchange answers that the object already exists (a previous
  run created it and crashed, or someone else just did), the object is read back, compared, and
  updated with ``Set-`` if it differs: nothing is ever created twice;
- ``UPDATE`` runs ``Set-<Kind>`` with exactly the differing fields (and ``Enable-TransportRule``
  when a rule is disabled); if the object vanished since the read, it is created;
- ``ADD`` adds only the missing entries to the IP Allow List (``@{Add=…}``, so entries someone
  else adds meanwhile are kept); the spoof entry is created, an existing one counts as present.

Afterwards the tenant is read again and re-planned: anything still to do raises ``ApplyFailed``
(code ``NotConverged``). Any failure raises ``ApplyFailed`` with the change, Exchange's error code
and message, and the changes already applied. Re-running ``apply`` after any failure or crash is
safe: it starts from what the tenant holds then.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from bot.microsoft.errors import AlreadyExists, MicrosoftError, NotFound, ServiceError
from bot.steps.mailflow.desired import DesiredConfiguration, DesiredObject, Kind, Role, json_value
from bot.steps.mailflow.plan import (
    Action,
    Change,
    FieldChange,
    Plan,
    compare_object,
    conflicts,
    plan,
)
from bot.steps.mailflow.preflight import Finding, blocking, preflight
from bot.steps.mailflow.snapshot import AcceptedDomain, ExchangeObject, Snapshot, SpoofItem

__all__ = [
    "ApplyBlocked",
    "ApplyFailed",
    "ApplyResult",
    "Exchange",
    "ProgressCallback",
    "apply",
    "read_current",
]

log = logging.getLogger(__name__)

_NAMED_KINDS = (
    Kind.OUTBOUND_CONNECTOR,
    Kind.INBOUND_CONNECTOR,
    Kind.TRANSPORT_RULE,
    Kind.DISTRIBUTION_GROUP,
)


class Exchange(Protocol):
    """What ``apply`` needs of ``bot.microsoft.exchange.ExchangeClient``."""

    async def invoke(
        self, cmdlet: str, parameters: Mapping[str, Any] | None = None
    ) -> list[dict[str, Any]]: ...


ProgressCallback = Callable[[int, int, Change], Awaitable[None]]


class ApplyBlocked(Exception):
    """Pre-flight found blocking problems; nothing was changed. ``findings`` lists all checks."""

    def __init__(self, findings: Sequence[Finding]) -> None:
        self.findings = tuple(findings)
        self.blocking = blocking(findings)
        titles = "; ".join(f.title for f in self.blocking)
        super().__init__(f"provisioning is blocked: {titles}")


class ApplyFailed(Exception):
    """A change failed. ``change`` is ``None`` when reading the tenant failed.

    ``code`` is Exchange's error code (``Unavailable`` when Microsoft could not be reached,
    ``NotConverged`` when Exchange did not keep a change), ``message`` its text, ``applied`` the
    changes that were made before the failure (in order).
    """

    def __init__(
        self,
        change: Change | None,
        code: str,
        message: str,
        applied: Sequence[Change],
    ) -> None:
        self.change = change
        self.code = code
        self.message = message
        self.applied = tuple(applied)
        what = change.describe() if change else "reading the tenant"
        super().__init__(f"{what} failed: {code}: {message}")


@dataclass(frozen=True)
class ApplyResult:
    """What ``apply`` did: ``plan`` as made at the start, the ``applied`` changes, the
    pre-flight ``findings`` (warnings included), and the tenant as read at the end."""

    plan: Plan
    applied: tuple[Change, ...]
    findings: tuple[Finding, ...]
    current: Snapshot

    @property
    def created(self) -> tuple[Change, ...]:
        return tuple(c for c in self.applied if c.action in (Action.CREATE, Action.ADD))

    @property
    def updated(self) -> tuple[Change, ...]:
        return tuple(c for c in self.applied if c.action is Action.UPDATE)


# -- reading -------------------------------------------------------------------------------------


def _quote(value: str) -> str:
    return value.replace("'", "''")


async def read_current(exchange: Exchange, prefix: str | None = None) -> Snapshot:
    """The tenant's accepted domains, connectors, transport rules, allow lists and (with
    ``prefix``) our distribution groups, read with ``Get-`` cmdlets."""
    group_parameters: dict[str, Any] = {"ResultSize": "Unlimited"}
    if prefix:
        group_parameters["Filter"] = f"Name -like '{_quote(prefix.strip())}*'"
    (
        domains,
        outbound,
        inbound,
        rules,
        groups,
        policies,
        spoof,
    ) = await asyncio.gather(
        exchange.invoke("Get-AcceptedDomain"),
        exchange.invoke("Get-OutboundConnector"),
        exchange.invoke("Get-InboundConnector"),
        exchange.invoke("Get-TransportRule", {"ResultSize": "Unlimited"}),
        exchange.invoke("Get-DistributionGroup", group_parameters),
        exchange.invoke("Get-HostedConnectionFilterPolicy", {"Identity": "Default"}),
        exchange.invoke("Get-TenantAllowBlockListSpoofItems", {"Identity": "Default"}),
    )
    objects: list[ExchangeObject] = []
    for kind, echoed in (
        (Kind.OUTBOUND_CONNECTOR, outbound),
        (Kind.INBOUND_CONNECTOR, inbound),
        (Kind.TRANSPORT_RULE, rules),
        (Kind.DISTRIBUTION_GROUP, groups),
    ):
        for item in echoed:
            found = ExchangeObject.from_echo(kind, item)
            # Get-DistributionGroup -Filter keeps only ours on Exchange; filter again regardless.
            if (
                kind is Kind.DISTRIBUTION_GROUP
                and prefix
                and not found.name.casefold().startswith(prefix.strip().casefold())
            ):
                continue
            objects.append(found)
    allow: list[str] = []
    for policy in policies:
        listed = policy.get("IPAllowList") or []
        allow.extend(str(i) for i in (listed if isinstance(listed, list) else [listed]))
    return Snapshot(
        accepted_domains=tuple(
            AcceptedDomain(
                domain=str(d.get("DomainName") or d.get("Name") or ""),
                domain_type=str(d.get("DomainType") or ""),
                default=d.get("Default") is True,
            )
            for d in domains
        ),
        objects=tuple(objects),
        ip_allow_list=tuple(allow),
        spoof_items=tuple(
            SpoofItem(
                spoofed_user=str(s.get("SpoofedUser") or ""),
                sending_infrastructure=str(s.get("SendingInfrastructure") or ""),
                spoof_type=str(s.get("SpoofType") or ""),
                action=str(s.get("Action") or ""),
                identity=str(s.get("Identity") or ""),
            )
            for s in spoof
        ),
    )


# -- applying ------------------------------------------------------------------------------------


class _Conflict(Exception):
    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


async def _update(exchange: Exchange, target: DesiredObject, fields: Sequence[FieldChange]) -> None:
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
    if parameters:
        try:
            await exchange.invoke(f"Set-{target.kind}", {"Identity": target.name, **parameters})
        except NotFound:
            # Removed since we read it: create it instead (New- sets everything, enabled).
            await _create(exchange, target, Snapshot())
            return
    if enable:
        await exchange.invoke(f"Enable-{target.kind}", {"Identity": target.name})


async def _create(exchange: Exchange, target: DesiredObject, current: Snapshot) -> None:
    try:
        await exchange.invoke(f"New-{target.kind}", target.new_parameters())
    except AlreadyExists:
        if target.kind is Kind.SPOOF_ITEM:
            return  # the same domain pair is there already: that is all we need
        echoed = await exchange.invoke(f"Get-{target.kind}", {"Identity": target.name})
        if not echoed:
            raise
        found = ExchangeObject.from_echo(target.kind, echoed[0])
        log.info("%s %r exists already: comparing instead", target.kind, target.name)
        problems = conflicts(target, found)
        if problems:
            raise _Conflict(
                f"An existing {target.kind.label} has this name but {'; '.join(problems)}."
            ) from None
        if target.kind is Kind.DISTRIBUTION_GROUP:
            return
        differences = compare_object(target, found, current.with_object(found).aliases())
        if differences:
            await _update(exchange, target, differences)


async def _execute(exchange: Exchange, change: Change, current: Snapshot) -> None:
    target = change.target
    if change.action is Action.ADD:
        await exchange.invoke(
            f"Set-{Kind.IP_ALLOW_LIST}",
            {"Identity": "Default", "IPAllowList": {"Add": list(change.entries)}},
        )
    elif change.action is Action.CREATE:
        await _create(exchange, target, current)
    elif change.action is Action.UPDATE:
        await _update(exchange, target, change.fields)


def _failure(
    change: Change | None, error: MicrosoftError | _Conflict, applied: Sequence[Change]
) -> ApplyFailed:
    if isinstance(error, ServiceError):
        return ApplyFailed(change, error.code, error.message, applied)
    if isinstance(error, _Conflict):
        return ApplyFailed(change, "Conflict", error.message, applied)
    return ApplyFailed(change, "Unavailable", str(error), applied)


async def _noop(done: int, total: int, change: Change) -> None:
    return None


async def apply(
    exchange: Exchange,
    desired: DesiredConfiguration,
    *,
    on_progress: ProgressCallback | None = None,
) -> ApplyResult:
    """Bring the tenant to ``desired`` (see the module docstring); safe to re-run."""
    progress = on_progress or _noop
    try:
        current = await read_current(exchange, desired.prefix)
    except MicrosoftError as error:
        raise _failure(None, error, ()) from error
    findings = preflight(desired, current)
    if blocking(findings):
        raise ApplyBlocked(findings)
    planned = plan(desired, current)
    todo = planned.actionable
    applied: list[Change] = []
    for change in todo:
        await progress(len(applied), len(todo), change)
        try:
            await _execute(exchange, change, current)
        except (MicrosoftError, _Conflict) as error:
            log.warning("Exchange change failed: %s (%s)", change.describe(), error)
            raise _failure(change, error, applied) from error
        applied.append(change)
        await progress(len(applied), len(todo), change)
    try:
        after = await read_current(exchange, desired.prefix)
    except MicrosoftError as error:
        raise _failure(None, error, applied) from error
    remaining = plan(desired, after)
    if not remaining.settled or remaining.blocked:
        left = (remaining.actionable or remaining.blocked)[0]
        raise ApplyFailed(
            left,
            "NotConverged",
            f"Exchange did not keep the change: {left.reason}",
            applied,
        )
    return ApplyResult(planned, tuple(applied), findings, after)

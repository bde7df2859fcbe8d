"""Reading the tenant and applying the plan through the Exchange admin API.

``read_current`` runs the ``Get-`` cmdlets and returns a ``Snapshot``. ``apply`` reads, runs the
pre-flight checks (refusing with ``ApplyBlocked`` on a blocking finding: nothing is changed),
plans, and carries out the changes in plan order, calling ``on_progress`` before and after each:

- before the n-th change: ``on_progress(n - 1, total, change)``; after it: ``on_progress(n, total,
  change)`` (``change.step`` is n, so a renderer can tell "creating" from "created");
- each change's ``calls`` (``plan.Change.calls``) are what is sent, in order;
- ``CREATE``: if Exchange answers that the object already exists (a previous run created it and
  crashed, or someone else just did), the object is read back, compared, and updated with
  ``Set-`` if it differs: nothing is ever created twice;
- ``UPDATE``: if the object vanished since the read, it is created;
- ``REPLACE``: new object under a temporary name, old one removed, new one renamed; a temporary
  object left by a crash is removed and made again;
- ``VALIDATE``: ``Validate-OutboundConnector``; a failed validation stops the apply
  (``ValidationFailed``) before any rule routes mail to the connector;
- ``ADD``/``REMOVE``: ``@{Add=…}``/``@{Remove=…}`` on the IP Allow List, so entries someone else
  adds meanwhile are kept.

Afterwards the tenant is read again and re-planned: anything still to do raises ``ApplyFailed``
(code ``NotConverged``). Any failure raises ``ApplyFailed`` with the change, Exchange's error code
and message, and the changes already applied. Re-running ``apply`` after any failure or crash is
safe: it starts from what the tenant holds then.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from bot.microsoft.errors import AlreadyExists, MicrosoftError, NotFound, ServiceError
from bot.steps.mailflow.desired import DesiredConfiguration, DesiredObject, Kind
from bot.steps.mailflow.plan import (
    Action,
    Call,
    Change,
    Plan,
    compare_object,
    plan,
    replacement_reasons,
    update_calls,
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
    def __init__(self, message: str, code: str = "Conflict") -> None:
        super().__init__(message)
        self.message = message
        self.code = code


async def _invoke(exchange: Exchange, call: Call) -> list[dict[str, Any]]:
    return await exchange.invoke(call.cmdlet, dict(call.parameters))


async def _create(exchange: Exchange, target: DesiredObject, call: Call, current: Snapshot) -> None:
    try:
        await _invoke(exchange, call)
    except AlreadyExists:
        # Created meanwhile (a crashed earlier run, or someone else): compare instead.
        echoed = await exchange.invoke(f"Get-{target.kind}", {"Identity": target.name})
        if not echoed:
            raise
        found = ExchangeObject.from_echo(target.kind, echoed[0])
        log.info("%s %r exists already: comparing instead", target.kind, target.name)
        reasons = replacement_reasons(target, found)
        if reasons:
            raise _Conflict(
                f"The {target.kind.label} appeared meanwhile and {'; '.join(reasons)}: "
                "check again to plan its replacement."
            ) from None
        if target.kind is Kind.DISTRIBUTION_GROUP:
            return
        differences = compare_object(target, found, current.with_object(found).aliases())
        for update in update_calls(target, differences):
            await _invoke(exchange, update)


async def _update(exchange: Exchange, change: Change, current: Snapshot) -> None:
    for call in change.calls:
        try:
            await _invoke(exchange, call)
        except NotFound:
            if not call.cmdlet.startswith("Set-"):
                raise
            # Removed since we read it: create it instead (New- sets everything, enabled).
            await _create(
                exchange,
                change.target,
                Call(f"New-{change.kind}", change.target.new_parameters()),
                current,
            )
            return


async def _replace(exchange: Exchange, change: Change) -> None:
    new, remove, rename = change.calls
    try:
        await _invoke(exchange, new)
    except AlreadyExists:
        # A replacement left half-done by a crash: the temporary object is ours, start it over.
        await _invoke(exchange, Call(f"Remove-{change.kind}", {"Identity": new.parameters["Name"]}))
        await _invoke(exchange, new)
    with contextlib.suppress(NotFound):
        await _invoke(exchange, remove)
    await _invoke(exchange, rename)


def _validation_problem(results: Sequence[Mapping[str, Any]]) -> str | None:
    for result in results:
        status = str(result.get("Status") or "").casefold()
        if result.get("IsValidated") is False or status in ("failed", "error"):
            detail = (
                result.get("Message")
                or result.get("ValidationResult")
                or result.get("Error")
                or "the smart host did not accept the test message"
            )
            return str(detail)
    return None


async def _execute(exchange: Exchange, change: Change, current: Snapshot) -> None:
    if change.action is Action.CREATE:
        await _create(exchange, change.target, change.calls[0], current)
    elif change.action is Action.UPDATE:
        await _update(exchange, change, current)
    elif change.action is Action.REPLACE:
        await _replace(exchange, change)
    elif change.action is Action.VALIDATE:
        problem = _validation_problem(await _invoke(exchange, change.calls[0]))
        if problem is not None:
            raise _Conflict(
                f"Validate-OutboundConnector: {problem} No rule routes mail to it yet; fix the "
                "smart host (or what blocks it) and Retry.",
                code="ValidationFailed",
            )
    else:
        for call in change.calls:
            await _invoke(exchange, call)


def _failure(
    change: Change | None, error: MicrosoftError | _Conflict, applied: Sequence[Change]
) -> ApplyFailed:
    if isinstance(error, ServiceError):
        return ApplyFailed(change, error.code, error.message, applied)
    if isinstance(error, _Conflict):
        return ApplyFailed(change, error.code, error.message, applied)
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

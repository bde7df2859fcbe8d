"""Verification, the first half of step 4: is every grant in place, and does Exchange agree?

Five checks, run in parallel where they do not depend on each other::

    mailflow_permission  the mail-flow app's service principal exists (step 1) and holds
                         Exchange.ManageAsApp on Office 365 Exchange Online
    mailflow_role        that service principal holds an active Exchange Administrator
                         assignment (step 2): PIM schedule instances, or plain role assignments
                         on tenants without Entra ID P2   (needs the principal's id, not its grants)
    dirsync_consent      the directory-sync app's service principal exists (step 3)
    domains              the verified domains are readable (and give the initial domain)
    exchange             Get-AcceptedDomain with the mail-flow app's app-only token succeeds
                         (needs the initial domain, unless the context knows it; the token is
                         asked for meanwhile, as it does not depend on the domains)

Graph is read with the directory-sync app's token, so without step 3 the Graph checks cannot run:
they fail as "not checked" and point at step 3.

Every check ends ``passed``, ``failed`` or ``waiting``. ``waiting`` means one thing only: Exchange
still refuses the mail-flow app (401/403) although consent and role are in place, which is
Microsoft replicating the role (up to about 30 minutes); ``verify_until_ready`` in
``bot.steps.verify.model`` polls through it. Results carry a precise ``reason``, the ``fix`` an
administrator can act on, the provisioning ``step`` that fixes it and a machine-readable
``problem``. No result, log line or error carries a token or a secret.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Iterable
from dataclasses import dataclass, replace
from datetime import UTC, datetime

from bot.microsoft.access import VerifyContext
from bot.microsoft.errors import (
    ConsentMissing,
    Forbidden,
    MicrosoftError,
    MicrosoftUnavailable,
    ServiceError,
    TokenError,
    UnknownTenant,
)
from bot.microsoft.model import (
    EXCHANGE_ADMINISTRATOR,
    EXCHANGE_MANAGE_AS_APP,
    EXCHANGE_ONLINE_APP_ID,
    GLOBAL_ADMINISTRATOR,
    ActiveAssignments,
    Domain,
    ServicePrincipal,
)
from bot.steps.verify.model import (
    CHECK_TITLES,
    CheckName,
    CheckResult,
    CheckStatus,
    Problem,
    Verification,
)

__all__ = [
    "CHECK_TITLES",
    "CheckName",
    "CheckResult",
    "CheckStatus",
    "Problem",
    "Verification",
    "verify",
]

log = logging.getLogger(__name__)


# -- wording ---------------------------------------------------------------------------------------

_STEP1 = (
    "Step 1: a Global Administrator of the tenant opens the mail-flow app's consent link in the"
    " thread and accepts"
)
_STEP3 = (
    "Step 3: a Global Administrator of the tenant opens the directory-sync app's consent link in"
    " the thread and accepts"
)


def _utc(moment: float) -> str:
    return datetime.fromtimestamp(moment, UTC).strftime("%Y-%m-%d %H:%M UTC")


def _step2(app_id: str) -> str:
    return (
        "Step 2: a Privileged Role Administrator or Global Administrator assigns the Exchange"
        " Administrator role to the mail-flow app (application ID"
        f" {app_id}) — in Entra ID: Roles and administrators > Exchange Administrator > Add"
        " assignments; with PIM the assignment type must be Active, not Eligible. An Exchange"
        " Administrator cannot assign roles"
    )


def _code(error: ServiceError) -> str:
    reference = f", request id {error.request_id}" if error.request_id else ""
    return f"{error.status} {error.code}{reference}"


def _token_code(error: TokenError) -> str:
    codes = ", ".join(f"AADSTS{code}" for code in error.error_codes)
    return f"{error.error} ({codes})" if codes else error.error


def _result(
    name: CheckName,
    reason: str,
    fix: str | None = None,
    problem: Problem | None = None,
    step: int | None = None,
    status: CheckStatus = CheckStatus.FAILED,
) -> CheckResult:
    return CheckResult(name, status, reason, fix, problem, step)


def _passed(name: CheckName, reason: str) -> CheckResult:
    return CheckResult(name, CheckStatus.PASSED, reason)


def _unavailable(name: CheckName, service: str, error: MicrosoftUnavailable) -> CheckResult:
    later = (
        f" Microsoft asked to wait {error.retry_after:g} s."
        if error.retry_after is not None
        else ""
    )
    return _result(
        name,
        f"{service} kept failing or throttling after several attempts, so this could not be"
        f" checked.{later}",
        "Nothing to change in the tenant for this: click Verify again in a few minutes.",
        Problem.UNAVAILABLE,
    )


@dataclass(frozen=True)
class _GraphFailure:
    """Turns an error from reading Graph (as the directory-sync app) into a check result."""

    ctx: VerifyContext
    name: CheckName
    what: str  # "the mail-flow app's service principal"
    needs: str  # the Graph application permission that reading it needs

    def __call__(self, error: MicrosoftError) -> CheckResult:
        name = self.name
        if isinstance(error, ConsentMissing):
            return _result(
                name,
                f"Not checked: the bot reads {self.what} with the directory-sync app, which has"
                f" no consent in this tenant yet ({_token_code(error)}).",
                f"{_STEP3}; then click Verify again.",
                Problem.NOT_CHECKED,
                3,
            )
        if isinstance(error, UnknownTenant):
            return _result(
                name,
                f"Microsoft does not know the tenant {self.ctx.tenant_id}.",
                "Cancel this session and start again with the tenant's verified domain or ID.",
                Problem.UNKNOWN_TENANT,
            )
        if isinstance(error, TokenError):
            return _result(
                name,
                "Microsoft refused the directory-sync app's own credential"
                f" ({_token_code(error)}), so the bot cannot read {self.what}.",
                "The bot's operator renews DIRSYNC_CLIENT_SECRET or DIRSYNC_CLIENT_CERTIFICATE"
                " (it may have expired) and restarts the bot; nothing to change in the tenant.",
                Problem.CREDENTIAL_REJECTED,
            )
        if isinstance(error, MicrosoftUnavailable):
            return _unavailable(name, "Microsoft Graph", error)
        if isinstance(error, Forbidden):
            return _result(
                name,
                f"The directory-sync app may not read {self.what} ({_code(error)}): its consent"
                f" in this tenant does not include the {self.needs} permission.",
                f"{_STEP3} again: the consent grants {self.needs}. Then click Verify again.",
                Problem.PERMISSION_MISSING,
                3,
            )
        if isinstance(error, ServiceError):
            return _result(
                name,
                f"Microsoft Graph answered {_code(error)} when reading {self.what}.",
                "Click Verify again; if the answer stays the same, report it with the request id.",
                Problem.UNEXPECTED,
            )
        return _result(
            name,
            f"Reading {self.what} failed: {type(error).__name__}.",
            "Click Verify again; if it fails the same way, report it.",
            Problem.UNEXPECTED,
        )


# -- one run -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Principal:
    """The mail-flow app's service principal (and Exchange Online's), or the first check's
    failed result saying why it could not be had."""

    mailflow: ServicePrincipal | CheckResult
    exchange: ServicePrincipal | None = None


@dataclass(frozen=True)
class _Permission:
    result: CheckResult
    service_principal_id: str | None = None


@dataclass(frozen=True)
class _Role:
    result: CheckResult
    via_pim: bool | None = None
    active_since: float | None = None


@dataclass(frozen=True)
class _Domains:
    result: CheckResult
    names: tuple[str, ...] = ()
    initial: str | None = None


@dataclass(frozen=True)
class _Exchange:
    result: CheckResult | None
    denied: Forbidden | None = None  # decided once the other checks are known
    initial_domain: str | None = None


class _Run:
    def __init__(self, ctx: VerifyContext) -> None:
        self.ctx = ctx

    async def run(self) -> Verification:
        try:
            async with asyncio.TaskGroup() as group:
                principal = group.create_task(self.mailflow_principal())
                permission = group.create_task(self.mailflow_permission(principal))
                role = group.create_task(self.mailflow_role(principal))
                dirsync = group.create_task(self.dirsync_consent())
                domains = group.create_task(self.domains())
                token = group.create_task(self.exchange_token())
                exchange = group.create_task(self.exchange(domains, token))
        except ExceptionGroup as group:  # a bug, not a Microsoft answer: surface it plainly
            raise group.exceptions[0] from group
        return self.combine(
            permission.result(),
            role.result(),
            dirsync.result(),
            domains.result(),
            exchange.result(),
        )

    # (a) ---------------------------------------------------------------------------------------

    async def mailflow_principal(self) -> _Principal:
        ctx, name = self.ctx, CheckName.MAILFLOW_PERMISSION
        failure = _GraphFailure(
            ctx, name, "the mail-flow app's service principal", "Application.Read.All"
        )
        found = await asyncio.gather(
            ctx.graph.find_service_principal(ctx.mailflow_app_id),
            ctx.graph.find_service_principal(EXCHANGE_ONLINE_APP_ID),
            return_exceptions=True,
        )
        for outcome in found:
            if isinstance(outcome, MicrosoftError):
                return _Principal(failure(outcome))
            if isinstance(outcome, BaseException):
                raise outcome
        sp, exchange_sp = (o for o in found if not isinstance(o, BaseException))
        if sp is None:
            return _Principal(
                _result(
                    name,
                    "No consent for the mail-flow app: it has no service principal in this"
                    f" tenant (application ID {ctx.mailflow_app_id}).",
                    f"{_STEP1}; then click Verify again.",
                    Problem.MAILFLOW_CONSENT_MISSING,
                    1,
                )
            )
        return _Principal(sp, exchange_sp)

    async def mailflow_permission(self, principal: Awaitable[_Principal]) -> _Permission:
        ctx, name = self.ctx, CheckName.MAILFLOW_PERMISSION
        found = await principal
        sp, exchange_sp = found.mailflow, found.exchange
        if isinstance(sp, CheckResult):
            return _Permission(sp)
        try:
            grants = await ctx.graph.app_role_assignments(sp.id)
        except MicrosoftError as error:
            failure = _GraphFailure(
                ctx, name, "the mail-flow app's service principal", "Application.Read.All"
            )
            return _Permission(failure(error), sp.id)
        held = any(
            grant.app_role_id == EXCHANGE_MANAGE_AS_APP
            and (exchange_sp is None or grant.resource_id == exchange_sp.id)
            for grant in grants
        )
        if not held:
            return _Permission(
                _result(
                    name,
                    "The mail-flow app is consented but does not hold the Exchange.ManageAsApp"
                    " application permission of Office 365 Exchange Online, without which"
                    " Exchange refuses it.",
                    f"{_STEP1} again (the consent grants Exchange.ManageAsApp; it may have been"
                    " removed under Enterprise applications > Permissions). Then click Verify"
                    " again.",
                    Problem.MANAGE_AS_APP_MISSING,
                    1,
                ),
                sp.id,
            )
        return _Permission(
            _passed(
                name,
                f"Service principal {sp.display_name or sp.id} holds Exchange.ManageAsApp"
                " (Office 365 Exchange Online).",
            ),
            sp.id,
        )

    # (b) ---------------------------------------------------------------------------------------

    async def mailflow_role(self, principal: Awaitable[_Principal]) -> _Role:
        """Needs the principal's id only: read beside its grants, not after them."""
        ctx, name = self.ctx, CheckName.MAILFLOW_ROLE
        sp = (await principal).mailflow
        if isinstance(sp, CheckResult):
            if sp.problem is Problem.MAILFLOW_CONSENT_MISSING:
                return _Role(
                    _result(
                        name,
                        "Not checked: the mail-flow app has no consent yet, so there is nothing"
                        " to hold the role.",
                        f"{_STEP1}. Step 2 (assigning the Exchange Administrator role) comes"
                        " after it.",
                        Problem.NOT_CHECKED,
                        1,
                    )
                )
            return _Role(
                _result(
                    name,
                    "Not checked: the mail-flow app's service principal could not be read"
                    " (see the first check).",
                    sp.fix,
                    Problem.NOT_CHECKED,
                    sp.step,
                )
            )
        principal_id = sp.id
        failure = _GraphFailure(ctx, name, "the role assignments", "RoleManagement.Read.Directory")
        try:
            active = await ctx.graph.active_assignments(principal_id, EXCHANGE_ADMINISTRATOR)
            role = "Exchange Administrator"
            if not active:
                broader = await ctx.graph.active_assignments(principal_id, GLOBAL_ADMINISTRATOR)
                if broader:
                    active, role = broader, "Global Administrator"
        except MicrosoftError as error:
            return _Role(failure(error))
        if not active:
            how = (
                "PIM shows no active assignment (an eligible one is not enough)"
                if active.via_pim
                else "the tenant has no Entra ID P2, and no direct assignment exists"
            )
            return _Role(
                _result(
                    name,
                    f"The mail-flow app has no Exchange Administrator role: {how}.",
                    f"{_step2(ctx.mailflow_app_id)}. Then click Verify again.",
                    Problem.ROLE_MISSING,
                    2,
                ),
                via_pim=active.via_pim,
            )
        since = _earliest_start(active)
        return _Role(
            _passed(name, _role_sentence(role, active, since)),
            via_pim=active.via_pim,
            active_since=since,
        )

    # (c) ---------------------------------------------------------------------------------------

    async def dirsync_consent(self) -> CheckResult:
        ctx, name = self.ctx, CheckName.DIRSYNC_CONSENT
        missing = _result(
            name,
            "No consent for the directory-sync app: it has no service principal in this tenant"
            f" (application ID {ctx.dirsync_app_id}).",
            f"{_STEP3}; then click Verify again.",
            Problem.DIRSYNC_CONSENT_MISSING,
            3,
        )
        try:
            sp = await ctx.graph.find_service_principal(ctx.dirsync_app_id)
        except ConsentMissing as error:
            return replace(missing, reason=f"{missing.reason[:-1]}; {_token_code(error)}.")
        except MicrosoftError as error:
            failure = _GraphFailure(
                ctx, name, "the directory-sync app's service principal", "Application.Read.All"
            )
            return failure(error)
        if sp is None:
            return missing
        return _passed(name, f"Service principal {sp.display_name or sp.id} is in the tenant.")

    # (d) ---------------------------------------------------------------------------------------

    async def domains(self) -> _Domains:
        ctx, name = self.ctx, CheckName.DOMAINS
        try:
            listed = await ctx.graph.domains()
        except MicrosoftError as error:
            failure = _GraphFailure(ctx, name, "the tenant's domains", "Domain.Read.All")
            return _Domains(failure(error))
        verified = tuple(d for d in listed if d.is_verified)
        if not verified:
            return _Domains(
                _result(
                    name,
                    "Microsoft Graph lists no verified domain for this tenant.",
                    "Verify at least one domain in the Microsoft 365 admin center (Settings >"
                    " Domains), then click Verify again.",
                    Problem.UNEXPECTED,
                )
            )
        names = tuple(d.name for d in verified)
        initial = _initial_domain(verified)
        shown = ", ".join(names[:10]) + (f" and {len(names) - 10} more" if len(names) > 10 else "")
        return _Domains(_passed(name, f"{len(names)} verified domain(s): {shown}."), names, initial)

    # (e) ---------------------------------------------------------------------------------------

    async def exchange_token(self) -> MicrosoftError | None:
        """Ask for the mail-flow app's Exchange token while the initial domain is being read
        (the token does not depend on it); the Exchange check meets a refusal as its own."""
        ctx = self.ctx
        if ctx.initial_domain is not None or ctx.exchange_token is None:
            return None  # nothing to wait for: the Exchange check asks for it at once
        try:
            await ctx.exchange_token.access_token()
        except MicrosoftError as error:
            return error
        return None

    async def exchange(
        self, domains: Awaitable[_Domains], token: Awaitable[MicrosoftError | None]
    ) -> _Exchange:
        ctx, name = self.ctx, CheckName.EXCHANGE
        initial = ctx.initial_domain
        if initial is None:
            found = await domains
            initial = found.initial
            if initial is None:
                return _Exchange(
                    _result(
                        name,
                        "Not checked: Exchange Online is addressed through the tenant's initial"
                        " (onmicrosoft.com) domain, which could not be read (see the domains"
                        " check).",
                        found.result.fix,
                        Problem.NOT_CHECKED,
                        found.result.step,
                    )
                )
        try:
            # The token asked for meanwhile (MSAL keeps it): a refusal is the check's answer.
            refused = await token
            if refused is not None:
                raise refused
            accepted = await ctx.exchange(initial).invoke("Get-AcceptedDomain")
        except Forbidden as error:
            return _Exchange(None, denied=error, initial_domain=initial)
        except ConsentMissing as error:
            return _Exchange(
                _result(
                    name,
                    "The mail-flow app cannot get a token for Exchange Online: it is not"
                    f" consented in this tenant ({_token_code(error)}).",
                    f"{_STEP1}; then click Verify again.",
                    Problem.MAILFLOW_CONSENT_MISSING,
                    1,
                ),
                initial_domain=initial,
            )
        except UnknownTenant:
            return _Exchange(
                _result(
                    name,
                    f"Microsoft does not know the tenant {ctx.tenant_id}.",
                    "Cancel this session and start again with the tenant's verified domain or ID.",
                    Problem.UNKNOWN_TENANT,
                ),
                initial_domain=initial,
            )
        except TokenError as error:
            return _Exchange(
                _result(
                    name,
                    "Microsoft refused the mail-flow app's own credential"
                    f" ({_token_code(error)}), so no Exchange token could be had.",
                    "The bot's operator renews MAILFLOW_CLIENT_SECRET or"
                    " MAILFLOW_CLIENT_CERTIFICATE (it may have expired) and restarts the bot;"
                    " nothing to change in the tenant.",
                    Problem.CREDENTIAL_REJECTED,
                ),
                initial_domain=initial,
            )
        except MicrosoftUnavailable as error:
            return _Exchange(_unavailable(name, "Exchange Online", error), initial_domain=initial)
        except ServiceError as error:
            return _Exchange(
                _result(
                    name,
                    f"Exchange Online answered {_code(error)} to Get-AcceptedDomain.",
                    "Click Verify again; if the answer stays the same, report it with the"
                    " request id.",
                    Problem.UNEXPECTED,
                ),
                initial_domain=initial,
            )
        except MicrosoftError as error:
            return _Exchange(
                _result(
                    name,
                    f"Calling Exchange Online failed: {type(error).__name__}.",
                    "Click Verify again; if it fails the same way, report it.",
                    Problem.UNEXPECTED,
                ),
                initial_domain=initial,
            )
        return _Exchange(
            _passed(
                name,
                "Get-AcceptedDomain succeeded with the mail-flow app's app-only token"
                f" ({len(accepted)} accepted domain(s)).",
            ),
            initial_domain=initial,
        )

    # -- together --------------------------------------------------------------------------------

    def combine(
        self,
        permission: _Permission,
        role: _Role,
        dirsync: CheckResult,
        domains: _Domains,
        exchange: _Exchange,
    ) -> Verification:
        ctx = self.ctx
        now = ctx.clock()
        exchange_result = exchange.result
        if exchange_result is None:
            assert exchange.denied is not None
            exchange_result = self.denied(
                exchange.denied, (permission.result, role.result, dirsync), role, now
            )
        checks = (permission.result, role.result, dirsync, domains.result, exchange_result)
        verification = Verification(
            tenant_id=ctx.tenant_id,
            checks=checks,
            checked_at=now,
            domains=domains.names,
            initial_domain=exchange.initial_domain or domains.initial,
            mailflow_service_principal_id=permission.service_principal_id,
            via_pim=role.via_pim,
            role_active_since=role.active_since,
        )
        log.info(
            "verification of tenant %s: %s",
            ctx.tenant_id,
            ", ".join(
                f"{c.name}={c.status}" + (f"({c.problem})" if c.problem else "") for c in checks
            ),
        )
        return verification

    def denied(
        self, error: Forbidden, before: Iterable[CheckResult], role: _Role, now: float
    ) -> CheckResult:
        """Exchange said 401/403: replication delay if the grants are in place, else a refusal."""
        ctx, name = self.ctx, CheckName.EXCHANGE
        unmet = [c for c in before if not c.passed]
        if unmet:
            first = unmet[0]
            return _result(
                name,
                f"Exchange Online refused the mail-flow app ({error.status} {error.code}), as"
                f" expected while the check “{first.title}” fails.",
                f"Fix “{first.title}” first: {first.fix}" if first.fix else None,
                Problem.EXCHANGE_DENIED,
                first.step,
            )
        since = role.active_since
        window = ctx.replication_window.total_seconds()
        if since is not None and now - since > window:
            return _result(
                name,
                f"Exchange Online still refuses the mail-flow app ({error.status} {error.code})"
                f" although its role has been active since {_utc(since)}, longer than Microsoft"
                " takes to replicate a role.",
                "In Entra ID > Roles and administrators > Exchange Administrator, check that the"
                f" app with ID {ctx.mailflow_app_id} is listed under Active assignments; remove"
                " the assignment and add it again (step 2), wait a few minutes, then click"
                " Verify again.",
                Problem.EXCHANGE_DENIED,
                2,
            )
        assigned = f" (assigned {_utc(since)})" if since is not None else ""
        return _result(
            name,
            f"Exchange Online still refuses the mail-flow app ({error.status} {error.code}): the"
            f" Exchange Administrator role{assigned} has not reached Exchange yet. Microsoft can"
            " take up to 30 minutes to replicate a new role.",
            "Nothing to do: the bot checks again by itself and continues when Exchange accepts"
            " the app.",
            Problem.REPLICATION_PENDING,
            status=CheckStatus.WAITING,
        )


def _initial_domain(domains: Iterable[Domain]) -> str | None:
    listed = list(domains)
    flagged = next((d.name for d in listed if d.is_initial), None)
    if flagged:
        return flagged
    return next(
        (d.name for d in listed if d.name.lower().endswith(".onmicrosoft.com")),
        None,
    )


def _earliest_start(active: ActiveAssignments) -> float | None:
    starts = [a.start.timestamp() for a in active.assignments if a.start is not None]
    return min(starts) if starts else None


def _role_sentence(role: str, active: ActiveAssignments, since: float | None) -> str:
    kind = "active PIM assignment" if active.via_pim else "direct assignment (no Entra ID P2)"
    sentence = f"{role}: {kind}"
    if since is not None:
        sentence += f" since {_utc(since)}"
    ends = [a.end.timestamp() for a in active.assignments if a.end is not None]
    permanent = any(a.end is None for a in active.assignments)
    if ends and not permanent:
        sentence += (
            f", ending {_utc(max(ends))} — the mail-flow app stops working then unless the"
            " assignment is renewed"
        )
    sentence += "."
    if role != "Exchange Administrator":
        sentence += " Exchange Administrator would be enough."
    return sentence


async def verify(ctx: VerifyContext) -> Verification:
    """Run every check once against the tenant; never raises for Microsoft's answers."""
    return await _Run(ctx).run()

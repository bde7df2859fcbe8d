"""The verify step's typed results (pure): each check, one run of all of them, and how waiting
for the role's replication ended."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from datetime import timedelta
from enum import StrEnum

__all__ = [
    "CHECK_TITLES",
    "DEFAULT_LIMIT",
    "FIRST_INTERVAL",
    "MAX_INTERVAL",
    "CheckName",
    "CheckResult",
    "CheckStatus",
    "Outcome",
    "Problem",
    "ProgressCallback",
    "Verification",
    "VerifyOutcome",
]


class CheckName(StrEnum):
    """The checks, in the order they are shown."""

    MAILFLOW_PERMISSION = "mailflow_permission"
    MAILFLOW_ROLE = "mailflow_role"
    DIRSYNC_CONSENT = "dirsync_consent"
    DOMAINS = "domains"
    EXCHANGE = "exchange"


CHECK_TITLES: dict[CheckName, str] = {
    CheckName.MAILFLOW_PERMISSION: "Mail-flow app consented, with Exchange.ManageAsApp",
    CheckName.MAILFLOW_ROLE: "Mail-flow app holds an active Exchange Administrator role",
    CheckName.DIRSYNC_CONSENT: "Directory-sync app consented",
    CheckName.DOMAINS: "Verified domains readable",
    CheckName.EXCHANGE: "Exchange Online accepts the mail-flow app",
}


class CheckStatus(StrEnum):
    PASSED = "passed"
    FAILED = "failed"
    WAITING = "waiting"  # only: the role has not replicated to Exchange yet


class Problem(StrEnum):
    """Why a check did not pass, for code that branches (the text is in ``reason``)."""

    MAILFLOW_CONSENT_MISSING = "mailflow_consent_missing"
    MANAGE_AS_APP_MISSING = "manage_as_app_missing"
    ROLE_MISSING = "role_missing"
    DIRSYNC_CONSENT_MISSING = "dirsync_consent_missing"
    PERMISSION_MISSING = "permission_missing"  # the directory-sync app lacks a Graph permission
    CREDENTIAL_REJECTED = "credential_rejected"  # the bot's own client secret/certificate
    UNKNOWN_TENANT = "unknown_tenant"
    NOT_CHECKED = "not_checked"  # another check's failure keeps this one from running
    REPLICATION_PENDING = "replication_pending"
    REPLICATION_TIMED_OUT = "replication_timed_out"
    EXCHANGE_DENIED = "exchange_denied"
    UNAVAILABLE = "unavailable"  # Microsoft kept failing (after retries): try again later
    UNEXPECTED = "unexpected"


@dataclass(frozen=True)
class CheckResult:
    """One check's verdict. ``fix`` is what an administrator does about it (``None`` if nothing);
    ``step`` the provisioning step (1–3) that fixes it, when one does."""

    name: CheckName
    status: CheckStatus
    reason: str
    fix: str | None = None
    problem: Problem | None = None
    step: int | None = None

    @property
    def title(self) -> str:
        return CHECK_TITLES[self.name]

    @property
    def passed(self) -> bool:
        return self.status is CheckStatus.PASSED


@dataclass(frozen=True)
class Verification:
    """The checks of one run, in ``CheckName`` order, and what they learned about the tenant."""

    tenant_id: str
    checks: tuple[CheckResult, ...]
    checked_at: float
    domains: tuple[str, ...] = ()
    initial_domain: str | None = None
    mailflow_service_principal_id: str | None = None
    via_pim: bool | None = None
    role_active_since: float | None = None

    @property
    def passed(self) -> bool:
        """Every check passed: the change plan can be shown."""
        return all(check.passed for check in self.checks)

    @property
    def replication_pending(self) -> bool:
        """Nothing failed; only Exchange is still waiting for the role to replicate."""
        return not self.failures and any(c.status is CheckStatus.WAITING for c in self.checks)

    @property
    def transient_only(self) -> bool:
        """What did not pass is waiting for replication or Microsoft being unavailable (and the
        checks those kept from running): worth asking again as it is."""
        open_checks = [c for c in self.checks if not c.passed]
        causes = [c for c in open_checks if c.problem is not Problem.NOT_CHECKED]
        return bool(causes) and all(
            c.status is CheckStatus.WAITING or c.problem is Problem.UNAVAILABLE for c in causes
        )

    @property
    def failures(self) -> tuple[CheckResult, ...]:
        return tuple(c for c in self.checks if c.status is CheckStatus.FAILED)

    def check(self, name: CheckName) -> CheckResult:
        return next(c for c in self.checks if c.name is name)

    def with_check(self, result: CheckResult) -> Verification:
        """A copy with one check's result replaced."""
        return replace(
            self, checks=tuple(result if c.name is result.name else c for c in self.checks)
        )


DEFAULT_LIMIT = timedelta(minutes=30)
FIRST_INTERVAL = timedelta(seconds=15)
MAX_INTERVAL = timedelta(minutes=2)

#: ``on_progress(attempt, elapsed, next_in, verification)``: called before each wait.
ProgressCallback = Callable[[int, timedelta, timedelta, Verification], Awaitable[None]]


class Outcome(StrEnum):
    READY = "ready"  # every check passed
    FAILED = "failed"  # a check failed for a reason waiting does not cure
    TIMED_OUT = "timed_out"  # still waiting for replication when the limit was reached


@dataclass(frozen=True)
class VerifyOutcome:
    """How the wait ended. ``verification`` is the last run's result; on ``TIMED_OUT`` its
    waiting check is turned into a failure that says so and what to do."""

    outcome: Outcome
    verification: Verification
    attempts: int
    elapsed: timedelta
    limit: timedelta

    @property
    def ready(self) -> bool:
        return self.outcome is Outcome.READY

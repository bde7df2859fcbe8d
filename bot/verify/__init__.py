"""Verification (step 4, first half): the grants checked against Graph and Exchange Online."""

from bot.verify.checks import (
    CHECK_TITLES,
    CheckName,
    CheckResult,
    CheckStatus,
    Problem,
    Verification,
    verify,
)
from bot.verify.context import MicrosoftAccess, VerifyContext, microsoft_apps
from bot.verify.ready import Outcome, ProgressCallback, VerifyOutcome, verify_until_ready

__all__ = [
    "CHECK_TITLES",
    "CheckName",
    "CheckResult",
    "CheckStatus",
    "MicrosoftAccess",
    "Outcome",
    "Problem",
    "ProgressCallback",
    "Verification",
    "VerifyContext",
    "VerifyOutcome",
    "microsoft_apps",
    "verify",
    "verify_until_ready",
]

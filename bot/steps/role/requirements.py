"""What a tenant demands before the mail-flow app may hold the Exchange Administrator role.

Pure: built from the PIM policy Graph returned (``bot.microsoft.graph.RolePolicy``), from the
knowledge that the tenant has no PIM, or from the admin's word when the policy cannot be read.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import asdict, dataclass, replace
from datetime import timedelta
from typing import Literal

from bot.microsoft.model import RolePolicy

__all__ = [
    "JUSTIFICATION_MAX_LENGTH",
    "JUSTIFICATION_MIN_LENGTH",
    "LONGEST_ASSIGNMENT",
    "PolicySource",
    "RoleRequirements",
    "describe_duration",
    "iso_duration",
]

#: Microsoft refuses PIM justifications longer than this.
JUSTIFICATION_MAX_LENGTH = 500
#: The shortest justification accepted when the policy requires one (a sentence, not "ok").
JUSTIFICATION_MIN_LENGTH = 10
#: Where no maximum is known, the longest time-bound assignment offered.
LONGEST_ASSIGNMENT = timedelta(days=365)

#: ``policy``: read from Graph; ``no_pim``: the tenant has no PIM (no Entra ID P2, or the admin
#: said so); ``assumed``: the admin says PIM applies but its policy could not be read.
PolicySource = Literal["policy", "no_pim", "assumed"]


def iso_duration(duration: timedelta) -> str:
    """``timedelta(days=180)`` → ``P180D``; ``timedelta(hours=8)`` → ``PT8H`` (ISO 8601)."""
    seconds = int(duration.total_seconds())
    if seconds <= 0:
        raise ValueError("a duration must be positive")
    days, rest = divmod(seconds, 86_400)
    hours, rest = divmod(rest, 3_600)
    minutes, seconds = divmod(rest, 60)
    text = f"P{days}D" if days else "P"
    clock = "".join(
        f"{value}{unit}" for value, unit in ((hours, "H"), (minutes, "M"), (seconds, "S")) if value
    )
    return text + (f"T{clock}" if clock else "")


def describe_duration(duration: timedelta) -> str:
    """Words for a duration: ``180 days``, ``1 day``, ``8 hours``, ``1 day 12 hours``."""
    seconds = int(duration.total_seconds())
    days, rest = divmod(seconds, 86_400)
    hours, rest = divmod(rest, 3_600)
    minutes = rest // 60
    parts = [
        f"{value} {unit}{'' if value == 1 else 's'}"
        for value, unit in ((days, "day"), (hours, "hour"), (minutes, "minute"))
        if value
    ]
    return " ".join(parts) or "less than a minute"


@dataclass(frozen=True)
class RoleRequirements:
    """What an assignment of the Exchange Administrator role must carry in this tenant.

    ``maximum_duration`` bounds time-bound assignments (``None``: no known bound; the modal then
    offers up to ``LONGEST_ASSIGNMENT``). ``permanent_allowed`` is ``not expiration_required``.
    """

    pim: bool
    source: PolicySource
    justification_required: bool
    ticketing_required: bool
    expiration_required: bool
    maximum_duration: timedelta | None
    mfa_required: bool
    justification_min_length: int = 0
    justification_max_length: int = JUSTIFICATION_MAX_LENGTH

    # -- storage ------------------------------------------------------------------------------

    def to_json(self) -> str:
        data = asdict(self)
        data["maximum_duration"] = (
            self.maximum_duration.total_seconds() if self.maximum_duration is not None else None
        )
        return json.dumps(data)

    @classmethod
    def from_json(cls, text: str) -> RoleRequirements:
        data = json.loads(text)
        seconds = data.pop("maximum_duration")
        return cls(
            **data, maximum_duration=timedelta(seconds=seconds) if seconds is not None else None
        )

    # -- construction --------------------------------------------------------------------------

    @classmethod
    def from_policy(cls, policy: RolePolicy | None) -> RoleRequirements:
        """From the PIM policy Graph returned; ``None`` when the tenant has no PIM (Graph answered
        ``AadPremiumLicenseRequired``: no Entra ID P2)."""
        if policy is None:
            return cls.without_pim()
        return cls(
            pim=True,
            source="policy",
            justification_required=policy.justification_required,
            ticketing_required=policy.ticketing_required,
            expiration_required=policy.expiration_required,
            maximum_duration=policy.maximum_duration,
            mfa_required=policy.mfa_required,
            justification_min_length=(
                JUSTIFICATION_MIN_LENGTH if policy.justification_required else 0
            ),
        )

    @classmethod
    def without_pim(cls) -> RoleRequirements:
        """A tenant without PIM: a direct, permanent assignment needs nothing more."""
        return cls(
            pim=False,
            source="no_pim",
            justification_required=False,
            ticketing_required=False,
            expiration_required=False,
            maximum_duration=None,
            mfa_required=False,
        )

    @classmethod
    def assumed_pim(cls) -> RoleRequirements:
        """The admin says PIM applies but the policy could not be read (no consent yet for the
        directory-sync app): ask for what Microsoft's default policy asks, a justification.
        Anything else the policy turns out to demand comes back as a failed rule and is asked
        for then (see ``tightened``)."""
        return cls(
            pim=True,
            source="assumed",
            justification_required=True,
            ticketing_required=False,
            expiration_required=False,
            maximum_duration=None,
            mfa_required=False,
            justification_min_length=JUSTIFICATION_MIN_LENGTH,
        )

    def tightened(self, failed_rules: Iterable[str]) -> RoleRequirements:
        """These requirements plus what Microsoft's failed policy rules (``JustificationRule``,
        ``TicketingRule``, ``ExpirationRule``, ``MfaRule``) show the policy demands."""
        rules = set(failed_rules)
        changed = self
        if "JustificationRule" in rules:
            changed = replace(
                changed,
                justification_required=True,
                justification_min_length=max(
                    changed.justification_min_length, JUSTIFICATION_MIN_LENGTH
                ),
            )
        if "TicketingRule" in rules:
            changed = replace(changed, ticketing_required=True)
        if "ExpirationRule" in rules:
            changed = replace(changed, expiration_required=True)
        if "MfaRule" in rules:
            changed = replace(changed, mfa_required=True)
        return changed

    # -- derived -------------------------------------------------------------------------------

    @property
    def permanent_allowed(self) -> bool:
        return not self.expiration_required

    @property
    def longest_duration(self) -> timedelta:
        """The longest time-bound assignment that may be requested."""
        return self.maximum_duration or LONGEST_ASSIGNMENT

    def explanation(self) -> str:
        """One paragraph (Slack mrkdwn) for the admin: what the tenant demands, and why."""
        if not self.pim:
            if self.source == "no_pim":
                return (
                    "This tenant does not use Privileged Identity Management (PIM needs "
                    "Microsoft Entra ID P2), so the role is assigned directly and permanently. "
                    "Microsoft asks for no justification; the one you give here is for the "
                    "approvers in this thread."
                )
            return "The role is assigned directly and permanently; no PIM policy applies."
        opening = (
            "This tenant manages the Exchange Administrator role with *Privileged Identity "
            "Management (PIM)*."
            if self.source == "policy"
            else "You said this tenant uses *Privileged Identity Management (PIM)*; its policy "
            "could not be read yet, so the form asks for what Microsoft's default policy "
            "demands, and the bot asks again if the policy wants more."
        )
        demands: list[str] = []
        if self.justification_required:
            demands.append(
                f"a justification ({self.justification_min_length}–"
                f"{self.justification_max_length} characters)"
            )
        if self.ticketing_required:
            demands.append("a ticket number and ticket system")
        if self.expiration_required:
            bound = (
                f"at most {describe_duration(self.maximum_duration)}"
                if self.maximum_duration
                else "an end date"
            )
            demands.append(f"a time-bound assignment ({bound}; permanent is not allowed)")
        sentences = [opening]
        if demands:
            sentences.append("For an active assignment its policy requires " + _join(demands) + ".")
        else:
            sentences.append("Its policy requires nothing more for an active assignment.")
        if not self.expiration_required:
            sentences.append(
                "Permanent assignments are allowed, and the mail-flow app needs the role for "
                "as long as the service protects the tenant."
            )
        else:
            sentences.append(
                "When the assignment ends, the service can no longer configure mail flow until "
                "the role is assigned again."
            )
        if self.mfa_required:
            sentences.append(
                "Whoever assigns the role must have signed in with multifactor authentication."
            )
        return " ".join(sentences)


def _join(items: list[str]) -> str:
    if len(items) == 1:
        return items[0]
    return ", ".join(items[:-1]) + " and " + items[-1]

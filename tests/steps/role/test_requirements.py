from __future__ import annotations

from datetime import timedelta

import pytest

from bot.microsoft.model import EXCHANGE_ADMINISTRATOR, RolePolicy
from bot.steps.role.requirements import (
    JUSTIFICATION_MAX_LENGTH,
    JUSTIFICATION_MIN_LENGTH,
    LONGEST_ASSIGNMENT,
    RoleRequirements,
    describe_duration,
    iso_duration,
)


def policy(**overrides: object) -> RolePolicy:
    values: dict[str, object] = {
        "role_definition_id": EXCHANGE_ADMINISTRATOR,
        "policy_id": "p1",
        "justification_required": True,
        "ticketing_required": False,
        "mfa_required": False,
        "expiration_required": False,
        "maximum_duration": timedelta(days=180),
        "maximum_duration_iso": "P180D",
    }
    values.update(overrides)
    return RolePolicy(**values)  # type: ignore[arg-type]


def test_default_pim_policy() -> None:
    requirements = RoleRequirements.from_policy(policy())
    assert requirements.pim
    assert requirements.source == "policy"
    assert requirements.justification_required
    assert requirements.justification_min_length == JUSTIFICATION_MIN_LENGTH == 10
    assert requirements.justification_max_length == JUSTIFICATION_MAX_LENGTH == 500
    assert not requirements.ticketing_required
    assert requirements.permanent_allowed
    text = requirements.explanation()
    assert "*Privileged Identity Management (PIM)*" in text
    assert "a justification (10–500 characters)" in text
    assert "Permanent assignments are allowed" in text
    assert "multifactor" not in text


def test_strict_pim_policy() -> None:
    requirements = RoleRequirements.from_policy(
        policy(
            ticketing_required=True,
            mfa_required=True,
            expiration_required=True,
            maximum_duration=timedelta(days=90),
        )
    )
    assert not requirements.permanent_allowed
    assert requirements.longest_duration == timedelta(days=90)
    text = requirements.explanation()
    assert (
        "a justification (10–500 characters), a ticket number and ticket system and a "
        "time-bound assignment (at most 90 days; permanent is not allowed)"
    ) in text
    assert "multifactor authentication" in text
    assert "until the role is assigned again" in text


def test_policy_without_justification() -> None:
    requirements = RoleRequirements.from_policy(policy(justification_required=False))
    assert requirements.justification_min_length == 0
    assert "requires nothing more" in requirements.explanation()


def test_no_pim() -> None:
    requirements = RoleRequirements.from_policy(None)
    assert requirements == RoleRequirements.without_pim()
    assert not requirements.pim
    assert not requirements.justification_required
    assert requirements.permanent_allowed
    assert "Microsoft Entra ID P2" in requirements.explanation()


def test_assumed_pim_and_tightening() -> None:
    assumed = RoleRequirements.assumed_pim()
    assert assumed.source == "assumed"
    assert assumed.justification_required
    assert "could not be read" in assumed.explanation()
    assert assumed.tightened([]) == assumed
    tightened = assumed.tightened(["TicketingRule", "ExpirationRule", "MfaRule", "OtherRule"])
    assert tightened.ticketing_required
    assert tightened.expiration_required
    assert tightened.mfa_required
    assert tightened.longest_duration == LONGEST_ASSIGNMENT
    relaxed = RoleRequirements.from_policy(policy(justification_required=False))
    assert relaxed.tightened(["JustificationRule"]).justification_min_length == 10


@pytest.mark.parametrize(
    ("duration", "iso", "words"),
    [
        (timedelta(days=180), "P180D", "180 days"),
        (timedelta(days=1), "P1D", "1 day"),
        (timedelta(hours=8), "PT8H", "8 hours"),
        (timedelta(days=1, hours=12, minutes=30), "P1DT12H30M", "1 day 12 hours 30 minutes"),
    ],
)
def test_durations(duration: timedelta, iso: str, words: str) -> None:
    assert iso_duration(duration) == iso
    assert describe_duration(duration) == words


def test_zero_duration_is_refused() -> None:
    with pytest.raises(ValueError, match="positive"):
        iso_duration(timedelta(0))

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from bot.microsoft.model import Expiration, Ticket
from bot.steps.role.model import (
    DURATION_ACTION,
    DURATION_BLOCK,
    JUSTIFICATION_ACTION,
    JUSTIFICATION_BLOCK,
    TICKET_NUMBER_ACTION,
    TICKET_NUMBER_BLOCK,
    TICKET_SYSTEM_ACTION,
    TICKET_SYSTEM_BLOCK,
    RoleRequest,
    duration_choices,
    validate,
)
from bot.steps.role.requirements import RoleRequirements

GOOD = "Inline mail protection must configure Exchange mail flow."


def strict(maximum: timedelta | None = timedelta(days=90)) -> RoleRequirements:
    return RoleRequirements(
        pim=True,
        source="policy",
        justification_required=True,
        ticketing_required=True,
        expiration_required=True,
        maximum_duration=maximum,
        mfa_required=False,
        justification_min_length=10,
    )


def values(
    justification: str | None = GOOD,
    ticket: str | None = None,
    system: str | None = None,
    duration: str | None = None,
) -> dict[str, dict[str, dict[str, Any]]]:
    state: dict[str, dict[str, dict[str, Any]]] = {
        JUSTIFICATION_BLOCK: {
            JUSTIFICATION_ACTION: {"type": "plain_text_input", "value": justification}
        }
    }
    if ticket is not None:
        state[TICKET_NUMBER_BLOCK] = {TICKET_NUMBER_ACTION: {"value": ticket}}
    if system is not None:
        state[TICKET_SYSTEM_BLOCK] = {TICKET_SYSTEM_ACTION: {"value": system}}
    if duration is not None:
        option = {"text": {"type": "plain_text", "text": duration}, "value": duration}
        state[DURATION_BLOCK] = {
            DURATION_ACTION: {"type": "static_select", "selected_option": option}
        }
    return state


def test_valid_strict_request() -> None:
    result = validate(
        values(f"  {GOOD}\n", "CHG1", "ServiceNow", "P30D"), strict(), requested_by="U1"
    )
    assert result == RoleRequest(GOOD, "U1", "CHG1", "ServiceNow", timedelta(days=30))
    assert isinstance(result, RoleRequest)
    assert result.expiration() == Expiration.after("P30D")
    assert result.ticket() == Ticket("CHG1", "ServiceNow")
    assert result.describe_duration() == "30 days"


def test_every_field_missing() -> None:
    errors = validate(values(None), strict(), requested_by="U1")
    assert isinstance(errors, dict)
    assert set(errors) == {
        JUSTIFICATION_BLOCK,
        TICKET_NUMBER_BLOCK,
        TICKET_SYSTEM_BLOCK,
        DURATION_BLOCK,
    }
    assert errors[JUSTIFICATION_BLOCK].startswith("Enter a justification")
    assert "ticket number (e.g. CHG0012345)" in errors[TICKET_NUMBER_BLOCK]
    assert "ticket system (e.g. ServiceNow)" in errors[TICKET_SYSTEM_BLOCK]
    assert "Choose how long" in errors[DURATION_BLOCK]
    assert "at most 90 days" in errors[DURATION_BLOCK]


def test_justification_length_limits() -> None:
    short = validate(values("too short"), strict(), requested_by="U1")
    assert isinstance(short, dict)
    assert "at least 10 characters (you wrote 9)" in short[JUSTIFICATION_BLOCK]
    long = validate(values("x" * 501), RoleRequirements.without_pim(), requested_by="U1")
    assert long == {
        JUSTIFICATION_BLOCK: "Shorten the justification to 500 characters or fewer (it has 501); "
        "Microsoft refuses longer ones."
    }
    exact = validate(values("x" * 500), RoleRequirements.without_pim(), requested_by="U1")
    assert isinstance(exact, RoleRequest)


def test_optional_justification_without_pim() -> None:
    result = validate(values(None), RoleRequirements.without_pim(), requested_by="U1")
    assert result == RoleRequest("", "U1")
    assert isinstance(result, RoleRequest)
    assert result.permanent
    assert result.expiration() == Expiration.never()
    assert result.ticket() is None


def test_ticket_fields_count_only_with_ticketing() -> None:
    result = validate(
        values(GOOD, "CHG1", "ServiceNow", "P30D"),
        RoleRequirements.assumed_pim(),
        requested_by="U1",
    )
    assert result == RoleRequest(GOOD, "U1")


def test_ticket_field_too_long() -> None:
    errors = validate(values(GOOD, "C" * 101, "S", "P1D"), strict(), requested_by="U1")
    assert errors == {
        TICKET_NUMBER_BLOCK: "Shorten the ticket number to 100 characters or fewer (it has 101)."
    }


@pytest.mark.parametrize(
    ("chosen", "problem"),
    [
        ("P91D", "Choose 90 days or less"),
        ("P1Y", "Choose one of the durations in the list."),
        ("forever", "Choose one of the durations in the list."),
        ("PT0S", "Choose one of the durations in the list."),
    ],
)
def test_duration_bounds(chosen: str, problem: str) -> None:
    errors = validate(values(GOOD, "C", "S", chosen), strict(), requested_by="U1")
    assert isinstance(errors, dict)
    assert list(errors) == [DURATION_BLOCK]
    assert errors[DURATION_BLOCK].startswith(problem)


def test_duration_choices() -> None:
    assert duration_choices(strict(timedelta(days=90))) == tuple(
        timedelta(days=d) for d in (1, 7, 30, 90)
    )
    assert duration_choices(strict(timedelta(days=45)))[-1] == timedelta(days=45)
    assert duration_choices(strict(timedelta(hours=8))) == (timedelta(hours=8),)
    assert duration_choices(strict(None))[-1] == timedelta(days=365)


@pytest.mark.parametrize(
    "request_",
    [
        RoleRequest(GOOD, "U1"),
        RoleRequest('quotes " and \n newlines', "U1", "CHG1", "ServiceNow", timedelta(hours=8)),
    ],
)
def test_json_round_trip(request_: RoleRequest) -> None:
    assert RoleRequest.from_json(request_.to_json()) == request_


@pytest.mark.parametrize(
    "text",
    [
        "[]",
        '{"justification": 1, "requested_by": "U1"}',
        '{"justification": "x", "requested_by": "U1", "duration": "forever"}',
        '{"justification": "x", "requested_by": "U1", "ticket_number": 5}',
        "not json",
    ],
)
def test_malformed_json(text: str) -> None:
    with pytest.raises(ValueError):  # noqa: PT011
        RoleRequest.from_json(text)

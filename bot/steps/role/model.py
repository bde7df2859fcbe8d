"""The role request an admin submits in the modal, and the validation of that modal (pure).

``validate`` takes Slack's ``view.state.values`` and either returns a ``RoleRequest`` or the field
errors to return in the ``view_submission`` ack (``{"response_action": "errors", "errors": …}``),
keyed by the block ids below.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from bot.microsoft.model import Expiration, Ticket, parse_iso_duration
from bot.steps.role.requirements import RoleRequirements, describe_duration, iso_duration

__all__ = [
    "DURATION_ACTION",
    "DURATION_BLOCK",
    "JUSTIFICATION_ACTION",
    "JUSTIFICATION_BLOCK",
    "REQUEST_CALLBACK",
    "TICKET_FIELD_MAX_LENGTH",
    "TICKET_NUMBER_ACTION",
    "TICKET_NUMBER_BLOCK",
    "TICKET_SYSTEM_ACTION",
    "TICKET_SYSTEM_BLOCK",
    "Acknowledgement",
    "AssignmentClaim",
    "AssignmentFailed",
    "RoleAssigned",
    "RoleRequest",
    "RoleState",
    "SeenRequest",
    "duration_choices",
    "validate",
]

#: ``callback_id`` of the request modal.
REQUEST_CALLBACK = "role_request"
#: Input blocks of the modal (``block_id`` → the element's ``action_id``).
JUSTIFICATION_BLOCK = "role_justification"
JUSTIFICATION_ACTION = "justification_input"
TICKET_NUMBER_BLOCK = "role_ticket_number"
TICKET_NUMBER_ACTION = "ticket_number_input"
TICKET_SYSTEM_BLOCK = "role_ticket_system"
TICKET_SYSTEM_ACTION = "ticket_system_input"
DURATION_BLOCK = "role_duration"
DURATION_ACTION = "duration_choice"

TICKET_FIELD_MAX_LENGTH = 100

_STANDARD_DURATIONS = tuple(timedelta(days=d) for d in (1, 7, 30, 90, 180, 365))


def duration_choices(requirements: RoleRequirements) -> tuple[timedelta, ...]:
    """The assignment durations the modal offers: the usual ones up to the policy's maximum,
    and the maximum itself (the default choice), shortest first."""
    longest = requirements.longest_duration
    choices = [d for d in _STANDARD_DURATIONS if d < longest]
    return (*choices, longest)


@dataclass(frozen=True)
class RoleRequest:
    """What the admin asked for: the role for the mail-flow app, with the policy's details.

    ``duration`` ``None`` means a permanent assignment. ``requested_by`` is a Slack user id.
    """

    justification: str
    requested_by: str
    ticket_number: str | None = None
    ticket_system: str | None = None
    duration: timedelta | None = None

    @property
    def permanent(self) -> bool:
        return self.duration is None

    @property
    def duration_iso(self) -> str | None:
        return iso_duration(self.duration) if self.duration is not None else None

    def expiration(self) -> Expiration:
        """``scheduleInfo.expiration`` for the PIM request."""
        if self.duration is None:
            return Expiration.never()
        return Expiration.after(iso_duration(self.duration))

    def ticket(self) -> Ticket | None:
        """``ticketInfo`` for the PIM request (``None`` without a ticket number)."""
        if not self.ticket_number:
            return None
        return Ticket(self.ticket_number, self.ticket_system or "")

    def describe_duration(self) -> str:
        if self.duration is None:
            return "permanent"
        return describe_duration(self.duration)

    def digest(self) -> str:
        """What an acknowledgement covers: any change to the request changes it."""
        return hashlib.sha256(self.to_json().encode()).hexdigest()[:32]

    def to_json(self) -> str:
        return json.dumps(
            {
                "justification": self.justification,
                "requested_by": self.requested_by,
                "ticket_number": self.ticket_number,
                "ticket_system": self.ticket_system,
                "duration": self.duration_iso,
            },
            separators=(",", ":"),
        )

    @classmethod
    def from_json(cls, text: str) -> RoleRequest:
        """The inverse of ``to_json``; ``ValueError`` for anything else."""
        data = json.loads(text)
        if not isinstance(data, dict):
            raise ValueError("a role request must be a JSON object")  # noqa: TRY004
        justification = data.get("justification")
        requested_by = data.get("requested_by")
        if not isinstance(justification, str) or not isinstance(requested_by, str):
            raise ValueError(  # noqa: TRY004
                "a role request needs a justification and who requested it"
            )
        ticket_number = _optional_str(data, "ticket_number")
        ticket_system = _optional_str(data, "ticket_system")
        duration_text = _optional_str(data, "duration")
        duration = None
        if duration_text is not None:
            duration = parse_iso_duration(duration_text)
            if duration is None or duration <= timedelta(0):
                raise ValueError(f"not an ISO 8601 duration: {duration_text!r}")
        return cls(
            justification=justification,
            requested_by=requested_by,
            ticket_number=ticket_number,
            ticket_system=ticket_system,
            duration=duration,
        )


@dataclass(frozen=True)
class Acknowledgement:
    """An approver's acknowledgement of exactly one request (its ``RoleRequest.digest``)."""

    by: str
    at: float
    request_digest: str


@dataclass(frozen=True)
class AssignmentClaim:
    """A sign-in came back and the role is being assigned with it, for this request."""

    by: str  # who opened the sign-in ("microsoft" when nobody is known)
    at: float
    request_digest: str


@dataclass(frozen=True)
class SeenRequest:
    """An event's payload: the request (by digest) the person acted on or the bot is sending."""

    digest: str


@dataclass(frozen=True)
class AssignmentFailed:
    """An event's payload: the assignment did not happen; Microsoft may have said what it needs."""

    requirements: RoleRequirements | None = None


@dataclass(frozen=True)
class RoleAssigned:
    """An event's payload: the role is assigned; ``signed_in_as`` is the Microsoft account the
    bot assigned it with (``None``: assigned in the portal, or found in place)."""

    signed_in_as: str | None = None


@dataclass(frozen=True)
class RoleState:
    """Everything step 2 knows between clicks; changed only by workflow transitions.

    ``request_version`` is the session version the request was made in: the review message
    posted for it is kept under that version.
    """

    requirements: RoleRequirements | None = None
    request: RoleRequest | None = None
    requested_at: float | None = None
    request_version: int = 0
    reminded_at: float | None = None
    acknowledgement: Acknowledgement | None = None
    sign_in_opened_by: str | None = None
    assigning: AssignmentClaim | None = None
    assigned_as: str | None = None  # who signed in at Microsoft for the assignment (a UPN)

    @property
    def acknowledged_request(self) -> RoleRequest | None:
        """The request, if the acknowledgement covers it exactly."""
        ack = self.acknowledgement
        if self.request is None or ack is None or ack.request_digest != self.request.digest():
            return None
        return self.request


def _optional_str(data: Mapping[str, Any], key: str) -> str | None:
    value = data.get(key)
    if value is None:
        return None
    if not isinstance(value, str):
        raise ValueError(f"{key} must be a string")  # noqa: TRY004
    return value


# -- validation of the modal -----------------------------------------------------------------------

StateValues = Mapping[str, Mapping[str, Mapping[str, Any]]]


def _text(values: StateValues, block: str, action: str) -> str:
    element = values.get(block, {}).get(action, {})
    value = element.get("value") if isinstance(element, Mapping) else None
    return value.strip() if isinstance(value, str) else ""


def _selected(values: StateValues, block: str, action: str) -> str:
    element = values.get(block, {}).get(action, {})
    option = element.get("selected_option") if isinstance(element, Mapping) else None
    value = option.get("value") if isinstance(option, Mapping) else None
    return value if isinstance(value, str) else ""


def validate(
    values: StateValues, requirements: RoleRequirements, *, requested_by: str
) -> RoleRequest | dict[str, str]:
    """The request from a ``role_request`` modal submission, or ``{block_id: error}``.

    Every error says what to change. Ticket fields count only when the policy requires ticketing;
    the duration only when it forbids permanent assignments (it must not exceed the maximum).
    """
    errors: dict[str, str] = {}

    justification = _text(values, JUSTIFICATION_BLOCK, JUSTIFICATION_ACTION)
    longest = requirements.justification_max_length
    shortest = requirements.justification_min_length
    if not justification and requirements.justification_required:
        errors[JUSTIFICATION_BLOCK] = (
            "Enter a justification: the tenant's PIM policy requires one. Say why the mail-flow "
            "app needs the role, e.g. “Inline mail protection must configure Exchange mail flow”."
        )
    elif justification and len(justification) < shortest:
        errors[JUSTIFICATION_BLOCK] = (
            f"Write at least {shortest} characters (you wrote {len(justification)}): say why "
            "the mail-flow app needs the Exchange Administrator role."
        )
    elif len(justification) > longest:
        errors[JUSTIFICATION_BLOCK] = (
            f"Shorten the justification to {longest} characters or fewer (it has "
            f"{len(justification)}); Microsoft refuses longer ones."
        )

    ticket_number = ticket_system = None
    if requirements.ticketing_required:
        for block, action, name in (
            (TICKET_NUMBER_BLOCK, TICKET_NUMBER_ACTION, "ticket number"),
            (TICKET_SYSTEM_BLOCK, TICKET_SYSTEM_ACTION, "ticket system"),
        ):
            value = _text(values, block, action)
            if not value:
                example = "CHG0012345" if block == TICKET_NUMBER_BLOCK else "ServiceNow"
                errors[block] = (
                    f"Enter the {name} (e.g. {example}): the tenant's PIM policy requires "
                    "ticket information for this role."
                )
            elif len(value) > TICKET_FIELD_MAX_LENGTH:
                errors[block] = (
                    f"Shorten the {name} to {TICKET_FIELD_MAX_LENGTH} characters or fewer "
                    f"(it has {len(value)})."
                )
            elif block == TICKET_NUMBER_BLOCK:
                ticket_number = value
            else:
                ticket_system = value

    duration: timedelta | None = None
    if requirements.expiration_required:
        chosen = _selected(values, DURATION_BLOCK, DURATION_ACTION)
        parsed = parse_iso_duration(chosen) if chosen else None
        longest_duration = requirements.longest_duration
        if not chosen:
            errors[DURATION_BLOCK] = (
                "Choose how long the assignment lasts: the tenant's PIM policy does not allow "
                f"permanent assignments (at most {describe_duration(longest_duration)})."
            )
        elif parsed is None or parsed <= timedelta(0):
            errors[DURATION_BLOCK] = "Choose one of the durations in the list."
        elif parsed > longest_duration:
            errors[DURATION_BLOCK] = (
                f"Choose {describe_duration(longest_duration)} or less: the tenant's PIM policy "
                "allows no longer assignments."
            )
        else:
            duration = parsed

    if errors:
        return errors
    return RoleRequest(
        justification=justification,
        requested_by=requested_by,
        ticket_number=ticket_number,
        ticket_system=ticket_system,
        duration=duration,
    )

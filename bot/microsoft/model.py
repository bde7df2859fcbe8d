"""What Graph answers, typed (pure): well-known ids, service principals, roles, PIM policies and
schedules, domains, the organization; and ISO 8601 dates and durations as Graph writes them."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

__all__ = [
    "EXCHANGE_ADMINISTRATOR",
    "EXCHANGE_MANAGE_AS_APP",
    "EXCHANGE_ONLINE_APP_ID",
    "GLOBAL_ADMINISTRATOR",
    "GRAPH_APP_ROLES",
    "PRIVILEGED_ROLE_ADMINISTRATOR",
    "VERIFY_GRAPH_PERMISSIONS",
    "ActiveAssignments",
    "AppRoleAssignment",
    "Domain",
    "Expiration",
    "Organization",
    "RoleAssignment",
    "RolePolicy",
    "ScheduleRequest",
    "ServicePrincipal",
    "Ticket",
    "iso_time",
    "parse_iso_duration",
    "parse_time",
]


EXCHANGE_ADMINISTRATOR = "29232cdf-9323-42fd-ade2-1d097af3e4de"
PRIVILEGED_ROLE_ADMINISTRATOR = "e8611ab8-c189-46e8-94e1-60213ab1f814"
GLOBAL_ADMINISTRATOR = "62e90394-69f5-4237-9190-012177145e10"
EXCHANGE_ONLINE_APP_ID = "00000002-0000-0ff1-ce00-000000000000"
EXCHANGE_MANAGE_AS_APP = "dc50a0fb-09a3-484d-be87-e023b12c6440"
#: Microsoft Graph application permissions (app roles of resource app
#: ``00000003-0000-0000-c000-000000000000``) by name, as ``appRoleAssignments`` name them by id.
GRAPH_APP_ROLES = {
    "Application.Read.All": "9a5d68dd-52b0-4cc2-bd40-abcf44ac3a30",
    "Domain.Read.All": "dbb9058a-0e50-45d7-ae91-66909b5d4664",
    "RoleManagement.Read.Directory": "483bed4a-2ad3-4361-a73b-c83ccdbdc53c",
}
#: What the directory-sync app reads verification with (service principals, domains, roles).
VERIFY_GRAPH_PERMISSIONS = (
    "Application.Read.All",
    "Domain.Read.All",
    "RoleManagement.Read.Directory",
)


# -- results -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ServicePrincipal:
    id: str
    app_id: str
    display_name: str
    app_owner_organization_id: str | None


@dataclass(frozen=True)
class AppRoleAssignment:
    id: str
    principal_id: str
    resource_id: str
    resource_display_name: str
    app_role_id: str


@dataclass(frozen=True)
class RolePolicy:
    """What a PIM admin assignment of one role needs (rules of its role management policy)."""

    role_definition_id: str
    policy_id: str
    justification_required: bool
    ticketing_required: bool
    mfa_required: bool
    expiration_required: bool
    maximum_duration: timedelta | None
    maximum_duration_iso: str | None


@dataclass(frozen=True)
class Expiration:
    """``scheduleInfo.expiration`` of a PIM request."""

    type: Literal["noExpiration", "afterDuration", "afterDateTime"] = "noExpiration"
    duration: str | None = None
    end: datetime | None = None

    @classmethod
    def never(cls) -> Expiration:
        return cls()

    @classmethod
    def after(cls, duration: str) -> Expiration:
        """``duration`` in ISO 8601, e.g. ``P180D``."""
        if parse_iso_duration(duration) is None:
            raise ValueError(f"not an ISO 8601 duration: {duration!r}")
        return cls("afterDuration", duration=duration)

    @classmethod
    def at(cls, end: datetime) -> Expiration:
        return cls("afterDateTime", end=end)

    def to_json(self) -> dict[str, Any]:
        if self.type == "afterDuration":
            return {"type": self.type, "duration": self.duration}
        if self.type == "afterDateTime" and self.end is not None:
            return {"type": self.type, "endDateTime": iso_time(self.end)}
        return {"type": "noExpiration"}


@dataclass(frozen=True)
class Ticket:
    number: str
    system: str = ""


@dataclass(frozen=True)
class ScheduleRequest:
    id: str
    status: str
    principal_id: str
    role_definition_id: str
    target_schedule_id: str | None


@dataclass(frozen=True)
class RoleAssignment:
    """An active role assignment (from PIM schedule instances or plain role assignments)."""

    id: str
    principal_id: str
    role_definition_id: str
    directory_scope_id: str
    start: datetime | None = None
    end: datetime | None = None


@dataclass(frozen=True)
class ActiveAssignments:
    """Active assignments of a role; ``via_pim`` False when the tenant has no Entra ID P2."""

    assignments: tuple[RoleAssignment, ...]
    via_pim: bool

    def __bool__(self) -> bool:
        return bool(self.assignments)


@dataclass(frozen=True)
class Domain:
    name: str
    is_verified: bool
    is_default: bool
    is_initial: bool
    supported_services: tuple[str, ...]


@dataclass(frozen=True)
class Organization:
    id: str
    display_name: str
    verified_domains: tuple[str, ...]
    default_domain: str | None
    initial_domain: str | None


# -- helpers -------------------------------------------------------------------------------------


def iso_time(moment: datetime) -> str:
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_time(value: Any) -> datetime | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


_DURATION = re.compile(
    r"^P(?:(?P<w>\d+)W)?(?:(?P<d>\d+)D)?(?:T(?:(?P<h>\d+)H)?(?:(?P<m>\d+)M)?(?:(?P<s>\d+)S)?)?$"
)


def parse_iso_duration(text: str) -> timedelta | None:
    """``P180D``, ``PT8H``, ``P1DT12H`` → timedelta; ``None`` if not such a duration.

    Years and months are not accepted (they have no fixed length); Entra ID uses days.
    """
    match = _DURATION.match(text.strip().upper())
    if match is None or text.strip().upper() in ("P", "PT") or text.strip().upper().endswith("T"):
        return None
    parts = {k: int(v) if v else 0 for k, v in match.groupdict().items()}
    return timedelta(
        weeks=parts["w"], days=parts["d"], hours=parts["h"], minutes=parts["m"], seconds=parts["s"]
    )

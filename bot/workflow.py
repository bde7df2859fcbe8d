"""The provisioning procedure as a pure state machine.

``advance(session, event)`` returns the next session and the effects to carry out; it does no I/O.
The allowed moves are one explicit table, ``TRANSITIONS``: a move that is not in it raises
``TransitionNotAllowed``, which tells the caller what state the session is in and who put it
there (so a second approver's click can be answered "already done by …").

``Session`` is the whole state of a provisioning, one typed record: the phase, its history, and
each step's state (``RoleState``, ``PlanState``, ``UpgradeFindings``). Step state changes only
here, through an event (with its typed payload): updates that do not change the phase ("the plan
was shown with these findings", "the warnings were acknowledged") are self-transitions in the
table. Some moves have a guard, checked on the same record the compare-and-set stores; a failed
guard raises ``TransitionRefused`` with the reason.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import Any, TypeVar

from bot.session.record import decode, encode
from bot.steps.mailflow.model import PlanState, UpgradeFindings, WarningsAcknowledged
from bot.steps.role.model import (
    Acknowledgement,
    AssignmentClaim,
    AssignmentFailed,
    RoleAssigned,
    RoleRequest,
    RoleState,
    SeenRequest,
)
from bot.steps.role.requirements import RoleRequirements

__all__ = [
    "TERMINAL",
    "TRANSITIONS",
    "UPDATES",
    "WORKING",
    "Effect",
    "Event",
    "EventKind",
    "HistoryEntry",
    "Payload",
    "Phase",
    "Scope",
    "Session",
    "Step",
    "StepProgress",
    "Thread",
    "Transition",
    "TransitionNotAllowed",
    "TransitionRefused",
    "Why",
    "advance",
    "checklist",
]


class Phase(StrEnum):
    """Where a session stands; each name says what has just happened."""

    STARTED = "started"  # waiting for the mail-flow consent (step 1)
    MAILFLOW_CONSENTED = "mailflow_consented"  # step 1 done; the role request is next
    ROLE_REQUESTED = "role_requested"  # justification submitted; an approver must acknowledge
    ROLE_ACKNOWLEDGED = "role_acknowledged"  # approved; the role must be assigned
    ROLE_ASSIGNING = "role_assigning"  # a sign-in came back; the bot is asking Microsoft
    ROLE_ASSIGNED = "role_assigned"  # step 2 done; the directory-sync consent is next
    DIRECTORY_CONSENTED = "directory_consented"  # step 3 done; verification is next
    VERIFYING = "verifying"
    PLAN_SHOWN = "plan_shown"  # verified; the change plan waits for Submit
    APPLYING = "applying"
    PROTECTED = "protected"
    FAILED = "failed"  # applying stopped on an error; Retry resumes it
    CANCELLED = "cancelled"
    EXPIRED = "expired"


TERMINAL = frozenset({Phase.PROTECTED, Phase.CANCELLED, Phase.EXPIRED})

# Phases in which the bot works on its own, in a background job that survives restarts.
WORKING = frozenset({Phase.VERIFYING, Phase.APPLYING})


class Scope(StrEnum):
    FULL = "inbound_outbound"
    UPGRADE = "upgrade_outbound"


class EventKind(StrEnum):
    MAILFLOW_CONSENT = "mailflow_consent"
    ROLE_REQUEST = "role_request"
    ROLE_ACKNOWLEDGE = "role_acknowledge"
    ROLE_DECLINE = "role_decline"
    ROLE_WITHDRAW = "role_withdraw"
    ROLE_REQUEST_EXPIRED = "role_request_expired"
    ROLE_FOUND = "role_found"  # the role was already in place (an upgrade; checked in Graph)
    ROLE_ASSIGNING = "role_assigning"  # payload SeenRequest: the request about to be sent
    ROLE_ASSIGN_FAILED = "role_assign_failed"  # payload AssignmentFailed
    ROLE_ASSIGNED = "role_assigned"
    DIRECTORY_CONSENT = "directory_consent"
    VERIFY = "verify"
    VERIFICATION_PASSED = "verification_passed"
    VERIFICATION_FAILED = "verification_failed"
    SUBMIT = "submit"
    APPLY_SUCCEEDED = "apply_succeeded"
    APPLY_FAILED = "apply_failed"
    RETRY = "retry"
    CANCEL = "cancel"
    EXPIRE = "expire"
    # Updates: they change step state, never the phase (self-transitions below).
    ROOT_POSTED = "root_posted"  # payload Thread
    ROLE_REQUIREMENTS = "role_requirements"  # payload RoleRequirements
    ROLE_REMINDED = "role_reminded"
    ROLE_SIGN_IN_OPENED = "role_sign_in_opened"
    UPGRADE_CHECKED = "upgrade_checked"  # payload UpgradeFindings
    PLAN_READ = "plan_read"  # payload PlanState
    WARNINGS_ACKNOWLEDGE = "warnings_acknowledge"


#: Event kinds that never change the phase: no history entry, no effects but showing some of
#: them (``_SHOWN_UPDATES``).
UPDATES = frozenset(
    {
        EventKind.ROOT_POSTED,
        EventKind.ROLE_REQUIREMENTS,
        EventKind.ROLE_REMINDED,
        EventKind.ROLE_SIGN_IN_OPENED,
        EventKind.UPGRADE_CHECKED,
        EventKind.PLAN_READ,
        EventKind.WARNINGS_ACKNOWLEDGE,
    }
)

# Updates a step shows in the thread.
_SHOWN_UPDATES = frozenset({EventKind.ROOT_POSTED, EventKind.WARNINGS_ACKNOWLEDGE})

# Phase changes the step itself reports in the thread (the outcome of the assignment).
_QUIET = frozenset({EventKind.ROLE_ASSIGNING, EventKind.ROLE_ASSIGN_FAILED})


_ACTIVE = [phase for phase in Phase if phase not in TERMINAL]

# (from, event) -> to. Cancel and expiry are allowed from every phase that is not terminal.
TRANSITIONS: Mapping[tuple[Phase, EventKind], Phase] = {
    (Phase.STARTED, EventKind.MAILFLOW_CONSENT): Phase.MAILFLOW_CONSENTED,
    (Phase.MAILFLOW_CONSENTED, EventKind.ROLE_REQUEST): Phase.ROLE_REQUESTED,
    (Phase.ROLE_REQUESTED, EventKind.ROLE_ACKNOWLEDGE): Phase.ROLE_ACKNOWLEDGED,
    (Phase.ROLE_REQUESTED, EventKind.ROLE_DECLINE): Phase.MAILFLOW_CONSENTED,
    (Phase.ROLE_REQUESTED, EventKind.ROLE_WITHDRAW): Phase.MAILFLOW_CONSENTED,
    (Phase.ROLE_REQUESTED, EventKind.ROLE_REQUEST_EXPIRED): Phase.MAILFLOW_CONSENTED,
    # A request changed after acknowledgement (Microsoft asked for more) is reviewed again.
    (Phase.ROLE_ACKNOWLEDGED, EventKind.ROLE_REQUEST): Phase.ROLE_REQUESTED,
    (Phase.MAILFLOW_CONSENTED, EventKind.ROLE_FOUND): Phase.ROLE_ASSIGNED,
    # "I've assigned it" (portal), checked in Graph.
    (Phase.ROLE_ACKNOWLEDGED, EventKind.ROLE_ASSIGNED): Phase.ROLE_ASSIGNED,
    # "Assign for me": the acknowledged request is claimed before it goes to Microsoft, so it
    # cannot be amended while on its way.
    (Phase.ROLE_ACKNOWLEDGED, EventKind.ROLE_ASSIGNING): Phase.ROLE_ASSIGNING,
    (Phase.ROLE_ASSIGNING, EventKind.ROLE_ASSIGNED): Phase.ROLE_ASSIGNED,
    (Phase.ROLE_ASSIGNING, EventKind.ROLE_ASSIGN_FAILED): Phase.ROLE_ACKNOWLEDGED,
    (Phase.ROLE_ASSIGNED, EventKind.DIRECTORY_CONSENT): Phase.DIRECTORY_CONSENTED,
    # Only from step 3 done (or a failed verification): once the plan is shown no message
    # offers Verify, so a Verify pressed then is a stale click on an earlier message, and
    # must not run the verification and post the plan again (the plan's Check again re-reads).
    (Phase.DIRECTORY_CONSENTED, EventKind.VERIFY): Phase.VERIFYING,
    (Phase.VERIFYING, EventKind.VERIFICATION_PASSED): Phase.PLAN_SHOWN,
    (Phase.VERIFYING, EventKind.VERIFICATION_FAILED): Phase.DIRECTORY_CONSENTED,
    (Phase.PLAN_SHOWN, EventKind.SUBMIT): Phase.APPLYING,
    (Phase.APPLYING, EventKind.APPLY_SUCCEEDED): Phase.PROTECTED,
    (Phase.APPLYING, EventKind.APPLY_FAILED): Phase.FAILED,
    (Phase.FAILED, EventKind.RETRY): Phase.APPLYING,
    # Self-transitions: step state changes in place.
    (Phase.STARTED, EventKind.ROOT_POSTED): Phase.STARTED,
    (Phase.MAILFLOW_CONSENTED, EventKind.ROLE_REQUIREMENTS): Phase.MAILFLOW_CONSENTED,
    (Phase.ROLE_REQUESTED, EventKind.ROLE_REMINDED): Phase.ROLE_REQUESTED,
    (Phase.ROLE_ACKNOWLEDGED, EventKind.ROLE_SIGN_IN_OPENED): Phase.ROLE_ACKNOWLEDGED,
    **{
        (phase, EventKind.UPGRADE_CHECKED): phase
        for phase in (Phase.STARTED, Phase.MAILFLOW_CONSENTED, Phase.ROLE_ASSIGNED)
    },
    (Phase.PLAN_SHOWN, EventKind.PLAN_READ): Phase.PLAN_SHOWN,
    (Phase.PLAN_SHOWN, EventKind.WARNINGS_ACKNOWLEDGE): Phase.PLAN_SHOWN,
    # Not while Exchange is being changed: a half-applied plan must finish or fail (then Retry
    # or cancel), never be abandoned silently while the job goes on.
    **{
        (phase, EventKind.CANCEL): Phase.CANCELLED
        for phase in _ACTIVE
        if phase is not Phase.APPLYING
    },
    **{
        (phase, EventKind.EXPIRE): Phase.EXPIRED for phase in _ACTIVE if phase is not Phase.APPLYING
    },
}


class Step(StrEnum):
    MAILFLOW_CONSENT = "mailflow_consent"
    EXCHANGE_ROLE = "exchange_role"
    DIRECTORY_CONSENT = "directory_consent"
    VERIFY_AND_SUBMIT = "verify_and_submit"


STEP_TITLES: Mapping[Step, str] = {
    Step.MAILFLOW_CONSENT: "Consent for mail flow",
    Step.EXCHANGE_ROLE: "Exchange Administrator role for the mail-flow app",
    Step.DIRECTORY_CONSENT: "Consent for directory sync",
    Step.VERIFY_AND_SUBMIT: "Verify and submit",
}

# The event that completes each step, and the phases in which the step is the one being worked on.
_STEP_DONE_BY: Mapping[Step, frozenset[EventKind]] = {
    Step.MAILFLOW_CONSENT: frozenset({EventKind.MAILFLOW_CONSENT}),
    Step.EXCHANGE_ROLE: frozenset({EventKind.ROLE_ASSIGNED, EventKind.ROLE_FOUND}),
    Step.DIRECTORY_CONSENT: frozenset({EventKind.DIRECTORY_CONSENT}),
    Step.VERIFY_AND_SUBMIT: frozenset({EventKind.APPLY_SUCCEEDED}),
}
_STEP_CURRENT_IN: Mapping[Step, frozenset[Phase]] = {
    Step.MAILFLOW_CONSENT: frozenset({Phase.STARTED}),
    Step.EXCHANGE_ROLE: frozenset(
        {
            Phase.MAILFLOW_CONSENTED,
            Phase.ROLE_REQUESTED,
            Phase.ROLE_ACKNOWLEDGED,
            Phase.ROLE_ASSIGNING,
        }
    ),
    Step.DIRECTORY_CONSENT: frozenset({Phase.ROLE_ASSIGNED}),
    Step.VERIFY_AND_SUBMIT: frozenset(
        {Phase.DIRECTORY_CONSENTED, Phase.VERIFYING, Phase.PLAN_SHOWN, Phase.APPLYING, Phase.FAILED}
    ),
}


@dataclass(frozen=True)
class Thread:
    """An event's payload: the root message the session's thread hangs from."""

    ts: str


Payload = (
    RoleRequest
    | RoleRequirements
    | SeenRequest
    | AssignmentFailed
    | RoleAssigned
    | PlanState
    | UpgradeFindings
    | Thread
)


@dataclass(frozen=True)
class Event:
    kind: EventKind
    actor: str  # a Slack user id, or "system" for timers and background work
    at: float
    detail: Mapping[str, str] = field(default_factory=dict)  # for the audit entry
    payload: Payload | None = None  # what the event brings into the session's state


@dataclass(frozen=True)
class HistoryEntry:
    kind: EventKind
    actor: str
    at: float
    phase: Phase  # the phase the event led to


@dataclass(frozen=True)
class Session:
    id: str
    tenant_id: str
    tenant_label: str  # what the admin typed: a verified domain or the tenant id
    scope: Scope
    channel_id: str
    started_by: str
    created_at: float
    phase: Phase = Phase.STARTED
    version: int = 0
    updated_at: float = 0.0
    root_ts: str | None = None
    history: tuple[HistoryEntry, ...] = ()
    role: RoleState = field(default_factory=RoleState)
    plan: PlanState | None = None
    upgrade: UpgradeFindings | None = None

    @property
    def is_active(self) -> bool:
        return self.phase not in TERMINAL

    def last(self, *kinds: EventKind) -> HistoryEntry | None:
        """The latest history entry of any of ``kinds``."""
        for entry in reversed(self.history):
            if entry.kind in kinds:
                return entry
        return None

    def to_json(self) -> str:
        return json.dumps(encode(self), separators=(",", ":"))

    def archived_json(self) -> str:
        """What is kept once the session has finished: where it ran, for which tenant, how it
        ended and who ended it (its last history entry, for a late click's answer). The steps'
        working state is dropped: the audit stream keeps the decisions."""
        kept = replace(self, history=self.history[-1:], role=RoleState(), plan=None, upgrade=None)
        return kept.to_json()

    @classmethod
    def from_json(cls, text: str | bytes) -> Session:
        data: dict[str, Any] = json.loads(text)
        # Records stored before history entries were objects held them as lists.
        data["history"] = [
            dict(zip(("kind", "actor", "at", "phase"), entry, strict=True))
            if isinstance(entry, list)
            else entry
            for entry in data.get("history", [])
        ]
        return decode(cls, data)


class Effect(StrEnum):
    """What the executor must do after a transition has been stored."""

    REFRESH_ROOT = "refresh_root"  # re-render the root checklist (chat.update)
    # The steps' own thread messages follow the move: the step left says who did it, the step
    # entered posts (or updates) its prompt and says whom it waits for.
    SHOW_STEPS = "show_steps"
    NOTE_IN_THREAD = "note_in_thread"  # cancelled or expired: say so in the thread
    RELEASE_TENANT = "release_tenant"  # the session is over: another may start for this tenant
    ANNOUNCE = "announce"  # post "Exchange Online protected in inline mode." to the channel(s)
    RUN_JOB = "run_job"  # start the background job of a working phase


@dataclass(frozen=True)
class Transition:
    before: Session
    after: Session
    event: Event
    effects: tuple[Effect, ...]


class TransitionNotAllowed(Exception):
    """The event does not apply to the session's phase (often: somebody else was quicker)."""

    def __init__(self, session: Session, event: Event) -> None:
        self.session = session
        self.event = event
        latest = session.history[-1] if session.history else None
        self.decided_by = latest.actor if latest else session.started_by
        super().__init__(f"{event.kind.value} is not allowed while the session is {session.phase}")


AMENDING = "amending"
"""The detail of a ``ROLE_REQUEST`` that amends the acknowledged request ("yes")."""


class Why(StrEnum):
    """Why a guard refused a move the table allows in this phase."""

    NO_REQUEST = "no_request"
    REQUEST_CHANGED = "request_changed"  # not the request the person saw
    OWN_REQUEST = "own_request"  # a requester cannot acknowledge their own request
    NOT_REQUESTER = "not_requester"  # only the requester may withdraw
    NOT_ACKNOWLEDGED = "not_acknowledged"  # the request to assign is not the acknowledged one
    PLAN_NOT_READ = "plan_not_read"
    BLOCKED = "blocked"
    WARNINGS_PENDING = "warnings_pending"
    NO_WARNINGS = "no_warnings"
    ALREADY_ACKNOWLEDGED = "already_acknowledged"
    ALREADY_REQUESTED = "already_requested"  # only an amendment replaces a request made


P = TypeVar("P")


class TransitionRefused(TransitionNotAllowed):
    """The move is in the table, but the session's state does not allow it (``why``)."""

    def __init__(self, session: Session, event: Event, why: Why, by: str | None = None) -> None:
        super().__init__(session, event)
        self.why = why
        if by is not None:
            self.decided_by = by


def _payload(event: Event, kind: type[P]) -> P:
    if not isinstance(event.payload, kind):
        raise TypeError(f"{event.kind.value} needs a {kind.__name__} payload")
    return event.payload


def _check(session: Session, event: Event) -> None:
    """Raise ``TransitionRefused`` when the move's guard does not hold."""
    role = session.role
    kind = event.kind

    def refuse(why: Why, by: str | None = None) -> None:
        raise TransitionRefused(session, event, why, by)

    if kind in (EventKind.ROLE_ACKNOWLEDGE, EventKind.ROLE_DECLINE, EventKind.ROLE_WITHDRAW):
        if role.request is None:
            refuse(Why.NO_REQUEST)
            return
        seen = event.payload
        if isinstance(seen, SeenRequest) and seen.digest != role.request.digest():
            refuse(Why.REQUEST_CHANGED, role.request.requested_by)
        if kind is EventKind.ROLE_ACKNOWLEDGE and event.actor == role.request.requested_by:
            refuse(Why.OWN_REQUEST)
        if kind is EventKind.ROLE_WITHDRAW and event.actor != role.request.requested_by:
            refuse(Why.NOT_REQUESTER, role.request.requested_by)
    elif kind is EventKind.ROLE_REQUEST and session.phase is Phase.ROLE_ACKNOWLEDGED:
        # A first request's form (one opened from a copy of step 2's first message, or left
        # open) must not replace the acknowledged request: only *Complete the request*, after
        # Microsoft asked for more, amends it.
        if event.detail.get(AMENDING) != "yes":
            refuse(Why.ALREADY_REQUESTED, role.request.requested_by if role.request else None)
    elif kind is EventKind.ROLE_ASSIGNING:
        sending = _payload(event, SeenRequest)
        acknowledged = role.acknowledged_request
        if acknowledged is None or acknowledged.digest() != sending.digest:
            refuse(Why.NOT_ACKNOWLEDGED)
    elif kind is EventKind.WARNINGS_ACKNOWLEDGE:
        plan = session.plan
        if plan is None or not plan.warnings_fingerprint:
            refuse(Why.NO_WARNINGS)
        elif plan.acknowledged_by is not None:
            refuse(Why.ALREADY_ACKNOWLEDGED, plan.acknowledged_by)
    elif kind is EventKind.SUBMIT and session.phase is Phase.PLAN_SHOWN:
        plan = session.plan
        if plan is None:
            refuse(Why.PLAN_NOT_READ)
        elif plan.blockers:
            refuse(Why.BLOCKED)
        elif plan.warnings_fingerprint and plan.acknowledged_by is None:
            refuse(Why.WARNINGS_PENDING)


def _record(session: Session, event: Event, version: int) -> Session:
    """The step state after ``event`` (which the table and its guard allowed)."""
    role = session.role
    kind = event.kind
    if kind is EventKind.ROOT_POSTED:
        return replace(session, root_ts=_payload(event, Thread).ts)
    if kind is EventKind.ROLE_REQUIREMENTS:
        role = replace(role, requirements=_payload(event, RoleRequirements))
    elif kind is EventKind.ROLE_REQUEST:
        # A new or amended request: whatever was acknowledged before no longer counts.
        role = replace(
            role,
            request=_payload(event, RoleRequest),
            requested_at=event.at,
            request_version=version,
            reminded_at=None,
            acknowledgement=None,
            sign_in_opened_by=None,
            assigning=None,
        )
    elif kind is EventKind.ROLE_ACKNOWLEDGE and role.request is not None:
        role = replace(
            role, acknowledgement=Acknowledgement(event.actor, event.at, role.request.digest())
        )
    elif kind is EventKind.ROLE_REMINDED:
        role = replace(role, reminded_at=event.at)
    elif kind is EventKind.ROLE_SIGN_IN_OPENED:
        role = replace(role, sign_in_opened_by=event.actor)
    elif kind is EventKind.ROLE_ASSIGNING:
        claim = AssignmentClaim(event.actor, event.at, _payload(event, SeenRequest).digest)
        role = replace(role, assigning=claim)
    elif kind is EventKind.ROLE_ASSIGNED and isinstance(event.payload, RoleAssigned):
        role = replace(role, assigning=None, assigned_as=event.payload.signed_in_as)
    elif kind is EventKind.ROLE_ASSIGN_FAILED:
        failed = event.payload if isinstance(event.payload, AssignmentFailed) else None
        tightened = failed.requirements if failed is not None else None
        role = replace(role, assigning=None, requirements=tightened or role.requirements)
    elif kind is EventKind.UPGRADE_CHECKED:
        return replace(session, upgrade=_payload(event, UpgradeFindings))
    elif kind is EventKind.PLAN_READ:
        shown = _payload(event, PlanState).replacing(session.plan, version)
        return replace(session, plan=shown)
    elif kind is EventKind.WARNINGS_ACKNOWLEDGE and session.plan is not None:
        ack = WarningsAcknowledged(session.plan.warnings_fingerprint, event.actor, event.at)
        return replace(session, plan=replace(session.plan, acknowledged=ack))
    return replace(session, role=role)


def advance(session: Session, event: Event) -> Transition:
    """Apply ``event`` to ``session``; raise ``TransitionNotAllowed`` if the table has no move
    (``TransitionRefused`` if its guard does not hold)."""
    target = TRANSITIONS.get((session.phase, event.kind))
    if target is None:
        raise TransitionNotAllowed(session, event)
    _check(session, event)
    version = session.version + 1
    after = replace(_record(session, event, version), version=version, updated_at=event.at)
    if event.kind in UPDATES:
        # The root message posted opens the thread (the first step shows itself there); the
        # warnings acknowledged change the Submit message. Through the outbox, in order, so
        # the edit never comes before the message it edits was posted.
        shown = (Effect.SHOW_STEPS,) if event.kind in _SHOWN_UPDATES else ()
        return Transition(before=session, after=after, event=event, effects=shown)
    after = replace(
        after,
        phase=target,
        history=(*session.history, HistoryEntry(event.kind, event.actor, event.at, target)),
    )
    effects = [Effect.REFRESH_ROOT]
    if event.kind in _QUIET:
        return Transition(before=session, after=after, event=event, effects=tuple(effects))
    effects.append(Effect.SHOW_STEPS)
    if target in (Phase.CANCELLED, Phase.EXPIRED):
        effects.append(Effect.NOTE_IN_THREAD)
    if target in TERMINAL:
        effects.append(Effect.RELEASE_TENANT)
    if target is Phase.PROTECTED:
        effects.append(Effect.ANNOUNCE)
    if target in WORKING:
        effects.append(Effect.RUN_JOB)
    return Transition(before=session, after=after, event=event, effects=tuple(effects))


class StepStatus(StrEnum):
    DONE = "done"
    CURRENT = "current"
    WAITING = "waiting"
    STOPPED = "stopped"  # the session ended before this step was done


@dataclass(frozen=True)
class StepProgress:
    step: Step
    title: str
    status: StepStatus
    done_by: str | None = None
    done_at: float | None = None


def checklist(session: Session) -> tuple[StepProgress, ...]:
    """The four steps of DESIGN §1 with who finished each and when; derived, never stored."""
    rows: list[StepProgress] = []
    for step in Step:
        done = session.last(*_STEP_DONE_BY[step])
        if done is not None:
            status = StepStatus.DONE
        elif session.phase in _STEP_CURRENT_IN[step]:
            status = StepStatus.CURRENT
        elif not session.is_active:
            status = StepStatus.STOPPED
        else:
            status = StepStatus.WAITING
        rows.append(
            StepProgress(
                step=step,
                title=STEP_TITLES[step],
                status=status,
                done_by=done.actor if done else None,
                done_at=done.at if done else None,
            )
        )
    return tuple(rows)

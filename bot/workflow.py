"""The provisioning procedure as a pure state machine.

``advance(session, event)`` returns the next session and the effects to carry out; it does no I/O.
The allowed moves are one explicit table, ``TRANSITIONS``: a move that is not in it raises
``TransitionNotAllowed``, which tells the caller what state the session is in and who put it
there (so a second approver's click can be answered "already done by …").
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import Any

__all__ = [
    "TERMINAL",
    "TRANSITIONS",
    "WORKING",
    "Effect",
    "Event",
    "EventKind",
    "HistoryEntry",
    "Phase",
    "Scope",
    "Session",
    "Step",
    "StepProgress",
    "Transition",
    "TransitionNotAllowed",
    "advance",
    "checklist",
]


class Phase(StrEnum):
    """Where a session stands; each name says what has just happened."""

    STARTED = "started"  # waiting for the mail-flow consent (step 1)
    MAILFLOW_CONSENTED = "mailflow_consented"  # step 1 done; the role request is next
    ROLE_REQUESTED = "role_requested"  # justification submitted; an approver must acknowledge
    ROLE_ACKNOWLEDGED = "role_acknowledged"  # approved; the role must be assigned
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
    (Phase.ROLE_ACKNOWLEDGED, EventKind.ROLE_ASSIGNED): Phase.ROLE_ASSIGNED,
    (Phase.ROLE_ASSIGNED, EventKind.DIRECTORY_CONSENT): Phase.DIRECTORY_CONSENTED,
    (Phase.DIRECTORY_CONSENTED, EventKind.VERIFY): Phase.VERIFYING,
    (Phase.PLAN_SHOWN, EventKind.VERIFY): Phase.VERIFYING,
    (Phase.VERIFYING, EventKind.VERIFICATION_PASSED): Phase.PLAN_SHOWN,
    (Phase.VERIFYING, EventKind.VERIFICATION_FAILED): Phase.DIRECTORY_CONSENTED,
    (Phase.PLAN_SHOWN, EventKind.SUBMIT): Phase.APPLYING,
    (Phase.APPLYING, EventKind.APPLY_SUCCEEDED): Phase.PROTECTED,
    (Phase.APPLYING, EventKind.APPLY_FAILED): Phase.FAILED,
    (Phase.FAILED, EventKind.RETRY): Phase.APPLYING,
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
        {Phase.MAILFLOW_CONSENTED, Phase.ROLE_REQUESTED, Phase.ROLE_ACKNOWLEDGED}
    ),
    Step.DIRECTORY_CONSENT: frozenset({Phase.ROLE_ASSIGNED}),
    Step.VERIFY_AND_SUBMIT: frozenset(
        {Phase.DIRECTORY_CONSENTED, Phase.VERIFYING, Phase.PLAN_SHOWN, Phase.APPLYING, Phase.FAILED}
    ),
}


@dataclass(frozen=True)
class Event:
    kind: EventKind
    actor: str  # a Slack user id, or "system" for timers and background work
    at: float
    detail: Mapping[str, str] = field(default_factory=dict)


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
        return json.dumps(
            {
                "id": self.id,
                "tenant_id": self.tenant_id,
                "tenant_label": self.tenant_label,
                "scope": self.scope.value,
                "channel_id": self.channel_id,
                "started_by": self.started_by,
                "created_at": self.created_at,
                "phase": self.phase.value,
                "version": self.version,
                "updated_at": self.updated_at,
                "root_ts": self.root_ts,
                "history": [
                    [entry.kind.value, entry.actor, entry.at, entry.phase.value]
                    for entry in self.history
                ],
            },
            separators=(",", ":"),
        )

    @classmethod
    def from_json(cls, text: str | bytes) -> Session:
        data: dict[str, Any] = json.loads(text)
        return cls(
            id=data["id"],
            tenant_id=data["tenant_id"],
            tenant_label=data["tenant_label"],
            scope=Scope(data["scope"]),
            channel_id=data["channel_id"],
            started_by=data["started_by"],
            created_at=float(data["created_at"]),
            phase=Phase(data["phase"]),
            version=int(data["version"]),
            updated_at=float(data["updated_at"]),
            root_ts=data["root_ts"],
            history=tuple(
                HistoryEntry(EventKind(kind), actor, float(at), Phase(phase))
                for kind, actor, at, phase in data["history"]
            ),
        )


class Effect(StrEnum):
    """What the executor must do after a transition has been stored."""

    REFRESH_ROOT = "refresh_root"  # re-render the root checklist (chat.update)
    NOTE_IN_THREAD = "note_in_thread"  # say in the thread what happened
    RELEASE_TENANT = "release_tenant"  # the session is over: another may start for this tenant
    ANNOUNCE = "announce"  # post "Exchange Online protected in inline mode." to the channel(s)
    PROMPT = "prompt"  # post in the thread what the new phase needs from people, if anything
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


def advance(session: Session, event: Event) -> Transition:
    """Apply ``event`` to ``session``; raise ``TransitionNotAllowed`` if the table has no move."""
    target = TRANSITIONS.get((session.phase, event.kind))
    if target is None:
        raise TransitionNotAllowed(session, event)
    after = replace(
        session,
        phase=target,
        version=session.version + 1,
        updated_at=event.at,
        history=(*session.history, HistoryEntry(event.kind, event.actor, event.at, target)),
    )
    effects = [Effect.REFRESH_ROOT, Effect.NOTE_IN_THREAD]
    if target in TERMINAL:
        effects.append(Effect.RELEASE_TENANT)
    if target is Phase.PROTECTED:
        effects.append(Effect.ANNOUNCE)
    if target not in TERMINAL:
        effects.append(Effect.PROMPT)
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

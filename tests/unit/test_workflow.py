from __future__ import annotations

import pytest

from bot.steps.mailflow.model import Blocker, PlanState
from bot.steps.role.model import AssignmentFailed, RoleRequest, SeenRequest
from bot.workflow import (
    AMENDING,
    TERMINAL,
    TRANSITIONS,
    Effect,
    Event,
    EventKind,
    Phase,
    Scope,
    Session,
    StepStatus,
    TransitionNotAllowed,
    TransitionRefused,
    Why,
    advance,
    checklist,
)


def new_session() -> Session:
    return Session(
        id="s1",
        tenant_id="0f1e2d3c-4b5a-4697-8899-aabbccddeeff",
        tenant_label="contoso.com",
        scope=Scope.FULL,
        channel_id="C0PROV",
        started_by="U0ADMIN",
        created_at=1000.0,
        updated_at=1000.0,
    )


REQUEST = RoleRequest("Inline protection needs the role", requested_by="U0ADMIN")
SHOWN = PlanState(domains=("contoso.com",), initial_domain="contoso.onmicrosoft.com", changes=3)

HAPPY_PATH = [
    (EventKind.MAILFLOW_CONSENT, Phase.MAILFLOW_CONSENTED),
    (EventKind.ROLE_REQUEST, Phase.ROLE_REQUESTED),
    (EventKind.ROLE_ACKNOWLEDGE, Phase.ROLE_ACKNOWLEDGED),
    (EventKind.ROLE_ASSIGNED, Phase.ROLE_ASSIGNED),
    (EventKind.DIRECTORY_CONSENT, Phase.DIRECTORY_CONSENTED),
    (EventKind.VERIFY, Phase.VERIFYING),
    (EventKind.VERIFICATION_PASSED, Phase.PLAN_SHOWN),
    (EventKind.PLAN_READ, Phase.PLAN_SHOWN),
    (EventKind.SUBMIT, Phase.APPLYING),
    (EventKind.APPLY_SUCCEEDED, Phase.PROTECTED),
]


def step(kind: EventKind, at: float, actor: str | None = None) -> Event:
    """The event as the bot makes it: payloads where the kind needs one."""
    payloads = {EventKind.ROLE_REQUEST: REQUEST, EventKind.PLAN_READ: SHOWN}
    who = actor or ("U0APPROVER" if kind is EventKind.ROLE_ACKNOWLEDGE else "U0ADMIN")
    return Event(kind, actor=who, at=at, payload=payloads.get(kind))


def test_the_whole_procedure_reaches_protected_and_announces() -> None:
    session = new_session()
    for number, (kind, expected) in enumerate(HAPPY_PATH, start=1):
        transition = advance(session, step(kind, 1000.0 + number))
        session = transition.after
        assert session.phase is expected
        assert session.version == number
    assert Effect.ANNOUNCE in transition.effects
    assert Effect.RELEASE_TENANT in transition.effects
    assert [row.status for row in checklist(session)] == [StepStatus.DONE] * 4


def test_advance_is_pure_and_records_who_and_when() -> None:
    session = new_session()
    transition = advance(session, Event(EventKind.MAILFLOW_CONSENT, actor="U0GA", at=1234.0))
    assert session.phase is Phase.STARTED
    assert session.history == ()
    assert transition.after.history[-1].actor == "U0GA"
    assert transition.after.updated_at == 1234.0
    first = checklist(transition.after)[0]
    assert (first.status, first.done_by, first.done_at) == (StepStatus.DONE, "U0GA", 1234.0)
    assert checklist(transition.after)[1].status is StepStatus.CURRENT


@pytest.mark.parametrize(
    ("phase", "kind"),
    [
        (Phase.STARTED, EventKind.ROLE_ACKNOWLEDGE),
        (Phase.STARTED, EventKind.SUBMIT),
        (Phase.ROLE_REQUESTED, EventKind.DIRECTORY_CONSENT),
        (Phase.CANCELLED, EventKind.CANCEL),
        (Phase.PROTECTED, EventKind.EXPIRE),
        (Phase.EXPIRED, EventKind.MAILFLOW_CONSENT),
    ],
)
def test_moves_outside_the_table_are_refused(phase: Phase, kind: EventKind) -> None:
    session = Session(**{**new_session().__dict__, "phase": phase})
    with pytest.raises(TransitionNotAllowed) as refused:
        advance(session, Event(kind, actor="U0X", at=1.0))
    assert refused.value.session is session


def test_cancel_and_expire_apply_to_every_active_phase_but_applying() -> None:
    for phase in Phase:
        for kind, target in (
            (EventKind.CANCEL, Phase.CANCELLED),
            (EventKind.EXPIRE, Phase.EXPIRED),
        ):
            allowed = (phase, kind) in TRANSITIONS
            assert allowed == (phase not in TERMINAL and phase is not Phase.APPLYING)
            if allowed:
                session = Session(**{**new_session().__dict__, "phase": phase})
                transition = advance(session, Event(kind, actor="U0ADMIN", at=5.0))
                assert transition.after.phase is target
                assert Effect.RELEASE_TENANT in transition.effects


def test_terminal_phases_have_no_way_out() -> None:
    assert not [key for key in TRANSITIONS if key[0] in TERMINAL]


def test_a_second_identical_decision_names_who_was_first() -> None:
    session = new_session()
    session = advance(session, Event(EventKind.MAILFLOW_CONSENT, "U0GA", 1.0)).after
    session = advance(session, step(EventKind.ROLE_REQUEST, 2.0)).after
    acknowledged = advance(session, Event(EventKind.ROLE_ACKNOWLEDGE, "U0APPROVER1", 3.0)).after
    with pytest.raises(TransitionNotAllowed) as refused:
        advance(acknowledged, Event(EventKind.ROLE_ACKNOWLEDGE, "U0APPROVER2", 3.1))
    assert refused.value.decided_by == "U0APPROVER1"


def test_decline_returns_to_the_role_request() -> None:
    session = new_session()
    session = advance(session, Event(EventKind.MAILFLOW_CONSENT, "U0GA", 1.0)).after
    session = advance(session, step(EventKind.ROLE_REQUEST, 2.0)).after
    declined = advance(session, Event(EventKind.ROLE_DECLINE, "U0APPROVER", 3.0)).after
    assert declined.phase is Phase.MAILFLOW_CONSENTED
    assert checklist(declined)[1].status is StepStatus.CURRENT


def test_cancelled_steps_show_as_stopped() -> None:
    session = advance(new_session(), Event(EventKind.CANCEL, "U0ADMIN", 2.0)).after
    assert [row.status for row in checklist(session)] == [StepStatus.STOPPED] * 4


def test_json_round_trip_keeps_everything() -> None:
    session = new_session()
    for number, (kind, _) in enumerate(HAPPY_PATH, start=1):
        session = advance(session, step(kind, float(number))).after
        assert Session.from_json(session.to_json()) == session
    assert session.role.acknowledgement is not None
    assert session.plan is not None


def test_records_stored_before_the_step_state_still_read() -> None:
    old = (
        '{"id":"s1","tenant_id":"t","tenant_label":"contoso.com","scope":"inbound_outbound",'
        '"channel_id":"C0PROV","started_by":"U0ADMIN","created_at":1,"phase":"mailflow_consented",'
        '"version":1,"updated_at":2.0,"root_ts":"1.2",'
        '"history":[["mailflow_consent","U0GA",2.0,"mailflow_consented"]]}'
    )
    session = Session.from_json(old)
    assert session.phase is Phase.MAILFLOW_CONSENTED
    assert session.history[0].actor == "U0GA"
    assert session.role.request is None


def requested() -> Session:
    session = advance(new_session(), step(EventKind.MAILFLOW_CONSENT, 1.0)).after
    return advance(session, step(EventKind.ROLE_REQUEST, 2.0)).after


def test_the_acknowledgement_covers_exactly_the_request_seen() -> None:
    session = requested()
    stale = Event(EventKind.ROLE_ACKNOWLEDGE, "U0APPROVER", 3.0, payload=SeenRequest("0" * 32))
    with pytest.raises(TransitionRefused) as refused:
        advance(session, stale)
    assert (refused.value.why, refused.value.decided_by) == (Why.REQUEST_CHANGED, "U0ADMIN")
    seen = SeenRequest(REQUEST.digest())
    acked = advance(session, Event(EventKind.ROLE_ACKNOWLEDGE, "U0APPROVER", 3.0, payload=seen))
    assert acked.after.role.acknowledgement is not None
    assert acked.after.role.acknowledgement.request_digest == REQUEST.digest()
    with pytest.raises(TransitionRefused) as own:
        advance(session, Event(EventKind.ROLE_ACKNOWLEDGE, "U0ADMIN", 3.0))
    assert own.value.why is Why.OWN_REQUEST


def test_an_amended_request_needs_a_new_acknowledgement_before_assignment() -> None:
    session = advance(requested(), step(EventKind.ROLE_ACKNOWLEDGE, 3.0)).after
    amended = RoleRequest("Now with a ticket", requested_by="U0ADMIN", ticket_number="INC-1")
    first = Event(EventKind.ROLE_REQUEST, "U0ADMIN", 4.0, payload=amended)
    with pytest.raises(TransitionRefused) as not_amending:
        advance(session, first)  # a first request's form: it never replaces one made
    assert not_amending.value.why is Why.ALREADY_REQUESTED
    amend = Event(EventKind.ROLE_REQUEST, "U0ADMIN", 4.0, {AMENDING: "yes"}, payload=amended)
    changed = advance(session, amend).after
    assert changed.phase is Phase.ROLE_REQUESTED
    assert changed.role.acknowledgement is None
    assert changed.role.acknowledged_request is None
    # The old request can no longer be claimed for assignment.
    claim = Event(EventKind.ROLE_ASSIGNING, "U0PRA", 5.0, payload=SeenRequest(REQUEST.digest()))
    with pytest.raises(TransitionNotAllowed):
        advance(changed, claim)
    with pytest.raises(TransitionRefused) as refused:
        advance(session, replace_payload(claim, SeenRequest(amended.digest())))
    assert refused.value.why is Why.NOT_ACKNOWLEDGED
    claimed = advance(session, claim).after
    assert claimed.phase is Phase.ROLE_ASSIGNING
    # While Microsoft is asked, the request cannot be amended.
    with pytest.raises(TransitionNotAllowed):
        advance(claimed, Event(EventKind.ROLE_REQUEST, "U0ADMIN", 6.0, payload=amended))
    released = advance(
        claimed, Event(EventKind.ROLE_ASSIGN_FAILED, "U0PRA", 6.0, payload=AssignmentFailed())
    )
    assert released.after.phase is Phase.ROLE_ACKNOWLEDGED
    assert released.after.role.acknowledged_request == REQUEST
    assert released.effects == (Effect.REFRESH_ROOT,)


def replace_payload(event: Event, payload: SeenRequest) -> Event:
    return Event(event.kind, event.actor, event.at, event.detail, payload)


def test_updates_change_state_not_phase_nor_history() -> None:
    base = Session(**{**new_session().__dict__, "phase": Phase.PLAN_SHOWN})
    warned = PlanState(warnings_fingerprint="abc", warning_count=1)
    shown = advance(base, Event(EventKind.PLAN_READ, "system", 1.0, payload=warned))
    assert shown.effects == ()
    assert shown.after.history == ()
    assert shown.after.version == base.version + 1
    with pytest.raises(TransitionRefused) as pending:
        advance(shown.after, Event(EventKind.SUBMIT, "U0ADMIN", 2.0))
    assert pending.value.why is Why.WARNINGS_PENDING
    acked = advance(shown.after, Event(EventKind.WARNINGS_ACKNOWLEDGE, "U0ADMIN", 2.0)).after
    with pytest.raises(TransitionRefused) as again:
        advance(acked, Event(EventKind.WARNINGS_ACKNOWLEDGE, "U0OTHER", 2.1))
    assert (again.value.why, again.value.decided_by) == (Why.ALREADY_ACKNOWLEDGED, "U0ADMIN")
    # Shown again with the same warnings: the acknowledgement stands; with others, it does not.
    same = advance(acked, Event(EventKind.PLAN_READ, "system", 3.0, payload=warned)).after
    assert same.plan is not None
    assert same.plan.acknowledged_by == "U0ADMIN"
    other = PlanState(warnings_fingerprint="def", warning_count=2)
    fresh = advance(same, Event(EventKind.PLAN_READ, "system", 4.0, payload=other)).after
    assert fresh.plan is not None
    assert fresh.plan.acknowledged_by is None
    blocked = PlanState(blockers=(Blocker("Conflict", "Rename it"),))
    stuck = advance(fresh, Event(EventKind.PLAN_READ, "system", 5.0, payload=blocked)).after
    with pytest.raises(TransitionRefused) as refused:
        advance(stuck, Event(EventKind.SUBMIT, "U0ADMIN", 6.0))
    assert refused.value.why is Why.BLOCKED

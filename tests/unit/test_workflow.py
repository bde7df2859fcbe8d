from __future__ import annotations

import pytest

from bot.workflow import (
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


HAPPY_PATH = [
    (EventKind.MAILFLOW_CONSENT, Phase.MAILFLOW_CONSENTED),
    (EventKind.ROLE_REQUEST, Phase.ROLE_REQUESTED),
    (EventKind.ROLE_ACKNOWLEDGE, Phase.ROLE_ACKNOWLEDGED),
    (EventKind.ROLE_ASSIGNED, Phase.ROLE_ASSIGNED),
    (EventKind.DIRECTORY_CONSENT, Phase.DIRECTORY_CONSENTED),
    (EventKind.VERIFY, Phase.VERIFYING),
    (EventKind.VERIFICATION_PASSED, Phase.PLAN_SHOWN),
    (EventKind.SUBMIT, Phase.APPLYING),
    (EventKind.APPLY_SUCCEEDED, Phase.PROTECTED),
]


def test_the_whole_procedure_reaches_protected_and_announces() -> None:
    session = new_session()
    for number, (kind, expected) in enumerate(HAPPY_PATH, start=1):
        transition = advance(session, Event(kind, actor="U0ADMIN", at=1000.0 + number))
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
    session = advance(session, Event(EventKind.ROLE_REQUEST, "U0ADMIN", 2.0)).after
    acknowledged = advance(session, Event(EventKind.ROLE_ACKNOWLEDGE, "U0APPROVER1", 3.0)).after
    with pytest.raises(TransitionNotAllowed) as refused:
        advance(acknowledged, Event(EventKind.ROLE_ACKNOWLEDGE, "U0APPROVER2", 3.1))
    assert refused.value.decided_by == "U0APPROVER1"


def test_decline_returns_to_the_role_request() -> None:
    session = new_session()
    session = advance(session, Event(EventKind.MAILFLOW_CONSENT, "U0GA", 1.0)).after
    session = advance(session, Event(EventKind.ROLE_REQUEST, "U0ADMIN", 2.0)).after
    declined = advance(session, Event(EventKind.ROLE_DECLINE, "U0APPROVER", 3.0)).after
    assert declined.phase is Phase.MAILFLOW_CONSENTED
    assert checklist(declined)[1].status is StepStatus.CURRENT


def test_cancelled_steps_show_as_stopped() -> None:
    session = advance(new_session(), Event(EventKind.CANCEL, "U0ADMIN", 2.0)).after
    assert [row.status for row in checklist(session)] == [StepStatus.STOPPED] * 4


def test_json_round_trip_keeps_everything() -> None:
    session = new_session()
    for number, (kind, _) in enumerate(HAPPY_PATH[:4], start=1):
        session = advance(session, Event(kind, actor=f"U{number}", at=float(number))).after
    assert Session.from_json(session.to_json()) == session

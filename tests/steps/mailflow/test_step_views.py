"""The pure parts of step 4's second half: domain choice, Submit message, the notification."""

from __future__ import annotations

from bot.session.commands import CommandKind, parse_command
from bot.session.views import start_modal
from bot.steps.mailflow.model import choose_domains
from bot.steps.mailflow.preflight import Finding, Severity
from bot.steps.mailflow.views import (
    ACTION_SUBMIT,
    ANNOUNCEMENT,
    announcement_message,
    decision_message,
)
from bot.workflow import EventKind, HistoryEntry, Phase, Scope, Session


def session(scope: Scope = Scope.FULL, *history: tuple[EventKind, str]) -> Session:
    return Session(
        id="s1",
        tenant_id="t-1",
        tenant_label="contoso.com",
        scope=scope,
        channel_id="C1",
        started_by="U0ADMIN",
        created_at=1.0,
        phase=Phase.PROTECTED,
        history=tuple(HistoryEntry(kind, actor, 2.0, Phase.PROTECTED) for kind, actor in history),
    )


def test_protected_domains_are_verified_accepted_and_not_the_initial_one() -> None:
    choice = choose_domains(
        [
            ("contoso.onmicrosoft.com", True, True),
            ("Contoso.com.", True, False),
            ("pending.example", False, False),
            ("elsewhere.example", True, False),
        ],
        ["contoso.com", "contoso.onmicrosoft.com", "pending.example"],
    )
    assert choice.chosen == ("contoso.com",)
    assert any("initial routing domain" in r for r in choice.reasons)
    assert any("pending.example: left out, not verified" in r for r in choice.reasons)
    assert any("elsewhere.example: left out, not an accepted domain" in r for r in choice.reasons)


def test_submit_is_absent_while_something_blocks() -> None:
    blocker = Finding("x", Severity.BLOCKING, "Conflict", "why", "fix it")
    blocked = decision_message(
        session(), changes=3, blockers=[blocker], warnings=0, acknowledged_by=None
    )
    assert ACTION_SUBMIT not in str(blocked.blocks)
    ready = decision_message(session(), changes=3, blockers=(), warnings=1, acknowledged_by=None)
    assert ACTION_SUBMIT in str(ready.blocks)
    assert "must first acknowledge" in ready.text


def test_the_notification_names_tenant_people_and_thread() -> None:
    done = session(
        Scope.FULL,
        (EventKind.ROLE_ACKNOWLEDGE, "U0APPROVER"),
        (EventKind.SUBMIT, "U0OTHER"),
    )
    message = announcement_message(done, "https://slack.test/p1")
    assert message.text.startswith(ANNOUNCEMENT)
    assert "contoso.com" in message.text
    assert "<@U0OTHER>" in message.text
    assert "acknowledged by <@U0APPROVER>" in message.text
    assert "https://slack.test/p1" in message.text
    found = announcement_message(session(Scope.UPGRADE, (EventKind.ROLE_FOUND, "system")), None)
    assert "already assigned" in found.text


def test_upgrade_is_a_command_with_its_own_form() -> None:
    assert parse_command("upgrade").kind is CommandKind.UPGRADE
    modal = start_modal(private_metadata="{}", scope=Scope.UPGRADE)
    assert Scope.UPGRADE.value in str(modal)
    assert Scope.FULL.value not in str(modal)

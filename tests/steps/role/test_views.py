from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from bot.microsoft.model import RoleAssignment, ServicePrincipal
from bot.sandbox.slack import validate_blocks, validate_view
from bot.steps.role.assign import (
    Assigned,
    AssignmentCheck,
    AssignmentOutcome,
    Failed,
    NeedsMore,
    NotPermitted,
    Pending,
    PendingRequest,
    SignInFailed,
)
from bot.steps.role.model import (
    DURATION_BLOCK,
    JUSTIFICATION_BLOCK,
    TICKET_NUMBER_BLOCK,
    TICKET_SYSTEM_BLOCK,
    RoleRequest,
)
from bot.steps.role.requirements import RoleRequirements
from bot.steps.role.views import (
    ACTION_ACKNOWLEDGE,
    ACTION_ASSIGN_SIGN_IN,
    ACTION_CHECK,
    ACTION_DECLINE,
    ACTION_NEW_SIGN_IN,
    ACTION_PORTAL,
    ACTION_REQUEST_AMEND,
    ACTION_REQUEST_OPEN,
    ACTION_REQUEST_OPEN_DIRECT,
    ACTION_REQUEST_OPEN_PIM,
    ACTION_WITHDRAW,
    Decision,
    app_message,
    assignment_choice_message,
    check_message,
    decided_message,
    outcome_message,
    portal_steps_message,
    request_modal,
    review_message,
)

APP = "Inline Mail Flow"
APP_ID = "aaaaaaaa-0000-4000-8000-000000000001"
AT = 1_750_000_000.0
SP = ServicePrincipal("sp-1", APP_ID, APP, "owner")

PIM = RoleRequirements.assumed_pim()
NO_PIM = RoleRequirements.without_pim()
STRICT = RoleRequirements(
    pim=True,
    source="policy",
    justification_required=True,
    ticketing_required=True,
    expiration_required=True,
    maximum_duration=timedelta(days=90),
    mfa_required=True,
    justification_min_length=10,
)
TRICKY = "Needed for <!channel> & *bold* `code` <https://evil.example|click>\nline two"
REQUEST = RoleRequest(TRICKY, "U0REQ", "CHG1", "ServiceNow", timedelta(days=30))


def action_ids(blocks: list[dict[str, Any]]) -> list[str]:
    return [
        element["action_id"]
        for block in blocks
        if block["type"] == "actions"
        for element in block["elements"]
    ]


def input_blocks(view: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {b["block_id"]: b for b in view["blocks"] if b["type"] == "input"}


def mrkdwn_of(blocks: list[dict[str, Any]]) -> str:
    return json.dumps(
        [b for b in blocks if b["type"] in ("section", "context")], ensure_ascii=False
    )


@pytest.mark.parametrize("requirements", [None, PIM, NO_PIM, STRICT])
def test_app_message(requirements: RoleRequirements | None) -> None:
    message = app_message(app_name=APP, app_id=APP_ID, requirements=requirements, value="s1")
    assert validate_blocks(message.blocks, surface="message") == []
    text = mrkdwn_of(message.blocks)
    assert f"`{APP_ID}`" in text
    assert "Exchange Online reads the role from the app's token" in text
    assert "cannot configure mail flow" in text
    assert "*Privileged Role Administrator*" in text
    assert "an Exchange Administrator cannot assign roles" in text
    if requirements is None:
        assert action_ids(message.blocks) == [ACTION_REQUEST_OPEN_PIM, ACTION_REQUEST_OPEN_DIRECT]
        assert "Setting* tab" in text
    else:
        assert action_ids(message.blocks) == [ACTION_REQUEST_OPEN]
        assert requirements.explanation() in [b["text"]["text"] for b in message.blocks[1:2]]
    assert APP_ID in message.text


def test_modal_for_a_strict_policy() -> None:
    view = request_modal(STRICT, private_metadata="s1")
    assert validate_view(view) == []
    assert view["callback_id"] == "role_request"
    inputs = input_blocks(view)
    assert list(inputs) == [
        JUSTIFICATION_BLOCK,
        TICKET_NUMBER_BLOCK,
        TICKET_SYSTEM_BLOCK,
        DURATION_BLOCK,
    ]
    justification = inputs[JUSTIFICATION_BLOCK]
    assert not justification["optional"]
    assert justification["element"]["multiline"]
    assert justification["element"]["max_length"] == 500
    assert justification["element"]["min_length"] == 10
    options = inputs[DURATION_BLOCK]["element"]["options"]
    assert [o["value"] for o in options] == ["P1D", "P7D", "P30D", "P90D"]
    assert [o["text"]["text"] for o in options][-1] == "90 days"
    assert inputs[DURATION_BLOCK]["element"]["initial_option"]["value"] == "P90D"
    assert STRICT.explanation() in mrkdwn_of(view["blocks"])


def test_modal_without_ticketing_or_expiry() -> None:
    for requirements in (PIM, NO_PIM):
        view = request_modal(requirements, private_metadata="s1")
        assert validate_view(view) == []
        inputs = input_blocks(view)
        assert list(inputs) == [JUSTIFICATION_BLOCK]
        assert inputs[JUSTIFICATION_BLOCK]["optional"] is (requirements is NO_PIM)
        assert ("min_length" in inputs[JUSTIFICATION_BLOCK]["element"]) is requirements.pim


def test_reopened_modal_is_prefilled() -> None:
    view = request_modal(
        STRICT, private_metadata="s1", initial=REQUEST, notice="Microsoft wants <a ticket>"
    )
    assert validate_view(view) == []
    inputs = input_blocks(view)
    assert inputs[JUSTIFICATION_BLOCK]["element"]["initial_value"] == TRICKY
    assert inputs[TICKET_NUMBER_BLOCK]["element"]["initial_value"] == "CHG1"
    assert inputs[TICKET_SYSTEM_BLOCK]["element"]["initial_value"] == "ServiceNow"
    assert inputs[DURATION_BLOCK]["element"]["initial_option"]["value"] == "P30D"
    assert "Microsoft wants &lt;a ticket&gt;" in mrkdwn_of(view["blocks"])


def test_review_message() -> None:
    message = review_message(
        REQUEST,
        STRICT,
        app_name=APP,
        app_id=APP_ID,
        at=AT,
        approvers=["U0APP", "S0GROUP"],
        value="s1",
    )
    assert validate_blocks(message.blocks, surface="message") == []
    assert action_ids(message.blocks) == [ACTION_ACKNOWLEDGE, ACTION_DECLINE, ACTION_WITHDRAW]
    buttons = [e for b in message.blocks if b["type"] == "actions" for e in b["elements"]]
    assert {b["value"] for b in buttons} == {"s1"}
    assert "confirm" in buttons[1]
    assert "confirm" in buttons[2]
    text = mrkdwn_of(message.blocks)
    assert "<@U0REQ>" in text
    assert "<@U0APP>, <!subteam^S0GROUP>" in text
    assert "CHG1 (ServiceNow)" in text
    assert "30 days" in text
    # The justification is shown exactly, as rich text: no mention or link can sneak in.
    quoted = [b for b in message.blocks if b["type"] == "rich_text"]
    assert quoted[0]["elements"][0]["elements"][0]["text"] == TRICKY
    assert "<!channel>" not in text


@pytest.mark.parametrize("decision", ["acknowledged", "declined", "withdrawn", "expired"])
def test_decided_message(decision: Decision) -> None:
    by = "system" if decision == "expired" else "U0APP"
    message = decided_message(
        REQUEST,
        STRICT,
        app_name=APP,
        app_id=APP_ID,
        requested_at=AT,
        decision=decision,
        by=by,
        at=AT + 60,
        reason="Not <now>",
    )
    assert validate_blocks(message.blocks, surface="message") == []
    assert action_ids(message.blocks) == []
    text = mrkdwn_of(message.blocks)
    assert f"*{decision.capitalize()}*" in text
    assert f"<!date^{int(AT + 60)}^" in text
    assert ("<@U0APP>" in text) is (decision != "expired")
    assert "Reason: Not &lt;now&gt;" in text


def test_assignment_choice() -> None:
    url = "https://login.example/contoso/oauth2/v2.0/authorize?state=abc&code_challenge=x"
    message = assignment_choice_message(
        STRICT, app_name=APP, app_id=APP_ID, sign_in_url=url, link_expires_at=AT, value="s1"
    )
    assert validate_blocks(message.blocks, surface="message") == []
    assert action_ids(message.blocks) == [ACTION_ASSIGN_SIGN_IN, ACTION_NEW_SIGN_IN, ACTION_PORTAL]
    sign_in = next(b for b in message.blocks if b["type"] == "actions")["elements"][0]
    assert sign_in["url"] == url
    text = mrkdwn_of(message.blocks)
    assert "makes the PIM request with the justification" in text
    assert "multifactor authentication" in text


def test_portal_steps_with_pim() -> None:
    message = portal_steps_message(REQUEST, STRICT, app_name=APP, app_id=APP_ID, value="s1")
    assert validate_blocks(message.blocks, surface="message") == []
    assert action_ids(message.blocks) == [ACTION_CHECK, ACTION_NEW_SIGN_IN]
    text = mrkdwn_of(message.blocks)
    for phrase in (
        "*Roles and administrators*",
        "*Exchange administrator*",
        "*Add assignments*",
        "*No member selected*",
        f"search for the app ID `{APP_ID}`",
        f"select *{APP}*",
        "*Setting* tab",
        "*Active*",
        "set *Assignment ends* 30 days from now",
        "ticket number `CHG1` and ticket system `ServiceNow`",
        "Choose *Assign*.",
    ):
        assert phrase in text, phrase
    pasted = [b for b in message.blocks if b["type"] == "rich_text"]
    assert pasted[0]["elements"][0]["type"] == "rich_text_preformatted"
    assert pasted[0]["elements"][0]["elements"][0]["text"] == TRICKY


def test_portal_steps_without_pim() -> None:
    message = portal_steps_message(
        RoleRequest("", "U1"), NO_PIM, app_name=APP, app_id=APP_ID, value="s1"
    )
    assert validate_blocks(message.blocks, surface="message") == []
    text = mrkdwn_of(message.blocks)
    assert f"Search for the app ID `{APP_ID}` and select *{APP}*" in text
    assert "Choose *Add*." in text
    assert "No member selected" not in text
    assert not [b for b in message.blocks if b["type"] == "rich_text"]


ASSIGNMENT = RoleAssignment(
    "a1", "sp-1", "29232cdf", "/", end=datetime(2026, 1, 2, 3, 4, tzinfo=UTC)
)
OUTCOMES: list[tuple[AssignmentOutcome, list[str], str]] = [
    (
        Assigned("pim", False, (ASSIGNMENT,), schedule_request_id="r1", assigned_by="pra@x"),
        [],
        "`pra@x` (signed in at Microsoft) assigned the *Exchange Administrator* role",
    ),
    (Assigned("direct", True, ()), [], "already holds an active"),
    (Pending("r1", "PendingProvisioning"), [ACTION_CHECK], "*PendingProvisioning*"),
    (
        NeedsMore(
            ("JustificationRule", "ExpirationRule", "NewRule"),
            (JUSTIFICATION_BLOCK, DURATION_BLOCK),
            STRICT,
            mfa=False,
        ),
        [ACTION_REQUEST_AMEND, ACTION_PORTAL],
        "a time-bound assignment of at most 90 days",
    ),
    (
        NotPermitted("exo@x", "Authorization_RequestDenied", request_ids=("g1",)),
        [ACTION_NEW_SIGN_IN, ACTION_PORTAL],
        "Microsoft Graph request ids: `g1`",
    ),
    (SignInFailed("access_denied", "cancelled"), [ACTION_NEW_SIGN_IN, ACTION_PORTAL], "cancelled"),
    (
        SignInFailed("wrong_tenant", "x@y signed in to tenant z."),
        [ACTION_NEW_SIGN_IN, ACTION_PORTAL],
        "account of this tenant",
    ),
    (
        Failed("MicrosoftUnavailable", "503", retryable=True),
        [ACTION_CHECK, ACTION_NEW_SIGN_IN, ACTION_PORTAL],
        "Try again in a few minutes",
    ),
    (
        Failed("Request_BadRequest", "Bad <thing>", retryable=False),
        [ACTION_CHECK, ACTION_NEW_SIGN_IN, ACTION_PORTAL],
        "`Request_BadRequest` — Bad &lt;thing&gt;",
    ),
]


@pytest.mark.parametrize(("outcome", "actions", "phrase"), OUTCOMES)
def test_outcome_messages(outcome: AssignmentOutcome, actions: list[str], phrase: str) -> None:
    message = outcome_message(outcome, REQUEST, app_name=APP, app_id=APP_ID, value="s1")
    assert validate_blocks(message.blocks, surface="message") == []
    assert action_ids(message.blocks) == actions
    assert phrase in mrkdwn_of(message.blocks)
    assert message.text


def test_assigned_until_and_pim_request_id() -> None:
    message = outcome_message(OUTCOMES[0][0], REQUEST, app_name=APP, app_id=APP_ID, value="s1")
    text = mrkdwn_of(message.blocks)
    assert "through PIM, active until 2026-01-02 03:04 UTC" in text
    assert "PIM request `r1`" in text


CHECKS = [
    (AssignmentCheck(APP_ID, None, (), via_pim=False, pending=None), "consent is missing"),
    (AssignmentCheck(APP_ID, SP, (), via_pim=True, pending=()), "not *Eligible*"),
    (
        AssignmentCheck(
            APP_ID, SP, (), via_pim=True, pending=(PendingRequest("r1", "PendingApproval", None),)
        ),
        "*PendingApproval*",
    ),
    (
        AssignmentCheck(APP_ID, SP, (ASSIGNMENT,), via_pim=True, pending=None),
        "through PIM, until 2026-01-02 03:04 UTC",
    ),
]


@pytest.mark.parametrize(("check", "phrase"), CHECKS)
def test_check_messages(check: AssignmentCheck, phrase: str) -> None:
    message = check_message(check, value="s1", checked_by="U1", at=AT)
    assert validate_blocks(message.blocks, surface="message") == []
    assert phrase in check.summary
    assert action_ids(message.blocks) == ([] if check.assigned else [ACTION_CHECK])

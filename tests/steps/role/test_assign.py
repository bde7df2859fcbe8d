"""The role assignment through the sandbox Microsoft cloud, over real HTTPS."""

from __future__ import annotations

import asyncio
import logging
from datetime import timedelta

import httpx
import pytest

from bot.microsoft.errors import PremiumLicenseRequired
from bot.microsoft.identity import MicrosoftApp
from bot.microsoft.model import EXCHANGE_ADMINISTRATOR
from bot.sandbox.microsoft import PolicyRules
from bot.sandbox.slack import validate_blocks
from bot.steps.role.assign import (
    ASSIGNER_ROLES,
    Assigned,
    AssignmentOutcome,
    Failed,
    NeedsMore,
    NotPermitted,
    RoleSignIn,
    SignInFailed,
    audit_detail,
    check_assignment,
    role_assignment_scopes,
)
from bot.steps.role.model import (
    TICKET_NUMBER_ACTION,
    TICKET_NUMBER_BLOCK,
    TICKET_SYSTEM_ACTION,
    TICKET_SYSTEM_BLOCK,
    RoleRequest,
    validate,
)
from bot.steps.role.requirements import RoleRequirements
from bot.steps.role.views import outcome_message
from tests.microsoft_cloud import (
    ADMIN,
    CONTOSO,
    EXCHANGE_ADMIN,
    FABRIKAM,
    FABRIKAM_ADMIN,
    PRIVILEGED,
    Cloud,
)

from .conftest import DIRSYNC_ID, MAILFLOW_ID, NO_MFA, browser_sign_in, reader_for

JUSTIFICATION = (
    'Inline mail protection must configure Exchange mail flow <CHG> & "quoted" — ünïcødé\n'
    "Second line, exactly as typed."
)


async def sign_in_and_assign(
    cloud: Cloud,
    http: httpx.AsyncClient,
    role_sign_in: RoleSignIn,
    upn: str,
    request: RoleRequest,
    requirements: RoleRequirements,
    *,
    tenant: str = CONTOSO,
) -> AssignmentOutcome:
    principal = cloud.sandbox.tenant(tenant).service_principal(MAILFLOW_ID)
    assert principal is not None, "consent the mail-flow app first"
    flow = await role_sign_in.start(tenant)
    posted = await browser_sign_in(cloud, http, flow, upn)
    return await role_sign_in.assign(
        tenant,
        flow,
        posted,
        http=http,
        principal_id=principal.id,
        request=request,
        requirements=requirements,
    )


def assert_renders(outcome: AssignmentOutcome, request: RoleRequest) -> None:
    message = outcome_message(
        outcome, request, app_name="Inline Mail Flow", app_id=MAILFLOW_ID, value="s1"
    )
    assert validate_blocks(message.blocks, surface="message") == []


def test_sign_in_scopes() -> None:
    assert role_assignment_scopes("https://graph.microsoft.com/") == (
        "https://graph.microsoft.com/RoleManagement.ReadWrite.Directory",
        "https://graph.microsoft.com/Application.Read.All",
    )


async def test_pim_request_carries_the_exact_request(
    cloud: Cloud,
    http: httpx.AsyncClient,
    role_sign_in: RoleSignIn,
    apps_made: list[MicrosoftApp],
) -> None:
    cloud.sandbox.consent(CONTOSO, MAILFLOW_ID)
    cloud.sandbox.tenant(CONTOSO).role_policies[EXCHANGE_ADMINISTRATOR] = PolicyRules(
        enabled_rules=("Justification", "Ticketing"),
        expiration_required=True,
        maximum_duration="P90D",
    )
    reader = reader_for(cloud, http, CONTOSO, apps_made)
    requirements = RoleRequirements.from_policy(await reader.role_policy(EXCHANGE_ADMINISTRATOR))
    assert requirements.ticketing_required
    assert requirements.maximum_duration == timedelta(days=90)
    request = RoleRequest(
        justification=JUSTIFICATION,
        requested_by="U0ADMIN",
        ticket_number="CHG0012345",
        ticket_system="ServiceNow",
        duration=timedelta(days=30),
    )
    before = await check_assignment(reader, MAILFLOW_ID)
    assert not before.assigned
    assert before.service_principal is not None

    outcome = await sign_in_and_assign(cloud, http, role_sign_in, PRIVILEGED, request, requirements)

    assert isinstance(outcome, Assigned), outcome
    assert outcome.via == "pim"
    assert not outcome.already
    assert outcome.assigned_by == PRIVILEGED
    assert outcome.schedule_request_id
    assert outcome.assignments[0].end is not None
    recorded = cloud.sandbox.tenant(CONTOSO).schedule_requests
    assert len(recorded) == 1
    assert recorded[0]["justification"] == JUSTIFICATION
    assert recorded[0]["ticketInfo"] == {"ticketNumber": "CHG0012345", "ticketSystem": "ServiceNow"}
    assert recorded[0]["scheduleInfo"]["expiration"] == {
        "type": "afterDuration",
        "duration": "P30D",
    }
    posted = [
        r
        for r in cloud.sandbox.requests
        if r.path.endswith("/roleAssignmentScheduleRequests") and r.method == "POST"
    ]
    assert [(r.user, r.client_id, r.status) for r in posted] == [(PRIVILEGED, DIRSYNC_ID, 201)]
    assert posted[0].body["action"] == "adminAssign"
    assert posted[0].body["directoryScopeId"] == "/"
    # Every Graph answer of the assignment (the request and the read-back) is on the record.
    assert len(outcome.request_ids) == 2
    detail = audit_detail(outcome)
    assert detail["outcome"] == "assigned"
    assert detail["via"] == "pim"
    assert detail["signed_in_as"] == PRIVILEGED
    assert detail["graph_request_ids"] == ",".join(outcome.request_ids)
    assert_renders(outcome, request)

    after = await check_assignment(reader, MAILFLOW_ID)
    assert after.assigned
    assert after.via_pim
    assert "holds an active *Exchange Administrator* assignment through PIM" in after.summary


async def test_permanent_pim_assignment(
    cloud: Cloud, http: httpx.AsyncClient, role_sign_in: RoleSignIn
) -> None:
    cloud.sandbox.consent(CONTOSO, MAILFLOW_ID)
    request = RoleRequest("Inline mail protection needs the role", "U0ADMIN")
    outcome = await sign_in_and_assign(
        cloud, http, role_sign_in, ADMIN, request, RoleRequirements.assumed_pim()
    )
    assert isinstance(outcome, Assigned)
    assert outcome.assignments[0].end is None
    recorded = cloud.sandbox.tenant(CONTOSO).schedule_requests[0]
    assert recorded["scheduleInfo"]["expiration"] == {"type": "noExpiration"}
    assert "ticketInfo" not in recorded or recorded["ticketInfo"] == {}


async def test_tenant_without_p2_gets_a_direct_assignment(
    cloud: Cloud,
    http: httpx.AsyncClient,
    role_sign_in: RoleSignIn,
    apps_made: list[MicrosoftApp],
) -> None:
    cloud.sandbox.consent(FABRIKAM, MAILFLOW_ID)
    reader = reader_for(cloud, http, FABRIKAM, apps_made)
    with pytest.raises(PremiumLicenseRequired):
        await reader.role_policy(EXCHANGE_ADMINISTRATOR)
    requirements = RoleRequirements.from_policy(None)
    assert not requirements.pim
    request = RoleRequest("", "U0ADMIN")
    assert not (await check_assignment(reader, MAILFLOW_ID)).assigned

    outcome = await sign_in_and_assign(
        cloud, http, role_sign_in, FABRIKAM_ADMIN, request, requirements, tenant=FABRIKAM
    )

    assert isinstance(outcome, Assigned), outcome
    assert (outcome.via, outcome.already, outcome.switched_to_direct) == ("direct", False, False)
    graph_posts = [r for r in cloud.sandbox.requests_to("graph") if r.method == "POST"]
    assert [r.path.rsplit("/", 1)[-1] for r in graph_posts] == ["roleAssignments"]
    assert graph_posts[0].body["principalId"] == outcome.assignments[0].principal_id
    assert_renders(outcome, request)
    check = await check_assignment(reader, MAILFLOW_ID)
    assert check.assigned
    assert not check.via_pim
    assert "as a direct assignment, permanently" in check.summary


async def test_pim_without_p2_switches_to_direct_and_says_so(
    cloud: Cloud, http: httpx.AsyncClient, role_sign_in: RoleSignIn
) -> None:
    cloud.sandbox.consent(FABRIKAM, MAILFLOW_ID)
    request = RoleRequest("The admin thought PIM applies", "U0ADMIN", duration=timedelta(days=7))
    outcome = await sign_in_and_assign(
        cloud,
        http,
        role_sign_in,
        FABRIKAM_ADMIN,
        request,
        RoleRequirements.assumed_pim(),
        tenant=FABRIKAM,
    )
    assert isinstance(outcome, Assigned), outcome
    assert outcome.via == "direct"
    assert outcome.switched_to_direct
    assert audit_detail(outcome)["switched_to_direct"] == "true"
    text = str(
        outcome_message(
            outcome, request, app_name="Inline Mail Flow", app_id=MAILFLOW_ID, value="s"
        ).blocks
    )
    assert "no Entra ID P2" in text
    assert "The requested duration (7 days) does not apply" in text


async def test_missing_ticket_asks_for_it_then_succeeds(
    cloud: Cloud, http: httpx.AsyncClient, role_sign_in: RoleSignIn
) -> None:
    cloud.sandbox.consent(CONTOSO, MAILFLOW_ID)
    cloud.sandbox.tenant(CONTOSO).role_policies[EXCHANGE_ADMINISTRATOR] = PolicyRules(
        enabled_rules=("Justification", "Ticketing")
    )
    assumed = RoleRequirements.assumed_pim()  # the policy could not be read beforehand
    request = RoleRequest("Inline mail protection needs the role", "U0ADMIN")

    outcome = await sign_in_and_assign(cloud, http, role_sign_in, PRIVILEGED, request, assumed)

    assert isinstance(outcome, NeedsMore), outcome
    assert outcome.rules == ("TicketingRule",)
    assert outcome.fields == (TICKET_NUMBER_BLOCK, TICKET_SYSTEM_BLOCK)
    assert outcome.requirements.ticketing_required
    assert not outcome.mfa
    assert len(outcome.request_ids) == 1
    assert cloud.sandbox.tenant(CONTOSO).role_assignments == []
    assert_renders(outcome, request)
    text = str(
        outcome_message(
            outcome, request, app_name="Inline Mail Flow", app_id=MAILFLOW_ID, value="s"
        ).blocks
    )
    assert "a ticket number and ticket system" in text
    assert "role_request_amend" in text

    amended = validate(
        {
            "role_justification": {
                "justification_input": {"type": "plain_text_input", "value": request.justification}
            },
            TICKET_NUMBER_BLOCK: {TICKET_NUMBER_ACTION: {"value": "INC-7"}},
            TICKET_SYSTEM_BLOCK: {TICKET_SYSTEM_ACTION: {"value": "Jira"}},
        },
        outcome.requirements,
        requested_by="U0ADMIN",
    )
    assert isinstance(amended, RoleRequest)
    second = await sign_in_and_assign(
        cloud, http, role_sign_in, PRIVILEGED, amended, outcome.requirements
    )
    assert isinstance(second, Assigned), second
    recorded = cloud.sandbox.tenant(CONTOSO).schedule_requests
    assert recorded[-1]["ticketInfo"] == {"ticketNumber": "INC-7", "ticketSystem": "Jira"}


async def test_mfa_required_by_policy_is_explained(
    cloud: Cloud, http: httpx.AsyncClient, role_sign_in: RoleSignIn
) -> None:
    cloud.sandbox.consent(CONTOSO, MAILFLOW_ID)
    cloud.sandbox.consent(CONTOSO, DIRSYNC_ID)
    cloud.sandbox.tenant(CONTOSO).role_policies[EXCHANGE_ADMINISTRATOR] = PolicyRules(
        enabled_rules=("Justification", "MultiFactorAuthentication")
    )
    request = RoleRequest("Inline mail protection needs the role", "U0ADMIN")
    outcome = await sign_in_and_assign(
        cloud, http, role_sign_in, NO_MFA, request, RoleRequirements.assumed_pim()
    )
    assert isinstance(outcome, NeedsMore), outcome
    assert outcome.rules == ("MfaRule",)
    assert outcome.fields == ()
    assert outcome.mfa
    assert outcome.requirements.mfa_required
    text = str(
        outcome_message(
            outcome, request, app_name="Inline Mail Flow", app_id=MAILFLOW_ID, value="s"
        ).blocks
    )
    assert "multifactor authentication" in text
    assert "role_request_amend" not in text  # nothing in the form to change
    assert "role_sign_in_renew" in text
    assert_renders(outcome, request)
    flow = await role_sign_in.start(CONTOSO, fresh_sign_in=True)
    assert "prompt=login" in flow.auth_uri


async def test_exchange_administrator_is_not_permitted(
    cloud: Cloud, http: httpx.AsyncClient, role_sign_in: RoleSignIn
) -> None:
    cloud.sandbox.consent(CONTOSO, MAILFLOW_ID)
    cloud.sandbox.consent(CONTOSO, DIRSYNC_ID)  # the delegated permission is consented
    request = RoleRequest("Inline mail protection needs the role", "U0EXO")
    outcome = await sign_in_and_assign(
        cloud, http, role_sign_in, EXCHANGE_ADMIN, request, RoleRequirements.assumed_pim()
    )
    assert isinstance(outcome, NotPermitted), outcome
    assert outcome.user == EXCHANGE_ADMIN
    assert outcome.code == "Authorization_RequestDenied"
    assert (
        outcome.needed
        == ASSIGNER_ROLES
        == (
            "Privileged Role Administrator",
            "Global Administrator",
        )
    )
    assert outcome.request_ids
    assert cloud.sandbox.tenant(CONTOSO).role_assignments == []
    text = str(
        outcome_message(
            outcome, request, app_name="Inline Mail Flow", app_id=MAILFLOW_ID, value="s"
        ).blocks
    )
    assert "*Privileged Role Administrator* or *Global Administrator*" in text
    assert "an Exchange Administrator cannot assign roles" in text
    assert_renders(outcome, request)


@pytest.mark.parametrize(
    ("tenant", "upn", "via"), [(CONTOSO, ADMIN, "pim"), (FABRIKAM, FABRIKAM_ADMIN, "direct")]
)
async def test_existing_assignment_is_success(
    cloud: Cloud,
    http: httpx.AsyncClient,
    role_sign_in: RoleSignIn,
    tenant: str,
    upn: str,
    via: str,
) -> None:
    principal = cloud.sandbox.consent(tenant, MAILFLOW_ID)
    cloud.sandbox.assign_role(tenant, principal.id, EXCHANGE_ADMINISTRATOR, via=via)
    requirements = (
        RoleRequirements.assumed_pim() if via == "pim" else RoleRequirements.without_pim()
    )
    request = RoleRequest("Inline mail protection needs the role", "U0ADMIN")
    outcome = await sign_in_and_assign(
        cloud, http, role_sign_in, upn, request, requirements, tenant=tenant
    )
    assert isinstance(outcome, Assigned), outcome
    assert outcome.already
    assert outcome.via == via
    assert len(cloud.sandbox.tenant(tenant).role_assignments) == 1
    assert_renders(outcome, request)


async def test_cancelled_and_replayed_sign_ins(
    cloud: Cloud, http: httpx.AsyncClient, role_sign_in: RoleSignIn
) -> None:
    principal = cloud.sandbox.consent(CONTOSO, MAILFLOW_ID)
    request = RoleRequest("Inline mail protection needs the role", "U0ADMIN")
    requirements = RoleRequirements.assumed_pim()

    flow = await role_sign_in.start(CONTOSO)
    cancelled = await browser_sign_in(cloud, http, flow, ADMIN, decision="cancel")
    outcome = await role_sign_in.assign(
        CONTOSO,
        flow,
        cancelled,
        http=http,
        principal_id=principal.id,
        request=request,
        requirements=requirements,
    )
    assert isinstance(outcome, SignInFailed)
    assert outcome.error == "access_denied"
    assert_renders(outcome, request)

    first = await role_sign_in.start(CONTOSO)
    other = await role_sign_in.start(CONTOSO)
    posted = await browser_sign_in(cloud, http, first, ADMIN)
    outcome = await role_sign_in.assign(
        CONTOSO,
        other,  # the answer belongs to another sign-in
        posted,
        http=http,
        principal_id=principal.id,
        request=request,
        requirements=requirements,
    )
    assert isinstance(outcome, SignInFailed)
    assert outcome.error == "state_mismatch"
    assert cloud.sandbox.tenant(CONTOSO).role_assignments == []


async def test_outage_is_a_retryable_failure(
    cloud: Cloud, http: httpx.AsyncClient, role_sign_in: RoleSignIn, delays: list[float]
) -> None:
    cloud.sandbox.consent(CONTOSO, MAILFLOW_ID)
    cloud.sandbox.fail(
        "graph", status=503, path_contains="roleAssignmentScheduleRequests", times=50
    )
    request = RoleRequest("Inline mail protection needs the role", "U0ADMIN")
    outcome = await sign_in_and_assign(
        cloud, http, role_sign_in, ADMIN, request, RoleRequirements.assumed_pim()
    )
    assert isinstance(outcome, Failed), outcome
    assert outcome.retryable
    assert_renders(outcome, request)


async def test_check_assignment_before_consent_and_after_portal(
    cloud: Cloud, http: httpx.AsyncClient, apps_made: list[MicrosoftApp]
) -> None:
    reader = reader_for(cloud, http, CONTOSO, apps_made)
    missing = await check_assignment(reader, MAILFLOW_ID)
    assert missing.service_principal is None
    assert not missing.assigned
    assert "consent is missing" in missing.summary

    principal = cloud.sandbox.consent(CONTOSO, MAILFLOW_ID)
    waiting = await check_assignment(reader, MAILFLOW_ID)
    assert not waiting.assigned
    assert waiting.via_pim
    assert "*Active*, not *Eligible*" in waiting.summary
    assert waiting.pending is None  # the sandbox does not serve GET roleAssignmentScheduleRequests

    cloud.sandbox.assign_role(CONTOSO, principal.id, EXCHANGE_ADMINISTRATOR, via="pim")
    done = await check_assignment(reader, MAILFLOW_ID)
    assert done.assigned
    assert done.assignments[0].principal_id == principal.id
    assert "permanently" in done.summary


async def test_no_delegated_token_is_logged(
    cloud: Cloud,
    http: httpx.AsyncClient,
    role_sign_in: RoleSignIn,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    cloud.sandbox.consent(CONTOSO, MAILFLOW_ID)
    cloud.sandbox.tenant(CONTOSO).role_policies[EXCHANGE_ADMINISTRATOR] = PolicyRules(
        enabled_rules=("Justification", "Ticketing")
    )
    request = RoleRequest("Inline mail protection needs the role", "U0ADMIN")
    principal = cloud.sandbox.tenant(CONTOSO).service_principal(MAILFLOW_ID)
    assert principal is not None
    flow = await role_sign_in.start(CONTOSO)
    posted = await browser_sign_in(cloud, http, flow, PRIVILEGED)
    outcomes = [
        await role_sign_in.assign(
            CONTOSO,
            flow,
            posted,
            http=http,
            principal_id=principal.id,
            request=request,
            requirements=RoleRequirements.assumed_pim(),
        )
    ]
    assert isinstance(outcomes[0], NeedsMore)
    secrets = [
        value
        for value, issued in cloud.sandbox._tokens.items()  # the sandbox's record of tokens
        if issued.user is not None
    ]
    secrets += list(cloud.sandbox._refresh)
    secrets.append(posted["code"])
    assert len(secrets) == 3
    logged = "\n".join(record.getMessage() for record in caplog.records)
    assert "role assignment for service principal" in logged  # the outcome is logged
    for secret in secrets:
        assert secret not in logged
        assert secret not in repr(outcomes)
        assert secret not in str(audit_detail(outcomes[0]))


async def test_request_ids_stay_with_their_own_assignment(
    cloud: Cloud, http: httpx.AsyncClient, role_sign_in: RoleSignIn
) -> None:
    request = RoleRequest("Inline mail protection needs the role", "U0ADMIN")
    runs = []
    for tenant, upn, requirements in (
        (CONTOSO, ADMIN, RoleRequirements.assumed_pim()),
        (FABRIKAM, FABRIKAM_ADMIN, RoleRequirements.without_pim()),
    ):
        principal = cloud.sandbox.consent(tenant, MAILFLOW_ID)
        flow = await role_sign_in.start(tenant)
        # One simulated browser: the sign-ins happen one after the other...
        posted = await browser_sign_in(cloud, http, flow, upn)
        runs.append(
            role_sign_in.assign(
                tenant,
                flow,
                posted,
                http=http,
                principal_id=principal.id,
                request=request,
                requirements=requirements,
            )
        )
    # ...and the two assignments run at once on the same HTTP client.
    contoso, fabrikam = await asyncio.gather(*runs)
    assert isinstance(contoso, Assigned), contoso
    assert isinstance(fabrikam, Assigned), fabrikam
    assert len(contoso.request_ids) == 2
    assert len(fabrikam.request_ids) == 3  # the assignment, the 400 on PIM instances, the read
    assert not set(contoso.request_ids) & set(fabrikam.request_ids)

from __future__ import annotations

from datetime import timedelta

import httpx
import pytest

from bot.microsoft.errors import (
    AlreadyExists,
    AuthorizationDenied,
    MicrosoftUnavailable,
    PolicyValidationFailed,
    PremiumLicenseRequired,
)
from bot.microsoft.graph import GraphClient
from bot.microsoft.identity import delegated_provider
from bot.microsoft.model import (
    EXCHANGE_ADMINISTRATOR,
    EXCHANGE_MANAGE_AS_APP,
    Expiration,
    Ticket,
    parse_iso_duration,
)
from bot.sandbox.microsoft import PolicyRules

from .conftest import (
    ADMIN,
    CONTOSO,
    DIRSYNC_ID,
    EXCHANGE_ADMIN,
    FABRIKAM,
    FABRIKAM_ADMIN,
    MAILFLOW_ID,
    PRIVILEGED,
    AppFactory,
    Cloud,
    delegated_sign_in,
)

ROLE_SCOPE = "RoleManagement.ReadWrite.Directory"


@pytest.fixture
def reader(cloud: Cloud, make_app: AppFactory, http: httpx.AsyncClient) -> GraphClient:
    """The directory-sync app, consented in Contoso, reading Graph app-only."""
    cloud.sandbox.consent(CONTOSO, DIRSYNC_ID)
    provider = make_app(DIRSYNC_ID).token_provider(CONTOSO, cloud.graph_url)
    return GraphClient(http, cloud.graph_url, provider)


async def as_user(
    cloud: Cloud,
    make_app: AppFactory,
    http: httpx.AsyncClient,
    upn: str,
    tenant: str = CONTOSO,
) -> GraphClient:
    token = await delegated_sign_in(
        cloud, make_app(DIRSYNC_ID), http, upn, [f"{cloud.graph_url}/{ROLE_SCOPE}"], tenant
    )
    return GraphClient(http, cloud.graph_url, delegated_provider(token))


async def test_service_principal_and_grants(cloud: Cloud, reader: GraphClient) -> None:
    assert await reader.find_service_principal(MAILFLOW_ID) is None
    cloud.sandbox.consent(CONTOSO, MAILFLOW_ID)
    sp = await reader.find_service_principal(MAILFLOW_ID)
    assert sp is not None
    assert sp.app_id == MAILFLOW_ID
    assert sp.display_name == "Inline Mail Flow"
    grants = await reader.app_role_assignments(sp.id)
    assert [g.app_role_id for g in grants] == [EXCHANGE_MANAGE_AS_APP]
    assert grants[0].resource_display_name == "Office 365 Exchange Online"


async def test_role_policy(cloud: Cloud, reader: GraphClient) -> None:
    policy = await reader.role_policy(EXCHANGE_ADMINISTRATOR)
    assert policy.justification_required
    assert not policy.ticketing_required
    assert not policy.expiration_required
    cloud.sandbox.tenant(CONTOSO).role_policies[EXCHANGE_ADMINISTRATOR] = PolicyRules(
        enabled_rules=("Justification", "Ticketing", "MultiFactorAuthentication"),
        expiration_required=True,
        maximum_duration="P90D",
    )
    policy = await reader.role_policy(EXCHANGE_ADMINISTRATOR)
    assert policy.ticketing_required
    assert policy.mfa_required
    assert policy.expiration_required
    assert policy.maximum_duration == timedelta(days=90)
    assert policy.maximum_duration_iso == "P90D"


async def test_role_policy_needs_p2(
    cloud: Cloud, make_app: AppFactory, http: httpx.AsyncClient
) -> None:
    cloud.sandbox.consent(FABRIKAM, DIRSYNC_ID)
    provider = make_app(DIRSYNC_ID).token_provider(FABRIKAM, cloud.graph_url)
    graph = GraphClient(http, cloud.graph_url, provider)
    with pytest.raises(PremiumLicenseRequired):
        await graph.role_policy(EXCHANGE_ADMINISTRATOR)


async def test_pim_assignment_by_signed_in_admin(
    cloud: Cloud, make_app: AppFactory, http: httpx.AsyncClient
) -> None:
    mailflow = cloud.sandbox.consent(CONTOSO, MAILFLOW_ID)
    cloud.sandbox.tenant(CONTOSO).role_policies[EXCHANGE_ADMINISTRATOR] = PolicyRules(
        enabled_rules=("Justification", "Ticketing"),
        expiration_required=True,
        maximum_duration="P180D",
    )
    graph = await as_user(cloud, make_app, http, ADMIN)
    with pytest.raises(PolicyValidationFailed) as caught:
        await graph.request_role_assignment(mailflow.id, EXCHANGE_ADMINISTRATOR, "")
    assert caught.value.rules == ("JustificationRule", "TicketingRule", "ExpirationRule")
    with pytest.raises(PolicyValidationFailed) as caught:
        await graph.request_role_assignment(
            mailflow.id,
            EXCHANGE_ADMINISTRATOR,
            "Inline protection",
            ticket=Ticket("CHG-1"),
            expiration=Expiration.after("P365D"),
        )
    assert caught.value.rules == ("ExpirationRule",)
    request = await graph.request_role_assignment(
        mailflow.id,
        EXCHANGE_ADMINISTRATOR,
        "Inline protection",
        ticket=Ticket("CHG-1", "ServiceNow"),
        expiration=Expiration.after("P180D"),
    )
    assert request.status == "Provisioned"
    with pytest.raises(AlreadyExists):
        await graph.request_role_assignment(
            mailflow.id,
            EXCHANGE_ADMINISTRATOR,
            "again",
            ticket=Ticket("CHG-1"),
            expiration=Expiration.after("P1D"),
        )
    created, active = await graph.ensure_role_assignment(
        mailflow.id, EXCHANGE_ADMINISTRATOR, use_pim=True, justification="again"
    )
    assert not created
    assert active.via_pim
    assert active.assignments[0].end is not None
    posted = next(
        r for r in cloud.sandbox.requests if r.path.endswith("ScheduleRequests") and r.status == 201
    )
    assert posted.user == ADMIN
    assert posted.body["ticketInfo"] == {"ticketNumber": "CHG-1", "ticketSystem": "ServiceNow"}


async def test_privileged_role_administrator_may_assign(
    cloud: Cloud, make_app: AppFactory, http: httpx.AsyncClient
) -> None:
    mailflow = cloud.sandbox.consent(CONTOSO, MAILFLOW_ID)
    cloud.sandbox.consent(CONTOSO, DIRSYNC_ID)
    graph = await as_user(cloud, make_app, http, PRIVILEGED)
    created, active = await graph.ensure_role_assignment(
        mailflow.id, EXCHANGE_ADMINISTRATOR, use_pim=True, justification="ok"
    )
    assert created
    assert active


async def test_exchange_administrator_cannot_assign_roles(
    cloud: Cloud, make_app: AppFactory, http: httpx.AsyncClient
) -> None:
    mailflow = cloud.sandbox.consent(CONTOSO, MAILFLOW_ID)
    await as_user(cloud, make_app, http, ADMIN)  # the admin consents to the delegated scope
    graph = await as_user(cloud, make_app, http, EXCHANGE_ADMIN)
    with pytest.raises(AuthorizationDenied):
        await graph.request_role_assignment(mailflow.id, EXCHANGE_ADMINISTRATOR, "please")
    with pytest.raises(AuthorizationDenied):
        await graph.assign_role(mailflow.id, EXCHANGE_ADMINISTRATOR)


async def test_direct_assignment_without_p2(
    cloud: Cloud, make_app: AppFactory, http: httpx.AsyncClient
) -> None:
    mailflow = cloud.sandbox.consent(FABRIKAM, MAILFLOW_ID)
    graph = await as_user(cloud, make_app, http, FABRIKAM_ADMIN, FABRIKAM)
    with pytest.raises(PremiumLicenseRequired):
        await graph.request_role_assignment(mailflow.id, EXCHANGE_ADMINISTRATOR, "x")
    created, active = await graph.ensure_role_assignment(
        mailflow.id, EXCHANGE_ADMINISTRATOR, use_pim=False
    )
    assert created
    assert not active.via_pim
    with pytest.raises(AlreadyExists):
        await graph.assign_role(mailflow.id, EXCHANGE_ADMINISTRATOR)
    created, active = await graph.ensure_role_assignment(
        mailflow.id, EXCHANGE_ADMINISTRATOR, use_pim=False
    )
    assert not created
    assert [a.role_definition_id for a in active.assignments] == [EXCHANGE_ADMINISTRATOR]


async def test_app_only_token_cannot_assign_without_permission(
    cloud: Cloud, reader: GraphClient
) -> None:
    mailflow = cloud.sandbox.consent(CONTOSO, MAILFLOW_ID)
    with pytest.raises(AuthorizationDenied):
        await reader.assign_role(mailflow.id, EXCHANGE_ADMINISTRATOR)


async def test_domains_organization_and_paging(cloud: Cloud, reader: GraphClient) -> None:
    cloud.sandbox.graph_page_size = 1
    domains = await reader.domains()
    assert [d.name for d in domains] == [
        "contoso.onmicrosoft.com",
        "contoso.com",
        "mail.contoso.com",
    ]
    assert domains[0].is_initial
    assert domains[1].is_default
    pages = [r for r in cloud.sandbox.requests if r.path.endswith("/domains")]
    assert len(pages) == 3
    org = await reader.organization()
    assert org.id == CONTOSO
    assert org.initial_domain == "contoso.onmicrosoft.com"
    assert org.default_domain == "contoso.com"


async def test_throttling_honours_retry_after(
    cloud: Cloud, reader: GraphClient, delays: list[float]
) -> None:
    await reader.domains()  # token acquired: the faults below hit Graph only
    cloud.sandbox.fail("graph", status=429, retry_after=7, times=2)
    assert await reader.domains()
    assert delays == [7.0, 7.0]


async def test_outage_gives_up(cloud: Cloud, reader: GraphClient, delays: list[float]) -> None:
    await reader.domains()
    cloud.sandbox.fail("graph", status=503, times=100)
    with pytest.raises(MicrosoftUnavailable):
        await reader.domains()
    assert len(delays) == 4  # five attempts


async def test_dropped_connection_is_retried_for_reads(
    cloud: Cloud, reader: GraphClient, delays: list[float]
) -> None:
    await reader.domains()
    cloud.sandbox.fail("graph", drop=True)
    assert await reader.domains()
    assert len(delays) == 1


def test_iso_durations() -> None:
    assert parse_iso_duration("P180D") == timedelta(days=180)
    assert parse_iso_duration("PT8H") == timedelta(hours=8)
    assert parse_iso_duration("P1DT12H30M") == timedelta(days=1, hours=12, minutes=30)
    for bad in ("P", "PT", "180D", "P1Y", "P1DT"):
        assert parse_iso_duration(bad) is None
    with pytest.raises(ValueError, match="ISO 8601"):
        Expiration.after("forever")

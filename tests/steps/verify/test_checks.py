"""``verify`` against the sandbox over HTTPS: each grant present, missing, or unreadable."""

from __future__ import annotations

import asyncio

from bot.microsoft.model import EXCHANGE_MANAGE_AS_APP
from bot.sandbox.microsoft import GLOBAL_ADMINISTRATOR, GRAPH, ManualClock
from bot.sandbox.slack import validate_blocks
from bot.steps.verify.checks import verify
from bot.steps.verify.model import CheckName, CheckStatus, Problem, Verification
from bot.steps.verify.views import checklist_message

from .conftest import (
    CONTOSO,
    DIRSYNC_ID,
    FABRIKAM,
    MAILFLOW_ID,
    Cloud,
    ContextFactory,
)

A = CheckName.MAILFLOW_PERMISSION
B = CheckName.MAILFLOW_ROLE
C = CheckName.DIRSYNC_CONSENT
D = CheckName.DOMAINS
E = CheckName.EXCHANGE


def statuses(verification: Verification) -> dict[CheckName, tuple[CheckStatus, Problem | None]]:
    return {c.name: (c.status, c.problem) for c in verification.checks}


def renders(verification: Verification) -> str:
    message = checklist_message(verification)
    assert validate_blocks(message.blocks, surface="message") == []
    return message.text


async def test_well_provisioned_tenant_passes(cloud: Cloud, make_context: ContextFactory) -> None:
    cloud.provision()
    result = await verify(make_context())
    assert result.passed, result.checks
    assert [c.name for c in result.checks] == list(CheckName)
    assert result.domains == ("contoso.onmicrosoft.com", "contoso.com", "mail.contoso.com")
    assert result.initial_domain == "contoso.onmicrosoft.com"
    assert result.via_pim is True
    assert result.mailflow_service_principal_id is not None
    assert "active PIM assignment" in result.check(B).reason
    assert "3 accepted domain(s)" in result.check(E).reason
    graph = cloud.sandbox.requests_to("graph")
    assert graph
    assert {r.client_id for r in graph} == {DIRSYNC_ID}
    exchange = cloud.sandbox.requests_to("exchange")
    assert [(r.client_id, r.body["CmdletInput"]["CmdletName"]) for r in exchange] == [
        (MAILFLOW_ID, "Get-AcceptedDomain")
    ]
    assert all(r.status == 200 for r in [*graph, *exchange])
    assert "5 of 5 checks passed" in renders(result)


async def test_known_initial_domain_skips_waiting_for_domains(
    cloud: Cloud, make_context: ContextFactory
) -> None:
    cloud.provision()
    result = await verify(make_context(initial_domain="contoso.onmicrosoft.com"))
    assert result.passed


async def test_the_exchange_token_is_asked_for_while_the_domains_are_read(
    cloud: Cloud, make_context: ContextFactory
) -> None:
    """The mail-flow app's token does not depend on the domains: with Graph's answer held, the
    token request still reaches Microsoft."""
    cloud.provision()
    domains = cloud.sandbox.hold("graph", method="GET", path_contains="/v1.0/domains")
    token = cloud.sandbox.hold(
        "login",
        method="POST",
        matching=lambda call: (
            call.path.endswith("/token") and call.params.get("client_id") == MAILFLOW_ID
        ),
    )
    verifying = asyncio.create_task(verify(make_context()))
    try:
        await domains.reached()
        await token.reached()
        assert not domains.decided  # Graph has not answered the domains yet
    finally:
        cloud.sandbox.holds.release_all()
    result = await verifying
    assert result.passed, result.checks
    logins = [r for r in cloud.sandbox.requests_to("login") if r.path.endswith("/token")]
    assert [r.client_id for r in logins].count(MAILFLOW_ID) == 1  # asked once, then reused


async def test_no_mailflow_consent(cloud: Cloud, make_context: ContextFactory) -> None:
    cloud.consent(CONTOSO, DIRSYNC_ID)
    result = await verify(make_context())
    assert statuses(result) == {
        A: (CheckStatus.FAILED, Problem.MAILFLOW_CONSENT_MISSING),
        B: (CheckStatus.FAILED, Problem.NOT_CHECKED),
        C: (CheckStatus.PASSED, None),
        D: (CheckStatus.PASSED, None),
        E: (CheckStatus.FAILED, Problem.MAILFLOW_CONSENT_MISSING),
    }
    a = result.check(A)
    assert a.reason.startswith("No consent for the mail-flow app")
    assert MAILFLOW_ID in a.reason
    assert a.step == 1
    assert a.fix is not None
    assert a.fix.startswith("Step 1: a Global Administrator")
    e = result.check(E)
    assert "cannot get a token" in e.reason
    assert "AADSTS7000229" in e.reason  # the token error that means "no consent"
    assert e.step == 1
    assert result.check(B).step == 1
    assert not result.replication_pending
    assert "No consent for the mail-flow app" in renders(result)


async def test_no_manage_as_app(cloud: Cloud, make_context: ContextFactory) -> None:
    cloud.provision()
    cloud.revoke_app_role(CONTOSO, MAILFLOW_ID, EXCHANGE_MANAGE_AS_APP)
    result = await verify(make_context())
    assert statuses(result) == {
        A: (CheckStatus.FAILED, Problem.MANAGE_AS_APP_MISSING),
        B: (CheckStatus.PASSED, None),
        C: (CheckStatus.PASSED, None),
        D: (CheckStatus.PASSED, None),
        E: (CheckStatus.FAILED, Problem.EXCHANGE_DENIED),
    }
    assert "does not hold the Exchange.ManageAsApp" in result.check(A).reason
    assert result.check(A).step == 1
    e = result.check(E)
    assert "401" in e.reason
    assert e.fix is not None
    assert "Exchange.ManageAsApp" in e.fix
    assert not result.replication_pending
    renders(result)


async def test_no_role(cloud: Cloud, make_context: ContextFactory) -> None:
    cloud.consent(CONTOSO, MAILFLOW_ID)
    cloud.consent(CONTOSO, DIRSYNC_ID)
    result = await verify(make_context())
    assert statuses(result) == {
        A: (CheckStatus.PASSED, None),
        B: (CheckStatus.FAILED, Problem.ROLE_MISSING),
        C: (CheckStatus.PASSED, None),
        D: (CheckStatus.PASSED, None),
        E: (CheckStatus.FAILED, Problem.EXCHANGE_DENIED),
    }
    b = result.check(B)
    assert b.reason.startswith("The mail-flow app has no Exchange Administrator role")
    assert "eligible one is not enough" in b.reason
    assert b.step == 2
    assert b.fix is not None
    assert b.fix.startswith("Step 2:")
    assert MAILFLOW_ID in b.fix
    assert "Privileged Role Administrator" in b.fix
    assert result.check(E).step == 2
    assert "403" in result.check(E).reason
    renders(result)


async def test_no_dirsync_consent(cloud: Cloud, make_context: ContextFactory) -> None:
    mailflow = cloud.consent(CONTOSO, MAILFLOW_ID)
    cloud.sandbox.assign_role(CONTOSO, mailflow.id, "29232cdf-9323-42fd-ade2-1d097af3e4de")
    result = await verify(make_context())
    assert statuses(result) == {
        A: (CheckStatus.FAILED, Problem.NOT_CHECKED),
        B: (CheckStatus.FAILED, Problem.NOT_CHECKED),
        C: (CheckStatus.FAILED, Problem.DIRSYNC_CONSENT_MISSING),
        D: (CheckStatus.FAILED, Problem.NOT_CHECKED),
        E: (CheckStatus.FAILED, Problem.NOT_CHECKED),
    }
    c = result.check(C)
    assert c.reason.startswith("No consent for the directory-sync app")
    assert DIRSYNC_ID in c.reason
    assert c.step == 3
    assert all(check.step == 3 for check in result.checks)
    assert "directory-sync app" in result.check(A).reason
    assert cloud.sandbox.requests_to("graph") == []
    text = renders(result)
    assert "not checked" in text


async def test_no_dirsync_consent_with_known_initial_domain_still_checks_exchange(
    cloud: Cloud, make_context: ContextFactory
) -> None:
    mailflow = cloud.consent(CONTOSO, MAILFLOW_ID)
    cloud.sandbox.assign_role(CONTOSO, mailflow.id, "29232cdf-9323-42fd-ade2-1d097af3e4de")
    result = await verify(make_context(initial_domain="contoso.onmicrosoft.com"))
    assert result.check(C).problem is Problem.DIRSYNC_CONSENT_MISSING
    assert result.check(E).status is CheckStatus.PASSED


async def test_dirsync_app_without_a_graph_permission(
    cloud: Cloud, make_context: ContextFactory
) -> None:
    cloud.provision()
    cloud.revoke_app_role(CONTOSO, DIRSYNC_ID, GRAPH.app_roles["Domain.Read.All"])
    result = await verify(make_context())
    d = result.check(D)
    assert (d.status, d.problem, d.step) == (CheckStatus.FAILED, Problem.PERMISSION_MISSING, 3)
    assert "Domain.Read.All" in d.reason
    assert "403 Authorization_RequestDenied" in d.reason
    assert result.check(E).problem is Problem.NOT_CHECKED  # no initial domain to address it
    assert result.check(A).passed
    assert result.check(B).passed
    assert result.check(C).passed
    renders(result)


async def test_tenant_without_p2_passes_with_direct_assignments(
    cloud: Cloud, make_context: ContextFactory
) -> None:
    cloud.provision(FABRIKAM)
    result = await verify(make_context(FABRIKAM))
    assert result.passed, result.checks
    assert result.via_pim is False
    assert result.initial_domain == "fabrikam.onmicrosoft.com"
    assert "direct assignment (no Entra ID P2)" in result.check(B).reason
    answered = [
        (r.path.rsplit("/", 1)[-1], r.status)
        for r in cloud.sandbox.requests_to("graph")
        if "roleManagement" in r.path
    ]
    assert answered == [("roleAssignmentScheduleInstances", 400), ("roleAssignments", 200)]
    text = renders(result)
    assert "no Entra ID P2" in text


async def test_tenant_without_p2_and_without_role(
    cloud: Cloud, make_context: ContextFactory
) -> None:
    cloud.consent(FABRIKAM, MAILFLOW_ID)
    cloud.consent(FABRIKAM, DIRSYNC_ID)
    result = await verify(make_context(FABRIKAM))
    b = result.check(B)
    assert b.problem is Problem.ROLE_MISSING
    assert "no Entra ID P2, and no direct assignment" in b.reason


async def test_global_administrator_counts(cloud: Cloud, make_context: ContextFactory) -> None:
    cloud.provision(role=GLOBAL_ADMINISTRATOR)
    result = await verify(make_context())
    assert result.passed
    assert result.check(B).reason.startswith("Global Administrator:")
    assert "Exchange Administrator would be enough" in result.check(B).reason


async def test_role_replicating_is_waiting(
    cloud: Cloud, make_context: ContextFactory, clock: ManualClock
) -> None:
    cloud.sandbox.replication_delay = 600
    cloud.provision()
    result = await verify(make_context())
    e = result.check(E)
    assert (e.status, e.problem) == (CheckStatus.WAITING, Problem.REPLICATION_PENDING)
    assert "up to 30 minutes" in e.reason
    assert result.replication_pending
    assert not result.failures
    assert result.role_active_since == clock.now
    renders(result)


async def test_refusal_long_after_the_assignment_is_not_replication(
    cloud: Cloud, make_context: ContextFactory, clock: ManualClock
) -> None:
    cloud.sandbox.replication_delay = 10 * 3600
    cloud.provision()
    clock.advance(2 * 3600)
    result = await verify(make_context())
    e = result.check(E)
    assert (e.status, e.problem, e.step) == (CheckStatus.FAILED, Problem.EXCHANGE_DENIED, 2)
    assert "longer than Microsoft takes" in e.reason
    assert not result.replication_pending


async def test_wrong_mailflow_secret_is_the_operators_problem(
    cloud: Cloud, make_context: ContextFactory
) -> None:
    cloud.provision()
    result = await verify(make_context(mailflow_secret="not-the-secret"))
    e = result.check(E)
    assert (e.status, e.problem, e.step) == (CheckStatus.FAILED, Problem.CREDENTIAL_REJECTED, None)
    assert "invalid_client" in e.reason
    assert e.fix is not None
    assert "MAILFLOW_CLIENT_SECRET" in e.fix
    assert "not-the-secret" not in repr(result)


async def test_throttling_and_outage_bursts_are_survived(
    cloud: Cloud, make_context: ContextFactory, delays: list[float]
) -> None:
    cloud.provision()
    cloud.sandbox.fail("graph", status=429, retry_after=7, times=3)
    cloud.sandbox.fail("exchange", status=503, retry_after=2, times=2)
    cloud.sandbox.fail("exchange", status=429, retry_after=1, times=1)
    result = await verify(make_context())
    assert result.passed, result.checks
    assert sorted(delays) == [1.0, 2.0, 2.0, 7.0, 7.0, 7.0]
    refused = [r.status for r in cloud.sandbox.requests if r.status in (429, 503)]
    assert sorted(refused) == [429, 429, 429, 429, 503, 503]


async def test_lasting_graph_outage_says_try_again(
    cloud: Cloud, make_context: ContextFactory, delays: list[float]
) -> None:
    cloud.provision()
    cloud.sandbox.fail("graph", status=503, times=1000)
    result = await verify(make_context())
    for name in (A, C, D):
        check = result.check(name)
        assert (check.status, check.problem) == (CheckStatus.FAILED, Problem.UNAVAILABLE)
        assert check.fix is not None
        assert "Verify again" in check.fix
    assert result.check(B).problem is Problem.NOT_CHECKED
    assert result.check(E).problem is Problem.NOT_CHECKED
    assert result.transient_only  # worth asking again as it is
    assert delays  # the retry policy waited between attempts (and never really slept)
    renders(result)

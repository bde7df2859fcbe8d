from __future__ import annotations

import urllib.parse

import httpx

from bot.microsoft.model import EXCHANGE_MANAGE_AS_APP
from bot.sandbox.microsoft import EXCHANGE

from .conftest import (
    ADMIN,
    CONTOSO,
    DIRSYNC_ID,
    EXCHANGE_ADMIN,
    FABRIKAM,
    FABRIKAM_ADMIN,
    MAILFLOW_ID,
    REDIRECT,
    Cloud,
)


def consent_url(cloud: Cloud, tenant: str = "contoso.com", v2: bool = True, **extra: str) -> str:
    query = {"client_id": MAILFLOW_ID, "redirect_uri": REDIRECT, "state": "s-1", **extra}
    if v2:
        query.setdefault("scope", "https://outlook.office365.com/.default")
        return f"{cloud.login_url}/{tenant}/v2.0/adminconsent?{urllib.parse.urlencode(query)}"
    return f"{cloud.login_url}/{tenant}/adminconsent?{urllib.parse.urlencode(query)}"


async def submit(http: httpx.AsyncClient, url: str, upn: str, decision: str) -> dict[str, str]:
    page = await http.get(url)
    assert page.status_code == 200
    assert ">Accept</button>" in page.text
    assert ">Cancel</button>" in page.text
    answer = await http.post(url, data={"login_hint": upn, "decision": decision})
    assert answer.status_code == 302, answer.text
    location = answer.headers["location"]
    assert location.startswith(REDIRECT + "?")
    return dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(location).query))


async def test_v2_admin_consent(cloud: Cloud, http: httpx.AsyncClient) -> None:
    redirect = await submit(http, consent_url(cloud), ADMIN, "accept")
    assert redirect == {
        "admin_consent": "True",
        "tenant": CONTOSO,
        "scope": "https://outlook.office365.com/Exchange.ManageAsApp",
        "state": "s-1",
    }
    tenant = cloud.sandbox.tenant(CONTOSO)
    sp = tenant.service_principal(MAILFLOW_ID)
    assert sp is not None
    assert [g.app_role_id for g in tenant.app_role_grants if g.principal_id == sp.id] == [
        EXCHANGE_MANAGE_AS_APP
    ]


async def test_v1_admin_consent_grants_everything(cloud: Cloud, http: httpx.AsyncClient) -> None:
    url = consent_url(cloud, CONTOSO, v2=False, client_id=DIRSYNC_ID)
    redirect = await submit(http, url, ADMIN, "accept")
    assert redirect == {"admin_consent": "True", "tenant": CONTOSO, "state": "s-1"}
    tenant = cloud.sandbox.tenant(CONTOSO)
    sp = tenant.service_principal(DIRSYNC_ID)
    assert sp is not None
    assert len([g for g in tenant.app_role_grants if g.principal_id == sp.id]) == 4


async def test_cancel(cloud: Cloud, http: httpx.AsyncClient) -> None:
    redirect = await submit(http, consent_url(cloud), ADMIN, "cancel")
    assert redirect["error"] == "access_denied"
    assert redirect["error_subcode"] == "cancel"
    assert redirect["state"] == "s-1"
    assert cloud.sandbox.tenant(CONTOSO).service_principal(MAILFLOW_ID) is None


async def test_non_admin_is_refused(cloud: Cloud, http: httpx.AsyncClient) -> None:
    redirect = await submit(http, consent_url(cloud), EXCHANGE_ADMIN, "accept")
    assert redirect["error"] == "access_denied"
    assert redirect["admin_consent"] == "True"  # check error first
    assert cloud.sandbox.tenant(CONTOSO).service_principal(MAILFLOW_ID) is None


async def test_user_of_another_tenant_consents_there(cloud: Cloud, http: httpx.AsyncClient) -> None:
    redirect = await submit(http, consent_url(cloud), FABRIKAM_ADMIN, "accept")
    assert redirect["tenant"] == FABRIKAM


async def test_unknown_user_stays_on_the_page(cloud: Cloud, http: httpx.AsyncClient) -> None:
    answer = await http.post(
        consent_url(cloud), data={"login_hint": "nobody@contoso.com", "decision": "accept"}
    )
    assert answer.status_code == 200
    assert "find an account with that username" in answer.text


async def test_resource_not_in_registration(cloud: Cloud, http: httpx.AsyncClient) -> None:
    url = consent_url(cloud, scope="https://graph.microsoft.com/.default")
    redirect = await submit(http, url, ADMIN, "accept")
    assert redirect["error"] == "invalid_client"
    assert "AADSTS650057" in redirect["error_description"]


async def test_sandbox_scope_identifier_works(cloud: Cloud, http: httpx.AsyncClient) -> None:
    url = consent_url(cloud, scope=f"{cloud.exchange_url}/.default")
    redirect = await submit(http, url, ADMIN, "accept")
    assert redirect["admin_consent"] == "True"
    assert EXCHANGE.app_id


async def test_errors_that_cannot_redirect(cloud: Cloud, http: httpx.AsyncClient) -> None:
    unknown_app = await http.get(
        consent_url(cloud, client_id="00000000-0000-4000-8000-000000000000")
    )
    assert unknown_app.status_code == 400
    assert "AADSTS700016" in unknown_app.text
    unknown_tenant = await http.get(consent_url(cloud, tenant="nosuch.example"))
    assert unknown_tenant.status_code == 400
    assert "AADSTS90002" in unknown_tenant.text
    no_redirect = await http.get(consent_url(cloud, redirect_uri="ftp://x"))
    assert "AADSTS50011" in no_redirect.text


async def test_signed_in_browser_answers_at_once(cloud: Cloud, http: httpx.AsyncClient) -> None:
    cloud.sandbox.sign_in(ADMIN, auto="accept")
    answer = await http.get(consent_url(cloud))
    assert answer.status_code == 302
    assert "admin_consent=True" in answer.headers["location"]


async def test_faults_and_latency_are_recorded(cloud: Cloud, http: httpx.AsyncClient) -> None:
    cloud.sandbox.fail("login", status=503, retry_after=3)
    failed = await http.get(f"{cloud.login_url}/contoso.com/v2.0/.well-known/openid-configuration")
    assert failed.status_code == 503
    assert failed.headers["retry-after"] == "3"
    cloud.sandbox.set_latency(0.01)
    ok = await http.get(f"{cloud.login_url}/contoso.com/v2.0/.well-known/openid-configuration")
    assert ok.json()["issuer"] == f"{cloud.login_url}/{CONTOSO}/v2.0"
    assert [r.status for r in cloud.sandbox.requests_to("login")] == [503, 200]

from __future__ import annotations

import asyncio
import logging
import re

import httpx
import pytest

from bot.microsoft.errors import (
    ConsentMissing,
    MicrosoftUnavailable,
    TokenError,
    UnknownTenant,
)
from bot.microsoft.identity import AppCredentials, MicrosoftApp, SignInFlow

from .conftest import (
    ADMIN,
    CONTOSO,
    DIRSYNC_ID,
    DIRSYNC_SECRET,
    EXCHANGE_ADMIN,
    MAILFLOW_ID,
    MAILFLOW_SECRET,
    REDIRECT,
    AppFactory,
    Certificate,
    Cloud,
)


async def test_app_only_token_comes_from_msal_cache(cloud: Cloud, make_app: AppFactory) -> None:
    cloud.sandbox.consent(CONTOSO, MAILFLOW_ID)
    app = make_app()
    first = await app.app_token(CONTOSO, cloud.exchange_url)
    second = await app.app_token(CONTOSO, cloud.exchange_url)
    assert first == second
    token_posts = [r for r in cloud.sandbox.requests if r.path.endswith("/token")]
    assert len(token_posts) == 1
    assert token_posts[0].body["client_secret"] == "<redacted>"
    assert token_posts[0].body["grant_type"] == "client_credentials"


async def test_calls_made_together_share_one_token_request(
    cloud: Cloud, make_app: AppFactory
) -> None:
    cloud.sandbox.consent(CONTOSO, MAILFLOW_ID)
    app = make_app()
    tokens = await asyncio.gather(*(app.app_token(CONTOSO, cloud.exchange_url) for _ in range(4)))
    assert len(set(tokens)) == 1
    token_posts = [r for r in cloud.sandbox.requests if r.path.endswith("/token")]
    assert len(token_posts) == 1


async def test_domain_works_as_tenant(cloud: Cloud, make_app: AppFactory) -> None:
    cloud.sandbox.consent(CONTOSO, MAILFLOW_ID)
    assert await make_app().app_token("contoso.com", cloud.exchange_url)


async def test_certificate_credential(
    cloud: Cloud, make_app: AppFactory, certificate: Certificate
) -> None:
    cloud.sandbox.consent(CONTOSO, DIRSYNC_ID)
    app = make_app(DIRSYNC_ID, certificate_path=certificate.pem_path)
    assert await app.app_token(CONTOSO, cloud.graph_url)
    posted = [r for r in cloud.sandbox.requests if r.path.endswith("/token")][-1]
    assert posted.body["client_assertion"] == "<redacted>"
    assert "client_secret" not in posted.body


async def test_wrong_certificate_is_refused(
    cloud: Cloud, make_app: AppFactory, certificate: Certificate
) -> None:
    cloud.sandbox.consent(CONTOSO, MAILFLOW_ID)
    app = make_app(MAILFLOW_ID, certificate_path=certificate.pem_path)
    with pytest.raises(TokenError) as caught:
        await app.app_token(CONTOSO, cloud.exchange_url)
    assert caught.value.error == "invalid_client"
    assert 700027 in caught.value.error_codes


async def test_a_fresh_token_says_what_the_tenant_grants_now(
    cloud: Cloud, make_app: AppFactory
) -> None:
    """Past MSAL's cache: no token before consent, the granted application permissions after,
    and a grant taken away shows at once (a cached token would still carry it)."""
    app = make_app()
    with pytest.raises(ConsentMissing):
        await app.fresh_app_token(CONTOSO, cloud.exchange_url)
    cloud.sandbox.consent(CONTOSO, MAILFLOW_ID)
    cached = await app.app_token(CONTOSO, cloud.exchange_url)
    fresh = await app.fresh_app_token(CONTOSO, cloud.exchange_url)
    assert fresh.roles == {"Exchange.ManageAsApp"}
    assert fresh.access_token != cached
    assert fresh.access_token not in repr(fresh)
    tenant = cloud.sandbox.tenant(CONTOSO)
    tenant.app_role_grants.clear()
    assert (await app.fresh_app_token(CONTOSO, cloud.exchange_url)).roles == frozenset()
    assert await app.app_token(CONTOSO, cloud.exchange_url) == cached  # MSAL's cache


async def test_missing_consent(cloud: Cloud, make_app: AppFactory) -> None:
    with pytest.raises(ConsentMissing) as caught:
        await make_app().app_token(CONTOSO, cloud.exchange_url)
    assert 7000229 in caught.value.error_codes


async def test_wrong_secret(cloud: Cloud, make_app: AppFactory) -> None:
    cloud.sandbox.consent(CONTOSO, MAILFLOW_ID)
    with pytest.raises(TokenError) as caught:
        await make_app(secret="not-the-secret").app_token(CONTOSO, cloud.exchange_url)
    assert caught.value.error == "invalid_client"
    assert "not-the-secret" not in str(caught.value)


async def test_unknown_tenant(cloud: Cloud, make_app: AppFactory) -> None:
    with pytest.raises(UnknownTenant):
        await make_app().app_token("nosuch.example", cloud.exchange_url)


async def test_login_outage_is_unavailable(cloud: Cloud, make_app: AppFactory) -> None:
    cloud.sandbox.consent(CONTOSO, MAILFLOW_ID)
    app = make_app()
    cloud.sandbox.fail("login", status=503, path_contains="/token")
    with pytest.raises(MicrosoftUnavailable):
        await app.app_token(CONTOSO, cloud.exchange_url)


async def test_dropped_connection_is_unavailable(cloud: Cloud, make_app: AppFactory) -> None:
    app = make_app()
    cloud.sandbox.fail("login", drop=True)
    with pytest.raises(MicrosoftUnavailable):
        await app.app_token(CONTOSO, cloud.exchange_url)


def test_credentials_need_exactly_one() -> None:
    with pytest.raises(ValueError, match="exactly one"):
        AppCredentials(MAILFLOW_ID)
    assert MAILFLOW_SECRET not in repr(AppCredentials(MAILFLOW_ID, secret=MAILFLOW_SECRET))


def test_login_url_must_be_https() -> None:
    with pytest.raises(ValueError, match="https"):
        MicrosoftApp(AppCredentials(MAILFLOW_ID, secret="x"), login_url="http://login.example")


async def _follow(http: httpx.AsyncClient, url: str) -> dict[str, str]:
    """What the browser would POST to the redirect URI (response_mode=form_post)."""
    response = await http.get(url)
    assert response.status_code == 200, response.text
    assert f"action='{REDIRECT}'" in response.text
    return dict(re.findall(r"name='([^']+)' value='([^']*)'", response.text))


async def test_delegated_sign_in(
    cloud: Cloud, make_app: AppFactory, http: httpx.AsyncClient
) -> None:
    app = make_app(DIRSYNC_ID)
    scopes = [f"{cloud.graph_url}/RoleManagement.ReadWrite.Directory"]
    flow = await app.initiate_sign_in(CONTOSO, scopes, REDIRECT, login_hint=ADMIN)
    assert "code_challenge=" in flow.auth_uri
    assert "code_verifier" not in repr(flow)
    flow = SignInFlow.from_json(flow.to_json())
    cloud.sandbox.sign_in(ADMIN, auto="accept")
    redirect = await _follow(http, flow.auth_uri)
    assert redirect["state"] == flow.state
    token = await app.complete_sign_in(CONTOSO, flow, redirect)
    assert token.user_principal_name == ADMIN
    assert token.tenant_id == CONTOSO
    assert token.access_token not in repr(token)
    assert any(s.endswith("RoleManagement.ReadWrite.Directory") for s in token.scopes)


async def test_sign_in_state_mismatch(
    cloud: Cloud, make_app: AppFactory, http: httpx.AsyncClient
) -> None:
    app = make_app(DIRSYNC_ID)
    flow = await app.initiate_sign_in(CONTOSO, ["User.Read"], REDIRECT)
    cloud.sandbox.sign_in(ADMIN, auto="accept")
    redirect = await _follow(http, flow.auth_uri)
    redirect["state"] = "forged"
    with pytest.raises(TokenError) as caught:
        await app.complete_sign_in(CONTOSO, flow, redirect)
    assert caught.value.error == "state_mismatch"


async def test_sign_in_cancelled(
    cloud: Cloud, make_app: AppFactory, http: httpx.AsyncClient
) -> None:
    app = make_app(DIRSYNC_ID)
    flow = await app.initiate_sign_in(CONTOSO, ["User.Read"], REDIRECT)
    cloud.sandbox.sign_in(ADMIN, auto="cancel")
    redirect = await _follow(http, flow.auth_uri)
    with pytest.raises(TokenError) as caught:
        await app.complete_sign_in(CONTOSO, flow, redirect)
    assert caught.value.error == "access_denied"


async def test_non_admin_cannot_consent_to_admin_scopes(
    cloud: Cloud, make_app: AppFactory, http: httpx.AsyncClient
) -> None:
    app = make_app(DIRSYNC_ID)
    flow = await app.initiate_sign_in(CONTOSO, ["RoleManagement.ReadWrite.Directory"], REDIRECT)
    cloud.sandbox.sign_in(EXCHANGE_ADMIN, auto="accept")
    redirect = await _follow(http, flow.auth_uri)
    with pytest.raises(ConsentMissing):
        await app.complete_sign_in(CONTOSO, flow, redirect)


async def test_secrets_and_tokens_never_logged(
    cloud: Cloud,
    make_app: AppFactory,
    http: httpx.AsyncClient,
    caplog: pytest.LogCaptureFixture,
) -> None:
    cloud.sandbox.consent(CONTOSO, MAILFLOW_ID)
    caplog.set_level(logging.DEBUG)
    mailflow = make_app()
    app_token = await mailflow.app_token(CONTOSO, cloud.exchange_url)
    dirsync = make_app(DIRSYNC_ID)
    flow = await dirsync.initiate_sign_in(CONTOSO, ["User.Read"], REDIRECT)
    cloud.sandbox.sign_in(ADMIN, auto="accept")
    redirect = await _follow(http, flow.auth_uri)
    delegated = await dirsync.complete_sign_in(CONTOSO, flow, redirect)
    with pytest.raises(TokenError):
        await make_app(secret="wrong-secret-Q1").app_token(CONTOSO, cloud.graph_url)
    logged = caplog.text + "".join(repr(r.args) for r in caplog.records)
    assert caplog.records, "expected MSAL/httpx debug logs to be captured"
    for secret in (
        MAILFLOW_SECRET,
        DIRSYNC_SECRET,
        "wrong-secret-Q1",
        app_token,
        delegated.access_token,
        redirect["code"],
    ):
        assert secret not in logged

"""Tokens from the Microsoft identity platform, through MSAL, off the event loop.

One ``MicrosoftApp`` per app registration (mail-flow, directory-sync). It keeps one MSAL
``ConfidentialClientApplication`` per tenant (its authority is ``{login_url}/{tenant}``), so
app-only tokens come from MSAL's own cache until they near expiry. MSAL is synchronous: every call
goes through a thread pool (as ``asyncio.to_thread`` would, but remembered, so ``aclose`` can
wait for it). MSAL talks HTTP through an ``httpx.Client`` that trusts the
configured CA bundle.

Delegated sign-in (used to assign the Exchange Administrator role on the admin's behalf) is MSAL's
auth code flow: ``initiate_sign_in`` (state, PKCE and nonce) and ``complete_sign_in``.

Secrets and tokens never appear in reprs, logs or error messages.
"""

from __future__ import annotations

import asyncio
import base64
import concurrent.futures
import contextvars
import functools
import json
import logging
import os
import re
import ssl
import time
import urllib.parse
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import httpx
import msal  # type: ignore[import-untyped,unused-ignore]
from msal.exceptions import MsalServiceError  # type: ignore[import-untyped,unused-ignore]

from bot.microsoft.errors import (
    ConsentMissing,
    MicrosoftError,
    MicrosoftUnavailable,
    TokenError,
    UnknownTenant,
)
from bot.ops.inflight import waiting_elsewhere

__all__ = [
    "AppCredentials",
    "AppToken",
    "DelegatedToken",
    "MicrosoftApp",
    "SignInFlow",
    "TokenProvider",
    "client_ssl_context",
    "delegated_provider",
    "resource_scope",
]

log = logging.getLogger(__name__)

#: Hosts MSAL knows; any other login host gets ``instance_discovery=False``.
# MSAL is synchronous: its calls run here, off the event loop.
_MSAL_THREADS = concurrent.futures.ThreadPoolExecutor(max_workers=8, thread_name_prefix="msal")

MICROSOFT_LOGIN_HOSTS = frozenset(
    {
        "login.microsoftonline.com",
        "login.microsoft.com",
        "login.windows.net",
        "login.microsoftonline.us",
        "login.chinacloudapi.cn",
        "login.partner.microsoftonline.cn",
    }
)
#: A token handed out again has at least this long left (MSAL itself refreshes about as early).
_TOKEN_REUSE_MARGIN_SECONDS = 300.0
#: AADSTS codes that mean the app is not (yet) consented in the tenant.
CONSENT_ERROR_CODES = frozenset({7000229, 65001, 700016, 650052})
CONSENT_ERRORS = frozenset({"consent_required"})
TRANSIENT_ERRORS = frozenset({"temporarily_unavailable", "server_error"})

_PEM_BLOCK = re.compile(r"-----BEGIN (?P<kind>[A-Z ]+)-----.+?-----END (?P=kind)-----", re.DOTALL)


class _RedactMsalEvents(logging.Filter):
    """MSAL's cache debug log shows the redeemed auth code and PKCE verifier: hide them."""

    _FIELD = re.compile(r'("(?:code|code_verifier|client_assertion|nonce)":\s*)"[^"]*"')

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        redacted = self._FIELD.sub(r'\1"********"', message)
        if redacted != message:
            record.msg, record.args = redacted, None
        return True


for _name in ("msal.token_cache", "msal.application", "msal.oauth2cli.oauth2"):
    logging.getLogger(_name).addFilter(_RedactMsalEvents())


class TokenProvider(Protocol):
    """Something that hands out a bearer token for one resource (app-only or delegated)."""

    async def access_token(self) -> str: ...


def resource_scope(resource_url: str) -> str:
    """``https://graph.microsoft.com`` → ``https://graph.microsoft.com/.default``."""
    return resource_url.rstrip("/") + "/.default"


def client_ssl_context(ca_file: str | Path | None = None) -> ssl.SSLContext:
    """A TLS context trusting ``ca_file`` or, without one, ``SSL_CERT_FILE`` or the system store."""
    chosen = ca_file or os.environ.get("SSL_CERT_FILE") or None
    if chosen:
        return ssl.create_default_context(cafile=str(chosen))
    return ssl.create_default_context()


@dataclass(frozen=True)
class AppCredentials:
    """An app registration's id and its credential: a client secret or a PEM certificate file.

    The PEM file holds the private key and the certificate (as Entra ID's "Certificates" tab has
    it). The secret never shows in ``repr``.
    """

    client_id: str
    secret: str | None = field(default=None, repr=False)
    certificate_path: Path | None = None

    def __post_init__(self) -> None:
        if (self.secret is None) == (self.certificate_path is None):
            raise ValueError("give exactly one of a client secret or a certificate path")

    def msal_credential(self) -> str | dict[str, str]:
        """The ``client_credential`` MSAL expects (reads the certificate file)."""
        if self.secret is not None:
            return self.secret
        assert self.certificate_path is not None
        text = Path(self.certificate_path).read_text(encoding="ascii")
        key = certificate = None
        for block in _PEM_BLOCK.finditer(text):
            if block.group("kind").endswith("PRIVATE KEY"):
                key = block.group(0)
            elif block.group("kind") == "CERTIFICATE" and certificate is None:
                certificate = block.group(0)
        if key is None or certificate is None:
            raise ValueError(
                f"{self.certificate_path} must hold a PEM private key and a PEM certificate"
            )
        return {"private_key": key, "public_certificate": certificate}


@dataclass(frozen=True)
class DelegatedToken:
    """A token obtained on a signed-in user's behalf. The token itself never shows in ``repr``."""

    access_token: str = field(repr=False)
    expires_at: float
    scopes: tuple[str, ...]
    tenant_id: str | None
    user_object_id: str | None
    user_principal_name: str | None
    display_name: str | None


@dataclass(frozen=True)
class AppToken:
    """An app-only token and the application permissions (``roles``) it carries. The token
    itself never shows in ``repr``."""

    access_token: str = field(repr=False)
    expires_at: float
    roles: frozenset[str]

    def provider(self) -> TokenProvider:
        return _StaticTokenProvider(
            DelegatedToken(self.access_token, self.expires_at, (), None, None, None, None)
        )


@dataclass(frozen=True)
class SignInFlow:
    """A started sign-in: send the user to ``auth_uri``; keep ``data`` until the redirect.

    ``data`` is MSAL's flow (state, PKCE verifier, nonce, redirect URI): JSON-serialisable, for a
    short-lived, server-side store only. It is hidden from ``repr``.
    """

    auth_uri: str
    state: str
    data: Mapping[str, Any] = field(repr=False)

    def to_json(self) -> str:
        return json.dumps(dict(self.data))

    @classmethod
    def from_json(cls, text: str) -> SignInFlow:
        data = json.loads(text)
        return cls(auth_uri=data["auth_uri"], state=data["state"], data=data)


@dataclass(frozen=True)
class _AppTokenProvider:
    app: MicrosoftApp
    tenant_id: str
    resource_url: str

    async def access_token(self) -> str:
        return await self.app.app_token(self.tenant_id, self.resource_url)


@dataclass(frozen=True)
class _StaticTokenProvider:
    token: DelegatedToken = field(repr=False)

    async def access_token(self) -> str:
        if self.token.expires_at <= time.time():
            raise TokenError("token_expired", "The signed-in user's token has expired.")
        return self.token.access_token


def delegated_provider(token: DelegatedToken) -> TokenProvider:
    """A ``TokenProvider`` that hands out a delegated token (until it expires)."""
    return _StaticTokenProvider(token)


class _MsalHttpClient:
    """The ``http_client`` MSAL gets: an ``httpx.Client`` with MSAL's quirks smoothed over.

    MSAL posts the signed client assertion as ``bytes`` inside the form dict; httpx would send
    that as the text ``b'eyJ...'`` (and Microsoft would refuse it). Values are decoded here.
    """

    def __init__(self, client: httpx.Client) -> None:
        self._client = client

    def get(self, url: str, **kwargs: Any) -> httpx.Response:
        return self._client.get(url, **kwargs)

    def post(self, url: str, data: Any = None, **kwargs: Any) -> httpx.Response:
        if isinstance(data, dict):
            data = {k: v.decode("ascii") if isinstance(v, bytes) else v for k, v in data.items()}
            return self._client.post(url, data=data, **kwargs)
        if data is not None:
            return self._client.post(url, content=data, **kwargs)
        return self._client.post(url, **kwargs)

    def close(self) -> None:
        self._client.close()


class MicrosoftApp:
    """One app registration, able to get tokens in any tenant.

    ``http_client``: an ``httpx.Client`` for MSAL (built from ``ca_file`` when omitted; closed by
    ``close`` only if built here).
    """

    def __init__(
        self,
        credentials: AppCredentials,
        *,
        login_url: str,
        http_client: httpx.Client | None = None,
        ca_file: str | Path | None = None,
        timeout: float = 30.0,
    ) -> None:
        parts = urllib.parse.urlsplit(login_url)
        if parts.scheme != "https" or not parts.hostname:
            raise ValueError(f"the login URL must be an https:// URL, not {login_url!r}")
        self.credentials = credentials
        self.login_url = login_url.rstrip("/")
        self._instance_discovery = parts.hostname.lower() in MICROSOFT_LOGIN_HOSTS
        self._owns_client = http_client is None
        self._http = http_client or httpx.Client(
            verify=client_ssl_context(ca_file), timeout=timeout
        )
        self._credential = credentials.msal_credential()
        self._apps: dict[str, Any] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        self._tokens: dict[tuple[str, str], tuple[str, float]] = {}  # → (token, expires at)
        self._token_locks: dict[tuple[str, str], asyncio.Lock] = {}
        self._running: set[concurrent.futures.Future[Any]] = set()

    def __repr__(self) -> str:
        return f"MicrosoftApp(client_id={self.client_id!r}, login_url={self.login_url!r})"

    @property
    def client_id(self) -> str:
        return self.credentials.client_id

    def authority(self, tenant: str) -> str:
        return f"{self.login_url}/{urllib.parse.quote(tenant, safe='')}"

    def close(self) -> None:
        if self._owns_client:
            self._http.close()

    async def aclose(self, grace_seconds: float = 10.0) -> None:
        """Close once MSAL calls still running in threads have finished (a cancelled caller
        does not stop its thread, and closing the client under it would leak its socket)."""
        running = [asyncio.wrap_future(future) for future in list(self._running)]
        if running:
            await asyncio.wait(running, timeout=grace_seconds)
        self.close()

    async def _in_thread(self, function: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """``asyncio.to_thread``, remembering the call until its thread is done."""
        context = contextvars.copy_context()
        future = _MSAL_THREADS.submit(context.run, functools.partial(function, *args, **kwargs))
        self._running.add(future)
        future.add_done_callback(self._running.discard)
        async with waiting_elsewhere():  # MSAL's thread waits on Microsoft, not this loop
            return await asyncio.wrap_future(future)

    def token_provider(self, tenant_id: str, resource_url: str) -> TokenProvider:
        """App-only tokens for ``resource_url`` (e.g. the Graph or Exchange base URL)."""
        return _AppTokenProvider(self, tenant_id, resource_url)

    async def _msal(self, tenant: str) -> Any:
        key = tenant.lower()
        if key in self._apps:
            return self._apps[key]
        lock = self._locks.setdefault(key, asyncio.Lock())
        async with lock:
            if key not in self._apps:
                self._apps[key] = await self._in_thread(self._build, tenant)
        return self._apps[key]

    def _build(self, tenant: str) -> Any:
        options: dict[str, Any] = {}
        if not self._instance_discovery:
            options["instance_discovery"] = False
        try:
            return msal.ConfidentialClientApplication(
                self.client_id,
                client_credential=self._credential,
                authority=self.authority(tenant),
                http_client=_MsalHttpClient(self._http),
                **options,
            )
        except httpx.TransportError as error:
            raise MicrosoftUnavailable(
                f"Microsoft sign-in is unreachable ({type(error).__name__})"
            ) from None
        except MsalServiceError:
            raise MicrosoftUnavailable("Microsoft sign-in discovery failed") from None
        except ValueError as error:
            if "Unable to get authority configuration" in str(error):
                raise UnknownTenant(tenant) from None
            raise MicrosoftError(f"MSAL refused the configuration: {error}") from None

    async def _call(self, tenant: str, method: str, *args: Any, **kwargs: Any) -> Any:
        return await self._call_on(await self._msal(tenant), method, *args, **kwargs)

    async def _call_on(self, application: Any, method: str, *args: Any, **kwargs: Any) -> Any:
        try:
            return await self._in_thread(getattr(application, method), *args, **kwargs)
        except httpx.TransportError as error:
            raise MicrosoftUnavailable(
                f"Microsoft sign-in is unreachable ({type(error).__name__})"
            ) from None
        except MsalServiceError:
            raise MicrosoftUnavailable("Microsoft sign-in answered a server error") from None
        except json.JSONDecodeError:
            raise MicrosoftUnavailable("Microsoft sign-in answered something unreadable") from None

    async def app_token(self, tenant_id: str, resource_url: str) -> str:
        """An app-only access token for ``resource_url`` in ``tenant_id`` (cached by MSAL).

        Calls made together share one request for it, and the token is handed out again without
        a trip through MSAL's thread until it nears expiry: each trip costs a thread hop and
        MSAL's cache search, which a burst of parallel Graph or Exchange calls would queue for.
        A refusal (no consent yet, say) forgets the tenant's MSAL app: MSAL would answer the
        same refusal from its memory for a minute, even once the consent is given.
        """
        scope = resource_scope(resource_url)
        key = (tenant_id.lower(), scope)
        if (token := self._unexpired(key)) is not None:
            return token
        async with self._token_locks.setdefault(key, asyncio.Lock()):
            if (token := self._unexpired(key)) is not None:
                return token
            result = await self._call(tenant_id, "acquire_token_for_client", scopes=[scope])
            try:
                token = _check(result)
            except TokenError:
                self._apps.pop(tenant_id.lower(), None)
                raise
            expires_in = float(result.get("expires_in", 0))
            self._tokens[key] = (token, time.time() + expires_in)
        log.debug(
            "app-only token for %s in tenant %s (%s)",
            self.client_id,
            tenant_id,
            result.get("token_source", "identity_provider"),
        )
        return token

    def _unexpired(self, key: tuple[str, str]) -> str | None:
        held = self._tokens.get(key)
        if held is None or held[1] - _TOKEN_REUSE_MARGIN_SECONDS <= time.time():
            return None
        return held[0]

    async def fresh_app_token(self, tenant_id: str, resource_url: str) -> AppToken:
        """An app-only token for ``resource_url`` in ``tenant_id`` straight from Microsoft,
        past MSAL's cache (a throw-away MSAL application): what the tenant grants the app now.

        Microsoft issues it only once the app has a service principal in the tenant
        (``ConsentMissing`` otherwise); its ``roles`` are the application permissions the app
        holds there on that resource. Use it to confirm a consent, then let it go."""
        application = await self._in_thread(self._build, tenant_id)
        result = await self._call_on(
            application, "acquire_token_for_client", scopes=[resource_scope(resource_url)]
        )
        token = _check(result)
        return AppToken(
            access_token=token,
            expires_at=time.time() + float(result.get("expires_in", 0)),
            roles=frozenset(_access_token_claims(token).get("roles") or ()),
        )

    async def initiate_sign_in(
        self,
        tenant: str,
        scopes: Sequence[str],
        redirect_uri: str,
        *,
        login_hint: str | None = None,
        prompt: str | None = None,
        response_mode: str = "form_post",
    ) -> SignInFlow:
        """Start a delegated sign-in (auth code flow with state, PKCE and nonce).

        With the default ``response_mode="form_post"`` Microsoft returns the result as an HTML form
        POSTed to ``redirect_uri`` (the code never appears in a URL); pass the posted fields to
        ``complete_sign_in``.
        """
        kwargs: dict[str, Any] = {"redirect_uri": redirect_uri, "response_mode": response_mode}
        if login_hint:
            kwargs["login_hint"] = login_hint
        if prompt:
            kwargs["prompt"] = prompt
        flow = await self._call(tenant, "initiate_auth_code_flow", list(scopes), **kwargs)
        if "error" in flow:
            _check(flow)
        return SignInFlow(auth_uri=flow["auth_uri"], state=flow["state"], data=flow)

    async def complete_sign_in(
        self, tenant: str, flow: SignInFlow, auth_response: Mapping[str, str]
    ) -> DelegatedToken:
        """Redeem the redirect's query parameters for a delegated token.

        Raises ``TokenError`` (``error="state_mismatch"``) when the redirect does not belong to
        ``flow``, and ``TokenError``/``ConsentMissing`` when Microsoft refused.
        """
        if "error" in auth_response:
            raise _token_error(dict(auth_response))
        try:
            result = await self._call(
                tenant,
                "acquire_token_by_auth_code_flow",
                dict(flow.data),
                dict(auth_response),
            )
        except ValueError as error:
            raise TokenError(
                "state_mismatch",
                "The sign-in response does not belong to this sign-in; start again.",
            ) from error
        except RuntimeError as error:  # MSAL's id_token checks (nonce; max_age) raise this
            raise TokenError(
                "nonce_mismatch",
                "The sign-in answer's ID token does not belong to this sign-in; start again.",
            ) from error
        token = _check(result)
        claims = result.get("id_token_claims") or {}
        return DelegatedToken(
            access_token=token,
            expires_at=time.time() + float(result.get("expires_in", 0)),
            scopes=tuple(str(result.get("scope", "")).split()),
            tenant_id=claims.get("tid"),
            user_object_id=claims.get("oid"),
            user_principal_name=claims.get("preferred_username"),
            display_name=claims.get("name"),
        )


def _access_token_claims(token: str) -> Mapping[str, Any]:
    """The claims of an access token Microsoft just issued to this app (over TLS, from the
    token endpoint): read to learn what was granted, never to let anyone in, so the signature
    is not checked. A token that is not a readable JWT has no claims."""
    parts = token.split(".")
    if len(parts) != 3:
        return {}
    try:
        payload = base64.urlsafe_b64decode(parts[1] + "=" * (-len(parts[1]) % 4))
        claims = json.loads(payload)
    except (ValueError, json.JSONDecodeError):
        return {}
    return claims if isinstance(claims, dict) else {}


def _check(result: Any) -> str:
    if not isinstance(result, dict):
        raise MicrosoftError("MSAL returned nothing")
    if "access_token" in result:
        return str(result["access_token"])
    raise _token_error(result)


def _token_error(result: Mapping[str, Any]) -> MicrosoftError:
    error = str(result.get("error", "unknown_error"))
    description = str(result.get("error_description", ""))
    codes = tuple(int(c) for c in result.get("error_codes", []) or [] if str(c).isdigit())
    correlation = result.get("correlation_id")
    if error in TRANSIENT_ERRORS:
        return MicrosoftUnavailable(f"Microsoft sign-in is temporarily unavailable ({error})")
    missing_consent = set(codes) & CONSENT_ERROR_CODES or error in CONSENT_ERRORS
    kind = ConsentMissing if missing_consent else TokenError
    return kind(
        error,
        description.split(" Trace ID:")[0].strip(),
        correlation_id=str(correlation) if correlation else None,
        error_codes=codes,
    )

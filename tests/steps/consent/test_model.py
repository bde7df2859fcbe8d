"""The consent link and the meaning of Microsoft's redirect (pure)."""

from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

import pytest

from bot.steps.consent.model import (
    ConsentGranted,
    ConsentRefused,
    ConsentWrongTenant,
    admin_consent_url,
    read_consent_redirect,
)

TENANT = "0f1e2d3c-4b5a-4697-8899-aabbccddeeff"


def test_the_link_is_the_v2_admin_consent_for_one_resource() -> None:
    url = admin_consent_url(
        login_url="https://login.example/",
        tenant_id=TENANT,
        client_id="app-id",
        resource="https://outlook.office365.com/",
        redirect_uri="https://bot.example/microsoft/callback",
        state="s t/ate",
    )
    parts = urlsplit(url)
    assert f"{parts.scheme}://{parts.netloc}{parts.path}" == (
        f"https://login.example/{TENANT}/v2.0/adminconsent"
    )
    assert parse_qs(parts.query) == {
        "client_id": ["app-id"],
        "scope": ["https://outlook.office365.com/.default"],
        "redirect_uri": ["https://bot.example/microsoft/callback"],
        "state": ["s t/ate"],
    }


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        ({"admin_consent": "True", "tenant": TENANT.upper()}, ConsentGranted(scope="")),
        (
            {"admin_consent": "True", "tenant": TENANT, "error": "access_denied"},
            ConsentRefused("access_denied", "", cancelled=False),
        ),
        (
            {"error": "access_denied", "error_subcode": "cancel"},
            ConsentRefused("access_denied", "", cancelled=True),
        ),
        (
            {"admin_consent": "True", "tenant": "another-tenant"},
            ConsentWrongTenant("another-tenant"),
        ),
    ],
)
def test_the_redirect_is_read_error_first(params: dict[str, str], expected: object) -> None:
    assert read_consent_redirect(params, expected_tenant=TENANT) == expected


@pytest.mark.parametrize(
    "params",
    [
        {"admin_consent": "True"},
        {"tenant": TENANT},
        {},
        {"admin_consent": "false", "tenant": TENANT},
    ],
)
def test_an_answer_that_proves_no_consent_records_none(params: dict[str, str]) -> None:
    outcome = read_consent_redirect(params, expected_tenant=TENANT)
    assert isinstance(outcome, ConsentRefused)
    assert not outcome.cancelled

from __future__ import annotations

from pathlib import Path

import pytest

from bot.config import ConfigError, Mode, load_settings
from tests.conftest import MAILFLOW_SECRET, SIGNING_SECRET, base_environment


def test_a_complete_environment_loads() -> None:
    settings = load_settings(base_environment())
    assert settings.admins == ("U0ADMIN", "S0ADMINS")
    assert settings.inline.ip_ranges == ("203.0.113.0/24", "198.51.100.7/32")
    assert settings.inline.name_prefix == "TMCAS Inline"
    assert settings.slack_api_url == "http://127.0.0.1:9/api/"
    assert settings.callback_url == "https://provision.example.test/microsoft/callback"
    assert (settings.host, settings.port) == ("127.0.0.1", 3000)


def test_every_problem_is_reported_at_once_and_named() -> None:
    environment = base_environment(
        PORT="http",
        INLINE_IP_RANGES="203.0.113.0/24,not-an-ip",
        PROVISION_ADMINS="alice",
        MAILFLOW_CLIENT_ID="not-a-guid",
    )
    del environment["PUBLIC_URL"]
    del environment["DIRSYNC_CLIENT_SECRET"]
    with pytest.raises(ConfigError) as failure:
        load_settings(environment)
    message = str(failure.value)
    for name in (
        "PORT",
        "INLINE_IP_RANGES",
        "PROVISION_ADMINS",
        "MAILFLOW_CLIENT_ID",
        "PUBLIC_URL",
        "DIRSYNC_CLIENT_SECRET",
    ):
        assert name in message
    assert len(failure.value.problems) == 6


def test_secrets_never_appear_in_errors_or_reprs() -> None:
    environment = base_environment(SLACK_BOT_TOKEN="not-a-bot-token-secretvalue")
    with pytest.raises(ConfigError) as failure:
        load_settings(environment)
    assert "secretvalue" not in str(failure.value)
    settings = load_settings(base_environment())
    shown = repr(settings)
    assert SIGNING_SECRET not in shown
    assert MAILFLOW_SECRET not in shown
    assert "xoxb-sandbox-token" not in shown


def test_modes_need_their_own_slack_credentials() -> None:
    without_signing = base_environment()
    del without_signing["SLACK_SIGNING_SECRET"]
    with pytest.raises(ConfigError, match="SLACK_SIGNING_SECRET"):
        load_settings(without_signing, Mode.HTTP)
    with pytest.raises(ConfigError, match="SLACK_APP_TOKEN"):
        load_settings(without_signing, Mode.SOCKET)
    settings = load_settings(base_environment(SLACK_APP_TOKEN="xapp-1-abc"), Mode.SOCKET)
    assert settings.slack_app_token is not None


def test_certificate_credential_must_be_a_readable_pem(tmp_path: Path) -> None:
    environment = base_environment(MAILFLOW_CLIENT_CERTIFICATE=str(tmp_path / "missing.pem"))
    del environment["MAILFLOW_CLIENT_SECRET"]
    with pytest.raises(ConfigError, match="MAILFLOW_CLIENT_CERTIFICATE"):
        load_settings(environment)
    pem = tmp_path / "app.pem"
    pem.write_text("-----BEGIN PRIVATE KEY-----\nabc\n-----END PRIVATE KEY-----\n")
    environment["MAILFLOW_CLIENT_CERTIFICATE"] = str(pem)
    assert load_settings(environment).mailflow_app.certificate_path == pem


def test_both_credentials_at_once_is_a_mistake() -> None:
    environment = base_environment(DIRSYNC_CLIENT_CERTIFICATE="/etc/hostname")
    with pytest.raises(ConfigError, match="both set"):
        load_settings(environment)

"""app-manifest.yml against Slack's published schema, and against what the code really uses."""

from __future__ import annotations

import json
import re
from pathlib import Path

import jsonschema
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
SCHEMAS = ROOT.parent / "shared" / "slack-manifest-schema" / "schemas"


def manifest() -> dict[str, object]:
    loaded = yaml.safe_load((ROOT / "app-manifest.yml").read_text())
    assert isinstance(loaded, dict)
    return loaded


@pytest.mark.skipif(not SCHEMAS.is_dir(), reason="shared/slack-manifest-schema is not present")
def test_manifest_validates_against_slacks_schema() -> None:
    schema = json.loads((SCHEMAS / "manifest.schema.1.0.0.json").read_text())
    jsonschema.validate(manifest(), schema)


def test_manifest_declares_what_the_bot_uses_and_no_more() -> None:
    data = manifest()
    features = data["features"]
    assert isinstance(features, dict)
    [command] = features["slash_commands"]
    assert command["command"] == "/provision-inline"
    assert command["usage_hint"]
    assert features["app_home"]["home_tab_enabled"] is True
    settings = data["settings"]
    assert isinstance(settings, dict)
    assert settings["socket_mode_enabled"] is True
    assert settings["interactivity"]["is_enabled"] is True
    assert settings["event_subscriptions"]["bot_events"] == ["app_home_opened"]
    scopes = set(data["oauth_config"]["scopes"]["bot"])  # type: ignore[index]
    assert scopes == {"commands", "chat:write", "usergroups:read"}


def test_every_web_api_method_the_code_calls_is_covered_by_a_declared_scope() -> None:
    needs = {
        "chat_postMessage": "chat:write",
        "chat_update": "chat:write",
        "chat_postEphemeral": "chat:write",
        "usergroups_users_list": "usergroups:read",
    }
    no_scope = {"views_open", "views_update", "views_publish", "chat_getPermalink", "auth_test"}
    called: set[str] = set()
    for path in [*ROOT.glob("bot/*.py"), *ROOT.glob("handlers/*.py")]:
        called.update(re.findall(r"\.(\w+_\w+)\(", path.read_text()))
    slack_methods = {name for name in called if name in needs or name in no_scope}
    unknown = {
        name
        for name in called
        if re.match(r"(chat|views|usergroups|users|conversations|reactions|files)_", name)
        and name not in needs
        and name not in no_scope
    }
    assert not unknown, f"Slack methods without a known scope: {unknown}"
    declared = set(manifest()["oauth_config"]["scopes"]["bot"])  # type: ignore[index]
    assert {needs[name] for name in slack_methods if name in needs} <= declared

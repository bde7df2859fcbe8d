"""Step 4, second half: the plan, Submit, applying it to Exchange Online, and the notification.

Everything goes through the real HTTP app (signed Slack requests) against the sandbox Slack and
the sandbox Exchange Online; assertions are on what Exchange holds and what Slack showed.
"""

from __future__ import annotations

import json
from collections import Counter
from typing import Any

import pytest

import bot.sandbox.microsoft as sandbox_microsoft
from bot.config import load_settings
from bot.sandbox.microsoft import EXCHANGE_ADMINISTRATOR
from bot.steps.mailflow.desired import (
    FULL,
    DesiredObject,
    Direction,
    Kind,
    allow_list_entries,
    desired_configuration,
    object_names,
    tenant_route_key,
)
from bot.steps.mailflow.views import (
    ACTION_ACKNOWLEDGE,
    ACTION_CHECK_AGAIN,
    ACTION_RETRY,
    ACTION_SUBMIT,
    ANNOUNCEMENT,
)
from bot.steps.verify.views import ACTION_VERIFY
from bot.workflow import Phase
from tests.conftest import DIRSYNC_CLIENT_ID, MAILFLOW_CLIENT_ID
from tests.integration.conftest import (
    ADMIN,
    APPROVER,
    CHANNEL,
    CONTOSO_ID,
    OUTSIDER,
    Harness,
    ephemeral_for,
)
from tests.integration.steps import ready_to_verify
from tests.integration.test_verification import click_verify

NOTIFY = "C0NOTIFY"
WRITES = ("Validate-", "Remove-", "New-", "Set-", "Enable-", "Remove-", "Disable-")


# -- helpers -------------------------------------------------------------------------------------


def org(harness: Harness) -> Any:
    return harness.microsoft.tenant(CONTOSO_ID).exchange


def inline(harness: Harness) -> Any:
    return load_settings(harness.environment).inline


def desired_objects(harness: Harness, directions: frozenset[Direction] = FULL) -> list[Any]:
    return list(
        desired_configuration(
            inline(harness),
            directions,
            ["contoso.com"],
            route_key=tenant_route_key(load_settings(harness.environment), CONTOSO_ID),
        ).objects
    )


def seed(harness: Harness, target: DesiredObject, **changed: Any) -> None:
    """Put ``target`` into the sandbox Exchange as if made earlier (with ``changed`` settings)."""
    parameters = {**target.new_parameters(), **changed}
    if target.kind is Kind.TRANSPORT_RULE:
        parameters.pop("Enabled", None)
        parameters["State"] = changed.get("State", "Enabled")
    store = org(harness).objects.setdefault(str(target.kind), {})
    store[target.name.lower()] = {
        **parameters,
        "Identity": target.name,
        "Name": target.name,
        "Guid": f"guid-{len(store)}-{target.name[-8:]}",
    }


def exchange_writes(harness: Harness, since: int = 0) -> list[tuple[str, dict[str, Any]]]:
    """(cmdlet, parameters) of every change Exchange accepted, in order."""
    found = []
    for request in harness.microsoft.requests_to("exchange")[since:]:
        body = request.body if isinstance(request.body, dict) else {}
        cmdlet_input = body.get("CmdletInput") or {}
        name = str(cmdlet_input.get("CmdletName", ""))
        if name.startswith(WRITES) and request.status == 200:
            found.append((name, dict(cmdlet_input.get("Parameters") or {})))
    return found


def named_objects(harness: Harness) -> set[tuple[str, str]]:
    return {
        (kind, obj["Name"])
        for kind, store in org(harness).objects.items()
        for obj in store.values()
    }


def expected_named(
    harness: Harness, directions: frozenset[Direction] = FULL
) -> set[tuple[str, str]]:
    names = object_names(inline(harness).name_prefix)
    return {(str(kind), name) for d in directions for kind, name in names.of(d)}


def with_button(harness: Harness, root_ts: str, action_id: str) -> Any | None:
    for message in reversed(harness.thread(root_ts)):
        if f'"action_id": "{action_id}"' in json.dumps(message.blocks):
            return message
    return None


async def click(harness: Harness, root_ts: str, action_id: str, user: str = ADMIN) -> None:
    message = await harness.slack.wait_for(lambda s: with_button(harness, root_ts, action_id))
    response = await harness.driver.click(
        user_id=user, channel_id=CHANNEL, message_ts=message.ts, action_id=action_id
    )
    assert response.status_code == 200


async def plan_shown(harness: Harness, **kwargs: Any) -> tuple[str, str]:
    """A session verified and waiting for Submit (its plan posted). Returns (root ts, id)."""
    root_ts, session_id = await ready_to_verify(harness, **kwargs)
    before = await harness.version_of(session_id)
    await click_verify(harness, root_ts)
    assert await harness.settled(session_id, after_version=before) is Phase.PLAN_SHOWN
    await harness.slack.wait_for(lambda s: with_button(harness, root_ts, ACTION_CHECK_AGAIN))
    return root_ts, session_id


async def outcome(harness: Harness, root_ts: str, session_id: str, after: int) -> Phase:
    """The phase once the apply job that started after thread message ``after`` has ended."""

    def concluded(_: Any) -> bool:
        return any(
            "mail flow is configured" in m.text or m.text.startswith("Provisioning stopped")
            for m in harness.thread(root_ts)[after:]
        )

    await harness.slack.wait_for(concluded, timeout=20)
    return await harness.settled(session_id)


async def submit_and_finish(harness: Harness, root_ts: str, session_id: str) -> Phase:
    after = len(harness.thread(root_ts))
    await click(harness, root_ts, ACTION_SUBMIT)
    return await outcome(harness, root_ts, session_id, after)


def announcements(harness: Harness, channel: str) -> list[Any]:
    return [m for m in harness.slack.messages(channel) if m.text.startswith(ANNOUNCEMENT)]


# -- tests -----------------------------------------------------------------------------------------


async def test_a_fresh_tenant_gets_every_object_and_the_notification(harness: Harness) -> None:
    harness.slack.add_channel(NOTIFY, "mail-security")
    harness.environment["NOTIFY_CHANNEL"] = NOTIFY
    await harness.restart()
    root_ts, session_id = await plan_shown(harness)
    shown = json.dumps([m.blocks for m in harness.thread(root_ts)])
    assert "Exchange Online pre-flight checks" in shown
    assert "Exchange Online change plan" in shown
    assert "contoso.onmicrosoft.com: left out" in shown
    assert exchange_writes(harness) == []  # nothing changed before Submit

    assert await submit_and_finish(harness, root_ts, session_id) is Phase.PROTECTED

    assert named_objects(harness) == expected_named(harness)
    assert org(harness).ip_allow_list == list(allow_list_entries(inline(harness).ip_ranges))
    assert org(harness).spoof_items == []  # no spoof allow entry for the tenant's own domain
    assert org(harness).reference_findings == []  # nothing the reference says does nothing
    rules = org(harness).objects["TransportRule"].values()
    assert all(rule["State"] == "Enabled" for rule in rules)

    thread = harness.thread(root_ts)
    assert any("Exchange Online mail flow is configured" in m.text for m in thread)
    progress = [m for m in thread if "changes applied" in m.text]
    assert len(progress) == 1  # one message, edited as it went
    assert progress[0].edited >= 15
    root = harness.slack.message(CHANNEL, root_ts)
    assert ANNOUNCEMENT in root.text
    assert ":arrow_forward:" not in json.dumps(root.blocks)

    for channel in (CHANNEL, NOTIFY):
        [note] = announcements(harness, channel)
        assert "Contoso" in note.text or "contoso.com" in note.text
        assert f"<@{ADMIN}>" in note.text  # provisioned by
        assert f"acknowledged by <@{APPROVER}>" in note.text  # the role's approver
        assert harness.slack.permalink(CHANNEL, root_ts) in note.text


async def test_a_second_run_changes_nothing(harness: Harness) -> None:
    root_ts, session_id = await plan_shown(harness)
    assert await submit_and_finish(harness, root_ts, session_id) is Phase.PROTECTED
    before = len(harness.microsoft.requests_to("exchange"))
    objects = named_objects(harness)

    root_ts, session_id = await plan_shown(harness)
    assert "Nothing to change" in json.dumps([m.blocks for m in harness.thread(root_ts)])
    assert await submit_and_finish(harness, root_ts, session_id) is Phase.PROTECTED
    assert exchange_writes(harness, since=before) == []
    assert named_objects(harness) == objects
    assert org(harness).spoof_items == []
    assert len(announcements(harness, CHANNEL)) == 2


async def test_only_missing_and_drifted_objects_are_changed(harness: Harness) -> None:
    objects = {o.name: o for o in desired_objects(harness)}
    names = object_names(inline(harness).name_prefix)
    seed(harness, objects[names.incoming_group])  # in place
    seed(harness, objects[names.incoming_inbound_connector])  # in place
    seed(
        harness,
        objects[names.incoming_outbound_connector],
        SmartHosts=["old.relay.example.org"],
        TlsDomain="old.relay.example.org",
    )
    seed(harness, objects[names.incoming_domain_rule], State="Disabled")
    org(harness).ip_allow_list.extend(allow_list_entries(inline(harness).ip_ranges))

    root_ts, session_id = await plan_shown(harness)
    plan_text = json.dumps([m.blocks for m in harness.thread(root_ts)])
    assert "old.relay.example.org" in plan_text  # the exact difference is shown
    assert await submit_and_finish(harness, root_ts, session_id) is Phase.PROTECTED

    writes = exchange_writes(harness)
    created = {p.get("Name") for cmdlet, p in writes if cmdlet.startswith("New-")}
    untouched = {names.incoming_group, names.incoming_inbound_connector}
    assert not created & untouched
    assert names.incoming_outbound_connector not in created
    assert names.incoming_domain_rule not in created
    sets = [(c, p) for c, p in writes if c == "Set-OutboundConnector"]
    assert sets == [
        (
            "Set-OutboundConnector",
            {
                "Identity": names.incoming_outbound_connector,
                "SmartHosts": ["inbound.relay.example.net"],
                "TlsDomain": "inbound.relay.example.net",
            },
        )
    ]
    assert ("Enable-TransportRule", {"Identity": names.incoming_domain_rule}) in writes
    assert not any(c == "Set-HostedConnectionFilterPolicy" for c, _ in writes)
    assert named_objects(harness) == expected_named(harness)


async def test_an_exchange_failure_then_retry_completes_without_duplicates(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = sandbox_microsoft._run_cmdlet
    failures = {"left": 1}

    def failing(tenant: Any, cmdlet: str, parameters: dict[str, Any], *args: Any) -> Any:
        if cmdlet == "New-TransportRule" and failures["left"]:
            failures["left"] -= 1
            raise sandbox_microsoft._exchange_error(
                400,
                "Microsoft.Exchange.Management.Tasks.InvalidTransportRuleException",
                "The rule could not be saved.",
                "req-1",
            )
        return real(tenant, cmdlet, parameters, *args)

    monkeypatch.setattr(sandbox_microsoft, "_run_cmdlet", failing)
    root_ts, session_id = await plan_shown(harness)
    assert await submit_and_finish(harness, root_ts, session_id) is Phase.FAILED

    failure = with_button(harness, root_ts, ACTION_RETRY)
    assert failure is not None
    assert "InvalidTransportRuleException" in failure.text
    shown = json.dumps(failure.blocks)
    assert "Already applied" in shown
    assert "transport rule" in failure.text

    await click(harness, root_ts, ACTION_RETRY, user=OUTSIDER)
    await ephemeral_for(harness, OUTSIDER, "You can't retry")
    assert (await harness.store.require(session_id)).phase is Phase.FAILED

    after = len(harness.thread(root_ts))
    await click(harness, root_ts, ACTION_RETRY)
    assert await outcome(harness, root_ts, session_id, after) is Phase.PROTECTED
    created = Counter(p.get("Name") for c, p in exchange_writes(harness) if c.startswith("New-"))
    assert all(count == 1 for count in created.values()), created
    assert named_objects(harness) == expected_named(harness)
    assert org(harness).spoof_items == []
    assert len(announcements(harness, CHANNEL)) == 1


async def test_a_crash_during_apply_resumes_and_completes(harness: Harness) -> None:
    root_ts, session_id = await plan_shown(harness)
    harness.microsoft.set_latency(0.15, "exchange")
    after = len(harness.thread(root_ts))
    await click(harness, root_ts, ACTION_SUBMIT)
    await harness.slack.wait_for(
        lambda s: [m for m in harness.thread(root_ts) if " of 15" in m.text], timeout=15
    )
    await harness.restart()  # the job is handed back mid-way
    assert (await harness.store.require(session_id)).phase is Phase.APPLYING
    harness.microsoft.set_latency(0.0, "exchange")
    assert await harness.runtime.jobs.resume_orphans() == 1
    assert await outcome(harness, root_ts, session_id, after) is Phase.PROTECTED
    assert named_objects(harness) == expected_named(harness)
    assert org(harness).spoof_items == []
    progress = [m for m in harness.thread(root_ts) if "changes applied" in m.text]
    assert len(progress) == 1  # the resumed job kept editing the same message
    assert len(announcements(harness, CHANNEL)) == 1


async def test_cancel_is_refused_while_exchange_is_being_changed(harness: Harness) -> None:
    root_ts, session_id = await plan_shown(harness)
    harness.microsoft.set_latency(0.15, "exchange")
    after = len(harness.thread(root_ts))
    await click(harness, root_ts, ACTION_SUBMIT)
    await harness.slack.wait_for(
        lambda s: [m for m in harness.thread(root_ts) if " of 15" in m.text], timeout=15
    )
    await harness.driver.slash_command(user_id=ADMIN, channel_id=CHANNEL, text="cancel")
    refusal = await ephemeral_for(harness, ADMIN, "being configured right now")
    assert "Nothing was cancelled" in refusal.text
    harness.microsoft.set_latency(0.0, "exchange")
    assert await outcome(harness, root_ts, session_id, after) is Phase.PROTECTED
    assert len(announcements(harness, CHANNEL)) == 1


async def test_objects_of_ours_with_other_types_or_disabled_are_repaired(
    harness: Harness,
) -> None:
    """Prefixed objects made with other settings or types, or disabled, are repaired by one
    Submit (update or replacement, the reason in the plan); a second run changes nothing."""
    names = object_names(inline(harness).name_prefix)
    objects = {o.name: o for o in desired_objects(harness)}
    # The old design's Partner inbound connector: every sender on the internet, TLS required.
    seed(
        harness,
        objects[names.incoming_inbound_connector],
        ConnectorType="Partner",
        RequireTls=True,
        SenderIPAddresses=["203.0.113.0/24"],
    )
    seed(harness, objects[names.outgoing_outbound_connector], ConnectorType="OnPremises")
    seed(harness, objects[names.incoming_outbound_connector], Enabled=False)
    seed(harness, objects[names.incoming_domain_rule], State="Disabled", DeleteMessage=True)
    seed(
        harness,
        objects[names.outgoing_user_rule],
        RouteMessageOutboundConnector="Archive Connector",
    )

    root_ts, session_id = await plan_shown(harness)
    shown = json.dumps([m.blocks for m in harness.thread(root_ts)])
    assert "Replacing inbound connector" in shown
    assert "Partner connector" in shown
    assert "it routes mail to another connector" in shown
    assert "Submit is not possible" not in shown
    assert await submit_and_finish(harness, root_ts, session_id) is Phase.PROTECTED

    exchange = org(harness).objects
    inbound = exchange["InboundConnector"][names.incoming_inbound_connector.lower()]
    assert inbound["ConnectorType"] == "OnPremises"
    assert "RequireTls" not in inbound
    assert "SenderIPAddresses" not in inbound
    outbound = exchange["OutboundConnector"][names.outgoing_outbound_connector.lower()]
    assert outbound["ConnectorType"] == "Partner"
    assert exchange["OutboundConnector"][names.incoming_outbound_connector.lower()]["Enabled"]
    domain_rule = exchange["TransportRule"][names.incoming_domain_rule.lower()]
    assert domain_rule["State"] == "Enabled"
    assert "DeleteMessage" not in domain_rule
    user_rule = exchange["TransportRule"][names.outgoing_user_rule.lower()]
    assert user_rule["RouteMessageOutboundConnector"] == names.outgoing_outbound_connector
    assert named_objects(harness) == expected_named(harness)
    assert org(harness).reference_findings == []

    before = len(harness.microsoft.requests_to("exchange"))
    root_ts, session_id = await plan_shown(harness)
    assert "Nothing to change" in json.dumps([m.blocks for m in harness.thread(root_ts)])
    assert await submit_and_finish(harness, root_ts, session_id) is Phase.PROTECTED
    assert exchange_writes(harness, since=before) == []


async def test_an_unreachable_smart_host_stops_before_any_rule_routes_to_it(
    harness: Harness,
) -> None:
    org(harness).unreachable_smart_hosts.add(inline(harness).inbound_smart_host)
    root_ts, session_id = await plan_shown(harness)
    after = len(harness.thread(root_ts))
    await click(harness, root_ts, ACTION_SUBMIT)
    assert await outcome(harness, root_ts, session_id, after) is Phase.FAILED
    writes = exchange_writes(harness)
    assert (
        "Validate-OutboundConnector",
        {
            "Identity": object_names(inline(harness).name_prefix).incoming_outbound_connector,
            "Recipients": ["postmaster@contoso.com"],
        },
    ) in writes
    assert not any(
        c in ("New-TransportRule", "Set-TransportRule", "Enable-TransportRule") for c, _ in writes
    )
    shown = json.dumps([m.blocks for m in harness.thread(root_ts)])
    assert "ValidationFailed" in shown
    assert "Cannot connect to remote server" in shown


async def test_warnings_must_be_acknowledged_before_submit(harness: Harness) -> None:
    store = org(harness).objects.setdefault("OutboundConnector", {})
    store["archive connector"] = {
        "Identity": "Archive Connector",
        "Name": "Archive Connector",
        "Guid": "guid-archive",
        "Enabled": True,
        "ConnectorType": "Partner",
        "IsTransportRuleScoped": True,
        "SmartHosts": ["archive.example.org"],
    }
    root_ts, session_id = await plan_shown(harness)
    await click(harness, root_ts, ACTION_SUBMIT)
    await ephemeral_for(harness, ADMIN, "must be acknowledged first")
    assert (await harness.store.require(session_id)).phase is Phase.PLAN_SHOWN

    await click(harness, root_ts, ACTION_ACKNOWLEDGE, user=OUTSIDER)
    await ephemeral_for(harness, OUTSIDER, "You can't acknowledge the warnings")
    await click(harness, root_ts, ACTION_ACKNOWLEDGE)
    await harness.slack.wait_for(
        lambda s: any("acknowledged the 1 warning" in m.text for m in harness.thread(root_ts))
    )
    assert await submit_and_finish(harness, root_ts, session_id) is Phase.PROTECTED
    audit = await harness.store.audit(session_id)
    submitted = next(e for e in audit if e.action == "submit")
    assert submitted.detail["warnings_acknowledged_by"] == ADMIN
    assert ("OutboundConnector", "Archive Connector") in named_objects(harness)


async def test_only_admins_may_submit(harness: Harness) -> None:
    root_ts, session_id = await plan_shown(harness)
    await click(harness, root_ts, ACTION_SUBMIT, user=OUTSIDER)
    await ephemeral_for(harness, OUTSIDER, "You can't submit the change plan")
    assert (await harness.store.require(session_id)).phase is Phase.PLAN_SHOWN
    assert exchange_writes(harness) == []


async def test_upgrade_adds_only_the_outbound_objects(harness: Harness) -> None:
    # A tenant protected inbound: both consents, the role, the inbound objects and allow lists.
    microsoft = harness.microsoft
    microsoft.consent(CONTOSO_ID, MAILFLOW_CLIENT_ID)
    microsoft.consent(CONTOSO_ID, DIRSYNC_CLIENT_ID)
    principal = microsoft.tenant(CONTOSO_ID).service_principal(MAILFLOW_CLIENT_ID)
    assert principal is not None
    microsoft.assign_role(CONTOSO_ID, principal.id, EXCHANGE_ADMINISTRATOR)
    for target in desired_objects(harness, frozenset({Direction.INBOUND})):
        if target.kind is Kind.IP_ALLOW_LIST:
            continue
        seed(harness, target)
    org(harness).ip_allow_list.extend(allow_list_entries(inline(harness).ip_ranges))
    inbound = {
        name: dict(obj) for store in org(harness).objects.values() for name, obj in store.items()
    }

    await harness.driver.slash_command(user_id=ADMIN, channel_id=CHANNEL, text="upgrade")
    view = await harness.slack.wait_for(lambda s: s.open_views(ADMIN)[-1:] or None)
    assert "upgrade_outbound" in json.dumps(view[0].view)
    response = await harness.driver.submit_view(
        user_id=ADMIN, view_id=view[0].id, values={"tenant_input": "contoso.com"}
    )
    assert harness.driver.view_errors(response) == {}
    root_ts = await harness.wait_for_root("contoso.com")
    [session] = await harness.store.active()
    await harness.slack.wait_for(lambda s: with_button(harness, root_ts, ACTION_VERIFY))
    session = await harness.store.require(session.id)
    assert session.phase is Phase.DIRECTORY_CONSENTED
    audit = await harness.store.audit(session.id)
    found = [e for e in audit if e.detail.get("found") == "existing"]
    assert [(e.action, e.actor) for e in found] == [
        ("mailflow_consent", "system"),
        ("role_found", "system"),
        ("directory_consent", "system"),
    ]
    thread_text = json.dumps([m.blocks for m in harness.thread(root_ts)])
    assert "not asked again" in thread_text
    assert "consent_open" not in thread_text  # no consent link was posted

    before = await harness.version_of(session.id)
    await click_verify(harness, root_ts)
    assert await harness.settled(session.id, after_version=before) is Phase.PLAN_SHOWN
    await harness.slack.wait_for(lambda s: with_button(harness, root_ts, ACTION_SUBMIT))
    assert "Inbound protection found" in json.dumps([m.blocks for m in harness.thread(root_ts)])
    assert await submit_and_finish(harness, root_ts, session.id) is Phase.PROTECTED

    writes = exchange_writes(harness)
    created = {p.get("Name") for c, p in writes if c.startswith("New-")}
    outbound = {name for _, name in expected_named(harness, frozenset({Direction.OUTBOUND}))}
    assert created == outbound
    assert all(p.get("Identity") not in {o["Name"] for o in inbound.values()} for _, p in writes)
    for name, before in inbound.items():
        after = next(s[name] for s in org(harness).objects.values() if name in s)
        # Exchange renumbers rule priorities when rules are added ahead; nothing else changed.
        assert {k: v for k, v in after.items() if k != "Priority"} == {
            k: v for k, v in before.items() if k != "Priority"
        }
    assert named_objects(harness) == expected_named(harness)
    [note] = announcements(harness, CHANNEL)
    assert "already assigned before this session" in note.text

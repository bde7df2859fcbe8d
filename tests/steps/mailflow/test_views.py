"""Block Kit for the mail-flow step: valid for Slack, within its limits, and readable."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from bot.blocks import Message
from bot.config import InlineService
from bot.sandbox.slack import validate_blocks
from bot.steps.mailflow.apply import ApplyFailed, ApplyResult
from bot.steps.mailflow.desired import (
    FULL,
    Direction,
    Kind,
    desired_configuration,
    object_names,
    route_token,
)
from bot.steps.mailflow.plan import Action, Plan, plan
from bot.steps.mailflow.preflight import preflight
from bot.steps.mailflow.snapshot import AcceptedDomain, ExchangeObject, Snapshot
from bot.steps.mailflow.views import (
    ACTION_ACKNOWLEDGE,
    ACTION_RETRY,
    failure_message,
    plan_message,
    preflight_message,
    progress_message,
    summary_message,
)

from .conftest import PREFIX, ROUTE_KEY, echo_of

NAMES = object_names(PREFIX)
DOMAINS = (AcceptedDomain("contoso.com"),)


def valid(message: Message) -> str:
    assert validate_blocks(message.blocks, surface="message") == []
    assert len(message.blocks) <= 50
    for block in message.blocks:
        if block["type"] == "section":
            assert len(block["text"]["text"]) <= 3000
    assert message.text
    return "\n".join(_texts(message.blocks))


def _texts(value: Any) -> list[str]:
    if isinstance(value, dict):
        found = [value["text"]] if isinstance(value.get("text"), str) else []
        return found + [t for v in value.values() for t in _texts(v)]
    if isinstance(value, list):
        return [t for v in value for t in _texts(v)]
    return []


def fresh_plan(service: InlineService, domains: list[str] | None = None) -> Plan:
    desired = desired_configuration(service, FULL, domains or ["contoso.com"], route_key=ROUTE_KEY)
    return plan(desired, Snapshot(accepted_domains=DOMAINS))


def test_preflight_checklist(service: InlineService) -> None:
    desired = desired_configuration(
        service, FULL, ["contoso.com", "fabrikam.example"], route_key=ROUTE_KEY
    )
    stop = ExchangeObject(
        Kind.TRANSPORT_RULE,
        "Stop <here> & now",
        {"StopRuleProcessing": True, "Priority": 0},
    )
    snapshot = Snapshot(DOMAINS, objects=(stop,))
    blocked = valid(preflight_message(preflight(desired, snapshot)))
    assert ":no_entry: *fabrikam.example is not an accepted domain*" in blocked
    assert "_Fix:_ Add and verify fabrikam.example" in blocked
    assert "Nothing has been changed" in blocked
    assert ACTION_ACKNOWLEDGE not in str(preflight_message(preflight(desired, snapshot)).blocks)

    ours = [ExchangeObject.from_echo(k, e) for k, e in echo_of(desired)]
    stop = replace(stop, properties={"StopRuleProcessing": True, "Priority": 1})
    ok = desired_configuration(service, FULL, ["contoso.com"], route_key=ROUTE_KEY)
    message = preflight_message(preflight(ok, Snapshot(DOMAINS, objects=(*ours, stop))))
    text = valid(message)
    assert ":warning: *“Stop &lt;here&gt; &amp; now” stops rule processing" in text
    assert message.blocks[-1]["elements"][0]["action_id"] == ACTION_ACKNOWLEDGE
    clean = valid(preflight_message(preflight(ok, Snapshot(DOMAINS))))
    assert "Every check passed." in clean


def test_plan_says_what_why_and_order(service: InlineService) -> None:
    message = plan_message(fresh_plan(service))
    text = valid(message)
    assert "*15 changes* (12 to create, 2 to validate, 1 to add)" in text
    titles = ("Groups", "Connectors", "Transport rules", "Connection filter IP Allow List")
    order = [text.index(f"*{title}") for title in titles]
    assert order == sorted(order)
    assert f"*1.* Creating distribution group “{NAMES.incoming_group}”" in text
    # Per object, why it exists, in an Exchange admin's words.
    assert "_Why:_ Sends incoming mail that the incoming rules route to it" in text
    assert "Enhanced Filtering skips the service's addresses" in text
    assert "*7.* Validating outbound connector" in text
    assert "`Validate-OutboundConnector`" in text
    assert "`SmartHosts` inbound.relay.example.net" in text
    assert "`ConnectorType` Partner" in text
    assert "`ConnectorType` OnPremises" in text
    assert "203.0.113.0/24, 198.51.100.7" in text
    # The loop-prevention token never reaches Slack.
    assert route_token(ROUTE_KEY, Direction.INBOUND) not in str(message.blocks)
    assert route_token(ROUTE_KEY, Direction.OUTBOUND) not in str(message.blocks)
    assert "loop-prevention token, not shown" in text
    assert "15 change(s)" in message.text


def test_plan_of_updates_shows_old_and_new(service: InlineService) -> None:
    desired = desired_configuration(service, FULL, ["contoso.com"], route_key=ROUTE_KEY)
    objects = []
    for kind, echo in echo_of(desired):
        if echo["Name"] == NAMES.incoming_outbound_connector:
            echo["SmartHosts"] = ["old.example.org"]
            echo["Enabled"] = False
        objects.append(ExchangeObject.from_echo(kind, echo))
    snapshot = Snapshot(DOMAINS, tuple(objects), ("203.0.113.0/24",))
    text = valid(plan_message(plan(desired, snapshot)))
    assert "• `SmartHosts`: old.example.org → inbound.relay.example.net" in text
    assert "• `Enabled`: $false → $true" in text
    assert "Adding 1 address range to the connection filter IP Allow List: 198.51.100.7" in text
    assert "*Left as they are (9)*" in text
    assert f"Validating outbound connector “{NAMES.incoming_outbound_connector}”" in text
    ours = tuple(ExchangeObject.from_echo(k, e) for k, e in echo_of(desired))
    allowed = ("203.0.113.0/24", "198.51.100.7")
    settled = valid(plan_message(plan(desired, Snapshot(DOMAINS, ours, allowed))))
    assert "*Nothing to change:* the tenant is configured as required." in settled
    assert "*Left as they are (13)*" in settled


def test_huge_plan_stays_within_slack_limits(service: InlineService) -> None:
    domains = [f"subsidiary-{n:03d}-with-a-rather-long-name.contoso.com" for n in range(1500)]
    long = replace(service, name_prefix="P" * 20)
    message = plan_message(fresh_plan(long, domains))
    valid(message)  # Slack's own limits: at most 50 blocks, 3000 characters per section
    assert len(message.blocks) <= 50
    assert all(len(b.get("text", {}).get("text", "")) <= 3000 for b in message.blocks)


def test_progress_line(service: InlineService) -> None:
    the_plan = fresh_plan(service)
    third = the_plan.actionable[2]
    before = progress_message(2, 15, third)
    assert valid(before).startswith(":hourglass_flowing_sand: 3 of 15: creating outbound")
    after = progress_message(3, 15, third)
    assert "3 of 15: created outbound connector" in valid(after)
    last = the_plan.actionable[-1]
    assert valid(progress_message(15, 15, last)).startswith(":white_check_mark: 15 of 15")
    assert "Nothing to change" in valid(progress_message(0, 0))


def test_failure_message(service: InlineService) -> None:
    the_plan = fresh_plan(service)
    failed = ApplyFailed(
        the_plan.actionable[4],
        "ADObjectAlreadyExistsException",
        "|Microsoft.Exchange.Management.Tasks.ValidationException|The rule <x> exists.",
        the_plan.actionable[:4],
    )
    message = failure_message(failed)
    text = valid(message)
    assert "*Provisioning stopped:* creating inbound connector" in text
    assert "`ADObjectAlreadyExistsException`" in text
    assert ">The rule &lt;x&gt; exists." in text
    assert "*Already applied (4)*" in text
    assert f"• created distribution group “{NAMES.incoming_group}”" in text
    assert "*Next step:*" in text
    (button,) = message.blocks[-1]["elements"]
    assert button["action_id"] == ACTION_RETRY
    unavailable = ApplyFailed(None, "Unavailable", "Exchange Online answered 503", ())
    text = valid(failure_message(unavailable, retry_value="session-1"))
    assert "reading the tenant's configuration failed" in text
    assert "nothing, the tenant is unchanged" in text
    assert "Retry in a few minutes" in text


def test_summary(service: InlineService) -> None:
    the_plan = fresh_plan(service)
    result = ApplyResult(the_plan, the_plan.actionable, (), Snapshot())
    message = summary_message(result)
    text = valid(message)
    assert "*Created (13)*" in text
    assert f"• Transport rule “{NAMES.outgoing_user_rule}”" in text
    assert "203.0.113.0/24, 198.51.100.7 added to the connection filter IP Allow List" in text
    assert "13 created, 0 updated, 0 already in place" in message.text
    assert all(c.action is not Action.LEAVE for c in result.applied)

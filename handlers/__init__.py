"""Slack listeners and web routes: ack, parse, call ``bot``, render.

Each listener is a module-level function (``handlers.commands``, ``actions``, ``modals``,
``home``, ``role``, ``plan``) that takes its services from Bolt's ``context``
(``handlers.services``), so a test can import it and call it. ``wire`` is the one place they are
attached to the Bolt app, with who may use each (``handlers.access``), after the global
middleware (``handlers.middleware``) and the error handler (``handlers.errors``), and where
the door (``handlers.door``) learns what they handle.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from bot.session.commands import CommandKind, parse_command
from bot.session.views import ACTION_CANCEL, START_CALLBACK
from bot.steps.consent.views import ACTION_CONSENT_OPEN, ACTION_CONSENT_RENEW
from bot.steps.mailflow import views as plan_views
from bot.steps.role import views as role_views
from bot.steps.role.model import REQUEST_CALLBACK
from bot.steps.verify.views import ACTION_VERIFY
from handlers import actions, commands, home, modals, plan, role
from handlers.access import (
    require_admin,
    require_admin_or_approver,
    require_anyone,
    require_approver,
)
from handlers.door import Door, Handled
from handlers.errors import on_unexpected_error
from handlers.middleware import (
    RefuseMalformedPayloads,
    RequestScope,
    drop_duplicate_deliveries,
    refuse_foreign_response_urls,
)
from handlers.runner import install as install_prompt_ack_runner
from handlers.services import Services
from handlers.signing import SlackSignatures
from handlers.web import build_web

if TYPE_CHECKING:
    from starlette.applications import Starlette

    from bot.app import Runtime

__all__ = ["opens_a_form", "wire"]

#: Listeners that open a modal after their ack (``RequestScope``'s ``opens_a_form``).
FORM_COMMANDS = frozenset({CommandKind.START, CommandKind.UPGRADE})


def opens_a_form(body: dict[str, Any]) -> bool:
    """Whether the request goes to a listener that opens a modal: the start form (the command
    without argument, or ``upgrade``) and the role request form (its openers)."""
    if body.get("command") == commands.COMMAND:
        return parse_command(str(body.get("text") or "")).kind in FORM_COMMANDS
    if body.get("type") == "block_actions":
        actions = body.get("actions")
        return (
            isinstance(actions, list)
            and bool(actions)
            and isinstance(actions[0], dict)
            and actions[0].get("action_id") in role.OPENERS
        )
    return False


def wire(
    runtime: Runtime, *, sweep_interval_seconds: float | None, orphan_check_seconds: float | None
) -> Starlette:
    """Register every Slack listener on ``runtime.bolt``; return the web app that serves them."""
    bolt = runtime.bolt
    # Global middleware, in order: malformed payloads first (before Bolt builds arguments from
    # them), services and the tracked ack (so even a dropped request is acked through it), then
    # what no listener may see: response URLs that are not Slack's, duplicates and replays.
    install_prompt_ack_runner(bolt)  # before bolt.error, which hands its handler to the runner
    bolt.use(RefuseMalformedPayloads())
    found = Services.of(runtime)
    bolt.use(RequestScope(found, opens_a_form=opens_a_form))
    bolt.use(refuse_foreign_response_urls)
    bolt.use(drop_duplicate_deliveries)
    bolt.error(on_unexpected_error)

    # Every button registered here is one the door may answer before Bolt runs (handlers.door).
    clicks: set[str] = set()

    def on_click(action_id: str, **listener_options: Any) -> Callable[..., Any]:
        clicks.add(action_id)
        return bolt.action(action_id, **listener_options)

    # /provision-inline: the first listener whose matcher accepts the text handles it.
    command = commands.COMMAND
    asked_for = commands.asked_for
    bolt.command(command, matchers=[asked_for(CommandKind.HELP, CommandKind.UNKNOWN)])(
        commands.show_help
    )
    bolt.command(
        command,
        matchers=[asked_for(CommandKind.STATUS)],
        middleware=[require_admin_or_approver("see provisioning status")],
    )(commands.show_status)
    bolt.command(
        command,
        matchers=[asked_for(CommandKind.CANCEL)],
        middleware=[require_admin("cancel provisioning")],
    )(commands.cancel_session)
    bolt.command(
        command,
        matchers=[asked_for(CommandKind.UPGRADE)],
        middleware=[require_admin("start an upgrade")],
    )(commands.open_start_form)
    bolt.command(
        command,
        matchers=[asked_for(CommandKind.START)],
        middleware=[require_admin("start provisioning")],
    )(commands.open_start_form)
    # A modal's submission commits what it holds: rights are checked afresh (no cached groups),
    # so a modal opened before its user was removed does not submit.
    bolt.view(START_CALLBACK, middleware=[require_admin("start provisioning", fresh=True)])(
        modals.start_submitted
    )
    home_event = "app_home_opened"
    bolt.event(home_event)(home.home_opened)

    # The root message and the consent steps. A link's URL opens whoever clicks it and
    # Microsoft decides on the consent; the bot notes the click (audit detail, never the actor)
    # for admins only, in the session's channel only, as every click.
    on_click(
        ACTION_CONSENT_OPEN, middleware=[require_admin("open the consent link for this session")]
    )(actions.consent_link_opened)
    on_click(ACTION_CONSENT_RENEW, middleware=[require_admin("make a new consent link")])(
        actions.consent_link_renewed
    )
    on_click(ACTION_VERIFY, middleware=[require_admin("verify the grants")])(actions.verify_clicked)
    on_click(ACTION_CANCEL, middleware=[require_admin("cancel provisioning")])(
        actions.cancel_clicked
    )

    # Step 2: the role. Withdrawing is for the requester, which the step itself checks.
    for opener in role.OPENERS:
        on_click(opener, middleware=[require_admin("request the role")])(role.open_request)
    bolt.view(REQUEST_CALLBACK, middleware=[require_admin("request the role", fresh=True)])(
        role.request_submitted
    )
    on_click(
        role_views.ACTION_ACKNOWLEDGE,
        middleware=[require_approver("acknowledge role requests", fresh=True)],
    )(role.decided)
    on_click(role_views.ACTION_DECLINE, middleware=[require_approver("decline role requests")])(
        role.decided
    )
    on_click(role_views.ACTION_WITHDRAW, middleware=[require_anyone("withdraw the request")])(
        role.decided
    )
    on_click(
        role_views.ACTION_ASSIGN_SIGN_IN,
        middleware=[require_admin("open the sign-in for this session")],
    )(role.sign_in_opened)
    for helper in (
        role_views.ACTION_NEW_SIGN_IN,
        role_views.ACTION_PORTAL,
        role_views.ACTION_CHECK,
    ):
        on_click(helper, middleware=[require_admin("act on the role assignment")])(
            role.assignment_help
        )

    # Step 4: the change plan. Submit changes Exchange Online: rights checked afresh.
    for action_id, listener, action, fresh in (
        (plan_views.ACTION_SUBMIT, plan.submit_clicked, "submit the change plan", True),
        (
            plan_views.ACTION_ACKNOWLEDGE,
            plan.acknowledge_clicked,
            "acknowledge the warnings",
            False,
        ),
        (plan_views.ACTION_CHECK_AGAIN, plan.check_again_clicked, "run the checks again", False),
        (plan_views.ACTION_RETRY, plan.retry_clicked, "retry configuring Exchange Online", False),
    ):
        on_click(action_id, middleware=[require_admin(action, fresh=fresh)])(listener)

    door: Door | None = None
    secret = runtime.settings.slack_signing_secret
    if secret is not None:
        door = Door(
            services=found,
            handled=Handled(
                commands=frozenset({command}),
                actions=frozenset(clicks),
                events=frozenset({home_event}),
            ),
            opens_a_form=opens_a_form,
            signatures=SlackSignatures(secret.reveal()),
            dispatch=bolt.async_dispatch,
        )
    return build_web(
        runtime,
        door=door,
        sweep_interval_seconds=sweep_interval_seconds,
        orphan_check_seconds=orphan_check_seconds,
    )

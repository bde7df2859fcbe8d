"""Slack listeners and web routes: ack, parse, call ``bot``, render.

Each listener is a module-level function (``handlers.commands``, ``actions``, ``modals``,
``home``, ``role``, ``plan``) that takes its services from Bolt's ``context``
(``handlers.services``), so a test can import it and call it. ``wire`` is the one place they are
attached to the Bolt app, with who may use each (``handlers.access``), after the global
middleware (``handlers.middleware``) and the error handler (``handlers.errors``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from bot.session.commands import CommandKind
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
from handlers.errors import on_unexpected_error
from handlers.middleware import (
    RefuseMalformedPayloads,
    RequestScope,
    drop_duplicate_deliveries,
    opens_a_form,
    refuse_foreign_response_urls,
)
from handlers.runner import install as install_prompt_ack_runner
from handlers.services import Services
from handlers.web import build_web

if TYPE_CHECKING:
    from starlette.applications import Starlette

    from bot.app import Runtime

__all__ = ["wire"]


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
    bolt.use(RequestScope(Services.of(runtime)))
    bolt.use(refuse_foreign_response_urls)
    bolt.use(drop_duplicate_deliveries)
    bolt.error(on_unexpected_error)

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
        middleware=[require_admin("start an upgrade"), opens_a_form],
    )(commands.open_start_form)
    bolt.command(
        command,
        matchers=[asked_for(CommandKind.START)],
        middleware=[require_admin("start provisioning"), opens_a_form],
    )(commands.open_start_form)
    # A modal's submission commits what it holds: rights are checked afresh (no cached groups),
    # so a modal opened before its user was removed does not submit.
    bolt.view(START_CALLBACK, middleware=[require_admin("start provisioning", fresh=True)])(
        modals.start_submitted
    )
    bolt.event("app_home_opened")(home.home_opened)

    # The root message and the consent steps. A link's URL opens whoever clicks it and
    # Microsoft decides on the consent; the bot notes the click (audit detail, never the actor)
    # for admins only, in the session's channel only, as every click.
    bolt.action(
        ACTION_CONSENT_OPEN, middleware=[require_admin("open the consent link for this session")]
    )(actions.consent_link_opened)
    bolt.action(ACTION_CONSENT_RENEW, middleware=[require_admin("make a new consent link")])(
        actions.consent_link_renewed
    )
    bolt.action(ACTION_VERIFY, middleware=[require_admin("verify the grants")])(
        actions.verify_clicked
    )
    bolt.action(ACTION_CANCEL, middleware=[require_admin("cancel provisioning")])(
        actions.cancel_clicked
    )

    # Step 2: the role. Withdrawing is for the requester, which the step itself checks.
    for opener in role.OPENERS:
        bolt.action(opener, middleware=[require_admin("request the role"), opens_a_form])(
            role.open_request
        )
    bolt.view(REQUEST_CALLBACK, middleware=[require_admin("request the role", fresh=True)])(
        role.request_submitted
    )
    bolt.action(
        role_views.ACTION_ACKNOWLEDGE,
        middleware=[require_approver("acknowledge role requests", fresh=True)],
    )(role.decided)
    bolt.action(role_views.ACTION_DECLINE, middleware=[require_approver("decline role requests")])(
        role.decided
    )
    bolt.action(role_views.ACTION_WITHDRAW, middleware=[require_anyone("withdraw the request")])(
        role.decided
    )
    bolt.action(
        role_views.ACTION_ASSIGN_SIGN_IN,
        middleware=[require_admin("open the sign-in for this session")],
    )(role.sign_in_opened)
    for helper in (
        role_views.ACTION_NEW_SIGN_IN,
        role_views.ACTION_PORTAL,
        role_views.ACTION_CHECK,
    ):
        bolt.action(helper, middleware=[require_admin("act on the role assignment")])(
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
        bolt.action(action_id, middleware=[require_admin(action, fresh=fresh)])(listener)

    return build_web(
        runtime,
        sweep_interval_seconds=sweep_interval_seconds,
        orphan_check_seconds=orphan_check_seconds,
    )

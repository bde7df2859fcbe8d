"""Walking a session through its steps the way people do, for tests of the later steps."""

from __future__ import annotations

import re
from html import unescape
from typing import Any

import httpx

from bot.sandbox.microsoft import EXCHANGE_ADMINISTRATOR
from bot.steps.consent.views import ACTION_CONSENT_OPEN
from bot.steps.role.model import RoleRequest
from bot.steps.role.views import ACTION_ASSIGN_SIGN_IN
from bot.workflow import Event, EventKind, Phase
from tests.conftest import MAILFLOW_CLIENT_ID
from tests.integration.conftest import (
    ADMIN,
    APPROVER,
    CHANNEL,
    CONTOSO_ID,
    GLOBAL_ADMIN_UPN,
    Harness,
)


def consent_buttons(
    harness: Harness, root_ts: str, app: str | None = None
) -> list[tuple[str, dict[str, Any]]]:
    """(message ts, button) for every consent link button in the thread now, oldest first (of
    ``app``, "mailflow" or "dirsync", if given): a step's message loses its button once done."""
    found = []
    for message in harness.thread(root_ts):
        for block in message.blocks:
            if app is not None and block.get("block_id") != f"consent_{app}":
                continue
            for element in block.get("elements", []):
                if element.get("action_id") == ACTION_CONSENT_OPEN:
                    found.append((message.ts, element))
    return found


async def latest_link(harness: Harness, root_ts: str) -> tuple[str, str]:
    await harness.slack.wait_for(lambda s: consent_buttons(harness, root_ts))
    ts, button = consent_buttons(harness, root_ts)[-1]
    return ts, str(button["url"])


async def follow(harness: Harness, url: str, upn: str, decision: str) -> httpx.Response:
    """An admin's browser in a hurry: signed in already, accepts (or cancels) at once."""
    harness.microsoft.sign_in(upn, auto=decision)  # type: ignore[arg-type]
    async with httpx.AsyncClient(follow_redirects=True, timeout=10) as browser:
        return await browser.get(url)


async def consent_now(
    harness: Harness, root_ts: str, upn: str = GLOBAL_ADMIN_UPN, *, nth: int = 1
) -> None:
    """A Global Administrator uses the consent link of step 1 (``nth`` 1) or step 3 (2, once
    posted) and accepts."""
    app = "mailflow" if nth == 1 else "dirsync"
    found = await harness.slack.wait_for(lambda s: consent_buttons(harness, root_ts, app) or None)
    page = await follow(harness, str(found[0][1]["url"]), upn, "accept")
    assert "Consent recorded" in page.text, page.text


async def role_through_workflow(harness: Harness, session_id: str) -> None:
    """Step 2 walked through the workflow (its own conversation is tested on its own)."""
    provisioner = harness.runtime.provisioner
    request = RoleRequest("Inline mail protection configures mail flow", requested_by=ADMIN)
    for kind, actor, payload in (
        (EventKind.ROLE_REQUEST, ADMIN, request),
        (EventKind.ROLE_ACKNOWLEDGE, APPROVER, None),
        (EventKind.ROLE_ASSIGNED, ADMIN, None),
    ):
        event = Event(kind, actor, provisioner.now(), payload=payload)
        await provisioner.handle(session_id, event)


async def ready_to_verify(harness: Harness, *, assign_role: bool = True) -> tuple[str, str]:
    """A session with both consents given (and, by default, the role assigned long ago).

    Step 2's own conversation is tested on its own; here it is walked through the workflow.
    Returns (root ts, session id).
    """
    root_ts = await harness.start_session("contoso.com")
    await consent_now(harness, root_ts)
    [session] = await harness.runtime.store.active()
    if assign_role:
        principal = harness.microsoft.tenant(CONTOSO_ID).service_principal(MAILFLOW_CLIENT_ID)
        assert principal is not None
        harness.microsoft.assign_role(CONTOSO_ID, principal.id, EXCHANGE_ADMINISTRATOR)
    await role_through_workflow(harness, session.id)
    await consent_now(harness, root_ts, nth=2)
    current = await harness.runtime.store.require(session.id)
    assert current.phase is Phase.DIRECTORY_CONSENTED
    return root_ts, session.id


def sign_in_url(harness: Harness, ts: str) -> str:
    """The "Assign for me" sign-in link on the thread message ``ts``."""
    [url] = [
        element["url"]
        for block in harness.slack.message(CHANNEL, ts).blocks
        for element in block.get("elements", [])
        if element.get("action_id") == ACTION_ASSIGN_SIGN_IN
    ]
    return str(url)


def answer_form(page: httpx.Response) -> tuple[str, dict[str, str]]:
    """The form (action, fields) Microsoft's sign-in page posts back to the bot."""
    assert page.status_code == 200, page.text
    found = re.search(r"action='([^']+)'", page.text)
    assert found, page.text
    fields = {
        unescape(name): unescape(value)
        for name, value in re.findall(r"name='([^']+)' value='([^']*)'", page.text)
    }
    assert {"code", "state"} <= fields.keys()
    return unescape(found.group(1)), fields


async def microsoft_answer(harness: Harness, url: str, upn: str) -> tuple[str, dict[str, str]]:
    """Sign ``upn`` in at (sandbox) Microsoft through ``url``: the form it would post back."""
    harness.microsoft.sign_in(upn, auto="accept")  # type: ignore[arg-type]
    async with httpx.AsyncClient(timeout=10) as browser:
        return answer_form(await browser.get(url))

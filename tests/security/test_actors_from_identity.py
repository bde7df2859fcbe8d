"""Facts come from Microsoft, actors from identity.

- A consent redirect is anyone's to forge: the step is recorded only once Microsoft shows the
  grant in the session's tenant, and then as done by "a Global Administrator of the tenant" (the
  redirect names nobody); the admin who clicked the link is kept beside it (``clicked_by``).
- The role assignment is done by whom the sign-in's id_token names, not by whoever clicked
  "Assign for me".
- A sign-in answer with a wrong nonce, or to another tenant, is not used: a page that explains
  with a fresh link, a message in the thread, and no change.
- Over a whole provisioning, every history entry names who really did it.
"""

from __future__ import annotations

import hashlib
import json
import re
from html import unescape
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit, urlunsplit

import httpx

from bot.actors import TENANT_GLOBAL_ADMIN, signed_in_at_microsoft
from bot.sandbox.microsoft import EXCHANGE_ADMINISTRATOR
from bot.steps.consent.views import ACTION_CONSENT_OPEN
from bot.steps.mailflow.views import ACTION_SUBMIT
from bot.steps.role.views import (
    ACTION_ACKNOWLEDGE,
    ACTION_ASSIGN_SIGN_IN,
    ACTION_REQUEST_OPEN_PIM,
)
from bot.workflow import EventKind, Phase
from tests.conftest import MAILFLOW_CLIENT_ID
from tests.integration.conftest import (
    ADMIN,
    APPROVER,
    CHANNEL,
    CONTOSO_ID,
    FABRIKAM_ID,
    GLOBAL_ADMIN_UPN,
    GROUP_ADMIN,
    OUTSIDER,
    ROLE_ADMIN_UPN,
    Harness,
    ephemeral_for,
    session_keys,
)
from tests.integration.steps import (
    consent_buttons,
    follow,
    latest_link,
    microsoft_answer,
    sign_in_url,
)
from tests.integration.test_apply import click as click_in_thread
from tests.integration.test_apply import outcome
from tests.integration.test_role import (
    JUSTIFICATION,
    at_step_two,
    click,
    request_role,
    wait_button,
)
from tests.integration.test_verification import click_verify

PRA = signed_in_at_microsoft(ROLE_ADMIN_UPN)


async def opener_noted(harness: Harness, url: str, user_id: str) -> None:
    """Wait until the link's state records who clicked it (a fact in Redis)."""
    [state] = parse_qs(urlsplit(url).query)["state"]
    key = f"pi:oauth:{{{hashlib.sha256(state.encode()).hexdigest()}}}"

    async def noted() -> bool:
        raw = await harness.redis.get(key)
        return raw is not None and json.loads(raw).get("opened_by") == user_id

    await harness.stored(key, noted)


def sign_in_urls(harness: Harness, root_ts: str) -> set[str]:
    """The "Assign for me" sign-in links the thread shows now."""
    return {
        str(element["url"])
        for message in harness.thread(root_ts)
        for block in message.blocks
        for element in block.get("elements", [])
        if element.get("action_id") == ACTION_ASSIGN_SIGN_IN and element.get("url")
    }


async def click_consent(harness: Harness, root_ts: str, user: str, *, nth: int = 1) -> str:
    """``user`` clicks the consent button of step 1 (``nth`` 1) or step 3 (``nth`` 2); its URL
    once the click is noted (a step's message loses its button once done)."""
    app = "mailflow" if nth == 1 else "dirsync"
    found = await harness.slack.wait_for(lambda s: consent_buttons(harness, root_ts, app) or None)
    ts, button = found[0]
    await harness.driver.click(
        user_id=user, channel_id=CHANNEL, message_ts=ts, action_id=ACTION_CONSENT_OPEN
    )
    url = str(button["url"])
    await opener_noted(harness, url, user)
    return url


def state_of(url: str) -> str:
    return parse_qs(urlsplit(url).query)["state"][0]


async def sign_in_opened_by(harness: Harness, root_ts: str, session_id: str, user: str) -> str:
    """``user`` clicks the latest "Assign for me"; its sign-in URL once the click is stored."""
    ts = await wait_button(harness, root_ts, ACTION_ASSIGN_SIGN_IN)
    await harness.driver.click(
        user_id=user, channel_id=CHANNEL, message_ts=ts, action_id=ACTION_ASSIGN_SIGN_IN
    )

    async def stored() -> bool:
        session = await harness.store.require(session_id)
        return bool(session.role.sign_in_opened_by == user)

    await harness.stored(session_keys(session_id), stored)
    return sign_in_url(harness, ts)


async def acknowledged(harness: Harness) -> tuple[str, str]:
    """Step 2 requested by the admin and acknowledged by the approver."""
    root_ts, session_id = await at_step_two(harness)
    await request_role(
        harness, root_ts, {"justification_input": JUSTIFICATION}, opener=ACTION_REQUEST_OPEN_PIM
    )
    await click(harness, root_ts, ACTION_ACKNOWLEDGE, APPROVER)
    await wait_button(harness, root_ts, ACTION_ASSIGN_SIGN_IN)
    return root_ts, session_id


def fresh_link_of(page: httpx.Response) -> str:
    found = re.search(r'<a class="button" href="([^"]+)">Sign in again</a>', page.text)
    assert found, page.text
    return unescape(found.group(1))


# -- consents ----------------------------------------------------------------------------------


async def test_a_forged_consent_redirect_records_nothing(harness: Harness) -> None:
    """Contoso has not consented to the mail-flow app; a redirect built by hand with a valid
    state says it has. The bot asks Microsoft, which says no: nothing is recorded."""
    root_ts = await harness.start_session("contoso.com")
    url = await click_consent(harness, root_ts, ADMIN)
    [session] = await harness.runtime.store.active()
    tokens_asked = len(harness.microsoft.requests_to("login"))
    links_before = [str(b["url"]) for _, b in consent_buttons(harness, root_ts)]

    forged = await harness.http.get(
        f"{harness.base_url}/microsoft/callback",
        params={
            "admin_consent": "True",
            "tenant": CONTOSO_ID,
            "scope": f"{harness.microsoft_url}/exchange/Exchange.ManageAsApp",
            "state": state_of(url),
        },
    )

    # It reached the bot, which asked Microsoft (a token request in the session's tenant)...
    assert forged.status_code == 409, forged.text
    assert "has not confirmed the consent" in forged.text
    asked = harness.microsoft.requests_to("login")[tokens_asked:]
    assert any(r.path.endswith(f"/{CONTOSO_ID}/oauth2/v2.0/token") for r in asked)
    # ...and Microsoft does not know the app there: nothing recorded, the step stays open.
    after = await harness.runtime.store.require(session.id)
    assert (after.phase, after.version) == (Phase.STARTED, session.version)
    assert after.last(EventKind.MAILFLOW_CONSENT) is None
    audit = await harness.runtime.store.audit(session.id)
    [refused] = [e for e in audit if e.action == "mailflow_consent_redirect"]
    assert refused.result == "not_confirmed"
    assert refused.detail["reason"] == "no_service_principal"
    assert refused.actor == "system"
    assert not [e for e in audit if e.action == "mailflow_consent"]
    note = await harness.slack.wait_for(
        lambda s: [m for m in harness.thread(root_ts) if "has not confirmed" in m.text] or None
    )
    assert "Nothing was recorded" in note[0].text
    # A clear path: a new link, which works once a Global Administrator really consents.
    # (the step's own message gets the fresh link: a link not shown before)
    await harness.slack.wait_for(
        lambda s: [b for _, b in consent_buttons(harness, root_ts) if b["url"] not in links_before]
    )
    _, fresh = await latest_link(harness, root_ts)
    assert "Consent recorded" in (await follow(harness, fresh, GLOBAL_ADMIN_UPN, "accept")).text
    done = await harness.runtime.store.require(session.id)
    assert done.phase is Phase.MAILFLOW_CONSENTED
    assert done.last(EventKind.MAILFLOW_CONSENT).actor == TENANT_GLOBAL_ADMIN  # type: ignore[union-attr]


async def test_a_consent_without_the_permission_is_not_recorded(harness: Harness) -> None:
    """The app's principal exists in the tenant (created some other way) but holds no
    Exchange.ManageAsApp: Microsoft's token carries no such role, so the redirect is not enough."""
    from bot.sandbox.microsoft import ServicePrincipalRecord

    tenant = harness.microsoft.tenant(CONTOSO_ID)
    tenant.service_principals.append(
        ServicePrincipalRecord("sp-bare", MAILFLOW_CLIENT_ID, "Inline Mail Flow", None)
    )
    root_ts = await harness.start_session("contoso.com")
    _, url = await latest_link(harness, root_ts)
    [session] = await harness.runtime.store.active()
    forged = await harness.http.get(
        f"{harness.base_url}/microsoft/callback",
        params={"admin_consent": "True", "tenant": CONTOSO_ID, "state": state_of(url)},
    )
    assert forged.status_code == 409, forged.text
    after = await harness.runtime.store.require(session.id)
    assert (after.phase, after.version) == (Phase.STARTED, session.version)
    audit = await harness.runtime.store.audit(session.id)
    [refused] = [e for e in audit if e.action == "mailflow_consent_redirect"]
    assert (refused.result, refused.detail["reason"]) == ("not_confirmed", "permission_missing")


async def test_a_genuine_consent_is_the_global_administrators_and_who_clicked_is_kept_apart(
    harness: Harness,
) -> None:
    root_ts = await harness.start_session("contoso.com")
    # An outsider's click is refused (and recorded as a refusal), so it names nobody...
    found = await harness.slack.wait_for(lambda s: consent_buttons(harness, root_ts) or None)
    ts, button = found[0]
    await harness.driver.click(
        user_id=OUTSIDER, channel_id=CHANNEL, message_ts=ts, action_id=ACTION_CONSENT_OPEN
    )
    await ephemeral_for(harness, OUTSIDER, "You can't open the consent link")
    [session] = await harness.runtime.store.active()
    [state] = parse_qs(urlsplit(str(button["url"])).query)["state"]
    key = f"pi:oauth:{{{hashlib.sha256(state.encode()).hexdigest()}}}"
    assert json.loads(await harness.redis.get(key))["opened_by"] is None
    # ...an admin's click is noted, and a Global Administrator consents at Microsoft.
    url = await click_consent(harness, root_ts, GROUP_ADMIN)
    assert url == str(button["url"])
    page = await follow(harness, url, GLOBAL_ADMIN_UPN, "accept")
    assert "Consent recorded" in page.text

    done = await harness.runtime.store.require(session.id)
    entry = done.last(EventKind.MAILFLOW_CONSENT)
    assert entry is not None
    assert entry.actor == TENANT_GLOBAL_ADMIN
    audit = await harness.runtime.store.audit(session.id)
    [recorded] = [e for e in audit if e.action == "mailflow_consent"]
    assert recorded.actor == TENANT_GLOBAL_ADMIN
    assert recorded.detail["clicked_by"] == GROUP_ADMIN
    assert recorded.detail["confirmed_by"] == "exchange_token_roles"
    # The step's message: given by a Global Administrator (the actor); the Slack admin only
    # opened the link, and is named as that.
    step = await harness.slack.wait_for(
        lambda s: (
            s.message(CHANNEL, ts)
            if "given by a Global Administrator" in s.message(CHANNEL, ts).text
            else None
        )
    )
    assert f"<@{GROUP_ADMIN}> opened the consent link" in step.text
    assert f"<@{GROUP_ADMIN}> gave" not in step.text
    root = json.dumps(harness.slack.message(CHANNEL, root_ts).blocks)
    assert "given by a Global Administrator of the tenant" in root
    # Status shows both: the actor, and who opened the link in Slack.
    await harness.driver.slash_command(user_id=ADMIN, channel_id=CHANNEL, text="status")
    status = await ephemeral_for(harness, ADMIN, "contoso.com")
    shown = json.dumps(status.blocks)
    assert "a Global Administrator of the tenant mailflow_consent" in shown
    assert f"link opened in Slack by <@{GROUP_ADMIN}>" in shown


# -- the role assignment --------------------------------------------------------------------------


async def test_the_role_is_assigned_by_whom_microsoft_names_not_by_who_clicked(
    harness: Harness,
) -> None:
    root_ts, session_id = await acknowledged(harness)
    url = await sign_in_opened_by(harness, root_ts, session_id, GROUP_ADMIN)
    action, fields = await microsoft_answer(harness, url, ROLE_ADMIN_UPN)
    async with httpx.AsyncClient(timeout=10) as browser:
        page = await browser.post(action, data=fields)
    assert "Exchange Administrator role assigned" in page.text

    session = await harness.store.require(session_id)
    assert session.phase is Phase.ROLE_ASSIGNED
    kinds = [(e.kind, e.actor) for e in session.history]
    assert (EventKind.ROLE_ASSIGNING, PRA) in kinds
    assert (EventKind.ROLE_ASSIGNED, PRA) in kinds
    assert not [a for k, a in kinds if k is EventKind.ROLE_ASSIGNED and a != PRA]
    audit = await harness.runtime.store.audit(session_id)
    [assigned] = [e for e in audit if e.action == "role_assigned"]
    assert assigned.actor == PRA
    assert assigned.detail["clicked_by"] == GROUP_ADMIN
    [assignment] = [e for e in audit if e.action == "role_assignment"]
    assert (assignment.actor, assignment.detail["clicked_by"]) == (PRA, GROUP_ADMIN)
    note = await harness.slack.wait_for(
        lambda s: (
            [m for m in harness.thread(root_ts) if "assigned the Exchange Administrator" in m.text]
            or None
        )
    )
    assert note[0].text.startswith(f"`{ROLE_ADMIN_UPN}` (signed in at Microsoft) assigned")
    root = json.dumps(harness.slack.message(CHANNEL, root_ts).blocks)
    assert f"assigned by `{ROLE_ADMIN_UPN}` (signed in at Microsoft)" in root
    assert f"<@{GROUP_ADMIN}>" not in note[0].text


async def test_a_sign_in_answer_with_a_wrong_nonce_changes_nothing(harness: Harness) -> None:
    """The answer carries a genuine code and the session's state, but its ID token was issued
    for another authorization request (another nonce): MSAL refuses it; the bot explains."""
    root_ts, session_id = await acknowledged(harness)
    url = await sign_in_opened_by(harness, root_ts, session_id, ADMIN)
    parts = urlsplit(url)
    query = {k: v[0] for k, v in parse_qs(parts.query).items()}
    assert query.get("nonce")
    query["nonce"] = "not-the-bots-nonce"
    tampered = urlunsplit(parts._replace(query=urlencode(query)))
    action, fields = await microsoft_answer(harness, tampered, ROLE_ADMIN_UPN)
    before = await harness.store.require(session_id)
    graph_calls = len(harness.microsoft.requests_to("graph"))
    logins = len(harness.microsoft.requests_to("login"))
    sign_in_links = sign_in_urls(harness, root_ts)

    async with httpx.AsyncClient(timeout=10) as browser:
        page = await browser.post(action, data=fields)

    assert page.status_code == 400, page.text
    assert "This sign-in could not be used" in page.text
    assert "nonce" in page.text
    # It reached the bot, which redeemed the code at Microsoft (and then refused the answer).
    redeemed = harness.microsoft.requests_to("login")[logins:]
    assert any(r.path.endswith("/oauth2/v2.0/token") for r in redeemed)
    after = await harness.store.require(session_id)
    assert (after.phase, after.version) == (Phase.ROLE_ACKNOWLEDGED, before.version)
    assert after.history == before.history
    assert len(harness.microsoft.requests_to("graph")) == graph_calls  # nothing assigned
    assert harness.microsoft.tenant(CONTOSO_ID).role_assignments == []
    assert harness.microsoft.tenant(CONTOSO_ID).schedule_requests == []
    await harness.slack.wait_for(
        lambda s: (
            [m for m in harness.thread(root_ts) if "nonce did not match" in str(m.blocks)] or None
        )
    )
    # The fresh link on the page (also in the step's message) is a working sign-in.
    await harness.slack.wait_for(lambda s: sign_in_urls(harness, root_ts) - sign_in_links)
    fresh = fresh_link_of(page)
    assert state_of(fresh) != state_of(url)
    action, fields = await microsoft_answer(harness, fresh, ROLE_ADMIN_UPN)
    async with httpx.AsyncClient(timeout=10) as browser:
        done = await browser.post(action, data=fields)
    assert "Exchange Administrator role assigned" in done.text
    assigned = await harness.store.require(session_id)
    assert assigned.last(EventKind.ROLE_ASSIGNED).actor == PRA  # type: ignore[union-attr]


async def test_a_sign_in_answer_for_another_tenant_changes_nothing(harness: Harness) -> None:
    """Microsoft's answer names another tenant in its ID token (``tid``): not used."""
    root_ts, session_id = await acknowledged(harness)
    url = await sign_in_opened_by(harness, root_ts, session_id, ADMIN)
    harness.microsoft.id_token_tenant = FABRIKAM_ID
    action, fields = await microsoft_answer(harness, url, ROLE_ADMIN_UPN)
    before = await harness.store.require(session_id)
    graph_calls = len(harness.microsoft.requests_to("graph"))

    async with httpx.AsyncClient(timeout=10) as browser:
        page = await browser.post(action, data=fields)

    assert page.status_code == 400, page.text
    assert "another tenant" in page.text
    assert FABRIKAM_ID in page.text  # what Microsoft's answer said, escaped
    after = await harness.store.require(session_id)
    assert (after.phase, after.version, after.history) == (
        Phase.ROLE_ACKNOWLEDGED,
        before.version,
        before.history,
    )
    assert len(harness.microsoft.requests_to("graph")) == graph_calls
    assert harness.microsoft.tenant(CONTOSO_ID).role_assignments == []
    audit = await harness.runtime.store.audit(session_id)
    [refused] = [e for e in audit if e.action == "role_assignment"]
    assert (refused.actor, refused.detail["error"]) == ("system", "wrong_tenant")
    note = await harness.slack.wait_for(
        lambda s: [m for m in harness.thread(root_ts) if FABRIKAM_ID in str(m.blocks)] or None
    )
    assert "Nothing was assigned" in str(note[0].blocks)
    # The fresh link works once the answer is the tenant's own.
    harness.microsoft.id_token_tenant = None
    action, fields = await microsoft_answer(harness, fresh_link_of(page), ROLE_ADMIN_UPN)
    async with httpx.AsyncClient(timeout=10) as browser:
        done = await browser.post(action, data=fields)
    assert "Exchange Administrator role assigned" in done.text


# -- a whole provisioning ------------------------------------------------------------------------


async def test_every_step_of_a_whole_provisioning_names_who_really_did_it(
    harness: Harness,
) -> None:
    """Started by the admin, consents by the tenant's Global Administrator (links clicked by
    other admins), the role requested by the admin, acknowledged by the approver, assigned by
    the Privileged Role Administrator who signed in (the sign-in opened by another admin),
    verified and submitted by the admin: the history and the audit say exactly that."""
    root_ts = await harness.start_session("contoso.com")
    [session] = await harness.runtime.store.active()
    session_id = session.id
    url = await click_consent(harness, root_ts, GROUP_ADMIN)
    assert "Consent recorded" in (await follow(harness, url, GLOBAL_ADMIN_UPN, "accept")).text
    await request_role(
        harness, root_ts, {"justification_input": JUSTIFICATION}, opener=ACTION_REQUEST_OPEN_PIM
    )
    await click(harness, root_ts, ACTION_ACKNOWLEDGE, APPROVER)
    sign_in = await sign_in_opened_by(harness, root_ts, session_id, GROUP_ADMIN)
    action, fields = await microsoft_answer(harness, sign_in, ROLE_ADMIN_UPN)
    async with httpx.AsyncClient(timeout=10) as browser:
        assigned = await browser.post(action, data=fields)
    assert "Exchange Administrator role assigned" in assigned.text
    url = await click_consent(harness, root_ts, ADMIN, nth=2)
    assert "Consent recorded" in (await follow(harness, url, GLOBAL_ADMIN_UPN, "accept")).text
    principal = harness.microsoft.tenant(CONTOSO_ID).service_principal(MAILFLOW_CLIENT_ID)
    assert principal is not None
    assert any(
        a.principal_id == principal.id and a.role_definition_id == EXCHANGE_ADMINISTRATOR
        for a in harness.microsoft.tenant(CONTOSO_ID).role_assignments
    )
    harness.microsoft_clock.advance(3600)  # the role has replicated to Exchange
    before = await harness.version_of(session_id)
    await click_verify(harness, root_ts)
    assert await harness.settled(session_id, after_version=before) is Phase.PLAN_SHOWN
    # A finished session keeps only how it ended (the audit keeps every decision): its history
    # is read here, before Submit.
    shown = await harness.store.require(session_id)
    after = len(harness.thread(root_ts))
    await click_in_thread(harness, root_ts, ACTION_SUBMIT)
    assert await outcome(harness, root_ts, session_id, after) is Phase.PROTECTED

    final = await harness.store.require(session_id)
    assert [(e.kind, e.actor) for e in final.history] == [(EventKind.APPLY_SUCCEEDED, "system")]
    done_by = {
        EventKind.ROOT_POSTED: {ADMIN, "system"},
        EventKind.MAILFLOW_CONSENT: {TENANT_GLOBAL_ADMIN},
        EventKind.ROLE_REQUEST: {ADMIN},
        EventKind.ROLE_ACKNOWLEDGE: {APPROVER},
        EventKind.ROLE_ASSIGNING: {PRA},
        EventKind.ROLE_ASSIGNED: {PRA},
        EventKind.DIRECTORY_CONSENT: {TENANT_GLOBAL_ADMIN},
        EventKind.VERIFY: {ADMIN},
        EventKind.VERIFICATION_PASSED: {"system"},
        EventKind.SUBMIT: {ADMIN},
        EventKind.APPLY_SUCCEEDED: {"system"},
    }
    history = [(entry.kind, entry.actor) for entry in (*shown.history, *final.history)]
    unrecorded = (EventKind.ROOT_POSTED, EventKind.SUBMIT)  # an update; made after the read
    assert [kind for kind, _ in history] == [kind for kind in done_by if kind not in unrecorded], (
        history
    )
    wrong = [(kind, actor) for kind, actor in history if actor not in done_by[kind]]
    assert wrong == []

    # The audit: every decision's actor is who made it; the clicks are apart, as clicked_by.
    audit = await harness.runtime.store.audit(session_id)
    decisions: dict[str, Any] = {e.action: e for e in audit if e.action in done_by}
    for kind, allowed in done_by.items():
        if kind.value in decisions:
            assert decisions[kind.value].actor in allowed, (kind, decisions[kind.value].actor)
    assert decisions["mailflow_consent"].detail["clicked_by"] == GROUP_ADMIN
    assert decisions["directory_consent"].detail["clicked_by"] == ADMIN
    assert decisions["role_assigned"].detail["clicked_by"] == GROUP_ADMIN
    opened = [e for e in audit if e.action == "role_sign_in_opened"]
    assert [e.actor for e in opened] == [GROUP_ADMIN]  # what the click did: open a sign-in
    slack_people = {ADMIN, APPROVER, GROUP_ADMIN}
    for entry in audit:
        assert entry.actor in slack_people | {"system", TENANT_GLOBAL_ADMIN, PRA}, entry
        if entry.action in ("mailflow_consent", "directory_consent", "role_assigned"):
            assert entry.actor not in slack_people, entry

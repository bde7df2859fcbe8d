"""Starting a session: the command, the modal, the root checklist and the thread."""

from __future__ import annotations

import asyncio
import json

from bot.workflow import Phase
from tests.integration.conftest import (
    ADMIN,
    CHANNEL,
    CONTOSO_ID,
    GROUP_ADMIN,
    OUTSIDER,
    Harness,
    ephemeral_for,
)


async def test_start_posts_the_checklist_and_opens_the_thread(harness: Harness) -> None:
    view_id = await harness.open_start_modal()
    modal = harness.slack.views[view_id].view
    assert modal["callback_id"] == "start_provisioning"
    assert json.loads(modal["private_metadata"])["channel"] == CHANNEL

    response = await harness.driver.submit_view(
        user_id=ADMIN, view_id=view_id, values={"tenant_input": "Contoso.com"}
    )
    assert response.status_code == 200
    assert harness.driver.view_errors(response) == {}
    root_ts = await harness.wait_for_root("contoso.com")

    root = harness.slack.message(CHANNEL, root_ts)
    assert "Inline Mode provisioning: contoso.com" in json.dumps(root.blocks)
    assert CONTOSO_ID in json.dumps(root.blocks)
    assert "Consent for mail flow" in json.dumps(root.blocks)
    thread = harness.thread(root_ts)
    assert "Global Administrator" in thread[0].text

    [session] = await harness.runtime.store.active()
    assert (session.tenant_id, session.phase, session.root_ts) == (
        CONTOSO_ID,
        Phase.STARTED,
        root_ts,
    )
    assert session.started_by == ADMIN


async def test_a_member_of_an_admin_user_group_may_start(harness: Harness) -> None:
    await harness.start_session("contoso.com", user_id=GROUP_ADMIN)
    [session] = await harness.runtime.store.active()
    assert session.started_by == GROUP_ADMIN
    assert harness.slack.calls_to("usergroups.users.list")


async def test_a_malformed_tenant_is_a_field_error_and_changes_nothing(harness: Harness) -> None:
    view_id = await harness.open_start_modal()
    response = await harness.driver.submit_view(
        user_id=ADMIN, view_id=view_id, values={"tenant_input": "https://contoso.com/"}
    )
    errors = harness.driver.view_errors(response)
    assert "web address" in errors["tenant"]
    assert harness.slack.views[view_id].is_open
    assert await harness.runtime.store.active() == []
    assert harness.slack.calls_to("chat.postMessage") == []


async def test_an_unknown_tenant_is_a_field_error(harness: Harness) -> None:
    view_id = await harness.open_start_modal()
    response = await harness.driver.submit_view(
        user_id=ADMIN, view_id=view_id, values={"tenant_input": "nosuchtenant.example"}
    )
    errors = harness.driver.view_errors(response)
    assert "knows no tenant called nosuchtenant.example" in errors["tenant"]
    assert await harness.runtime.store.active() == []
    assert harness.slack.calls_to("chat.postMessage") == []


async def test_a_tenant_id_works_as_well_as_a_domain(harness: Harness) -> None:
    await harness.start_session(CONTOSO_ID.upper())
    [session] = await harness.runtime.store.active()
    assert session.tenant_id == CONTOSO_ID


async def test_non_admins_are_refused_with_who_may(harness: Harness) -> None:
    response = await harness.driver.slash_command(user_id=OUTSIDER, channel_id=CHANNEL)
    assert response.status_code == 200
    refusal = await ephemeral_for(harness, OUTSIDER, "You can't start provisioning")
    assert f"<@{ADMIN}>" in refusal.text
    assert "<!subteam^S0ADMINS>" in refusal.text
    assert harness.slack.calls_to("views.open") == []


async def test_help_is_for_everyone(harness: Harness) -> None:
    await harness.driver.slash_command(user_id=OUTSIDER, channel_id=CHANNEL, text="help")
    await ephemeral_for(harness, OUTSIDER, "/provision-inline status")
    await harness.driver.slash_command(user_id=OUTSIDER, channel_id=CHANNEL, text="dance")
    await ephemeral_for(harness, OUTSIDER, "I don't know `dance`")


async def test_a_second_start_for_the_tenant_points_to_the_thread(harness: Harness) -> None:
    root_ts = await harness.start_session("contoso.com")
    view_id = await harness.open_start_modal(GROUP_ADMIN)
    await harness.driver.submit_view(
        user_id=GROUP_ADMIN, view_id=view_id, values={"tenant_input": "contoso.com"}
    )
    pointer = await ephemeral_for(harness, GROUP_ADMIN, "already under way")
    assert harness.slack.message(CHANNEL, root_ts).permalink in pointer.text
    assert len(await harness.runtime.store.active()) == 1
    assert len(harness.root_messages()) == 1


async def test_two_concurrent_starts_for_one_tenant_make_one_session(harness: Harness) -> None:
    first = await harness.open_start_modal(ADMIN)
    second = await harness.open_start_modal(GROUP_ADMIN)
    submissions = [
        harness.driver.build_view_submission(
            user_id=user, view_id=view, values={"tenant_input": "contoso.com"}
        )
        for user, view in ((ADMIN, first), (GROUP_ADMIN, second))
    ]
    responses = await asyncio.gather(*(harness.driver.send(s) for s in submissions))
    assert [r.status_code for r in responses] == [200, 200]
    await harness.slack.wait_for(lambda s: [e for e in s.ephemerals if "already" in e.text])
    root_ts = await harness.wait_for_root("contoso.com")
    assert len(await harness.runtime.store.active()) == 1
    assert [m.ts for m in harness.root_messages()] == [root_ts]


async def test_the_bot_outside_the_channel_explains_how_to_invite_it(harness: Harness) -> None:
    response = await harness.driver.slash_command(user_id=ADMIN, channel_id="C0NOBOT")
    assert response.status_code == 200
    [view] = await harness.slack.wait_for(lambda s: s.open_views(ADMIN) or None)
    await harness.driver.submit_view(
        user_id=ADMIN, view_id=view.id, values={"tenant_input": "contoso.com"}
    )
    advice = await ephemeral_for(harness, ADMIN, "/invite @provision-inline")
    assert advice.channel == "C0NOBOT"
    assert await harness.runtime.store.active() == []
    assert await harness.runtime.store.holder_of(CONTOSO_ID) is None

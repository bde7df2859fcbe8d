"""The chaos suite's invariant checks catch what they are for: a missing or repeated Slack post,
an Exchange object created twice, a decision recorded twice (no processes, no chaos)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import replace
from typing import Any

import pytest
from slack_sdk.web.async_client import AsyncWebClient

from bot.sandbox.microsoft import RecordedRequest, SandboxMicrosoft
from bot.sandbox.server import serve_asgi
from bot.sandbox.slack import SandboxSlack
from bot.session.views import root_message
from bot.steps.mailflow.model import PlanState
from bot.workflow import EventKind, HistoryEntry, Phase, Scope, Session
from state.sessions import AuditEntry
from tests.reliability.chaos import (
    NOTIFY_CHANNEL,
    Cast,
    exchange_violations,
    posts_violations,
    steps_twice,
)

CAST = Cast(
    index=1,
    tenant_id="5b0c3f5e-1d8e-4d47-9a3c-5f9a1e2b3c4d",
    domain="chaos1.example",
    channel="C0CHAOS001",
    admin="U0ADMIN001",
    approver="U0APPROVER001",
    global_admin="ga@chaos1.example",
    role_admin="pra@chaos1.example",
)
PHASES = (
    Phase.MAILFLOW_CONSENTED,
    Phase.ROLE_REQUESTED,
    Phase.ROLE_ACKNOWLEDGED,
    Phase.ROLE_ASSIGNING,
    Phase.ROLE_ASSIGNED,
    Phase.DIRECTORY_CONSENTED,
    Phase.VERIFYING,
    Phase.PLAN_SHOWN,
    Phase.APPLYING,
    Phase.PROTECTED,
)
# (as posted, as edited since) of each message of a provisioning that went well.
THREAD = (
    (
        "Step 1 — consent for mail flow for chaos1.example: a Global Administrator opens it.",
        ":white_check_mark: *Step 1 — consent for mail flow:* given by a Global Administrator.",
    ),
    (
        "Step 2: the mail-flow app Inline mail flow needs the Exchange Administrator role.",
        "`pra@chaos1.example` (signed in at Microsoft) assigned the Exchange Administrator role.",
    ),
    (":bell: <@U0APPROVER001>: <@U0ADMIN001> asks for the *Exchange Administrator* role.", None),
    (
        "Step 3 — consent for directory sync for chaos1.example: a Global Administrator opens it.",
        ":white_check_mark: *Step 3 — consent for directory sync:* given by a Global Admin.",
    ),
    (
        "Step 4 for chaos1.example: press Verify to check every grant.",
        "Every grant is in place: Exchange Online accepts the mail-flow app.",
    ),
    ("*Step 4 — the change plan.* Every grant is verified. Protected domains: chaos1.", None),
    ("Exchange Online change plan: 15 change(s), 0 object(s) left as they are, 0 blocked.", None),
    (
        "Review the pre-flight checks and the change plan above. Submit applies the 15 changes.",
        ":rocket: <@U0ADMIN001> submitted the change plan. 15 of 15 changes applied.",
    ),
    ("Exchange Online mail flow is configured: 13 created, 0 updated, 0 already in place.", None),
)


def protected(root_ts: str) -> Session:
    return Session(
        id="0123456789abcdef",
        tenant_id=CAST.tenant_id,
        tenant_label=CAST.domain,
        scope=Scope.FULL,
        channel_id=CAST.channel,
        started_by=CAST.admin,
        created_at=0.0,
        phase=Phase.PROTECTED,
        root_ts=root_ts,
        history=tuple(HistoryEntry(EventKind.VERIFY, "system", 0.0, p) for p in PHASES),
        plan=PlanState(domains=(CAST.domain,)),
    )


class Thread:
    def __init__(self, slack: SandboxSlack, client: AsyncWebClient) -> None:
        self.slack = slack
        self.client = client
        self.root_ts = ""

    async def post(
        self, text: str, *, channel: str = CAST.channel, top: bool = False, then: str | None = None
    ) -> str:
        """Post ``text`` (in the thread unless ``top``), and edit it into ``then``."""
        thread = None if top else self.root_ts
        answer = await self.client.chat_postMessage(channel=channel, text=text, thread_ts=thread)
        if then is not None:
            await self.client.chat_update(channel=channel, ts=answer["ts"], text=then)
        return str(answer["ts"])

    async def whole(self, session: Session) -> Session:
        """The thread of a provisioning that went well; ``session`` with its root."""
        self.root_ts = await self.post("Inline Mode provisioning for chaos1.example", top=True)
        session = replace(session, root_ts=self.root_ts)
        await self.client.chat_update(
            channel=CAST.channel, ts=self.root_ts, text=root_message(session).text
        )
        for posted, edited in THREAD:
            await self.post(posted, then=edited)
        note = "Exchange Online protected in inline mode. Tenant: chaos1.example."
        await self.post(note, top=True)
        await self.post(note, channel=NOTIFY_CHANNEL, top=True)
        return session


@pytest.fixture
async def thread() -> AsyncIterator[Thread]:
    slack = SandboxSlack()
    slack.add_channel(CAST.channel, "provisioning-1")
    slack.add_channel(NOTIFY_CHANNEL, "mail-security")
    async with serve_asgi(slack.app) as server:
        yield Thread(
            slack, AsyncWebClient(token=slack.bot_token, base_url=f"{server.base_url}/api/")
        )


async def test_a_whole_thread_has_each_message_once(thread: Thread) -> None:
    session = await thread.whole(protected(""))
    assert posts_violations("s", thread.slack, CAST, session) == []


async def test_a_repeated_step_message_is_caught(thread: Thread) -> None:
    session = await thread.whole(protected(""))
    await thread.post(THREAD[3][0], then=THREAD[3][1])
    assert posts_violations("s", thread.slack, CAST, session) == [
        "s: the step 3 message was posted 2 times"
    ]


async def test_a_missing_plan_and_announcement_are_caught(thread: Thread) -> None:
    thread.root_ts = await thread.post("Inline Mode provisioning for chaos1.example", top=True)
    for posted, edited in THREAD:
        if not posted.startswith("Exchange Online change plan"):
            await thread.post(posted, then=edited)
    found = posts_violations("s", thread.slack, CAST, protected(thread.root_ts))
    assert "s: the change plan is missing" in found
    assert "s: the announcement is missing" in found
    assert f"s: 0 announcements in {NOTIFY_CHANNEL}, not 1" in found
    assert any(problem.startswith("s: the root checklist says") for problem in found)


async def test_an_edit_that_never_came_is_caught(thread: Thread) -> None:
    """Step 1 was recorded, but its message still shows the link (its edit was lost)."""
    session = await thread.whole(protected(""))
    [step1] = [m for m in thread.slack.all_messages() if "Step 1 — consent" in m.text]
    await thread.client.chat_update(channel=CAST.channel, ts=step1.ts, text=THREAD[0][0])
    assert posts_violations("s", thread.slack, CAST, session) == [
        f"s: the step 1 message still says {THREAD[0][0]!r}"
    ]


async def test_a_session_owes_only_the_messages_of_the_steps_it_reached(thread: Thread) -> None:
    started = replace(protected(""), phase=Phase.STARTED, history=(), plan=None)
    thread.root_ts = await thread.post(root_message(started).text, top=True)
    started = replace(started, root_ts=thread.root_ts)
    await thread.post(THREAD[0][0])
    assert posts_violations("s", thread.slack, CAST, started) == []
    consented = replace(
        started,
        phase=Phase.MAILFLOW_CONSENTED,
        history=(HistoryEntry(EventKind.MAILFLOW_CONSENT, "x", 0.0, Phase.MAILFLOW_CONSENTED),),
    )
    found = posts_violations("s", thread.slack, CAST, consented)
    assert "s: the step 2 message is missing" in found
    assert any(problem.startswith("s: the step 1 message still says") for problem in found)
    assert any(problem.startswith("s: the root checklist says") for problem in found)


def exchange_call(cmdlet: str, name: str, status: int = 200) -> RecordedRequest:
    body: dict[str, Any] = {"CmdletInput": {"CmdletName": cmdlet, "Parameters": {"Name": name}}}
    return RecordedRequest(
        service="exchange",
        method="POST",
        path=f"/exchange/adminapi/beta/{CAST.tenant_id}/InvokeCommand",
        query={},
        body=body,
        client_id=None,
        user=None,
        tenant_id=CAST.tenant_id,
        status=status,
    )


def test_an_exchange_object_created_twice_is_caught() -> None:
    microsoft = SandboxMicrosoft([CAST.tenant()])
    microsoft.requests += [
        exchange_call("New-TransportRule", "TMCAS Inline Incoming Domain Transport Rule"),
        exchange_call("New-TransportRule", "TMCAS Inline Incoming Domain Transport Rule", 400),
        exchange_call("New-InboundConnector", "TMCAS Inline Inbound Connector for Incoming"),
    ]
    assert exchange_violations("s", microsoft, CAST, None) == []
    microsoft.requests.append(
        exchange_call("New-TransportRule", "TMCAS Inline Incoming Domain Transport Rule")
    )
    microsoft.requests.append(exchange_call("Remove-TransportRule", "x"))
    found = exchange_violations("s", microsoft, CAST, None)
    assert "s: TransportRule 'TMCAS Inline Incoming Domain Transport Rule' created 2 times" in found
    assert any("Remove-TransportRule" in problem for problem in found)


def test_a_protected_tenant_without_its_objects_is_caught() -> None:
    microsoft = SandboxMicrosoft([CAST.tenant()])
    found = exchange_violations("s", microsoft, CAST, protected("1.1"))
    assert any("Exchange lacks" in problem for problem in found)
    assert any("allow list lacks" in problem for problem in found)


def test_a_decision_recorded_twice_is_caught() -> None:
    def entry(action: str, result: str = "ok") -> AuditEntry:
        return AuditEntry("1-0", 0.0, "U1", action, result, {})

    audit = [entry("mailflow_consent"), entry("role_request"), entry("role_assignment", "assigned")]
    assert steps_twice("s", protected("1.1"), audit) == []
    # A claim released and claimed again by a new sign-in is the person's doing, not a repeat.
    audit += [entry("role_assigning"), entry("role_assign_failed"), entry("role_assigning")]
    assert steps_twice("s", protected("1.1"), audit) == []
    audit += [entry("role_assigning")]
    assert steps_twice("s", protected("1.1"), audit) == ["s: role_assigning recorded 3 times"]
    audit += [entry("mailflow_consent"), entry("role_assignment", "assigned")]
    assert steps_twice("s", protected("1.1"), audit) == [
        "s: mailflow_consent recorded 2 times",
        "s: role_assigning recorded 3 times",
        "s: the role was assigned at Microsoft 2 times",
    ]


async def test_a_repeat_is_explained_only_where_its_first_copy_s_process_died_unrecorded(
    thread: Thread,
) -> None:
    """A post made again is a violation unless every earlier copy's process died between
    Slack's answer and the record of its ts (what ``explain`` finds out from the kills)."""
    session = await thread.whole(protected(""))
    await thread.post(THREAD[3][0], then=THREAD[3][1])
    [first, _] = [
        c for c in thread.slack.calls_to("chat.postMessage") if "Step 3" in c.params["text"]
    ]
    explained: list[str] = []
    found = posts_violations(
        "s",
        thread.slack,
        CAST,
        session,
        explain=lambda call: "killed before the record" if call is first else None,
        explained=explained,
    )
    assert found == []
    assert explained == ["s: the step 3 message was posted 2 times: killed before the record"]
    found = posts_violations(
        "s", thread.slack, CAST, session, explain=lambda call: None, explained=explained
    )
    assert found == ["s: the step 3 message was posted 2 times"]

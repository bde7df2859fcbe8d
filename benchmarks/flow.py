"""A whole provisioning, played as the demo plays it, one timed interaction at a time.

Each interaction is sent (a signed Slack request, or the admin's browser at Microsoft and back
at the bot), its ack (or page) is timed, and it counts as done only when its Slack effect has
arrived in the sandbox Slack (the message, the edit, the modal), so work deferred past the ack
is never counted as finished. Interactions run one after the other; every request of one carries
the header ``x-bench-interaction: <name>``, which the instrumented bot uses to attribute its Redis
round trips to the interaction.
"""

from __future__ import annotations

import html
import json
import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import httpx

from benchmarks.world import (
    ADMIN,
    APPROVER,
    BENCH_HEADER,
    CHANNEL,
    NOTIFY,
    BotProcess,
    Tenant,
    World,
)
from bot.sandbox.slack import SandboxSlack
from bot.session.views import phase_summary
from bot.steps.consent.views import ACTION_CONSENT_OPEN, ACTION_CONSENT_RENEW
from bot.steps.mailflow.views import ACTION_ACKNOWLEDGE, ACTION_SUBMIT, ANNOUNCEMENT
from bot.steps.role.views import ACTION_ACKNOWLEDGE as ACTION_ACKNOWLEDGE_ROLE
from bot.steps.role.views import (
    ACTION_ASSIGN_SIGN_IN,
    ACTION_CHECK,
    ACTION_PORTAL,
    ACTION_REQUEST_OPEN_PIM,
)
from bot.steps.verify.views import ACTION_VERIFY
from bot.workflow import Phase

JUSTIFICATION = "Inline mail protection for Northwind (change CHG-2041)"
TIMEOUT = 120.0  # seconds an interaction's Slack effect may take before the run is abandoned


@dataclass
class Interaction:
    name: str
    start: float
    ack: float
    done: float
    status: int | None
    effect: bool = True  # False: its Slack effect never arrived (``done`` is when we gave up)

    @property
    def page(self) -> bool:
        """A page for the admin's browser (Microsoft's redirect to the bot), not a Slack
        request: it has no ack."""
        return self.name.endswith("(browser)")

    @property
    def ack_ms(self) -> float:
        return (self.ack - self.start) * 1000

    @property
    def done_ms(self) -> float:
        return (self.done - self.start) * 1000


@dataclass
class Conversation:
    world: World
    bot: BotProcess
    tenant: Tenant
    interactions: list[Interaction] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    root_ts: str = ""
    session_id: str = ""

    def __post_init__(self) -> None:
        self.world.driver.events_url = self.bot.events_url

    @property
    def slack(self) -> SandboxSlack:
        return self.world.slack

    # -- reading the sandbox Slack ---------------------------------------------------------------

    def thread(self) -> list[Any]:
        return [
            m for m in self.slack.messages(CHANNEL, thread_ts=self.root_ts) if m.ts != self.root_ts
        ]

    def find(self, action_id: str) -> tuple[str, dict[str, Any]] | None:
        for message in reversed(self.thread()):
            for block in message.blocks:
                for element in block.get("elements", []):
                    if element.get("action_id") == action_id:
                        return str(message.ts), element
        return None

    def shows(self, *phases: Phase) -> bool:
        if not self.root_ts:
            return False
        text = self.slack.message(CHANNEL, self.root_ts).text
        return any(phase_summary(p) in text for p in phases)

    # -- one interaction -------------------------------------------------------------------------

    async def interact(
        self,
        name: str,
        send: Callable[[], Awaitable[httpx.Response | None]],
        done: Callable[[SandboxSlack], Any] | None,
        *,
        within: float = TIMEOUT,
    ) -> Interaction:
        http = self.world.http
        http.headers[BENCH_HEADER] = name
        start = time.time()
        try:
            response = await send()
        finally:
            http.headers.pop(BENCH_HEADER, None)
        ack = time.time()
        status = response.status_code if response is not None else None
        if done is not None:
            try:
                await self.slack.wait_for(done, timeout=within)
            except TimeoutError:
                self.interactions.append(Interaction(name, start, ack, time.time(), status, False))
                raise
        finished = time.time() if done is not None else ack
        record = Interaction(name, start, ack, finished, status)
        self.interactions.append(record)
        return record

    async def click(
        self,
        name: str,
        user: str,
        action_id: str,
        done: Callable[..., Any],
        *,
        within: float = TIMEOUT,
    ) -> None:
        found = await self.slack.wait_for(lambda s: self.find(action_id), timeout=TIMEOUT)
        ts = found[0]
        await self.interact(
            name,
            lambda: self.world.driver.click(
                user_id=user, channel_id=CHANNEL, message_ts=ts, action_id=action_id
            ),
            done,
            within=within,
        )

    async def browser(
        self, name: str, url: str, *, form_post: bool, done: Callable[..., Any]
    ) -> None:
        """The admin's browser at Microsoft (the sandbox answers at once, signed in), then back
        at the bot's callback: a redirect (consent) or a form post (the sign-in)."""

        async def visit() -> httpx.Response:
            async with httpx.AsyncClient(
                follow_redirects=True, timeout=60, headers={BENCH_HEADER: name}
            ) as browser:
                page = await browser.get(url)
                if not form_post:
                    return page
                action = re.search(r"action='([^']+)'", page.text)
                fields = dict(re.findall(r"name='([^']+)' value='([^']*)'", page.text))
                if action is None:
                    raise RuntimeError("Microsoft's sign-in page did not post back")
                return await browser.post(
                    html.unescape(action.group(1)),
                    data={html.unescape(k): html.unescape(v) for k, v in fields.items()},
                )

        await self.interact(name, visit, done)

    # -- the stages --------------------------------------------------------------------------------

    async def start(self) -> None:
        driver = self.world.driver
        known = {v.id for v in self.slack.open_views(ADMIN)}
        await self.interact(
            "command /provision-inline",
            lambda: driver.slash_command(user_id=ADMIN, channel_id=CHANNEL),
            lambda s: [v for v in s.open_views(ADMIN) if v.id not in known],
        )
        view = [v for v in self.slack.open_views(ADMIN) if v.id not in known][-1]
        roots = {m.ts for m in self.slack.messages(CHANNEL)}
        tenant = self.tenant.domain

        def started(slack: SandboxSlack) -> bool:
            new = [m for m in slack.messages(CHANNEL) if m.ts not in roots and tenant in m.text]
            if not new:
                return False
            self.root_ts = str(new[-1].ts)
            return self.find(ACTION_CONSENT_OPEN) is not None

        await self.interact(
            "start form submitted",
            lambda: driver.submit_view(
                user_id=ADMIN, view_id=view.id, values={"tenant_input": tenant}
            ),
            started,
        )
        renew = self.find(ACTION_CONSENT_RENEW)
        assert renew is not None
        self.session_id = str(renew[1]["value"]).partition(":")[0]

    async def consent(self, name: str, app: str, phase: Phase, next_action: str) -> None:
        await self.slack.wait_for(
            lambda s: any(f'"consent_{app}"' in json.dumps(m.blocks) for m in self.thread()),
            timeout=TIMEOUT,
        )
        found = self.find(ACTION_CONSENT_OPEN)
        assert found is not None
        self.world.microsoft.sign_in(self.tenant.global_admin, auto="accept")
        await self.browser(
            name,
            str(found[1]["url"]),
            form_post=False,
            done=lambda s: self.shows(phase) and self.find(next_action) is not None,
        )

    async def role(self) -> None:
        """Up to the approver's acknowledgement (the role is then waiting to be assigned)."""
        await self.consent(
            "mail-flow consent (browser)",
            "mailflow",
            Phase.MAILFLOW_CONSENTED,
            ACTION_REQUEST_OPEN_PIM,
        )
        known = {v.id for v in self.slack.open_views(ADMIN)}

        def form_open(slack: SandboxSlack) -> list[Any]:
            return [
                v
                for v in slack.open_views(ADMIN)
                if v.id not in known and v.callback_id == "role_request"
            ]

        await self.click("click Request the role", ADMIN, ACTION_REQUEST_OPEN_PIM, form_open)
        view = form_open(self.slack)[-1]
        await self.interact(
            "role form submitted",
            lambda: self.world.driver.submit_view(
                user_id=ADMIN, view_id=view.id, values={"justification_input": JUSTIFICATION}
            ),
            lambda s: self.shows(Phase.ROLE_REQUESTED) and self.find(ACTION_ACKNOWLEDGE_ROLE),
        )
        await self.click(
            "approver acknowledges",
            APPROVER,
            ACTION_ACKNOWLEDGE_ROLE,
            lambda s: self.shows(Phase.ROLE_ACKNOWLEDGED) and self.find(ACTION_ASSIGN_SIGN_IN),
        )

    async def portal(self) -> None:
        """*I'll do it in the portal*: the step then offers *I've assigned it* (a check in
        Graph on every click)."""
        await self.click(
            "click I'll do it in the portal",
            ADMIN,
            ACTION_PORTAL,
            lambda s: self.find(ACTION_CHECK),
        )

    async def assign(self) -> None:
        found = self.find(ACTION_ASSIGN_SIGN_IN)
        assert found is not None
        ts, button = found
        driver = self.world.driver
        await self.interact(
            "click Assign for me",
            lambda: driver.click(
                user_id=ADMIN, channel_id=CHANNEL, message_ts=ts, action_id=ACTION_ASSIGN_SIGN_IN
            ),
            None,  # a URL button: the click is noted, nothing changes in Slack
        )
        self.world.microsoft.sign_in(self.tenant.role_admin, auto="accept")
        await self.browser(
            "role sign-in (browser)",
            str(button["url"]),
            form_post=True,
            done=lambda s: (
                self.shows(Phase.ROLE_ASSIGNED)
                and any('"consent_dirsync"' in json.dumps(m.blocks) for m in self.thread())
            ),
        )

    async def directory(self) -> None:
        await self.consent(
            "directory-sync consent (browser)", "dirsync", Phase.DIRECTORY_CONSENTED, ACTION_VERIFY
        )

    async def verify(self) -> Interaction:
        await self.click(
            "click Verify",
            ADMIN,
            ACTION_VERIFY,
            lambda s: self.shows(Phase.PLAN_SHOWN) and self.find(ACTION_SUBMIT),
        )
        return self.interactions[-1]

    async def submit(self) -> None:
        try:
            await self.click(
                "click Acknowledge warnings",
                ADMIN,
                ACTION_ACKNOWLEDGE,
                lambda s: any("acknowledged the" in m.text for m in self.thread()),
                within=10.0,
            )
        except TimeoutError:
            # The product's race: a click on the Submit message that arrives before the bot has
            # kept the message's ts is recorded, but the message is not edited. Go on if the
            # acknowledgement is stored (read through the product's own store).
            session = await self.world.store().get(self.session_id)
            if session is None or session.plan is None or session.plan.acknowledged is None:
                raise
            self.notes.append(
                "the warnings' acknowledgement was stored but the Submit message was never "
                "edited (the click came before the bot had kept the message's ts)"
            )
        await self.click(
            "click Submit",
            ADMIN,
            ACTION_SUBMIT,
            lambda s: (
                self.shows(Phase.PROTECTED)
                and any(m.text.startswith(ANNOUNCEMENT) for m in s.messages(NOTIFY))
            ),
        )

    async def look(self) -> None:
        """What people do besides: ``status`` and opening the App Home tab."""
        driver = self.world.driver
        calls = len(self.slack.calls)
        await self.interact(
            "command /provision-inline status",
            lambda: driver.slash_command(user_id=ADMIN, channel_id=CHANNEL, text="status"),
            lambda s: any(c.method == "response_url" for c in s.calls[calls:]),
        )
        calls = len(self.slack.calls)
        await self.interact(
            "App Home opened",
            lambda: driver.open_home(user_id=ADMIN),
            lambda s: any(c.method == "views.publish" for c in s.calls[calls:]),
        )

    async def whole(self, at_plan: Callable[[], Awaitable[None]] | None = None) -> None:
        await self.start()
        await self.role()
        await self.assign()
        await self.directory()
        await self.verify()
        if at_plan is not None:
            await at_plan()
        await self.submit()

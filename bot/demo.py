"""``provision-inline-bot demo``: the whole conversation against the sandbox, printed as it happens.

Nothing outside this process is needed but Redis: the demo serves the sandbox Slack and the
sandbox Microsoft cloud (a tenant that uses PIM) on loopback ports, builds the real bot on them
(the same ``build_runtime`` as production, served over HTTP and sent signed Slack requests), and
plays the people: an Exchange admin, an approver and the tenant's Global Administrator. Every
message the bot posts, edits or shows privately is printed as readable text, next to what the
people do.

Redis: ``REDIS_URL`` (default ``redis://localhost:6379/0``) when a server answers there (the demo
only adds its own keys, under fresh random ids, and deletes them at the end); otherwise a private
``redis-server`` in a temporary directory, if the binary is installed.
"""

from __future__ import annotations

import asyncio
import contextlib
import html
import json
import logging
import os
import re
import secrets
import sys
import time
import uuid
from collections.abc import AsyncIterator, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, TextIO

import httpx

from bot.app import Runtime, Wire, build_runtime
from bot.config import load_settings
from bot.sandbox.microsoft import (
    GLOBAL_ADMINISTRATOR,
    ManualClock,
    SandboxMicrosoft,
    SandboxTenant,
    SandboxUser,
    vendor_apps,
)
from bot.sandbox.redis_server import RedisServer
from bot.sandbox.server import SandboxTLS, free_port, serve_asgi
from bot.sandbox.slack import RecordedCall, SandboxSlack
from bot.sandbox.slack_driver import SlackDriver
from bot.session.views import phase_summary
from bot.steps.consent.views import ACTION_CONSENT_OPEN
from bot.steps.mailflow.views import ACTION_ACKNOWLEDGE, ACTION_SUBMIT, ANNOUNCEMENT
from bot.steps.role.views import ACTION_ACKNOWLEDGE as ACTION_ACKNOWLEDGE_ROLE
from bot.steps.role.views import ACTION_ASSIGN_SIGN_IN, ACTION_REQUEST_OPEN_PIM
from bot.steps.verify.views import ACTION_VERIFY
from bot.workflow import Phase
from state.connection import answers
from state.sessions import purge_sessions

__all__ = ["main", "run_demo"]

DEFAULT_REDIS_URL = "redis://localhost:6379/0"

ADMIN = "U0DEMOADA"
APPROVER = "U0DEMOAPRIL"
CHANNEL = "C0DEMOPROV"
NOTIFY = "C0DEMOSEC"
TENANT_DOMAIN = "northwind.example"
GLOBAL_ADMIN_UPN = f"grace@{TENANT_DOMAIN}"
ROLE_ADMIN_UPN = f"priya@{TENANT_DOMAIN}"
MAILFLOW_CLIENT_ID = "a1b2c3d4-0000-4000-8000-00000000f10e"
DIRSYNC_CLIENT_ID = "a1b2c3d4-0000-4000-8000-00000000d15c"
JUSTIFICATION = "Inline mail protection for Northwind (change CHG-2041)"

_EMOJI = {
    ":white_check_mark:": "✅",
    ":warning:": "⚠️",
    ":no_entry:": "⛔",
    ":x:": "❌",
    ":arrow_forward:": "▶",
    ":white_circle:": "○",
    ":heavy_minus_sign:": "–",
    ":hourglass_flowing_sand:": "⏳",
    ":shield:": "🛡",
    ":rocket:": "🚀",
    ":wave:": "👋",
    ":arrows_counterclockwise:": "🔄",
    ":leftwards_arrow_with_hook:": "↩",
}


class DemoError(Exception):
    """The demo cannot run here (no Redis); the message says what to do."""


# -- Redis ---------------------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def _redis(environ: Mapping[str, str], say: Any) -> AsyncIterator[str]:
    """A Redis URL to use: REDIS_URL if it answers, else a private redis-server."""
    url = environ.get("REDIS_URL") or DEFAULT_REDIS_URL
    if await answers(url):
        shown = re.sub(r"//[^@/]*@", "//***@", url)  # never print a password
        say(f"Redis: using {shown} (it answered; the demo adds only its own keys, removed at end)")
        yield url
        return
    try:
        server = RedisServer()
    except FileNotFoundError:
        raise DemoError(
            f"Nothing answers at {url} and redis-server is not installed. Install it "
            "(./scripts/setup does) or set REDIS_URL to a Redis server."
        ) from None
    try:
        await asyncio.to_thread(server.start)  # returns when redis-server reports it is ready
    except RuntimeError as error:
        raise DemoError(f"the private redis-server did not start: {error}") from error
    try:
        say(
            f"Redis: nothing answers at {url}; using a private redis-server on "
            f"127.0.0.1:{server.port} (stopped at the end)"
        )
        yield server.url
    finally:
        await asyncio.to_thread(server.close)


@contextlib.contextmanager
def _trusting(ca_file: str) -> Iterator[None]:
    """Trust the sandbox's private CA, the way an operator would (``SSL_CERT_FILE``)."""
    before = os.environ.get("SSL_CERT_FILE")
    os.environ["SSL_CERT_FILE"] = ca_file
    try:
        yield
    finally:
        if before is None:
            os.environ.pop("SSL_CERT_FILE", None)
        else:
            os.environ["SSL_CERT_FILE"] = before


# -- the transcript ------------------------------------------------------------------------------


@dataclass
class Transcript:
    """Prints what the bot did in Slack (from the sandbox's record) and what people did."""

    slack: SandboxSlack
    out: TextIO
    names: dict[str, str]
    seen: int = 0
    started: float = field(default_factory=time.monotonic)
    roots: set[str] = field(default_factory=set)

    def line(self, text: str = "") -> None:
        self.out.write(text + "\n")
        self.out.flush()

    def person(self, who: str, text: str) -> None:
        self.flush()
        self.line(f"\n👤 {who} {text}")

    def note(self, text: str) -> None:
        self.flush()
        self.line(f"   ({text})")

    def clean(self, text: str) -> str:
        def user(match: re.Match[str]) -> str:
            return "@" + self.names.get(match.group(1), match.group(1))

        text = re.sub(r"<@([UW][A-Z0-9]+)>", user, text)
        text = re.sub(r"<!subteam\^([A-Z0-9]+)>", lambda m: "@" + m.group(1), text)
        text = re.sub(r"<!date\^\d+\^[^|>]*\|([^>]*)>", r"\1", text)
        text = re.sub(
            r"<#([CG][A-Z0-9]+)(\|[^>]*)?>", lambda m: "#" + self.channel(m.group(1)), text
        )
        text = re.sub(r"<(https?://[^|>]+)\|([^>]+)>", r"\2 (\1)", text)
        text = re.sub(r"(?<![\w*])\*([^*\n]+)\*(?![\w*])", r"\1", text)
        text = re.sub(r"(?<![\w_])_([^_\n]+)_(?![\w_])", r"\1", text)
        for code, symbol in _EMOJI.items():
            text = text.replace(code, symbol)
        return html.unescape(text)

    def channel(self, channel_id: str) -> str:
        return self.slack.channel_name(channel_id) or channel_id

    def render(self, blocks: list[dict[str, Any]], fallback: str) -> list[str]:
        lines: list[str] = []
        for block in blocks:
            kind = block.get("type")
            if kind == "header":
                lines.append(f"━━ {self.clean(block['text']['text'])} ━━")
            elif kind == "section":
                if "text" in block:
                    lines += self.clean(block["text"]["text"]).splitlines()
                for item in block.get("fields", []):
                    lines.append(" ".join(self.clean(item["text"]).split()))
            elif kind == "context":
                lines += ["  " + self.clean(e.get("text", "")) for e in block.get("elements", [])]
            elif kind == "actions":
                buttons = []
                for element in block.get("elements", []):
                    label = element.get("text", {}).get("text", element.get("action_id", ""))
                    buttons.append(f"[{label}{' ↗' if element.get('url') else ''}]")
                lines.append("  ".join(buttons))
            elif kind == "divider":
                lines.append("─" * 20)
            elif kind == "rich_text":  # text shown exactly as typed (a justification)
                for part in block.get("elements", []):
                    typed = "".join(e.get("text", "") for e in part.get("elements", []))
                    lines += [f"    │ {line}" for line in typed.splitlines()]
        return lines or self.clean(fallback).splitlines()

    def _print_message(self, where: str, blocks: list[dict[str, Any]], text: str) -> None:
        body = self.render(blocks, text)
        self.line(f"\n{where}")
        for row in body:
            self.line(f"    {row}")

    def flush(self) -> None:
        """Print every Slack call recorded since the last flush."""
        calls = self.slack.calls
        while self.seen < len(calls):
            call = calls[self.seen]
            self.seen += 1
            if call.ok:
                self._print_call(call)

    def _print_call(self, call: RecordedCall) -> None:
        params = call.params
        stamp = f"[{time.monotonic() - self.started:5.1f}s]"
        if call.method == "chat.postMessage":
            channel = str(params.get("channel", ""))
            thread = params.get("thread_ts")
            if thread:
                where = f"{stamp}   ↳ thread in #{self.channel(channel)} · provision-inline (bot):"
            else:
                self.roots.add(str(call.response.get("ts", "")))
                where = f"{stamp} #{self.channel(channel)} · provision-inline (bot):"
            self._print_message(where, list(params.get("blocks") or []), str(params.get("text")))
        elif call.method == "chat.update":
            text = self.clean(str(params.get("text", ""))).replace("\n", " ")
            if str(params.get("ts")) in self.roots:
                self.line(f"{stamp}   ✎ channel checklist updated: {text[:150]}")
            else:
                self.line(f"{stamp}   ✎ thread message edited: {text[:150]}")
        elif call.method in ("response_url", "chat.postEphemeral"):
            user = self.names.get(str(params.get("user", "")), "")
            whom = f" to @{user}" if user else ""
            self._print_message(
                f"{stamp}   (only visible{whom}) provision-inline:",
                list(params.get("blocks") or []),
                str(params.get("text", "")),
            )
        elif call.method in ("views.open", "views.update"):
            view = params.get("view") or {}
            if isinstance(view, str):
                return
            title = view.get("title", {}).get("text", "")
            self._print_message(
                f"{stamp}   (a form opens: “{title}”)", list(view.get("blocks") or []), ""
            )


# -- the people ----------------------------------------------------------------------------------


def _tenant() -> SandboxTenant:
    tenant_id = str(uuid.uuid4())  # fresh each run: never clashes with anything in Redis
    return SandboxTenant(
        tenant_id=tenant_id,
        display_name="Northwind Traders",
        initial_domain="northwind.onmicrosoft.com",
        domains=[TENANT_DOMAIN],
        users=[
            SandboxUser(GLOBAL_ADMIN_UPN, "Grace Global", roles={GLOBAL_ADMINISTRATOR}),
            SandboxUser(ROLE_ADMIN_UPN, "Priya Privileged", roles={GLOBAL_ADMINISTRATOR}),
        ],
        pim_enabled=True,
        replication_delay=300.0,  # the role takes five (simulated) minutes to reach Exchange
    )


@dataclass
class Demo:
    runtime: Runtime
    slack: SandboxSlack
    microsoft: SandboxMicrosoft
    driver: SlackDriver
    transcript: Transcript
    tenant: SandboxTenant
    session_ids: list[str] = field(default_factory=list)

    def thread(self, root_ts: str) -> list[Any]:
        return [m for m in self.slack.messages(CHANNEL, thread_ts=root_ts) if m.ts != root_ts]

    def button(self, root_ts: str, action_id: str) -> tuple[str, dict[str, Any]]:
        for message in reversed(self.thread(root_ts)):
            for block in message.blocks:
                for element in block.get("elements", []):
                    if element.get("action_id") == action_id:
                        return message.ts, element
        raise LookupError(action_id)

    async def wait_button(self, root_ts: str, action_id: str) -> str:
        def found(_: SandboxSlack) -> str | None:
            try:
                return self.button(root_ts, action_id)[0]
            except LookupError:
                return None

        ts: str = await self.slack.wait_for(found, timeout=20)
        return ts

    async def click(
        self, user: str, root_ts: str, action_id: str, label: str, confirm: str = ""
    ) -> None:
        ts = await self.wait_button(root_ts, action_id)
        self.transcript.person(self.transcript.names[user], f"clicks [{label}]")
        if confirm:
            self.transcript.note(confirm)
        await self.driver.click(
            user_id=user, channel_id=CHANNEL, message_ts=ts, action_id=action_id
        )

    async def consent(self, root_ts: str, app: str, what: str) -> None:
        """Grace opens the consent link of ``app`` (its step's message), signs in and accepts."""
        await self.slack.wait_for(
            lambda s: any(f'"consent_{app}"' in json.dumps(m.blocks) for m in self.thread(root_ts))
        )
        _, button = self.button(root_ts, ACTION_CONSENT_OPEN)
        self.transcript.person(
            "Grace (Global Administrator of Northwind)",
            f"clicks [{button['text']['text']}], signs in at Microsoft and accepts {what}",
        )
        self.microsoft.sign_in(GLOBAL_ADMIN_UPN, auto="accept")
        async with httpx.AsyncClient(follow_redirects=True, timeout=10) as browser:
            page = await browser.get(str(button["url"]))
        title = re.search(r"<h1>(.*?)</h1>", page.text, re.S)
        self.transcript.note(
            f"Grace's browser comes back to the bot and shows: "
            f"“{html.unescape(title.group(1)).strip() if title else page.status_code}”"
        )

    async def role_step(self, root_ts: str) -> None:
        """Step 2 as people do it: ada requests the role in the form, april acknowledges, and
        Priya (who may assign roles) signs in through "Assign for me"."""
        names = self.transcript.names
        await self.click(ADMIN, root_ts, ACTION_REQUEST_OPEN_PIM, "Request the role (PIM)")
        [view] = await self.slack.wait_for(
            lambda s: [v for v in s.open_views(ADMIN) if v.callback_id == "role_request"] or None
        )
        self.transcript.person(
            names[ADMIN], f"types the justification “{JUSTIFICATION}” and presses [Request]"
        )
        await self.driver.submit_view(
            user_id=ADMIN, view_id=view.id, values={"justification_input": JUSTIFICATION}
        )
        await self.click(APPROVER, root_ts, ACTION_ACKNOWLEDGE_ROLE, "Acknowledge")
        ts, button = await self.slack.wait_for(lambda s: self._find(root_ts, ACTION_ASSIGN_SIGN_IN))
        self.transcript.person(
            names[ADMIN],
            "clicks [Assign for me] and hands the sign-in to Priya (Global Administrator of "
            "Northwind), who signs in at Microsoft and consents",
        )
        await self.driver.click(
            user_id=ADMIN, channel_id=CHANNEL, message_ts=ts, action_id=ACTION_ASSIGN_SIGN_IN
        )
        self.microsoft.sign_in(ROLE_ADMIN_UPN, auto="accept")
        async with httpx.AsyncClient(timeout=10) as browser:
            answer = await browser.get(str(button["url"]))
            # Microsoft answers with a page that posts the sign-in back (response_mode=form_post).
            action = re.search(r"action='([^']+)'", answer.text)
            fields = dict(re.findall(r"name='([^']+)' value='([^']*)'", answer.text))
            if action is None:
                raise DemoError("Microsoft's sign-in page did not post back")
            page = await browser.post(
                html.unescape(action.group(1)),
                data={html.unescape(k): html.unescape(v) for k, v in fields.items()},
            )
        title = re.search(r"<h1>(.*?)</h1>", page.text, re.S)
        self.transcript.note(
            "Priya's browser comes back to the bot and shows: "
            f"“{html.unescape(title.group(1)).strip() if title else page.status_code}”"
        )

    def _find(self, root_ts: str, action_id: str) -> tuple[str, dict[str, Any]] | None:
        try:
            return self.button(root_ts, action_id)
        except LookupError:
            return None

    async def wait_phase(self, root_ts: str, *phases: Phase) -> Phase:
        """Wait until the root checklist shows one of ``phases`` (it is updated on every move)."""

        def shown(slack: SandboxSlack) -> Phase | None:
            text = slack.message(CHANNEL, root_ts).text
            return next((p for p in phases if phase_summary(p) in text), None)

        found: Phase = await self.slack.wait_for(shown, timeout=30)
        return found


async def _conversation(demo: Demo) -> None:
    transcript = demo.transcript
    names = transcript.names
    driver = demo.driver
    transcript.person(names[ADMIN], "types /provision-inline in #mail-provisioning")
    await driver.slash_command(user_id=ADMIN, channel_id=CHANNEL)
    views = await demo.slack.wait_for(lambda s: s.open_views(ADMIN)[-1:] or None)
    transcript.person(names[ADMIN], f"enters the tenant “{TENANT_DOMAIN}” and presses [Start]")
    await driver.submit_view(
        user_id=ADMIN, view_id=views[0].id, values={"tenant_input": TENANT_DOMAIN}
    )
    roots = await demo.slack.wait_for(
        lambda s: [m for m in s.messages(CHANNEL) if TENANT_DOMAIN in m.text] or None
    )
    root_ts = str(roots[-1].ts)
    await demo.wait_button(root_ts, ACTION_CONSENT_OPEN)  # posted once the session knows its root
    [session] = [s for s in await demo.runtime.store.active() if s.root_ts == root_ts]
    demo.session_ids.append(session.id)

    await demo.consent(root_ts, "mailflow", "that the service may configure Exchange mail flow")
    await demo.wait_phase(root_ts, Phase.MAILFLOW_CONSENTED)
    await demo.role_step(root_ts)
    await demo.consent(root_ts, "dirsync", "that the service may read users and domains")
    await demo.wait_phase(root_ts, Phase.DIRECTORY_CONSENTED)

    await demo.click(ADMIN, root_ts, ACTION_VERIFY, "Verify")
    await demo.wait_phase(root_ts, Phase.PLAN_SHOWN)
    await demo.wait_button(root_ts, ACTION_SUBMIT)
    await demo.click(ADMIN, root_ts, ACTION_ACKNOWLEDGE, "Acknowledge warnings")
    await demo.slack.wait_for(
        lambda s: any("acknowledged the" in m.text for m in demo.thread(root_ts))
    )
    await demo.click(
        ADMIN, root_ts, ACTION_SUBMIT, "Submit", "Slack asks “Apply the change plan?”; ada confirms"
    )
    phase = await demo.wait_phase(root_ts, Phase.PROTECTED, Phase.FAILED)
    await demo.slack.wait_for(
        lambda s: (
            any(m.text.startswith(ANNOUNCEMENT) for m in s.messages(NOTIFY))
            or phase is Phase.FAILED
        )
    )
    transcript.flush()
    if phase is not Phase.PROTECTED:
        raise DemoError("the demo did not finish: see the thread above")
    objects = sum(
        1
        for store in demo.tenant.exchange.objects.values()
        for obj in store.values()
        if str(obj.get("Name", "")).startswith("TMCAS Inline")
    )
    transcript.line(
        f"\nDone in {time.monotonic() - transcript.started:.1f}s: Northwind's Exchange Online now "
        f"holds {objects} objects named “TMCAS Inline …”, and the service's addresses are on the "
        "IP Allow List."
    )


async def _cleanup(redis_url: str, tenant_id: str, session_ids: list[str]) -> None:
    await purge_sessions(redis_url, session_ids, [tenant_id])


async def run_demo(out: TextIO, environ: Mapping[str, str], wire: Wire) -> None:
    """Play the conversation, printing it to ``out``. Raises ``DemoError`` if it cannot run."""

    def say(text: str) -> None:
        out.write(text + "\n")
        out.flush()

    say("provision-inline demo: the whole conversation against the built-in sandbox.")
    say(
        "People: ada (Exchange admin, may start and submit), april (approver), Grace (Global "
        "Administrator of the Microsoft 365 tenant Northwind, which uses PIM)."
    )
    tls = SandboxTLS.create()
    slack = SandboxSlack()
    names = {ADMIN: "ada", APPROVER: "april"}
    for user_id, name in names.items():
        slack.add_user(user_id, name)
    slack.add_channel(CHANNEL, "mail-provisioning")
    slack.add_channel(NOTIFY, "security-notices")
    names[slack.bot_user_id] = "provision-inline"
    clock = ManualClock(now=time.time())
    tenant = _tenant()
    # Northwind already sends some mail through an archiving service: a warning to acknowledge.
    tenant.exchange.objects["OutboundConnector"] = {
        "archive connector": {
            "Identity": "Archive Connector",
            "Name": "Archive Connector",
            "Guid": str(uuid.uuid4()),
            "Enabled": True,
            "ConnectorType": "Partner",
            "IsTransportRuleScoped": True,
            "SmartHosts": ["archive.example.org"],
        }
    }
    mailflow_secret, dirsync_secret = secrets.token_urlsafe(24), secrets.token_urlsafe(24)
    apps = vendor_apps(MAILFLOW_CLIENT_ID, mailflow_secret, DIRSYNC_CLIENT_ID, dirsync_secret)
    microsoft = SandboxMicrosoft([tenant], apps, clock=clock)

    async def sleep(seconds: float) -> None:
        clock.advance(seconds)  # the bot's waiting happens in the sandbox's time, not ours
        await asyncio.sleep(0)

    signing_secret = secrets.token_hex(16)
    port = free_port()
    session_ids: list[str] = []
    with _trusting(str(tls.ca_file)):
        async with contextlib.AsyncExitStack() as stack:
            redis_url = await stack.enter_async_context(_redis(environ, say))
            slack_server = await stack.enter_async_context(serve_asgi(slack.app))
            ms_server = await stack.enter_async_context(serve_asgi(microsoft.app, tls=tls))
            environment = {
                "SLACK_BOT_TOKEN": slack.bot_token,
                "SLACK_SIGNING_SECRET": signing_secret,
                "SLACK_API_URL": f"{slack_server.base_url}/api/",
                "REDIS_URL": redis_url,
                "PUBLIC_URL": f"http://127.0.0.1:{port}",
                "PROVISION_ADMINS": ADMIN,
                "PROVISION_APPROVERS": APPROVER,
                "NOTIFY_CHANNEL": NOTIFY,
                "MAILFLOW_CLIENT_ID": MAILFLOW_CLIENT_ID,
                "MAILFLOW_CLIENT_SECRET": mailflow_secret,
                "DIRSYNC_CLIENT_ID": DIRSYNC_CLIENT_ID,
                "DIRSYNC_CLIENT_SECRET": dirsync_secret,
                "MICROSOFT_LOGIN_URL": f"{ms_server.base_url}/login",
                "MICROSOFT_GRAPH_URL": f"{ms_server.base_url}/graph",
                "MICROSOFT_EXCHANGE_URL": f"{ms_server.base_url}/exchange",
                "INLINE_INBOUND_SMART_HOST": "inbound.relay.example.net",
                "INLINE_OUTBOUND_SMART_HOST": "outbound.relay.example.net",
                "INLINE_IP_RANGES": "203.0.113.0/24,198.51.100.7",
                "INLINE_TLS_CERTIFICATE_NAME": "relay.example.net",
                "INLINE_SCANNED_HEADER": "X-Inline-Scanned",
            }
            runtime = build_runtime(
                load_settings(environment),
                wire=wire,
                sweep_interval_seconds=None,
                # Its REDIS_URL may be a real deployment's: never resume anyone else's jobs.
                orphan_check_seconds=None,
                sleep=sleep,
                monotonic=clock,
            )
            stack.push_async_callback(_cleanup, redis_url, tenant.tenant_id, session_ids)
            stack.push_async_callback(runtime.aclose)
            bot_server = await stack.enter_async_context(serve_asgi(runtime.web, port=port))
            http = await stack.enter_async_context(httpx.AsyncClient(timeout=10))
            driver = SlackDriver(
                sandbox=slack,
                sandbox_base_url=slack_server.base_url,
                events_url=f"{bot_server.base_url}/slack/events",
                signing_secret=signing_secret,
                http=http,
            )
            transcript = Transcript(slack, out, names)
            demo = Demo(runtime, slack, microsoft, driver, transcript, tenant, session_ids)
            say("Slack, Microsoft and the bot are running on 127.0.0.1. The conversation:")
            try:
                await _conversation(demo)
            finally:
                transcript.flush()


def main(*, wire: Wire, environ: Mapping[str, str] | None = None, out: TextIO | None = None) -> int:
    """The ``demo`` sub-command: 0 when the conversation ended with the notification."""
    logging.basicConfig(level=logging.CRITICAL)
    stream = out or sys.stdout
    try:
        asyncio.run(run_demo(stream, os.environ if environ is None else environ, wire))
    except DemoError as error:
        print(f"demo: {error}", file=sys.stderr)
        return 1
    return 0

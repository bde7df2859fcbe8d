"""Ephemeral replies (through ``respond`` or a ``response_url``: they work even where the bot is not
a member), and what the session buttons share."""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import aiohttp
from slack_bolt.context.respond.async_respond import AsyncRespond
from slack_bolt.context.respond.internals import _build_message
from slack_sdk.models.attachments import Attachment
from slack_sdk.models.blocks import Block
from slack_sdk.webhook.async_client import AsyncWebhookClient
from slack_sdk.webhook.webhook_response import WebhookResponse

from bot.blocks import Message
from bot.session.views import notice, refused_transition_message
from bot.workflow import Phase, Session, TransitionNotAllowed
from state.sessions import SessionGone

logger = logging.getLogger(__name__)

SESSION_GONE = notice(
    "This session no longer exists (it ended long ago and its record expired). "
    "Start a new one with `/provision-inline`."
)

# What a job had been doing when its process died, and does again now that a click took it over.
_RESUMED_WORK = {
    Phase.VERIFYING: "Verification had stopped (the process running it went away). It has started"
    " again now; its progress shows in the thread.",
    Phase.APPLYING: "Configuring Exchange Online had stopped (the process running it went away)."
    " It has started again now: it reads the tenant again and makes only the changes still"
    " missing, never one twice.",
}


def job_resumed_message(session: Session) -> Message:
    """The answer to a click that took over a job whose process died."""
    started_again = _RESUMED_WORK.get(
        session.phase, "The work in progress had stopped; it has started again now."
    )
    return notice(f"{started_again} Nothing else was changed.")


async def say(
    respond: AsyncRespond, message: Message | None, *, replace_original: bool | None = False
) -> None:
    """Tell the one user who acted (ephemeral); nothing when ``message`` is None."""
    if message is None:
        return
    await respond(
        text=message.text,
        blocks=message.blocks,
        response_type="ephemeral",
        replace_original=replace_original,
    )


async def answer_for_session(
    body: dict[str, Any],
    respond: AsyncRespond,
    work: Callable[[str, str], Awaitable[Message | None]],
    *,
    take_over: Callable[[Session], Awaitable[bool]],
) -> None:
    """Run ``work(session_id, user_id)`` for a button whose value is the session id, and tell the
    user its answer, or why nothing happened (somebody was quicker, the session is gone).

    A click the session's phase refuses while its job's process is gone (``take_over``: the
    lease lapsed) takes the job over here and now, rather than answering "already done" and
    leaving the job to the next orphan check."""
    user_id = body["user"]["id"]
    session_id = session_of(body)
    if session_id is None:
        raise ValueError("a session button without a session id")
    try:
        answer = await work(session_id, user_id)
    except TransitionNotAllowed as refused:
        if await take_over(refused.session):
            answer = job_resumed_message(refused.session)
        else:
            answer = refused_transition_message(refused)
    except SessionGone:
        answer = SESSION_GONE
    await say(respond, answer)


def session_of(body: dict[str, Any]) -> str | None:
    """The session a request is about: a button's value (``<session id>`` or
    ``<session id>:<detail>``) or a modal's ``private_metadata`` (``{"session": ...}``); None
    for a slash command or a form that starts one."""
    actions = body.get("actions") or []
    if actions:
        value = actions[0].get("value")
        return (value.partition(":")[0] or None) if isinstance(value, str) else None
    metadata = (body.get("view") or {}).get("private_metadata")
    if metadata:
        try:
            found = json.loads(metadata).get("session")
        except (ValueError, AttributeError):
            return None
        return found if isinstance(found, str) and found else None
    return None


SLACK_RESPONSE_HOST = "hooks.slack.com"

Origin = tuple[str, str, int]


def _origin(url: str) -> Origin | None:
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return None
    if parts.scheme not in ("http", "https") or not parts.hostname or parts.username:
        return None
    default = 443 if parts.scheme == "https" else 80
    return parts.scheme, parts.hostname.lower(), port or default


@dataclass(frozen=True)
class ReplyOrigins:
    """Where replies may go: Slack's response URLs (``https://hooks.slack.com``) and the origin
    of ``SLACK_API_URL`` (Slack's own by default; the sandbox's in the demo and the tests)."""

    origins: frozenset[Origin]
    _prefixes: tuple[str, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        # Each origin as the start of a URL (``https://hooks.slack.com/``): a URL that starts
        # so is that origin's without parsing it, which every request's check would cost.
        prefixes = tuple(
            f"{scheme}://{host}{'' if port == (443 if scheme == 'https' else 80) else f':{port}'}/"
            for scheme, host, port in self.origins
        )
        object.__setattr__(self, "_prefixes", prefixes)

    @classmethod
    def for_api(cls, slack_api_url: str) -> ReplyOrigins:
        allowed = {("https", SLACK_RESPONSE_HOST, 443)}
        api = _origin(slack_api_url)
        if api is not None:
            allowed.add(api)
        return cls(frozenset(allowed))

    def allows(self, url: str) -> bool:
        return url.startswith(self._prefixes) or _origin(url) in self.origins

    @staticmethod
    def describe(url: str) -> str:
        """The URL's origin for a log line (never its path: a response URL is a credential)."""
        found = _origin(url)
        return f"{found[0]}://{found[1]}:{found[2]}" if found else "an unusable URL"


def carried_response_urls(body: dict[str, Any]) -> Iterable[str]:
    """Every response URL a request carries: its own, a view submission's ``response_urls``,
    and the one a modal carried over from its command in ``private_metadata``."""
    own = body.get("response_url")
    if own is not None:
        yield str(own)
    for entry in body.get("response_urls") or []:
        if isinstance(entry, dict) and entry.get("response_url") is not None:
            yield str(entry["response_url"])
    metadata = (body.get("view") or {}).get("private_metadata")
    if isinstance(metadata, str) and metadata:
        try:
            carried = json.loads(metadata)
        except ValueError:
            return
        if isinstance(carried, dict) and carried.get("response_url") is not None:
            yield str(carried["response_url"])


def response_url_of(body: dict[str, Any]) -> str | None:
    """The request's own response_url, or the one a modal carried over from its command."""
    url = body.get("response_url")
    if isinstance(url, str) and url:
        return url
    metadata = (body.get("view") or {}).get("private_metadata")
    if metadata:
        try:
            carried = json.loads(metadata).get("response_url")
        except (ValueError, AttributeError):
            return None
        return carried if isinstance(carried, str) and carried else None
    return None


class ForeignResponseUrl(ValueError):
    """A reply was about to go somewhere that is not one of Slack's response URLs."""


class Replies:
    """Posts to Slack's response URLs over the process's pooled aiohttp session (``pool()``: the
    Slack Web client's, opened by the web app's lifespan), so a reply reuses a kept-alive
    connection instead of opening one; without a pool, slack_sdk opens one per reply.

    Response URLs come from requests, so they are untrusted: the middleware refuses a request
    carrying a foreign one, and this refuses to post to one whatever the caller.
    """

    def __init__(
        self, origins: ReplyOrigins, pool: Callable[[], aiohttp.ClientSession | None]
    ) -> None:
        self.origins = origins
        self._pool = pool

    async def post(self, url: str, message: dict[str, Any]) -> WebhookResponse:
        """POST ``message`` to the response URL ``url``; ``ForeignResponseUrl`` if it is not
        Slack's."""
        if not self.origins.allows(url):
            raise ForeignResponseUrl(f"not a Slack response URL: {ReplyOrigins.describe(url)}")
        return await AsyncWebhookClient(url, session=self._pool()).send_dict(message)

    async def ephemeral(self, response_url: str | None, message: Message) -> bool:
        """Send ``message`` to the one user who acted; False if Slack would not take it (or
        the URL is missing or not Slack's)."""
        if not response_url:
            return False
        try:
            answer = await self.post(
                response_url,
                _build_message(
                    text=message.text,
                    blocks=message.blocks,
                    response_type="ephemeral",
                    replace_original=False,
                ),
            )
        except ForeignResponseUrl:
            logger.warning(
                "refused to reply to %s: not a Slack response URL",
                ReplyOrigins.describe(response_url),
            )
            return False
        if answer.status_code != 200:
            logger.warning("response_url refused the reply: HTTP %s", answer.status_code)
            return False
        return True


class PooledRespond(AsyncRespond):
    """Bolt's ``respond`` (same arguments, same message), sent through ``Replies``: Bolt's own
    builds a webhook client and an aiohttp session, a new connection, for every reply."""

    def __init__(self, *, response_url: str | None, replies: Replies) -> None:
        super().__init__(response_url=response_url)
        self._replies = replies

    async def __call__(
        self,
        text: str | dict[str, Any] = "",
        blocks: Sequence[dict[str, Any] | Block] | None = None,
        attachments: Sequence[dict[str, Any] | Attachment] | None = None,
        response_type: str | None = None,
        replace_original: bool | None = None,
        delete_original: bool | None = None,
        unfurl_links: bool | None = None,
        unfurl_media: bool | None = None,
        thread_ts: str | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> WebhookResponse:
        if self.response_url is None:
            raise ValueError("respond is unsupported here as there is no response_url")
        if isinstance(text, dict):
            message = _build_message(**text)
        else:
            message = _build_message(
                text=text,
                blocks=blocks,
                attachments=attachments,
                response_type=response_type,
                replace_original=replace_original,
                delete_original=delete_original,
                unfurl_links=unfurl_links,
                unfurl_media=unfurl_media,
                thread_ts=thread_ts,
                metadata=metadata,
            )
        return await self._replies.post(self.response_url, message)

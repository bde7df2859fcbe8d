"""The human side of a Slack conversation, for tests and the demo.

``SlackDriver`` sends the bot what Slack sends it when a person types a slash command, clicks a
button, submits a modal or opens the app's Home tab: the same payload shapes and encodings, signed
with the signing secret (v0 scheme), over real HTTP. It reads the state it needs (the message that
holds a button, the open modal) from a ``SandboxSlack``, issues trigger ids and response URLs there,
and, like Slack's client, applies a modal submission's ``response_action`` to the sandbox's views.

Two transports, as a Slack app has: ``http`` (the default) POSTs signed requests to ``events_url``;
``socket_mode`` hands the same payloads to the sandbox's Socket Mode server
(``SandboxSlack.deliver``), which sends them as envelopes to the connected app and waits for its
ack. Either way the high-level methods return an ``httpx.Response`` whose status and body are the
ack: in Socket Mode a ``SocketAckResponse`` (200 with the ack's payload as JSON, or 504 when the
app did not ack in time).
"""

from __future__ import annotations

import hashlib
import hmac
import itertools
import json
import secrets
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, Literal
from urllib.parse import urlencode

import httpx

from bot.sandbox.slack import (
    SOCKET_MODE_ACK_TIMEOUT,
    SandboxSlack,
    SocketAck,
    View,
    validate_view,
    with_generated_ids,
)

__all__ = [
    "SignedRequest",
    "SlackDriver",
    "SlackDriverError",
    "SocketAckResponse",
    "Transport",
]

Transport = Literal["http", "socket_mode"]


class SlackDriverError(AssertionError):
    """What a person could not do in Slack (no such button, required field left empty, ...)."""


@dataclass(frozen=True)
class SignedRequest:
    """One request as built for the bot; ``body`` is byte-for-byte what was (or will be) sent."""

    kind: str
    url: str
    body: bytes
    content_type: str
    payload: dict[str, Any]


class SocketAckResponse(httpx.Response):
    """A Socket Mode ack in the shape of the HTTP answer it stands for: status 200 and the ack's
    payload as a JSON body (empty without one) when the app acked in time; 504 and an empty body
    when it did not (``ack.error``: ``operation_timeout`` or ``dispatch_failed``)."""

    def __init__(self, ack: SocketAck) -> None:
        if ack.acked and ack.payload is not None:
            super().__init__(200, json=ack.payload)
        else:
            super().__init__(200 if ack.acked else 504)
        self.ack = ack


_SINGLE_PICK = {
    "static_select": "selected_option",
    "external_select": "selected_option",
    "radio_buttons": "selected_option",
    "overflow": "selected_option",
    "users_select": "selected_user",
    "conversations_select": "selected_conversation",
    "channels_select": "selected_channel",
    "datepicker": "selected_date",
    "timepicker": "selected_time",
    "datetimepicker": "selected_date_time",
}
_MULTI_PICK = {
    "multi_static_select": "selected_options",
    "multi_external_select": "selected_options",
    "checkboxes": "selected_options",
    "multi_users_select": "selected_users",
    "multi_conversations_select": "selected_conversations",
    "multi_channels_select": "selected_channels",
}
_TEXT_INPUTS = frozenset(
    {"plain_text_input", "email_text_input", "url_text_input", "number_input", "rich_text_input"}
)
_OPTION_ELEMENTS = frozenset(
    {"static_select", "radio_buttons", "overflow", "multi_static_select", "checkboxes"}
)
_INITIAL_SINGLE = {
    "static_select": "initial_option",
    "radio_buttons": "initial_option",
    "users_select": "initial_user",
    "conversations_select": "initial_conversation",
    "channels_select": "initial_channel",
    "datepicker": "initial_date",
    "timepicker": "initial_time",
    "datetimepicker": "initial_date_time",
}
_INITIAL_MULTI = {
    "multi_static_select": "initial_options",
    "checkboxes": "initial_options",
    "multi_users_select": "initial_users",
    "multi_conversations_select": "initial_conversations",
    "multi_channels_select": "initial_channels",
}


class SlackDriver:
    """Plays the people in the workspace against the bot: over HTTP (``transport="http"``) or
    through the sandbox's Socket Mode server (``transport="socket_mode"``; may be switched at any
    time by assigning ``transport``)."""

    def __init__(
        self,
        *,
        sandbox: SandboxSlack,
        sandbox_base_url: str,
        events_url: str,
        signing_secret: str,
        http: httpx.AsyncClient,
        verification_token: str = "sandbox-verification-token",
        clock: Callable[[], float] = time.time,
        transport: Transport = "http",
        ack_timeout: float = SOCKET_MODE_ACK_TIMEOUT,
    ) -> None:
        self.sandbox = sandbox
        self.sandbox_base_url = sandbox_base_url.rstrip("/")
        self.events_url = events_url
        self.signing_secret = signing_secret
        self.http = http
        self.verification_token = verification_token
        self.clock = clock
        self.transport: Transport = transport
        self.ack_timeout = ack_timeout
        self.last_request: SignedRequest | None = None
        self.last_response: httpx.Response | None = None
        self._event_ids = itertools.count(1)

    # ---- signing and sending ---------------------------------------------------------------

    def sign(self, body: bytes, timestamp: int) -> str:
        """``v0=`` + hex HMAC-SHA256 of ``v0:{timestamp}:{body}`` with the signing secret."""
        base = b"v0:" + str(timestamp).encode() + b":" + body
        digest = hmac.new(self.signing_secret.encode(), base, hashlib.sha256).hexdigest()
        return f"v0={digest}"

    async def send(
        self,
        request: SignedRequest,
        *,
        retry_num: int | None = None,
        retry_reason: str = "http_timeout",
        signature_override: str | None = None,
        timestamp: int | None = None,
    ) -> httpx.Response:
        """Send ``request`` signed now (or at ``timestamp``); retries carry X-Slack-Retry-*.

        In Socket Mode the payload goes out as an envelope instead (a retry as ``retry_attempt``
        and ``retry_reason``); there is nothing to sign, so a signature or timestamp is refused.
        """
        if self.transport == "socket_mode":
            if signature_override is not None or timestamp is not None:
                raise SlackDriverError("Socket Mode envelopes are not signed")
            return await self.deliver(request, retry_num=retry_num, retry_reason=retry_reason)
        stamp = int(self.clock()) if timestamp is None else timestamp
        headers = {
            "Content-Type": request.content_type,
            "X-Slack-Request-Timestamp": str(stamp),
            "X-Slack-Signature": signature_override or self.sign(request.body, stamp),
            "User-Agent": "Slackbot 1.0 (+https://api.slack.com/robots)",
        }
        if retry_num is not None:
            headers["X-Slack-Retry-Num"] = str(retry_num)
            headers["X-Slack-Retry-Reason"] = retry_reason
        self.last_request = request
        response = await self.http.post(request.url, content=request.body, headers=headers)
        self.last_response = response
        return response

    @staticmethod
    def envelope_type(request: SignedRequest) -> str:
        """The Socket Mode envelope type that carries ``request``'s payload."""
        if request.kind == "slash_command":
            return "slash_commands"
        if request.kind == "event_callback":
            return "events_api"
        if request.kind == "url_verification":
            raise SlackDriverError("Slack sends no url_verification over Socket Mode")
        return "interactive"

    async def deliver(
        self,
        request: SignedRequest,
        *,
        retry_num: int | None = None,
        retry_reason: str = "timeout",
    ) -> SocketAckResponse:
        """Deliver ``request``'s payload through the sandbox's Socket Mode server; the ack."""
        envelope_type = self.envelope_type(request)
        self.last_request = request
        ack = await self.sandbox.deliver(
            envelope_type,
            request.payload,
            retry_attempt=retry_num or 0,
            retry_reason=retry_reason if retry_num else "",
            timeout=self.ack_timeout,
        )
        response = SocketAckResponse(ack)
        self.last_response = response
        return response

    async def resend(
        self, request: SignedRequest, *, retry_num: int = 1, retry_reason: str = "http_timeout"
    ) -> httpx.Response:
        """Send the identical body again, as Slack's retry does."""
        return await self.send(request, retry_num=retry_num, retry_reason=retry_reason)

    def _form_request(self, kind: str, fields: Mapping[str, str]) -> SignedRequest:
        body = urlencode(fields).encode()
        return SignedRequest(
            kind=kind,
            url=self.events_url,
            body=body,
            content_type="application/x-www-form-urlencoded",
            payload=dict(fields),
        )

    def _interaction_request(self, payload: dict[str, Any]) -> SignedRequest:
        body = urlencode({"payload": json.dumps(payload, separators=(",", ":"))}).encode()
        return SignedRequest(
            kind=str(payload["type"]),
            url=self.events_url,
            body=body,
            content_type="application/x-www-form-urlencoded",
            payload=payload,
        )

    def _json_request(self, payload: dict[str, Any]) -> SignedRequest:
        return SignedRequest(
            kind=str(payload["type"]),
            url=self.events_url,
            body=json.dumps(payload, separators=(",", ":")).encode(),
            content_type="application/json",
            payload=payload,
        )

    # ---- common payload pieces -------------------------------------------------------------

    def _user(self, user_id: str) -> dict[str, Any]:
        user = self.sandbox.users.get(user_id)
        name = user["name"] if user else user_id.lower()
        return {"id": user_id, "username": name, "name": name, "team_id": self.sandbox.team_id}

    def _team(self) -> dict[str, Any]:
        return {"id": self.sandbox.team_id, "domain": self.sandbox.team_domain}

    def _channel_name(self, channel_id: str) -> str:
        return self.sandbox.channel_name(channel_id) or channel_id.lower()

    def _base_interaction(self, kind: str, user_id: str) -> dict[str, Any]:
        return {
            "type": kind,
            "user": self._user(user_id),
            "api_app_id": self.sandbox.app_id,
            "token": self.verification_token,
            "trigger_id": self.sandbox.issue_trigger_id(user_id=user_id),
            "team": self._team(),
            "enterprise": None,
            "is_enterprise_install": False,
        }

    def _action_ts(self) -> str:
        return f"{self.clock():.6f}"

    # ---- slash commands --------------------------------------------------------------------

    def build_slash_command(
        self,
        *,
        user_id: str,
        channel_id: str,
        text: str = "",
        command: str = "/provision-inline",
    ) -> SignedRequest:
        fields = {
            "token": self.verification_token,
            "team_id": self.sandbox.team_id,
            "team_domain": self.sandbox.team_domain,
            "channel_id": channel_id,
            "channel_name": self._channel_name(channel_id),
            "user_id": user_id,
            "user_name": self._user(user_id)["name"],
            "command": command,
            "text": text,
            "api_app_id": self.sandbox.app_id,
            "is_enterprise_install": "false",
            "response_url": self.sandbox.new_response_url(
                self.sandbox_base_url, channel_id=channel_id, user_id=user_id
            ),
            "trigger_id": self.sandbox.issue_trigger_id(user_id=user_id),
        }
        return self._form_request("slash_command", fields)

    async def slash_command(
        self,
        *,
        user_id: str,
        channel_id: str,
        text: str = "",
        command: str = "/provision-inline",
        retry_num: int | None = None,
        body_override: bytes | None = None,
        signature_override: str | None = None,
    ) -> httpx.Response:
        request = self.build_slash_command(
            user_id=user_id, channel_id=channel_id, text=text, command=command
        )
        if body_override is not None:
            if self.transport == "socket_mode":
                raise SlackDriverError("Socket Mode delivers the payload, not a request body")
            request = replace(request, body=body_override)
        return await self.send(request, retry_num=retry_num, signature_override=signature_override)

    # ---- block actions ---------------------------------------------------------------------

    @staticmethod
    def _find_element(
        blocks: Sequence[Mapping[str, Any]], action_id: str, where: str
    ) -> tuple[str, dict[str, Any]]:
        available: list[str] = []
        for block in blocks:
            candidates: list[Any] = []
            if block.get("type") == "actions":
                candidates = list(block.get("elements", []))
            elif block.get("type") == "section" and "accessory" in block:
                candidates = [block["accessory"]]
            elif block.get("type") == "input" and "element" in block:
                candidates = [block["element"]]
            for element in candidates:
                if not isinstance(element, dict) or "action_id" not in element:
                    continue
                if element["action_id"] == action_id:
                    return str(block.get("block_id", "")), element
                available.append(str(element["action_id"]))
        raise SlackDriverError(
            f"no element with action_id {action_id!r} in {where}; "
            f"action_ids there: {available or 'none'}"
        )

    @staticmethod
    def _pick_option(element: Mapping[str, Any], value: str) -> dict[str, Any]:
        options: list[dict[str, Any]] = list(element.get("options", []))
        for group in element.get("option_groups", []):
            options += group.get("options", [])
        for option in options:
            if option.get("value") == value:
                return dict(option)
        raise SlackDriverError(
            f"{element.get('type')} {element.get('action_id')!r} has no option {value!r}; "
            f"options: {[o.get('value') for o in options]}"
        )

    def _action(
        self,
        block_id: str,
        element: Mapping[str, Any],
        value: str | None,
        values: Sequence[str] | None,
    ) -> dict[str, Any]:
        kind = str(element.get("type"))
        action: dict[str, Any] = {
            "action_id": element["action_id"],
            "block_id": block_id,
            "type": kind,
            "action_ts": self._action_ts(),
        }
        if kind == "button":
            action["text"] = element["text"]
            if "value" in element:
                action["value"] = element["value"]
            if "style" in element:
                action["style"] = element["style"]
            if "url" in element:
                action["url"] = element["url"]
        elif kind in _SINGLE_PICK:
            if value is None:
                raise SlackDriverError(f"choosing in {kind} {element['action_id']!r} needs value=")
            picked: Any = value
            if kind in _OPTION_ELEMENTS:
                picked = self._pick_option(element, value)
            action[_SINGLE_PICK[kind]] = picked
            if "placeholder" in element:
                action["placeholder"] = element["placeholder"]
        elif kind in _MULTI_PICK:
            chosen = list(values or ([] if value is None else [value]))
            if kind in _OPTION_ELEMENTS:
                action[_MULTI_PICK[kind]] = [self._pick_option(element, v) for v in chosen]
            else:
                action[_MULTI_PICK[kind]] = chosen
        elif kind in _TEXT_INPUTS:
            action["value"] = value
        return action

    async def click(
        self,
        *,
        user_id: str,
        channel_id: str,
        message_ts: str,
        action_id: str,
        value: str | None = None,
        values: Sequence[str] | None = None,
    ) -> httpx.Response:
        """Click (or choose ``value``/``values`` in) the element ``action_id`` of a message."""
        return await self.send(
            self.build_click(
                user_id=user_id,
                channel_id=channel_id,
                message_ts=message_ts,
                action_id=action_id,
                value=value,
                values=values,
            )
        )

    def build_click(
        self,
        *,
        user_id: str,
        channel_id: str,
        message_ts: str,
        action_id: str,
        value: str | None = None,
        values: Sequence[str] | None = None,
    ) -> SignedRequest:
        try:
            message = self.sandbox.message(channel_id, message_ts)
        except KeyError:
            raise SlackDriverError(f"no message {message_ts} in channel {channel_id}") from None
        return self._block_actions(
            user_id=user_id,
            blocks=message.blocks,
            where=f"message {channel_id}/{message_ts}",
            action_id=action_id,
            value=value,
            values=values,
            channel_id=message.channel,
            message_ts=message.ts,
            thread_ts=message.thread_ts,
            message=message.to_slack(team_id=self.sandbox.team_id, app_id=self.sandbox.app_id),
        )

    async def click_ephemeral(
        self,
        *,
        user_id: str,
        message_ts: str,
        action_id: str,
        value: str | None = None,
        values: Sequence[str] | None = None,
    ) -> httpx.Response:
        """Click an element of an ephemeral message the user sees."""
        ephemeral = next(
            (
                e
                for e in reversed(self.sandbox.ephemerals)
                if e.message_ts == message_ts and e.user == user_id and not e.deleted
            ),
            None,
        )
        if ephemeral is None:
            raise SlackDriverError(f"user {user_id} sees no ephemeral message {message_ts}")
        request = self._block_actions(
            user_id=user_id,
            blocks=ephemeral.blocks,
            where=f"ephemeral message {message_ts}",
            action_id=action_id,
            value=value,
            values=values,
            channel_id=ephemeral.channel,
            message_ts=ephemeral.message_ts,
            thread_ts=ephemeral.thread_ts,
            message=None,
        )
        return await self.send(request)

    def _block_actions(
        self,
        *,
        user_id: str,
        blocks: Sequence[Mapping[str, Any]],
        where: str,
        action_id: str,
        value: str | None,
        values: Sequence[str] | None,
        channel_id: str,
        message_ts: str,
        thread_ts: str | None,
        message: dict[str, Any] | None,
    ) -> SignedRequest:
        """A click on a message's element; ``message`` is None for an ephemeral message (Slack
        sends no copy of it)."""
        block_id, element = self._find_element(blocks, action_id, where)
        is_ephemeral = message is None
        container: dict[str, Any] = {
            "type": "message",
            "message_ts": message_ts,
            "channel_id": channel_id,
            "is_ephemeral": is_ephemeral,
        }
        if thread_ts is not None:
            container["thread_ts"] = thread_ts
        payload = self._base_interaction("block_actions", user_id)
        payload["container"] = container
        payload["channel"] = {"id": channel_id, "name": self._channel_name(channel_id)}
        if message is not None:
            payload["message"] = message
        payload["state"] = {"values": {}}
        payload["response_url"] = self.sandbox.new_response_url(
            self.sandbox_base_url,
            channel_id=channel_id,
            user_id=user_id,
            message_ts=message_ts,
            thread_ts=thread_ts,
            is_ephemeral=is_ephemeral,
        )
        payload["actions"] = [self._action(block_id, element, value, values)]
        return self._interaction_request(payload)

    def _open_view(self, view_id: str, user_id: str) -> View:
        record = self.sandbox.views.get(view_id)
        if record is None:
            raise SlackDriverError(f"no view {view_id}; views: {sorted(self.sandbox.views)}")
        if not record.is_open:
            raise SlackDriverError(f"view {view_id} is closed")
        if record.user is not None and record.user != user_id:
            raise SlackDriverError(f"view {view_id} belongs to {record.user}, not {user_id}")
        return record

    async def click_in_view(
        self,
        *,
        user_id: str,
        view_id: str,
        action_id: str,
        value: str | None = None,
        values: Sequence[str] | None = None,
        state: Mapping[str, Any] | None = None,
    ) -> httpx.Response:
        """Click (or choose in) an element of an open modal. ``state`` maps action_id to what
        the user has typed or chosen so far in the modal's inputs."""
        record = self._open_view(view_id, user_id)
        block_id, element = self._find_element(
            record.view.get("blocks", []), action_id, f"view {view_id}"
        )
        view_object = self.sandbox.view_payload(view_id)
        view_object["state"] = {
            "values": self._state_values(record.view, state or {}, enforce=False)
        }
        payload = self._base_interaction("block_actions", user_id)
        payload.update(
            {
                "container": {"type": "view", "view_id": view_id},
                "view": view_object,
                "actions": [self._action(block_id, element, value, values)],
            }
        )
        return await self.send(self._interaction_request(payload))

    async def click_home(
        self,
        *,
        user_id: str,
        action_id: str,
        value: str | None = None,
        values: Sequence[str] | None = None,
    ) -> httpx.Response:
        """Click (or choose in) an element of the user's Home tab."""
        view_object = self.sandbox.home_view_payload(user_id)
        if view_object is None:
            raise SlackDriverError(f"no home tab published for {user_id}")
        block_id, element = self._find_element(
            view_object["blocks"], action_id, f"home tab of {user_id}"
        )
        payload = self._base_interaction("block_actions", user_id)
        payload.update(
            {
                "container": {"type": "view", "view_id": view_object["id"]},
                "view": view_object,
                "actions": [self._action(block_id, element, value, values)],
            }
        )
        return await self.send(self._interaction_request(payload))

    # ---- modal submission ------------------------------------------------------------------

    def _state_values(
        self, view: Mapping[str, Any], values: Mapping[str, Any], *, enforce: bool
    ) -> dict[str, dict[str, Any]]:
        inputs = [
            str(block.get("element", {}).get("action_id"))
            for block in view.get("blocks", [])
            if block.get("type") == "input"
        ]
        unknown = set(values) - set(inputs)
        if unknown:
            raise SlackDriverError(
                f"no input with action_id {sorted(unknown)} in the view; inputs: {inputs}"
            )
        state: dict[str, dict[str, Any]] = {}
        for block in view.get("blocks", []):
            if block.get("type") != "input":
                continue
            element = block.get("element", {})
            action_id = str(element.get("action_id"))
            kind = str(element.get("type"))
            given = values.get(action_id)
            entry: dict[str, Any] = {"type": kind}
            empty: bool
            if kind in _TEXT_INPUTS:
                text = given if action_id in values else element.get("initial_value")
                if text is not None and not isinstance(text, str):
                    raise SlackDriverError(f"{action_id!r} takes a string, got {text!r}")
                entry["value"] = text if text != "" else None
                empty = not text
                if enforce and text:
                    self._check_text_input(element, action_id, text)
            elif kind in _SINGLE_PICK:
                key = _SINGLE_PICK[kind]
                picked: Any = given if action_id in values else None
                if picked is None and kind in _INITIAL_SINGLE:
                    initial = element.get(_INITIAL_SINGLE[kind])
                    picked = initial.get("value") if isinstance(initial, dict) else initial
                if picked is not None and kind in _OPTION_ELEMENTS:
                    picked = self._pick_option(element, str(picked))
                entry[key] = picked
                empty = picked is None
            elif kind in _MULTI_PICK:
                key = _MULTI_PICK[kind]
                chosen: Any = given if action_id in values else None
                if chosen is None:
                    initial = element.get(_INITIAL_MULTI.get(kind, ""), [])
                    chosen = [i.get("value") if isinstance(i, dict) else i for i in initial]
                if isinstance(chosen, str) or not isinstance(chosen, Sequence):
                    raise SlackDriverError(f"{action_id!r} takes a list, got {chosen!r}")
                if kind in _OPTION_ELEMENTS:
                    entry[key] = [self._pick_option(element, str(v)) for v in chosen]
                else:
                    entry[key] = list(chosen)
                empty = not chosen
            else:
                entry["value"] = given
                empty = given is None
            if enforce and empty and not block.get("optional", False):
                raise SlackDriverError(
                    f"Slack would not submit: required input {action_id!r} "
                    f"(block {block.get('block_id')!r}) is empty"
                )
            state.setdefault(str(block.get("block_id")), {})[action_id] = entry
        return state

    @staticmethod
    def _check_text_input(element: Mapping[str, Any], action_id: str, text: str) -> None:
        kind = element.get("type")
        high = element.get("max_length")
        low = element.get("min_length")
        if isinstance(high, int) and len(text) > high:
            raise SlackDriverError(f"Slack would not submit: {action_id!r} longer than {high}")
        if isinstance(low, int) and len(text) < low:
            raise SlackDriverError(f"Slack would not submit: {action_id!r} shorter than {low}")
        if kind == "number_input":
            try:
                number = float(text)
            except ValueError:
                raise SlackDriverError(
                    f"Slack would not submit: {action_id!r} not a number"
                ) from None
            if not element.get("is_decimal_allowed") and not text.lstrip("-").isdigit():
                raise SlackDriverError(f"Slack would not submit: {action_id!r} must be whole")
            for bound, compare in (("min_value", number.__lt__), ("max_value", number.__gt__)):
                limit = element.get(bound)
                if isinstance(limit, str) and compare(float(limit)):
                    raise SlackDriverError(f"Slack would not submit: {action_id!r} {bound}")
        if kind == "email_text_input" and "@" not in text:
            raise SlackDriverError(f"Slack would not submit: {action_id!r} not an email address")
        if kind == "url_text_input" and not text.startswith(("http://", "https://")):
            raise SlackDriverError(f"Slack would not submit: {action_id!r} not a URL")

    def build_view_submission(
        self, *, user_id: str, view_id: str, values: Mapping[str, Any], enforce: bool = True
    ) -> SignedRequest:
        record = self._open_view(view_id, user_id)
        if record.view.get("submit") is None:
            raise SlackDriverError(f"view {view_id} has no submit button")
        view_object = self.sandbox.view_payload(view_id)
        view_object["state"] = {"values": self._state_values(record.view, values, enforce=enforce)}
        payload = self._base_interaction("view_submission", user_id)
        payload.update({"view": view_object, "response_urls": []})
        return self._interaction_request(payload)

    async def submit_view(
        self,
        *,
        user_id: str,
        view_id: str,
        values: Mapping[str, Any],
        apply: bool = True,
        enforce: bool = True,
    ) -> httpx.Response:
        """Submit an open modal. ``values`` maps action_id to a string (text inputs), an option
        value (selects, radio buttons), a user/channel id, or a list (checkboxes, multi-selects).

        With ``apply`` (the default) the ack is applied like Slack does: ``errors`` keeps the view
        open, ``update`` replaces it, ``push`` stacks a new one, ``clear`` closes them all and
        anything else closes this view.
        """
        request = self.build_view_submission(
            user_id=user_id, view_id=view_id, values=values, enforce=enforce
        )
        response = await self.send(request)
        if apply:
            await self.apply_submission_ack(user_id=user_id, view_id=view_id, response=response)
        return response

    async def close_view(self, *, user_id: str, view_id: str) -> httpx.Response | None:
        """The user closes the modal; sends ``view_closed`` if the view asked to be notified."""
        record = self._open_view(view_id, user_id)
        self.sandbox.close_views(
            user_id, everything=bool(record.view.get("clear_on_close")), view_id=view_id
        )
        await self.sandbox.record("view_closed", {"view_id": view_id}, ok=True, error=None)
        if not record.view.get("notify_on_close"):
            return None
        payload = self._base_interaction("view_closed", user_id)
        payload.pop("trigger_id")
        payload.update({"view": self.sandbox.view_payload(view_id), "is_cleared": False})
        return await self.send(self._interaction_request(payload))

    @staticmethod
    def ack_body(response: httpx.Response) -> dict[str, Any] | None:
        """The JSON body of an ack (``None`` for an empty or non-JSON body)."""
        if not response.content.strip():
            return None
        try:
            body = response.json()
        except ValueError:
            return None
        return body if isinstance(body, dict) else None

    @classmethod
    def view_errors(cls, response: httpx.Response) -> dict[str, str]:
        """The ``response_action: errors`` map of a submission ack ({} when there is none)."""
        body = cls.ack_body(response) or {}
        if body.get("response_action") != "errors":
            return {}
        errors = body.get("errors", {})
        return {str(k): str(v) for k, v in errors.items()} if isinstance(errors, dict) else {}

    async def apply_submission_ack(
        self, *, user_id: str, view_id: str, response: httpx.Response
    ) -> None:
        """Do to the sandbox's views what Slack does with a view_submission ack."""
        if response.status_code != 200:
            await self.sandbox.record(
                "response_action",
                {"view_id": view_id, "status": response.status_code},
                ok=False,
                error="ack_failed",
            )
            return
        body = self.ack_body(response) or {}
        action = body.get("response_action")
        record = self.sandbox.views[view_id]
        problem: str | None = None
        if action == "errors":
            input_blocks = {
                b.get("block_id") for b in record.view.get("blocks", []) if b.get("type") == "input"
            }
            errors = body.get("errors")
            if not isinstance(errors, dict) or not errors:
                problem = "errors must be a non-empty object"
            elif set(errors) - input_blocks:
                problem = (
                    f"errors name blocks that are not inputs: {sorted(set(errors) - input_blocks)}"
                )
        elif action in ("update", "push"):
            view = body.get("view")
            problems = validate_view(view)
            if not problems and isinstance(view, dict) and view.get("type") != "modal":
                problems = ["must be modal [json-pointer:/view/type]"]
            if problems:
                problem = "; ".join(problems)
            elif isinstance(view, dict):
                stored = json.loads(json.dumps(view))
                stored["blocks"] = with_generated_ids(stored.get("blocks", []))
                if action == "update":
                    self.sandbox.replace_view(view_id, stored)
                else:
                    self.sandbox.open_view(stored, user_id, push=True)
        elif action == "clear":
            self.sandbox.close_views(user_id, everything=True)
        else:
            self.sandbox.close_views(user_id, everything=False, view_id=view_id)
        await self.sandbox.record(
            "response_action",
            {"view_id": view_id, "response_action": action, "body": body},
            ok=problem is None,
            error=problem,
        )

    # ---- events ----------------------------------------------------------------------------

    def build_event(self, event: Mapping[str, Any]) -> SignedRequest:
        number = next(self._event_ids)
        payload = {
            "token": self.verification_token,
            "team_id": self.sandbox.team_id,
            "api_app_id": self.sandbox.app_id,
            "event": dict(event),
            "type": "event_callback",
            "event_id": f"Ev{number:06d}{secrets.token_hex(3).upper()}",
            "event_time": int(self.clock()),
            "authorizations": [
                {
                    "enterprise_id": None,
                    "team_id": self.sandbox.team_id,
                    "user_id": self.sandbox.bot_user_id,
                    "is_bot": True,
                    "is_enterprise_install": False,
                }
            ],
            "is_ext_shared_channel": False,
            "event_context": secrets.token_urlsafe(16),
        }
        return self._json_request(payload)

    async def send_event(
        self, event: Mapping[str, Any], *, retry_num: int | None = None
    ) -> httpx.Response:
        return await self.send(self.build_event(event), retry_num=retry_num)

    async def open_home(self, *, user_id: str) -> httpx.Response:
        """The user opens the app's Home tab (``app_home_opened``)."""
        event: dict[str, Any] = {
            "type": "app_home_opened",
            "user": user_id,
            "channel": "D" + user_id[1:],
            "tab": "home",
            "event_ts": self._action_ts(),
        }
        home = self.sandbox.home_view_payload(user_id)
        if home is not None:
            event["view"] = home
        return await self.send_event(event)

    async def url_verification(self, challenge: str = "sandbox-challenge") -> httpx.Response:
        payload = {
            "token": self.verification_token,
            "challenge": challenge,
            "type": "url_verification",
        }
        return await self.send(self._json_request(payload))

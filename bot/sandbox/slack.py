"""A simulated Slack Web API for tests and the demo.

``SandboxSlack`` answers ``POST /api/{method}`` (and ``GET`` with query parameters) the way
``https://slack.com/api/`` does for the methods the bot uses: same argument encodings (form fields,
JSON bodies, JSON strings inside form fields), same authentication (``Authorization: Bearer`` or a
``token`` argument), same answers (HTTP 200 with ``{"ok": true, ...}`` or ``{"ok": false, "error":
...}``; HTTP 429 with ``Retry-After`` when rate limiting is injected) and the same error names.

It keeps the state a person would see in Slack (messages after updates, ephemeral messages, open
modals, home tabs), records every call, rejects Block Kit that Slack rejects (``validate_blocks``,
``validate_view``: pure functions, usable on their own) and lets a test wait for a condition without
polling (``wait_for``).

It also serves ``response_url`` targets (``new_response_url``) with Slack's semantics for
``replace_original``, ``delete_original`` and ``response_type``.

Socket Mode: ``apps.connections.open`` (app-level ``xapp-`` token only) hands out a one-time
``ws://127.0.0.1:<port>/socket-mode/<ticket>`` URL, and the sandbox's Socket Mode server behaves
like Slack's: ``hello`` on connect, envelopes (``deliver``) that the app acks with
``{"envelope_id", "payload"?}`` within 3 s, pongs to the client's pings (and pings of its own on
request), ``disconnect`` messages and dropped connections on demand. The WebSocket server runs on
aiohttp (a dependency of Slack's own Socket Mode client) because the ASGI server used for the Web
API has no WebSocket library installed; it starts with the first ``apps.connections.open`` and
stops with the Starlette app's lifespan (or ``aclose``).
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import itertools
import json
import re
import secrets
import socket
import time
import uuid
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Literal, TypeVar
from urllib.parse import parse_qsl

from aiohttp import WSCloseCode, WSMsgType, web
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from bot.sandbox.holds import HeldCall, Hold, Holds

__all__ = [
    "Ephemeral",
    "Message",
    "RecordedCall",
    "SandboxSlack",
    "SocketAck",
    "SocketConnection",
    "SocketEnvelope",
    "Surface",
    "View",
    "validate_blocks",
    "validate_view",
    "with_generated_ids",
]

T = TypeVar("T")
Surface = Literal["message", "modal", "home"]

PERMALINK_HOST = "https://sandbox.slack.test"
TRIGGER_TTL_SECONDS = 3.0
RESPONSE_URL_TTL_SECONDS = 30 * 60.0
RESPONSE_URL_MAX_USES = 5
MAX_MESSAGE_TEXT = 40_000
MAX_VIEW_STACK = 3
SOCKET_MODE_ACK_TIMEOUT = 3.0
SOCKET_MODE_ENVELOPE_TYPES = frozenset({"slash_commands", "interactive", "events_api"})
_RESPONSE_PAYLOAD_INTERACTIONS = frozenset({"view_submission", "block_suggestion"})
_JSON_FIELDS = ("blocks", "view", "attachments", "metadata")


# --------------------------------------------------------------------------------------------
# Block Kit validation (pure functions)
# --------------------------------------------------------------------------------------------

_TEXT_KEYS = frozenset({"type", "text", "emoji", "verbatim"})
_SELECTS = frozenset(
    {"static_select", "external_select", "users_select", "conversations_select", "channels_select"}
)
_MULTI_SELECTS = frozenset("multi_" + name for name in _SELECTS)
_ACTIONS_ELEMENTS = (
    frozenset(
        {
            "button",
            "checkboxes",
            "datepicker",
            "datetimepicker",
            "overflow",
            "radio_buttons",
            "timepicker",
            "workflow_button",
        }
    )
    | _SELECTS
    | _MULTI_SELECTS
)
_ACCESSORY_ELEMENTS = _ACTIONS_ELEMENTS - {"datetimepicker"} | {"image"}
_INPUT_ELEMENTS = (
    frozenset(
        {
            "checkboxes",
            "datepicker",
            "datetimepicker",
            "email_text_input",
            "file_input",
            "number_input",
            "plain_text_input",
            "radio_buttons",
            "rich_text_input",
            "timepicker",
            "url_text_input",
        }
    )
    | _SELECTS
    | _MULTI_SELECTS
)
_COMMON_INTERACTIVE = frozenset({"type", "action_id", "confirm", "focus_on_load"})
_ELEMENT_KEYS: dict[str, frozenset[str]] = {
    "button": frozenset(
        {"type", "text", "action_id", "url", "value", "style", "confirm", "accessibility_label"}
    ),
    "static_select": _COMMON_INTERACTIVE
    | {"placeholder", "options", "option_groups", "initial_option"},
    "multi_static_select": _COMMON_INTERACTIVE
    | {"placeholder", "options", "option_groups", "initial_options", "max_selected_items"},
    "external_select": _COMMON_INTERACTIVE | {"placeholder", "initial_option", "min_query_length"},
    "multi_external_select": _COMMON_INTERACTIVE
    | {"placeholder", "initial_options", "min_query_length", "max_selected_items"},
    "users_select": _COMMON_INTERACTIVE | {"placeholder", "initial_user"},
    "multi_users_select": _COMMON_INTERACTIVE
    | {"placeholder", "initial_users", "max_selected_items"},
    "conversations_select": _COMMON_INTERACTIVE
    | {
        "placeholder",
        "initial_conversation",
        "default_to_current_conversation",
        "response_url_enabled",
        "filter",
    },
    "multi_conversations_select": _COMMON_INTERACTIVE
    | {
        "placeholder",
        "initial_conversations",
        "default_to_current_conversation",
        "max_selected_items",
        "filter",
    },
    "channels_select": _COMMON_INTERACTIVE
    | {"placeholder", "initial_channel", "response_url_enabled"},
    "multi_channels_select": _COMMON_INTERACTIVE
    | {"placeholder", "initial_channels", "max_selected_items"},
    "overflow": frozenset({"type", "action_id", "options", "confirm"}),
    "datepicker": _COMMON_INTERACTIVE | {"placeholder", "initial_date"},
    "timepicker": _COMMON_INTERACTIVE | {"placeholder", "initial_time", "timezone"},
    "datetimepicker": _COMMON_INTERACTIVE | {"initial_date_time"},
    "radio_buttons": _COMMON_INTERACTIVE | {"options", "initial_option"},
    "checkboxes": _COMMON_INTERACTIVE | {"options", "initial_options"},
    "plain_text_input": frozenset(
        {
            "type",
            "action_id",
            "placeholder",
            "initial_value",
            "multiline",
            "min_length",
            "max_length",
            "dispatch_action_config",
            "focus_on_load",
        }
    ),
    "email_text_input": frozenset(
        {
            "type",
            "action_id",
            "placeholder",
            "initial_value",
            "dispatch_action_config",
            "focus_on_load",
        }
    ),
    "url_text_input": frozenset(
        {
            "type",
            "action_id",
            "placeholder",
            "initial_value",
            "dispatch_action_config",
            "focus_on_load",
        }
    ),
    "number_input": frozenset(
        {
            "type",
            "action_id",
            "placeholder",
            "is_decimal_allowed",
            "initial_value",
            "min_value",
            "max_value",
            "dispatch_action_config",
            "focus_on_load",
        }
    ),
    "rich_text_input": frozenset(
        {
            "type",
            "action_id",
            "placeholder",
            "initial_value",
            "dispatch_action_config",
            "focus_on_load",
        }
    ),
    "file_input": frozenset({"type", "action_id", "filetypes", "max_files"}),
    "workflow_button": frozenset(
        {"type", "text", "workflow", "style", "accessibility_label", "action_id"}
    ),
    "image": frozenset({"type", "image_url", "slack_file", "alt_text"}),
}
_BLOCK_KEYS: dict[str, frozenset[str]] = {
    "section": frozenset({"type", "block_id", "text", "fields", "accessory", "expand"}),
    "divider": frozenset({"type", "block_id"}),
    "header": frozenset({"type", "block_id", "text"}),
    "context": frozenset({"type", "block_id", "elements"}),
    "actions": frozenset({"type", "block_id", "elements"}),
    "input": frozenset(
        {"type", "block_id", "label", "element", "dispatch_action", "hint", "optional"}
    ),
    "image": frozenset({"type", "block_id", "image_url", "slack_file", "alt_text", "title"}),
    "rich_text": frozenset({"type", "block_id", "elements"}),
}
_MODAL_KEYS = frozenset(
    {
        "type",
        "title",
        "blocks",
        "close",
        "submit",
        "private_metadata",
        "callback_id",
        "clear_on_close",
        "notify_on_close",
        "external_id",
        "submit_disabled",
    }
)
_HOME_KEYS = frozenset({"type", "blocks", "private_metadata", "callback_id", "external_id"})
_RICH_TEXT_CONTAINERS = frozenset(
    {"rich_text_section", "rich_text_list", "rich_text_preformatted", "rich_text_quote"}
)
_RICH_TEXT_LEAVES = frozenset(
    {"text", "link", "emoji", "user", "channel", "usergroup", "broadcast", "date", "color"}
)
_DATE_RE = re.compile(r"^\d{4}-(0[1-9]|1[0-2])-(0[1-9]|[12]\d|3[01])$")
_TIME_RE = re.compile(r"^([01]\d|2[0-3]):[0-5]\d$")
_NUMBER_RE = re.compile(r"^-?\d+(\.\d+)?$")


class _Checker:
    """Collects problems as ``<reason> [json-pointer:<path>]`` like Slack's error messages."""

    def __init__(self) -> None:
        self.problems: list[str] = []
        self.block_ids: set[str] = set()
        self.action_ids: set[str] = set()

    def err(self, path: str, reason: str) -> None:
        self.problems.append(f"{reason} [json-pointer:{path}]")

    def keys(self, obj: Mapping[str, Any], path: str, allowed: frozenset[str]) -> None:
        for key in obj:
            if key not in allowed:
                self.err(f"{path}/{key}", f"unsupported property `{key}`")

    def string(
        self,
        obj: Mapping[str, Any],
        key: str,
        path: str,
        *,
        max_len: int,
        required: bool = False,
        min_len: int = 1,
    ) -> str | None:
        if key not in obj or obj[key] is None:
            if required:
                self.err(f"{path}/{key}", f"missing required field: {key}")
            return None
        value = obj[key]
        if not isinstance(value, str):
            self.err(f"{path}/{key}", "must be a string")
            return None
        if len(value) < min_len:
            self.err(f"{path}/{key}", f"must be at least {min_len} character(s) long")
        elif len(value) > max_len:
            self.err(f"{path}/{key}", f"must be less than {max_len + 1} characters")
        return value

    def boolean(self, obj: Mapping[str, Any], key: str, path: str) -> None:
        if key in obj and not isinstance(obj[key], bool):
            self.err(f"{path}/{key}", "must be a boolean")

    def obj(self, value: Any, path: str, what: str) -> dict[str, Any] | None:
        if not isinstance(value, dict):
            self.err(path, f"{what} must be an object")
            return None
        return value

    def text(
        self,
        parent: Mapping[str, Any],
        key: str,
        path: str,
        *,
        max_len: int = 3000,
        plain_only: bool = False,
        required: bool = True,
    ) -> None:
        where = f"{path}/{key}"
        if key not in parent or parent[key] is None:
            if required:
                self.err(where, f"missing required field: {key}")
            return
        self.text_object(parent[key], where, max_len=max_len, plain_only=plain_only)

    def text_object(self, value: Any, where: str, *, max_len: int, plain_only: bool) -> None:
        text = self.obj(value, where, "text object")
        if text is None:
            return
        self.keys(text, where, _TEXT_KEYS)
        kind = text.get("type")
        if kind not in ("plain_text", "mrkdwn"):
            self.err(f"{where}/type", "must be one of plain_text, mrkdwn")
        elif plain_only and kind != "plain_text":
            self.err(f"{where}/type", "must be plain_text")
        if kind == "plain_text" and "verbatim" in text:
            self.err(f"{where}/verbatim", "verbatim is only allowed for mrkdwn")
        if kind == "mrkdwn" and "emoji" in text:
            self.err(f"{where}/emoji", "emoji is only allowed for plain_text")
        self.boolean(text, "emoji", where)
        self.boolean(text, "verbatim", where)
        self.string(text, "text", where, max_len=max_len, required=True)

    def block_id(self, block: Mapping[str, Any], path: str) -> None:
        self._unique_id(block, "block_id", path, self.block_ids)

    def action_id(self, element: Mapping[str, Any], path: str) -> None:
        self._unique_id(element, "action_id", path, self.action_ids)

    def _unique_id(self, obj: Mapping[str, Any], key: str, path: str, seen: set[str]) -> None:
        value = self.string(obj, key, path, max_len=255)
        if value is not None:
            if value in seen:
                self.err(f"{path}/{key}", f"duplicate {key} `{value}`")
            seen.add(value)

    def confirm(self, element: Mapping[str, Any], path: str) -> None:
        if "confirm" not in element:
            return
        where = f"{path}/confirm"
        dialog = self.obj(element["confirm"], where, "confirm")
        if dialog is None:
            return
        self.keys(dialog, where, frozenset({"title", "text", "confirm", "deny", "style"}))
        self.text(dialog, "title", where, max_len=100, plain_only=True)
        self.text(dialog, "text", where, max_len=300)
        self.text(dialog, "confirm", where, max_len=30, plain_only=True)
        self.text(dialog, "deny", where, max_len=30, plain_only=True)
        if "style" in dialog and dialog["style"] not in ("primary", "danger"):
            self.err(f"{where}/style", "must be one of primary, danger")

    def placeholder(self, element: Mapping[str, Any], path: str) -> None:
        self.text(element, "placeholder", path, max_len=150, plain_only=True, required=False)

    def option(
        self, value: Any, where: str, *, plain_only: bool, allow_url: bool = False
    ) -> dict[str, Any] | None:
        option = self.obj(value, where, "option")
        if option is None:
            return None
        allowed = {"text", "value", "description"} | ({"url"} if allow_url else set())
        self.keys(option, where, frozenset(allowed))
        self.text(option, "text", where, max_len=75, plain_only=plain_only)
        self.string(option, "value", where, max_len=150, required=True)
        self.text(option, "description", where, max_len=75, plain_only=plain_only, required=False)
        if allow_url:
            self.string(option, "url", where, max_len=3000)
        return option

    def options(
        self,
        element: Mapping[str, Any],
        path: str,
        *,
        minimum: int,
        maximum: int,
        plain_only: bool,
        allow_url: bool = False,
        required: bool = True,
    ) -> list[dict[str, Any]]:
        where = f"{path}/options"
        if "options" not in element:
            if required:
                self.err(where, "missing required field: options")
            return []
        raw = element["options"]
        if not isinstance(raw, list):
            self.err(where, "must be an array")
            return []
        if not minimum <= len(raw) <= maximum:
            self.err(where, f"must have between {minimum} and {maximum} items")
        found: list[dict[str, Any]] = []
        for index, item in enumerate(raw):
            option = self.option(
                item, f"{where}/{index}", plain_only=plain_only, allow_url=allow_url
            )
            if option is not None:
                found.append(option)
        return found

    def initial_options(
        self, element: Mapping[str, Any], path: str, known: list[dict[str, Any]], *, multi: bool
    ) -> None:
        key = "initial_options" if multi else "initial_option"
        if key not in element:
            return
        picks = element[key] if multi else [element[key]]
        if not isinstance(picks, list):
            self.err(f"{path}/{key}", "must be an array")
            return
        values = {o.get("value") for o in known}
        for index, pick in enumerate(picks):
            where = f"{path}/{key}/{index}" if multi else f"{path}/{key}"
            if not isinstance(pick, dict) or pick.get("value") not in values:
                self.err(where, "must match one of the provided options")

    def select_options(self, element: Mapping[str, Any], path: str, *, multi: bool) -> None:
        has_options = "options" in element
        has_groups = "option_groups" in element
        if has_options == has_groups:
            self.err(path, "must provide exactly one of options, option_groups")
            return
        known: list[dict[str, Any]] = []
        if has_options:
            known = self.options(element, path, minimum=1, maximum=100, plain_only=True)
        else:
            where = f"{path}/option_groups"
            groups = element["option_groups"]
            if not isinstance(groups, list) or not 1 <= len(groups) <= 100:
                self.err(where, "must be an array of 1 to 100 option groups")
                return
            for index, raw in enumerate(groups):
                group = self.obj(raw, f"{where}/{index}", "option group")
                if group is None:
                    continue
                self.keys(group, f"{where}/{index}", frozenset({"label", "options"}))
                self.text(group, "label", f"{where}/{index}", max_len=75, plain_only=True)
                known += self.options(
                    group, f"{where}/{index}", minimum=1, maximum=100, plain_only=True
                )
        self.initial_options(element, path, known, multi=multi)

    def max_selected(self, element: Mapping[str, Any], path: str) -> None:
        if "max_selected_items" in element:
            value = element["max_selected_items"]
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                self.err(f"{path}/max_selected_items", "must be an integer of at least 1")

    def element(self, value: Any, path: str, allowed: frozenset[str], where_kind: str) -> None:
        element = self.obj(value, path, "element")
        if element is None:
            return
        kind = element.get("type")
        if not isinstance(kind, str) or kind not in allowed:
            self.err(
                f"{path}/type",
                f"element type `{kind}` is not allowed in {where_kind}; "
                f"allowed: {', '.join(sorted(allowed))}",
            )
            return
        self.keys(element, path, _ELEMENT_KEYS[kind])
        if kind == "image":
            self.image(element, path)
            return
        self.action_id(element, path)
        self.confirm(element, path)
        self.boolean(element, "focus_on_load", path)
        if kind == "button":
            self.text(element, "text", path, max_len=75, plain_only=True)
            self.string(element, "value", path, max_len=2000)
            self.string(element, "url", path, max_len=3000)
            self.string(element, "accessibility_label", path, max_len=75)
            if "style" in element and element["style"] not in ("primary", "danger"):
                self.err(f"{path}/style", "must be one of primary, danger")
        elif kind == "workflow_button":
            self.text(element, "text", path, max_len=75, plain_only=True)
            if not isinstance(element.get("workflow"), dict):
                self.err(f"{path}/workflow", "missing required field: workflow")
            if "style" in element and element["style"] not in ("primary", "danger"):
                self.err(f"{path}/style", "must be one of primary, danger")
        elif kind in ("static_select", "multi_static_select"):
            self.placeholder(element, path)
            self.select_options(element, path, multi=kind.startswith("multi_"))
            self.max_selected(element, path)
        elif kind in _SELECTS | _MULTI_SELECTS:
            self.placeholder(element, path)
            self.max_selected(element, path)
            self.boolean(element, "default_to_current_conversation", path)
            self.boolean(element, "response_url_enabled", path)
            if "filter" in element:
                self.conversation_filter(element["filter"], f"{path}/filter")
        elif kind == "overflow":
            self.options(element, path, minimum=1, maximum=5, plain_only=True, allow_url=True)
        elif kind in ("radio_buttons", "checkboxes"):
            known = self.options(element, path, minimum=1, maximum=10, plain_only=False)
            self.initial_options(element, path, known, multi=kind == "checkboxes")
        elif kind == "datepicker":
            self.placeholder(element, path)
            date = self.string(element, "initial_date", path, max_len=10)
            if date is not None and not _DATE_RE.match(date):
                self.err(f"{path}/initial_date", "must be a date in the format YYYY-MM-DD")
        elif kind == "timepicker":
            self.placeholder(element, path)
            moment = self.string(element, "initial_time", path, max_len=5)
            if moment is not None and not _TIME_RE.match(moment):
                self.err(f"{path}/initial_time", "must be a time in the format HH:mm")
        elif kind == "datetimepicker":
            stamp = element.get("initial_date_time")
            if stamp is not None and (not isinstance(stamp, int) or isinstance(stamp, bool)):
                self.err(f"{path}/initial_date_time", "must be a UNIX timestamp in seconds")
        elif kind == "plain_text_input":
            self.placeholder(element, path)
            self.boolean(element, "multiline", path)
            self.text_input_lengths(element, path)
        elif kind in ("email_text_input", "url_text_input", "rich_text_input"):
            self.placeholder(element, path)
            if kind != "rich_text_input":
                self.string(element, "initial_value", path, max_len=3000, min_len=0)
        elif kind == "number_input":
            self.placeholder(element, path)
            self.number_input(element, path)

    def conversation_filter(self, value: Any, where: str) -> None:
        filt = self.obj(value, where, "filter")
        if filt is None:
            return
        self.keys(
            filt,
            where,
            frozenset({"include", "exclude_external_shared_channels", "exclude_bot_users"}),
        )
        include = filt.get("include")
        if include is not None and (
            not isinstance(include, list)
            or not include
            or any(item not in ("im", "mpim", "private", "public") for item in include)
        ):
            self.err(f"{where}/include", "must be a non-empty array of im, mpim, private, public")

    def text_input_lengths(self, element: Mapping[str, Any], path: str) -> None:
        low = element.get("min_length")
        high = element.get("max_length")
        if low is not None and (
            not isinstance(low, int) or isinstance(low, bool) or not 0 <= low <= 3000
        ):
            self.err(f"{path}/min_length", "must be an integer between 0 and 3000")
            low = None
        if high is not None and (
            not isinstance(high, int) or isinstance(high, bool) or not 1 <= high <= 3000
        ):
            self.err(f"{path}/max_length", "must be an integer between 1 and 3000")
            high = None
        if isinstance(low, int) and isinstance(high, int) and low > high:
            self.err(f"{path}/min_length", "must not be greater than max_length")
        initial = self.string(element, "initial_value", path, max_len=3000, min_len=0)
        if initial is not None and isinstance(high, int) and len(initial) > high:
            self.err(f"{path}/initial_value", "is longer than max_length")

    def number_input(self, element: Mapping[str, Any], path: str) -> None:
        if "is_decimal_allowed" not in element:
            self.err(f"{path}/is_decimal_allowed", "missing required field: is_decimal_allowed")
        self.boolean(element, "is_decimal_allowed", path)
        decimals = element.get("is_decimal_allowed") is True
        for key in ("initial_value", "min_value", "max_value"):
            raw = self.string(element, key, path, max_len=100)
            if raw is None:
                continue
            if not _NUMBER_RE.match(raw) or (not decimals and "." in raw):
                self.err(f"{path}/{key}", "must be a number allowed by is_decimal_allowed")
        low, high = element.get("min_value"), element.get("max_value")
        if isinstance(low, str) and isinstance(high, str):
            try:
                if float(low) > float(high):
                    self.err(f"{path}/min_value", "must not be greater than max_value")
            except ValueError:
                pass

    def image(self, element: Mapping[str, Any], path: str) -> None:
        has_url = "image_url" in element
        has_file = "slack_file" in element
        if has_url == has_file:
            self.err(path, "must provide exactly one of image_url, slack_file")
        self.string(element, "image_url", path, max_len=3000)
        self.string(element, "alt_text", path, max_len=2000, required=True)

    def rich_text(self, block: Mapping[str, Any], path: str) -> None:
        elements = block.get("elements")
        if not isinstance(elements, list):
            self.err(f"{path}/elements", "missing required field: elements")
            return
        for index, raw in enumerate(elements):
            where = f"{path}/elements/{index}"
            item = self.obj(raw, where, "rich text element")
            if item is None:
                continue
            kind = item.get("type")
            if kind not in _RICH_TEXT_CONTAINERS:
                self.err(f"{where}/type", f"unknown rich text element type `{kind}`")
                continue
            children = item.get("elements")
            if not isinstance(children, list):
                self.err(f"{where}/elements", "missing required field: elements")
                continue
            if kind == "rich_text_list":
                if item.get("style") not in ("bullet", "ordered"):
                    self.err(f"{where}/style", "must be one of bullet, ordered")
                for child_index, child in enumerate(children):
                    if not isinstance(child, dict) or child.get("type") != "rich_text_section":
                        self.err(f"{where}/elements/{child_index}", "must be a rich_text_section")
                continue
            for child_index, child in enumerate(children):
                child_where = f"{where}/elements/{child_index}"
                if not isinstance(child, dict) or child.get("type") not in _RICH_TEXT_LEAVES:
                    self.err(child_where, "unknown rich text leaf")
                elif child["type"] in ("text", "link") and not isinstance(
                    child.get("text" if child["type"] == "text" else "url"), str
                ):
                    self.err(child_where, "missing required text/url")

    def block(self, value: Any, path: str, surface: Surface) -> None:
        block = self.obj(value, path, "block")
        if block is None:
            return
        kind = block.get("type")
        if not isinstance(kind, str) or kind not in _BLOCK_KEYS:
            self.err(f"{path}/type", f"unknown block type `{kind}`")
            return
        self.keys(block, path, _BLOCK_KEYS[kind])
        self.block_id(block, path)
        if kind == "section":
            if "text" not in block and "fields" not in block:
                self.err(path, "section must have text or fields")
            self.text(block, "text", path, max_len=3000, required=False)
            if "fields" in block:
                fields = block["fields"]
                if not isinstance(fields, list) or not 1 <= len(fields) <= 10:
                    self.err(f"{path}/fields", "must be an array of 1 to 10 text objects")
                else:
                    for index, item in enumerate(fields):
                        self.text_object(
                            item, f"{path}/fields/{index}", max_len=2000, plain_only=False
                        )
            if "accessory" in block:
                self.element(
                    block["accessory"],
                    f"{path}/accessory",
                    _ACCESSORY_ELEMENTS,
                    "a section accessory",
                )
            self.boolean(block, "expand", path)
        elif kind == "header":
            self.text(block, "text", path, max_len=150, plain_only=True)
        elif kind in ("context", "actions"):
            limit = 10 if kind == "context" else 25
            elements = block.get("elements")
            if not isinstance(elements, list) or not 1 <= len(elements) <= limit:
                self.err(f"{path}/elements", f"must be an array of 1 to {limit} elements")
                return
            for index, item in enumerate(elements):
                where = f"{path}/elements/{index}"
                if kind == "actions":
                    self.element(item, where, _ACTIONS_ELEMENTS, "an actions block")
                elif isinstance(item, dict) and item.get("type") == "image":
                    self.keys(item, where, _ELEMENT_KEYS["image"])
                    self.image(item, where)
                else:
                    self.text_object(item, where, max_len=3000, plain_only=False)
        elif kind == "input":
            if surface != "modal":
                self.err(f"{path}/type", f"input blocks are not allowed in a {surface}")
            self.text(block, "label", path, max_len=2000, plain_only=True)
            self.text(block, "hint", path, max_len=2000, plain_only=True, required=False)
            self.boolean(block, "optional", path)
            self.boolean(block, "dispatch_action", path)
            if "element" not in block:
                self.err(f"{path}/element", "missing required field: element")
            else:
                self.element(block["element"], f"{path}/element", _INPUT_ELEMENTS, "an input block")
        elif kind == "image":
            self.image(block, path)
            self.text(block, "title", path, max_len=2000, plain_only=True, required=False)
        elif kind == "rich_text":
            self.rich_text(block, path)

    def blocks(self, value: Any, path: str, surface: Surface) -> None:
        if not isinstance(value, list):
            self.err(path, "must be an array of blocks")
            return
        limit = 50 if surface == "message" else 100
        if len(value) > limit:
            self.err(path, f"no more than {limit} items allowed")
        for index, block in enumerate(value):
            self.block(block, f"{path}/{index}", surface)


def validate_blocks(blocks: Any, *, surface: Surface) -> list[str]:
    """Problems Slack would report for ``blocks`` on ``surface`` (empty list: Slack accepts them).

    Each problem reads ``<reason> [json-pointer:/blocks/<index>/...]``, like Slack's
    ``response_metadata.messages`` (without the ``[ERROR]`` prefix).
    """
    checker = _Checker()
    checker.blocks(blocks, "/blocks", surface)
    return checker.problems


def validate_view(view: Any) -> list[str]:
    """Problems Slack would report for a modal or home view (empty list: Slack accepts it)."""
    checker = _Checker()
    root = checker.obj(view, "/view", "view")
    if root is None:
        return checker.problems
    kind = root.get("type")
    if kind not in ("modal", "home"):
        checker.err("/view/type", "must be one of modal, home")
        return checker.problems
    checker.keys(root, "/view", _MODAL_KEYS if kind == "modal" else _HOME_KEYS)
    if "blocks" not in root:
        checker.err("/view/blocks", "missing required field: blocks")
    else:
        checker.blocks(root["blocks"], "/view/blocks", "modal" if kind == "modal" else "home")
    checker.string(root, "private_metadata", "/view", max_len=3000, min_len=0)
    checker.string(root, "callback_id", "/view", max_len=255, min_len=0)
    checker.string(root, "external_id", "/view", max_len=255)
    if kind == "modal":
        checker.text(root, "title", "/view", max_len=24, plain_only=True)
        checker.text(root, "close", "/view", max_len=24, plain_only=True, required=False)
        checker.text(root, "submit", "/view", max_len=24, plain_only=True, required=False)
        checker.boolean(root, "clear_on_close", "/view")
        checker.boolean(root, "notify_on_close", "/view")
        checker.boolean(root, "submit_disabled", "/view")
        blocks = root.get("blocks")
        has_input = isinstance(blocks, list) and any(
            isinstance(b, dict) and b.get("type") == "input" for b in blocks
        )
        if has_input and "submit" not in root:
            checker.err("/view/submit", "submit is required when an input block is present")
    return checker.problems


# --------------------------------------------------------------------------------------------
# Records
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RecordedCall:
    """One request the sandbox answered (Web API method, or ``response_url`` for webhook posts)."""

    method: str
    params: dict[str, Any]
    ok: bool
    error: str | None
    at: float
    status: int = 200
    response: dict[str, Any] = field(default_factory=dict)
    # The caller's (host, port), as the server saw it: which TCP connection carried the call, so
    # a test can tell a pooled client from one that connects every time, or which process it was.
    client: tuple[str, int] | None = None


@dataclass(frozen=True)
class Message:
    """A channel message as it stands now (after updates). Top-level messages have
    ``thread_ts=None``; replies carry their parent's ts."""

    ts: str
    channel: str
    thread_ts: str | None
    user: str
    text: str
    blocks: list[dict[str, Any]]
    edited: int
    permalink: str
    bot_id: str | None = None
    metadata: dict[str, Any] | None = None

    def to_slack(self, *, team_id: str, app_id: str) -> dict[str, Any]:
        """The message object as Slack puts it in API answers and interaction payloads."""
        body: dict[str, Any] = {
            "type": "message",
            "user": self.user,
            "text": self.text,
            "blocks": copy.deepcopy(self.blocks),
            "ts": self.ts,
            "team": team_id,
        }
        if self.bot_id is not None:
            body["bot_id"] = self.bot_id
            body["app_id"] = app_id
        if self.thread_ts is not None:
            body["thread_ts"] = self.thread_ts
        if self.edited:
            body["edited"] = {"user": self.user, "ts": self.ts}
        if self.metadata is not None:
            body["metadata"] = copy.deepcopy(self.metadata)
        return body


@dataclass(frozen=True)
class Ephemeral:
    """An ephemeral message (``chat.postEphemeral`` or a ``response_url`` post)."""

    channel: str
    user: str
    text: str
    blocks: list[dict[str, Any]]
    message_ts: str
    thread_ts: str | None = None
    source: str = "chat.postEphemeral"
    edited: int = 0
    deleted: bool = False


@dataclass(frozen=True)
class View:
    """A modal as the user sees it (``view`` is the definition as last set)."""

    id: str
    hash: str
    user: str | None
    view: dict[str, Any]
    is_open: bool
    root_view_id: str
    previous_view_id: str | None = None
    external_id: str | None = None
    updates: int = 0

    @property
    def callback_id(self) -> str:
        return str(self.view.get("callback_id", ""))

    @property
    def private_metadata(self) -> str:
        return str(self.view.get("private_metadata", ""))


@dataclass(frozen=True)
class SocketConnection:
    """An open Socket Mode connection as Slack sees it (``hello`` has been sent on it)."""

    id: str
    ticket: str
    url: str
    opened_at: float
    pings_received: int
    pongs_received: int


@dataclass(frozen=True)
class SocketEnvelope:
    """One Socket Mode envelope; ``message()`` is the JSON object sent over the WebSocket."""

    envelope_id: str
    type: str
    payload: dict[str, Any]
    accepts_response_payload: bool
    retry_attempt: int = 0
    retry_reason: str = ""
    connection_id: str | None = None

    def message(self) -> dict[str, Any]:
        return {
            "envelope_id": self.envelope_id,
            "type": self.type,
            "payload": self.payload,
            "accepts_response_payload": self.accepts_response_payload,
            "retry_attempt": self.retry_attempt,
            "retry_reason": self.retry_reason,
        }


@dataclass(frozen=True)
class SocketAck:
    """How an envelope was answered: ``acked`` within the timeout or not (``error`` says why:
    ``operation_timeout``, or ``dispatch_failed`` when no connection could take it)."""

    envelope: SocketEnvelope
    acked: bool
    payload: dict[str, Any] | None = None
    seconds: float | None = None
    error: str | None = None


@dataclass
class _SocketConn:
    id: str
    ticket: str
    url: str
    opened_at: float
    ws: web.WebSocketResponse
    pings_received: int = 0
    pongs_received: int = 0
    pong_waiters: dict[bytes, asyncio.Future[None]] = field(default_factory=dict)

    def snapshot(self) -> SocketConnection:
        return SocketConnection(
            id=self.id,
            ticket=self.ticket,
            url=self.url,
            opened_at=self.opened_at,
            pings_received=self.pings_received,
            pongs_received=self.pongs_received,
        )


@dataclass
class _PendingAck:
    envelope: SocketEnvelope
    sent_at: float
    future: asyncio.Future[dict[str, Any] | None]


@dataclass
class _Channel:
    id: str
    name: str
    bot_is_member: bool
    members: set[str] | None  # None: every known user
    is_im: bool = False


@dataclass
class _StoredMessage:
    ts: str
    channel: str
    thread_ts: str | None
    user: str
    text: str
    blocks: list[dict[str, Any]]
    bot_id: str | None
    metadata: dict[str, Any] | None
    edited: int = 0


@dataclass
class _ResponseUrl:
    token: str
    channel: str | None
    user: str | None
    message_ts: str | None
    thread_ts: str | None
    is_ephemeral: bool
    created: float
    uses: int = 0


@dataclass
class _Fault:
    error: str
    status: int
    retry_after: int | None


class _SlackError(Exception):
    def __init__(
        self, error: str, messages: Sequence[str] = (), *, status: int = 200, **extra: Any
    ) -> None:
        super().__init__(error)
        self.error = error
        self.messages = list(messages)
        self.status = status
        self.extra = extra


# --------------------------------------------------------------------------------------------
# The sandbox
# --------------------------------------------------------------------------------------------


class SandboxSlack:
    """Simulated Slack workspace and Web API. Serve ``app`` (e.g. with ``serve_asgi``) and point
    ``AsyncWebClient(base_url=f"{base_url}/api/")`` at it."""

    def __init__(
        self,
        *,
        bot_token: str = "xoxb-sandbox-token",
        app_token: str | None = "xapp-1-A0SANDBOX-1-sandbox",
        team_id: str = "T0SANDBOX",
        bot_user_id: str = "U0BOT",
        clock: Callable[[], float] = time.time,
        team_domain: str = "sandbox",
        app_id: str = "A0SANDBOX",
        bot_id: str = "B0SANDBOX",
    ) -> None:
        self.bot_token = bot_token
        self.app_token = app_token
        self.team_id = team_id
        self.team_domain = team_domain
        self.bot_user_id = bot_user_id
        self.bot_id = bot_id
        self.app_id = app_id
        self.clock = clock
        self.calls: list[RecordedCall] = []
        self.ephemerals: list[Ephemeral] = []
        self.views: dict[str, View] = {}
        self.home_views: dict[str, dict[str, Any]] = {}
        self.users: dict[str, dict[str, Any]] = {}
        self.usergroups: dict[str, dict[str, Any]] = {}
        self._channels: dict[str, _Channel] = {}
        self._messages: dict[str, dict[str, _StoredMessage]] = {}
        self._triggers: dict[str, tuple[float, str | None]] = {}
        self._used_triggers: set[str] = set()
        self._response_urls: dict[str, _ResponseUrl] = {}
        self._faults: dict[str, deque[_Fault]] = {}
        self._after_success: dict[
            str,
            deque[tuple[Callable[[Mapping[str, Any]], bool], Callable[[], Awaitable[None]]]],
        ] = {}
        self.holds = Holds()
        self._home_hashes: dict[str, str] = {}
        self._home_ids: dict[str, str] = {}
        self._stacks: dict[str, list[str]] = {}
        self._last_ts_micros = 0
        self._ids = itertools.count(1)
        self._condition: asyncio.Condition | None = None
        self._condition_loop: asyncio.AbstractEventLoop | None = None
        self._socket_runner: web.AppRunner | None = None
        self._socket_base_url: str | None = None
        self._socket_lock: asyncio.Lock | None = None
        self._socket_tickets: set[str] = set()
        self._socket_conns: dict[str, _SocketConn] = {}
        self._pending_acks: dict[str, _PendingAck] = {}
        self._timed_out_acks: set[str] = set()
        self._socket_turn = itertools.count()
        self._add_bot_user()
        self.app = Starlette(
            routes=[
                Route("/api/{method}", self._api_endpoint, methods=["GET", "POST"]),
                Route("/response-url/{token}", self._response_url_endpoint, methods=["POST"]),
            ],
            lifespan=self._lifespan,
        )

    @contextlib.asynccontextmanager
    async def _lifespan(self, app: Starlette) -> AsyncIterator[None]:
        try:
            yield
        finally:
            await self.aclose()

    # ---- workspace set-up ------------------------------------------------------------------

    def _add_bot_user(self) -> None:
        self.users[self.bot_user_id] = {
            "id": self.bot_user_id,
            "team_id": self.team_id,
            "name": "provision-inline",
            "real_name": "provision-inline",
            "deleted": False,
            "is_bot": True,
            "is_admin": False,
            "profile": {
                "real_name": "provision-inline",
                "display_name": "provision-inline",
                "bot_id": self.bot_id,
            },
        }

    def add_user(
        self,
        user_id: str,
        name: str,
        *,
        real_name: str | None = None,
        email: str | None = None,
        is_admin: bool = False,
    ) -> None:
        profile: dict[str, Any] = {"real_name": real_name or name, "display_name": name}
        if email is not None:
            profile["email"] = email
        self.users[user_id] = {
            "id": user_id,
            "team_id": self.team_id,
            "name": name,
            "real_name": real_name or name,
            "deleted": False,
            "is_bot": False,
            "is_admin": is_admin,
            "tz": "Etc/UTC",
            "profile": profile,
        }

    def add_channel(
        self,
        channel_id: str,
        name: str,
        *,
        bot_is_member: bool = True,
        members: Sequence[str] | None = None,
    ) -> None:
        """Add a channel. ``members=None`` means every known user (now or later) is a member."""
        self._channels[channel_id] = _Channel(
            id=channel_id,
            name=name,
            bot_is_member=bot_is_member,
            members=None if members is None else set(members),
        )
        self._messages.setdefault(channel_id, {})

    def channel_name(self, channel_id: str) -> str | None:
        channel = self._channels.get(channel_id)
        return channel.name if channel else None

    def set_bot_membership(self, channel_id: str, is_member: bool) -> None:
        self._channels[channel_id].bot_is_member = is_member

    def add_usergroup(self, group_id: str, handle: str, user_ids: Sequence[str]) -> None:
        self.usergroups[group_id] = {
            "id": group_id,
            "team_id": self.team_id,
            "handle": handle,
            "name": handle,
            "users": list(user_ids),
        }

    def post_user_message(
        self, channel: str, user: str, text: str, *, thread_ts: str | None = None
    ) -> str:
        """Simulate a person posting (for threads and cant_update_message); returns the ts."""
        stored = self._store_message(channel, user, text, [], thread_ts, bot_id=None, metadata=None)
        return stored.ts

    # ---- trigger ids and response urls -----------------------------------------------------

    def issue_trigger_id(self, *, user_id: str | None = None) -> str:
        """A fresh trigger id, valid for 3 s by ``clock()``, usable once."""
        trigger = (
            f"{next(self._ids)}{secrets.randbelow(10**6)}.{self.team_id}.{secrets.token_hex(16)}"
        )
        self._triggers[trigger] = (self.clock(), user_id)
        return trigger

    def new_response_url(
        self,
        base_url: str,
        *,
        channel_id: str | None = None,
        user_id: str | None = None,
        message_ts: str | None = None,
        thread_ts: str | None = None,
        is_ephemeral: bool = False,
    ) -> str:
        """A response URL on this server (``base_url`` is where the sandbox is served).

        ``message_ts`` names the message an interaction came from (target of ``replace_original``
        and ``delete_original``); ``is_ephemeral`` says that message is an ephemeral one.
        """
        token = secrets.token_urlsafe(24)
        self._response_urls[token] = _ResponseUrl(
            token=token,
            channel=channel_id,
            user=user_id,
            message_ts=message_ts,
            thread_ts=thread_ts,
            is_ephemeral=is_ephemeral,
            created=self.clock(),
        )
        return f"{base_url.rstrip('/')}/response-url/{token}"

    # ---- fault injection -------------------------------------------------------------------

    def fail_next(
        self, method: str, error: str, *, status: int = 200, retry_after: int | None = None
    ) -> None:
        """Make the next call of ``method`` fail with ``error`` (queued: call again for more).

        ``status=429`` answers like Slack's rate limiter, with ``Retry-After`` (default 1 s).
        """
        if status == 429 and retry_after is None:
            retry_after = 1
        self._faults.setdefault(method, deque()).append(_Fault(error, status, retry_after))

    def after_next_success(
        self,
        method: str,
        action: Callable[[], Awaitable[None]],
        *,
        when: Callable[[Mapping[str, Any]], bool] = lambda params: True,
    ) -> None:
        """Run ``action`` once the next successful call of ``method`` (whose parameters satisfy
        ``when``) has taken effect and before it is answered (queued): the moment a caller's
        process dies, or its Redis goes, or a person clicks, between Slack doing something and
        the caller learning of it."""
        self._after_success.setdefault(method, deque()).append((when, action))

    def hold(
        self, method: str, matching: Callable[[Mapping[str, Any]], bool] | None = None
    ) -> Hold:
        """Hold the next call of ``method`` (whose arguments satisfy ``matching``) until the
        test releases it (carried out) or drops it (not carried out, connection cut); see
        ``bot.sandbox.holds``."""

        def matches(call: HeldCall) -> bool:
            return call.method == method and (matching is None or matching(call.params))

        return self.holds.arm(matches, method)

    # ---- reading state ---------------------------------------------------------------------

    def messages(self, channel: str, *, thread_ts: str | None = None) -> list[Message]:
        """Current messages of ``channel``: top-level ones, or the replies of ``thread_ts``."""
        resolved = self._resolve_channel(channel) or channel
        stored = self._messages.get(resolved, {})
        return [self._snapshot(m) for m in stored.values() if m.thread_ts == thread_ts]

    def message(self, channel: str, ts: str) -> Message:
        resolved = self._resolve_channel(channel) or channel
        try:
            return self._snapshot(self._messages[resolved][ts])
        except KeyError:
            raise KeyError(f"no message {ts} in {channel}") from None

    def all_messages(self) -> list[Message]:
        """Every message in every channel, in posting order."""
        every = [m for channel in self._messages.values() for m in channel.values()]
        return [self._snapshot(m) for m in sorted(every, key=lambda m: _ts_key(m.ts))]

    def calls_to(self, method: str) -> list[RecordedCall]:
        return [c for c in self.calls if c.method == method]

    def open_views(self, user_id: str | None = None) -> list[View]:
        return [
            v for v in self.views.values() if v.is_open and (user_id is None or v.user == user_id)
        ]

    def view_payload(self, view_id: str) -> dict[str, Any]:
        """The view object as Slack sends it (API answers, interaction payloads)."""
        record = self.views[view_id]
        return self._view_object(record.view, record.id, record.hash, record)

    def permalink(self, channel: str, ts: str, thread_ts: str | None = None) -> str:
        link = f"{PERMALINK_HOST}/archives/{channel}/p{ts.replace('.', '')}"
        if thread_ts is not None:
            link += f"?thread_ts={thread_ts}&cid={channel}"
        return link

    # ---- waiting ---------------------------------------------------------------------------

    def _get_condition(self) -> asyncio.Condition:
        loop = asyncio.get_running_loop()
        if self._condition is None or self._condition_loop is not loop:
            self._condition = asyncio.Condition()
            self._condition_loop = loop
        return self._condition

    async def notify(self) -> None:
        """Wake ``wait_for`` callers (done after every recorded call; public for drivers)."""
        condition = self._get_condition()
        async with condition:
            condition.notify_all()

    async def wait_for(
        self,
        predicate: Callable[[SandboxSlack], T | bool | None],
        *,
        timeout: float = 5.0,  # noqa: ASYNC109 - the documented API; asyncio.timeout inside
    ) -> T:
        """Return the first truthy ``predicate(self)``, re-evaluated whenever a call is recorded.

        Raises ``TimeoutError`` with a dump of the most recent calls after ``timeout`` seconds.
        """
        condition = self._get_condition()
        try:
            async with asyncio.timeout(timeout):
                async with condition:
                    while True:
                        result = predicate(self)
                        if result:
                            return result  # type: ignore[return-value]
                        await condition.wait()
        except TimeoutError:
            raise TimeoutError(
                f"SandboxSlack.wait_for: condition not met within {timeout}s\n{self.dump()}"
            ) from None

    def dump(self, last: int = 20) -> str:
        """A readable summary of the most recent calls and of the current messages."""
        lines = [f"last {min(last, len(self.calls))} of {len(self.calls)} calls:"]
        for call in self.calls[-last:]:
            outcome = "ok" if call.ok else f"error={call.error} status={call.status}"
            shown = {k: _shorten(v) for k, v in call.params.items()}
            lines.append(f"  {call.method} {outcome} {shown}")
        messages = self.all_messages()
        lines.append(f"{len(messages)} messages:")
        for message in messages[-last:]:
            where = f"{message.channel}/{message.ts}"
            if message.thread_ts:
                where += f" (thread {message.thread_ts})"
            lines.append(f"  {where} {message.user}: {_shorten(message.text)}")
        return "\n".join(lines)

    # ---- recording -------------------------------------------------------------------------

    async def record(
        self,
        method: str,
        params: Mapping[str, Any],
        *,
        ok: bool,
        error: str | None,
        status: int = 200,
        response: Mapping[str, Any] | None = None,
        client: tuple[str, int] | None = None,
    ) -> RecordedCall:
        call = RecordedCall(
            method=method,
            params=dict(params),
            ok=ok,
            error=error,
            at=self.clock(),
            status=status,
            response=dict(response or {}),
            client=client,
        )
        self.calls.append(call)
        await self.notify()
        return call

    # ---- HTTP endpoints --------------------------------------------------------------------

    async def _api_endpoint(self, request: Request) -> Response:
        method = request.path_params["method"]
        try:
            params, token = await _read_params(request)
        except _SlackError as problem:
            return await self._answer(method, {}, problem)
        client = (request.client.host, request.client.port) if request.client else None
        call = HeldCall("slack", method, request.url.path, params, client)
        if not await self.holds.pass_through(call):
            await self.record(method, params, ok=False, error="dropped", status=0)
            return _CutOff()
        fault_queue = self._faults.get(method)
        if fault_queue:
            fault = fault_queue.popleft()
            return await self._answer(
                method,
                params,
                _SlackError(fault.error, status=fault.status),
                retry_after=fault.retry_after,
            )
        if token is None:
            return await self._answer(method, params, _SlackError("not_authed"))
        if method == "apps.connections.open":
            return await self._apps_connections_open(params, token)
        if token == self.app_token:
            return await self._answer(method, params, _SlackError("not_allowed_token_type"))
        if token != self.bot_token:
            return await self._answer(method, params, _SlackError("invalid_auth"))
        handler = self._handlers().get(method)
        if handler is None:
            return await self._answer(method, params, _SlackError("unknown_method"))
        try:
            result = handler(params)
        except _SlackError as problem:
            return await self._answer(method, params, problem)
        body = {"ok": True, **result}
        await self.record(method, params, ok=True, error=None, response=body, client=client)
        waiting = self._after_success.get(method)
        chosen = next((hook for hook in waiting or () if hook[0](params)), None)
        if waiting is not None and chosen is not None:
            waiting.remove(chosen)
            await chosen[1]()  # done, but not answered yet: the caller has no ts so far
        return JSONResponse(body)

    async def _answer(
        self,
        method: str,
        params: Mapping[str, Any],
        problem: _SlackError,
        *,
        retry_after: int | None = None,
    ) -> Response:
        body: dict[str, Any] = {"ok": False, "error": problem.error, **problem.extra}
        if problem.messages:
            body["response_metadata"] = {"messages": list(problem.messages)}
        headers = {"Retry-After": str(retry_after)} if retry_after is not None else None
        await self.record(
            method, params, ok=False, error=problem.error, status=problem.status, response=body
        )
        return JSONResponse(body, status_code=problem.status, headers=headers)

    def _handlers(self) -> dict[str, Callable[[dict[str, Any]], dict[str, Any]]]:
        return {
            "auth.test": self._auth_test,
            "chat.postMessage": self._chat_post_message,
            "chat.update": self._chat_update,
            "chat.delete": self._chat_delete,
            "chat.postEphemeral": self._chat_post_ephemeral,
            "chat.getPermalink": self._chat_get_permalink,
            "views.open": self._views_open,
            "views.push": self._views_push,
            "views.update": self._views_update,
            "views.publish": self._views_publish,
            "usergroups.users.list": self._usergroups_users_list,
            "users.info": self._users_info,
            "conversations.info": self._conversations_info,
            "conversations.open": self._conversations_open,
        }

    # ---- helpers ---------------------------------------------------------------------------

    def _next_ts(self) -> str:
        micros = max(int(self.clock() * 1_000_000), self._last_ts_micros + 1)
        self._last_ts_micros = micros
        return f"{micros // 1_000_000}.{micros % 1_000_000:06d}"

    def _resolve_channel(self, value: str) -> str | None:
        if value in self._channels:
            return value
        if value.startswith("#"):
            for channel in self._channels.values():
                if channel.name == value[1:]:
                    return channel.id
            return None
        if value in self.users and value != self.bot_user_id:
            dm_id = "D" + value[1:]
            if dm_id not in self._channels:
                self._channels[dm_id] = _Channel(
                    id=dm_id, name=value, bot_is_member=True, members={value}, is_im=True
                )
                self._messages.setdefault(dm_id, {})
            return dm_id
        for channel in self._channels.values():
            if channel.name == value:
                return channel.id
        return None

    def _is_member(self, channel: _Channel, user: str) -> bool:
        if user == self.bot_user_id:
            return channel.bot_is_member
        if user not in self.users:
            return False
        return channel.members is None or user in channel.members

    def _channel_for_write(self, params: Mapping[str, Any]) -> _Channel:
        raw = params.get("channel")
        if not isinstance(raw, str) or not raw:
            raise _SlackError("channel_not_found")
        resolved = self._resolve_channel(raw)
        if resolved is None:
            raise _SlackError("channel_not_found")
        channel = self._channels[resolved]
        if not channel.bot_is_member:
            raise _SlackError("not_in_channel")
        return channel

    def _content(
        self, params: Mapping[str, Any], *, surface: Surface = "message", require: bool = True
    ) -> tuple[str | None, list[dict[str, Any]] | None]:
        """(text, blocks) of a message call, validated; ``None`` where the argument is absent."""
        text = params.get("text")
        if text is not None and not isinstance(text, str):
            text = str(text)
        blocks: list[dict[str, Any]] | None = None
        if "blocks" in params and params["blocks"] not in (None, ""):
            raw = params["blocks"]
            if not isinstance(raw, list):
                raise _SlackError(
                    "invalid_blocks_format", ["[ERROR] blocks must be a JSON array of blocks"]
                )
            problems = validate_blocks(raw, surface=surface)
            if problems:
                raise _SlackError("invalid_blocks", [f"[ERROR] {p}" for p in problems])
            blocks = with_generated_ids(raw)
        has_attachments = bool(params.get("attachments"))
        if require and not text and not blocks and not has_attachments:
            raise _SlackError("no_text")
        if text is not None and len(text) > MAX_MESSAGE_TEXT:
            raise _SlackError("msg_too_long")
        return text, blocks

    def _store_message(
        self,
        channel_id: str,
        user: str,
        text: str,
        blocks: list[dict[str, Any]],
        thread_ts: str | None,
        *,
        bot_id: str | None,
        metadata: dict[str, Any] | None,
    ) -> _StoredMessage:
        channel_messages = self._messages.setdefault(channel_id, {})
        if thread_ts is not None:
            parent = channel_messages.get(thread_ts)
            if parent is None:
                raise _SlackError("thread_not_found")
            if parent.thread_ts is not None:  # a reply's ts: Slack threads it under the parent
                thread_ts = parent.thread_ts
        stored = _StoredMessage(
            ts=self._next_ts(),
            channel=channel_id,
            thread_ts=thread_ts,
            user=user,
            text=text,
            blocks=blocks,
            bot_id=bot_id,
            metadata=metadata,
        )
        channel_messages[stored.ts] = stored
        return stored

    def _snapshot(self, stored: _StoredMessage) -> Message:
        return Message(
            ts=stored.ts,
            channel=stored.channel,
            thread_ts=stored.thread_ts,
            user=stored.user,
            text=stored.text,
            blocks=copy.deepcopy(stored.blocks),
            edited=stored.edited,
            permalink=self.permalink(stored.channel, stored.ts, stored.thread_ts),
            bot_id=stored.bot_id,
            metadata=copy.deepcopy(stored.metadata),
        )

    def _message_body(self, stored: _StoredMessage) -> dict[str, Any]:
        return self._snapshot(stored).to_slack(team_id=self.team_id, app_id=self.app_id)

    def _take_trigger(self, params: Mapping[str, Any]) -> str | None:
        trigger = params.get("trigger_id") or params.get("interactivity_pointer")
        if not isinstance(trigger, str) or not trigger:
            raise _SlackError("invalid_arguments", ["[ERROR] missing required field: trigger_id"])
        if trigger in self._used_triggers:
            raise _SlackError("exchanged_trigger_id")
        issued = self._triggers.get(trigger)
        if issued is None:
            raise _SlackError("invalid_trigger_id")
        issued_at, user = issued
        if self.clock() - issued_at > TRIGGER_TTL_SECONDS:
            raise _SlackError("expired_trigger_id")
        del self._triggers[trigger]
        self._used_triggers.add(trigger)
        return user

    def _checked_view(self, params: Mapping[str, Any], *, kind: str) -> dict[str, Any]:
        view = params.get("view")
        if view is None:
            raise _SlackError("invalid_arguments", ["[ERROR] missing required field: view"])
        if not isinstance(view, dict):
            raise _SlackError("invalid_arguments", ["[ERROR] view must be a JSON object"])
        problems = validate_view(view)
        if not problems and view.get("type") != kind:
            problems = [f"must be {kind} [json-pointer:/view/type]"]
        if problems:
            raise _SlackError("invalid_arguments", [f"[ERROR] {p}" for p in problems])
        stored = copy.deepcopy(view)
        stored["blocks"] = with_generated_ids(stored.get("blocks", []))
        external = stored.get("external_id")
        if external:
            for record in self.views.values():
                if record.external_id == external and record.is_open:
                    raise _SlackError("duplicate_external_id")
        return stored

    def _new_hash(self) -> str:
        return f"{int(self.clock())}.{secrets.token_hex(4)}"

    def _new_view_id(self) -> str:
        return f"V{next(self._ids):04d}{secrets.token_hex(3).upper()}"

    def _view_object(
        self, view: Mapping[str, Any], view_id: str, view_hash: str, record: View | None
    ) -> dict[str, Any]:
        return {
            "id": view_id,
            "team_id": self.team_id,
            "type": view.get("type"),
            "title": copy.deepcopy(view.get("title")),
            "submit": copy.deepcopy(view.get("submit")),
            "close": copy.deepcopy(view.get("close")),
            "blocks": copy.deepcopy(view.get("blocks", [])),
            "private_metadata": view.get("private_metadata", ""),
            "callback_id": view.get("callback_id", ""),
            "external_id": view.get("external_id", ""),
            "state": {"values": {}},
            "hash": view_hash,
            "clear_on_close": bool(view.get("clear_on_close", False)),
            "notify_on_close": bool(view.get("notify_on_close", False)),
            "root_view_id": record.root_view_id if record else view_id,
            "previous_view_id": record.previous_view_id if record else None,
            "app_id": self.app_id,
            "app_installed_team_id": self.team_id,
            "bot_id": self.bot_id,
        }

    # ---- views state changes (also used by the driver to apply response_action) -----------

    def open_view(self, view: dict[str, Any], user: str | None, *, push: bool = False) -> View:
        stack = self._stacks.setdefault(user or "", [])
        if push:
            if not stack:
                raise _SlackError("not_found")
            if len(stack) >= MAX_VIEW_STACK:
                raise _SlackError("push_limit_reached")
        else:
            self.close_views(user, everything=True)
            stack = self._stacks.setdefault(user or "", [])
        view_id = self._new_view_id()
        record = View(
            id=view_id,
            hash=self._new_hash(),
            user=user,
            view=view,
            is_open=True,
            root_view_id=stack[0] if stack else view_id,
            previous_view_id=stack[-1] if stack else None,
            external_id=view.get("external_id") or None,
        )
        stack.append(view_id)
        self.views[view_id] = record
        return record

    def replace_view(self, view_id: str, view: dict[str, Any]) -> View:
        record = self.views[view_id]
        updated = replace(
            record,
            view=view,
            hash=self._new_hash(),
            updates=record.updates + 1,
            external_id=view.get("external_id") or record.external_id,
        )
        self.views[view_id] = updated
        return updated

    def close_views(
        self, user: str | None, *, everything: bool, view_id: str | None = None
    ) -> None:
        """Close the top of ``user``'s modal stack (or ``view_id`` and those above it), or all."""
        stack = self._stacks.get(user or "", [])
        if everything:
            closing = list(stack)
        elif view_id is not None and view_id in stack:
            closing = stack[stack.index(view_id) :]
        else:
            closing = stack[-1:]
        for closed in closing:
            stack.remove(closed)
            self.views[closed] = replace(self.views[closed], is_open=False)

    # ---- Web API methods -------------------------------------------------------------------

    def _auth_test(self, params: dict[str, Any]) -> dict[str, Any]:
        return {
            "url": f"https://{self.team_domain}.slack.test/",
            "team": self.team_domain,
            "user": self.users[self.bot_user_id]["name"],
            "team_id": self.team_id,
            "user_id": self.bot_user_id,
            "bot_id": self.bot_id,
            "is_enterprise_install": False,
        }

    def _chat_post_message(self, params: dict[str, Any]) -> dict[str, Any]:
        channel = self._channel_for_write(params)
        text, blocks = self._content(params)
        thread_ts = params.get("thread_ts") or None
        if thread_ts is not None and (
            not isinstance(thread_ts, str) or not re.fullmatch(r"\d+\.\d+", thread_ts)
        ):
            raise _SlackError("invalid_thread_ts")
        metadata = params.get("metadata")
        stored = self._store_message(
            channel.id,
            self.bot_user_id,
            text or "",
            blocks or [],
            thread_ts,
            bot_id=self.bot_id,
            metadata=metadata if isinstance(metadata, dict) else None,
        )
        return {"channel": channel.id, "ts": stored.ts, "message": self._message_body(stored)}

    def _find_message(self, params: Mapping[str, Any], key: str = "ts") -> _StoredMessage:
        raw = params.get("channel")
        resolved = self._resolve_channel(raw) if isinstance(raw, str) else None
        if resolved is None:
            raise _SlackError("channel_not_found")
        stored = self._messages.get(resolved, {}).get(str(params.get(key, "")))
        if stored is None:
            raise _SlackError("message_not_found")
        return stored

    def _chat_update(self, params: dict[str, Any]) -> dict[str, Any]:
        stored = self._find_message(params)
        if stored.user != self.bot_user_id:
            raise _SlackError("cant_update_message")
        text, blocks = self._content(params, require="blocks" not in params)
        if text is not None:
            stored.text = text
        if blocks is not None:
            stored.blocks = blocks
        elif "blocks" in params:  # an empty array removes the blocks
            stored.blocks = []
        if isinstance(params.get("metadata"), dict):
            stored.metadata = params["metadata"]
        stored.edited += 1
        return {
            "channel": stored.channel,
            "ts": stored.ts,
            "text": stored.text,
            "message": self._message_body(stored),
        }

    def _chat_delete(self, params: dict[str, Any]) -> dict[str, Any]:
        stored = self._find_message(params)
        if stored.user != self.bot_user_id:
            raise _SlackError("cant_delete_message")
        del self._messages[stored.channel][stored.ts]
        return {"channel": stored.channel, "ts": stored.ts}

    def _chat_post_ephemeral(self, params: dict[str, Any]) -> dict[str, Any]:
        channel = self._channel_for_write(params)
        user = params.get("user")
        if not isinstance(user, str) or user not in self.users:
            raise _SlackError("user_not_found")
        if not self._is_member(channel, user):
            raise _SlackError("user_not_in_channel")
        text, blocks = self._content(params)
        thread_ts = params.get("thread_ts") or None
        ephemeral = Ephemeral(
            channel=channel.id,
            user=user,
            text=text or "",
            blocks=blocks or [],
            message_ts=self._next_ts(),
            thread_ts=thread_ts if isinstance(thread_ts, str) else None,
        )
        self.ephemerals.append(ephemeral)
        return {"message_ts": ephemeral.message_ts}

    def _chat_get_permalink(self, params: dict[str, Any]) -> dict[str, Any]:
        stored = self._find_message(params, key="message_ts")
        return {
            "channel": stored.channel,
            "permalink": self.permalink(stored.channel, stored.ts, stored.thread_ts),
        }

    def _views_open(self, params: dict[str, Any]) -> dict[str, Any]:
        user = self._take_trigger(params)
        view = self._checked_view(params, kind="modal")
        record = self.open_view(view, user)
        return {"view": self.view_payload(record.id)}

    def _views_push(self, params: dict[str, Any]) -> dict[str, Any]:
        user = self._take_trigger(params)
        view = self._checked_view(params, kind="modal")
        record = self.open_view(view, user, push=True)
        return {"view": self.view_payload(record.id)}

    def _views_update(self, params: dict[str, Any]) -> dict[str, Any]:
        view_id = params.get("view_id")
        external_id = params.get("external_id")
        record: View | None = None
        if view_id:
            record = self.views.get(str(view_id))
        elif external_id:
            record = next(
                (v for v in self.views.values() if v.external_id == external_id and v.is_open),
                None,
            )
        else:
            raise _SlackError(
                "invalid_arguments", ["[ERROR] either view_id or external_id is required"]
            )
        if record is None or not record.is_open:
            raise _SlackError("not_found")
        given_hash = params.get("hash")
        if given_hash and given_hash != record.hash:
            raise _SlackError("hash_conflict")
        view = self._checked_view_for_update(params, record)
        updated = self.replace_view(record.id, view)
        return {"view": self.view_payload(updated.id)}

    def _checked_view_for_update(self, params: Mapping[str, Any], record: View) -> dict[str, Any]:
        external = record.external_id
        if external:  # its own external_id is not a duplicate
            self.views[record.id] = replace(record, external_id=None)
        try:
            return self._checked_view(params, kind="modal")
        finally:
            self.views[record.id] = record

    def _views_publish(self, params: dict[str, Any]) -> dict[str, Any]:
        user = params.get("user_id")
        if not isinstance(user, str) or user not in self.users:
            raise _SlackError("invalid_arguments", ["[ERROR] invalid `user_id`"])
        given_hash = params.get("hash")
        if given_hash and given_hash != self._home_hashes.get(user):
            raise _SlackError("hash_conflict")
        view = self._checked_view(params, kind="home")
        view_id = self._home_ids.setdefault(user, self._new_view_id())
        view_hash = self._new_hash()
        self._home_hashes[user] = view_hash
        self.home_views[user] = view
        return {"view": self._view_object(view, view_id, view_hash, None)}

    def home_view_payload(self, user_id: str) -> dict[str, Any] | None:
        view = self.home_views.get(user_id)
        if view is None:
            return None
        return self._view_object(view, self._home_ids[user_id], self._home_hashes[user_id], None)

    def _usergroups_users_list(self, params: dict[str, Any]) -> dict[str, Any]:
        group = self.usergroups.get(str(params.get("usergroup", "")))
        if group is None:
            raise _SlackError("no_such_subteam")
        return {"users": list(group["users"])}

    def _users_info(self, params: dict[str, Any]) -> dict[str, Any]:
        user = self.users.get(str(params.get("user", "")))
        if user is None:
            raise _SlackError("user_not_found")
        return {"user": copy.deepcopy(user)}

    def _conversations_info(self, params: dict[str, Any]) -> dict[str, Any]:
        raw = params.get("channel")
        resolved = self._resolve_channel(raw) if isinstance(raw, str) else None
        if resolved is None:
            raise _SlackError("channel_not_found")
        channel = self._channels[resolved]
        return {
            "channel": {
                "id": channel.id,
                "name": channel.name,
                "is_channel": not channel.is_im,
                "is_im": channel.is_im,
                "is_private": channel.id.startswith("G"),
                "is_archived": False,
                "is_member": channel.bot_is_member,
                "context_team_id": self.team_id,
            }
        }

    def _conversations_open(self, params: dict[str, Any]) -> dict[str, Any]:
        users = str(params.get("users", "")).split(",")
        if len(users) != 1 or users[0] not in self.users:
            raise _SlackError("user_not_found")
        resolved = self._resolve_channel(users[0])
        return {"channel": {"id": resolved}}

    # ---- response_url ----------------------------------------------------------------------

    # ---- Socket Mode -----------------------------------------------------------------------

    async def _apps_connections_open(self, params: dict[str, Any], token: str) -> Response:
        method = "apps.connections.open"
        if self.app_token is None or token != self.app_token:
            # Slack: a bot or user token is the wrong kind; anything else is not a token at all.
            error = "not_allowed_token_type" if token == self.bot_token else "invalid_auth"
            return await self._answer(method, params, _SlackError(error))
        base_url = await self._socket_server()
        ticket = str(uuid.uuid4())
        self._socket_tickets.add(ticket)
        body = {"ok": True, "url": f"{base_url}/socket-mode/{ticket}"}
        await self.record(method, params, ok=True, error=None, response=body)
        return JSONResponse(body)

    async def _socket_server(self) -> str:
        """Start the Socket Mode WebSocket server (once); its ``ws://`` base URL."""
        if self._socket_lock is None:
            self._socket_lock = asyncio.Lock()
        async with self._socket_lock:
            if self._socket_base_url is None:
                app = web.Application()
                app.router.add_get("/socket-mode/{ticket}", self._socket_endpoint)
                runner = web.AppRunner(app, access_log=None, shutdown_timeout=2.0)
                await runner.setup()
                listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                try:
                    listener.bind(("127.0.0.1", 0))
                    port: int = listener.getsockname()[1]
                    await web.SockSite(runner, listener).start()
                except BaseException:
                    listener.close()
                    await runner.cleanup()
                    raise
                self._socket_runner = runner
                self._socket_base_url = f"ws://127.0.0.1:{port}"
            return self._socket_base_url

    async def _socket_endpoint(self, request: web.Request) -> web.StreamResponse:
        ticket = request.match_info["ticket"]
        if ticket not in self._socket_tickets:
            await self.record(
                "socket_mode.connect",
                {"ticket": ticket},
                ok=False,
                error="invalid_ticket",
                status=401,
            )
            return web.Response(status=401, text="invalid_ticket: call apps.connections.open")
        self._socket_tickets.discard(ticket)  # a URL is good for one connection
        ws = web.WebSocketResponse(autoping=False, timeout=2.0)
        await ws.prepare(request)
        conn = _SocketConn(
            id=f"CONN{next(self._ids):04d}",
            ticket=ticket,
            url=f"{self._socket_base_url}/socket-mode/{ticket}",
            opened_at=self.clock(),
            ws=ws,
        )
        self._socket_conns[conn.id] = conn
        hello = {
            "type": "hello",
            "num_connections": len(self._socket_conns),
            "debug_info": {
                "host": "applink-sandbox",
                "build_number": 1,
                "approximate_connection_time": 18060,
            },
            "connection_info": {"app_id": self.app_id},
        }
        try:
            await ws.send_str(json.dumps(hello))
            await self.record(
                "socket_mode.hello",
                {"connection_id": conn.id, "num_connections": hello["num_connections"]},
                ok=True,
                error=None,
                response=hello,
            )
            async for frame in ws:
                if frame.type is WSMsgType.TEXT:
                    await self._socket_received(conn, str(frame.data))
                elif frame.type is WSMsgType.PING:
                    conn.pings_received += 1
                    await ws.pong(frame.data)
                    await self.notify()
                elif frame.type is WSMsgType.PONG:
                    conn.pongs_received += 1
                    waiter = conn.pong_waiters.pop(bytes(frame.data), None)
                    if waiter is not None and not waiter.done():
                        waiter.set_result(None)
                    await self.notify()
                else:
                    await self.record(
                        "socket_mode.message",
                        {"connection_id": conn.id, "frame": frame.type.name},
                        ok=False,
                        error="unexpected_frame",
                    )
        finally:
            self._socket_conns.pop(conn.id, None)
            for waiter in conn.pong_waiters.values():
                waiter.cancel()
            await self.record(
                "socket_mode.closed",
                {"connection_id": conn.id, "close_code": ws.close_code},
                ok=True,
                error=None,
            )
        return ws

    async def _socket_received(self, conn: _SocketConn, text: str) -> None:
        """A text frame from the app: only acks ``{"envelope_id", "payload"?}`` are expected."""
        try:
            message = json.loads(text)
        except json.JSONDecodeError:
            message = None
        params: dict[str, Any] = {"connection_id": conn.id, "text": text}
        envelope_id = message.get("envelope_id") if isinstance(message, dict) else None
        if not isinstance(message, dict) or not isinstance(envelope_id, str):
            await self.record("socket_mode.message", params, ok=False, error="not_an_ack")
            return
        payload = message.get("payload")
        if payload is not None and not isinstance(payload, dict):
            await self.record("socket_mode.ack", params, ok=False, error="invalid_payload")
            return
        pending = self._pending_acks.pop(envelope_id, None)
        if pending is None:
            late = envelope_id in self._timed_out_acks
            error = "ack_after_timeout" if late else "unknown_envelope_id"
            await self.record("socket_mode.ack", params, ok=False, error=error)
            return
        if not pending.future.done():
            pending.future.set_result(payload)

    def _open_socket_conns(self) -> list[_SocketConn]:
        return [c for c in self._socket_conns.values() if not c.ws.closed]

    def _socket_targets(self, connection_id: str | None) -> list[_SocketConn]:
        conns = self._open_socket_conns()
        if connection_id is None:
            return conns
        return [c for c in conns if c.id == connection_id]

    def socket_connections(self) -> list[SocketConnection]:
        """The open Socket Mode connections (each has been sent ``hello``), oldest first."""
        return [c.snapshot() for c in self._open_socket_conns()]

    async def deliver(
        self,
        envelope_type: str,
        payload: Mapping[str, Any],
        *,
        accepts_response_payload: bool | None = None,
        retry_attempt: int = 0,
        retry_reason: str = "",
        connection_id: str | None = None,
        timeout: float = SOCKET_MODE_ACK_TIMEOUT,  # noqa: ASYNC109 - Slack's ack deadline
    ) -> SocketAck:
        """Send an envelope over Socket Mode, as Slack does, and wait for its ack.

        ``envelope_type`` is ``slash_commands``, ``interactive`` or ``events_api``; ``payload``
        is what Slack would POST in HTTP mode (form fields as a dict, the parsed interaction
        JSON, the ``event_callback`` body). The envelope goes to ``connection_id`` or, taking
        turns, to one of the open connections; with none open it is not delivered
        (``dispatch_failed``). An ack that does not arrive within ``timeout`` seconds (Slack: 3)
        leaves the envelope not acked (``operation_timeout``); a later one is recorded as
        ``ack_after_timeout``.
        """
        if envelope_type not in SOCKET_MODE_ENVELOPE_TYPES:
            raise ValueError(f"unknown envelope type {envelope_type!r}")
        if accepts_response_payload is None:
            accepts_response_payload = envelope_type == "slash_commands" or (
                envelope_type == "interactive"
                and payload.get("type") in _RESPONSE_PAYLOAD_INTERACTIONS
            )
        targets = self._socket_targets(connection_id)
        conn = targets[next(self._socket_turn) % len(targets)] if targets else None
        envelope = SocketEnvelope(
            envelope_id=str(uuid.uuid4()),
            type=envelope_type,
            payload=json.loads(json.dumps(payload)),
            accepts_response_payload=accepts_response_payload,
            retry_attempt=retry_attempt,
            retry_reason=retry_reason,
            connection_id=conn.id if conn else None,
        )
        params = {
            "envelope_id": envelope.envelope_id,
            "type": envelope_type,
            "connection_id": envelope.connection_id,
            "payload": envelope.payload,
        }
        loop = asyncio.get_running_loop()
        pending = _PendingAck(envelope, loop.time(), loop.create_future())
        self._pending_acks[envelope.envelope_id] = pending
        sent = False
        if conn is not None:
            with contextlib.suppress(ConnectionError):  # closed under our feet
                await conn.ws.send_str(json.dumps(envelope.message()))
                sent = True
        if not sent:
            self._pending_acks.pop(envelope.envelope_id, None)
            await self.record("socket_mode.envelope", params, ok=False, error="dispatch_failed")
            return SocketAck(envelope, acked=False, error="dispatch_failed")
        await self.record("socket_mode.envelope", params, ok=True, error=None)
        ack_params = {"envelope_id": envelope.envelope_id, "type": envelope_type}
        try:
            async with asyncio.timeout(timeout):
                ack_payload = await pending.future
        except TimeoutError:
            self._pending_acks.pop(envelope.envelope_id, None)
            self._timed_out_acks.add(envelope.envelope_id)
            await self.record("socket_mode.ack", ack_params, ok=False, error="operation_timeout")
            return SocketAck(envelope, acked=False, error="operation_timeout")
        seconds = loop.time() - pending.sent_at
        await self.record(
            "socket_mode.ack",
            {**ack_params, "payload": ack_payload, "seconds": round(seconds, 4)},
            ok=True,
            error=None,
        )
        return SocketAck(envelope, acked=True, payload=ack_payload, seconds=seconds)

    async def disconnect(
        self, reason: str = "refresh_requested", *, connection_id: str | None = None
    ) -> list[str]:
        """Send Slack's ``disconnect`` message (``refresh_requested``, ``link_disabled``,
        ``too_many_websockets``, ...) to one connection or all; the ids it went to. The app is
        expected to open a new connection and drop this one, as with Slack."""
        message = {
            "type": "disconnect",
            "reason": reason,
            "debug_info": {"host": "applink-sandbox"},
        }
        sent: list[str] = []
        for conn in self._socket_targets(connection_id):
            with contextlib.suppress(ConnectionError):
                await conn.ws.send_str(json.dumps(message))
                sent.append(conn.id)
                await self.record(
                    "socket_mode.disconnect",
                    {"connection_id": conn.id, "reason": reason},
                    ok=True,
                    error=None,
                )
        return sent

    async def close_connection(
        self, connection_id: str | None = None, *, code: int = WSCloseCode.GOING_AWAY
    ) -> list[str]:
        """Close one connection (or all) from Slack's side without a ``disconnect`` message,
        like a restart of Slack's edge; the ids closed."""
        closed: list[str] = []
        for conn in self._socket_targets(connection_id):
            await conn.ws.close(code=code, message=b"closed by the sandbox")
            closed.append(conn.id)
        return closed

    async def ping(
        self,
        connection_id: str | None = None,
        *,
        timeout: float = SOCKET_MODE_ACK_TIMEOUT,  # noqa: ASYNC109 - a deadline, not a sleep
    ) -> float:
        """Ping a connection (the newest, by default) as Slack does; seconds until its pong.
        Raises ``LookupError`` with no open connection, ``TimeoutError`` without a pong."""
        targets = self._socket_targets(connection_id)
        if not targets:
            raise LookupError(f"no open Socket Mode connection {connection_id or ''}".strip())
        conn = targets[-1]
        loop = asyncio.get_running_loop()
        data = secrets.token_hex(8).encode()
        waiter: asyncio.Future[None] = loop.create_future()
        conn.pong_waiters[data] = waiter
        started = loop.time()
        await conn.ws.ping(data)
        try:
            async with asyncio.timeout(timeout):
                await waiter
        finally:
            conn.pong_waiters.pop(data, None)
        return loop.time() - started

    async def aclose(self) -> None:
        """Close every Socket Mode connection and stop the WebSocket server (idempotent)."""
        runner, self._socket_runner = self._socket_runner, None
        self._socket_base_url = None
        if runner is None:
            return
        for conn in list(self._socket_conns.values()):
            with contextlib.suppress(ConnectionError):
                await conn.ws.close(code=WSCloseCode.GOING_AWAY, message=b"sandbox stopping")
        await runner.cleanup()

    async def _response_url_endpoint(self, request: Request) -> Response:
        token = request.path_params["token"]
        raw = await request.body()
        try:
            payload = json.loads(raw) if raw else {}
        except json.JSONDecodeError:
            payload = None
        params = payload if isinstance(payload, dict) else {"_raw": raw.decode(errors="replace")}
        connection = (request.client.host, request.client.port) if request.client else None
        try:
            self._apply_response_url(token, payload)
        except _SlackError as problem:
            body = {"ok": False, "error": problem.error}
            if problem.messages:
                body["response_metadata"] = {"messages": problem.messages}
            await self.record(
                "response_url",
                params,
                ok=False,
                error=problem.error,
                status=problem.status,
                client=connection,
            )
            return JSONResponse(body, status_code=problem.status)
        await self.record("response_url", params, ok=True, error=None, client=connection)
        return JSONResponse({"ok": True})

    def _apply_response_url(self, token: str, payload: Any) -> None:
        if not isinstance(payload, dict):
            raise _SlackError("invalid_payload", status=400)
        hook = self._response_urls.get(token)
        if hook is None:
            raise _SlackError("no_active_hooks", status=404)
        if self.clock() - hook.created > RESPONSE_URL_TTL_SECONDS:
            raise _SlackError("expired_url", status=404)
        if hook.uses >= RESPONSE_URL_MAX_USES:
            raise _SlackError("used_url", status=404)
        hook.uses += 1
        delete = _truthy(payload.get("delete_original"))
        replace_original = _truthy(payload.get("replace_original"))
        if delete:
            self._delete_original(hook)
            return
        text, blocks = self._content(payload)
        if replace_original and hook.message_ts is not None:
            self._replace_original(hook, text or "", blocks or [])
            return
        if hook.channel is None:
            raise _SlackError("channel_not_found", status=404)
        thread_ts = payload.get("thread_ts") or hook.thread_ts
        if payload.get("response_type") == "in_channel":
            self._store_message(
                hook.channel,
                self.bot_user_id,
                text or "",
                blocks or [],
                thread_ts if isinstance(thread_ts, str) else None,
                bot_id=self.bot_id,
                metadata=None,
            )
            return
        self.ephemerals.append(
            Ephemeral(
                channel=hook.channel,
                user=hook.user or "",
                text=text or "",
                blocks=blocks or [],
                message_ts=self._next_ts(),
                thread_ts=thread_ts if isinstance(thread_ts, str) else None,
                source="response_url",
            )
        )

    def _ephemeral_index(self, hook: _ResponseUrl) -> int:
        for index, ephemeral in enumerate(self.ephemerals):
            if ephemeral.message_ts == hook.message_ts and not ephemeral.deleted:
                return index
        raise _SlackError("message_not_found", status=404)

    def _delete_original(self, hook: _ResponseUrl) -> None:
        if hook.message_ts is None or hook.channel is None:
            raise _SlackError("message_not_found", status=404)
        if hook.is_ephemeral:
            index = self._ephemeral_index(hook)
            self.ephemerals[index] = replace(self.ephemerals[index], deleted=True)
            return
        if self._messages.get(hook.channel, {}).pop(hook.message_ts, None) is None:
            raise _SlackError("message_not_found", status=404)

    def _replace_original(
        self, hook: _ResponseUrl, text: str, blocks: list[dict[str, Any]]
    ) -> None:
        if hook.is_ephemeral:
            index = self._ephemeral_index(hook)
            old = self.ephemerals[index]
            self.ephemerals[index] = replace(old, text=text, blocks=blocks, edited=old.edited + 1)
            return
        stored = self._messages.get(hook.channel or "", {}).get(hook.message_ts or "")
        if stored is None:
            raise _SlackError("message_not_found", status=404)
        stored.text = text
        stored.blocks = blocks
        stored.edited += 1


# --------------------------------------------------------------------------------------------
# Module helpers
# --------------------------------------------------------------------------------------------


class _CutOff(Response):
    """No answer: the response starts, promises a body and ends the exchange without it, so
    the caller sees a broken connection (a dropped call)."""

    def __init__(self) -> None:
        super().__init__(status_code=200)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send(
            {"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"64")]}
        )


async def _read_params(request: Request) -> tuple[dict[str, Any], str | None]:
    """Arguments from the query string and the body (form or JSON), JSON fields decoded."""
    params: dict[str, Any] = dict(request.query_params)
    body = await request.body()
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if body:
        if content_type == "application/json":
            try:
                data = json.loads(body)
            except (json.JSONDecodeError, UnicodeDecodeError):
                raise _SlackError("invalid_json") from None
            if not isinstance(data, dict):
                raise _SlackError("invalid_json")
            params.update(data)
        elif content_type in ("application/x-www-form-urlencoded", "text/plain", ""):
            try:
                params.update(parse_qsl(body.decode("utf-8"), keep_blank_values=True))
            except UnicodeDecodeError:
                raise _SlackError("invalid_form_data") from None
        elif content_type == "multipart/form-data":
            form = await request.form()
            params.update({k: v for k, v in form.items() if isinstance(v, str)})
        else:
            raise _SlackError("invalid_post_type")
    for key in _JSON_FIELDS:
        value = params.get(key)
        if isinstance(value, str) and value:
            with contextlib.suppress(json.JSONDecodeError):  # else the method reports it
                params[key] = json.loads(value)
    token: str | None = None
    header = request.headers.get("authorization", "")
    if header.lower().startswith("bearer "):
        token = header[7:].strip() or None
    if "token" in params:
        token = str(params.pop("token")) or token
    return params, token


def with_generated_ids(blocks: list[Any]) -> list[dict[str, Any]]:
    """A copy with a block_id on every block and an action_id on every element, like Slack."""
    result: list[dict[str, Any]] = copy.deepcopy(blocks)
    for block in result:
        if "block_id" not in block:
            block["block_id"] = secrets.token_urlsafe(4)[:5]
        for element in _interactive_elements(block):
            if "action_id" not in element:
                element["action_id"] = secrets.token_urlsafe(4)[:5]
    return result


def _interactive_elements(block: Mapping[str, Any]) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    if block.get("type") == "actions":
        found += [e for e in block.get("elements", []) if isinstance(e, dict)]
    accessory = block.get("accessory")
    if (
        block.get("type") == "section"
        and isinstance(accessory, dict)
        and accessory.get("type") != "image"
    ):
        found.append(accessory)
    if block.get("type") == "input" and isinstance(block.get("element"), dict):
        found.append(block["element"])
    return found


def _truthy(value: Any) -> bool:
    if isinstance(value, str):
        return value.lower() in ("true", "1", "yes")
    return bool(value)


def _ts_key(ts: str) -> tuple[int, int]:
    seconds, _, micros = ts.partition(".")
    return int(seconds), int(micros or 0)


def _shorten(value: Any, limit: int = 120) -> str:
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    return text if len(text) <= limit else text[: limit - 3] + "..."

"""Request bodies are bounded before they are read: an ASGI middleware answers 413 at once when a
declared ``Content-Length`` is over the route's limit, and stops a chunked (or lying) body the
moment it passes the limit. Nothing larger than the limit (plus one chunk) is ever buffered.

Slack's payloads are small (a modal submission is a few KiB; 256 KiB leaves room for the largest
view), and Microsoft's redirect carries a code, a state and a few short parameters (8 KiB).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from starlette.responses import PlainTextResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

__all__ = ["BodyTooLarge", "LimitRequestBodies"]

DEFAULT_LIMIT = 64 * 1024


class BodyTooLarge(Exception):
    """Raised from ``receive`` inside the app when the body passes its route's limit."""


def _plain_refusal(limit: int) -> Response:
    return PlainTextResponse(
        f"Request body too large: this address accepts at most {limit} bytes.",
        status_code=413,
        headers={"Connection": "close"},
    )


class LimitRequestBodies:
    """``limits`` maps a path to its byte limit; ``refusal`` builds the 413 for a path."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        limits: Mapping[str, int],
        default: int = DEFAULT_LIMIT,
        refusals: Mapping[str, Callable[[int], Response]] | None = None,
    ) -> None:
        self._app = app
        self._limits = dict(limits)
        self._default = default
        self._refusals = dict(refusals or {})

    def _refusal(self, path: str, limit: int) -> Response:
        return self._refusals.get(path, _plain_refusal)(limit)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self._app(scope, receive, send)
            return
        path = str(scope.get("path", ""))
        limit = self._limits.get(path, self._default)
        declared = _content_length(scope)
        if declared is not None and declared > limit:
            await self._refusal(path, limit)(scope, receive, send)
            return
        received = 0
        started = False

        async def bounded_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise BodyTooLarge
            return message

        async def watched_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self._app(scope, bounded_receive, watched_send)
        except BodyTooLarge:
            if started:  # the app answered before reading it all; nothing more to say
                return
            await self._refusal(path, limit)(scope, receive, send)


def _content_length(scope: Scope) -> int | None:
    """The declared length; a malformed one counts as too large (it cannot be trusted)."""
    for name, value in scope.get("headers", []):
        if name == b"content-length":
            text = value.decode("latin-1").strip()
            return int(text) if text.isdigit() else 1 << 62
    return None

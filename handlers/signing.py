"""Slack's request signatures (``v0``): an HMAC-SHA256, with the app's signing secret, of the
request's timestamp and raw body, accepted within 5 minutes of that timestamp (as Bolt does).

The door (``handlers.door``) checks a request's signature on arrival. Bolt checks it again when
the request's turn comes, which under a long burst may be past those 5 minutes: the door then
hands Bolt the same bytes signed anew (``SlackSignatures.renewed``), so Bolt's own check, which
stays on for every request, passes for what was verified on arrival and nothing else.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from slack_bolt.request.async_request import AsyncBoltRequest

__all__ = ["SIGNATURE_WINDOW_SECONDS", "SlackSignatures", "is_signed", "signature_of"]

SIGNATURE_WINDOW_SECONDS = 5 * 60  # as Bolt's own verification
TIMESTAMP_HEADER = "x-slack-request-timestamp"
SIGNATURE_HEADER = "x-slack-signature"


def signature_of(secret: str, body: bytes, timestamp: str) -> str:
    """The ``v0`` signature of ``body`` sent at ``timestamp``."""
    base = b"v0:" + timestamp.encode() + b":" + body
    return "v0=" + hmac.new(secret.encode(), base, hashlib.sha256).hexdigest()


def is_signed(secret: str, body: bytes, timestamp: str, signature: str, *, now: float) -> bool:
    """Slack's v0 signature over the raw bytes (which need not be UTF-8), within the window."""
    if not timestamp.isdigit() or abs(now - int(timestamp)) > SIGNATURE_WINDOW_SECONDS:
        return False
    expected = signature_of(secret, body, timestamp)
    return hmac.compare_digest(expected.encode(), signature.encode("latin-1", "replace"))


@dataclass(frozen=True)
class SlackSignatures:
    """The app's signing secret, as the door uses it."""

    secret: str = field(repr=False)
    clock: Callable[[], float] = time.time

    def carried_by(self, request: AsyncBoltRequest, raw: bytes) -> bool:
        """Whether ``raw``, the body of ``request`` (as Bolt parsed it), is validly signed now."""
        return self.carried_in(raw, lambda name: (request.headers.get(name) or [""])[0])

    def carried_in(self, raw: bytes, header: Callable[[str], str]) -> bool:
        """Whether ``raw`` is validly signed now, by the headers ``header`` reads (its first
        value of a name, or ""): for a body Bolt could not parse, the web route's own."""
        return is_signed(
            self.secret, raw, header(TIMESTAMP_HEADER), header(SIGNATURE_HEADER), now=self.clock()
        )

    def renewed(self, headers: Mapping[str, str], raw_body: str) -> dict[str, str | Sequence[str]]:
        """``headers`` with the timestamp of now and the signature of ``raw_body`` sent now."""
        now = str(int(self.clock()))
        return {
            **headers,
            TIMESTAMP_HEADER: now,
            SIGNATURE_HEADER: signature_of(self.secret, raw_body.encode(), now),
        }

"""Delivering a transition's Slack effects durably (DESIGN §6: the outbox).

A transition's Slack effects (the root checklist, the steps' messages, the thread note, the
announcement) are written as one outbox entry in the same compare-and-set that stores the
transition (``entry_for``). The ``Courier`` then delivers the entries of a session in order, under
a short lease, from whichever process gets there first: the one that made the change (at once),
the next one to change the session, or any replica's periodic pass (after a crash).

Delivery is at least once, made idempotent toward Slack: every post made while delivering an
entry has a slot (``out:<version>.<n>``) whose ``ts`` is recorded as soon as Slack answers, and a
redelivery edits the message in that slot instead of posting again; edits are idempotent by
nature. The one window left is a crash after Slack accepted a post and before its ``ts`` was
recorded (a few milliseconds): that post may appear twice.

Failures: Slack's 429 waits ``Retry-After``; other errors are retried with growing delays, a
bounded number of times; an error retrying cannot fix (the bot is not in the channel, the channel
is archived, Slack refused the message) gives up at once. An entry given up on moves to the
session's undelivered list, which ``status`` shows with what to do.
"""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
import zlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from typing import Any, get_args

from slack_sdk.errors import SlackApiError

from bot.renewal import renewed
from bot.session.record import decode, encode
from bot.workflow import Effect, Event, EventKind, Payload, Phase, Session, Transition
from state.outbox import Head, OutboxStore

__all__ = [
    "SLACK_EFFECTS",
    "Courier",
    "DeliveryPolicy",
    "Slot",
    "entry_for",
    "read_entry",
]

logger = logging.getLogger(__name__)

#: The effects an outbox entry carries. ``RUN_JOB`` rides along so a working phase's job starts
#: after its step's message is shown (its job edits that message); ``RELEASE_TENANT`` does not:
#: it is done at once by whoever stored the transition (and a stale lock is taken over anyway).
SLACK_EFFECTS = frozenset(
    {Effect.REFRESH_ROOT, Effect.SHOW_STEPS, Effect.NOTE_IN_THREAD, Effect.ANNOUNCE}
)
_CARRIED = SLACK_EFFECTS | {Effect.RUN_JOB}

# Slack errors that no retry will fix: the entry is given up on at once (and status says why).
_HOPELESS = frozenset(
    {
        "not_in_channel",
        "channel_not_found",
        "is_archived",
        "invalid_blocks",
        "invalid_blocks_format",
        "msg_too_long",
        "no_text",
        "cant_update_message",
        "message_not_found",
        "edit_window_closed",
        "invalid_auth",
        "not_authed",
        "account_inactive",
        "token_revoked",
        "missing_scope",
    }
)

_PAYLOADS: dict[str, type[Any]] = {kind.__name__: kind for kind in get_args(Payload)}


def entry_for(transition: Transition) -> bytes | None:
    """The outbox entry of ``transition``, or None when it has no Slack effect.

    Compact: the session after the transition, the event, and of the session before only what
    showing a transition looks at (its phase and whether the thread was open, see
    ``bot.steps.protocol.Step.show``); compressed, as the session record is.
    """
    carried = [effect for effect in transition.effects if effect in _CARRIED]
    if not any(effect in SLACK_EFFECTS for effect in carried):
        return None
    event = transition.event
    payload = event.payload
    text = json.dumps(
        {
            # A random id tells two entries of the same version apart (a lost compare-and-set
            # retried by another process writes the next version, never the same one twice).
            "id": secrets.token_hex(4),
            "effects": [effect.value for effect in carried],
            "event": {
                "kind": event.kind.value,
                "actor": event.actor,
                "at": event.at,
                "detail": dict(event.detail),
                "payload": None
                if payload is None
                else {"type": type(payload).__name__, "data": encode(payload)},
            },
            "before": {
                "phase": transition.before.phase.value,
                "root_ts": transition.before.root_ts,
            },
            "after": json.loads(transition.after.to_json()),
        },
        separators=(",", ":"),
    )
    return zlib.compress(text.encode(), 6)


def read_entry(entry: bytes) -> Transition:
    """The transition an outbox entry was written for (its effects: the ones it carries; the
    session before it: the one after, with the phase and thread it had)."""
    data = json.loads(zlib.decompress(entry))
    event_data = data["event"]
    payload_data = event_data["payload"]
    payload = (
        None
        if payload_data is None
        else decode(_PAYLOADS[payload_data["type"]], payload_data["data"])
    )
    event = Event(
        EventKind(event_data["kind"]),
        actor=str(event_data["actor"]),
        at=float(event_data["at"]),
        detail={str(k): str(v) for k, v in event_data["detail"].items()},
        payload=payload,
    )
    after = Session.from_json(json.dumps(data["after"]))
    before = replace(
        after,
        phase=Phase(data["before"]["phase"]),
        root_ts=data["before"]["root_ts"],
        version=after.version - 1,
    )
    return Transition(
        before=before,
        after=after,
        event=event,
        effects=tuple(Effect(value) for value in data["effects"]),
    )


@dataclass
class Slot:
    """Numbers the posts made while one entry is delivered: the same post of the same entry
    always lands in the same slot, so a redelivery can find what the first attempt posted."""

    session_id: str
    version: int
    posted: int = field(default=0)

    def next_key(self) -> str:
        key = f"out:{self.version}.{self.posted}"
        self.posted += 1
        return key


@dataclass
class _Delivery:
    """One delivery under way in this process: the task doing it (work it awaits is part of it;
    a job it starts is not), the slot numbering of the entry it is at, and its end."""

    task: asyncio.Task[Any] | None
    finished: asyncio.Event = field(default_factory=asyncio.Event)
    slot: Slot | None = None


@dataclass(frozen=True)
class DeliveryPolicy:
    """How hard the courier tries. ``first_retry_seconds`` doubles per attempt up to
    ``longest_wait_seconds``; after ``attempts`` failures the entry is given up on."""

    attempts: int = 8
    first_retry_seconds: float = 1.0
    longest_wait_seconds: float = 60.0
    lease_seconds: int = 15  # a crashed deliverer's sessions are taken over after this


@dataclass(frozen=True)
class _Failure:
    hopeless: bool
    retry_after: float | None
    description: str


def _classify(error: Exception) -> _Failure:
    if isinstance(error, SlackApiError):
        response = error.response
        code = str(response.get("error") or f"HTTP {response.status_code}")
        if response.status_code == 429 or code == "ratelimited":
            header = response.headers.get("Retry-After") or response.headers.get("retry-after")
            try:
                wait = float(header) if header is not None else 1.0
            except ValueError:
                wait = 1.0
            return _Failure(False, wait, "Slack rate limit (ratelimited)")
        return _Failure(code in _HOPELESS, None, f"Slack answered {code}")
    return _Failure(False, None, f"{type(error).__name__}")


Perform = Callable[[Transition], Awaitable[None]]


class Courier:
    """Delivers outbox entries, in order per session, one deliverer per session at a time."""

    def __init__(
        self,
        outbox: OutboxStore,
        perform: Perform,
        *,
        clock: Callable[[], float],
        policy: DeliveryPolicy | None = None,
    ) -> None:
        self._outbox = outbox
        self._perform = perform
        self._clock = clock
        self._policy = policy or DeliveryPolicy()
        self._owner = f"courier-{secrets.token_hex(6)}"
        self._draining: dict[str, _Delivery] = {}  # this process's deliveries under way

    @property
    def policy(self) -> DeliveryPolicy:
        return self._policy

    def slot_for(self, session_id: str) -> Slot | None:
        """The slot numbering of the entry this task is delivering for ``session_id``, if it is
        delivering one (a post made elsewhere, by a job or another request, has none)."""
        delivery = self._draining.get(session_id)
        if delivery is None or delivery.task is not asyncio.current_task():
            return None
        return delivery.slot

    async def deliver(self, session_id: str) -> None:
        """Deliver what is due in the session's outbox. Called from inside the delivery of this
        session (a step that records a change while it shows), it returns at once: the running
        delivery takes the new entry next. If another task of this process is delivering it,
        wait for that first, so whoever asked sees its messages when this returns; if another
        process is, leave it to that one (it looks again after giving its lease back)."""
        while True:
            running = self._draining.get(session_id)
            if running is not None:
                if running.task is asyncio.current_task():
                    logger.debug("session %s: delivered next by the delivery under way", session_id)
                    return
                try:
                    async with asyncio.timeout(self._policy.lease_seconds):
                        await running.finished.wait()
                except TimeoutError:
                    return  # still at it: it, or the outbox pass, delivers the rest
                continue
            # Claimed here first (no await in between), so tasks of this process queue up
            # behind each other; the Redis lease then keeps other processes out.
            delivery = _Delivery(asyncio.current_task())
            self._draining[session_id] = delivery
            try:
                # Read before the head: a writer marks the index before it adds an entry, so
                # the drain never forgets an entry it did not see.
                generation = await self._outbox.generation(session_id)
                taken, head = await self._outbox.take_lease(
                    session_id, self._owner, ttl=self._policy.lease_seconds
                )
                if not taken:
                    logger.debug("session %s: another process is delivering it", session_id)
                    return
                try:
                    await self._drain(session_id, delivery, head, generation)
                finally:
                    left = await self._outbox.release_lease(session_id, self._owner)
            finally:
                del self._draining[session_id]
                delivery.finished.set()
            if not left:
                return
            head = await self._outbox.head(session_id)
            if head is None or head.not_before > self._clock():
                return

    async def deliver_pending(self) -> int:
        """One pass over every session with entries waiting (the periodic pass of each
        replica, and what picks up a crashed process's work); returns how many it looked at."""
        sessions = await self._outbox.pending()
        for session_id in sessions:
            try:
                await self.deliver(session_id)
            except Exception:
                # One session's trouble (Redis failing mid-way) must not stop the others.
                logger.exception("could not deliver the outbox of session %s", session_id)
        return len(sessions)

    async def _drain(
        self,
        session_id: str,
        delivery: _Delivery,
        head: Head | None,
        generation: float | None,
    ) -> None:
        async def renew() -> bool:
            return await self._outbox.renew_lease(
                session_id, self._owner, ttl=self._policy.lease_seconds
            )

        # A lost lease is only logged: the entry in hand is finished here (its posts are kept
        # per slot, so whoever took over edits rather than posts again).
        async with renewed(
            renew,
            every=self._policy.lease_seconds / 3,
            what=f"the delivery lease of session {session_id}",
        ):
            while True:
                if head is None:
                    if generation is None or not await self._outbox.forget_if_unchanged(
                        session_id, generation
                    ):
                        return
                    # A writer may have marked the session before this drain read the
                    # generation and written its entry only after the outbox looked empty; if
                    # it then died before its second mark, nobody would ever look here again.
                    head = await self._outbox.head(session_id)
                    if head is None:
                        return
                    await self._outbox.expect(session_id)
                    generation = None
                    continue
                if head.not_before > self._clock():
                    return  # in order: nothing after it goes first
                done, following = await self._deliver_head(session_id, head, delivery)
                if not done:
                    return
                head = following if following is not None else await self._outbox.head(session_id)

    async def _deliver_head(
        self, session_id: str, head: Head, delivery: _Delivery
    ) -> tuple[bool, Head | None]:
        """Whether the head is done with (delivered or given up on), and the entry after it
        when the pop already read it."""
        try:
            transition = read_entry(head.entry)
        except (ValueError, KeyError, TypeError, zlib.error):
            # Unreadable (written by another version?): it must not block the entries after it.
            logger.exception("gave up an unreadable outbox entry of session %s", session_id)
            await self._outbox.give_up(
                session_id, head, channel_id="", version=-1, effects=(), error="unreadable entry"
            )
            return True, None
        delivery.slot = Slot(session_id, transition.after.version)
        try:
            await self._perform(transition)
        except asyncio.CancelledError:
            raise
        except Exception as error:  # noqa: BLE001 - logged with its traceback by _failed
            return await self._failed(session_id, head, transition, error), None
        finally:
            delivery.slot = None
        popped, following = await self._outbox.delivered(session_id, head)
        if not popped:
            return True, None  # someone else moved the outbox on: read it again
        return True, following

    async def _failed(
        self, session_id: str, head: Head, transition: Transition, error: Exception
    ) -> bool:
        failure = _classify(error)
        attempts = head.attempts + 1
        effects = tuple(effect.value for effect in transition.effects)
        if failure.hopeless or attempts >= self._policy.attempts:
            logger.error(
                "gave up delivering %s of session %s version %d after %d attempt(s): %s",
                ",".join(effects),
                session_id,
                transition.after.version,
                attempts,
                failure.description,
                exc_info=error,
            )
            await self._outbox.give_up(
                session_id,
                head,
                channel_id=transition.after.channel_id,
                version=transition.after.version,
                effects=effects,
                error=failure.description,
            )
            return True
        wait = min(
            self._policy.first_retry_seconds * 2 ** (attempts - 1),
            self._policy.longest_wait_seconds,
        )
        if failure.retry_after is not None:
            wait = max(wait, failure.retry_after)
        logger.warning(
            "delivering %s of session %s failed (attempt %d, %s); next try in %.0f s",
            ",".join(effects),
            session_id,
            attempts,
            failure.description,
            wait,
            exc_info=error,
        )
        await self._outbox.postpone(
            session_id,
            attempts=attempts,
            not_before=self._clock() + wait,
            error=failure.description,
        )
        return False

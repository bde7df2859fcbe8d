"""Carrying out the workflow: the one place where sessions, Slack and the clock meet.

Handlers call ``Provisioner``; it stores transitions (compare-and-set, with audit and an outbox
entry for their Slack effects) and then delivers those effects (``bot.workflow.Effect``) through
the Slack Web API, durably (``bot.session.outbox``).
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from bot.blocks import Message
from bot.jobs import Jobs
from bot.microsoft.discovery import TenantIdentity
from bot.session.outbox import (
    Courier,
    DeliveryPolicy,
    entry_for,
)
from bot.session.views import (
    HOME_SESSIONS,
    DeliveryTrouble,
    home_view,
    not_in_channel_message,
    out_of_date_copy,
    root_message,
    status_message,
    thread_note,
)
from bot.steps.mailflow.views import announcement_message
from bot.workflow import (
    TRANSITIONS,
    Effect,
    Event,
    EventKind,
    Phase,
    Scope,
    Session,
    Thread,
    Transition,
    advance,
)
from state.oauth import OAuthStates
from state.patience import within
from state.sessions import POSTING, SessionStore, TenantBusy, VersionConflict

if TYPE_CHECKING:  # the steps themselves import this module
    from bot.steps.protocol import StepTable

__all__ = ["Busy", "NotInChannel", "Provisioner", "StartOutcome", "Started"]

logger = logging.getLogger(__name__)

_CHANNEL_PROBLEMS = frozenset({"not_in_channel", "channel_not_found", "is_archived"})
ANNOUNCEMENT = "Exchange Online protected in inline mode."
STATUS_AUDIT_ENTRIES = 8  # the newest, per session, in ``/provision-inline status``
PERMALINK = "permalink"  # where a session's thread link is kept, beside its message ids
POSTED = "posted:"  # prefix of the ts of a post kept under no other name
# How long recording the ts of a message Slack accepted waits out an unavailable Redis.
RECORD_POST_BUDGET_SECONDS = 30.0
# A step's own message is kept for the whole session, not under the transition that posted it:
# every transition of the step edits the same message.
STEP_MESSAGE = 0


@dataclass(frozen=True)
class Started:
    session: Session


@dataclass(frozen=True)
class Busy:
    """The tenant already has an active session; ``permalink`` leads to its thread."""

    session: Session
    permalink: str | None


@dataclass(frozen=True)
class NotInChannel:
    channel_id: str
    message: Message


StartOutcome = Started | Busy | NotInChannel


class StepsFactory(Protocol):
    """Builds the table of steps for this provisioner (``bot.steps.table.build_steps``)."""

    def __call__(self, provisioner: Provisioner) -> StepTable: ...


class Provisioner:
    def __init__(
        self,
        *,
        store: SessionStore[Session],
        slack: AsyncWebClient,
        clock: Callable[[], float],
        idle_seconds: int,
        oauth: OAuthStates,
        steps: StepsFactory,
        notify_channel: str | None = None,
        delivery: DeliveryPolicy | None = None,
    ) -> None:
        """``steps`` builds the table of steps, once, here: they act through this provisioner,
        and it prompts through them and runs their jobs."""
        self.store = store
        self.oauth = oauth
        self.slack = slack
        self._clock = clock
        self._idle_seconds = idle_seconds
        self._notify_channel = notify_channel
        self.steps = steps(self)
        self.jobs = Jobs(store, self.steps.jobs)
        self.courier = Courier(store.outbox, self._perform, clock=clock, policy=delivery)

    def now(self) -> float:
        return self._clock()

    async def start(
        self, *, user_id: str, channel_id: str, tenant: TenantIdentity, label: str, scope: Scope
    ) -> StartOutcome:
        """Create the session, take the tenant, post the root checklist and open the thread."""
        now = self._clock()
        session = Session(
            id=secrets.token_hex(8),
            tenant_id=tenant.tenant_id,
            tenant_label=label,
            scope=scope,
            channel_id=channel_id,
            started_by=user_id,
            created_at=now,
            updated_at=now,
        )
        try:
            await self.store.create(
                session,
                detail={"tenant_id": tenant.tenant_id, "tenant": label, "channel": channel_id},
            )
        except TenantBusy as busy:
            existing = await self.store.get(busy.session_id)
            if existing is None:
                raise
            return Busy(existing, await self.permalink(existing))
        root = root_message(session)
        try:
            posted = await self.slack.chat_postMessage(
                channel=channel_id, text=root.text, blocks=root.blocks
            )
        except SlackApiError as error:
            await self.store.discard(session)
            if error.response.get("error") in _CHANNEL_PROBLEMS:
                return NotInChannel(channel_id, not_in_channel_message(channel_id))
            raise
        ts = str(posted["ts"])
        rooted = await self.handle(
            session.id,
            Event(EventKind.ROOT_POSTED, user_id, self._clock(), {"ts": ts}, payload=Thread(ts)),
        )
        return Started(rooted.after)  # its outbox entry showed step 1, opening the thread

    async def handle(self, session_id: str, event: Event) -> Transition:
        """Apply ``event``: store the transition with its Slack effects in the outbox (retrying
        lost races), then deliver them and do what is left (release the tenant).

        Raises ``TransitionNotAllowed`` when the session is not in a phase that accepts the event
        (for instance because another approver was quicker) and ``SessionGone`` if it is gone.
        Delivery problems are not raised: the outbox retries them (``status`` shows them).
        """
        for _ in range(5):
            session = await self.store.require(session_id)
            transition = advance(session, event)
            entry = entry_for(transition)
            try:
                await self.store.replace(
                    session,
                    transition.after,
                    actor=event.actor,
                    action=event.kind.value,
                    detail=event.detail,
                    outbox=entry,
                )
            except VersionConflict:
                continue  # somebody changed it meanwhile: decide again on the fresh copy
            if Effect.RELEASE_TENANT in transition.effects:
                await self.store.release_tenant(transition.after)
            if entry is None:
                if Effect.RUN_JOB in transition.effects:
                    self._launch(transition.after)
            else:
                await self.courier.deliver(session_id)
            return transition
        raise VersionConflict(session_id, -1, -1)

    async def deliver_pending(self) -> int:
        """Deliver every session's waiting outbox entries (periodically, on every replica)."""
        return await self.courier.deliver_pending()

    def _launch(self, session: Session) -> None:
        self.jobs.launch(session)  # its own task: its posts are not part of a delivery

    async def _perform(self, transition: Transition) -> None:
        """Carry out an outbox entry. Every effect is attempted, even when an earlier one fails
        (one message Slack refused must not keep a job from starting); the first failure is
        raised afterwards, so the courier retries the entry (its posts are not made twice)."""
        session = transition.after
        failures: list[Exception] = []
        for effect in transition.effects:
            try:
                await self._effect(effect, transition, session)
            except Exception as error:
                logger.exception("effect %s of session %s failed", effect.value, session.id)
                failures.append(error)
        if failures:
            raise failures[0]
        if not session.is_active:
            # The last entry of a finished session is out: nothing will be edited again.
            await self.store.forget_messages(session.id)

    async def _effect(self, effect: Effect, transition: Transition, session: Session) -> None:
        if effect is Effect.REFRESH_ROOT:
            await self.refresh_root(session)
        elif effect is Effect.SHOW_STEPS:
            await self.steps.show(transition)
        elif effect is Effect.NOTE_IN_THREAD:
            await self.post_in_thread(session, thread_note(transition))
        elif effect is Effect.ANNOUNCE:
            await self._announce(session)
        elif effect is Effect.RUN_JOB:
            self._launch(session)

    async def refresh_root(self, session: Session) -> None:
        if session.root_ts is None:
            return
        root = root_message(session)
        await self.slack.chat_update(
            channel=session.channel_id, ts=session.root_ts, text=root.text, blocks=root.blocks
        )

    async def post_in_thread(self, session: Session, message: Message) -> None:
        await self._post(session, session.channel_id, message, thread_ts=session.root_ts)

    async def post_kept(
        self, session: Session, name: str, message: Message, *, version: int | None = None
    ) -> str:
        """Post in the thread a message the bot will edit later, and keep its ts under ``name``
        and ``version`` (default ``session.version``: the transition this message belongs to).
        Only message ids are kept this way, never state."""
        at = session.version if version is None else version
        return await self._post(
            session, session.channel_id, message, thread_ts=session.root_ts, keep_as=f"{name}@{at}"
        )

    async def _post(
        self,
        session: Session,
        channel: str,
        message: Message,
        *,
        thread_ts: str | None,
        keep_as: str | None = None,
    ) -> str:
        """Post ``message``; while an outbox entry is delivered, once per slot: a redelivery
        finds the ts the first attempt recorded and edits that message instead."""
        slot = self.courier.slot_for(session.id)
        keys = [keep_as] if keep_as else []
        slot_key = slot.next_key() if slot is not None else None
        # Marked in flight first: until its ts is recorded, a click on the new message is not
        # taken for one on a leftover copy (``handlers.access``). Named after its slot, so a
        # redelivery's mark replaces the one its dead predecessor left.
        posting = POSTING + (slot_key or keep_as or secrets.token_hex(6))
        until = time.time() + RECORD_POST_BUDGET_SECONDS
        earlier = await self.store.begin_post(session.id, posting, until, slot_key)
        if earlier is not None:
            await self.slack.chat_update(
                channel=channel, ts=earlier, text=message.text, blocks=message.blocks
            )
            await self.store.keep_post(session.id, keys, earlier, posting=posting)
            return earlier
        if slot_key is not None:
            keys.append(slot_key)
        posted = await self.slack.chat_postMessage(
            channel=channel, thread_ts=thread_ts, text=message.text, blocks=message.blocks
        )
        ts = str(posted["ts"])
        # Slack has the message: its ts must be recorded, or a redelivery would post it again,
        # and a click on it would be taken for one on a leftover copy. So this write rides out
        # a Redis restart (a longer outage gives up).
        keys = keys or [f"{POSTED}{ts}"]
        deadline = asyncio.get_running_loop().time() + RECORD_POST_BUDGET_SECONDS
        await within(
            deadline,
            "recording a posted message",
            lambda: self.store.keep_post(session.id, keys, ts, posting=posting),
        )
        return ts

    async def show_step(
        self, session: Session, name: str, message: Message, *, version: int = STEP_MESSAGE
    ) -> str:
        """Post a step's own thread message, or edit it in place once it exists: each step
        shows itself in one message for the whole session (kept under version 0). With
        ``version``, one message per transition: what a job posts under its transition's
        version is posted once, however often the job is resumed."""
        ts = await self.kept(session, name, version)
        if ts is None:
            return await self.post_kept(session, name, message, version=version)
        await self.edit(session, ts, message)
        return ts

    async def kept(self, session: Session, name: str, version: int | None = None) -> str | None:
        """The ts ``post_kept`` kept for ``name`` at ``version`` (default: the session's)."""
        at = session.version if version is None else version
        return await self.store.kept_message(session.id, name, at)

    async def edit(self, session: Session, ts: str, message: Message) -> None:
        await self.slack.chat_update(
            channel=session.channel_id, ts=ts, text=message.text, blocks=message.blocks
        )

    async def retire_copy(self, channel_id: str, ts: str) -> None:
        """Strip a leftover copy of a message the bot posted twice of its buttons."""
        message = out_of_date_copy()
        await self.slack.chat_update(
            channel=channel_id, ts=ts, text=message.text, blocks=message.blocks
        )

    async def _announce(self, session: Session) -> None:
        """The announcement, in the session's channel and ``NOTIFY_CHANNEL``; a channel that
        refuses it does not stop the other, and its failure is raised afterwards (the outbox
        tries again, without posting twice where it already went)."""
        channels = [session.channel_id]
        if self._notify_channel and self._notify_channel != session.channel_id:
            channels.append(self._notify_channel)
        message = announcement_message(session, await self.permalink(session))
        failures: list[Exception] = []
        for channel in channels:
            try:
                await self._post(session, channel, message, thread_ts=None)
            except SlackApiError as error:
                logger.warning("could not announce session %s in %s", session.id, channel)
                failures.append(error)
        if failures:
            raise failures[0]

    async def permalink(self, session: Session) -> str | None:
        """The link to the session's thread (asked of Slack once, then kept with the session's
        message ids: it never changes)."""
        if session.root_ts is None:
            return None
        kept = await self.store.kept_post(session.id, PERMALINK)
        return kept or await self._fetch_permalink(session)

    async def _fetch_permalink(self, session: Session) -> str | None:
        if session.root_ts is None:
            return None
        try:
            answer = await self.slack.chat_getPermalink(
                channel=session.channel_id, message_ts=session.root_ts
            )
        except SlackApiError:
            logger.warning("no permalink for session %s", session.id, exc_info=True)
            return None
        link = answer.get("permalink")
        if not link:
            return None
        await self.store.keep_post(session.id, [PERMALINK], str(link))
        return str(link)

    async def record_refusal(
        self, session_id: str, user_id: str, action: str, *, reason: str | None = None
    ) -> None:
        """Somebody not allowed tried ``action``: nothing changes, but it is recorded, in the
        session's capped refusal stream (apart from the decisions in its audit)."""
        await self.store.record_refusal(
            session_id,
            actor=user_id,
            action=f"refused: {action}",
            detail={"reason": reason} if reason else None,
        )

    async def status(self, channel_id: str) -> Message:
        """The channel's active sessions with their checklists, latest audit entries and any
        message the outbox could not post; finished sessions too when theirs could not be."""
        sessions = await self.sessions_in_channel(channel_id)
        # Each read below is one round trip for all the sessions (pipelines), not one each.
        history = await self.store.latest_audits(
            [s.id for s in sessions], count=STATUS_AUDIT_ENTRIES
        )
        outbox = self.store.outbox
        finished = []
        for session_id in await outbox.with_undelivered(channel_id):
            session = await self.store.get(session_id)
            if session is not None and not session.is_active and session.channel_id == channel_id:
                finished.append(session)
        given_up = await outbox.undelivered([s.id for s in (*sessions, *finished)])
        heads = await outbox.heads([s.id for s in sessions])
        trouble: dict[str, DeliveryTrouble] = {}
        for session in (*sessions, *finished):
            head = heads.get(session.id)
            failures = given_up.get(session.id, [])
            retrying = head.last_error if head is not None and head.attempts > 0 else None
            if failures or retrying:
                trouble[session.id] = DeliveryTrouble(
                    given_up=tuple((f.effects, f.error) for f in failures), retrying=retrying
                )
        return status_message(
            sessions, history, await self._links(sessions), trouble=trouble, finished=finished
        )

    async def home(self, *, is_admin: bool, is_approver: bool) -> dict[str, Any]:
        """The App Home view: admins see the active sessions (the newest first), approvers the
        requests waiting for them, each with a link to its thread. Read from the indexes: the
        cost does not grow with the number of sessions."""
        if is_admin:
            sessions = await self.store.newest(HOME_SESSIONS)
            total = await self.store.count_active()
        elif is_approver:
            waiting = Phase.ROLE_REQUESTED
            sessions = await self.store.in_phase(waiting, limit=HOME_SESSIONS)
            total = (await self.store.count_in_phases([waiting]))[waiting]
        else:
            sessions, total = [], 0
        return home_view(sessions, await self._links(sessions), more=total - len(sessions))

    async def _links(self, sessions: list[Session]) -> dict[str, str]:
        """The thread links of ``sessions``: the kept ones in one round trip, Slack asked only
        for those it was never asked for."""
        links = await self.store.kept_for_each([s.id for s in sessions], PERMALINK)
        for session in sessions:
            if session.id not in links:
                link = await self._fetch_permalink(session)
                if link:
                    links[session.id] = link
        return links

    async def sessions_in_channel(self, channel_id: str) -> list[Session]:
        return await self.store.in_channel(channel_id)

    async def expire_idle(self) -> list[Transition]:
        """Expire every active session nobody touched for ``idle_seconds``; safe on replicas."""
        now = self._clock()
        expired: list[Transition] = []
        for session in await self.store.idle_since(now - self._idle_seconds):
            if (session.phase, EventKind.EXPIRE) not in TRANSITIONS:
                continue  # busy changing Exchange: its job finishes or fails first
            event = Event(
                EventKind.EXPIRE,
                actor="system",
                at=now,
                detail={"idle_seconds": str(int(now - session.updated_at))},
            )
            try:
                expired.append(await self.handle(session.id, event))
            except Exception:
                # One broken session must not stop the others from expiring.
                logger.exception("could not expire session %s", session.id)
        return expired

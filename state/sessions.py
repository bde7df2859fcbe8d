"""Provisioning sessions in Redis (DESIGN §6).

Keys (every key of one session shares the hash tag ``{<session id>}``, so the multi-key scripts
below run on Redis Cluster too):

- ``pi:{sid}:session``  hash: ``version`` and ``data`` (the session as JSON)
- ``pi:{sid}:audit``    stream: who did what, when, with what result
- ``pi:{sid}:refusals`` stream: who tried what they may not do (capped: a flood of refused
                        clicks can never push the decisions out of the audit)
- ``pi:tenant:{tid}``   the tenant lock: the id of the one active session for that tenant
- ``pi:active``, ``pi:active:channel:{cid}``, ``pi:active:phase:{phase}``  sorted sets of the ids
                        of active sessions, scored by their last change: every one, one channel's
                        (status), one phase's (App Home, jobs, reminders, metrics)
- ``pi:once:{key}``     idempotency markers for Slack retries and double clicks
- ``pi:{sid}:lease``    which process runs the session's background job (verify, apply)
- ``pi:{sid}:messages`` hash of the ids (Slack ``ts``) of messages the bot edits later, each under
  a name and the session version whose transition posted it, of every post the outbox made
  (under ``out:<version>.<n>``, so a redelivery never posts twice) and of every other post
  (``posted:<ts>``); ``posting:<id>`` marks a post in flight until its ts is recorded;
  ``every_post`` marks a session whose posts are all kept, so a click on a
  message missing here comes from a copy posted twice across a crash and is refused; never
  state a transition depends on
- ``pi:{sid}:outbox`` and its companions: see ``state.outbox``

Every change of a session is a compare-and-set on its version, done in one Lua script together
with its audit entry: either both are stored or neither is.
"""

from __future__ import annotations

import json
import secrets
import time
import zlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Generic, Protocol, TypeVar

from state.claims import Claims
from state.connection import RedisClient, connect, verify
from state.outbox import (
    PENDING_INDEX,
    UNDELIVERED_INDEX,
    OutboxStore,
    outbox_key,
    outbox_keys,
)
from state.scripts import RELEASE_IF_HELD, RENEW_IF_HELD, as_text, session_key

__all__ = [
    "REFUSALS_KEPT",
    "AuditEntry",
    "Record",
    "SessionGone",
    "SessionStore",
    "StateError",
    "TenantBusy",
    "VersionConflict",
    "purge_sessions",
    "unpack_record",
]


class StateError(Exception):
    """Base of the errors the session store raises on purpose.

    StateError
    ├── TenantBusy       another active session holds the tenant
    ├── VersionConflict  the session changed since it was read (somebody else was quicker)
    └── SessionGone      no such session (never existed, or expired out of Redis)
    """


class TenantBusy(StateError):
    def __init__(self, tenant_id: str, session_id: str) -> None:
        self.tenant_id = tenant_id
        self.session_id = session_id
        super().__init__(f"tenant {tenant_id} already has active session {session_id}")


class VersionConflict(StateError):
    def __init__(self, session_id: str, expected: int, found: int) -> None:
        self.session_id = session_id
        self.expected = expected
        self.found = found
        super().__init__(f"session {session_id} is at version {found}, not {expected}")


class SessionGone(StateError):
    def __init__(self, session_id: str) -> None:
        self.session_id = session_id
        super().__init__(f"session {session_id} does not exist (or has expired)")


@dataclass(frozen=True)
class AuditEntry:
    id: str
    at: float
    actor: str
    action: str
    result: str
    detail: Mapping[str, str]


class Record(Protocol):
    """What the store needs to know of a session; the rest is the owner's JSON (``to_json``).

    The store keeps no knowledge of the workflow: whoever builds it passes ``decode``.
    """

    @property
    def id(self) -> str: ...

    @property
    def tenant_id(self) -> str: ...

    @property
    def started_by(self) -> str: ...

    @property
    def version(self) -> int: ...

    @property
    def is_active(self) -> bool: ...

    @property
    def channel_id(self) -> str: ...

    @property
    def phase(self) -> str: ...

    @property
    def updated_at(self) -> float: ...

    def to_json(self) -> str: ...

    def archived_json(self) -> str:
        """What is kept of the record once the session has finished (the audit stream keeps
        the decisions): only what a late click or ``status`` still needs."""
        ...


R = TypeVar("R", bound=Record)

# Indexes of active sessions (sorted sets, scored by when the session last changed), so that
# listings read what they show and nothing else: every active session (idle expiry reads the
# oldest), those of one channel (status), those in one phase (App Home's approvers, resuming
# jobs, reminders, the metrics' counts). Kept beside the record, written right after it; a
# reader checks each record it reads and repairs an index entry that went stale (a crash
# between the two writes).
_ACTIVE_INDEX = "pi:active"
_LEGACY_ACTIVE_SET = "pi:sessions"  # the set of active ids before the indexes (migrated)


def _channel_index(channel_id: str) -> str:
    return f"pi:active:channel:{channel_id}"


def _phase_index(phase: str) -> str:
    return f"pi:active:phase:{phase}"


REFUSALS_KEPT = 100  # per session; the oldest refusals go first
# Per session: far more than a provisioning records (its decisions, checks and retries), a cap
# only so that no loop can grow a stream without bound.
AUDIT_KEPT = 1000


def _session_key(session_id: str) -> str:
    return session_key(session_id, "session")


def _audit_key(session_id: str) -> str:
    return session_key(session_id, "audit")


def _refusals_key(session_id: str) -> str:
    return session_key(session_id, "refusals")


def _lease_key(session_id: str) -> str:
    return session_key(session_id, "lease")


def _messages_key(session_id: str) -> str:
    return session_key(session_id, "messages")


def _tenant_key(tenant_id: str) -> str:
    return f"pi:tenant:{{{tenant_id}}}"


POSTING = "posting:"
"""Prefix of the fields of ``pi:{sid}:messages`` that mark a post in flight: written before the
post, removed with the write that records its ts."""
EVERY_POST_KEPT = "every_post"
"""The field of ``pi:{sid}:messages`` that says every post of the session is kept there: set
when the session is created, so sessions from before this rule are not judged by it."""


# KEYS: session, audit, messages. ARGV: data, ttl, then audit field/value pairs.
_CREATE = """
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('HSET', KEYS[1], 'version', 0, 'data', ARGV[1])
redis.call('EXPIRE', KEYS[1], ARGV[2])
redis.call('HSET', KEYS[3], 'EVERY_POST_KEPT', '1')
redis.call('EXPIRE', KEYS[3], ARGV[2])
redis.call('XADD', KEYS[2], 'MAXLEN', AUDIT_KEPT, '*', unpack(ARGV, 3))
redis.call('EXPIRE', KEYS[2], ARGV[2])
return 1
""".replace("AUDIT_KEPT", str(AUDIT_KEPT)).replace("EVERY_POST_KEPT", EVERY_POST_KEPT)

# KEYS: session, audit, outbox. ARGV: expected version, data, ttl, outbox entry ('' for none),
# then audit field/value pairs. Returns {1} when stored, {0, found} on a version conflict, {-1}
# when the session is gone. The state, its audit entry and its Slack effects (the outbox entry)
# are stored together or not at all.
_COMPARE_AND_SET = """
local found = redis.call('HGET', KEYS[1], 'version')
if not found then return {-1} end
if tonumber(found) ~= tonumber(ARGV[1]) then return {0, tonumber(found)} end
redis.call('HSET', KEYS[1], 'version', tonumber(ARGV[1]) + 1, 'data', ARGV[2])
redis.call('EXPIRE', KEYS[1], ARGV[3])
redis.call('XADD', KEYS[2], 'MAXLEN', AUDIT_KEPT, '*', unpack(ARGV, 5))
redis.call('EXPIRE', KEYS[2], ARGV[3])
if ARGV[4] ~= '' then
  redis.call('RPUSH', KEYS[3], ARGV[4])
  redis.call('EXPIRE', KEYS[3], ARGV[3])
end
return {1}
""".replace("AUDIT_KEPT", str(AUDIT_KEPT))

# KEYS: session, audit. ARGV: ttl, then audit field/value pairs. Appends without a version bump.
_AUDIT_ONLY = """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
redis.call('XADD', KEYS[2], 'MAXLEN', AUDIT_KEPT, '*', unpack(ARGV, 2))
redis.call('EXPIRE', KEYS[2], ARGV[1])
return 1
""".replace("AUDIT_KEPT", str(AUDIT_KEPT))

# KEYS: session, refusals. ARGV: ttl, cap, then entry field/value pairs. Appends to the capped
# refusal stream of an existing session; nothing is kept for a session that does not exist.
_REFUSAL = """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
redis.call('XADD', KEYS[2], 'MAXLEN', ARGV[2], '*', unpack(ARGV, 3))
redis.call('EXPIRE', KEYS[2], ARGV[1])
return 1
"""


_PACKED = b"z:"  # a record stored compressed (JSON starts with "{", never with this)


@dataclass(frozen=True)
class PostedMessages:
    """The ts of the messages the bot posted for a session (``pi:{sid}:messages``)."""

    complete: bool
    """Every post is kept, so a message of the session's missing here is a copy the bot
    posted and could not record (its process died first) and then posted again."""
    ts: frozenset[str]
    posting_until: tuple[float, ...] = ()
    """When each post still in flight gives up recording its ts (wall clock): until then, a
    message missing here may be that post, posted and not recorded yet."""

    def disowns(self, ts: str, *, now: float) -> bool:
        """``ts`` is certainly not one of the messages the bot keeps for the session."""
        in_flight = any(until > now for until in self.posting_until)
        return self.complete and ts not in self.ts and not in_flight


def _pack(text: str) -> bytes:
    """A record as stored: compressed JSON (a session's record shrinks to about a third)."""
    return _PACKED + zlib.compress(text.encode(), 6)


def unpack_record(stored: bytes | str) -> bytes | str:
    """The JSON of a stored record (records stored before compression are JSON already)."""
    if isinstance(stored, bytes) and stored.startswith(_PACKED):
        return zlib.decompress(stored[len(_PACKED) :])
    return stored


def _audit_fields(actor: str, action: str, result: str, detail: Mapping[str, str]) -> list[str]:
    fields = ["at", repr(time.time()), "actor", actor, "action", action, "result", result]
    for name, value in detail.items():
        fields.extend([f"detail.{name}", value])
    return fields


def _audit_entry(
    entry_id: bytes | str | None, fields: Mapping[bytes | str, bytes | str] | None
) -> AuditEntry:
    values = {as_text(key): as_text(value) for key, value in (fields or {}).items()}
    return AuditEntry(
        id=as_text(entry_id),
        at=float(values.pop("at")),
        actor=values.pop("actor"),
        action=values.pop("action"),
        result=values.pop("result"),
        detail={
            key.removeprefix("detail."): value
            for key, value in values.items()
            if key.startswith("detail.")
        },
    )


async def purge_sessions(url: str, session_ids: Sequence[str], tenant_ids: Sequence[str]) -> None:
    """Delete every key of these sessions and their tenants' locks (the demo's clean-up, on a
    Redis it shares with others: only what it made itself)."""
    client = connect(url)
    try:
        for session_id in session_ids:
            keys = [
                _session_key(session_id),
                _audit_key(session_id),
                _refusals_key(session_id),
                _lease_key(session_id),
                _messages_key(session_id),
                *outbox_keys(session_id),
            ]
            data = await client.hget(_session_key(session_id), "data")
            record = json.loads(unpack_record(data)) if data is not None else {}
            await client.delete(*keys)
            await client.zrem(_ACTIVE_INDEX, session_id)
            if "channel_id" in record:
                await client.zrem(_channel_index(str(record["channel_id"])), session_id)
            if "phase" in record:
                await client.zrem(_phase_index(str(record["phase"])), session_id)
            await client.zrem(PENDING_INDEX, session_id)
            await client.srem(UNDELIVERED_INDEX, session_id)
        for tenant_id in tenant_ids:
            await client.delete(_tenant_key(tenant_id))
    finally:
        await client.aclose()


class SessionStore(Generic[R]):
    """Typed access to sessions; the only code that knows the key layout."""

    def __init__(
        self,
        redis: RedisClient,
        *,
        decode: Callable[[str | bytes], R],
        active_ttl: int,
        retention_ttl: int,
        refusals_kept: int = REFUSALS_KEPT,
    ) -> None:
        self._redis = redis
        self._refusals_kept = refusals_kept
        self._decode = decode
        self._active_ttl = active_ttl
        self._retention_ttl = retention_ttl
        self._create = redis.register_script(_CREATE)
        self._compare_and_set = redis.register_script(_COMPARE_AND_SET)
        self._audit_only = redis.register_script(_AUDIT_ONLY)
        self._refusal = redis.register_script(_REFUSAL)
        self._release = redis.register_script(RELEASE_IF_HELD)
        self._renew = redis.register_script(RENEW_IF_HELD)
        self._outbox = OutboxStore(redis, retention_ttl=retention_ttl)
        self._claims = Claims(redis)

    @property
    def redis(self) -> RedisClient:
        return self._redis

    @property
    def outbox(self) -> OutboxStore:
        """The outbox that ``replace`` writes transitions' Slack effects into."""
        return self._outbox

    def _ttl_for(self, session: R) -> int:
        return self._active_ttl if session.is_active else self._retention_ttl

    async def create(self, session: R, *, detail: Mapping[str, str]) -> R:
        """Store a new session and take its tenant's lock, or raise ``TenantBusy``.

        The record is written before the lock is taken, so a lock whose holder has no record is
        stale for certain (its session expired or was discarded) and may be taken over; the
        other order would let a second start take a lock whose record was still being written.
        """
        created = await self._create(
            keys=[_session_key(session.id), _audit_key(session.id), _messages_key(session.id)],
            args=[
                _pack(session.to_json()),
                self._active_ttl,
                *_audit_fields(session.started_by, "start", "ok", detail),
            ],
        )
        if not created:
            raise TenantBusy(session.tenant_id, session.id)
        try:
            await self._take_tenant(session)
        except BaseException:
            # Busy, or interrupted: the record that never got its lock is not a session.
            await self._redis.delete(
                _session_key(session.id), _audit_key(session.id), _messages_key(session.id)
            )
            raise
        await self._index(None, session)
        return session

    async def _index(
        self,
        before: R | None,
        after: R,
        *,
        renew_tenant: bool = False,
        outbox_written: bool = False,
    ) -> None:
        """Bring the indexes in line with ``after`` and, with ``renew_tenant``, let an active
        session's tenant lock live as long as the session (one round trip). The lock is
        extended without asking whose it is: an active session's lock is its own (a lock is
        taken over only from a session that has ended or is gone).

        ``outbox_written``: the change added an outbox entry, so the session is marked pending
        once more. The mark before the write keeps a drain that read the generation earlier
        from forgetting it; this one covers a drain that read the generation after that mark
        and found the outbox still empty (``state.outbox``)."""
        pipe = self._redis.pipeline(transaction=False)
        if outbox_written:
            pipe.zincrby(PENDING_INDEX, 1, after.id)
        if renew_tenant and after.is_active:
            pipe.expire(_tenant_key(after.tenant_id), self._active_ttl)
        if before is not None and before.phase != after.phase:
            pipe.zrem(_phase_index(before.phase), after.id)
        if after.is_active:
            score = {after.id: after.updated_at}
            pipe.zadd(_ACTIVE_INDEX, score)
            pipe.zadd(_channel_index(after.channel_id), score)
            pipe.zadd(_phase_index(after.phase), score)
        else:
            pipe.zrem(_ACTIVE_INDEX, after.id)
            pipe.zrem(_channel_index(after.channel_id), after.id)
            pipe.zrem(_phase_index(after.phase), after.id)
        await pipe.execute()

    async def _unindex(self, session_id: str, channel_id: str | None, phase: str | None) -> None:
        pipe = self._redis.pipeline(transaction=False)
        pipe.zrem(_ACTIVE_INDEX, session_id)
        if channel_id is not None:
            pipe.zrem(_channel_index(channel_id), session_id)
        if phase is not None:
            pipe.zrem(_phase_index(phase), session_id)
        await pipe.execute()

    async def _take_tenant(self, session: R) -> None:
        lock = _tenant_key(session.tenant_id)
        for _ in range(3):
            if await self._redis.set(lock, session.id, nx=True, ex=self._active_ttl):
                return
            holder = await self._redis.get(lock)
            if holder is None:
                continue  # released between our SET and GET: try again
            holder_id = as_text(holder)
            current = await self.get(holder_id)
            if current is not None and current.is_active:
                raise TenantBusy(session.tenant_id, holder_id)
            # A stale lock (its session ended, expired or was discarded): drop and retry.
            await self._release(keys=[lock], args=[holder_id])
        raise TenantBusy(session.tenant_id, "unknown")

    async def get(self, session_id: str) -> R | None:
        data = await self._redis.hget(_session_key(session_id), "data")
        return self._decode(unpack_record(data)) if data is not None else None

    async def get_with_posts(self, session_id: str) -> tuple[R | None, PostedMessages]:
        """The session and the ts of the messages the bot posted for it, in one round trip."""
        pipe = self._redis.pipeline(transaction=False)
        pipe.hget(_session_key(session_id), "data")
        pipe.hgetall(_messages_key(session_id))
        data, kept = await pipe.execute()
        session = self._decode(unpack_record(data)) if data is not None else None
        fields = {as_text(name): as_text(value) for name, value in kept.items()}
        complete = fields.pop(EVERY_POST_KEPT, None) is not None
        posting = [name for name in fields if name.startswith(POSTING)]
        posting_until = tuple(float(fields.pop(name)) for name in posting)
        return session, PostedMessages(complete, frozenset(fields.values()), posting_until)

    async def require(self, session_id: str) -> R:
        session = await self.get(session_id)
        if session is None:
            raise SessionGone(session_id)
        return session

    async def replace(
        self,
        before: R,
        after: R,
        *,
        actor: str,
        action: str,
        result: str = "ok",
        detail: Mapping[str, str] | None = None,
        outbox: bytes | None = None,
    ) -> R:
        """Store ``after`` if the stored session is still at ``before.version``, with its audit
        entry and, when given, its ``outbox`` entry (the Slack effects it implies)."""
        if after.version != before.version + 1:
            raise ValueError("a replacement must be exactly one version newer")
        ahead = self._redis.pipeline(transaction=False)
        if outbox:
            ahead.zincrby(PENDING_INDEX, 1, before.id)  # see state.outbox: marked before
        if after.is_active and after.phase != before.phase:
            # Indexed under its new phase before it gets there: the indexes are other keys (on
            # Redis Cluster, other slots) than the record, so they cannot change in its script,
            # and an index write lost after the record's (a crash, a Redis restart) must not
            # hide the session from those who look for that phase (the orphan check for a
            # sign-in's claim, the resumption of a job). Readers skip and repair entries whose
            # record is elsewhere (``_listed``).
            ahead.zadd(_phase_index(after.phase), {after.id: after.updated_at})
        if len(ahead):
            await ahead.execute()
        outcome = await self._compare_and_set(
            keys=[_session_key(before.id), _audit_key(before.id), outbox_key(before.id)],
            args=[
                before.version,
                _pack(after.to_json() if after.is_active else after.archived_json()),
                self._ttl_for(after),
                outbox or b"",
                *_audit_fields(actor, action, result, detail or {}),
            ],
        )
        if outcome[0] == -1:
            raise SessionGone(before.id)
        if outcome[0] == 0:
            raise VersionConflict(before.id, before.version, int(outcome[1]))
        await self._index(before, after, renew_tenant=True, outbox_written=bool(outbox))
        return after

    async def record(
        self,
        session_id: str,
        *,
        actor: str,
        action: str,
        result: str,
        detail: Mapping[str, str] | None = None,
    ) -> None:
        """Add an audit entry that does not change the session (a retry, a check).

        Refusals go to ``record_refusal`` instead: they must not crowd the decisions out.
        """
        session = await self.get(session_id)
        ttl = self._ttl_for(session) if session else self._retention_ttl
        await self._audit_only(
            keys=[_session_key(session_id), _audit_key(session_id)],
            args=[ttl, *_audit_fields(actor, action, result, detail or {})],
        )

    async def audit(self, session_id: str, *, count: int = 100) -> list[AuditEntry]:
        """The first ``count`` audit entries, oldest first."""
        raw = await self._redis.xrange(_audit_key(session_id), count=count)
        return [_audit_entry(entry_id, fields) for entry_id, fields in raw or []]

    async def latest_audit(self, session_id: str, *, count: int = 8) -> list[AuditEntry]:
        """The newest ``count`` audit entries, oldest of them first (read newest first, so a
        long history costs no more than a short one)."""
        raw = await self._redis.xrevrange(_audit_key(session_id), count=count)
        return [_audit_entry(entry_id, fields) for entry_id, fields in reversed(raw or [])]

    async def latest_audits(
        self, session_ids: Sequence[str], *, count: int = 8
    ) -> dict[str, list[AuditEntry]]:
        """``latest_audit`` of each of ``session_ids``, in one round trip (a pipeline)."""
        pipe = self._redis.pipeline(transaction=False)
        for session_id in session_ids:
            pipe.xrevrange(_audit_key(session_id), count=count)
        answers = await pipe.execute() if session_ids else []
        return {
            session_id: [_audit_entry(entry_id, fields) for entry_id, fields in reversed(raw or [])]
            for session_id, raw in zip(session_ids, answers, strict=True)
        }

    async def record_refusal(
        self,
        session_id: str,
        *,
        actor: str,
        action: str,
        detail: Mapping[str, str] | None = None,
    ) -> bool:
        """Note that ``actor`` tried ``action`` and was refused, in the session's capped refusal
        stream (kept as long as a finished session's audit); False if there is no such session."""
        stored = await self._refusal(
            keys=[_session_key(session_id), _refusals_key(session_id)],
            args=[
                self._retention_ttl,
                self._refusals_kept,
                *_audit_fields(actor, action, "not_allowed", detail or {}),
            ],
        )
        return bool(stored)

    async def refusals(self, session_id: str, *, count: int = 100) -> list[AuditEntry]:
        """The newest ``count`` refusals, oldest of them first."""
        raw = await self._redis.xrevrange(_refusals_key(session_id), count=count)
        return [_audit_entry(entry_id, fields) for entry_id, fields in reversed(raw or [])]

    async def active(self) -> list[R]:
        """Every active session, oldest change first (for tests and small deployments; the
        listings below read an index instead)."""
        return await self._listed(_ACTIVE_INDEX, await self._redis.zrange(_ACTIVE_INDEX, 0, -1))

    async def in_channel(self, channel_id: str) -> list[R]:
        """The active sessions of one channel, oldest change first."""
        index = _channel_index(channel_id)
        sessions = await self._listed(index, await self._redis.zrange(index, 0, -1))
        return [s for s in sessions if s.channel_id == channel_id]

    async def in_phase(self, phase: str, *, limit: int | None = None) -> list[R]:
        """Active sessions in ``phase``, oldest change first (at most ``limit``)."""
        index = _phase_index(phase)
        ids = await self._redis.zrange(index, 0, -1 if limit is None else limit - 1)
        return [s for s in await self._listed(index, ids) if s.phase == phase]

    async def newest(self, limit: int) -> list[R]:
        """The ``limit`` active sessions changed most recently, newest first."""
        return await self._listed(
            _ACTIVE_INDEX, await self._redis.zrevrange(_ACTIVE_INDEX, 0, limit - 1)
        )

    async def idle_since(self, cutoff: float) -> list[R]:
        """Active sessions that have not changed since ``cutoff`` (the oldest first)."""
        ids = await self._redis.zrangebyscore(_ACTIVE_INDEX, "-inf", cutoff)
        return [s for s in await self._listed(_ACTIVE_INDEX, ids) if s.updated_at <= cutoff]

    async def count_active(self) -> int:
        return int(await self._redis.zcard(_ACTIVE_INDEX))

    async def count_in_phases(self, phases: Sequence[str]) -> dict[str, int]:
        """How many active sessions each phase holds (one round trip; index counts, which a
        crash between a record and its index may leave off by one until the next read)."""
        pipe = self._redis.pipeline(transaction=False)
        for phase in phases:
            pipe.zcard(_phase_index(phase))
        counts = await pipe.execute()
        return {phase: int(count) for phase, count in zip(phases, counts, strict=True)}

    async def _listed(self, index: str, members: Sequence[object]) -> list[R]:
        """The records of ``members`` of ``index`` (one round trip), with index entries whose
        record is gone, finished or moved elsewhere repaired."""
        ids = [as_text(member) for member in members if isinstance(member, bytes | str)]
        if not ids:
            return []
        pipe = self._redis.pipeline(transaction=False)
        for session_id in ids:
            pipe.hget(_session_key(session_id), "data")
        found: list[R] = []
        for session_id, data in zip(ids, await pipe.execute(), strict=True):
            session = self._decode(unpack_record(data)) if data is not None else None
            if session is None or not session.is_active:
                await self._unindex(
                    session_id,
                    session.channel_id if session else None,
                    session.phase if session else None,
                )
                if index != _ACTIVE_INDEX:
                    await self._redis.zrem(index, session_id)
                continue
            if index != _ACTIVE_INDEX and (
                index not in (_channel_index(session.channel_id), _phase_index(session.phase))
            ):
                await self._redis.zrem(index, session_id)  # moved on: the stale entry goes
                await self._index(None, session)
                continue
            found.append(session)
        return found

    async def migrate_indexes(self) -> int:
        """Index the sessions of a deployment that kept only the set ``pi:sessions`` (once, at
        start-up; nothing to do afterwards). Returns how many were indexed."""
        legacy = await self._redis.smembers(_LEGACY_ACTIVE_SET)
        indexed = 0
        for member in legacy or ():
            session = await self.get(as_text(member))
            if session is not None and session.is_active:
                await self._index(None, session)
                indexed += 1
        if legacy:
            await self._redis.delete(_LEGACY_ACTIVE_SET)
        return indexed

    async def holder_of(self, tenant_id: str) -> str | None:
        holder = await self._redis.get(_tenant_key(tenant_id))
        return as_text(holder) if holder is not None else None

    async def release_tenant(self, session: R) -> None:
        await self._release(keys=[_tenant_key(session.tenant_id)], args=[session.id])

    async def discard(self, session: R) -> None:
        """Forget a session that never got going (its root message could not be posted)."""
        await self._redis.delete(
            _session_key(session.id),
            _audit_key(session.id),
            _messages_key(session.id),
            _refusals_key(session.id),
            *outbox_keys(session.id),
        )
        await self._unindex(session.id, session.channel_id, session.phase)
        await self._redis.zrem(PENDING_INDEX, session.id)
        await self.release_tenant(session)

    async def take_lease(self, session_id: str, owner: str, *, ttl: int) -> bool:
        """Become the one process running this session's background job, for ``ttl`` seconds."""
        return bool(await self._redis.set(_lease_key(session_id), owner, nx=True, ex=ttl))

    async def renew_lease(self, session_id: str, owner: str, *, ttl: int) -> bool:
        return bool(await self._renew(keys=[_lease_key(session_id)], args=[owner, ttl]))

    async def release_lease(self, session_id: str, owner: str) -> None:
        await self._release(keys=[_lease_key(session_id)], args=[owner])

    async def lease_holder(self, session_id: str) -> str | None:
        holder = await self._redis.get(_lease_key(session_id))
        return as_text(holder) if holder is not None else None

    async def keep_message(self, session_id: str, name: str, version: int, ts: str) -> None:
        """Remember a message the bot will edit again (survives restarts).

        Keyed by the version of the transition whose effect posted it, so a job resumed for the
        same transition finds its message, and a later transition never edits an older one.
        """
        key = _messages_key(session_id)
        await self._redis.hset(key, f"{name}@{version}", ts)
        await self._redis.expire(key, self._retention_ttl)

    async def begin_post(
        self, session_id: str, posting: str, until: float, slot: str | None
    ) -> str | None:
        """Mark a post in flight under ``posting`` (a ``POSTING`` field) until ``until`` (wall
        clock), and return the ts ``slot`` already holds, if any (one round trip)."""
        key = _messages_key(session_id)
        pipe = self._redis.pipeline(transaction=False)
        pipe.hset(key, posting, repr(until))
        pipe.expire(key, self._retention_ttl)
        if slot is not None:
            pipe.hget(key, slot)
        results = await pipe.execute()
        earlier = results[2] if slot is not None else None
        return as_text(earlier) if earlier is not None else None

    async def keep_post(
        self, session_id: str, keys: Sequence[str], ts: str, *, posting: str | None = None
    ) -> None:
        """Record one posted message's ts under each of ``keys`` (a name@version and the outbox
        slot that posted it), and end its in-flight mark ``posting``, in one write."""
        key = _messages_key(session_id)
        pipe = self._redis.pipeline(transaction=False)
        if keys:
            pipe.hset(key, mapping=dict.fromkeys(keys, ts))
        if posting is not None:
            pipe.hdel(key, posting)
        pipe.expire(key, self._retention_ttl)
        await pipe.execute()

    async def forget_messages(self, session_id: str) -> None:
        """A finished session's messages will not be edited again: their ids go."""
        await self._redis.delete(_messages_key(session_id))

    async def kept_for_each(self, session_ids: Sequence[str], key: str) -> dict[str, str]:
        """What ``keep_post`` kept under ``key`` for each session that has it (one round trip)."""
        pipe = self._redis.pipeline(transaction=False)
        for session_id in session_ids:
            pipe.hget(_messages_key(session_id), key)
        values = await pipe.execute() if session_ids else []
        return {
            session_id: as_text(value)
            for session_id, value in zip(session_ids, values, strict=True)
            if value is not None
        }

    async def kept_post(self, session_id: str, key: str) -> str | None:
        value = await self._redis.hget(_messages_key(session_id), key)
        return as_text(value) if value is not None else None

    async def kept_message(self, session_id: str, name: str, version: int) -> str | None:
        value = await self._redis.hget(_messages_key(session_id), f"{name}@{version}")
        return as_text(value) if value is not None else None

    async def claim_once(self, key: str, *, ttl: int = 3600, token: str | None = None) -> bool:
        """True the first time ``key`` is claimed within ``ttl`` seconds, False afterwards.

        ``token``, unique to the claimant, makes the claim safe to retry: when the server set the
        key but its answer was lost (a connection cut by a restart), the retry finds its own
        token and is still the first. Without one, the claim is this call's alone.
        """
        [first] = await self._claims.claim_each([(key, ttl)], token=token or secrets.token_hex(8))
        return first

    async def claim_each(self, claims: Sequence[tuple[str, int]], *, token: str) -> list[bool]:
        """``claim_once(key, ttl=ttl, token=token)`` for every ``(key, ttl)``, in one round trip
        shared with the other requests claiming at the same moment (``state.claims``); every
        key is claimed, whatever the others' answers."""
        return await self._claims.claim_each(claims, token=token)

    async def ping(self) -> bool:
        """True when Redis answers as the deployment the client was made for (every master of a
        cluster; a plain server, not a cluster node, otherwise); raises ``RedisError`` if not."""
        await verify(self._redis)
        return True

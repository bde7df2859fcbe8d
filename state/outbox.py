"""The outbox in Redis: the Slack effects of stored transitions, waiting to be delivered.

Keys (a session's keys share its hash tag, so the scripts below run on Redis Cluster too):

- ``pi:{sid}:outbox``       list of entries (opaque text, oldest first), appended by the session
                            store's compare-and-set in the same script as the state change
- ``pi:{sid}:delivery``     hash: the head entry's attempts, ``not_before`` and last error
- ``pi:{sid}:delivering``   the delivery lease: which process delivers this session right now
- ``pi:{sid}:undelivered``  list of entries given up on (bounded retries spent, or an error that
                            retrying cannot fix), each with its error: what ``status`` shows
- ``pi:outbox``             sorted set: sessions that may have entries, scored by a generation the
                            writer bumps before its compare-and-set and again after it; a
                            deliverer that found the outbox empty removes the session only if the
                            generation is still the one it read, then looks at the outbox once
                            more and puts the session back if an entry came meanwhile, so a
                            concurrent write is never forgotten, even by a writer that dies
                            right after it
- ``pi:outbox:undelivered`` set of sessions with undelivered entries (for the metrics), and
                            ``pi:outbox:undelivered:{cid}`` the same per channel (for status)

Only ids, Slack effects and their delivery state live here; no secret ever does (entries hold the
session record, which holds none).
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from state.connection import RedisClient
from state.scripts import RENEW_IF_HELD, as_text, session_key

__all__ = ["Head", "OutboxStore", "Undelivered", "outbox_key"]

PENDING_INDEX = "pi:outbox"
UNDELIVERED_INDEX = "pi:outbox:undelivered"
UNDELIVERED_KEPT = 20  # per session: the newest failures, enough to explain what went wrong


def _undelivered_in(channel_id: str) -> str:
    return f"{UNDELIVERED_INDEX}:{channel_id}"


def outbox_key(session_id: str) -> str:
    return session_key(session_id, "outbox")


_PARTS = ("outbox", "delivery", "delivering", "undelivered")


def outbox_keys(session_id: str) -> list[str]:
    """Every per-session key of the outbox (for discarding and purging a session)."""
    return [session_key(session_id, part) for part in _PARTS]


# KEYS: outbox, delivery. ARGV: the head entry as read. Pops it only if it is still the head, so
# two deliverers (a lease lost to a long pause) never pop an entry the other has not sent.
# Returns {1, the next entry or false} when popped, {0} when it was not the head.
_POP_IF_HEAD = """
if redis.call('LINDEX', KEYS[1], 0) ~= ARGV[1] then return {0} end
redis.call('LPOP', KEYS[1])
redis.call('DEL', KEYS[2])
return {1, redis.call('LINDEX', KEYS[1], 0)}
"""

# KEYS: lease, outbox, delivery. ARGV: owner, ttl. Takes the delivery lease and, when taken,
# reads the head and its delivery state in the same round trip: {1, head or false, state} or {0}.
_TAKE_LEASE_AND_HEAD = """
if not redis.call('SET', KEYS[1], ARGV[1], 'NX', 'EX', ARGV[2]) then return {0} end
return {1, redis.call('LINDEX', KEYS[2], 0), redis.call('HGETALL', KEYS[3])}
"""

# KEYS: lease, outbox. ARGV: owner. Gives the lease back (if still held) and says how many
# entries are left, so the deliverer knows whether to look again.
_RELEASE_AND_COUNT = """
if redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('DEL', KEYS[1]) end
return redis.call('LLEN', KEYS[2])
"""

# KEYS: outbox, delivery, undelivered. ARGV: head as read, failure record, kept, ttl.
_GIVE_UP_ON_HEAD = """
if redis.call('LINDEX', KEYS[1], 0) ~= ARGV[1] then return 0 end
redis.call('LPOP', KEYS[1])
redis.call('DEL', KEYS[2])
redis.call('RPUSH', KEYS[3], ARGV[2])
redis.call('LTRIM', KEYS[3], -tonumber(ARGV[3]), -1)
redis.call('EXPIRE', KEYS[3], ARGV[4])
return 1
"""

# KEYS: the pending index. ARGV: session id, the generation read before draining.
_FORGET_IF_UNCHANGED = """
local generation = redis.call('ZSCORE', KEYS[1], ARGV[1])
if generation and tonumber(generation) == tonumber(ARGV[2]) then
  return redis.call('ZREM', KEYS[1], ARGV[1])
end
return 0
"""


@dataclass(frozen=True)
class Head:
    """The oldest entry of a session's outbox and how its delivery has gone so far."""

    entry: bytes  # opaque: what the session store's compare-and-set wrote
    attempts: int
    not_before: float
    last_error: str


@dataclass(frozen=True)
class Undelivered:
    """An entry the outbox gave up on: what it was for and why it failed."""

    version: int
    effects: tuple[str, ...]
    error: str
    attempts: int
    at: float


class OutboxStore:
    """Typed access to the outbox keys; the session store writes entries, this reads them."""

    def __init__(self, redis: RedisClient, *, retention_ttl: int) -> None:
        self._redis = redis
        self._retention_ttl = retention_ttl
        self._pop_if_head = redis.register_script(_POP_IF_HEAD)
        self._take_and_read = redis.register_script(_TAKE_LEASE_AND_HEAD)
        self._release_and_count = redis.register_script(_RELEASE_AND_COUNT)
        self._give_up = redis.register_script(_GIVE_UP_ON_HEAD)
        self._forget = redis.register_script(_FORGET_IF_UNCHANGED)
        self._renew = redis.register_script(RENEW_IF_HELD)

    async def expect(self, session_id: str) -> None:
        """Mark the session as having work, before the write that adds it (see the module)."""
        await self._redis.zincrby(PENDING_INDEX, 1, session_id)

    async def pending(self) -> list[str]:
        """Sessions that may have entries waiting."""
        members = await self._redis.zrange(PENDING_INDEX, 0, -1)
        return [as_text(member) for member in members if isinstance(member, bytes | str)]

    async def generation(self, session_id: str) -> float | None:
        score = await self._redis.zscore(PENDING_INDEX, session_id)
        return float(score) if score is not None else None

    async def forget_if_unchanged(self, session_id: str, generation: float) -> bool:
        """Drop the session from the pending index unless a writer marked it since."""
        return bool(await self._forget(keys=[PENDING_INDEX], args=[session_id, generation]))

    async def head(self, session_id: str) -> Head | None:
        pipe = self._redis.pipeline(transaction=False)
        pipe.lindex(outbox_key(session_id), 0)
        pipe.hgetall(session_key(session_id, "delivery"))
        entry, state = await pipe.execute()
        return _head(entry, state)

    async def heads(self, session_ids: Sequence[str]) -> dict[str, Head | None]:
        """``head`` of each of ``session_ids``, in one round trip (a pipeline)."""
        pipe = self._redis.pipeline(transaction=False)
        for session_id in session_ids:
            pipe.lindex(outbox_key(session_id), 0)
            pipe.hgetall(session_key(session_id, "delivery"))
        answers = await pipe.execute() if session_ids else []
        return {
            session_id: _head(answers[2 * n], answers[2 * n + 1])
            for n, session_id in enumerate(session_ids)
        }

    async def length(self, session_id: str) -> int:
        return int(await self._redis.llen(outbox_key(session_id)))

    async def delivered(self, session_id: str, head: Head) -> tuple[bool, Head | None]:
        """The head was sent: pop it (only if it still is the head). Returns whether it was
        popped and the entry after it (a fresh one: never tried yet)."""
        answer = await self._pop_if_head(
            keys=[outbox_key(session_id), session_key(session_id, "delivery")],
            args=[head.entry],
        )
        if not answer[0]:
            return False, None
        return True, _head(answer[1], {})

    async def postpone(
        self, session_id: str, *, attempts: int, not_before: float, error: str
    ) -> None:
        """The head failed for now: note it and when to try again."""
        key = session_key(session_id, "delivery")
        await self._redis.hset(
            key, mapping={"attempts": attempts, "not_before": repr(not_before), "error": error}
        )
        await self._redis.expire(key, self._retention_ttl)

    async def give_up(
        self,
        session_id: str,
        head: Head,
        *,
        channel_id: str,
        version: int,
        effects: tuple[str, ...],
        error: str,
    ) -> bool:
        """Move the head to the undelivered list (kept, shown by ``status`` in ``channel_id``)."""
        record = json.dumps(
            {
                "version": version,
                "effects": list(effects),
                "error": error,
                "attempts": head.attempts + 1,
                "at": time.time(),
            }
        )
        moved = bool(
            await self._give_up(
                keys=[
                    outbox_key(session_id),
                    session_key(session_id, "delivery"),
                    session_key(session_id, "undelivered"),
                ],
                args=[head.entry, record, UNDELIVERED_KEPT, self._retention_ttl],
            )
        )
        if moved:
            pipe = self._redis.pipeline(transaction=False)
            pipe.sadd(UNDELIVERED_INDEX, session_id)
            pipe.sadd(_undelivered_in(channel_id), session_id)
            pipe.expire(_undelivered_in(channel_id), self._retention_ttl)
            await pipe.execute()
        return moved

    async def undelivered(self, session_ids: list[str]) -> Mapping[str, list[Undelivered]]:
        """What could not be delivered, for each of ``session_ids`` that has any."""
        pipe = self._redis.pipeline(transaction=False)
        for session_id in session_ids:
            pipe.lrange(session_key(session_id, "undelivered"), 0, -1)
        answers = await pipe.execute() if session_ids else []
        return {
            session_id: [_undelivered(item) for item in raw]
            for session_id, raw in zip(session_ids, answers, strict=True)
            if raw
        }

    async def with_undelivered(self, channel_id: str) -> list[str]:
        """The sessions of ``channel_id`` that have undelivered entries (dropping those whose
        list expired meanwhile)."""
        index = _undelivered_in(channel_id)
        ids = sorted(as_text(member) for member in await self._redis.smembers(index))
        kept = []
        for session_id in ids:
            if await self._redis.exists(session_key(session_id, "undelivered")):
                kept.append(session_id)
            else:
                await self._redis.srem(index, session_id)
                await self._redis.srem(UNDELIVERED_INDEX, session_id)
        return kept

    async def count_undelivered(self) -> int:
        """How many sessions have undelivered entries (an index count, for the metrics)."""
        return int(await self._redis.scard(UNDELIVERED_INDEX))

    async def count_pending(self) -> int:
        return int(await self._redis.zcard(PENDING_INDEX))

    async def take_lease(
        self, session_id: str, owner: str, *, ttl: int
    ) -> tuple[bool, Head | None]:
        """Become the one deliverer of this session's outbox for ``ttl`` seconds; when that
        worked, also the head to deliver first (one round trip)."""
        answer = await self._take_and_read(
            keys=[
                session_key(session_id, "delivering"),
                outbox_key(session_id),
                session_key(session_id, "delivery"),
            ],
            args=[owner, ttl],
        )
        if not answer[0]:
            return False, None
        flat = answer[2] or []
        return True, _head(answer[1], dict(zip(flat[::2], flat[1::2], strict=True)))

    async def renew_lease(self, session_id: str, owner: str, *, ttl: int) -> bool:
        return bool(
            await self._renew(keys=[session_key(session_id, "delivering")], args=[owner, ttl])
        )

    async def release_lease(self, session_id: str, owner: str) -> int:
        """Give the lease back; how many entries are left."""
        return int(
            await self._release_and_count(
                keys=[session_key(session_id, "delivering"), outbox_key(session_id)],
                args=[owner],
            )
        )


def _head(entry: object, state: object) -> Head | None:
    """A head from Redis's answers (``entry`` None or false: the outbox is empty)."""
    if not isinstance(entry, bytes | str):
        return None
    fields = (
        {as_text(key): as_text(value) for key, value in state.items()}
        if isinstance(state, dict)
        else {}
    )
    return Head(
        entry=entry if isinstance(entry, bytes) else entry.encode(),
        attempts=int(fields.get("attempts") or 0),
        not_before=float(fields.get("not_before") or 0),
        last_error=fields.get("error", ""),
    )


def _undelivered(raw: bytes | str) -> Undelivered:
    data = json.loads(as_text(raw))
    return Undelivered(
        version=int(data["version"]),
        effects=tuple(str(effect) for effect in data["effects"]),
        error=str(data["error"]),
        attempts=int(data["attempts"]),
        at=float(data["at"]),
    )

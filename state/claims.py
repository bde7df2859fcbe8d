"""First-claim-wins keys (``SET NX`` with a lifetime), claimed together by concurrent requests.

Every Slack request claims its delivery id (or, without one, its signature) before its ack (the
duplicate filter). Under a burst many requests do so at the same moment; each sending its own
pipeline costs each one a connection from the pool, a round trip and the client's bookkeeping. Here
the claims made in one turn of the event loop share one pipeline: the first claimant opens a batch,
lets the requests that are ready to run join it, and sends it; everyone gets their own answers. A
failure of the round trip is every claimant's failure (each retries on its own, as before).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, field

from state.connection import RedisClient
from state.scripts import as_text

__all__ = ["Claims", "claim_key"]


def claim_key(key: str) -> str:
    """The Redis key of a claim (its own hash slot)."""
    return f"pi:once:{{{key}}}"


@dataclass
class _Batch:
    keys: list[tuple[str, int, str]] = field(default_factory=list)  # key, ttl, token
    waiting: list[tuple[asyncio.Future[list[bool]], int, int]] = field(default_factory=list)

    def join(self, claims: Sequence[tuple[str, int]], token: str) -> asyncio.Future[list[bool]]:
        answer: asyncio.Future[list[bool]] = asyncio.get_running_loop().create_future()
        self.waiting.append((answer, len(self.keys), len(claims)))
        self.keys.extend((key, ttl, token) for key, ttl in claims)
        return answer


class Claims:
    """``claim_each``: claims that wait for each other only as long as one turn of the loop."""

    def __init__(self, redis: RedisClient) -> None:
        self._redis = redis
        self._open: _Batch | None = None
        self._sending: set[asyncio.Task[None]] = set()

    async def claim_each(self, claims: Sequence[tuple[str, int]], *, token: str) -> list[bool]:
        """For every ``(key, ttl)``: True when this claimant is the first within ``ttl`` seconds
        (or the key already holds ``token``: its earlier try set it, and the answer was lost),
        False when another claimant was first. Every key is claimed, whatever the others'
        answers."""
        if not claims:
            return []
        batch = self._open
        if batch is None:
            batch = self._open = _Batch()
            asyncio.get_running_loop().call_soon(self._send, batch)
        return await batch.join(claims, token)

    def _send(self, batch: _Batch) -> None:
        # Its own task: a claimant cancelled while waiting cancels only its own answer.
        self._open = None
        task = asyncio.create_task(self._round_trip(batch), name="claims")
        self._sending.add(task)
        task.add_done_callback(self._sending.discard)

    async def _round_trip(self, batch: _Batch) -> None:
        try:
            firsts = await self._set_each(batch.keys)
        except Exception as error:  # noqa: BLE001 - handed to every claimant, who decides
            for answer, _, _ in batch.waiting:
                if not answer.done():
                    answer.set_exception(error)
            return
        except BaseException:  # cancelled (the process stops): so are the claimants
            for answer, _, _ in batch.waiting:
                answer.cancel()
            raise
        for answer, start, count in batch.waiting:
            if not answer.done():
                answer.set_result(firsts[start : start + count])

    async def _set_each(self, keys: list[tuple[str, int, str]]) -> list[bool]:
        # A pipeline, not a transaction: the keys may live on different cluster nodes.
        async with self._redis.pipeline(transaction=False) as pipe:
            for key, ttl, token in keys:
                pipe.set(claim_key(key), token, nx=True, ex=ttl)
            answers = await pipe.execute()
        firsts = [bool(first) for first in answers]
        lost = [n for n, first in enumerate(firsts) if not first]
        if lost:  # a retried claim may find its own token: it was the first after all
            async with self._redis.pipeline(transaction=False) as pipe:
                for n in lost:
                    pipe.get(claim_key(keys[n][0]))
                holders = await pipe.execute()
            for n, holder in zip(lost, holders, strict=True):
                firsts[n] = holder is not None and as_text(holder) == keys[n][2]
        return firsts

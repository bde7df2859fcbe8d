"""Lease renewal stops when the work ends, whatever the Redis client does with a cancel."""

from __future__ import annotations

import asyncio

from redis.exceptions import ConnectionError as RedisConnectionError

from bot.renewal import renewed


def renewing_tasks() -> list[asyncio.Task[object]]:
    return [t for t in asyncio.all_tasks() if t.get_name().startswith("renewing") and not t.done()]


async def test_leaving_stops_a_renewal_that_turns_its_cancel_into_a_connection_error() -> None:
    """redis-py, interrupted mid-command, may raise a connection error instead of the
    ``CancelledError``; a renewal that then tried again would renew the lease for ever and the
    work could never hand it back (a job held its lease after it had finished, under load)."""
    in_flight = asyncio.Event()
    renewals = 0

    async def renew() -> bool:
        nonlocal renewals
        renewals += 1
        in_flight.set()
        try:
            await asyncio.Event().wait()  # the renewal's answer has not come yet
        except asyncio.CancelledError:
            raise RedisConnectionError("Connection closed by server.") from None
        return True

    async with asyncio.timeout(10):  # a renewal that went on would hang here
        async with renewed(renew, every=0.01, what="the test lease"):
            await in_flight.wait()
    assert renewals == 1
    assert renewing_tasks() == []


async def test_a_lost_lease_is_said_once_and_renewing_stops() -> None:
    lost = asyncio.Event()

    async def renew() -> bool:
        return False

    async with renewed(renew, every=0.01, what="the test lease", on_lost=lost.set):
        await lost.wait()
        assert renewing_tasks() == []  # it stopped by itself

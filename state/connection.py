"""Opening the Redis connection from ``REDIS_URL`` (``redis://``, ``rediss://``, passwords)."""

from __future__ import annotations

from redis.asyncio import Redis


def connect(url: str) -> Redis:
    """A client for ``url``; connecting happens on first use, so this never blocks."""
    client: Redis = Redis.from_url(
        url,
        socket_connect_timeout=2,
        socket_timeout=5,
        health_check_interval=30,
        retry_on_timeout=True,
    )
    return client

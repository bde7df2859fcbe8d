"""Opening the Redis connection: one server, a Redis Cluster, or a master found through Sentinel.

- One server: ``REDIS_URL`` (``redis://``, ``rediss://`` for TLS, ``unix://``; passwords).
- Redis Cluster (``cluster=True``): ``REDIS_URL`` names any node; the client learns the others
  (``CLUSTER SLOTS``) and follows ``MOVED``/``ASK``. Every key of a session shares a hash tag, so
  each of the store's scripts touches one slot; anything spanning sessions or tenants is done as
  separate single-key commands.
- Sentinel (``sentinels`` + ``sentinel_master``): the sentinels say where the master is; after a
  failover the client asks them again. ``REDIS_URL`` still gives the scheme (``rediss://``: TLS
  to the sentinels and to the master), the username, password and database; its host and port
  are not used.

Nothing here talks to Redis: the clients connect on first use. ``verify`` says whether the server
is the kind of deployment the client was made for (a plain client on a cluster node answers
``MOVED`` for two thirds of the keys: better refused at ``check`` and ``/healthz`` than later).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, TypeAlias

from redis.asyncio import Redis, RedisCluster, Sentinel
from redis.asyncio.connection import BlockingConnectionPool, SSLConnection, parse_url
from redis.exceptions import NoPermissionError, RedisClusterException, RedisError

__all__ = ["RedisClient", "TopologyError", "connect", "verify"]

#: What the store talks to: one client class per topology (Sentinel's is a ``Redis``).
RedisClient: TypeAlias = Redis | RedisCluster

# The same patience whatever the topology: connect within 2 s, an answer within 5 s.
_OPTIONS: dict[str, Any] = {
    "socket_connect_timeout": 2,
    "socket_timeout": 5,
    "health_check_interval": 30,
}
# A single server's client retries a timed-out command; the cluster client always does (and
# also on MOVED/ASK, CLUSTERDOWN and lost connections, re-reading the slot map).
_SINGLE = {**_OPTIONS, "retry_on_timeout": True}
#: A single server's pool: past this many connections in use a command waits for one to come back
#: (up to ``POOL_WAIT_SECONDS``) instead of failing at once with "Too many connections", so a burst
#: of acked work queues for Redis rather than erroring.
MAX_CONNECTIONS = 100
POOL_WAIT_SECONDS = 20


class TopologyError(RedisError):
    """The server is not the kind of deployment the client was configured for."""


class _SentinelManaged(Redis):
    """The master's client; closing it also closes the connections to the sentinels."""

    watched_by: Sentinel | None = None

    async def aclose(self, close_connection_pool: bool | None = None) -> None:
        await super().aclose(close_connection_pool)
        if self.watched_by is not None:
            await self.watched_by.aclose()


def connect(
    url: str,
    *,
    cluster: bool = False,
    sentinels: Sequence[tuple[str, int]] = (),
    sentinel_master: str | None = None,
    sentinel_password: str | None = None,
) -> RedisClient:
    """A client for the deployment described; connecting happens on first use, so this never
    blocks. Pass either ``cluster`` or ``sentinels`` + ``sentinel_master``, not both."""
    if cluster and sentinels:
        raise ValueError("a deployment is either a cluster or watched by sentinels, not both")
    if cluster:
        return RedisCluster.from_url(url, **_OPTIONS)
    if sentinels:
        if not sentinel_master:
            raise ValueError("Sentinel needs the name of the master it watches")
        return _through_sentinel(url, sentinels, sentinel_master, sentinel_password)
    pool = BlockingConnectionPool.from_url(
        url, max_connections=MAX_CONNECTIONS, timeout=POOL_WAIT_SECONDS, **_SINGLE
    )
    return Redis.from_pool(pool)


def _through_sentinel(
    url: str,
    sentinels: Sequence[tuple[str, int]],
    master: str,
    sentinel_password: str | None,
) -> Redis:
    # REDIS_URL's options without its address: the sentinels name the master's address.
    options: dict[str, Any] = dict(parse_url(url))
    options.pop("host", None)
    options.pop("port", None)
    tls = options.pop("connection_class", None) is SSLConnection
    tls_options = {name: value for name, value in options.items() if name.startswith("ssl_")}
    sentinel = Sentinel(  # type: ignore[no-untyped-call]
        list(sentinels),
        sentinel_kwargs={
            **{name: value for name, value in _OPTIONS.items() if name.startswith("socket_")},
            "password": sentinel_password,
            **({"ssl": True, **tls_options} if tls else {}),
        },
        **_SINGLE,
    )
    client: _SentinelManaged = sentinel.master_for(
        master, redis_class=_SentinelManaged, ssl=tls, **options
    )
    client.watched_by = sentinel
    return client


async def verify(client: RedisClient) -> None:
    """Raise ``RedisError`` unless Redis answers, as the deployment the client was made for.

    A cluster client needs every master to answer; a plain (or Sentinel's) client must not be
    talking to a cluster node. Where an ACL forbids ``INFO`` a ``PING`` has to do.
    """
    if isinstance(client, RedisCluster):
        try:
            await client.ping(target_nodes=RedisCluster.PRIMARIES)
        except RedisClusterException as error:  # not a RedisError: /healthz would answer 500
            # e.g. "Cluster mode is not enabled on this node", or no node reachable at all
            raise TopologyError(f"Redis Cluster (REDIS_CLUSTER=1) unusable: {error}") from error
        return
    try:
        info = await client.info("cluster")
    except NoPermissionError:
        await client.ping()
        return
    if str(info.get("cluster_enabled", "0")) == "1":
        raise TopologyError(
            "the server is a Redis Cluster node: set REDIS_CLUSTER=1 so that keys are sent to "
            "the node that holds them"
        )


async def answers(url: str) -> bool:
    """Whether a single Redis server answers PING at ``url`` within a second."""
    client: Redis = Redis.from_url(url, socket_connect_timeout=1, socket_timeout=1)
    try:
        return bool(await client.ping())
    except (RedisError, OSError, ValueError):
        return False
    finally:
        await client.aclose()

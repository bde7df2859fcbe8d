"""The store and the whole bot on Redis Cluster and through Sentinel (RELIABILITY.md).

Each topology is real: three cluster masters on loopback (``RedisClusterServers``), a master, its
replica and a sentinel (``SentinelServers``), all started here from the installed redis-server.
Nothing is skipped when a binary is missing: the fixture fails, and so does CI.

- the session store's operations on each topology (create, the compare-and-set race, audit,
  refusals, leases, OAuth states, claim_once, discard), keys spread over the cluster's nodes;
- the client refuses the wrong topology (``check`` and ``/healthz`` say so);
- a whole provisioning through the integration harness on each topology;
- a Sentinel failover: the master is killed, the sentinel promotes the replica, the store goes on
  with everything it had acknowledged.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from redis.asyncio import Redis, RedisCluster

from bot.config import ConfigError, load_settings
from bot.sandbox.redis_server import RedisClusterServers, SentinelServers
from bot.sandbox.server import SandboxTLS
from bot.workflow import Event, EventKind, Phase, Scope, Session, TransitionNotAllowed, advance
from state.connection import RedisClient, TopologyError, connect, verify
from state.oauth import OAuthStates, RedemptionStatus
from state.sessions import SessionStore, TenantBusy, VersionConflict
from tests.conftest import base_environment
from tests.integration.conftest import Harness, harness  # noqa: F401 - the fixture, reused
from tests.integration.test_apply import expected_named, named_objects, plan_shown
from tests.integration.test_apply import submit_and_finish as submit_and_finish_apply

TENANT = "0f1e2d3c-4b5a-4697-8899-aabbccddeeff"
# The module's deployments require passwords, as production ones do.
SERVER_PASSWORD = "server-password-0123"
SENTINEL_PASSWORD = "sentinel-password-4567"


# -- the deployments ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def cluster() -> Iterator[RedisClusterServers]:
    servers = RedisClusterServers(3, password=SERVER_PASSWORD)
    servers.start()
    try:
        yield servers
    finally:
        servers.close()


@pytest.fixture(scope="module")
def sentinels() -> Iterator[SentinelServers]:
    servers = SentinelServers(password=SERVER_PASSWORD, sentinel_password=SENTINEL_PASSWORD)
    servers.start()
    try:
        yield servers
    finally:
        servers.close()


@dataclass
class Topology:
    """One deployment and the variables that point the bot at it."""

    name: str
    environment: dict[str, str]
    plain_url: str  # a node (cluster) or the master (Sentinel) as a single server
    nodes: list[str] = field(default_factory=list)

    def client(self) -> RedisClient:
        """A client made the way the bot makes its own (``build_runtime``)."""
        settings = load_settings(base_environment(**self.environment))
        return connect(
            settings.redis_url.reveal(),
            cluster=settings.redis_cluster,
            sentinels=settings.redis_sentinels,
            sentinel_master=settings.redis_sentinel_master,
            sentinel_password=(
                settings.redis_sentinel_password.reveal()
                if settings.redis_sentinel_password
                else None
            ),
        )


@pytest.fixture(params=["cluster", "sentinel"])
def topology(request: pytest.FixtureRequest) -> Topology:
    if request.param == "cluster":
        servers: RedisClusterServers = request.getfixturevalue("cluster")
        return Topology(
            "cluster",
            {"REDIS_URL": servers.nodes[1].url, "REDIS_CLUSTER": "1"},  # any node will do
            servers.url,
            servers.urls,
        )
    watched: SentinelServers = request.getfixturevalue("sentinels")
    return Topology(
        "sentinel",
        {
            # Only the scheme, credentials and database count: the sentinels name the master.
            "REDIS_URL": f"redis://:{SERVER_PASSWORD}@unused.invalid:1/0",
            "REDIS_SENTINELS": ",".join(f"{host}:{port}" for host, port in watched.sentinels),
            "REDIS_SENTINEL_MASTER": watched.name,
            "REDIS_SENTINEL_PASSWORD": SENTINEL_PASSWORD,
        },
        watched.master.url,
        [watched.master.url],
    )


@pytest.fixture
async def client(topology: Topology) -> AsyncIterator[RedisClient]:
    redis = topology.client()
    await redis.flushall()  # every master of a cluster
    try:
        yield redis
    finally:
        await redis.aclose()


@pytest.fixture
def store(client: RedisClient) -> SessionStore[Session]:
    return SessionStore(client, decode=Session.from_json, active_ttl=3600, retention_ttl=7200)


def new_session(session_id: str, tenant_id: str = TENANT) -> Session:
    return Session(
        id=session_id,
        tenant_id=tenant_id,
        tenant_label="contoso.com",
        scope=Scope.FULL,
        channel_id="C0PROV",
        started_by="U0ADMIN",
        created_at=1.0,
        updated_at=1.0,
    )


# -- configuration --------------------------------------------------------------------------------


def test_the_topology_variables_are_read() -> None:
    cluster = load_settings(base_environment(REDIS_CLUSTER="1"))
    assert cluster.redis_cluster
    assert cluster.redis_sentinels == ()
    watched = load_settings(
        base_environment(
            REDIS_URL="rediss://:master-password@ignored:6379/2",
            REDIS_SENTINELS="10.0.0.1:26379, sentinel-2.example:26380,[::1]:26381",
            REDIS_SENTINEL_MASTER="pi-primary",
            REDIS_SENTINEL_PASSWORD="sentinel-password",
        )
    )
    assert watched.redis_sentinels == (
        ("10.0.0.1", 26379),
        ("sentinel-2.example", 26380),
        ("::1", 26381),
    )
    assert watched.redis_sentinel_master == "pi-primary"
    assert "sentinel-password" not in repr(watched)
    assert not watched.redis_cluster
    assert not load_settings(base_environment()).redis_cluster


def test_every_topology_problem_is_named_in_the_one_message() -> None:
    with pytest.raises(ConfigError) as failed:
        load_settings(
            base_environment(
                REDIS_URL="unix:///run/redis.sock",
                REDIS_CLUSTER="maybe",
                REDIS_SENTINELS="10.0.0.1:26379,no-port,host:99999",
            )
        )
    message = str(failed.value)
    assert "REDIS_CLUSTER must be 1" in message
    assert "not host:port: no-port, host:99999" in message
    assert "REDIS_SENTINEL_MASTER is missing" in message
    assert "REDIS_URL is a unix:// socket" in message
    with pytest.raises(ConfigError) as failed:
        load_settings(
            base_environment(
                REDIS_URL="redis://node:7000/3",
                REDIS_CLUSTER="1",
                REDIS_SENTINELS="10.0.0.1:26379",
                REDIS_SENTINEL_MASTER="pi-primary",
            )
        )
    message = str(failed.value)
    assert "both set" in message
    assert "Redis Cluster has database 0 only" in message
    with pytest.raises(ConfigError) as failed:
        load_settings(base_environment(REDIS_SENTINEL_MASTER="pi-primary"))
    assert "REDIS_SENTINEL_MASTER is set but REDIS_SENTINELS is not" in str(failed.value)


# -- the store on each topology -------------------------------------------------------------------


async def test_sessions_are_created_read_and_locked_per_tenant(
    store: SessionStore[Session],
) -> None:
    await store.create(new_session("s1"), detail={"tenant": "contoso.com"})
    assert await store.get("s1") == new_session("s1")
    assert await store.holder_of(TENANT) == "s1"
    with pytest.raises(TenantBusy):
        await store.create(new_session("s2"), detail={})
    for n in range(12):  # tenant locks and sessions in slots all over a cluster
        await store.create(new_session(f"t{n}", tenant_id=f"tenant-{n}"), detail={})
    assert {s.id for s in await store.active()} == {"s1"} | {f"t{n}" for n in range(12)}
    [entry] = await store.audit("s1")
    assert (entry.action, entry.detail) == ("start", {"tenant": "contoso.com"})


async def test_a_race_of_decisions_stores_exactly_one(store: SessionStore[Session]) -> None:
    session = await store.create(new_session("s1"), detail={})

    async def decide(actor: str) -> str:
        while True:
            current = await store.require("s1")
            try:
                transition = advance(current, Event(EventKind.CANCEL, actor, 3.0))
            except TransitionNotAllowed:
                return "refused"
            try:
                await store.replace(current, transition.after, actor=actor, action="cancel")
            except VersionConflict:
                continue
            return "stored"

    outcomes = await asyncio.gather(*(decide(f"U{n}") for n in range(8)))
    assert outcomes.count("stored") == 1
    assert [e.action for e in await store.audit(session.id)] == ["start", "cancel"]
    stale = advance(session, Event(EventKind.MAILFLOW_CONSENT, "U0GA", 2.0)).after
    with pytest.raises(VersionConflict):
        await store.replace(session, stale, actor="U0GA", action="mailflow_consent")
    assert await store.active() == []  # a finished session leaves the index (another slot)


async def test_audit_refusals_messages_and_discard(store: SessionStore[Session]) -> None:
    session = await store.create(new_session("s1"), detail={})
    moved = advance(session, Event(EventKind.MAILFLOW_CONSENT, "U0GA", 2.0)).after
    await store.replace(session, moved, actor="U0GA", action="mailflow_consent")
    await store.record("s1", actor="U0ADMIN", action="check", result="ok", detail={"n": "1"})
    assert await store.record_refusal("s1", actor="U0OUTSIDER", action="refused: cancel")
    await store.keep_message("s1", "progress", 1, "1700000000.000100")
    assert [e.action for e in await store.latest_audit("s1", count=2)] == [
        "mailflow_consent",
        "check",
    ]
    # Several sessions' keys in one pipeline (status): on a cluster they live in other slots.
    await store.create(new_session("s2", "1f1e2d3c-4b5a-4697-8899-aabbccddeeff"), detail={})
    audits = await store.latest_audits(["s1", "s2", "gone"], count=1)
    assert {k: [e.action for e in v] for k, v in audits.items()} == {
        "s1": ["check"],
        "s2": ["start"],
        "gone": [],
    }
    heads = await store.outbox.heads(["s1", "s2"])
    assert heads == {"s1": None, "s2": None}
    assert await store.outbox.undelivered(["s1", "s2"]) == {}
    assert [r.actor for r in await store.refusals("s1")] == ["U0OUTSIDER"]
    assert await store.kept_message("s1", "progress", 1) == "1700000000.000100"
    await store.discard(moved)  # one DEL of the session's four keys: one slot
    assert await store.get("s1") is None
    assert await store.audit("s1") == []
    assert await store.holder_of(TENANT) is None


async def test_leases_and_claims(store: SessionStore[Session]) -> None:
    await store.create(new_session("s1"), detail={})
    assert await store.take_lease("s1", "replica-a", ttl=60)
    assert not await store.take_lease("s1", "replica-b", ttl=60)
    assert not await store.renew_lease("s1", "replica-b", ttl=60)
    assert await store.renew_lease("s1", "replica-a", ttl=60)
    await store.release_lease("s1", "replica-b")  # not the holder: nothing happens
    assert await store.lease_holder("s1") == "replica-a"
    await store.release_lease("s1", "replica-a")
    assert await store.lease_holder("s1") is None
    assert [await store.claim_once(f"trigger:{n % 3}") for n in range(6)] == [True] * 3 + [
        False
    ] * 3
    # Several keys in one round trip (on a cluster, over several nodes); a retry with the same
    # token is still the first, another claimant is not.
    claims = [(f"trigger:{n}", 60) for n in range(2, 6)]
    assert await store.claim_each(claims, token="a") == [False, True, True, True]
    assert await store.claim_each(claims, token="a") == [False, True, True, True]
    assert await store.claim_each(claims, token="b") == [False] * 4


async def test_oauth_states_are_single_use(client: RedisClient) -> None:
    states = OAuthStates(client)
    state = await states.issue(session_id="s1", tenant_id=TENANT, purpose="mailflow", now=100.0)
    assert await states.note_opened(state, "U0ADMIN")
    first = await states.redeem(state, now=101.0)
    assert first.status is RedemptionStatus.VALID
    assert first.binding is not None
    assert first.binding.opened_by == "U0ADMIN"
    assert (await states.redeem(state, now=102.0)).status is RedemptionStatus.REPLAYED
    assert (await states.redeem("forged", now=102.0)).status is RedemptionStatus.UNKNOWN
    late = await states.issue(session_id="s1", tenant_id=TENANT, purpose="dirsync", now=100.0)
    assert (await states.redeem(late, now=100.0 + 16 * 60)).status is RedemptionStatus.EXPIRED


async def test_the_cluster_spreads_sessions_and_keeps_each_in_one_slot(
    cluster: RedisClusterServers,
) -> None:
    client = connect(cluster.url, cluster=True)
    try:
        await client.flushall()
        store = SessionStore(client, decode=Session.from_json, active_ttl=60, retention_ttl=60)
        for n in range(12):
            session = await store.create(new_session(f"s{n}", f"tenant-{n}"), detail={})
            await store.record_refusal(session.id, actor="U0OUTSIDER", action="refused: x")
            await store.take_lease(session.id, "replica-a", ttl=60)
            await store.keep_message(session.id, "root", 0, "1.0")
        holders: dict[str, set[str]] = {}
        for url in cluster.urls:
            node = Redis.from_url(url)
            try:
                for key in await node.keys("pi:{*}:*"):
                    holders.setdefault(key.decode().split(":")[1], set()).add(url)
            finally:
                await node.aclose()
        assert len(holders) == 12
        assert all(len(urls) == 1 for urls in holders.values())  # a session: one node
        assert len(set().union(*holders.values())) == 3  # sessions: every node
    finally:
        await client.aclose()


async def test_the_wrong_topology_is_refused(
    cluster: RedisClusterServers, sentinels: SentinelServers
) -> None:
    """What ``check`` and ``/healthz`` report (the store's ping): a plain client on a cluster
    node, a cluster client on a single server."""
    plain = connect(cluster.url)
    as_cluster = connect(sentinels.master.url, cluster=True)
    right = connect(cluster.url, cluster=True)
    try:
        with pytest.raises(TopologyError, match="REDIS_CLUSTER=1"):
            await verify(plain)
        with pytest.raises(TopologyError, match="Cluster mode is not enabled"):
            await verify(as_cluster)
        await verify(right)
    finally:
        for client in (plain, as_cluster, right):
            await client.aclose()


# -- the whole bot on each topology ---------------------------------------------------------------


class ClusterNotifications:
    """``Harness.redis`` on a cluster. ``settled`` waits on keyspace notifications, which each
    node publishes for its own keys only: the pattern on one session's keys is subscribed on
    the node that holds that session's slot."""

    def __init__(self, cluster: RedisCluster) -> None:
        self.cluster = cluster

    async def config_set(self, name: str, value: str) -> None:
        await self.cluster.config_set(name, value, target_nodes=RedisCluster.ALL_NODES)

    def pubsub(self) -> _NodePubSub:
        return _NodePubSub(self.cluster)


class _NodePubSub:
    def __init__(self, cluster: RedisCluster) -> None:
        self._cluster = cluster
        self._node: Redis | None = None
        self._pubsub: Any = None

    async def psubscribe(self, pattern: str) -> None:
        tag = pattern[pattern.index("{") : pattern.index("}") + 1]
        await self._cluster.initialize()
        holder = self._cluster.get_node_from_key(tag)
        self._node = Redis(host=holder.host, port=holder.port, password=SERVER_PASSWORD)
        self._pubsub = self._node.pubsub()
        await self._pubsub.psubscribe(pattern)

    async def get_message(self, **options: Any) -> Any:
        return await self._pubsub.get_message(**options)

    async def punsubscribe(self, pattern: str) -> None:
        await self._pubsub.punsubscribe(pattern)

    async def aclose(self) -> None:
        await self._pubsub.aclose()
        assert self._node is not None
        await self._node.aclose()


@dataclass
class PlainURL:
    """Stands in for the ``redis_server`` fixture: where the harness's first bot connects."""

    url: str


@pytest.fixture
def redis_server(topology: Topology) -> PlainURL:
    return PlainURL(topology.plain_url)


@pytest.fixture
async def redis(topology: Topology) -> AsyncIterator[Any]:
    """The harness's own client (its keyspace waits), on a clean deployment."""
    client = topology.client()
    await client.flushall()
    try:
        yield ClusterNotifications(client) if isinstance(client, RedisCluster) else client
    finally:
        await client.aclose()


async def test_a_whole_provisioning(
    harness: Harness,  # noqa: F811 - the integration fixture, on this module's deployment
    topology: Topology,
) -> None:
    # The harness starts its bot on REDIS_URL alone; this one is made for the topology.
    harness.environment.update(topology.environment)
    await harness.restart()
    assert isinstance(harness.runtime.redis, RedisCluster) is (topology.name == "cluster")
    health = await harness.http.get(f"{harness.base_url}/healthz")
    assert (health.status_code, health.json()["redis"]) == (200, "ok")

    root_ts, session_id = await plan_shown(harness)
    assert await submit_and_finish_apply(harness, root_ts, session_id) is Phase.PROTECTED
    assert named_objects(harness) == expected_named(harness)
    actions = [e.action for e in await harness.store.audit(session_id)]
    assert (actions[0], actions[-2:]) == ("start", ["submit", "apply_succeeded"])
    assert len(actions) == len(set(actions))  # no step ran twice
    assert await harness.store.active() == []


# -- Sentinel failover ----------------------------------------------------------------------------


async def test_the_store_carries_on_after_a_sentinel_failover() -> None:
    servers = SentinelServers()
    await asyncio.to_thread(servers.start)
    client = connect(
        "redis://unused.invalid:1/0", sentinels=servers.sentinels, sentinel_master=servers.name
    )
    watcher = Redis(host="127.0.0.1", port=servers.sentinel.port)
    try:
        store = SessionStore(client, decode=Session.from_json, active_ttl=3600, retention_ttl=7200)
        session = await store.create(new_session("s1"), detail={})
        moved = advance(session, Event(EventKind.MAILFLOW_CONSENT, "U0GA", 2.0)).after
        await store.replace(session, moved, actor="U0GA", action="mailflow_consent")
        assert await store.claim_once("delivery-1")
        # Acknowledged by the replica before the master goes (Redis replicates asynchronously;
        # RELIABILITY.md says what that means for writes in the last moments).
        assert await client.wait(1, 5000) == 1

        switches = watcher.pubsub(ignore_subscribe_messages=True)
        await switches.subscribe("+switch-master")
        servers.master.kill()
        async with asyncio.timeout(30):  # the sentinel's own word that it has promoted
            while (await switches.get_message(timeout=None)) is None:
                pass
        await switches.aclose()

        # Everything acknowledged is there, and the store goes on where it left off.
        assert await store.require("s1") == moved
        assert not await store.claim_once("delivery-1")
        cancelled = advance(moved, Event(EventKind.CANCEL, "U0ADMIN", 3.0)).after
        await store.replace(moved, cancelled, actor="U0ADMIN", action="cancel")
        await store.release_tenant(cancelled)
        await store.create(new_session("s2"), detail={})
        assert [s.id for s in await store.active()] == ["s2"]
        assert [e.action for e in await store.audit("s1")] == [
            "start",
            "mailflow_consent",
            "cancel",
        ]
        # ...on the former replica, which the sentinel now names as the master.
        replica = Redis(host="127.0.0.1", port=servers.replica.port)
        try:
            assert (await replica.info("replication"))["role"] == "master"
            assert await replica.exists("pi:{s2}:session") == 1
        finally:
            await replica.aclose()
    finally:
        await watcher.aclose()
        await client.aclose()
        servers.close()


# -- TLS ------------------------------------------------------------------------------------------


async def exercise(client: RedisClient) -> None:
    """The store's main moves on ``client``: create, change, race-free claim, audit."""
    await verify(client)
    await client.flushall()
    store = SessionStore(client, decode=Session.from_json, active_ttl=60, retention_ttl=60)
    session = await store.create(new_session("s1"), detail={})
    moved = advance(session, Event(EventKind.MAILFLOW_CONSENT, "U0GA", 2.0)).after
    await store.replace(session, moved, actor="U0GA", action="mailflow_consent")
    assert await store.claim_once("delivery-1")
    assert not await store.claim_once("delivery-1")
    assert [e.action for e in await store.audit("s1")] == ["start", "mailflow_consent"]
    assert [s.id for s in await store.active()] == ["s1"]


async def test_tls_and_passwords_through_sentinel(tls: SandboxTLS) -> None:
    """rediss:// with passwords, through a sentinel to a master that speak TLS only (no plain
    port at all): the URL's TLS options reach the sentinels and the master."""
    watched = SentinelServers(
        password=SERVER_PASSWORD, sentinel_password=SENTINEL_PASSWORD, tls=tls
    )
    try:
        await asyncio.to_thread(watched.start)
        client = connect(
            f"rediss://:{SERVER_PASSWORD}@unused.invalid:1/0?ssl_ca_certs={tls.ca_file}",
            sentinels=watched.sentinels,
            sentinel_master=watched.name,
            sentinel_password=SENTINEL_PASSWORD,
        )
        try:
            await exercise(client)
        finally:
            await client.aclose()
    finally:
        watched.close()

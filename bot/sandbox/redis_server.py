"""Private Redis deployments (tests, and the demo when no Redis answers), each server on its own
port and in its own directory, AOF on, restartable; ready when redis-server itself says so.

- ``RedisServer``: one server (optionally with extra options: a replica, a cluster node).
- ``RedisClusterServers``: three masters on loopback forming a Redis Cluster.
- ``SentinelServers``: a master, its replica and one sentinel watching them.
"""

from __future__ import annotations

import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import redis

from bot.sandbox.server import SandboxTLS, free_port

__all__ = ["SLOTS", "RedisClusterServers", "RedisServer", "SentinelServer", "SentinelServers"]

SLOTS = 16384  # hash slots of a Redis Cluster


def _executable() -> str:
    executable = shutil.which("redis-server")
    if executable is None:
        raise FileNotFoundError(
            "redis-server is not installed: run the README's set-up command "
            "(scripts/setup installs it)."
        )
    return executable


class RedisServer:
    """One redis-server. ``options`` are added to its command line (``--replicaof …``,
    ``--cluster-enabled yes`` …); with ``password`` it requires it (and gives it to a master
    it replicates); with ``tls`` it speaks TLS only (also to its master), with the sandbox CA's
    certificate for 127.0.0.1."""

    def __init__(
        self,
        options: Sequence[str] = (),
        *,
        password: str | None = None,
        tls: SandboxTLS | None = None,
    ) -> None:
        self._executable = _executable()
        self.password = password
        self.tls = tls
        self._options = list(options)
        if password is not None:
            self._options += ["--requirepass", password, "--masterauth", password]
        self.directory = Path(tempfile.mkdtemp(prefix="pi-redis-"))
        self.port = free_port()
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        credentials = f":{self.password}@" if self.password is not None else ""
        if self.tls is None:
            return f"redis://{credentials}127.0.0.1:{self.port}/0"
        return f"rediss://{credentials}127.0.0.1:{self.port}/0?ssl_ca_certs={self.tls.ca_file}"

    def client(self) -> redis.Redis:
        """A (synchronous) client of this server, for setting it up."""
        return redis.Redis(
            host="127.0.0.1",
            port=self.port,
            password=self.password,
            ssl=self.tls is not None,
            ssl_ca_certs=str(self.tls.ca_file) if self.tls else None,
        )

    def _tls_settings(self) -> list[tuple[str, str]]:
        """(name, value) of the settings that make the server speak TLS only."""
        if self.tls is None:
            return []
        return [
            ("port", "0"),
            ("tls-port", str(self.port)),
            ("tls-cert-file", str(self.tls.cert_file)),
            ("tls-key-file", str(self.tls.key_file)),
            ("tls-ca-cert-file", str(self.tls.ca_file)),
            ("tls-auth-clients", "no"),
            ("tls-replication", "yes"),
        ]

    @property
    def log(self) -> str:
        path = self.directory / "redis.log"
        return path.read_text(errors="replace")[-2000:] if path.exists() else ""

    def _command(self) -> list[str]:
        return [
            self._executable,
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--dir",
            str(self.directory),
            "--appendonly",
            "yes",
            "--appendfsync",
            "always",
            "--save",
            "",
            *self._options,
            *(part for name, value in self._tls_settings() for part in (f"--{name}", value)),
        ]

    def start(self, timeout: float = 10.0) -> None:
        """Start and return once redis-server says it is ready.

        Readiness comes from redis-server itself, over the systemd notification protocol
        (``--supervised systemd`` sends ``READY=1`` to ``NOTIFY_SOCKET``): nothing is polled.
        """
        notify_path = self.directory / "notify.sock"
        notify_path.unlink(missing_ok=True)
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as notify:
            notify.bind(str(notify_path))
            notify.settimeout(timeout)
            self._process = subprocess.Popen(
                [
                    *self._command(),
                    "--daemonize",
                    "no",
                    "--supervised",
                    "systemd",
                    "--logfile",
                    str(self.directory / "redis.log"),
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                env={"NOTIFY_SOCKET": str(notify_path), "PATH": "/usr/bin:/bin"},
            )
            try:
                while b"READY=1" not in notify.recv(4096):
                    pass
            except TimeoutError:
                log = self.log
                self.stop()
                raise RuntimeError(f"redis-server did not become ready:\n{log}") from None

    @property
    def running(self) -> bool:
        """Started and not stopped since (by this object)."""
        return self._process is not None

    def stop(self) -> None:
        if self._process is None:
            return
        self._process.terminate()
        self._process.wait(timeout=10)
        self._process = None

    def kill(self) -> None:
        """Stop at once (SIGKILL), as a crash or a lost machine would: nothing is flushed."""
        if self._process is None:
            return
        self._process.send_signal(signal.SIGKILL)
        self._process.wait(timeout=10)
        self._process = None

    def restart(self) -> None:
        """Stop (SIGTERM, so AOF is flushed) and start again on the same port and data."""
        self.stop()
        self.start()

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.directory, ignore_errors=True)


class RedisClusterServers:
    """``masters`` redis-servers on loopback joined into a Redis Cluster (no replicas), the
    slots split evenly between them (``CLUSTER ADDSLOTS``, then ``CLUSTER MEET``)."""

    def __init__(
        self, masters: int = 3, *, node_timeout_ms: int = 2000, password: str | None = None
    ) -> None:
        # The bus ports are chosen too: port + 10000 may be taken, or past 65535.
        self.bus_ports = [free_port() for _ in range(masters)]
        self.nodes = [
            RedisServer(
                [
                    "--cluster-enabled",
                    "yes",
                    "--cluster-config-file",
                    "nodes.conf",
                    "--cluster-node-timeout",
                    str(node_timeout_ms),
                    "--cluster-port",
                    str(bus_port),
                ],
                password=password,
            )
            for bus_port in self.bus_ports
        ]

    @property
    def url(self) -> str:
        """The first node's URL (any node would do: clients discover the others)."""
        return self.nodes[0].url

    @property
    def urls(self) -> list[str]:
        return [node.url for node in self.nodes]

    def start(self, timeout: float = 20.0) -> None:
        """Start the nodes, share out the slots, introduce the nodes to each other, and return
        once every node reports the cluster ``ok`` (all slots served, every node known)."""
        for node in self.nodes:
            node.start()
        clients = [node.client() for node in self.nodes]
        try:
            share = SLOTS // len(self.nodes)
            for index, client in enumerate(clients):
                first = index * share
                last = SLOTS - 1 if index == len(clients) - 1 else first + share - 1
                client.cluster("ADDSLOTS", *range(first, last + 1))
            for node, bus_port in zip(self.nodes[1:], self.bus_ports[1:], strict=True):
                clients[0].cluster("MEET", "127.0.0.1", node.port, bus_port)
            self._until_ok(clients, timeout)
        finally:
            for client in clients:
                client.close()

    def _until_ok(self, clients: list[redis.Redis], timeout: float) -> None:
        # Redis announces no change of cluster state (no event, no blocking command), so this
        # is the one place that looks again: a bounded wait on a fact, every 50 ms. Masters stay
        # "fail" for their first 2 s (CLUSTER_WRITABLE_DELAY), whatever the gossip does.
        deadline = time.monotonic() + timeout
        while True:
            states = [_cluster_info(client) for client in clients]
            if all(
                info.get("cluster_state") == "ok"
                and info.get("cluster_known_nodes") == str(len(clients))
                and info.get("cluster_slots_ok") == str(SLOTS)
                for info in states
            ):
                return
            if time.monotonic() > deadline:
                logs = "\n".join(node.log for node in self.nodes)
                raise RuntimeError(f"the cluster did not form within {timeout}s: {states}\n{logs}")
            time.sleep(0.05)

    def close(self) -> None:
        for node in self.nodes:
            node.close()


def _cluster_info(client: redis.Redis) -> dict[str, str]:
    """``CLUSTER INFO`` as redis-py parses it (cluster_state, cluster_known_nodes, …)."""
    return {str(name): str(value) for name, value in client.cluster("INFO").items()}


class SentinelServer(RedisServer):
    """A sentinel (``redis-server --sentinel``) watching ``master`` under ``name``, alone (a
    quorum of 1), quick to act: down after ``down_after_ms`` without an answer."""

    def __init__(
        self,
        name: str,
        master_port: int,
        *,
        down_after_ms: int = 1000,
        failover_timeout_ms: int = 10000,
        password: str | None = None,
        master_password: str | None = None,
        tls: SandboxTLS | None = None,
    ) -> None:
        super().__init__(tls=tls)
        self.password = password  # the sentinel's own (requirepass)
        self._master_password = master_password
        self.name = name
        self._master_port = master_port
        self._down_after_ms = down_after_ms
        self._failover_timeout_ms = failover_timeout_ms

    def _command(self) -> list[str]:
        config = self.directory / "sentinel.conf"
        if not config.exists():  # the sentinel rewrites its file as it learns: keep it then
            config.write_text(
                f"port {self.port}\n"
                "bind 127.0.0.1\n"
                f"dir {self.directory}\n"
                f"sentinel monitor {self.name} 127.0.0.1 {self._master_port} 1\n"
                f"sentinel down-after-milliseconds {self.name} {self._down_after_ms}\n"
                f"sentinel failover-timeout {self.name} {self._failover_timeout_ms}\n"
                + "".join(f"{name} {value}\n" for name, value in self._tls_settings())
                + (f"requirepass {self.password}\n" if self.password else "")
                + (
                    f"sentinel auth-pass {self.name} {self._master_password}\n"
                    if self._master_password
                    else ""
                )
            )
        return [self._executable, str(config), "--sentinel"]


class SentinelServers:
    """A master, one replica of it and a sentinel watching both, as ``name``; ``password`` for
    the servers, ``sentinel_password`` for the sentinel; ``tls`` for all three."""

    def __init__(
        self,
        name: str = "pi-primary",
        *,
        password: str | None = None,
        sentinel_password: str | None = None,
        tls: SandboxTLS | None = None,
    ) -> None:
        self.name = name
        # A replica's first sync starts at once (not after the default 5 s wait for others).
        self.master = RedisServer(["--repl-diskless-sync-delay", "0"], password=password, tls=tls)
        self.replica = RedisServer(
            ["--replicaof", "127.0.0.1", str(self.master.port)], password=password, tls=tls
        )
        self.sentinel = SentinelServer(
            name, self.master.port, password=sentinel_password, master_password=password, tls=tls
        )

    @property
    def sentinels(self) -> list[tuple[str, int]]:
        return [("127.0.0.1", self.sentinel.port)]

    def start(self, timeout: float = 20.0) -> None:
        """Start all three; return once the replica holds the master's data and the sentinel
        knows the replica (so it has a server to promote)."""
        self.master.start()
        self.replica.start()
        with self.master.client() as master:
            # WAIT blocks in the master until the replica has acknowledged everything written.
            master.set("pi:sandbox:started", "1")
            if master.wait(1, int(timeout * 1000)) != 1:
                raise RuntimeError(f"the replica did not catch up:\n{self.replica.log}")
        self.sentinel.start()
        with self.sentinel.client() as sentinel:
            pubsub = sentinel.pubsub(ignore_subscribe_messages=True)
            pubsub.subscribe("+slave")  # before looking, so its announcement cannot be missed
            try:
                deadline = time.monotonic() + timeout
                while not sentinel.sentinel_slaves(self.name):
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        raise RuntimeError(
                            f"the sentinel never saw the replica:\n{self.sentinel.log}"
                        )
                    pubsub.get_message(timeout=remaining)  # returns on "+slave" (or timeout)
            finally:
                pubsub.close()

    def close(self) -> None:
        for server in (self.sentinel, self.replica, self.master):
            server.close()

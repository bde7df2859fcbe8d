"""Serve an ASGI app on a free loopback port inside the running event loop.

The sandbox clouds, the tests and the demo all need real HTTP servers (the bot talks to Slack and
Microsoft over the network stack, never through in-process shortcuts), started and stopped quickly
and without leaking threads. ``serve_asgi`` does that with uvicorn, optionally over TLS with a
certificate from a throw-away certificate authority (``SandboxTLS``).
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
import tempfile
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import trustme
import uvicorn

__all__ = ["RunningServer", "SandboxTLS", "free_port", "serve_asgi"]


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@dataclass(frozen=True)
class SandboxTLS:
    """A private certificate authority and a server certificate for 127.0.0.1 and localhost."""

    directory: Path
    ca_file: Path
    cert_file: Path
    key_file: Path

    @classmethod
    def create(cls, directory: Path | None = None) -> SandboxTLS:
        where = directory or Path(tempfile.mkdtemp(prefix="pi-sandbox-tls-"))
        authority = trustme.CA()
        issued = authority.issue_cert("127.0.0.1", "localhost")
        ca_file = where / "sandbox-ca.pem"
        cert_file = where / "sandbox-server.pem"
        key_file = where / "sandbox-server.key"
        authority.cert_pem.write_to_path(str(ca_file))
        issued.cert_chain_pems[0].write_to_path(str(cert_file))
        issued.private_key_pem.write_to_path(str(key_file))
        return cls(directory=where, ca_file=ca_file, cert_file=cert_file, key_file=key_file)

    def client_context(self) -> ssl.SSLContext:
        """An SSL context that trusts the sandbox certificate authority (and nothing else)."""
        return ssl.create_default_context(cafile=str(self.ca_file))


@dataclass(frozen=True)
class RunningServer:
    base_url: str
    port: int
    server: uvicorn.Server


@contextlib.asynccontextmanager
async def serve_asgi(
    app: Any,
    *,
    port: int = 0,
    tls: SandboxTLS | None = None,
) -> AsyncIterator[RunningServer]:
    """Run ``app`` with uvicorn on 127.0.0.1 until the block exits.

    The listening socket is bound here (port 0 picks a free one, with no race), so the server is
    ready the moment ``startup`` returns: nothing is polled or slept on. On exit the server is asked
    to stop and its task is awaited, so no request is cut off half-way.
    """
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", port))
    listener.listen(128)
    chosen: int = listener.getsockname()[1]
    config = uvicorn.Config(
        app,
        host="127.0.0.1",
        port=chosen,
        log_level="warning",
        lifespan="auto",
        access_log=False,
        ssl_certfile=str(tls.cert_file) if tls else None,
        ssl_keyfile=str(tls.key_file) if tls else None,
        timeout_graceful_shutdown=5,
    )
    config.load()
    server = uvicorn.Server(config)
    server.lifespan = config.lifespan_class(config)
    await server.startup(sockets=[listener])

    async def run_until_asked_to_stop() -> None:
        await server.main_loop()
        await server.shutdown(sockets=[listener])

    task = asyncio.create_task(run_until_asked_to_stop())
    scheme = "https" if tls else "http"
    try:
        yield RunningServer(base_url=f"{scheme}://127.0.0.1:{chosen}", port=chosen, server=server)
    finally:
        server.should_exit = True
        await task
        listener.close()

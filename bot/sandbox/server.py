"""Serve an ASGI app on a free loopback port inside the running event loop.

The sandbox clouds, the tests and the demo all need real HTTP servers (the bot talks to Slack and
Microsoft over the network stack, never through in-process shortcuts), started and stopped quickly
and without leaking threads. ``serve_asgi`` does that with uvicorn, optionally over TLS with a
certificate from a throw-away certificate authority (``SandboxTLS``, made with ``cryptography``
— a runtime dependency already — so no test-only CA library ships with the product).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import datetime
import ipaddress
import socket
import ssl
import tempfile
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import uvicorn
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

__all__ = ["RunningServer", "SandboxTLS", "free_port", "serve_asgi"]


# Ports handed out by ``free_port``, each held by a bound socket that does not listen (oldest
# first; the oldest are let go, long after their servers bound them).
_RESERVED: collections.OrderedDict[int, socket.socket] = collections.OrderedDict()
_RESERVED_AT_MOST = 256


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on, kept for whoever asked.

    The port stays bound (``SO_REUSEADDR``, not listening) after this returns, so neither another
    test process asking for a free port nor the kernel choosing a client connection's local port
    takes it before its server binds it, or between a server's stop and its restart on the same
    port (the address a bot was configured with). A server binding it with ``SO_REUSEADDR``, as
    ``serve_asgi``, uvicorn and redis-server do, is let in while nothing listens there."""
    holder = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    holder.bind(("127.0.0.1", 0))
    port: int = holder.getsockname()[1]
    _RESERVED[port] = holder
    while len(_RESERVED) > _RESERVED_AT_MOST:
        _, oldest = _RESERVED.popitem(last=False)
        oldest.close()
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
        ca_key = ec.generate_private_key(ec.SECP256R1())
        ca_name = x509.Name(
            [x509.NameAttribute(NameOID.COMMON_NAME, "provision-inline sandbox CA")]
        )
        now = datetime.datetime.now(datetime.UTC)
        valid = (now - datetime.timedelta(hours=1), now + datetime.timedelta(days=30))
        ca_cert = (
            x509.CertificateBuilder()
            .subject_name(ca_name)
            .issuer_name(ca_name)
            .public_key(ca_key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(valid[0])
            .not_valid_after(valid[1])
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    key_cert_sign=True,
                    crl_sign=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(
                x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False
            )
            .sign(ca_key, hashes.SHA256())
        )
        server_key = ec.generate_private_key(ec.SECP256R1())
        server_cert = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
            .issuer_name(ca_name)
            .public_key(server_key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(valid[0])
            .not_valid_after(valid[1])
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.SubjectAlternativeName(
                    [
                        x509.DNSName("localhost"),
                        x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                    ]
                ),
                critical=False,
            )
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
                critical=False,
            )
            .sign(ca_key, hashes.SHA256())
        )
        ca_file = where / "sandbox-ca.pem"
        cert_file = where / "sandbox-server.pem"
        key_file = where / "sandbox-server.key"
        ca_file.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
        cert_file.write_bytes(server_cert.public_bytes(serialization.Encoding.PEM))
        key_file.write_bytes(
            server_key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
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
    # IPPROTO_TCP, not 0: asyncio then sets TCP_NODELAY on every accepted connection, as on the
    # sockets it opens itself. Without it an answer's body waits ~40 ms behind its headers on a
    # kept-alive connection (Nagle's algorithm meeting the client's delayed ACK), which no real
    # service adds.
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", port))
        listener.listen(128)
    except OSError:
        listener.close()
        raise
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

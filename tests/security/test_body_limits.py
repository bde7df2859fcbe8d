"""Bodies are bounded before they are read: 413 above 256 KiB on /slack/events and above 8 KiB
on /microsoft/callback, whether the length is declared or the body comes chunked; and a flood
of 8 MiB bodies leaves the process's memory where it was."""

from __future__ import annotations

import asyncio
import contextlib
import os
from pathlib import Path

from bot.sandbox.server import free_port
from handlers.web import BODY_LIMITS
from tests.integration.conftest import ADMIN, CHANNEL, Harness, ephemeral_for
from tests.integration.test_cli import read_until, running

EVENTS_LIMIT = BODY_LIMITS["/slack/events"]
CALLBACK_LIMIT = BODY_LIMITS["/microsoft/callback"]
PIECE = 64 * 1024


def host_port(base_url: str) -> tuple[str, int]:
    host, port = base_url.removeprefix("http://").split(":")
    return host, int(port)


async def raw_post(
    base_url: str, path: str, *, declared: int | None, send: int, read_answer: bool = True
) -> bytes:
    """POST ``send`` bytes to ``path``: with ``declared`` as Content-Length, or chunked when
    ``declared`` is None. Returns what the server answered (b"" if it closed first)."""
    host, port = host_port(base_url)
    reader, writer = await asyncio.open_connection(host, port)
    head = f"POST {path} HTTP/1.1\r\nHost: {host}\r\n"
    head += "Content-Type: application/x-www-form-urlencoded\r\n"
    chunked = declared is None
    head += "Transfer-Encoding: chunked\r\n" if chunked else f"Content-Length: {declared}\r\n"
    writer.write((head + "\r\n").encode())
    piece = b"x" * PIECE
    try:
        sent = 0
        while sent < send:
            size = min(PIECE, send - sent)
            if chunked:
                writer.write(f"{size:x}\r\n".encode() + piece[:size] + b"\r\n")
            else:
                writer.write(piece[:size])
            await writer.drain()
            sent += size
        if chunked:
            writer.write(b"0\r\n\r\n")
            await writer.drain()
        answer = await asyncio.wait_for(reader.read(4096), 10) if read_answer else b""
    except (ConnectionError, TimeoutError):
        answer = b""
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()
    return answer


async def test_a_declared_length_over_the_limit_is_refused_before_the_body_is_read(
    harness: Harness,
) -> None:
    genuine = await harness.driver.slash_command(user_id=ADMIN, channel_id=CHANNEL, text="help")
    assert genuine.status_code == 200
    await ephemeral_for(harness, ADMIN, "/provision-inline status")
    calls = len(harness.slack.calls)
    # Nothing of the body is sent: the answer can only come from the declared length.
    events = await raw_post(harness.base_url, "/slack/events", declared=EVENTS_LIMIT + 1, send=0)
    callback = await raw_post(
        harness.base_url, "/microsoft/callback", declared=CALLBACK_LIMIT + 1, send=0
    )
    assert events.startswith(b"HTTP/1.1 413"), events[:200]
    assert callback.startswith(b"HTTP/1.1 413"), callback[:200]
    assert b"text/html" in callback  # a page for the browser
    assert b"too large" in callback
    assert len(harness.slack.calls) == calls


async def test_a_chunked_body_is_stopped_as_soon_as_it_passes_the_limit(harness: Harness) -> None:
    at_limit = await raw_post(harness.base_url, "/slack/events", declared=None, send=1024)
    assert not at_limit.startswith(b"HTTP/1.1 413")  # small bodies reach Bolt (unsigned: 401)
    assert at_limit.startswith(b"HTTP/1.1 401"), at_limit[:200]
    over = await raw_post(
        harness.base_url, "/slack/events", declared=None, send=EVENTS_LIMIT + PIECE
    )
    assert over.startswith(b"HTTP/1.1 413"), over[:200]
    over_callback = await raw_post(
        harness.base_url, "/microsoft/callback", declared=None, send=CALLBACK_LIMIT + 1024
    )
    assert over_callback.startswith(b"HTTP/1.1 413"), over_callback[:200]


def resident_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


async def test_a_hundred_bodies_of_8_mib_leave_memory_flat(harness: Harness) -> None:
    port = free_port()
    environment = {
        "PATH": os.environ["PATH"],
        "SSL_CERT_FILE": os.environ["SSL_CERT_FILE"],
        **harness.environment,
        "PORT": str(port),
    }
    base = f"http://127.0.0.1:{port}"
    async with running(["serve"], environment) as process:
        assert process.stderr is not None
        await read_until(process.stderr, "Uvicorn running on")
        # Warm up every path once, so what is measured is growth, not first-use allocation.
        for path in ("/slack/events", "/microsoft/callback"):
            await raw_post(base, path, declared=None, send=EVENTS_LIMIT * 2)
            await raw_post(base, path, declared=8 << 20, send=PIECE)
        before = resident_kib(process.pid)
        answers = []
        for index in range(100):
            path = "/slack/events" if index % 2 else "/microsoft/callback"
            declared = 8 << 20 if index % 4 < 2 else None
            answers.append(await raw_post(base, path, declared=declared, send=8 << 20))
        grown = resident_kib(process.pid) - before
        assert (await harness.http.get(f"{base}/healthz")).status_code == 200
    assert grown < 20 * 1024, f"resident memory grew by {grown} KiB"
    # The requests reached the server: those whose answer arrived were all refusals.
    assert all(a.startswith(b"HTTP/1.1 413") for a in answers if a), answers[:3]
    assert sum(1 for a in answers if a) >= 10

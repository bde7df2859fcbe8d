"""A private ``redis-server`` (tests, and the demo when no Redis answers): own port, own
directory, AOF on, restartable; ready when redis-server itself says so."""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
from pathlib import Path

from bot.sandbox.server import free_port

__all__ = ["RedisServer"]


class RedisServer:
    def __init__(self) -> None:
        executable = shutil.which("redis-server")
        if executable is None:
            raise FileNotFoundError(
                "redis-server is not installed: run the README's set-up command "
                "(scripts/setup installs it)."
            )
        self._executable = executable
        self.directory = Path(tempfile.mkdtemp(prefix="pi-redis-"))
        self.port = free_port()
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

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
                log = (self.directory / "redis.log").read_text(errors="replace")[-2000:]
                self.stop()
                raise RuntimeError(f"redis-server did not become ready:\n{log}") from None

    def stop(self) -> None:
        if self._process is None:
            return
        self._process.terminate()
        self._process.wait(timeout=10)
        self._process = None

    def restart(self) -> None:
        """Stop (SIGTERM, so AOF is flushed) and start again on the same port and data."""
        self.stop()
        self.start()

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.directory, ignore_errors=True)

"""A real ``redis-server`` on a free loopback port, owned by one test (or session).

No persistence, no shared data with the machine's own Redis. ``stop()`` and ``start()`` again
keep the port, so a gateway pointed at it sees the same server go away and come back (empty);
``pause()`` / ``resume()`` freeze it (SIGSTOP) to look like a server that stopped answering.
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

from tests.support.procs import OUT, free_port


class RedisServer:
    def __init__(self, port: int | None = None, extra: Sequence[str] = ()) -> None:
        """``extra``: more ``redis-server`` arguments (cluster mode, ``--replicaof``, ...)."""
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError("redis-server is not on PATH (.ci/run installs it)")
        self.binary = binary
        self.port = port or free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self._dir = Path(tempfile.mkdtemp(prefix="glmgw-redis-"))
        self.extra = list(extra)
        self.proc: subprocess.Popen[bytes] | None = None
        self.start()

    def start(self) -> None:
        OUT.mkdir(parents=True, exist_ok=True)
        log = OUT / f"redis-{self.port}.log"
        self.proc = subprocess.Popen(
            [
                self.binary,
                "--port", str(self.port),
                "--bind", "127.0.0.1",
                "--save", "",
                "--appendonly", "no",
                "--dir", str(self._dir),
                "--logfile", str(log),
                *self.extra,
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        end = time.monotonic() + 15
        while time.monotonic() < end:
            if self.ping():
                return
            if self.proc.poll() is not None:
                raise RuntimeError(f"redis-server exited: {log.read_text()[-2000:]}")
            time.sleep(0.02)
        raise RuntimeError(f"redis-server on {self.port} did not answer")

    def ping(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as s:
                s.sendall(b"PING\r\n")
                return s.recv(16).startswith((b"+PONG", b"-NOAUTH"))  # up, with a password
        except OSError:
            return False

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.proc = None

    def kill(self) -> None:
        """SIGKILL: no shutdown, sockets reset under the clients' feet."""
        if self.proc is not None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)
        self.proc = None

    def pause(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGCONT)

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self._dir, ignore_errors=True)

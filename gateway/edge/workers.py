"""``glm-gateway serve --workers N``: N gateway processes sharing one listening socket.

The parent binds the socket, then forks N workers that inherit it; each worker builds its own
app, state client and event loop after the fork and accepts from the shared socket (the kernel
hands each connection to one of them). The parent only supervises:

- SIGTERM / SIGINT are forwarded to every worker, which drains exactly as a single process does
  (readiness 503 for the grace, then drain, exit 0); a second signal is forwarded too and ends
  the grace and the drain at once. The parent closes its copy of the socket on the first one.
- SIGHUP is forwarded: every worker reloads the config directory.
- A worker that exits while no stop was asked for is started again (at most one start per
  ``RESPAWN_GAP_S`` per worker), and the exit is logged.
- Workers sit in their own process group, so a terminal's Ctrl-C reaches the parent only and
  is forwarded once; a worker whose parent dies is sent SIGTERM by the kernel (Linux).

The parent exits 0 once every worker has exited 0 after a stop signal, else 1.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import shutil
import signal
import socket
import sys
import tempfile
import time
from collections.abc import Callable
from types import FrameType

log = logging.getLogger("glm_gateway.edge")

RESPAWN_GAP_S = 1.0
BACKLOG = 2048
PR_SET_PDEATHSIG = 1
FORWARDED = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)

WorkerMain = Callable[[socket.socket, int, str], int]
"""Runs one worker given the shared socket, its index and the fleet directory; its exit code."""


def bind(host: str, port: int) -> socket.socket:
    """The listening socket the workers share."""
    family, kind, proto, _, addr = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(addr)
    sock.listen(BACKLOG)
    sock.set_inheritable(True)
    return sock


class Supervisor:
    def __init__(self, sock: socket.socket, workers: int, main: WorkerMain) -> None:
        self._sock: socket.socket | None = sock
        self._n = workers
        self._main = main
        self._dir = tempfile.mkdtemp(prefix="glm-gateway-workers-")  # mode 0700
        self._pids: dict[int, int] = {}  # pid -> worker index
        self._started: dict[int, float] = {}  # worker index -> monotonic start
        self._stopping = False
        self._failed = False

    def start_all(self) -> None:
        """Start the N workers (signals from here on are forwarded to them)."""
        for sig in FORWARDED:
            signal.signal(sig, self._on_signal)
        for index in range(self._n):
            self._spawn(index)

    def wait(self) -> int:
        """Supervise until every worker has exited after a stop signal; the exit code."""
        try:
            while self._pids:
                try:
                    pid, status = os.wait()
                except ChildProcessError:
                    break
                index = self._pids.pop(pid, None)
                if index is None:
                    continue
                code = os.waitstatus_to_exitcode(status)
                if self._stopping:
                    self._failed |= code != 0
                    continue
                log.error("worker %d (pid %d) exited with %d; starting it again", index, pid, code)
                gap = RESPAWN_GAP_S - (time.monotonic() - self._started[index])
                if gap > 0:
                    time.sleep(gap)
                if not self._stopping:
                    self._spawn(index)
        finally:
            shutil.rmtree(self._dir, ignore_errors=True)
        return 1 if self._failed else 0

    def _on_signal(self, sig: int, frame: FrameType | None) -> None:
        if sig != signal.SIGHUP:
            self._stopping = True
            if self._sock is not None:
                self._sock.close()  # the workers' copies stay open until they drain
                self._sock = None
        for pid in list(self._pids):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)

    def _spawn(self, index: int) -> None:
        sock = self._sock
        if sock is None:
            return
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid:
            self._pids[pid] = index
            self._started[index] = time.monotonic()
            return
        code = 1
        try:
            parent = os.getppid()
            os.setpgid(0, 0)
            # Until the server installs its own handlers: a stop ends a worker that serves
            # nothing yet at once and cleanly; a SIGHUP this early is not acted on.
            signal.signal(signal.SIGTERM, _exit_clean)
            signal.signal(signal.SIGINT, _exit_clean)
            signal.signal(signal.SIGHUP, signal.SIG_IGN)
            _die_with(parent)
            code = self._main(sock, index, self._dir)
        except BaseException:
            log.exception("worker %d failed", index)
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code)


def _exit_clean(sig: int, frame: FrameType | None) -> None:
    os._exit(0)


def _die_with(parent: int) -> None:
    """SIGTERM this process when its parent dies (Linux; elsewhere nothing)."""
    if not sys.platform.startswith("linux"):
        return
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    if os.getppid() != parent:  # it died before the line above
        os.kill(os.getpid(), signal.SIGTERM)

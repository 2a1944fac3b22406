"""The process's serving phase and its in-flight requests, for a clean shutdown.

Serving -> draining (first SIGTERM/SIGINT: ``/readyz`` says 503, requests are still served for
``shutdown_grace_s``, then the server stops accepting and in-flight requests get
``drain_timeout_s``) -> stopping (the requests still running are cancelled; each answers its
client with :class:`ShuttingDown`: a 503, or an error event inside a started stream).

Server-neutral: :mod:`gateway.edge.server` drives it from the server's signal handling and
shutdown; the dispatcher tracks every HTTP request's task (one set add and discard per request);
the chat handler asks :attr:`Lifecycle.stopping` when it is cancelled.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

from gateway.errors import GatewayError

log = logging.getLogger("glm_gateway.lifecycle")

CUT_WAIT_S = 2.0
"""Longest wait, once the drain is over, for cancelled requests to send their last words."""
_POLL_S = 0.1


class ShuttingDown(GatewayError):
    """503: the process is stopping and ended this request before it finished."""

    status = 503
    type = "server_error"
    code = "server_shutting_down"

    def __init__(self) -> None:
        super().__init__(
            "The gateway is shutting down and ended this request before it finished; "
            "retry it (another replica, or this one once restarted, will answer).",
            headers={"Retry-After": "1"},
        )


class Lifecycle:
    """Which phase the process is in, and the tasks of the HTTP requests it is handling.

    ``signal()`` only sets attributes, so it is safe to call from a signal handler.
    """

    __slots__ = (
        "_clock",
        "_grace_ends",
        "_noticed",
        "drain_s",
        "grace_s",
        "hurry",
        "signals",
        "stopping",
        "tasks",
    )

    def __init__(
        self,
        grace_s: float = 5.0,
        drain_s: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.grace_s = grace_s
        self.drain_s = drain_s
        self._clock = clock
        self.tasks: set[asyncio.Task[Any]] = set()
        self.signals: list[str] = []
        self._grace_ends: float | None = None
        self._noticed = 0
        self.hurry = False
        """A second signal: no more grace, no more drain; in-flight requests end now."""
        self.stopping = False
        """The drain is over: a request task cancelled now was cancelled by the shutdown."""

    @property
    def draining(self) -> bool:
        """A stop was asked for: readiness says 503 (requests are still served until the
        server stops accepting)."""
        return self._grace_ends is not None

    def signal(self, name: str) -> None:
        """A stop signal arrived. The first starts the grace; a second one hurries."""
        self.signals.append(name)
        if self._grace_ends is None:
            self._grace_ends = self._clock() + self.grace_s
        else:
            self.hurry = True

    def grace_over(self) -> bool:
        """Whether the server should stop accepting now (called from its event loop)."""
        if self._grace_ends is None:
            return False
        if self._noticed < len(self.signals):
            self._log_signals()
        return self.hurry or self._clock() >= self._grace_ends

    def _log_signals(self) -> None:
        for name in self.signals[self._noticed :]:
            if self._noticed == 0:
                log.warning(
                    "%s: /readyz answers 503; serving %.1f s more, then draining for up to "
                    "%.1f s (a second signal ends in-flight requests at once)",
                    name,
                    self.grace_s,
                    self.drain_s,
                )
            else:
                log.warning("%s again: ending the grace and the drain now", name)
            self._noticed += 1

    async def drain(self) -> int:
        """Wait up to ``drain_s`` for in-flight requests, then cancel those still running.

        Call once the server stopped accepting. Returns how many requests were cut.
        """
        self._log_signals()
        if self.tasks:
            log.warning("draining %d in-flight request(s)", len(self.tasks))
        ends = self._clock() + self.drain_s
        while not self.hurry:
            left = ends - self._clock()
            running = [t for t in self.tasks if not t.done()]
            if not running or left <= 0:
                break
            # Woken when they are all done, else every _POLL_S to see a second signal.
            await asyncio.wait(running, timeout=min(_POLL_S, left))
        self._log_signals()
        self.stopping = True
        cut = [t for t in self.tasks if not t.done()]
        if not cut:
            return 0
        log.warning("ending %d request(s) still running after the drain", len(cut))
        for task in cut:
            task.cancel("gateway shutting down")
        await asyncio.wait(cut, timeout=CUT_WAIT_S)
        return len(cut)

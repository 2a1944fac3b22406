"""Process-level load shedding: at most ``server.max_in_flight`` requests served at once.

Past the cap a request waits for a slot in a bounded FIFO queue (``server.max_queued``
waiting, each at most ``server.queue_timeout_s``); a request that finds the queue full, or
whose wait runs out, is shed at once: 503 ``overloaded`` with ``Retry-After``.

The uncontended case is one comparison and one increment (:meth:`InFlightGate.take`): no lock,
future or timer. Only a request that has to wait creates a future and a timer. A slot freed
while requests wait is handed to the oldest waiter directly (the running count does not move),
so a newcomer can never overtake the queue.

Apply it to endpoints that call upstream hosts (chat completions); cheap endpoints
(``/healthz``, ``/readyz``, ``/metrics``, admin) never pass through it.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import deque

from gateway.errors import GatewayError
from gateway.observability.metrics import Metrics

SHED_QUEUE_FULL = "queue_full"
SHED_QUEUE_TIMEOUT = "queue_timeout"


class Overloaded(GatewayError):
    """This process is at its in-flight cap and cannot queue the request (or its wait ran out)."""

    status = 503
    type = "server_error"
    code = "overloaded"


class InFlightGate:
    """A counting gate with a bounded, time-limited FIFO queue (single event loop)."""

    __slots__ = ("_limit", "_max_queued", "_metrics", "_retry", "_timeout", "_waiters", "running")

    def __init__(
        self,
        limit: int,
        max_queued: int,
        timeout_s: float,
        metrics: Metrics | None = None,
    ) -> None:
        self._limit = limit
        self._max_queued = max_queued
        self._timeout = timeout_s
        self._metrics = metrics
        self._retry = str(max(1, math.ceil(timeout_s)))
        self._waiters: deque[asyncio.Future[bool]] = deque()
        self.running = 0
        """Requests holding a slot now."""

    @property
    def limit(self) -> int:
        """Requests admitted at once (``server.max_in_flight``)."""
        return self._limit

    @property
    def queued(self) -> int:
        return len(self._waiters)

    def take(self) -> bool:
        """Take a slot if one is free and nobody waits (the fast path); False: call :meth:`wait`."""
        if self.running < self._limit and not self._waiters:
            self.running += 1
            return True
        return False

    async def wait(self) -> None:
        """Queue for a slot; raises :class:`Overloaded` when the queue is full or time runs out.

        On return the caller holds a slot and must :meth:`leave` once done.
        """
        if self.running < self._limit and not self._waiters:  # freed since take() said no
            self.running += 1
            return
        if len(self._waiters) >= self._max_queued or self._timeout <= 0:
            raise self._shed(SHED_QUEUE_FULL)
        loop = asyncio.get_running_loop()
        slot: asyncio.Future[bool] = loop.create_future()
        self._waiters.append(slot)
        self._queued_changed()
        started = time.perf_counter()
        timer = loop.call_later(self._timeout, self._expire, slot)
        try:
            granted = await slot
        except asyncio.CancelledError:
            # A slot handed over just before the cancellation is passed on, not lost.
            if slot.done() and not slot.cancelled() and slot.result():
                self.leave()
            else:
                self._drop(slot)
            raise
        finally:
            timer.cancel()
        if self._metrics is not None:
            self._metrics.queue_wait.observe(time.perf_counter() - started)
        if not granted:
            raise self._shed(SHED_QUEUE_TIMEOUT)

    def leave(self) -> None:
        """Give the slot back: to the oldest waiter if there is one, else to the pool."""
        while self._waiters:
            slot = self._waiters.popleft()
            if not slot.done():
                slot.set_result(True)  # the slot changes hands: ``running`` stays
                self._queued_changed()
                return
        self.running -= 1

    def _expire(self, slot: asyncio.Future[bool]) -> None:
        if not slot.done():
            slot.set_result(False)
            self._drop(slot)

    def _drop(self, slot: asyncio.Future[bool]) -> None:
        try:
            self._waiters.remove(slot)  # at most max_queued long, and only under overload
        except ValueError:
            return
        self._queued_changed()

    def _queued_changed(self) -> None:
        if self._metrics is not None:
            self._metrics.queued.set(len(self._waiters))

    def _shed(self, reason: str) -> Overloaded:
        if self._metrics is not None:
            self._metrics.shed.labels("process", reason).inc()
        why = (
            f"{self._max_queued} more are already waiting"
            if reason == SHED_QUEUE_FULL
            else f"no slot freed within {self._timeout:g}s"
        )
        return Overloaded(
            f"This gateway process is overloaded: {self._limit} requests are in flight and "
            f"{why}. Retry in {self._retry}s (another replica may have room).",
            headers={"Retry-After": self._retry},
        )

"""Deadlines that hold for a whole relayed stream: the total one and an inter-chunk idle limit.

Once a stream has started, the upstream's socket read timeout alone would let a host that
trickles one chunk a second run forever. A :class:`StreamGuard` is one loop timer per stream
(not per chunk): the relay notes the time of each event (``last``), and when the timer fires
it either re-arms for the later of the two limits or cancels the relaying task. The relay turns
that cancellation into :meth:`tripped`'s failure: the client gets an error event naming the
timeout, and closing the upstream response cancels the upstream request.

The timer is armed at the relay's first wait (:meth:`arm`), not at its start: a timer can only
fire while the relay waits, and a stream that arrived whole (read with the answer's head) is
relayed without one (no timer, no task lookup).
"""

from __future__ import annotations

import asyncio
import time

from gateway.routing import failures as fl

DEADLINE_CODE = "deadline_exceeded"
IDLE_CODE = "stream_idle_timeout"


class StreamGuard:
    __slots__ = ("_deadline", "_handle", "_idle", "_task", "_total_s", "last", "reason")

    def __init__(self, deadline: float, idle_s: float, total_s: float | None = None) -> None:
        """``deadline`` on :func:`time.monotonic`'s clock; ``total_s`` is the request's whole
        allowance, named in the error."""
        self._deadline = deadline
        self._idle = idle_s
        self._total_s = total_s
        self._task: asyncio.Task[object] | None = None
        self._handle: asyncio.TimerHandle | None = None
        self.last = time.perf_counter()
        """When the last event arrived (:func:`time.perf_counter`, which the relay reads per
        event anyway)."""
        self.reason: fl.Failure | None = None

    def start(self) -> None:
        self.last = time.perf_counter()

    def arm(self) -> None:
        """Before each wait of the relay: the timer from the first on (then a no-op)."""
        if self._task is None and self.reason is None:
            self._task = asyncio.current_task()
            self._arm()

    def stop(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
        self._task = None

    def _arm(self) -> None:
        idle_in = self.last + self._idle - time.perf_counter()
        delay = max(0.0, min(idle_in, self._deadline - time.monotonic()))
        self._handle = asyncio.get_running_loop().call_later(delay, self._fire)

    def _fire(self) -> None:
        self._handle = None
        if self._task is None:
            return
        if time.monotonic() >= self._deadline:
            total = f" of {self._total_s:g}s" if self._total_s else ""
            self.reason = fl.Failure(
                fl.FailureClass.TIMEOUT,
                200,
                DEADLINE_CODE,
                f"the request's total deadline{total} passed while the answer was streaming",
            )
        elif time.perf_counter() - self.last >= self._idle:
            self.reason = fl.Failure(
                fl.FailureClass.TIMEOUT,
                200,
                IDLE_CODE,
                f"no chunk from the upstream for {self._idle:g}s (routing.stream_idle_timeout_s)",
            )
        else:
            self._arm()
            return
        self._task.cancel()
        self._task = None

    def tripped(self) -> fl.Failure | None:
        """After a CancelledError in the relay: this guard's failure if it caused it (and the
        cancellation is then withdrawn), else None (someone else cancelled: re-raise)."""
        if self.reason is None:
            return None
        task = asyncio.current_task()
        if task is not None:
            task.uncancel()
        return self.reason

"""Per-request stage timings, filled on the hot path with a few ``perf_counter()`` marks.

Chat handling writes the marks; :class:`gateway.observability.access.AccessLog` turns them into
histogram observations and log fields once, when the request ends. Nothing here allocates per
stream chunk: the relay adds to plain floats.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(slots=True)
class StageTimes:
    """Seconds spent per stage of one request (0.0 where the request never got there)."""

    parse_s: float = 0.0
    """Request start until needs are resolved: auth, body read, JSON, needs, token count."""
    route_s: float = 0.0
    """Planning: ``Router.plan`` minus its state read."""
    before_s: float = 0.0
    """The state backend call before forwarding (circuits, latencies, limits)."""
    after_s: float = 0.0
    """The state backend call after answering (outcomes, settlement): made once the answer is
    out, so outside the request's duration."""
    planned: bool = False
    ttft_s: float | None = None
    """Streams: request start until the first content byte was handed to the client."""
    relay_wait_s: float = 0.0
    """Streams: time spent waiting for upstream events after the stream was committed."""
    chunks: int = 0
    """Streams: events relayed after commit (each one waited for)."""
    gap_max_s: float = 0.0
    """Streams: the longest wait for one upstream event after commit."""

    @property
    def state_s(self) -> float:
        return self.before_s + self.after_s

    def chunk_waited(self, waited: float) -> None:
        """One relayed event took ``waited`` seconds to arrive (called per event: keep tiny)."""
        self.relay_wait_s += waited
        self.chunks += 1
        if waited > self.gap_max_s:
            self.gap_max_s = waited

    @property
    def gap_mean_s(self) -> float | None:
        return self.relay_wait_s / self.chunks if self.chunks else None

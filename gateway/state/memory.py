"""In-memory StateStore: the embedded default for one process."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from gateway.catalogue.schema import BreakerConfig
from gateway.state.base import Health, Outcome, View

PROBE_LEASE_S = 10.0
LATENCY_ALPHA = 0.2


@dataclass(slots=True)
class _Circuit:
    consecutive: int = 0
    trips: int = 0
    open_until: float = 0.0
    probe_until: float = 0.0
    """While > now, one probe is in flight and others still see the circuit open."""
    latency: float | None = None
    requests: int = 0
    failures: int = 0
    last_failure: str | None = None


class MemoryState:
    """Circuit breakers with growing cooldowns and half-open single probes, per target."""

    def __init__(self, breaker: BreakerConfig) -> None:
        self._cfg = breaker
        self._circuits: dict[str, _Circuit] = {}

    async def view(self, now: float) -> View:
        opened: dict[str, float] = {}
        latency: dict[str, float] = {}
        for tid, c in self._circuits.items():
            if c.latency is not None:
                latency[tid] = c.latency
            if c.open_until > now:
                opened[tid] = c.open_until - now
            elif c.trips and c.consecutive:  # cooldown over, still tripped: half-open
                if c.probe_until > now:
                    opened[tid] = c.probe_until - now
                else:
                    c.probe_until = now + PROBE_LEASE_S  # this caller holds the probe
        return View(opened, latency)

    async def record(self, outcomes: Sequence[Outcome], now: float) -> None:
        for o in outcomes:
            c = self._circuits.setdefault(o.target_id, _Circuit())
            c.requests += 1
            if o.ok:
                c.consecutive = 0
                c.trips = 0
                c.open_until = c.probe_until = 0.0
                c.latency = (
                    o.latency_s
                    if c.latency is None
                    else c.latency + LATENCY_ALPHA * (o.latency_s - c.latency)
                )
                continue
            c.failures += 1
            c.consecutive += 1
            c.last_failure = o.failure_class
            cooldown = trip_cooldown(self._cfg, c.consecutive, c.trips, o.cooldown_s)
            if cooldown is not None:
                c.trips += 1
                c.open_until = max(c.open_until, now + cooldown)
                c.probe_until = 0.0

    async def health(self, now: float) -> list[Health]:
        out = []
        for tid, c in sorted(self._circuits.items()):
            state = "closed"
            if c.open_until > now:
                state = "open"
            elif c.trips and c.consecutive:
                state = "half_open"
            out.append(
                Health(
                    tid,
                    state,
                    c.consecutive,
                    c.trips,
                    max(0.0, c.open_until - now),
                    c.latency,
                    c.requests,
                    c.failures,
                    c.last_failure,
                )
            )
        return out

    async def ping(self) -> bool:
        return True

    async def aclose(self) -> None:
        return None


def trip_cooldown(
    cfg: BreakerConfig, consecutive: int, trips: int, explicit: float | None
) -> float | None:
    """How long a failure opens the circuit, or None if it stays closed.

    An explicit cooldown (Retry-After, quota reset, bad key) always opens it. Otherwise it
    opens after ``failure_threshold`` consecutive failures, and at once when a half-open probe
    fails, for ``cooldown_s`` doubled on each repeated trip, capped at ``max_cooldown_s``.
    Shared by every backend.
    """
    if explicit is not None and explicit > 0:
        return min(explicit, cfg.max_cooldown_s)
    if consecutive < cfg.failure_threshold and trips == 0:
        return None
    return float(min(cfg.cooldown_s * (2 ** min(trips, 16)), cfg.max_cooldown_s))

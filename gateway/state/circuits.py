"""One deployment's circuit breaker (in-process). ``lua.py`` mirrors it for Redis.

States: *closed*; *open* while ``open_until > now``; *half-open* once a tripped circuit's
cooldown has passed, when the first caller takes the single probe (others see it open until
the probe's outcome is recorded or ``probe_lease_s`` passes).

A closed circuit opens on ``failure_threshold`` consecutive failures, on an error rate of at
least ``error_rate`` over ``error_window_s`` (once the window holds ``error_min_requests``
attempts), or at once for an explicit cooldown (Retry-After, a GLM quota reset, a bad key). A
failed probe opens it again for twice as long as the last time (capped at ``max_cooldown_s``).
Failures of requests that were in flight when it opened do not trip it again; a success closes
it only once it is no longer open.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from gateway.catalogue.schema import BreakerConfig
from gateway.state.base import ERROR_BUCKETS, LATENCY_ALPHA, Health, Outcome
from gateway.state.windows import Window


def error_bucket_s(cfg: BreakerConfig) -> int:
    return max(1, cfg.error_window_s // ERROR_BUCKETS)


@dataclass(slots=True)
class Circuit:
    bucket_s: int
    consecutive: int = 0
    trips: int = 0
    open_until: float = 0.0
    probe_until: float = 0.0
    latency: float | None = None
    requests: int = 0
    failures: int = 0
    last_failure: str | None = None
    window_r: Window = field(init=False)
    window_f: Window = field(init=False)

    def __post_init__(self) -> None:
        self.window_r = Window(self.bucket_s, ERROR_BUCKETS)
        self.window_f = Window(self.bucket_s, ERROR_BUCKETS)

    def state(self, now: float) -> str:
        if self.open_until > now:
            return "open"
        return "half_open" if self.trips else "closed"

    def blocked_for(self, now: float) -> float | None:
        """Seconds this circuit still refuses callers (open, or its probe is out), else None."""
        until = max(self.open_until, self.probe_until) if self.trips else 0.0
        return until - now if until > now else None

    def record(self, cfg: BreakerConfig, o: Outcome, now: float) -> None:
        self.requests += 1
        w = self.window_r
        cur = math.floor(now / w.size)
        if cur == w.pruned:  # Window.add's usual case inline (nothing to prune, a live bucket)
            buckets = w.buckets
            buckets[cur] = buckets.get(cur, 0) + 1
        else:
            w.add(now, 1)
        if o.ok:  # a success (inline: once per answered request)
            latency = self.latency
            lat = o.latency_s
            self.latency = lat if latency is None else latency + LATENCY_ALPHA * (lat - latency)
            self.consecutive = 0
            if self.open_until <= now:
                self.trips = 0
                self.open_until = self.probe_until = 0.0
        else:
            self._failure(cfg, o, now)

    def _failure(self, cfg: BreakerConfig, o: Outcome, now: float) -> None:
        self.failures += 1
        self.window_f.add(now, 1)
        self.consecutive += 1
        self.last_failure = o.failure_class
        explicit = o.cooldown_s if o.cooldown_s is not None and o.cooldown_s > 0 else None
        if self.open_until > now:
            if explicit is not None:
                capped = min(explicit, cfg.max_explicit_cooldown_s)
                self.open_until = max(self.open_until, now + capped)
            return
        rate_hit = False
        if explicit is None and self.trips == 0 and self.consecutive < cfg.failure_threshold:
            seen = self.window_r.total(now)
            rate_hit = seen >= cfg.error_min_requests and (
                self.window_f.total(now) >= cfg.error_rate * seen
            )
        cooldown = trip_cooldown(cfg, self.consecutive, self.trips, explicit, rate_hit)
        if cooldown is not None:
            self.trips += 1
            self.open_until = now + cooldown
            self.probe_until = 0.0

    def hold_open(self, until: float, reason: str) -> None:
        """Open until ``until`` unless already open longer (a trip: half-open afterwards)."""
        if until > self.open_until:
            self.open_until = until
            self.trips = max(self.trips, 1)
            self.probe_until = 0.0
            self.last_failure = reason

    def release_probe(self) -> None:
        self.probe_until = 0.0

    def health(self, tid: str, now: float) -> Health:
        return Health(
            tid,
            self.state(now),
            self.consecutive,
            self.trips,
            max(0.0, self.open_until - now),
            self.latency,
            self.requests,
            self.failures,
            self.last_failure,
            self.window_r.total(now),
            self.window_f.total(now),
        )


def trip_cooldown(
    cfg: BreakerConfig,
    consecutive: int,
    trips: int,
    explicit: float | None,
    rate_hit: bool = False,
) -> float | None:
    """How long a failure opens a circuit that is not open, or None if it stays closed.

    An explicit cooldown always opens it (capped at ``max_explicit_cooldown_s``). Otherwise a
    tripped circuit (a failed probe) opens again, and a closed one opens on ``failure_threshold``
    consecutive failures or ``rate_hit``, for ``cooldown_s`` doubled per earlier trip.
    """
    if explicit is not None and explicit > 0:
        return min(explicit, cfg.max_explicit_cooldown_s)
    if trips == 0 and consecutive < cfg.failure_threshold and not rate_hit:
        return None
    return float(min(cfg.cooldown_s * (2 ** min(trips, 16)), cfg.max_cooldown_s))

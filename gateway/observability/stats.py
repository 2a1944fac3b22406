"""Rolling in-process figures for the dashboard page and ``glm-gateway top``.

Per request, :meth:`Stats.add` bumps a few counters in the current one-second slot of a ring
(latencies go into sparse log-scale histograms: one ``log`` and one dict increment). Nothing
is aggregated until someone reads: :meth:`Stats.snapshot` merges the slots into series and
percentiles, at most once per second however many dashboards poll.

Figures are this process's only; with several replicas, Grafana is the fleet view.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

WINDOW_S = 300
"""Seconds of history kept (the charts' x axis)."""
SUMMARY_S = 60
"""Seconds behind the headline figures (requests/s, p95 ...)."""
STEP_S = 5
"""Seconds per chart point."""
TOP_SERIES = 6
"""Variants / providers drawn as their own line; the rest are summed into ``other``."""

_BIN_BASE = 0.00005
_BIN_RATIO = 1.25
_LOG_RATIO = math.log(_BIN_RATIO)
_MAX_BIN = 80
_RING = WINDOW_S + 1
"""Slots in the ring: the window and the second filling."""
_log = math.log


def bin_of(seconds: float) -> int:
    """Log-scale bin: 50 µs × 1.25^n, so any percentile read back is within 12%."""
    if seconds <= _BIN_BASE:
        return 0
    return min(_MAX_BIN, 1 + int(math.log(seconds / _BIN_BASE) / _LOG_RATIO))


def bin_value(index: int) -> float:
    """A representative value (geometric middle) for a bin."""
    if index <= 0:
        return _BIN_BASE
    return _BIN_BASE * math.pow(_BIN_RATIO, index - 0.5)


def percentile(hist: dict[int, int], q: float) -> float | None:
    """The ``q`` quantile (0-1) of a sparse histogram, or None when it is empty."""
    total = sum(hist.values())
    if total == 0:
        return None
    rank = q * total
    seen = 0
    for index in sorted(hist):
        seen += hist[index]
        if seen >= rank:
            return bin_value(index)
    return bin_value(max(hist))


def merge_into(acc: dict[Any, int], hist: dict[Any, int]) -> None:
    for k, v in hist.items():
        acc[k] = acc.get(k, 0) + v


@dataclass(slots=True)
class Sample:
    """What :meth:`Stats.add` needs from one access record."""

    status: int
    variant: str
    provider: str
    duration_s: float
    overhead_s: float
    fallback: bool
    tokens_in: int = 0
    tokens_out: int = 0
    cost_usd: float = 0.0
    ttft_s: float | None = None
    failed_providers: tuple[str, ...] = ()
    tokens_cached: int = 0


@dataclass(slots=True)
class _Slot:
    sec: int = -1
    requests: int = 0
    errors: int = 0
    client_errors: int = 0
    fallbacks: int = 0
    tokens_in: int = 0
    tokens_out: int = 0
    tokens_cached: int = 0
    cost_usd: float = 0.0
    latency: dict[int, int] = field(default_factory=dict)
    overhead: dict[int, int] = field(default_factory=dict)
    ttft: dict[int, int] = field(default_factory=dict)
    variants: dict[str, int] = field(default_factory=dict)
    providers: dict[str, int] = field(default_factory=dict)
    attempt_failures: dict[str, int] = field(default_factory=dict)
    prompt_by_provider: dict[str, int] = field(default_factory=dict)
    cached_by_provider: dict[str, int] = field(default_factory=dict)

    def add(self, other: _Slot) -> None:
        """Add ``other`` (the same second in another worker) to this slot."""
        self.requests += other.requests
        self.errors += other.errors
        self.client_errors += other.client_errors
        self.fallbacks += other.fallbacks
        self.tokens_in += other.tokens_in
        self.tokens_out += other.tokens_out
        self.tokens_cached += other.tokens_cached
        self.cost_usd += other.cost_usd
        for mine, theirs in (
            (self.latency, other.latency), (self.overhead, other.overhead),
            (self.ttft, other.ttft), (self.variants, other.variants),
            (self.providers, other.providers), (self.attempt_failures, other.attempt_failures),
            (self.prompt_by_provider, other.prompt_by_provider),
            (self.cached_by_provider, other.cached_by_provider),
        ):  # fmt: skip
            merge_into(mine, theirs)

    def reset(self, sec: int) -> None:
        self.sec = sec
        self.requests = self.errors = self.client_errors = self.fallbacks = 0
        self.tokens_in = self.tokens_out = self.tokens_cached = 0
        self.cost_usd = 0.0
        for d in (self.latency, self.overhead, self.ttft):
            d.clear()
        for c in (self.variants, self.providers, self.attempt_failures):
            c.clear()
        self.prompt_by_provider.clear()
        self.cached_by_provider.clear()


class Stats:
    """A ring of one-second slots; see the module docstring."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._slots = [_Slot() for _ in range(_RING)]
        self._started = clock()
        self._lag_s = 0.0
        self._lag_max: dict[int, float] = {}
        self._cache: tuple[int, dict[str, Any]] | None = None

    def add(self, s: Sample) -> None:
        """Count one finished request given as a :class:`Sample`."""
        self.count(
            s.status, s.variant, s.provider, s.duration_s, s.overhead_s, s.fallback,
            s.tokens_in, s.tokens_out, s.cost_usd, s.ttft_s, s.failed_providers,
            s.tokens_cached,
        )  # fmt: skip

    def count(
        self,
        status: int,
        variant: str,
        provider: str,
        duration_s: float,
        overhead_s: float,
        fallback: bool,
        tokens_in: int = 0,
        tokens_out: int = 0,
        cost_usd: float = 0.0,
        ttft_s: float | None = None,
        failed_providers: Iterable[str] = (),
        tokens_cached: int = 0,
    ) -> None:
        """Count one finished request, the fields of a :class:`Sample` passed as they are (the
        access log's hot path: no object per request, a handful of increments)."""
        sec = int(self._clock())
        slot = self._slots[sec % _RING]
        if slot.sec != sec:
            slot.reset(sec)
        slot.requests += 1
        if status >= 400:
            if status >= 500:
                slot.errors += 1
            else:
                slot.client_errors += 1
        if fallback:
            slot.fallbacks += 1
        slot.tokens_in += tokens_in
        slot.tokens_out += tokens_out
        slot.cost_usd += cost_usd
        if tokens_in:  # the prompt cache's hit ratio per provider (dashboard)
            slot.tokens_cached += tokens_cached
            pp = slot.prompt_by_provider
            pp[provider] = pp.get(provider, 0) + tokens_in
            if tokens_cached:
                cp = slot.cached_by_provider
                cp[provider] = cp.get(provider, 0) + tokens_cached
        # bin_of and _bump inlined: this runs once per request
        if duration_s <= _BIN_BASE:
            b = 0
        else:
            b = 1 + int(_log(duration_s / _BIN_BASE) / _LOG_RATIO)
            if b > _MAX_BIN:
                b = _MAX_BIN
        d = slot.latency
        d[b] = d.get(b, 0) + 1
        if overhead_s <= _BIN_BASE:
            b = 0
        else:
            b = 1 + int(_log(overhead_s / _BIN_BASE) / _LOG_RATIO)
            if b > _MAX_BIN:
                b = _MAX_BIN
        d = slot.overhead
        d[b] = d.get(b, 0) + 1
        if ttft_s is not None:
            b = bin_of(ttft_s)
            slot.ttft[b] = slot.ttft.get(b, 0) + 1
        n = slot.variants
        n[variant] = n.get(variant, 0) + 1
        n = slot.providers
        n[provider] = n.get(provider, 0) + 1
        for p in failed_providers:
            _bump(slot.attempt_failures, p)

    def loop_lag(self, lag_s: float) -> None:
        """The latest event-loop lag sample (from the lag monitor)."""
        self._lag_s = lag_s
        sec = int(self._clock()) // STEP_S
        if lag_s > self._lag_max.get(sec, 0.0):
            self._lag_max[sec] = lag_s
        if len(self._lag_max) > WINDOW_S // STEP_S + 2:
            del self._lag_max[min(self._lag_max)]

    def raw(self) -> tuple[float, float, dict[int, float], list[_Slot]]:
        """What :meth:`merged` needs from this worker (``serve --workers N``)."""
        slots = [s for s in self._slots if s.sec >= 0]
        return self._started, self._lag_s, dict(self._lag_max), slots

    @classmethod
    def merged(cls, raws: Iterable[tuple[float, float, dict[int, float], list[_Slot]]]) -> Stats:
        """The stats of several workers as one: slots of the same second added, the newest
        second kept where a ring position differs, the worst loop lag."""
        out = cls()
        ring = len(out._slots)
        started = []
        for start, lag, lag_max, slots in raws:
            started.append(start)
            out._lag_s = max(out._lag_s, lag)
            for step, value in lag_max.items():
                out._lag_max[step] = max(out._lag_max.get(step, 0.0), value)
            for slot in slots:
                mine = out._slots[slot.sec % ring]
                if mine.sec > slot.sec:
                    continue
                if mine.sec < slot.sec:
                    mine.reset(slot.sec)
                mine.add(slot)
        if started:
            out._started = min(started)
        return out

    def snapshot(self) -> dict[str, Any]:
        """Series over the last :data:`WINDOW_S` complete seconds, and headline figures."""
        now = int(self._clock())
        if self._cache is not None and self._cache[0] == now:
            return self._cache[1]
        end = now - 1  # the current second is still filling
        slots = {s.sec: s for s in self._slots if end - WINDOW_S < s.sec <= end}
        data = {
            "now": now,
            "uptime_s": round(self._clock() - self._started, 1),
            "window_s": WINDOW_S,
            "step_s": STEP_S,
            "summary_s": SUMMARY_S,
            "series": _series(slots, end, self._lag_max),
            "summary": _summary([s for sec, s in slots.items() if sec > end - SUMMARY_S]),
            "loop_lag_ms": round(self._lag_s * 1000, 2),
        }
        self._cache = (now, data)
        return data


def _bump(d: dict[Any, int], key: Any) -> None:
    d[key] = d.get(key, 0) + 1


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 2)


def _summary(slots: Iterable[_Slot]) -> dict[str, Any]:
    slots = list(slots)
    n = sum(s.requests for s in slots)
    lat: dict[int, int] = {}
    ovh: dict[int, int] = {}
    ttft: dict[int, int] = {}
    for s in slots:
        merge_into(lat, s.latency)
        merge_into(ovh, s.overhead)
        merge_into(ttft, s.ttft)
    return {
        "requests": n,
        "rps": round(n / SUMMARY_S, 3),
        "p50_ms": _ms(percentile(lat, 0.5)),
        "p95_ms": _ms(percentile(lat, 0.95)),
        "p99_ms": _ms(percentile(lat, 0.99)),
        "overhead_p50_ms": _ms(percentile(ovh, 0.5)),
        "overhead_p95_ms": _ms(percentile(ovh, 0.95)),
        "overhead_p99_ms": _ms(percentile(ovh, 0.99)),
        "ttft_p50_ms": _ms(percentile(ttft, 0.5)),
        "ttft_p95_ms": _ms(percentile(ttft, 0.95)),
        "error_rate": _ratio(sum(s.errors for s in slots), n),
        "client_error_rate": _ratio(sum(s.client_errors for s in slots), n),
        "fallback_rate": _ratio(sum(s.fallbacks for s in slots), n),
        "tokens_in": sum(s.tokens_in for s in slots),
        "tokens_out": sum(s.tokens_out for s in slots),
        "tokens_cached": sum(s.tokens_cached for s in slots),
        "cache_hit_ratio": _ratio(
            sum(s.tokens_cached for s in slots), sum(s.tokens_in for s in slots)
        ),
        "cache_by_provider": _cache_by_provider(slots),
        "cost_usd": round(sum(s.cost_usd for s in slots), 6),
    }


def _cache_by_provider(slots: list[_Slot]) -> dict[str, dict[str, float]]:
    """Per provider: prompt tokens, cached prompt tokens and their ratio."""
    prompt: dict[str, int] = {}
    cached: dict[str, int] = {}
    for s in slots:
        for name, n in s.prompt_by_provider.items():
            prompt[name] = prompt.get(name, 0) + n
        for name, n in s.cached_by_provider.items():
            cached[name] = cached.get(name, 0) + n
    return {
        p: {"prompt": n, "cached": cached.get(p, 0), "ratio": _ratio(cached.get(p, 0), n)}
        for p, n in sorted(prompt.items())
    }


def _ratio(part: int, whole: int) -> float:
    return round(part / whole, 4) if whole else 0.0


def _series(slots: dict[int, _Slot], end: int, lag: dict[int, float]) -> dict[str, Any]:
    steps = WINDOW_S // STEP_S
    first = end - steps * STEP_S + 1
    groups = [
        [slots[sec] for sec in range(first + i * STEP_S, first + (i + 1) * STEP_S) if sec in slots]
        for i in range(steps)
    ]
    out: dict[str, Any] = {"t": [first + (i + 1) * STEP_S - 1 for i in range(steps)]}
    out.update(_rate_series(groups))
    out.update(_latency_series(groups))
    out["loop_lag_ms"] = [
        round(lag.get((first + i * STEP_S) // STEP_S, 0.0) * 1000, 2) for i in range(steps)
    ]
    out["variants"] = _breakdown(groups, lambda s: s.variants)
    out["providers"] = _breakdown(groups, lambda s: s.providers)
    out["attempt_failures"] = _breakdown(groups, lambda s: s.attempt_failures)
    return out


def _rate_series(groups: list[list[_Slot]]) -> dict[str, list[float]]:
    out: dict[str, list[float]] = {k: [] for k in (
        "rps", "errors_ps", "error_rate", "fallback_rate", "tokens_in_ps", "tokens_out_ps",
        "cost_usd",
    )}  # fmt: skip
    for g in groups:
        n = sum(s.requests for s in g)
        out["rps"].append(round(n / STEP_S, 3))
        out["errors_ps"].append(round(sum(s.errors for s in g) / STEP_S, 3))
        out["error_rate"].append(_ratio(sum(s.errors for s in g), n))
        out["fallback_rate"].append(_ratio(sum(s.fallbacks for s in g), n))
        out["tokens_in_ps"].append(round(sum(s.tokens_in for s in g) / STEP_S, 2))
        out["tokens_out_ps"].append(round(sum(s.tokens_out for s in g) / STEP_S, 2))
        out["cost_usd"].append(round(sum(s.cost_usd for s in g), 6))
    return out


def _latency_series(groups: list[list[_Slot]]) -> dict[str, list[float | None]]:
    out: dict[str, list[float | None]] = {
        "p50_ms": [], "p95_ms": [], "overhead_p50_ms": [], "overhead_p95_ms": [],
    }  # fmt: skip
    for g in groups:
        lat: dict[int, int] = {}
        ovh: dict[int, int] = {}
        for s in g:
            merge_into(lat, s.latency)
            merge_into(ovh, s.overhead)
        out["p50_ms"].append(_ms(percentile(lat, 0.5)))
        out["p95_ms"].append(_ms(percentile(lat, 0.95)))
        out["overhead_p50_ms"].append(_ms(percentile(ovh, 0.5)))
        out["overhead_p95_ms"].append(_ms(percentile(ovh, 0.95)))
    return out


def _breakdown(
    groups: list[list[_Slot]], pick: Callable[[_Slot], dict[str, int]]
) -> dict[str, list[float]]:
    """Per-name requests/s for the busiest :data:`TOP_SERIES` names, the rest as ``other``."""
    totals: dict[str, int] = {}
    for g in groups:
        for s in g:
            for name, n in pick(s).items():
                totals[name] = totals.get(name, 0) + n
    top = sorted(totals, key=lambda k: (-totals[k], k))[:TOP_SERIES]
    rest = len(totals) > len(top)
    out: dict[str, list[float]] = {name: [] for name in top}
    if rest:
        out["other"] = []
    for g in groups:
        counts: dict[str, int] = {}
        for s in g:
            for name, n in pick(s).items():
                key = name if name in out else "other"
                counts[key] = counts.get(key, 0) + n
        for name, values in out.items():
            values.append(round(counts.get(name, 0) / STEP_S, 3))
    return out

"""One record per request: metrics, the dashboard's rolling stats, and one JSON log line.

Built once when a request ends (``ChatEndpoint._finish``), from what routing recorded
(:class:`gateway.routing.router.RouteState`) and the stage marks
(:class:`gateway.observability.timing.StageTimes`). No prompt text unless
``logging.log_prompts`` is on.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import orjson

from gateway.observability.logs import ACCESS_LOGGER
from gateway.observability.metrics import Metrics
from gateway.observability.stats import Sample, Stats
from gateway.observability.timing import StageTimes

if TYPE_CHECKING:
    from gateway.routing.router import RouteState

LOGGER = ACCESS_LOGGER


@dataclass(slots=True)
class Durations:
    """Seconds per stage of one request, derived from the marks."""

    total: float
    upstream: float
    backoff: float
    overhead: float
    times: StageTimes

    @classmethod
    def of(cls, total: float, rs: RouteState | None, times: StageTimes) -> Durations:
        upstream = times.relay_wait_s
        backoff = 0.0
        if rs is not None:
            upstream += sum(a.duration_s for a in rs.attempts)
            backoff = rs.backoff_s
        overhead = max(0.0, total - upstream - backoff)
        return cls(total, upstream, backoff, overhead, times)

    @property
    def other(self) -> float:
        t = self.times
        return max(0.0, self.overhead - t.parse_s - t.route_s - t.state_s)

    def log_fields(self) -> dict[str, float | None]:
        t = self.times
        return {
            "total_ms": _ms(self.total),
            "overhead_ms": _ms(self.overhead),
            "parse_ms": _ms(t.parse_s),
            "route_ms": _ms(t.route_s),
            "state_ms": _ms(t.state_s),
            "upstream_ms": _ms(self.upstream),
            "backoff_ms": _ms(self.backoff),
            "ttft_ms": None if t.ttft_s is None else _ms(t.ttft_s),
            "inter_chunk_mean_ms": None if t.gap_mean_s is None else _ms(t.gap_mean_s),
            "inter_chunk_max_ms": _ms(t.gap_max_s) if t.chunks else None,
        }


def _ms(seconds: float) -> float:
    return round(seconds * 1000, 3)


@dataclass(slots=True)
class Record:
    """Everything known about one finished request (built once, read by every sink)."""

    request_id: str
    key_id: str
    status: int
    stream: bool
    error: str | None
    rs: RouteState | None
    d: Durations
    variant: str = "none"
    provider: str = "none"
    tokens_in: int = 0
    tokens_out: int = 0
    cost_usd: float = 0.0
    fallback: dict[str, str] | None = None

    def __post_init__(self) -> None:
        target = self.rs.target if self.rs else None
        if target is not None:
            self.variant, self.provider = target.variant.id, target.provider
            self.tokens_in, self.tokens_out = _tokens(self.rs.usage if self.rs else None)
            self.cost_usd = target.cost_usd(self.tokens_in, self.tokens_out)
        self.fallback = _fallback(self.rs, self.variant)

    @property
    def stream_label(self) -> str:
        return "true" if self.stream else "false"

    def sample(self) -> Sample:
        attempts = self.rs.attempts if self.rs else []
        return Sample(
            status=self.status,
            variant=self.variant,
            provider=self.provider,
            duration_s=self.d.total,
            overhead_s=self.d.overhead,
            fallback=self.fallback is not None,
            tokens_in=self.tokens_in,
            tokens_out=self.tokens_out,
            cost_usd=self.cost_usd,
            ttft_s=self.d.times.ttft_s,
            failed_providers=tuple(a.target.provider for a in attempts if a.failure),
        )

    def line(self) -> dict[str, Any]:
        rs = self.rs
        return {
            "event": "request",
            "time": datetime.now(UTC),  # orjson writes RFC 3339
            "request_id": self.request_id,
            "key_id": self.key_id,
            "status": self.status,
            "stream": self.stream,
            "variant": self.variant,
            "provider": self.provider,
            "attempts": [a.describe() for a in rs.attempts] if rs else [],
            "fallback": self.fallback,
            "adaptations": rs.adaptations if rs else [],
            "usage": rs.usage if rs else None,
            "tokens_in": self.tokens_in,
            "tokens_out": self.tokens_out,
            "cost_usd": round(self.cost_usd, 8),
            "duration_ms": _ms(self.d.total),
            "durations": self.d.log_fields(),
            "error": self.error,
        }


class AccessLog:
    def __init__(
        self,
        metrics: Metrics,
        *,
        stats: Stats | None = None,
        log_prompts: bool = False,
    ) -> None:
        self._m = metrics
        self.stats = stats if stats is not None else Stats()
        self.log_prompts = log_prompts
        """When True the chat handler passes the messages and they are logged (off by default)."""
        self._log = logging.getLogger(LOGGER)

    def emit(
        self,
        *,
        request_id: str,
        key_id: str,
        status: int,
        stream: bool,
        duration_s: float,
        rs: RouteState | None,
        error: str | None,
        times: StageTimes | None = None,
        prompt: Any = None,
    ) -> None:
        """Record one finished request: metrics, rolling stats, one JSON log line."""
        d = Durations.of(duration_s, rs, times or StageTimes())
        rec = Record(request_id, key_id, status, stream, error, rs, d)
        self._observe_request(rec)
        self._observe_stages(rec)
        self._observe_routing(rec)
        self._observe_usage(rec)
        self.stats.add(rec.sample())
        if self._log.isEnabledFor(logging.INFO):
            line = rec.line()
            if self.log_prompts and prompt is not None:
                line["prompt"] = prompt
            self._log.info(orjson.dumps(line, default=str).decode())

    def _observe_request(self, rec: Record) -> None:
        m = self._m
        s = rec.stream_label
        m.child(m.requests, rec.variant, rec.provider, str(rec.status), s).inc()
        if rec.error is not None:
            m.child(m.errors, m.error_label(rec.error)).inc()
        m.child(m.duration, rec.variant, s).observe(rec.d.total)
        m.child(m.overhead, s).observe(rec.d.overhead)

    def _observe_stages(self, rec: Record) -> None:
        m, t = self._m, rec.d.times
        if t.planned:
            m.child(m.stage, "parse").observe(t.parse_s)
            m.child(m.stage, "route").observe(t.route_s)
            m.child(m.stage, "state").observe(t.state_s)
            m.child(m.stage, "other").observe(rec.d.other)
        if t.ttft_s is not None:
            m.child(m.ttft, rec.variant, rec.provider).observe(t.ttft_s)
        if t.gap_mean_s is not None:
            m.child(m.inter_chunk, rec.variant, rec.provider).observe(t.gap_mean_s)

    def _observe_routing(self, rec: Record) -> None:
        m, rs = self._m, rec.rs
        if rs is None or not rs.attempts:
            return
        m.child(m.stage, "upstream_wait").observe(rec.d.upstream)
        for a in rs.attempts:
            outcome = a.failure.cls.value if a.failure else "ok"
            m.child(m.attempts, a.target.variant.id, a.target.provider, outcome).inc()
        f = rec.fallback
        if f is not None:
            m.child(m.fallbacks, f["reason"], f["from_variant"], rec.variant).inc()

    def _observe_usage(self, rec: Record) -> None:
        if not (rec.tokens_in or rec.tokens_out):
            return
        m = self._m
        key = m.key_label(rec.key_id)
        m.child(m.tokens, rec.variant, rec.provider, key, "in").inc(rec.tokens_in)
        m.child(m.tokens, rec.variant, rec.provider, key, "out").inc(rec.tokens_out)
        if rec.cost_usd:
            m.child(m.cost, rec.variant, rec.provider, key).inc(rec.cost_usd)


def _fallback(rs: RouteState | None, answered: str) -> dict[str, str] | None:
    """A fallback: the first attempt failed and another was made (answered or not)."""
    first = rs.attempts[0] if rs is not None and len(rs.attempts) > 1 else None
    if rs is None or first is None or first.failure is None:
        return None
    last = rs.target.id if rs.target is not None else "none"
    return {
        "reason": first.failure.cls.value,
        "from": first.target.id,
        "from_variant": first.target.variant.id,
        "to": last,
        "to_variant": answered,
    }


def _tokens(usage: dict[str, Any] | None) -> tuple[int, int]:
    if not usage:
        return 0, 0
    p, c = usage.get("prompt_tokens"), usage.get("completion_tokens")
    return (p if isinstance(p, int) else 0), (c if isinstance(c, int) else 0)

"""Prometheus metrics, in a registry owned by the app (no module-level state).

Label values are bounded: ``variant`` / ``provider`` / ``deployment`` come from the frozen
config (plus ``none``), ``status`` / ``outcome`` / ``reason`` / ``stage`` / ``op`` are small
enums, and the two open-ended ones (``key``, ``error``) pass through :class:`BoundedLabel`,
which keeps the first N distinct values and folds the rest into ``other``. The README's metrics
table documents every name and label.

One process per pod: each gateway process serves its own ``/metrics`` and Prometheus scrapes
every process (see ``deploy/prometheus/prometheus.yml``); no multiprocess directory. Under
``serve --workers N`` the worker that answers a scrape adds its siblings' series to its own
(:mod:`gateway.observability.fleet`; gauges as :data:`GAUGE_MERGE` says).

The metric classes are prometheus-client's with plain Python numbers inside (see
:class:`PlainCounter`): one request bumps about twenty series, and the stock classes take a
lock per bump. Names, label validation, ``collect`` and the text exposition stay
prometheus-client's, so ``/metrics`` reads exactly as it would with the stock classes.
"""

from __future__ import annotations

import asyncio
import contextlib
from bisect import bisect_left, bisect_right
from collections.abc import Callable, Iterable, Mapping
from functools import reduce
from operator import add
from typing import TYPE_CHECKING, Any, TypeVar

import prometheus_client as prom
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.metrics import MetricWrapperBase
from prometheus_client.samples import Sample
from prometheus_client.utils import floatToGoString

from gateway import __version__
from gateway.catalogue.target import Target

if TYPE_CHECKING:
    from gateway.observability.fleet import Fleet

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)
STAGE_BUCKETS = (
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
    1, 2.5, 5, 10, 30, 60, 120,
)  # fmt: skip
TTFT_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2, 3, 5, 10, 20, 30, 60)
CHUNK_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5)
LAG_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5)
QUEUE_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)
STATE_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1)

T = TypeVar("T")
S = TypeVar("S", bound="_Series")

_go_float: Callable[[float], str] = floatToGoString
"""How prometheus-client writes a bucket bound (``le="1.0"``, ``le="+Inf"``)."""

HISTOGRAM_QUEUE = 512
"""Values a histogram series queues before it counts them (see :class:`PlainHistogram`)."""

MAX_KEY_LABELS = 200
MAX_ERROR_LABELS = 64
CIRCUIT_VALUES = {"closed": 0.0, "half_open": 1.0, "open": 2.0}
GAUGE_MERGE = {
    "glm_gateway_workers": "sum",
    "glm_gateway_in_flight_requests": "sum",
    "glm_gateway_queued_requests": "sum",
    "glm_gateway_event_loop_tasks": "sum",
    "glm_gateway_state_degraded": "max",
    "glm_gateway_config_generation": "min",
    "glm_gateway_config_loaded_timestamp_seconds": "min",
}
"""How a gauge adds up across ``serve --workers N`` (``sum``, ``max``, ``min``); one not named
here is the serving worker's own value (read from shared state at scrape, or alike in every
worker: build info, circuits, state up, plan quota)."""


class _Series(MetricWrapperBase):
    """``labels()`` without prometheus-client's lock and label checks once a series exists.

    Safe because every metric is touched from the event loop's thread only (exact token
    counts run in a worker thread but record nothing). A new series, and any call the
    fast path does not recognise, takes prometheus-client's own path and its checks.
    """

    def labels(self: S, *labelvalues: object, **labelkwargs: object) -> S:
        try:
            series: Any = self._metrics  # parents only; keyed by the label values as str
            found: S = series[labelvalues]
        except (AttributeError, KeyError, TypeError):
            return super().labels(*labelvalues, **labelkwargs)
        return found


class PlainCounter(_Series, prom.Counter):
    """prometheus-client's Counter with one float per series: no lock per ``inc``.

    Exemplars are not kept (the text exposition does not show them); ``_created`` is not
    exported (it would double the series count for no panel or alert).
    """

    _count: float
    _feeds: tuple[Callable[[], None], ...] = ()
    """Called before the series is read: whoever counts into it in batches (the access log's
    clean requests) adds what it holds (see :meth:`feed`)."""

    def _metric_init(self) -> None:
        self._count = 0.0

    def feed(self, fold: Callable[[], None]) -> None:
        """Call ``fold`` before every read of this series (once per ``fold``): it adds counts
        held elsewhere to ``_count``, so that every read (``/metrics``, the fleet's snapshot,
        ``get_sample_value``) sees them."""
        if fold not in self._feeds:
            self._feeds = (*self._feeds, fold)

    def inc(self, amount: float = 1, exemplar: dict[str, str] | None = None) -> None:
        if amount < 0:
            raise ValueError("Counters can only be incremented by non-negative amounts.")
        self._count += amount

    def reset(self) -> None:
        self._count = 0.0

    def _child_samples(self) -> Iterable[Sample]:
        for fold in self._feeds:
            fold()
        return (Sample("_total", {}, self._count, None, None),)


class PlainGauge(_Series, prom.Gauge):
    """prometheus-client's Gauge with one float per series (``multiprocess_mode`` unused)."""

    _level: float

    def _metric_init(self) -> None:
        self._level = 0.0

    def inc(self, amount: float = 1) -> None:
        self._level += amount

    def dec(self, amount: float = 1) -> None:
        self._level -= amount

    def set(self, value: float) -> None:
        self._level = float(value)

    def _child_samples(self) -> Iterable[Sample]:
        return (Sample("", {}, self._level, None, None),)


class PlainHistogram(_Series, prom.Histogram):
    """prometheus-client's Histogram as a list of per-bucket counts and a float sum.

    ``observe`` only queues the value; the queue is counted into the buckets (the first upper
    bound >= the value, as the stock class finds by a linear scan) and added to the sum, in
    order, when it reaches :data:`HISTOGRAM_QUEUE` values or the series is read. The queue is
    one list for the life of the series (emptied in place), so a caller that keeps it may
    append to it as ``observe`` does, and count it (:meth:`_count_queued`) every
    :data:`HISTOGRAM_QUEUE` appends or sooner (the access log's clean requests do). The
    exposition accumulates the counts, ``+Inf`` included. Exemplars are not kept and
    ``_created`` is not exported, as for :class:`PlainCounter`.
    """

    _hits: list[int]
    _observed: float
    _queued: list[float]

    def _metric_init(self) -> None:
        self._hits = [0] * len(self._upper_bounds)
        self._observed = 0.0
        self._queued = []

    def observe(self, amount: float, exemplar: dict[str, str] | None = None) -> None:
        queued = self._queued
        queued.append(amount)
        if len(queued) >= HISTOGRAM_QUEUE:
            self._count_queued()

    def _count_queued(self) -> None:
        """Count the queued values: the sum as ``+=`` one by one would make it; the buckets by
        one sort and a bisection per bound (or, when a nan is about, a bisection per value,
        which puts a nan in the first bucket as :func:`bisect_left` does)."""
        queued = self._queued
        if not queued:
            return
        total = reduce(add, queued, self._observed)
        hits, bounds = self._hits, self._upper_bounds
        if total == total:  # no nan queued (nor inf - inf): the values sort
            queued.sort()
            below = 0
            for i, bound in enumerate(bounds):
                upto = bisect_right(queued, bound, below)
                hits[i] += upto - below
                below = upto
        else:
            for amount in queued:
                hits[bisect_left(bounds, amount)] += 1
        self._observed = total
        queued.clear()

    def _child_samples(self) -> Iterable[Sample]:
        self._count_queued()
        samples = []
        acc = 0.0
        for bound, hits in zip(self._upper_bounds, self._hits, strict=True):
            acc += hits
            samples.append(Sample("_bucket", {"le": _go_float(bound)}, acc, None, None))
        samples.append(Sample("_count", {}, acc, None, None))
        if self._upper_bounds[0] >= 0:
            samples.append(Sample("_sum", {}, self._observed, None, None))
        return tuple(samples)


class BoundedLabel:
    """First ``limit`` distinct values pass through; later new values become ``other``."""

    __slots__ = ("_limit", "_seen")

    def __init__(self, limit: int) -> None:
        self._limit = limit
        self._seen: set[str] = set()

    def __call__(self, value: str) -> str:
        if value in self._seen:
            return value
        if len(self._seen) >= self._limit:
            return "other"
        self._seen.add(value)
        return value


class LoopTasksGauge(PlainGauge):
    """``glm_gateway_event_loop_tasks``: asyncio tasks not yet done on the serving loop,
    counted when scraped (nothing on the request path). Read off the loop, it shows the last
    value set (0 unless a test sets one)."""

    def _child_samples(self) -> Iterable[Sample]:
        with contextlib.suppress(RuntimeError):  # RuntimeError: no running loop here
            self._level = float(len(asyncio.all_tasks()))
        return super()._child_samples()


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.fleet: Fleet | None = None
        """Set in each worker of ``serve --workers N``: ``/metrics`` adds up the siblings."""
        self.key_label = BoundedLabel(MAX_KEY_LABELS)
        self.error_label = BoundedLabel(MAX_ERROR_LABELS)
        self._requests()
        self._latency()
        self._routing()
        self._usage()
        self._affinity()
        self._runtime()
        self._shared_state()
        self._overload()
        self._config()

    def _requests(self) -> None:
        r = self.registry
        self.requests = PlainCounter(
            "glm_gateway_requests",
            "Requests by the variant and provider that answered, status, and front-end API.",
            ["variant", "provider", "status", "stream", "api"],
            registry=r,
        )
        self.errors = PlainCounter(
            "glm_gateway_request_errors",
            "Requests that ended in an error, by error code (all_candidates_failed, ...).",
            ["error"],
            registry=r,
        )
        self.in_flight = PlainGauge(
            "glm_gateway_in_flight_requests", "Requests being handled now.", registry=r
        )
        PlainGauge(
            "glm_gateway_workers",
            "Worker processes whose figures this scrape adds up (serve --workers N; else 1).",
            registry=r,
        ).set(1)
        PlainGauge("glm_gateway_build_info", "Always 1.", ["version"], registry=r).labels(
            __version__
        ).set(1)

    def _latency(self) -> None:
        r = self.registry
        self.duration = PlainHistogram(
            "glm_gateway_request_duration_seconds",
            "Whole request duration as the client sees it (streams: until the last byte).",
            ["variant", "stream"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.overhead = PlainHistogram(
            "glm_gateway_overhead_seconds",
            "Time spent in the gateway itself: duration minus upstream wait and retry backoff.",
            ["stream"],
            buckets=STAGE_BUCKETS,
            registry=r,
        )
        self.stage = PlainHistogram(
            "glm_gateway_stage_duration_seconds",
            "Time per request stage: parse, route, state, upstream_wait, other (relay, "
            "adaptation, response).",
            ["stage"],
            buckets=STAGE_BUCKETS,
            registry=r,
        )
        self.ttft = PlainHistogram(
            "glm_gateway_time_to_first_token_seconds",
            "Streams: request start until the first content byte went to the client.",
            ["variant", "provider"],
            buckets=TTFT_BUCKETS,
            registry=r,
        )
        self.inter_chunk = PlainHistogram(
            "glm_gateway_stream_inter_chunk_seconds",
            "Streams: mean wait between upstream events after the first token, one "
            "observation per stream.",
            ["variant", "provider"],
            buckets=CHUNK_BUCKETS,
            registry=r,
        )

    def _routing(self) -> None:
        r = self.registry
        self.attempts = PlainCounter(
            "glm_gateway_upstream_attempts",
            "Upstream attempts by outcome (ok or failure class).",
            ["variant", "provider", "outcome"],
            registry=r,
        )
        self.fallbacks = PlainCounter(
            "glm_gateway_fallbacks",
            "Requests that tried another candidate after a failure, by the first failure "
            "class, the first variant tried and the variant that answered (none: all failed).",
            ["reason", "from_variant", "to_variant"],
            registry=r,
        )
        self.circuit = PlainGauge(
            "glm_gateway_circuit_state",
            "Circuit breaker per deployment: 0 closed, 1 half-open, 2 open (read at scrape).",
            ["deployment", "variant", "provider"],
            registry=r,
        )

        self.plan_quota = PlainGauge(
            "glm_gateway_plan_quota_remaining_ratio",
            "Share (0-1) left of a provider surface's plan quota per window, as the host's quota "
            "endpoint last said (surfaces with quota: in config, read every interval_s).",
            ["provider", "surface", "window"],
            registry=r,
        )
        self.plan_quota_reset = PlainGauge(
            "glm_gateway_plan_quota_reset_timestamp_seconds",
            "When that plan window resets (Unix time), where the host says.",
            ["provider", "surface", "window"],
            registry=r,
        )

    def set_plan_quota(
        self, provider: str, surface: str, window: str, remaining: float, resets_at: float | None
    ) -> None:
        self.plan_quota.labels(provider, surface, window).set(remaining)
        if resets_at is not None:
            self.plan_quota_reset.labels(provider, surface, window).set(resets_at)

    def _usage(self) -> None:
        r = self.registry
        self.tokens = PlainCounter(
            "glm_gateway_tokens",
            "Tokens by direction (in: prompt, out: completion, cached: the part of the prompt "
            "the host read from its prompt cache), from upstream usage.",
            ["variant", "provider", "key", "direction"],
            registry=r,
        )
        self.cost = PlainCounter(
            "glm_gateway_cost_usd",
            "Cost in USD at the configured price per 1M tokens, from upstream usage.",
            ["variant", "provider", "key"],
            registry=r,
        )

    def _affinity(self) -> None:
        r = self.registry
        self.affinity = PlainCounter(
            "glm_gateway_affinity_requests",
            "Answered requests by what their session's pin did: new, pinned (answered by its "
            "pinned deployment), repinned, elsewhere (the pin did not fit this request; kept).",
            ["outcome"],
            registry=r,
        )
        self.affinity_repins = PlainCounter(
            "glm_gateway_affinity_repins",
            "Session pins moved off a deployment, by its provider and why (failure class, "
            "circuit_open, gone).",
            ["provider", "reason"],
            registry=r,
        )

    def _runtime(self) -> None:
        r = self.registry
        self.loop_lag = PlainHistogram(
            "glm_gateway_event_loop_lag_seconds",
            "How late a periodic event-loop timer fired (blocking work on the loop).",
            buckets=LAG_BUCKETS,
            registry=r,
        )
        self.state_ops = PlainHistogram(
            "glm_gateway_state_op_duration_seconds",
            "State backend round trips (Redis or memory) by operation; _count = round trips.",
            ["backend", "op"],
            buckets=STATE_BUCKETS,
            registry=r,
        )
        self._state_ops: dict[tuple[str, str], PlainHistogram] = {}
        """(backend, op) -> its series of ``state_ops`` (a handful)."""
        self.loop_tasks = LoopTasksGauge(
            "glm_gateway_event_loop_tasks",
            "asyncio tasks not yet done on the gateway's event loop (counted at scrape).",
            registry=r,
        )
        self.state_errors = PlainCounter(
            "glm_gateway_state_errors",
            "State backend calls that failed or were not answered, by operation.",
            ["backend", "op"],
            registry=r,
        )
        self.state_up = PlainGauge(
            "glm_gateway_state_up",
            "1 when the state backend answered a ping at the last scrape.",
            ["backend"],
            registry=r,
        )

    def _shared_state(self) -> None:
        """Limits, budgets and the shared-state backend's health (tenancy/limits.py, state/)."""
        r = self.registry
        self.state_degraded = PlainGauge(
            "glm_gateway_state_degraded",
            "1 while the Redis state backend does not answer and this replica serves from "
            "local state (limits per replica until it resyncs).",
            registry=r,
        )
        self.state_resyncs = PlainCounter(
            "glm_gateway_state_resyncs",
            "Times this replica went back to shared state after being degraded.",
            registry=r,
        )
        self.rate_limited = PlainCounter(
            "glm_gateway_rate_limited",
            "Requests refused by the gateway's own limits, by scope (key, deployments) and "
            "reason (rpm, tpm, budget, revoked).",
            ["scope", "reason"],
            registry=r,
        )
        self.spread_picks = PlainCounter(
            "glm_gateway_spread_picks",
            "Requests whose plan opened with a spread group (routing.spread), by the "
            "deployment tried first.",
            ["deployment"],
            registry=r,
        )
        self.budget_downgrades = PlainCounter(
            "glm_gateway_budget_downgrades",
            "Requests answered by a cheaper variant because the key's budget was nearly spent.",
            ["key"],
            registry=r,
        )

    def _overload(self) -> None:
        """Process-level load shedding (gateway/tenancy/shedding.py)."""
        r = self.registry
        self.queue_wait = PlainHistogram(
            "glm_gateway_queue_seconds",
            "Time a request waited for an in-flight slot (server.max_in_flight); only requests "
            "that had to wait are observed, shed ones included.",
            buckets=QUEUE_BUCKETS,
            registry=r,
        )
        self.queued = PlainGauge(
            "glm_gateway_queued_requests",
            "Requests waiting for an in-flight slot now (at most server.max_queued).",
            registry=r,
        )
        self.shed = PlainCounter(
            "glm_gateway_shed",
            "Requests refused with 503 overloaded before any work, by scope (process) and "
            "reason (queue_full, queue_timeout).",
            ["scope", "reason"],
            registry=r,
        )

    def _config(self) -> None:
        """Config reloads (gateway/edge/reload.py)."""
        r = self.registry
        self.config_reloads = PlainCounter(
            "glm_gateway_config_reloads",
            "Config reloads (SIGHUP, POST /admin/reload) by result: ok, invalid (refused).",
            ["result"],
            registry=r,
        )
        self.config_generation = PlainGauge(
            "glm_gateway_config_generation", "The serving config's number: 1 at start.", registry=r
        )
        self.config_loaded = PlainGauge(
            "glm_gateway_config_loaded_timestamp_seconds",
            "When the serving config was loaded (Unix time).",
            registry=r,
        )

    def observe_state(self, backend: str, op: str, seconds: float, ok: bool = True) -> None:
        """One state-backend round trip (the Redis backend may call this for its own ops)."""
        child = self._state_ops.get((backend, op))
        if child is None:  # (labels() takes a lock and checks its arguments: once a series)
            child = self._state_ops[(backend, op)] = self.state_ops.labels(backend, op)
        child.observe(seconds)
        if not ok:
            self.state_errors.labels(backend, op).inc()

    def set_state(
        self,
        backend: str,
        up: bool | None,
        circuits: Mapping[str, str] | None,
        targets: Iterable[Target],
    ) -> None:
        """Scrape-time gauges: backend reachability (``None``: the check itself failed) and
        every configured circuit's state (deployment id -> ``closed`` / ``half_open`` /
        ``open``; ``None`` when it could not be read). The caller reads the state backend."""
        self.state_up.labels(backend).set(1.0 if up else 0.0)
        if up is None or circuits is None:
            self.state_errors.labels(backend, "scrape").inc()
        states = circuits or {}
        for t in targets:
            value = CIRCUIT_VALUES.get(states.get(t.id, "closed"), 0.0)
            self.circuit.labels(t.id, t.variant.id, t.provider).set(value)

    def render(self) -> bytes:
        """The text exposition (no ``_created`` series: the plain classes do not export them)."""
        return generate_latest(self.registry)

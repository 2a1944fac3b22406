"""The plain (lock-free) metric classes: ``/metrics`` reads exactly as prometheus-client's own
classes would write it, every family keeps its name, type and labels, and the API callers use
(``labels``, ``inc``, ``dec``, ``set``, ``observe``, ``Metrics.child``) behaves as before."""

from __future__ import annotations

import asyncio
import bisect
import itertools
import math
import random
from collections.abc import Iterable
from typing import Any

import prometheus_client as prom
import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import Collector

from gateway import __version__
from gateway.api.ops import refresh_state_metrics
from gateway.catalogue.loader import load_config
from gateway.catalogue.target import Target
from gateway.observability.access import AccessLog
from gateway.observability.metrics import (
    HISTOGRAM_QUEUE,
    LATENCY_BUCKETS,
    Metrics,
    PlainCounter,
    PlainGauge,
    PlainHistogram,
)
from gateway.observability.stats import Stats
from gateway.observability.timing import StageTimes
from gateway.routing import failures as fl
from gateway.routing.planner import Plan
from gateway.routing.router import Attempt, RouteState
from tests.support.procs import CONFIG
from tests.support.state_stubs import OneOpen

# name: (type, label names), as the README's metrics table lists them
FAMILIES: dict[str, tuple[str, tuple[str, ...]]] = {
    "glm_gateway_requests": ("counter", ("variant", "provider", "status", "stream", "api")),
    "glm_gateway_request_errors": ("counter", ("error",)),
    "glm_gateway_in_flight_requests": ("gauge", ()),
    "glm_gateway_build_info": ("gauge", ("version",)),
    "glm_gateway_workers": ("gauge", ()),
    "glm_gateway_request_duration_seconds": ("histogram", ("variant", "stream")),
    "glm_gateway_overhead_seconds": ("histogram", ("stream",)),
    "glm_gateway_stage_duration_seconds": ("histogram", ("stage",)),
    "glm_gateway_time_to_first_token_seconds": ("histogram", ("variant", "provider")),
    "glm_gateway_stream_inter_chunk_seconds": ("histogram", ("variant", "provider")),
    "glm_gateway_upstream_attempts": ("counter", ("variant", "provider", "outcome")),
    "glm_gateway_fallbacks": ("counter", ("reason", "from_variant", "to_variant")),
    "glm_gateway_circuit_state": ("gauge", ("deployment", "variant", "provider")),
    "glm_gateway_plan_quota_remaining_ratio": ("gauge", ("provider", "surface", "window")),
    "glm_gateway_plan_quota_reset_timestamp_seconds": (
        "gauge",
        ("provider", "surface", "window"),
    ),
    "glm_gateway_tokens": ("counter", ("variant", "provider", "key", "direction")),
    "glm_gateway_affinity_requests": ("counter", ("outcome",)),
    "glm_gateway_affinity_repins": ("counter", ("provider", "reason")),
    "glm_gateway_cost_usd": ("counter", ("variant", "provider", "key")),
    "glm_gateway_event_loop_lag_seconds": ("histogram", ()),
    "glm_gateway_event_loop_tasks": ("gauge", ()),
    "glm_gateway_state_op_duration_seconds": ("histogram", ("backend", "op")),
    "glm_gateway_state_errors": ("counter", ("backend", "op")),
    "glm_gateway_state_up": ("gauge", ("backend",)),
    "glm_gateway_state_degraded": ("gauge", ()),
    "glm_gateway_state_resyncs": ("counter", ()),
    "glm_gateway_rate_limited": ("counter", ("scope", "reason")),
    "glm_gateway_budget_downgrades": ("counter", ("key",)),
    "glm_gateway_spread_picks": ("counter", ("deployment",)),
    "glm_gateway_queue_seconds": ("histogram", ()),
    "glm_gateway_queued_requests": ("gauge", ()),
    "glm_gateway_shed": ("counter", ("scope", "reason")),
    "glm_gateway_config_reloads": ("counter", ("result",)),
    "glm_gateway_config_generation": ("gauge", ()),
    "glm_gateway_config_loaded_timestamp_seconds": ("gauge", ()),
}

PlainMetric = PlainCounter | PlainGauge | PlainHistogram


@pytest.fixture(scope="module")
def targets() -> tuple[Target, ...]:
    return load_config(CONFIG, demo_simulator_url="http://127.0.0.1:9").catalogue.targets


def registered(m: Metrics) -> list[PlainMetric]:
    """The metrics in the order they were registered (the order of the exposition)."""
    found = list(m.registry._collector_to_names)
    assert all(isinstance(c, PlainCounter | PlainGauge | PlainHistogram) for c in found)
    return found  # type: ignore[return-value]


def stock_twin(metric: PlainMetric, registry: CollectorRegistry) -> Any:
    """The same metric built from prometheus-client's own class."""
    args: dict[str, Any] = {"labelnames": metric._labelnames, "registry": registry}
    if isinstance(metric, PlainHistogram):
        return prom.Histogram(metric._name, metric._documentation, buckets=metric._upper_bounds,
                              **args)  # fmt: skip
    cls = prom.Counter if isinstance(metric, PlainCounter) else prom.Gauge
    return cls(metric._name, metric._documentation, **args)


class WithoutCreated(Collector):
    """How ``Metrics.render`` hid the stock classes' ``_created`` series before."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self._registry = registry

    def collect(self) -> Iterable[Metric]:
        for family in self._registry.collect():
            family.samples = [s for s in family.samples if not s.name.endswith("_created")]
            yield family


def replay(rng: random.Random, ours: PlainMetric, stock: Any) -> None:
    """The same random operations on both: label values from small pools, histogram values on
    and around the bucket bounds, 0, negative and huge."""
    for _ in range(300):
        values = [rng.choice(["a", "b", "c"]) for _ in ours._labelnames]
        a = ours.labels(*values) if values else ours
        b = stock.labels(*values) if values else stock
        if isinstance(ours, PlainHistogram):
            bound = rng.choice(ours._upper_bounds[:-1])
            v = rng.choice([bound, bound * 1.0000001, bound * 0.9999999, 0.0, -1.0, 1e9,
                            rng.random() * 3])  # fmt: skip
            a.observe(v)
            b.observe(v)
        elif isinstance(ours, PlainCounter):
            n = rng.choice([1, 2.5, 0, 1e-9])
            a.inc(n)
            b.inc(n)
        else:
            op, n = rng.choice(["inc", "dec", "set"]), rng.choice([1, 2.5, -3, 0.1])
            getattr(a, op)(n)
            getattr(b, op)(n)


def test_exposition_is_what_prometheus_clients_own_classes_write() -> None:
    m = Metrics()
    rng = random.Random(11)
    twins = CollectorRegistry(auto_describe=True)
    for metric in registered(m):
        twin = stock_twin(metric, twins)
        if metric._name == "glm_gateway_build_info":
            twin.labels(__version__).set(1)
        if metric._name == "glm_gateway_workers":
            twin.set(1)
        replay(rng, metric, twin)
    ours = m.render()
    assert ours == generate_latest(WithoutCreated(twins))
    assert b"_created" not in ours


def test_every_family_keeps_its_name_type_labels_and_cumulative_buckets(
    targets: tuple[Target, ...],
) -> None:
    m = Metrics()
    populate(m, targets)
    families = {f.name: f for f in text_string_to_metric_families(m.render().decode())}
    assert set(families) == set(FAMILIES)
    for name, (kind, labels) in FAMILIES.items():
        family = families[name]
        assert family.type == kind, name
        assert family.documentation, name
        for s in family.samples:
            assert not s.name.endswith("_created")
            own = set(s.labels) - {"le"}
            assert own == set(labels), (name, s.labels)
        if kind == "histogram":
            check_buckets(family)
    requests = families["glm_gateway_requests"].samples
    assert {s.name for s in requests} == {"glm_gateway_requests_total"}


def check_buckets(family: Any) -> None:
    """Per series: cumulative counts that never go down, ``+Inf`` last and equal to _count."""
    series: dict[tuple[tuple[str, str], ...], list[Any]] = {}
    counts: dict[tuple[tuple[str, str], ...], float] = {}
    for s in family.samples:
        key = tuple(sorted((k, v) for k, v in s.labels.items() if k != "le"))
        if s.name.endswith("_bucket"):
            series.setdefault(key, []).append(s)
        elif s.name.endswith("_count"):
            counts[key] = s.value
    assert series.keys() == counts.keys()
    for key, buckets in series.items():
        bounds = [float(b.labels["le"]) for b in buckets]
        assert bounds == sorted(bounds) and bounds[-1] == float("inf")
        values = [b.value for b in buckets]
        assert values == sorted(values)
        assert values[-1] == counts[key]


def populate(m: Metrics, targets: tuple[Target, ...]) -> None:
    """Every metric through the API its callers use."""
    answered, first = targets[0], targets[1]
    rs = RouteState(Plan(candidates=[]))
    busy = fl.Failure(fl.FailureClass.OVERLOADED, 503, "1305", "busy")
    rs.attempts = [Attempt(first, 503, busy, 0.01), Attempt(answered, 200, None, 0.1)]
    rs.target = answered
    rs.usage = {"prompt_tokens": 10, "completion_tokens": 5}
    times = StageTimes(parse_s=0.001, route_s=0.002, before_s=0.001, ttft_s=0.2, planned=True)
    times.chunk_waited(0.01)
    log = AccessLog(m, stats=Stats())
    log.emit(request_id="r", key_id="k", status=200, stream=True, duration_s=0.5, rs=rs,
             error=None, times=times)  # fmt: skip
    log.emit(request_id="r", key_id="-", status=401, stream=False, duration_s=0.001, rs=None,
             error="invalid_api_key")  # fmt: skip
    m.in_flight.inc()
    m.in_flight.dec()
    m.loop_lag.observe(0.002)
    m.observe_state("redis", "eval", 0.0003, ok=False)
    asyncio.run(refresh_state_metrics(m, OneOpen(answered.id), "memory", targets))  # type: ignore[arg-type]
    m.state_degraded.set(1)
    m.state_resyncs.inc()
    m.rate_limited.labels("key", "rpm").inc()
    m.budget_downgrades.labels(m.key_label("k")).inc()
    m.spread_picks.labels(first.id).inc()
    m.set_plan_quota("zai", "coding", "tokens_5h", 0.25, 1_900_000_000.0)


def test_labels_returns_one_series_per_label_values_however_asked() -> None:
    m = Metrics()
    a = m.requests.labels("v", "p", "200", "false", "chat")
    assert m.requests.labels("v", "p", "200", "false", "chat") is a
    assert m.requests.labels("v", "p", 200, False, "chat") is not a  # "False" is another value
    assert m.requests.labels("v", "p", 200, "false", "chat") is a  # str() as prometheus does
    assert (
        m.requests.labels(variant="v", provider="p", status="200", stream="false", api="chat") is a
    )
    with pytest.raises(ValueError, match="Incorrect label count"):
        m.requests.labels("v")
    with pytest.raises(ValueError, match="No label names"):
        m.in_flight.labels("x")
    with pytest.raises(ValueError, match="already has labels"):
        a.labels("v", "p", "200", "false", "chat")
    with pytest.raises(ValueError, match="non-negative"):
        a.inc(-1)


def test_a_removed_series_is_not_served_from_the_fast_path() -> None:
    m = Metrics()
    old = m.errors.labels("x")
    old.inc()
    m.errors.remove("x")
    new = m.errors.labels("x")
    assert new is not old
    new.inc(2)
    assert m.registry.get_sample_value("glm_gateway_request_errors_total", {"error": "x"}) == 2


def test_counters_gauges_and_histograms_keep_plain_numbers() -> None:
    m = Metrics()
    m.tokens.labels("v", "p", "k", "in").inc(1000)
    m.cost.labels("v", "p", "k").inc(0.25)
    m.in_flight.inc(3)
    m.in_flight.dec()
    m.state_up.labels("redis").set(1)
    h = m.duration.labels("v", "false")
    for value in (LATENCY_BUCKETS[0], LATENCY_BUCKETS[0] * 1.01, 1e6):
        h.observe(value)
    get = m.registry.get_sample_value
    assert get("glm_gateway_tokens_total", {"variant": "v", "provider": "p", "key": "k",
                                            "direction": "in"}) == 1000  # fmt: skip
    assert get("glm_gateway_cost_usd_total", {"variant": "v", "provider": "p", "key": "k"}) == 0.25
    assert get("glm_gateway_in_flight_requests") == 2
    assert get("glm_gateway_state_up", {"backend": "redis"}) == 1
    bucket = {"variant": "v", "stream": "false"}
    assert get("glm_gateway_request_duration_seconds_bucket", {**bucket, "le": "0.005"}) == 1
    assert get("glm_gateway_request_duration_seconds_bucket", {**bucket, "le": "0.01"}) == 2
    assert get("glm_gateway_request_duration_seconds_bucket", {**bucket, "le": "+Inf"}) == 3
    assert get("glm_gateway_request_duration_seconds_count", bucket) == 3


def test_queued_observations_count_as_observing_each_at_once() -> None:
    """``observe`` queues; counted at :data:`HISTOGRAM_QUEUE` values or when read, the buckets
    and the sum are those of counting each value as it came (a nan in the first bucket, an
    ``inf - inf`` sum nan), however the reads fall."""
    rng = random.Random(5)
    bounds = [*LATENCY_BUCKETS, math.inf]
    finite = [0.0, -0.0, -1.0, 1e9, *LATENCY_BUCKETS, *(b * 1.0000001 for b in LATENCY_BUCKETS)]
    odd = [math.inf, -math.inf, math.nan]
    for case in range(40):
        specials = finite + odd if case % 2 else finite
        h = Metrics().duration.labels("v", "false")
        hits, total = [0] * len(bounds), 0.0
        for _ in range(rng.randrange(HISTOGRAM_QUEUE * 3)):
            v = rng.choice(specials) if rng.random() < 0.1 else rng.lognormvariate(-3, 2)
            h.observe(v)
            hits[bisect.bisect_left(bounds, v)] += 1
            total += v
            if rng.random() < 0.01:  # a scrape in between
                h._child_samples()
        samples = list(h._child_samples())
        assert [s.value for s in samples[:-2]] == list(itertools.accumulate(hits))
        assert samples[-2].value == sum(hits)
        got = samples[-1].value
        assert got == total or (got != got and total != total), (case, got, total)

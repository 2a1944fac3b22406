"""Rolling dashboard stats, the access record (metrics + JSON line), bounded labels, ``top``."""

from __future__ import annotations

import asyncio
import io
import logging
import random
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import orjson
import pytest
from rich.console import Console

from gateway.api.dashboard import require_master
from gateway.api.ops import dashboard_data, refresh_state_metrics
from gateway.catalogue.loader import load_config
from gateway.catalogue.schema import AuthConfig
from gateway.catalogue.target import Target
from gateway.errors import AuthenticationFailed, PermissionDenied
from gateway.observability.access import LOGGER, AccessLog
from gateway.observability.metrics import MAX_KEY_LABELS, BoundedLabel, Metrics
from gateway.observability.stats import (
    STEP_S,
    TOP_SERIES,
    WINDOW_S,
    Sample,
    Stats,
    bin_of,
    percentile,
)
from gateway.observability.timing import StageTimes
from gateway.observability.top import render, sparkline
from gateway.routing import failures as fl
from gateway.routing.planner import Plan
from gateway.routing.router import Attempt, RouteState
from gateway.state.base import Health
from tests.support.procs import CONFIG
from tests.support.state_stubs import OneOpen


class Clock:
    def __init__(self, now: float = 1_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def sample(**kw: Any) -> Sample:
    base: dict[str, Any] = {
        "status": 200,
        "variant": "glm-4.7",
        "provider": "zai",
        "duration_s": 0.2,
        "overhead_s": 0.001,
        "fallback": False,
    }
    return Sample(**{**base, **kw})


@pytest.fixture(scope="module")
def targets() -> tuple[Target, ...]:
    return load_config(CONFIG, demo_simulator_url="http://127.0.0.1:9").catalogue.targets


def priced(targets: tuple[Target, ...]) -> Target:
    return next(t for t in targets if t.price is not None and t.price.input > 0)


# --- histograms -----------------------------------------------------------------------------


def test_percentiles_are_within_the_bin_resolution() -> None:
    rng = random.Random(7)
    values = [rng.lognormvariate(-3, 1.2) for _ in range(5000)]
    hist: dict[int, int] = {}
    for v in values:
        hist[bin_of(v)] = hist.get(bin_of(v), 0) + 1
    ordered = sorted(values)
    for q in (0.5, 0.95, 0.99):
        exact = ordered[int(q * len(ordered)) - 1]
        got = percentile(hist, q)
        assert got is not None
        assert abs(got - exact) / exact < 0.13, (q, got, exact)


def test_percentile_of_nothing_is_none_and_tiny_values_land_in_bin_zero() -> None:
    assert percentile({}, 0.5) is None
    assert bin_of(0.0) == 0
    assert bin_of(1e9) == bin_of(1e12)  # clamped


def test_count_bins_latency_and_overhead_as_bin_of_does() -> None:
    """``count`` has ``bin_of`` written out for the duration and the overhead."""
    rng = random.Random(11)
    values = [0.0, -1.0, 5e-5, 5e-5 * 1.25, 1e9, 1e300, *(5e-5 * 1.25**n for n in range(90))]
    values += [rng.lognormvariate(-7, 4) for _ in range(3000)]
    for v in values:
        stats = Stats(clock=lambda: 1_000_000.0)
        stats.count(200, "v", "p", v, v / 3, False)
        (slot,) = stats.raw()[3]
        assert slot.latency == {bin_of(v): 1}, v
        assert slot.overhead == {bin_of(v / 3): 1}, v


# --- rolling window ---------------------------------------------------------------------------


def test_snapshot_counts_complete_seconds_only() -> None:
    clock = Clock()
    stats = Stats(clock)
    for _ in range(10):
        stats.add(sample())
    assert stats.snapshot()["summary"]["requests"] == 0  # the current second is still filling
    clock.now += 1
    snap = stats.snapshot()
    assert snap["summary"]["requests"] == 10
    assert snap["series"]["rps"][-1] == 10 / STEP_S
    assert len(snap["series"]["t"]) == WINDOW_S // STEP_S
    assert snap["series"]["t"][-1] == int(clock.now) - 1


def test_rates_percentiles_tokens_and_cost() -> None:
    clock = Clock()
    stats = Stats(clock)
    for i in range(100):
        stats.add(
            sample(
                status=502 if i < 5 else 429 if i < 8 else 200,
                duration_s=0.1 if i < 50 else 1.0,
                fallback=i % 10 == 0,
                tokens_in=10,
                tokens_out=5,
                cost_usd=0.001,
                ttft_s=0.05,
                failed_providers=("zai",) if i % 10 == 0 else (),
            )
        )
    clock.now += 1
    m = stats.snapshot()["summary"]
    assert m["requests"] == 100
    assert m["error_rate"] == 0.05
    assert m["client_error_rate"] == 0.03
    assert m["fallback_rate"] == 0.1
    assert m["tokens_in"] == 1000 and m["tokens_out"] == 500
    assert m["cost_usd"] == pytest.approx(0.1)
    assert 80 < m["p50_ms"] < 120
    assert 900 < m["p95_ms"] < 1130
    assert 40 < m["ttft_p95_ms"] < 60
    failures = stats.snapshot()["series"]["attempt_failures"]
    assert failures["zai"][-1] == 10 / STEP_S


def test_old_seconds_leave_the_window_and_slots_are_reused() -> None:
    clock = Clock()
    stats = Stats(clock)
    stats.add(sample(variant="glm-4-9b"))
    clock.now += 2
    assert stats.snapshot()["summary"]["requests"] == 1
    clock.now += WINDOW_S  # one full ring later: the same slot index, another second
    stats.add(sample(variant="glm-4.6"))
    clock.now += 1
    snap = stats.snapshot()
    assert sum(snap["series"]["rps"]) * STEP_S == 1
    assert list(snap["series"]["variants"]) == ["glm-4.6"]


def test_busiest_variants_get_their_own_series_and_the_rest_is_other() -> None:
    clock = Clock()
    stats = Stats(clock)
    names = [f"v{i}" for i in range(TOP_SERIES + 3)]
    for rank, name in enumerate(names):
        for _ in range(len(names) - rank):
            stats.add(sample(variant=name))
    clock.now += 1
    variants = stats.snapshot()["series"]["variants"]
    assert list(variants) == [*names[:TOP_SERIES], "other"]
    assert variants["other"][-1] == (3 + 2 + 1) / STEP_S


def test_snapshot_is_computed_at_most_once_a_second() -> None:
    clock = Clock()
    stats = Stats(clock)
    first = stats.snapshot()
    assert stats.snapshot() is first
    clock.now += 1
    assert stats.snapshot() is not first


def test_loop_lag_keeps_the_latest_and_the_worst_per_point() -> None:
    clock = Clock()
    stats = Stats(clock)
    stats.loop_lag(0.030)
    stats.loop_lag(0.002)
    clock.now += STEP_S
    snap = stats.snapshot()
    assert snap["loop_lag_ms"] == 2.0
    assert 30.0 in snap["series"]["loop_lag_ms"]


# --- access record ------------------------------------------------------------------------------


@pytest.fixture
def captured() -> Iterator[list[str]]:
    lines: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            lines.append(record.getMessage())

    logger = logging.getLogger(LOGGER)
    handler = Keep()
    logger.addHandler(handler)
    old = logger.level
    logger.setLevel(logging.INFO)
    yield lines
    logger.removeHandler(handler)
    logger.setLevel(old)


def fallback_state(targets: tuple[Target, ...]) -> tuple[RouteState, Target, Target]:
    answered = priced(targets)
    first = next(t for t in targets if t.variant.id != answered.variant.id)
    rs = RouteState(Plan(candidates=[]))
    overloaded = fl.Failure(fl.FailureClass.OVERLOADED, 503, "1305", "busy")
    rs.attempts = [Attempt(first, 503, overloaded, 0.010), Attempt(answered, 200, None, 0.100)]
    rs.target = answered
    rs.usage = {"prompt_tokens": 1000, "completion_tokens": 500}
    rs.backoff_s = 0.05
    return rs, first, answered


def test_access_record_feeds_metrics_stats_and_one_json_line(
    targets: tuple[Target, ...], captured: list[str]
) -> None:
    m = Metrics()
    log = AccessLog(m, stats=Stats())
    rs, first, answered = fallback_state(targets)
    times = StageTimes(parse_s=0.001, route_s=0.002, before_s=0.0005, after_s=0.0005)
    times.planned = True
    log.emit(
        request_id="req_1", key_id="team-a", status=200, stream=False, duration_s=0.2,
        rs=rs, error=None, times=times, prompt=[{"role": "user", "content": "SECRET"}],
    )  # fmt: skip
    v, p = answered.variant.id, answered.provider
    get = m.registry.get_sample_value
    assert get("glm_gateway_requests_total", {"variant": v, "provider": p, "status": "200",
                                              "stream": "false", "api": "chat"}) == 1  # fmt: skip
    assert get("glm_gateway_fallbacks_total", {"reason": "overloaded",
               "from_variant": first.variant.id, "to_variant": v}) == 1  # fmt: skip
    attempt = {"variant": first.variant.id, "provider": first.provider, "outcome": "overloaded"}
    assert get("glm_gateway_upstream_attempts_total", attempt) == 1
    tokens = {"variant": v, "provider": p, "key": "team-a", "direction": "out"}
    assert get("glm_gateway_tokens_total", tokens) == 500
    cost = get("glm_gateway_cost_usd_total", {"variant": v, "provider": p, "key": "team-a"})
    assert cost == pytest.approx(answered.cost_usd(1000, 500))
    # overhead = 0.2 - upstream (0.11) - backoff (0.05)
    assert get("glm_gateway_overhead_seconds_sum", {"stream": "false"}) == pytest.approx(0.04)
    for stage in ("parse", "route", "state", "upstream_wait", "other"):
        assert get("glm_gateway_stage_duration_seconds_count", {"stage": stage}) == 1

    (line,) = captured
    assert "SECRET" not in line
    rec = orjson.loads(line)
    assert rec["key_id"] == "team-a" and rec["request_id"] == "req_1"
    assert [a["class"] for a in rec["attempts"]] == ["overloaded", "ok"]
    assert rec["fallback"]["reason"] == "overloaded" and rec["fallback"]["to"] == answered.id
    assert rec["tokens_in"] == 1000 and rec["cost_usd"] > 0
    assert rec["durations"]["backoff_ms"] == 50.0 and rec["durations"]["upstream_ms"] == 110.0
    assert "prompt" not in rec


def test_prompts_are_logged_only_when_configured(
    targets: tuple[Target, ...], captured: list[str]
) -> None:
    log = AccessLog(Metrics(), log_prompts=True)
    rs, _, _ = fallback_state(targets)
    msgs = [{"role": "user", "content": "SHOW-ME"}]
    log.emit(request_id="r", key_id="k", status=200, stream=True, duration_s=0.1, rs=rs,
             error=None, prompt=msgs)  # fmt: skip
    assert orjson.loads(captured[0])["prompt"] == msgs


def test_an_early_error_has_no_route_and_still_counts(captured: list[str]) -> None:
    m = Metrics()
    log = AccessLog(m)
    log.emit(request_id="r", key_id="-", status=401, stream=False, duration_s=0.001, rs=None,
             error="invalid_api_key")  # fmt: skip
    get = m.registry.get_sample_value
    assert get("glm_gateway_request_errors_total", {"error": "invalid_api_key"}) == 1
    assert get("glm_gateway_requests_total", {"variant": "none", "provider": "none",
                                              "status": "401", "stream": "false",
                                              "api": "chat"}) == 1  # fmt: skip
    assert get("glm_gateway_stage_duration_seconds_count", {"stage": "parse"}) is None
    assert orjson.loads(captured[0])["variant"] == "none"


def test_stream_timings_become_ttft_and_one_inter_chunk_observation(
    targets: tuple[Target, ...], captured: list[str]
) -> None:
    m = Metrics()
    rs, _, answered = fallback_state(targets)
    times = StageTimes(ttft_s=0.3)
    for gap in (0.01, 0.03, 0.02):
        times.chunk_waited(gap)
    AccessLog(m).emit(request_id="r", key_id="k", status=200, stream=True, duration_s=1.0,
                      rs=rs, error=None, times=times)  # fmt: skip
    labels = {"variant": answered.variant.id, "provider": answered.provider}
    get = m.registry.get_sample_value
    assert get("glm_gateway_time_to_first_token_seconds_sum", labels) == pytest.approx(0.3)
    assert get("glm_gateway_stream_inter_chunk_seconds_count", labels) == 1
    assert get("glm_gateway_stream_inter_chunk_seconds_sum", labels) == pytest.approx(0.02)
    d = orjson.loads(captured[0])["durations"]
    assert d["inter_chunk_max_ms"] == 30.0 and d["ttft_ms"] == 300.0


# --- labels and scrape-time state -----------------------------------------------------------


def test_bounded_label_folds_new_values_into_other_past_the_limit() -> None:
    label = BoundedLabel(2)
    assert [label(v) for v in ("a", "b", "c", "a", "d", "b")] == ["a", "b", "other", "a",
                                                                   "other", "b"]  # fmt: skip
    assert Metrics().key_label("master") == "master" and MAX_KEY_LABELS >= 100


class BrokenState:
    degraded = True

    async def ping(self) -> bool:
        raise ConnectionError("redis down")

    async def health(self, now: float) -> list[Health]:
        raise ConnectionError("redis down")


def test_scrape_refresh_never_raises_and_counts_backend_errors(
    targets: tuple[Target, ...],
) -> None:
    m = Metrics()
    asyncio.run(refresh_state_metrics(m, BrokenState(), "redis", targets))  # type: ignore[arg-type]
    get = m.registry.get_sample_value
    assert get("glm_gateway_state_up", {"backend": "redis"}) == 0
    assert get("glm_gateway_state_errors_total", {"backend": "redis", "op": "scrape"}) == 1
    t = targets[0]
    assert get("glm_gateway_circuit_state", {"deployment": t.id, "variant": t.variant.id,
                                             "provider": t.provider}) == 0  # fmt: skip


def test_circuit_gauge_and_overview_show_an_open_circuit_first(
    targets: tuple[Target, ...],
) -> None:
    m = Metrics()
    t = targets[-1]
    state = OneOpen(t.id)
    asyncio.run(refresh_state_metrics(m, state, "memory", targets))  # type: ignore[arg-type]
    labels = {"deployment": t.id, "variant": t.variant.id, "provider": t.provider}
    assert m.registry.get_sample_value("glm_gateway_circuit_state", labels) == 2
    data = asyncio.run(dashboard_data(Stats(), m, state, "memory", targets))  # type: ignore[arg-type]
    assert data["circuits"][0]["deployment"] == t.id
    assert data["circuits"][0]["state"] == "open"
    assert len(data["circuits"]) == len(targets)


# --- top ---------------------------------------------------------------------------------------


def test_top_renders_the_dashboard_data(targets: tuple[Target, ...], captured: list[str]) -> None:
    clock = Clock()
    stats = Stats(clock)
    m = Metrics()
    log = AccessLog(m, stats=stats)
    rs, _, answered = fallback_state(targets)
    for _ in range(20):
        log.emit(request_id="r", key_id="master", status=200, stream=False, duration_s=0.25,
                 rs=rs, error=None)  # fmt: skip
    clock.now += 1
    data = asyncio.run(dashboard_data(stats, m, OneOpen(targets[0].id), "memory", targets))  # type: ignore[arg-type]
    out = io.StringIO()
    Console(file=out, width=160, color_system=None).print(render(data, "http://gw"))
    text = out.getvalue()
    assert "req/s" in text and "http://gw" in text
    assert answered.variant.id in text and targets[0].id in text and "open" in text
    assert sparkline([0, 1, 2, 4]) == "▁▂▄█"
    assert sparkline([None, 0]) == "▁▁"


# --- who may read the dashboard data ------------------------------------------------------------


def services_with(enabled: bool, master: str | None) -> Any:
    auth = AuthConfig(enabled=enabled, master_key=master)
    return SimpleNamespace(config=SimpleNamespace(gateway=SimpleNamespace(auth=auth)))


def test_dashboard_data_is_for_the_master_key_only_when_auth_is_on() -> None:
    require_master(services_with(False, None), None)  # auth off: anyone
    on = services_with(True, "sk-master")
    require_master(on, "Bearer sk-master")
    require_master(on, "bearer  sk-master ")
    with pytest.raises(AuthenticationFailed):
        require_master(on, None)
    with pytest.raises(AuthenticationFailed):
        require_master(on, "Basic sk-master")
    with pytest.raises(PermissionDenied):
        require_master(on, "Bearer sk-virtual-key")
    with pytest.raises(PermissionDenied, match="none is configured"):
        require_master(services_with(True, None), "Bearer anything")


def test_totals_split_by_front_end_api() -> None:
    m = Metrics()
    log = AccessLog(m)
    for api, status in (("chat", 200), ("messages", 200), ("messages", 502)):
        log.emit(request_id="r", key_id="k", status=status, stream=False, duration_s=0.01,
                 rs=None, error=None, api=api)  # fmt: skip
    from gateway.observability.overview import totals

    by_api = {r["api"]: r for r in totals(m)["by_api"]}
    assert by_api["chat"] == {"api": "chat", "requests": 1}
    assert by_api["messages"] == {"api": "messages", "requests": 2, "errors": 1}


def test_the_prompt_cache_hit_ratio_per_provider() -> None:
    clock = Clock()
    stats = Stats(clock)
    for i in range(4):
        cached = 90 if i < 2 else 0
        stats.add(
            sample(provider="zai" if i < 2 else "together", tokens_in=100, tokens_cached=cached)
        )
    clock.now += 1
    m = stats.snapshot()["summary"]
    assert m["tokens_cached"] == 180
    assert m["cache_hit_ratio"] == 0.45
    assert m["cache_by_provider"] == {
        "together": {"prompt": 200, "cached": 0, "ratio": 0.0},
        "zai": {"prompt": 200, "cached": 180, "ratio": 0.9},
    }

"""How ``serve --workers N`` adds up two workers' metrics and dashboard stats."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families

from gateway.observability.fleet import merge_families, render_families
from gateway.observability.metrics import Metrics
from gateway.observability.stats import Stats


def two_workers() -> tuple[Metrics, Metrics]:
    a, b = Metrics(), Metrics()
    a.requests.labels("v", "p", "200", "false", "chat").inc(3)
    b.requests.labels("v", "p", "200", "false", "chat").inc(4)
    b.requests.labels("v", "p", "500", "false", "chat").inc(1)
    a.duration.labels("v", "false").observe(0.02)
    b.duration.labels("v", "false").observe(3.0)
    a.in_flight.set(2)
    b.in_flight.set(5)
    a.state_degraded.set(0)
    b.state_degraded.set(1)
    a.config_generation.set(3)
    b.config_generation.set(2)
    a.state_up.labels("redis").set(1)
    b.state_up.labels("redis").set(0)  # stale in b: the serving worker (a) just read it
    return a, b


def values(text: bytes) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for fam in text_string_to_metric_families(text.decode()):
        for s in fam.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def test_counters_and_histograms_add_gauges_follow_their_mode() -> None:
    a, b = two_workers()
    merged = values(
        render_families(merge_families([list(a.registry.collect()), list(b.registry.collect())]))
    )
    ok = ("glm_gateway_requests_total", (("api", "chat"), ("provider", "p"), ("status", "200"),
          ("stream", "false"), ("variant", "v")))  # fmt: skip
    assert merged[ok] == 7
    hist = "glm_gateway_request_duration_seconds"
    labels = (("stream", "false"), ("variant", "v"))
    assert merged[(hist + "_count", labels)] == 2
    assert merged[(hist + "_bucket", (("le", "0.025"), *labels))] == 1
    assert merged[(hist + "_bucket", (("le", "+Inf"), *labels))] == 2
    assert merged[("glm_gateway_workers", ())] == 2
    assert merged[("glm_gateway_in_flight_requests", ())] == 7
    assert merged[("glm_gateway_state_degraded", ())] == 1
    assert merged[("glm_gateway_config_generation", ())] == 2
    assert merged[("glm_gateway_state_up", (("backend", "redis"),))] == 1
    assert merged[("glm_gateway_build_info", (("version", a_version()),))] == 1


def a_version() -> str:
    from gateway import __version__

    return __version__


def test_stats_of_the_same_second_add_and_the_newest_second_wins() -> None:
    now = [1000.5]
    a, b = Stats(clock=lambda: now[0]), Stats(clock=lambda: now[0])
    a.count(200, "v", "p", 0.1, 0.001, False, tokens_in=10)
    b.count(500, "v", "q", 0.2, 0.001, True, tokens_in=5)
    b.count(200, "w", "q", 0.2, 0.001, False)
    now[0] = 1001.5
    merged = Stats.merged([a.raw(), b.raw()])
    slot = next(s for s in merged._slots if s.sec == 1000)
    assert (slot.requests, slot.errors, slot.fallbacks, slot.tokens_in) == (3, 1, 1, 15)
    assert slot.variants == {"v": 2, "w": 1} and slot.providers == {"p": 1, "q": 2}
    ring = len(merged._slots)
    now[0] = 1000.5 + ring  # the same ring position, one lap later
    b.count(200, "v", "p", 0.1, 0.001, False)
    merged = Stats.merged([a.raw(), b.raw()])
    slot = merged._slots[1000 % ring]
    assert slot.sec == 1000 + ring and slot.requests == 1

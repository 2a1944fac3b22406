"""``Metrics.observe_state`` keeps each (backend, op) series once it has made it: every round
trip still lands in its own series, and errors are counted apart."""

from __future__ import annotations

from gateway.observability.metrics import Metrics

NAME = "glm_gateway_state_op_duration_seconds"


def _count(m: Metrics, backend: str, op: str) -> float | None:
    return m.registry.get_sample_value(f"{NAME}_count", {"backend": backend, "op": op})


def test_each_round_trip_lands_in_its_own_series() -> None:
    m = Metrics()
    for _ in range(3):
        m.observe_state("redis", "before", 0.001)
    m.observe_state("redis", "after", 0.002, ok=False)
    m.observe_state("memory", "before", 0.0001)
    assert _count(m, "redis", "before") == 3
    assert _count(m, "redis", "after") == 1
    assert _count(m, "memory", "before") == 1
    total = m.registry.get_sample_value(f"{NAME}_sum", {"backend": "redis", "op": "before"})
    assert total is not None and abs(total - 0.003) < 1e-12
    errors = m.registry.get_sample_value(
        "glm_gateway_state_errors_total", {"backend": "redis", "op": "after"}
    )
    assert errors == 1

"""``Affinity.decide``: a provider's own TTL (read once, at construction) and the count of a
pin that held, written without the counting helper's call."""

from __future__ import annotations

from gateway.catalogue.loader import default_config_dir, load_config
from gateway.catalogue.schema import AffinityConfig
from gateway.observability.metrics import Metrics
from gateway.routing.affinity import Affinity, Pinned
from gateway.state.base import Pin
from gateway.state.memory import MemoryState

CONFIG = load_config(default_config_dir(), demo_simulator_url="http://127.0.0.1:9")
T0 = 1_900_000_000.0
TARGET = CONFIG.catalogue.targets[0]
OTHER = next(t for t in CONFIG.catalogue.targets if t.provider != TARGET.provider)


def affinity(metrics: Metrics | None = None) -> Affinity:
    config = AffinityConfig(ttl_s=300, provider_ttl_s={TARGET.provider: 600})
    state = MemoryState(CONFIG.gateway.breaker)
    return Affinity(config, state, metrics, wall=lambda: T0)


def outcomes(metrics: Metrics, outcome: str) -> float | None:
    return metrics.registry.get_sample_value(
        "glm_gateway_affinity_requests_total", {"outcome": outcome}
    )


def test_a_new_pin_lives_its_providers_ttl() -> None:
    a = affinity()
    assert a.decide(Pinned("s", None), TARGET, []) == ("s", TARGET.id, 600, T0)
    assert a.decide(Pinned("s", None), OTHER, []) == ("s", OTHER.id, 300, T0)


def test_a_held_pin_is_refreshed_past_half_its_providers_ttl() -> None:
    a = affinity()
    assert a.decide(Pinned("s", Pin(TARGET.id, T0 + 299)), TARGET, []) == (
        "s",
        TARGET.id,
        600,
        T0,
    )
    assert a.decide(Pinned("s", Pin(TARGET.id, T0 + 301)), TARGET, []) is None
    assert a.decide(Pinned("s", Pin(OTHER.id, T0 + 149)), OTHER, []) is not None
    assert a.decide(Pinned("s", Pin(OTHER.id, T0 + 151)), OTHER, []) is None


def test_a_held_pin_is_counted_once_per_answer() -> None:
    metrics = Metrics()
    a = affinity(metrics)
    for _ in range(3):
        a.decide(Pinned("s", Pin(TARGET.id, T0 + 500)), TARGET, [])
    a.decide(Pinned("s", None), TARGET, [])
    assert outcomes(metrics, "pinned") == 3
    assert outcomes(metrics, "new") == 1

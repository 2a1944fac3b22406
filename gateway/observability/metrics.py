"""Prometheus metrics, in a registry owned by the app (no module-level state)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter(
            "glm_gateway_requests",
            "Chat completion requests by the variant and provider that answered, and status.",
            ["variant", "provider", "status", "stream"],
            registry=r,
        )
        self.attempts = Counter(
            "glm_gateway_upstream_attempts",
            "Upstream attempts by outcome (ok or failure class).",
            ["variant", "provider", "outcome"],
            registry=r,
        )
        self.fallbacks = Counter(
            "glm_gateway_fallbacks",
            "Requests answered by another candidate than the first, by first failure class.",
            ["reason"],
            registry=r,
        )
        self.duration = Histogram(
            "glm_gateway_request_duration_seconds",
            "Whole request duration as the client sees it (streams: until the last byte).",
            ["stream"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.in_flight = Gauge(
            "glm_gateway_in_flight_requests", "Requests being handled now.", registry=r
        )
        self.tokens = Counter(
            "glm_gateway_tokens",
            "Tokens by direction, from upstream usage.",
            ["variant", "provider", "direction"],
            registry=r,
        )

    def render(self) -> bytes:
        return generate_latest(self.registry)

"""One record per request: metrics updated and one JSON log line (no prompt text)."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import orjson

from gateway.observability.metrics import Metrics

if TYPE_CHECKING:
    from gateway.routing.router import RouteState

LOGGER = "glm_gateway.access"


class AccessLog:
    def __init__(self, metrics: Metrics) -> None:
        self._m = metrics
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
    ) -> None:
        target = rs.target if rs else None
        variant = target.variant.id if target else "none"
        provider = target.provider if target else "none"
        s = "true" if stream else "false"
        self._m.requests.labels(variant, provider, str(status), s).inc()
        self._m.duration.labels(s).observe(duration_s)
        attempts = rs.attempts if rs else []
        for a in attempts:
            outcome = a.failure.cls.value if a.failure else "ok"
            self._m.attempts.labels(a.target.variant.id, a.target.provider, outcome).inc()
        first_failure = next((a.failure for a in attempts if a.failure), None)
        if first_failure is not None and target is not None:
            self._m.fallbacks.labels(first_failure.cls.value).inc()
        usage = rs.usage if rs else None
        if usage and target is not None:
            for direction, key in (("in", "prompt_tokens"), ("out", "completion_tokens")):
                n = usage.get(key)
                if isinstance(n, int):
                    self._m.tokens.labels(variant, provider, direction).inc(n)
        if self._log.isEnabledFor(logging.INFO):
            self._log.info(
                orjson.dumps(
                    {
                        "event": "request",
                        "request_id": request_id,
                        "key_id": key_id,
                        "status": status,
                        "stream": stream,
                        "variant": variant,
                        "provider": provider,
                        "attempts": [a.describe() for a in attempts],
                        "adaptations": rs.adaptations if rs else [],
                        "usage": usage,
                        "duration_ms": round(duration_s * 1000, 3),
                        "error": error,
                    }
                ).decode()
            )

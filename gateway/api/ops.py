"""Health, readiness and metrics payloads."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Sequence
from typing import Any, TypeVar

from gateway.catalogue.target import Target
from gateway.catalogue.tokens import exact_counting_problem
from gateway.observability.metrics import Metrics
from gateway.observability.overview import overview
from gateway.observability.stats import Stats
from gateway.services import Services
from gateway.state.base import StateStore
from gateway.state.redis_target import redis_mode

T = TypeVar("T")


async def _quietly(call: Awaitable[T]) -> T | None:
    try:
        return await call
    except Exception:
        return None


async def refresh_state_metrics(
    metrics: Metrics, state: StateStore, backend: str, targets: Sequence[Target]
) -> None:
    """Scrape time: read the backend's reachability and circuits into the gauges. Never
    raises (a failed read counts as ``glm_gateway_state_errors_total{op="scrape"}``)."""
    up = await _quietly(state.ping())
    health = await _quietly(state.health(time.time()))
    circuits = None if health is None else {h.target_id: h.state for h in health}
    metrics.set_state(backend, up, circuits, targets)


async def dashboard_data(
    stats: Stats,
    metrics: Metrics,
    state: StateStore,
    backend: str,
    targets: Sequence[Target],
    records: Any = None,
) -> dict[str, Any]:
    """The dashboard's JSON: the rolling stats and totals, and the circuits as state has them
    (and PostgreSQL records' status, when configured: ``state.records``)."""
    if metrics.fleet is not None:  # serve --workers N: every worker's figures
        metrics, stats = await metrics.fleet.combined(metrics, stats)
    health = await _quietly(state.health(time.time()))
    about: dict[str, Any] = {
        "backend": backend,
        "reachable": health is not None,
        "degraded": bool(getattr(state, "degraded", False)),
    }
    if records is not None:
        about["records"] = records.status()
    return overview(stats, metrics, health, about, targets)


async def key_bad_targets(s: Services) -> frozenset[str]:
    """Deployments whose circuit is open because the host refused the key or the account
    (the decision table's ``mark_key_bad``: auth class, 1000-1004, 1113, 401/402/403...)."""
    health = await s.state.health(time.time())
    return frozenset(h.target_id for h in health if h.state == "open" and h.last_failure == "auth")


def _records_status(s: Services) -> dict[str, Any]:
    """``records``: PostgreSQL's status (keys, ledger queue) when a database is configured."""
    records: Any = s.extras.get("records")
    return {} if records is None else {"records": records.status()}


async def readiness(s: Services) -> tuple[int, dict[str, Any]]:
    """200 while config is loaded; ``degraded`` when the state backend (or PostgreSQL, when
    configured) does not answer; 503
    ``draining`` from the first stop signal on (the process still serves for the grace)."""
    reachable = await s.state.ping()
    backend = s.config.gateway.state.backend
    health = await s.state.health(time.time())
    draining = s.lifecycle.draining
    records_ok = s.extras.get("records") is None or _records_status(s)["records"]["reachable"]
    ok = reachable and records_ok
    status = "draining" if draining else "ready" if ok else "degraded"
    return 503 if draining else 200, {
        "status": status,
        "config": {
            "dir": s.config.source_dir,
            "variants": len(s.config.catalogue.variants),
            "deployments": len(s.config.catalogue.targets),
            "skipped_deployments": len(s.config.catalogue.skipped),
            "generation": s.generation.number,
            "loaded_at": s.generation.loaded_at,
        },
        "state": {
            "backend": backend,
            "redis_mode": redis_mode(s.config.gateway.state),
            "reachable": reachable,
            "degraded": s.state.degraded,
        },
        **_records_status(s),
        "prompt_tokens": "cl100k" if exact_counting_problem() is None else "byte_bound",
        "open_circuits": [h.target_id for h in health if h.state == "open"],
        "key_bad": [h.target_id for h in health if h.state == "open" and h.last_failure == "auth"],
        "demo": s.demo,
    }

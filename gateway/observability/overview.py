"""The dashboard's JSON: rolling stats, circuit states and since-start totals, built on read.

Served by ``GET /dashboard/data`` and read by the page and ``glm-gateway top``. Everything is
computed here when asked; the request path only feeds :class:`~gateway.observability.stats.Stats`
and the Prometheus counters.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from prometheus_client import Counter, Gauge

from gateway import __version__
from gateway.catalogue.target import Target
from gateway.observability.metrics import Metrics
from gateway.observability.records import CircuitRecord
from gateway.observability.stats import Stats

_STATE_ORDER = {"open": 0, "half_open": 1, "closed": 2}


def overview(
    stats: Stats,
    metrics: Metrics,
    health: Iterable[CircuitRecord] | None,
    state: dict[str, Any],
    targets: Sequence[Target],
) -> dict[str, Any]:
    """Everything the dashboard shows, as one JSON-ready dict. ``health`` is what the state
    backend reported (``None`` if it could not be read); ``state`` describes the backend."""
    data = dict(stats.snapshot())
    data.update(
        version=__version__,
        in_flight=int(sum(v for _, v in _samples(metrics.in_flight))),
        state=state,
        circuits=circuits(health or (), targets),
        totals=totals(metrics),
        plan_quota=plan_quota(metrics),
    )
    return data


def plan_quota(metrics: Metrics) -> list[dict[str, Any]]:
    """What each plan surface's host last said is left, per window (empty: none read)."""
    resets = {
        (lb["provider"], lb["surface"], lb["window"]): v
        for lb, v in _samples(metrics.plan_quota_reset)
    }
    rows = [
        {
            "provider": lb["provider"],
            "surface": lb["surface"],
            "window": lb["window"],
            "remaining": round(v, 4),
            "resets_at": resets.get((lb["provider"], lb["surface"], lb["window"])),
        }
        for lb, v in _samples(metrics.plan_quota)
    ]
    rows.sort(key=lambda r: (r["provider"], r["surface"], r["window"]))
    return rows


def circuits(health: Iterable[CircuitRecord], targets: Sequence[Target]) -> list[dict[str, Any]]:
    """One row per configured deployment: open first, then half-open, then busiest closed."""
    by_id = {h.target_id: h for h in health}
    rows: list[dict[str, Any]] = []
    for t in targets:
        h = by_id.get(t.id)
        rows.append(
            {
                "deployment": t.id,
                "variant": t.variant.id,
                "provider": t.provider,
                "state": h.state if h else "closed",
                "consecutive_failures": h.consecutive_failures if h else 0,
                "open_for_s": round(h.open_for_s, 1) if h else 0.0,
                "latency_ms": round(h.latency_s * 1000, 1) if h and h.latency_s else None,
                "requests": h.requests if h else 0,
                "failures": h.failures if h else 0,
                "last_failure": h.last_failure if h else None,
                "error_rate": h.error_rate if h else None,
            }
        )
    rows.sort(key=lambda r: (_STATE_ORDER.get(r["state"], 3), -r["requests"], r["deployment"]))
    return rows


def totals(metrics: Metrics) -> dict[str, Any]:
    """Since-start requests, tokens and cost, read back from the Prometheus counters."""
    out: dict[str, Any] = {"requests": 0, "errors": 0, "tokens_in": 0, "tokens_out": 0}
    out["tokens_cached"] = 0
    out["cost_usd"] = 0.0
    groups: dict[str, dict[str, dict[str, float]]] = {
        "variant": {}, "provider": {}, "key": {}, "api": {}
    }  # fmt: skip
    for labels, value in _samples(metrics.requests):
        out["requests"] += int(value)
        failed = labels["status"].startswith("5")
        if failed:
            out["errors"] += int(value)
            _add(groups["api"], labels["api"], "errors", value)
        for dim in ("variant", "provider", "api"):
            _add(groups[dim], labels[dim], "requests", value)
    for labels, value in _samples(metrics.tokens):
        field = "tokens_" + labels["direction"]
        out[field] += int(value)
        for dim in ("variant", "provider", "key"):
            _add(groups[dim], labels[dim], field, value)
    for labels, value in _samples(metrics.cost):
        out["cost_usd"] += value
        for dim in ("variant", "provider", "key"):
            _add(groups[dim], labels[dim], "cost_usd", value)
    out["cost_usd"] = round(out["cost_usd"], 6)
    for dim, rows in groups.items():
        out["by_" + dim] = sorted(
            ({dim: name, **_rounded(vals)} for name, vals in rows.items()),
            key=lambda r: (-r.get("requests", 0), -r.get("cost_usd", 0.0), str(r[dim])),
        )
    return out


def _samples(metric: Counter | Gauge) -> Iterable[tuple[dict[str, str], float]]:
    """A counter's ``_total`` samples, or a gauge's samples, read from that metric only."""
    for family in metric.collect():
        for s in family.samples:
            if family.type == "gauge" or s.name.endswith("_total"):
                yield s.labels, s.value


def _add(rows: dict[str, dict[str, float]], name: str, field: str, value: float) -> None:
    row = rows.setdefault(name, {})
    row[field] = row.get(field, 0.0) + value


def _rounded(vals: dict[str, float]) -> dict[str, float | int]:
    return {k: (round(v, 6) if k == "cost_usd" else int(v)) for k, v in vals.items()}

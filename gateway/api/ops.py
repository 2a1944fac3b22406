"""Health, readiness and metrics payloads."""

from __future__ import annotations

import time
from typing import Any

from gateway.services import Services


async def key_bad_targets(s: Services) -> frozenset[str]:
    """Deployments whose circuit is open because the host refused the key or the account
    (the decision table's ``mark_key_bad``: auth class, 1000-1004, 1113, 401/402/403...)."""
    health = await s.state.health(time.time())
    return frozenset(h.target_id for h in health if h.state == "open" and h.last_failure == "auth")


async def readiness(s: Services) -> tuple[int, dict[str, Any]]:
    """200 while config is loaded; ``degraded`` when the state backend does not answer; 503
    ``draining`` from the first stop signal on (the process still serves for the grace)."""
    reachable = await s.state.ping()
    backend = s.config.gateway.state.backend
    health = await s.state.health(time.time())
    draining = s.lifecycle.draining
    status = "draining" if draining else "ready" if reachable else "degraded"
    return 503 if draining else 200, {
        "status": status,
        "config": {
            "dir": s.config.source_dir,
            "variants": len(s.config.catalogue.variants),
            "deployments": len(s.config.catalogue.targets),
            "skipped_deployments": len(s.config.catalogue.skipped),
        },
        "state": {"backend": backend, "reachable": reachable, "degraded": s.state.degraded},
        "open_circuits": [h.target_id for h in health if h.state == "open"],
        "key_bad": [h.target_id for h in health if h.state == "open" and h.last_failure == "auth"],
        "demo": s.demo,
    }

"""Health, readiness and metrics payloads."""

from __future__ import annotations

import time
from typing import Any

from gateway.services import Services


async def readiness(s: Services) -> tuple[int, dict[str, Any]]:
    """200 while config is loaded; ``degraded`` when the state backend does not answer."""
    reachable = await s.state.ping()
    backend = s.config.gateway.state.backend
    health = await s.state.health(time.time())
    return 200, {
        "status": "ready" if reachable else "degraded",
        "config": {
            "dir": s.config.source_dir,
            "variants": len(s.config.catalogue.variants),
            "deployments": len(s.config.catalogue.targets),
            "skipped_deployments": len(s.config.catalogue.skipped),
        },
        "state": {"backend": backend, "reachable": reachable},
        "open_circuits": [h.target_id for h in health if h.state == "open"],
        "demo": s.demo,
    }

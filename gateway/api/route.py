"""``POST /v1/route``: explain routing for a chat body without calling any upstream."""

from __future__ import annotations

from typing import Any

from gateway.catalogue.needs import Needs
from gateway.routing.planner import Plan


def explain(needs: Needs, plan: Plan, model: str) -> dict[str, Any]:
    """Declared and inferred needs, ranked candidates, and every rejection with its reason."""
    return {
        "object": "route.explanation",
        "model": model,
        "needs": {
            "capabilities": needs.capabilities,
            "builtin_tools": sorted(needs.builtin_tools),
            "context": {
                "need": needs.context_need(),
                "declared_min": needs.min_context,
                "prompt_tokens": needs.prompt.best,
                "prompt_tokens_method": needs.prompt.method,
                "output_tokens": needs.output_tokens,
                "output_tokens_source": "request" if needs.output_declared else "default_reserve",
            },
            "params": [f"{op}{b:g}B" for op, b in needs.params],
            "policy": needs.policy,
            "fallback": needs.fallback,
            "providers": list(needs.providers) if needs.providers else None,
            "timeout_s": needs.timeout,
            "pinned": needs.pinned,
            "alias": needs.alias,
        },
        "candidates": [
            {
                "rank": i + 1,
                "variant": c.target.variant.id,
                "provider": c.target.provider,
                "deployment": c.target.id,
                "upstream_model": c.target.model,
                "score": None if c.score == float("inf") else c.score,
                "score_basis": c.basis,
            }
            for i, c in enumerate(plan.candidates)
        ],
        "rejected": [
            {"variant": r.variant, "provider": r.provider, "reasons": list(r.reasons)}
            for r in plan.rejected
        ],
        "unmet": plan.unmet,
    }

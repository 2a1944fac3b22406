"""``POST /v1/route``: explain routing for a chat body without calling any upstream."""

from __future__ import annotations

from typing import Any

from gateway.catalogue.needs import Needs
from gateway.routing.planner import Plan

KEY_BAD_REASON = "key marked bad: the host refused this deployment's key or account (auth/balance)"


def explain(
    needs: Needs, plan: Plan, model: str, key_bad: frozenset[str] = frozenset()
) -> dict[str, Any]:
    """Declared and inferred needs, ranked candidates, and every rejection with its reason.

    ``key_bad``: deployment ids whose key the host refused (their rejection says so).
    """
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
            "tool_choice_forcing": needs.forced_tool_choice,
        },
        "candidates": [
            {
                "rank": i + 1,
                "variant": c.target.variant.id,
                "provider": c.target.provider,
                "deployment": c.target.id,
                "surface": c.target.surface,
                "upstream_model": c.target.model,
                "score": None if c.score == float("inf") else c.score,
                "score_basis": c.basis,
            }
            for i, c in enumerate(plan.candidates)
        ],
        "rejected": _rejected(plan, key_bad),
        "unmet": plan.unmet,
    }


def _rejected(plan: Plan, key_bad: frozenset[str]) -> list[dict[str, Any]]:
    return [
        {
            "variant": r.variant,
            "provider": r.provider,
            "reasons": [*r.reasons, *_key_bad(r.provider, r.variant, key_bad)],
        }
        for r in plan.rejected
    ]


def _key_bad(provider: str | None, variant: str, key_bad: frozenset[str]) -> tuple[str, ...]:
    """The key-bad reason when ``provider/variant`` (or its ``#n`` sibling) is key-bad."""
    want = f"{provider}/{variant}"
    if provider is None or not any(t.split("#", 1)[0] == want for t in key_bad):
        return ()
    return (KEY_BAD_REASON,)

"""``POST /v1/route``: explain routing for a chat body without calling any upstream."""

from __future__ import annotations

from typing import Any

from gateway.catalogue.needs import Needs
from gateway.routing.planner import Plan

KEY_BAD_REASON = "key marked bad: the host refused this deployment's key or account (auth/balance)"


def explain(
    needs: Needs, plan: Plan, model: str, key_bad: frozenset[str] = frozenset()
) -> dict[str, Any]:
    """Declared and inferred needs, ranked candidates, the spread groups among them, and every
    rejection with its reason.

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
        "candidates": _candidates(plan),
        "spread": _spread(plan),
        "rejected": _rejected(plan, key_bad),
        "unmet": plan.unmet,
    }


def _candidates(plan: Plan) -> list[dict[str, Any]]:
    group = {tid: g for g, grp in enumerate(plan.spread) for tid in grp.ids}
    return [
        {
            "rank": i + 1,
            "variant": c.target.variant.id,
            "provider": c.target.provider,
            "deployment": c.target.id,
            "surface": c.target.surface,
            "upstream_model": c.target.model,
            "score": None if c.score == float("inf") else c.score,
            "score_basis": c.basis,
            "spread_group": group.get(c.target.id),
        }
        for i, c in enumerate(plan.candidates)
    ]


def _spread(plan: Plan) -> list[dict[str, Any]]:
    """Each spread group: its members in the order this request would try them, each one's
    effective weight, its share of the group when none is busier, and its requests in flight."""
    return [
        {
            "group": g,
            "members": [
                {"deployment": tid, "weight": w, "share": round(share, 4), "in_flight": n}
                for tid, w, share, n in zip(
                    grp.ids, grp.weights, grp.shares, grp.in_flight, strict=True
                )
            ],
        }
        for g, grp in enumerate(plan.spread)
    ]


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

"""The planner: needs + catalogue -> an ordered list of candidates, and why the rest were refused.

Pure: no I/O, no clock. Three steps, each explainable:

1. variant filter — every declared and inferred need (capabilities, context, parameter size,
   pin/alias restriction);
2. surface filter — each deployment of a surviving variant: the provider's capability
   overrides, its own window, the host-side tools it runs, ``X-GLM-Providers``, open circuits;
3. ranking by policy (after the pin, the X-GLM-Providers order and, for a forced
   ``tool_choice``, hosts that can force a tool call), then trimming to the fallback mode.

Fallback never widens eligibility: every candidate satisfies every need.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field

from gateway.catalogue.catalogue import Catalogue, Target
from gateway.catalogue.needs import Needs
from gateway.catalogue.schema import RoutingConfig, Variant
from gateway.providers.dialects import can_force_tool_choice

_OPS = {
    "<=": lambda a, b: a <= b,
    ">=": lambda a, b: a >= b,
    "<": lambda a, b: a < b,
    ">": lambda a, b: a > b,
    "=": lambda a, b: a == b,
}


@dataclass(frozen=True, slots=True)
class Candidate:
    target: Target
    score: float
    """The policy's figure for this candidate (cost in USD, latency in s, quality, ...)."""
    basis: str
    """What ``score`` measures."""


@dataclass(frozen=True, slots=True)
class Rejection:
    variant: str
    provider: str | None
    """None when the variant itself fails a need; a provider when only that surface does."""
    reasons: tuple[str, ...]


@dataclass(slots=True)
class Plan:
    candidates: list[Candidate]
    rejected: list[Rejection] = field(default_factory=list)
    unmet: list[str] = field(default_factory=list)
    """When there is no candidate: the needs no variant/deployment meets."""


# Capabilities that are only real where the host runs the tool: a variant that "has" code
# execution is useless on a host that runs no code_interpreter.
_HOST_TOOL_CAPABILITIES = {
    "code_execution": frozenset({"code_interpreter"}),
    "tool_use": frozenset({"web_search", "retrieval", "mcp"}),
}


def _variant_reasons(
    v: Variant, needs: Needs, routing: RoutingConfig, added: frozenset[str]
) -> list[str]:
    """Why the variant itself cannot serve; ``added`` = capabilities some deployment adds."""
    reasons: list[str] = []
    for cap in needs.capabilities:
        if cap == "vision":
            if not v.accepts_images and "vision" not in added:
                reasons.append("no vision (image input)")
        elif cap not in v.capabilities and cap not in added:
            reasons.append(f"no {cap}")
    window = v.context if v.context is not None else routing.unknown_context_floor
    if not needs.fits(window):
        what = f"context {v.context}" if v.context else f"context unknown (floor {window})"
        reasons.append(f"{what} < need {needs.context_need()}")
    for op, bound in needs.params:
        if v.params_total_b is None:
            reasons.append(f"parameter size unknown (need {op}{bound:g}B)")
        elif not _OPS[op](v.params_total_b, bound):
            reasons.append(f"{v.params_total_b:g}B params fails {op}{bound:g}B")
    return reasons


def _surface_reasons(
    t: Target,
    needs: Needs,
    routing: RoutingConfig,
    open_circuits: Mapping[str, float],
    saturated: Mapping[str, str],
) -> list[str]:
    reasons: list[str] = []
    for cap in needs.capabilities:
        if cap == "vision":
            if not t.accepts_images:
                reasons.append("this provider's surface has no image input")
        elif cap not in t.capabilities:
            reasons.append(f"this provider's surface has no {cap}")
        elif cap in _HOST_TOOL_CAPABILITIES:
            family = _HOST_TOOL_CAPABILITIES[cap]
            # A named tool is checked below; a bare declaration needs some host tool of the kind.
            if not (family & needs.builtin_tools) and not (family & t.builtin_tools):
                tools = "/".join(sorted(family))
                reasons.append(f"this host runs no {tools} tool (needed for {cap})")
    missing = needs.builtin_tools - t.builtin_tools
    if missing:
        reasons.append(f"does not run tool {', '.join(sorted(missing))}")
    if t.context is not None and t.context != t.variant.context and not needs.fits(t.context):
        reasons.append(f"provider window {t.context} < need {needs.context_need()}")
    if needs.providers is not None and t.provider not in needs.providers:
        reasons.append("provider not in X-GLM-Providers")
    if t.id in open_circuits:
        reasons.append(f"circuit open for {open_circuits[t.id]:.0f}s more")
    if t.id in saturated:
        reasons.append(saturated[t.id])
    return reasons


def _score(
    t: Target, needs: Needs, policy: str, latency: Mapping[str, float]
) -> tuple[tuple[float, ...], float, str]:
    """Sort key (lower first), reported score, and what the score measures."""
    v = t.variant
    if t.price is not None:
        cost = (needs.prompt.best * t.price.input + needs.output_tokens * t.price.output) / 1e6
    else:
        cost = math.inf
    active = v.params_active_b or v.params_total_b or math.inf
    newest = -int(v.released.replace("-", ""))
    if policy == "cost":
        return (cost, active, t.priority, -t.weight, -v.quality), cost, "estimated cost USD"
    if policy == "quality":
        return (-v.quality, cost, t.priority, -t.weight), float(v.quality), "quality rank"
    if policy == "newest":
        return (newest, -v.quality, cost, t.priority), float(-newest), "release YYYYMM"
    # latency: observed mean seconds; unmeasured deployments get a prior from active size.
    lat = latency.get(t.id)
    est = lat if lat is not None else 0.2 + 0.01 * (active if active != math.inf else 400)
    return (est, cost, t.priority, -t.weight), est, "latency s (observed or prior)"


def plan(
    needs: Needs,
    catalogue: Catalogue,
    routing: RoutingConfig,
    *,
    open_circuits: Mapping[str, float] | None = None,
    latency: Mapping[str, float] | None = None,
    saturated: Mapping[str, str] | None = None,
) -> Plan:
    """Order every deployment that can serve the request; explain every one that cannot."""
    open_circuits = open_circuits or {}
    latency = latency or {}
    rejected: list[Rejection] = []
    eligible: list[tuple[tuple[float, ...], Candidate]] = []
    for vid, variant in catalogue.variants.items():
        if needs.allowed_variants is not None and vid not in needs.allowed_variants:
            why = f"not in alias {needs.alias!r}" if needs.alias else "not allowed for this key"
            rejected.append(Rejection(vid, None, (why,)))
            continue
        if needs.pinned and vid != needs.pinned and needs.fallback != "variants":
            rejected.append(Rejection(vid, None, (f"model pinned to {needs.pinned}",)))
            continue
        targets = catalogue.targets_for(vid)
        added = frozenset().union(*(t.capabilities - variant.capabilities for t in targets))
        reasons = _variant_reasons(variant, needs, routing, added)
        if not targets:
            reasons.append("no deployment configured (or its key is not set)")
        if reasons:
            rejected.append(Rejection(vid, None, tuple(reasons)))
            continue
        for t in targets:
            sreasons = _surface_reasons(t, needs, routing, open_circuits, saturated or {})
            if sreasons:
                rejected.append(Rejection(vid, t.provider, tuple(sreasons)))
                continue
            key, score, basis = _score(t, needs, needs.policy, latency)
            key = _order_prefix(t, needs) + key
            eligible.append((key, Candidate(t, score, basis)))
    eligible.sort(key=lambda kc: kc[0])
    candidates = _trim([c for _, c in eligible], needs)
    result = Plan(candidates, rejected)
    if not candidates:
        result.unmet = _unmet(needs, rejected)
    return result


def _order_prefix(t: Target, needs: Needs) -> tuple[float, ...]:
    """The pinned variant first; with X-GLM-Providers, that provider order next; then, when the
    request forces a tool call, hosts that can force one (policy: prefer, else degrade)."""
    pin = 0.0 if needs.pinned is None or t.variant.id == needs.pinned else 1.0
    force = 0.0 if not needs.forced_tool_choice or can_force_tool_choice(t) else 1.0
    if not needs.providers:
        return (pin, force)
    return (pin, float(needs.providers.index(t.provider)), force)


def _trim(candidates: list[Candidate], needs: Needs) -> list[Candidate]:
    if not candidates:
        return candidates
    if needs.fallback == "none":
        return candidates[:1]
    if needs.fallback == "providers":
        first = candidates[0].target.variant.id
        return [c for c in candidates if c.target.variant.id == first]
    return candidates


def _unmet(needs: Needs, rejected: list[Rejection]) -> list[str]:
    """The needs that together no deployment meets, for the no_capable_variant error."""
    unmet = [f"{cap} ({src})" for cap, src in needs.capabilities.items()]
    unmet.append(f"context >= {needs.context_need()} tokens")
    unmet += [f"params {op}{b:g}B" for op, b in needs.params]
    unmet += [f"tool {t}" for t in sorted(needs.builtin_tools)]
    if needs.providers:
        unmet.append(f"providers {', '.join(needs.providers)}")
    if needs.pinned:
        unmet.append(f"model {needs.pinned}")
    return unmet

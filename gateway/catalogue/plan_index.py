"""The catalogue pre-digested for the planner: built once per catalogue, read-only afterwards.

Deployments are numbered by position: variants in catalogue order, each variant's deployments
in ``by_variant`` order (the planner's tie-break order). A set of deployments is an int bitmask
over positions, so filtering a request is a handful of ANDs; the parts of each policy's sort
key that do not depend on the request are ranked once here.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from operator import itemgetter
from typing import Any, Final

from gateway.catalogue.schema import CAPABILITIES, Variant
from gateway.catalogue.target import Target

HOST_TOOL_FAMILIES: Final[Mapping[str, frozenset[str]]] = {
    "code_execution": frozenset({"code_interpreter"}),
    "tool_use": frozenset({"web_search", "retrieval", "mcp"}),
}
"""Capabilities only real where the host runs the tool: a variant that "has" code execution is
useless on a host that runs no code_interpreter."""


@dataclass(frozen=True, slots=True)
class VariantFacts:
    id: str
    variant: Variant
    added: frozenset[str]
    """Capabilities some deployment adds to the variant."""
    first: int
    stop: int
    """Its deployments are at positions ``first`` to ``stop - 1``."""
    bit: int
    """The variant's bit in a mask of variants."""
    positions: int
    """Its deployments, as a mask."""


@dataclass(frozen=True, slots=True)
class PlanIndex:
    """Static facts for the planner. Per-deployment tuples are indexed by position."""

    variants: tuple[VariantFacts, ...]
    by_id: Mapping[str, VariantFacts]
    targets: tuple[Target, ...]
    ids: tuple[str, ...]
    variant_ids: tuple[str, ...]
    every_variant: int
    everything: int
    """Every deployment, as a mask."""
    windows: tuple[tuple[int, int, int], ...]
    """(a known variant window; the variants with it; their deployments), smallest first."""
    unknown_window: tuple[int, int]
    """(the variants whose window is unknown; their deployments)."""
    own_windows: tuple[tuple[int, int], ...]
    """(a window some deployment has of its own, unlike its variant; those deployments),
    smallest first."""
    byte_positions: tuple[tuple[tuple[int, ...], ...], ...]
    """``byte_positions[k][b]``: the positions of the bits set in byte ``b`` at byte ``k`` of
    a mask (a mask to positions, a byte at a time)."""
    variant_offers: Mapping[str, int]
    """Capability -> deployments whose variant offers it (or a deployment of it adds it);
    ``vision`` means image input."""
    surface_offers: Mapping[str, int]
    """Capability -> deployments whose own surface offers it; ``vision`` means image input."""
    host_runs: Mapping[str, int]
    """Host-tool capability -> deployments whose host runs some tool of its family."""
    runs_tool: Mapping[str, int]
    """Built-in tool -> deployments whose host runs it."""
    of_provider: Mapping[str, int]
    of_surface: Mapping[str, int]
    """Surface name (``api``, ``coding`` ...) -> deployments on a surface of that name."""
    by_default: int
    """Deployments on a surface in their provider's default ``surface_order``."""
    multi_surface: bool
    """Some provider has more than one surface (else surfaces cost the planner nothing)."""
    surface_group: tuple[int, ...]
    """Per position: one number shared by the same deployment on its several surfaces, -1
    for a deployment on one surface only."""
    surface_rank: tuple[int, ...]
    """Per position: its surface's place in the provider's ``surface_order``."""
    surface_names: tuple[str, ...]
    position_bit: Mapping[str, int]
    """Deployment id -> its bit (the bits, should two deployments share an id)."""
    prices: tuple[tuple[float, float] | None, ...]
    """(input, output) USD per 1M tokens, None when unpriced."""
    price_list: tuple[tuple[float, float] | None, ...]
    """The distinct values of ``prices`` ..."""
    price_slot: tuple[int, ...]
    """... and where each deployment's is in it (a request costs each price once)..."""
    by_slot: Callable[[Sequence[float]], tuple[float, ...]]
    """... and, from a figure per distinct price, the figure per deployment."""
    minor: Mapping[str, tuple[int, ...]]
    """Per policy: each deployment's rank on the static tail of the policy's sort key..."""
    minor_order: Mapping[str, tuple[int, ...]]
    """... and the positions in that order."""
    neg_quality: tuple[int, ...]
    newest_key: tuple[tuple[int, int], ...]
    """(-YYYYMM, -quality): the ``newest`` policy's leading key."""
    quality_score: tuple[float, ...]
    newest_score: tuple[float, ...]
    latency_prior: tuple[float, ...]
    """Latency assumed where none was observed: from the active parameter size."""


def own_window(t: Target) -> int | None:
    """The deployment's window when it differs from its variant's, else None."""
    return t.context if t.context is not None and t.context != t.variant.context else None


def _layout(
    variants: Mapping[str, Variant], by_variant: Mapping[str, Sequence[Target]]
) -> tuple[list[VariantFacts], list[Target]]:
    """Variants in catalogue order, their deployments laid out one after the other."""
    facts: list[VariantFacts] = []
    targets: list[Target] = []
    for n, (vid, v) in enumerate(variants.items()):
        ts = tuple(by_variant.get(vid, ()))
        added = frozenset[str]().union(*(t.capabilities - v.capabilities for t in ts))
        first, stop = len(targets), len(targets) + len(ts)
        positions = (1 << stop) - (1 << first)
        facts.append(VariantFacts(vid, v, added, first, stop, 1 << n, positions))
        targets.extend(ts)
    return facts, targets


def _offers(vf: VariantFacts, cap: str) -> bool:
    if cap == "vision":
        return vf.variant.accepts_images or "vision" in vf.added
    return cap in vf.variant.capabilities or cap in vf.added


def _mask(flags: Iterable[bool]) -> int:
    """The positions whose flag is set, as a mask."""
    return sum(1 << i for i, on in enumerate(flags) if on)


def _grouped(pairs: Iterable[tuple[Any, int]]) -> dict[Any, int]:
    """OR the masks of equal keys together."""
    out: dict[Any, int] = {}
    for key, mask in pairs:
        out[key] = out.get(key, 0) | mask
    return out


def _window_groups(facts: Sequence[VariantFacts]) -> dict[str, Any]:
    variants = _grouped((vf.variant.context, vf.bit) for vf in facts)
    deployments = _grouped((vf.variant.context, vf.positions) for vf in facts)
    known = sorted(w for w in variants if w is not None)
    return {
        "windows": tuple((w, variants[w], deployments[w]) for w in known),
        "unknown_window": (variants.get(None, 0), deployments.get(None, 0)),
    }


def _byte_positions(count: int) -> tuple[tuple[tuple[int, ...], ...], ...]:
    return tuple(
        tuple(tuple(8 * k + p for p in range(8) if b >> p & 1) for b in range(256))
        for k in range((count + 7) // 8)
    )


def _gather(positions: Sequence[int]) -> Callable[[Sequence[Any]], tuple[Any, ...]]:
    """``lambda xs: tuple(xs[i] for i in positions)``, in C."""
    if len(positions) == 1:  # itemgetter of one index returns the item itself
        only = positions[0]
        return lambda xs: (xs[only],)
    return itemgetter(*positions) if positions else lambda xs: ()


def _surface_offers(t: Target, cap: str) -> bool:
    return t.accepts_images if cap == "vision" else cap in t.capabilities


def _ranks(keys: Sequence[tuple[Any, ...]]) -> tuple[int, ...]:
    """Each position's rank when sorted by ``keys`` (ties by position)."""
    rank = [0] * len(keys)
    for r, i in enumerate(sorted(range(len(keys)), key=lambda i: (keys[i], i))):
        rank[i] = r
    return tuple(rank)


def _active(v: Variant) -> float:
    return v.params_active_b or v.params_total_b or math.inf


def _released(v: Variant) -> int:
    return int(v.released.replace("-", ""))


def _prior(v: Variant) -> float:
    active = _active(v)
    return 0.2 + 0.01 * (active if active != math.inf else 400)


_MINOR_KEYS: Final[Mapping[str, Callable[[Target], tuple[Any, ...]]]] = {
    "cost": lambda t: (_active(t.variant), t.priority, -t.weight, -t.variant.quality),
    "quality": lambda t: (t.priority, -t.weight),
    "newest": lambda t: (t.priority,),
    "latency": lambda t: (t.priority, -t.weight),
}
"""Per policy, the static part of its sort key that follows the request-dependent part."""


def _ranking(targets: Sequence[Target]) -> dict[str, Any]:
    """The ranking fields of :class:`PlanIndex`."""

    def col(f: Callable[[Target], Any]) -> tuple[Any, ...]:
        return tuple(f(t) for t in targets)

    prices = col(lambda t: None if t.price is None else (t.price.input, t.price.output))
    distinct = {p: i for i, p in enumerate(dict.fromkeys(prices))}
    minor = {policy: _ranks(col(key)) for policy, key in _MINOR_KEYS.items()}
    return {
        "prices": prices,
        "price_list": tuple(distinct),
        "price_slot": tuple(distinct[p] for p in prices),
        "by_slot": _gather(tuple(distinct[p] for p in prices)),
        "minor": minor,
        "minor_order": {
            p: tuple(sorted(range(len(r)), key=r.__getitem__)) for p, r in minor.items()
        },
        "neg_quality": col(lambda t: -t.variant.quality),
        "newest_key": col(lambda t: (-_released(t.variant), -t.variant.quality)),
        "quality_score": col(lambda t: float(t.variant.quality)),
        "newest_score": col(lambda t: float(_released(t.variant))),
        "latency_prior": col(lambda t: _prior(t.variant)),
    }


def _filtering(facts: Sequence[VariantFacts], targets: Sequence[Target]) -> dict[str, Any]:
    """The filtering fields of :class:`PlanIndex` (masks)."""
    tools = {tool for t in targets for tool in t.builtin_tools}
    own = _grouped((w, 1 << i) for i, t in enumerate(targets) if (w := own_window(t)) is not None)
    return {
        "every_variant": (1 << len(facts)) - 1,
        "everything": (1 << len(targets)) - 1,
        **_window_groups(facts),
        "own_windows": tuple(sorted(own.items())),
        "byte_positions": _byte_positions(len(targets)),
        "variant_offers": {
            cap: sum(vf.positions for vf in facts if _offers(vf, cap)) for cap in CAPABILITIES
        },
        "surface_offers": {
            cap: _mask(_surface_offers(t, cap) for t in targets) for cap in CAPABILITIES
        },
        "host_runs": {
            cap: _mask(bool(family & t.builtin_tools) for t in targets)
            for cap, family in HOST_TOOL_FAMILIES.items()
        },
        "runs_tool": {tool: _mask(tool in t.builtin_tools for t in targets) for tool in tools},
        "of_provider": _grouped((t.provider, 1 << i) for i, t in enumerate(targets)),
        "of_surface": _grouped((t.surface, 1 << i) for i, t in enumerate(targets)),
        "by_default": _mask(t.surface_rank >= 0 for t in targets),
        "multi_surface": len({t.surface for t in targets}) > 1
        or any(t.surface_rank < 0 for t in targets),
        "surface_group": _surface_groups(targets),
        "surface_rank": tuple(t.surface_rank for t in targets),
        "surface_names": tuple(t.surface for t in targets),
        "position_bit": _grouped((t.id, 1 << i) for i, t in enumerate(targets)),
    }


def _surface_groups(targets: Sequence[Target]) -> tuple[int, ...]:
    count: dict[tuple[str, str, str], int] = {}
    for t in targets:
        count[t.deployment] = count.get(t.deployment, 0) + 1
    numbers = {d: n for n, d in enumerate(d for d, c in count.items() if c > 1)}
    return tuple(numbers.get(t.deployment, -1) for t in targets)


def build_index(
    variants: Mapping[str, Variant], by_variant: Mapping[str, Sequence[Target]]
) -> PlanIndex:
    """The planner's view of a catalogue (see :class:`PlanIndex`)."""
    facts, targets = _layout(variants, by_variant)
    return PlanIndex(
        variants=tuple(facts),
        by_id={vf.id: vf for vf in facts},
        targets=tuple(targets),
        ids=tuple(t.id for t in targets),
        variant_ids=tuple(t.variant.id for t in targets),
        **_filtering(facts, targets),
        **_ranking(targets),
    )

"""Provider surfaces in a plan: which a request may use, and in what order they are tried.

A provider may be reached through several surfaces (its general API, a Coding Plan, ...), each
a deployment of its own (``Target.surface``), with its own key, circuit and quota. The planner
asks this module twice, first of the three reorderings a plan gets (surfaces, then spread
within equivalent deployments, then session affinity):

- eligibility: a virtual key's ``surfaces`` (else each provider's ``surface_order``) says which
  surfaces may serve the request; any other is not a candidate;
- order: one deployment offered on several surfaces takes the place its best-ranked surface
  earned, its surfaces in that order (plan first, pay-as-you-go once the plan's circuit is open).

A catalogue with one surface per provider (``PlanIndex.multi_surface`` false) skips both.
"""

from __future__ import annotations

from collections.abc import Callable

from gateway.catalogue.needs import Needs
from gateway.catalogue.plan_index import PlanIndex
from gateway.catalogue.target import Target


def allowed(needs: Needs, ix: PlanIndex) -> int:
    """The deployments on a surface the request may use, as a mask."""
    if not ix.multi_surface:
        return ix.everything
    if needs.surfaces is None:
        return ix.by_default
    out = 0
    for name in needs.surfaces:
        out |= ix.of_surface.get(name, 0)
    return out


def refusal(t: Target, needs: Needs) -> str | None:
    """Why ``t``'s surface may not serve the request (for ``/v1/route``), or None."""
    if needs.surfaces is not None:
        if t.surface not in needs.surfaces:
            return f"surface {t.surface} is not one this key may use ({', '.join(needs.surfaces)})"
        return None
    if t.surface_rank < 0:
        return f"surface {t.surface} is not in the provider's surface_order"
    return None


def order(ranked: list[int], needs: Needs, ix: PlanIndex) -> None:
    """Reorder ``ranked`` (positions) in place: each deployment's surfaces together, in the
    key's or the provider's surface order, where the first of them was ranked."""
    if not ix.multi_surface or len(ranked) < 2:
        return
    group = ix.surface_group
    members: dict[int, list[int]] = {}
    for i in ranked:
        g = group[i]
        if g >= 0:
            members.setdefault(g, []).append(i)
    if not any(len(m) > 1 for m in members.values()):
        return
    names = needs.surfaces
    if names is None:
        rank: Callable[[int], int] = ix.surface_rank.__getitem__
    else:
        of = ix.surface_names
        rank = lambda i: names.index(of[i])  # noqa: E731
    out: list[int] = []
    for i in ranked:
        g = group[i]
        if g < 0:
            out.append(i)
        elif (m := members.pop(g, None)) is not None:
            out += sorted(m, key=rank) if len(m) > 1 else m
    ranked[:] = out

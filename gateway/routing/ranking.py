"""Ranking for the planner: eligible deployments -> ordered, trimmed :class:`Ranked` positions.

One sort key per policy (lower first), applied as stable sorts from its last part to its
first: the static tie-breaks come pre-ranked in the catalogue's
:class:`~gateway.catalogue.plan_index.PlanIndex`, so a request pays for its cost figures, two
or three sorts of small integers and floats, and the candidates themselves.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping, Sequence
from itertools import repeat
from operator import itemgetter
from typing import TYPE_CHECKING, NamedTuple

from gateway.catalogue.needs import Needs
from gateway.catalogue.plan_index import PlanIndex
from gateway.catalogue.target import Target
from gateway.providers.dialects import can_force_tool_choice
from gateway.routing import surfaces

if TYPE_CHECKING:
    from gateway.routing.spread import Group, Spread


class Candidate(NamedTuple):
    # A NamedTuple, not a frozen dataclass: one is built per eligible deployment per request,
    # and a frozen dataclass's __init__ (object.__setattr__ per field) costs ~2x as much.
    target: Target
    score: float
    """The policy's figure for this candidate (cost in USD, latency in s, quality, ...)."""
    basis: str
    """What ``score`` measures."""


Scores = Mapping[int, float] | Sequence[float]
"""A figure per position."""

_BASIS = {
    "cost": "estimated cost USD",
    "quality": "quality rank",
    "newest": "release YYYYMM",
    "latency": "latency s (observed or prior)",
}


class Ranked:
    """Ranked positions; the targets at once, the scored candidates when asked for."""

    __slots__ = ("_basis", "_ranked", "_scores", "_targets", "groups", "picked", "targets")

    def __init__(
        self,
        ranked: list[int],
        targets: Sequence[Target],
        scores: Scores,
        basis: str,
        groups: list[Group] | None = None,
    ) -> None:
        self._ranked, self._targets, self._scores, self._basis = ranked, targets, scores, basis
        self.groups: list[Group] = groups or []
        """Spread groups (``routing.spread``), in plan order."""
        self.picked: tuple[Target, ...] | None = None
        """The shared tuple ``targets`` was copied from (:meth:`of`), else None."""
        if len(ranked) > 1:
            self.targets: list[Target] = list(itemgetter(*ranked)(targets))
        else:
            self.targets = [targets[i] for i in ranked]

    @classmethod
    def of(
        cls,
        ranked: list[int],
        picked: tuple[Target, ...],
        targets: Sequence[Target],
        scores: Scores,
        basis: str,
    ) -> Ranked:
        """Without groups, ``picked`` (the targets at ``ranked``) known: ``ranked`` is shared,
        not copied (nothing changes it); ``targets`` is a list of the request's own."""
        r = cls.__new__(cls)
        r._ranked, r._targets, r._scores, r._basis = ranked, targets, scores, basis
        r.groups = []
        r.targets = list(picked)
        r.picked = picked
        return r

    def candidates(self) -> list[Candidate]:
        return _candidates(self._ranked, self._targets, self._scores, self._basis)


_NOTHING = Ranked([], (), (), "")


def rank(
    eligible_mask: int,
    needs: Needs,
    ix: PlanIndex,
    latency: Mapping[str, float],
    spread: Spread | None = None,
    advance: bool = True,
) -> Ranked:
    """Order by policy, spread (when ``spread``), trimmed to the fallback mode. Sort keys:

    - cost:    (cost, active params, priority, -weight, -quality)
    - quality: (-quality, cost, priority, -weight)
    - newest:  (-YYYYMM, -quality, cost, priority)
    - latency: (observed or prior s, cost, priority, -weight)

    each after :func:`_prefix`, ties in catalogue order. Sorting is stable, so the key is
    applied from its end: the static tail (``ix.minor``), then cost, then what leads.
    """
    if not eligible_mask:
        return _NOTHING
    policy = needs.policy if needs.policy in _BASIS else "latency"
    eligible, costs, scores = ordered(eligible_mask, policy, needs, ix, latency)
    surfaces.order(eligible, needs, ix)  # a provider's surfaces together, in their order
    return finish(eligible, policy, needs, ix, costs, scores, spread, advance)


def ordered(
    eligible_mask: int,
    policy: str,
    needs: Needs,
    ix: PlanIndex,
    latency: Mapping[str, float],
    by_cost: list[int] | None = None,
) -> tuple[list[int], Scores, Scores]:
    """The eligible positions in the policy's total order (before the surfaces are put
    together), their costs and the policy's scores. A subset of the mask comes out in the
    same relative order (every key is per position, ties in catalogue order). ``by_cost``:
    filled with the positions in cost order (ties in the static order), before what leads."""
    if eligible_mask == ix.everything:  # sorted once, in the index
        eligible = list(ix.minor_order[policy])
    else:
        eligible = _positions(eligible_mask, ix)
        eligible.sort(key=ix.minor[policy].__getitem__)
    costs = costs_of(eligible, needs, ix)
    eligible.sort(key=costs.__getitem__)
    if by_cost is not None:
        by_cost[:] = eligible
    scores = _lead(policy, eligible, costs, ix, latency)
    if needs.providers or _prefixed(needs):
        eligible.sort(key=lambda i: _prefix(ix.targets[i], needs))  # else the same for all
    return eligible, costs, scores


def finish(
    eligible: list[int],
    policy: str,
    needs: Needs,
    ix: PlanIndex,
    costs: Scores,
    scores: Scores,
    spread: Spread | None,
    advance: bool,
) -> Ranked:
    """The per-request tail of :func:`rank`: the spread (its round-robin moves when
    ``advance``), the fallback trim, the :class:`Ranked`. ``eligible`` is reordered."""
    groups = None
    if spread is not None and len(eligible) > 1 and not needs.providers:
        prefix = (lambda i: _prefix(ix.targets[i], needs)) if _prefixed(needs) else None
        groups = spread.order(eligible, policy, costs, scores, prefix, advance)
    return Ranked(_trim(eligible, needs, ix), ix.targets, scores, _BASIS[policy], groups)


def _prefixed(needs: Needs) -> bool:
    return bool(needs.forced_tool_choice or (needs.pinned and needs.fallback == "variants"))


def _lead(
    policy: str, eligible: list[int], costs: Scores, ix: PlanIndex, latency: Mapping[str, float]
) -> Scores:
    """Sort by what leads the policy's key (cost needs nothing more); its reported scores."""
    if policy == "quality":
        eligible.sort(key=ix.neg_quality.__getitem__)
        return ix.quality_score
    if policy == "newest":
        eligible.sort(key=ix.newest_key.__getitem__)
        return ix.newest_score
    if policy == "latency":
        prior, ids = ix.latency_prior, ix.ids
        seen: Scores = prior
        if latency:
            seen = {i: prior[i] if (s := latency.get(ids[i])) is None else s for i in eligible}
        eligible.sort(key=seen.__getitem__)
        return seen
    return costs


def _positions(mask: int, ix: PlanIndex) -> list[int]:
    """The positions of the bits set in ``mask``, a byte at a time."""
    out: list[int] = []
    tables = ix.byte_positions
    for table, byte in zip(tables, mask.to_bytes(len(tables), "little"), strict=True):
        if byte:
            out += table[byte]
    return out


def costs_of(eligible: list[int], needs: Needs, ix: PlanIndex) -> Scores:
    """Estimated USD per eligible position: a list over every deployment when most are
    eligible (cheaper to build), else a dict of the eligible ones."""
    prompt, out, prices = needs.prompt.best, needs.output_tokens, ix.prices
    if 2 * len(eligible) >= len(prices):
        each = [
            math.inf if p is None else (prompt * p[0] + out * p[1]) / 1e6 for p in ix.price_list
        ]
        return ix.by_slot(each)
    return {
        i: math.inf if (p := prices[i]) is None else (prompt * p[0] + out * p[1]) / 1e6
        for i in eligible
    }


class LazyCosts(Mapping[int, float]):
    """:func:`costs_of` computed per position when read (the same float): for a plan whose
    order is already known, where only the spread's head and ``/v1/route`` read costs."""

    __slots__ = ("_keys", "_out", "_prices", "_prompt")

    def __init__(
        self,
        prompt: int,
        out: int,
        prices: Sequence[tuple[float, float] | None],
        keys: Sequence[int],
    ) -> None:
        self._prompt, self._out, self._prices, self._keys = prompt, out, prices, keys

    def __getitem__(self, i: int) -> float:
        p = self._prices[i]
        return math.inf if p is None else (self._prompt * p[0] + self._out * p[1]) / 1e6

    def __iter__(self) -> Iterator[int]:
        return iter(self._keys)

    def __len__(self) -> int:
        return len(self._keys)


def _candidates(
    ranked: list[int],
    targets: Sequence[Target],
    scores: Scores,
    basis: str,
) -> list[Candidate]:
    """``Candidate(targets[i], scores[i], basis)`` for each ranked position, built in C."""
    if len(ranked) > 1:
        get = itemgetter(*ranked)
        fields = zip(get(targets), get(scores), repeat(basis))
    else:
        fields = zip(
            map(targets.__getitem__, ranked), map(scores.__getitem__, ranked), repeat(basis)
        )
    return list(map(tuple.__new__, repeat(Candidate), fields))


def _prefix(t: Target, needs: Needs) -> tuple[float, ...]:
    """The pinned variant first; with X-GLM-Providers, that provider order next; then, when the
    request forces a tool call, hosts that can force one (policy: prefer, else degrade)."""
    pin = 0.0 if needs.pinned is None or t.variant.id == needs.pinned else 1.0
    force = 0.0 if not needs.forced_tool_choice or can_force_tool_choice(t) else 1.0
    if not needs.providers:
        return (pin, force)
    return (pin, float(needs.providers.index(t.provider)), force)


def _trim(ranked: list[int], needs: Needs, ix: PlanIndex) -> list[int]:
    if needs.fallback == "none":
        return ranked[:1]
    if needs.fallback == "providers":
        first = ix.variant_ids[ranked[0]]
        return [i for i in ranked if ix.variant_ids[i] == first]
    return ranked

"""Spread: share the load among candidates the policy ranks as equivalent (``routing.spread``).

The planner ranks; this reorders within each *group*: a run of consecutive candidates that
the policy cannot tell apart. Eligibility and the fallback order around the groups do not
change, and every member of a group already meets every need.

Equivalent to the group's head (its first, best-ranked member): the same policy key apart
from ``weight`` and catalogue order (the same ``priority``, the static parts of the key:
active parameters and quality for ``cost``, quality for ``quality``, release and quality for
``newest``; the same pin / forced-tool prefix) and a figure within ``tolerance`` of the head's
(the estimated cost; for ``latency`` the latency as well). A request naming its providers
(``X-GLM-Providers``) keeps its own order.

Who goes first in a group (per replica, deterministic): smooth weighted round-robin (nginx's
SWRR: each member gains its weight, the highest goes first and gives back the total) over the
members that are not *busy*. Busy: holding more than its weight's share of the group's
requests in flight, plus ``BUSY_SLACK`` (in flight is counted across replicas in shared state;
this replica uses the counts of its last View plus what it sent since).

Idle, no member is busy and SWRR alone decides: each replica sends exactly ``weight`` out of
every ``sum(weights)`` requests, interleaved, so with any number of replicas the shares are
exact within a request per replica, whatever the balancer in front does (random choice is as
right on average but ~2 points off at 400 requests). Under load, a member that answers slowly
piles up requests in flight past its share and is passed over until they drain. (A plain
least-in-flight-per-weight choice, nginx ``least_conn``, was tried first: with a handful of
requests in flight its integer ties favour the light members, 31/28/41 for weights 1:1:2.)
Headroom, graded: a member weighs ``weight x (1 - used)``, ``used`` the share of its ``rpm`` /
``tpm`` taken in the current window (the larger; at least ``HEADROOM_FLOOR``), so one filling
its limit is sent less well before it is full and the one with room takes the difference;
members without limits, or idle, keep their weight and the shares above. The shares come
from the windows ``StateStore.before`` reads anyway to check the limits (``View.load``, with
``in_flight`` on): no extra round trip. A member at its ``rpm`` / ``tpm`` is not in the plan at
all (the planner skips a saturated deployment until its window has room).

``price_weighted`` (policy ``cost``): a member's weight is multiplied by
``(cheapest / its cost)²``, OpenRouter's default provider balancing ("weighted by inverse
square of the price", https://openrouter.ai/docs/features/provider-routing); pair it with a
wide ``tolerance`` (e.g. 2.0: up to 3x the cheapest) to spread over more than near-ties.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple, TypeVar

from gateway.catalogue.plan_index import PlanIndex
from gateway.catalogue.schema import RoutingConfig, SpreadConfig
from gateway.state.base import FlightAsk

Scores = Mapping[int, float] | Sequence[float]
_M = TypeVar("_M", int, str)

MAX_GROUPS = 4096
"""Round-robin states kept (one per distinct group seen); past it they start again."""
HEADROOM_FLOOR = 0.05
"""The least weight factor of a member with room under its rpm / tpm."""
BUSY_SLACK = 2
"""A member is busy, and passed over, while it holds more than its share (by weight) of the
group's requests in flight plus this many."""


class Group(NamedTuple):
    """One spread group of a plan, in the order it will be tried."""

    ids: tuple[str, ...]
    weights: tuple[float, ...]
    """Each member's effective weight (``weight``, times the price factor when set, times its
    headroom under its rpm / tpm)."""
    in_flight: tuple[int, ...]
    """Requests in flight on each member as this replica last saw them."""

    @property
    def shares(self) -> tuple[float, ...]:
        """Each member's share of the group's requests when none is busier than the others."""
        total = sum(self.weights)
        return tuple(w / total if total else 0.0 for w in self.weights)


def _class_keys(policy: str, ix: PlanIndex) -> tuple[int, ...]:
    """Per position: a number equal for two candidates exactly when what must be equal for
    them to be equivalent under ``policy`` is."""
    out: list[tuple[Any, ...]] = []
    for t in ix.targets:
        v = t.variant
        active = v.params_active_b or v.params_total_b or math.inf
        # A provider's surfaces keep their order (plan first, then pay-as-you-go): deployments
        # on surfaces of different rank are never equivalent.
        if policy == "cost":
            out.append((t.priority, t.surface_rank, active, v.quality))
        elif policy == "quality":
            out.append((t.priority, t.surface_rank, v.quality))
        elif policy == "newest":
            out.append((t.priority, t.surface_rank, v.released, v.quality))
        else:
            out.append((t.priority, t.surface_rank))
    ids: dict[tuple[Any, ...], int] = {}
    return tuple(ids.setdefault(k, len(ids)) for k in out)


class Spread:
    """Reorders plans within groups of equivalent candidates; holds this replica's SWRR state
    and its last view of requests in flight."""

    def __init__(self, config: SpreadConfig, routing: RoutingConfig, ix: PlanIndex) -> None:
        self._cfg = config
        self._reach = routing.max_attempts
        self._ix = ix
        self._classes = {p: _class_keys(p, ix) for p in ("cost", "quality", "newest", "latency")}
        self._weights = tuple(float(t.weight) for t in ix.targets)
        self._pos = {tid: k for k, tid in enumerate(ix.ids)}
        self._current: dict[tuple[int, ...], dict[int, float]] = {}
        self.in_flight: dict[str, int] = {}
        """Deployment id -> requests in flight (the last View, plus what was sent since)."""
        self.load: dict[str, float] = {}
        """Deployment id -> the share of its rpm / tpm used (the last View; absent: none)."""

    def ask(self, groups: list[Group], slot: str, hold_s: float) -> FlightAsk | None:
        """What to ask shared state about requests in flight: every group member (all among
        the candidates the ticket asks about); None when ``in_flight`` is off."""
        if not self._cfg.in_flight:
            return None
        return FlightAsk(tuple(tid for g in groups for tid in g.ids), slot, hold_s)

    def saw(self, in_flight: Mapping[str, int], load: Mapping[str, float]) -> None:
        """Take what shared state reported of the members asked about: requests in flight (they
        replace this replica's guesses) and the share of their rpm / tpm used (absent: none)."""
        self.in_flight.update(in_flight)
        used = self.load
        for tid in in_flight:
            share = load.get(tid)
            if share is not None:
                used[tid] = share
            elif tid in used:
                del used[tid]

    def unpick(self, group: Group, picked: str) -> None:
        """The request went to a session's pin, not to ``picked``: take the round-robin's pick
        back. Pinned requests do not move it, so new sessions are shared by weight (the load
        the pinned ones add shows in their members' requests in flight)."""
        pos = self._pos
        current = self._current.get(tuple(sorted(pos[i] for i in group.ids)))
        if current is None:
            return
        total = 0.0
        for tid, w in _ready(group.ids, group.weights, group.in_flight):
            current[pos[tid]] -= w
            total += w
        current[pos[picked]] += total

    def order(
        self,
        ranked: list[int],
        policy: str,
        costs: Scores,
        lead: Scores,
        prefix: Callable[[int], tuple[float, ...]] | None,
        advance: bool,
    ) -> list[Group]:
        """Reorder ``ranked`` in place within each group; the groups (2+ members) found among
        the candidates the router may try (the first ``max_attempts``).

        ``advance=False`` (``/v1/route``, the downgrade probe): the same order, no state moved.
        """
        groups: list[Group] = []
        classes, tol, by_latency = self._classes[policy], self._cfg.tolerance, policy == "latency"
        reach = min(len(ranked), self._reach)
        start, head = 0, ranked[0]
        for j in range(1, reach + 1):  # one pass: does ranked[j] join the group of ``head``?
            if j < reach:
                k = ranked[j]
                if (
                    classes[k] == classes[head]
                    and (costs[k] == costs[head] or _near(costs[k], costs[head], tol))
                    and (not by_latency or _near(lead[k], lead[head], tol))
                    and (prefix is None or prefix(k) == prefix(head))
                ):
                    continue
            if j - start > 1:
                groups.append(self._arrange(ranked, start, j, policy, costs, advance))
            if j < reach:
                start, head = j, ranked[j]
        return groups

    def _arrange(
        self, ranked: list[int], i: int, j: int, policy: str, costs: Scores, advance: bool
    ) -> Group:
        members = ranked[i:j]
        weights = [self._weights[k] for k in members]
        if self._cfg.price_weighted and policy == "cost":
            weights = _price_weighted(weights, [costs[k] for k in members])
        ids = self._ix.ids
        if self.load:  # headroom: a member that used part of its rpm / tpm weighs that less
            weights = [
                w * _headroom(self.load.get(ids[k], 0.0))
                for k, w in zip(members, weights, strict=True)
            ]
        flying = [self.in_flight.get(ids[k], 0) if self._cfg.in_flight else 0 for k in members]
        first = self._pick(members, weights, flying, advance)
        if first is not None:
            at = members.index(first)
            ranked[i:j] = [first, *members[:at], *members[at + 1 :]]
            if advance and self._cfg.in_flight:
                self.in_flight[ids[first]] = flying[at] + 1  # until the next View says
        return Group(tuple(ids[k] for k in members), tuple(weights), tuple(flying))

    def _pick(
        self, members: list[int], weights: list[float], flying: list[int], advance: bool
    ) -> int | None:
        """The member to try first: SWRR over the members not busy; None: keep the order."""
        if sum(weights) <= 0:
            return None
        ready = _ready(members, weights, flying)
        key = tuple(sorted(members))
        current = self._current.get(key)
        if current is None:
            if len(self._current) >= MAX_GROUPS:
                self._current.clear()
            current = {k: 0.0 for k in members}
            if advance:
                self._current[key] = current
        if not advance:
            current = dict(current)
        best, top, total = members[0], -math.inf, 0.0
        for k, w in ready:
            c = current[k] = current[k] + w
            total += w
            if c > top:
                best, top = k, c
        current[best] -= total
        return best


def _ready(
    members: Sequence[_M], weights: Sequence[float], flying: Sequence[int]
) -> list[tuple[_M, float]]:
    """The members not busy, with their weights: never empty while some weight is positive
    (some member holds at most its share of what is in flight)."""
    total_w, total_f = sum(weights), sum(flying)
    return [
        (k, w)
        for k, w, f in zip(members, weights, flying, strict=True)
        if w > 0 and f <= total_f * w / total_w + BUSY_SLACK
    ]


def _headroom(used: float) -> float:
    """A member's weight factor for the share of its rpm / tpm already used: 1 idle, falling
    in step with what is left, never 0 (a member with room stays in the round-robin; the
    planner drops one at its limit)."""
    return max(1.0 - used, HEADROOM_FLOOR)


def _near(x: float, head: float, tolerance: float) -> bool:
    """``x`` within ``tolerance`` (a fraction) of ``head``; two unknowns (inf) are equal."""
    if x == head:
        return True
    return math.isfinite(x) and math.isfinite(head) and x - head <= tolerance * abs(head)


def _price_weighted(weights: list[float], costs: list[float]) -> list[float]:
    """Each weight times ``(cheapest / cost)²`` (a free member against paid ones: the paid get
    0; an unpriced group is left as it is)."""
    cheapest = min(costs)
    if not math.isfinite(cheapest):
        return weights
    out = []
    for w, c in zip(weights, costs, strict=True):
        if c == cheapest:
            out.append(w)
        elif not math.isfinite(c) or c <= 0 or cheapest <= 0:
            out.append(0.0)
        else:
            out.append(w * (cheapest / c) ** 2)
    return out

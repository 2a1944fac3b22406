"""The planner: needs + catalogue -> an ordered list of candidates, and why the rest were refused.

Pure: no I/O, no clock. Three steps, each explainable:

1. variant filter — every declared and inferred need (capabilities, context, parameter size,
   pin/alias restriction);
2. surface filter — each deployment of a surviving variant: the provider's capability
   overrides, its own window, the host-side tools it runs, ``X-GLM-Providers``, open circuits;
3. ranking by policy (after the pin, the X-GLM-Providers order and, for a forced
   ``tool_choice``, hosts that can force a tool call), the load spread within groups of
   equivalent candidates (:mod:`gateway.routing.spread`, when configured), then trimming to
   the fallback mode.

Fallback never widens eligibility: every candidate satisfies every need.

Two ways through steps 1-2, one step 3. ``explain=True`` words every refusal (``/v1/route``,
``glm-gateway route``, the no_capable_variant error); ``explain=False`` (the request hot path)
only decides, on the catalogue's pre-digested :class:`~gateway.catalogue.plan_index.PlanIndex`
(bitmasks, prices, sort-key ranks), and falls back to explaining when nothing is eligible. Both
ask ``needs.fits`` about the same windows, so the prompt is tokenized in the same cases, and
both rank with one prompt figure: the one known once every context check is done.

The deciding way remembers its static part (eligibility before circuits and saturation, the
policy's order) per routing signature, and reuses it for other prompt sizes where that is
provably the same plan (:func:`_memoised`); the blocked deployments, the surfaces, the spread
and the trim are applied per request. A new catalogue index (a reload) starts it afresh.
"""

from __future__ import annotations

import bisect
import itertools
import math
import operator
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from types import MappingProxyType
from typing import Any, NamedTuple

from gateway.catalogue.catalogue import Catalogue
from gateway.catalogue.needs import Needs
from gateway.catalogue.plan_index import HOST_TOOL_FAMILIES, PlanIndex
from gateway.catalogue.schema import RoutingConfig, Variant
from gateway.catalogue.target import Target
from gateway.routing import surfaces
from gateway.routing.ranking import (
    _BASIS,
    _NOTHING,
    Candidate,
    LazyCosts,
    Ranked,
    Scores,
    _candidates,
    _trim,
    finish,
    ordered,
    rank,
)
from gateway.routing.spread import Group, Spread

_OPS: dict[str, Callable[[float, float], bool]] = {
    "<=": operator.le,
    ">=": operator.ge,
    "<": operator.lt,
    ">": operator.gt,
    "=": operator.eq,
}
_NONE: Mapping[str, Any] = MappingProxyType({})


@dataclass(frozen=True, slots=True)
class Rejection:
    variant: str
    provider: str | None
    """None when the variant itself fails a need; a provider when only that surface does."""
    reasons: tuple[str, ...]


class Plan:
    """The ordered candidates and, when explained, every refusal.

    ``targets`` (the deployments in order) is what the request path reads: the router walks
    it and admission asks about its head. ``candidates`` adds each one's score and is built
    on first read (``/v1/route``, the explain paths): a plan for ``auto`` ranks all 63
    deployments, and building 63 Candidate tuples per request cost more than the ranking.
    """

    __slots__ = ("_candidates", "_lazy", "picked", "rejected", "spread", "targets", "unmet")

    def __init__(
        self,
        candidates: list[Candidate],
        rejected: list[Rejection] | None = None,
        unmet: list[str] | None = None,
    ) -> None:
        self._candidates: list[Candidate] | None = candidates
        self._lazy: tuple[list[int], Sequence[Target], Scores, str] | None = None
        """What :attr:`candidates` is built from on first read (:func:`_candidates`' arguments)."""
        self.targets: list[Target] = [c.target for c in candidates]
        self.rejected: list[Rejection] = rejected if rejected is not None else []
        """Every refused variant/deployment and why: filled when planned with
        ``explain=True``, or when there is no candidate."""
        self.unmet: list[str] = unmet if unmet is not None else []
        """When there is no candidate: the needs no variant/deployment meets."""
        self.spread: list[Group] = []
        """Groups of equivalent candidates sharing the load (``routing.spread``)."""
        self.picked: tuple[Target, ...] | None = None
        """The planner's own tuple ``targets`` was copied from, shared by every plan with the
        same order (and only by them, while it is held), else None: what admission keys what
        it asks about a plan's first candidates by (``Admission._head``)."""

    @classmethod
    def of(cls, ranked: Ranked, rejected: list[Rejection]) -> Plan:
        p = cls.__new__(cls)
        p._candidates = None
        p._lazy = (ranked._ranked, ranked._targets, ranked._scores, ranked._basis)
        p.targets, p.rejected, p.unmet = ranked.targets, rejected, []
        p.spread, p.picked = ranked.groups, ranked.picked
        return p

    @classmethod
    def unblocked(
        cls,
        trimmed: list[int],
        picked: tuple[Target, ...],
        ix: PlanIndex,
        scores: Scores,
        basis: str,
    ) -> Plan:
        """``Plan.of(Ranked.of(trimmed, picked, ix.targets, scores, basis), [])`` without the
        Ranked between (a memo hit with nothing blocked and no spread: :func:`_memoised`)."""
        p = cls.__new__(cls)
        p._candidates = None
        p._lazy = (trimmed, ix.targets, scores, basis)
        p.targets, p.rejected, p.unmet = list(picked), [], []
        p.spread, p.picked = [], picked
        return p

    @property
    def candidates(self) -> list[Candidate]:
        if self._candidates is None:
            assert self._lazy is not None
            self._candidates, self._lazy = _candidates(*self._lazy), None
        return self._candidates

    def __repr__(self) -> str:
        return f"Plan(candidates={self.candidates!r}, rejected={self.rejected!r})"


def plan(
    needs: Needs,
    catalogue: Catalogue,
    routing: RoutingConfig,
    *,
    open_circuits: Mapping[str, float] | None = None,
    latency: Mapping[str, float] | None = None,
    saturated: Mapping[str, str] | None = None,
    explain: bool = True,
    spread: Spread | None = None,
    advance: bool = True,
    memo: bool = True,
) -> Plan:
    """Order every deployment that can serve the request; explain every one that cannot.

    ``explain=False``: the same candidates, but ``rejected`` stays empty unless there is no
    candidate (then the plan is explained in full, for the no_capable_variant error).
    ``spread``: reorder within groups of equivalent candidates (its round-robin moves only
    when ``advance``). ``memo`` (with ``explain=False``): reuse the static part of an
    earlier plan for the same routing signature (:func:`_memoised`); the same decisions.
    """
    opened = open_circuits or _NONE
    full = saturated or _NONE
    ix, seen = catalogue.index, latency or _NONE
    if explain:
        eligible, rejected = _explained(needs, ix, routing, opened, full)
        ranked = rank(eligible, needs, ix, seen, spread, advance)
    else:
        method = needs.prompt.method
        rejected = []
        got = _memoised(needs, ix, routing, opened, full, seen, spread, advance) if memo else None
        if isinstance(got, Plan):  # the usual memo hit, made without a Ranked
            return got
        if got is None:
            got = rank(_decided(needs, ix, routing, opened, full), needs, ix, seen, spread, advance)
        ranked = got
    if ranked.targets:
        return Plan.of(ranked, rejected)
    if not explain:
        # Explained from where this call started, as explain=True would have: a refusal quotes
        # the prompt figure known when its variant was checked (the bound until one tokenized).
        start = needs
        if needs.prompt.method != method:
            start = replace(needs, prompt=needs.prompt.untokenized())
        return plan(
            start, catalogue, routing, open_circuits=opened, latency=latency, saturated=full
        )
    return Plan([], rejected, _unmet(needs, rejected))


# --- explaining: every refusal in words ------------------------------------------------------


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
        elif cap in HOST_TOOL_FAMILIES:
            family = HOST_TOOL_FAMILIES[cap]
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
    if (why := surfaces.refusal(t, needs)) is not None:
        reasons.append(why)
    if t.id in open_circuits:
        reasons.append(f"circuit open for {open_circuits[t.id]:.0f}s more")
    if t.id in saturated:
        reasons.append(saturated[t.id])
    return reasons


def _explained(
    needs: Needs,
    ix: PlanIndex,
    routing: RoutingConfig,
    opened: Mapping[str, float],
    full: Mapping[str, str],
) -> tuple[int, list[Rejection]]:
    """Eligible deployments (a mask of positions) and every refusal with its reasons."""
    rejected: list[Rejection] = []
    eligible = 0
    for vf in ix.variants:
        vid = vf.id
        if needs.allowed_variants is not None and vid not in needs.allowed_variants:
            why = f"not in alias {needs.alias!r}" if needs.alias else "not allowed for this key"
            rejected.append(Rejection(vid, None, (why,)))
            continue
        if needs.pinned and vid != needs.pinned and needs.fallback != "variants":
            rejected.append(Rejection(vid, None, (f"model pinned to {needs.pinned}",)))
            continue
        reasons = _variant_reasons(vf.variant, needs, routing, vf.added)
        if vf.first == vf.stop:
            reasons.append("no deployment configured (or its key is not set)")
        if reasons:
            rejected.append(Rejection(vid, None, tuple(reasons)))
            continue
        for i in range(vf.first, vf.stop):
            t = ix.targets[i]
            sreasons = _surface_reasons(t, needs, opened, full)
            if sreasons:
                rejected.append(Rejection(vid, t.provider, tuple(sreasons)))
            else:
                eligible |= 1 << i
    return eligible, rejected


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


# --- deciding: the same verdicts on bitmasks, no words ---------------------------------------


def _decided(
    needs: Needs,
    ix: PlanIndex,
    routing: RoutingConfig,
    opened: Mapping[str, float] = _NONE,
    full: Mapping[str, str] = _NONE,
) -> int:
    """What :func:`_explained` finds eligible (a mask of positions), without wording a refusal.

    ``needs.fits`` is asked about every window ``_explained`` asks about where the answer is
    not sure without tokenizing (a variant's even when it fails on capabilities, a deployment's
    own even when it fails otherwise): the prompt is tokenized in the same cases.
    """
    out = needs.output_tokens
    short = max(needs.min_context or 0, out + 1)  # a smaller window fails, nothing tokenized
    ample = max(short, needs.prompt.upper + out)  # from here up, fits on the byte bound
    fit = _fit_memo(needs)
    considered, eligible = _considered(needs, ix)
    unknown = (routing.unknown_context_floor, *ix.unknown_window)
    for window, variants, positions in (unknown, *ix.windows):
        if window >= ample:
            continue
        if window < short or (variants & considered and not fit(window)):
            eligible &= ~positions
    eligible &= _variant_offers(needs, ix)
    for window, positions in ix.own_windows:  # of the deployments of qualifying variants
        if window >= ample:
            break
        if window < short or (positions & eligible and not fit(window)):
            eligible &= ~positions
    return eligible & _surface_offers(needs, ix) & ~_blocked(ix, opened, full)


def _fit_memo(needs: Needs) -> Callable[[int], bool]:
    """``needs.fits``, asked once per distinct window (it may tokenize the prompt)."""
    seen: dict[int, bool] = {}

    def fit(window: int) -> bool:
        ok = seen.get(window)
        if ok is None:
            ok = seen[window] = needs.fits(window)
        return ok

    return fit


def _considered(needs: Needs, ix: PlanIndex) -> tuple[int, int]:
    """The variants the alias/key restriction and the pin leave, and their deployments."""
    variants, positions = ix.every_variant, ix.everything
    allowed = needs.allowed_variants
    if allowed is not None:
        kept = [ix.by_id[vid] for vid in allowed if vid in ix.by_id]
        variants &= _union(vf.bit for vf in kept)
        positions &= _union(vf.positions for vf in kept)
    if needs.pinned and needs.fallback != "variants":
        vf = ix.by_id.get(needs.pinned)
        variants &= vf.bit if vf is not None else 0
        positions &= vf.positions if vf is not None else 0
    return variants, positions


def _variant_offers(needs: Needs, ix: PlanIndex) -> int:
    """The deployments whose variant has every capability and parameter size asked for."""
    mask = ix.everything
    for cap in needs.capabilities:
        mask &= ix.variant_offers.get(cap, 0)
    for op, bound in needs.params:
        for vf in ix.variants:
            size = vf.variant.params_total_b
            if vf.positions & mask and (size is None or not _OPS[op](size, bound)):
                mask &= ~vf.positions
    return mask


def _surface_offers(needs: Needs, ix: PlanIndex) -> int:
    """The deployments whose own surface meets every need, on a listed provider."""
    mask = surfaces.allowed(needs, ix)
    tools = needs.builtin_tools
    for cap in needs.capabilities:
        mask &= ix.surface_offers.get(cap, 0)
        family = HOST_TOOL_FAMILIES.get(cap)
        if family is not None and not family & tools:  # a named tool is checked below
            mask &= ix.host_runs[cap]
    for tool in tools:
        mask &= ix.runs_tool.get(tool, 0)
    if needs.providers is not None:
        mask &= _union(ix.of_provider.get(p, 0) for p in needs.providers)
    return mask


def _blocked(ix: PlanIndex, opened: Mapping[str, float], full: Mapping[str, str]) -> int:
    """The deployments with an open circuit or saturated, as a mask."""
    mask = 0
    for tid in (*opened, *full) if opened or full else ():
        mask |= ix.position_bit.get(tid, 0)
    return mask


# --- memoised: the static part of a decided plan, per routing signature -----------------------

_MEMO_SIZE = 1024
"""Signatures remembered (the oldest goes first); families too, each with at most
``_Family._MOST`` ranges (a range holds two orders, no costs: ~1 KB for 63 deployments)."""


class _Static(NamedTuple):
    """What planning a signature decides before circuits, saturation and the spread."""

    mask: int
    """Eligible deployments (nothing blocked)."""
    order: tuple[int, ...]
    """Their positions in the policy's total order, before the surfaces are put together."""
    grouped: tuple[int, ...]
    """``order`` with each deployment's surfaces together (:func:`surfaces.order`)."""
    costs: Scores
    scores: Scores
    trimmed: list[int]
    """``grouped`` trimmed to the signature's fallback mode (shared, never changed)."""
    picked: tuple[Target, ...]
    """The targets at ``trimmed``: a plan with nothing blocked and no spread is these
    (:func:`_unblocked`), the same tuple for every such plan of the signature."""


class _Range(NamedTuple):
    """A family's plan (every signature field but the prompt figures) and the bound prompts
    it holds for: strictly between ``lo`` and ``hi`` every pair of deployments adjacent in cost
    order keeps its order with a margin far above float error, so the cost sort gives the same
    order. The costs are computed afresh."""

    lo: float
    hi: float
    static: _Static


class _Family:
    """A family's ranges (disjoint: each holds where its cost order holds strictly), by ``lo``;
    ``ceiling``: up to this bound every window the planner may ask about fits (nothing is
    tokenized, no window refuses more or less than for any other such size)."""

    __slots__ = ("ceiling", "los", "ranges")
    _MOST = 32

    def __init__(self, ceiling: float) -> None:
        self.ceiling = ceiling
        self.los: list[float] = []
        self.ranges: list[_Range] = []

    def find(self, upper: int) -> _Range | None:
        if upper > self.ceiling:
            return None
        i = bisect.bisect_left(self.los, upper) - 1
        if i < 0:
            return None
        r = self.ranges[i]
        return r if upper < r.hi else None

    def add(self, r: _Range) -> None:
        if len(self.los) >= self._MOST:
            self.los.clear()
            self.ranges.clear()
        i = bisect.bisect_left(self.los, r.lo)
        self.los.insert(i, r.lo)
        self.ranges.insert(i, r)


_MARGIN = 1e-9
"""Relative cost difference a range keeps between adjacent deployments (float error: ~1e-15)."""

_memo: dict[tuple[Any, ...], _Static] = {}
_ranges: dict[tuple[Any, ...], _Family] = {}
_FAMILY = 13
"""The family's fields at the head of a :func:`_memoised` key (the prompt figures follow)."""
_memo_of: list[PlanIndex] = []
"""The catalogue index the memo was filled for (a reload builds a new one: the memo restarts)."""


def _bounded_put(memo: dict[Any, Any], key: Any, value: Any) -> None:
    if len(memo) >= _MEMO_SIZE and key not in memo:
        del memo[next(iter(memo))]
    memo[key] = value


def _cost_span(
    by_cost: list[int], prompt: int, out: int, ix: PlanIndex
) -> tuple[float, float] | None:
    """The open interval of prompt sizes over which ``by_cost`` (cost order at ``prompt``
    tokens, ``out`` output) stays the cost order: each adjacent pair with different prices
    keeps its strict order by more than ``_MARGIN`` of their sum (a pair with the same prices
    costs the same float at any size: its tie keeps the static order). None when a pair is
    within the margin at ``prompt`` itself (a tie or near one: only the exact size is kept)."""
    lo, hi = -math.inf, math.inf
    prices = ix.prices
    for a, b in itertools.pairwise(by_cost):
        pa, pb = prices[a], prices[b]
        if pa == pb or pb is None:
            continue  # the same float at any size; or a finite cost before an infinite one
        if pa is None:
            return None
        # a before b at size x  <=>  x * slope < bound (cost_a - cost_b < -margin * sum)
        slope = pa[0] - pb[0] + _MARGIN * (pa[0] + pb[0])
        bound = -out * (pa[1] - pb[1] + _MARGIN * (pa[1] + pb[1]))
        if not prompt * slope < bound:
            return None
        if slope > 0:
            hi = min(hi, bound / slope)
        elif slope < 0:
            lo = max(lo, bound / slope)
    return lo, hi


def _ceiling(needs: Needs, ix: PlanIndex, routing: RoutingConfig) -> float:
    """The largest prompt bound that fits every window not refused outright (< the output
    reserve or min_context): up to it the planner refuses the same deployments for any size
    and tokenizes nothing."""
    out = needs.output_tokens
    short = max(needs.min_context or 0, out + 1)
    windows = [routing.unknown_context_floor, *(w[0] for w in ix.windows)]
    windows += [w[0] for w in ix.own_windows]
    above = [w for w in windows if w >= short]
    return min(above) - out if above else math.inf


def _memoised(
    needs: Needs,
    ix: PlanIndex,
    routing: RoutingConfig,
    opened: Mapping[str, float],
    full: Mapping[str, str],
    latency: Mapping[str, float],
    spread: Spread | None,
    advance: bool,
) -> Ranked | Plan | None:
    """:func:`_decided` + :func:`rank`, the static part remembered per routing signature.

    The signature is every input of the static part: the needs' routing fields, the exact
    prompt figures (bound, count if tokenized) and output reserve that the windows and the
    cost order depend on, the unknown-window floor, the catalogue index. Every sort key is per
    position (ties in catalogue order), so removing the blocked deployments from the remembered
    order gives the order ranking the rest would give; the surfaces are then put together, the
    spread and the fallback trim applied as :func:`rank` does. A plan that tokenized the prompt
    is not remembered (the next request with the same signature tokenizes as this one did).

    Prompts differ from request to request: a signature that misses but whose family (the
    same signature but the prompt figures) was planned with a bound prompt reuses that plan
    when this bound is within the family's :class:`_Range` (the same cost order, the same
    windows refused, nothing tokenized); only the costs are computed again.
    None: not memoisable (the latency policy with observed latencies). A :class:`Plan` when
    nothing is blocked, no spread and some deployment is eligible: the plan itself, made from
    the entry (:meth:`Plan.unblocked`).
    """
    policy = needs.policy if needs.policy in _BASIS else "latency"
    if latency and policy == "latency":
        return None
    prompt = needs.prompt
    method, upper = prompt.method, prompt.upper
    caps = needs.capabilities
    # One flat tuple, hashed once per request: the family's fields, then the prompt figures
    # (the family, ``key[:_FAMILY]``, is cut from it only when the key misses).
    key = (
        tuple(caps) if caps else (),
        needs.builtin_tools,
        needs.min_context,
        needs.output_tokens,
        needs.params,
        policy,
        needs.fallback,
        needs.providers,
        needs.pinned,
        needs.allowed_variants,
        needs.forced_tool_choice,
        needs.surfaces,
        routing.unknown_context_floor,
        upper,
        prompt.best,
        method,
    )
    if not _memo_of or _memo_of[0] is not ix:
        _memo.clear()
        _ranges.clear()
        _memo_of[:] = [ix]
    try:
        got = _memo.get(key)
    except TypeError:  # a field set to something unhashable (a list): planned afresh
        return None
    if got is None:
        family = key[:_FAMILY]
        fam = _ranges.get(family) if method == "bound" else None
        near = fam.find(upper) if fam is not None else None
        if near is not None:
            costs: Scores = LazyCosts(
                prompt.best, needs.output_tokens, ix.prices, near.static.order
            )
            scores = costs if policy == "cost" else near.static.scores
            got = near.static._replace(costs=costs, scores=scores)
        else:
            by_cost: list[int] = []
            mask = _decided(needs, ix, routing)
            if mask:
                first, costs, scores = ordered(mask, policy, needs, ix, latency, by_cost)
                grouped = list(first)
                surfaces.order(grouped, needs, ix)
                trimmed = _trim(list(grouped), needs, ix)
                picked = tuple([ix.targets[i] for i in trimmed])
                got = _Static(mask, tuple(first), tuple(grouped), costs, scores, trimmed, picked)
            else:
                got = _Static(0, (), (), (), (), [], ())
            if needs.prompt.method != method:  # planning tokenized: nothing to remember
                return _tail(got, policy, needs, ix, opened, full, spread, advance)
            span = (
                _cost_span(by_cost, upper, needs.output_tokens, ix) if method == "bound" else None
            )
            if span is not None:
                if fam is None:
                    fam = _Family(_ceiling(needs, ix, routing))
                    _bounded_put(_ranges, family, fam)
                # the costs are computed per size; the other policies' scores are the index's
                kept = got._replace(costs=(), scores=() if policy == "cost" else got.scores)
                fam.add(_Range(*span, kept))
        _bounded_put(_memo, key, got)
    if spread is None and not (opened or full):  # _tail's usual case, without its call
        if got.picked:
            return Plan.unblocked(got.trimmed, got.picked, ix, got.scores, _BASIS[policy])
        return _unblocked(got, policy, ix)
    return _tail(got, policy, needs, ix, opened, full, spread, advance)


def _tail(
    got: _Static,
    policy: str,
    needs: Needs,
    ix: PlanIndex,
    opened: Mapping[str, float],
    full: Mapping[str, str],
    spread: Spread | None,
    advance: bool,
) -> Ranked:
    """The per-request part: the blocked taken out, the surfaces together, the spread, trim."""
    blocked = _blocked(ix, opened, full) & got.mask if opened or full else 0
    if not blocked:
        if spread is None:
            return _unblocked(got, policy, ix)
        eligible = list(got.grouped)
    else:
        left = got.mask & ~blocked
        eligible = [i for i in got.order if left >> i & 1]
        surfaces.order(eligible, needs, ix)
    if not eligible:
        return _NOTHING
    return finish(eligible, policy, needs, ix, got.costs, got.scores, spread, advance)


def _unblocked(got: _Static, policy: str, ix: PlanIndex) -> Ranked:
    """:func:`finish` without a spread, for the whole eligible order: the trim and its targets
    depend only on that order and the fallback mode (both in the signature), so they are made
    with the memo's entry (:attr:`_Static.trimmed`, :attr:`_Static.picked`)."""
    if not got.grouped:
        return _NOTHING
    return Ranked.of(got.trimmed, got.picked, ix.targets, got.scores, _BASIS[policy])


def _union(masks: Iterable[int]) -> int:
    out = 0
    for mask in masks:
        out |= mask
    return out

"""The planner's memo (``plan(explain=False)``): the static part of a plan remembered per
routing signature gives exactly the decisions planning afresh (``memo=False``) gives.

The random matrix of ``test_planner_decide`` (bodies, headers, key restrictions, open circuits,
saturation, observed latency) asked twice with different states, prompts swept across a
window's edge and across a cost tie, the spread's round-robin, and a reload (a new catalogue).
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import pytest

from gateway.catalogue.catalogue import Config
from gateway.catalogue.needs import resolve_needs
from gateway.catalogue.schema import SpreadConfig
from gateway.errors import GatewayError
from gateway.routing import planner
from gateway.routing.planner import Plan, plan
from gateway.routing.spread import Spread
from tests.support.catalogue import make_config, make_target, make_variant
from tests.unit.test_planner_decide import _body, _headers, _needs, _state, _view, quirky, shipped
from tests.unit.test_surfaces import PROVIDERS
from tests.unit.test_surfaces import load as load_surfaces

__all__ = ["quirky", "shipped"]  # fixtures


def _same(config: Config, body: dict[str, Any], headers: dict[str, str], **kw: Any) -> Plan:
    """Planned afresh and through the memo (twice: filled, then hit): the same plan."""
    cat, routing = config.catalogue, config.gateway.routing
    fresh = resolve_needs(body, headers, config)
    want = plan(fresh, cat, routing, explain=False, memo=False, **kw)
    for _ in range(2):
        needs = resolve_needs(body, headers, config)
        got = plan(needs, cat, routing, explain=False, **kw)
        assert _view(got) == _view(want), (body, headers, kw)
        assert got.rejected == want.rejected and got.unmet == want.unmet
        assert needs.prompt.method == fresh.prompt.method  # tokenized in the same cases
    return want


@pytest.mark.parametrize("which", ["shipped", "quirky"])
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_memo_matches_planning_afresh(
    which: str, seed: int, request: pytest.FixtureRequest
) -> None:
    config: Config = request.getfixturevalue(which)
    cat, routing = config.catalogue, config.gateway.routing
    rng = random.Random(seed)
    models = ["auto", "glm-4", *cat.variants, *config.gateway.aliases]
    ids = [t.id for t in cat.targets]
    planner._memo.clear()
    hits = 0
    for _ in range(250):
        body, headers = _body(rng, models), _headers(rng, sorted(cat.providers))
        keep = frozenset(rng.sample(list(cat.variants), 3)) if rng.random() < 0.1 else None
        try:
            _needs(config, body, headers, keep)
        except GatewayError:
            continue
        for state in (_state(rng, ids), _state(rng, ids), {}):  # the same signature, new state
            fresh = _needs(config, body, headers, keep)
            want = plan(fresh, cat, routing, explain=False, memo=False, **state)
            before = len(planner._memo)
            needs = _needs(config, body, headers, keep)
            got = plan(needs, cat, routing, explain=False, **state)
            hits += len(planner._memo) == before and bool(planner._memo)
            assert _view(got) == _view(want), (body, headers, state)
            assert got.rejected == want.rejected and got.unmet == want.unmet
            assert needs.prompt.method == fresh.prompt.method
    assert hits > 200  # the memo answered most of them


def test_prompts_across_a_window_edge_and_a_cost_tie(quirky: Config) -> None:
    # q/d: 9000-token window, prices (0.1, 3); p/a: (1, 2). With max_tokens 900 their costs
    # tie at a 1000-token prompt and swap order across it; d's window ends near 8100 tokens.
    sizes = [*range(900, 1100, 3), *range(7990, 8200, 7)]
    orders = set()
    for size in [*sizes, *reversed(sizes)]:
        for max_tokens in (900, 901, None):
            body: dict[str, Any] = {
                "model": "auto",
                "messages": [{"role": "user", "content": "x" * size}],
            }
            if max_tokens is not None:
                body["max_tokens"] = max_tokens
            p = _same(quirky, body, {})
            _same(quirky, body, {}, open_circuits={"p/a": 5.0})
            orders.add(tuple(c.target.id for c in p.candidates))
    assert len(orders) >= 3  # the sweep crossed the tie and the window


def test_a_reload_restarts_the_memo() -> None:
    v, w = make_variant("v"), make_variant("w")

    def config(cheap: str) -> Config:
        prices = {"v": (1.0, 1.0), "w": (2.0, 2.0)} if cheap == "v" else {"v": (2, 2), "w": (1, 1)}
        targets = [make_target("p", x, price=prices[x.id]) for x in (v, w)]
        return make_config(targets, [v, w])

    body = {"model": "auto", "messages": [{"role": "user", "content": "hi"}]}
    for cheap in ("v", "w", "v"):
        c = config(cheap)
        p = _same(c, body, {})
        assert p.targets[0].variant.id == cheap
        assert planner._memo_of == [c.catalogue.index]


def test_the_spread_moves_as_when_planned_afresh() -> None:
    v = make_variant("v")
    targets = [make_target(name, v, weight=weight) for name, weight in (("a", 1), ("b", 2))]
    targets.append(make_target("c", v, weight=1, price=(9.0, 9.0)))
    config = make_config(targets, [v], spread=SpreadConfig(enabled=True))
    cat, routing = config.catalogue, config.gateway.routing
    fresh, memo = (Spread(routing.spread, routing, cat.index) for _ in range(2))
    body = {"model": "auto", "messages": [{"role": "user", "content": "hi"}]}
    seen = set()
    for i in range(12):
        state: dict[str, Any] = {"open_circuits": {"b/v": 1.0}} if i % 5 == 4 else {}
        plans = [
            plan(
                resolve_needs(body, {}, config),
                cat,
                routing,
                explain=False,
                spread=s,
                memo=m,
                **state,
            )
            for s, m in ((fresh, False), (memo, True))
        ]
        assert _view(plans[0]) == _view(plans[1])
        assert plans[0].spread == plans[1].spread
        seen.add(plans[1].targets[0].id)
    assert seen == {"a/v", "b/v"}  # the round-robin moved through the memo


@pytest.mark.parametrize("order", ["", "    surface_order: [api, coding]\n"])
def test_surfaces_stay_together_when_some_are_blocked(tmp_path: Path, order: str) -> None:
    providers = PROVIDERS.replace("    surfaces:", order + "    surfaces:")
    config = load_surfaces(
        tmp_path, providers.replace("input: 0.5, output: 0.5", "input: 1, output: 1")
    )
    ids = [t.id for t in config.catalogue.targets]
    body = {"model": "alpha", "messages": [{"role": "user", "content": "hi"}]}
    cat, routing = config.catalogue, config.gateway.routing
    for surfaces in (None, ("coding", "api"), ("api", "coding"), ("coding",)):
        for blocked in ([], *([i] for i in ids), ids[:2], ids[1:]):
            state = {"open_circuits": {i: 1.0 for i in blocked}}
            fresh = resolve_needs(body, {}, config)
            fresh.surfaces = surfaces
            want = plan(fresh, cat, routing, explain=False, memo=False, **state)
            for _ in range(2):
                needs = resolve_needs(body, {}, config)
                needs.surfaces = surfaces
                got = plan(needs, cat, routing, explain=False, **state)
                assert _view(got) == _view(want), (surfaces, blocked)


HEADERS = [
    {},
    *({"x-glm-fallback": f} for f in ("none", "providers", "variants")),
    *({"x-glm-min-context": c} for c in ("8k", "9000", "30k", "190k")),
    *({"x-glm-prefer": p} for p in ("cost", "latency", "quality", "newest")),
    *({"x-glm-params": p} for p in ("<=9B", ">=100B")),
    {"x-glm-capabilities": "vision"},
    {"x-glm-providers": "zai,openrouter"},
]


@pytest.mark.parametrize("model", ["auto", "glm-4.5-air"])
def test_each_routing_header_is_part_of_the_signature(shipped: Config, model: str) -> None:
    body = {"model": model, "messages": [{"role": "user", "content": "x" * 7000}]}
    for headers in [*HEADERS, *reversed(HEADERS)]:
        try:
            _same(shipped, body, headers)
        except GatewayError:
            continue


def test_the_unknown_window_floor_is_part_of_the_signature(quirky: Config) -> None:
    # b's window is unknown: the floor, below the 5000-token output reserve or above it
    body = {"model": "auto", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 5000}
    routing = quirky.gateway.routing
    seen = set()
    for floor in (4096, 65536, 4096):
        r = routing.model_copy(update={"unknown_context_floor": floor})
        fresh = resolve_needs(body, {}, quirky)
        want = plan(fresh, quirky.catalogue, r, explain=False, memo=False)
        got = plan(resolve_needs(body, {}, quirky), quirky.catalogue, r, explain=False)
        assert _view(got) == _view(want), floor
        seen.add(len(want.targets))
    assert len(seen) == 2  # the floor decides


SWEEP_HEADERS: list[dict[str, str]] = [
    {},
    {"x-glm-prefer": "quality"},
    {"x-glm-prefer": "newest"},
    {"x-glm-prefer": "latency"},
    {"x-glm-fallback": "none"},
    {"x-glm-min-context": "30k"},
]


@pytest.mark.parametrize("which", ["shipped", "quirky"])
def test_prompt_sizes_reuse_a_family_plan_only_where_it_holds(
    which: str, request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Sizes swept up and down (and shuffled) across the cost ties and crossovers of the
    # catalogue's prices and across its windows: a family's plan is reused between them, and
    # every plan is the one planned afresh.
    config: Config = request.getfixturevalue(which)
    planned = [0]
    decided = planner._decided

    def counted(*args: Any) -> int:
        planned[0] += 1
        return decided(*args)

    monkeypatch.setattr(planner, "_decided", counted)
    rng = random.Random(7)
    sizes = sorted({int(1.13**k) for k in range(95)} | set(range(900, 1100, 7)))
    asked = reused = 0
    for model in ("auto", "glm-4", "glm-4.5-air") if which == "shipped" else ("auto", "a"):
        for headers in SWEEP_HEADERS:
            for max_tokens in (None, 900, 20_000):
                order = [*sizes, *reversed(sizes), *rng.sample(sizes, len(sizes))]
                for size in order:
                    body: dict[str, Any] = {
                        "model": model,
                        "messages": [{"role": "user", "content": "x" * size}],
                    }
                    if max_tokens is not None:
                        body["max_tokens"] = max_tokens
                    try:
                        resolve_needs(body, headers, config)
                    except GatewayError:
                        break
                    planner._memo.clear()  # the exact memo aside: the family's range answers
                    fresh = resolve_needs(body, headers, config)
                    cat, routing = config.catalogue, config.gateway.routing
                    want = plan(fresh, cat, routing, explain=False, memo=False)
                    before = planned[0]
                    needs = resolve_needs(body, headers, config)
                    got = plan(needs, cat, routing, explain=False)
                    assert _view(got) == _view(want), (model, headers, max_tokens, size)
                    assert needs.prompt.method == fresh.prompt.method
                    reused += planned[0] == before
                    asked += 1
    assert reused > asked // 2  # the ranges answered most sizes


def test_a_float_tie_between_different_prices_keeps_the_exact_order() -> None:
    # 0.1 + 0.2 is not 0.3: the real costs differ by ~1e-16 of themselves, the float costs
    # tie for most sizes (then the static order decides) and not for others.
    v, w = make_variant("v", quality=50), make_variant("w", quality=60)
    targets = [
        make_target("p", v, price=(0.3, 1.0)),
        make_target("q", w, price=(0.1 + 0.2, 1.0)),
        make_target("r", w, price=(0.2, 1.1)),
    ]
    config = make_config(targets, [v, w])
    orders = set()
    for size in [*range(1, 400), *range(900, 1100), *range(399, 0, -1)]:
        body = {"model": "auto", "messages": [{"role": "user", "content": "x" * size}]}
        for headers in ({}, {"x-glm-prefer": "quality"}):
            orders.add(tuple(_same(config, body, headers).targets))
    assert len(orders) >= 2


def test_the_spread_reads_the_same_costs_for_a_reused_family_plan() -> None:
    v, w = make_variant("v"), make_variant("w", quality=70)
    targets = [
        make_target("a", v, weight=1, price=(1.0, 2.0)),
        make_target("b", v, weight=2, price=(1.02, 2.0)),
        make_target("c", w, weight=1, price=(1.2, 1.0)),
        make_target("d", w, weight=1, price=(1.25, 1.01)),
    ]
    spread = SpreadConfig(enabled=True, tolerance=0.05, price_weighted=True)
    config = make_config(targets, [v, w], spread=spread)
    cat, routing = config.catalogue, config.gateway.routing
    fresh, memo = (Spread(routing.spread, routing, cat.index) for _ in range(2))
    rng = random.Random(3)
    for size in rng.sample(range(1, 20_000, 13), 600):
        body = {"model": "auto", "messages": [{"role": "user", "content": "x" * size}]}
        headers = {"x-glm-prefer": rng.choice(["cost", "quality"])}
        plans = [
            plan(
                resolve_needs(body, headers, config), cat, routing, explain=False, spread=s, memo=m
            )
            for s, m in ((fresh, False), (memo, True))
        ]
        assert _view(plans[0]) == _view(plans[1]), size
        assert plans[0].spread == plans[1].spread, size


def test_an_unhashable_field_is_planned_afresh(quirky: Config) -> None:
    body = {"model": "auto", "messages": [{"role": "user", "content": "hi"}]}
    fresh = resolve_needs(body, {}, quirky)
    needs = resolve_needs(body, {}, quirky)
    needs.providers = ["p", "q"]  # type: ignore[assignment]
    fresh.providers = ("p", "q")
    want = plan(fresh, quirky.catalogue, quirky.gateway.routing, explain=False, memo=False)
    got = plan(needs, quirky.catalogue, quirky.gateway.routing, explain=False)
    assert _view(got) == _view(want)

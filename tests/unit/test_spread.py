"""The spread step of the planner (``routing.spread``) on small hand-built catalogues.

Which candidates form a group, that the round-robin gives exact weighted shares, that a busy
member is passed over, and that eligibility and the order around a group never change.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from gateway.catalogue.catalogue import Config
from gateway.catalogue.needs import resolve_needs
from gateway.catalogue.schema import SpreadConfig
from gateway.routing.planner import Plan, plan
from gateway.routing.spread import Spread
from tests.support.catalogue import make_config, make_target, make_variant

V = make_variant("glm-4-9b", quality=50)
W = make_variant("glm-4-32b", quality=60)


def cfg(*specs: tuple[str, Any], **spread: Any) -> tuple[Config, Spread]:
    """Deployments of V ``(provider, weight)`` or ``(provider, weight, price)``."""
    targets = [
        make_target(s[0], V, weight=s[1], **({"price": s[2]} if len(s) > 2 else {})) for s in specs
    ]
    config = make_config(targets, spread=SpreadConfig(enabled=True, **spread))
    routing = config.gateway.routing
    return config, Spread(routing.spread, routing, config.catalogue.index)


def ask(
    config: Config, spread: Spread, headers: dict[str, str] | None = None, advance: bool = True
) -> Plan:
    body = {"model": "auto", "messages": [{"role": "user", "content": "hi"}]}
    needs = resolve_needs(body, headers or {}, config)
    routing = config.gateway.routing
    return plan(needs, config.catalogue, routing, spread=spread, advance=advance, explain=False)


def firsts(config: Config, spread: Spread, n: int, **kw: Any) -> Counter[str]:
    return Counter(ask(config, spread, **kw).targets[0].provider for _ in range(n))


def test_equal_deployments_share_exactly_by_weight_interleaved() -> None:
    config, spread = cfg(("a", 1), ("b", 1), ("c", 2))
    order = [ask(config, spread).targets[0].provider for _ in range(8)]
    assert Counter(order) == {"a": 2, "b": 2, "c": 4}
    assert "cc" not in "".join(order[:4])  # smooth: the heavy one is not sent twice in a row
    p = ask(config, spread)
    assert sorted(t.provider for t in p.targets) == ["a", "b", "c"]  # the others stay behind
    [group] = p.spread
    assert dict(zip(group.ids, group.shares, strict=True)) == {
        "a/glm-4-9b": 0.25,
        "b/glm-4-9b": 0.25,
        "c/glm-4-9b": 0.5,
    }


def test_looking_does_not_move_the_round_robin() -> None:
    config, spread = cfg(("a", 1), ("b", 1))
    looked = {ask(config, spread, advance=False).targets[0].provider for _ in range(5)}
    assert len(looked) == 1
    assert ask(config, spread).targets[0].provider in looked


def test_a_busy_member_is_passed_over() -> None:
    config, spread = cfg(("a", 1), ("b", 1), ("c", 2))
    spread.saw({"a/glm-4-9b": 0, "b/glm-4-9b": 1, "c/glm-4-9b": 9}, {})
    # c holds 9 of 10 in flight, far past its half (+ slack): a and b take the requests until
    # what they were sent (counted at once, before the next View) makes c's share its own
    assert firsts(config, spread, 3) == {"a": 2, "b": 1}
    assert firsts(config, spread, 8)["c"] > 0


def test_only_equal_cost_forms_a_group_without_tolerance() -> None:
    config, spread = cfg(("a", 1, (1.0, 1.0)), ("b", 1, (1.04, 1.04)), ("c", 1, (2.0, 2.0)))
    assert ask(config, spread).spread == []
    assert firsts(config, spread, 4) == {"a": 4}


def test_a_tolerance_groups_near_costs_and_keeps_the_rest_behind() -> None:
    config, spread = cfg(
        ("a", 1, (1.0, 1.0)), ("b", 1, (1.04, 1.04)), ("c", 1, (2.0, 2.0)), tolerance=0.05
    )
    p = ask(config, spread)
    assert [g.ids for g in p.spread] == [("a/glm-4-9b", "b/glm-4-9b")]
    assert firsts(config, spread, 4) == {"a": 2, "b": 2}
    assert all(ask(config, spread).targets[2].provider == "c" for _ in range(3))


def test_price_weighted_spreads_by_inverse_square_of_the_cost() -> None:
    config, spread = cfg(
        ("a", 1, (1.0, 1.0)), ("b", 1, (2.0, 2.0)), ("c", 1, (3.0, 3.0)),
        tolerance=2.0, price_weighted=True,
    )  # fmt: skip
    [group] = ask(config, spread).spread
    assert [round(w, 3) for w in group.weights] == [1.0, 0.25, 0.111]  # OpenRouter: 9x A vs C
    got = firsts(config, spread, 136)  # 136 = 9 rounds of the 1 : 1/4 : 1/9 cycle (x 36)
    assert got["a"] > got["b"] > got["c"] > 0
    assert abs(got["a"] / got["c"] - 9) < 1


def test_the_client_provider_order_is_kept() -> None:
    config, spread = cfg(("a", 1), ("b", 1), ("c", 2))
    order = {"x-glm-providers": "b,a,c"}
    for _ in range(4):
        p = ask(config, spread, order)
        assert [t.provider for t in p.targets] == ["b", "a", "c"] and p.spread == []


def test_spread_never_widens_the_fallback_mode() -> None:
    config, spread = cfg(("a", 1), ("b", 1))
    for _ in range(4):
        assert len(ask(config, spread, {"x-glm-fallback": "none"}).targets) == 1
    assert firsts(config, spread, 4, headers={"x-glm-fallback": "none"}) == {"a": 2, "b": 2}


def test_different_variants_of_different_quality_are_not_equivalent() -> None:
    targets = [make_target("a", V), make_target("b", W)]
    config = make_config(targets, spread=SpreadConfig(enabled=True))
    routing = config.gateway.routing
    spread = Spread(routing.spread, routing, config.catalogue.index)
    assert ask(config, spread).spread == []


def test_a_pick_taken_back_leaves_the_round_robin_where_it_was() -> None:
    config, spread = cfg(("a", 1), ("b", 1), ("c", 2))
    plain = [ask(config, spread).targets[0].provider for _ in range(8)]
    config, spread = cfg(("a", 1), ("b", 1), ("c", 2))
    order = []
    for i in range(8):
        p = ask(config, spread)
        order.append(p.targets[0].provider)
        for _ in range(i % 3):  # requests a session's pin sent elsewhere: taken back
            pinned = ask(config, spread)
            spread.unpick(pinned.spread[0], pinned.targets[0].id)
    assert order == plain


def test_a_member_using_its_limits_weighs_its_headroom() -> None:
    config, spread = cfg(("a", 1), ("b", 1), ("c", 2))
    ids = {"a/glm-4-9b": 0, "b/glm-4-9b": 0, "c/glm-4-9b": 0}
    spread.saw(ids, {"c/glm-4-9b": 0.75})  # c used 3/4 of its rpm: weight 2 x 1/4
    got = firsts(config, spread, 50)
    assert got == {"a": 20, "b": 20, "c": 10}, got
    [group] = ask(config, spread, advance=False).spread
    assert dict(zip(group.ids, group.shares, strict=True))["c/glm-4-9b"] == 0.2
    spread.saw(ids, {})  # its window turned: back to its weight
    assert firsts(config, spread, 40) == {"a": 10, "b": 10, "c": 20}
    spread.saw(ids, {"a/glm-4-9b": 0.999})  # nearly full, still in the round-robin
    assert 0 < firsts(config, spread, 200)["a"] < 10

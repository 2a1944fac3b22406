"""A memo hit with nothing blocked and no spread is made as a Plan at once
(:meth:`Plan.unblocked`): every field the same as ``Plan.of(Ranked.of(...))`` gave, and the
same plan as planning afresh."""

from __future__ import annotations

import random
from typing import Any

import pytest

from gateway.catalogue.catalogue import Config
from gateway.errors import GatewayError
from gateway.routing import planner
from gateway.routing.planner import Plan, plan
from gateway.routing.ranking import Ranked
from tests.unit.test_planner_decide import _body, _headers, _needs, _view, quirky, shipped

__all__ = ["quirky", "shipped"]  # fixtures


def _same_fields(got: Plan, old: Plan) -> None:
    assert got.targets == old.targets and got.targets is not got.picked
    assert type(got.targets) is list and got.picked is old.picked
    assert (got.rejected, got.unmet, got.spread) == (old.rejected, old.unmet, old.spread)
    assert _view(got) == _view(old)


@pytest.mark.parametrize("which", ["shipped", "quirky"])
@pytest.mark.parametrize("seed", [1, 2])
def test_a_memo_hit_is_the_plan_of_its_ranked(
    which: str, seed: int, request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> None:
    config: Config = request.getfixturevalue(which)
    cat, routing = config.catalogue, config.gateway.routing
    made: list[tuple[Plan, Plan]] = []
    unblocked = Plan.unblocked

    def spy(trimmed: list[int], picked: Any, ix: Any, scores: Any, basis: str) -> Plan:
        got = unblocked(trimmed, picked, ix, scores, basis)
        made.append((got, Plan.of(Ranked.of(trimmed, picked, ix.targets, scores, basis), [])))
        return got

    monkeypatch.setattr(Plan, "unblocked", spy)
    rng = random.Random(seed)
    models = ["auto", "glm-4", *cat.variants, *config.gateway.aliases]
    planner._memo.clear()
    direct = 0
    for _ in range(300):
        body, headers = _body(rng, models), _headers(rng, sorted(cat.providers))
        try:
            _needs(config, body, headers, None)
        except GatewayError:
            continue
        want = plan(_needs(config, body, headers, None), cat, routing, explain=False, memo=False)
        for _ in range(2):  # filled, then hit
            made.clear()
            got = plan(_needs(config, body, headers, None), cat, routing, explain=False)
            assert got.targets == want.targets and got.unmet == want.unmet
            assert got.rejected == want.rejected and got.spread == want.spread
            assert _view(got) == _view(want)
            if made:
                assert made[0][0] is got
                _same_fields(got, made[0][1])
                direct += 1
    assert direct > 50  # the memo made most of them


def test_each_plan_has_its_own_lists(shipped: Config) -> None:
    # The router and admission may change a plan's lists; the next hit must not see it.
    cat, routing = shipped.catalogue, shipped.gateway.routing
    body = {"model": "auto", "messages": [{"role": "user", "content": "hi"}]}
    planner._memo.clear()
    first = plan(_needs(shipped, body, {}, None), cat, routing, explain=False)
    second = plan(_needs(shipped, body, {}, None), cat, routing, explain=False)
    assert second.picked is first.picked is not None
    for lst in ("targets", "rejected", "unmet", "spread"):
        assert getattr(first, lst) is not getattr(second, lst)
    n = len(second.targets)
    first.targets.clear()
    first.rejected.append(None)  # type: ignore[arg-type]
    third = plan(_needs(shipped, body, {}, None), cat, routing, explain=False)
    assert len(third.targets) == n and third.rejected == [] and third.unmet == []

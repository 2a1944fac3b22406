"""MemoryState.before's latencies for plain candidates are built from the smaller side (the
known latencies or the candidates): the same mapping, in an order that may differ. Order is
not part of it: View.latency_s is only merged into Admission's Snapshot.latency, which the
planner only looks up (``.get``) and tests for emptiness; the second test holds plans equal
under any order of that mapping."""

from __future__ import annotations

import asyncio
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.catalogue.catalogue import Config
from gateway.catalogue.schema import BreakerConfig
from gateway.errors import GatewayError
from gateway.routing.planner import plan
from gateway.state.base import DeploymentAsk, Outcome, Report, Ticket
from gateway.state.memory import MemoryState
from tests.unit.test_planner_decide import _body, _headers, _needs, _view, quirky, shipped

__all__ = ["quirky", "shipped"]  # fixtures

POOL = tuple("abcdefgh")
NOW = 1_000_000.5


@settings(max_examples=300, deadline=None)
@given(
    candidates=st.lists(st.sampled_from(POOL), min_size=1, max_size=8, unique=True),
    seen=st.lists(
        st.tuples(st.sampled_from(POOL), st.floats(0.01, 9, allow_nan=False)), max_size=12
    ),
)
def test_the_latencies_are_the_candidates_known_ones(
    candidates: list[str], seen: list[tuple[str, float]]
) -> None:
    state = MemoryState(BreakerConfig())
    for tid, lat in seen:
        state.apply(Report((Outcome(tid, True, lat),)), NOW - 1)
    ticket = Ticket(tuple(DeploymentAsk(t) for t in candidates), 10)
    for _ in range(2):  # the candidates decided, then known
        view = asyncio.run(state.before(ticket, NOW))
        want = {t: state._circuits[t].latency for t in candidates if t in state._circuits}
        assert view.latency_s == want
        assert view.latency_s == state._look(ticket, {}, NOW)[0]


@pytest.mark.parametrize("few", [0, 1, 3])
def test_named_sides(few: int) -> None:
    # fewer known than asked about, as many, more (some of them for other deployments)
    state = MemoryState(BreakerConfig())
    for i, tid in enumerate(POOL[:few] + ("x", "y")[: few % 2 + 1]):
        state.apply(Report((Outcome(tid, True, 0.1 * (i + 1)),)), NOW - 1)
    for cands in (("a", "b", "c"), ("a",), ("x",), ("c", "b", "a", "d", "e"), ("a", "x", "b", "y")):
        ticket = Ticket(tuple(DeploymentAsk(t) for t in cands), 10)
        got = asyncio.run(state.before(ticket, NOW)).latency_s
        assert got == {t: c.latency for t, c in state._circuits.items() if t in cands}


@pytest.mark.parametrize("which", ["shipped", "quirky"])
def test_plans_do_not_depend_on_the_latencies_order(
    which: str, request: pytest.FixtureRequest
) -> None:
    config: Config = request.getfixturevalue(which)
    cat, routing = config.catalogue, config.gateway.routing
    rng = random.Random(7)
    ids = [t.id for t in cat.targets]
    models = ["auto", "glm-4", *cat.variants, *config.gateway.aliases]
    checked = 0
    for _ in range(200):
        body, headers = _body(rng, models), _headers(rng, sorted(cat.providers))
        headers["x-glm-prefer"] = "latency"
        try:
            _needs(config, body, headers, None)
        except GatewayError:
            continue
        latency = {t: rng.choice([0.1, 0.2, rng.uniform(0.05, 3)]) for t in rng.sample(ids, 8)}
        backwards = dict(reversed(latency.items()))
        for explain in (False, True):
            a = plan(_needs(config, body, headers, None), cat, routing, latency=latency,
                     explain=explain)  # fmt: skip
            b = plan(_needs(config, body, headers, None), cat, routing, latency=backwards,
                     explain=explain)  # fmt: skip
            assert _view(a) == _view(b) and a.rejected == b.rejected and a.unmet == b.unmet
            checked += bool(a.targets)
    assert checked > 100

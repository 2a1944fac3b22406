"""Admission remembers what a ticket says about a plan's first candidates (by their identity,
or by the identity of the planner's shared order the plan was copied from): the asks and the
deployments a pin may put first are what computing them afresh gives."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.catalogue.target import Target
from gateway.routing.affinity import pinnable
from gateway.routing.planner import Plan
from gateway.state.base import DeploymentAsk
from gateway.state.memory import MemoryState
from gateway.tenancy import limits
from gateway.tenancy.limits import Admission
from tests.support.catalogue import make_config, make_target, make_variant

V1, V2 = make_variant("glm-4-9b"), make_variant("glm-4-32b")
TARGETS = [
    make_target("a", V1, rpm=5),
    make_target("b", V1),
    make_target("c", V2, tpm=1000),
    make_target("d", V2),
    make_target("e", V1, rpm=1, tpm=10),
]


def _admission(max_attempts: int) -> Admission:
    config = make_config(TARGETS, max_attempts=max_attempts)
    return Admission(config, MemoryState(config.gateway.breaker))


ADMISSIONS = {n: _admission(n) for n in (1, 2, 3, 8)}


def _plan(targets: list[Target], picked: tuple[Target, ...] | None) -> Plan:
    p = Plan([])
    p.targets, p.picked = list(targets), picked
    return p


def _fresh(targets: list[Target], reach: int) -> tuple[tuple[DeploymentAsk, ...], tuple[str, ...]]:
    asks = tuple(DeploymentAsk(t.id, t.rpm, t.tpm) for t in targets[:reach])
    return asks, pinnable(targets, reach)


@settings(max_examples=300, deadline=None)
@given(
    reach=st.sampled_from(sorted(ADMISSIONS)),
    plans=st.lists(
        st.permutations(TARGETS).flatmap(
            lambda p: st.lists(st.sampled_from(p), max_size=5, unique=True)
        ),
        min_size=1,
        max_size=6,
    ),
)
def test_a_remembered_head_is_what_the_head_gives_afresh(
    reach: int, plans: list[list[Target]]
) -> None:
    admission = ADMISSIONS[reach]
    shared: dict[tuple[str, ...], tuple[Target, ...]] = {}
    for i, targets in enumerate(plans * 3):  # the later times from memory
        # every other plan as the planner's shared order gives it (one tuple per order)
        picked = shared.setdefault(tuple(t.id for t in targets), tuple(targets))
        head = admission._head(_plan(targets, picked if i % 2 else None))
        assert (head.asks, head.movable) == _fresh(targets, reach)


def test_the_heads_kept_are_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    admission = _admission(2)
    monkeypatch.setattr(limits, "HEADS_KEPT", 3)
    for i in range(len(TARGETS)):
        order = TARGETS[i:] + TARGETS[:i]
        admission._head(_plan(order, tuple(order)))
    assert len(admission._heads) <= 3
    assert len(admission._picked) <= 3

"""Admission remembers what a ticket says about a plan's first candidates (by their identity):
the asks and the deployments a pin may put first are what computing them afresh gives."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.catalogue.target import Target
from gateway.routing.affinity import pinnable
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
    for targets in plans * 2:  # the second time from memory
        head = admission._head(targets)
        assert (head.asks, head.movable) == _fresh(targets, reach)


def test_the_heads_kept_are_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    admission = _admission(2)
    monkeypatch.setattr(limits, "HEADS_KEPT", 3)
    for i in range(len(TARGETS)):
        admission._head(TARGETS[i:] + TARGETS[:i])
    assert len(admission._heads) <= 3

"""MemoryState.before's shortcuts (candidates with no limits of their own, decided once per
candidates tuple; no key and no probe: the lease made without ``_take``'s walk) answer what
the general walk answers: the same View, and the same state left behind."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.catalogue.schema import BreakerConfig
from gateway.state.base import DeploymentAsk, Outcome, Pin, Report, Ticket
from gateway.state.memory import MemoryState

IDS = ("a", "b", "c", "d")
NOW = 1_000_000.5


def _general(state: MemoryState) -> MemoryState:
    """``state`` with the shortcuts off: every ticket takes the general walk."""
    state._plain_ids = lambda _candidates: None  # type: ignore[method-assign]
    return state


def _run(coro: Any) -> Any:
    return asyncio.run(coro)


asks = st.builds(
    DeploymentAsk,
    st.sampled_from(IDS),
    st.one_of(st.none(), st.integers(1, 3)),
    st.one_of(st.none(), st.integers(1, 500)),
)
plain_asks = st.builds(DeploymentAsk, st.sampled_from(IDS))


@settings(max_examples=200, deadline=None)
@given(
    candidates=st.lists(
        st.one_of(plain_asks, asks), min_size=1, max_size=4, unique_by=lambda a: a.target_id
    ),
    tokens=st.integers(0, 300),
    reserve=st.booleans(),
    session=st.sampled_from(["", "s1"]),
    pinned=st.sampled_from([None, *IDS]),
    failed=st.lists(st.sampled_from(IDS), max_size=4),
    steps=st.integers(1, 3),
)
def test_before_answers_what_the_general_walk_answers(
    candidates: list[DeploymentAsk],
    tokens: int,
    reserve: bool,
    session: str,
    pinned: str | None,
    failed: list[str],
    steps: int,
) -> None:
    cfg = BreakerConfig(failure_threshold=1, cooldown_s=1)
    quick, slow = MemoryState(cfg), _general(MemoryState(cfg))
    ticket = Ticket(tuple(candidates), tokens, None, reserve, None, session, IDS)
    for state in (quick, slow):
        if pinned is not None:
            state.keep_pin("s1", Pin(pinned, NOW + 60), NOW)
        for tid in failed:  # tripped circuits: open now, half-open (a probe to take) later
            state.apply(Report((Outcome(tid, False, 0.1, "server"),)), NOW - 0.5)
    for step in range(steps):
        now = NOW + step * 0.7
        a, b = _run(quick.before(ticket, now)), _run(slow.before(ticket, now))
        assert a == b
        if a.lease is not None:
            report = Report((Outcome(candidates[0].target_id, True, 0.2),), (), a.lease)
            quick.apply(report, now)
            slow.apply(report, now)
    assert quick._windows.keys() == slow._windows.keys()
    for wid, w in quick._windows.items():
        assert w.buckets == slow._windows[wid].buckets


def test_the_lease_without_a_walk_is_what_take_gives() -> None:
    state = MemoryState(BreakerConfig())
    ticket = Ticket((DeploymentAsk("a"), DeploymentAsk("b")), 120)
    view = _run(state.before(ticket, NOW))
    assert view.lease == state._take(ticket, None, list(ticket.candidates), NOW)


@pytest.mark.parametrize("rpm", [None, 5])
def test_a_deployment_with_limits_is_counted(rpm: int | None) -> None:
    state = MemoryState(BreakerConfig())
    view = _run(state.before(Ticket((DeploymentAsk("a", rpm),), 10), NOW))
    assert view.lease is not None
    assert (view.lease.deployment == "a") is (rpm is not None)

"""The request path's quick makers (:func:`gateway.state.frozen.quick_new`) make exactly what
the classes make: the same fields, defaults, type, equality, hash and frozenness."""

from __future__ import annotations

import dataclasses
import math
import pickle
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.state.base import (
    DeploymentAsk,
    Lease,
    Outcome,
    Pin,
    Report,
    Ticket,
    View,
    new_lease,
    new_report,
    new_ticket,
    new_view,
)

MAKERS: list[tuple[Any, Any]] = [
    (Ticket, new_ticket),
    (Lease, new_lease),
    (View, new_view),
    (Report, new_report),
]
names = st.text("abcdef/-", min_size=1, max_size=8)
maybe_int = st.none() | st.integers(0, 10**6)


def leases() -> st.SearchStrategy[Lease]:
    return st.builds(
        Lease,
        st.none() | names,
        st.integers(0, 2**31),
        st.integers(0, 10**6),
        st.integers(0, 10**6),
        names,
        st.just(math.inf) | st.floats(0, 1e10),
        st.none() | names,
        st.lists(names, max_size=3).map(tuple),
        st.booleans(),
        st.none() | names,
        st.none() | st.tuples(names, names),
    )


def fields_of(obj: Any) -> tuple[Any, ...]:
    return tuple(getattr(obj, f.name) for f in dataclasses.fields(obj))


def same(made: Any, want: Any) -> None:
    assert type(made) is type(want)
    assert fields_of(made) == fields_of(want)
    assert made == want and repr(made) == repr(want)
    with pytest.raises(dataclasses.FrozenInstanceError):
        made.tokens = 1
    assert pickle.loads(pickle.dumps(made)) == want
    assert dataclasses.replace(made) == want


@settings(max_examples=100, deadline=None)
@given(leases())
def test_a_lease_made_quickly_is_the_lease(lease: Lease) -> None:
    made = new_lease(*fields_of(lease))
    same(made, lease)
    assert hash(made) == hash(lease)


@settings(max_examples=100, deadline=None)
@given(
    st.lists(st.builds(DeploymentAsk, names, maybe_int, maybe_int), max_size=4).map(tuple),
    st.integers(0, 10**6),
    st.booleans(),
    names,
    st.lists(names, max_size=3).map(tuple),
)
def test_a_ticket_made_quickly_is_the_ticket(
    asks: tuple[DeploymentAsk, ...], tokens: int, reserve: bool, session: str, movable: Any
) -> None:
    want = Ticket(asks, tokens, None, reserve, None, session, movable)
    made = new_ticket(asks, tokens, None, reserve, None, session, movable)
    same(made, want)
    assert hash(made) == hash(want)


@settings(max_examples=100, deadline=None)
@given(
    st.dictionaries(names, st.floats(0, 100), max_size=3),
    st.none() | leases(),
    st.integers(0, 100),
    st.booleans(),
    st.none() | st.builds(Pin, names, st.floats(0, 1e10)),
)
def test_a_view_made_quickly_is_the_view(
    latency: dict[str, float], lease: Lease | None, version: int, degraded: bool, pin: Pin | None
) -> None:
    args = ({}, latency, {}, None, lease, version, degraded, {}, pin, {})
    same_view = View(*args)
    made = new_view(*args)
    assert type(made) is View and fields_of(made) == fields_of(same_view) and made == same_view
    with pytest.raises(dataclasses.FrozenInstanceError):
        made.pin = None  # type: ignore[misc]


@settings(max_examples=100, deadline=None)
@given(
    st.lists(st.builds(Outcome, names, st.booleans(), st.floats(0, 10)), max_size=3).map(tuple),
    st.lists(names, max_size=3).map(tuple),
    st.none() | leases(),
    st.none() | names,
    st.integers(0, 10**6),
    st.integers(0, 10**6),
)
def test_a_report_made_quickly_is_the_report(
    outcomes: Any, attempts: Any, lease: Lease | None, by: str | None, tokens: int, cost: int
) -> None:
    want = Report(outcomes, attempts, lease, by, tokens, cost)
    made = new_report(outcomes, attempts, lease, by, tokens, cost)
    same(made, want)
    assert hash(made) == hash(want)


@pytest.mark.parametrize(("cls", "new"), MAKERS)
def test_defaults_and_default_factories_are_the_classes(cls: Any, new: Any) -> None:
    made, want = new(), cls()
    assert type(made) is cls and fields_of(made) == fields_of(want)
    for f in dataclasses.fields(cls):
        if f.default_factory is not dataclasses.MISSING:  # a fresh one each time
            assert getattr(made, f.name) is not getattr(new(), f.name)


def test_keywords_land_in_their_fields() -> None:
    made = new_lease(tokens=7, deployment="p/v", slot="s1")
    assert made == Lease(tokens=7, deployment="p/v", slot="s1")
    assert new_view(lease=made, keys_version=3) == View(lease=made, keys_version=3)

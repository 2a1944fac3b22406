"""gateway.state.frozen: the quicker __init__ builds what the dataclass's own would."""

from __future__ import annotations

import dataclasses
import inspect
import pickle
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.state import base

QUICK = [
    base.Outcome,
    base.DeploymentAsk,
    base.KeyAsk,
    base.FlightAsk,
    base.Ticket,
    base.KeyVerdict,
    base.Lease,
    base.Pin,
    base.View,
    base.Report,
]
_VALUE = st.one_of(
    st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), st.text(max_size=5)
)


def _original(cls: Any, *args: Any, **kwargs: Any) -> Any:
    """``cls`` built by the generated dataclass __init__ (kept as ``__wrapped__``)."""
    obj = object.__new__(cls)
    cls.__init__.__wrapped__(obj, *args, **kwargs)
    return obj


@pytest.mark.parametrize("cls", QUICK, ids=lambda c: c.__name__)
def test_the_quick_init_replaced_the_generated_one(cls: Any) -> None:
    assert cls.__init__ is not cls.__init__.__wrapped__
    assert "_twin" in cls.__init__.__code__.co_freevars
    assert inspect.signature(cls) == inspect.signature(cls.__init__.__wrapped__).replace(
        parameters=list(inspect.signature(cls.__init__.__wrapped__).parameters.values())[1:]
    )


@pytest.mark.parametrize("cls", QUICK, ids=lambda c: c.__name__)
@settings(max_examples=60, deadline=None)
@given(data=st.data())
def test_quick_init_builds_what_the_generated_init_builds(cls: Any, data: st.DataObject) -> None:
    fields = dataclasses.fields(cls)
    required = [
        f
        for f in fields
        if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
    ]
    # every required field, then any of the others, some positionally and some by keyword
    upto = data.draw(st.integers(len(required), len(fields)))
    values = [data.draw(_VALUE) for _ in fields[:upto]]
    split = data.draw(st.integers(0, upto))
    args = values[:split]
    kwargs = {f.name: v for f, v in zip(fields[split:upto], values[split:], strict=True)}
    extra = data.draw(st.sets(st.sampled_from([f.name for f in fields[upto:]] or [""])))
    kwargs.update({name: data.draw(_VALUE) for name in extra if name})
    quick, slow = cls(*args, **kwargs), _original(cls, *args, **kwargs)
    assert type(quick) is cls  # given back its class after the twin's writes
    assert quick == slow
    assert repr(quick) == repr(slow)
    assert _hash(quick) == _hash(slow)
    assert [getattr(quick, f.name) for f in fields] == [getattr(slow, f.name) for f in fields]
    assert pickle.loads(pickle.dumps(quick)) == quick
    assert dataclasses.replace(quick) == quick


def _hash(obj: Any) -> int | None:
    """``hash(obj)``, or None when a field holds something unhashable (a dict)."""
    try:
        return hash(obj)
    except TypeError:
        return None


@pytest.mark.parametrize("cls", QUICK, ids=lambda c: c.__name__)
def test_defaults_and_factories_as_the_dataclass_has_them(cls: Any) -> None:
    fields = dataclasses.fields(cls)
    required = [
        f
        for f in fields
        if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
    ]
    args = [object() for _ in required]
    a, b = cls(*args), cls(*args)
    assert a == _original(cls, *args)
    for f in fields:
        if f.default_factory is not dataclasses.MISSING:  # a fresh value per object
            assert getattr(a, f.name) == f.default_factory()
            assert getattr(a, f.name) is not getattr(b, f.name)
    with pytest.raises(dataclasses.FrozenInstanceError):
        setattr(a, fields[0].name, 1)


def test_wrong_calls_fail_as_before() -> None:
    with pytest.raises(TypeError):
        base.Outcome()  # type: ignore[call-arg]
    with pytest.raises(TypeError):
        base.Pin("t", 1.0, 2.0)  # type: ignore[call-arg]
    with pytest.raises(TypeError):
        base.Ticket(nope=1)  # type: ignore[call-arg]


def test_a_twin_shares_its_class_layout_and_nothing_else() -> None:
    lease = base.Lease("k", 1, 2)
    assert type(lease) is base.Lease and not hasattr(lease, "__dict__")
    twin = base.Lease.__init__.__code__.co_freevars.index("_twin")
    cell = base.Lease.__init__.__closure__[twin]  # type: ignore[index]
    assert cell.cell_contents.__slots__ == base.Lease.__slots__
    assert cell.cell_contents is not base.Lease

"""The plain path of the needs resolver (``_plain_needs``) against the general one (``_resolve``).

The usual request (a variant or auto, ``{role, content}`` string messages, maybe ``max_tokens``,
nothing declared) is resolved by a short path that builds :class:`Needs` slot by slot. Over
bodies that are plain, nearly plain and not plain at all, both paths must give the same needs
(every field, the prompt's texts and figures), or the short path must decline and leave the
body, and its error, to the general one.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.catalogue.catalogue import Config
from gateway.catalogue.loader import load_config
from gateway.catalogue.needs import Needs, _plain_needs, _resolve, resolve_needs
from gateway.catalogue.schema import RouteAlias
from gateway.errors import GatewayError
from tests.support.procs import CONFIG

_CONFIG = load_config(CONFIG, demo_simulator_url="http://127.0.0.1:9")
_VARIANT = next(iter(_CONFIG.catalogue.variants))
_ALIAS = next(iter(_CONFIG.gateway.aliases))
# The loader refuses an alias named like a variant or auto; a config built in code may have one
# (the general path then pins the variant and applies the alias): the plain path must decline.
# It also takes two messages at most.
_CLASHING = dataclasses.replace(
    _CONFIG,
    gateway=_CONFIG.gateway.model_copy(
        update={
            "limits": _CONFIG.gateway.limits.model_copy(update={"max_messages": 2}),
            "aliases": {
                **_CONFIG.gateway.aliases,
                _VARIANT: RouteAlias(policy="quality"),
                "auto": RouteAlias(fallback="none"),
            },
        }
    ),
)


@pytest.fixture(scope="module")
def config() -> Config:
    return _CONFIG


_TEXT = st.one_of(st.text(max_size=12), st.sampled_from(["", "\ud800", "中文", "é"]))
_VALUE = st.one_of(_TEXT, st.none(), st.integers(), st.booleans(), st.lists(st.just({})))
_PLAIN = st.fixed_dictionaries(
    {"role": st.sampled_from(["system", "user", "assistant"]), "content": _TEXT}
)
_NEAR = st.one_of(  # (NEAR_MISSES below names each kind once)
    st.fixed_dictionaries({"role": _VALUE, "content": _VALUE}),  # not strings
    st.fixed_dictionaries({"content": _TEXT, "role": _TEXT}),  # the other key order
    st.fixed_dictionaries({"role": _TEXT, "name": _TEXT}),  # two keys, not content
    st.fixed_dictionaries({"content": _TEXT, "name": _TEXT}),  # two keys, not role
    st.fixed_dictionaries({"role": _TEXT, "content": _TEXT, "name": _TEXT}),
    st.fixed_dictionaries({"role": _TEXT, "content": st.just([{"type": "text", "text": "x"}])}),
    st.sampled_from([None, "hi", ["role", "content"], {}]),
)
_MESSAGES = st.one_of(
    st.lists(_PLAIN, min_size=1, max_size=4),
    st.lists(st.one_of(_PLAIN, _NEAR), min_size=1, max_size=4),
    st.sampled_from([[], None, "hi", {"role": "user"}]),
)
_MODEL = st.sampled_from(["auto", "glm-4", _VARIANT, _ALIAS, "nope", "", 5, None])
_BLOCKER = st.sampled_from(
    [
        {"tools": [{"type": "function", "function": {"name": "f"}}]},
        {"tool_choice": "required"},
        {"route": {"prefer": "quality"}},
        {"max_completion_tokens": 64},
        {"response_format": {"type": "json_object"}},
        {"functions": []},
    ]
)
_EXTRA = st.tuples(
    st.fixed_dictionaries(
        {},
        optional={
            "max_tokens": st.one_of(
                st.integers(-2, 10**6), st.sampled_from([True, 1.5, "9", None])
            ),
            "stream": st.booleans(),
            "temperature": st.floats(0, 2),
        },
    ),
    st.one_of(st.just({}), st.just({}), _BLOCKER),
).map(lambda pair: {**pair[0], **pair[1]})
_HEADERS = st.sampled_from([{}, {}, {"x-glm-prefer": "quality"}, {"user-agent": "x"}])


def _same(got: Needs, want: Needs) -> None:
    names = [f.name for f in dataclasses.fields(Needs) if f.name != "prompt"]
    assert {n: getattr(got, n) for n in names} == {n: getattr(want, n) for n in names}
    g, w = got.prompt, want.prompt
    assert g._texts == w._texts  # order too: a counter remembers them in it
    assert (g.upper, g.best, g.method, g._fixed, g._exact) == (
        w.upper,
        w.best,
        w.method,
        w._fixed,
        w._exact,
    )
    assert g._counter is w._counter


def _outcome(fn: Any, *args: Any) -> Needs | tuple[type, str, str | None, str | None, int]:
    try:
        return fn(*args)  # type: ignore[no-any-return]
    except GatewayError as err:
        return type(err), err.message, err.param, err.code, err.status


def _both(body: dict[str, Any], headers: dict[str, str], config: Config) -> None:
    got = _outcome(resolve_needs, body, headers, config)
    want = _outcome(_resolve, body, headers, config)
    if isinstance(want, Needs):
        assert isinstance(got, Needs)
        _same(got, want)
    else:
        assert got == want  # the same error: class, message, param, code, status


_CONFIGS = {"shipped": _CONFIG, "clashing": _CLASHING}


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    config=st.sampled_from(sorted(_CONFIGS)),
    model=_MODEL,
    messages=_MESSAGES,
    extra=_EXTRA,
    headers=_HEADERS,
)
def test_the_plain_path_resolves_as_the_general_one(
    config: str, model: Any, messages: Any, extra: dict[str, Any], headers: dict[str, str]
) -> None:
    _both({"model": model, "messages": messages, **extra}, headers, _CONFIGS[config])


_USER = {"role": "user", "content": "hi"}
NEAR_MISSES: list[tuple[str, dict[str, Any]]] = [
    ("shipped", {"messages": [_USER, {"content": "x", "name": "y"}]}),
    ("shipped", {"messages": [{"role": "user", "name": "y"}]}),
    ("shipped", {"messages": ["hi"]}),
    ("shipped", {"messages": [_USER, ["role", "content"]]}),
    ("shipped", {"messages": [{"role": None, "content": "x"}]}),
    ("shipped", {"messages": [{"role": "user", "content": 5}]}),
    ("shipped", {"messages": [{"role": "assistant", "content": None}]}),
    ("shipped", {"messages": [{"role": "user", "content": [{"type": "text", "text": "x"}]}]}),
    ("shipped", {"messages": [{"role": "user", "content": "x", "name": "n"}]}),
    ("shipped", {"messages": []}),
    ("shipped", {"messages": None}),
    ("shipped", {"messages": {"role": "user", "content": "x"}}),
    ("shipped", {"messages": (_USER,)}),
    ("shipped", {"messages": [{"role": "user", "image_url": "https://x/a.png"}]}),
    ("shipped", {"messages": [{"role": "user", "tool_calls": "x"}]}),
    ("shipped", {"messages": [{"role": "user", "content": "x", "image_url": "https://x/a.png"}]}),
    ("shipped", {"messages": [{"role": "user", "content": "x", "tool_calls": "x"}]}),
    ("clashing", {"model": "glm-4", "messages": [_USER, _USER, _USER]}),
    ("clashing", {"model": "glm-4", "messages": [_USER, _USER]}),
    ("clashing", {"model": _VARIANT}),
    ("shipped", {"model": _VARIANT}),
    ("shipped", {"model": _ALIAS}),
    ("shipped", {"model": "nope"}),
    ("shipped", {"model": ""}),
    ("shipped", {"model": None}),
    ("shipped", {"model": ["auto"]}),
    ("shipped", {"max_tokens": True}),
    ("shipped", {"max_tokens": 0}),
    ("shipped", {"max_tokens": -1}),
    ("shipped", {"max_tokens": 1.5}),
    ("shipped", {"max_tokens": "9"}),
    ("shipped", {"max_tokens": None}),
    ("shipped", {"max_tokens": 7}),
]


@pytest.mark.parametrize(("config", "change"), NEAR_MISSES)
def test_near_misses_resolve_as_the_general_path_does(config: str, change: dict[str, Any]) -> None:
    _both({"model": "auto", "messages": [_USER], **change}, {}, _CONFIGS[config])


def test_the_usual_body_takes_the_plain_path(config: Config) -> None:
    body = {
        "model": "auto",
        "messages": [{"role": "system", "content": "Be brief."}, {"content": "Hi", "role": "user"}],
        "max_tokens": 256,
    }
    got = _plain_needs(body, config)
    assert got is not None
    _same(got, _resolve(body, {}, config))
    pinned = _plain_needs({**body, "model": _VARIANT, "stream": True}, config)
    assert pinned is not None and pinned.pinned == _VARIANT and pinned.fallback == "providers"
    _same(pinned, _resolve({**body, "model": _VARIANT}, {}, config))


@pytest.mark.parametrize(
    "change",
    [
        {"model": _ALIAS},
        {"max_tokens": True},
        {"max_tokens": 0},
        {"messages": [{"role": "user", "content": None}]},
        {"messages": [{"role": "user", "content": [{"type": "text", "text": "x"}]}]},
        {"messages": [{"role": 1, "content": "x"}]},
    ],
)
def test_the_plain_path_declines_what_it_does_not_handle(
    config: Config, change: dict[str, Any]
) -> None:
    body = {"model": "auto", "messages": [{"role": "user", "content": "hi"}], **change}
    assert _plain_needs(body, config) is None


def test_every_field_of_the_plain_needs_is_set(config: Config) -> None:
    """Built slot by slot: a field added to :class:`Needs` and not set there fails here."""
    got = _plain_needs({"model": "auto", "messages": [{"role": "user", "content": "x"}]}, config)
    assert got is not None
    for f in dataclasses.fields(Needs):
        getattr(got, f.name)  # AttributeError when the plain path misses one
    assert dataclasses.replace(got) == got
    assert (
        got.extra == {}
        and got.extra
        is not _plain_needs(
            {"model": "auto", "messages": [{"role": "user", "content": "x"}]}, config
        ).extra
    )  # type: ignore[union-attr]

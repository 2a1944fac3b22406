"""``adapt_request``'s short path (a body of fields no rule reads but a capped ``max_tokens``)
against its general path: the same upstream body, field order included, and the same changes,
on every shipped deployment; and the short path is the one the usual body takes."""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.catalogue.loader import default_config_dir, load_config
from gateway.catalogue.target import Target
from gateway.providers.dialects import request as rq
from gateway.providers.dialects.spec import DIALECTS, DialectSpec, spec_for

CONFIG = load_config(default_config_dir(), demo_simulator_url="http://127.0.0.1:9")
TARGETS = sorted(CONFIG.catalogue.targets, key=lambda t: t.id)
# One deployment per dialect, each with a max output and without (the cap needs one).
PICKED = sorted(
    {(t.dialect, t.max_output is None): t for t in TARGETS}.values(), key=lambda t: t.id
)
# Dialects no host ships yet, for the rules' corners: field rules without the cap, the cap of a
# field the host also refuses, max_tokens_only alone.
EXTRA_SPECS = (
    DialectSpec("test-temps", temperature_range=(0.0, 1.0)),
    DialectSpec("test-dropped-cap", cap_max_tokens=True, drop_fields=("max_tokens", "n")),
    DialectSpec("test-mto", max_tokens_only=True, user_field="user_id"),
)
_ZAI = next(t for t in TARGETS if t.dialect == "zhipu")
PICKED += [dataclasses.replace(_ZAI, dialect=s.name) for s in EXTRA_SPECS]  # type: ignore[arg-type]


@contextmanager
def extra_dialects() -> Iterator[None]:
    DIALECTS.update({s.name: s for s in EXTRA_SPECS})
    try:
        yield
    finally:
        for s in EXTRA_SPECS:
            del DIALECTS[s.name]


TEXT = {"role": "user", "content": "hi"}
IMAGE = {
    "role": "user",
    "content": [{"type": "image_url", "image_url": {"url": "https://x/a.png", "detail": "low"}}],
}
_QUIET = st.fixed_dictionaries(
    {"messages": st.lists(st.sampled_from([TEXT, IMAGE]), min_size=1, max_size=3)},
    optional={
        "model": st.sampled_from(["auto", "glm-4.7"]),
        "max_tokens": st.one_of(st.integers(1, 10**7), st.sampled_from([True, "9", None, 2.5])),
        "stream": st.sampled_from([True, False, None]),
        "stream_options": st.sampled_from([{"include_usage": False}, {"include_usage": True}]),
        "metadata": st.just({"a": "b"}),
    },
)
_OTHER = st.sampled_from(
    [
        {"temperature": 1.7},
        {"temperature": 0.5},
        {"max_completion_tokens": 10**7},
        {"n": 2},
        {"n": 1},
        {"user": "user-123456"},
        {"thinking": {"type": "disabled"}},
        {"reasoning_effort": "high"},
        {"tools": [{"type": "function", "function": {"name": "f", "strict": True}}]},
        {"api_base": "http://x"},
        {"route": {"prefer": "cost"}},
    ]
)
_FIELDS = st.tuples(_QUIET, st.lists(_OTHER, max_size=2)).map(
    lambda pair: {k: v for d in [pair[0], *pair[1]] for k, v in d.items()}
)


def general(body: dict[str, Any], target: Target, parts: bool) -> tuple[dict[str, Any], list[str]]:
    """What the general path makes of ``body`` (the stream step too; no ``request_id``)."""
    spec = spec_for(target)
    out, changes = rq._adapted(body, target, spec, parts)
    if out.get("stream") is True:
        rq._stream_options(out, spec)
    return out, changes


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(body=_FIELDS, target=st.sampled_from(PICKED), parts=st.booleans())
def test_the_short_path_adapts_as_the_general_one(
    body: dict[str, Any], target: Target, parts: bool
) -> None:
    before = copy.deepcopy(body)
    with extra_dialects():
        got, changes = rq.adapt_request(body, target, parts)
        assert (got.pop("request_id", None) is not None) == spec_for(target).request_id
        want, want_changes = general(copy.deepcopy(body), target, parts)
    assert body == before  # the client's body is never mutated
    assert list(got.items()) == list(want.items())
    assert changes == want_changes


@pytest.mark.parametrize("target", PICKED, ids=lambda t: t.id)
@pytest.mark.parametrize("max_tokens", [None, 16, 10**7])
def test_the_usual_body_takes_the_short_path(
    target: Target, max_tokens: int | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    body: dict[str, Any] = {"model": "auto", "messages": [TEXT], "stream": True}
    if max_tokens is not None:
        body["max_tokens"] = max_tokens
    with extra_dialects():
        want = general(body, target, False)
        if max_tokens is not None and "max_tokens" in spec_for(target).drop_fields:
            return  # (a dialect that drops max_tokens takes the general path)
        monkeypatch.setattr(rq, "_adapted", None)  # the general path would fail now
        got, changes = rq.adapt_request(body, target, False)
    got.pop("request_id", None)
    assert (list(got.items()), changes) == (list(want[0].items()), want[1])


def test_request_ids_are_the_prefix_and_sixteen_hex_digits_of_a_count() -> None:
    first = rq.adapt_request({"messages": [TEXT]}, _zhipu(), False)[0]["request_id"]
    second = rq.adapt_request({"messages": [TEXT]}, _zhipu(), False)[0]["request_id"]
    assert first[:16] == second[:16] == rq._ATTEMPT_PREFIX
    assert len(first) == len(second) == 32
    assert int(second[16:], 16) == int(first[16:], 16) + 1
    assert f"{int(first[16:], 16):016x}" == first[16:]


def _zhipu() -> Target:
    return next(t for t in TARGETS if spec_for(t).request_id)

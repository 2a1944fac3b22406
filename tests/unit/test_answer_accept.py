"""``Router._accept`` with ``parse_answer`` written out: every answer, odd ones included, gets
what the helper gave (the same failure, or the same bytes and the same record)."""

from __future__ import annotations

from typing import Any

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.catalogue.loader import load_config
from gateway.catalogue.target import Target
from gateway.providers.base import UpstreamResponse
from gateway.providers.dialects import normalise_response
from gateway.routing import failures as fl
from gateway.routing.answers import parse_answer
from gateway.routing.planner import Plan
from gateway.routing.router import Router, RouteState
from gateway.state.memory import MemoryState
from tests.support.procs import CONFIG

CONF = load_config(CONFIG, demo_simulator_url="http://127.0.0.1:9")
TARGETS = CONF.catalogue.targets


def _reference(
    router: Router, resp: UpstreamResponse, target: Target, rs: RouteState, changes: list[str]
) -> bytes | fl.Failure:
    """``_accept`` (no schema, encoded) as it was, through ``parse_answer``."""
    obj = parse_answer(resp.body, resp.headers)
    if isinstance(obj, fl.Failure):
        return obj
    choices = obj["choices"]
    choice = choices[0] if choices and isinstance(choices[0], dict) else None
    fr = choice.get("finish_reason") if choice else None
    failure = fl.classify_finish_reason(fr) if isinstance(fr, str) else None
    if failure is not None and failure.cls is not fl.FailureClass.CONTENT_FILTER:
        return failure
    normalise_response(obj, target)
    router._succeeded(rs, target, 200, 0.0, changes)
    usage = obj.get("usage")
    rs.usage = usage if isinstance(usage, dict) else None
    return orjson.dumps(obj)


scalars = st.one_of(
    st.none(), st.booleans(), st.integers(-3, 3), st.text(max_size=4), st.just("stop")
)
json_values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3),
        st.dictionaries(
            st.sampled_from(["choices", "error", "usage", "message", "finish_reason", "x"]),
            inner,
            max_size=3,
        ),
    ),
    max_leaves=8,
)
choices = st.lists(
    st.one_of(
        st.fixed_dictionaries(
            {},
            optional={
                "index": st.just(0),
                "finish_reason": st.one_of(
                    st.sampled_from(["stop", "length", "sensitive", "network_error"]), scalars
                ),
                "message": st.one_of(
                    st.fixed_dictionaries({"role": st.just("assistant"), "content": scalars}),
                    json_values,
                ),
            },
        ),
        json_values,
    ),
    max_size=2,
)
answers = st.one_of(
    json_values.map(orjson.dumps),
    st.fixed_dictionaries(
        {"choices": st.one_of(choices, json_values)},
        optional={
            "usage": st.one_of(json_values, st.just({"prompt_tokens": 3, "completion_tokens": 4})),
            "error": json_values,
            "model": st.just("upstream"),
        },
    ).map(orjson.dumps),
    st.sampled_from(
        [
            b"",
            b"   ",
            b"not json",
            b"null",
            b"[]",
            b'"choices"',
            b'{"choices": []}',
            b'{"choices": null}',
            b'{"error": {"code": "1302", "message": "busy"}}',
            b'{"error": {"code": "1113", "message": "no balance"}, "choices": "x"}',
            b'{"choices": [1, 2]}',
            b'{"choices": [{"finish_reason": "network_error"}]}',
            b'{"choices": [{"message": {"content": "hi"}}]',
            b"\xef\xbb\xbf{}",
            b'{"choices": [], "choices": {}}',
            b'{"choices": {}, "choices": []}',
            b"\xff\xfe",
        ]
    ),
    st.binary(max_size=12),
)


@settings(max_examples=600, deadline=None)
@given(answers, st.sampled_from(TARGETS), st.sampled_from([{}, {"content-type": "text/plain"}]))
def test_accept_is_parse_answers(body: bytes, target: Target, headers: dict[str, str]) -> None:
    router = Router(CONF, {}, MemoryState(CONF.gateway.breaker), clock=lambda: 2.0)
    got: list[Any] = []
    for fast in (True, False):
        rs = RouteState(Plan(candidates=[]))
        resp = UpstreamResponse(200, headers, body)
        if fast:
            out = router._accept(resp, target, rs, ["x"], 0.0)
        else:
            out = _reference(router, resp, target, rs, ["x"])
        got.append((out, rs.attempts, rs.outcomes, rs.target, rs.adaptations, rs.usage))
    assert got[0] == got[1]


def test_named_odd_answers() -> None:
    router = Router(CONF, {}, MemoryState(CONF.gateway.breaker), clock=lambda: 2.0)
    target = TARGETS[0]
    for body, cls, message in [
        (b"not json", fl.FailureClass.TRANSIENT, "upstream sent invalid JSON"),
        (b"[]", fl.FailureClass.TRANSIENT, "upstream answer has no choices"),
        (b'{"choices": {}}', fl.FailureClass.TRANSIENT, "upstream answer has no choices"),
    ]:
        rs = RouteState(Plan(candidates=[]))
        out = router._accept(UpstreamResponse(200, {}, body), target, rs, [], 0.0)
        assert isinstance(out, fl.Failure)
        assert (out.cls, out.message) == (cls, message)
        assert rs.attempts == [] and rs.outcomes == []
    busy = b'{"error": {"code": "1302", "message": "busy"}}'
    out = router._accept(UpstreamResponse(200, {}, busy), target, RouteState(Plan([])), [], 0.0)
    assert isinstance(out, fl.Failure) and out.cls is fl.FailureClass.RATE_LIMIT

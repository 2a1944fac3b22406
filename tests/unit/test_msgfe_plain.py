"""The Messages front-end's fast paths give what its general paths give.

``to_chat`` answers the plainest bodies from ``_plain`` (string system, string turns that
alternate): every body here, fast or not, must translate (or fail) exactly as ``_general``
does, chat key order included (it is the upstream body's byte order). ``from_chat`` and
``usage`` skip work for a text-only answer and a plain count: held equal to the general
pieces (``_blocks``, ``matched_stop``, ``_count``).
"""

from __future__ import annotations

import itertools
import re
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.errors import GatewayError
from gateway.frontends.messages import ClaudeModels, _general, _mapped, _model, _plain, to_chat
from gateway.frontends.messages_answer import (
    _blocks,
    _count,
    from_chat,
    matched_stop,
    stop_reason,
    usage,
)
from gateway.frontends.messages_frontend import MessagesFrontEnd

KEY = b"test-thinking-key"
TABLES: list[Any] = [
    {"claude-opus-4-8": "glm-4.7", "claude-haiku": "glm-4.5-air"},
    ClaudeModels({"claude-sonnet": "glm-4.6", "*": "auto"}),
]
PLAIN = {
    "model": "claude-opus-4-8",
    "system": "Be brief.",
    "messages": [{"role": "user", "content": "Hi"}],
    "max_tokens": 256,
}


def outcome(fn: Any, *args: Any) -> Any:
    """A translation's request as comparable values (chat as bytes: key order counts), or
    its error's class, message, param and code."""
    try:
        req = fn(*args)
    except GatewayError as err:
        return ("error", type(err), err.message, err.param, err.code)
    return (orjson.dumps(req.chat), req.requested_model, req.max_tokens, req.stream,
            req.context_need, req.stop_sequences, req.ignored)  # fmt: skip


def same(body: dict[str, Any], models: Any) -> None:
    fast = outcome(lambda: to_chat(body, models, thinking_key=KEY))
    general = outcome(lambda: _general(body, models, KEY))
    assert fast == general


texts = st.sampled_from(["", "Hi", "claude-opus-4-8", "a\n\nb", "é ✓"])
roles = st.sampled_from(["user", "assistant", "system", "bot", None])
content = st.one_of(
    texts,
    st.lists(st.fixed_dictionaries({"type": st.just("text"), "text": texts}), max_size=2),
    st.none(),
    st.integers(),
)
turn = st.one_of(
    st.fixed_dictionaries({"role": roles, "content": content}),
    st.fixed_dictionaries(
        {"role": roles, "content": content},
        optional={"cache_control": st.sampled_from([None, {"type": "ephemeral"}]), "x": texts},
    ),
    st.builds(lambda c: {"content": c}, content),
    texts,
)
models = st.sampled_from(
    ["claude-opus-4-8", "claude-sonnet-4-5[1m]", "glm-4.7", "auto", "", "[1m]", "claude-haiku"]
)
bodies = st.fixed_dictionaries(
    {},
    optional={
        "model": st.one_of(models, st.none(), st.integers()),
        "max_tokens": st.one_of(
            st.integers(-2, 70_000), st.sampled_from([256.0, 0.5, True, "256", None])
        ),
        "stream": st.sampled_from([True, False, None, 1, "true"]),
        "system": st.one_of(
            texts,
            st.none(),
            st.lists(st.fixed_dictionaries({"type": st.just("text"), "text": texts}), max_size=2),
        ),
        "messages": st.one_of(st.lists(turn, max_size=5), st.none(), texts),
        "temperature": st.sampled_from([0.5, 2.0, None]),
        "metadata": st.sampled_from([{"user_id": "u"}, None]),
        "cache_control": st.sampled_from([None, {"type": "ephemeral"}]),
        "service_tier": st.sampled_from(["auto", None]),
        "zzz": st.just(1),
    },
)


@settings(max_examples=600, deadline=None)
@given(bodies, st.sampled_from(TABLES))
def test_to_chat_equals_general_for_any_body(body: dict[str, Any], table: Any) -> None:
    same(body, table)


@settings(max_examples=300, deadline=None)
@given(
    st.lists(st.sampled_from(["user", "assistant"]), min_size=1, max_size=6),
    texts,
    st.one_of(st.none(), texts),
    st.booleans(),
    st.integers(1, 70_000),
    models,
    st.sampled_from(TABLES),
)
def test_plain_bodies_take_the_fast_path_and_equal_general(
    order: list[str],
    text: str,
    system: str | None,
    stream: bool,
    max_tokens: int,
    model: str,
    table: Any,
) -> None:
    body: dict[str, Any] = {
        "model": model,
        "messages": [{"role": r, "content": f"{text}{i}"} for i, r in enumerate(order)],
        "max_tokens": max_tokens,
        "stream": stream,
    }
    if system is not None:
        body["system"] = system
    same(body, table)
    alternating = all(a != b for a, b in itertools.pairwise(order))
    if model and model != "[1m]":
        assert (_plain(body, table) is not None) == alternating


@pytest.mark.parametrize(
    ("patch", "fast"),
    [
        ({}, True),
        ({"stream": True}, True),
        ({"system": None}, True),
        ({"system": ""}, True),
        ({"model": "claude-sonnet-4-5[1m]"}, True),
        ({"max_tokens": 1}, True),
        ({"max_tokens": 256.0}, False),  # general: an integral float is an int
        ({"max_tokens": 0}, False),
        ({"max_tokens": True}, False),
        ({"stream": None}, False),
        ({"stream": 1}, False),
        ({"system": [{"type": "text", "text": "Be brief."}]}, False),
        ({"messages": []}, False),
        ({"messages": [{"role": "user", "content": "a"}, {"role": "user", "content": "b"}]}, False),
        ({"messages": [{"role": "user", "content": ""}, {"role": "user", "content": ""}]}, False),
        ({"messages": [{"role": "system", "content": "s"}]}, False),
        ({"messages": [{"role": "user", "content": "a", "cache_control": None}]}, False),
        ({"messages": [{"role": "user", "content": [{"type": "text", "text": "a"}]}]}, False),
        ({"temperature": 0.5}, False),
        ({"cache_control": {"type": "ephemeral"}}, False),
        ({"model": ""}, False),
    ],
)
def test_named_bodies(patch: dict[str, Any], fast: bool) -> None:
    body = {**PLAIN, **patch}
    for table in TABLES:
        same(body, table)
        assert (_plain(body, table) is not None) == fast


def test_plain_golden() -> None:
    req = to_chat({**PLAIN, "stream": True}, TABLES[0], thinking_key=KEY)
    assert orjson.dumps(req.chat) == (
        b'{"model":"glm-4.7","messages":[{"role":"system","content":"Be brief."},'
        b'{"role":"user","content":"Hi"}],"max_tokens":256,"stream":true,'
        b'"thinking":{"type":"disabled"}}'
    )
    assert (req.requested_model, req.stop_sequences, req.ignored) == ("claude-opus-4-8", [], [])


def test_plain_messages_are_new_dicts() -> None:
    """The native body keeps the client's turns: the chat body must not share them."""
    body = {**PLAIN, "messages": [{"role": "user", "content": "Hi"}]}
    req = to_chat(body, TABLES[0], thinking_key=KEY)
    assert req.chat["messages"][1] is not body["messages"][0]


# --- the answer --------------------------------------------------------------------------


def reference(answer: dict[str, Any], stops: list[str] | None) -> dict[str, Any]:
    """``from_chat`` by its general pieces only (the id left out: it is fresh each time)."""
    choices = answer.get("choices")
    choice = choices[0] if isinstance(choices, list) and choices else {}
    choice = choice if isinstance(choice, dict) else {}
    msg = choice.get("message")
    msg = msg if isinstance(msg, dict) else {}
    text = msg.get("content")
    text = text if isinstance(text, str) else ""
    blocks = _blocks(msg, text, KEY)
    tool_use = any(b["type"] == "tool_use" for b in blocks)
    sequence = None if tool_use else matched_stop(choice, text, stops)
    reason = stop_reason(choice.get("finish_reason"), tool_use=tool_use, sequence=sequence)
    return {
        "type": "message",
        "role": "assistant",
        "model": "m",
        "content": blocks,
        "stop_reason": reason,
        "stop_sequence": sequence if reason == "stop_sequence" else None,
        "stop_details": None,
        "container": None,
        "usage": reference_usage(answer.get("usage")),
    }


def reference_usage(raw: Any, estimate: int = 0) -> dict[str, Any]:
    u = raw if isinstance(raw, dict) else {}
    prompt = _count(u.get("prompt_tokens"))
    details = u.get("prompt_tokens_details")
    cached = _count(details.get("cached_tokens")) if isinstance(details, dict) else None
    return {
        "input_tokens": estimate if prompt is None else max(prompt - (cached or 0), 0),
        "output_tokens": _count(u.get("completion_tokens")) or 0,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": cached or 0,
        "cache_creation": None,
        "inference_geo": None,
        "output_tokens_details": None,
        "server_tool_use": None,
        "service_tier": None,
    }


counts = st.one_of(st.none(), st.integers(-3, 10**12), st.booleans(), st.sampled_from([1.0, "7"]))
calls = st.lists(
    st.fixed_dictionaries(
        {"id": st.sampled_from(["call_1", "x y"]), "function": st.just({"name": "f"})}
    ),
    max_size=2,
)
messages = st.fixed_dictionaries(
    {},
    optional={
        "content": st.one_of(texts, st.none(), st.integers()),
        "reasoning_content": st.one_of(texts, st.none(), st.just(["x"]), st.just(0)),
        "tool_calls": st.one_of(calls, st.none(), st.just("x"), st.just([1])),
    },
)
answers = st.fixed_dictionaries(
    {},
    optional={
        "choices": st.one_of(
            st.lists(
                st.fixed_dictionaries(
                    {},
                    optional={
                        "message": st.one_of(messages, st.none()),
                        "finish_reason": st.sampled_from(["stop", "length", None]),
                        "stop_reason": st.sampled_from(["END", None]),
                    },
                ),
                max_size=1,
            ),
            st.none(),
        ),
        "usage": st.one_of(
            st.none(),
            st.fixed_dictionaries(
                {},
                optional={
                    "prompt_tokens": counts,
                    "completion_tokens": counts,
                    "prompt_tokens_details": st.fixed_dictionaries({"cached_tokens": counts}),
                },
            ),
        ),
    },
)
ID = re.compile(r"msg_[0-9a-f]{24}")


def answered(answer: dict[str, Any], stops: list[str] | None) -> dict[str, Any]:
    got = from_chat(answer, "m", stop_sequences=stops, thinking_key=KEY)
    assert ID.fullmatch(got.pop("id"))
    return got


@settings(max_examples=600, deadline=None)
@given(answers, st.sampled_from([None, [], ["END"], ["0", "i"]]))
def test_from_chat_equals_its_general_pieces(answer: dict[str, Any], stops: Any) -> None:
    assert answered(answer, stops) == reference(answer, stops)


@settings(max_examples=400, deadline=None)
@given(counts, counts, counts, st.sampled_from([0, 5]))
def test_usage_equals_counted(prompt: Any, completion: Any, cached: Any, estimate: int) -> None:
    raw = {"prompt_tokens": prompt, "completion_tokens": completion}
    assert usage(raw, estimate) == reference_usage(raw, estimate)
    raw["prompt_tokens_details"] = {"cached_tokens": cached}
    assert usage(raw, estimate) == reference_usage(raw, estimate)


@pytest.mark.parametrize(
    "raw",
    [
        {"prompt_tokens": 17, "completion_tokens": 22},
        {"prompt_tokens": -1, "completion_tokens": -1},
        {"prompt_tokens": True, "completion_tokens": False},
        {"prompt_tokens": 9, "prompt_tokens_details": {"cached_tokens": 4}},
        {"prompt_tokens": 3.0},
        None,
    ],
)
def test_named_usage(raw: Any) -> None:
    for estimate in (0, 5):
        assert usage(raw, estimate) == reference_usage(raw, estimate)


@pytest.mark.parametrize(
    "msg",
    [
        {"content": "Hello"},
        {"content": ""},
        {"content": None, "reasoning_content": ""},
        {"content": "a", "reasoning_content": "why"},
        {"content": "a", "tool_calls": [{"id": "call_1", "function": {"name": "f"}}]},
        {"content": "a", "tool_calls": []},
    ],
)
def test_named_answers(msg: dict[str, Any]) -> None:
    for usage_raw in ({"prompt_tokens": 17, "completion_tokens": 22}, {"prompt_tokens": -1}):
        answer = {"choices": [{"message": msg, "finish_reason": "stop"}], "usage": usage_raw}
        assert answered(answer, None) == reference(answer, None)


def test_bench_answer_golden() -> None:
    answer = {
        "choices": [{"message": {"role": "assistant", "content": "Hi"}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 17, "completion_tokens": 22, "total_tokens": 39},
    }
    got = answered(answer, None)
    assert got["content"] == [{"type": "text", "text": "Hi", "citations": None}]
    assert (got["stop_reason"], got["usage"]["input_tokens"], got["usage"]["output_tokens"]) == (
        "end_turn",
        17,
        22,
    )


# --- parse ------------------------------------------------------------------------------


@pytest.mark.parametrize("max_tokens", [256, 32000, 32001])
@pytest.mark.parametrize("extra", [{}, {"service_tier": "auto"}])
def test_parse_headers_and_clamp(max_tokens: int, extra: dict[str, Any]) -> None:
    fe = MessagesFrontEnd({"claude-opus-4-8": "glm-4.7"}, KEY, max_output=32000)
    body = {**PLAIN, "max_tokens": max_tokens, **extra}
    inbound = fe.parse(body, {"anthropic-beta": "context-1m-2025-08-07"})
    clamped = ["max_tokens=clamped:32000"] if max_tokens > 32000 else []
    report = ["service_tier=ignored"] * bool(extra) + clamped
    assert inbound.headers == ([("x-glm-ignored", ",".join(report))] if report else [])
    assert inbound.native_headers == [("x-glm-ignored", c) for c in clamped]
    assert inbound.chat["max_tokens"] == min(max_tokens, 32000)
    assert inbound.min_context == 200_000
    assert inbound.native is not None
    sent = inbound.native.body(type("T", (), {"model": "glm-4.7"})())  # type: ignore[arg-type]
    assert sent["max_tokens"] == min(max_tokens, 32000)
    assert body["max_tokens"] == max_tokens  # the client's body is not changed
    assert (inbound.stream, inbound.session, inbound.state.requested_model) == (
        False,
        None,
        "claude-opus-4-8",
    )


# --- model names ------------------------------------------------------------------------

names = st.one_of(
    st.sampled_from(["claude-sonnet-4-5", "Claude-Opus[1m]", "glm-4.7", "auto", "", "[1m]"]),
    st.text(max_size=12),
)


@settings(max_examples=300, deadline=None)
@given(st.lists(names, min_size=1, max_size=6))
def test_remembered_model_names_equal_the_lookup(requested: list[str]) -> None:
    """Asked twice (remembered the second time), each name maps as the lookup maps it."""
    for table in ({"claude-sonnet": "coding", "claude": "fast"}, {"*": "auto", "claude": "x"}):
        models = ClaudeModels(table)
        for name in requested * 2:
            want = outcome(lambda n=name, t=table: _wrapped(_mapped(n, ClaudeModels(t))))
            assert outcome(lambda n=name, m=models: _wrapped(_model(n, m))) == want


class _wrapped:
    """A model lookup's answer in the shape :func:`outcome` reads."""

    def __init__(self, got: tuple[str, int | None]) -> None:
        self.chat, self.requested_model, self.max_tokens = {}, got[0], got[1]
        self.stream, self.context_need, self.stop_sequences, self.ignored = None, None, [], []


def test_model_names_remembered_per_table() -> None:
    a, b = ClaudeModels({"claude": "x"}), ClaudeModels({"claude": "y"})
    assert _model("claude-1[1m]", a) == ("x", 200_000)
    assert _model("claude-1[1m]", b) == ("y", 200_000)
    assert _model("claude-1[1m]", a) == ("x", 200_000)


def test_model_names_sharing_a_prefix_map_each_their_own() -> None:
    models = ClaudeModels({"claude-sonnet": "coding", "claude": "fast"})
    got = [_model(n, models) for n in ["claude-sonnet-4-5", "claude-x", "cla", "claude-x[1m]"] * 2]
    assert got == [("coding", None), ("fast", None), ("cla", None), ("fast", 200_000)] * 2


@pytest.mark.parametrize(
    ("metadata", "session"),
    [
        ({"user_id": "user_ab_account_cd_session_0123456789abcdef"}, "0123456789abcdef"),
        ({"user_id": '{"session_id": "s-1"}'}, "s-1"),
        ({"user_id": "someone"}, None),
        (None, None),
        ({}, None),
    ],
)
def test_parse_session(metadata: Any, session: str | None) -> None:
    fe = MessagesFrontEnd({}, KEY)
    assert fe.parse({**PLAIN, "metadata": metadata}, {}).session == session
    assert fe.parse(PLAIN, {}).session is None

"""gateway.providers.dialects: request adaptation per surface, the thinking switch, normalisation.

Targets come from the shipped config, so each test runs against the dialect a provider really
declares in ``providers.yaml`` (``gateway/config/``).
"""

from __future__ import annotations

import copy
import random
from typing import Any

import orjson
import pytest

from gateway.catalogue.catalogue import Config
from gateway.catalogue.loader import default_config_dir, load_config
from gateway.catalogue.needs import resolve_needs
from gateway.catalogue.target import Target
from gateway.providers.dialects import (
    DIALECTS,
    StreamNormaliser,
    adapt_request,
    can_force_tool_choice,
    client_wants_usage,
    normalise_chunk,
    normalise_response,
)
from gateway.providers.dialects.tags import TagSplitter, unwrap
from gateway.routing.planner import plan

CONFIG: Config = load_config(default_config_dir(), demo_simulator_url="http://127.0.0.1:9")
TARGETS = {t.id: t for t in CONFIG.catalogue.targets}
MSG = [{"role": "user", "content": "hi"}]


def target(tid: str) -> Target:
    return TARGETS[tid]


def adapt(tid: str, **body: Any) -> tuple[dict[str, Any], list[str]]:
    return adapt_request({"model": "auto", "messages": MSG, **body}, target(tid))


# --- request adaptation ------------------------------------------------------------------------

ZHIPU_QUIRKS: list[tuple[dict[str, Any], dict[str, Any], list[str]]] = [
    ({"temperature": 1.7}, {"temperature": 1.0}, ["temperature=clamped"]),
    ({"temperature": 0.3}, {"temperature": 0.3}, []),
    ({"top_p": 0.0}, {"top_p": 0.01}, ["top_p=clamped"]),
    ({"stop": ["a", "b", "c"]}, {"stop": ["a"]}, ["stop=truncated"]),
    ({"stop": ["a"]}, {"stop": ["a"]}, []),
    (
        {"max_completion_tokens": 500},
        {"max_tokens": 500},
        ["max_completion_tokens=max_tokens"],
    ),
    ({"max_tokens": 500_000}, {"max_tokens": 128_000}, ["max_tokens=capped"]),
    ({"user": "customer-42"}, {"user_id": "customer-42"}, ["user=user_id"]),
    ({"user": "abc"}, {}, ["user=dropped"]),
    ({"seed": 7}, {}, ["seed=dropped"]),
    ({"n": 1}, {}, []),  # OpenAI's default: dropped silently
    ({"n": 3}, {}, ["n=dropped"]),
    ({"frequency_penalty": 0.5}, {}, ["frequency_penalty=dropped"]),
    ({"parallel_tool_calls": False}, {}, ["parallel_tool_calls=dropped"]),
    ({"logprobs": True, "top_logprobs": 2}, {}, ["logprobs=dropped", "top_logprobs=dropped"]),
]


@pytest.mark.parametrize(("given", "sent", "changes"), ZHIPU_QUIRKS)
def test_zhipu_quirks_adapted_and_reported(
    given: dict[str, Any], sent: dict[str, Any], changes: list[str]
) -> None:
    out, got = adapt("zai/glm-4.7", **given)
    assert got == changes
    for key, value in sent.items():
        assert out[key] == value
    dropped = set(given) - set(sent) - {"user", "max_completion_tokens"}
    assert not dropped & set(out)
    assert out["model"] == "glm-4.7"
    assert len(out["request_id"]) == 32


@pytest.mark.parametrize(
    "tid", ["deepinfra/glm-4.7", "openrouter/glm-4.7", "siliconflow/glm-4.7", "vllm/glm-4.5-air"]
)
def test_openai_surfaces_take_the_body_as_is(tid: str) -> None:
    given = {
        "temperature": 1.7,
        "top_p": 0.0,
        "stop": ["a", "b"],
        "max_completion_tokens": 500,
        "user": "abc",
        "seed": 7,
        "n": 2,
        "tool_choice": "required",
        "tools": [{"type": "function", "function": {"name": "f", "strict": True}}],
    }
    out, changes = adapt(tid, **given)
    assert changes == []
    assert {k: out[k] for k in given} == given
    assert "request_id" not in out and out["model"] == target(tid).model


def test_fresh_request_id_per_attempt_and_the_body_is_never_mutated() -> None:
    body: dict[str, Any] = {
        "model": "auto",
        "messages": [
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "what is this"},
                    {"type": "image_url", "image_url": {"url": "http://x/a.png", "detail": "high"}},
                ],
            }
        ],
        "tools": [{"type": "function", "function": {"name": "f", "strict": True}}],
        "response_format": {"type": "json_schema", "json_schema": {"name": "n", "schema": {}}},
        "route": {"prefer": "cost"},
    }
    before = copy.deepcopy(body)
    a, _ = adapt_request(body, target("zai/glm-4.6v"))
    b, changes = adapt_request(body, target("zai/glm-4.6v"))
    assert body == before
    assert a["request_id"] != b["request_id"]
    assert "route" not in a
    assert changes == [
        "tools.function.strict=dropped",
        "response_format=json_object+schema_prompt",
        "image_url.detail=dropped",
    ]
    assert b["messages"][1]["content"][1]["image_url"] == {"url": "http://x/a.png"}
    assert b["tools"][0]["function"] == {"name": "f"}


def test_json_schema_becomes_json_object_with_the_schema_in_a_system_prompt() -> None:
    schema = {"type": "object", "properties": {"a": {"type": "integer"}}, "required": ["a"]}
    rf = {"type": "json_schema", "json_schema": {"name": "n", "schema": schema, "strict": True}}
    out, changes = adapt("zai/glm-4.7", response_format=rf)
    assert out["response_format"] == {"type": "json_object"}
    assert out["messages"][0]["role"] == "system"
    assert orjson.dumps(schema).decode() in out["messages"][0]["content"]
    assert out["messages"][1:] == MSG
    assert changes == ["response_format=json_object+schema_prompt"]
    native, changes = adapt("deepinfra/glm-4.7", response_format=rf)
    assert native["response_format"] == rf and changes == []


@pytest.mark.parametrize(
    ("choice", "sent", "changes"),
    [
        ("auto", {"tool_choice": "auto", "tools": True}, []),
        ("required", {"tools": True}, ["tool_choice=auto"]),
        ({"type": "function", "function": {"name": "f"}}, {"tools": True}, ["tool_choice=auto"]),
        ("none", {}, ["tools=dropped_for_tool_choice_none"]),
    ],
)
def test_tool_choice_degrades_on_zhipu(
    choice: Any, sent: dict[str, Any], changes: list[str]
) -> None:
    tools = [{"type": "function", "function": {"name": "f", "parameters": {}}}]
    out, got = adapt("zai/glm-4.7", tools=tools, tool_choice=choice)
    assert got == changes
    assert out.get("tool_choice") == sent.get("tool_choice")
    assert ("tools" in out) is bool(sent.get("tools"))


def test_the_planner_prefers_hosts_that_can_force_a_tool_call() -> None:
    tools = [{"type": "function", "function": {"name": "f", "parameters": {}}}]
    body = {"model": "glm-4.7", "messages": MSG, "tools": tools}
    free = plan(resolve_needs(body, {}, CONFIG), CONFIG.catalogue, CONFIG.gateway.routing)
    forced_body = {**body, "tool_choice": "required"}
    forced = plan(resolve_needs(forced_body, {}, CONFIG), CONFIG.catalogue, CONFIG.gateway.routing)
    assert free.candidates[0].target.id in {"zai/glm-4.7", "bigmodel/glm-4.7"}
    order = [can_force_tool_choice(c.target) for c in forced.candidates]
    assert order == sorted(order, reverse=True) and order[0] and not order[-1]
    assert {c.target.id for c in free.candidates} == {c.target.id for c in forced.candidates}
    assert not DIALECTS["zhipu"].tool_choice_forcing


# --- thinking ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("tid", "given", "expected", "changes"),
    [
        ("zai/glm-4.7", {"thinking": {"type": "disabled"}}, {"thinking": {"type": "disabled"}}, []),
        (
            "zai/glm-4.7",
            {"reasoning_effort": "none"},
            {"thinking": {"type": "disabled"}},
            ["reasoning_effort=thinking"],
        ),
        (
            "openrouter/glm-4.7",
            {"thinking": {"type": "disabled"}},
            {"reasoning": {"enabled": False}},
            ["thinking=reasoning"],
        ),
        (
            "openrouter/glm-4.7",
            {"reasoning_effort": "high"},
            {"reasoning": {"enabled": True, "effort": "high"}},
            ["reasoning_effort=reasoning"],
        ),
        (
            "siliconflow/glm-4.7",
            {"thinking": {"type": "enabled"}},
            {"enable_thinking": True},
            ["thinking=enable_thinking"],
        ),
        (
            "vllm/glm-4.5-air",
            {"thinking": {"type": "disabled"}, "chat_template_kwargs": {"x": 1}},
            {"chat_template_kwargs": {"x": 1, "enable_thinking": False}},
            ["thinking=chat_template_kwargs"],
        ),
        (
            "deepinfra/glm-4.7",
            {"thinking": {"type": "disabled"}},
            {"reasoning_effort": "none"},
            ["thinking=reasoning_effort"],
        ),
        ("deepinfra/glm-4.7", {"reasoning_effort": "low"}, {"reasoning_effort": "low"}, []),
        (
            "deepinfra/glm-4.7",
            {"thinking": {"type": "enabled"}},
            {},
            ["thinking=host_default"],
        ),
        (
            "zai/glm-4.7",
            {"enable_thinking": False},
            {"thinking": {"type": "disabled"}},
            ["enable_thinking=thinking"],
        ),
        ("zai/glm-4-32b", {"thinking": {"type": "enabled"}}, {}, ["thinking=dropped"]),
        ("vllm/glm-4-9b", {"reasoning_effort": "high"}, {}, ["reasoning_effort=dropped"]),
        ("zai/glm-4.7", {}, {}, []),
    ],
)
def test_one_thinking_switch_in_each_hosts_form(
    tid: str, given: dict[str, Any], expected: dict[str, Any], changes: list[str]
) -> None:
    out, got = adapt(tid, **given)
    assert got == changes
    forms = ("thinking", "reasoning", "reasoning_effort", "enable_thinking", "chat_template_kwargs")
    assert {k: out[k] for k in forms if k in out} == expected


def test_clear_thinking_survives_on_zhipu() -> None:
    out, _ = adapt("zai/glm-4.7", thinking={"type": "enabled", "clear_thinking": False})
    assert out["thinking"] == {"type": "enabled", "clear_thinking": False}


# --- streams: usage ----------------------------------------------------------------------------


def test_every_stream_asks_for_usage_but_zhipu_gets_no_stream_options() -> None:
    out, changes = adapt("deepinfra/glm-4.7", stream=True)
    assert out["stream_options"] == {"include_usage": True} and changes == []
    out, _ = adapt("zai/glm-4.7", stream=True, stream_options={"include_usage": True})
    assert "stream_options" not in out
    out, _ = adapt("deepinfra/glm-4.7", stream_options={"include_usage": True})
    assert out["stream_options"] == {"include_usage": True}  # non-stream: left to the host
    assert client_wants_usage({"stream_options": {"include_usage": True}})
    assert not client_wants_usage({"stream": True})


def chunk(delta: dict[str, Any], finish: str | None = None, **top: Any) -> dict[str, Any]:
    return {
        "id": "c1",
        "created": 1,
        "model": "glm-4.7",
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
        **top,
    }


def events(raw: bytes) -> list[dict[str, Any]]:
    return [orjson.loads(e[6:]) for e in raw.split(b"\n\n") if e.startswith(b"data: ")]


@pytest.mark.parametrize("asked", [True, False])
def test_zhipu_usage_moves_to_its_own_final_chunk_only_when_asked(asked: bool) -> None:
    norm = StreamNormaliser(target("zai/glm-4.7"), include_usage=asked, collect_content=False)
    assert not norm.raw
    usage = {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5}
    out = events(norm.chunk(chunk({}, "stop", usage=usage)))
    assert out[0]["object"] == "chat.completion.chunk" and "usage" not in out[0]
    assert out[0]["choices"][0]["finish_reason"] == "stop"
    if asked:
        assert out[1]["choices"] == [] and out[1]["usage"] == usage and len(out) == 2
    else:
        assert len(out) == 1


def test_raw_relay_hides_the_usage_chunk_the_client_did_not_ask_for() -> None:
    usage_chunk = {"id": "c", "object": "chat.completion.chunk", "choices": [], "usage": {}}
    quiet = StreamNormaliser(
        target("deepinfra/glm-4.7"), include_usage=False, collect_content=False
    )
    asked = StreamNormaliser(target("deepinfra/glm-4.7"), include_usage=True, collect_content=False)
    assert quiet.raw and asked.raw
    assert not quiet.keep_raw(usage_chunk) and asked.keep_raw(usage_chunk)
    assert quiet.keep_raw(chunk({"content": "x"}))


def test_a_schema_check_turns_raw_relay_off() -> None:
    assert not StreamNormaliser(
        target("deepinfra/glm-4.7"), include_usage=False, collect_content=True
    ).raw


# --- normalisation -----------------------------------------------------------------------------


def test_zhipu_answer_gets_object_and_content_filter() -> None:
    obj: dict[str, Any] = {
        "id": "x",
        "request_id": "r",
        "created": 1,
        "model": "glm-4.7",
        "choices": [
            {
                "index": 0,
                "message": {
                    "role": "assistant",
                    "content": None,
                    "tool_calls": [{"id": "t", "function": {"name": "f", "arguments": {"a": 1}}}],
                },
                "finish_reason": "sensitive",
            }
        ],
    }
    normalise_response(obj, target("zai/glm-4.7"))
    assert obj["object"] == "chat.completion"
    assert obj["choices"][0]["finish_reason"] == "content_filter"
    call = obj["choices"][0]["message"]["tool_calls"][0]
    assert call == {
        "id": "t",
        "type": "function",
        "function": {"name": "f", "arguments": '{"a":1}'},
    }


def test_openrouter_reasoning_becomes_reasoning_content() -> None:
    msg = {"content": "a", "reasoning": "r", "reasoning_details": [{"type": "reasoning.text"}]}
    obj: dict[str, Any] = {"choices": [{"message": msg, "finish_reason": "stop"}]}
    normalise_response(obj, target("openrouter/glm-4.6"))
    assert obj["choices"][0]["message"] == {
        "content": "a",
        "reasoning_content": "r",
        "refusal": None,
    }
    assert obj["choices"][0]["logprobs"] is None
    obj = chunk({"content": "b", "reasoning": None, "reasoning_details": []})
    normalise_chunk(obj, target("openrouter/glm-4.6"))
    assert obj["choices"][0]["delta"] == {"content": "b"} and obj["model"] == "glm-4.6"


def test_streamed_tool_call_gets_index_and_string_arguments() -> None:
    obj = chunk({"tool_calls": [{"id": "t", "function": {"name": "f", "arguments": {"a": 1}}}]})
    normalise_chunk(obj, target("zai/glm-4.7"))
    call = obj["choices"][0]["delta"]["tool_calls"][0]
    assert call["index"] == 0 and call["type"] == "function"
    assert call["function"]["arguments"] == '{"a":1}'


TAGGED = "<think>Look at it.</think><|begin_of_box|>A cat.<|end_of_box|>"


def test_glm_45v_tags_unwrapped_in_answers() -> None:
    assert unwrap(TAGGED) == ("Look at it.", "A cat.")
    assert unwrap('<|begin_of_box|>{"a": 1}<|end_of_box|>') == ("", '{"a": 1}')
    assert unwrap("a < b and <thin") == ("", "a < b and <thin")
    obj: dict[str, Any] = {"choices": [{"message": {"content": TAGGED}, "finish_reason": "stop"}]}
    normalise_response(obj, target("zai/glm-4.5v"))
    assert obj["choices"][0]["message"] == {
        "content": "A cat.",
        "reasoning_content": "Look at it.",
        "refusal": None,
    }
    untagged: dict[str, Any] = {"choices": [{"message": {"content": TAGGED}}]}
    normalise_response(untagged, target("zai/glm-4.7"))
    assert untagged["choices"][0]["message"]["content"] == TAGGED


@pytest.mark.parametrize("seed", range(20))
def test_tags_cut_anywhere_across_chunks(seed: int) -> None:
    rng = random.Random(seed)
    text = TAGGED + " Then <b>bold</b> and 1 < 2."
    cuts = sorted(rng.sample(range(1, len(text)), 8))
    pieces = [text[i:j] for i, j in zip([0, *cuts], [*cuts, len(text)], strict=True)]
    splitter = TagSplitter()
    reasoning, content = "", ""
    for piece in pieces:
        r, c = splitter.feed(piece)
        assert "<|" not in c and "think>" not in c and "think>" not in r
        reasoning, content = reasoning + r, content + c
    r, c = splitter.flush()
    assert (reasoning + r, content + c) == ("Look at it.", "A cat. Then <b>bold</b> and 1 < 2.")


def test_stream_of_glm_45v_chunks_is_unwrapped() -> None:
    norm = StreamNormaliser(target("zai/glm-4.5v"), include_usage=False, collect_content=True)
    assert not norm.raw
    out: list[dict[str, Any]] = []
    for i in range(0, len(TAGGED), 5):
        out += events(norm.chunk(chunk({"content": TAGGED[i : i + 5]})))
    out += events(norm.chunk(chunk({}, "stop")))
    out += events(norm.close())
    deltas = [e["choices"][0]["delta"] for e in out]
    assert "".join(d.get("reasoning_content", "") for d in deltas) == "Look at it."
    assert "".join(d.get("content", "") for d in deltas) == "A cat."
    assert norm.content() == "A cat." and norm.finish_reason == "stop"

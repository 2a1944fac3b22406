"""The Messages stream state machine: golden event sequences from normalised chat chunks, each
event parsed by the ``anthropic`` SDK, validated against Anthropic's spec and accumulated by the
SDK's own stream accumulator."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

pytest.importorskip("anthropic")

from gateway.frontends.messages import sign_thinking, to_chat, verify_thinking
from gateway.frontends.messages_stream import MessagesStream
from tests.support.messages_wire import check_stream

KEY = b"stream-key"


def chunk(
    delta: dict[str, Any] | None = None, finish: str | None = None, **extra: Any
) -> dict[str, Any]:
    return {
        "id": "chatcmpl-1",
        "object": "chat.completion.chunk",
        "created": 0,
        "model": "glm-4.7",
        "choices": [{"index": 0, "delta": delta or {}, "finish_reason": finish, **extra}],
    }


def usage_chunk(prompt: int, completion: int, cached: int = 0) -> dict[str, Any]:
    usage: dict[str, Any] = {"prompt_tokens": prompt, "completion_tokens": completion}
    if cached:
        usage["prompt_tokens_details"] = {"cached_tokens": cached}
    return {"id": "chatcmpl-1", "object": "chat.completion.chunk", "choices": [], "usage": usage}


def call(
    index: int, id: str | None = None, name: str | None = None, args: str = ""
) -> dict[str, Any]:
    fn: dict[str, Any] = {"arguments": args}
    if name:
        fn["name"] = name
    out: dict[str, Any] = {"index": index, "function": fn}
    if id:
        out |= {"id": id, "type": "function"}
    return out


def run(chunks: list[dict[str, Any]], stops: list[str] | None = None) -> tuple[list[Any], Any]:
    s = MessagesStream("claude-opus-4-8", thinking_key=KEY, stop_sequences=stops)
    raw = s.start(12) + s.ping() + b"".join(s.feed(c) for c in chunks) + s.end()
    assert s.end() == b"" and s.feed(chunks[0] if chunks else chunk()) == b""
    return check_stream(raw)


def shape(events: list[Any]) -> list[str]:
    """A compact golden form: event name, plus block/delta type where there is one."""
    out = []
    for name, data in events:
        if name == "content_block_start":
            out.append(f"start {data['index']} {data['content_block']['type']}")
        elif name == "content_block_delta":
            out.append(f"delta {data['index']} {data['delta']['type']}")
        elif name == "content_block_stop":
            out.append(f"stop {data['index']}")
        elif name == "message_delta":
            out.append(f"message_delta {data['delta']['stop_reason']}")
        else:
            out.append(name)
    return out


def test_plain_text() -> None:
    events, message = run(
        [
            chunk({"role": "assistant", "content": ""}),
            chunk({"content": "Hel"}),
            chunk({"content": "lo."}),
            chunk({}, "stop"),
            usage_chunk(30, 4, cached=10),
        ]
    )
    assert shape(events) == [
        "message_start", "ping", "start 0 text", "delta 0 text_delta", "delta 0 text_delta",
        "stop 0", "message_delta end_turn", "message_stop",
    ]  # fmt: skip
    assert events[0][1]["message"]["usage"]["input_tokens"] == 12
    assert events[-2][1]["usage"] | {"cache_creation_input_tokens": 0} == events[-2][1]["usage"]
    assert {
        k: events[-2][1]["usage"][k]
        for k in ("output_tokens", "cache_read_input_tokens", "input_tokens")
    } == {
        "output_tokens": 4,
        "cache_read_input_tokens": 10,
        "input_tokens": 20,
    }
    assert message.content[0].text == "Hello." and message.stop_reason == "end_turn"
    assert message.model == "claude-opus-4-8"


def test_thinking_then_text_is_two_blocks_with_a_valid_signature() -> None:
    events, message = run(
        [
            chunk({"reasoning_content": "Six "}),
            chunk({"reasoning_content": "times seven."}),
            chunk({"content": "42"}),
            chunk({}, "stop", usage={"prompt_tokens": 9, "completion_tokens": 3}),
        ]
    )
    assert shape(events) == [
        "message_start", "ping", "start 0 thinking", "delta 0 thinking_delta",
        "delta 0 thinking_delta", "delta 0 signature_delta", "stop 0", "start 1 text",
        "delta 1 text_delta", "stop 1", "message_delta end_turn", "message_stop",
    ]  # fmt: skip
    thinking, text = message.content
    assert thinking.thinking == "Six times seven." and text.text == "42"
    assert verify_thinking(thinking.thinking, thinking.signature, KEY)


def test_interleaved_reasoning_and_text_never_share_a_block() -> None:
    _, message = run(
        [
            chunk({"reasoning_content": "a", "content": "b"}),
            chunk({"reasoning_content": "c"}),
            chunk({"content": "d"}),
            chunk({}, "stop"),
        ]
    )
    assert [b.type for b in message.content] == ["thinking", "text", "thinking", "text"]
    for block in message.content:
        if block.type == "thinking":
            assert verify_thinking(block.thinking, block.signature, KEY)


def test_parallel_tool_calls_with_interleaved_argument_deltas() -> None:
    events, message = run(
        [
            chunk({"content": "Both."}),
            chunk({"tool_calls": [call(0, "call_a", "Read", '{"file_')]}),
            chunk({"tool_calls": [call(1, "call_b", "Bash", '{"comm')]}),
            chunk({"tool_calls": [call(0, args='path": "a.py"}')]}),
            chunk({"tool_calls": [call(1, args='and": "ls"}')]}),
            chunk({"tool_calls": [call(2, "call_c", "Read", "")]}),
            chunk({"tool_calls": [call(2, args='{"file_path": "b.py"}')]}),
            chunk({}, "tool_calls"),
        ]
    )
    assert shape(events) == [
        "message_start", "ping", "start 0 text", "delta 0 text_delta", "stop 0",
        "start 1 tool_use", "delta 1 input_json_delta", "delta 1 input_json_delta", "stop 1",
        "start 2 tool_use", "delta 2 input_json_delta", "delta 2 input_json_delta", "stop 2",
        "start 3 tool_use", "delta 3 input_json_delta", "stop 3",
        "message_delta tool_use", "message_stop",
    ]  # fmt: skip
    uses = [(b.id, b.name, b.input) for b in message.content[1:]]
    assert uses == [
        ("toolu_call_a", "Read", {"file_path": "a.py"}),
        ("toolu_call_b", "Bash", {"command": "ls"}),
        ("toolu_call_c", "Read", {"file_path": "b.py"}),
    ]
    assert message.stop_reason == "tool_use"


def test_calls_reusing_index_zero_with_new_ids_stay_separate() -> None:
    _, message = run(
        [
            chunk({"tool_calls": [call(0, "call_1", "a", '{"x": 1}')]}),
            chunk({"tool_calls": [call(0, "call_2", "b", '{"y": 2}')]}),
            chunk({}, "tool_calls"),
        ]
    )
    assert [(b.name, b.input) for b in message.content] == [("a", {"x": 1}), ("b", {"y": 2})]


def test_text_then_tool_call_ends_tool_use_even_when_host_says_stop() -> None:
    events, message = run(
        [
            chunk({"content": "Let me check."}),
            chunk({"tool_calls": [call(0, "call_1", "Bash", '{"command": "date"}')]}),
            chunk({}, "stop"),
        ]
    )
    assert events[-2][1]["delta"]["stop_reason"] == "tool_use"
    assert [b.type for b in message.content] == ["text", "tool_use"]


def test_malformed_and_empty_arguments() -> None:
    _, message = run(
        [
            chunk({"tool_calls": [call(0, "call_1", "a", '{"x": ')]}),
            chunk({"tool_calls": [call(1, "call_2", "b", "")]}),
            chunk({}, "tool_calls"),
        ]
    )
    assert [b.input for b in message.content] == [{"_raw": '{"x": '}, {}]


def test_max_tokens() -> None:
    _, message = run([chunk({"content": "trunc"}), chunk({}, "length")])
    assert message.stop_reason == "max_tokens"
    _, with_tool = run(
        [chunk({"tool_calls": [call(0, "c", "a", '{"x": 1}')]}), chunk({}, "length")]
    )
    assert with_tool.stop_reason == "max_tokens", "a cut-off tool call is never 'tool_use'"


def test_stop_sequence_when_the_host_names_it() -> None:
    _, message = run([chunk({"content": "1, 2"}), chunk({}, "stop", stop_reason="3")], ["3"])
    assert (message.stop_reason, message.stop_sequence) == ("stop_sequence", "3")
    _, plain = run([chunk({"content": "1, 2"}), chunk({}, "stop")], ["3"])
    assert (plain.stop_reason, plain.stop_sequence) == ("end_turn", None)


def test_content_filter_is_refusal() -> None:
    _, message = run([chunk({"content": "I"}), chunk({}, "content_filter")])
    assert message.stop_reason == "refusal"


def test_empty_upstream_is_still_a_valid_message() -> None:
    events, message = run([chunk({"role": "assistant"}), chunk({}, "stop")])
    assert shape(events) == ["message_start", "ping", "message_delta end_turn", "message_stop"]
    assert message.content == [] and message.usage.output_tokens == 0
    events, _ = run([])
    assert shape(events)[-2:] == ["message_delta end_turn", "message_stop"]


def test_error_mid_stream_ends_with_the_error_event_only() -> None:
    s = MessagesStream("claude-opus-4-8", thinking_key=KEY)
    raw = s.start(5) + s.feed(chunk({"content": "partial"}))
    raw += s.error(502, "api_error", "The upstream stream broke off.")
    assert s.end() == b"" and s.feed(chunk({"content": "more"})) == b""
    events, message = check_stream(raw)
    assert message is None
    assert events[-1] == (
        "error",
        {
            "type": "error",
            "error": {"type": "api_error", "message": "The upstream stream broke off."},
            "request_id": None,
        },
    )
    assert "message_stop" not in [n for n, _ in events]


def test_streamed_thinking_and_tools_replay_into_the_hosts_own_form() -> None:
    _, message = run(
        [
            chunk({"reasoning_content": "Plan: read."}),
            chunk({"tool_calls": [call(0, "call_z", "Read", '{"file_path": "a"}')]}),
            chunk({}, "tool_calls"),
        ]
    )
    content = [b.to_dict() for b in message.content]
    body = {
        "model": "claude-opus-4-8",
        "max_tokens": 100,
        "thinking": {"type": "enabled", "budget_tokens": 1024},
        "messages": [
            {"role": "user", "content": "go"},
            {"role": "assistant", "content": content},
            {
                "role": "user",
                "content": [
                    {"type": "tool_result", "tool_use_id": content[1]["id"], "content": "x"}
                ],
            },
        ],
    }
    req = to_chat(body, {}, thinking_key=KEY)
    assistant, result = req.chat["messages"][1:3]
    assert assistant["reasoning_content"] == "Plan: read." and req.ignored == [
        "thinking.budget_tokens=ignored"
    ]
    assert assistant["tool_calls"][0]["id"] == "call_z" == result["tool_call_id"]
    assert sign_thinking("Plan: read.", KEY) == content[0]["signature"]


DELTA = st.fixed_dictionaries(
    {},
    optional={
        "content": st.text(max_size=6),
        "reasoning_content": st.text(max_size=6),
        "tool_calls": st.lists(
            st.builds(
                call,
                st.integers(0, 2),
                st.sampled_from([None, "call_1", "call_2"]),
                st.sampled_from([None, "f", "g"]),
                st.sampled_from(["", "{", '"a": 1', "}", "[1]", "{}"]),
            ),
            max_size=2,
        ),
    },
)
CHUNK = st.builds(chunk, DELTA, st.sampled_from([None, None, "stop", "length", "tool_calls"]))


@settings(max_examples=200, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(CHUNK | st.builds(usage_chunk, st.integers(0, 99), st.integers(0, 99)), max_size=8))
def test_any_chunk_sequence_gives_a_valid_stream(chunks: list[dict[str, Any]]) -> None:
    _, message = run(chunks)
    assert message.stop_reason in ("end_turn", "max_tokens", "tool_use")
    if any(b.type == "tool_use" for b in message.content) and message.stop_reason != "max_tokens":
        assert message.stop_reason == "tool_use"

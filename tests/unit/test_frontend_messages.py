"""Anthropic Messages in and out of the chat form: golden bodies, the Claude Code body, replayed
thinking, type slips, errors; every answer checked with the SDK's types and Anthropic's spec."""

from __future__ import annotations

import base64
import copy
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

pytest.importorskip("anthropic")

from gateway.catalogue.needs import infer
from gateway.errors import (
    BodyTooLarge,
    DeadlineExceeded,
    GatewayError,
    InvalidRequest,
    NoCapableVariant,
    NotFound,
    RateLimited,
    UpstreamsFailed,
)
from gateway.frontends.messages import (
    LONG_CONTEXT_NEED,
    error_body,
    error_for,
    from_chat,
    sign_thinking,
    to_chat,
    verify_thinking,
)
from gateway.frontends.messages_ids import call_id, tool_use_id
from tests.support.messages_wire import check_error, check_message
from tests.support.openapi import ANTHROPIC
from tests.support.pdf import pdf_with_text

KEY = b"test-thinking-key"
MODELS = {"claude-opus-4-8": "glm-4.7", "claude-haiku-4-5": "glm-4.5-air"}


def chat_of(body: dict[str, Any]) -> dict[str, Any]:
    return to_chat(body, MODELS, thinking_key=KEY).chat


def base(**kw: Any) -> dict[str, Any]:
    return {"model": "claude-opus-4-8", "max_tokens": 1024, **kw}


def tool(name: str, **props: Any) -> dict[str, Any]:
    return {
        "name": name,
        "description": f"The {name} tool.",
        "input_schema": {"type": "object", "properties": props, "required": list(props)},
    }


# --- requests -------------------------------------------------------------------------------


def test_plain_text_golden() -> None:
    req = to_chat(
        base(system="Be brief.", messages=[{"role": "user", "content": "Hi"}]),
        MODELS,
        thinking_key=KEY,
    )
    assert req.chat == {
        "model": "glm-4.7",
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Hi"},
        ],
        "max_tokens": 1024,
        "thinking": {"type": "disabled"},  # Anthropic's default; GLM 4.5+ would think
    }
    assert (req.requested_model, req.max_tokens, req.stream, req.context_need) == (
        "claude-opus-4-8",
        1024,
        False,
        None,
    )
    assert req.ignored == []


CLAUDE_CODE_BODY: dict[str, Any] = {
    "model": "claude-opus-4-8",
    "max_tokens": 64000,
    "stream": True,
    "system": [
        {"type": "text", "text": "x-anthropic-billing-header: cc_version=2.1.197"},
        {
            "type": "text",
            "text": "You are Claude Code, Anthropic's official CLI for Claude.",
            "cache_control": {"type": "ephemeral"},
        },
        {
            "type": "text",
            "text": "You are an interactive CLI tool that helps users with software tasks.",
            "cache_control": {"type": "ephemeral", "ttl": "1h"},
        },
    ],
    "messages": [
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "<system-reminder>context</system-reminder>"},
                {"type": "text", "text": "List the files", "cache_control": {"type": "ephemeral"}},
            ],
        },
        {
            "role": "assistant",
            "content": [
                {"type": "text", "text": "Listing."},
                {"type": "tool_use", "id": "toolu_01A", "name": "Bash", "input": {"command": "ls"}},
            ],
        },
        {
            "role": "user",
            "content": [
                {"type": "tool_result", "tool_use_id": "toolu_01A", "content": "a.py\nb.py"}
            ],
        },
        {"role": "assistant", "content": "Two files."},
        {"role": "user", "content": "Read a.py"},
    ],
    "tools": [
        tool("Agent", prompt={"type": "string"}),
        tool("Bash", command={"type": "string"}),
        tool("Edit", file_path={"type": "string"}, old_string={"type": "string"}),
        tool("Read", file_path={"type": "string"}),
        tool("Write", file_path={"type": "string"}, content={"type": "string"}),
        tool("WebFetch", url={"type": "string"}),
        {**tool("WebSearch", query={"type": "string"}), "cache_control": {"type": "ephemeral"}},
    ],
    "thinking": {"type": "adaptive"},
    "output_config": {"effort": "high"},
    "context_management": {"edits": [{"type": "clear_thinking_20251015", "keep": "all"}]},
    "metadata": {"user_id": orjson.dumps({"device_id": "d1", "session_id": "s1"}).decode()},
}


def test_claude_code_body_translates_and_names_what_it_ignored() -> None:
    assert ANTHROPIC.errors("BetaCreateMessageParams", CLAUDE_CODE_BODY) == []
    before = copy.deepcopy(CLAUDE_CODE_BODY)
    req = to_chat(CLAUDE_CODE_BODY, MODELS, thinking_key=KEY)
    assert before == CLAUDE_CODE_BODY, "the client's body is not mutated"
    chat = req.chat
    assert req.stream and chat["stream"] is True and chat["max_tokens"] == 64000
    assert chat["model"] == "glm-4.7" and req.requested_model == "claude-opus-4-8"
    assert chat["thinking"] == {"type": "enabled"}
    assert chat["user"] == CLAUDE_CODE_BODY["metadata"]["user_id"]
    assert [t["function"]["name"] for t in chat["tools"]] == [
        "Agent", "Bash", "Edit", "Read", "Write", "WebFetch", "WebSearch",
    ]  # fmt: skip
    assert chat["messages"][0]["role"] == "system"
    assert chat["messages"][0]["content"].startswith("You are Claude Code")  # billing line out
    assert [m["role"] for m in chat["messages"]] == [
        "system", "user", "assistant", "tool", "assistant", "user",
    ]  # fmt: skip
    assert chat["messages"][2]["tool_calls"][0]["function"] == {
        "name": "Bash",
        "arguments": '{"command":"ls"}',
    }
    assert chat["messages"][3]["tool_call_id"] == chat["messages"][2]["tool_calls"][0]["id"]
    assert set(req.ignored) == {
        "cache_control=ignored",
        "context_management=ignored",
        "output_config.effort=ignored",
        "system.billing_header=dropped",
    }
    inferred = infer(chat)
    assert inferred.capabilities == {"function_calling"} and inferred.output_tokens == 64000


def test_long_context_suffix_is_stripped_and_becomes_a_need() -> None:
    req = to_chat(
        base(model="claude-opus-4-8[1m]", messages=[{"role": "user", "content": "x"}]),
        MODELS,
        thinking_key=KEY,
    )
    assert req.chat["model"] == "glm-4.7" and req.context_need == LONG_CONTEXT_NEED
    assert req.requested_model == "claude-opus-4-8[1m]"
    fallback = to_chat(
        base(model="claude-x", messages=[{"role": "user", "content": "x"}]),
        {"*": "auto"},
        thinking_key=KEY,
    )
    assert fallback.chat["model"] == "auto"
    plain = to_chat(
        base(model="glm-4.6", messages=[{"role": "user", "content": "x"}]), {}, thinking_key=KEY
    )
    assert plain.chat["model"] == "glm-4.6"


def test_images_become_image_url_parts_and_need_vision() -> None:
    chat = chat_of(
        base(
            messages=[
                {
                    "role": "user",
                    "content": [
                        {
                            "type": "image",
                            "source": {
                                "type": "base64",
                                "media_type": "image/png",
                                "data": "iVBORw0KGgo=",
                            },
                        },
                        {
                            "type": "image",
                            "source": {"type": "url", "url": "https://example.com/cat.png"},
                        },
                        {"type": "text", "text": "What are these?"},
                    ],
                }
            ]
        )
    )
    assert chat["messages"][0]["content"] == [
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}},
        {"type": "image_url", "image_url": {"url": "https://example.com/cat.png"}},
        {"type": "text", "text": "What are these?"},
    ]
    assert "vision" in infer(chat).capabilities


def test_tool_results_come_first_with_images_after_and_errors_marked() -> None:
    chat = chat_of(
        base(
            messages=[
                {"role": "user", "content": "shoot"},
                {
                    "role": "assistant",
                    "content": [
                        {"type": "tool_use", "id": "toolu_a", "name": "Shot", "input": {}},
                        {"type": "tool_use", "id": "toolu_b", "name": "Run", "input": {"x": [1]}},
                    ],
                },
                {
                    "role": "user",
                    "content": [
                        {"type": "text", "text": "here"},
                        {
                            "type": "tool_result",
                            "tool_use_id": "toolu_a",
                            "content": [
                                {"type": "text", "text": "screenshot"},
                                {
                                    "type": "image",
                                    "source": {"type": "url", "url": "https://x/s.png"},
                                },
                            ],
                        },
                        {
                            "type": "tool_result",
                            "tool_use_id": "toolu_b",
                            "is_error": True,
                            "content": "boom",
                        },
                    ],
                },
            ]
        )
    )
    assistant, t1, t2, user = chat["messages"][1:]
    assert assistant["content"] is None
    assert [c["id"] for c in assistant["tool_calls"]] == ["a", "b"]
    assert assistant["tool_calls"][1]["function"]["arguments"] == '{"x":[1]}'
    assert t1 == {"role": "tool", "tool_call_id": "a", "content": "screenshot"}
    assert t2 == {"role": "tool", "tool_call_id": "b", "content": "Error: boom"}
    assert user == {
        "role": "user",
        "content": [
            {"type": "text", "text": "here"},
            {"type": "image_url", "image_url": {"url": "https://x/s.png"}},
        ],
    }
    infer(chat)


@pytest.mark.parametrize(
    ("block", "param"),
    [
        (
            {"type": "tool_use", "id": "toolu_1", "name": "f", "input": [1, 2]},
            "messages[0].content[0].input",
        ),
        (
            {"type": "tool_use", "id": "toolu_1", "name": "f", "input": "{}"},
            "messages[0].content[0].input",
        ),
        ({"type": "tool_use", "id": 7, "name": "f", "input": {}}, "messages[0].content[0].id"),
        (
            {"type": "image", "source": {"type": "file", "file_id": "f"}},
            "messages[0].content[0].source.type",
        ),
        ({"type": "mystery"}, "messages[0].content[0].type"),
    ],
)
def test_type_slips_are_400s_naming_the_field(block: dict[str, Any], param: str) -> None:
    with pytest.raises(InvalidRequest) as exc:
        role = "user" if block["type"] == "image" else "assistant"
        chat_of(base(messages=[{"role": role, "content": [block]}]))
    assert exc.value.param == param and exc.value.status == 400


def test_documents_text_inlined_pdf_read() -> None:
    doc = {
        "type": "document",
        "title": "Notes",
        "source": {"type": "text", "media_type": "text/plain", "data": "line"},
    }
    chat = chat_of(base(messages=[{"role": "user", "content": [doc]}]))
    assert chat["messages"][0]["content"] == "Notes\n\nline"
    data = base64.b64encode(pdf_with_text("Quarterly report")).decode()
    pdf = {
        "type": "document",
        "source": {"type": "base64", "media_type": "application/pdf", "data": data},
    }
    chat = chat_of(base(messages=[{"role": "user", "content": [pdf]}]))
    assert chat["messages"][0]["content"] == "Quarterly report"  # its text: any variant reads it
    broken = {**pdf, "source": {**pdf["source"], "data": "JVBE"}}
    with pytest.raises(InvalidRequest) as bad_pdf:
        chat_of(base(messages=[{"role": "user", "content": [broken]}]))
    assert bad_pdf.value.code == "invalid_document"
    by_url = {"type": "document", "source": {"type": "url", "url": "https://x/a.pdf"}}
    with pytest.raises(NoCapableVariant) as exc:
        chat_of(base(messages=[{"role": "user", "content": [by_url]}]))
    assert exc.value.code == "no_capable_variant" and "documents" in exc.value.message


def test_server_tools_web_search_builtin_others_refused() -> None:
    chat = chat_of(
        base(
            messages=[{"role": "user", "content": "news?"}],
            tools=[{"type": "web_search_20250305", "name": "web_search", "max_uses": 3}, tool("f")],
        )
    )
    assert chat["tools"][0] == {"type": "web_search"}
    inferred = infer(chat)
    assert inferred.capabilities == {"tool_use", "function_calling"}
    assert inferred.builtin_tools == {"web_search"}
    with pytest.raises(NoCapableVariant):
        chat_of(
            base(
                messages=[{"role": "user", "content": "x"}],
                tools=[{"type": "bash_20250124", "name": "bash"}],
            )
        )


@pytest.mark.parametrize(
    ("choice", "expected", "parallel"),
    [
        ({"type": "auto"}, "auto", None),
        ({"type": "any", "disable_parallel_tool_use": True}, "required", False),
        ({"type": "tool", "name": "f"}, {"type": "function", "function": {"name": "f"}}, None),
        ({"type": "none"}, "none", None),
    ],
)
def test_tool_choice(choice: dict[str, Any], expected: Any, parallel: bool | None) -> None:
    chat = chat_of(
        base(messages=[{"role": "user", "content": "x"}], tools=[tool("f")], tool_choice=choice)
    )
    assert chat["tool_choice"] == expected
    assert chat.get("parallel_tool_calls") == parallel


def test_sampling_thinking_and_format() -> None:
    chat = chat_of(
        base(
            messages=[{"role": "user", "content": "x"}],
            temperature=0.5,
            top_p=0.9,
            top_k=20,
            stop_sequences=["END"],
            thinking={"type": "enabled", "budget_tokens": 2048},
            output_config={"format": {"type": "json_schema", "schema": {"type": "object"}}},
        )
    )
    assert (chat["temperature"], chat["top_p"], chat["top_k"], chat["stop"]) == (
        0.5,
        0.9,
        20,
        ["END"],
    )
    assert chat["thinking"] == {"type": "enabled"}
    assert chat["response_format"]["type"] == "json_schema"
    assert "structured_outputs" in infer(chat).capabilities
    off = chat_of(base(messages=[{"role": "user", "content": "x"}], thinking={"type": "disabled"}))
    assert off["thinking"] == {"type": "disabled"}


def test_same_role_turns_merge_and_mid_conversation_system_stays_in_place() -> None:
    chat = chat_of(
        base(
            messages=[
                {"role": "user", "content": "a"},
                {"role": "user", "content": [{"type": "text", "text": "b"}]},
                {"role": "assistant", "content": "c"},
                {
                    "role": "assistant",
                    "content": [{"type": "tool_use", "id": "toolu_x", "name": "f", "input": {}}],
                },
                {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_x"}]},
                {"role": "system", "content": "Now be terse."},
                {"role": "user", "content": "d"},
            ]
        )
    )
    assert chat["messages"] == [
        {"role": "user", "content": "a\n\nb"},
        {
            "role": "assistant",
            "content": "c",
            "tool_calls": [
                {"id": "x", "type": "function", "function": {"name": "f", "arguments": "{}"}}
            ],
        },
        {"role": "tool", "tool_call_id": "x", "content": ""},
        {"role": "system", "content": "Now be terse."},
        {"role": "user", "content": "d"},
    ]


def test_unknown_and_service_fields_are_ignored_and_named() -> None:
    req = to_chat(
        base(
            messages=[{"role": "user", "content": "x"}],
            service_tier="auto",
            mcp_servers=[],
            frobnicate=1,
            container=None,
        ),
        MODELS,
        thinking_key=KEY,
    )
    assert req.ignored == ["service_tier=ignored", "unknown_fields=frobnicate:ignored"]
    with pytest.raises(InvalidRequest) as exc:
        chat_of(
            base(
                messages=[{"role": "user", "content": "x"}],
                mcp_servers=[{"type": "url", "url": "u", "name": "n"}],
            )
        )
    assert exc.value.param == "mcp_servers"


@pytest.mark.parametrize(
    ("patch", "param"),
    [
        ({"max_tokens": 0}, "max_tokens"),
        ({"max_tokens": True}, "max_tokens"),
        ({"max_tokens": None}, "max_tokens"),
        ({"model": 5}, "model"),
        ({"messages": []}, "messages"),
        ({"temperature": 2}, "temperature"),
        ({"stop_sequences": "END"}, "stop_sequences"),
        ({"metadata": {"user_id": 5}}, "metadata.user_id"),
        ({"thinking": {"type": "sometimes"}}, "thinking.type"),
        ({"tool_choice": {"type": "any"}}, "tool_choice.type"),
        ({"system": [{"type": "image"}]}, "system[0].type"),
    ],
)
def test_bad_fields_name_their_path(patch: dict[str, Any], param: str) -> None:
    with pytest.raises(InvalidRequest) as exc:
        chat_of({**base(messages=[{"role": "user", "content": "x"}]), **patch})
    assert exc.value.param == param


def test_integral_numbers_are_integers_as_json_schema_says() -> None:
    """``max_tokens: 3377.0`` meets the spec's ``type: integer`` (Schemathesis sends it)."""
    body = {**base(messages=[{"role": "user", "content": "x"}]), "max_tokens": 3377.0}
    req = to_chat(body, MODELS, thinking_key=KEY)
    assert req.max_tokens == 3377 and isinstance(req.chat["max_tokens"], int)
    for bad_value in (3377.5, 1e300, float("inf")):
        with pytest.raises(InvalidRequest) as exc:
            chat_of({**base(messages=[{"role": "user", "content": "x"}]), "max_tokens": bad_value})
        assert exc.value.param == "max_tokens"


# --- replayed thinking ----------------------------------------------------------------------


def _assistant_with_thinking(*texts: str, signer: bytes = KEY) -> dict[str, Any]:
    blocks: list[dict[str, Any]] = [
        {"type": "thinking", "thinking": t, "signature": sign_thinking(t, signer)} for t in texts
    ]
    blocks.append({"type": "tool_use", "id": "toolu_c1", "name": "f", "input": {}})
    return {"role": "assistant", "content": blocks}


def _result(use_id: str = "toolu_c1") -> dict[str, Any]:
    return {
        "role": "user",
        "content": [{"type": "tool_result", "tool_use_id": use_id, "content": "ok"}],
    }


def test_replayed_thinking_becomes_reasoning_content_unmodified_and_in_order() -> None:
    first, second = "  Let me think…\n\nstep 1 ", "step 2 — «ok»\n"
    req = to_chat(
        base(
            messages=[
                {"role": "user", "content": "go"},
                _assistant_with_thinking(first, second),
                _result(),
            ]
        ),
        MODELS,
        thinking_key=KEY,
    )
    assert req.chat["messages"][1]["reasoning_content"] == first + second
    assert req.ignored == []


def test_tampered_foreign_and_redacted_thinking_dropped_and_named() -> None:
    tampered = _assistant_with_thinking("original")
    tampered["content"][0]["thinking"] = "edited"
    foreign = _assistant_with_thinking("claude's", signer=b"anthropic")
    foreign["content"].insert(0, {"type": "redacted_thinking", "data": "EmwKAhgB"})
    req = to_chat(
        base(messages=[{"role": "user", "content": "go"}, tampered, _result(), foreign, _result()]),
        MODELS,
        thinking_key=KEY,
    )
    assert all("reasoning_content" not in m for m in req.chat["messages"])
    assert req.ignored == ["messages.thinking=unverified:2", "messages.redacted_thinking=dropped:1"]


def test_answer_replays_back_to_the_hosts_own_reasoning_and_call_ids() -> None:
    answer = _completion(
        {
            "role": "assistant",
            "content": "Reading.",
            "reasoning_content": "I should read the file.",
            "tool_calls": [
                {
                    "id": "call_9f:x/1",
                    "type": "function",
                    "function": {"name": "Read", "arguments": '{"file_path":"a.py"}'},
                }
            ],
        },
        "tool_calls",
    )
    message = from_chat(answer, "claude-opus-4-8", stop_sequences=None, thinking_key=KEY)
    check_message(message)
    use = message["content"][2]
    replay = base(
        messages=[
            {"role": "user", "content": "read a.py"},
            {"role": "assistant", "content": message["content"]},
            {
                "role": "user",
                "content": [
                    {"type": "tool_result", "tool_use_id": use["id"], "content": "print(1)"}
                ],
            },
        ]
    )
    assert ANTHROPIC.errors("CreateMessageParams", replay) == []
    messages = chat_of(replay)["messages"]
    assert messages[1]["reasoning_content"] == "I should read the file."
    assert messages[1]["tool_calls"][0]["id"] == "call_9f:x/1" == messages[2]["tool_call_id"]


# --- answers --------------------------------------------------------------------------------


def _completion(
    message: dict[str, Any], finish: str, usage: dict[str, Any] | None = None, **choice: Any
) -> dict[str, Any]:
    return {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "created": 0,
        "model": "glm-4.7",
        "choices": [
            {"index": 0, "message": message, "finish_reason": finish, "logprobs": None, **choice}
        ],
        "usage": usage or {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15},
    }


def _answer(
    message: dict[str, Any], finish: str, stops: list[str] | None = None, **kw: Any
) -> dict[str, Any]:
    out = from_chat(
        _completion(message, finish, **kw),
        "claude-opus-4-8",
        stop_sequences=stops,
        thinking_key=KEY,
    )
    check_message(out)
    assert out["id"].startswith("msg_") and out["model"] == "claude-opus-4-8"
    return out


def test_answer_plain_text_golden() -> None:
    out = _answer({"role": "assistant", "content": "Hello."}, "stop")
    del out["id"]
    assert out == {
        "type": "message",
        "role": "assistant",
        "model": "claude-opus-4-8",
        "content": [{"type": "text", "text": "Hello.", "citations": None}],
        "stop_reason": "end_turn",
        "stop_sequence": None,
        "stop_details": None,
        "container": None,
        "usage": {
            "input_tokens": 10,
            "output_tokens": 5,
            "cache_creation_input_tokens": 0,
            "cache_read_input_tokens": 0,
            "cache_creation": None,
            "inference_geo": None,
            "output_tokens_details": None,
            "server_tool_use": None,
            "service_tier": None,
        },
    }


def test_answer_thinking_then_text_signed() -> None:
    out = _answer({"role": "assistant", "content": "42", "reasoning_content": "6*7"}, "stop")
    thinking, text = out["content"]
    assert thinking["type"] == "thinking" and thinking["thinking"] == "6*7"
    assert verify_thinking("6*7", thinking["signature"], KEY)
    assert text["text"] == "42"


def test_answer_text_and_tools_end_tool_use_even_when_host_says_stop() -> None:
    calls = [
        {"id": "call_1", "type": "function", "function": {"name": "a", "arguments": '{"x":1}'}},
        {"id": "call_2", "type": "function", "function": {"name": "b", "arguments": "{not json"}},
        {"id": "call_3", "type": "function", "function": {"name": "c", "arguments": ""}},
    ]
    out = _answer({"role": "assistant", "content": "Running.", "tool_calls": calls}, "stop")
    assert out["stop_reason"] == "tool_use"
    assert [(b["type"], b.get("id"), b.get("input")) for b in out["content"]] == [
        ("text", None, None),
        ("tool_use", "toolu_call_1", {"x": 1}),
        ("tool_use", "toolu_call_2", {"_raw": "{not json"}),
        ("tool_use", "toolu_call_3", {}),
    ]


@pytest.mark.parametrize(
    ("finish", "extra", "stops", "reason", "sequence"),
    [
        ("length", {}, None, "max_tokens", None),
        ("content_filter", {}, None, "refusal", None),
        ("stop", {"stop_reason": "END"}, ["END"], "stop_sequence", "END"),
        ("stop", {"matched_stop": "##"}, ["END", "##"], "stop_sequence", "##"),
        ("stop", {}, ["END"], "end_turn", None),
    ],
)
def test_answer_stop_reasons(
    finish: str, extra: dict[str, Any], stops: list[str] | None, reason: str, sequence: str | None
) -> None:
    out = _answer({"role": "assistant", "content": "text"}, finish, stops, **extra)
    assert (out["stop_reason"], out["stop_sequence"]) == (reason, sequence)


def test_answer_empty_and_cached_usage() -> None:
    usage = {
        "prompt_tokens": 100,
        "completion_tokens": 0,
        "prompt_tokens_details": {"cached_tokens": 60},
    }
    out = _answer({"role": "assistant", "content": None}, "stop", usage=usage)
    assert out["content"] == [] and out["stop_reason"] == "end_turn"
    assert (out["usage"]["input_tokens"], out["usage"]["cache_read_input_tokens"]) == (40, 60)
    weird = from_chat({"choices": "nope"}, "m", stop_sequences=None, thinking_key=KEY)
    check_message(weird)


# --- errors, signatures, ids ----------------------------------------------------------------


def _stream_timeout() -> GatewayError:
    """What the edge hands a stream's ``fail`` when the deadline passed after the first byte
    (``edge/relay.py`` ``stream_failure_error``): type ``timeout_error``, status left at 500."""
    err = GatewayError("stopped: the request deadline passed", code="deadline_exceeded")
    err.type = "timeout_error"
    return err


@pytest.mark.parametrize(
    ("err", "overloaded", "status", "etype"),
    [
        (InvalidRequest("bad", param="x"), False, 400, "invalid_request_error"),
        (NotFound("no model"), False, 404, "not_found_error"),
        (BodyTooLarge("big"), False, 413, "invalid_request_error"),
        (RateLimited("slow down"), False, 429, "rate_limit_error"),
        (
            UpstreamsFailed("all failed", status=502, extra={"attempts": [{"provider": "zai"}]}),
            False,
            502,
            "api_error",
        ),
        (UpstreamsFailed("busy", status=503), True, 529, "overloaded_error"),
        (UpstreamsFailed("down", status=503), False, 503, "api_error"),
        (DeadlineExceeded("late"), False, 504, "timeout_error"),
        (_stream_timeout(), False, 500, "timeout_error"),  # a deadline inside a started stream
    ],
)
def test_error_for(err: Any, overloaded: bool, status: int, etype: str) -> None:
    got_status, body = error_for(err, overloaded=overloaded, request_id="req_1")
    parsed = orjson.loads(body)
    check_error(parsed)
    assert got_status == status and parsed["error"]["type"] == etype
    assert parsed["error"]["message"] == err.message and parsed["request_id"] == "req_1"
    if err.extra:
        assert parsed["error"]["attempts"] == [{"provider": "zai"}]


def test_error_body_shape() -> None:
    assert orjson.loads(error_body(401, "authentication_error", "no key")) == {
        "type": "error",
        "error": {"type": "authentication_error", "message": "no key"},
        "request_id": None,
    }


def test_signatures() -> None:
    sig = sign_thinking("t", KEY)
    assert verify_thinking("t", sig, KEY)
    assert not verify_thinking("t ", sig, KEY)
    assert not verify_thinking("t", sig, b"other")
    assert not verify_thinking("t", "EqQBCkYIBxgCKkD…", KEY)
    assert not verify_thinking("\udcff", "\udcff", KEY)


@given(st.text())
def test_tool_ids_round_trip_and_match_anthropics_pattern(openai_id: str) -> None:
    use = tool_use_id(openai_id)
    assert use.startswith("toolu_") and all(c.isascii() and (c.isalnum() or c in "_-") for c in use)
    if openai_id:
        assert call_id(use) == openai_id


# --- fuzz -----------------------------------------------------------------------------------

JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=20,
)
KEYS = st.sampled_from(
    ["model", "max_tokens", "messages", "system", "tools", "tool_choice", "thinking", "stream",
     "metadata", "stop_sequences", "temperature", "top_k", "output_config", "mcp_servers"]
)  # fmt: skip
BLOCK_TYPES = st.sampled_from(
    ["text", "image", "document", "tool_use", "tool_result", "thinking", "redacted_thinking",
     "search_result", "mid_conv_system", "server_tool_use", "compaction", "x"]
)  # fmt: skip
BLOCK = st.fixed_dictionaries(
    {"type": BLOCK_TYPES},
    optional={
        k: JSON
        for k in (
            "text",
            "source",
            "id",
            "name",
            "input",
            "tool_use_id",
            "content",
            "thinking",
            "signature",
            "is_error",
        )
    },
)
MESSAGE = st.fixed_dictionaries(
    {
        "role": st.sampled_from(["user", "assistant", "system", "bot"]),
        "content": st.text() | st.lists(BLOCK, max_size=4) | JSON,
    }
)
BODY = st.dictionaries(KEYS, JSON, max_size=8) | st.fixed_dictionaries(
    {
        "model": st.text(max_size=12),
        "max_tokens": st.integers(-1, 10),
        "messages": st.lists(MESSAGE, max_size=4),
    },
    optional={
        k: JSON for k in ("system", "tools", "tool_choice", "thinking", "metadata", "output_config")
    },
)


@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(JSON, BODY))
def test_fuzz_only_invalid_request_escapes(body: Any) -> None:
    try:
        req = to_chat(body, MODELS, thinking_key=KEY)
    except InvalidRequest as exc:
        assert exc.param
        return
    infer(req.chat)  # whatever it accepts, the router's needs reader accepts too


TEXT = st.text(min_size=1, max_size=20)
SPEC_BLOCK = st.one_of(
    st.builds(lambda t: {"type": "text", "text": t, "cache_control": {"type": "ephemeral"}}, TEXT),
    st.builds(lambda u: {"type": "image", "source": {"type": "url", "url": u}}, TEXT),
    st.builds(
        lambda d: {
            "type": "image",
            "source": {"type": "base64", "media_type": "image/png", "data": "aGk="},
        },
        TEXT,
    ),
    st.builds(
        lambda d: {
            "type": "document",
            "source": {"type": "text", "media_type": "text/plain", "data": d},
        },
        TEXT,
    ),
)
TOOL_ID = st.from_regex(r"[A-Za-z0-9_-]{1,12}", fullmatch=True)
ARGS = st.dictionaries(
    st.text(max_size=5), st.integers(-(2**63), 2**63 - 1) | st.text(max_size=5), max_size=3
)
SPEC_ASSISTANT_BLOCK = st.one_of(
    st.builds(lambda t: {"type": "text", "text": t}, TEXT),
    st.builds(
        lambda t, s: {"type": "thinking", "thinking": t, "signature": s}, st.text(), st.text()
    ),
    st.builds(
        lambda i, n, a: {"type": "tool_use", "id": i, "name": n, "input": a},
        TOOL_ID,
        st.from_regex(r"[a-z]{1,8}", fullmatch=True),
        ARGS,
    ),
)
SPEC_MESSAGE = st.one_of(
    st.fixed_dictionaries(
        {"role": st.just("user"), "content": TEXT | st.lists(SPEC_BLOCK, min_size=1, max_size=3)}
    ),
    st.fixed_dictionaries(
        {
            "role": st.just("assistant"),
            "content": TEXT | st.lists(SPEC_ASSISTANT_BLOCK, min_size=1, max_size=3),
        }
    ),
)
SPEC_BODY = st.fixed_dictionaries(
    {
        "model": st.sampled_from(["claude-opus-4-8", "claude-haiku-4-5[1m]", "auto"]),
        "max_tokens": st.integers(1, 200_000),
        "messages": st.lists(SPEC_MESSAGE, min_size=1, max_size=5),
    },
    optional={
        "system": TEXT
        | st.lists(st.builds(lambda t: {"type": "text", "text": t}, TEXT), max_size=3),
        "stream": st.booleans(),
        "temperature": st.floats(0, 1),
        "top_k": st.integers(0, 100),
        "stop_sequences": st.lists(TEXT, max_size=3),
        "tools": st.lists(
            st.builds(tool, st.from_regex(r"[A-Za-z0-9_-]{1,20}", fullmatch=True)), max_size=3
        ),
        "thinking": st.sampled_from(
            [{"type": "adaptive"}, {"type": "disabled"}, {"type": "enabled", "budget_tokens": 1024}]
        ),
        "output_config": st.sampled_from([{"effort": "low"}, {"effort": "max"}, {}]),
        "metadata": st.sampled_from([{}, {"user_id": "u-123456"}, {"user_id": None}]),
        "service_tier": st.sampled_from(["auto", "standard_only"]),
    },
)


@settings(max_examples=150, suppress_health_check=[HealthCheck.too_slow])
@given(SPEC_BODY)
def test_every_spec_valid_body_translates(body: dict[str, Any]) -> None:
    assert ANTHROPIC.errors("CreateMessageParams", body) == []
    req = to_chat(body, MODELS, thinking_key=KEY)
    infer(req.chat)


def test_claude_codes_billing_line_is_not_part_of_the_system_prompt() -> None:
    system = [
        {"type": "text", "text": "x-anthropic-billing-header: cc_version=2.1.332.abc1;"},
        {"type": "text", "text": "You are Claude Code.", "cache_control": {"type": "ephemeral"}},
    ]
    req = to_chat(base(system=system, messages=[{"role": "user", "content": "Hi"}]), MODELS,
                  thinking_key=KEY)  # fmt: skip
    assert req.chat["messages"][0] == {"role": "system", "content": "You are Claude Code."}
    assert "system.billing_header=dropped" in req.ignored


def test_a_native_host_gets_mid_conversation_system_turns_as_reminders() -> None:
    from gateway.frontends.messages_native import fold_system_turns

    turns = [
        {"role": "user", "content": "a"},
        {"role": "system", "content": "env: linux"},
        {"role": "user", "content": [{"type": "text", "text": "b"}]},
        {"role": "system", "content": [{"type": "text", "text": "late"}]},
    ]
    assert fold_system_turns(turns) == [
        {"role": "user", "content": "a"},
        {"role": "user", "content": [
            {"type": "text", "text": "<system-reminder>env: linux</system-reminder>"},
            {"type": "text", "text": "b"},
        ]},
        {"role": "user", "content": [
            {"type": "text", "text": "<system-reminder>late</system-reminder>"},
        ]},
    ]  # fmt: skip
    plain = [{"role": "user", "content": "x"}]
    assert fold_system_turns(plain) is plain


def test_the_context_1m_beta_is_a_long_context_need() -> None:
    from gateway.frontends.messages_frontend import MessagesFrontEnd

    fe = MessagesFrontEnd({"claude": "auto"}, KEY)
    body = base(messages=[{"role": "user", "content": "Hi"}])
    assert fe.parse(body, {}).min_context is None
    beta = {"anthropic-beta": "claude-code-20250219,context-1m-2025-08-07"}
    assert fe.parse(body, beta).min_context == 200_000

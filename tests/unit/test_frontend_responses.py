"""OpenAI Responses in and out of the chat form: golden bodies, the Codex body, replayed
reasoning, namespaces, errors, fuzz; every Response checked with the SDK's types, OpenAI's
published schema and (when installed) the Open Responses schema."""

from __future__ import annotations

import base64
import contextlib
import copy
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from openai.types.responses import Response

from gateway.catalogue.needs import infer
from gateway.errors import InvalidRequest, UpstreamsFailed
from gateway.frontends.responses import from_chat, seal, to_chat, unseal
from gateway.frontends.responses_frontend import ResponsesFrontEnd
from tests.support.openapi import validate
from tests.support.pdf import pdf_with_text

KEY = b"test-reasoning-key"


def check_response(r: dict[str, Any]) -> Response:
    """The SDK parses it, OpenAI's schema and the Open Responses schema accept it."""
    validate("Response", r)
    try:
        from openresponses_types import ResponseResource
    except ImportError:  # optional: the lead pins it
        pass
    else:
        ResponseResource.model_validate(r)
    return Response.model_validate(r)


def chat_of(body: dict[str, Any], **kw: Any) -> dict[str, Any]:
    chat = to_chat(body, key=KEY, **kw).chat
    infer(chat)  # every translated body is one the needs resolver takes
    return chat


def completion(message: dict[str, Any], finish: str = "stop") -> dict[str, Any]:
    return {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "created": 1765000000,
        "model": "glm-4.7",
        "choices": [{"index": 0, "message": {"role": "assistant", **message},
                     "finish_reason": finish}],
        "usage": {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15,
                  "prompt_tokens_details": {"cached_tokens": 4},
                  "completion_tokens_details": {"reasoning_tokens": 2}},
    }  # fmt: skip


CODEX = {
    "model": "glm-4.7",
    "input": [
        {"type": "message", "role": "developer",
         "content": [{"type": "input_text", "text": "You are Codex."}]},
        {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "fix it"}]},
    ],
    "tools": [
        {"type": "function", "name": "exec_command", "description": "Run.", "strict": False,
         "parameters": {"type": "object", "properties": {"cmd": {"type": "string"}}}},
        {"type": "namespace", "name": "multi_agent_v1", "tools": [
            {"type": "function", "name": "spawn", "strict": False,
             "parameters": {"type": "object", "properties": {}}}]},
        {"type": "web_search", "external_web_access": False},
    ],
    "tool_choice": "auto",
    "parallel_tool_calls": True,
    "reasoning": {"summary": "auto"},
    "include": ["reasoning.encrypted_content"],
    "store": False,
    "stream": True,
    "prompt_cache_key": "conv-1",
    "client_metadata": {"x": "y"},
}  # fmt: skip


# --- requests -------------------------------------------------------------------------------


def test_string_input_and_instructions() -> None:
    chat = chat_of({"model": "auto", "input": "hi", "instructions": "be brief",
                    "max_output_tokens": 100, "temperature": 0.5, "top_p": 0.9})  # fmt: skip
    assert chat == {
        "model": "auto",
        "messages": [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"}],
        "max_tokens": 100,
        "temperature": 0.5,
        "top_p": 0.9,
    }


def test_codex_body_translates() -> None:
    req = to_chat(CODEX, key=KEY)
    chat = req.chat
    assert chat["messages"] == [
        {"role": "system", "content": "You are Codex."},
        {"role": "user", "content": [{"type": "text", "text": "fix it"}]},
    ]
    names = [t["function"]["name"] for t in chat["tools"]]
    assert names == ["exec_command", "multi_agent_v1__spawn"]
    assert chat["tools"][0]["function"]["strict"] is False
    assert chat["tool_choice"] == "auto" and chat["parallel_tool_calls"] is True
    assert chat["stream"] is True
    assert req.summary and req.encrypted
    assert "tools.web_search=dropped" in req.ignored
    assert "prompt_cache_key=ignored" in req.ignored and "client_metadata=ignored" in req.ignored
    needs = infer(chat)
    assert needs.capabilities == frozenset({"function_calling"}) and not needs.builtin_tools


def test_web_search_builtin_is_a_tool_need() -> None:
    chat = chat_of(CODEX, web_search="builtin")
    assert {"type": "web_search"} in chat["tools"]
    needs = infer(chat)
    assert needs.builtin_tools == frozenset({"web_search"})
    assert "tool_use" in needs.capabilities


def test_items_round_trip_tool_turns_and_reasoning() -> None:
    sealed = seal("step 1\n  thinking… ✓", KEY)
    body = {"model": "glm-4.7", "input": [
        {"role": "user", "content": "go"},
        {"type": "reasoning", "id": "rs_1", "summary": [], "encrypted_content": sealed},
        {"type": "function_call", "call_id": "call_a", "name": "spawn",
         "namespace": "multi_agent_v1", "arguments": "{}"},
        {"type": "function_call", "call_id": "call_b", "name": "exec_command",
         "arguments": "{\"cmd\":\"ls\"}"},
        {"type": "function_call_output", "call_id": "call_a", "output": "ok"},
        {"type": "function_call_output", "call_id": "call_b",
         "output": [{"type": "input_text", "text": "a"}, {"type": "input_text", "text": "b"}]},
        {"type": "reasoning", "id": "rs_2", "summary": [], "encrypted_content": sealed + "x"},
        {"role": "assistant", "content": [{"type": "output_text", "text": "done"}]},
    ], "tools": CODEX["tools"][:2]}  # fmt: skip
    req = to_chat(body, key=KEY)
    infer(req.chat)
    m = req.chat["messages"]
    assert m[1]["reasoning_content"] == "step 1\n  thinking… ✓"
    assert [c["function"]["name"] for c in m[1]["tool_calls"]] == [
        "multi_agent_v1__spawn", "exec_command"]  # fmt: skip
    assert m[2] == {"role": "tool", "tool_call_id": "call_a", "content": "ok"}
    assert m[3]["content"] == "ab"
    assert m[4] == {"role": "assistant", "content": "done"}
    assert "input.reasoning=unverified:1" in req.ignored


def test_vision_and_text_file() -> None:
    data = "data:text/plain;base64," + base64.b64encode(b"notes").decode()
    chat = chat_of({"model": "auto", "input": [{"role": "user", "content": [
        {"type": "input_image", "image_url": "https://x/cat.png", "detail": "low"},
        {"type": "input_file", "filename": "a.txt", "file_data": data}]}]})  # fmt: skip
    assert chat["messages"][0]["content"] == [
        {"type": "image_url", "image_url": {"url": "https://x/cat.png", "detail": "low"}},
        {"type": "text", "text": "<file name='a.txt'>\nnotes\n</file>"},
    ]
    assert "vision" in infer(chat).capabilities
    broken = "data:application/pdf;base64,AAAA"
    with pytest.raises(InvalidRequest):
        chat_of({"model": "auto", "input": [{"role": "user", "content": [
            {"type": "input_file", "file_data": broken}]}]})  # fmt: skip
    pdf = "data:application/pdf;base64," + base64.b64encode(pdf_with_text("Hi there")).decode()
    chat = chat_of({"model": "auto", "input": [{"role": "user", "content": [
        {"type": "input_file", "filename": "b.pdf", "file_data": pdf}]}]})  # fmt: skip
    assert chat["messages"][0]["content"] == [
        {"type": "text", "text": "<file name='b.pdf'>\nHi there\n</file>"}
    ]


def test_formats_choice_and_effort() -> None:
    schema = {"type": "object", "properties": {"a": {"type": "string"}}}
    chat = chat_of({"model": "auto", "input": "x", "tools": CODEX["tools"][:1],
                    "tool_choice": {"type": "function", "name": "exec_command"},
                    "text": {"format": {"type": "json_schema", "name": "out", "schema": schema,
                                        "strict": True}},
                    "reasoning": {"effort": "minimal"}})  # fmt: skip
    spec = {"name": "out", "schema": schema, "strict": True}
    assert chat["response_format"] == {"type": "json_schema", "json_schema": spec}
    assert chat["tool_choice"] == {"type": "function", "function": {"name": "exec_command"}}
    assert chat["thinking"] == {"type": "disabled"}
    assert "structured_outputs" in infer(chat).capabilities
    chat = chat_of({"model": "auto", "input": "x", "reasoning": {"effort": "high"},
                    "text": {"format": {"type": "json_object"}}})  # fmt: skip
    assert chat["thinking"] == {"type": "enabled"}
    assert chat["response_format"] == {"type": "json_object"}


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"model": "m", "input": "x", "previous_response_id": "resp_1"}, "previous_response_id"),
        ({"model": "m", "input": "x", "conversation": "conv_1"}, "conversation"),
        ({"model": "m", "input": "x", "tools": [{"type": "file_search"}]}, "tools[0].type"),
        ({"model": "m", "input": 3}, "input"),
        ({"model": "m", "input": "x", "include": 0}, "include"),
        ({"model": "m", "input": "x", "background": True}, "background"),
        ({"model": "m", "input": [{"type": "item_reference", "id": "item_1"}]}, "input[0].id"),
        ({"model": "m", "input": "x", "max_output_tokens": 0}, "max_output_tokens"),
        ({"model": "m", "input": "x", "tools": [
            {"type": "function", "name": "a__b"},
            {"type": "namespace", "name": "a", "tools": [{"type": "function", "name": "b"}]}]},
         "tools[1].tools[0].name"),
    ],
)  # fmt: skip
def test_refused(body: dict[str, Any], param: str) -> None:
    with pytest.raises(InvalidRequest) as exc:
        to_chat(body, key=KEY)
    assert exc.value.param == param and exc.value.status == 400


# --- answers --------------------------------------------------------------------------------


def test_plain_answer() -> None:
    req = to_chat({"model": "coding", "input": "hi"}, key=KEY)
    r = from_chat(completion({"content": "Hello."}), req)
    parsed = check_response(r)
    assert parsed.output_text == "Hello." and parsed.status == "completed"
    assert r["model"] == "coding" and r["id"].startswith("resp_")
    assert r["usage"] == {"input_tokens": 10,
                          "input_tokens_details": {"cached_tokens": 4, "cache_write_tokens": 0},
                          "output_tokens": 5, "output_tokens_details": {"reasoning_tokens": 2},
                          "total_tokens": 15}  # fmt: skip


def test_reasoning_and_namespaced_calls_answer_round_trip() -> None:
    req = to_chat(CODEX, key=KEY)
    calls = [
        {"id": "call_1", "type": "function",
         "function": {"name": "multi_agent_v1__spawn", "arguments": "{}"}},
        {"id": "call_2", "type": "function",
         "function": {"name": "exec_command", "arguments": "{\"cmd\":\"ls\"}"}},
    ]  # fmt: skip
    r = from_chat(completion({"content": "Let me look.", "reasoning_content": "  think\n",
                              "tool_calls": calls}, "tool_calls"), req)  # fmt: skip
    check_response(r)
    kinds = [i["type"] for i in r["output"]]
    assert kinds == ["reasoning", "message", "function_call", "function_call"]
    rs = r["output"][0]
    assert rs["summary"] == [{"type": "summary_text", "text": "  think\n"}]
    spawn = r["output"][2]
    assert (spawn["name"], spawn["namespace"], spawn["call_id"]) == (
        "spawn", "multi_agent_v1", "call_1")  # fmt: skip
    # the next turn replays the output: reasoning reaches the host unmodified
    body = copy.deepcopy(CODEX)
    body["input"] += r["output"] + [
        {"type": "function_call_output", "call_id": "call_1", "output": "x"},
        {"type": "function_call_output", "call_id": "call_2", "output": "y"},
    ]
    chat = chat_of(body)
    turn = chat["messages"][2]
    assert turn["reasoning_content"] == "  think\n" and turn["content"] == "Let me look."
    assert [c["function"]["name"] for c in turn["tool_calls"]] == [
        "multi_agent_v1__spawn", "exec_command"]  # fmt: skip


def test_length_is_incomplete() -> None:
    req = to_chat({"model": "m", "input": "hi", "max_output_tokens": 5}, key=KEY)
    r = from_chat(completion({"content": "Hel"}, "length"), req)
    check_response(r)
    assert r["status"] == "incomplete"
    assert r["incomplete_details"] == {"reason": "max_output_tokens"}
    assert r["max_output_tokens"] == 5


def test_seal() -> None:
    token = seal("t\udcff", KEY)
    assert unseal(token, KEY) == "t\udcff"
    assert unseal(token, b"other") is None
    assert unseal(token[:-2], KEY) is None
    assert unseal("glmgwr1.!!!.x", KEY) is None
    assert unseal(None, KEY) is None


# --- the front-end --------------------------------------------------------------------------


def test_front_end_parse_render_error() -> None:
    fe = ResponsesFrontEnd(KEY)
    inbound = fe.parse(copy.deepcopy(CODEX), {})
    assert inbound.stream and inbound.chat["stream_options"] == {"include_usage": True}
    assert inbound.headers[0][0] == "x-glm-ignored"
    out = fe.render(orjson.dumps(completion({"content": "x"})), inbound)
    check_response(orjson.loads(out))
    status, body, _ = fe.error(UpstreamsFailed("all failed", code="upstreams_failed"), "r1")
    err = orjson.loads(body)["error"]
    assert status >= 500 and set(err) >= {"message", "type", "param", "code"}
    validate("ErrorResponse", orjson.loads(body))


# --- fuzz -----------------------------------------------------------------------------------

JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=20,
)
KEYS = st.sampled_from(
    ["model", "input", "instructions", "tools", "tool_choice", "text", "reasoning", "include",
     "stream", "metadata", "max_output_tokens", "temperature", "truncation", "store"]
)  # fmt: skip
ITEM = st.fixed_dictionaries(
    {"type": st.sampled_from(["message", "function_call", "function_call_output", "reasoning",
                              "x"])},
    optional={k: JSON for k in ("role", "content", "call_id", "name", "namespace", "arguments",
                                "output", "encrypted_content")},
)  # fmt: skip
BODY = st.dictionaries(KEYS, JSON, max_size=8) | st.fixed_dictionaries(
    {"model": st.text(max_size=6), "input": st.text() | st.lists(ITEM, max_size=4)},
    optional={k: JSON for k in ("tools", "tool_choice", "text", "reasoning", "include")},
)


@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow], derandomize=True)
@given(st.one_of(JSON, BODY))
def test_fuzz_only_invalid_request_escapes(body: Any) -> None:
    try:
        req = to_chat(body, key=KEY)
    except InvalidRequest as exc:
        assert exc.param
        return
    with contextlib.suppress(InvalidRequest):
        infer(req.chat)


def test_an_item_reference_to_a_call_is_expanded_without_state() -> None:
    """The AI SDK (store on by default) sends back ``item_reference`` ids, not the items: a
    ``function_call`` id carries the call, sealed, so the gateway restores it."""
    tools = [{"type": "function", "name": "get_weather", "parameters": {"type": "object"}}]
    first = {"model": "m", "input": "weather?", "tools": tools}
    call = {"id": "call_9", "type": "function",
            "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'}}  # fmt: skip
    answer = from_chat(completion({"content": None, "tool_calls": [call]}, "tool_calls"),
                       to_chat(first, key=KEY))  # fmt: skip
    (item,) = [o for o in answer["output"] if o["type"] == "function_call"]
    replay = {**first, "input": [
        {"role": "user", "content": "weather?"},
        {"type": "item_reference", "id": item["id"]},
        {"type": "function_call_output", "call_id": "call_9", "output": "sunny"},
    ]}  # fmt: skip
    chat = to_chat(replay, key=KEY).chat
    assert chat["messages"][1]["tool_calls"] == [call]
    forged = {**replay, "input": [{"type": "item_reference", "id": item["id"][:-4] + "AAAA"}]}
    with pytest.raises(InvalidRequest):
        to_chat(forged, key=KEY)

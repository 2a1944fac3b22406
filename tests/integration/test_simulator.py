"""The provider simulator, started for real on loopback and driven by the openai SDK and aiohttp."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
import sys
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import jsonschema
import openai
import orjson
import pytest
import pytest_asyncio

from gateway.catalogue.schema import Variant
from gateway.catalogue.target import Target
from gateway.simulator.behaviour import count_tokens, split_pieces
from gateway.simulator.instances import schema_instance
from gateway.simulator.models import SimModel, sim_models_from_targets
from gateway.simulator.server import STATE, SimServer, start_simulator


def sim(
    provider: str, model: str, variant: str, dialect: str, context: int, **caps: bool
) -> SimModel:
    """A SimModel with function calling and thinking on, images and json_schema off."""
    return SimModel(
        provider=provider,
        model=model,
        variant=variant,
        dialect=dialect,
        context=context,
        max_output=None,
        accepts_images=caps.get("images", False),
        function_calling=caps.get("tools", True),
        json_schema=caps.get("schema", False),
        thinking=caps.get("thinking", True),
    )


MODELS = [
    sim("zai", "glm-4.7", "glm-4.7", "zhipu", 200_000),
    sim("zai", "glm-4.6v", "glm-4.6v", "zhipu", 128_000, images=True),
    sim("zai", "glm-4-32b", "glm-4-32b", "zhipu", 128_000, thinking=False),
    sim("openrouter", "z-ai/glm-4.6", "glm-4.6", "openrouter", 200_000, schema=True),
    sim("siliconflow", "zai-org/GLM-4.5", "glm-4.5", "siliconflow", 131_072, schema=True),
    sim("vllm", "glm-4-9b-chat", "glm-4-9b", "vllm", 8192, tools=False, thinking=False),
    sim("deepinfra", "zai-org/GLM-4.7", "glm-4.7", "openai", 200_000, schema=True),
]
AUTH = {"Authorization": "Bearer k"}
REPO_ROOT = str(Path(__file__).resolve().parents[2])


@pytest_asyncio.fixture(scope="module")
async def sim_server() -> AsyncIterator[SimServer]:
    server = await start_simulator(MODELS)
    yield server
    await server.stop()


@pytest_asyncio.fixture(scope="module")
async def sim_http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


@pytest_asyncio.fixture
async def sim_client(sim_server: SimServer) -> AsyncIterator[openai.AsyncOpenAI]:
    client = openai.AsyncOpenAI(base_url=sim_server.url + "/zai/v1", api_key="k", max_retries=0)
    yield client
    await client.close()


@pytest_asyncio.fixture
async def sim_openai(sim_server: SimServer) -> AsyncIterator[openai.AsyncOpenAI]:
    """A client of the OpenAI-dialect host ``deepinfra``."""
    client = openai.AsyncOpenAI(
        base_url=sim_server.url + "/deepinfra/v1", api_key="k", max_retries=0
    )
    yield client
    await client.close()


@pytest_asyncio.fixture(autouse=True)
async def sim_clean(sim_server: SimServer, sim_http: aiohttp.ClientSession) -> None:
    async with sim_http.delete(sim_server.url + "/_sim/faults") as r:
        assert r.status == 200


async def post(
    http: aiohttp.ClientSession,
    sim: SimServer,
    provider: str,
    body: dict[str, Any],
    headers: dict[str, str] | None = None,
) -> tuple[int, Any, dict[str, str]]:
    url = f"{sim.url}/{provider}/v1/chat/completions"
    async with http.post(url, json=body, headers=AUTH if headers is None else headers) as r:
        raw = await r.read()
        payload = orjson.loads(raw) if r.content_type == "application/json" else raw.decode()
        return r.status, payload, dict(r.headers)


def chat(model: str, text: str = "Hi there", **extra: Any) -> dict[str, Any]:
    return {"model": model, "messages": [{"role": "user", "content": text}], **extra}


def sse_events(raw: str) -> list[Any]:
    out: list[Any] = []
    for block in raw.split("\n\n"):
        if block.startswith("data: "):
            data = block[6:]
            out.append(data if data == "[DONE]" else orjson.loads(data))
    return out


def error_of(exc: openai.APIStatusError) -> dict[str, Any]:
    body = exc.body
    assert isinstance(body, dict)
    inner = body.get("error", body)
    assert isinstance(inner, dict)
    return inner


# --- answers ---------------------------------------------------------------------------------


async def test_plain_answer_through_the_sdk(sim_client: openai.AsyncOpenAI) -> None:
    resp = await sim_client.chat.completions.create(
        model="glm-4.7", messages=[{"role": "user", "content": "What is the capital of France?"}]
    )
    msg = resp.choices[0].message
    assert msg.content == "Hello from glm-4.7 via zai. You said: What is the capital of France?"
    assert resp.choices[0].finish_reason == "stop"
    assert resp.id.startswith("chatcmpl-")
    assert resp.model == "glm-4.7"
    assert (msg.model_extra or {})["reasoning_content"].startswith("The user wrote")
    assert resp.usage is not None
    assert resp.usage.total_tokens == resp.usage.prompt_tokens + resp.usage.completion_tokens


async def test_zhipu_body_has_no_object_field(
    sim_server: SimServer, sim_http: aiohttp.ClientSession
) -> None:
    status, body, _ = await post(sim_http, sim_server, "zai", chat("glm-4.7"))
    assert status == 200
    assert "object" not in body
    assert body["request_id"]
    status, body, _ = await post(sim_http, sim_server, "deepinfra", chat("zai-org/GLM-4.7"))
    assert body["object"] == "chat.completion"


async def test_any_middle_path_and_model_list(
    sim_server: SimServer, sim_http: aiohttp.ClientSession
) -> None:
    url = f"{sim_server.url}/zai/api/paas/v4/chat/completions"
    async with sim_http.post(url, json=chat("glm-4-32b"), headers=AUTH) as r:
        assert r.status == 200
        assert "reasoning_content" not in (await r.json())["choices"][0]["message"]
    async with sim_http.get(f"{sim_server.url}/zai/v1/models", headers=AUTH) as r:
        ids = [m["id"] for m in (await r.json())["data"]]
    assert ids == ["glm-4.7", "glm-4.6v", "glm-4-32b"]
    async with sim_http.get(f"{sim_server.url}/_sim/healthz") as r:
        assert r.status == 200


async def test_stream_through_the_sdk(sim_openai: openai.AsyncOpenAI) -> None:
    text = "Please tell me a long story about seven dragons and a lighthouse"
    stream = await sim_openai.chat.completions.create(
        model="zai-org/GLM-4.7",
        messages=[{"role": "user", "content": text}],
        stream=True,
        stream_options={"include_usage": True},
    )
    content, reasoning, finish, usage, order = [], [], None, None, []
    async for chunk in stream:
        if chunk.usage is not None:
            usage = chunk.usage
        if not chunk.choices:
            continue
        delta = chunk.choices[0].delta
        if (delta.model_extra or {}).get("reasoning_content"):
            reasoning.append(delta.model_extra["reasoning_content"])  # type: ignore[index]
            order.append("r")
        if delta.content:
            content.append(delta.content)
            order.append("c")
        finish = chunk.choices[0].finish_reason or finish
    assert "".join(content) == f"Hello from glm-4.7 via deepinfra. You said: {text[:40]}"
    assert len(content) > 2
    assert order == sorted(order, key=lambda x: x != "r")
    assert reasoning and finish == "stop"
    assert usage is not None and usage.completion_tokens > 0


async def test_zhipu_stream_shape(sim_server: SimServer, sim_http: aiohttp.ClientSession) -> None:
    status, raw, headers = await post(sim_http, sim_server, "zai", chat("glm-4.7", stream=True))
    assert status == 200 and headers["Content-Type"].startswith("text/event-stream")
    events = sse_events(raw)
    assert events[-1] == "[DONE]"
    chunks = events[:-1]
    assert all("object" not in c for c in chunks)
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant"}
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"
    assert chunks[-1]["usage"]["total_tokens"] > 0
    assert all("usage" not in c for c in chunks[:-1])


async def test_no_usage_chunk_without_include_usage(
    sim_server: SimServer, sim_http: aiohttp.ClientSession
) -> None:
    _, raw, _ = await post(sim_http, sim_server, "deepinfra", chat("zai-org/GLM-4.7", stream=True))
    chunks = sse_events(raw)[:-1]
    assert all("usage" not in c and c["choices"] for c in chunks)


# --- tools and structured output ---------------------------------------------------------------

WEATHER = {
    "type": "object",
    "properties": {
        "city": {"type": "string", "minLength": 2},
        "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
        "days": {"type": "integer", "minimum": 1, "maximum": 7},
    },
    "required": ["city", "unit"],
    "additionalProperties": False,
}
TOOLS: list[Any] = [
    {"type": "function", "function": {"name": "noop", "description": "x", "parameters": {}}},
    {
        "type": "function",
        "function": {"name": "weather", "description": "w", "parameters": WEATHER},
    },
]


async def test_tool_call_names_the_chosen_function(sim_openai: openai.AsyncOpenAI) -> None:
    resp = await sim_openai.chat.completions.create(
        model="zai-org/GLM-4.7",
        messages=[{"role": "user", "content": "Weather in Paris?"}],
        tools=TOOLS,
        tool_choice={"type": "function", "function": {"name": "weather"}},
    )
    choice = resp.choices[0]
    assert choice.finish_reason == "tool_calls" and choice.message.content is None
    calls = choice.message.tool_calls or []
    assert len(calls) == 1 and calls[0].type == "function"
    assert calls[0].function.name == "weather"
    jsonschema.validate(orjson.loads(calls[0].function.arguments), WEATHER)


async def test_tool_result_gets_a_text_answer(sim_client: openai.AsyncOpenAI) -> None:
    messages: list[Any] = [
        {"role": "user", "content": "Weather?"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {"id": "c1", "type": "function", "function": {"name": "noop", "arguments": "{}"}}
            ],
        },
        {"role": "tool", "tool_call_id": "c1", "content": "sunny"},
    ]
    resp = await sim_client.chat.completions.create(model="glm-4.7", messages=messages, tools=TOOLS)
    assert resp.choices[0].finish_reason == "stop"
    assert resp.choices[0].message.content == "Hello from glm-4.7 via zai. You said: Weather?"


async def test_streamed_tool_call_is_one_delta(
    sim_server: SimServer, sim_http: aiohttp.ClientSession
) -> None:
    body = chat("z-ai/glm-4.6", tools=TOOLS[1:], stream=True)
    _, raw, _ = await post(sim_http, sim_server, "openrouter", body)
    chunks = sse_events(raw)[:-1]
    calls = [
        c["choices"][0]["delta"]["tool_calls"]
        for c in chunks
        if "tool_calls" in c["choices"][0]["delta"]
    ]
    assert len(calls) == 1
    (call,) = calls[0]
    assert call["index"] == 0 and call["id"] and call["function"]["name"] == "weather"
    jsonschema.validate(orjson.loads(call["function"]["arguments"]), WEATHER)
    assert chunks[-1]["choices"][0]["finish_reason"] == "tool_calls"


ORDER = {
    "type": "object",
    "$defs": {
        "item": {
            "type": "object",
            "properties": {
                "sku": {"type": "string", "pattern": "^.*$"},
                "qty": {"type": "integer", "exclusiveMinimum": 0, "multipleOf": 5},
            },
            "required": ["sku", "qty"],
            "additionalProperties": False,
        }
    },
    "properties": {
        "id": {"type": "string", "format": "uuid"},
        "at": {"type": "string", "format": "date-time"},
        "status": {"const": "open"},
        "items": {"type": "array", "items": {"$ref": "#/$defs/item"}, "minItems": 2},
        "note": {"anyOf": [{"type": "null"}, {"type": "string"}]},
        "price": {"type": "number", "exclusiveMinimum": 0, "exclusiveMaximum": 1},
        "tags": {"type": "array", "items": {"type": "string"}, "uniqueItems": True, "minItems": 3},
        "flag": {"type": ["boolean", "null"]},
        "short": {"type": "string", "maxLength": 3},
    },
    "additionalProperties": False,
}


async def test_json_schema_instance_validates(sim_openai: openai.AsyncOpenAI) -> None:
    resp = await sim_openai.chat.completions.create(
        model="zai-org/GLM-4.7",
        messages=[{"role": "user", "content": "An order please"}],
        response_format={
            "type": "json_schema",
            "json_schema": {"name": "order", "schema": ORDER, "strict": True},
        },
    )
    value = orjson.loads(resp.choices[0].message.content or "")
    jsonschema.Draft202012Validator(ORDER).validate(value)
    assert len(value["items"]) == 2


@pytest.mark.parametrize(
    "schema",
    [
        {
            "type": "object",
            "properties": {"a": {"type": "string", "minLength": 20}},
            "required": ["a"],
        },
        {"type": "array", "prefixItems": [{"type": "integer"}, {"type": "boolean"}]},
        {
            "allOf": [
                {"properties": {"x": {"type": "integer", "minimum": 10}}, "required": ["x"]},
                {"properties": {"y": {"type": "string"}}, "required": ["y"]},
            ]
        },
        {
            "type": "object",
            "definitions": {"n": {"type": "number", "maximum": -3}},
            "properties": {"n": {"$ref": "#/definitions/n"}},
        },
        {"oneOf": [{"type": "string", "format": "date"}, {"type": "integer"}]},
        {"type": "object", "required": ["k"], "additionalProperties": {"type": "integer"}},
    ],
)
def test_schema_instances(schema: dict[str, Any]) -> None:
    jsonschema.Draft202012Validator(schema).validate(schema_instance(schema))


async def test_json_object_follows_a_schema_in_the_prompt(
    sim_server: SimServer, sim_http: aiohttp.ClientSession
) -> None:
    prompt = (
        "Answer in JSON. Your reply must follow this JSON schema:\n```json\n"
        + orjson.dumps(WEATHER).decode()
        + "\n```"
    )
    body = chat("glm-4.7", prompt, response_format={"type": "json_object"})
    status, resp, _ = await post(sim_http, sim_server, "zai", body)
    assert status == 200
    jsonschema.validate(orjson.loads(resp["choices"][0]["message"]["content"]), WEATHER)
    body = chat("glm-4.7", "hi", response_format={"type": "json_object"})
    _, resp, _ = await post(sim_http, sim_server, "zai", body)
    assert set(orjson.loads(resp["choices"][0]["message"]["content"])) == {"answer"}


async def test_json_schema_refused_without_native_support(
    sim_server: SimServer, sim_http: aiohttp.ClientSession
) -> None:
    rf = {"type": "json_schema", "json_schema": {"name": "w", "schema": WEATHER}}
    status, body, _ = await post(
        sim_http, sim_server, "vllm", chat("glm-4-9b-chat", response_format=rf)
    )
    assert status == 400 and body["error"]["param"] == "response_format"


# --- refusals ----------------------------------------------------------------------------------

IMAGE = [
    {"type": "text", "text": "What is this?"},
    {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}},
]


async def test_image_refused_by_text_models(
    sim_server: SimServer, sim_http: aiohttp.ClientSession, sim_openai: openai.AsyncOpenAI
) -> None:
    status, body, _ = await post(sim_http, sim_server, "zai", chat("glm-4.7", IMAGE))  # type: ignore[arg-type]
    assert status == 400 and body["error"]["code"] == "1210"
    with pytest.raises(openai.BadRequestError, match="image input"):
        await sim_openai.chat.completions.create(
            model="zai-org/GLM-4.7",
            messages=[{"role": "user", "content": IMAGE}],  # type: ignore[misc,list-item]
        )
    status, body, _ = await post(sim_http, sim_server, "zai", chat("glm-4.6v", IMAGE))  # type: ignore[arg-type]
    assert status == 200 and body["usage"]["prompt_tokens"] > 1000


@pytest.mark.parametrize(
    ("provider", "model", "code"),
    [
        ("zai", "glm-4.7", "1261"),
        ("deepinfra", "zai-org/GLM-4.7", "context_length_exceeded"),
        ("vllm", "glm-4-9b-chat", "context_length_exceeded"),
    ],
)
async def test_context_overflow_per_dialect(
    sim_server: SimServer, sim_http: aiohttp.ClientSession, provider: str, model: str, code: str
) -> None:
    fits = chat(model, "word " * 100, max_tokens=100)
    assert (await post(sim_http, sim_server, provider, fits))[0] == 200
    window = next(m.window for m in MODELS if m.model == model)
    status, body, _ = await post(sim_http, sim_server, provider, chat(model, max_tokens=window))
    assert status == 400 and body["error"]["code"] == code
    if code == "context_length_exceeded":
        assert f"maximum context length is {window} tokens" in body["error"]["message"]
        assert f"{window} in the completion" in body["error"]["message"]


async def test_prompt_alone_overflows(
    sim_server: SimServer, sim_http: aiohttp.ClientSession
) -> None:
    # 8,192 window: 12,000 CJK chars are 8,000 tokens, plus 4 per message and the output.
    ok = chat("glm-4-9b-chat", "你好" * 6000, max_tokens=150)
    assert (await post(sim_http, sim_server, "vllm", ok))[0] == 200
    over = chat("glm-4-9b-chat", "你好" * 6000, max_tokens=200)
    status, body, _ = await post(sim_http, sim_server, "vllm", over)
    assert status == 400
    assert "(8004 in the messages, 200 in the completion)" in body["error"]["message"]


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("stop", ["a", "b"]),
        ("temperature", 1.5),
        ("top_p", 0.0),
        ("tool_choice", "required"),
        ("response_format", {"type": "json_schema", "json_schema": {"name": "x", "schema": {}}}),
        ("n", 2),
    ],
)
async def test_zhipu_strictness(
    sim_server: SimServer, sim_http: aiohttp.ClientSession, field: str, value: Any
) -> None:
    status, body, _ = await post(sim_http, sim_server, "zai", chat("glm-4.7", **{field: value}))
    assert status == 400
    assert body["error"]["code"] == "1214" and field in body["error"]["message"]
    status, _, _ = await post(
        sim_http, sim_server, "deepinfra", chat("zai-org/GLM-4.7", **{field: value})
    )
    assert status == 200


async def test_tools_refused_without_function_calling(
    sim_server: SimServer, sim_http: aiohttp.ClientSession
) -> None:
    status, body, _ = await post(sim_http, sim_server, "vllm", chat("glm-4-9b-chat", tools=TOOLS))
    assert status == 400 and "--enable-auto-tool-choice" in body["error"]["message"]


@pytest.mark.parametrize(
    ("provider", "model", "key", "status", "code"),
    [
        ("zai", "glm-4.7", "bad-1", 401, "1002"),
        ("zai", "glm-4.7", "broke-1", 429, "1113"),
        ("zai", "glm-4.7", None, 401, "1001"),
        ("deepinfra", "zai-org/GLM-4.7", "bad-1", 401, "invalid_api_key"),
        ("openrouter", "z-ai/glm-4.6", "broke-1", 402, 402),
        ("vllm", "glm-4-9b-chat", None, 200, None),
        ("vllm", "glm-4-9b-chat", "bad", 401, "invalid_api_key"),
    ],
)
async def test_auth(
    sim_server: SimServer,
    sim_http: aiohttp.ClientSession,
    provider: str,
    model: str,
    key: str | None,
    status: int,
    code: object,
) -> None:
    headers = {} if key is None else {"Authorization": f"Bearer {key}"}
    got, body, _ = await post(sim_http, sim_server, provider, chat(model), headers)
    assert got == status
    if code is not None:
        assert body["error"]["code"] == code


async def test_unknown_model_and_bad_bodies(
    sim_server: SimServer, sim_http: aiohttp.ClientSession, sim_openai: openai.AsyncOpenAI
) -> None:
    status, body, _ = await post(sim_http, sim_server, "zai", chat("glm-9"))
    assert (status, body["error"]["code"]) == (400, "1211")
    with pytest.raises(openai.NotFoundError) as info:
        await sim_openai.chat.completions.create(model="nope", messages=[])
    assert error_of(info.value)["code"] == "model_not_found"
    status, body, _ = await post(sim_http, sim_server, "deepinfra", {"model": "zai-org/GLM-4.7"})
    assert status == 400 and body["error"]["param"] == "messages"
    url = f"{sim_server.url}/zai/v1/chat/completions"
    async with sim_http.post(url, data=b"{not json", headers=AUTH) as r:
        assert r.status == 400 and (await r.json())["error"]["code"] == "1210"
    status, body, _ = await post(sim_http, sim_server, "nowhere", chat("glm-4.7"))
    assert status == 404
    # A malformed assistant turn is the host's 400, never a crash (was a 500 from the scan).
    bad_turn = {"role": "assistant", "content": None, "tool_calls": 5}
    for provider, model in (("zai", "glm-4.7"), ("deepinfra", "zai-org/GLM-4.7")):
        msgs = [{"role": "user", "content": "hi"}, bad_turn]
        status, body, _ = await post(
            sim_http, sim_server, provider, {"model": model, "messages": msgs}
        )
        assert status == 400 and "tool_calls" in body["error"]["message"], body


# --- reasoning ---------------------------------------------------------------------------------


async def test_openrouter_reasoning_fields(
    sim_server: SimServer, sim_http: aiohttp.ClientSession
) -> None:
    _, body, _ = await post(sim_http, sim_server, "openrouter", chat("z-ai/glm-4.6"))
    msg = body["choices"][0]["message"]
    assert msg["reasoning"] and "reasoning_content" not in msg
    assert msg["reasoning_details"] == [{"type": "reasoning.text", "text": msg["reasoning"]}]
    _, raw, _ = await post(sim_http, sim_server, "openrouter", chat("z-ai/glm-4.6", stream=True))
    deltas = [c["choices"][0]["delta"] for c in sse_events(raw)[:-1]]
    assert "".join(x.get("reasoning", "") for x in deltas) == msg["reasoning"]


@pytest.mark.parametrize(
    ("provider", "model", "switch"),
    [
        ("zai", "glm-4.7", {"thinking": {"type": "disabled"}}),
        ("openrouter", "z-ai/glm-4.6", {"reasoning": {"enabled": False}}),
        ("siliconflow", "zai-org/GLM-4.5", {"enable_thinking": False}),
        ("deepinfra", "zai-org/GLM-4.7", {"chat_template_kwargs": {"enable_thinking": False}}),
    ],
)
async def test_thinking_switched_off(
    sim_server: SimServer,
    sim_http: aiohttp.ClientSession,
    provider: str,
    model: str,
    switch: dict[str, Any],
) -> None:
    _, body, _ = await post(sim_http, sim_server, provider, chat(model))
    assert {"reasoning", "reasoning_content"} & set(body["choices"][0]["message"])
    _, body, _ = await post(sim_http, sim_server, provider, chat(model, **switch))
    assert not {"reasoning", "reasoning_content"} & set(body["choices"][0]["message"])


# --- faults ------------------------------------------------------------------------------------


def directive(rule: Any, text: str = "Hi") -> str:
    return f"{text} <<sim:{orjson.dumps(rule).decode()}>>"


@pytest.mark.parametrize(
    ("provider", "model", "expected"),
    [
        ("zai", "glm-4.7", {"error": {"code": "1305", "message": "busy"}}),
        (
            "deepinfra",
            "zai-org/GLM-4.7",
            {
                "error": {
                    "message": "busy",
                    "type": "rate_limit_error",
                    "param": None,
                    "code": "1305",
                }
            },
        ),
        (
            "openrouter",
            "z-ai/glm-4.6",
            {
                "error": {
                    "message": "busy",
                    "code": 429,
                    "metadata": {"provider_name": "simulator", "raw": "1305"},
                }
            },
        ),
    ],
)
async def test_fault_status_code_and_retry_after(
    sim_server: SimServer,
    sim_http: aiohttp.ClientSession,
    provider: str,
    model: str,
    expected: Any,
) -> None:
    rule = {"status": 429, "code": "1305", "message": "busy", "retry_after": 3}
    status, body, headers = await post(sim_http, sim_server, provider, chat(model, directive(rule)))
    assert (status, body, headers["Retry-After"]) == (429, expected, "3")


async def test_fault_times_then_success(sim_client: openai.AsyncOpenAI) -> None:
    text = directive([{"status": 503, "times": 1}, {"latency_ms": 1}], "Once more")
    with pytest.raises(openai.InternalServerError):
        await sim_client.chat.completions.create(
            model="glm-4.7", messages=[{"role": "user", "content": text}]
        )
    resp = await sim_client.chat.completions.create(
        model="glm-4.7", messages=[{"role": "user", "content": text}]
    )
    assert resp.choices[0].message.content == "Hello from glm-4.7 via zai. You said: Once more"


async def test_fault_cut_mid_stream_raises_in_the_sdk(sim_client: openai.AsyncOpenAI) -> None:
    text = directive({"cut_after_chunks": 1}, "one two three four five six seven eight nine")
    stream = await sim_client.chat.completions.create(
        model="glm-4.7", messages=[{"role": "user", "content": text}], stream=True
    )
    got: list[str] = []
    with pytest.raises(openai.APIError):
        async for chunk in stream:
            if chunk.choices and chunk.choices[0].delta.content:
                got.append(chunk.choices[0].delta.content)
    assert len(got) == 1


async def test_fault_cut_non_stream_closes_the_connection(
    sim_client: openai.AsyncOpenAI,
) -> None:
    with pytest.raises(openai.APIConnectionError):
        await sim_client.chat.completions.create(
            model="glm-4.7",
            messages=[{"role": "user", "content": directive({"cut_after_chunks": 0})}],
        )


async def test_fault_finish_reason(sim_server: SimServer, sim_http: aiohttp.ClientSession) -> None:
    rule = {"finish_reason": "network_error", "cut_after_chunks": 2}
    text = directive(rule, "a b c d e f g h i j k l m n o p q r s t")
    _, raw, _ = await post(sim_http, sim_server, "zai", chat("glm-4.7", text, stream=True))
    events = sse_events(raw)
    assert events[-1] == "[DONE]"
    assert events[-2]["choices"][0]["finish_reason"] == "network_error"
    assert sum(1 for e in events[:-1] if e["choices"][0]["delta"].get("content")) == 2
    text = directive({"finish_reason": "sensitive", "content": "Blocked."})
    _, body, _ = await post(sim_http, sim_server, "zai", chat("glm-4.7", text))
    choice = body["choices"][0]
    assert (choice["finish_reason"], choice["message"]["content"]) == ("sensitive", "Blocked.")


async def received(sim: SimServer, marker: str) -> None:
    """Return once the simulator has logged a request whose body contains ``marker``."""
    log = sim.app[STATE].requests
    for _ in range(5000):  # bounded: a request that never arrives fails here, not at the timeout
        if any(marker in orjson.dumps(r["body"]).decode() for r in log):
            return
        await asyncio.sleep(0.001)
    raise AssertionError(f"the simulator logged no request containing {marker!r}")


async def test_fault_latency_and_ttft(
    sim_server: SimServer, sim_http: aiohttp.ClientSession
) -> None:
    # Checked by order, not seconds: an undelayed request sent once the delayed one is in the
    # simulator's hands is answered first.
    order: list[str] = []
    marker = f"latency-{uuid.uuid4().hex}"
    delayed = asyncio.create_task(
        post(sim_http, sim_server, "zai", chat("glm-4.7", directive({"latency_ms": 250}, marker)))
    )
    delayed.add_done_callback(lambda _: order.append("delayed answer"))
    await received(sim_server, marker)
    await post(sim_http, sim_server, "zai", chat("glm-4.7"))
    order.append("undelayed answer")
    await delayed
    assert order == ["undelayed answer", "delayed answer"]
    # ttft_ms: the head at once, the first chunk only after an undelayed answer that was asked
    # for once the head was in
    order.clear()
    url = f"{sim_server.url}/zai/v1/chat/completions"
    body = chat("glm-4.7", directive({"ttft_ms": 250, "chunk_delay_ms": 5}), stream=True)
    async with sim_http.post(url, json=body, headers=AUTH) as r:
        order.append("head")
        first = asyncio.create_task(r.content.readuntil(b"\n\n"))
        first.add_done_callback(lambda _: order.append("first chunk"))
        await post(sim_http, sim_server, "zai", chat("glm-4.7"))
        order.append("undelayed answer")
        rest = (await first) + await r.read()
    assert order == ["head", "undelayed answer", "first chunk"]
    assert sse_events(rest.decode())[-1] == "[DONE]"


async def test_fault_hang_until_the_client_leaves(
    sim_server: SimServer, sim_http: aiohttp.ClientSession, sim_client: openai.AsyncOpenAI
) -> None:
    # Checked by order, not seconds: the hanging request is still unanswered when a request
    # sent after it has its answer, and it ends with the client's own timeout.
    order: list[str] = []
    marker = f"hang-{uuid.uuid4().hex}"
    hanging = asyncio.create_task(
        sim_client.chat.completions.create(
            model="glm-4.7",
            messages=[{"role": "user", "content": directive({"hang": True}, marker)}],
            timeout=0.3,
        )
    )
    hanging.add_done_callback(lambda _: order.append("hanging request ended"))
    await received(sim_server, marker)
    await post(sim_http, sim_server, "zai", chat("glm-4.7"))
    order.append("undelayed answer")
    with pytest.raises(openai.APITimeoutError):
        await hanging
    assert order == ["undelayed answer", "hanging request ended"]


async def test_client_gone_before_the_stream_starts_is_not_an_error(
    sim_server: SimServer, caplog: pytest.LogCaptureFixture
) -> None:
    """A client that sends its request and hangs up (as the gateway does when its own client
    leaves): the stream's first write finds the transport closing. Not a logged server error
    (it was "Error handling request" with a traceback, every time)."""
    body = orjson.dumps(chat("glm-4.7", "hi", stream=True))
    head = (
        "POST /zai/v1/chat/completions HTTP/1.1\r\nHost: sim\r\nAuthorization: Bearer k\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    host, port = sim_server.url.removeprefix("http://").split(":")
    for _ in range(5):
        reader, writer = await asyncio.open_connection(host, int(port))
        writer.write(head.encode() + body)
        writer.write_eof()  # request and EOF arrive together
        await writer.drain()
        await reader.read()  # whatever the simulator managed to send, then its close
        writer.close()
    await asyncio.sleep(0.1)
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert not errors


async def test_fault_raw_body(sim_server: SimServer, sim_http: aiohttp.ClientSession) -> None:
    golden = {"code": "1305", "message": "该模型当前访问量过大，请您稍后再试"}
    rule = {"status": 503, "body": golden}
    status, body, _ = await post(sim_http, sim_server, "zai", chat("glm-4.7", directive(rule)))
    assert (status, body) == (503, golden)


async def test_global_faults_match_and_reset(
    sim_server: SimServer, sim_http: aiohttp.ClientSession
) -> None:
    rules = [{"match": {"provider": "openrouter"}, "status": 503, "rate": 1.0}]
    async with sim_http.post(f"{sim_server.url}/_sim/faults", json=rules) as r:
        assert r.status == 200
    assert (await post(sim_http, sim_server, "openrouter", chat("z-ai/glm-4.6")))[0] == 503
    assert (await post(sim_http, sim_server, "zai", chat("glm-4.7")))[0] == 200
    prompt_first = chat("z-ai/glm-4.6", directive({"latency_ms": 1}))
    assert (await post(sim_http, sim_server, "openrouter", prompt_first))[0] == 200
    async with sim_http.delete(f"{sim_server.url}/_sim/faults") as r:
        assert r.status == 200
    assert (await post(sim_http, sim_server, "openrouter", chat("z-ai/glm-4.6")))[0] == 200
    async with sim_http.post(f"{sim_server.url}/_sim/faults", json=[{"oops": 1}]) as r:
        assert r.status == 400


async def test_directives_stripped_and_checked(
    sim_server: SimServer, sim_http: aiohttp.ClientSession
) -> None:
    text = 'Before <<sim:{"content": ">> not the end", "match": {"variant": "glm-4.5"}}>> after'
    _, body, _ = await post(sim_http, sim_server, "zai", chat("glm-4.7", text))
    said = body["choices"][0]["message"]["content"]
    assert said == "Hello from glm-4.7 via zai. You said: Before  after"
    _, body, _ = await post(sim_http, sim_server, "siliconflow", chat("zai-org/GLM-4.5", text))
    assert body["choices"][0]["message"]["content"] == ">> not the end"
    status, body, _ = await post(sim_http, sim_server, "zai", chat("glm-4.7", "x <<sim:{bad>>"))
    assert status == 400 and body["error"]["code"] == "sim_bad_directive"


# --- request log and table ---------------------------------------------------------------------


async def test_request_log(sim_server: SimServer, sim_http: aiohttp.ClientSession) -> None:
    async with sim_http.delete(f"{sim_server.url}/_sim/requests") as r:
        assert r.status == 200
    await post(sim_http, sim_server, "zai", chat("glm-4.7", "first"))
    await post(sim_http, sim_server, "vllm", chat("glm-4-9b-chat", "second"), headers={})
    async with sim_http.get(f"{sim_server.url}/_sim/requests") as r:
        log = await r.json()
    assert [e["provider"] for e in log] == ["zai", "vllm"]
    assert log[0]["path"] == "/zai/v1/chat/completions"
    assert log[0]["headers"]["Authorization"] == "<redacted>"
    assert "Authorization" not in log[1]["headers"]
    assert log[1]["body"]["messages"][0]["content"] == "second"
    for i in range(205):
        await post(sim_http, sim_server, "zai", chat("glm-4.7", f"n{i}"), headers={})
    async with sim_http.get(f"{sim_server.url}/_sim/requests") as r:
        log = await r.json()
    assert len(log) == 200 and log[-1]["body"]["messages"][0]["content"] == "n204"


def test_sim_models_from_targets() -> None:
    variant = Variant(
        id="glm-4.6v",
        name="GLM-4.6V",
        released="2025-12",
        context=128_000,
        params_total_b=106,
        capabilities=frozenset({"vision", "function_calling", "structured_outputs"}),
        thinking=True,
        quality=80,
    )

    def target(provider: str, dialect: str) -> Target:
        return Target(
            id=f"{provider}/glm-4.6v",
            provider=provider,
            variant=variant,
            model="glm-4.6v",
            adapter="openai",
            dialect=dialect,  # type: ignore[arg-type]
            base_url=None,
            api_key=None,
            capabilities=variant.capabilities,
            context=64_000,
            max_output=None,
            price=None,
            builtin_tools=frozenset(),
            weight=1,
            priority=0,
            rpm=None,
            tpm=None,
            timeout=None,
            litellm_model=None,
        )

    zai, other = sim_models_from_targets(
        [target("zai", "zhipu"), target("zai", "zhipu"), target("novita", "openai")]
    )
    assert (zai.provider, zai.variant, zai.context) == ("zai", "glm-4.6v", 64_000)
    assert zai.thinking
    assert zai.accepts_images and zai.function_calling and not zai.json_schema
    assert other.json_schema


def test_token_estimate_and_pieces() -> None:
    assert count_tokens("你好你好你好") == 4
    assert count_tokens("a" * 9) == 2
    text = "one two  three four five six seven eight nine ten eleven " + "x" * 100
    assert "".join(split_pieces(text)) == text


async def test_run_simulator_serves_until_sigterm(sim_http: aiohttp.ClientSession) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    code = (
        "from gateway.simulator.models import SimModel\n"
        "from gateway.simulator.server import run_simulator\n"
        "m = SimModel('zai', 'glm-4.7', 'glm-4.7', 'zhipu', None, None, False, True, False, True)\n"
        f"run_simulator([m], '127.0.0.1', {port})\n"
    )
    env = {**os.environ, "PYTHONPATH": REPO_ROOT}
    proc = await asyncio.create_subprocess_exec(sys.executable, "-c", code, cwd=REPO_ROOT, env=env)
    try:
        for _ in range(100):
            try:
                async with sim_http.get(f"http://127.0.0.1:{port}/_sim/healthz") as r:
                    assert r.status == 200
                    break
            except aiohttp.ClientConnectionError:
                await asyncio.sleep(0.05)
        else:
            pytest.fail("run_simulator did not start listening")
    finally:
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(proc.wait(), 10) == 0


async def test_zhipu_needs_a_user_message_and_max_tokens_cuts(
    sim_server: SimServer, sim_http: aiohttp.ClientSession
) -> None:
    only_system = {"model": "glm-4.7", "messages": [{"role": "system", "content": "Be brief."}]}
    status, body, _ = await post(sim_http, sim_server, "zai", only_system)
    assert status == 400 and body["error"]["code"] == "1214"
    _, body, _ = await post(sim_http, sim_server, "zai", chat("glm-4-32b", max_tokens=3))
    choice = body["choices"][0]
    assert choice["finish_reason"] == "length"
    assert "Hello from glm-4-32b via zai.".startswith(choice["message"]["content"])

"""Every body the gateway sends validates against OpenAI's published OpenAPI schemas, whatever
the host dialect behind it: completions, stream chunks, the model list and errors.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import pytest_asyncio

from tests.support import openapi
from tests.support.e2e import (
    AUTH,
    FUNCTION_TOOL,
    chat_body,
    directive,
    image_msg,
    nonce,
    parse_sse,
    text_msg,
)
from tests.support.procs import Proc

CHAT = "/v1/chat/completions"

# (provider, variant): one per host dialect the simulator speaks
DIALECT_ROUTES = [
    pytest.param("zai", "glm-4.7", id="zhipu"),
    pytest.param("openrouter", "glm-4.6", id="openrouter"),
    pytest.param("siliconflow", "glm-4.6", id="siliconflow"),
    pytest.param("vllm", "glm-4-9b", id="vllm"),
    pytest.param("deepinfra", "glm-4.6", id="openai"),
]
SCHEMA = {
    "type": "json_schema",
    "json_schema": {
        "name": "city",
        "schema": {
            "type": "object",
            "properties": {"name": {"type": "string"}, "population": {"type": "integer"}},
            "required": ["name", "population"],
        },
    },
}


@pytest_asyncio.fixture
async def http(gateway: Proc) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=gateway.url, headers=AUTH, timeout=60) as c:
        yield c


async def completion(
    http: httpx.AsyncClient, body: dict[str, Any], headers: dict[str, str]
) -> dict[str, Any]:
    r = await http.post(CHAT, json=body, headers=headers)
    assert r.status_code == 200, r.text
    out: dict[str, Any] = r.json()
    openapi.validate("CreateChatCompletionResponse", out)
    return out


async def chunks(
    http: httpx.AsyncClient, body: dict[str, Any], headers: dict[str, str]
) -> list[dict[str, Any]]:
    async with http.stream("POST", CHAT, json={**body, "stream": True}, headers=headers) as r:
        assert r.status_code == 200, await r.aread()
        events = parse_sse((await r.aread()).decode())
    assert events[-1] == "[DONE]"
    out = events[:-1]
    for i, event in enumerate(out):
        problems = openapi.errors("CreateChatCompletionStreamResponse", event)
        assert not problems, f"chunk {i} {event}: {problems}"
    return out


def test_spec_loads_all_four_schemas() -> None:
    for name in openapi.SCHEMAS:
        assert openapi.validator(name) is not None
    # nullable was rewritten: a chunk's finish_reason may be null
    openapi.validate(
        "CreateChatCompletionStreamResponse",
        {
            "id": "x",
            "object": "chat.completion.chunk",
            "created": 0,
            "model": "m",
            "choices": [{"index": 0, "delta": {"content": "a"}, "finish_reason": None}],
        },
    )
    assert openapi.errors("ErrorResponse", {"error": {"message": "m"}})  # missing keys caught


@pytest.mark.parametrize(("provider", "variant"), DIALECT_ROUTES)
async def test_completion_conforms(http: httpx.AsyncClient, provider: str, variant: str) -> None:
    out = await completion(
        http, chat_body(text_msg("hello"), model=variant), {"X-GLM-Providers": provider}
    )
    assert out["model"] == variant
    assert out["object"] == "chat.completion"


@pytest.mark.parametrize(("provider", "variant"), DIALECT_ROUTES)
async def test_stream_chunks_conform(http: httpx.AsyncClient, provider: str, variant: str) -> None:
    got = await chunks(
        http,
        chat_body(text_msg("hello there"), model=variant, stream_options={"include_usage": True}),
        {"X-GLM-Providers": provider},
    )
    assert {c["model"] for c in got} == {variant}
    assert {c["object"] for c in got} == {"chat.completion.chunk"}
    finishes = [c["choices"][0]["finish_reason"] for c in got if c.get("choices")]
    assert finishes[-1] == "stop"


@pytest.mark.parametrize(
    ("provider", "variant"),
    [
        pytest.param("zai", "glm-4.7", id="zhipu"),
        pytest.param("openrouter", "glm-4.7", id="openrouter"),
        pytest.param("novita", "glm-4.6v", id="openai"),
    ],
)
async def test_tool_call_answers_conform(
    http: httpx.AsyncClient, provider: str, variant: str
) -> None:
    body = chat_body(text_msg("weather in Oslo?"), model=variant, tools=[FUNCTION_TOOL])
    out = await completion(http, body, {"X-GLM-Providers": provider})
    assert out["choices"][0]["finish_reason"] == "tool_calls"
    assert out["choices"][0]["message"]["tool_calls"][0]["type"] == "function"
    got = await chunks(http, body, {"X-GLM-Providers": provider})
    assert any(c["choices"] and c["choices"][0]["delta"].get("tool_calls") for c in got)


@pytest.mark.parametrize(
    ("provider", "variant"),
    [pytest.param("zai", "glm-4.5", id="zhipu"), pytest.param("deepinfra", "glm-4.5", id="openai")],
)
async def test_structured_output_answers_conform(
    http: httpx.AsyncClient, provider: str, variant: str
) -> None:
    body = chat_body(text_msg("a city"), model=variant, response_format=SCHEMA)
    out = await completion(http, body, {"X-GLM-Providers": provider})
    assert out["choices"][0]["message"]["content"].startswith("{")


async def test_vision_answer_conforms(http: httpx.AsyncClient) -> None:
    await completion(http, chat_body(image_msg("what is it?")), {})


async def test_models_list_conforms(http: httpx.AsyncClient) -> None:
    r = await http.get("/v1/models")
    assert r.status_code == 200
    openapi.validate("ListModelsResponse", r.json())


async def error_body(r: httpx.Response, status: int) -> dict[str, Any]:
    assert r.status_code == status, r.text
    body: dict[str, Any] = r.json()
    openapi.validate("ErrorResponse", body)
    return body


async def test_client_errors_conform(http: httpx.AsyncClient, gateway: Proc) -> None:
    await error_body(
        await http.post(CHAT, content=b"{", headers={"Content-Type": "application/json"}), 400
    )
    await error_body(
        await http.post(CHAT, json=chat_body(text_msg("x")), headers={"X-GLM-Params": "huge"}), 400
    )
    await error_body(
        await http.post(
            CHAT,
            json=chat_body(image_msg("x")),
            headers={"X-GLM-Capabilities": "code_execution"},
        ),
        400,
    )
    await error_body(await http.post(CHAT, json=chat_body(text_msg("x"), model="gpt-5")), 404)
    await error_body(await http.get("/v1/nope"), 404)
    async with httpx.AsyncClient(base_url=gateway.url, timeout=30) as anon:
        await error_body(await anon.post(CHAT, json=chat_body(text_msg("x"))), 401)


async def test_upstream_failure_errors_conform(http: httpx.AsyncClient) -> None:
    tag = nonce()
    fail = directive(
        {"match": {"provider": "together", "variant": "glm-4.5-air"}, "status": 500}, tag
    )
    body = chat_body(text_msg(f"hi {tag} {fail}"), model="glm-4.5-air")
    await error_body(await http.post(CHAT, json=body, headers={"X-GLM-Providers": "together"}), 502)
    slow = directive({"match": {"provider": "together"}, "latency_ms": 3000}, tag)
    body = chat_body(text_msg(f"hi {tag} {slow}"), model="glm-4.5-air")
    await error_body(
        await http.post(
            CHAT, json=body, headers={"X-GLM-Providers": "together", "X-GLM-Timeout": "0.5"}
        ),
        504,
    )


async def test_stream_error_event_conforms(http: httpx.AsyncClient) -> None:
    tag = nonce()
    cut = directive({"match": {"provider": "zai"}, "cut_after_chunks": 2}, tag)
    body = chat_body(text_msg(f"hi {tag} {cut}"), model="glm-4-32b", stream=True)
    async with http.stream("POST", CHAT, json=body, headers={"X-GLM-Providers": "zai"}) as r:
        events = parse_sse((await r.aread()).decode())
    assert "[DONE]" not in events
    for event in events[:-1]:
        openapi.validate("CreateChatCompletionStreamResponse", event)
    openapi.validate("ErrorResponse", events[-1])

"""The simulator's host fidelity, driven directly: what each dialect refuses, its error shapes,
GLM-4.5V tags, errors inside 200 streams, and Zhipu's request_id rule."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import orjson
import pytest
import pytest_asyncio

from gateway.simulator.models import SimModel
from gateway.simulator.server import SimServer, start_simulator


def sim(provider: str, model: str, variant: str, dialect: str, **kw: Any) -> SimModel:
    return SimModel(
        provider=provider,
        model=model,
        variant=variant,
        dialect=dialect,
        context=kw.get("context", 128_000),
        max_output=kw.get("max_output"),
        accepts_images=kw.get("images", False),
        function_calling=True,
        json_schema=dialect != "zhipu",
        thinking=kw.get("thinking", True),
        tagged_content=kw.get("tagged", False),
    )


MODELS = [
    sim("zai", "glm-4.7", "glm-4.7", "zhipu", max_output=128_000),
    sim("zai", "glm-4-32b", "glm-4-32b", "zhipu", thinking=False),
    sim("zai", "glm-4.5v", "glm-4.5v", "zhipu", images=True, tagged=True),
    sim("openrouter", "z-ai/glm-4.6", "glm-4.6", "openrouter"),
    sim("siliconflow", "THUDM/GLM-4-32B-0414", "glm-4-32b", "siliconflow", thinking=False),
    sim("vllm", "zai-org/GLM-4.5V", "glm-4.5v", "vllm", images=True),
    sim("deepinfra", "zai-org/GLM-4.7", "glm-4.7", "openai"),
]
AUTH = {"Authorization": "Bearer k"}


@pytest_asyncio.fixture(scope="module")
async def server() -> AsyncIterator[SimServer]:
    s = await start_simulator(MODELS)
    yield s
    await s.stop()


@pytest_asyncio.fixture(scope="module")
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


async def post(
    http: aiohttp.ClientSession,
    server: SimServer,
    provider: str,
    body: dict[str, Any],
    key: str = "k",
) -> tuple[int, Any]:
    url = f"{server.url}/{provider}/v1/chat/completions"
    async with http.post(url, json=body, headers={"Authorization": f"Bearer {key}"}) as r:
        raw = await r.read()
        if r.content_type == "application/json":
            return r.status, orjson.loads(raw)
        return r.status, raw.decode()


def chat(model: str, text: str = "Hi", **extra: Any) -> dict[str, Any]:
    return {"model": model, "messages": [{"role": "user", "content": text}], **extra}


def events(raw: str) -> list[Any]:
    out: list[Any] = []
    for block in raw.split("\n\n"):
        if block.startswith("data: "):
            out.append(block[6:] if block[6:] == "[DONE]" else orjson.loads(block[6:]))
    return out


IMAGE = {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA", "detail": "low"}}


@pytest.mark.parametrize(
    ("model", "extra", "field"),
    [
        ("glm-4.7", {"seed": 1}, "seed"),
        ("glm-4.7", {"max_completion_tokens": 10}, "max_completion_tokens"),
        ("glm-4.7", {"parallel_tool_calls": False}, "parallel_tool_calls"),
        ("glm-4.7", {"user_id": "abc"}, "user_id"),
        ("glm-4.7", {"max_tokens": 200_000}, "max_tokens"),
        ("glm-4-32b", {"thinking": {"type": "enabled"}}, "thinking"),
        (
            "glm-4.7",
            {"tools": [{"type": "function", "function": {"name": "f", "strict": True}}]},
            "function.strict",
        ),
        (
            "glm-4.5v",
            {"messages": [{"role": "user", "content": [{"type": "text", "text": "x"}, IMAGE]}]},
            "image_url.detail",
        ),
    ],
)
async def test_zhipu_refuses_what_the_gateway_must_adapt(
    server: SimServer, http: aiohttp.ClientSession, model: str, extra: dict[str, Any], field: str
) -> None:
    status, body = await post(http, server, "zai", chat(model, **extra))
    assert status == 400 and body["error"]["code"] == "1214"
    assert field in body["error"]["message"]


async def test_zhipu_refuses_a_reused_request_id(
    server: SimServer, http: aiohttp.ClientSession
) -> None:
    body = chat("glm-4.7", request_id="dup-0001")
    assert (await post(http, server, "zai", body))[0] == 200
    status, err = await post(http, server, "zai", body)
    assert status == 400 and err["error"]["code"] == "1231"


async def test_only_zhipu_runs_web_search(server: SimServer, http: aiohttp.ClientSession) -> None:
    tools = [{"type": "web_search", "web_search": {"enable": True}}]
    assert (await post(http, server, "zai", chat("glm-4.7", tools=tools)))[0] == 200
    status, body = await post(http, server, "deepinfra", chat("zai-org/GLM-4.7", tools=tools))
    assert status == 400 and body["error"]["param"] == "tools[0].type"


async def test_siliconflow_error_shapes(server: SimServer, http: aiohttp.ClientSession) -> None:
    model = "THUDM/GLM-4-32B-0414"
    status, body = await post(http, server, "siliconflow", chat(model, enable_thinking=False))
    assert status == 400 and body["code"] == 20015 and body["data"] is None
    assert "enable_thinking" in body["message"]
    status, body = await post(http, server, "siliconflow", chat("nope"))
    assert (status, body["code"]) == (400, 20012)
    status, body = await post(http, server, "siliconflow", chat(model), key="broke-1")
    assert (status, body["code"]) == (403, 30011)


async def test_glm_45v_writes_tags_into_content_where_the_host_does_not_parse_them(
    server: SimServer, http: aiohttp.ClientSession
) -> None:
    msg = [
        {
            "role": "user",
            "content": [{"type": "text", "text": "what?"}, {**IMAGE, "image_url": {"url": "x"}}],
        }
    ]
    _, body = await post(http, server, "zai", {"model": "glm-4.5v", "messages": msg})
    content = body["choices"][0]["message"]["content"]
    assert content.startswith("<think>") and content.endswith("<|end_of_box|>")
    assert "reasoning_content" not in body["choices"][0]["message"]
    _, raw = await post(http, server, "zai", {"model": "glm-4.5v", "messages": msg, "stream": True})
    pieces = [e["choices"][0]["delta"].get("content", "") for e in events(raw)[:-1]]
    assert "".join(pieces) == content and any("<" in p and ">" not in p for p in pieces)
    _, body = await post(http, server, "vllm", {"model": "zai-org/GLM-4.5V", "messages": msg})
    assert "<think>" not in body["choices"][0]["message"]["content"]


@pytest.mark.parametrize(
    ("provider", "model", "done"),
    [("openrouter", "z-ai/glm-4.6", True), ("deepinfra", "zai-org/GLM-4.7", False)],
)
async def test_error_event_inside_a_200_stream(
    server: SimServer, http: aiohttp.ClientSession, provider: str, model: str, done: bool
) -> None:
    rule = {"stream_error": {"code": 502, "message": "upstream died"}, "cut_after_chunks": 1}
    text = "one two three four five six seven <<sim:" + orjson.dumps(rule).decode() + ">>"
    status, raw = await post(http, server, provider, chat(model, text, stream=True))
    got = events(raw)
    assert status == 200 and (got[-1] == "[DONE]") is done
    err = got[-2] if done else got[-1]
    assert err["error"]["message"] == "upstream died"
    if provider == "openrouter":
        assert err["choices"][0]["finish_reason"] == "error"
    contents = [
        e["choices"][0]["delta"].get("content")
        for e in got
        if isinstance(e, dict) and e.get("choices")
    ]
    assert any(contents)


async def test_tool_arguments_as_an_object(server: SimServer, http: aiohttp.ClientSession) -> None:
    tools = [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}]
    text = 'x <<sim:{"tool_args_object": true}>>'
    _, body = await post(http, server, "zai", chat("glm-4.7", text, tools=tools))
    assert body["choices"][0]["message"]["tool_calls"][0]["function"]["arguments"] == {}


async def test_openai_hosts_take_reasoning_effort_none(
    server: SimServer, http: aiohttp.ClientSession
) -> None:
    _, on = await post(http, server, "deepinfra", chat("zai-org/GLM-4.7"))
    assert on["choices"][0]["message"].get("reasoning_content")
    _, off = await post(http, server, "deepinfra", chat("zai-org/GLM-4.7", reasoning_effort="none"))
    assert "reasoning_content" not in off["choices"][0]["message"]
